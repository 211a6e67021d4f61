//! The sealer: the archiver's second thread, which looks after segments the
//! writer has left behind. It writes each sealed segment's index
//! (`audit-N.idx`: where each call's lines are, so a reader of one call
//! reads only those), compresses the segment (when
//! [`ArchiveConfig::compress`] is on) and applies retention
//! ([`ArchiveConfig::max_age`], [`ArchiveConfig::max_bytes`], and
//! [`Archiver::prune_before`](crate::archive::Archiver::prune_before)).
//!
//! The writer never waits for it: sealing a segment is one send on an
//! unbounded channel. A failed step is reported to the fault callback
//! ([`FaultEvent::Sealing`]) and retried with the archiver's backoff; the
//! plain segment stays readable meanwhile.
//!
//! Compressing segment `N`, and what a crash after each step leaves:
//!
//! | step | on disk after a crash | next start |
//! |---|---|---|
//! | write `audit-N.jsonl.zst.tmp` | plain, partial tmp | removes the tmp |
//! | fsync it | plain, whole tmp | removes the tmp |
//! | rename it to `audit-N.jsonl.zst` | plain and compressed | removes the plain |
//! | fsync the directory | plain and compressed | removes the plain |
//! | remove `audit-N.jsonl` | compressed | - |
//! | fsync the directory | compressed | - |
//!
//! Readers list a segment once: when both copies are present they read the
//! compressed one, which is renamed into place only after it is whole and
//! fsynced. So every record is readable exactly once at every step.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::archive::config::ArchiveConfig;
use crate::archive::error::{ArchiveError, FaultEvent, IoFailure, IoOp};
use crate::archive::read::index::{read_index, write_index};
use crate::archive::record::{
    compressed_segment_name, index_file_name, segment_index, segment_name, sort_segments,
    SegmentPath,
};
use crate::archive::spool::fs::{remove_if_present, ArchiveFs, StdFs, TMP_SUFFIX};
use crate::archive::spool::retention::{self, PruneReport, Retention};
use crate::archive::spool::zst;
use crate::archive::stats::add;
use crate::archive::writer::feed::Shared;
use crate::call::Timestamp;

/// How often retention by age is checked when nothing else happens.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Work for the sealer.
pub(crate) enum Job {
    /// The writer moved past this segment: it is whole and durable.
    Sealed(u64),
    /// Prune sealed segments whose newest record is before the time.
    PruneBefore(Timestamp, Sender<Result<PruneReport, ArchiveError>>),
    /// Reply once every sealed segment so far is compressed and retention
    /// applied.
    Settle(Sender<Result<(), ArchiveError>>),
}

/// The sealer's handle: a way to send it jobs, and its thread.
pub(crate) struct Sealer {
    tx: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl Sealer {
    /// Finishes what a crash interrupted in `dir` and starts the thread,
    /// which seals every segment below `first_unsealed` first.
    pub(crate) fn start(
        fs: Arc<dyn ArchiveFs>,
        dir: PathBuf,
        config: &ArchiveConfig,
        shared: Arc<Shared>,
        first_unsealed: u64,
    ) -> Result<(Self, Sender<Job>), ArchiveError> {
        let segments = recover(&*fs, &dir)?.segments;
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut work = Work {
            fs,
            dir,
            shared,
            level: config.compress.then_some(config.compression_level),
            retention: Retention::new(config.max_age, config.max_bytes),
            backoff: (config.retry_initial, config.retry_max),
            queue: segments
                .iter()
                .filter(|s| s.index < first_unsealed)
                .map(|s| s.index)
                .collect(),
            times: BTreeMap::new(),
            failures: 0,
            deferred: Vec::new(),
            unindexable: std::collections::BTreeSet::new(),
        };
        work.queue.make_contiguous().sort_unstable();
        let thread = thread::Builder::new()
            .name("callring-sealer".to_owned())
            .spawn(move || work.run(&rx))
            .map_err(|e| ArchiveError::Spawn {
                message: e.to_string(),
            })?;
        Ok((
            Self {
                tx: Some(tx.clone()),
                thread: Some(thread),
            },
            tx,
        ))
    }

    /// Sends a job; `false` if the thread is gone.
    pub(crate) fn send(&self, job: Job) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }
}

