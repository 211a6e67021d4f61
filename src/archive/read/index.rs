//! The index of a sealed segment: a sidecar file `audit-<digits>.idx` that
//! says, per call, how many records the segment holds and where their lines
//! are, so one call's trail is read back without reading the rest of the
//! segment; and, for retention, the segment's time range and each call's
//! seq range.
//!
//! On disk (integers of the header and trailer little-endian):
//!
//! ```text
//! "CRIX" | format u8 (1) | postcard(SegmentIndex) | CRC32C of all bytes before it, u32
//! ```
//!
//! All offsets are plain byte offsets into the segment, so an index stays
//! valid when its segment is compressed. An index that does not check out
//! (wrong magic, format or checksum, another segment's, or a segment of
//! another length) is ignored: readers scan the segment instead, and
//! [`index_archive`] writes it again.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use crate::archive::error::{IoFailure, IoOp};
use crate::archive::record::{index_file_name, ArchiveLine, SegmentPath};
use crate::archive::spool::fs::{lock_dir, write_atomically, ArchiveFs, StdFs};
use crate::archive::verify::report::SeqRange;
use crate::archive::verify::VerifyError;
use crate::call::Timestamp;

use super::lines::{ScanError, SegmentLines, Step};
use super::{list_segments, open_segment, scan_error};

const MAGIC: &[u8; 4] = b"CRIX";
const FORMAT: u8 = 1;
/// Magic, format, checksum.
const FRAMING: usize = MAGIC.len() + 1 + 4;

/// Lines of one call at most this far apart share one byte run.
const RUN_GAP: u64 = 64 << 10;
/// At most this many runs per call and segment; beyond, the two closest
/// runs merge (reading a little more of the segment, never less).
const MAX_RUNS: usize = 32;

/// What the index of one sealed segment says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SegmentIndex {
    /// The segment's index (its number).
    pub(crate) segment: u64,
    /// The plain segment's length in bytes: an index of a segment of
    /// another length is stale.
    pub(crate) plain_len: u64,
    /// Lines (records) in the segment.
    pub(crate) records: u64,
    /// Event records among them.
    pub(crate) events: u64,
    /// The earliest and latest `at` of its records (unix nanoseconds);
    /// `None` for an empty segment.
    pub(crate) time_range: Option<(i64, i64)>,
    /// Per call, sorted by call id.
    pub(crate) calls: Vec<CallEntry>,
}

/// One call's records in a segment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CallEntry {
    /// The call.
    pub(crate) call_id: String,
    /// Its lines in the segment: events, notes and closed records.
    pub(crate) records: u64,
    /// Its event records.
    pub(crate) events: u64,
    /// Its archived notes (note lines).
    pub(crate) notes: u64,
    /// The lowest and highest audit seq of its events; `None` without
    /// events (note seqs are not audit seqs).
    pub(crate) seqs: Option<SeqRange>,
    /// Its closed records (1 where the call ended in this segment).
    pub(crate) closed: u64,
    /// The issued count of its closed record (the largest, if several).
    pub(crate) issued: Option<u64>,
    /// The earliest and latest `at` of its records (unix nanoseconds).
    pub(crate) time_range: (i64, i64),
    /// Where its lines are: ordered, disjoint runs of plain bytes holding
    /// every line of the call (and lines of other calls between them).
    pub(crate) runs: Vec<ByteRun>,
}

/// A run of whole lines: plain bytes `start..end`, starting at line `line`
/// (1-based) of the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ByteRun {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) line: u64,
}

impl SegmentIndex {
    /// The entry of `call_id`, if the segment holds any of its records.
    pub(crate) fn call(&self, call_id: &str) -> Option<&CallEntry> {
        self.calls
            .binary_search_by(|c| c.call_id.as_str().cmp(call_id))
            .ok()
            .map(|i| &self.calls[i])
    }

    /// The earliest and latest `at` among the segment's records.
    pub(crate) fn times(&self) -> Option<(Timestamp, Timestamp)> {
        self.time_range
            .map(|(a, b)| (Timestamp::from_unix_nanos(a), Timestamp::from_unix_nanos(b)))
    }

