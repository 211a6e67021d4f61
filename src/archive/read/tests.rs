//! Compressed segments through the reader, the verifier and the indexes.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::archive::record::{encode_closed, encode_line, segment_name, Origin};
use crate::archive::spool::zst;
use crate::archive::{index_archive, read_archive, verify};
use crate::call::{AuditEvent, AuditEventType, Details, Timestamp};

/// Segment `index` of `dir` with `calls` calls of `events` events each,
/// interleaved, each ended; returns its path.
fn segment(dir: &Path, index: u64, calls: &[&str], events: u64) -> PathBuf {
    let mut out = Vec::new();
    let at = Timestamp::from_unix_nanos(1_764_063_000_000_000_000);
    for seq in 0..events {
        for call in calls {
            let mut details = Details::new();
            details.insert("amount".into(), (10_000 + seq).into());
            let event = AuditEvent::new(seq, at, AuditEventType::ToolInvoked, None, details);
            encode_line(call, Origin::Logged, &event, &mut out);
        }
    }
    for call in calls {
        encode_closed(call, events, at, &mut out);
    }
    let path = dir.join(segment_name(index));
    fs::write(&path, out).expect("written");
    path
}

/// Replaces plain segment `index` by its compressed copy, as the sealer
/// does; returns the compressed file.
fn compress(dir: &Path, index: u64) -> PathBuf {
    let plain = dir.join(segment_name(index));
    let mut src = io::BufReader::new(fs::File::open(&plain).expect("opens"));
    let mut out = Vec::new();
    zst::compress(&mut src, &mut out, 3).expect("compresses");
    let path = dir.join(compressed_segment_name(index));
    fs::write(&path, out).expect("written");
    fs::remove_file(plain).expect("removed");
    path
}

/// Changes one digit of the `amount` on line `line` (1-based) of `path`,
/// keeping it JSON.
fn flip_digit(path: &Path, line: usize) {
    let text = fs::read_to_string(path).expect("read");
    let start: usize = text
        .split_inclusive('\n')
        .take(line - 1)
        .map(str::len)
        .sum();
    let at = start + text[start..].find("\"amount\":1").expect("an amount") + 10;
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'9' { b'8' } else { b'9' };
    fs::write(path, bytes).expect("written");
}

fn corrupt_at<T: fmt::Debug>(result: Result<T, VerifyError>) -> (PathBuf, u64) {
    match result {
        Err(VerifyError::Corrupt { file, line, reason }) => {
            assert!(reason.contains("checksum"), "{reason}");
            (file, line)
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_flipped_digit_in_a_compressed_segment_is_named_by_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    segment(dir.path(), 1, &["a", "b"], 10);
    let plain = segment(dir.path(), 2, &["c", "d"], 10);
    segment(dir.path(), 3, &["e"], 3);
    flip_digit(&plain, 7);
    compress(dir.path(), 1);
    let file = compress(dir.path(), 2);

    assert_eq!(corrupt_at(verify(dir.path())), (file.clone(), 7));
    let reader = ArchiveReader::open(dir.path()).expect("opens");
    let mut records = reader.records();
    let good = (&mut records).take_while(Result::is_ok).count();
    assert_eq!(
        good,
        22 + 6,
        "segment 1 whole, then lines 1..=6 of segment 2"
    );
    let err = reader
        .records()
        .find(Result::is_err)
        .expect("the corrupt line");
    assert_eq!(corrupt_at(err), (file.clone(), 7));
    // Reading call "d" scans segment 2 (no index) and meets the line too.
    assert_eq!(corrupt_at(reader.call("d")), (file.clone(), 7));
    // Indexing it refuses the same way.
    assert_eq!(corrupt_at(index_archive(dir.path())), (file, 7));
}

#[test]
fn compressed_and_plain_segments_read_alike() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (index, calls) in [(1, ["a", "b"]), (2, ["c", "d"]), (3, ["e", "f"])] {
        segment(dir.path(), index, &calls, 2_000);
    }
    let plain_report = verify(dir.path()).expect("verifies");
    compress(dir.path(), 1);
    compress(dir.path(), 2);
    let report = verify(dir.path()).expect("verifies");
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.calls, plain_report.calls);
    assert_eq!(report.records, 3 * 2 * 2_001);
    let kinds: Vec<bool> = report.segments.iter().map(|s| s.compressed).collect();
    assert_eq!(kinds, [true, true, false]);
    for (seg, plain) in report.segments.iter().zip(&plain_report.segments) {
        assert_eq!(seg.plain_bytes, plain.bytes);
        assert_eq!(seg.compressed, seg.bytes < seg.plain_bytes, "{seg:?}");
    }
    let mut seen = 0;
    read_archive(dir.path(), |_| seen += 1).expect("reads");
    assert_eq!(seen, 3 * 2 * 2_000);

    // One call through the indexes: its compressed segment's frames only.
    let summary = index_archive(dir.path()).expect("indexes");
    assert_eq!(summary.written, 3);
    let total: u64 = report.segments.iter().map(|s| s.bytes).sum();
    let reader = ArchiveReader::open(dir.path()).expect("opens");
    let trail = reader.call("c").expect("reads");
    assert_eq!(trail.events().count(), 2_000);
    assert!(trail.events().map(|e| e.seq).eq(0..2_000));
    assert_eq!(trail.closed().map(|c| c.issued), Some(2_000));
    let segment_2 = report.segments[1].bytes;
    assert!(
        reader.bytes_read() < segment_2 + 4096 && reader.bytes_read() < total / 2,
        "read {} of {total}",
        reader.bytes_read()
    );
}

