//! One archived audit event as a JSON line, segment names, and where a
//! crash's torn tail starts.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::call::{AuditEvent, AuditEventType, Details, Timestamp};
use crate::sink::{Evicted, Reason};

/// One line of the archive: an audit event of a call and why it left the
/// ring.
///
/// On disk the fields appear in this order, one JSON object per line:
/// `{"call_id","seq","at","type","agent_id","details","reason"}`, with `at`
/// in RFC 3339 (nanoseconds, UTC) and `reason` `"evicted"` or `"drained"`.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::archive::ArchiveRecord;
///
/// let line = r#"{"call_id":"call-1","seq":0,"at":"2025-11-25T09:30:00.000000000Z","type":"call_started","agent_id":null,"details":{},"reason":"drained"}"#;
/// let record: ArchiveRecord = serde_json::from_str(line).expect("a valid record");
/// assert_eq!((record.call_id.as_str(), record.seq), ("call-1", 0));
/// assert_eq!(serde_json::to_string(&record).expect("serialisable"), line);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArchiveRecord {
    /// The call.
    pub call_id: String,
    /// The event's seq in its call's trail.
    pub seq: u64,
    /// When the event was logged.
    pub at: Timestamp,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: AuditEventType,
    /// The agent that logged it, if any.
    pub agent_id: Option<String>,
    /// Free-form details.
    pub details: Details,
    /// Evicted by a newer event, or drained when the call ended.
    pub reason: Reason,
}

impl ArchiveRecord {
    /// The record of `entry`, an event of `call_id` leaving its ring.
    #[must_use]
    pub fn new(call_id: impl Into<String>, entry: Evicted<AuditEvent>) -> Self {
        let event = entry.value;
        Self {
            call_id: call_id.into(),
            seq: event.seq,
            at: event.at,
            kind: event.kind,
            agent_id: event.agent_id,
            details: event.details,
            reason: entry.reason,
        }
    }
}

/// [`ArchiveRecord`] borrowed, for encoding without copies.
#[derive(serde::Serialize)]
struct RecordRef<'a> {
    call_id: &'a str,
    seq: u64,
    at: Timestamp,
    #[serde(rename = "type")]
    kind: &'a AuditEventType,
    agent_id: Option<&'a str>,
    details: &'a Details,
    reason: Reason,
}

/// Appends `entry` as one JSON line (with its `\n`) to `out`.
pub(crate) fn encode_line(call_id: &str, entry: &Evicted<AuditEvent>, out: &mut Vec<u8>) {
    let event = &entry.value;
    let record = RecordRef {
        call_id,
        seq: entry.seq,
        at: event.at,
        kind: &event.kind,
        agent_id: event.agent_id.as_deref(),
        details: &event.details,
        reason: entry.reason,
    };
    let mark = out.len();
    if serde_json::to_writer(&mut *out, &record).is_err() {
        // Cannot happen for these types (string keys, JSON values), but an
        // event must never vanish: keep its seq, say what went wrong.
        out.truncate(mark);
        let mut details = Details::new();
        details.insert("callring_encode_error".into(), true.into());
        let fallback = RecordRef {
            details: &details,
            ..record
        };
        let _ = serde_json::to_writer(&mut *out, &fallback);
    }
    out.push(b'\n');
}

/// Parses one line (without its `\n`).
pub(crate) fn parse_line(line: &[u8]) -> Result<ArchiveRecord, serde_json::Error> {
    serde_json::from_slice(line)
}

/// Segment names: `audit-` + the index zero-padded to 12 digits + `.jsonl`,
/// so a plain name sort is also index order.
const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";
const DIGITS: usize = 12;

/// The file name of segment `index`.
#[must_use]
pub fn segment_name(index: u64) -> String {
    format!("{PREFIX}{index:0DIGITS$}{SUFFIX}")
}

