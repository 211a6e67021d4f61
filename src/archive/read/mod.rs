//! Reading the archive back, streamed: [`ArchiveReader`] yields every
//! record of every segment in order, plain or compressed, one line in
//! memory at a time, and reads one call's trail through the segments'
//! indexes (only the byte runs an index gives for that call) where they
//! exist. The verifier reads through the same line reader.

pub(crate) mod index;
pub(crate) mod lines;

use std::fmt;
use std::fs;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::archive::error::{IoFailure, IoOp};
use crate::archive::record::{
    compressed_segment_name, sort_segments, ArchiveLine, ArchiveRecord, ClosedRecord, NoteRecord,
    SegmentPath,
};
use crate::archive::spool::fs::StdFs;
use crate::archive::spool::retention::{for_each_pruned, pruned_indexes};
use crate::archive::spool::zst::{SegmentReader, FRAME_BYTES};
use crate::archive::verify::report::SeqRange;
use crate::archive::verify::report::TornTail;
use crate::archive::verify::VerifyError;

use self::index::{read_index, ByteRun};
use self::lines::{ScanError, SegmentLines, Step};

/// The segments of the archive in `dir`, in order, and its other files,
/// after checking that `dir` is a directory.
pub(crate) fn list_segments(dir: &Path) -> Result<(Vec<SegmentPath>, Vec<PathBuf>), VerifyError> {
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(VerifyError::NotFound {
                dir: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(IoFailure::new(IoOp::ListDir, dir, &e).into()),
        Ok(meta) if !meta.is_dir() => {
            return Err(VerifyError::NotADirectory {
                path: dir.to_path_buf(),
            })
        }
        Ok(_) => {}
    }
    let names: Vec<_> = fs::read_dir(dir)
        .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect())
        .map_err(|e| IoFailure::new(IoOp::ListDir, dir, &e))?;
    Ok(sort_segments(dir, names))
}

/// An archive directory's segments, other files and pruned segments.
pub(crate) struct Listing {
    /// The segments to read, in order (none the manifest lists).
    pub(crate) segments: Vec<SegmentPath>,
    /// Files that are not segments.
    pub(crate) ignored: Vec<PathBuf>,
}

/// [`list_segments`], and the pruning manifest: a segment the manifest
/// lists but a crash left on disk (between the manifest's line and the
/// removal) is pruned, not read.
pub(crate) fn list_archive(dir: &Path) -> Result<Listing, VerifyError> {
    let (mut segments, ignored) = list_segments(dir)?;
    let pruned = pruned_indexes(&StdFs, dir)?;
    if !pruned.is_empty() {
        segments.retain(|s| !pruned.contains(&s.index));
    }
    Ok(Listing { segments, ignored })
}

/// A segment opened for reading.
pub(crate) struct Opened {
    pub(crate) reader: SegmentReader,
    /// The file opened: the listed one, or its compressed copy if the
    /// plain file was compressed and removed since it was listed.
    pub(crate) path: PathBuf,
    pub(crate) compressed: bool,
}

