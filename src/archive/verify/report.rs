//! What [`verify`](crate::archive::verify) found: per call, events, seq range, gaps
//! and duplicates; the torn tail; files that are not segments.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// A run of seqs, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeqRange {
    /// The first seq of the run.
    pub first: u64,
    /// The last seq of the run (inclusive).
    pub last: u64,
}

impl SeqRange {
    /// The run of `seq` alone.
    pub(crate) fn single(seq: u64) -> Self {
        Self {
            first: seq,
            last: seq,
        }
    }

    /// How many seqs the run has.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.last.saturating_sub(self.first).saturating_add(1)
    }

    /// Never true: a run has at least one seq.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for SeqRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}..={}", self.first, self.last)
        }
    }
}

/// Where one call's trail stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// The call ended (its closed record is there) and seqs `0..issued` are
    /// each there exactly once.
    Complete,
    /// No closed record: the call was live when the archive was read or when
    /// the host crashed (or the archive predates closed records). Its
    /// durable events are there; the seqs missing below the highest one are
    /// listed. Not an error: a crash loses only events never confirmed
    /// durable.
    Open,
    /// The call ended but seqs below its issued count are missing (or seqs
    /// at or above it appear): events were lost.
    Incomplete,
    /// Some seq (or the closed record) appears more than once.
    Duplicated,
}

impl CallStatus {
    /// Whether this status means lost or doubled records: `Incomplete` or
    /// `Duplicated`.
    #[must_use]
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Incomplete | Self::Duplicated)
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Complete => "complete",
            Self::Open => "open",
            Self::Incomplete => "INCOMPLETE",
            Self::Duplicated => "DUPLICATED",
        })
    }
}

/// One call's trail in the archive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct CallReport {
    /// Complete, open, incomplete or duplicated.
    pub status: CallStatus,
    /// Event records of the call (duplicates included): for an open call,
    /// the events that are durable.
    pub events: u64,
    /// The lowest seq found (0 without events).
    pub first_seq: u64,
    /// The highest seq found (0 without events).
    pub last_seq: u64,
    /// Seqs the call handed out, from its closed record; `None` while open.
    pub issued: Option<u64>,
    /// Closed records of the call (1 for an ended call).
    pub closed_records: u64,
    /// Missing seqs: below `issued` for an ended call, below `last_seq` for
    /// an open one (a trail starts at 0).
    pub gaps: Vec<SeqRange>,
    /// Seqs at or above `issued` (an ended call's trail is `0..issued`).
    pub beyond_issued: Vec<SeqRange>,
    /// Seqs found more than once.
    pub duplicates: Vec<SeqRange>,
    /// Records beyond the first of each duplicated seq.
    pub duplicate_records: u64,
    /// Records with reason `logged`: written through as they were logged.
    pub logged: u64,
    /// Records with reason `drained`: the call ended, and these were still
    /// in its ring (eviction mode).
    pub drained: u64,
    /// Archived notes of the call (note lines, see
    /// [`NoteRecord`](crate::archive::NoteRecord)); 0 unless the call
    /// archived its notes, and always 0 from a database (the shippers carry
    /// audit records only). Notes are not audit events: they count in none of
    /// the fields above and never change the status. A call whose archive
    /// holds only its notes (its audit trail went elsewhere) has no closed
    /// record there, so it is reported open, with 0 events.
    #[serde(default)]
    pub notes: u64,
    /// Seqs retention removed with their segments (per the pruning
    /// manifest): accounted for, so not gaps.
    #[serde(default)]
    pub pruned: Vec<SeqRange>,
}

/// The runs of consecutive values in sorted, deduplicated `seqs`.
#[cfg_attr(
    not(any(test, feature = "sqlite", feature = "postgres")),
    allow(dead_code)
)]
pub(crate) fn runs(seqs: impl Iterator<Item = u64>) -> Vec<SeqRange> {
    let mut out: Vec<SeqRange> = Vec::new();
    for s in seqs {
        match out.last_mut() {
            Some(run) if run.last + 1 == s => run.last = s,
            _ => out.push(SeqRange { first: s, last: s }),
        }
    }
    out
}

impl CallReport {
    /// Builds the report from the call's seqs (any order), the closed
    /// records' issued counts, and its `logged` and `drained` counts.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn from_seqs(seqs: Vec<u64>, closed: &[u64], logged: u64, drained: u64) -> Self {
        use crate::archive::record::Origin;
        let mut trail = crate::archive::verify::seqs::Trail::default();
        for seq in seqs {
            trail.event(seq, Origin::Evicted);
        }
        for &issued in closed {
            trail.closed(issued);
        }
        let mut report = trail.judge();
        report.logged = logged;
        report.drained = drained;
        report
    }

    /// Sets `status` from the other fields: duplicated, open, complete or
    /// incomplete, in that order of precedence.
    pub(crate) fn judged(mut self) -> Self {
        self.status = if !self.duplicates.is_empty() || self.closed_records > 1 {
            CallStatus::Duplicated
        } else if self.issued.is_none() {
            CallStatus::Open
        } else if self.gaps.is_empty() && self.beyond_issued.is_empty() {
            CallStatus::Complete
        } else {
            CallStatus::Incomplete
        };
        self
    }

    /// The call ended and its trail is whole: seqs `0..issued`, each exactly
    /// once.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.status == CallStatus::Complete
    }

    /// How many seqs the gaps hold.
    #[must_use]
    pub fn missing(&self) -> u64 {
        self.gaps.iter().map(SeqRange::len).sum()
    }
}

