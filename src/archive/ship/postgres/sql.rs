//! The shipper's SQL: the schema, the host's lock, the progress row, and one
//! batch as one transaction.

use postgres::{Client, NoTls, Statement};

use crate::archive::ship::shipper::ShipError;
use crate::archive::ship::store::int;
use crate::archive::ship::{Batch, Outcome, Store};
use crate::archive::verify::sql::Trails;
use crate::archive::SpoolPosition;

/// Serialises schema set-up between hosts starting together (`CREATE TABLE
/// IF NOT EXISTS` can race on the catalog otherwise).
const SCHEMA_LOCK: i64 = 0x6361_6c6c_7269_6e67; // "callring"

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS callring_audit_events (
    host_id       text        NOT NULL,
    call_id       text        NOT NULL,
    seq           bigint      NOT NULL,
    at            timestamptz NOT NULL,
    at_ns         bigint      NOT NULL,
    type          text        NOT NULL,
    agent_id      text,
    details       jsonb       NOT NULL,
    reason        text        NOT NULL CHECK (reason IN ('logged', 'evicted', 'drained')),
    spool_segment bigint      NOT NULL,
    spool_offset  bigint      NOT NULL,
    PRIMARY KEY (host_id, call_id, seq)
);
CREATE TABLE IF NOT EXISTS callring_audit_calls (
    host_id       text        NOT NULL,
    call_id       text        NOT NULL,
    issued        bigint      NOT NULL,
    closed_at     timestamptz NOT NULL,
    closed_at_ns  bigint      NOT NULL,
    spool_segment bigint      NOT NULL,
    spool_offset  bigint      NOT NULL,
    PRIMARY KEY (host_id, call_id)
);
CREATE TABLE IF NOT EXISTS callring_audit_duplicates (
    host_id       text        NOT NULL,
    spool_segment bigint      NOT NULL,
    spool_offset  bigint      NOT NULL,
    call_id       text        NOT NULL,
    record        text        NOT NULL CHECK (record IN ('event', 'closed')),
    seq           bigint,
    reason        text,
    found_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host_id, spool_segment, spool_offset)
);
CREATE TABLE IF NOT EXISTS callring_ship_progress (
    host_id    text        PRIMARY KEY,
    segment    bigint      NOT NULL,
    "offset"   bigint      NOT NULL,
    records    bigint      NOT NULL DEFAULT 0,
    spool_id   text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"#;

const INSERT_EVENTS: &str = "
INSERT INTO callring_audit_events
    (host_id, call_id, seq, at, at_ns, type, agent_id, details, reason,
     spool_segment, spool_offset)
SELECT $1, t.call_id, t.seq, to_timestamp(t.at_ns::float8 / 1e9), t.at_ns, t.type,
       t.agent_id, t.details::jsonb, t.reason, $2, t.off
FROM unnest($3::text[], $4::int8[], $5::int8[], $6::text[], $7::text[], $8::text[],
            $9::text[], $10::int8[])
     AS t(call_id, seq, at_ns, type, agent_id, details, reason, off)
ON CONFLICT DO NOTHING";

const INSERT_CLOSED: &str = "
INSERT INTO callring_audit_calls
    (host_id, call_id, issued, closed_at, closed_at_ns, spool_segment, spool_offset)
SELECT $1, t.call_id, t.issued, to_timestamp(t.at_ns::float8 / 1e9), t.at_ns, $2, t.off
FROM unnest($3::text[], $4::int8[], $5::int8[], $6::int8[]) AS t(call_id, issued, at_ns, off)
ON CONFLICT DO NOTHING";

/// Events of the batch whose key holds a row shipped from another spool
/// position: real duplicates, not resends.
const EVENT_DUPLICATES: &str = "
INSERT INTO callring_audit_duplicates
    (host_id, spool_segment, spool_offset, call_id, record, seq, reason)
SELECT $1, $2, t.off, t.call_id, 'event', t.seq, t.reason
FROM unnest($3::text[], $4::int8[], $5::int8[], $6::text[]) AS t(call_id, seq, off, reason)
JOIN callring_audit_events e
  ON e.host_id = $1 AND e.call_id = t.call_id AND e.seq = t.seq
WHERE (e.spool_segment, e.spool_offset) <> ($2, t.off)
ON CONFLICT DO NOTHING";

const CLOSED_DUPLICATES: &str = "
INSERT INTO callring_audit_duplicates
    (host_id, spool_segment, spool_offset, call_id, record, seq, reason)
SELECT $1, $2, t.off, t.call_id, 'closed', NULL, NULL
FROM unnest($3::text[], $4::int8[]) AS t(call_id, off)
JOIN callring_audit_calls c ON c.host_id = $1 AND c.call_id = t.call_id
WHERE (c.spool_segment, c.spool_offset) <> ($2, t.off)
ON CONFLICT DO NOTHING";

const SAVE_PROGRESS: &str = r#"
INSERT INTO callring_ship_progress (host_id, segment, "offset", records, spool_id, updated_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (host_id) DO UPDATE
SET segment = EXCLUDED.segment, "offset" = EXCLUDED."offset",
    records = callring_ship_progress.records + EXCLUDED.records,
    spool_id = EXCLUDED.spool_id, updated_at = now()"#;

const LOAD_PROGRESS: &str =
    r#"SELECT segment, "offset", spool_id FROM callring_ship_progress WHERE host_id = $1"#;

/// Creates the tables if missing.
pub(super) fn create_schema(client: &mut Client) -> Result<(), ShipError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
    tx.batch_execute(SCHEMA)?;
    tx.commit()?;
    Ok(())
}

/// The prepared statements of a shipping connection.
struct Statements {
    insert_events: Statement,
    insert_closed: Statement,
    event_duplicates: Statement,
    closed_duplicates: Statement,
    save_progress: Statement,
}

/// A connection for one host: the [`Store`] the shipper writes to (opened
/// with [`open`](Connection::open): schema, the host's lock, prepared
/// statements) or the verifier reads (with [`connect`](Connection::connect)).
pub(super) struct Connection {
    client: Client,
    host_id: String,
    statements: Option<Statements>,
}

fn position(segment: i64, offset: i64) -> SpoolPosition {
    SpoolPosition::new(
        u64::try_from(segment).unwrap_or(0),
        u64::try_from(offset).unwrap_or(0),
    )
}

impl Connection {
    /// Connects, for reading `host_id`'s rows.
    pub(super) fn connect(config: &postgres::Config, host_id: &str) -> Result<Self, ShipError> {
        Ok(Self {
            client: config.connect(NoTls)?,
            host_id: host_id.to_owned(),
            statements: None,
        })
    }

    /// Connects, creates the schema, takes `host_id`'s lock and prepares
    /// the shipper's statements.
    pub(super) fn open(config: &postgres::Config, host_id: &str) -> Result<Self, ShipError> {
        let mut conn = Self::connect(config, host_id)?;
        let client = &mut conn.client;
        // A statement stuck on a dead server fails instead of hanging.
        client.batch_execute("SET statement_timeout = '120s'")?;
        create_schema(client)?;
        let locked: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended('callring-ship:' || $1, 0))",
                &[&host_id],
            )?
            .get(0);
        if !locked {
            return Err(ShipError::HostBusy {
                host_id: host_id.to_owned(),
            });
        }
        conn.statements = Some(Statements::prepare(client)?);
        Ok(conn)
    }
}

