//! One call's trail while the verifier reads: its seqs as sorted disjoint
//! runs (so memory follows the gaps and duplicates, not the records), and
//! the judgement of a trail into a [`CallReport`].

use crate::archive::record::Origin;
use crate::archive::verify::report::{CallReport, CallStatus, SeqRange};

/// A set of seqs as sorted, disjoint, non-adjacent runs. Seqs arrive nearly
/// in order (several agents of a call log concurrently), so an insert is
/// almost always at the end: O(1), and one run for a whole trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SeqSet {
    runs: Vec<SeqRange>,
}

impl SeqSet {
    /// Adds `seq`; `false` if it was already there.
    pub(crate) fn insert(&mut self, seq: u64) -> bool {
        let runs = &mut self.runs;
        match runs.last_mut() {
            None => {
                runs.push(SeqRange::single(seq));
                return true;
            }
            Some(last) if seq > last.last => {
                if last.last + 1 == seq {
                    last.last = seq;
                } else {
                    runs.push(SeqRange::single(seq));
                }
                return true;
            }
            Some(_) => {}
        }
        // The first run that ends at or after `seq` (there is one: the last).
        let i = runs.partition_point(|r| r.last < seq);
        if runs[i].first <= seq {
            return false;
        }
        let joins_before = i > 0 && runs[i - 1].last + 1 == seq;
        let joins_after = seq + 1 == runs[i].first;
        match (joins_before, joins_after) {
            (true, true) => {
                runs[i - 1].last = runs[i].last;
                runs.remove(i);
            }
            (true, false) => runs[i - 1].last = seq,
            (false, true) => runs[i].first = seq,
            (false, false) => runs.insert(i, SeqRange::single(seq)),
        }
        true
    }

    /// Adds every seq of `range`.
    pub(crate) fn insert_range(&mut self, range: SeqRange) {
        let mut runs: Vec<SeqRange> = Vec::with_capacity(self.runs.len() + 1);
        let mut pending = Some(range);
        for run in self.runs.drain(..) {
            if let Some(r) = pending.filter(|r| r.first < run.first) {
                push_merged(&mut runs, r);
                pending = None;
            }
            push_merged(&mut runs, run);
        }
        if let Some(r) = pending {
            push_merged(&mut runs, r);
        }
        self.runs = runs;
    }

    /// The runs, in order.
    pub(crate) fn runs(&self) -> &[SeqRange] {
        &self.runs
    }

    /// How many seqs the set holds.
    pub(crate) fn len(&self) -> u64 {
        self.runs.iter().map(SeqRange::len).sum()
    }
}

/// Appends `run` to sorted `runs`, merging it with the last one if they
/// overlap or touch.
fn push_merged(runs: &mut Vec<SeqRange>, run: SeqRange) {
    match runs.last_mut() {
        Some(last) if run.first <= last.last.saturating_add(1) => {
            last.last = last.last.max(run.last)
        }
        _ => runs.push(run),
    }
}

/// One call's records as read, in constant memory per call (but for its
/// gaps and duplicates).
#[derive(Debug, Default)]
pub(crate) struct Trail {
    /// Seqs found.
    seen: SeqSet,
    /// Seqs found more than once, and how many records beyond the first.
    duplicates: SeqSet,
    duplicate_records: u64,
    /// Closed records, and the largest issued count among them.
    closed_records: u64,
    issued: Option<u64>,
    logged: u64,
    drained: u64,
    /// Note lines: counted, never judged (they are not audit events).
    notes: u64,
    /// Seqs that retention removed with their segments (from the pruning
    /// manifest): not gaps. Fed in by [`Trail::pruned`] before judging.
    pruned: SeqSet,
}

impl Trail {
    /// An event record with `seq`, handed over as `reason` says.
    pub(crate) fn event(&mut self, seq: u64, reason: Origin) {
        if !self.seen.insert(seq) {
            self.duplicates.insert(seq);
            self.duplicate_records += 1;
        }
        match reason {
            Origin::Logged => self.logged += 1,
            Origin::Drained => self.drained += 1,
            Origin::Evicted => {}
        }
    }

    /// A closed record saying the call issued `issued` seqs.
    pub(crate) fn closed(&mut self, issued: u64) {
        self.closed_records += 1;
        self.issued = Some(self.issued.map_or(issued, |n| n.max(issued)));
    }

    /// A note line of the call.
    pub(crate) fn note(&mut self) {
        self.notes += 1;
    }

    /// Seqs of the call that retention pruned (with their segments): they
    /// count as accounted for, not as gaps, and are listed in
    /// [`CallReport::pruned`].
    ///
    /// A seq pruned twice (in two segments) is a duplicate, as is one both
    /// pruned and still found (see [`Trail::judge`]).
    pub(crate) fn pruned(&mut self, range: SeqRange) {
        for both in overlaps(self.pruned.runs(), &[range]) {
            self.duplicates.insert_range(both);
            self.duplicate_records += both.len();
        }
        self.pruned.insert_range(range);
    }

