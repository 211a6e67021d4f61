//! The durable audit archive: an append-only, segmented JSON Lines archive
//! with group commit, a durable watermark and a verifier (and, with the
//! `sqlite` feature, an SQLite table, checked by `verify_sqlite`). With the
//! `postgres` feature a `Shipper` ships the archive, as the host's durable
//! spool, into a PostgreSQL database shared by a fleet, exactly once, and
//! `verify_postgres` checks it there.
//!
//! The code splits by role: `writer/` takes records from the rings (sinks,
//! the bounded queue, the worker thread, and [`Archive`], the handle both
//! archivers share); `spool/` is the local JSON Lines archive; `ship/` holds
//! the databases, SQLite and PostgreSQL, each a `Store` (one crate-internal
//! trait: write a batch in one transaction, each record once by its key,
//! with the spool position it reaches; read the progress back; report each
//! call's trail to the verifier); `verify/` judges trails, from a spool or
//! from a store, into one [`VerifyReport`].
//!
//! The compliance rule this serves: an audit event must be persisted before
//! it leaves memory. A call built with
//! [`CallStateBuilder::audit_archive`](crate::call::CallStateBuilder::audit_archive)
//! writes every event through to the archive as part of
//! [`CallState::log_event`], so it is on disk within the group-commit window
//! whatever happens to the ring or the process afterwards; [`CallState::end`]
//! adds a closed record carrying the number of seqs the call issued. For an
//! ended call the archive alone holds the whole trail, seqs `0..issued`, each
//! once; [`verify`] checks exactly that, and tells a call that was live at a
//! crash (open) from one that lost events (incomplete).
//!
//! # How events travel
//!
//! `log_event` first reserves a place in the archive's bounded queue (an
//! atomic count, [`ArchiveConfig::channel_capacity`] places), then takes the
//! event's seq, stores it in the ring and hands it to its [`ArchiveSink`]:
//! one `try_send` on a crossbeam channel that never holds more records than
//! places, no mutex, no copy (the ring's encoding moves into the message).
//! When the queue is full the logging thread waits for a place
//! (back-pressure, counted in [`ArchiveStats::sink_waits`]), or gives up
//! before taking a seq as [`FullQueue`] says; an event is never dropped. If the
//! archiver is stopping or stopped, the event is refused back to the call
//! ([`CallError::NotArchived`](crate::call::CallError::NotArchived), kept for
//! [`CallState::take_refused_audit`](crate::call::CallState::take_refused_audit)).
//! The archiver's thread takes records in batches, appends them to the
//! current segment and makes them durable by the group-commit policy; after
//! each fsync it moves the durable watermark ([`Archiver::durability`]) and
//! wakes the [`Receipt`]s waiting on it.
//!
//! An `ArchiveSink` is also a [`Sink`](crate::Sink) for the ring's eviction
//! mode ([`CallStateBuilder::audit_sink`](crate::call::CallStateBuilder::audit_sink)):
//! events are then handed over only as they leave the ring (evicted, or
//! drained at the end, followed by the closed record), so until a call ends
//! most of its trail is only in memory.
//!
//! Notes travel the same way, if a call asks for it
//! ([`CallStateBuilder::notes_archive`](crate::call::CallStateBuilder::notes_archive),
//! off by default): the `ArchiveSink` is the notes ring's [`Sink`](crate::Sink),
//! so each note is handed over as it leaves the ring (evicted, or drained at
//! the end, before the closed record), with the same waits and refusals as
//! an eviction-mode event. The archive and the ring together hold every note
//! of a live call, the archive alone every note of an ended one;
//! [`read_notes`] reads a call's notes back.
//!
//! # On disk
//!
//! A directory of segments `audit-000000000001.jsonl`,
//! `audit-000000000002.jsonl`, ... (the index zero-padded to 12 digits, so
//! name order is index order), plus the lock file `archive.lock`. Each line is
//! an [`ArchiveRecord`] (an event), a [`ClosedRecord`] (a call's end) or,
//! for a call that archives its notes, a [`NoteRecord`] (a note), and
//! carries the schema version `"v"` ([`SCHEMA_VERSION`]) and, last, its
//! checksum `"crc"`:
//!
//! ```text
//! {"v":3,"call_id":"call-7","seq":0,"at":"2025-11-25T09:30:00.000000000Z","type":"call_started","agent_id":"speech","details":{},"reason":"logged","crc":"40852986"}
//! {"v":3,"call_id":"call-7","record":"note","seq":0,"at":"2025-11-25T09:30:00.500000000Z","text":"caller asked about the invoice","reason":"drained","crc":"30ec5a2d"}
//! {"v":3,"call_id":"call-7","record":"closed","issued":1,"at":"2025-11-25T09:31:00.000000000Z","crc":"5814270a"}
//! ```
//!
//! `at` is RFC 3339 with nanoseconds, UTC; `reason` is `"logged"`
//! (written through) or, in eviction mode, `"evicted"` or `"drained"`.
//! A note line's `seq` is the note's own (0, 1, 2, ... among the call's
//! notes), not an audit seq, and its `text` is the note exactly as
//! appended; `reason` is `"evicted"` or `"drained"`. The verifier counts
//! note lines per call ([`CallReport::notes`]) and judges only the audit
//! trail; the shippers read past them (audit only goes to the databases).
//! `crc` is the CRC32C of the line's bytes before `,"crc"`, as 8 lowercase
//! hex digits: a line changed on disk (a flipped bit, a hand edit) no longer
//! matches it, and readers report it as corrupt. Lines of version 2 carry no
//! checksum; lines without `"v"` were written before version 2 and are read
//! as version 1. Segments are append-only; a segment is fsynced before the
//! next one is started, once the next record would take it past
//! [`ArchiveConfig::segment_bytes`]. Each run of an archiver starts a new
//! segment. Within a call, records may appear out of seq order (several
//! agent threads log concurrently); the verifier sorts. A call's closed
//! record always comes after all of its events.
//!
//! Once the archiver moves past a segment (it is *sealed*), its background
//! sealer writes the segment's index `audit-N.idx` (where each call's lines
//! are; [`ArchiveReader::call`] reads only those) and, with
//! [`ArchiveConfig::compress`], replaces the segment by
//! `audit-N.jsonl.zst` (zstd frames of whole lines and a frame table;
//! offsets stay those of the plain segment). Retention
//! ([`ArchiveConfig::max_age`], [`ArchiveConfig::max_bytes`],
//! [`Archiver::prune_before`], [`prune_before`]) removes whole sealed
//! segments after recording each in `pruned.jsonl`, the pruning manifest
//! ([`PrunedSegment`], one checksummed line per segment), which the
//! verifier and the readers consult. Every step is crash-safe: see
//! [`ArchiveConfig::compress`] and [`prune_before`]. The command
//! `callring-archive` (feature `cli`) verifies, shows, summarizes, indexes,
//! compresses and prunes an archive directory.
//!
//! # Durability, and what a crash can lose
//!
//! Records are written as they arrive and fsynced (group commit) when
//! [`fsync_every`](ArchiveConfig::fsync_every) records are waiting, when the
//! oldest has waited [`fsync_interval`](ArchiveConfig::fsync_interval)
//! (1024 records and 20 ms by default), on [`Archiver::flush`] and at
//! [`Archiver::stop`]. A new segment's directory entry is fsynced with its
//! first records.
//!
//! - Everything before the last successful fsync survives any crash,
//!   including power loss. A [`Receipt`] that reported durable, a
//!   [`CallState::log_event_durable`](crate::call::CallState::log_event_durable)
//!   that returned `Ok`, and an [`Archiver::flush`] that returned `Ok` (for
//!   everything handed over before it) all mean the record is in that
//!   durable prefix.
//! - A crash (`kill -9`, OOM kill, power loss) can lose only records never
//!   confirmed durable: those logged within about the last `fsync_interval`
//!   (plus the time one write and fsync take), at most the channel's
//!   [`channel_capacity`](ArchiveConfig::channel_capacity) plus one batch.
//!   If only the process dies (the OS keeps running), records already
//!   written survive in the page cache too.
//! - Afterwards [`verify`] reports each call that was live at the crash as
//!   *open* (no closed record), with its durable events and the seqs missing
//!   below its highest one (with several agents per call, seq 383 can still
//!   be in flight when 402 is durable). That is not an error. A call whose
//!   closed record is on disk has every event on disk before it, so it is
//!   *complete*; *incomplete* or *duplicated* means real loss or a bug.
//! - The file is always a prefix of what was written: a crash can leave a
//!   torn last line (a partial record) at the end of the last segment, or
//!   zero-filled blocks after a power loss. [`verify`] reports it
//!   ([`TornTail`]) instead of failing; [`VerifyOptions::truncate_torn`] cuts
//!   it; the next [`Archiver::start`] cuts it too (and reports it). Every
//!   record before it is whole.
//! - No crash creates a duplicate, and none removes a record that was
//!   confirmed durable.
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
//!         .audit_archive(archiver.sink("call-1"))
//!         .build(),
//! );
//! std::thread::scope(|s| {
//!     for agent in ["speech", "tools"] {
//!         let call = &call;
//!         s.spawn(move || {
//!             for _ in 0..50 {
//!                 call.log_event(&AuditEventType::ToolInvoked, Some(agent), &Details::new())
//!                     .expect("archived");
//!             }
//!         });
//!     }
//! });
//! let _ = call.end();
//! archiver.stop().expect("clean stop");
//!
//! let report = verify(dir.path()).expect("readable archive");
//! let trail = &report.calls["call-1"];
//! assert_eq!((trail.events, trail.last_seq, trail.issued), (100, 99, Some(100)));
//! assert!(report.is_complete());
//! # }
//! ```
//!
//! [`CallState::end`]: crate::call::CallState::end
//! [`CallState::log_event`]: crate::call::CallState::log_event

