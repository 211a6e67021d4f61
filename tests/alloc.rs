//! Allocation accounting with a counting global allocator: what a push, a
//! visit, a join and an empty ring cost in heap allocations and bytes.
//!
//! Counts are per thread (the test harness runs tests on several threads at
//! once), so each measurement sees only its own thread's allocations.
#![cfg(not(loom))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use callring::{Ring, Text};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

fn count(size: usize) {
    // `try_with`: the allocator may run while this thread's locals are torn down.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    let _ = BYTES.try_with(|c| c.set(c.get() + size as u64));
}

// SAFETY: every method forwards its arguments unchanged to `System`, which
// upholds `GlobalAlloc`'s contract; the counting touches only thread-locals.
// (The library itself forbids unsafe code; this is the test binary.)
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and bytes requested by this thread while running `f`.
fn measure<T>(f: impl FnOnce() -> T) -> (T, u64, u64) {
    let (a0, b0) = (ALLOCS.with(Cell::get), BYTES.with(Cell::get));
    let out = f();
    let (a1, b1) = (ALLOCS.with(Cell::get), BYTES.with(Cell::get));
    (out, a1 - a0, b1 - b0)
}

/// An 82-byte call note, as in the product's workload.
const NOTE: &str =
    "Customer confirmed identity via DOB and postcode; consented to a payment plan.    ";

fn full_ring() -> Ring<Text> {
    assert_eq!(NOTE.len(), 82);
    let ring = Ring::<Text>::new(1000).expect("valid");
    for _ in 0..2000 {
        ring.push(NOTE).expect("open");
    }
    ring
}

#[test]
fn push_str_into_a_full_ring_allocates_nothing() {
    let ring = full_ring();
    let (_, allocs, bytes) = measure(|| {
        for _ in 0..10_000 {
            ring.push(NOTE).expect("open");
        }
    });
    assert_eq!((allocs, bytes), (0, 0), "10,000 pushes of an 82-byte &str");
    // The counter does see allocations: a String push allocates only the
    // caller's own String.
    let (_, allocs, _) = measure(|| ring.push(NOTE.to_string()).expect("open"));
    assert_eq!(allocs, 1);
}

#[test]
fn multi_slot_push_into_a_full_ring_allocates_nothing() {
    let ring = Ring::<Text>::builder()
        .capacity(64)
        .slot_bytes(32)
        .build()
        .expect("valid");
    for _ in 0..200 {
        ring.push(NOTE).expect("open");
    }
    let (_, allocs, _) = measure(|| {
        for _ in 0..1000 {
            ring.push(NOTE).expect("open"); // 6 slots each
        }
    });
    assert_eq!(allocs, 0);
}

#[test]
fn empty_ring_of_1000_slots_costs_under_4_kib() {
    let (ring, allocs, bytes) = measure(|| Arc::new(Ring::<Text>::new(1000).expect("valid")));
    let stack = std::mem::size_of::<Ring<Text>>() as u64;
    println!("empty ring: {allocs} allocations, {bytes} heap bytes (Ring itself {stack} bytes)");
    assert!(bytes < 4096, "{bytes} bytes");
    // First push allocates one page (4 KiB, plus up to 56 bytes to start it
    // on a cache line), not the whole ring.
    let (_, _, page) = measure(|| ring.push(NOTE).expect("open"));
    assert!(
        (1..=4096 + 56).contains(&page),
        "{page} bytes for the first page"
    );
}

#[test]
fn visit_with_a_grown_scratch_buffer_allocates_nothing() {
    let ring = full_ring();
    let mut scratch = Vec::with_capacity(256);
    let ((total, skipped), allocs, _) = measure(|| {
        let mut total = 0;
        let skipped = ring.visit_with(&mut scratch, |_, bytes| total += bytes.len());
        (total, skipped)
    });
    assert_eq!((total, skipped.total()), (82 * 1000, 0));
    assert_eq!(allocs, 0);
}

#[test]
fn join_of_a_full_ring_allocates_once() {
    let ring = full_ring();
    let (joined, allocs, _) = measure(|| ring.join("\n"));
    assert_eq!(joined.len(), 83 * 1000 - 1);
    assert!(allocs <= 2, "{allocs} allocations");
    // A reused buffer: after the first join it has room for the next.
    let mut out = String::new();
    let _ = ring.join_into("\n", &mut out);
    out.clear();
    let (_, allocs, _) = measure(|| ring.join_into("\n", &mut out));
    assert_eq!(out, joined);
    assert_eq!(allocs, 0, "join_into a reused buffer");
}

#[test]
fn snapshot_allocates_the_vector_and_one_string_per_entry() {
    let ring = full_ring();
    let (snap, allocs, _) = measure(|| ring.snapshot());
    assert_eq!(snap.len(), 1000);
    // The entry vector, the visit's scratch buffer, and one String each.
    assert!(allocs <= 1000 + 2, "{allocs} allocations");
}
