//! Retention: removing whole sealed segments once their records are old
//! enough (or the archive too big), each recorded first in the pruning
//! manifest [`MANIFEST_FILE`](super::MANIFEST_FILE), so a verifier can tell
//! what retention removed from what was lost.
//!
//! Pruning segment `N`, and what a crash after each step leaves:
//!
//! | step | after a crash |
//! |---|---|
//! | append `N`'s manifest line, fsync (and the directory, if new) | `N` present and listed: readers skip it as pruned; the next start removes it |
//! | remove `N`'s files (plain or compressed, and its index) | as above, or gone |
//! | fsync the directory | gone, listed |
//!
//! A torn manifest line (a crash during the append) is cut before the next
//! append; its segment was not yet removed, so nothing is lost or listed
//! twice.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use crate::archive::error::{ArchiveError, IoFailure, IoOp};
use crate::archive::read::index::read_index;
use crate::archive::record::{
    check_crc, compressed_segment_name, end_line, index_file_name, parse_line, segment_name,
    sort_segments, ArchiveLine, LineError, SegmentPath,
};
use crate::archive::spool::fs::{remove_if_present, ArchiveFs, StdFs};
use crate::archive::spool::zst::SegmentReader;
use crate::archive::spool::MANIFEST_FILE;
use crate::archive::verify::report::{runs, SeqRange};
use crate::call::Timestamp;

/// Retention settings.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Retention {
    max_age: Option<Duration>,
    max_bytes: Option<u64>,
}

impl Retention {
    pub(crate) fn new(max_age: Option<Duration>, max_bytes: Option<u64>) -> Self {
        Self { max_age, max_bytes }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.max_age.is_some() || self.max_bytes.is_some()
    }
}

/// A segment removed by retention, as its line in the pruning manifest
/// records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct PrunedSegment {
    /// The segment's index.
    pub segment: u64,
    /// The file removed (plain or compressed).
    pub file: String,
    /// Its size on disk.
    pub bytes: u64,
    /// Records in it.
    pub records: u64,
    /// Audit events among them.
    pub events: u64,
    /// The oldest record's time (`None` for an empty segment).
    pub first_at: Option<Timestamp>,
    /// The newest record's time.
    pub last_at: Option<Timestamp>,
    /// When it was pruned.
    pub pruned_at: Timestamp,
    /// Each call's records in it, by call id.
    pub calls: BTreeMap<String, PrunedCall>,
}

/// One call's records in a pruned segment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct PrunedCall {
    /// The seqs of its audit events (each run once, even if duplicated).
    pub seqs: Vec<SeqRange>,
    /// Its audit event records (duplicates included).
    pub events: u64,
    /// The seqs it issued, if its closed record was in the segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued: Option<u64>,
    /// Its archived notes (not audit events).
    #[serde(default)]
    pub notes: u64,
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct PruneReport {
    /// The segments removed, oldest first.
    pub segments: Vec<PrunedSegment>,
    /// Their bytes on disk.
    pub bytes: u64,
    /// Their records.
    pub records: u64,
    /// Segments left in place because they could not be read, or hold a
    /// line that is not a record (a segment is pruned only when every
    /// record in it is accounted for in the manifest).
    pub skipped: Vec<IoFailure>,
}

impl fmt::Display for PruneReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.segments.first(), self.segments.last()) {
            (Some(first), Some(last)) => write!(
                f,
                "pruned {} segment(s) ({}..={}), {} records, {} bytes",
                self.segments.len(),
                first.segment,
                last.segment,
                self.records,
                self.bytes
            ),
            _ => f.write_str("nothing to prune"),
        }?;
        for failure in &self.skipped {
            write!(f, "; kept {failure}")?;
        }
        Ok(())
    }
}