impl Drop for Sealer {
    /// Stops the thread after the step under way; segments not yet sealed
    /// are sealed at the next start.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Finishes what a crash left half done in `dir`: removes the temporary
/// files of an interrupted write and the plain copy of a segment whose
/// compressed copy is in place, and finishes interrupted prunes.
pub(crate) fn recover(fs: &dyn ArchiveFs, dir: &Path) -> Result<Recovered, IoFailure> {
    let names = fs
        .list_dir(dir)
        .map_err(|e| IoFailure::new(IoOp::ListDir, dir, &e))?;
    let (mut segments, others) = sort_segments(dir, names.clone());
    let mut changed = false;
    for path in others {
        let Some(name) = path.file_name() else {
            continue;
        };
        let stray_tmp = name.to_str().is_some_and(|n| {
            n.ends_with(TMP_SUFFIX) && (n.starts_with("audit-") || n.starts_with("pruned."))
        });
        if let Some(index) = segment_index(name) {
            // A plain segment listed among the others has a compressed copy.
            if !keep_compressed(fs, dir, index)? {
                if let Some(segment) = segments.iter_mut().find(|s| s.index == index) {
                    *segment = SegmentPath {
                        index,
                        path,
                        compressed: false,
                    };
                }
            }
            changed = true;
        } else if stray_tmp {
            remove_if_present(fs, &path).map_err(|e| IoFailure::new(IoOp::Remove, &path, &e))?;
            changed = true;
        }
    }
    // An index whose segment is gone (pruned while an offline indexer ran).
    for name in &names {
        let Some(index) = name.to_str().and_then(|n| {
            n.strip_prefix("audit-")?
                .strip_suffix(".idx")?
                .parse::<u64>()
                .ok()
        }) else {
            continue;
        };
        if !segments.iter().any(|s| s.index == index) && *name == *index_file_name(index) {
            let path = dir.join(name);
            remove_if_present(fs, &path).map_err(|e| IoFailure::new(IoOp::Remove, &path, &e))?;
            changed = true;
        }
    }
    let (removed, highest_pruned) = retention::finish_interrupted(fs, dir, &mut segments)?;
    if changed || removed {
        fs.sync_dir(dir)
            .map_err(|e| IoFailure::new(IoOp::SyncDir, dir, &e))?;
    }
    Ok(Recovered {
        segments,
        highest_pruned,
    })
}

/// Segment `index` is there plain and compressed: keeps the compressed copy
/// (removing the plain one) if it reads back as exactly as long as the plain
/// one, which is what a compression that got as far as its rename leaves;
/// otherwise (a damaged or foreign `.zst`) keeps the plain one and removes
/// the other. Returns whether the compressed copy was kept.
fn keep_compressed(fs: &dyn ArchiveFs, dir: &Path, index: u64) -> Result<bool, IoFailure> {
    let plain = dir.join(segment_name(index));
    let compressed = dir.join(compressed_segment_name(index));
    let plain_len = fs
        .file_len(&plain)
        .map_err(|e| IoFailure::new(IoOp::Read, &plain, &e))?;
    let whole = zst::SegmentReader::open(&compressed, true)
        .is_ok_and(|reader| reader.plain_len() == plain_len);
    let remove = if whole { &plain } else { &compressed };
    remove_if_present(fs, remove).map_err(|e| IoFailure::new(IoOp::Remove, remove, &e))?;
    Ok(whole)
}

/// For the offline tools ([`compress_archive`], `prune_before`): takes
/// `dir`'s lock, refused while an archiver holds it, and finishes what a
/// crash interrupted. The lock is held until the returned file is dropped.
pub(crate) fn open_offline(dir: &Path) -> Result<(std::fs::File, Recovered), ArchiveError> {
    let lock = crate::archive::spool::fs::lock_dir(dir).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => ArchiveError::Locked {
            dir: dir.to_path_buf(),
        },
        _ => ArchiveError::Io(IoFailure::new(IoOp::Lock, dir, &e)),
    })?;
    let recovered = recover(&StdFs, dir)?;
    Ok((lock, recovered))
}

/// What [`recover`] leaves: the segments, and the highest segment index the
/// pruning manifest lists (new segments are numbered above both).
pub(crate) struct Recovered {
    pub(crate) segments: Vec<SegmentPath>,
    pub(crate) highest_pruned: Option<u64>,
}

