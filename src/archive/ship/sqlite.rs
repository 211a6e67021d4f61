//! The SQLite archive (feature `sqlite`): the same records in a table keyed
//! by (call_id, seq), written by a thread of its own. A rusqlite `Connection`
//! is `Send` but not `Sync`: it lives on that thread, and ring writers reach
//! it only through the bounded channel, as with the JSON Lines archiver.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use crate::archive::config::ArchiveConfig;
use crate::archive::error::{ArchiveError, IoFailure, IoOp};
use crate::archive::record::Origin;
use crate::archive::stats::add;
use crate::archive::writer::feed::Shared;
use crate::archive::writer::worker::{decode_logged, Backend, Core, Entry};
use crate::archive::writer::Archive;
use crate::call::AuditEventType;

/// The events table, as created now (also by the migration below).
macro_rules! events_table {
    () => {
        "
CREATE TABLE IF NOT EXISTS audit_events (
    call_id  TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    at       TEXT    NOT NULL,
    type     TEXT    NOT NULL,
    agent_id TEXT,
    details  TEXT    NOT NULL,
    reason   TEXT    NOT NULL CHECK (reason IN ('logged', 'evicted', 'drained')),
    PRIMARY KEY (call_id, seq)
) WITHOUT ROWID;
"
    };
}

const SCHEMA: &str = concat!(
    events_table!(),
    "
CREATE TABLE IF NOT EXISTS audit_calls (
    call_id   TEXT    NOT NULL PRIMARY KEY,
    issued    INTEGER NOT NULL,
    closed_at TEXT    NOT NULL
) WITHOUT ROWID;
"
);

/// The `reason` check of tables made before write-through (`logged`).
const OLD_REASON_CHECK: &str = "CHECK (reason IN ('evicted', 'drained'))";

/// Rebuilds an `audit_events` table made before write-through, whose
/// `reason` check refuses `logged` rows, keeping every row.
const MIGRATE: &str = concat!(
    "ALTER TABLE audit_events RENAME TO audit_events_v1;",
    events_table!(),
    "INSERT INTO audit_events SELECT * FROM audit_events_v1;
DROP TABLE audit_events_v1;"
);

const INSERT_CLOSED: &str = "
INSERT INTO audit_calls (call_id, issued, closed_at) VALUES (?1, ?2, ?3)
ON CONFLICT (call_id) DO NOTHING
";

const INSERT: &str = "
INSERT INTO audit_events (call_id, seq, at, type, agent_id, details, reason)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (call_id, seq) DO NOTHING
";

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
        let failure = |e: rusqlite::Error| sqlite_failure(&path, &e);
        let conn = Connection::open(&path).map_err(failure)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(failure)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
            .map_err(failure)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(failure)?;
        conn.execute_batch(SCHEMA).map_err(failure)?;
        let table_sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'audit_events'",
                [],
                |row| row.get(0),
            )
            .map_err(failure)?;
        if table_sql.contains(OLD_REASON_CHECK) {
            conn.execute_batch(&format!("BEGIN IMMEDIATE;{MIGRATE}COMMIT;"))
                .map_err(failure)?;
        }
        let shared = Arc::new(Shared::new(config.on_fault.clone()));
        let table = Table {
            conn,
            path: path.clone(),
            shared: Arc::clone(&shared),
            pending: Vec::new(),
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
fn sqlite_failure(path: &Path, error: &rusqlite::Error) -> IoFailure {
    use rusqlite::ErrorCode;
    let kind = match error.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => io::ErrorKind::StorageFull,
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => io::ErrorKind::PermissionDenied,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => io::ErrorKind::WouldBlock,
        _ => io::ErrorKind::Other,
    };
    IoFailure::new(IoOp::Sqlite, path, &io::Error::new(kind, error.to_string()))
}

/// The event type as stored: the plain name for named types
/// (`consent_given`), the JSON for `Other` (`{"other":"..."}`).
fn type_column(kind: &AuditEventType) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(value) => value.to_string(),
        Err(_) => kind.to_string(),
    }
}

/// The table's backend, on the archiver's thread.
struct Table {
    conn: Connection,
    path: PathBuf,
    shared: Arc<Shared>,
    pending: Vec<Entry>,
    oldest: Option<Instant>,
}

impl Table {
    /// Inserts `pending` in one transaction; returns the rows that were
    /// already present. Rolled back (by drop) on error.
    fn commit(&mut self) -> rusqlite::Result<u64> {
        let tx = self.conn.transaction()?;
        let mut duplicates = 0;
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            let mut insert_closed = tx.prepare_cached(INSERT_CLOSED)?;
            for entry in &self.pending {
                let (call_id, reason, event) = match entry {
                    Entry::Event {
                        call_id,
                        reason,
                        event,
                    } => (call_id, reason, event),
                    Entry::Logged { .. } => unreachable!("decoded in `push`"),
                    Entry::Closed {
                        call_id,
                        issued,
                        at,
                    } => {
                        // SQLite integers are i64; counts stay far below 2^63.
                        let issued = *issued as i64;
                        if insert_closed.execute(params![&**call_id, issued, at.to_rfc3339()])? == 0
                        {
                            duplicates += 1;
                        }
                        continue;
                    }
                };
                let details =
                    serde_json::to_string(&event.details).unwrap_or_else(|_| "{}".to_owned());
                // SQLite integers are i64; seqs stay far below 2^63.
                let seq = event.seq as i64;
                let inserted = insert.execute(params![
                    &**call_id,
                    seq,
                    event.at.to_rfc3339(),
                    type_column(&event.kind),
                    event.agent_id.as_deref(),
                    details,
                    reason.to_string(),
                ])?;
                if inserted == 0 {
                    duplicates += 1;
                }
            }
        }
        tx.commit()?;
        Ok(duplicates)
    }
}

impl Backend for Table {
    fn push(&mut self, entry: Entry) {
        let entry = match entry {
            Entry::Logged { call_id, bytes } => Entry::Event {
                call_id,
                reason: Origin::Logged,
                event: decode_logged(&bytes),
            },
            other => other,
        };
        self.pending.push(entry);
        self.oldest.get_or_insert_with(Instant::now);
    }

    fn write(&mut self) -> Result<(), IoFailure> {
        // Nothing reaches the database before the transaction.
        Ok(())
    }

    fn sync(&mut self) -> Result<(), IoFailure> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let duplicates = self.commit().map_err(|e| sqlite_failure(&self.path, &e))?;
        let counters = &self.shared.counters;
        add(&counters.synced, self.pending.len() as u64);
        add(&counters.duplicates, duplicates);
        add(&counters.fsyncs, 1);
        self.pending.clear();
        self.oldest = None;
        Ok(())
    }

    fn unsynced(&self) -> u64 {
        self.pending.len() as u64
    }

    fn oldest_unsynced(&self) -> Option<Instant> {
        self.oldest
    }
}
