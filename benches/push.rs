//! Push throughput, steady state (every push overwrites), 1, 2 and 4 writers.
//!
//! `cargo bench --bench push`. The machine this was written on has 2 cores:
//! the 4-writer case is oversubscribed on purpose.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

mod common;
use common::{full, timed_pushes, Callring, Notes, StdMutex};

fn group<C: Notes>(c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    for threads in [1, 2, 4] {
        let contender: C = full();
        c.bench_with_input(BenchmarkId::new(C::NAME, threads), &threads, |b, &t| {
            b.iter_custom(|iters| timed_pushes(&contender, t, iters))
        });
    }
}

fn push(c: &mut Criterion) {
    let mut g = c.benchmark_group("push");
    g.throughput(Throughput::Elements(1));
    group::<Callring>(&mut g);
    group::<StdMutex>(&mut g);
    g.finish();
}

criterion_group!(benches, push);
criterion_main!(benches);
