//! The verifier's half of the databases: each call's trail as a store
//! reports it (counts, seq range, gaps, closed record, seqs beyond the
//! issued count, recorded duplicates: aggregates the database computes), and
//! the same per-call judgement the local verifier makes, in the same
//! [`VerifyReport`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::archive::ship::Store;
use crate::archive::verify::report::runs;
use crate::archive::{CallReport, CallStatus, SeqRange, VerifyReport};

/// What a store found for one call.
#[derive(Debug, Default)]
pub(crate) struct Trail {
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

/// Every call's trail, filled by a store's queries row by row.
#[derive(Debug, Default)]
pub(crate) struct Trails(BTreeMap<String, Trail>);

impl Trails {
    fn call(&mut self, call_id: String) -> &mut Trail {
        self.0.entry(call_id).or_default()
    }

    /// A call's events: how many, their seq range, how many were logged
    /// (written through) and drained.
    pub(crate) fn events(
        &mut self,
        call_id: String,
        events: u64,
        seqs: (u64, u64),
        logged: u64,
        drained: u64,
    ) {
        let t = self.call(call_id);
        (t.events, t.first, t.last, t.logged, t.drained) =
            (events, seqs.0, seqs.1, logged, drained);
    }

    /// Seqs `first..=last` are missing below the call's highest.
    pub(crate) fn gap(&mut self, call_id: String, first: u64, last: u64) {
        self.call(call_id).gaps.push(SeqRange { first, last });
    }

    /// The call's closed record: `issued` seqs.
    pub(crate) fn closed(&mut self, call_id: String, issued: u64) {
        self.call(call_id).issued = Some(issued);
    }

    /// An event at or beyond the issued count.
    pub(crate) fn beyond(&mut self, call_id: String, seq: u64) {
        self.call(call_id).beyond.push(seq);
    }

    /// A second copy of event `seq` (with its reason), recorded apart
    /// because its key was taken (PostgreSQL's duplicates table; SQLite's
    /// key refuses the copy and keeps no record of it).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn duplicate_event(&mut self, call_id: String, seq: u64, reason: Option<&str>) {
        let t = self.call(call_id);
        t.duplicate_seqs.push(seq);
        match reason {
            Some("logged") => t.logged += 1,
            Some("drained") => t.drained += 1,
            _ => {}
        }
    }

    /// A second closed record.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn duplicate_closed(&mut self, call_id: String) {
        self.call(call_id).duplicate_closed += 1;
    }

    /// The report, with `name` where a local report has its directory.
    pub(crate) fn into_report(self, name: String) -> VerifyReport {
        let mut events = 0;
        let mut records = 0;
        let calls: BTreeMap<String, CallReport> = self
            .0
            .into_iter()
            .map(|(id, t)| {
                let report = report(t);
                events += report.events;
                records += report.events + report.closed_records;
                (id, report)
            })
            .collect();
        let tally = |status| calls.values().filter(|c| c.status == status).count() as u64;
        VerifyReport {
            dir: PathBuf::from(name),
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
            pruned_segments: Vec::new(),
            pruned_records: 0,
            pruned_through: None,
        }
    }
}

/// Verifies what `store` holds: its trails, judged as the local verifier
/// judges a spool's.
pub(crate) fn verify_store<S: Store>(
    store: &mut S,
    name: String,
) -> Result<VerifyReport, S::Error> {
    Ok(store.trails()?.into_report(name))
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
        notes: 0, // the shippers carry audit records only
        pruned: Vec::new(),
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