/// Removes every sealed segment of the archive in `dir` whose newest record
/// is older than `before` (and empty segments), recording each in the
/// pruning manifest first. For an archive no archiver has open (an offline
/// tool, `callring-archive prune`); a running archiver prunes its own
/// directory with
/// [`Archiver::prune_before`](crate::archive::Archiver::prune_before).
///
/// # Errors
///
/// [`ArchiveError::Locked`] while an archiver holds `dir`,
/// [`ArchiveError::Io`] if the directory cannot be read or a file not
/// removed (segments pruned before the failure stay pruned and listed).
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::archive::{prune_before, verify, ArchiveConfig, Archiver};
/// use callring::call::{CallState, Timestamp};
///
/// let dir = tempfile::tempdir().expect("temp dir");
/// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
/// let call = CallState::builder("call-1").audit_archive(archiver.sink("call-1")).build();
/// let _ = call.end();
/// archiver.stop().expect("clean stop");
///
/// let report = prune_before(dir.path(), Timestamp::now()).expect("pruned");
/// assert_eq!(report.records, 1); // the call's closed record
/// let verified = verify(dir.path()).expect("readable");
/// assert!(verified.is_complete());
/// # }
/// ```
pub fn prune_before(dir: impl AsRef<Path>, before: Timestamp) -> Result<PruneReport, ArchiveError> {
    let dir = dir.as_ref();
    let (_lock, _) = crate::archive::spool::seal::open_offline(dir)?;
    let fs = StdFs;
    let mut times = BTreeMap::new();
    Ok(prune(
        &fs,
        dir,
        u64::MAX,
        &Retention::default(),
        Some(before),
        &mut times,
    )?)
}

/// Prunes the segments below `writing` that `retention` or `before` select;
/// Prunes the segments below `writing` that `retention` or `before` select;
/// `times` caches each segment's newest record time between calls.
///
/// A segment that cannot be read (or holds a line that is not a record) is
/// left in place and reported in [`PruneReport::skipped`]; the others are
/// still pruned. A segment the manifest already lists (a prune interrupted
/// after its line) is only removed, never listed twice.
pub(crate) fn prune(
    fs: &dyn ArchiveFs,
    dir: &Path,
    writing: u64,
    retention: &Retention,
    before: Option<Timestamp>,
    times: &mut BTreeMap<u64, Option<Timestamp>>,
) -> Result<PruneReport, IoFailure> {
    let names = fs
        .list_dir(dir)
        .map_err(|e| IoFailure::new(IoOp::ListDir, dir, &e))?;
    let (segments, _) = sort_segments(dir, names);
    let listed = pruned_indexes(fs, dir)?;
    let now = Timestamp::now();
    let age_cutoff = retention.max_age.map(|age| {
        let nanos = i64::try_from(age.as_nanos()).unwrap_or(i64::MAX);
        Timestamp::from_unix_nanos(now.unix_nanos().saturating_sub(nanos))
    });
    let cutoff = match (before, age_cutoff) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    // Bytes on disk per segment: its file and its index.
    let mut sizes = Vec::with_capacity(segments.len());
    for segment in &segments {
        let len = fs
            .file_len(&segment.path)
            .map_err(|e| IoFailure::new(IoOp::Read, &segment.path, &e))?;
        let index = fs
            .file_len(&dir.join(index_file_name(segment.index)))
            .unwrap_or(0);
        sizes.push(len + index);
    }
    let mut total: u64 = sizes.iter().sum();
    times.retain(|index, _| segments.iter().any(|s| s.index == *index));
    let mut report = PruneReport::default();
    let mut removed_any = false;
    for (segment, &len) in segments.iter().zip(&sizes) {
        if segment.index >= writing {
            break;
        }
        if listed.contains(&segment.index) {
            remove_segment(fs, dir, segment.index)?;
            removed_any = true;
            total -= len;
            continue;
        }
        let too_big = retention.max_bytes.is_some_and(|max| total > max);
        let too_old = match cutoff {
            None => false,
            Some(cutoff) => {
                let newest = match times.get(&segment.index) {
                    Some(newest) => Ok(*newest),
                    None => newest_record(dir, segment),
                };
                match newest {
                    Ok(newest) => {
                        times.insert(segment.index, newest);
                        newest.is_none_or(|t| t < cutoff)
                    }
                    Err(e) => {
                        report.skipped.push(e);
                        continue;
                    }
                }
            }
        };
        if !too_big && !too_old {
            // Segments are pruned oldest first; by size, stop at the first
            // kept one. By age, a later segment may still be older (a host
            // clock set back), so look at every one.
            if cutoff.is_none() {
                break;
            }
            continue;
        }
        let mut pruned = match summarize(segment) {
            Ok(pruned) => pruned,
            Err(e) => {
                report.skipped.push(e);
                continue;
            }
        };
        pruned.bytes = len;
        pruned.pruned_at = now;
        append_manifest(fs, dir, &pruned)?;
        remove_segment(fs, dir, segment.index)?;
        removed_any = true;
        times.remove(&segment.index);
        total -= len;
        report.bytes += len;
        report.records += pruned.records;
        report.segments.push(pruned);
    }
    if removed_any {
        fs.sync_dir(dir)
            .map_err(|e| IoFailure::new(IoOp::SyncDir, dir, &e))?;
    }
    if !report.segments.is_empty() {
        crate::obs::segments_pruned(report.segments.len() as u64, report.bytes);
    }
    Ok(report)
}

