//! Call level: `CallState::append_note` and `all_notes` against the original
//! host's design (strftime on every append into a `Mutex<VecDeque<String>>`,
//! join under the lock), 1000 notes retained.
//!
//! `cargo bench --bench call`.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};

mod common;
use common::{full_call, Call, CallNotes, SeedCall, N, NOTE};

fn contender<C: CallNotes>(append: &mut BenchmarkGroup<'_, WallTime>) {
    let store: C = full_call();
    append.bench_function(BenchmarkId::new(C::NAME, 1), |b| {
        b.iter(|| store.append_note(std::hint::black_box(NOTE)))
    });
}

fn render_contender<C: CallNotes>(render: &mut BenchmarkGroup<'_, WallTime>) {
    let store: C = full_call();
    render.bench_function(BenchmarkId::new(C::NAME, N), |b| {
        b.iter(|| store.all_notes())
    });
}

fn call(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_note");
    contender::<Call>(&mut g);
    contender::<SeedCall>(&mut g);
    g.finish();
    let mut g = c.benchmark_group("all_notes");
    render_contender::<Call>(&mut g);
    render_contender::<SeedCall>(&mut g);
    g.finish();
}

criterion_group!(benches, call);
criterion_main!(benches);
