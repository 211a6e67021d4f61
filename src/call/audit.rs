//! Audit events and their compact encoding in the ring.

use std::collections::BTreeMap;
use std::fmt;

use super::time::Timestamp;
use crate::record::{DecodeError, EncodeError, Record};

/// Free-form details of an audit event: string keys, JSON values.
pub type Details = BTreeMap<String, serde_json::Value>;

/// What happened. Serialises in `snake_case` (`"consent_given"`); `Other`
/// as `{"other": "..."}`.
///
/// In memory the ring stores the variant's index; everything that leaves the
/// process (summaries, archives) uses the names, so adding variants (the enum
/// is `non_exhaustive`) never changes a persisted record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEventType {
    /// The call was connected.
    CallStarted,
    /// The call was ended.
    CallEnded,
    /// The caller's identity was verified.
    IdentityVerified,
    /// Identity verification failed.
    IdentityFailed,
    /// The caller gave consent (for example to recording or processing).
    ConsentGiven,
    /// The caller withdrew consent.
    ConsentWithdrawn,
    /// Personal data was read.
    DataAccessed,
    /// A payment was arranged.
    PaymentArranged,
    /// The call was escalated to a human.
    Escalated,
    /// An agent invoked a tool.
    ToolInvoked,
    /// One agent handed the call to another.
    AgentHandoff,
    /// A note was edited.
    NoteEdited,
    /// Anything else, named by the host.
    Other(String),
}

impl fmt::Display for AuditEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::CallStarted => "call_started",
            Self::CallEnded => "call_ended",
            Self::IdentityVerified => "identity_verified",
            Self::IdentityFailed => "identity_failed",
            Self::ConsentGiven => "consent_given",
            Self::ConsentWithdrawn => "consent_withdrawn",
            Self::DataAccessed => "data_accessed",
            Self::PaymentArranged => "payment_arranged",
            Self::Escalated => "escalated",
            Self::ToolInvoked => "tool_invoked",
            Self::AgentHandoff => "agent_handoff",
            Self::NoteEdited => "note_edited",
            Self::Other(name) => return write!(f, "other:{name}"),
        };
        f.write_str(name)
    }
}

/// One audit event of a call.
///
/// Serialised field names are stable: `seq`, `at` (RFC 3339), `type`,
/// `agent_id`, `details`.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::call::{AuditEventType, CallState, Details};
///
/// let call = CallState::new("call-7", Default::default());
/// let mut details = Details::new();
/// details.insert("method".into(), "dob+postcode".into());
/// let seq = call
///     .log_event(&AuditEventType::IdentityVerified, Some("speech"), &details)
///     .expect("live call");
/// let event = &call.audit_events()[0];
/// assert_eq!((event.seq, &event.kind), (seq, &AuditEventType::IdentityVerified));
/// let json = serde_json::to_string(event).expect("serialisable");
/// assert!(json.contains(r#""type":"identity_verified""#));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct AuditEvent {
    /// Position in the call's audit trail: 0, 1, 2, ... with no gaps.
    pub seq: u64,
    /// When it was logged.
    pub at: Timestamp,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: AuditEventType,
    /// The agent that logged it, if any.
    pub agent_id: Option<String>,
    /// Free-form details.
    pub details: Details,
}

impl AuditEvent {
    /// An event as a call would have logged it (for sinks and archives fed
    /// by other means, and for tests).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::call::{AuditEvent, AuditEventType, Details, Timestamp};
    ///
    /// let at = Timestamp::from_unix_nanos(0);
    /// let event = AuditEvent::new(7, at, AuditEventType::CallStarted, None, Details::new());
    /// assert_eq!((event.seq, event.at), (7, at));
    /// # }
    /// ```
    #[must_use]
    pub fn new(
        seq: u64,
        at: Timestamp,
        kind: AuditEventType,
        agent_id: Option<String>,
        details: Details,
    ) -> Self {
        Self {
            seq,
            at,
            kind,
            agent_id,
            details,
        }
    }
}

/// Bytes before the body: seq and timestamp, little-endian.
const EVENT_HEADER: usize = 16;

/// The postcard body, borrowed for encoding.
#[derive(serde::Serialize)]
struct BodyRef<'a> {
    kind: &'a AuditEventType,
    agent_id: Option<&'a str>,
    /// The details map as JSON text: postcard is not self-describing and
    /// cannot carry arbitrary JSON values itself.
    details: &'a str,
}

/// The postcard body, owned for decoding.
#[derive(serde::Deserialize)]
struct Body {
    kind: AuditEventType,
    agent_id: Option<String>,
    details: String,
}

/// The postcard body, borrowed from the ring's encoding.
#[derive(serde::Deserialize)]
struct BodyBorrowed<'a> {
    kind: AuditEventType,
    #[serde(borrow)]
    agent_id: Option<&'a str>,
    #[serde(borrow)]
    details: &'a str,
}

/// An encoded event's parts, borrowed: what the archive writes, without
/// parsing the details back into a map.
#[derive(Debug)]
pub(crate) struct EventParts<'a> {
    pub(crate) seq: u64,
    pub(crate) at: Timestamp,
    pub(crate) kind: AuditEventType,
    pub(crate) agent_id: Option<&'a str>,
    /// The details map as compact JSON text (as `serde_json` wrote it).
    pub(crate) details_json: &'a str,
}