/// Removes every file of segment `index` (plain, compressed, index).
fn remove_segment(fs: &dyn ArchiveFs, dir: &Path, index: u64) -> Result<(), IoFailure> {
    for name in [
        segment_name(index),
        compressed_segment_name(index),
        index_file_name(index),
    ] {
        let path = dir.join(name);
        remove_if_present(fs, &path).map_err(|e| IoFailure::new(IoOp::Remove, &path, &e))?;
    }
    Ok(())
}

/// Removes the files of segments the manifest lists (a crash between the
/// manifest's line and the removal). Returns whether it removed any, and
/// the highest segment index the manifest lists: a new segment must be
/// numbered above it, or readers would skip it as pruned.
pub(crate) fn finish_interrupted(
    fs: &dyn ArchiveFs,
    dir: &Path,
    segments: &mut Vec<SegmentPath>,
) -> Result<(bool, Option<u64>), IoFailure> {
    let pruned = pruned_indexes(fs, dir)?;
    let highest = pruned.last().copied();
    let before = segments.len();
    let mut failed = None;
    segments.retain(|segment| {
        if failed.is_some() || !pruned.contains(&segment.index) {
            return true;
        }
        if let Err(e) = remove_segment(fs, dir, segment.index) {
            failed = Some(e);
        }
        false
    });
    if let Some(e) = failed {
        return Err(e);
    }
    Ok((segments.len() < before, highest))
}

/// Hands each segment the pruning manifest of `dir` lists to `f`, in the
/// order pruned, reading one line at a time (the manifest grows with every
/// pruned segment). A segment listed twice (a prune retried after its line
/// was written) is handed over once. A torn last line (a crash while
/// appending) is ignored; any other line that does not parse is an error.
pub(crate) fn for_each_pruned(
    fs: &dyn ArchiveFs,
    dir: &Path,
    mut f: impl FnMut(PrunedSegment),
) -> Result<(), IoFailure> {
    let path = dir.join(MANIFEST_FILE);
    let file = match fs.open_read(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(IoFailure::new(IoOp::Read, &path, &e)),
    };
    let mut reader = BufReader::new(file);
    let mut seen = std::collections::HashSet::new();
    let mut line = Vec::new();
    for n in 1.. {
        line.clear();
        reader
            .read_until(b'\n', &mut line)
            .map_err(|e| IoFailure::new(IoOp::Read, &path, &e))?;
        let Some(body) = line.strip_suffix(b"\n") else {
            return Ok(()); // the end, or a torn last line
        };
        if body.is_empty() {
            continue;
        }
        let segment = decode_manifest_line(body).map_err(|reason| {
            let e = io::Error::new(io::ErrorKind::InvalidData, format!("line {n}: {reason}"));
            IoFailure::new(IoOp::Read, &path, &e)
        })?;
        if seen.insert(segment.segment) {
            f(segment);
        }
    }
    Ok(())
}

