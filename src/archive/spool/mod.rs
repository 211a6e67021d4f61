//! The local spool: the JSON Lines archive in one directory. [`Archiver`]
//! starts the worker thread over it (after repairing a previous crash's torn
//! tail) and publishes where its durable prefix ends; the segments, the file
//! layer and the durable end are submodules.

pub(crate) mod fs;
pub(crate) mod position;
pub(crate) mod retention;
pub(crate) mod seal;
pub(crate) mod segment;
pub(crate) mod zst;

/// The pruning manifest: one line per segment removed by retention, so a
/// verifier reports what was pruned rather than a gap.
pub(crate) const MANIFEST_FILE: &str = "pruned.jsonl";

use std::any::Any;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::archive::config::ArchiveConfig;
use crate::archive::error::FaultEvent;
use crate::archive::error::{ArchiveError, IoFailure, IoOp};
use crate::archive::record::torn_tail_start;
use crate::archive::spool::fs::ArchiveFs;
use crate::archive::spool::position::SpoolPosition;
use crate::archive::spool::retention::PruneReport;
use crate::archive::spool::seal::{Job, Sealer};
use crate::archive::spool::segment::Segments;
use crate::archive::stats::add;
use crate::archive::writer::feed::Shared;
use crate::archive::writer::worker::Core;
use crate::archive::writer::Archive;
use crate::call::Timestamp;

/// The durable audit archive: a background thread that appends every event
/// handed to its sinks to JSON Lines segments in one directory.
///
/// Ring writers hand events over through a bounded queue
/// ([`sink`](Archive::sink)); a full queue makes them wait, it never drops
/// an event. See the [module docs](super) for the format, the group-commit
/// policy and exactly what a crash can lose.
///
/// Stop it with [`stop`](Archive::stop) to learn how it went; dropping it
/// stops it too, discarding the outcome. Everything but starting it, its
/// directory and its durable end is common to both archivers: see
/// [`Archive`].
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::archive::{verify, ArchiveConfig, Archiver};
/// use callring::call::{AuditEventType, CallState, Details, Limits};
///
/// let dir = tempfile::tempdir().expect("temp dir");
/// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("archive opens");
/// let call = CallState::builder("call-7")
///     .limits(Limits::new(100, 2).expect("valid"))
///     .audit_archive(archiver.sink("call-7"))
///     .build();
/// for _ in 0..5 {
///     call.log_event(&AuditEventType::ToolInvoked, Some("tools"), &Details::new())
///         .expect("archived");
/// }
/// let _ = call.end(); // the closed record: 5 seqs issued
/// let stats = archiver.stop().expect("clean stop");
/// assert_eq!(stats.synced, 6);
///
/// let report = verify(dir.path()).expect("readable archive");
/// assert!(report.is_complete());
/// assert_eq!(report.calls["call-7"].events, 5);
/// # }
/// ```
pub type Archiver = Archive<JsonLines>;

/// Where an [`Archiver`] writes: the JSON Lines segments of one directory,
/// which it holds locked until its thread has stopped.
pub struct JsonLines {
    dir: PathBuf,
    /// Compresses and prunes sealed segments (stopped before the lock is
    /// released).
    sealer: Sealer,
    _lock: Box<dyn Any + Send + Sync>,
}

impl fmt::Debug for JsonLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLines")
            .field("dir", &self.dir)
            .field("sealer", &self.sealer)
            .finish_non_exhaustive()
    }
}

