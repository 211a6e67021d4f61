//! Loom models of the ring without a sink: no torn entry, ticket order, the
//! final state, a slow writer never overwriting a newer entry, and a completed
//! push being visible to a later snapshot.
#![cfg(loom)]

mod common;

use std::collections::HashMap;

use common::{check_reads, entry, model, ring, PAYLOAD};
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

/// 2 writers + 1 reader on 2 slots, 3 pushes (one lap wraps): every read is
/// whole and belongs to its seq, seqs increase, and afterwards the ring holds
/// exactly the last 2 tickets.
#[test]
fn no_torn_entry_and_final_state() {
    model(|| {
        let ring = Arc::new(ring(2));
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

        let last = ring.snapshot();
        assert_eq!(last.skipped().total(), 0);
        assert_eq!(last.seqs().collect::<Vec<_>>(), [1, 2]);
        check_reads(last.entries(), &pushed);
    });
}

/// A writer holding ticket 0 may be slow while another writer laps it on a
/// 1-slot ring: the other's ticket 1 and 2 must wait, and the slot must end up
/// with the newest ticket, never an older one written over it.
#[test]
fn slow_writer_never_overwrites_newer() {
    model(|| {
        let ring = Arc::new(ring(1));
        let slow = {
            let ring = ring.clone();
            thread::spawn(move || ring.push(entry(1, PAYLOAD)).unwrap())
        };
        let mut mine = vec![];
        for id in [2u8, 3] {
            mine.push((ring.push(entry(id, PAYLOAD)).unwrap(), id));
        }
        let slow_seq = slow.join().unwrap();
        mine.push((slow_seq, 1));
        let (newest, id) = mine.into_iter().max().unwrap();
        let snap = ring.snapshot();
        assert_eq!(snap.entries(), [(newest, entry(id, PAYLOAD))]);
        let m = ring.metrics();
        assert_eq!((m.appended, m.retained, m.evicted), (3, 1, 2));
    });
}

/// Guarantee 3: a push that completed before a snapshot began (here: the
/// snapshot thread saw the pusher's Release flag) is in the snapshot while it
/// is among the last N tickets. Another writer pushes concurrently.
#[test]
fn completed_push_is_visible() {
    model(|| {
        let ring = Arc::new(ring(2));
        let done = Arc::new(AtomicU64::new(u64::MAX));
        let pusher = {
            let (ring, done) = (ring.clone(), done.clone());
            thread::spawn(move || {
                let seq = ring.push(entry(1, PAYLOAD)).unwrap();
                done.store(seq, Ordering::Release);
            })
        };
        let other = {
            let ring = ring.clone();
            thread::spawn(move || {
                ring.push(entry(2, PAYLOAD)).unwrap();
            })
        };
        let seq = done.load(Ordering::Acquire);
        if seq != u64::MAX {
            // Only 2 pushes on 2 slots: it cannot have been evicted.
            let snap = ring.snapshot();
            assert!(
                snap.entries().contains(&(seq, entry(1, PAYLOAD))),
                "completed push {seq} missing from {snap:?}"
            );
        }
        pusher.join().unwrap();
        other.join().unwrap();
    });
}