/// Compresses sealed segment `index` (see the module docs for the steps).
/// Returns `(plain bytes, compressed bytes)`; `None` if the plain segment is
/// gone (already compressed, or pruned).
pub(crate) fn compress_segment(
    fs: &dyn ArchiveFs,
    dir: &Path,
    index: u64,
    level: i32,
) -> Result<Option<zst::Compressed>, IoFailure> {
    let plain = dir.join(segment_name(index));
    let target = dir.join(compressed_segment_name(index));
    let tmp = dir.join(format!("{}{TMP_SUFFIX}", compressed_segment_name(index)));
    let src = match fs.open_read(&plain) {
        Ok(src) => src,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(IoFailure::new(IoOp::Read, &plain, &e)),
    };
    remove_if_present(fs, &tmp).map_err(|e| IoFailure::new(IoOp::Remove, &tmp, &e))?;
    let mut dst = fs
        .open_append(&tmp)
        .map_err(|e| IoFailure::new(IoOp::Open, &tmp, &e))?;
    let sizes = zst::compress(
        &mut BufReader::with_capacity(1 << 16, src),
        &mut *dst,
        level,
    )
    .map_err(|e| IoFailure::new(IoOp::Compress, &plain, &e))?;
    let on_disk = fs
        .file_len(&plain)
        .map_err(|e| IoFailure::new(IoOp::Read, &plain, &e))?;
    if sizes.plain != on_disk {
        let e = io::Error::other(format!(
            "read {} bytes of a {on_disk}-byte sealed segment",
            sizes.plain
        ));
        return Err(IoFailure::new(IoOp::Compress, &plain, &e));
    }
    dst.sync_data()
        .map_err(|e| IoFailure::new(IoOp::Sync, &tmp, &e))?;
    drop(dst);
    fs.rename(&tmp, &target)
        .map_err(|e| IoFailure::new(IoOp::Rename, &tmp, &e))?;
    fs.sync_dir(dir)
        .map_err(|e| IoFailure::new(IoOp::SyncDir, dir, &e))?;
    fs.remove_file(&plain)
        .map_err(|e| IoFailure::new(IoOp::Remove, &plain, &e))?;
    fs.sync_dir(dir)
        .map_err(|e| IoFailure::new(IoOp::SyncDir, dir, &e))?;
    Ok(Some(sizes))
}

/// Whether `segment` has an index that matches it.
fn has_index(dir: &Path, segment: &SegmentPath) -> bool {
    zst::SegmentReader::open(&segment.path, segment.compressed)
        .is_ok_and(|reader| read_index(dir, segment.index, reader.plain_len(), None).is_some())
}

/// What [`compress_archive`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct CompressReport {
    /// Segments compressed.
    pub segments: u64,
    /// Their plain bytes.
    pub plain_bytes: u64,
    /// Their compressed bytes.
    pub compressed_bytes: u64,
    /// Time spent compressing (one thread).
    pub elapsed: Duration,
    /// Bytes of a crash's torn tail cut off the last segment first.
    pub repaired_torn_bytes: u64,
}

impl CompressReport {
    /// Plain bytes per compressed byte (0 when nothing was compressed).
    #[must_use]
    pub fn ratio(&self) -> f64 {
        if self.compressed_bytes == 0 {
            0.0
        } else {
            self.plain_bytes as f64 / self.compressed_bytes as f64
        }
    }
}

impl fmt::Display for CompressReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "compressed {} segment(s): {} -> {} bytes ({:.1}x) in {:.2} s",
            self.segments,
            self.plain_bytes,
            self.compressed_bytes,
            self.ratio(),
            self.elapsed.as_secs_f64()
        )
    }
}

