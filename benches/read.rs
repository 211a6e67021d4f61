//! Reads of a full store of 1000 82-byte notes, single thread: all notes
//! joined into one string, owned copies of every note, and a polling reader
//! (10 pushes, then a join by a reader that keeps its state).
//!
//! `cargo bench --bench read`.

use std::time::Instant;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};

mod common;
use common::{full, Callring, CallringCopy, Notes, ParkingLot, SeedVec, StdMutex, N};

fn contender<C: Notes>(join: &mut BenchmarkGroup<'_, WallTime>) {
    let store: C = full();
    join.bench_function(BenchmarkId::new(C::NAME, N), |b| b.iter(|| store.join()));
}

fn snapshot_contender<C: Notes>(snap: &mut BenchmarkGroup<'_, WallTime>) {
    let store: C = full();
    snap.bench_function(BenchmarkId::new(C::NAME, N), |b| {
        b.iter(|| store.snapshot())
    });
}

/// One poll: push `POLL_EVERY` notes, then join all of them, by a reader
/// that keeps its state between polls.
fn poll_contender<C: Notes>(poll: &mut BenchmarkGroup<'_, WallTime>) {
    let store: C = full();
    // One reader per batch of polls (its first, cold join amortised).
    poll.bench_function(BenchmarkId::new(C::NAME, N), |b| {
        b.iter_custom(|polls| {
            let start = Instant::now();
            std::hint::black_box(store.join_poll(polls as u32));
            start.elapsed()
        })
    });
}

fn read(c: &mut Criterion) {
    let mut g = c.benchmark_group("join");
    contender::<Callring>(&mut g);
    contender::<StdMutex>(&mut g);
    contender::<ParkingLot>(&mut g);
    contender::<SeedVec>(&mut g);
    g.finish();
    let mut g = c.benchmark_group("snapshot");
    snapshot_contender::<Callring>(&mut g);
    snapshot_contender::<StdMutex>(&mut g);
    snapshot_contender::<ParkingLot>(&mut g);
    snapshot_contender::<SeedVec>(&mut g);
    g.finish();
    let mut g = c.benchmark_group("join_poll");
    poll_contender::<Callring>(&mut g);
    poll_contender::<CallringCopy>(&mut g);
    poll_contender::<StdMutex>(&mut g);
    poll_contender::<ParkingLot>(&mut g);
    g.finish();
}

criterion_group!(benches, read);
criterion_main!(benches);
