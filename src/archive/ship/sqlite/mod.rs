//! The SQLite archive (feature `sqlite`): the same records in a table keyed
//! by (call_id, seq), written by a thread of its own (or shipped from a
//! spool) through the SQLite [`Store`] (`store.rs`), which
//! [`verify_sqlite`] reads back. A rusqlite `Connection` is
//! `Send` but not `Sync`: it lives on that thread, and ring writers reach it
//! only through the bounded channel, as with the JSON Lines archiver.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::archive::config::ArchiveConfig;
use crate::archive::error::{ArchiveError, IoFailure, IoOp};
use crate::archive::record::Origin;
use crate::archive::ship::shipper::{ShipError, Shipper, ShipperConfig};
use crate::archive::ship::{Batch, Store};
use crate::archive::stats::add;
use crate::archive::writer::feed::Shared;
use crate::archive::writer::worker::{decode_logged, Core, Destination, Entry};
use crate::archive::writer::Archive;
use crate::archive::Archiver;

mod store;

pub use store::verify_sqlite;
use store::SqliteStore;

/// The queryable alternative to the JSON Lines [`Archiver`](crate::archive::Archiver):
/// every event handed to its sinks becomes a row of table `audit_events`
/// (`call_id`, `seq`, `at` (RFC 3339), `type`, `agent_id`, `details` (JSON),
/// `reason`), primary key (`call_id`, `seq`); every ended call's closed
/// record a row of `audit_calls` (`call_id`, `issued`, `closed_at`), so a
/// call is complete when it has a row there and `issued` rows in
/// `audit_events`.
///
/// Group commit as for the JSON Lines archive: one transaction per
/// [`fsync_every`](ArchiveConfig::fsync_every) events or
/// [`fsync_interval`](ArchiveConfig::fsync_interval), and on flush and stop;
/// the database runs in WAL mode with `synchronous = FULL`, so a committed
/// transaction survives power loss. A row whose key is already present is
/// not inserted again and is counted in [`ArchiveStats::duplicates`](crate::archive::ArchiveStats::duplicates). A
/// failed transaction is rolled back and retried whole, with backoff, as
/// the JSON Lines archiver does. `segment_bytes` and `fs` do not apply.
///
/// It keeps audit records only: its sinks refuse notes
/// ([`notes_archive`](crate::call::CallStateBuilder::notes_archive)), which
/// the call then keeps for
/// [`take_refused_notes`](crate::call::CallState::take_refused_notes)
/// (counted in [`ArchiveStats::refused`](crate::archive::ArchiveStats::refused)).
/// Archive notes to the JSON Lines archive.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::archive::{ArchiveConfig, SqliteArchiver};
/// use callring::call::{AuditEventType, CallState, Details, Limits};
///
/// let dir = tempfile::tempdir().expect("temp dir");
/// let path = dir.path().join("audit.sqlite");
/// let archiver = SqliteArchiver::start(&path, ArchiveConfig::default()).expect("opens");
/// let call = CallState::builder("call-3")
///     .limits(Limits::new(100, 1).expect("valid"))
///     .audit_archive(archiver.sink("call-3"))
///     .build();
/// for _ in 0..3 {
///     call.log_event(&AuditEventType::DataAccessed, None, &Details::new()).expect("archived");
/// }
/// let _ = call.end(); // the closed record
/// let stats = archiver.stop().expect("clean stop");
/// assert_eq!((stats.synced, stats.duplicates), (4, 0));
///
/// let db = rusqlite::Connection::open(&path).expect("opens");
/// let rows: i64 = db
///     .query_row("SELECT count(*) FROM audit_events WHERE call_id = 'call-3'", [], |r| r.get(0))
///     .expect("query");
/// assert_eq!(rows, 3);
/// # }
/// ```
pub type SqliteArchiver = Archive<Sqlite>;

/// Where a [`SqliteArchiver`] writes: one SQLite database file.
#[derive(Debug)]
pub struct Sqlite {
    path: PathBuf,
}

impl Archive<Sqlite> {
    /// Opens (creating if needed) the database at `path`, creates the table
    /// if missing, and starts the archiver's thread.
    ///
    /// # Errors
    ///
    /// [`ArchiveError::InvalidConfig`] for an out-of-range setting,
    /// [`ArchiveError::Io`] if the database cannot be opened or set up,
    /// [`ArchiveError::Spawn`] if the thread cannot start.
    pub fn start(path: impl Into<PathBuf>, config: ArchiveConfig) -> Result<Self, ArchiveError> {
        config.validate()?;
        let path = path.into();
        let store = SqliteStore::open(&path).map_err(|e| sqlite_failure(&path, &e))?;
        let shared = Arc::new(
            Shared::new(
                config.on_fault.clone(),
                config.channel_capacity,
                config.full_queue,
            )
            .refusing_notes(),
        );
        let table = Table {
            store,
            path: path.clone(),
            shared: Arc::clone(&shared),
            pending: Batch::default(),
            oldest: None,
        };
        let core = Core::spawn("callring-sqlite-archiver", table, &config, shared)?;
        Ok(Archive::new(core, Sqlite { path }))
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.kind().path
    }
}