/// The index of a segment file name; `None` for any other name.
#[must_use]
pub fn segment_index(name: &OsStr) -> Option<u64> {
    let digits = name.to_str()?.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() < DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments among `names` in `dir`, in index order, and the other
/// names (the lock file left out).
pub(crate) fn sort_segments(
    dir: &Path,
    names: impl IntoIterator<Item = std::ffi::OsString>,
) -> (Vec<(u64, PathBuf)>, Vec<PathBuf>) {
    let mut segments = Vec::new();
    let mut others = Vec::new();
    for name in names {
        match segment_index(&name) {
            Some(index) => segments.push((index, dir.join(&name))),
            None if name == super::fs::LOCK_FILE => {}
            None => others.push(dir.join(&name)),
        }
    }
    segments.sort();
    others.sort();
    (segments, others)
}

/// Where the torn tail of a segment starts, if it has one: the byte offset of
/// the first of its trailing lines that a crash can leave behind, namely an
/// unterminated last line that does not parse, and lines of NUL bytes (a
/// file system may show unwritten blocks as zeros after a power loss).
///
/// An unterminated last line that parses is a whole record that lost only
/// its `\n`: not torn.
pub(crate) fn torn_tail_start(bytes: &[u8]) -> Option<usize> {
    let is_nul = |line: &[u8]| line.iter().all(|&b| b == 0);
    let line_start = |end: usize| {
        bytes[..end]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1)
    };
    let mut start = bytes.len();
    if bytes.last().is_some_and(|&b| b != b'\n') {
        let from = line_start(bytes.len());
        let line = &bytes[from..];
        if !is_nul(line) && parse_line(line).is_ok() {
            return None;
        }
        start = from;
    }
    // Terminated lines of NULs just before.
    while start > 0 {
        let end = start - 1; // bytes[end] == b'\n'
        let from = line_start(end);
        if from == end || !is_nul(&bytes[from..end]) {
            break;
        }
        start = from;
    }
    (start < bytes.len()).then_some(start)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn line(seq: u64) -> Vec<u8> {
        let mut details = Details::new();
        details.insert("k".into(), "v\nw".into());
        let event = AuditEvent {
            seq,
            at: Timestamp::from_unix_nanos(1_764_063_000_000_000_001),
            kind: AuditEventType::Other("x".into()),
            agent_id: Some("speech".into()),
            details,
        };
        let mut out = Vec::new();
        encode_line(
            "call-1",
            &Evicted::new(seq, Reason::Evicted, event),
            &mut out,
        );
        out
    }

    #[test]
    fn lines_have_the_documented_fields_in_order() {
        let text = String::from_utf8(line(7)).expect("utf-8");
        assert_eq!(
            text,
            concat!(
                r#"{"call_id":"call-1","seq":7,"at":"2025-11-25T09:30:00.000000001Z","#,
                r#""type":{"other":"x"},"agent_id":"speech","details":{"k":"v\nw"},"#,
                r#""reason":"evicted"}"#,
                "\n"
            )
        );
        let record = parse_line(text.trim_end().as_bytes()).expect("parses");
        assert_eq!((record.seq, record.reason), (7, Reason::Evicted));
    }

    #[test]
    fn segment_names_sort_in_index_order() {
        assert_eq!(segment_name(1), "audit-000000000001.jsonl");
        for index in [0, 1, 42, 999_999_999_999, u64::MAX] {
            assert_eq!(segment_index(segment_name(index).as_ref()), Some(index));
        }
        for other in [
            "audit-1.jsonl",
            "audit-00000000000x.jsonl",
            "notes.txt",
            "LOCK",
        ] {
            assert_eq!(segment_index(other.as_ref()), None, "{other}");
        }
    }

    #[test]
    fn torn_tails_are_found_and_whole_records_are_not() {
        let mut two = line(0);
        two.extend(line(1));
        assert_eq!(torn_tail_start(&two), None);
        assert_eq!(torn_tail_start(b""), None);

        let cut = two.len() - 10;
        assert_eq!(torn_tail_start(&two[..cut]), Some(line(0).len()));

        // A whole record without its newline is not torn.
        assert_eq!(torn_tail_start(&two[..two.len() - 1]), None);

        // Zero-filled blocks after the last good line.
        let mut zeros = line(0);
        zeros.extend([0, 0, 0, b'\n', 0, 0]);
        assert_eq!(torn_tail_start(&zeros), Some(line(0).len()));

        // A corrupt terminated line is not a tail (the verifier reports it).
        let mut corrupt = line(0);
        corrupt.extend(b"{\"call_id\n");
        assert_eq!(torn_tail_start(&corrupt), None);
    }
}
