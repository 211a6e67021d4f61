//! Errors and faults of the archive layer: what failed, on which file, what
//! the archiver tells the host's fault callback, and whether it is retrying.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::archive::stats::ArchiveStats;

/// The file operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoOp {
    /// Creating the archive directory.
    CreateDir,
    /// Locking the archive directory against a second archiver.
    Lock,
    /// Listing the archive directory.
    ListDir,
    /// Reading a segment.
    Read,
    /// Opening (or creating) a segment.
    Open,
    /// Appending records to a segment.
    Write,
    /// Cutting a segment back to its last good length.
    Truncate,
    /// `fsync` of a segment.
    Sync,
    /// `fsync` of the archive directory (makes a new segment's name durable).
    SyncDir,
    /// A statement or commit on an SQLite database.
    Sqlite,
    /// Renaming a file written aside into place.
    Rename,
    /// Removing a file (a compressed segment's plain copy, a pruned one).
    Remove,
    /// Compressing a sealed segment (or finding it changed meanwhile).
    Compress,
    /// Reading a sealed segment to write its index.
    Index,
}

impl fmt::Display for IoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoOp::CreateDir => "create directory",
            IoOp::Lock => "lock directory",
            IoOp::ListDir => "list directory",
            IoOp::Read => "read",
            IoOp::Open => "open",
            IoOp::Write => "write to",
            IoOp::Truncate => "truncate",
            IoOp::Sync => "fsync",
            IoOp::SyncDir => "fsync directory",
            IoOp::Sqlite => "use SQLite database",
            IoOp::Rename => "rename",
            IoOp::Remove => "remove",
            IoOp::Compress => "compress",
            IoOp::Index => "index",
        })
    }
}

/// One failed file operation: what, where, and the operating system's error.
///
/// `Clone` (unlike [`io::Error`]) so the archiver can keep the last one for
/// [`Archiver::last_error`](super::Archiver::last_error) and hand copies to
/// the fault callback.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use std::io;
/// use callring::archive::{IoFailure, IoOp};
///
/// let enospc = io::Error::from_raw_os_error(28);
/// let failure = IoFailure::new(IoOp::Write, "/var/audit/audit-000000000001.jsonl", &enospc);
/// assert_eq!(failure.os_error, Some(28));
/// assert!(failure.to_string().starts_with("cannot write to /var/audit/audit-000000000001.jsonl: "));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoFailure {
    /// The operation.
    pub op: IoOp,
    /// The file or directory it was on.
    pub path: PathBuf,
    /// The error's kind (`StorageFull`, `PermissionDenied`, ...).
    pub kind: io::ErrorKind,
    /// The raw OS error code, if any (28 is `ENOSPC` on Linux).
    pub os_error: Option<i32>,
    /// The error's message.
    pub message: String,
}

impl IoFailure {
    /// Records a failed operation.
    #[must_use]
    pub fn new(op: IoOp, path: impl Into<PathBuf>, error: &io::Error) -> Self {
        Self {
            op,
            path: path.into(),
            kind: error.kind(),
            os_error: error.raw_os_error(),
            message: error.to_string(),
        }
    }

    /// Whether this is "no space left on device" (or a quota exceeded).
    #[must_use]
    pub fn is_storage_full(&self) -> bool {
        matches!(
            self.kind,
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        )
    }
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.op,
            self.path.display(),
            self.message
        )
    }
}

impl std::error::Error for IoFailure {}

/// Why an archiver could not start, flush or stop cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArchiveError {
    /// A setting of [`ArchiveConfig`](super::ArchiveConfig) is out of range.
    InvalidConfig {
        /// The setting.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The archive could not be opened.
    Io(IoFailure),
    /// Another archiver (in this or another process) holds the directory.
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// The archiver's thread is gone (it gave up at stop, or panicked).
    NotRunning,
    /// A flush did not finish in time (the archiver is retrying a fault;
    /// see [`Archiver::status`](super::Archiver::status)).
    Timeout {
        /// How long the caller waited.
        waited: Duration,
    },
    /// Stop kept failing for longer than
    /// [`ArchiveConfig::stop_timeout`](super::ArchiveConfig::stop_timeout):
    /// the archiver gave up, and `lost` events are not known to be durable.
    GaveUp {
        /// The last error.
        error: IoFailure,
        /// Events taken from rings that are not known to be on disk.
        lost: u64,
        /// The final counters.
        stats: Box<ArchiveStats>,
    },
    /// The archiver's thread panicked (a bug, or a panicking fault callback).
    Panicked,
    /// The archiver's thread could not be started.
    Spawn {
        /// The operating system's message.
        message: String,
    },
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig { setting, reason } => {
                write!(f, "invalid archive setting `{setting}`: {reason}")
            }
            Self::Io(e) => e.fmt(f),
            Self::Locked { dir } => write!(
                f,
                "archive directory {} is in use by another archiver",
                dir.display()
            ),
            Self::NotRunning => f.write_str("the archiver is not running"),
            Self::Timeout { waited } => {
                write!(f, "archive flush did not finish within {waited:?}")
            }
            Self::GaveUp { error, lost, .. } => write!(
                f,
                "archiver gave up at stop: {lost} events are not known to be durable ({error})"
            ),
            Self::Panicked => f.write_str("the archiver thread panicked"),
            Self::Spawn { message } => write!(f, "cannot start the archiver thread: {message}"),
        }
    }
}

impl std::error::Error for ArchiveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) | Self::GaveUp { error: e, .. } => Some(e),
            _ => None,
        }
    }
}

impl From<IoFailure> for ArchiveError {
    fn from(e: IoFailure) -> Self {
        Self::Io(e)
    }
}

/// What the archiver tells the host's fault callback.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultEvent {
    /// An operation failed; the archiver waits `retry_in`, then retries.
    /// Ring writers are back-pressured meanwhile; nothing is dropped.
    Failed {
        /// What failed.
        error: IoFailure,
        /// Failed attempts so far for this operation (1 on the first).
        attempt: u64,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
    /// The operation succeeded after `attempts` failures.
    Recovered {
        /// Failed attempts before the success.
        attempts: u64,
    },
    /// At start, the torn tail a crash left in the previous run's last
    /// segment (a partial line that was never fsynced) was cut off.
    TornTailRepaired {
        /// The segment.
        file: PathBuf,
        /// The bytes cut.
        bytes: u64,
    },
    /// Compressing or pruning a sealed segment failed; the sealer retries
    /// after `retry_in`. Ring writers are not affected, and every record
    /// stays readable (the plain segment is kept until its compressed copy
    /// is in place).
    Sealing {
        /// The segment being compressed (`None` while pruning).
        segment: Option<u64>,
        /// What failed.
        error: IoFailure,
        /// Failed attempts in a row (1 on the first).
        attempt: u64,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
}

/// The host's fault callback.
pub(crate) type FaultCallback = dyn Fn(&FaultEvent) + Send + Sync;

/// Whether the archiver is keeping up or retrying a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArchiveStatus {
    /// Writing normally.
    Running,
    /// An operation keeps failing; the archiver retries with backoff and ring
    /// writers wait once the queue is full.
    Retrying {
        /// The latest failure.
        error: IoFailure,
        /// Failed attempts so far.
        attempts: u64,
    },
    /// The archiver's thread has exited.
    Stopped,
}
