//! Push throughput, steady state (every push overwrites), 1, 2 and 4 writers,
//! every contender side by side.
//!
//! `cargo bench --bench push`. On a 2-core machine the 4-writer case is
//! oversubscribed on purpose. For ratios measured alternately in one process,
//! run `cargo bench --bench compare`.

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};

mod common;
use common::{full, timed_pushes, Callring, Notes, ParkingLot, Queue, SeedVec, StdMutex};

fn contender<C: Notes>(g: &mut BenchmarkGroup<'_, WallTime>) {
    for threads in [1, 2, 4] {
        let store: C = full();
        g.bench_with_input(BenchmarkId::new(C::NAME, threads), &threads, |b, &t| {
            b.iter_custom(|iters| timed_pushes(&store, t, iters))
        });
    }
}

fn push(c: &mut Criterion) {
    let mut g = c.benchmark_group("push");
    g.throughput(Throughput::Elements(1));
    contender::<Callring>(&mut g);
    contender::<StdMutex>(&mut g);
    contender::<ParkingLot>(&mut g);
    contender::<SeedVec>(&mut g);
    contender::<Queue>(&mut g);
    g.finish();
}

criterion_group!(benches, push);
criterion_main!(benches);
