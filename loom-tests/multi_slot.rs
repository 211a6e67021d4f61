//! Loom model of an entry spanning two slots, racing a reader and a writer
//! that overwrites it, with a sink: readers see it whole or not at all, and
//! eviction hands it over whole, exactly once.
#![cfg(loom)]

mod common;

use std::collections::HashMap;

use callring::{CloseOutcome, Reason};
use common::{check_reads, entry, model, ring_with_log, PAYLOAD};
use loom::sync::Arc;
use loom::thread;

/// 3 slots: writer A pushes a 2-slot entry, writer B two 1-slot entries (4
/// tickets, so one slot is reused), the main thread reads concurrently.
#[test]
fn multi_slot_entry_is_whole_or_absent() {
    model(|| {
        let (ring, log) = ring_with_log(3);
        let ring = Arc::new(ring);
        let long = entry(1, PAYLOAD + 8);
        let a = {
            let (ring, long) = (ring.clone(), long.clone());
            thread::spawn(move || vec![(ring.push(long.clone()).unwrap(), long)])
        };
        let b = {
            let ring = ring.clone();
            thread::spawn(move || {
                [2u8, 3]
                    .into_iter()
                    .map(|id| (ring.push(entry(id, PAYLOAD)).unwrap(), entry(id, PAYLOAD)))
                    .collect::<Vec<_>>()
            })
        };
        let reads = ring.snapshot().into_entries();
        let pushed: HashMap<u64, Vec<u8>> =
            [a, b].into_iter().flat_map(|w| w.join().unwrap()).collect();
        check_reads(&reads, &pushed);

        // After close, the sink holds all three entries exactly once, whole.
        assert!(matches!(ring.close(), CloseOutcome::Closed { .. }));
        let log = log.lock().unwrap();
        let mut handed: Vec<u64> = log.iter().map(|e| e.seq).collect();
        handed.sort_unstable();
        let mut expected: Vec<u64> = pushed.keys().copied().collect();
        expected.sort_unstable();
        assert_eq!(handed, expected);
        for e in log.iter() {
            assert_eq!(
                Some(&e.value),
                pushed.get(&e.seq),
                "entry {} not whole",
                e.seq
            );
            // Whatever was evicted was evicted before the drain started.
            if e.reason == Reason::Drained {
                assert!(log
                    .iter()
                    .filter(|x| x.reason == Reason::Evicted)
                    .all(|x| x.seq < e.seq));
            }
        }
        let m = ring.metrics();
        assert_eq!((m.appended, m.evicted + m.retained), (3, 3));
    });
}

/// 2 slots: writer A pushes an entry spanning both, writers B and C push one
/// slot each, so one of them overwrites A's first slot (and must capture the
/// whole entry) while the other overwrites A's second slot (and must wait for
/// that capture). The sink must receive A's entry whole, exactly once.
#[test]
fn capture_races_continuation_overwrite() {
    model(|| {
        let (ring, log) = ring_with_log(2);
        let ring = Arc::new(ring);
        let long = entry(1, PAYLOAD + 8);
        let a = {
            let (ring, long) = (ring.clone(), long.clone());
            thread::spawn(move || (ring.push(long.clone()).unwrap(), long))
        };
        let b = {
            let ring = ring.clone();
            thread::spawn(move || (ring.push(entry(2, PAYLOAD)).unwrap(), entry(2, PAYLOAD)))
        };
        let c = (ring.push(entry(3, PAYLOAD)).unwrap(), entry(3, PAYLOAD));
        let pushed: HashMap<u64, Vec<u8>> = [a.join().unwrap(), b.join().unwrap(), c]
            .into_iter()
            .collect();
        assert!(matches!(ring.close(), CloseOutcome::Closed { .. }));
        let log = log.lock().unwrap();
        let mut handed: Vec<u64> = log.iter().map(|e| e.seq).collect();
        handed.sort_unstable();
        let mut expected: Vec<u64> = pushed.keys().copied().collect();
        expected.sort_unstable();
        assert_eq!(handed, expected, "each entry handed over exactly once");
        for e in log.iter() {
            assert_eq!(
                Some(&e.value),
                pushed.get(&e.seq),
                "entry {} not whole",
                e.seq
            );
        }
    });
}