impl Archive<JsonLines> {
    /// Opens (creating if needed) the archive in `dir` and starts its thread.
    ///
    /// Locks the directory against a second archiver. If the previous run
    /// crashed and left a torn last line in its last segment, that line
    /// (never fsynced, so never reported durable) is cut off, counted in
    /// [`ArchiveStats::repaired_torn_bytes`](crate::archive::ArchiveStats::repaired_torn_bytes) and reported to the fault
    /// callback (this reads the last segment once). New records go to a new
    /// segment after the existing ones.
    ///
    /// # Errors
    ///
    /// [`ArchiveError::InvalidConfig`] for an out-of-range setting,
    /// [`ArchiveError::Locked`] if another archiver holds `dir` (a lock is
    /// retried for up to 250 ms first: a just-stopped archiver's lock can
    /// linger that long in a child process being spawned),
    /// [`ArchiveError::Io`] if the directory cannot be created, listed or
    /// repaired, [`ArchiveError::Spawn`] if the thread cannot start.
    pub fn start(dir: impl Into<PathBuf>, config: ArchiveConfig) -> Result<Self, ArchiveError> {
        config.validate()?;
        let dir = dir.into();
        let fs = Arc::clone(&config.fs);
        fs.create_dir_all(&dir)
            .map_err(|e| IoFailure::new(IoOp::CreateDir, &dir, &e))?;
        let lock = fs.lock_dir(&dir).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => ArchiveError::Locked { dir: dir.clone() },
            _ => ArchiveError::Io(IoFailure::new(IoOp::Lock, &dir, &e)),
        })?;
        // Finish what a crash interrupted: a half-done compression or prune.
        let recovered = seal::recover(&*fs, &dir)?;
        let segments = recovered.segments;
        let shared = Arc::new(Shared::new(
            config.on_fault.clone(),
            config.channel_capacity,
            config.full_queue,
        ));
        let next = match segments.last() {
            None => 1,
            // A compressed segment was sealed whole.
            Some(last) if last.compressed => last.index.saturating_add(1),
            Some(last) => {
                let (index, path) = (last.index, &last.path);
                let cut = repair_tail(&*fs, path)?;
                if cut > 0 {
                    add(&shared.counters.repaired_torn_bytes, cut);
                    crate::obs::torn_tail_repaired(path, cut);
                    if let Some(callback) = &config.on_fault {
                        callback(&FaultEvent::TornTailRepaired {
                            file: path.clone(),
                            bytes: cut,
                        });
                    }
                }
                index.saturating_add(1)
            }
        };
        // Above every pruned segment too, even when retention removed them
        // all: the manifest would make readers skip a reused number.
        let next = next.max(recovered.highest_pruned.map_or(1, |p| p.saturating_add(1)));
        // Every existing segment is durable whole (the last one was just
        // repaired and fsynced; earlier ones were fsynced before their run
        // moved on).
        shared.spool_end.publish(SpoolPosition::new(next, 0), 0);
        let (sealer, sealed) = Sealer::start(
            Arc::clone(&fs),
            dir.clone(),
            &config,
            Arc::clone(&shared),
            next,
        )?;
        let backend = Segments::new(
            fs,
            dir.clone(),
            config.segment_bytes,
            next,
            Arc::clone(&shared),
            sealed,
        );
        let core = Core::spawn("callring-archiver", backend, &config, shared)?;
        Ok(Archive::new(
            core,
            JsonLines {
                dir,
                sealer,
                _lock: lock,
            },
        ))
    }

    /// The archive directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.kind().dir
    }

    /// Where the durable prefix of the segments ends: every segment below
    /// [`segment`](SpoolPosition::segment) is durable whole, that segment up
    /// to [`offset`](SpoolPosition::offset), always at the end of a line. A
    /// reader of the segments that stops there (the PostgreSQL shipper does)
    /// never reads a record a crash could take back, nor a torn line. Moves
    /// after every fsync; takes one uncontended lock.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::archive::{segment_name, ArchiveConfig, Archiver};
    /// use callring::call::CallState;
    ///
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    /// let call = CallState::builder("call-1").audit_archive(archiver.sink("call-1")).build();
    /// let _ = call.end(); // one closed record
    /// archiver.flush().expect("durable");
    /// let end = archiver.durable_end();
    /// let file = dir.path().join(segment_name(end.segment));
    /// assert_eq!(std::fs::metadata(file).expect("written").len(), end.offset);
    /// # }
    /// ```
    #[must_use]
    pub fn durable_end(&self) -> SpoolPosition {
        self.core().shared().spool_end.get().position
    }

    /// Removes every sealed segment whose newest record is older than
    /// `before` (and empty sealed segments), recording each in the pruning
    /// manifest first, so [`verify`](crate::archive::verify) reports what
    /// was pruned rather than gaps. The segment being written is never
    /// pruned. Runs on the archiver's sealer thread; ring writers do not
    /// wait for it.
    ///
    /// With a `Shipper` (feature `postgres`) reading this spool,
    /// prune only what it has shipped (its progress is in the database).
    ///
    /// # Errors
    ///
    /// [`ArchiveError::Io`] if a segment cannot be read or removed (those
    /// pruned before it stay pruned); [`ArchiveError::NotRunning`] if the
    /// sealer is gone.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::archive::{ArchiveConfig, Archiver};
    /// use callring::call::{CallState, Timestamp};
    ///
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    /// // Nothing is sealed yet: the segment being written is never pruned.
    /// let report = archiver.prune_before(Timestamp::now()).expect("pruned");
    /// assert!(report.segments.is_empty());
    /// # }
    /// ```
    pub fn prune_before(&self, before: Timestamp) -> Result<PruneReport, ArchiveError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if !self.kind().sealer.send(Job::PruneBefore(before, tx)) {
            return Err(ArchiveError::NotRunning);
        }
        rx.recv().unwrap_or(Err(ArchiveError::NotRunning))
    }

    /// Waits until every segment sealed so far is compressed (with
    /// [`ArchiveConfig::compress`]) and retention is applied, or a step
    /// fails. The sealer does this by itself in the background; this is for
    /// tests, tools and an orderly shutdown that wants it done.
    ///
    /// # Errors
    ///
    /// [`ArchiveError::Io`] with the failure if a step failed (the sealer
    /// retries it); [`ArchiveError::NotRunning`] if the sealer is gone.
    pub fn settle(&self) -> Result<(), ArchiveError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if !self.kind().sealer.send(Job::Settle(tx)) {
            return Err(ArchiveError::NotRunning);
        }
        rx.recv().unwrap_or(Err(ArchiveError::NotRunning))
    }

    /// The state the archiver shares with its thread (for the shipper).
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn shared(&self) -> Arc<crate::archive::writer::feed::Shared> {
        self.core().shared_arc()
    }
}

