//! One archived audit event (or a call's closed record, or an archived
//! note) as a JSON line, segment names, and where a crash's torn tail starts.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::call::{AuditEvent, AuditEventType, Details, EventParts, Note, Timestamp};
use crate::sink::{Evicted, Reason};

/// The schema version this crate writes into every record, as `"v"`.
///
/// Version 3 added the checksum: every line ends with `,"crc":"xxxxxxxx"}`,
/// the CRC32C (Castagnoli) of the line's bytes before `,"crc"`, as 8
/// lowercase hex digits; a version-3 line without it, or whose bytes do not
/// match it, is corrupt. Version 2 added the version field itself, the
/// `closed` end-of-call record and the `logged` reason. Lines without `"v"`
/// were written before it (version 1: event records only) and are read as
/// such; lines of versions 1 and 2 carry no checksum.
///
/// Note lines (`"record":"note"`, see [`NoteRecord`]) came later within
/// version 2 and are written only for calls that archive their notes; a
/// reader from before them rejects such a line (unknown record kind) rather
/// than misreading it.
pub const SCHEMA_VERSION: u32 = 3;

/// The first version whose lines must carry a checksum.
const CRC_VERSION: u32 = 3;

/// Records of lines that carry no `"v"`.
const LEGACY_VERSION: u32 = 1;

fn legacy_version() -> u32 {
    LEGACY_VERSION
}

/// How an event (or a note) reached the archive: the `reason` field of its
/// line. Notes are only ever `Evicted` or `Drained`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Written through as it was logged
    /// ([`CallStateBuilder::audit_archive`](crate::call::CallStateBuilder::audit_archive)).
    Logged,
    /// Handed over when a newer event evicted it from the ring (eviction
    /// mode).
    Evicted,
    /// Handed over when the call ended and its ring was drained (eviction
    /// mode).
    Drained,
}

impl From<Reason> for Origin {
    fn from(reason: Reason) -> Self {
        match reason {
            Reason::Evicted => Self::Evicted,
            Reason::Drained => Self::Drained,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Logged => "logged",
            Self::Evicted => "evicted",
            Self::Drained => "drained",
        })
    }
}

/// One event line of the archive: an audit event of a call and how it
/// reached the archive.
///
/// On disk the fields appear in this order, one JSON object per line:
/// `{"v","call_id","seq","at","type","agent_id","details","reason","crc"}`,
/// with `at` in RFC 3339 (nanoseconds, UTC), `reason` `"logged"` (written
/// through as it was logged), `"evicted"` or `"drained"` (handed over as it
/// left the ring), and `crc` the line's checksum (see [`SCHEMA_VERSION`]).
/// Lines of version 1 have no `"v"`; they parse with `version` 1.
///
/// The serde form is the record's data without a checksum (deserializing
/// accepts and ignores `crc`); [`to_line`](Self::to_line) writes it as an
/// archive line, checksum included.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::archive::ArchiveRecord;
///
/// let line = r#"{"v":2,"call_id":"call-1","seq":0,"at":"2025-11-25T09:30:00.000000000Z","type":"call_started","agent_id":null,"details":{},"reason":"logged"}"#;
/// let record: ArchiveRecord = serde_json::from_str(line).expect("a valid record");
/// assert_eq!((record.call_id.as_str(), record.seq, record.version), ("call-1", 0, 2));
/// assert_eq!(serde_json::to_string(&record).expect("serialisable"), line);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ArchiveRecord {
    /// The schema version the record was written with (1 for lines without
    /// `"v"`).
    #[serde(rename = "v", default = "legacy_version")]
    pub version: u32,
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
    /// Written through as it was logged, evicted by a newer event, or
    /// drained when the call ended.
    pub reason: Origin,
}

impl ArchiveRecord {
    /// The record of `entry`, an event of `call_id` handed to the archive,
    /// with the current [`SCHEMA_VERSION`].
    #[must_use]
    pub fn new(call_id: impl Into<String>, entry: Evicted<AuditEvent>) -> Self {
        Self::of(call_id.into(), entry.value, entry.reason.into())
    }

    /// The record of `event`, written through to the archive as `call_id`
    /// logged it ([`Origin::Logged`]), with the current [`SCHEMA_VERSION`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::archive::{ArchiveRecord, Origin};
    /// use callring::call::{AuditEvent, AuditEventType, Details, Timestamp};
    ///
    /// let at = Timestamp::from_unix_nanos(0);
    /// let event = AuditEvent::new(3, at, AuditEventType::ConsentGiven, None, Details::new());
    /// let record = ArchiveRecord::logged("call-1", event);
    /// assert_eq!((record.seq, record.reason), (3, Origin::Logged));
    /// # }
    /// ```
    #[must_use]
    pub fn logged(call_id: impl Into<String>, event: AuditEvent) -> Self {
        Self::of(call_id.into(), event, Origin::Logged)
    }

