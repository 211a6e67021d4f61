//! The SQLite [`Store`]: the tables, writing a batch (with the progress row
//! of a shipped spool), and the verifier's queries.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags};

use super::sqlite_failure;
use crate::archive::ship::{Batch, Outcome, Store};
use crate::archive::verify::sql::{verify_store, Trails};
use crate::archive::{SpoolPosition, VerifyError, VerifyReport};
use crate::call::Timestamp;

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

/// Where a spool shipped into this database has been written up to (made
/// when first needed: the archiver itself has no spool).
const PROGRESS_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS audit_progress (
    id       INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    segment  INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    records  INTEGER NOT NULL,
    spool_id TEXT    NOT NULL
);
"#;

const SAVE_PROGRESS: &str = r#"
INSERT INTO audit_progress (id, segment, "offset", records, spool_id) VALUES (1, ?1, ?2, ?3, ?4)
ON CONFLICT (id) DO UPDATE
SET segment = excluded.segment, "offset" = excluded."offset",
    records = audit_progress.records + excluded.records, spool_id = excluded.spool_id
"#;

const LOAD_PROGRESS: &str =
    r#"SELECT segment, "offset", spool_id FROM audit_progress WHERE id = 1"#;

// The verifier's queries: the PostgreSQL verifier's, without the host.
const EVENTS: &str = "
SELECT call_id, count(*), min(seq), max(seq),
       count(*) FILTER (WHERE reason = 'logged'),
       count(*) FILTER (WHERE reason = 'drained')
FROM audit_events GROUP BY call_id";

const GAPS: &str = "
SELECT call_id, prev + 1, seq - 1 FROM (
    SELECT call_id, seq, lag(seq, 1, -1) OVER (PARTITION BY call_id ORDER BY seq) AS prev
    FROM audit_events
) WHERE seq > prev + 1 ORDER BY call_id, prev";

const CALLS: &str = "SELECT call_id, issued FROM audit_calls";

const BEYOND: &str = "
SELECT e.call_id, e.seq FROM audit_events e JOIN audit_calls c ON c.call_id = e.call_id
WHERE e.seq >= c.issued ORDER BY e.call_id, e.seq";