/// A partial last line a crash left at the end of the last segment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct TornTail {
    /// The segment.
    pub file: PathBuf,
    /// The line (1-based) where the tail starts.
    pub line: u64,
    /// Its byte offset in the file: the length the file is cut to.
    pub offset: u64,
    /// The tail's length in bytes.
    pub bytes: u64,
    /// Whether this run cut it off.
    pub truncated: bool,
}

/// One segment that was read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SegmentReport {
    /// The file.
    pub file: PathBuf,
    /// Records in it.
    pub records: u64,
    /// The file's size in bytes (torn tail included).
    pub bytes: u64,
    /// Whether the file is compressed (a sealed segment).
    #[serde(default)]
    pub compressed: bool,
    /// The segment's plain (uncompressed) length in bytes: `bytes` for a
    /// plain segment.
    #[serde(default)]
    pub plain_bytes: u64,
}

/// What [`verify`](crate::archive::verify) found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The archive directory.
    pub dir: PathBuf,
    /// The segments, in order.
    pub segments: Vec<SegmentReport>,
    /// Files in the directory that are not segments (left alone).
    pub ignored: Vec<PathBuf>,
    /// Records read: events, closed records and archived notes.
    pub records: u64,
    /// Event records read.
    pub events: u64,
    /// Calls whose trail is complete.
    pub complete: u64,
    /// Calls without a closed record (live, or live at a crash).
    pub open: u64,
    /// Ended calls with missing seqs.
    pub incomplete: u64,
    /// Calls with a seq or closed record more than once.
    pub duplicated: u64,
    /// Each call's trail, by call id.
    pub calls: BTreeMap<String, CallReport>,
    /// The torn tail of the last segment, if a crash left one.
    pub torn_tail: Option<TornTail>,
    /// Segments retention removed (their indexes), per the pruning
    /// manifest; their calls' seqs are in [`CallReport::pruned`].
    #[serde(default)]
    pub pruned_segments: Vec<u64>,
    /// Records in those segments (events, closed records and notes).
    #[serde(default)]
    pub pruned_records: u64,
    /// The newest record time among them: everything pruned is at or
    /// before it.
    #[serde(default)]
    pub pruned_through: Option<crate::call::Timestamp>,
}

impl VerifyReport {
    /// Every call ended and its trail is complete (no call open, none
    /// incomplete or duplicated).
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.calls.values().all(CallReport::is_complete)
    }

    /// No call is incomplete or duplicated: nothing was lost or doubled.
    /// Open calls (live at a crash) and a torn tail (never durable) do not
    /// count against this. The archive command exits 0 exactly when this
    /// holds.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.incomplete == 0 && self.duplicated == 0
    }

    /// The calls that are incomplete or duplicated.
    pub fn incomplete_calls(&self) -> impl Iterator<Item = (&str, &CallReport)> + '_ {
        self.calls
            .iter()
            .filter(|(_, c)| c.status.is_failure())
            .map(|(id, c)| (id.as_str(), c))
    }

    /// The calls with the given status.
    pub fn calls_with(&self, status: CallStatus) -> impl Iterator<Item = (&str, &CallReport)> + '_ {
        self.calls
            .iter()
            .filter(move |(_, c)| c.status == status)
            .map(|(id, c)| (id.as_str(), c))
    }
}

/// Shows at most this many ranges per list.
const MAX_RANGES: usize = 8;

fn ranges(f: &mut fmt::Formatter<'_>, list: &[SeqRange]) -> fmt::Result {
    for (i, range) in list.iter().take(MAX_RANGES).enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{range}")?;
    }
    if list.len() > MAX_RANGES {
        write!(f, ", ... ({} more)", list.len() - MAX_RANGES)?;
    }
    Ok(())
}

