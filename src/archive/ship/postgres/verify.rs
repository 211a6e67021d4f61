//! The verifier in SQL: each call's trail as PostgreSQL computes it (counts,
//! seq ranges and gaps from a window over each call's seqs, closed records,
//! seqs beyond the issued count, and the duplicates the shipper recorded),
//! judged as the local verifier ([`verify`](crate::archive::verify)) judges
//! a spool.

use std::str::FromStr;

use postgres::Transaction;

use super::sql::Connection;
use crate::archive::ship::shipper::{check_host_id, ShipError};
use crate::archive::verify::sql::{verify_store, Trails};
use crate::archive::VerifyReport;

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

const EVENTS: &str = "
SELECT call_id, count(*), min(seq), max(seq),
       count(*) FILTER (WHERE reason = 'logged'),
       count(*) FILTER (WHERE reason = 'drained')
FROM callring_audit_events WHERE host_id = $1 GROUP BY call_id";

/// Runs of missing seqs below each call's highest: between consecutive
/// seqs, and before the first (the trail starts at 0).
const GAPS: &str = "
SELECT call_id, prev + 1, seq - 1 FROM (
    SELECT call_id, seq,
           lag(seq, 1, -1::bigint) OVER (PARTITION BY call_id ORDER BY seq) AS prev
    FROM callring_audit_events WHERE host_id = $1
) t WHERE seq > prev + 1 ORDER BY call_id, prev";

const CALLS: &str = "SELECT call_id, issued FROM callring_audit_calls WHERE host_id = $1";

const BEYOND: &str = "
SELECT e.call_id, e.seq FROM callring_audit_events e
JOIN callring_audit_calls c ON c.host_id = e.host_id AND c.call_id = e.call_id
WHERE e.host_id = $1 AND e.seq >= c.issued ORDER BY e.call_id, e.seq";

const DUPLICATES: &str = "
SELECT call_id, record, seq, reason FROM callring_audit_duplicates WHERE host_id = $1
ORDER BY call_id, seq";

/// Reads every trail of host `host_id` in `tx` (one snapshot).
pub(super) fn trails(tx: &mut Transaction<'_>, host_id: &str) -> Result<Trails, ShipError> {
    let mut trails = Trails::default();
    for row in tx.query(EVENTS, &[&host_id])? {
        trails.events(
            row.get(0),
            count(row.get(1)),
            (count(row.get(2)), count(row.get(3))),
            count(row.get(4)),
            count(row.get(5)),
        );
    }
    for row in tx.query(GAPS, &[&host_id])? {
        trails.gap(row.get(0), count(row.get(1)), count(row.get(2)));
    }
    for row in tx.query(CALLS, &[&host_id])? {
        trails.closed(row.get(0), count(row.get(1)));
    }
    for row in tx.query(BEYOND, &[&host_id])? {
        trails.beyond(row.get(0), count(row.get(1)));
    }
    for row in tx.query(DUPLICATES, &[&host_id])? {
        let record: String = row.get(1);
        match (record.as_str(), row.get::<_, Option<i64>>(2)) {
            ("event", Some(seq)) => {
                trails.duplicate_event(row.get(0), count(seq), row.get::<_, Option<&str>>(3));
            }
            _ => trails.duplicate_closed(row.get(0)),
        }
    }
    Ok(trails)
}

/// Verifies host `host_id`'s trails in the database at `url`: per call
/// complete, open, incomplete or duplicated, as [`verify`](crate::archive::verify)
/// does for a local archive. Gaps, counts and seq ranges are computed in
/// SQL; duplicates are the ones the shipper recorded (a key shipped from
/// two spool positions).
///
/// The report's `dir` reads `postgres host <host_id>`; it has no segments
/// and no torn tail.
///
/// # Errors
///
/// [`ShipError::Url`], [`ShipError::Database`] (including a database
/// without the shipper's tables), [`ShipError::InvalidConfig`] for a bad
/// host id.
///
/// # Examples
///
/// ```no_run
/// let report = callring::archive::verify_postgres(
///     "postgres://callring@127.0.0.1:5432/callring",
///     "host-1",
/// )
/// .expect("verified");
/// println!("{report}");
/// assert!(report.is_ok(), "no call lost or doubled events");
/// ```
pub fn verify_postgres(url: &str, host_id: &str) -> Result<VerifyReport, ShipError> {
    check_host_id(host_id)?;
    let config = postgres::Config::from_str(url).map_err(|e| ShipError::Url {
        reason: e.to_string(),
    })?;
    let mut store = Connection::connect(&config, host_id)?;
    verify_store(&mut store, format!("postgres host {host_id}"))
}
