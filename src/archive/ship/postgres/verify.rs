//! The verifier in SQL: the same per-call report as the local verifier
//! ([`verify`](crate::archive::verify)), computed by the database: counts,
//! seq ranges and gaps (a window over each call's seqs), closed records,
//! seqs beyond the issued count, and the duplicates the shipper recorded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use postgres::NoTls;

use super::ShipError;
use crate::archive::verify::report::runs;
use crate::archive::{CallReport, CallStatus, SeqRange, VerifyReport};

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

#[derive(Default)]
struct Trail {
    events: u64,
    first: u64,
    last: u64,
    logged: u64,
    drained: u64,
    gaps: Vec<SeqRange>,
    issued: Option<u64>,
    beyond: Vec<u64>,
    duplicate_seqs: Vec<u64>,
    duplicate_closed: u64,
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
    super::check_host_id(host_id)?;
    let config = postgres::Config::from_str(url).map_err(|e| ShipError::Url {
        reason: e.to_string(),
    })?;
    let mut client = config.connect(NoTls)?;
    // One snapshot for every query.
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let mut trails: BTreeMap<String, Trail> = BTreeMap::new();
    for row in tx.query(EVENTS, &[&host_id])? {
        let trail = trails.entry(row.get(0)).or_default();
        trail.events = count(row.get(1));
        trail.first = count(row.get(2));
        trail.last = count(row.get(3));
        trail.logged = count(row.get(4));
        trail.drained = count(row.get(5));
    }
    for row in tx.query(GAPS, &[&host_id])? {
        let trail = trails.entry(row.get(0)).or_default();
        trail.gaps.push(SeqRange {
            first: count(row.get(1)),
            last: count(row.get(2)),
        });
    }
    for row in tx.query(CALLS, &[&host_id])? {
        trails.entry(row.get(0)).or_default().issued = Some(count(row.get(1)));
    }
    for row in tx.query(BEYOND, &[&host_id])? {
        trails
            .entry(row.get(0))
            .or_default()
            .beyond
            .push(count(row.get(1)));
    }
    for row in tx.query(DUPLICATES, &[&host_id])? {
        let trail = trails.entry(row.get(0)).or_default();
        let record: String = row.get(1);
        match (record.as_str(), row.get::<_, Option<i64>>(2)) {
            ("event", Some(seq)) => {
                trail.duplicate_seqs.push(count(seq));
                match row.get::<_, Option<String>>(3).as_deref() {
                    Some("logged") => trail.logged += 1,
                    Some("drained") => trail.drained += 1,
                    _ => {}
                }
            }
            _ => trail.duplicate_closed += 1,
        }
    }
    tx.commit()?;

    let mut events = 0;
    let mut records = 0;
    let calls: BTreeMap<String, CallReport> = trails
        .into_iter()
        .map(|(id, t)| {
            let report = report(t);
            events += report.events;
            records += report.events + report.closed_records;
            (id, report)
        })
        .collect();
    let tally = |status| calls.values().filter(|c| c.status == status).count() as u64;
    Ok(VerifyReport {
        dir: PathBuf::from(format!("postgres host {host_id}")),
        segments: Vec::new(),
        ignored: Vec::new(),
        records,
        events,
        complete: tally(CallStatus::Complete),
        open: tally(CallStatus::Open),
        incomplete: tally(CallStatus::Incomplete),
        duplicated: tally(CallStatus::Duplicated),
        calls,
        torn_tail: None,
    })
}

/// One call's report from what the queries found, by the local verifier's
/// rules (see `CallReport::from_seqs`).
fn report(t: Trail) -> CallReport {
    let mut gaps = t.gaps;
    if let Some(n) = t.issued {
        // An ended call's trail is `0..n`: clip the gaps to it, add the
        // missing tail.
        gaps.retain(|g| g.first < n);
        for g in &mut gaps {
            g.last = g.last.min(n - 1);
        }
        let next = if t.events == 0 { 0 } else { t.last + 1 };
        if n > next {
            gaps.push(SeqRange {
                first: next,
                last: n - 1,
            });
        }
    }
    let mut duplicate_seqs = t.duplicate_seqs;
    duplicate_seqs.sort_unstable();
    let duplicate_records = duplicate_seqs.len() as u64;
    duplicate_seqs.dedup();
    let mut beyond = t.beyond;
    beyond.dedup();
    let closed_records = u64::from(t.issued.is_some()) + t.duplicate_closed;
    CallReport {
        status: CallStatus::Open,
        events: t.events + duplicate_records,
        first_seq: t.first,
        last_seq: t.last,
        issued: t.issued,
        closed_records,
        gaps,
        beyond_issued: runs(beyond.into_iter()),
        duplicates: runs(duplicate_seqs.into_iter()),
        duplicate_records,
        logged: t.logged,
        drained: t.drained,
    }
    .judged()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// What the SQL queries would find for `seqs` (each once in the table;
    /// repeats are the duplicates the shipper recorded) and a closed record.
    fn trail(seqs: &[u64], issued: Option<u64>) -> Trail {
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        let mut distinct = sorted.clone();
        distinct.dedup();
        let mut duplicate_seqs = sorted.clone();
        for s in &distinct {
            let at = duplicate_seqs.iter().position(|x| x == s).expect("present");
            duplicate_seqs.remove(at);
        }
        let mut gaps = Vec::new();
        let mut prev: i64 = -1;
        for &s in &distinct {
            if s as i64 > prev + 1 {
                gaps.push(SeqRange {
                    first: (prev + 1) as u64,
                    last: s - 1,
                });
            }
            prev = s as i64;
        }
        Trail {
            events: distinct.len() as u64,
            first: distinct.first().copied().unwrap_or(0),
            last: distinct.last().copied().unwrap_or(0),
            logged: seqs.len() as u64,
            drained: 0,
            gaps,
            issued,
            beyond: issued.map_or_else(Vec::new, |n| {
                distinct.iter().copied().filter(|&s| s >= n).collect()
            }),
            duplicate_seqs,
            duplicate_closed: 0,
        }
    }

    #[test]
    fn the_sql_report_follows_the_local_verifiers_rules() {
        let cases: &[(&[u64], Option<u64>)] = &[
            (&[0, 1, 2, 3], Some(4)),
            (&[0, 1, 2, 3], None),
            (&[3, 5, 9], None),
            (&[3, 5, 9], Some(12)),
            (&[0, 1, 2, 7], Some(5)),
            (&[0], Some(6)),
            (&[], Some(0)),
            (&[], Some(3)),
            (&[0, 1, 1, 2, 2, 2, 4], Some(5)),
        ];
        for &(seqs, issued) in cases {
            let local = CallReport::from_seqs(
                seqs.to_vec(),
                &issued.into_iter().collect::<Vec<_>>(),
                seqs.len() as u64,
                0,
            );
            assert_eq!(report(trail(seqs, issued)), local, "{seqs:?} {issued:?}");
        }
    }
}
