//! Incremental reads: a cursor sees every entry exactly once while it keeps
//! up, reports the exact number it missed when lapped, and never returns a
//! torn entry, with writers and readers racing on real threads. Also the
//! call layer's cached reader against a fresh `all_notes`.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::thread;

use callring::call::{CallState, Limits, Timestamp};
use callring::{Cursor, Ring, Text};
use proptest::prelude::*;

/// `n` in a release build outside CI, `n / 20` otherwise.
fn scaled(n: u64) -> u64 {
    if cfg!(debug_assertions) || std::env::var_os("CI").is_some() {
        (n / 20).max(1)
    } else {
        n
    }
}

/// Writer `w`'s `i`th entry: 10 to 209 bytes (some spill past a slot's 112
/// inline bytes) of one letter, framed by `w` and `i`, so any torn, mixed or
/// cut copy fails [`check`].
fn entry(w: u64, i: u64) -> String {
    let fill = ((w * 31 + i * 7) % 200) as usize;
    let c = char::from(b'a' + ((w + i) % 26) as u8);
    format!("{w}:{i}:{}|", c.to_string().repeat(fill))
}

fn check(text: &str) -> (u64, u64) {
    let mut parts = text.splitn(3, ':');
    let w: u64 = parts.next().and_then(|p| p.parse().ok()).expect(text);
    let i: u64 = parts.next().and_then(|p| p.parse().ok()).expect(text);
    assert_eq!(text, entry(w, i), "torn or foreign entry");
    (w, i)
}

/// Two writers push `per_writer` entries each into a ring of `capacity` while
/// `readers` cursors read in a loop until the writers are done, then once
/// more (each reader also checks its joiner's lines). Returns, per reader,
/// the seqs it saw and the lag it was told.
fn race(capacity: usize, per_writer: u64, readers: usize) -> Vec<(Vec<u64>, u64)> {
    let ring = Ring::<Text>::new(capacity).expect("valid");
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        let readers: Vec<_> = (0..readers)
            .map(|_| {
                let (ring, done) = (&ring, &done);
                s.spawn(move || {
                    let mut cursor = Cursor::new();
                    // A joiner on the same ring: its text holds whole entries.
                    let mut joiner = ring.joiner("\n");
                    let (mut seqs, mut lagged) = (Vec::new(), 0);
                    let mut per_writer_last = [None::<u64>; 2];
                    loop {
                        let finished = done.load(Ordering::Acquire);
                        let progress = cursor.visit(ring, |seq, bytes| {
                            let text = std::str::from_utf8(bytes).expect("UTF-8");
                            let (w, i) = check(text);
                            // A writer's entries come in its push order.
                            let last = &mut per_writer_last[w as usize];
                            assert!(*last < Some(i), "writer {w} went back");
                            *last = Some(i);
                            seqs.push(seq);
                        });
                        lagged += progress.lagged;
                        for line in joiner.text().lines() {
                            check(line);
                        }
                        if finished {
                            return (seqs, lagged);
                        }
                    }
                })
            })
            .collect();
        thread::scope(|w| {
            for writer in 0..2 {
                let ring = &ring;
                w.spawn(move || {
                    for i in 0..per_writer {
                        ring.push(entry(writer, i)).expect("open");
                    }
                });
            }
        });
        done.store(true, Ordering::Release);
        readers
            .into_iter()
            .map(|r| r.join().expect("reader"))
            .collect()
    })
}

/// Keeping up (the ring holds every push): every seq exactly once, in order,
/// nothing reported missed.
#[test]
fn a_cursor_that_keeps_up_sees_every_entry_once() {
    let per_writer = scaled(100_000);
    let total = 2 * per_writer;
    for (seqs, lagged) in race(total as usize, per_writer, 2) {
        assert_eq!(lagged, 0);
        assert_eq!(seqs, (0..total).collect::<Vec<_>>());
    }
}