    /// The record as one archive line, with its checksum and `\n`, byte
    /// for byte what the archiver writes for it (with the record's
    /// `version`).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::archive::{ArchiveLine, ArchiveRecord};
    /// use callring::call::{AuditEvent, AuditEventType, Details, Timestamp};
    ///
    /// let at = Timestamp::from_unix_nanos(0);
    /// let event = AuditEvent::new(0, at, AuditEventType::CallStarted, None, Details::new());
    /// let line = ArchiveRecord::logged("call-1", event).to_line();
    /// assert!(line.ends_with("\"}\n") && line.contains(",\"crc\":\""));
    /// let parsed = ArchiveLine::parse(line.trim_end().as_bytes()).expect("a valid line");
    /// assert_eq!(parsed.call_id(), "call-1");
    /// # }
    /// ```
    #[must_use]
    pub fn to_line(&self) -> String {
        let mut out = Vec::new();
        write_record(
            &RecordRef {
                v: self.version,
                call_id: &self.call_id,
                seq: self.seq,
                at: self.at,
                kind: &self.kind,
                agent_id: self.agent_id.as_deref(),
                details: &self.details,
                reason: self.reason,
            },
            &mut out,
        );
        // JSON is UTF-8 and so is the checksum field.
        String::from_utf8(out).unwrap_or_default()
    }

    fn of(call_id: String, event: AuditEvent, reason: Origin) -> Self {
        Self {
            version: SCHEMA_VERSION,
            call_id,
            seq: event.seq,
            at: event.at,
            kind: event.kind,
            agent_id: event.agent_id,
            details: event.details,
            reason,
        }
    }
}

/// The end-of-call line: the call ended after handing out `issued` seqs, so
/// a complete trail is seqs `0..issued`, each once.
///
/// Written by [`CallState::end`](crate::call::CallState::end) when the call
/// writes through to an archive, after every event of the call (so a durable
/// closed record means every event before it is durable too). On disk:
///
/// ```text
/// {"v":3,"call_id":"call-1","record":"closed","issued":6,"at":"2025-11-25T09:31:00.000000000Z","crc":"43eca387"}
/// ```
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::archive::{ArchiveLine, ClosedRecord};
///
/// let line = r#"{"v":3,"call_id":"call-1","record":"closed","issued":6,"at":"2025-11-25T09:31:00.000000000Z","crc":"43eca387"}"#;
/// match ArchiveLine::parse(line.as_bytes()).expect("a valid line") {
///     ArchiveLine::Closed(ClosedRecord { issued, .. }) => assert_eq!(issued, 6),
///     other => panic!("{other:?}"),
/// }
/// // One byte changed: the checksum no longer matches.
/// let changed = line.replace("\"issued\":6", "\"issued\":5");
/// assert!(ArchiveLine::parse(changed.as_bytes()).is_err());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedRecord {
    /// The schema version the record was written with.
    pub version: u32,
    /// The call.
    pub call_id: String,
    /// Seqs the call handed out: its trail is `0..issued`.
    pub issued: u64,
    /// When the call ended.
    pub at: Timestamp,
}

/// One archived call note: a note that left its call's notes ring, evicted
/// by a newer note or drained when the call ended
/// ([`CallStateBuilder::notes_archive`](crate::call::CallStateBuilder::notes_archive)).
///
/// `seq` is the note's seq in its call's notes (what
/// [`CallState::append_note`](crate::call::CallState::append_note)
/// returned), independent of the audit seqs: a note line is not an audit
/// event and the verifier only counts them ([`CallReport::notes`]). On disk,
/// with the text exactly as appended (JSON-escaped, UTF-8):
///
/// ```text
/// {"v":3,"call_id":"call-1","record":"note","seq":4,"at":"2025-11-25T09:30:00.000000000Z","text":"caller asked about the invoice","reason":"evicted","crc":"45e8344b"}
/// ```
///
/// [`CallReport::notes`]: crate::archive::CallReport::notes
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::archive::{ArchiveLine, NoteRecord, Origin};
///
/// let line = r#"{"v":2,"call_id":"call-1","record":"note","seq":4,"at":"2025-11-25T09:30:00.000000000Z","text":"Zoë said \"ja\"","reason":"drained"}"#;
/// let note: NoteRecord = serde_json::from_str(line).expect("a valid note line");
/// assert_eq!((note.seq, note.text.as_str(), note.reason), (4, "Zoë said \"ja\"", Origin::Drained));
/// assert_eq!(serde_json::to_string(&note).expect("serialisable"), line);
/// assert_eq!(ArchiveLine::parse(line.as_bytes()), Ok(ArchiveLine::Note(note)));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NoteRecord {
    /// The schema version the record was written with.
    pub version: u32,
    /// The call.
    pub call_id: String,
    /// The note's seq among its call's notes (0, 1, 2, ...).
    pub seq: u64,
    /// When the note was appended.
    pub at: Timestamp,
    /// The note's text.
    pub text: String,
    /// Evicted by a newer note, or drained when the call ended.
    pub reason: Origin,
}

