//! The verifier: reads every segment in order, checks that every line is a
//! record, and reports each call's trail (gaps, duplicates) and a crash's
//! torn tail, which it can cut off on request.

pub(crate) mod report;
pub(crate) mod seqs;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::archive::error::{IoFailure, IoOp};
use crate::archive::read::lines::{SegmentLines, Step};
use crate::archive::read::{list_archive, open_unless_pruned, scan_error, Listing, Opened};
use crate::archive::record::{ArchiveLine, ArchiveRecord};
use crate::archive::spool::fs::lock_dir;
use crate::archive::spool::fs::StdFs;
use crate::archive::spool::retention::for_each_pruned;
use crate::archive::verify::report::{
    CallReport, CallStatus, SegmentReport, TornTail, VerifyReport,
};
use crate::archive::verify::seqs::Trail;

/// How [`verify_with`] treats the archive.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::archive::{verify_with, VerifyOptions};
///
/// let dir = tempfile::tempdir().expect("temp dir");
/// let report = verify_with(dir.path(), &VerifyOptions::new().truncate_torn(true))
///     .expect("an empty archive is readable");
/// assert!(report.is_complete() && report.torn_tail.is_none());
/// # }
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct VerifyOptions {
    truncate_torn: bool,
}

impl VerifyOptions {
    /// Report only (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Cut the torn tail off the last segment, if there is one. Takes the
    /// archive's lock first, so it never cuts a file a running archiver is
    /// writing ([`VerifyError::Locked`]).
    pub fn truncate_torn(mut self, truncate: bool) -> Self {
        self.truncate_torn = truncate;
        self
    }
}

/// Why an archive could not be verified.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The directory does not exist.
    NotFound {
        /// The path given.
        dir: PathBuf,
    },
    /// The path is not a directory.
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// A file could not be read (or truncated).
    Io(IoFailure),
    /// A line that is not a record, other than a crash's torn tail.
    Corrupt {
        /// The segment.
        file: PathBuf,
        /// The line, 1-based.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Truncation was requested while an archiver holds the directory.
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// The last segment changed while it was being verified (an archiver is
    /// writing it); nothing was truncated.
    Changed {
        /// The segment.
        file: PathBuf,
    },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { dir } => {
                write!(f, "archive directory {} does not exist", dir.display())
            }
            Self::NotADirectory { path } => write!(f, "{} is not a directory", path.display()),
            Self::Io(e) => e.fmt(f),
            Self::Corrupt { file, line, reason } => write!(
                f,
                "{}:{line}: corrupt line (not an archive record): {reason}",
                file.display()
            ),
            Self::Locked { dir } => write!(
                f,
                "{} is in use by a running archiver; not truncating",
                dir.display()
            ),
            Self::Changed { file } => write!(
                f,
                "{} changed while it was verified; not truncating",
                file.display()
            ),
        }
    }
}

impl std::error::Error for VerifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<IoFailure> for VerifyError {
    fn from(e: IoFailure) -> Self {
        Self::Io(e)
    }
}