/// Opens `segment`, counting the bytes read into `counter`.
pub(crate) fn open_segment(
    segment: &SegmentPath,
    counter: Option<&Arc<AtomicU64>>,
) -> Result<Opened, VerifyError> {
    let count = |reader: SegmentReader| match counter {
        Some(counter) => reader.counting(Arc::clone(counter)),
        None => reader,
    };
    match SegmentReader::open(&segment.path, segment.compressed) {
        Ok(reader) => Ok(Opened {
            reader: count(reader),
            path: segment.path.clone(),
            compressed: segment.compressed,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !segment.compressed => {
            // Sealed meanwhile: the plain file goes only once its compressed
            // copy is whole and durable.
            let path = segment
                .path
                .with_file_name(compressed_segment_name(segment.index));
            match SegmentReader::open(&path, true) {
                Ok(reader) => Ok(Opened {
                    reader: count(reader),
                    path,
                    compressed: true,
                }),
                Err(_) => Err(IoFailure::new(IoOp::Open, &segment.path, &e).into()),
            }
        }
        Err(e) => Err(IoFailure::new(IoOp::Open, &segment.path, &e).into()),
    }
}

/// Opens `segment` as [`open_segment`] does; `None` if it is gone because
/// retention pruned it after it was listed (the manifest says so).
pub(crate) fn open_unless_pruned(
    dir: &Path,
    segment: &SegmentPath,
    counter: Option<&Arc<AtomicU64>>,
) -> Result<Option<Opened>, VerifyError> {
    match open_segment(segment, counter) {
        Ok(opened) => Ok(Some(opened)),
        Err(VerifyError::Io(failure))
            if failure.kind == io::ErrorKind::NotFound
                && pruned_indexes(&StdFs, dir).is_ok_and(|p| p.contains(&segment.index)) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A line reader's error, placed in `file`.
pub(crate) fn scan_error(e: ScanError, file: &Path) -> VerifyError {
    match e {
        ScanError::Io(e) => IoFailure::new(IoOp::Read, file, &e).into(),
        ScanError::Corrupt { number, reason } => VerifyError::Corrupt {
            file: file.to_path_buf(),
            line: number,
            reason,
        },
    }
}

/// A stream of plain segment bytes.
type Stream = Box<dyn BufRead + Send>;

/// Reads an archive directory back: every record in order
/// ([`records`](Self::records)), or one call's trail ([`call`](Self::call)),
/// from plain and compressed segments alike, checking every line's
/// checksum.
///
/// Memory stays at one line (plus one call's trail for `call`), whatever
/// the segments' size. The segments are listed when the reader opens; a
/// segment compressed since then is read from its compressed copy.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::archive::{ArchiveConfig, ArchiveLine, ArchiveReader, Archiver};
/// use callring::call::{AuditEventType, CallState, Details};
///
/// let dir = tempfile::tempdir().expect("temp dir");
/// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
/// let call = CallState::builder("call-1").audit_archive(archiver.sink("call-1")).build();
/// for _ in 0..3 {
///     call.log_event(&AuditEventType::ToolInvoked, None, &Details::new()).expect("logged");
/// }
/// let _ = call.end();
/// archiver.stop().expect("clean stop");
///
/// let reader = ArchiveReader::open(dir.path()).expect("readable");
/// let mut records = reader.records();
/// for record in &mut records {
///     let record = record.expect("a whole record");
///     assert_eq!(record.record.call_id(), "call-1");
///     assert!(record.line >= 1);
/// }
/// assert!(records.torn_tail().is_none());
///
/// let trail = reader.call("call-1").expect("readable");
/// let seqs: Vec<u64> = trail.events().map(|e| e.seq).collect();
/// assert_eq!(seqs, [0, 1, 2]);
/// assert_eq!(trail.closed().map(|c| c.issued), Some(3));
/// # }
/// ```
#[derive(Debug)]
pub struct ArchiveReader {
    dir: PathBuf,
    segments: Vec<SegmentPath>,
    bytes_read: Arc<AtomicU64>,
}

impl ArchiveReader {
    /// Opens the archive in `dir` (lists its segments; reads nothing yet).
    ///
    /// # Errors
    ///
    /// [`VerifyError::NotFound`] / [`VerifyError::NotADirectory`] for a bad
    /// path, [`VerifyError::Io`] if it cannot be listed.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, VerifyError> {
        let dir = dir.as_ref();
        let Listing { segments, .. } = list_archive(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            segments,
            bytes_read: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The archive directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Segment files found when the reader opened, in order.
    #[must_use]
    pub fn segment_files(&self) -> Vec<&Path> {
        self.segments.iter().map(|s| s.path.as_path()).collect()
    }

    /// File bytes this reader has read so far (segments, compressed or
    /// not, and indexes).
    #[must_use]
    pub fn bytes_read(&self) -> u64 {
        // Relaxed: a statistics counter.
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Every record of every segment, in order, each with its file and
    /// line. A crash's torn tail at the end of the last segment ends the
    /// iteration quietly; [`Records::torn_tail`] says where it is. A corrupt
    /// line (one that is not a record, or whose checksum fails) is an
    /// error, after which the iteration ends.
    pub fn records(&self) -> Records<'_> {
        Records {
            reader: self,
            next: 0,
            current: None,
            torn_tail: None,
            done: false,
        }
    }

    /// The trail of `call_id`: its events in seq order (duplicates kept),
    /// then its archived notes (in their own seq order), then its closed
    /// record(s).
    ///
    /// A segment with a valid index (see
    /// [`index_archive`](crate::archive::index_archive)) is read only where
    /// the index places the call's lines, and not at all if the call has
    /// none there; a segment without one is read whole.
    ///
    /// # Errors
    ///
    /// [`VerifyError::Io`] if a segment cannot be read,
    /// [`VerifyError::Corrupt`] for a line read that is not a record.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::archive::{index_archive, ArchiveConfig, ArchiveReader, Archiver};
    /// use callring::call::{AuditEventType, CallState, Details};
    ///
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    /// let calls: Vec<CallState> = (0..20)
    ///     .map(|i| {
    ///         let id = format!("call-{i}");
    ///         CallState::builder(&id).audit_archive(archiver.sink(&id)).build()
    ///     })
    ///     .collect();
    /// for call in &calls {
    ///     for _ in 0..100 {
    ///         call.log_event(&AuditEventType::ToolInvoked, None, &Details::new()).expect("logged");
    ///     }
    ///     let _ = call.end();
    /// }
    /// archiver.stop().expect("clean stop");
    /// index_archive(dir.path()).expect("indexed");
    ///
    /// let reader = ArchiveReader::open(dir.path()).expect("readable");
    /// let trail = reader.call("call-7").expect("readable");
    /// assert_eq!(trail.events().count(), 100);
    /// assert_eq!(trail.indexed, 1);
    /// let archive_bytes: u64 = reader
    ///     .segment_files()
    ///     .iter()
    ///     .map(|f| std::fs::metadata(f).expect("exists").len())
    ///     .sum();
    /// assert!(reader.bytes_read() < archive_bytes / 4); // its lines and the index only
    /// # }
    /// ```
    pub fn call(&self, call_id: &str) -> Result<CallTrail, VerifyError> {
        let mut trail = CallTrail {
            call_id: call_id.to_owned(),
            lines: Vec::new(),
            indexed: 0,
            scanned: 0,
            pruned: Vec::new(),
        };
        let count = Some(&self.bytes_read);
        for (i, segment) in self.segments.iter().enumerate() {
            let Some(opened) = open_unless_pruned(&self.dir, segment, count)? else {
                continue; // pruned since the reader opened: in the manifest now
            };
            let plain_len = opened.reader.plain_len();
            let index = read_index(&self.dir, segment.index, plain_len, Some(&self.bytes_read));
            if let Some(index) = index {
                let Some(entry) = index.call(call_id) else {
                    trail.indexed += 1;
                    continue;
                };
                let before = trail.lines.len();
                let runs = coalesce(&entry.runs, opened.compressed);
                drop(opened);
                if self.read_runs(segment, &runs, call_id, &mut trail.lines)? == entry.records {
                    trail.indexed += 1;
                    continue;
                }
                // The index does not match the segment: read it whole.
                trail.lines.truncate(before);
                let opened = open_segment(segment, count)?;
                self.scan_segment(opened, false, call_id, &mut trail.lines)?;
            } else {
                let last = i + 1 == self.segments.len();
                self.scan_segment(opened, last, call_id, &mut trail.lines)?;
            }
            trail.scanned += 1;
        }
        // What retention removed of the call, read after the segments so a
        // segment pruned meanwhile is counted there.
        for_each_pruned(&StdFs, &self.dir, |p| {
            if let Some(call) = p.calls.get(call_id) {
                trail.pruned.extend_from_slice(&call.seqs);
            }
        })?;
        trail.pruned.sort_by_key(|r| r.first);
        // One run per stretch of seqs, across segments.
        trail.pruned.dedup_by(|next, run| {
            let joins = next.first <= run.last.saturating_add(1);
            if joins {
                run.last = run.last.max(next.last);
            }
            joins
        });
        trail.lines.sort_by_key(|line| match line {
            ArchiveLine::Event(r) => (0, r.seq),
            ArchiveLine::Note(n) => (1, n.seq),
            ArchiveLine::Closed(_) => (2, 0),
        });
        Ok(trail)
    }

    /// Reads `runs` of `segment`, adding the lines of `call_id` to `out`;
    /// returns how many there were.
    fn read_runs(
        &self,
        segment: &SegmentPath,
        runs: &[ByteRun],
        call_id: &str,
        out: &mut Vec<ArchiveLine>,
    ) -> Result<u64, VerifyError> {
        let mut found = 0;
        for run in runs {
            let opened = open_segment(segment, Some(&self.bytes_read))?;
            let path = opened.path;
            let src: Stream = opened
                .reader
                .range(run.start, run.end)
                .map_err(|e| IoFailure::new(IoOp::Read, &path, &e))?;
            let lines = SegmentLines::starting_at(src, run.line, run.start, false);
            for step in lines {
                if let Step::Line(scanned) = step.map_err(|e| scan_error(e, &path))? {
                    if scanned.line.call_id() == call_id {
                        found += 1;
                        out.push(scanned.line);
                    }
                }
            }
        }
        Ok(found)
    }

    /// Reads all of a segment, adding the lines of `call_id` to `out`.
    fn scan_segment(
        &self,
        opened: Opened,
        last: bool,
        call_id: &str,
        out: &mut Vec<ArchiveLine>,
    ) -> Result<(), VerifyError> {
        let Opened {
            reader,
            path,
            compressed,
        } = opened;
        let src: Stream = reader
            .all()
            .map_err(|e| IoFailure::new(IoOp::Read, &path, &e))?;
        for step in SegmentLines::new(src, last && !compressed) {
            match step.map_err(|e| scan_error(e, &path))? {
                Step::Line(scanned) if scanned.line.call_id() == call_id => out.push(scanned.line),
                Step::Line(_) | Step::Torn { .. } => {}
            }
        }
        Ok(())
    }
}

/// `runs` to read: as they are from a plain segment; from a compressed
/// one, runs closer than a frame merge (each read decompresses from the
/// start of its frame).
fn coalesce(runs: &[ByteRun], compressed: bool) -> Vec<ByteRun> {
    let mut out: Vec<ByteRun> = Vec::with_capacity(runs.len());
    for &run in runs {
        match out.last_mut() {
            Some(last) if compressed && run.start - last.end < FRAME_BYTES as u64 => {
                last.end = run.end;
            }
            _ => out.push(run),
        }
    }
    out
}

/// One record of the archive and where it is.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LocatedLine {
    /// The segment file.
    pub file: Arc<Path>,
    /// The segment's index (its number).
    pub segment: u64,
    /// The line, 1-based.
    pub line: u64,
    /// The line's offset in the plain segment.
    pub offset: u64,
    /// The record.
    pub record: ArchiveLine,
}

/// One call's trail as [`ArchiveReader::call`] read it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CallTrail {
    /// The call.
    pub call_id: String,
    /// Its lines: events in seq order (duplicates kept), then archived
    /// notes in their seq order, then closed records.
    pub lines: Vec<ArchiveLine>,
    /// Segments answered by their index (read only where the call is, or
    /// not at all).
    pub indexed: u64,
    /// Segments read whole (no valid index).
    pub scanned: u64,
    /// Seqs of the call's events that retention removed with their
    /// segments (per the pruning manifest), in order.
    pub pruned: Vec<SeqRange>,
}

impl CallTrail {
    /// The event records, in seq order.
    pub fn events(&self) -> impl Iterator<Item = &ArchiveRecord> + '_ {
        self.lines.iter().filter_map(|line| match line {
            ArchiveLine::Event(r) => Some(r),
            _ => None,
        })
    }

    /// The archived notes, in their own seq order.
    pub fn notes(&self) -> impl Iterator<Item = &NoteRecord> + '_ {
        self.lines.iter().filter_map(|line| match line {
            ArchiveLine::Note(n) => Some(n),
            _ => None,
        })
    }

    /// The closed record, if the call ended (the first, if several).
    #[must_use]
    pub fn closed(&self) -> Option<&ClosedRecord> {
        self.lines.iter().find_map(|line| match line {
            ArchiveLine::Closed(c) => Some(c),
            _ => None,
        })
    }

    /// No record of the call was found.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// The segment being read by [`Records`].
struct Current {
    file: Arc<Path>,
    segment: u64,
    plain_len: u64,
    lines: SegmentLines<Stream>,
}

/// Every record of an archive, in order: see [`ArchiveReader::records`].
#[must_use = "an iterator does nothing unless consumed"]
pub struct Records<'a> {
    reader: &'a ArchiveReader,
    next: usize,
    current: Option<Current>,
    torn_tail: Option<TornTail>,
    done: bool,
}

impl fmt::Debug for Records<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records")
            .field("dir", &self.reader.dir)
            .field("file", &self.current.as_ref().map(|c| &c.file))
            .field("torn_tail", &self.torn_tail)
            .finish_non_exhaustive()
    }
}