impl NoteRecord {
    /// The note as the call layer has it (its time and text).
    #[must_use]
    pub fn note(&self) -> Note {
        Note::new(self.at, self.text.as_str())
    }
}

impl serde::Serialize for NoteRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        NoteRef {
            v: self.version,
            call_id: &self.call_id,
            record: LineKind::Note,
            seq: self.seq,
            at: self.at,
            text: &self.text,
            reason: self.reason,
        }
        .serialize(serializer)
    }
}

/// Reads a note line, checked as [`ArchiveLine::parse`] checks it.
impl<'de> serde::Deserialize<'de> for NoteRecord {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match ArchiveLine::from_raw(RawLine::deserialize(deserializer)?) {
            Ok(ArchiveLine::Note(note)) => Ok(note),
            Ok(_) => Err(D::Error::custom("not a note line (`\"record\":\"note\"`)")),
            Err(e) => Err(D::Error::custom(e)),
        }
    }
}

/// Any line of the archive: an event, a call's closed record, or an
/// archived note.
#[derive(Debug, Clone, PartialEq)]
pub enum ArchiveLine {
    /// An audit event.
    Event(ArchiveRecord),
    /// The end of a call's trail.
    Closed(ClosedRecord),
    /// A call note that left its ring (not an audit event: it has no audit
    /// seq).
    Note(NoteRecord),
}

/// What kind of line: absent for events (and every version-1 line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum LineKind {
    Event,
    Closed,
    Note,
}

/// A line as parsed, before it is checked for the fields its kind needs.
#[derive(serde::Deserialize)]
struct RawLine {
    #[serde(default = "legacy_version")]
    v: u32,
    call_id: String,
    #[serde(default)]
    record: Option<LineKind>,
    #[serde(default)]
    seq: Option<u64>,
    at: Timestamp,
    #[serde(rename = "type", default)]
    kind: Option<AuditEventType>,
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    details: Option<Details>,
    #[serde(default)]
    reason: Option<Origin>,
    #[serde(default)]
    issued: Option<u64>,
    #[serde(default)]
    text: Option<String>,
    /// Present or not; its value is checked on the raw bytes.
    #[serde(default)]
    crc: Option<serde::de::IgnoredAny>,
}

/// Why a line is not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LineError {
    /// Not a JSON object of the record's shape.
    Json(String),
    /// Written by a newer callring than this one.
    UnsupportedVersion {
        /// The line's version.
        version: u32,
    },
    /// A field the line's kind needs is missing (`crc` for a line of
    /// version 3 or later without a checksum).
    Missing {
        /// The field.
        field: &'static str,
    },
    /// The line's bytes do not match its checksum: it changed after it was
    /// written.
    Checksum {
        /// The CRC32C the line carries.
        stored: u32,
        /// The CRC32C of its bytes.
        computed: u32,
    },
    /// A `crc` field that is not the line's checksum: not the last field,
    /// or not 8 lowercase hex digits.
    MalformedChecksum,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Json(e) => f.write_str(e),
            Self::UnsupportedVersion { version } => write!(
                f,
                "schema version {version} is newer than this reader's {SCHEMA_VERSION}"
            ),
            Self::Missing { field } => write!(f, "missing field `{field}`"),
            Self::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch: the line says {stored:08x}, its bytes give {computed:08x}"
            ),
            Self::MalformedChecksum => f.write_str(
                "malformed checksum: `crc` must be the last field, 8 lowercase hex digits",
            ),
        }
    }
}

impl std::error::Error for LineError {}

impl ArchiveLine {
    /// Parses one line (without its `\n`), of any schema version up to
    /// [`SCHEMA_VERSION`], and checks its checksum (required from version 3
    /// on, checked on any line that has one).
    ///
    /// # Errors
    ///
    /// [`LineError`] for a line that is not a record, or not the bytes that
    /// were written ([`LineError::Checksum`]).
    pub fn parse(line: &[u8]) -> Result<Self, LineError> {
        let raw: RawLine =
            serde_json::from_slice(line).map_err(|e| LineError::Json(e.to_string()))?;
        // A newer version is refused by `from_raw`, whatever its checksum.
        if raw.v <= SCHEMA_VERSION {
            match (check_crc(line)?, raw.crc.is_some()) {
                (true, _) => {}
                (false, true) => return Err(LineError::MalformedChecksum),
                (false, false) if raw.v >= CRC_VERSION => {
                    return Err(LineError::Missing { field: "crc" })
                }
                (false, false) => {}
            }
        }
        Self::from_raw(raw)
    }