impl fmt::Display for CallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} events", self.status, self.events)?;
        if self.events > 0 {
            write!(f, ", seqs {}..={}", self.first_seq, self.last_seq)?;
        }
        match self.issued {
            Some(n) => write!(f, ", closed with {n} issued")?,
            None => f.write_str(", no closed record")?,
        }
        if self.drained > 0 {
            write!(f, ", {} drained at end of call", self.drained)?;
        }
        if self.notes > 0 {
            write!(f, ", {} archived notes", self.notes)?;
        }
        if !self.gaps.is_empty() {
            let what = if self.issued.is_some() {
                "MISSING"
            } else {
                "not durable"
            };
            write!(f, "; {what} {} seqs: ", self.missing())?;
            ranges(f, &self.gaps)?;
        }
        if !self.beyond_issued.is_empty() {
            f.write_str("; BEYOND ISSUED: ")?;
            ranges(f, &self.beyond_issued)?;
        }
        if !self.duplicates.is_empty() {
            write!(
                f,
                "; DUPLICATED ({} extra records): ",
                self.duplicate_records
            )?;
            ranges(f, &self.duplicates)?;
        }
        if self.closed_records > 1 {
            write!(f, "; {} CLOSED RECORDS", self.closed_records)?;
        }
        if !self.pruned.is_empty() {
            let pruned: u64 = self.pruned.iter().map(SeqRange::len).sum();
            write!(f, "; pruned {pruned} seqs: ")?;
            ranges(f, &self.pruned)?;
        }
        Ok(())
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |n: u64, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        writeln!(
            f,
            "archive {}: {}, {}, {}",
            self.dir.display(),
            count(self.segments.len() as u64, "segment"),
            count(self.records, "record"),
            count(self.calls.len() as u64, "call"),
        )?;
        for (id, call) in &self.calls {
            writeln!(f, "  {id}: {call}")?;
        }
        if let Some(torn) = &self.torn_tail {
            writeln!(
                f,
                "torn tail: {} line {} (offset {}, {} bytes, never durable){}",
                torn.file.display(),
                torn.line,
                torn.offset,
                torn.bytes,
                if torn.truncated {
                    ", truncated"
                } else {
                    "; run with truncation to cut it"
                }
            )?;
        }
        if let (Some(first), Some(last)) =
            (self.pruned_segments.first(), self.pruned_segments.last())
        {
            writeln!(
                f,
                "pruned by retention: {} (segments {first}..={last}), {}, newest record {}; \
                 their seqs are listed per call as pruned, not as gaps",
                count(self.pruned_segments.len() as u64, "segment"),
                count(self.pruned_records, "record"),
                self.pruned_through
                    .map_or_else(|| "none".to_owned(), |t| t.to_string())
            )?;
        }
        for file in &self.ignored {
            writeln!(f, "ignored (not a segment): {}", file.display())?;
        }
        write!(
            f,
            "result: {}: {} complete, {} open (no closed record: live, or live at a crash), {} incomplete, {} duplicated",
            if self.is_ok() { "ok" } else { "FAILED" },
            self.complete,
            self.open,
            self.incomplete,
            self.duplicated
        )
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn range(first: u64, last: u64) -> SeqRange {
        SeqRange { first, last }
    }

    #[test]
    fn open_calls_list_what_is_not_durable_and_are_not_failures() {
        let report = CallReport::from_seqs(vec![9, 3, 4, 4, 5, 5, 5, 6, 12, 12], &[], 0, 2);
        assert_eq!(
            (report.events, report.first_seq, report.last_seq),
            (10, 3, 12)
        );
        assert_eq!(report.gaps, [range(0, 2), range(7, 8), range(10, 11)]);
        assert_eq!(report.missing(), 7);
        assert_eq!(report.duplicates, [range(4, 5), range(12, 12)]);
        assert_eq!(report.duplicate_records, 4);
        assert_eq!(report.status, CallStatus::Duplicated);
        let text = report.to_string();
        assert!(
            text.contains("not durable 7 seqs: 0..=2, 7..=8, 10..=11"),
            "{text}"
        );
        assert!(
            text.contains("DUPLICATED (4 extra records): 4..=5, 12"),
            "{text}"
        );

        let open = CallReport::from_seqs(vec![0, 1, 3], &[], 3, 0);
        assert_eq!(
            (open.status, open.gaps.clone()),
            (CallStatus::Open, vec![range(2, 2)])
        );
        assert!(!open.status.is_failure());
    }

    #[test]
    fn closed_calls_are_complete_only_with_every_issued_seq_once() {
        let whole = CallReport::from_seqs((0..100).rev().collect(), &[100], 100, 0);
        assert!(whole.is_complete());
        assert_eq!(
            whole.to_string(),
            "complete: 100 events, seqs 0..=99, closed with 100 issued"
        );
        // Cut short: the closed record says 6, only seq 0 is there.
        let short = CallReport::from_seqs(vec![0], &[6], 1, 0);
        assert_eq!(short.status, CallStatus::Incomplete);
        assert_eq!(short.gaps, [range(1, 5)]);
        // Seqs beyond the issued count.
        let beyond = CallReport::from_seqs(vec![0, 1, 2], &[2], 3, 0);
        assert_eq!(
            (beyond.status, beyond.beyond_issued.clone()),
            (CallStatus::Incomplete, vec![range(2, 2)])
        );
        // A call that logged nothing, ended.
        let empty = CallReport::from_seqs(vec![], &[0], 0, 0);
        assert!(empty.is_complete());
        // Two closed records.
        let twice = CallReport::from_seqs(vec![0], &[1, 1], 1, 0);
        assert_eq!(twice.status, CallStatus::Duplicated);
    }
}
