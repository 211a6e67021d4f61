//! What can go wrong while shipping or verifying in the database.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::archive::error::IoFailure;

/// Why shipping (or verifying in the database) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShipError {
    /// A setting is out of range.
    InvalidConfig {
        /// The setting.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The connection string does not parse.
    Url {
        /// The parser's message.
        reason: String,
    },
    /// The database refused or failed: connecting (opening), a statement, a
    /// commit.
    Database {
        /// PostgreSQL's SQLSTATE, when the server sent one (`57P01`: the
        /// backend was terminated); SQLite's extended result code.
        code: Option<String>,
        /// The message.
        message: String,
    },
    /// Another shipper holds this host's lock (one shipper per `host_id`).
    HostBusy {
        /// The host.
        host_id: String,
    },
    /// A segment of the spool could not be read.
    Spool(IoFailure),
    /// A line of the spool's durable prefix is not a record. Shipping stops
    /// there (and retries) until the segment is repaired.
    CorruptSpool {
        /// The segment.
        file: PathBuf,
        /// The line's byte offset.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The thread could not be started.
    Spawn {
        /// The operating system's message.
        message: String,
    },
    /// The shipper's thread panicked (a bug).
    Panicked,
    /// The shipper's thread is gone.
    NotRunning,
    /// A wait did not finish in time.
    Timeout {
        /// How long the caller waited.
        waited: Duration,
    },
    /// Stop could not ship everything durable within the stop timeout.
    GaveUp {
        /// Records durable in the spool but not in the database; a later
        /// shipper on the same spool resumes with them.
        lag_records: u64,
        /// The last error, if one kept it from finishing.
        last_error: Option<Box<ShipError>>,
    },
}

impl fmt::Display for ShipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig { setting, reason } => {
                write!(f, "invalid shipper setting `{setting}`: {reason}")
            }
            Self::Url { reason } => write!(f, "invalid PostgreSQL connection string: {reason}"),
            Self::Database { code, message } => match code {
                Some(code) => write!(f, "database error {code}: {message}"),
                None => write!(f, "database: {message}"),
            },
            Self::HostBusy { host_id } => write!(
                f,
                "another shipper is shipping host {host_id:?} (one shipper per host id)"
            ),
            Self::Spool(e) => e.fmt(f),
            Self::CorruptSpool {
                file,
                offset,
                reason,
            } => write!(
                f,
                "{} byte {offset}: corrupt line in the durable spool: {reason}",
                file.display()
            ),
            Self::Spawn { message } => write!(f, "cannot start the shipper thread: {message}"),
            Self::Panicked => f.write_str("the shipper thread panicked"),
            Self::NotRunning => f.write_str("the shipper is not running"),
            Self::Timeout { waited } => write!(f, "shipping did not catch up within {waited:?}"),
            Self::GaveUp {
                lag_records,
                last_error,
            } => {
                write!(
                    f,
                    "shipper gave up at stop with {lag_records} durable records not shipped"
                )?;
                match last_error {
                    Some(e) => write!(f, " ({e})"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for ShipError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spool(e) => Some(e),
            _ => None,
        }
    }
}