impl<'a> EventParts<'a> {
    /// Splits the ring's encoding of an event.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let (seq, at) = header(bytes)?;
        let body: BodyBorrowed<'a> = postcard::from_bytes(&bytes[EVENT_HEADER..])
            .map_err(|e| DecodeError::custom(format!("audit event {seq}: {e}")))?;
        Ok(Self {
            seq,
            at,
            kind: body.kind,
            agent_id: body.agent_id,
            details_json: body.details,
        })
    }
}

/// The timestamp of an encoded event.
pub(crate) fn timestamp(bytes: &[u8]) -> Result<Timestamp, DecodeError> {
    header(bytes).map(|(_, at)| at)
}

/// The seq and timestamp at the front of an encoded event.
fn header(bytes: &[u8]) -> Result<(u64, Timestamp), DecodeError> {
    if bytes.len() < EVENT_HEADER {
        return Err(DecodeError::custom(format!(
            "a stored audit event is at least {EVENT_HEADER} bytes, got {}",
            bytes.len()
        )));
    }
    let word = |i: usize| {
        let mut le = [0u8; 8];
        le.copy_from_slice(&bytes[i..i + 8]);
        le
    };
    Ok((
        u64::from_le_bytes(word(0)),
        Timestamp::from_unix_nanos(i64::from_le_bytes(word(8))),
    ))
}

/// An audit event encoded for the ring, its seq still to be filled in.
///
/// Encoding happens before the seq is taken, so an event that cannot be
/// encoded or is too large never consumes a seq (no gap in the trail).
#[derive(Debug)]
pub(crate) struct EncodedEvent(Vec<u8>);

impl EncodedEvent {
    pub(crate) fn new(
        at: Timestamp,
        kind: &AuditEventType,
        agent_id: Option<&str>,
        details: &Details,
    ) -> Result<Self, EncodeError> {
        let details = serde_json::to_string(details).map_err(EncodeError::custom)?;
        let mut bytes = Vec::with_capacity(EVENT_HEADER + 16 + details.len());
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&at.unix_nanos().to_le_bytes());
        let body = BodyRef {
            kind,
            agent_id,
            details: &details,
        };
        let bytes = postcard::to_extend(&body, bytes).map_err(EncodeError::custom)?;
        Ok(Self(bytes))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn set_seq(&mut self, seq: u64) {
        self.0[..8].copy_from_slice(&seq.to_le_bytes());
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// How audit events are stored: seq and unix nanoseconds (8 bytes each), then
/// the postcard body.
#[derive(Debug)]
pub(crate) struct AuditRecord;

impl Record for AuditRecord {
    type Value = [u8];
    type Owned = AuditEvent;
    type Encoded<'a> = &'a [u8];

    fn encode(value: &[u8]) -> Result<&[u8], EncodeError> {
        Ok(value)
    }

    fn decode(bytes: &[u8]) -> Result<AuditEvent, DecodeError> {
        let (seq, at) = header(bytes)?;
        let body: Body = postcard::from_bytes(&bytes[EVENT_HEADER..])
            .map_err(|e| DecodeError::custom(format!("audit event {seq}: {e}")))?;
        let details = serde_json::from_str(&body.details)
            .map_err(|e| DecodeError::custom(format!("audit event {seq} details: {e}")))?;
        Ok(AuditEvent {
            seq,
            at,
            kind: body.kind,
            agent_id: body.agent_id,
            details,
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_the_ring_encoding() {
        let mut details = Details::new();
        details.insert("amount".into(), serde_json::json!(120.5));
        details.insert("nested".into(), serde_json::json!({"a": [1, null, "x"]}));
        for kind in [
            AuditEventType::CallStarted,
            AuditEventType::NoteEdited,
            AuditEventType::Other("custom thing".into()),
        ] {
            let at = Timestamp::from_unix_nanos(1_764_063_000_123_456_789);
            let mut enc = EncodedEvent::new(at, &kind, Some("tools"), &details).expect("encodes");
            enc.set_seq(42);
            let event = AuditRecord::decode(enc.bytes()).expect("decodes");
            assert_eq!(
                event,
                AuditEvent {
                    seq: 42,
                    at,
                    kind,
                    agent_id: Some("tools".into()),
                    details: details.clone(),
                }
            );
        }
    }

    #[test]
    fn corrupt_bytes_are_errors_not_panics() {
        assert!(AuditRecord::decode(&[1, 2, 3]).is_err());
        let mut bytes = vec![0u8; 16];
        bytes.extend_from_slice(&[200, 200, 200]);
        assert!(AuditRecord::decode(&bytes).is_err());
    }

    #[test]
    fn type_names_are_stable() {
        let json = serde_json::to_string(&AuditEventType::ConsentWithdrawn).expect("ok");
        assert_eq!(json, r#""consent_withdrawn""#);
        let json = serde_json::to_string(&AuditEventType::Other("x".into())).expect("ok");
        assert_eq!(json, r#"{"other":"x"}"#);
        assert_eq!(AuditEventType::AgentHandoff.to_string(), "agent_handoff");
    }
}