    /// Checks a parsed line for the fields its kind needs (not its
    /// checksum: that is a property of the line's bytes, checked by
    /// [`parse`](Self::parse)).
    fn from_raw(raw: RawLine) -> Result<Self, LineError> {
        if raw.v > SCHEMA_VERSION {
            return Err(LineError::UnsupportedVersion { version: raw.v });
        }
        let missing = |field| LineError::Missing { field };
        match raw.record.unwrap_or(LineKind::Event) {
            LineKind::Closed => Ok(Self::Closed(ClosedRecord {
                version: raw.v,
                call_id: raw.call_id,
                issued: raw.issued.ok_or(missing("issued"))?,
                at: raw.at,
            })),
            LineKind::Event => Ok(Self::Event(ArchiveRecord {
                version: raw.v,
                call_id: raw.call_id,
                seq: raw.seq.ok_or(missing("seq"))?,
                at: raw.at,
                kind: raw.kind.ok_or(missing("type"))?,
                agent_id: raw.agent_id,
                details: raw.details.ok_or(missing("details"))?,
                reason: raw.reason.ok_or(missing("reason"))?,
            })),
            LineKind::Note => Ok(Self::Note(NoteRecord {
                version: raw.v,
                call_id: raw.call_id,
                seq: raw.seq.ok_or(missing("seq"))?,
                at: raw.at,
                text: raw.text.ok_or(missing("text"))?,
                reason: raw.reason.ok_or(missing("reason"))?,
            })),
        }
    }

    /// The call the line belongs to.
    #[must_use]
    pub fn call_id(&self) -> &str {
        match self {
            Self::Event(r) => &r.call_id,
            Self::Closed(c) => &c.call_id,
            Self::Note(n) => &n.call_id,
        }
    }
}

/// [`ArchiveRecord`] borrowed, for encoding without copies.
#[derive(serde::Serialize)]
struct RecordRef<'a> {
    v: u32,
    call_id: &'a str,
    seq: u64,
    at: Timestamp,
    #[serde(rename = "type")]
    kind: &'a AuditEventType,
    agent_id: Option<&'a str>,
    details: &'a Details,
    reason: Origin,
}

/// [`ClosedRecord`] borrowed, for encoding.
#[derive(serde::Serialize)]
struct ClosedRef<'a> {
    v: u32,
    call_id: &'a str,
    record: LineKind,
    issued: u64,
    at: Timestamp,
}

/// [`NoteRecord`] borrowed, for encoding.
#[derive(serde::Serialize)]
struct NoteRef<'a> {
    v: u32,
    call_id: &'a str,
    record: LineKind,
    seq: u64,
    at: Timestamp,
    text: &'a str,
    reason: Origin,
}

/// Appends `event` as one JSON line (with its `\n`) to `out`.
pub(crate) fn encode_line(call_id: &str, reason: Origin, event: &AuditEvent, out: &mut Vec<u8>) {
    let record = RecordRef {
        v: SCHEMA_VERSION,
        call_id,
        seq: event.seq,
        at: event.at,
        kind: &event.kind,
        agent_id: event.agent_id.as_deref(),
        details: &event.details,
        reason,
    };
    write_record(&record, out);
}

/// Appends `record` as one line, checksum and `\n` included, to `out`.
fn write_record(record: &RecordRef<'_>, out: &mut Vec<u8>) {
    let mark = out.len();
    if serde_json::to_writer(&mut *out, record).is_err() {
        // Cannot happen for these types (string keys, JSON values), but an
        // event must never vanish: keep its seq, say what went wrong.
        out.truncate(mark);
        let mut details = Details::new();
        details.insert("callring_encode_error".into(), true.into());
        let fallback = RecordRef {
            details: &details,
            ..*record
        };
        let _ = serde_json::to_writer(&mut *out, &fallback);
    }
    end_line(out, mark);
}