    /// The file's bytes: magic, format, postcard body, checksum.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.calls.len() * 48);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        // Writing to a Vec cannot fail, and every field serialises.
        let mut out = postcard::to_extend(self, out).unwrap_or_else(|_| MAGIC.to_vec());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads an index back from [`to_bytes`](Self::to_bytes) output,
    /// checking its framing, checksum and shape.
    pub(crate) fn from_bytes(bytes: &[u8]) -> io::Result<Self> {
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad segment index: {what}"),
            )
        };
        if bytes.len() < FRAMING || &bytes[..MAGIC.len()] != MAGIC {
            return Err(bad("not an index file"));
        }
        if bytes[MAGIC.len()] != FORMAT {
            return Err(bad("unknown format"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes(crc.try_into().map_err(|_| bad("short"))?);
        if crc32c::crc32c(body) != stored {
            return Err(bad("checksum mismatch"));
        }
        let (index, rest): (Self, _) =
            postcard::take_from_bytes(&body[MAGIC.len() + 1..]).map_err(|e| bad(&e.to_string()))?;
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let sorted = index.calls.windows(2).all(|w| w[0].call_id < w[1].call_id);
        let runs_fit = index.calls.iter().all(|c| {
            !c.runs.is_empty()
                && c.runs.windows(2).all(|w| w[0].end < w[1].start)
                && c.runs
                    .iter()
                    .all(|r| r.start < r.end && r.end <= index.plain_len && r.line >= 1)
        });
        if !sorted || !runs_fit {
            return Err(bad("entries out of order or out of the segment"));
        }
        Ok(index)
    }
}

impl CallEntry {
    /// The plain bytes from its first line's start to its last line's end.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn byte_range(&self) -> (u64, u64) {
        match (self.runs.first(), self.runs.last()) {
            (Some(first), Some(last)) => (first.start, last.end),
            _ => (0, 0),
        }
    }

    fn new(call_id: String, at: i64) -> Self {
        Self {
            call_id,
            records: 0,
            events: 0,
            notes: 0,
            seqs: None,
            closed: 0,
            issued: None,
            time_range: (at, at),
            runs: Vec::new(),
        }
    }

    fn add_line(&mut self, start: u64, end: u64, line: u64) {
        match self.runs.last_mut() {
            Some(run) if start <= run.end.saturating_add(RUN_GAP) => run.end = end,
            _ => {
                self.runs.push(ByteRun { start, end, line });
                if self.runs.len() > MAX_RUNS {
                    // Merge the two runs closest to each other.
                    let closest = (0..self.runs.len() - 1)
                        .min_by_key(|&i| self.runs[i + 1].start - self.runs[i].end)
                        .unwrap_or(0);
                    self.runs[closest].end = self.runs[closest + 1].end;
                    self.runs.remove(closest + 1);
                }
            }
        }
    }
}

/// Builds the index of sealed segment number `segment` from its plain
/// lines, read once from `src` (memory: one line, plus one entry per call).
///
/// A line that is not a record, or an unterminated last line that does not
/// parse, is an error: a sealed segment is whole.
#[cfg(all(test, not(loom)))]
pub(crate) fn build<R: BufRead>(src: R, segment: u64) -> Result<SegmentIndex, ScanError> {
    build_with(src, segment, false).map(|built| built.unwrap_or_else(|| empty(segment)))
}

fn empty(segment: u64) -> SegmentIndex {
    SegmentIndex {
        segment,
        plain_len: 0,
        records: 0,
        events: 0,
        time_range: None,
        calls: Vec::new(),
    }
}

