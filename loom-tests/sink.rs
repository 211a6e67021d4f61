//! Loom models of eviction with a sink: every entry handed over exactly once
//! or still in the ring, close + drain completing the hand-off, and pushes
//! racing close getting their value back.
#![cfg(loom)]

mod common;

use std::collections::HashMap;

use callring::{CloseOutcome, PushError, Reason};
use common::{
    check_reads, entry, id_of, model, ring_with_log, ring_with_log_max, MAX_ENTRY, PAYLOAD,
};
use loom::sync::Arc;
use loom::thread;

/// 2 writers and a reader on 2 slots with a sink, 3 pushes. At every point an
/// entry is in the sink or in the ring; after join exactly once across both;
/// after close + drain all of them in the sink exactly once.
#[test]
fn every_entry_handed_over_exactly_once() {
    model(|| {
        let (ring, log) = ring_with_log(2);
        let ring = Arc::new(ring);
        let writers: Vec<_> = [vec![1u8, 2], vec![3]]
            .into_iter()
            .map(|ids| {
                let ring = ring.clone();
                thread::spawn(move || {
                    ids.into_iter()
                        .map(|id| (ring.push(entry(id, PAYLOAD)).unwrap(), entry(id, PAYLOAD)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let reads = ring.snapshot().into_entries();
        let pushed: HashMap<u64, Vec<u8>> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        check_reads(&reads, &pushed);

        // Quiescent: the sink has ticket 0 (evicted), the ring 1 and 2.
        let in_ring = ring.snapshot().into_entries();
        let handed: Vec<(u64, Vec<u8>)> = log
            .lock()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e.reason, Reason::Evicted);
                (e.seq, e.value.clone())
            })
            .collect();
        assert_eq!(handed, [(0, pushed[&0].clone())]);
        check_reads(&in_ring, &pushed);
        assert_eq!(in_ring.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2]);

        assert_eq!(ring.close(), CloseOutcome::Closed { drained: 2 });
        assert_eq!(ring.close(), CloseOutcome::AlreadyClosed);
        let log = log.lock().unwrap();
        let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [0, 1, 2]);
        for e in log.iter() {
            assert_eq!(Some(&e.value), pushed.get(&e.seq));
        }
    });
}

/// Close racing two writers on 2 slots. Every push either got a seq, and its
/// entry reached the sink exactly once by the time close returned and the
/// writers were joined, or got its own value back in `Closed`.
#[test]
fn close_racing_pushes_loses_nothing() {
    model(|| {
        let (ring, log) = ring_with_log(2);
        let ring = Arc::new(ring);
        let writers: Vec<_> = [vec![1u8, 2], vec![3]]
            .into_iter()
            .map(|ids| {
                let ring = ring.clone();
                thread::spawn(move || {
                    let mut stored = vec![];
                    let mut refused = vec![];
                    for id in ids {
                        match ring.push(entry(id, PAYLOAD)) {
                            Ok(seq) => stored.push((seq, id)),
                            Err(PushError::Closed(v)) => refused.push(id_of(&v)),
                            Err(e) => panic!("unexpected {e}"),
                        }
                    }
                    (stored, refused)
                })
            })
            .collect();
        let outcome = ring.close();
        let mut stored = vec![];
        let mut refused = vec![];
        for w in writers {
            let (s, r) = w.join().unwrap();
            stored.extend(s);
            refused.extend(r);
        }
        assert!(matches!(outcome, CloseOutcome::Closed { .. }));
        assert_eq!(stored.len() + refused.len(), 3);
        stored.sort_unstable();
        let log = log.lock().unwrap();
        let mut handed: Vec<(u64, u8)> = log.iter().map(|e| (e.seq, id_of(&e.value))).collect();
        handed.sort_unstable();
        assert_eq!(
            handed, stored,
            "sink must hold every stored push exactly once"
        );
        for id in refused {
            assert!(
                handed.iter().all(|&(_, h)| h != id),
                "refused {id} was stored"
            );
        }
        assert!(matches!(
            ring.push(entry(9, PAYLOAD)),
            Err(PushError::Closed(v)) if v == entry(9, PAYLOAD)
        ));
    });
}

/// At every instant an entry is in the ring, the sink, or both, never in
/// neither: an overwriter hands the old entry over *before* it claims the
/// slot. A spilled entry is pushed (and completed) before a reader starts;
/// another writer evicts it on a 1-slot ring while the reader snapshots.
/// Whatever the snapshot missed must already be in the sink when the
/// snapshot returns.
#[test]
fn an_evicted_entry_is_never_in_neither() {
    model(|| {
        let (ring, log) = ring_with_log_max(1, MAX_ENTRY);
        let ring = Arc::new(ring);
        let old = entry(1, PAYLOAD + 8);
        assert_eq!(ring.push(old.clone()).unwrap(), 0);
        let writer = {
            let ring = ring.clone();
            thread::spawn(move || ring.push(entry(2, PAYLOAD)).unwrap())
        };
        let snap = ring.snapshot().into_entries();
        let in_ring = snap.iter().any(|(seq, v)| *seq == 0 && *v == old);
        let in_sink = log
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.seq == 0 && e.value == old);
        assert!(
            in_ring || in_sink,
            "entry 0 in neither the ring nor the sink"
        );
        writer.join().unwrap();
    });
}