/// The indexes of the segments the pruning manifest of `dir` lists.
pub(crate) fn pruned_indexes(
    fs: &dyn ArchiveFs,
    dir: &Path,
) -> Result<std::collections::BTreeSet<u64>, IoFailure> {
    let mut out = std::collections::BTreeSet::new();
    for_each_pruned(fs, dir, |p| {
        out.insert(p.segment);
    })?;
    Ok(out)
}

/// Appends `segment`'s line to the manifest durably, first cutting a torn
/// line a crash left at its end (read from the end, not the whole file).
fn append_manifest(
    fs: &dyn ArchiveFs,
    dir: &Path,
    segment: &PrunedSegment,
) -> Result<(), IoFailure> {
    let path = dir.join(MANIFEST_FILE);
    let len = match fs.file_len(&path) {
        Ok(len) => Some(len),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(IoFailure::new(IoOp::Read, &path, &e)),
    };
    let whole = match len {
        None | Some(0) => 0,
        Some(len) => {
            whole_prefix(fs, &path, len).map_err(|e| IoFailure::new(IoOp::Read, &path, &e))?
        }
    };
    let mut file = fs
        .open_append(&path)
        .map_err(|e| IoFailure::new(IoOp::Open, &path, &e))?;
    if len.is_some_and(|len| whole < len) {
        file.truncate(whole)
            .map_err(|e| IoFailure::new(IoOp::Truncate, &path, &e))?;
    }
    let line = encode_manifest_line(segment)
        .map_err(|e| IoFailure::new(IoOp::Write, &path, &io::Error::other(e)))?;
    file.write_all(&line)
        .map_err(|e| IoFailure::new(IoOp::Write, &path, &e))?;
    file.sync_data()
        .map_err(|e| IoFailure::new(IoOp::Sync, &path, &e))?;
    if len.is_none() {
        fs.sync_dir(dir)
            .map_err(|e| IoFailure::new(IoOp::SyncDir, dir, &e))?;
    }
    Ok(())
}