/// Lapped (a ring of 8 under two writers): seqs strictly increase, and what
/// was seen plus what was reported missed is exactly every push.
#[test]
fn a_lapped_cursor_reports_exactly_what_it_missed() {
    let per_writer = scaled(200_000);
    for (seqs, lagged) in race(8, per_writer, 2) {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs not increasing");
        assert_eq!(seqs.len() as u64 + lagged, 2 * per_writer);
        assert_eq!(seqs.last(), Some(&(2 * per_writer - 1)));
    }
}

#[test]
fn lag_is_exact_when_quiescent() {
    let ring = Ring::<Text>::new(4).expect("valid");
    let mut cursor = Cursor::new();
    for i in 0..10 {
        ring.push(i.to_string()).expect("open");
    }
    let batch = cursor.read(&ring);
    assert_eq!(batch.lagged(), 6);
    assert_eq!(
        batch.entries().iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [6, 7, 8, 9]
    );
    assert_eq!(cursor.next_seq(), 10);
    let batch = cursor.read(&ring);
    assert!(batch.entries().is_empty() && batch.lagged() == 0);
    // A cursor ahead of the ring waits for its seq.
    let mut ahead = Cursor::at(12);
    ring.push("10".to_string()).expect("open");
    assert!(ahead.read(&ring).entries().is_empty());
    assert_eq!(ahead.next_seq(), 12);
    let progress = ring.read_since(5, |_, _| {}); // 5 and 6 are gone
    assert_eq!((progress.next, progress.lagged), (11, 2));
}

fn call(capacity: usize) -> CallState {
    let t = AtomicI64::new(1_764_063_000_000_000_000);
    CallState::builder("c")
        .limits(Limits::new(capacity, 4).expect("valid"))
        .clock(move || {
            // A new second every few notes.
            Timestamp::from_unix_nanos(t.fetch_add(400_000_000, Ordering::Relaxed))
        })
        .build()
}

#[derive(Debug, Clone)]
enum Step {
    Append(String),
    Read,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => "[a-zé日\\n ]{0,150}".prop_map(Step::Append),
        1 => Just(Step::Read),
    ]
}

proptest! {
    /// The cached reader's text, and the call's own `all_notes` and
    /// `all_notes_shared`, equal a fresh rendering after every step, whatever
    /// was appended or overwritten between reads.
    #[test]
    fn cached_reader_matches_a_fresh_rendering(
        capacity in 1usize..12,
        steps in prop::collection::vec(step(), 0..80),
    ) {
        let call = call(capacity);
        let mut reader = call.notes_reader();
        let mut polled = call.notes_reader();
        // A fresh rendering that shares nothing with the cached views.
        let fresh = |call: &CallState| {
            call.notes().iter().map(|n| n.to_string()).collect::<Vec<_>>().join("\n")
        };
        for step in steps {
            match step {
                Step::Append(text) => {
                    call.append_note(&text).expect("live call");
                }
                Step::Read => prop_assert_eq!(polled.all_notes(), fresh(&call)),
            }
            let expected = fresh(&call);
            prop_assert_eq!(reader.text(), &expected);
            // The call's own all_notes and all_notes_shared keep a view too.
            prop_assert_eq!(call.all_notes(), expected.as_str());
            prop_assert_eq!(&*call.all_notes_shared(), expected.as_str());
        }
        prop_assert_eq!(reader.lagged(), 0);
    }
}

proptest! {
    /// A ring's joiner equals a fresh `join` after every push.
    #[test]
    fn joiner_matches_a_fresh_join(
        capacity in 1usize..10,
        notes in prop::collection::vec("[a-z日]{0,140}", 0..60),
        sep in "[,;\n ]{0,2}",
    ) {
        let ring = Ring::<Text>::new(capacity).expect("valid");
        let mut joiner = ring.joiner(&sep);
        for note in notes {
            ring.push(note).expect("open");
            prop_assert_eq!(joiner.text(), ring.join(&sep));
        }
    }
}
