//! Helpers shared by the loom models.
//!
//! Entries are `[id; len]`: a torn or mixed read shows up as two different
//! bytes, and the id maps each entry back to the push that wrote it.

#![allow(dead_code)] // each model uses part of this

use std::collections::HashMap;
use std::sync::{Arc as StdArc, Mutex};

use callring::{Bytes, Evicted, Ring};

/// Slot of stamp + header + 2 payload words: 16 payload bytes inline.
pub const SLOT_BYTES: usize = 32;
/// Inline payload bytes per slot at `SLOT_BYTES`.
pub const PAYLOAD: usize = 16;
/// Longest entry in the spilling models: up to 16 bytes spill into extension
/// blocks of 1 or 2 words (size classes 0 and 1), few atomics for loom.
pub const MAX_ENTRY: usize = PAYLOAD + 16;

/// Runs `f` under loom with a preemption bound (2 unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise) and a branch limit high enough for
/// the protocol's spin-waits.
pub fn model<F: Fn() + Send + Sync + 'static>(f: F) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder.max_branches = 100_000;
    builder.check(f);
}

/// An entry of `len` bytes, all `id`.
pub fn entry(id: u8, len: usize) -> Vec<u8> {
    vec![id; len]
}

/// The id of an entry read back; panics on a torn or mixed entry.
pub fn id_of(bytes: &[u8]) -> u8 {
    let id = bytes[0];
    assert!(
        bytes.iter().all(|&b| b == id),
        "torn or mixed entry: {bytes:?}"
    );
    id
}

/// Everything the sink received.
pub type Log = StdArc<Mutex<Vec<Evicted<Vec<u8>>>>>;

/// A ring of `capacity` small slots whose sink appends to the returned log.
/// Entries fit inline (no extension blocks: fewer atomics for loom to track).
pub fn ring_with_log(capacity: usize) -> (Ring<Bytes>, Log) {
    ring_with_log_max(capacity, PAYLOAD)
}

/// [`ring_with_log`] accepting entries of up to `max_entry` bytes.
pub fn ring_with_log_max(capacity: usize, max_entry: usize) -> (Ring<Bytes>, Log) {
    let log: Log = StdArc::default();
    let sink_log = log.clone();
    let ring = Ring::<Bytes>::builder()
        .capacity(capacity)
        .slot_bytes(SLOT_BYTES)
        .max_entry_bytes(max_entry)
        .sink(move |e: Evicted<Vec<u8>>| sink_log.lock().unwrap().push(e))
        .build()
        .unwrap();
    (ring, log)
}

/// A ring of `capacity` small slots without a sink, entries inline only.
pub fn ring(capacity: usize) -> Ring<Bytes> {
    ring_max(capacity, PAYLOAD)
}

/// [`ring`] accepting entries of up to `max_entry` bytes.
pub fn ring_max(capacity: usize, max_entry: usize) -> Ring<Bytes> {
    Ring::<Bytes>::builder()
        .capacity(capacity)
        .slot_bytes(SLOT_BYTES)
        .max_entry_bytes(max_entry)
        .build()
        .unwrap()
}

/// Checks that every `(seq, bytes)` read is whole and is what the push that
/// got `seq` stored, and that seqs strictly increase.
pub fn check_reads(reads: &[(u64, Vec<u8>)], pushed: &HashMap<u64, Vec<u8>>) {
    let mut last = None;
    for (seq, bytes) in reads {
        id_of(bytes);
        assert_eq!(
            Some(bytes),
            pushed.get(seq),
            "seq {seq} holds another push's bytes"
        );
        assert!(
            last < Some(*seq),
            "seqs not increasing: {last:?} then {seq}"
        );
        last = Some(*seq);
    }
}
