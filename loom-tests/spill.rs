//! Loom models of entries that spill past the inline payload into extension
//! blocks: a block reused by another slot's writer under a reader, an
//! overwriter capturing a spilled entry for the sink, and `close` racing
//! spilled pushes.
#![cfg(loom)]

mod common;

use std::collections::HashMap;

use callring::{CloseOutcome, PushError, Reason};
use common::{check_reads, entry, id_of, model, ring_max, ring_with_log_max, MAX_ENTRY, PAYLOAD};
use loom::sync::Arc;
use loom::thread;

/// Spills one word: block size class 0.
const SHORT_TAIL: usize = PAYLOAD + 8;
/// Spills two words: size class 1.
const LONG_TAIL: usize = PAYLOAD + 12;

/// The reuse argument of `ring/arena.rs`, as a model. Ring of 2 slots, filled
/// before the threads start: ticket 0 spilled (slot 0, block b), ticket 1
/// inline (slot 1, no block). Thread A pushes an inline entry: if it gets
/// slot 0 it frees b. Thread B pushes a spilled entry of b's class: in slot 1
/// it pops b (when A freed it first) and writes into it, while the main
/// thread reads ticket 0 through b. Every read must be whole: a reader that
/// loaded B's bytes from b must see A's claim of slot 0 in its re-check.
#[test]
fn spilled_block_reused_under_a_reader() {
    model(|| {
        let ring = Arc::new(ring_max(2, MAX_ENTRY));
        let mut pushed = HashMap::new();
        for (id, len) in [(1u8, SHORT_TAIL), (2, 8)] {
            pushed.insert(ring.push(entry(id, len)).unwrap(), entry(id, len));
        }
        let a = {
            let ring = ring.clone();
            thread::spawn(move || (ring.push(entry(3, 8)).unwrap(), entry(3, 8)))
        };
        let b = {
            let ring = ring.clone();
            thread::spawn(move || {
                (
                    ring.push(entry(4, SHORT_TAIL)).unwrap(),
                    entry(4, SHORT_TAIL),
                )
            })
        };
        let reads = ring.snapshot().into_entries();
        pushed.extend([a.join().unwrap(), b.join().unwrap()]);
        check_reads(&reads, &pushed);
        let last = ring.snapshot();
        assert_eq!(last.seqs().collect::<Vec<_>>(), [2, 3]);
        check_reads(last.entries(), &pushed);
    });
}

/// Capacity 1 with a sink: two writers push spilled entries of different
/// size classes, so the second to get the slot captures the first's entry,
/// block included, then swaps the block for one of its own class; a reader
/// runs throughout. The sink gets every entry whole, exactly once.
#[test]
fn overwriter_captures_a_spilled_entry() {
    model(|| {
        let (ring, log) = ring_with_log_max(1, MAX_ENTRY);
        let ring = Arc::new(ring);
        let writers: Vec<_> = [(1u8, SHORT_TAIL), (2, LONG_TAIL)]
            .into_iter()
            .map(|(id, len)| {
                let ring = ring.clone();
                thread::spawn(move || (ring.push(entry(id, len)).unwrap(), entry(id, len)))
            })
            .collect();
        let reads = ring.snapshot().into_entries();
        let pushed: HashMap<u64, Vec<u8>> =
            writers.into_iter().map(|w| w.join().unwrap()).collect();
        check_reads(&reads, &pushed);
        {
            let log = log.lock().unwrap();
            assert_eq!(log.len(), 1, "the older entry was evicted");
            assert_eq!((log[0].seq, log[0].reason), (0, Reason::Evicted));
            assert_eq!(Some(&log[0].value), pushed.get(&0), "captured whole");
        }
        assert_eq!(ring.close(), CloseOutcome::Closed { drained: 1 });
        let log = log.lock().unwrap();
        assert_eq!((log[1].seq, log[1].reason), (1, Reason::Drained));
        assert_eq!(Some(&log[1].value), pushed.get(&1));
    });
}

/// `close` racing two writers of spilled entries on 2 slots with a sink:
/// every push either got a seq, and its entry reached the sink whole exactly
/// once (evicted, or drained with its block), or got its value back.
#[test]
fn close_racing_spilled_pushes_loses_nothing() {
    model(|| {
        let (ring, log) = ring_with_log_max(2, MAX_ENTRY);
        let ring = Arc::new(ring);
        let writers: Vec<_> = [
            vec![(1u8, SHORT_TAIL), (2, LONG_TAIL)],
            vec![(3, LONG_TAIL)],
        ]
        .into_iter()
        .map(|pushes| {
            let ring = ring.clone();
            thread::spawn(move || {
                let mut stored = vec![];
                let mut refused = vec![];
                for (id, len) in pushes {
                    match ring.push(entry(id, len)) {
                        Ok(seq) => stored.push((seq, entry(id, len))),
                        Err(PushError::Closed(v)) => refused.push(id_of(&v)),
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                (stored, refused)
            })
        })
        .collect();
        assert!(matches!(ring.close(), CloseOutcome::Closed { .. }));
        let mut stored = vec![];
        let mut refused = vec![];
        for w in writers {
            let (s, r) = w.join().unwrap();
            stored.extend(s);
            refused.extend(r);
        }
        assert_eq!(stored.len() + refused.len(), 3);
        stored.sort_unstable();
        let log = log.lock().unwrap();
        let mut handed: Vec<(u64, Vec<u8>)> =
            log.iter().map(|e| (e.seq, e.value.clone())).collect();
        handed.sort_unstable();
        assert_eq!(handed, stored, "every stored push, whole, exactly once");
        for id in refused {
            assert!(
                handed.iter().all(|(_, v)| id_of(v) != id),
                "refused {id} was stored"
            );
        }
    });
}
