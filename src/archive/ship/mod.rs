//! Shipping and its backends: the databases an archive's records go into,
//! once each. SQLite (feature `sqlite`) keeps one host's records, written
//! by the [`SqliteArchiver`](crate::archive::SqliteArchiver) or shipped
//! from the host's spool; PostgreSQL (feature `postgres`) a fleet's,
//! shipped from each host's spool. The [`Shipper`](crate::archive::Shipper)
//! tails a spool into either.
//!
//! Both are a [`Store`]: the one trait through which records are written
//! (a batch in column form, in one transaction, each record inserted only if
//! its key is new, with the spool position it reaches), the position read
//! back on resume, and the trails read back for the verifier.

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod shipper;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use store::{Batch, Outcome, Store};

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod store {
    use crate::archive::verify::sql::Trails;
    use crate::archive::{Origin, SpoolPosition};
    use crate::call::{AuditEvent, AuditEventType, Timestamp};

    /// A database that keeps archive records, each once: SQLite or
    /// PostgreSQL. A store belongs to one host (PostgreSQL keys every row
    /// with the host's id; an SQLite file is one host's).
    pub(crate) trait Store {
        /// What its operations fail with.
        type Error;

        /// Writes `batch` in one transaction: each event unless a row with
        /// its key `(call_id, seq)` is present, each closed record unless
        /// one for its call is. With `spool` (the spool's id), the host's
        /// progress row moves to `batch.end` in the same transaction, so the
        /// rows and the position they reach commit together or not at all.
        fn write(&mut self, batch: &Batch, spool: Option<&str>) -> Result<Outcome, Self::Error>;

        /// Where the progress row says spool `spool` has been written up
        /// to: the start of the spool if there is no row, or it was written
        /// for another spool.
        fn progress(&mut self, spool: &str) -> Result<SpoolPosition, Self::Error>;

        /// Each call's trail as stored, for the verifier.
        fn trails(&mut self) -> Result<Trails, Self::Error>;
    }

    /// What one [`Store::write`] did.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct Outcome {
        pub(crate) events_inserted: u64,
        pub(crate) closed_inserted: u64,
        /// Records whose key was already present (not inserted again).
        pub(crate) already_present: u64,
        /// Of those, the ones a store could tell are real duplicates (the
        /// key arrived from another spool position), not resends.
        pub(crate) duplicates: u64,
    }

    /// Events of a batch, one vector per column.
    #[derive(Debug, Default)]
    pub(crate) struct EventColumns {
        pub(crate) call_id: Vec<String>,
        pub(crate) seq: Vec<i64>,
        pub(crate) at_ns: Vec<i64>,
        pub(crate) kind: Vec<String>,
        pub(crate) agent_id: Vec<Option<String>>,
        pub(crate) details: Vec<String>,
        pub(crate) reason: Vec<String>,
        /// The record's byte offset in segment `Batch::segment` (0 for
        /// records that never were in a spool).
        pub(crate) offset: Vec<i64>,
    }

    /// Closed records of a batch, one vector per column.
    #[derive(Debug, Default)]
    pub(crate) struct ClosedColumns {
        pub(crate) call_id: Vec<String>,
        pub(crate) issued: Vec<i64>,
        pub(crate) at_ns: Vec<i64>,
        pub(crate) offset: Vec<i64>,
    }

    /// Records in column form (one `Vec` per column, for PostgreSQL's
    /// `unnest`): whole lines of one spool segment, or what the SQLite
    /// archiver took from the channel.
    #[derive(Debug, Default)]
    pub(crate) struct Batch {
        /// The spool segment the lines are from (PostgreSQL keeps each
        /// row's spool position; SQLite does not).
        #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
        pub(crate) segment: u64,
        /// Where the batch ends in the spool: the position after its last
        /// line.
        pub(crate) end: SpoolPosition,
        pub(crate) events: EventColumns,
        pub(crate) closed: ClosedColumns,
        /// The `at` of the batch's first record: the oldest not yet shipped.
        pub(crate) oldest: Option<Timestamp>,
        pub(crate) bytes: u64,
        /// Lines read past without shipping them: archived notes (only
        /// audit records are shipped).
        pub(crate) skipped: u64,
    }

    impl Batch {
        pub(crate) fn records(&self) -> u64 {
            (self.events.seq.len() + self.closed.issued.len()) as u64
        }

        /// Appends an event found at byte `offset` of the batch's segment.
        pub(crate) fn push_event(
            &mut self,
            call_id: String,
            reason: Origin,
            event: &AuditEvent,
            offset: u64,
        ) {
            self.oldest.get_or_insert(event.at);
            let e = &mut self.events;
            e.seq.push(int(event.seq));
            e.at_ns.push(event.at.unix_nanos());
            e.kind.push(type_column(&event.kind));
            e.agent_id.push(event.agent_id.clone());
            e.details
                .push(serde_json::to_string(&event.details).unwrap_or_else(|_| "{}".to_owned()));
            e.reason.push(reason.to_string());
            e.offset.push(int(offset));
            e.call_id.push(call_id);
        }

        /// Appends a closed record found at byte `offset`.
        pub(crate) fn push_closed(
            &mut self,
            call_id: String,
            issued: u64,
            at: Timestamp,
            offset: u64,
        ) {
            self.oldest.get_or_insert(at);
            let k = &mut self.closed;
            k.issued.push(int(issued));
            k.at_ns.push(at.unix_nanos());
            k.offset.push(int(offset));
            k.call_id.push(call_id);
        }
    }

    /// The event type as stored: the plain name for named types
    /// (`consent_given`), the JSON for `Other` (`{"other":"..."}`).
    pub(crate) fn type_column(kind: &AuditEventType) -> String {
        match serde_json::to_value(kind) {
            Ok(serde_json::Value::String(name)) => name,
            Ok(value) => value.to_string(),
            Err(_) => kind.to_string(),
        }
    }

    /// Database integers are i64; seqs, counts and offsets stay far below
    /// 2^63 (saturate rather than wrap if one ever did not).
    pub(crate) fn int(n: u64) -> i64 {
        i64::try_from(n).unwrap_or(i64::MAX)
    }
}