impl Records<'_> {
    /// The torn tail that ended the iteration, if a crash left one at the
    /// end of the last segment (known once the iteration has ended).
    #[must_use]
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn_tail.as_ref()
    }

    fn open_next(&mut self) -> Result<bool, VerifyError> {
        let segments = &self.reader.segments;
        let Some(segment) = segments.get(self.next) else {
            return Ok(false);
        };
        self.next += 1;
        let Some(opened) =
            open_unless_pruned(&self.reader.dir, segment, Some(&self.reader.bytes_read))?
        else {
            return Ok(true); // pruned since the reader opened: go on
        };
        let plain_len = opened.reader.plain_len();
        let src: Stream = opened
            .reader
            .all()
            .map_err(|e| IoFailure::new(IoOp::Read, &opened.path, &e))?;
        let last = self.next == segments.len();
        self.current = Some(Current {
            file: Arc::from(opened.path),
            segment: segment.index,
            plain_len,
            lines: SegmentLines::new(src, last && !opened.compressed),
        });
        Ok(true)
    }
}

impl Iterator for Records<'_> {
    type Item = Result<LocatedLine, VerifyError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let Some(current) = &mut self.current else {
                match self.open_next() {
                    Ok(true) => continue,
                    Ok(false) => self.done = true,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                continue;
            };
            match current.lines.next_step() {
                None => self.current = None,
                Some(Ok(Step::Line(scanned))) => {
                    return Some(Ok(LocatedLine {
                        file: Arc::clone(&current.file),
                        segment: current.segment,
                        line: scanned.number,
                        offset: scanned.offset,
                        record: scanned.line,
                    }))
                }
                Some(Ok(Step::Torn { number, offset })) => {
                    self.torn_tail = Some(TornTail {
                        file: current.file.to_path_buf(),
                        line: number,
                        offset,
                        bytes: current.plain_len.saturating_sub(offset),
                        truncated: false,
                    });
                    self.done = true;
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(scan_error(e, &current.file)));
                }
            }
        }
        None
    }
}

impl std::iter::FusedIterator for Records<'_> {}

#[cfg(all(test, not(loom)))]
mod tests;