/// [`build`]; where `tail_allowed`, a torn tail makes it `None` (the
/// segment is not sealed yet).
fn build_with<R: BufRead>(
    src: R,
    segment: u64,
    tail_allowed: bool,
) -> Result<Option<SegmentIndex>, ScanError> {
    let mut lines = SegmentLines::new(src, tail_allowed);
    let mut calls: HashMap<String, CallEntry> = HashMap::new();
    let mut index = empty(segment);
    while let Some(step) = lines.next_step() {
        let scanned = match step? {
            Step::Line(scanned) => scanned,
            Step::Torn { .. } => return Ok(None),
        };
        let (call_id, at) = match &scanned.line {
            ArchiveLine::Event(r) => (r.call_id.as_str(), r.at.unix_nanos()),
            ArchiveLine::Closed(c) => (c.call_id.as_str(), c.at.unix_nanos()),
            ArchiveLine::Note(n) => (n.call_id.as_str(), n.at.unix_nanos()),
        };
        let entry = match calls.get_mut(call_id) {
            Some(entry) => entry,
            None => calls
                .entry(call_id.to_owned())
                .or_insert_with(|| CallEntry::new(call_id.to_owned(), at)),
        };
        entry.records += 1;
        entry.time_range = (entry.time_range.0.min(at), entry.time_range.1.max(at));
        entry.add_line(scanned.offset, scanned.offset + scanned.len, scanned.number);
        match &scanned.line {
            ArchiveLine::Event(r) => {
                entry.events += 1;
                entry.seqs = Some(match entry.seqs {
                    None => SeqRange::single(r.seq),
                    Some(s) => SeqRange {
                        first: s.first.min(r.seq),
                        last: s.last.max(r.seq),
                    },
                });
                index.events += 1;
            }
            ArchiveLine::Closed(c) => {
                entry.closed += 1;
                entry.issued = Some(entry.issued.map_or(c.issued, |n| n.max(c.issued)));
            }
            ArchiveLine::Note(_) => entry.notes += 1,
        }
        index.records += 1;
        index.time_range = Some(match index.time_range {
            None => (at, at),
            Some((a, b)) => (a.min(at), b.max(at)),
        });
    }
    index.plain_len = lines.offset();
    index.calls = calls.into_values().collect();
    index
        .calls
        .sort_unstable_by(|a, b| a.call_id.cmp(&b.call_id));
    Ok(Some(index))
}

/// Reads sealed `segment` (plain or compressed) through its reader, builds
/// its index and writes it next to it as `audit-<digits>.idx`, atomically
/// (a temporary file, fsynced, renamed, the directory fsynced).
///
/// # Errors
///
/// Whatever reading the segment or writing the index reports; a segment
/// line that is not a record is [`io::ErrorKind::InvalidData`], its message
/// naming the file and line.
pub(crate) fn write_index(
    fs: &dyn ArchiveFs,
    dir: &Path,
    segment: &SegmentPath,
) -> io::Result<SegmentIndex> {
    index_segment(fs, dir, segment, false)
        .map_err(io::Error::from)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "segment has a torn tail"))
}

/// Builds and writes the index of `segment`; `None` (and nothing written)
/// if `tail_allowed` and it ends in a torn tail.
fn index_segment(
    fs: &dyn ArchiveFs,
    dir: &Path,
    segment: &SegmentPath,
    tail_allowed: bool,
) -> Result<Option<SegmentIndex>, VerifyError> {
    let opened = open_segment(segment, None)?;
    let plain_len = opened.reader.plain_len();
    let src = opened
        .reader
        .all()
        .map_err(|e| IoFailure::new(IoOp::Read, &opened.path, &e))?;
    let Some(index) = build_with(src, segment.index, tail_allowed && !opened.compressed)
        .map_err(|e| scan_error(e, &opened.path))?
    else {
        return Ok(None);
    };
    if index.plain_len != plain_len {
        return Err(VerifyError::Changed { file: opened.path });
    }
    let name = index_file_name(segment.index);
    write_atomically(fs, dir, &name, &index.to_bytes())
        .map_err(|e| IoFailure::new(IoOp::Write, dir.join(&name), &e))?;
    Ok(Some(index))
}

/// The index of segment number `segment` in `dir`, if it has one that
/// checks out for a plain length of `plain_len`; the bytes read are added
/// to `counter`.
pub(crate) fn read_index(
    dir: &Path,
    segment: u64,
    plain_len: u64,
    counter: Option<&std::sync::atomic::AtomicU64>,
) -> Option<SegmentIndex> {
    let bytes = std::fs::read(dir.join(index_file_name(segment))).ok()?;
    if let Some(counter) = counter {
        // Relaxed: a statistics counter, read after the reads.
        counter.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
    SegmentIndex::from_bytes(&bytes)
        .ok()
        .filter(|index| index.segment == segment && index.plain_len == plain_len)
}

/// What [`index_archive`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexSummary {
    /// Segments in the archive.
    pub segments: u64,
    /// Indexes written by this run.
    pub written: u64,
    /// Segments that already had a valid index.
    pub current: u64,
    /// Segments left without an index: the one a running archiver is
    /// writing, or a last segment ending in a crash's torn tail (cut it
    /// with [`verify_with`](crate::archive::verify_with) first).
    pub skipped: Vec<PathBuf>,
}