mod config;
mod error;
mod notes;
mod read;
mod record;
mod ship;
mod spool;
mod stats;
mod verify;
mod writer;

pub use config::{
    ArchiveConfig, ArchiveSettings, DEFAULT_CHANNEL_CAPACITY, DEFAULT_COMPRESSION_LEVEL,
    DEFAULT_FSYNC_EVERY, DEFAULT_FSYNC_INTERVAL, DEFAULT_SEGMENT_BYTES,
};
pub use error::{ArchiveError, ArchiveStatus, FaultEvent, IoFailure, IoOp};
pub use notes::read_notes;
pub use read::index::{index_archive, IndexSummary};
pub use read::{ArchiveReader, CallTrail, LocatedLine, Records};
pub use record::{
    compressed_segment_name, segment_index, segment_name, ArchiveLine, ArchiveRecord, ClosedRecord,
    LineError, NoteRecord, Origin, SCHEMA_VERSION,
};
#[cfg(feature = "postgres")]
pub use ship::postgres::verify_postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use ship::shipper::{
    ShipError, ShipState, Shipper, ShipperConfig, ShipperStats, ShipperStatus,
    DEFAULT_BATCH_RECORDS,
};
#[cfg(feature = "sqlite")]
pub use ship::sqlite::{verify_sqlite, Sqlite, SqliteArchiver};
pub use spool::fs::{ArchiveFs, ReadFile, SegmentFile, StdFs, LOCK_FILE};
pub use spool::position::SpoolPosition;
pub use spool::retention::{prune_before, PruneReport, PrunedCall, PrunedSegment};
pub use spool::seal::{compress_archive, CompressReport};
pub use spool::{Archiver, JsonLines};
pub use stats::ArchiveStats;
pub use verify::report::{CallReport, CallStatus, SegmentReport, SeqRange, TornTail, VerifyReport};
pub use verify::{
    read_archive, read_archive_lines, verify, verify_with, VerifyError, VerifyOptions,
};
pub use writer::feed::{ArchiveSink, Durability, FullQueue, Receipt};
pub(crate) use writer::feed::{NoRoom, Permit, Wait};
pub use writer::Archive;