/// Appends a written-through event, given as the ring's encoding split into
/// its parts, as one JSON line to `out`: byte for byte what [`encode_line`]
/// writes for the decoded event, without parsing the details JSON back into
/// a map and writing it out again (the archiver's thread does this for
/// every event, so its cost bounds the archive's throughput).
pub(crate) fn encode_logged(call_id: &str, parts: &EventParts<'_>, out: &mut Vec<u8>) {
    let mark = out.len();
    out.extend_from_slice(b"{\"v\":");
    json(out, &SCHEMA_VERSION);
    out.extend_from_slice(b",\"call_id\":");
    json(out, call_id);
    out.extend_from_slice(b",\"seq\":");
    json(out, &parts.seq);
    out.extend_from_slice(b",\"at\":");
    json(out, &parts.at);
    out.extend_from_slice(b",\"type\":");
    json(out, &parts.kind);
    out.extend_from_slice(b",\"agent_id\":");
    json(out, &parts.agent_id);
    out.extend_from_slice(b",\"details\":");
    out.extend_from_slice(parts.details_json.as_bytes());
    out.extend_from_slice(b",\"reason\":\"logged\"}");
    end_line(out, mark);
}

/// Appends `value` as JSON. Writing to a `Vec` cannot fail, and the types
/// written here (strings, integers, timestamps, event types) always
/// serialise.
fn json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(out, value);
}

/// Appends the closed record of `call_id` as one JSON line to `out`.
pub(crate) fn encode_closed(call_id: &str, issued: u64, at: Timestamp, out: &mut Vec<u8>) {
    let record = ClosedRef {
        v: SCHEMA_VERSION,
        call_id,
        record: LineKind::Closed,
        issued,
        at,
    };
    let mark = out.len();
    // Infallible for these types (a string, integers, a timestamp).
    let _ = serde_json::to_writer(&mut *out, &record);
    end_line(out, mark);
}

/// The checksum field: `,"crc":"` + 8 lowercase hex digits + `"`, the last
/// field of every line (before its `}`).
const CRC_FIELD: &[u8] = b",\"crc\":\"";
/// The bytes from `,"crc"` to the end of a line (without its `\n`).
const CRC_TAIL: usize = CRC_FIELD.len() + 8 + 2;
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Ends the line that starts at `start` in `out`, where `out[start..]` holds
/// one JSON object: puts the checksum field before its closing brace and
/// the `\n` after it. Every encoder ends its line here, so every line
/// carries a checksum of its bytes before `,"crc"`.
pub(crate) fn end_line(out: &mut Vec<u8>, start: usize) {
    if out.last() == Some(&b'}') {
        out.pop();
    }
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(CRC_FIELD);
    for shift in (0..8).rev() {
        out.push(HEX[((crc >> (shift * 4)) & 0xf) as usize]);
    }
    out.extend_from_slice(b"\"}\n");
}

/// Checks the checksum that ends `line` (without its `\n`): `Ok(true)` if
/// it has one and its bytes match, `Ok(false)` if it ends otherwise.
pub(crate) fn check_crc(line: &[u8]) -> Result<bool, LineError> {
    let Some(at) = line.len().checked_sub(CRC_TAIL) else {
        return Ok(false);
    };
    let (body, tail) = line.split_at(at);
    let Some(hex) = tail
        .strip_prefix(CRC_FIELD)
        .and_then(|t| t.strip_suffix(b"\"}"))
    else {
        return Ok(false);
    };
    let mut stored = 0u32;
    for &digit in hex {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return Err(LineError::MalformedChecksum),
        };
        stored = stored << 4 | u32::from(nibble);
    }
    let computed = crc32c::crc32c(body);
    if stored == computed {
        Ok(true)
    } else {
        Err(LineError::Checksum { stored, computed })
    }
}

/// Appends note `seq` of `call_id`, which left its ring for `reason`, as one
/// JSON line to `out`.
pub(crate) fn encode_note(call_id: &str, seq: u64, reason: Origin, note: &Note, out: &mut Vec<u8>) {
    let record = NoteRef {
        v: SCHEMA_VERSION,
        call_id,
        record: LineKind::Note,
        seq,
        at: note.at,
        text: &note.text,
        reason,
    };
    let mark = out.len();
    // Infallible for these types (strings, integers, a timestamp).
    let _ = serde_json::to_writer(&mut *out, &record);
    end_line(out, mark);
}

/// Parses one line (without its `\n`).
pub(crate) fn parse_line(line: &[u8]) -> Result<ArchiveLine, LineError> {
    ArchiveLine::parse(line)
}

/// Segment names: `audit-` + the index zero-padded to 12 digits + `.jsonl`,
/// so a plain name sort is also index order. A compressed segment adds
/// `.zst`; a sealed segment's index is `audit-` + the digits + `.idx`.
const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";
const COMPRESSED: &str = ".jsonl.zst";
const INDEX: &str = ".idx";
const DIGITS: usize = 12;

/// The file name of segment `index`.
#[must_use]
pub fn segment_name(index: u64) -> String {
    format!("{PREFIX}{index:0DIGITS$}{SUFFIX}")
}

/// The file name of segment `index` once compressed.
#[must_use]
pub fn compressed_segment_name(index: u64) -> String {
    format!("{PREFIX}{index:0DIGITS$}{COMPRESSED}")
}