/// For callers in `io::Result` code: a failed operation keeps its kind, a
/// corrupt line is [`io::ErrorKind::InvalidData`]; the message is this
/// error's.
impl From<VerifyError> for io::Error {
    fn from(e: VerifyError) -> Self {
        let kind = match &e {
            VerifyError::Io(failure) => failure.kind,
            VerifyError::NotFound { .. } => io::ErrorKind::NotFound,
            VerifyError::NotADirectory { .. } => io::ErrorKind::NotADirectory,
            VerifyError::Corrupt { .. } => io::ErrorKind::InvalidData,
            VerifyError::Locked { .. } => io::ErrorKind::WouldBlock,
            VerifyError::Changed { .. } => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Verifies the archive in `dir`: every segment, every line; per call,
/// events, seq range, gaps and duplicates; a torn tail at the end of the last
/// segment is reported, not an error.
///
/// Plain and compressed segments alike; every line's checksum is checked.
/// Files that are not segments are listed in
/// [`ignored`](VerifyReport::ignored) and otherwise left alone. Verifying an
/// archive that is being written may report the line being written as torn.
/// Streams each segment a line at a time, and keeps per call its seqs as
/// runs (a few words for a whole trail, more only for its gaps and
/// duplicates): memory does not grow with the archive's size.
///
/// # Errors
///
/// [`VerifyError::NotFound`] / [`VerifyError::NotADirectory`] for a bad
/// path, [`VerifyError::Io`] if a segment cannot be read,
/// [`VerifyError::Corrupt`] (naming file and line) for a line that is not a
/// record (or whose checksum does not match its bytes) and not a torn tail.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::archive::{verify, VerifyError};
///
/// let dir = tempfile::tempdir().expect("temp dir");
/// std::fs::write(
///     dir.path().join("audit-000000000001.jsonl"),
///     "{\"call_id\":\"c\",\"seq\":0,\"at\":\"2025-11-25T09:30:00Z\",\"type\":\"call_started\",\
///      \"agent_id\":null,\"details\":{},\"reason\":\"evicted\"}\nnot json\n{\"call_id\":\"c\"",
/// )
/// .expect("written");
/// match verify(dir.path()) {
///     Err(VerifyError::Corrupt { line, .. }) => assert_eq!(line, 2),
///     other => panic!("{other:?}"),
/// }
/// # }
/// ```
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport, VerifyError> {
    scan(dir.as_ref(), &VerifyOptions::default(), |_| {})
}

/// [`verify`] with options (truncating the torn tail).
///
/// # Errors
///
/// As [`verify`]; with truncation also [`VerifyError::Locked`] while an
/// archiver holds the directory, [`VerifyError::Changed`] if the segment grew
/// meanwhile, [`VerifyError::Io`] if truncating fails.
pub fn verify_with(
    dir: impl AsRef<Path>,
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    scan(dir.as_ref(), options, |_| {})
}

/// Reads every record of the archive in order, handing each to `f`, and
/// returns the same report as [`verify`].
///
/// # Errors
///
/// As [`verify`]; `f` has seen the records before the error.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// let dir = tempfile::tempdir().expect("temp dir");
/// let mut seqs = Vec::new();
/// let report = callring::archive::read_archive(dir.path(), |r| seqs.push(r.seq))
///     .expect("readable");
/// assert_eq!((report.records, seqs.len()), (0, 0));
/// # }
/// ```
pub fn read_archive(
    dir: impl AsRef<Path>,
    mut f: impl FnMut(ArchiveRecord),
) -> Result<VerifyReport, VerifyError> {
    scan(dir.as_ref(), &VerifyOptions::default(), |line| {
        if let ArchiveLine::Event(record) = line {
            f(record);
        }
    })
}

/// [`read_archive`] with every line: events and the calls' closed records.
///
/// # Errors
///
/// As [`verify`]; `f` has seen the lines before the error.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::archive::{read_archive_lines, ArchiveConfig, ArchiveLine, Archiver};
/// use callring::call::CallState;
///
/// let dir = tempfile::tempdir().expect("temp dir");
/// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
/// let call = CallState::builder("call-1").audit_archive(archiver.sink("call-1")).build();
/// let _ = call.end(); // writes the closed record
/// archiver.stop().expect("clean stop");
/// let mut closed = Vec::new();
/// read_archive_lines(dir.path(), |line| {
///     if let ArchiveLine::Closed(c) = line {
///         closed.push((c.call_id, c.issued));
///     }
/// })
/// .expect("readable");
/// assert_eq!(closed, [("call-1".to_string(), 0)]);
/// # }
/// ```
pub fn read_archive_lines(
    dir: impl AsRef<Path>,
    f: impl FnMut(ArchiveLine),
) -> Result<VerifyReport, VerifyError> {
    scan(dir.as_ref(), &VerifyOptions::default(), f)
}

fn scan(
    dir: &Path,
    options: &VerifyOptions,
    mut f: impl FnMut(ArchiveLine),
) -> Result<VerifyReport, VerifyError> {
    let Listing {
        segments, ignored, ..
    } = list_archive(dir)?;
    let _lock = if options.truncate_torn {
        Some(lock_dir(dir).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => VerifyError::Locked {
                dir: dir.to_path_buf(),
            },
            _ => IoFailure::new(IoOp::Lock, dir, &e).into(),
        })?)
    } else {
        None
    };

    let mut trails: HashMap<String, Trail> = HashMap::new();
    let mut reports = Vec::with_capacity(segments.len());
    let mut torn_tail = None;
    let mut records = 0;
    let mut events = 0;
    for (i, segment) in segments.iter().enumerate() {
        let Some(Opened {
            reader,
            path,
            compressed,
        }) = open_unless_pruned(dir, segment, None)?
        else {
            continue; // pruned since it was listed: the manifest has it
        };
        let plain_len = reader.plain_len();
        let bytes = if compressed {
            fs::metadata(&path)
                .map_err(|e| IoFailure::new(IoOp::Read, &path, &e))?
                .len()
        } else {
            plain_len
        };
        let src = reader
            .all()
            .map_err(|e| IoFailure::new(IoOp::Read, &path, &e))?;
        // A crash's torn tail can end only the last segment, and only a
        // plain one (a compressed segment was sealed whole).
        let tail_allowed = i + 1 == segments.len() && !compressed;
        let mut tail = None;
        let mut in_segment = 0;
        for step in SegmentLines::new(src, tail_allowed) {
            let scanned = match step.map_err(|e| scan_error(e, &path))? {
                Step::Line(scanned) => scanned,
                Step::Torn { number, offset } => {
                    tail = Some((number, offset));
                    break;
                }
            };
            let record = scanned.line;
            let call_id = record.call_id();
            let trail = match trails.get_mut(call_id) {
                Some(trail) => trail,
                None => trails.entry(call_id.to_owned()).or_default(),
            };
            match &record {
                ArchiveLine::Event(event) => {
                    trail.event(event.seq, event.reason);
                    events += 1;
                }
                ArchiveLine::Closed(closed) => trail.closed(closed.issued),
                ArchiveLine::Note(_) => trail.note(),
            }
            in_segment += 1;
            f(record);
        }
        records += in_segment;
        reports.push(SegmentReport {
            file: path.clone(),
            records: in_segment,
            bytes,
            compressed,
            plain_bytes: plain_len,
        });
        if let Some((line, offset)) = tail {
            let truncated = options.truncate_torn && truncate(&path, offset, plain_len)?;
            torn_tail = Some(TornTail {
                file: path,
                line,
                offset,
                bytes: plain_len - offset,
                truncated,
            });
        }
    }
    // Retention: what the pruning manifest says each removed segment held
    // accounts for those seqs of the calls still in the archive (pruned,
    // not gaps), and a pruned closed record still says how many seqs its
    // call issued. Read after the segments, one line at a time, so a
    // segment pruned during the scan is counted here. Calls with no record
    // left are not listed (the report would grow with every call ever
    // pruned); the pruned segments' counts are.
    let (mut pruned_segments, mut pruned_records, mut pruned_through) = (Vec::new(), 0, None);
    for_each_pruned(&StdFs, dir, |segment| {
        for (call_id, call) in &segment.calls {
            let Some(trail) = trails.get_mut(call_id.as_str()) else {
                continue;
            };
            for &range in &call.seqs {
                trail.pruned(range);
            }
            if let Some(issued) = call.issued {
                trail.closed(issued);
            }
        }
        pruned_segments.push(segment.segment);
        pruned_records += segment.records;
        pruned_through = pruned_through.max(segment.last_at);
    })?;
    pruned_segments.sort_unstable();
    let calls: BTreeMap<String, CallReport> = trails
        .into_iter()
        .map(|(id, trail)| (id, trail.judge()))
        .collect();
    let count = |status| calls.values().filter(|c| c.status == status).count() as u64;
    Ok(VerifyReport {
        dir: dir.to_path_buf(),
        segments: reports,
        ignored,
        records,
        events,
        complete: count(CallStatus::Complete),
        open: count(CallStatus::Open),
        incomplete: count(CallStatus::Incomplete),
        duplicated: count(CallStatus::Duplicated),
        calls,
        torn_tail,
        pruned_segments,
        pruned_records,
        pruned_through,
    })
}

/// Cuts `path` (read as `len` bytes) back to `start` and fsyncs it, unless it
/// changed since it was read.
fn truncate(path: &Path, start: u64, len: u64) -> Result<bool, VerifyError> {
    let io = |op| move |e: io::Error| VerifyError::Io(IoFailure::new(op, path, &e));
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(IoOp::Open))?;
    if file.metadata().map_err(io(IoOp::Read))?.len() != len {
        return Err(VerifyError::Changed {
            file: path.to_path_buf(),
        });
    }
    file.set_len(start).map_err(io(IoOp::Truncate))?;
    file.sync_all().map_err(io(IoOp::Sync))?;
    Ok(true)
}
