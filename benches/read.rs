//! Reads of a full store of 1000 82-byte notes, single thread: all notes
//! joined into one string, and owned copies of every note.
//!
//! `cargo bench --bench read`.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};

mod common;
use common::{full, Callring, Notes, ParkingLot, SeedVec, StdMutex, N};

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
}

criterion_group!(benches, read);
criterion_main!(benches);
