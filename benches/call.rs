//! Call level: `CallState::append_note` and `all_notes` against the original
//! host's design (strftime on every append into a `Mutex<VecDeque<String>>`,
//! join under the lock), 1000 notes retained; and `all_notes` polled after
//! every 10 appends by a reader that keeps its state.
//!
//! `cargo bench --bench call`.

use std::time::Instant;

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

/// One poll: append `POLL_EVERY` notes, then `all_notes`, by a reader that
/// keeps its state (one reader per batch of polls).
fn poll_contender<C: CallNotes>(poll: &mut BenchmarkGroup<'_, WallTime>) {
    let store: C = full_call();
    poll.bench_function(BenchmarkId::new(C::NAME, N), |b| {
        b.iter_custom(|polls| {
            let start = Instant::now();
            std::hint::black_box(store.all_notes_poll(polls as u32));
            start.elapsed()
        })
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
    let mut g = c.benchmark_group("all_notes_poll");
    poll_contender::<Call>(&mut g);
    poll_contender::<SeedCall>(&mut g);
    g.finish();
}

criterion_group!(benches, call);
criterion_main!(benches);
