//! Taking records from the rings: the sinks, the bounded queue, the thread
//! that writes them to the local spool or to SQLite, and [`Archive`], the
//! handle both archivers share.

pub(crate) mod feed;
pub(crate) mod worker;

use std::fmt;
use std::time::Duration;

use crate::archive::error::{ArchiveError, ArchiveStatus, IoFailure};
use crate::archive::stats::ArchiveStats;
use feed::{ArchiveSink, Durability};
use worker::Core;

/// An archiver's handle: a background thread that makes every record handed
/// to its sinks durable where `K` says, the JSON Lines spool
/// ([`Archiver`](crate::archive::Archiver), `K` =
/// [`JsonLines`](crate::archive::JsonLines)) or an SQLite database
/// (`SqliteArchiver`, feature `sqlite`).
///
/// Everything but starting and where the records go is the same for both
/// and lives here: sinks, flush, durability, counters, status, stop.
/// Dropping the handle stops the archiver too, discarding the outcome.
pub struct Archive<K> {
    core: Core,
    /// Where the records go (dropped after `core`, so a directory lock
    /// outlives the worker).
    kind: K,
}

impl<K: fmt::Debug> fmt::Debug for Archive<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Archive")
            .field("kind", &self.kind)
            .field("status", &self.core.status())
            .finish_non_exhaustive()
    }
}

impl<K> Archive<K> {
    pub(crate) fn new(core: Core, kind: K) -> Self {
        Self { core, kind }
    }

    pub(crate) fn kind(&self) -> &K {
        &self.kind
    }

    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    /// The archive's handle for call `call_id`: pass it to
    /// [`CallStateBuilder::audit_archive`](crate::call::CallStateBuilder::audit_archive)
    /// (write-through: every event archived as it is logged) or
    /// [`CallStateBuilder::audit_sink`](crate::call::CallStateBuilder::audit_sink)
    /// (eviction mode), and to
    /// [`CallStateBuilder::notes_archive`](crate::call::CallStateBuilder::notes_archive)
    /// to archive the call's notes as they leave its ring.
    #[must_use]
    pub fn sink(&self, call_id: &str) -> ArchiveSink {
        self.core.sink(call_id)
    }

    /// Waits until every event handed over before this call is durable
    /// (written and fsynced, or committed).
    ///
    /// While a fault persists this waits for it to clear; use
    /// [`flush_timeout`](Archive::flush_timeout) to bound the wait.
    ///
    /// # Errors
    ///
    /// [`ArchiveError::NotRunning`] if the archiver's thread is gone.
    pub fn flush(&self) -> Result<(), ArchiveError> {
        self.core.flush(None)
    }

    /// [`flush`](Archive::flush), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`ArchiveError::Timeout`] if the flush did not finish in time (the
    /// events stay queued and are archived later);
    /// [`ArchiveError::NotRunning`] if the archiver's thread is gone.
    pub fn flush_timeout(&self, timeout: Duration) -> Result<(), ArchiveError> {
        self.core.flush(Some(timeout))
    }

    /// How many records were handed over and how many of the first are
    /// durable (the durable watermark). Takes one uncontended lock.
    #[must_use]
    pub fn durability(&self) -> Durability {
        self.core.shared().durability()
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> ArchiveStats {
        self.core.shared().stats()
    }

    /// Running normally, retrying a fault (with the error), or stopped.
    #[must_use]
    pub fn status(&self) -> ArchiveStatus {
        self.core.status()
    }

    /// The most recent failure, if any ever happened (kept after recovery).
    #[must_use]
    pub fn last_error(&self) -> Option<IoFailure> {
        self.core.shared().last_error()
    }

    /// Stops the archiver: later hand-offs are refused (the rings keep those
    /// events), every event already handed over is made durable, and the
    /// thread is joined.
    ///
    /// # Errors
    ///
    /// [`ArchiveError::GaveUp`] if a fault outlasted
    /// [`ArchiveConfig::stop_timeout`](crate::archive::ArchiveConfig::stop_timeout)
    /// (with the count of events not known to be durable),
    /// [`ArchiveError::Panicked`] if the thread panicked.
    pub fn stop(mut self) -> Result<ArchiveStats, ArchiveError> {
        self.core.stop()
    }
}
