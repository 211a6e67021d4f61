//! Durable sinks for evicted audit events: an append-only, segmented JSON
//! Lines archive with group commit and a verifier (and, with the `sqlite`
//! feature, an SQLite table).
//!
//! The compliance rule this serves: an audit event must be persisted before
//! it leaves memory. With an [`Archiver`]'s sink on every call's audit ring,
//! each event evicted from a ring, and at [`CallState::end`] each one still in
//! it, is handed to the archiver exactly once; for an ended call the archive
//! alone holds the whole trail, seqs `0..n`, each once. [`verify`] checks
//! exactly that.
//!
//! # How events travel
//!
//! A ring writer that evicts an event calls its [`ArchiveSink`]'s
//! [`Sink::accept`](crate::Sink::accept): one `try_send` on a bounded crossbeam
//! channel, no mutex. When the channel is full the writer waits in `send`
//! (back-pressure, counted by the ring as `sink_waits` and by
//! [`ArchiveStats::sink_waits`]); an event is never dropped. The archiver's
//! thread takes events in batches, appends them to the current segment and
//! makes them durable by the group-commit policy.
//!
//! # On disk
//!
//! A directory of segments `audit-000000000001.jsonl`,
//! `audit-000000000002.jsonl`, ... (the index zero-padded to 12 digits, so
//! name order is index order), plus the lock file `archive.lock`. Each line is
//! one [`ArchiveRecord`]:
//!
//! ```text
//! {"call_id":"call-7","seq":0,"at":"2025-11-25T09:30:00.000000000Z","type":"call_started","agent_id":"speech","details":{},"reason":"evicted"}
//! ```
//!
//! `at` is RFC 3339 with nanoseconds, UTC; `reason` is `"evicted"` or
//! `"drained"`. Segments are append-only; a segment is fsynced before the
//! next one is started, once the next record would take it past
//! [`ArchiveConfig::segment_bytes`]. Each run of an archiver starts a new
//! segment. Within a call, records may appear out of seq order (several
//! agent threads evict concurrently); the verifier sorts.
//!
//! # Durability, and what a crash can lose
//!
//! Records are written as they arrive and fsynced (group commit) when
//! [`fsync_every`](ArchiveConfig::fsync_every) records are waiting, when the
//! oldest has waited [`fsync_interval`](ArchiveConfig::fsync_interval), on
//! [`Archiver::flush`] and at [`Archiver::stop`]. A new segment's directory
//! entry is fsynced with its first records.
//!
//! - Everything before the last successful fsync survives any crash,
//!   including power loss. [`Archiver::flush`] returning `Ok` means every
//!   event handed over before the call is in that durable prefix.
//! - A crash can lose only the un-fsynced tail: at most `fsync_every`
//!   records, none older than about `fsync_interval` (plus the time one
//!   write and fsync take), plus the events
//!   still in the channel (at most
//!   [`channel_capacity`](ArchiveConfig::channel_capacity)) and, of course,
//!   the events still in the rings, which were never handed over. If only the
//!   process dies (the OS keeps running), written-but-unsynced records
//!   survive in the page cache too.
//! - The file is always a prefix of what was written: a crash can leave a
//!   torn last line (a partial record) at the end of the last segment, or
//!   zero-filled blocks after a power loss. [`verify`] reports it
//!   ([`TornTail`]) instead of failing; [`VerifyOptions::truncate_torn`] cuts
//!   it; the next [`Archiver::start`] cuts it too (and reports it). Every
//!   record before it is whole.
//! - No crash can create a gap *before* the last fsynced record, or a
//!   duplicate.
//!
//! # Faults
//!
//! A failed write, fsync, segment creation or truncation (disk full,
//! permission denied, read-only file system) is reported through
//! [`Archiver::status`] ([`ArchiveStatus::Retrying`] with the error),
//! [`Archiver::last_error`], [`ArchiveStats::errors`] and the optional
//! [`ArchiveConfig::on_fault`] callback, and retried with exponential backoff
//! ([`ArchiveConfig::retry_backoff`]). The failed batch is never dropped and
//! never written twice: the archiver keeps every record after the last
//! successful fsync in memory, and before a retry cuts the segment back to
//! that length and rewrites them (a failed fsync may have lost dirty pages, so
//! that tail is rewritten too). Meanwhile the channel fills and ring writers
//! wait. While running the archiver never gives up; at stop it gives up after
//! [`ArchiveConfig::stop_timeout`] and says how many events are not known to
//! be durable ([`ArchiveError::GaveUp`]). The file layer is a trait
//! ([`ArchiveFs`]) so tests can inject faults.
//!
//! # Examples
//!
//! ```
//! # #[cfg(not(loom))] {
//! use std::sync::Arc;
//! use callring::archive::{verify, ArchiveConfig, Archiver};
//! use callring::call::{AuditEventType, CallState, Details, Limits};
//!
//! let dir = tempfile::tempdir().expect("temp dir");
//! let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("archive opens");
//! let call = Arc::new(
//!     CallState::builder("call-1")
//!         .limits(Limits::new(1000, 10).expect("valid"))
//!         .audit_sink(archiver.sink("call-1"))
//!         .build(),
//! );
//! std::thread::scope(|s| {
//!     for agent in ["speech", "tools"] {
//!         let call = &call;
//!         s.spawn(move || {
//!             for _ in 0..50 {
//!                 call.log_event(&AuditEventType::ToolInvoked, Some(agent), &Details::new())
//!                     .expect("live call");
//!             }
//!         });
//!     }
//! });
//! let _ = call.end();
//! archiver.stop().expect("clean stop");
//!
//! let report = verify(dir.path()).expect("readable archive");
//! let trail = &report.calls["call-1"];
//! assert_eq!((trail.events, trail.last_seq, trail.drained), (100, 99, 10));
//! assert!(report.is_complete());
//! # }
//! ```
//!
//! [`CallState::end`]: crate::call::CallState::end

mod archiver;
mod config;
mod error;
mod feed;
mod fs;
mod record;
mod report;
mod segment;
#[cfg(feature = "sqlite")]
mod sqlite;
mod verify;
mod worker;

pub use archiver::Archiver;
pub use config::{
    ArchiveConfig, FaultEvent, DEFAULT_CHANNEL_CAPACITY, DEFAULT_FSYNC_EVERY,
    DEFAULT_FSYNC_INTERVAL, DEFAULT_SEGMENT_BYTES,
};
pub use error::{ArchiveError, IoFailure, IoOp};
pub use feed::{ArchiveSink, ArchiveStats, ArchiveStatus};
pub use fs::{ArchiveFs, SegmentFile, StdFs, LOCK_FILE};
pub use record::{segment_index, segment_name, ArchiveRecord};
pub use report::{CallReport, SegmentReport, SeqRange, TornTail, VerifyReport};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteArchiver;
pub use verify::{read_archive, verify, verify_with, VerifyError, VerifyOptions};
