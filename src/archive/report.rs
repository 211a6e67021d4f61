//! What [`verify`](super::verify) found: per call, events, seq range, gaps
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

/// One call's trail in the archive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct CallReport {
    /// Records of the call (duplicates included).
    pub events: u64,
    /// The lowest seq found.
    pub first_seq: u64,
    /// The highest seq found.
    pub last_seq: u64,
    /// Seqs missing below `last_seq` (a trail starts at 0).
    pub gaps: Vec<SeqRange>,
    /// Seqs found more than once.
    pub duplicates: Vec<SeqRange>,
    /// Records beyond the first of each duplicated seq.
    pub duplicate_records: u64,
    /// Records with reason `drained`: the call ended, and these were still
    /// in its ring.
    pub drained: u64,
}

impl CallReport {
    /// Builds the report from the call's seqs (any order) and its drained
    /// count. `seqs` must not be empty.
    pub(crate) fn from_seqs(mut seqs: Vec<u64>, drained: u64) -> Self {
        seqs.sort_unstable();
        let first_seq = seqs.first().copied().unwrap_or(0);
        let last_seq = seqs.last().copied().unwrap_or(0);
        let mut gaps = Vec::new();
        if first_seq > 0 {
            gaps.push(SeqRange {
                first: 0,
                last: first_seq - 1,
            });
        }
        let mut duplicates: Vec<SeqRange> = Vec::new();
        let mut duplicate_records = 0;
        for pair in seqs.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b == a {
                duplicate_records += 1;
                match duplicates.last_mut() {
                    Some(run) if run.last == a || run.last + 1 == a => run.last = a,
                    _ => duplicates.push(SeqRange { first: a, last: a }),
                }
            } else if b > a + 1 {
                gaps.push(SeqRange {
                    first: a + 1,
                    last: b - 1,
                });
            }
        }
        Self {
            events: seqs.len() as u64,
            first_seq,
            last_seq,
            gaps,
            duplicates,
            duplicate_records,
            drained,
        }
    }

    /// No gap and no duplicate: seqs `0..=last_seq`, each exactly once.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.gaps.is_empty() && self.duplicates.is_empty()
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
    /// Its size in bytes (torn tail included).
    pub bytes: u64,
}

/// What [`verify`](super::verify) found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The archive directory.
    pub dir: PathBuf,
    /// The segments, in order.
    pub segments: Vec<SegmentReport>,
    /// Files in the directory that are not segments (left alone).
    pub ignored: Vec<PathBuf>,
    /// Records read.
    pub records: u64,
    /// Each call's trail, by call id.
    pub calls: BTreeMap<String, CallReport>,
    /// The torn tail of the last segment, if a crash left one.
    pub torn_tail: Option<TornTail>,
}

impl VerifyReport {
    /// Every call's trail has no gap and no duplicate. (A torn tail does not
    /// count against this: it was never durable; its event is either a gap,
    /// or was the newest of its call.)
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.calls.values().all(CallReport::is_complete)
    }

    /// The calls with gaps or duplicates.
    pub fn incomplete_calls(&self) -> impl Iterator<Item = (&str, &CallReport)> + '_ {
        self.calls
            .iter()
            .filter(|(_, c)| !c.is_complete())
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
        write!(
            f,
            "{} events, seqs {}..={}",
            self.events, self.first_seq, self.last_seq
        )?;
        if self.drained > 0 {
            write!(f, ", {} drained at end of call", self.drained)?;
        }
        if self.is_complete() {
            return f.write_str(": complete");
        }
        if !self.gaps.is_empty() {
            write!(f, "; MISSING {} seqs: ", self.missing())?;
            ranges(f, &self.gaps)?;
        }
        if !self.duplicates.is_empty() {
            write!(
                f,
                "; DUPLICATED ({} extra records): ",
                self.duplicate_records
            )?;
            ranges(f, &self.duplicates)?;
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
                "torn tail: {} line {} (offset {}, {} bytes){}",
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
        for file in &self.ignored {
            writeln!(f, "ignored (not a segment): {}", file.display())?;
        }
        let bad = self.incomplete_calls().count();
        if bad == 0 {
            write!(f, "result: complete")
        } else {
            write!(
                f,
                "result: INCOMPLETE: {bad} of {} calls have gaps or duplicates",
                self.calls.len()
            )
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn gaps_and_duplicates_come_out_as_ranges() {
        let report = CallReport::from_seqs(vec![9, 3, 4, 4, 5, 5, 5, 6, 12, 12], 2);
        assert_eq!(
            (report.events, report.first_seq, report.last_seq),
            (10, 3, 12)
        );
        let range = |first, last| SeqRange { first, last };
        assert_eq!(report.gaps, [range(0, 2), range(7, 8), range(10, 11)]);
        assert_eq!(report.missing(), 7);
        assert_eq!(report.duplicates, [range(4, 5), range(12, 12)]);
        assert_eq!(report.duplicate_records, 4);
        assert!(!report.is_complete());
        let text = report.to_string();
        assert!(
            text.contains("MISSING 7 seqs: 0..=2, 7..=8, 10..=11"),
            "{text}"
        );
        assert!(
            text.contains("DUPLICATED (4 extra records): 4..=5, 12"),
            "{text}"
        );

        let whole = CallReport::from_seqs((0..100).rev().collect(), 0);
        assert!(whole.is_complete());
        assert_eq!(whole.to_string(), "100 events, seqs 0..=99: complete");
    }
}