/// An SQLite error as an [`IoFailure`], with the closest `io::ErrorKind`.
pub(super) fn sqlite_failure(path: &Path, error: &rusqlite::Error) -> IoFailure {
    use rusqlite::ErrorCode;
    let kind = match error.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => io::ErrorKind::StorageFull,
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => io::ErrorKind::PermissionDenied,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => io::ErrorKind::WouldBlock,
        _ => io::ErrorKind::Other,
    };
    IoFailure::new(IoOp::Sqlite, path, &io::Error::new(kind, error.to_string()))
}

impl Shipper {
    /// Starts shipping `archiver`'s spool into the SQLite database at
    /// `path` (created if missing, with the [`SqliteArchiver`]'s tables and
    /// a progress row), exactly once, as `Shipper::start` ships it
    /// into PostgreSQL: each batch's rows and the progress row commit in one
    /// transaction, and the shipper resumes from that row. For one host's
    /// queryable copy of its durable spool; check it with
    /// [`verify_sqlite`].
    ///
    /// The file holds one host's records (the host id names the shipper in
    /// its status only); ship one spool into it at a time. Its keys absorb
    /// a resend as PostgreSQL's do, but SQLite keeps no spool positions to
    /// tell a resend from a real duplicate: the second copy of a seq is
    /// counted in [`ShipperStats::already_present`](crate::archive::ShipperStats::already_present)
    /// and never reported as duplicated.
    ///
    /// # Errors
    ///
    /// [`ShipError::InvalidConfig`], [`ShipError::Spool`] if the spool's id
    /// cannot be written, [`ShipError::Spawn`]. Opening the database happens
    /// on the shipper's thread and is retried (see
    /// [`status`](Shipper::status)).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::archive::{verify_sqlite, ArchiveConfig, Archiver, Shipper, ShipperConfig};
    /// use callring::call::{AuditEventType, CallState, Details};
    ///
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let spool = dir.path().join("spool");
    /// let db = dir.path().join("audit.sqlite");
    /// let archiver = Archiver::start(&spool, ArchiveConfig::default()).expect("opens");
    /// let shipper = Shipper::start_sqlite(&archiver, &db, ShipperConfig::new("host-1"))
    ///     .expect("starts");
    ///
    /// let call = CallState::builder("call-1").audit_archive(archiver.sink("call-1")).build();
    /// call.log_event(&AuditEventType::CallStarted, None, &Details::new()).expect("archived");
    /// let _ = call.end();
    ///
    /// archiver.stop().expect("local archive durable");
    /// let stats = shipper.stop().expect("everything shipped");
    /// assert_eq!(stats.records, 2); // the event and the closed record
    /// assert!(verify_sqlite(&db).expect("verified").is_complete());
    /// # }
    /// ```
    pub fn start_sqlite(
        archiver: &Archiver,
        path: impl Into<PathBuf>,
        config: ShipperConfig,
    ) -> Result<Self, ShipError> {
        let path = path.into();
        Self::spawn(archiver, config, move || Ok(SqliteStore::open(&path)?))
    }
}

impl From<rusqlite::Error> for ShipError {
    fn from(e: rusqlite::Error) -> Self {
        let code = match &e {
            rusqlite::Error::SqliteFailure(f, _) => Some(format!("SQLite {}", f.extended_code)),
            _ => None,
        };
        Self::Database {
            code,
            message: e.to_string(),
        }
    }
}

/// The table's backend, on the archiver's thread.
struct Table {
    store: SqliteStore,
    path: PathBuf,
    shared: Arc<Shared>,
    /// Records taken since the last commit.
    pending: Batch,
    oldest: Option<Instant>,
}

impl Destination for Table {
    fn push(&mut self, entry: Entry) {
        // Not from a spool: no byte offsets.
        match entry {
            Entry::Logged { call_id, bytes } => {
                let event = decode_logged(&bytes);
                self.pending
                    .push_event(call_id.to_string(), Origin::Logged, &event, 0);
            }
            Entry::Event {
                call_id,
                reason,
                event,
            } => self
                .pending
                .push_event(call_id.to_string(), reason, &event, 0),
            Entry::Closed {
                call_id,
                issued,
                at,
            } => self.pending.push_closed(call_id.to_string(), issued, at, 0),
            // Never sent: this archiver's sinks refuse notes
            // (`Shared::refusing_notes`). Counted if one ever got here.
            Entry::Note { .. } => add(&self.shared.counters.lost, 1),
        }
        self.oldest.get_or_insert_with(Instant::now);
    }

    fn write(&mut self) -> Result<(), IoFailure> {
        // Nothing reaches the database before the transaction.
        Ok(())
    }

    fn sync(&mut self) -> Result<(), IoFailure> {
        let records = self.pending.records();
        if records == 0 {
            return Ok(());
        }
        // Rolled back on error (by drop), and retried whole.
        let outcome = self
            .store
            .write(&self.pending, None)
            .map_err(|e| sqlite_failure(&self.path, &e))?;
        let counters = &self.shared.counters;
        add(&counters.synced, records);
        add(&counters.duplicates, outcome.already_present);
        add(&counters.fsyncs, 1);
        self.pending = Batch::default();
        self.oldest = None;
        Ok(())
    }

    fn unsynced(&self) -> u64 {
        self.pending.records()
    }

    fn oldest_unsynced(&self) -> Option<Instant> {
        self.oldest
    }
}