impl fmt::Display for IndexSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} segments: {} indexed now, {} already indexed",
            self.segments, self.written, self.current
        )?;
        for path in &self.skipped {
            write!(f, "; skipped {} (not sealed)", path.display())?;
        }
        Ok(())
    }
}

/// Writes the index of every sealed segment in `dir` that lacks a valid
/// one (see [`ArchiveReader::call`](crate::archive::ArchiveReader::call),
/// which reads only the lines an index points at).
///
/// A maintenance entry point: safe while an archiver runs. If an archiver
/// holds the directory's lock, the segment it is writing (the last one) is
/// skipped; otherwise this takes the lock for the duration, so no archiver
/// starts meanwhile, and indexes every segment (but a last one that ends in
/// a crash's torn tail). Indexes are written atomically; a segment already
/// indexed is only read for its length.
///
/// # Errors
///
/// [`VerifyError::NotFound`] / [`VerifyError::NotADirectory`] for a bad
/// path, [`VerifyError::Io`] if a segment cannot be read or an index cannot
/// be written, [`VerifyError::Corrupt`] for a segment line that is not a
/// record.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::archive::{index_archive, ArchiveConfig, ArchiveReader, Archiver};
/// use callring::call::CallState;
///
/// let dir = tempfile::tempdir().expect("temp dir");
/// for id in ["call-1", "call-2"] {
///     // Each run of an archiver starts a new segment.
///     let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
///     let call = CallState::builder(id).audit_archive(archiver.sink(id)).build();
///     let _ = call.end();
///     archiver.stop().expect("clean stop");
/// }
/// // The second run's sealer may already have indexed the first segment.
/// let summary = index_archive(dir.path()).expect("indexed");
/// assert_eq!((summary.segments, summary.written + summary.current), (2, 2));
/// assert_eq!(index_archive(dir.path()).expect("indexed").current, 2);
///
/// let reader = ArchiveReader::open(dir.path()).expect("readable");
/// assert_eq!(reader.call("call-2").expect("read").lines.len(), 1);
/// # }
/// ```
pub fn index_archive(dir: impl AsRef<Path>) -> Result<IndexSummary, VerifyError> {
    let dir = dir.as_ref();
    list_segments(dir)?; // the directory's checks first
    let lock = match lock_dir(dir) {
        Ok(lock) => Some(lock),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => return Err(IoFailure::new(IoOp::Lock, dir, &e).into()),
    };
    let (segments, _) = list_segments(dir)?;
    let mut summary = IndexSummary {
        segments: segments.len() as u64,
        written: 0,
        current: 0,
        skipped: Vec::new(),
    };
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if last && lock.is_none() && !segment.compressed {
            summary.skipped.push(segment.path.clone());
            continue;
        }
        let plain_len = open_segment(segment, None)?.reader.plain_len();
        if read_index(dir, segment.index, plain_len, None).is_some() {
            summary.current += 1;
            continue;
        }
        match index_segment(&StdFs, dir, segment, last)? {
            Some(_) => summary.written += 1,
            None => summary.skipped.push(segment.path.clone()),
        }
    }
    drop(lock);
    Ok(summary)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::archive::record::{encode_closed, encode_line, encode_note, Origin};
    use crate::call::{AuditEvent, AuditEventType, Details};

    fn event(call: &str, seq: u64, at: i64, out: &mut Vec<u8>) {
        let event = AuditEvent::new(
            seq,
            Timestamp::from_unix_nanos(at),
            AuditEventType::ToolInvoked,
            None,
            Details::new(),
        );
        encode_line(call, Origin::Logged, &event, out);
    }

    fn segment() -> Vec<u8> {
        let mut out = Vec::new();
        event("b", 0, 50, &mut out);
        event("a", 1, 20, &mut out);
        event("a", 0, 10, &mut out);
        let note = crate::call::Note::new(Timestamp::from_unix_nanos(5), "asked about the invoice");
        encode_note("a", 0, Origin::Drained, &note, &mut out);
        encode_closed("a", 2, Timestamp::from_unix_nanos(60), &mut out);
        event("b", 1, 70, &mut out);
        out
    }

    #[test]
    fn entries_say_where_each_calls_lines_are() {
        let bytes = segment();
        let index = build(&bytes[..], 7).expect("builds");
        assert_eq!((index.segment, index.plain_len), (7, bytes.len() as u64));
        assert_eq!((index.records, index.events), (6, 4));
        assert_eq!(index.time_range, Some((5, 70)));
        let ids: Vec<_> = index.calls.iter().map(|c| c.call_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let a = index.call("a").expect("a");
        assert_eq!((a.records, a.events, a.notes), (4, 2, 1));
        assert_eq!((a.closed, a.issued), (1, Some(2)));
        assert_eq!(a.seqs, Some(SeqRange { first: 0, last: 1 }));
        assert_eq!(a.time_range, (5, 60));
        let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
        let starts: Vec<u64> = lines
            .iter()
            .scan(0u64, |at, l| {
                let start = *at;
                *at += l.len() as u64;
                Some(start)
            })
            .collect();
        assert_eq!(
            a.runs,
            [ByteRun {
                start: starts[1],
                end: starts[5],
                line: 2
            }]
        );
        assert_eq!(a.byte_range(), (starts[1], starts[5]));
        assert_eq!(
            index.call("b").expect("b").byte_range(),
            (0, bytes.len() as u64)
        );
        assert!(index.call("c").is_none());

        let file = index.to_bytes();
        assert_eq!(SegmentIndex::from_bytes(&file).expect("reads back"), index);
        for i in [0, 4, 5, file.len() / 2, file.len() - 1] {
            let mut bad = file.clone();
            bad[i] ^= 0x10;
            assert!(SegmentIndex::from_bytes(&bad).is_err(), "byte {i}");
        }
        assert!(SegmentIndex::from_bytes(&file[..file.len() - 1]).is_err());
    }

    /// A sparse call gets several runs, never more than the cap.
    #[test]
    fn runs_split_far_apart_lines_and_stay_bounded() {
        let mut bytes = Vec::new();
        let filler = |out: &mut Vec<u8>, n: u64| {
            for s in 0..n {
                event("filler", s, 0, out);
            }
        };
        for s in 0..100 {
            event("sparse", s, 0, &mut bytes);
            filler(&mut bytes, 500); // ~80 KB: beyond the run gap
        }
        let index = build(&bytes[..], 1).expect("builds");
        let sparse = index.call("sparse").expect("present");
        assert_eq!(sparse.runs.len(), MAX_RUNS);
        assert_eq!(sparse.records, 100);
        assert_eq!(sparse.runs[0].line, 1);
        assert!(sparse.runs.windows(2).all(|w| w[0].end < w[1].start));
        assert_eq!(index.call("filler").expect("present").runs.len(), 1);
    }

    #[test]
    fn a_corrupt_or_torn_line_is_an_error_for_a_sealed_segment() {
        let mut bytes = segment();
        bytes.extend_from_slice(b"{\"v\":3,\"call");
        match build(&bytes[..], 1) {
            Err(ScanError::Corrupt { number, .. }) => assert_eq!(number, 7),
            other => panic!("{other:?}"),
        }
        assert!(matches!(build_with(&bytes[..], 1, true), Ok(None)));
    }

    #[test]
    fn write_index_writes_a_sidecar_that_reads_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(crate::archive::segment_name(3));
        std::fs::write(&path, segment()).expect("written");
        let seg = SegmentPath {
            index: 3,
            path,
            compressed: false,
        };
        let index = write_index(&StdFs, dir.path(), &seg).expect("indexed");
        let on_disk = std::fs::read(dir.path().join(index_file_name(3))).expect("written");
        assert_eq!(SegmentIndex::from_bytes(&on_disk).expect("valid"), index);
        let len = segment().len() as u64;
        assert_eq!(read_index(dir.path(), 3, len, None), Some(index));
        assert_eq!(read_index(dir.path(), 3, len + 1, None), None, "stale");
        assert_eq!(read_index(dir.path(), 4, len, None), None, "absent");
    }
}
