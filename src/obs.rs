//! Observability: `tracing` events (feature `tracing`) and `metrics`
//! instruments (feature `metrics`). Without those features every function
//! here is empty and inlines away, so the call sites cost nothing.
//!
//! | instrument | kind | labels | when |
//! |---|---|---|---|
//! | `callring_appended_total` | counter | `ring` = `notes` / `audit` | a call appends |
//! | `callring_evicted_total` | counter | `ring` | an append overwrites the oldest entry |
//! | `callring_archive_sink_waits_total` | counter | | a hand-off waits for room in the archive's queue |
//! | `callring_archive_queue_depth` | gauge | | records in the archive's queue, after each batch |
//! | `callring_archive_fsync_seconds` | histogram | | each fsync of the archive |
//! | `callring_archive_faults_total` | counter | | each failed write or fsync |
//! | `callring_live_calls` | gauge | | a registry starts or ends a call |
//!
//! Tracing: `warn` on each archive fault (with the error, the attempt and
//! the backoff), `info` on recovery and on a torn tail repaired at start.

#![cfg_attr(
    not(any(feature = "tracing", feature = "metrics")),
    allow(unused_variables)
)]

use std::path::Path;
use std::time::Duration;

/// Which ring of a call.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RingKind {
    Notes,
    Audit,
}

impl RingKind {
    #[cfg(feature = "metrics")]
    fn label(self) -> &'static str {
        match self {
            Self::Notes => "notes",
            Self::Audit => "audit",
        }
    }
}

/// A call appended entry `seq` to a ring of `capacity` entries.
#[inline]
pub(crate) fn appended(ring: RingKind, seq: u64, capacity: usize) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!("callring_appended_total", "ring" => ring.label()).increment(1);
        if seq >= capacity as u64 {
            metrics::counter!("callring_evicted_total", "ring" => ring.label()).increment(1);
        }
    }
}

/// A hand-off began waiting for room in the archive's queue.
#[inline]
pub(crate) fn sink_wait() {
    #[cfg(feature = "metrics")]
    metrics::counter!("callring_archive_sink_waits_total").increment(1);
}

/// Records in the archive's queue now.
#[inline]
pub(crate) fn queue_depth(records: u64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("callring_archive_queue_depth").set(records as f64);
}

/// An fsync of the archive took `took`.
#[inline]
pub(crate) fn fsynced(took: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!("callring_archive_fsync_seconds").record(took.as_secs_f64());
}

/// An archive write or fsync failed; it is retried after `retry_in`.
#[inline]
pub(crate) fn archive_fault(error: &dyn std::fmt::Display, attempt: u64, retry_in: Duration) {
    #[cfg(feature = "metrics")]
    metrics::counter!("callring_archive_faults_total").increment(1);
    #[cfg(feature = "tracing")]
    tracing::warn!(
        target: "callring::archive",
        %error, attempt, retry_in_ms = retry_in.as_millis() as u64,
        "archive I/O failed; retrying"
    );
}

/// The archive recovered after `attempts` failed attempts.
#[inline]
pub(crate) fn archive_recovered(attempts: u64) {
    #[cfg(feature = "tracing")]
    tracing::info!(target: "callring::archive", attempts, "archive I/O recovered");
}

/// At start, `bytes` of a torn last line were cut from `segment`.
#[inline]
pub(crate) fn torn_tail_repaired(segment: &Path, bytes: u64) {
    #[cfg(feature = "tracing")]
    tracing::info!(
        target: "callring::archive",
        segment = %segment.display(), bytes,
        "cut a torn tail left by a crash"
    );
}

/// Retention removed `segments` sealed segments, `bytes` on disk.
#[inline]
pub(crate) fn segments_pruned(segments: u64, bytes: u64) {
    #[cfg(feature = "tracing")]
    tracing::info!(
        target: "callring::archive",
        segments, bytes,
        "pruned sealed segments (recorded in the pruning manifest)"
    );
    #[cfg(feature = "metrics")]
    metrics::counter!("callring_archive_pruned_segments_total").increment(segments);
    #[cfg(not(any(feature = "tracing", feature = "metrics")))]
    let _ = (segments, bytes);
}

/// The registry holds `calls` live calls now.
#[inline]
pub(crate) fn live_calls(calls: usize) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("callring_live_calls").set(calls as f64);
}