/// Compresses every plain segment of the archive in `dir` at zstd `level`,
/// as a running archiver's sealer does with
/// [`ArchiveConfig::compress`](crate::archive::ArchiveConfig::compress): for
/// an archive no archiver has open (an offline tool, `callring-archive
/// compress`). Finishes an interrupted compression or prune first.
///
/// # Errors
///
/// [`ArchiveError::InvalidConfig`] for a level outside 1 to 22,
/// [`ArchiveError::Locked`] while an archiver holds `dir`,
/// [`ArchiveError::Io`] if a segment cannot be read or written (those
/// compressed before it stay compressed; the failed one stays plain).
///
/// A torn last line a crash left at the end of the last segment is cut
/// first (it was never durable; the next archiver would cut it too), and
/// counted in [`CompressReport::repaired_torn_bytes`].
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::archive::{compress_archive, verify, ArchiveConfig, Archiver};
/// use callring::call::CallState;
///
/// let dir = tempfile::tempdir().expect("temp dir");
/// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
/// let call = CallState::builder("call-1").audit_archive(archiver.sink("call-1")).build();
/// let _ = call.end();
/// archiver.stop().expect("clean stop");
///
/// let report = compress_archive(dir.path(), 3).expect("compressed");
/// assert_eq!(report.segments, 1);
/// assert!(verify(dir.path()).expect("readable").is_complete());
/// # }
/// ```
pub fn compress_archive(dir: impl AsRef<Path>, level: i32) -> Result<CompressReport, ArchiveError> {
    let dir = dir.as_ref();
    ArchiveConfig::default()
        .compression_level(level)
        .validate()?;
    let (_lock, recovered) = open_offline(dir)?;
    let fs = StdFs;
    let started = Instant::now();
    let mut report = CompressReport::default();
    let segments = recovered.segments;
    // A crash's torn tail can end the last segment: cut it first, as the
    // next archiver would (a compressed segment must be whole).
    if let Some(last) = segments.last().filter(|s| !s.compressed) {
        report.repaired_torn_bytes = crate::archive::spool::repair_tail(&fs, &last.path)?;
    }
    for segment in segments {
        if segment.compressed {
            continue;
        }
        if let Some(sizes) = compress_segment(&fs, dir, segment.index, level)? {
            report.segments += 1;
            report.plain_bytes += sizes.plain;
            report.compressed_bytes += sizes.compressed;
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The sealer thread's state.
struct Work {
    fs: Arc<dyn ArchiveFs>,
    dir: PathBuf,
    shared: Arc<Shared>,
    /// The zstd level, when compressing.
    level: Option<i32>,
    retention: Retention,
    backoff: (Duration, Duration),
    /// Sealed segments still to index or compress, oldest first.
    queue: VecDeque<u64>,
    /// Segments whose sealing failed: retried at the next tick, so one bad
    /// segment does not hold up the others (or retention).
    deferred: Vec<u64>,
    /// Segments that hold a line that is not a record: not indexed (they
    /// are still compressed, and read whole).
    unindexable: std::collections::BTreeSet<u64>,
    /// Each sealed segment's newest record time, once read.
    times: BTreeMap<u64, Option<Timestamp>>,
    /// Failed attempts in a row.
    failures: u32,
}

impl Work {
    fn run(mut self, rx: &Receiver<Job>) {
        let mut settling: Vec<Sender<Result<(), ArchiveError>>> = Vec::new();
        let mut next_retention = Instant::now();
        let mut retry_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let busy = !self.queue.is_empty();
            let wake = match retry_at {
                Some(at) => at,
                None if busy => now,
                None => next_retention,
            };
            let job = match rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            match job {
                Some(Job::Sealed(index)) => {
                    self.queue.push_back(index);
                    next_retention = Instant::now();
                }
                Some(Job::PruneBefore(before, reply)) => {
                    let _ = reply.send(self.prune(Some(before)).map_err(ArchiveError::Io));
                }
                Some(Job::Settle(reply)) => {
                    settling.push(reply);
                    retry_at = None; // try now
                    next_retention = Instant::now();
                }
                None => {}
            }
            if retry_at.is_some_and(|at| Instant::now() < at) {
                continue;
            }
            retry_at = None;
            let step = self.step(&mut next_retention);
            match step {
                Ok(done) => {
                    self.failures = 0;
                    if done {
                        for reply in settling.drain(..) {
                            let _ = reply.send(Ok(()));
                        }
                    }
                }
                Err((segment, error)) => {
                    self.failures = self.failures.saturating_add(1);
                    let wait = backoff(self.backoff, self.failures);
                    add(&self.shared.counters.seal_errors, 1);
                    crate::obs::archive_fault(&error, u64::from(self.failures), wait);
                    self.shared.tell(&FaultEvent::Sealing {
                        segment,
                        error: error.clone(),
                        attempt: u64::from(self.failures),
                        retry_in: wait,
                    });
                    for reply in settling.drain(..) {
                        let _ = reply.send(Err(ArchiveError::Io(error.clone())));
                    }
                    retry_at = Some(Instant::now() + wait);
                }
            }
        }
    }

    /// Seals the oldest segment in the queue (its index, then its
    /// compression), or, once a minute (and when asked), retries the
    /// deferred ones and applies retention. `Ok(true)` when nothing is left
    /// to do.
    fn step(&mut self, next_tick: &mut Instant) -> Result<bool, (Option<u64>, IoFailure)> {
        if let Some(index) = self.queue.pop_front() {
            if let Err(e) = self.seal(index) {
                self.deferred.push(index);
                return Err((Some(index), e));
            }
            if !self.queue.is_empty() {
                return Ok(false);
            }
        }
        if Instant::now() < *next_tick {
            return Ok(true);
        }
        *next_tick = Instant::now() + RETENTION_EVERY;
        if !self.deferred.is_empty() {
            self.queue.extend(self.deferred.drain(..));
            return Ok(false);
        }
        if self.retention.is_set() {
            let report = self.prune(None).map_err(|e| (None, e))?;
            if let Some(failure) = report.skipped.into_iter().next() {
                // Kept in place and retried at the next tick; reported here.
                return Err((None, failure));
            }
        }
        Ok(true)
    }

    /// Writes sealed segment `index`'s index unless it has a valid one,
    /// then compresses it if configured and still plain. Each step is
    /// skipped when already done, so a retry redoes only the rest.
    fn seal(&mut self, index: u64) -> Result<(), IoFailure> {
        let fs = &*self.fs;
        let plain = self.dir.join(segment_name(index));
        let compressed = self.dir.join(compressed_segment_name(index));
        let present = |path: &Path| match fs.file_len(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(IoFailure::new(IoOp::Read, path, &e)),
        };
        let segment = match (present(&compressed)?, present(&plain)?) {
            // A compression that failed after its rename: finish it.
            (true, true) if keep_compressed(fs, &self.dir, index)? => SegmentPath {
                index,
                path: compressed,
                compressed: true,
            },
            (true, false) => SegmentPath {
                index,
                path: compressed,
                compressed: true,
            },
            (_, true) => SegmentPath {
                index,
                path: plain,
                compressed: false,
            },
            (false, false) => return Ok(()), // pruned, or a run that wrote nothing
        };
        let mut failure = None;
        if !self.unindexable.contains(&index) && !has_index(&self.dir, &segment) {
            match write_index(fs, &self.dir, &segment) {
                Ok(_) => add(&self.shared.counters.indexed_segments, 1),
                Err(e) => {
                    if e.kind() == io::ErrorKind::InvalidData {
                        // A line that is not a record: no index, ever; the
                        // segment is still compressed (its bytes as they are).
                        self.unindexable.insert(index);
                    }
                    failure = Some(IoFailure::new(IoOp::Index, &segment.path, &e));
                }
            }
        }
        if let (Some(level), false) = (self.level, segment.compressed) {
            let started = Instant::now();
            if let Some(sizes) = compress_segment(fs, &self.dir, index, level)? {
                let counters = &self.shared.counters;
                add(&counters.compressed_segments, 1);
                add(&counters.compressed_plain_bytes, sizes.plain);
                add(&counters.compressed_bytes, sizes.compressed);
                add(
                    &counters.compress_micros,
                    started.elapsed().as_micros() as u64,
                );
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Applies retention (and `before`, when given) to the sealed segments.
    fn prune(&mut self, before: Option<Timestamp>) -> Result<PruneReport, IoFailure> {
        let writing = self.shared.spool_end.get().position.segment;
        let report = retention::prune(
            &*self.fs,
            &self.dir,
            writing,
            &self.retention,
            before,
            &mut self.times,
        )?;
        let counters = &self.shared.counters;
        add(&counters.pruned_segments, report.segments.len() as u64);
        add(&counters.pruned_bytes, report.bytes);
        self.queue
            .retain(|i| !report.segments.iter().any(|s| s.segment == *i));
        Ok(report)
    }
}

/// The wait before attempt `failures + 1`: doubling from `initial`, capped.
fn backoff((initial, max): (Duration, Duration), failures: u32) -> Duration {
    initial
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(max)
}