/// The length of the whole lines at the start of the `len`-byte file
/// `path`: up to its last newline, found by reading back from the end.
fn whole_prefix(fs: &dyn ArchiveFs, path: &Path, len: u64) -> io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = fs.open_read(path)?;
    let mut end = len;
    let mut chunk = vec![0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let buf = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(buf)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// `segment` as a manifest line: its JSON object ended, like every archive
/// line, by its checksum ([`end_line`]).
fn encode_manifest_line(segment: &PrunedSegment) -> Result<Vec<u8>, serde_json::Error> {
    let mut line = serde_json::to_vec(segment)?;
    end_line(&mut line, 0);
    Ok(line)
}

fn decode_manifest_line(line: &[u8]) -> Result<PrunedSegment, String> {
    match check_crc(line) {
        Ok(true) => serde_json::from_slice(line).map_err(|e| e.to_string()),
        Ok(false) => Err("no checksum".into()),
        Err(LineError::Checksum { .. }) => Err("checksum mismatch".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The newest record time in `segment`: from its index when it has a valid
/// one, else by reading it.
fn newest_record(dir: &Path, segment: &SegmentPath) -> Result<Option<Timestamp>, IoFailure> {
    let reader = SegmentReader::open(&segment.path, segment.compressed)
        .map_err(|e| IoFailure::new(IoOp::Read, &segment.path, &e))?;
    if let Some(index) = read_index(dir, segment.index, reader.plain_len(), None) {
        return Ok(index.times().map(|(_, newest)| newest));
    }
    Ok(summarize(segment)?.last_at)
}

/// Reads a segment once: its records, time range and each call's seqs.
fn summarize(segment: &SegmentPath) -> Result<PrunedSegment, IoFailure> {
    let io = |op, e: &io::Error| IoFailure::new(op, &segment.path, e);
    let reader = SegmentReader::open(&segment.path, segment.compressed)
        .and_then(SegmentReader::all)
        .map_err(|e| io(IoOp::Read, &e))?;
    let mut seqs: HashMap<String, (Vec<u64>, PrunedCall)> = HashMap::new();
    let mut out = PrunedSegment {
        segment: segment.index,
        file: file_name(&segment.path),
        bytes: 0,
        records: 0,
        events: 0,
        first_at: None,
        last_at: None,
        pruned_at: Timestamp::from_unix_nanos(0),
        calls: BTreeMap::new(),
    };
    let mut line = Vec::new();
    let mut reader = BufReader::new(reader);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| io(IoOp::Read, &e))?;
        if n == 0 {
            break;
        }
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        // A segment is pruned only if the manifest can account for every
        // record in it: a line that is not one (corrupt, or from a newer
        // schema) keeps the segment. (A sealed segment has no torn tail.)
        let record = match parse_line(body) {
            Ok(record) => record,
            Err(e) => {
                let e = io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("line {}: {e}; not pruned", out.records + 1),
                );
                return Err(io(IoOp::Read, &e));
            }
        };
        out.records += 1;
        let (at, call) = match &record {
            ArchiveLine::Event(e) => (e.at, &e.call_id),
            ArchiveLine::Closed(c) => (c.at, &c.call_id),
            ArchiveLine::Note(n) => (n.at, &n.call_id),
        };
        out.first_at = Some(out.first_at.map_or(at, |t| t.min(at)));
        out.last_at = Some(out.last_at.map_or(at, |t| t.max(at)));
        let entry = match seqs.get_mut(call.as_str()) {
            Some(entry) => entry,
            None => seqs.entry(call.clone()).or_default(),
        };
        match record {
            ArchiveLine::Event(e) => {
                out.events += 1;
                entry.0.push(e.seq);
                entry.1.events += 1;
            }
            ArchiveLine::Closed(c) => entry.1.issued = Some(c.issued),
            ArchiveLine::Note(_) => entry.1.notes += 1,
        }
    }
    for (call_id, (mut list, mut call)) in seqs {
        list.sort_unstable();
        list.dedup();
        call.seqs = runs(list.into_iter());
        out.calls.insert(call_id, call);
    }
    Ok(out)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn manifest_lines_round_trip_and_a_flipped_byte_is_caught() {
        let mut calls = BTreeMap::new();
        calls.insert(
            "call-é".to_string(),
            PrunedCall {
                seqs: vec![SeqRange { first: 0, last: 9 }],
                events: 10,
                issued: Some(10),
                notes: 2,
            },
        );
        let segment = PrunedSegment {
            segment: 3,
            file: segment_name(3),
            bytes: 1234,
            records: 11,
            events: 10,
            first_at: Some(Timestamp::from_unix_nanos(1)),
            last_at: Some(Timestamp::from_unix_nanos(2)),
            pruned_at: Timestamp::from_unix_nanos(3),
            calls,
        };
        let line = encode_manifest_line(&segment).expect("serializes");
        assert_eq!(line.last(), Some(&b'\n'));
        let body = &line[..line.len() - 1];
        assert_eq!(decode_manifest_line(body), Ok(segment));
        let mut flipped = body.to_vec();
        let at = flipped.iter().position(|&b| b == b'9').expect("a digit");
        flipped[at] = b'8';
        assert_eq!(
            decode_manifest_line(&flipped),
            Err("checksum mismatch".into())
        );
    }
}