/// The file name of the index of sealed segment `index`.
pub(crate) fn index_file_name(index: u64) -> String {
    format!("{PREFIX}{index:0DIGITS$}{INDEX}")
}

/// The index of a (plain) segment file name; `None` for any other name.
#[must_use]
pub fn segment_index(name: &OsStr) -> Option<u64> {
    numbered(name, SUFFIX)
}

/// The number in `audit-<digits><suffix>`.
/// Only the canonical spelling counts (no extra leading zeros), so two
/// names never stand for one segment.
fn numbered(name: &OsStr, suffix: &str) -> Option<u64> {
    let digits = name.to_str()?.strip_prefix(PREFIX)?.strip_suffix(suffix)?;
    if digits.len() < DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index: u64 = digits.parse().ok()?;
    (format!("{index:0DIGITS$}") == digits).then_some(index)
}

/// A segment file found in an archive directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SegmentPath {
    /// The segment's index.
    pub(crate) index: u64,
    /// The file to read: the compressed copy when there is one.
    pub(crate) path: PathBuf,
    /// Whether `path` is compressed.
    pub(crate) compressed: bool,
}

/// The segments among `names` in `dir`, in index order, and the other
/// names (the lock file, the spool id, segment indexes and the pruning
/// manifest left out).
///
/// A segment present both plain and compressed (a crash between the
/// compressed copy's rename and the plain file's removal) is read from the
/// compressed copy, which is renamed into place only once it is whole and
/// durable; the plain file is then listed among the others.
pub(crate) fn sort_segments(
    dir: &Path,
    names: impl IntoIterator<Item = std::ffi::OsString>,
) -> (Vec<SegmentPath>, Vec<PathBuf>) {
    let mut plain = Vec::new();
    let mut compressed = Vec::new();
    let mut others = Vec::new();
    for name in names {
        if let Some(index) = numbered(&name, SUFFIX) {
            plain.push((index, dir.join(&name)));
        } else if let Some(index) = numbered(&name, COMPRESSED) {
            compressed.push((index, dir.join(&name)));
        } else if numbered(&name, INDEX).is_none()
            && name != crate::archive::spool::fs::LOCK_FILE
            && name != crate::archive::spool::position::SPOOL_ID_FILE
            && name != crate::archive::spool::MANIFEST_FILE
        {
            others.push(dir.join(&name));
        }
    }
    compressed.sort();
    let mut segments: Vec<SegmentPath> = compressed
        .iter()
        .map(|(index, path)| SegmentPath {
            index: *index,
            path: path.clone(),
            compressed: true,
        })
        .collect();
    for (index, path) in plain {
        if compressed.binary_search_by_key(&index, |(i, _)| *i).is_ok() {
            others.push(path);
        } else {
            segments.push(SegmentPath {
                index,
                path,
                compressed: false,
            });
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
        encode_line("call-1", Origin::Evicted, &event, &mut out);
        out
    }

    #[test]
    fn lines_have_the_documented_fields_in_order() {
        let text = String::from_utf8(line(7)).expect("utf-8");
        assert_eq!(
            text,
            concat!(
                r#"{"v":3,"call_id":"call-1","seq":7,"at":"2025-11-25T09:30:00.000000001Z","#,
                r#""type":{"other":"x"},"agent_id":"speech","details":{"k":"v\nw"},"#,
                r#""reason":"evicted","crc":"8f519482"}"#,
                "\n"
            )
        );
        match parse_line(text.trim_end().as_bytes()).expect("parses") {
            ArchiveLine::Event(record) => {
                assert_eq!(
                    (record.seq, record.reason, record.version),
                    (7, Origin::Evicted, 3)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn closed_records_round_trip_and_version_one_lines_still_parse() {
        let mut out = Vec::new();
        let at = Timestamp::from_unix_nanos(1_764_063_060_000_000_000);
        encode_closed("call-1", 6, at, &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "{\"v\":3,\"call_id\":\"call-1\",\"record\":\"closed\",\"issued\":6,\"at\":\"2025-11-25T09:31:00.000000000Z\",\"crc\":\"43eca387\"}\n"
        );
        let closed = ClosedRecord {
            version: 3,
            call_id: "call-1".into(),
            issued: 6,
            at,
        };
        assert_eq!(
            parse_line(text.trim_end().as_bytes()),
            Ok(ArchiveLine::Closed(closed))
        );
        let v1 = br#"{"call_id":"c","seq":3,"at":"2025-11-25T09:30:00Z","type":"call_started","agent_id":null,"details":{},"reason":"drained"}"#;
        match parse_line(v1).expect("a version-1 line parses") {
            ArchiveLine::Event(r) => assert_eq!((r.version, r.seq), (1, 3)),
            other => panic!("{other:?}"),
        }
        let newer =
            br#"{"v":4,"call_id":"c","record":"closed","issued":1,"at":"2025-11-25T09:30:00Z"}"#;
        assert_eq!(
            parse_line(newer),
            Err(LineError::UnsupportedVersion { version: 4 })
        );
        let no_issued = br#"{"v":2,"call_id":"c","record":"closed","at":"2025-11-25T09:30:00Z"}"#;
        assert_eq!(
            parse_line(no_issued),
            Err(LineError::Missing { field: "issued" })
        );
    }

    /// Every line ends with the CRC32C of its bytes before `,"crc"`; a byte
    /// changed anywhere, a checksum missing from a version-3 line or one out
    /// of place makes the line corrupt. Lines of versions 1 and 2 need none.
    #[test]
    fn lines_carry_a_checksum_of_their_bytes() {
        let text = line(7);
        let body = &text[..text.len() - 1];
        let at = body.len() - CRC_TAIL;
        assert_eq!(&body[at..at + CRC_FIELD.len()], CRC_FIELD);
        let stored = std::str::from_utf8(&body[at + CRC_FIELD.len()..body.len() - 2]).expect("hex");
        assert_eq!(stored, format!("{:08x}", crc32c::crc32c(&body[..at])));
        assert!(parse_line(body).is_ok());

        // A digit of the seq changed: still JSON, but not what was written.
        let mut flipped = body.to_vec();
        let seq = flipped
            .windows(8)
            .position(|w| w == b"\"seq\":7,")
            .expect("seq field")
            + 6;
        flipped[seq] = b'8';
        assert!(matches!(
            parse_line(&flipped),
            Err(LineError::Checksum { .. })
        ));
        // Any single byte of the line changed (the checksum's own included).
        for i in 0..body.len() {
            let mut changed = body.to_vec();
            changed[i] ^= 0x01;
            assert!(parse_line(&changed).is_err(), "byte {i} changed");
        }
        // Without the checksum, or with it elsewhere than last.
        let bare = [&body[..at], b"}"].concat();
        assert_eq!(parse_line(&bare), Err(LineError::Missing { field: "crc" }));
        let moved = format!(
            "{{\"crc\":\"{stored}\",{}}}",
            std::str::from_utf8(&body[1..at]).expect("utf-8")
        );
        assert_eq!(
            parse_line(moved.as_bytes()),
            Err(LineError::MalformedChecksum)
        );
        let upper = [
            &body[..body.len() - 10],
            stored.to_uppercase().as_bytes(),
            b"\"}",
        ]
        .concat();
        if stored.bytes().any(|b| b.is_ascii_alphabetic()) {
            assert_eq!(parse_line(&upper), Err(LineError::MalformedChecksum));
        }
        // A version-2 line needs no checksum, but one it has must match.
        let v2 = String::from_utf8(bare)
            .expect("utf-8")
            .replace("\"v\":3", "\"v\":2");
        assert!(parse_line(v2.as_bytes()).is_ok());
        let mut sealed = v2.into_bytes();
        sealed.pop();
        sealed.push(b'}');
        end_line(&mut sealed, 0);
        assert!(parse_line(&sealed[..sealed.len() - 1]).is_ok());
        let text = LineError::Checksum {
            stored: 0xab,
            computed: 0x1234_5678,
        }
        .to_string();
        assert!(
            text.contains("000000ab") && text.contains("12345678"),
            "{text}"
        );
    }

    #[test]
    fn note_lines_have_the_documented_fields_in_order_and_round_trip() {
        let at = Timestamp::from_unix_nanos(1_764_063_000_000_000_001);
        let mut out = Vec::new();
        encode_note("call-1", 4, Origin::Evicted, &Note::new(at, "hi"), &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            concat!(
                r#"{"v":3,"call_id":"call-1","record":"note","seq":4,"#,
                r#""at":"2025-11-25T09:30:00.000000001Z","text":"hi","reason":"evicted","#,
                r#""crc":"6e7fef7b"}"#,
                "\n"
            )
        );
        let long = "Zoë \u{1F600} \"quoted\" \\ tab\t cr\r nl\n nul\0 \u{2028}".repeat(500);
        for (seq, text) in [(0, ""), (7, "plain"), (u64::MAX, long.as_str())] {
            for reason in [Origin::Evicted, Origin::Drained] {
                let mut out = Vec::new();
                encode_note("call-é", seq, reason, &Note::new(at, text), &mut out);
                // One line: every newline in the text is escaped.
                assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
                let line = &out[..out.len() - 1];
                let want = NoteRecord {
                    version: SCHEMA_VERSION,
                    call_id: "call-é".into(),
                    seq,
                    at,
                    text: text.into(),
                    reason,
                };
                assert_eq!(parse_line(line), Ok(ArchiveLine::Note(want.clone())));
                // The serde form is the line without its checksum.
                let bare = [&line[..line.len() - CRC_TAIL], b"}"].concat();
                assert_eq!(serde_json::to_vec(&want).expect("serialises"), bare);
                assert_eq!(want.note(), Note::new(at, text));
            }
        }
        let no_text = br#"{"v":2,"call_id":"c","record":"note","seq":0,"at":"2025-11-25T09:30:00Z","reason":"evicted"}"#;
        assert_eq!(
            parse_line(no_text),
            Err(LineError::Missing { field: "text" })
        );
        let event: Result<NoteRecord, _> = serde_json::from_slice(&line(3)[..line(3).len() - 1]);
        assert!(event.is_err(), "an event line is not a note");
    }

    /// The write-through path transcodes the ring's encoding straight to a
    /// line; it must write exactly what encoding the decoded event writes.
    #[test]
    fn logged_lines_are_byte_identical_to_decoded_ones() {
        use crate::call::{decode_event, EventParts};
        let mut details = Details::new();
        details.insert("amount".into(), serde_json::json!(1.0 / 11.0));
        details.insert("name".into(), "Zoë \"Ø\" \u{1F600}\n\t".into());
        details.insert(
            "nested".into(),
            serde_json::json!({"a": [1, null, -0.0, 5e-324]}),
        );
        for (kind, agent) in [
            (AuditEventType::ConsentGiven, Some("speech")),
            (AuditEventType::Other("x\"y".into()), None),
        ] {
            for details in [Details::new(), details.clone()] {
                let at = Timestamp::from_unix_nanos(1_764_063_000_123_456_789);
                let mut enc =
                    crate::call::encode_event(at, &kind, agent, &details).expect("encodes");
                crate::call::set_event_seq(&mut enc, 42);
                let parts = EventParts::parse(&enc).expect("parses");
                let mut fast = Vec::new();
                encode_logged("call-é", &parts, &mut fast);
                let event = decode_event(&enc).expect("decodes");
                let mut slow = Vec::new();
                encode_line("call-é", Origin::Logged, &event, &mut slow);
                assert_eq!(String::from_utf8(fast), String::from_utf8(slow));
            }
        }
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

        // An unterminated last line whose checksum fails is torn; a
        // terminated one is corrupt, not a tail.
        let mut bad = line(1);
        let digit = bad.len() - 4;
        bad[digit] = if bad[digit] == b'0' { b'1' } else { b'0' };
        let mut unterminated = line(0);
        unterminated.extend_from_slice(&bad[..bad.len() - 1]);
        assert_eq!(torn_tail_start(&unterminated), Some(line(0).len()));
        let mut terminated = line(0);
        terminated.extend_from_slice(&bad);
        assert_eq!(torn_tail_start(&terminated), None);
    }
}

/// The encoders' cost per line (the archiver's thread encodes every event):
/// `cargo test --release --lib archive::record::speed -- --ignored --nocapture`.
#[cfg(all(test, not(loom)))]
mod speed {
    use super::*;
    use std::time::Instant;

    #[test]
    #[ignore = "a timing, run by hand in release"]
    fn encoders_per_line() {
        let mut details = Details::new();
        details.insert("tool".into(), "lookup_account".into());
        details.insert("latency_ms".into(), 42.into());
        let at = Timestamp::from_unix_nanos(1_764_063_000_123_456_789);
        let kind = AuditEventType::ToolInvoked;
        let enc = crate::call::encode_event(at, &kind, Some("speech"), &details).expect("encodes");
        let parts = crate::call::EventParts::parse(&enc).expect("parses");
        let event = crate::call::decode_event(&enc).expect("decodes");
        const N: u32 = 2_000_000;
        let mut out = Vec::with_capacity(1 << 20);
        for round in 0..3 {
            let started = Instant::now();
            for _ in 0..N {
                out.clear();
                encode_logged("call-12345", &parts, &mut out);
            }
            let logged = started.elapsed() / N;
            let started = Instant::now();
            for _ in 0..N {
                out.clear();
                encode_line("call-12345", Origin::Logged, &event, &mut out);
            }
            let line = started.elapsed() / N;
            let started = Instant::now();
            for _ in 0..N {
                std::hint::black_box(parse_line(&out[..out.len() - 1]).is_ok());
            }
            let parse = started.elapsed() / N;
            println!(
                "round {round}: encode_logged {logged:?}/line, encode_line {line:?}/line, \
                 parse_line {parse:?}/line ({} bytes)",
                out.len()
            );
        }
    }
}
