//! What an archiver counts: the counters its thread and sinks bump, and the
//! snapshot its handle returns. Depends on nothing else in the archive.

use crate::sync::{Counter, Ordering};

/// Counters of an archiver, read with `stats()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ArchiveStats {
    /// Events the archiver took from the channel.
    pub received: u64,
    /// Records made durable (fsynced, or committed to SQLite): events,
    /// end-of-call records and archived notes.
    pub synced: u64,
    /// Records handed to the archiver so far (accepted by its sinks); the
    /// durable watermark trails this (see [`Durability`](crate::archive::Durability)).
    pub handed_over: u64,
    /// Events written through as they were logged (reason `logged`).
    pub logged: u64,
    /// End-of-call records taken.
    pub closed_records: u64,
    /// Notes taken (calls that archive their notes; not counted in
    /// `received`, which counts audit events).
    pub notes: u64,
    /// Bytes made durable (JSON Lines only).
    pub bytes: u64,
    /// Successful fsyncs (or SQLite commits).
    pub fsyncs: u64,
    /// Segments created.
    pub segments: u64,
    /// Hand-offs that found the channel full and waited (back-pressure; the
    /// rings count these too, as `sink_waits`).
    pub sink_waits: u64,
    /// Hand-offs refused because the archiver was stopping or stopped (or,
    /// for notes, keeps audit records only); the call keeps those events
    /// ([`CallState::take_refused_audit`](crate::call::CallState::take_refused_audit))
    /// and notes
    /// ([`CallState::take_refused_notes`](crate::call::CallState::take_refused_notes)).
    pub refused: u64,
    /// Failed file operations.
    pub errors: u64,
    /// Retries after failures.
    pub retries: u64,
    /// Events given up on at stop (0 unless stop returned `GaveUp`).
    pub lost: u64,
    /// Events whose (call, seq) was already archived (SQLite only; the
    /// JSON Lines verifier finds them on disk).
    pub duplicates: u64,
    /// Bytes of a torn tail cut from the previous run's last segment at
    /// start.
    pub repaired_torn_bytes: u64,
    /// Sealed segments indexed by this archiver (`audit-N.idx`).
    pub indexed_segments: u64,
    /// Sealed segments compressed by this archiver
    /// ([`ArchiveConfig::compress`](crate::archive::ArchiveConfig::compress)).
    pub compressed_segments: u64,
    /// Their plain bytes.
    pub compressed_plain_bytes: u64,
    /// Their compressed bytes (the ratio is `compressed_plain_bytes /
    /// compressed_bytes`).
    pub compressed_bytes: u64,
    /// Time the sealer spent compressing them, in microseconds (one thread,
    /// CPU-bound: about its CPU time).
    pub compress_micros: u64,
    /// Sealed segments removed by retention.
    pub pruned_segments: u64,
    /// Their bytes on disk.
    pub pruned_bytes: u64,
    /// Failed compression or pruning attempts (each retried).
    pub seal_errors: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) received: Counter,
    pub(crate) synced: Counter,
    pub(crate) logged: Counter,
    pub(crate) closed_records: Counter,
    pub(crate) notes: Counter,
    pub(crate) bytes: Counter,
    pub(crate) fsyncs: Counter,
    pub(crate) segments: Counter,
    pub(crate) sink_waits: Counter,
    pub(crate) refused: Counter,
    pub(crate) errors: Counter,
    pub(crate) retries: Counter,
    pub(crate) lost: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) repaired_torn_bytes: Counter,
    pub(crate) indexed_segments: Counter,
    pub(crate) compressed_segments: Counter,
    pub(crate) compressed_plain_bytes: Counter,
    pub(crate) compressed_bytes: Counter,
    pub(crate) compress_micros: Counter,
    pub(crate) pruned_segments: Counter,
    pub(crate) pruned_bytes: Counter,
    pub(crate) seal_errors: Counter,
}

/// Adds to a statistics counter. Relaxed: counters publish nothing.
pub(crate) fn add(counter: &Counter, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ArchiveStats {
        // Relaxed: statistics.
        let get = |c: &Counter| c.load(Ordering::Relaxed);
        ArchiveStats {
            received: get(&self.received),
            synced: get(&self.synced),
            handed_over: 0, // filled in by `Shared::stats` from the tickets
            logged: get(&self.logged),
            closed_records: get(&self.closed_records),
            notes: get(&self.notes),
            bytes: get(&self.bytes),
            fsyncs: get(&self.fsyncs),
            segments: get(&self.segments),
            sink_waits: get(&self.sink_waits),
            refused: get(&self.refused),
            errors: get(&self.errors),
            retries: get(&self.retries),
            lost: get(&self.lost),
            duplicates: get(&self.duplicates),
            repaired_torn_bytes: get(&self.repaired_torn_bytes),
            indexed_segments: get(&self.indexed_segments),
            compressed_segments: get(&self.compressed_segments),
            compressed_plain_bytes: get(&self.compressed_plain_bytes),
            compressed_bytes: get(&self.compressed_bytes),
            compress_micros: get(&self.compress_micros),
            pruned_segments: get(&self.pruned_segments),
            pruned_bytes: get(&self.pruned_bytes),
            seal_errors: get(&self.seal_errors),
        }
    }
}