/// A segment the sealer compresses after the reader listed it is read from
/// its compressed copy.
#[test]
fn a_segment_compressed_after_listing_is_read_from_its_copy() {
    let dir = tempfile::tempdir().expect("temp dir");
    segment(dir.path(), 1, &["a"], 5);
    segment(dir.path(), 2, &["b"], 5);
    let reader = ArchiveReader::open(dir.path()).expect("opens");
    compress(dir.path(), 1);
    let mut records = reader.records();
    let files: Vec<Arc<Path>> = (&mut records).map(|r| r.expect("whole").file).collect();
    assert_eq!(files.len(), 12);
    assert_eq!(&*files[0], dir.path().join(compressed_segment_name(1)));
    assert_eq!(&*files[6], dir.path().join(segment_name(2)));
    assert_eq!(reader.call("a").expect("reads").lines.len(), 6);
}

/// An index that no longer matches its segment (hand-copied, or a
/// segment rewritten) is ignored: the segment is read whole.
#[test]
fn a_stale_or_damaged_index_is_ignored() {
    let dir = tempfile::tempdir().expect("temp dir");
    segment(dir.path(), 1, &["a", "b"], 50);
    segment(dir.path(), 2, &["c"], 5);
    index_archive(dir.path()).expect("indexes");
    let idx = dir.path().join(crate::archive::record::index_file_name(1));
    let mut bytes = fs::read(&idx).expect("index");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs::write(&idx, bytes).expect("written");
    let reader = ArchiveReader::open(dir.path()).expect("opens");
    let trail = reader.call("a").expect("reads");
    assert_eq!((trail.indexed, trail.scanned), (1, 1));
    assert_eq!(trail.events().count(), 50);
    let summary = index_archive(dir.path()).expect("indexes");
    assert_eq!((summary.written, summary.current), (1, 1));
}

/// Archived notes come back with the call's trail: after its events, in
/// their own seq order, before the closed record.
#[test]
fn a_calls_notes_come_back_between_its_events_and_its_closed_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let at = Timestamp::from_unix_nanos(1_764_063_000_000_000_000);
    let mut out = Vec::new();
    for seq in [1, 0] {
        let event = AuditEvent::new(seq, at, AuditEventType::ToolInvoked, None, Details::new());
        encode_line("a", Origin::Logged, &event, &mut out);
        let note = crate::call::Note::new(at, format!("note {seq}"));
        crate::archive::record::encode_note("a", seq, Origin::Evicted, &note, &mut out);
    }
    encode_closed("a", 2, at, &mut out);
    fs::write(dir.path().join(segment_name(1)), out).expect("written");
    index_archive(dir.path()).expect("indexes");
    let trail = ArchiveReader::open(dir.path())
        .expect("opens")
        .call("a")
        .expect("reads");
    let kinds: Vec<(char, u64)> = trail
        .lines
        .iter()
        .map(|line| match line {
            ArchiveLine::Event(e) => ('e', e.seq),
            ArchiveLine::Note(n) => ('n', n.seq),
            ArchiveLine::Closed(c) => ('c', c.issued),
        })
        .collect();
    assert_eq!(kinds, [('e', 0), ('e', 1), ('n', 0), ('n', 1), ('c', 2)]);
    assert_eq!(
        trail.notes().map(|n| n.text.as_str()).collect::<Vec<_>>(),
        ["note 0", "note 1"]
    );
    assert_eq!(trail.indexed, 1);
    let report = verify(dir.path()).expect("verifies");
    assert_eq!(report.calls["a"].notes, 2);
    assert!(report.is_complete(), "{report}");
}
