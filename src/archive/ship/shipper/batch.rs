//! Reading the spool: the durable prefix of the JSON Lines segments, from a
//! position up to the archive's durable end, cut into batches of whole lines
//! in column form (one `Vec` per column, for `unnest`).
//!
//! A batch never spans two segments and never reads past the durable end,
//! so it never holds a torn line nor a record a crash could take back.

use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

use super::ShipError;
use crate::archive::error::{IoFailure, IoOp};
use crate::archive::record::{
    compressed_segment_name, parse_line, segment_name, sort_segments, ArchiveLine,
};
use crate::archive::ship::Batch;
use crate::archive::spool::zst::SegmentReader;
use crate::archive::SpoolPosition;
use crate::call::AuditEvent;

fn read_failure(path: &Path, op: IoOp, e: &io::Error) -> ShipError {
    ShipError::Spool(IoFailure::new(op, path, e))
}

/// What the next read found.
#[derive(Debug)]
pub(super) enum Next {
    /// Lines to ship.
    Batch(Box<Batch>),
    /// Nothing more up to the durable end; reading goes on from this
    /// position (it may have moved past missing or finished segments).
    CaughtUp(SpoolPosition),
}

/// Opens segment `index` of `dir`, plain or compressed (positions are plain
/// offsets either way); `None` if it is in neither form.
///
/// The compressed copy first: it wins when a crash left both. Then the
/// plain file, then the compressed copy again: the sealer may have replaced
/// the plain file in between (it renames the compressed copy into place,
/// whole, before it removes the plain one).
fn open_segment(dir: &Path, index: u64) -> Result<Option<(SegmentReader, PathBuf)>, ShipError> {
    let compressed = dir.join(compressed_segment_name(index));
    let plain = dir.join(segment_name(index));
    for (path, is_compressed) in [(&compressed, true), (&plain, false), (&compressed, true)] {
        match SegmentReader::open(path, is_compressed) {
            Ok(reader) => return Ok(Some((reader, path.clone()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(read_failure(path, IoOp::Open, &e)),
        }
    }
    Ok(None)
}

/// Reads the next batch after `from`, at most `max_records` lines and about
/// `max_bytes` bytes, never past `end`.
pub(super) fn next_batch(
    dir: &Path,
    from: SpoolPosition,
    end: SpoolPosition,
    max_records: usize,
    max_bytes: usize,
) -> Result<Next, ShipError> {
    let mut at = from;
    loop {
        if at >= end {
            return Ok(Next::CaughtUp(at));
        }
        let whole = at.segment < end.segment;
        let Some((reader, path)) = open_segment(dir, at.segment)? else {
            // A run that wrote nothing leaves no file; retention may have
            // removed old ones. Go on with the next segment that exists.
            match next_segment(dir, at.segment)? {
                Some(index) if index <= end.segment => {
                    at = SpoolPosition::new(index, 0);
                    continue;
                }
                _ => return Ok(Next::CaughtUp(SpoolPosition::new(end.segment, 0).max(at))),
            }
        };
        let limit = if whole {
            reader.plain_len()
        } else {
            end.offset
        };
        if at.offset >= limit {
            if whole {
                at = SpoolPosition::new(at.segment + 1, 0);
                continue;
            }
            return Ok(Next::CaughtUp(at));
        }
        let mut src = reader
            .range(at.offset, limit)
            .map_err(|e| read_failure(&path, IoOp::Read, &e))?;
        let mut buf = Vec::new();
        let mut want = max_bytes.max(1) as u64;
        loop {
            let asked = want - buf.len() as u64;
            let got = (&mut src)
                .take(asked)
                .read_to_end(&mut buf)
                .map_err(|e| read_failure(&path, IoOp::Read, &e))?;
            let Some(last_newline) = buf.iter().rposition(|&b| b == b'\n') else {
                if got as u64 == asked {
                    // One line longer than the read: read more.
                    want = want.saturating_mul(2);
                    continue;
                }
                // Only a fragment without its newline up to the limit. The
                // durable end is always at a line's end, so this is the torn
                // tail of an old segment (cut at start, normally): not a
                // record. Move on.
                at = SpoolPosition::new(at.segment + 1, 0);
                break;
            };
            let batch = parse(&path, at, &buf[..=last_newline], max_records.max(1))?;
            return Ok(Next::Batch(Box::new(batch)));
        }
    }
}

/// The first segment index above `after` in `dir`.
fn next_segment(dir: &Path, after: u64) -> Result<Option<u64>, ShipError> {
    let names: Vec<_> = std::fs::read_dir(dir)
        .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect())
        .map_err(|e| read_failure(dir, IoOp::ListDir, &e))?;
    let (segments, _) = sort_segments(dir, names);
    Ok(segments
        .into_iter()
        .map(|segment| segment.index)
        .find(|&index| index > after))
}

/// Parses whole lines (`bytes` ends with `\n`) starting at `at`, up to
/// `max_records` of them.
fn parse(
    path: &Path,
    at: SpoolPosition,
    bytes: &[u8],
    max_records: usize,
) -> Result<Batch, ShipError> {
    let mut batch = Batch {
        segment: at.segment,
        end: at,
        ..Batch::default()
    };
    let mut offset = at.offset;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if batch.records() as usize >= max_records {
            break;
        }
        let start = offset;
        let body = &line[..line.len() - 1];
        let record = match parse_line(body) {
            Ok(record) => record,
            // Ship the whole lines before it first; the next read starts at
            // the corrupt line and reports it.
            Err(_) if batch.records() > 0 => break,
            Err(e) => {
                return Err(ShipError::CorruptSpool {
                    file: path.to_path_buf(),
                    offset: start,
                    reason: e.to_string(),
                })
            }
        };
        offset += line.len() as u64;
        match record {
            ArchiveLine::Event(r) => {
                let event = AuditEvent {
                    seq: r.seq,
                    at: r.at,
                    kind: r.kind,
                    agent_id: r.agent_id,
                    details: r.details,
                };
                batch.push_event(r.call_id, r.reason, &event, start);
            }
            ArchiveLine::Closed(c) => batch.push_closed(c.call_id, c.issued, c.at, start),
            // Notes are not audit records: read past, not shipped.
            ArchiveLine::Note(_) => batch.skipped += 1,
        }
        batch.bytes += line.len() as u64;
        batch.end = SpoolPosition::new(at.segment, offset);
    }
    Ok(batch)
}

/// Lines between `from` and `end` (the shipper's backlog when it connects).
pub(super) fn count_lines(
    dir: &Path,
    from: SpoolPosition,
    end: SpoolPosition,
) -> Result<u64, ShipError> {
    let mut count = 0;
    let mut at = from;
    while at < end {
        let Some((reader, path)) = open_segment(dir, at.segment)? else {
            match next_segment(dir, at.segment)? {
                Some(index) if index <= end.segment => {
                    at = SpoolPosition::new(index, 0);
                    continue;
                }
                _ => break,
            }
        };
        let stop = if at.segment < end.segment {
            u64::MAX
        } else {
            end.offset
        };
        let mut src = reader
            .range(at.offset, stop)
            .map_err(|e| read_failure(&path, IoOp::Read, &e))?;
        loop {
            let chunk = src
                .fill_buf()
                .map_err(|e| read_failure(&path, IoOp::Read, &e))?;
            if chunk.is_empty() {
                break;
            }
            count += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
            let used = chunk.len();
            src.consume(used);
        }
        if at.segment >= end.segment {
            break;
        }
        at = SpoolPosition::new(at.segment + 1, 0);
    }
    Ok(count)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn event(call: &str, seq: u64) -> String {
        format!(
            "{{\"v\":2,\"call_id\":\"{call}\",\"seq\":{seq},\"at\":\"2025-11-25T09:30:00Z\",\
             \"type\":\"tool_invoked\",\"agent_id\":null,\"details\":{{}},\"reason\":\"logged\"}}\n"
        )
    }

    fn closed(call: &str, issued: u64) -> String {
        format!(
            "{{\"v\":2,\"call_id\":\"{call}\",\"record\":\"closed\",\"issued\":{issued},\
             \"at\":\"2025-11-25T09:31:00Z\"}}\n"
        )
    }

    fn batch(next: Next) -> Box<Batch> {
        match next {
            Next::Batch(batch) => batch,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_whole_lines_up_to_the_durable_end_and_one_segment_at_a_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let one = format!("{}{}{}", event("a", 0), event("a", 1), closed("a", 2));
        // Segment 2: one durable line, then a line the archiver has written
        // but not yet fsynced (beyond the durable end).
        let two = format!("{}{}", event("b", 0), event("b", 1));
        std::fs::write(dir.path().join(segment_name(1)), &one).expect("written");
        std::fs::write(dir.path().join(segment_name(2)), &two).expect("written");
        let durable = event("b", 0).len() as u64;
        let end = SpoolPosition::new(2, durable);

        let first = batch(
            next_batch(dir.path(), SpoolPosition::default(), end, 100, 1 << 20).expect("reads"),
        );
        assert_eq!(first.segment, 1);
        assert_eq!(first.events.seq, [0, 1]);
        assert_eq!(first.closed.issued, [2]);
        assert_eq!(first.end, SpoolPosition::new(1, one.len() as u64));
        assert_eq!(first.events.offset, [0, event("a", 0).len() as i64]);

        let second = batch(next_batch(dir.path(), first.end, end, 100, 1 << 20).expect("reads"));
        assert_eq!((second.segment, second.records()), (2, 1));
        assert_eq!(second.end, end);
        match next_batch(dir.path(), second.end, end, 100, 1 << 20).expect("reads") {
            Next::CaughtUp(at) => assert_eq!(at, end),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            count_lines(dir.path(), SpoolPosition::default(), end).expect("counts"),
            4
        );
        assert_eq!(count_lines(dir.path(), first.end, end).expect("counts"), 1);
    }

    #[test]
    fn batches_respect_the_record_and_byte_limits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lines: String = (0..10).map(|s| event("a", s)).collect();
        std::fs::write(dir.path().join(segment_name(1)), &lines).expect("written");
        let end = SpoolPosition::new(2, 0);
        let by_records = batch(
            next_batch(dir.path(), SpoolPosition::new(1, 0), end, 3, 1 << 20).expect("reads"),
        );
        assert_eq!(by_records.events.seq, [0, 1, 2]);
        // A byte limit shorter than one line still reads that line whole.
        let by_bytes = batch(next_batch(dir.path(), by_records.end, end, 100, 10).expect("reads"));
        assert_eq!(by_bytes.events.seq, [3]);
    }

    #[test]
    fn skips_missing_segments_and_torn_fragments_of_old_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Segment 1 is gone (retention); segment 2 ends in a fragment a
        // crash left; segment 4 follows (3 was never written).
        std::fs::write(
            dir.path().join(segment_name(2)),
            format!("{}{{\"v\":2,\"call", event("a", 0)),
        )
        .expect("written");
        std::fs::write(dir.path().join(segment_name(4)), event("a", 1)).expect("written");
        let end = SpoolPosition::new(5, 0);
        let first = batch(
            next_batch(dir.path(), SpoolPosition::default(), end, 100, 1 << 20).expect("reads"),
        );
        assert_eq!((first.segment, first.events.seq.clone()), (2, vec![0]));
        let second = batch(next_batch(dir.path(), first.end, end, 100, 1 << 20).expect("reads"));
        assert_eq!((second.segment, second.events.seq.clone()), (4, vec![1]));
        assert!(matches!(
            next_batch(dir.path(), second.end, end, 100, 1 << 20).expect("reads"),
            Next::CaughtUp(_)
        ));
    }

    /// A segment compressed behind the shipper's back (the plain file
    /// replaced by its compressed copy) is read from the compressed copy at
    /// the same plain offset.
    #[test]
    fn a_segment_compressed_meanwhile_is_read_on_at_the_same_offset() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lines: String = (0..20_000).map(|s| event("a", s)).collect();
        let plain = dir.path().join(segment_name(1));
        std::fs::write(&plain, &lines).expect("written");
        std::fs::write(dir.path().join(segment_name(2)), event("b", 0)).expect("written");
        let end = SpoolPosition::new(3, 0);
        let first = batch(
            next_batch(dir.path(), SpoolPosition::new(1, 0), end, 7_000, 1 << 30).expect("reads"),
        );
        assert_eq!(first.events.seq.last(), Some(&6_999));

        let mut compressed = Vec::new();
        let mut src = std::io::BufReader::new(std::fs::File::open(&plain).expect("opens"));
        crate::archive::spool::zst::compress(&mut src, &mut compressed, 3).expect("compresses");
        assert!(compressed.len() < lines.len() / 4);
        std::fs::write(dir.path().join(compressed_segment_name(1)), &compressed).expect("written");
        std::fs::remove_file(&plain).expect("removed");

        let second =
            batch(next_batch(dir.path(), first.end, end, 100_000, 1 << 30).expect("reads"));
        assert_eq!(second.segment, 1);
        assert_eq!(second.events.seq, (7_000..20_000).collect::<Vec<_>>());
        assert_eq!(second.events.offset[0], first.end.offset as i64);
        assert_eq!(second.end, SpoolPosition::new(1, lines.len() as u64));
        // A byte limit inside the compressed segment: whole lines still.
        let small = batch(next_batch(dir.path(), first.end, end, 100, 10).expect("reads"));
        assert_eq!(small.events.seq, [7_000]);
        let third = batch(next_batch(dir.path(), second.end, end, 100, 1 << 20).expect("reads"));
        assert_eq!((third.segment, third.events.seq.clone()), (2, vec![0]));
        assert_eq!(
            count_lines(dir.path(), first.end, end).expect("counts"),
            13_001
        );
        assert_eq!(
            count_lines(
                dir.path(),
                SpoolPosition::default(),
                SpoolPosition::new(1, first.end.offset)
            )
            .expect("counts"),
            7_000
        );
    }

    #[test]
    fn a_corrupt_durable_line_is_an_error_naming_its_offset() {
        let dir = tempfile::tempdir().expect("temp dir");
        let good = event("a", 0);
        std::fs::write(
            dir.path().join(segment_name(1)),
            format!("{good}not json\n"),
        )
        .expect("written");
        let end = SpoolPosition::new(2, 0);
        // The good line before it is shipped; the read after stops there.
        let first = batch(
            next_batch(dir.path(), SpoolPosition::default(), end, 100, 1 << 20).expect("reads"),
        );
        assert_eq!(first.events.seq, [0]);
        match next_batch(dir.path(), first.end, end, 100, 1 << 20) {
            Err(ShipError::CorruptSpool { offset, .. }) => assert_eq!(offset, good.len() as u64),
            other => panic!("{other:?}"),
        }
    }
}
