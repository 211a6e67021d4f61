//! Threaded stress tests on real threads: exactly-once hand-off, no torn
//! entries under concurrent readers, per-writer ordering, exact metrics once
//! writers are quiescent, and `close` racing writers.
//!
//! Sized for at least 10^6 pushes in total in a release build; a debug build or
//! `CI` shrinks every workload (see [`scaled`]). With 2 cores, these tests run
//! more threads than cores on purpose: preempted writers are the case that
//! exercises the previous-lap and capture waits.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use callring::{CloseOutcome, Evicted, PushError, Reason, Ring, Text};

/// `n` in a release build outside CI, `n / 25` otherwise (debug builds are
/// ~20x slower, and CI runs the debug build next to the loom models).
fn scaled(n: u64) -> u64 {
    let shrink = cfg!(debug_assertions) || std::env::var_os("CI").is_some();
    if shrink {
        (n / 25).max(1)
    } else {
        n
    }
}

/// The text writer `w` pushes as its `i`th entry: self-describing, so a reader
/// can check any entry it sees is exactly what was pushed (no torn or mixed
/// bytes). The length varies with `(w, i)` from 15 to `14 + spread` bytes.
fn entry(w: u64, i: u64, spread: u64) -> String {
    let mut s = format!("{w:02}:{i:010}:");
    let fill = (w.wrapping_mul(31).wrapping_add(i.wrapping_mul(7))) % spread;
    let c = char::from(b'a' + ((w + i) % 26) as u8);
    s.extend(std::iter::repeat_n(c, fill as usize));
    s.push('|');
    s
}

/// Parses and checks an entry produced by [`entry`]; returns `(w, i)`.
fn check(text: &str, spread: u64) -> (u64, u64) {
    let mut parts = text.splitn(3, ':');
    let w: u64 = parts.next().and_then(|p| p.parse().ok()).expect(text);
    let i: u64 = parts.next().and_then(|p| p.parse().ok()).expect(text);
    assert_eq!(text, entry(w, i, spread), "torn or foreign entry");
    (w, i)
}

/// Collects what a sink receives.
type Received = Arc<Mutex<Vec<Evicted<String>>>>;

fn collecting_sink() -> (Received, impl Fn(Evicted<String>) + Send + Sync + 'static) {
    let received: Received = Arc::default();
    let r = Arc::clone(&received);
    (received, move |e| r.lock().expect("not poisoned").push(e))
}

