//! The call layer: one [`CallState`] per live call, with the original host's
//! operations done without locks.
//!
//! - [`CallState`]: append notes, log audit events, all notes as one string,
//!   summaries, metrics, end of call.
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
mod state;
mod summary;
mod time;

pub use audit::{AuditEvent, AuditEventType, Details};
pub use limits::{
    Limits, LimitsError, ENV_MAX_AUDIT_LOG, ENV_MAX_EVENT_BYTES, ENV_MAX_NOTES, ENV_MAX_NOTE_BYTES,
    MAX_ENTRY_LIMIT, MAX_LIMIT,
};
pub use note::Note;
pub use state::{CallError, CallState, CallStateBuilder, EndOutcome};
pub use summary::{CallMetrics, CallSummary, Counts, FormatError, RingStats};
pub use time::{Clock, ParseTimestampError, SystemClock, TimeZoneChoice, Timestamp};
