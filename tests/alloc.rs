//! Allocation accounting with a counting global allocator: what a push, a
//! visit, a join and an empty ring cost in heap allocations and bytes, and
//! how many live bytes a full ring holds per retained entry beside
//! `Mutex<VecDeque<String>>` ("b").
//!
//! Counts are per thread (the test harness runs tests on several threads at
//! once), so each measurement sees only its own thread's allocations; live
//! bytes count what this thread allocated minus what it freed.
#![cfg(not(loom))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callring::{Ring, Text, MAX_CAPACITY, MAX_SLOT_BYTES, MIN_SLOT_BYTES};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

fn count(size: usize) {
    // `try_with`: the allocator may run while this thread's locals are torn down.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    let _ = BYTES.try_with(|c| c.set(c.get() + size as u64));
    let _ = LIVE.try_with(|c| c.set(c.get() + size as i64));
}

fn uncount(size: usize) {
    let _ = LIVE.try_with(|c| c.set(c.get() - size as i64));
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
        uncount(layout.size());
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        uncount(layout.size());
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

/// Live bytes this thread gained while running `f` (allocated minus freed),
/// with the result kept alive.
fn live<T>(f: impl FnOnce() -> T) -> (T, i64) {
    let before = LIVE.with(Cell::get);
    let out = f();
    (out, LIVE.with(Cell::get) - before)
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
fn spilled_push_into_a_full_ring_allocates_nothing_once_grown() {
    let ring = Ring::<Text>::new(1000).expect("valid");
    let texts: Vec<String> = [150usize, 400, 1500]
        .iter()
        .map(|&n| "y".repeat(n))
        .collect();
    // Period 3 on 1000 slots: every slot changes size class every lap, so
    // blocks go round the free lists; three laps grow every class.
    let mut i = 0;
    let mut push = |ring: &Ring<Text>| {
        ring.push(texts[i % 3].as_str()).expect("open");
        i += 1;
    };
    for _ in 0..3000 {
        push(&ring);
    }
    let (_, allocs, bytes) = measure(|| {
        for _ in 0..10_000 {
            push(&ring);
        }
    });
    assert_eq!(
        (allocs, bytes),
        (0, 0),
        "10,000 pushes of 150/400/1500 bytes"
    );
    // One size throughout: each slot keeps its block.
    let long = "z".repeat(150);
    for _ in 0..1000 {
        ring.push(long.as_str()).expect("open");
    }
    let (_, allocs, _) = measure(|| {
        for _ in 0..10_000 {
            ring.push(long.as_str()).expect("open");
        }
    });
    assert_eq!(allocs, 0);
}

#[test]
fn empty_ring_of_1000_entries_costs_under_4_kib() {
    let (ring, allocs, bytes) = measure(|| Arc::new(Ring::<Text>::new(1000).expect("valid")));
    let stack = std::mem::size_of::<Ring<Text>>() as u64;
    println!("empty ring: {allocs} allocations, {bytes} heap bytes (Ring itself {stack} bytes)");
    assert!(bytes < 4096, "{bytes} bytes");
    // First push allocates one page (4 KiB, plus up to 56 bytes to start it
    // on a cache line) and its directory of 8 pages, not the whole ring.
    let (_, _, page) = measure(|| ring.push(NOTE).expect("open"));
    assert!(
        (4096..=4096 + 56 + 512).contains(&page),
        "{page} bytes for the first page"
    );
}

/// Both ends of the accepted range build at once and cost little while idle.
#[test]
fn any_accepted_ring_builds_at_once_in_little_memory() {
    for (capacity, slot_bytes) in [(1, MIN_SLOT_BYTES), (MAX_CAPACITY, MAX_SLOT_BYTES)] {
        let start = Instant::now();
        let ((ring, held), allocs, _) = measure(|| {
            live(|| {
                Ring::<Text>::builder()
                    .capacity(capacity)
                    .slot_bytes(slot_bytes)
                    .build()
                    .expect("accepted")
            })
        });
        let took = start.elapsed();
        println!("{capacity} x {slot_bytes} B: {held} bytes in {allocs} allocations, {took:?}");
        assert!(took < Duration::from_millis(200), "{took:?}");
        assert!(held <= 1 << 20, "{held} bytes idle");
        assert_eq!(
            ring.metrics().bytes as i64,
            held,
            "metrics match the allocator"
        );
        // Pushes touch one page (and directory) each, not the ring.
        let (_, grown) = live(|| {
            ring.push(NOTE).expect("open");
            ring.push("x".repeat(3000)).expect("open");
        });
        println!("  after two pushes: {grown} more bytes");
        assert!(grown <= 1 << 20, "{grown} bytes for two pushes");
    }
}

/// Live bytes per retained entry after `laps` laps of `len(i)`-byte entries,
/// for callring (and what its metrics report) and for b, plus callring's
/// allocations per push over the laps.
fn per_entry(n: usize, laps: usize, len: impl Fn(usize) -> usize) -> (f64, f64, f64, f64) {
    let texts: Vec<String> = (0..n * laps).map(|i| "m".repeat(len(i))).collect();
    let ((ring, held), allocs, _) = measure(|| {
        live(|| {
            let ring = Ring::<Text>::new(n).expect("valid");
            for t in &texts {
                ring.push(t.as_str()).expect("open");
            }
            ring
        })
    });
    let reported = ring.metrics().bytes as f64;
    drop(ring);
    // b as the benches build it: one String per push, popped when full.
    let (b, b_held) = live(|| {
        let mut q = VecDeque::with_capacity(n);
        for t in &texts {
            if q.len() == n {
                q.pop_front();
            }
            q.push_back(t.clone());
        }
        q
    });
    drop(b);
    let per = |x: f64| x / n as f64;
    (
        per(held as f64),
        per(reported),
        per(b_held as f64),
        allocs as f64 / texts.len() as f64,
    )
}

/// The length of the `i`th entry.
type Length = Box<dyn Fn(usize) -> usize>;

#[test]
fn memory_per_retained_entry_follows_what_the_ring_holds() {
    const N: usize = 1000;
    let mut rng = fastrand::Rng::with_seed(11);
    let mixed: Vec<usize> = (0..13 * N).map(|_| rng.usize(1..=2000)).collect();
    let cases: [(&str, Length, Option<f64>); 5] = [
        ("82 B", Box::new(|_| 82), None),
        ("150 B", Box::new(|_| 150), Some(1.5)),
        ("400 B", Box::new(|_| 400), None),
        ("mixed 1..=2000 B", Box::new(move |i| mixed[i]), Some(1.5)),
        (
            "mixed 150/400/1500 B",
            Box::new(|i| [150, 400, 1500][i % 3]),
            None,
        ),
    ];
    for (what, len, bound) in cases {
        let (ours, reported, b, allocs) = per_entry(N, 13, len);
        println!(
            "{what:>22}: {ours:7.1} B/entry (metrics {reported:7.1}), b {b:7.1}, \
             ratio {:.2}, {allocs:.3} allocations/push over 13 laps",
            ours / b
        );
        assert!(
            (reported - ours).abs() <= 0.02 * ours,
            "metrics.bytes is what is held"
        );
        assert!(allocs <= 0.2, "{what}: {allocs} allocations per push");
        if let Some(bound) = bound {
            assert!(ours <= bound * b, "{what}: {ours} vs b {b}");
        }
        if what == "82 B" {
            assert!(ours <= 136.0, "82-byte note: {ours} B retained");
        }
    }
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

/// An ended call keeps no rendered copy of its notes: `end()` frees what
/// `all_notes` and `all_notes_shared` keep for the next read (about one
/// byte per byte of text), so a call whose notes were read frees that much
/// more at `end()` than one whose notes were not.
#[test]
fn end_frees_the_rendered_notes() {
    use callring::call::{CallState, Limits};
    let freed_at_end = |read: bool| {
        let call = CallState::builder("c")
            .limits(Limits::new(1000, 10).expect("valid"))
            .build();
        for _ in 0..1000 {
            call.append_note(NOTE).expect("live");
        }
        let mut rendered = 0;
        if read {
            rendered = call.all_notes().len();
            rendered += call.all_notes_shared().len();
        }
        let (_, gained) = live(|| {
            let _ = call.end();
        });
        // Reads after the end (as a registry's summary does) keep nothing.
        let (_, kept) = live(|| {
            let _ = call.summarize();
            let _ = call.all_notes_shared();
        });
        assert!(kept < 1000, "reads after end() kept {kept} bytes");
        (-gained, rendered as i64)
    };
    let (freed_unread, _) = freed_at_end(false);
    let (freed_read, rendered) = freed_at_end(true);
    assert!(rendered > 100_000, "{rendered}");
    assert!(
        freed_read - freed_unread >= rendered * 9 / 10,
        "end() freed {freed_read} bytes after reads of {rendered} bytes of text, \
         {freed_unread} without"
    );
}
