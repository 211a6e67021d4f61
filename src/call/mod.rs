//! The call layer: one [`CallState`] per live call, with the original host's
//! operations done without locks.
//!
//! - [`CallState`]: append notes, log audit events, all notes as one string,
//!   summaries, metrics, end of call.
//! - [`NotesReader`]: a reader's cached rendering of the notes, brought up to
//!   date at each read.
//! - [`Note`], [`AuditEvent`], [`AuditEventType`]: what is stored.
//! - [`Limits`]: ring sizes, from defaults, the environment, or per script type.
//! - [`CallSummary`]: a serialisable snapshot (JSON, YAML).
//!
//! Timestamps are stored as unix nanoseconds; chrono is used only in this
//! layer, to render them.

mod audit;
mod gate;
mod limits;
mod note;
mod reader;
mod state;
mod summary;
mod time;

pub use audit::{AuditEvent, AuditEventType, Details};

pub(crate) use audit::EventParts;

/// Encodes an event as the audit ring stores it, with seq 0 (tests of the
/// archive's transcoding build inputs with it).
#[cfg(all(test, not(loom)))]
pub(crate) fn encode_event(
    at: Timestamp,
    kind: &AuditEventType,
    agent_id: Option<&str>,
    details: &Details,
) -> Result<Vec<u8>, crate::EncodeError> {
    audit::EncodedEvent::new(at, kind, agent_id, details).map(audit::EncodedEvent::into_bytes)
}

/// Sets the seq of an encoded event.
#[cfg(all(test, not(loom)))]
pub(crate) fn set_event_seq(bytes: &mut [u8], seq: u64) {
    bytes[..8].copy_from_slice(&seq.to_le_bytes());
}

/// Decodes an event from the audit ring's encoding (the archive's
/// write-through path sends events in it).
pub(crate) fn decode_event(bytes: &[u8]) -> Result<AuditEvent, crate::DecodeError> {
    use crate::Record;
    audit::AuditRecord::decode(bytes)
}
pub use limits::{
    Limits, LimitsError, ENV_MAX_AUDIT_LOG, ENV_MAX_EVENT_BYTES, ENV_MAX_NOTES, ENV_MAX_NOTE_BYTES,
    MAX_ENTRY_LIMIT, MAX_LIMIT,
};
pub use note::Note;
pub use reader::NotesReader;
pub use state::{CallError, CallState, CallStateBuilder, EndOutcome};
pub use summary::{CallMetrics, CallSummary, Counts, FormatError, RingStats};
pub use time::{Clock, ParseTimestampError, SystemClock, TimeZoneChoice, Timestamp};