impl Statements {
    fn prepare(client: &mut Client) -> Result<Self, ShipError> {
        Ok(Self {
            insert_events: client.prepare(INSERT_EVENTS)?,
            insert_closed: client.prepare(INSERT_CLOSED)?,
            event_duplicates: client.prepare(EVENT_DUPLICATES)?,
            closed_duplicates: client.prepare(CLOSED_DUPLICATES)?,
            save_progress: client.prepare(SAVE_PROGRESS)?,
        })
    }
}

impl Store for Connection {
    type Error = ShipError;

    /// Inserts `batch` and, with `spool`, moves the progress row past it,
    /// in one transaction. A row whose key holds a row shipped from
    /// another spool position is recorded as a duplicate.
    fn write(&mut self, batch: &Batch, spool: Option<&str>) -> Result<Outcome, ShipError> {
        let st = match &mut self.statements {
            Some(st) => st,
            none => none.insert(Statements::prepare(&mut self.client)?),
        };
        let host_id = self.host_id.as_str();
        let segment = int(batch.segment);
        let mut outcome = Outcome::default();
        let mut tx = self.client.transaction()?;
        let e = &batch.events;
        if !e.seq.is_empty() {
            let inserted = tx.execute(
                &st.insert_events,
                &[
                    &host_id,
                    &segment,
                    &e.call_id,
                    &e.seq,
                    &e.at_ns,
                    &e.kind,
                    &e.agent_id,
                    &e.details,
                    &e.reason,
                    &e.offset,
                ],
            )?;
            outcome.events_inserted = inserted;
            let skipped = e.seq.len() as u64 - inserted;
            if skipped > 0 {
                outcome.already_present += skipped;
                outcome.duplicates += tx.execute(
                    &st.event_duplicates,
                    &[&host_id, &segment, &e.call_id, &e.seq, &e.offset, &e.reason],
                )?;
            }
        }
        let c = &batch.closed;
        if !c.issued.is_empty() {
            let inserted = tx.execute(
                &st.insert_closed,
                &[
                    &host_id, &segment, &c.call_id, &c.issued, &c.at_ns, &c.offset,
                ],
            )?;
            outcome.closed_inserted = inserted;
            let skipped = c.issued.len() as u64 - inserted;
            if skipped > 0 {
                outcome.already_present += skipped;
                outcome.duplicates += tx.execute(
                    &st.closed_duplicates,
                    &[&host_id, &segment, &c.call_id, &c.offset],
                )?;
            }
        }
        if let Some(spool_id) = spool {
            tx.execute(
                &st.save_progress,
                &[
                    &host_id,
                    &int(batch.end.segment),
                    &int(batch.end.offset),
                    &int(batch.records()),
                    &spool_id,
                ],
            )?;
        }
        tx.commit()?;
        Ok(outcome)
    }

    fn progress(&mut self, spool_id: &str) -> Result<SpoolPosition, ShipError> {
        let row = self.client.query_opt(LOAD_PROGRESS, &[&self.host_id])?;
        Ok(match row {
            Some(row) if row.get::<_, Option<&str>>(2) == Some(spool_id) => {
                position(row.get(0), row.get(1))
            }
            _ => SpoolPosition::default(),
        })
    }

    fn trails(&mut self) -> Result<Trails, ShipError> {
        // One snapshot for every query.
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let trails = super::verify::trails(&mut tx, &self.host_id)?;
        tx.commit()?;
        Ok(trails)
    }
}