/// An SQLite database as a [`Store`].
pub(crate) struct SqliteStore {
    conn: Connection,
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` for writing: WAL,
    /// `synchronous = FULL`, the tables created or migrated.
    pub(crate) fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        let table_sql: String = conn.query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'audit_events'",
            [],
            |row| row.get(0),
        )?;
        if table_sql.contains(OLD_REASON_CHECK) {
            conn.execute_batch(&format!("BEGIN IMMEDIATE;{MIGRATE}COMMIT;"))?;
        }
        Ok(Self { conn })
    }

    /// Opens an existing database without changing it.
    fn open_existing(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(Self { conn })
    }
}

impl Store for SqliteStore {
    type Error = rusqlite::Error;

    /// SQLite cannot tell a resend from a real duplicate (it keeps no spool
    /// positions): every record whose key is present counts as already
    /// present, none as a duplicate.
    fn write(&mut self, batch: &Batch, spool: Option<&str>) -> rusqlite::Result<Outcome> {
        let tx = self.conn.transaction()?;
        let mut outcome = Outcome::default();
        {
            let e = &batch.events;
            let mut insert = tx.prepare_cached(INSERT)?;
            for i in 0..e.seq.len() {
                let at = Timestamp::from_unix_nanos(e.at_ns[i]).to_rfc3339();
                outcome.events_inserted += insert.execute(params![
                    e.call_id[i],
                    e.seq[i],
                    at,
                    e.kind[i],
                    e.agent_id[i],
                    e.details[i],
                    e.reason[i],
                ])? as u64;
            }
            let c = &batch.closed;
            let mut insert_closed = tx.prepare_cached(INSERT_CLOSED)?;
            for i in 0..c.issued.len() {
                let at = Timestamp::from_unix_nanos(c.at_ns[i]).to_rfc3339();
                outcome.closed_inserted +=
                    insert_closed.execute(params![c.call_id[i], c.issued[i], at])? as u64;
            }
        }
        outcome.already_present =
            batch.records() - outcome.events_inserted - outcome.closed_inserted;
        if let Some(spool_id) = spool {
            // SQLite integers are i64; positions and counts stay far below.
            let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            tx.execute_batch(PROGRESS_TABLE)?;
            tx.execute(
                SAVE_PROGRESS,
                params![
                    int(batch.end.segment),
                    int(batch.end.offset),
                    int(batch.records()),
                    spool_id
                ],
            )?;
        }
        tx.commit()?;
        Ok(outcome)
    }

    fn progress(&mut self, spool_id: &str) -> rusqlite::Result<SpoolPosition> {
        let has_table: bool = self.conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'audit_progress'",
            [],
            |row| row.get(0),
        )?;
        if !has_table {
            return Ok(SpoolPosition::default());
        }
        let row = self.conn.query_row(LOAD_PROGRESS, [], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
            ))
        });
        Ok(match row {
            Ok((segment, offset, id)) if id == spool_id => {
                SpoolPosition::new(count(segment), count(offset))
            }
            Ok(_) | Err(rusqlite::Error::QueryReturnedNoRows) => SpoolPosition::default(),
            Err(e) => return Err(e),
        })
    }

    fn trails(&mut self) -> rusqlite::Result<Trails> {
        // One snapshot for every query (a read transaction in WAL mode).
        let tx = self.conn.transaction()?;
        let mut trails = Trails::default();
        let mut events = tx.prepare(EVENTS)?;
        let mut rows = events.query([])?;
        while let Some(row) = rows.next()? {
            trails.events(
                row.get(0)?,
                count(row.get(1)?),
                (count(row.get(2)?), count(row.get(3)?)),
                count(row.get(4)?),
                count(row.get(5)?),
            );
        }
        let mut gaps = tx.prepare(GAPS)?;
        let mut rows = gaps.query([])?;
        while let Some(row) = rows.next()? {
            trails.gap(row.get(0)?, count(row.get(1)?), count(row.get(2)?));
        }
        let mut calls = tx.prepare(CALLS)?;
        let mut rows = calls.query([])?;
        while let Some(row) = rows.next()? {
            trails.closed(row.get(0)?, count(row.get(1)?));
        }
        let mut beyond = tx.prepare(BEYOND)?;
        let mut rows = beyond.query([])?;
        while let Some(row) = rows.next()? {
            trails.beyond(row.get(0)?, count(row.get(1)?));
        }
        Ok(trails)
    }
}

/// Verifies the SQLite archive at `path` (made by a
/// [`SqliteArchiver`](crate::archive::SqliteArchiver) or
/// [`Shipper::start_sqlite`](crate::archive::Shipper::start_sqlite)):
/// per call complete, open, incomplete or duplicated, as
/// [`verify`](crate::archive::verify) does for a JSON Lines archive, with
/// counts, seq ranges and gaps computed in SQL. Its primary key keeps every
/// `(call_id, seq)` once, so a repeated event is counted by the archiver
/// ([`ArchiveStats::duplicates`](crate::archive::ArchiveStats::duplicates))
/// and never shows here.
///
/// The report's `dir` is the database's path; it has no segments and no
/// torn tail.
///
/// # Errors
///
/// [`VerifyError::NotFound`] if there is no file at `path`,
/// [`VerifyError::Io`] if it cannot be read as a callring SQLite archive.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::archive::{verify_sqlite, ArchiveConfig, SqliteArchiver};
/// use callring::call::{AuditEventType, CallState, Details};
///
/// let dir = tempfile::tempdir().expect("temp dir");
/// let path = dir.path().join("audit.sqlite");
/// let archiver = SqliteArchiver::start(&path, ArchiveConfig::default()).expect("opens");
/// let call = CallState::builder("call-1").audit_archive(archiver.sink("call-1")).build();
/// call.log_event(&AuditEventType::CallStarted, None, &Details::new()).expect("archived");
/// let _ = call.end();
/// archiver.stop().expect("committed");
///
/// let report = verify_sqlite(&path).expect("verified");
/// assert!(report.is_complete());
/// assert_eq!(report.calls["call-1"].issued, Some(1));
/// # }
/// ```
pub fn verify_sqlite(path: impl AsRef<Path>) -> Result<VerifyReport, VerifyError> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(VerifyError::NotFound {
            dir: path.to_path_buf(),
        });
    }
    let failure = |e: rusqlite::Error| VerifyError::Io(sqlite_failure(path, &e));
    let mut store = SqliteStore::open_existing(path).map_err(failure)?;
    verify_store(&mut store, path.display().to_string()).map_err(failure)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::archive::Origin;
    use crate::call::{AuditEvent, AuditEventType, Details};

    fn event(seq: u64) -> AuditEvent {
        AuditEvent {
            seq,
            at: Timestamp::from_unix_nanos(1_700_000_000_123_456_789 + seq as i64),
            kind: AuditEventType::ToolInvoked,
            agent_id: Some("tools".into()),
            details: Details::new(),
        }
    }

    /// The contract the shipper relies on, kept by SQLite as by PostgreSQL:
    /// rows and progress commit together, a resend inserts nothing, the
    /// progress row belongs to one spool.
    #[test]
    fn a_batch_and_its_progress_commit_together_and_a_resend_inserts_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = SqliteStore::open(&dir.path().join("a.sqlite")).expect("opens");
        assert_eq!(
            store.progress("spool-1").expect("reads"),
            SpoolPosition::default()
        );
        let mut batch = Batch {
            segment: 1,
            end: SpoolPosition::new(1, 300),
            ..Batch::default()
        };
        for seq in 0..3 {
            batch.push_event("call-1".into(), Origin::Logged, &event(seq), seq * 100);
        }
        batch.push_closed("call-1".into(), 3, event(3).at, 300);
        let first = store.write(&batch, Some("spool-1")).expect("writes");
        assert_eq!((first.events_inserted, first.closed_inserted), (3, 1));
        assert_eq!(store.progress("spool-1").expect("reads"), batch.end);
        assert_eq!(
            store.progress("spool-2").expect("reads"),
            SpoolPosition::default()
        );

        let again = store.write(&batch, Some("spool-1")).expect("writes");
        assert_eq!(
            again,
            Outcome {
                already_present: 4,
                ..Outcome::default()
            }
        );
        let report = verify_store(&mut store, "a".into()).expect("verifies");
        assert!(report.is_complete(), "{report}");
        assert_eq!(report.calls["call-1"].events, 3);
        let at: String = store
            .conn
            .query_row("SELECT at FROM audit_events WHERE seq = 0", [], |r| {
                r.get(0)
            })
            .expect("row");
        assert_eq!(at, event(0).at.to_rfc3339());
    }

    #[test]
    fn the_sqlite_verifier_finds_gaps_open_calls_and_seqs_beyond_the_issued_count() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = SqliteStore::open(&dir.path().join("b.sqlite")).expect("opens");
        let mut batch = Batch::default();
        for seq in [0, 1, 3] {
            batch.push_event("gap".into(), Origin::Logged, &event(seq), 0);
        }
        batch.push_closed("gap".into(), 4, event(4).at, 0);
        for seq in [0, 1, 2] {
            batch.push_event("beyond".into(), Origin::Drained, &event(seq), 0);
        }
        batch.push_closed("beyond".into(), 2, event(4).at, 0);
        batch.push_event("open".into(), Origin::Logged, &event(5), 0);
        store.write(&batch, None).expect("writes");
        let report = verify_store(&mut store, "b".into()).expect("verifies");
        let gap = &report.calls["gap"];
        assert_eq!(gap.status, crate::archive::CallStatus::Incomplete);
        assert_eq!(gap.gaps, [crate::archive::SeqRange { first: 2, last: 2 }]);
        let beyond = &report.calls["beyond"];
        assert_eq!(beyond.beyond_issued.len(), 1);
        assert_eq!(beyond.drained, 3);
        let open = &report.calls["open"];
        assert_eq!(open.status, crate::archive::CallStatus::Open);
        assert_eq!(open.gaps, [crate::archive::SeqRange { first: 0, last: 4 }]);
    }
}
