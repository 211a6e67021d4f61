//! The verifier: reads every segment in order, checks that every line is a
//! record, and reports each call's trail (gaps, duplicates) and a crash's
//! torn tail, which it can cut off on request.

pub(crate) mod report;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::archive::error::{IoFailure, IoOp};
use crate::archive::record::{
    parse_line, sort_segments, torn_tail_start, ArchiveLine, ArchiveRecord, Origin,
};
use crate::archive::spool::fs::lock_dir;
use crate::archive::verify::report::{
    CallReport, CallStatus, SegmentReport, TornTail, VerifyReport,
};

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

/// Verifies the archive in `dir`: every segment, every line; per call,
/// events, seq range, gaps and duplicates; a torn tail at the end of the last
/// segment is reported, not an error.
///
/// Files that are not segments are listed in
/// [`ignored`](VerifyReport::ignored) and otherwise left alone. Verifying an
/// archive that is being written may report the line being written as torn.
/// Reads one segment at a time into memory, and keeps 8 bytes per record
/// (its seq) to find gaps and duplicates.
///
/// # Errors
///
/// [`VerifyError::NotFound`] / [`VerifyError::NotADirectory`] for a bad
/// path, [`VerifyError::Io`] if a segment cannot be read,
/// [`VerifyError::Corrupt`] (naming file and line) for a line that is not a
/// record and not a torn tail.
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

/// One call's seqs while scanning.
#[derive(Default)]
struct Trail {
    seqs: Vec<u64>,
    closed: Vec<u64>,
    logged: u64,
    drained: u64,
    /// Note lines: counted, never judged (they are not audit events).
    notes: u64,
}

fn scan(
    dir: &Path,
    options: &VerifyOptions,
    mut f: impl FnMut(ArchiveLine),
) -> Result<VerifyReport, VerifyError> {
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
    let (segments, ignored) = sort_segments(dir, names);
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
        let path = &segment.path;
        let bytes = read_plain(segment).map_err(|e| IoFailure::new(IoOp::Read, path, &e))?;
        let is_last = i + 1 == segments.len();
        let tail = if is_last {
            torn_tail_start(&bytes)
        } else {
            None
        };
        let body = &bytes[..tail.unwrap_or(bytes.len())];
        let body = body.strip_suffix(b"\n").unwrap_or(body);
        let mut in_segment = 0;
        if !body.is_empty() {
            for (n, line) in body.split(|&b| b == b'\n').enumerate() {
                let record = parse_line(line).map_err(|e| VerifyError::Corrupt {
                    file: path.clone(),
                    line: n as u64 + 1,
                    reason: e.to_string(),
                })?;
                let call_id = record.call_id();
                let trail = match trails.get_mut(call_id) {
                    Some(trail) => trail,
                    None => trails.entry(call_id.to_owned()).or_default(),
                };
                match &record {
                    ArchiveLine::Event(event) => {
                        trail.seqs.push(event.seq);
                        match event.reason {
                            Origin::Drained => trail.drained += 1,
                            Origin::Logged => trail.logged += 1,
                            Origin::Evicted => {}
                        }
                        events += 1;
                    }
                    ArchiveLine::Closed(closed) => trail.closed.push(closed.issued),
                    ArchiveLine::Note(_) => trail.notes += 1,
                }
                in_segment += 1;
                f(record);
            }
        }
        records += in_segment;
        reports.push(SegmentReport {
            file: path.clone(),
            records: in_segment,
            bytes: bytes.len() as u64,
        });
        if let Some(start) = tail {
            let line = bytes[..start].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            let truncated = options.truncate_torn && truncate(path, start, bytes.len())?;
            torn_tail = Some(TornTail {
                file: path.clone(),
                line,
                offset: start as u64,
                bytes: (bytes.len() - start) as u64,
                truncated,
            });
        }
    }
    let calls: BTreeMap<String, CallReport> = trails
        .into_iter()
        .map(|(id, t)| {
            let mut report = CallReport::from_seqs(t.seqs, &t.closed, t.logged, t.drained);
            report.notes = t.notes;
            (id, report)
        })
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
    })
}

/// A segment's plain bytes, decompressed if need be.
fn read_plain(segment: &crate::archive::record::SegmentPath) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    crate::archive::spool::zst::SegmentReader::open(&segment.path, segment.compressed)?
        .all()?
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Cuts `path` (read as `len` bytes) back to `start` and fsyncs it, unless it
/// changed since it was read.
fn truncate(path: &Path, start: usize, len: usize) -> Result<bool, VerifyError> {
    let io = |op| move |e: io::Error| VerifyError::Io(IoFailure::new(op, path, &e));
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(IoOp::Open))?;
    if file.metadata().map_err(io(IoOp::Read))?.len() != len as u64 {
        return Err(VerifyError::Changed {
            file: path.to_path_buf(),
        });
    }
    file.set_len(start as u64).map_err(io(IoOp::Truncate))?;
    file.sync_all().map_err(io(IoOp::Sync))?;
    Ok(true)
}