/// How much of a segment's end [`repair_tail`] reads first.
const TAIL_WINDOW: u64 = 1 << 20;

/// `len` bytes of `path` from `offset`.
fn read_range(fs: &dyn ArchiveFs, path: &Path, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = fs.open_read(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = vec![0; usize::try_from(len).map_err(io::Error::other)?];
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Repairs the last segment of a previous run: cuts a torn tail, or ends a
/// whole last record that lost only its newline, and fsyncs it. Returns the
/// bytes cut.
pub(crate) fn repair_tail(fs: &dyn ArchiveFs, path: &Path) -> Result<u64, IoFailure> {
    let read = |e: io::Error| IoFailure::new(IoOp::Read, path, &e);
    let len = fs.file_len(path).map_err(read)?;
    // Only the end matters: read a window from it, widened until it holds
    // the whole torn region and a line end before it (or the whole file).
    let mut window = TAIL_WINDOW.min(len);
    let (offset, bytes, start) = loop {
        let offset = len - window;
        let bytes = read_range(fs, path, offset, window).map_err(read)?;
        let start = torn_tail_start(&bytes);
        let first_newline = bytes.iter().position(|&b| b == b'\n');
        // The window's first line may be partial: a cut at or before its
        // end could belong further back.
        let reaches_partial = match (first_newline, start) {
            (None, _) => true,
            (Some(nl), Some(s)) => s <= nl,
            (Some(_), None) => false,
        };
        if offset == 0 || !reaches_partial {
            break (offset, bytes, start);
        }
        window = window.saturating_mul(2).min(len);
    };
    let unterminated = bytes.last().is_some_and(|&b| b != b'\n');
    let mut file = fs
        .open_append(path)
        .map_err(|e| IoFailure::new(IoOp::Open, path, &e))?;
    let cut = match start {
        Some(start) => {
            file.truncate(offset + start as u64)
                .map_err(|e| IoFailure::new(IoOp::Truncate, path, &e))?;
            (bytes.len() - start) as u64
        }
        None if unterminated => {
            file.write_all(b"\n")
                .map_err(|e| IoFailure::new(IoOp::Write, path, &e))?;
            0
        }
        None => 0,
    };
    // Always: after a crash of the process alone, records the old run wrote
    // but never fsynced are whole in the page cache. Making them durable now
    // lets the durable end (`Archiver::durable_end`) start after every
    // existing segment.
    file.sync_data()
        .map_err(|e| IoFailure::new(IoOp::Sync, path, &e))?;
    Ok(cut)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::archive::spool::fs::StdFs;

    fn line(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let event = crate::call::AuditEvent::new(
            n,
            crate::call::Timestamp::from_unix_nanos(0),
            crate::call::AuditEventType::ToolInvoked,
            None,
            crate::call::Details::new(),
        );
        crate::archive::record::encode_line(
            "c",
            crate::archive::record::Origin::Logged,
            &event,
            &mut out,
        );
        out
    }

    /// Repair reads only the end of a segment, widening the window when the
    /// torn region is longer than it (zero-filled blocks after a power
    /// loss), and cuts exactly what a whole-file scan would.
    #[test]
    fn the_tail_is_found_however_far_back_it_starts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("seg.jsonl");
        let mut whole = Vec::new();
        let mut n = 0;
        while whole.len() < 3 * TAIL_WINDOW as usize {
            whole.extend_from_slice(&line(n));
            n += 1;
        }
        for torn in [
            b"{\"v\":3,\"call_id\":\"c\",\"se".to_vec(),
            // 1.5 windows of NUL lines, then a partial line.
            [vec![0u8; 4095], b"\n".to_vec()]
                .concat()
                .repeat(384)
                .into_iter()
                .chain(b"{\"v\":3".iter().copied())
                .collect(),
            Vec::new(),
        ] {
            let mut bytes = whole.clone();
            bytes.extend_from_slice(&torn);
            std::fs::write(&path, &bytes).expect("written");
            let cut = repair_tail(&StdFs, &path).expect("repaired");
            assert_eq!(cut, torn.len() as u64);
            assert_eq!(std::fs::read(&path).expect("read"), whole);
        }
        // A whole last record that lost only its newline gets it back.
        std::fs::write(&path, &whole[..whole.len() - 1]).expect("written");
        assert_eq!(repair_tail(&StdFs, &path).expect("repaired"), 0);
        assert_eq!(std::fs::read(&path).expect("read"), whole);
    }
}
