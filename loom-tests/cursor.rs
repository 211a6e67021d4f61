//! Loom model of incremental reads: a cursor lapped while it reads.
//!
//! The cursor reads through the slot seqlock (R1, R2 pair with W5, W3) and
//! bounds its scan with the head's Relaxed load; this model checks what it
//! adds on top: an entry still being written stops the read and comes with
//! the next one, an entry overwritten under the reader is counted as missed,
//! and every seq below the cursor is seen or counted exactly once.
#![cfg(loom)]

mod common;

use std::collections::HashMap;

use callring::Cursor;
use common::{entry, id_of, model, ring, PAYLOAD};
use loom::sync::Arc;
use loom::thread;

/// Guarantees 1 and 2 for a cursor, and its lag count: a 2-slot ring holds
/// seq 0; a writer pushes seqs 1 and 2 (seq 2 overwrites seq 0) while the
/// reader reads twice with one cursor, then once more after the writer. Every
/// entry read is whole and is its seq's push, seqs increase across reads, and
/// seen + missed = the cursor's position after every read; at the end the
/// cursor has reached seq 3 and seen seq 2.
#[test]
fn cursor_lapped_mid_read() {
    model(|| {
        let ring = Arc::new(ring(2));
        let lengths = [PAYLOAD, 3, PAYLOAD - 1];
        let pushed: HashMap<u64, Vec<u8>> = (0..3u8)
            .map(|id| (u64::from(id), entry(id + 1, lengths[usize::from(id)])))
            .collect();
        ring.push(pushed[&0].clone()).unwrap();
        let writer = {
            let ring = ring.clone();
            let (one, two) = (pushed[&1].clone(), pushed[&2].clone());
            thread::spawn(move || {
                ring.push(one).unwrap();
                ring.push(two).unwrap();
            })
        };
        let mut cursor = Cursor::new();
        let (mut seen, mut missed) = (Vec::new(), 0);
        let mut read = |cursor: &mut Cursor| {
            let progress = cursor.visit(&*ring, |seq, bytes| {
                id_of(bytes);
                assert_eq!(Some(&bytes.to_vec()), pushed.get(&seq), "seq {seq}");
                seen.push(seq);
            });
            missed += progress.lagged;
            assert_eq!(progress.next, cursor.next_seq());
            assert_eq!(seen.len() as u64 + missed, progress.next);
        };
        read(&mut cursor);
        read(&mut cursor);
        writer.join().unwrap();
        read(&mut cursor);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert_eq!(cursor.next_seq(), 3);
        assert_eq!(seen.last(), Some(&2));
    });
}

/// Guarantee 1 for `join`, whose scan copies into a pre-sized buffer
/// (`Slot::read_at`, same R1/R2 as every read): a 2-slot text ring holds
/// "aaa"; a writer pushes a spilling entry of 20 "b"s (its tail in an
/// extension block), then "cc" (overwriting "aaa"), while the reader joins.
/// Every joined line is one whole entry, in seq order; afterwards the join is
/// exactly the last two.
#[test]
fn join_never_tears() {
    model(|| {
        let ring = Arc::new(
            callring::Ring::<callring::Text>::builder()
                .capacity(2)
                .slot_bytes(common::SLOT_BYTES)
                .max_entry_bytes(common::MAX_ENTRY)
                .build()
                .unwrap(),
        );
        let long = "b".repeat(PAYLOAD + 4);
        ring.push("aaa").unwrap();
        let writer = {
            let (ring, long) = (ring.clone(), long.clone());
            thread::spawn(move || {
                ring.push(long).unwrap();
                ring.push("cc").unwrap();
            })
        };
        let joined = ring.join("\n");
        let order = ["aaa", long.as_str(), "cc"];
        let mut last = None;
        for line in joined.split('\n').filter(|l| !l.is_empty()) {
            let at = order.iter().position(|e| *e == line);
            assert!(at.is_some(), "torn line {line:?}");
            assert!(last < at, "out of order: {joined:?}");
            last = at;
        }
        writer.join().unwrap();
        assert_eq!(ring.join("\n"), format!("{long}\ncc"));
    });
}