/// Writer `w`'s `i`th entry for the exactly-once test: 1..=5000 bytes of
/// lowercase letters, letter `k` being `seed + k * step` (mod 26) with a
/// step fixed by the length, so a torn, mixed or cut copy breaks the pattern
/// (see [`consistent`]) however short the entry.
fn varied(w: u64, i: u64) -> String {
    let mix = (w + 1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let mix = mix ^ (mix >> 31);
    let len = 1 + (mix % 5000) as usize;
    let seed = ((mix >> 20) % 26) as usize;
    let step = step(len);
    (0..len)
        .map(|k| char::from(b'a' + ((seed + k * step) % 26) as u8))
        .collect()
}

/// 1..=25, different for consecutive lengths.
fn step(len: usize) -> usize {
    1 + len % 25
}

/// Whether `text` follows the pattern of some [`varied`] entry of its length.
fn consistent(text: &str) -> bool {
    let b = text.as_bytes();
    let len = b.len();
    let Some(&first) = b.first() else {
        return false;
    };
    let seed = usize::from(first.wrapping_sub(b'a'));
    let step = step(len);
    b.iter()
        .enumerate()
        .all(|(k, &c)| usize::from(c) == usize::from(b'a') + (seed + k * step) % 26)
}

/// FNV-1a, to compare what the sink received with what was pushed without
/// keeping millions of entries of kilobytes.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Every pushed entry reaches the sink exactly once, as evicted or (after
/// close) drained, whole, and each writer's entries arrive with increasing
/// seqs. The sink is a bounded(1) channel, so writers are back-pressured by a
/// slow consumer throughout. Entries of 1..=5000 bytes (most spill into
/// extension blocks, of every size class up to 5 KB) from 8 writers, while 2
/// readers snapshot and check every entry they see.
#[test]
fn exactly_once_through_bounded_channel_sink() {
    const WRITERS: u64 = 8;
    const READERS: usize = 2;
    // Kilobyte entries through a bounded(1) channel and a hashing consumer:
    // a debug build gets a quarter of the usual shrunk count (1,500 per
    // writer, still 12,000 entries of every size class), so the README's
    // `cargo test` stays fast.
    let per_writer = if cfg!(debug_assertions) {
        scaled(150_000) / 4
    } else {
        scaled(150_000)
    };
    let (tx, rx) = crossbeam_channel::bounded::<Evicted<String>>(1);
    let ring = Ring::<Text>::builder()
        .capacity(64)
        .sink(tx)
        .build()
        .expect("valid");
    // The consumer checks each entry's pattern as it arrives and keeps its
    // seq, reason and hash: millions of kilobyte entries would not fit.
    let consumer = thread::spawn(move || {
        rx.iter()
            .map(|e| {
                assert!(consistent(&e.value), "torn entry handed over");
                (e.seq, e.reason, fnv(e.value.as_bytes()))
            })
            .collect::<Vec<_>>()
    });
    let done = AtomicBool::new(false);
    let read = AtomicU64::new(0);
    let pushed: Vec<Vec<u64>> = thread::scope(|s| {
        for _ in 0..READERS {
            s.spawn(|| {
                let mut scratch = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let mut last = None;
                    ring.visit_with(&mut scratch, |seq, bytes| {
                        let text = std::str::from_utf8(bytes).expect("utf-8");
                        assert!(consistent(text), "torn entry read");
                        assert!(last < Some(seq), "seqs must increase");
                        last = Some(seq);
                        read.fetch_add(1, Ordering::Relaxed);
                    });
                }
            });
        }
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let ring = &ring;
                s.spawn(move || {
                    (0..per_writer)
                        .map(|i| ring.push(varied(w, i)).expect("open"))
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let pushed = handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect();
        done.store(true, Ordering::Relaxed);
        pushed
    });
    let CloseOutcome::Closed { drained } = ring.close() else {
        panic!("first close");
    };
    let metrics = ring.metrics();
    drop(ring); // drops the sender, ending the consumer
    let received = consumer.join().expect("consumer");

    let total = WRITERS * per_writer;
    assert_eq!(received.len() as u64, total, "every entry exactly once");
    assert_eq!(metrics.appended, total);
    assert_eq!(metrics.drained, drained);
    assert_eq!(metrics.evicted + drained, total);
    assert_eq!(
        metrics.refused + metrics.undecodable + metrics.sink_panics,
        0
    );
    assert!(read.load(Ordering::Relaxed) > 0, "the readers read");

    // Tickets are consecutive, one per entry: seq -> (writer, index).
    let mut by_seq = vec![None; total as usize];
    for (w, seqs) in pushed.iter().enumerate() {
        // Each writer's tickets grow with its program order.
        assert!(seqs.windows(2).all(|p| p[0] < p[1]));
        for (i, &seq) in seqs.iter().enumerate() {
            let slot = by_seq.get_mut(seq as usize).expect("seq below the total");
            assert!(
                slot.replace((w as u64, i as u64)).is_none(),
                "seq {seq} twice"
            );
        }
    }
    let mut seen = vec![false; total as usize];
    let mut drained_seen = 0;
    for &(seq, reason, hash) in &received {
        let (w, i) = by_seq[seq as usize].expect("every seq was pushed");
        assert!(
            !std::mem::replace(&mut seen[seq as usize], true),
            "seq {seq} handed over twice"
        );
        assert_eq!(
            hash,
            fnv(varied(w, i).as_bytes()),
            "seq {seq} is not what {w}:{i} pushed"
        );
        // Hand-offs of one writer's entries need not arrive in order (two
        // overwriters race), but drained ones do, after all evicted ones.
        match reason {
            Reason::Evicted => assert_eq!(drained_seen, 0, "evicted after drain began"),
            Reason::Drained => drained_seen += 1,
            other => panic!("unexpected reason {other:?}"),
        }
    }
    assert_eq!(drained_seen, drained);
    // Drained entries are the last ones, in seq order.
    let drained_seqs: Vec<u64> = received
        .iter()
        .filter(|e| e.1 == Reason::Drained)
        .map(|e| e.0)
        .collect();
    assert!(drained_seqs.windows(2).all(|p| p[0] < p[1]));
    assert!(
        metrics.sink_waits > 0,
        "a bounded(1) channel must have back-pressured some writer"
    );
}

#[test]
fn varied_entries_cover_1_to_5000_bytes_and_tears_are_caught() {
    let lens: Vec<usize> = (0..20_000).map(|i| varied(i % 8, i).len()).collect();
    assert_eq!(lens.iter().min(), Some(&1));
    assert!(lens.iter().max() >= Some(&4990));
    for i in 0..200 {
        let (a, b) = (varied(0, i), varied(1, i));
        assert!(consistent(&a) && consistent(&b));
        // A tear: the head of one entry with the tail of another of the
        // same length (what a reader racing a reused block could see).
        if a.len() == b.len() && a != b && a.len() > 1 {
            let torn = format!("{}{}", &a[..a.len() / 2], &b[a.len() / 2..]);
            assert!(!consistent(&torn));
        }
        // A copy cut short is caught too.
        if a.len() > 2 {
            assert!(!consistent(&a[..a.len() - 1]));
        }
    }
}

/// Readers snapshotting throughout never see a torn entry; within each
/// snapshot seqs strictly increase and each writer's entries appear in its
/// program order. Entries of 15..=74 bytes on 16-byte inline payloads: all
/// spill, across several size classes, so blocks are swapped and reused
/// under the readers.
#[test]
fn no_torn_entry_under_concurrent_readers() {
    const WRITERS: u64 = 4;
    const READERS: usize = 2;
    const SPREAD: u64 = 60; // 15..=74 bytes, 16 inline
    let per_writer = scaled(250_000);
    let ring = Ring::<Text>::builder()
        .capacity(48)
        .slot_bytes(32)
        .build()
        .expect("valid");
    let done = AtomicBool::new(false);
    let snapshots = AtomicU64::new(0);
    let entries_checked = AtomicU64::new(0);
    thread::scope(|s| {
        for _ in 0..READERS {
            s.spawn(|| {
                let mut scratch = Vec::new();
                loop {
                    // Check the stop flag first, so one last snapshot is taken
                    // after every writer finished.
                    let stop = done.load(Ordering::Acquire);
                    let snap = ring.snapshot();
                    let mut last_seq = None;
                    let mut last_i = [None::<u64>; WRITERS as usize];
                    for (seq, text) in snap.entries() {
                        let (w, i) = check(text, SPREAD);
                        assert!(last_seq < Some(*seq), "seqs must increase");
                        last_seq = Some(*seq);
                        assert!(last_i[w as usize] < Some(i), "writer order");
                        last_i[w as usize] = Some(i);
                    }
                    // The borrowed path sees whole entries too.
                    ring.visit_with(&mut scratch, |_, bytes| {
                        check(std::str::from_utf8(bytes).expect("utf-8"), SPREAD);
                    });
                    let joined = ring.join("\n");
                    for line in joined.lines() {
                        check(line, SPREAD);
                    }
                    entries_checked.fetch_add(snap.len() as u64, Ordering::Relaxed);
                    snapshots.fetch_add(1, Ordering::Relaxed);
                    if stop {
                        break;
                    }
                }
            });
        }
        thread::scope(|w_scope| {
            for w in 0..WRITERS {
                let ring = &ring;
                w_scope.spawn(move || {
                    for i in 0..per_writer {
                        ring.push(entry(w, i, SPREAD)).expect("open");
                    }
                });
            }
        });
        done.store(true, Ordering::Release);
    });
    assert!(snapshots.load(Ordering::Relaxed) >= READERS as u64);
    assert!(entries_checked.load(Ordering::Relaxed) > 0);

    // Quiescent: the final snapshot holds exactly the newest entries, whole.
    let metrics = ring.metrics();
    assert_eq!(metrics.appended, WRITERS * per_writer);
    assert_eq!(metrics.evicted + metrics.retained, metrics.appended);
    let snap = ring.snapshot();
    assert_eq!(
        snap.skipped().total(),
        0,
        "nothing in flight when quiescent"
    );
    assert_eq!(snap.len() as u64, metrics.retained);
    assert_eq!(snap.len(), ring.capacity(), "capacity counts entries");
    assert_eq!(
        snap.seqs().next(),
        Some(metrics.appended - ring.capacity() as u64)
    );
}

/// Single-slot entries: after the writers stop, the ring holds exactly the
/// last `capacity` tickets, and metrics are exact.
#[test]
fn quiescent_ring_holds_the_last_capacity_tickets() {
    const WRITERS: u64 = 6;
    let per_writer = scaled(170_000);
    let ring = Ring::<Text>::new(1000).expect("valid");
    let tickets: Vec<(u64, String)> = thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let ring = &ring;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..per_writer {
                        let text = entry(w, i, 60);
                        let seq = ring.push(text.as_str()).expect("open");
                        // Remember only what can still be in the ring.
                        if i + 1000 >= per_writer {
                            mine.push((seq, text));
                        }
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer"))
            .collect()
    });
    let total = WRITERS * per_writer;
    let mut expected: Vec<(u64, String)> = tickets
        .into_iter()
        .filter(|(seq, _)| seq + 1000 >= total)
        .collect();
    expected.sort();
    let snap = ring.snapshot();
    assert_eq!(snap.entries(), expected.as_slice());
    assert_eq!(snap.seqs().next(), Some(total - 1000));
    let m = ring.metrics();
    assert_eq!(
        (m.appended, m.retained, m.evicted, m.reader_skips),
        (total, 1000, total - 1000, 0)
    );
}

/// `close` races writers: every push either succeeds (and its entry reaches
/// the sink exactly once, evicted or drained) or gets its value back; after
/// `close` returns, every push is refused.
#[test]
fn close_racing_writers_loses_and_duplicates_nothing() {
    const WRITERS: u64 = 4;
    let rounds = scaled(200).max(8);
    for round in 0..rounds {
        let (received, sink) = collecting_sink();
        let ring = Ring::<Text>::builder()
            .capacity(16)
            .slot_bytes(32)
            .sink(sink)
            .build()
            .expect("valid");
        let started = AtomicU64::new(0);
        let (accepted, refused, drained) = thread::scope(|s| {
            let handles: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let (ring, started) = (&ring, &started);
                    s.spawn(move || {
                        let mut accepted = Vec::new();
                        let mut refused = 0u64;
                        for i in 0.. {
                            started.fetch_add(1, Ordering::Relaxed);
                            match ring.push(entry(w, i, 40)) {
                                Ok(seq) => accepted.push((seq, w, i)),
                                Err(PushError::Closed(value)) => {
                                    assert_eq!(value, entry(w, i, 40), "value handed back");
                                    refused += 1;
                                    if refused == 3 {
                                        break;
                                    }
                                }
                                Err(other) => panic!("unexpected {other}"),
                            }
                        }
                        (accepted, refused)
                    })
                })
                .collect();
            // Close at a different point each round.
            while started.load(Ordering::Relaxed) < 50 + round * 37 % 400 {
                thread::yield_now();
            }
            let CloseOutcome::Closed { drained } = ring.close() else {
                panic!("first close");
            };
            assert_eq!(ring.close(), CloseOutcome::AlreadyClosed);
            let mut accepted = Vec::new();
            let mut refused = 0;
            for h in handles {
                let (a, r) = h.join().expect("writer");
                accepted.extend(a);
                refused += r;
            }
            (accepted, refused, drained)
        });
        assert_eq!(refused, 3 * WRITERS);
        assert!(ring.push("late").is_err());
        // Every hand-off happened inside a push or close that has returned.
        let received = received.lock().expect("not poisoned").clone();
        let mut got: Vec<(u64, String)> =
            received.iter().map(|e| (e.seq, e.value.clone())).collect();
        got.sort();
        let mut want: Vec<(u64, String)> = accepted
            .iter()
            .map(|&(seq, w, i)| (seq, entry(w, i, 40)))
            .collect();
        want.sort();
        assert_eq!(
            got, want,
            "round {round}: exactly the accepted entries, once each"
        );
        let n_drained = received
            .iter()
            .filter(|e| e.reason == Reason::Drained)
            .count();
        assert_eq!(n_drained as u64, drained);
        assert_eq!(ring.metrics().appended, accepted.len() as u64);
    }
}