    /// The call's report: gaps, duplicates, seqs beyond the issued count,
    /// and its status.
    pub(crate) fn judge(self) -> CallReport {
        let seen = self.seen.runs();
        let first_seq = seen.first().map_or(0, |r| r.first);
        let last_seq = seen.last().map_or(0, |r| r.last);
        // An ended call's trail is `0..issued`; an open one's, so far,
        // `0..=last_seq`.
        let upper = match self.issued {
            Some(n) => n,
            None if seen.is_empty() => 0,
            None => last_seq.saturating_add(1),
        };
        // A seq both in a pruned segment and in one still here was
        // archived twice.
        let mut duplicates = self.duplicates;
        let mut duplicate_records = self.duplicate_records;
        for both in overlaps(self.pruned.runs(), seen) {
            duplicates.insert_range(both);
            duplicate_records += both.len();
        }
        let mut accounted = self.seen.clone();
        for &range in self.pruned.runs() {
            accounted.insert_range(range);
        }
        let mut gaps = Vec::new();
        let mut next = 0u64; // the lowest seq not yet accounted for
        for run in accounted.runs() {
            if run.first >= upper {
                break;
            }
            if run.first > next {
                gaps.push(SeqRange {
                    first: next,
                    last: run.first - 1,
                });
            }
            next = run.last.saturating_add(1);
        }
        if upper > next {
            gaps.push(SeqRange {
                first: next,
                last: upper - 1,
            });
        }
        let beyond_issued = match self.issued {
            Some(n) => seen
                .iter()
                .filter(|r| r.last >= n)
                .map(|r| SeqRange {
                    first: r.first.max(n),
                    last: r.last,
                })
                .collect(),
            None => Vec::new(),
        };
        CallReport {
            status: CallStatus::Open, // set by `judged`
            // The records found here (a pruned copy of a seq counts in
            // `duplicate_records`, not here).
            events: self.seen.len() + self.duplicate_records,
            first_seq,
            last_seq,
            issued: self.issued,
            closed_records: self.closed_records,
            gaps,
            beyond_issued,
            duplicates: duplicates.runs().to_vec(),
            duplicate_records,
            logged: self.logged,
            drained: self.drained,
            notes: self.notes,
            pruned: self.pruned.runs().to_vec(),
        }
        .judged()
    }
}

/// The seqs in both `a` and `b` (each sorted, disjoint runs), as runs.
fn overlaps(a: &[SeqRange], b: &[SeqRange]) -> Vec<SeqRange> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let first = a[i].first.max(b[j].first);
        let last = a[i].last.min(b[j].last);
        if first <= last {
            out.push(SeqRange { first, last });
        }
        if a[i].last < b[j].last {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn range(first: u64, last: u64) -> SeqRange {
        SeqRange { first, last }
    }

    /// The set agrees with a sorted, deduplicated list for any order of
    /// inserts, and says which inserts were repeats.
    #[test]
    fn runs_follow_a_sorted_deduplicated_list() {
        let mut rng = fastrand::Rng::with_seed(16);
        for _ in 0..500 {
            let n = rng.usize(0..60);
            let seqs: Vec<u64> = (0..n).map(|_| rng.u64(0..40)).collect();
            let mut set = SeqSet::default();
            let mut seen = std::collections::BTreeSet::new();
            for &s in &seqs {
                assert_eq!(set.insert(s), seen.insert(s), "{seqs:?}");
            }
            let expected = crate::archive::verify::report::runs(seen.iter().copied());
            assert_eq!(set.runs(), &expected[..], "{seqs:?}");
            assert_eq!(set.len(), seen.len() as u64);
        }
        let mut set = SeqSet::default();
        set.insert(u64::MAX);
        assert!(!set.insert(u64::MAX));
        assert!(set.insert(0));
        assert_eq!(set.runs(), [range(0, 0), range(u64::MAX, u64::MAX)]);
    }

    #[test]
    fn ranges_merge_with_what_they_touch() {
        let mut set = SeqSet::default();
        for s in [0, 1, 5, 9, 20] {
            set.insert(s);
        }
        set.insert_range(range(2, 4));
        set.insert_range(range(7, 12));
        set.insert_range(range(30, 31));
        assert_eq!(
            set.runs(),
            [range(0, 5), range(7, 12), range(20, 20), range(30, 31)]
        );
    }

    /// A million in-order seqs keep one run.
    #[test]
    fn an_in_order_trail_is_one_run() {
        let mut trail = Trail::default();
        for s in 0..1_000_000 {
            trail.event(s, Origin::Logged);
        }
        assert_eq!(trail.seen.runs().len(), 1);
        trail.closed(1_000_000);
        assert!(trail.judge().is_complete());
    }

    /// Seqs retention pruned are accounted for: an ended call whose first
    /// segments were pruned is complete, its pruned seqs listed.
    #[test]
    fn pruned_seqs_are_not_gaps() {
        let mut trail = Trail::default();
        for s in 100..150 {
            trail.event(s, Origin::Logged);
        }
        trail.closed(150);
        trail.pruned(range(0, 99));
        let report = trail.judge();
        assert!(report.is_complete(), "{report}");
        assert_eq!(report.pruned, [range(0, 99)]);
        assert!(
            report.to_string().contains("pruned 100 seqs: 0..=99"),
            "{report}"
        );

        let mut partly = Trail::default();
        partly.event(100, Origin::Logged);
        partly.closed(101);
        partly.pruned(range(0, 49));
        assert_eq!(partly.judge().gaps, [range(50, 99)]);
    }

    /// A seq both pruned and still found, or pruned in two segments, was
    /// archived twice: duplicated, not silently merged.
    #[test]
    fn a_seq_pruned_and_still_found_is_a_duplicate() {
        let mut trail = Trail::default();
        for s in 10..20 {
            trail.event(s, Origin::Logged);
        }
        trail.closed(20);
        trail.pruned(range(0, 11));
        let report = trail.judge();
        assert_eq!(report.status, CallStatus::Duplicated, "{report}");
        assert_eq!(report.duplicates, [range(10, 11)]);
        assert_eq!(report.duplicate_records, 2);
        assert!(report.gaps.is_empty());

        let mut twice = Trail::default();
        twice.pruned(range(0, 4));
        twice.pruned(range(3, 9));
        twice.closed(10);
        let report = twice.judge();
        assert_eq!(report.duplicates, [range(3, 4)], "{report}");
        assert_eq!(report.status, CallStatus::Duplicated);
    }
}
