//! Serialisable summaries and metrics of a call.

use std::fmt;
use std::sync::Arc;

use super::audit::AuditEvent;
use super::time::Timestamp;
use crate::ring::Metrics;

/// Entry counts of one ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Counts {
    /// Entries ever appended.
    pub appended: u64,
    /// Entries still in memory.
    pub retained: u64,
    /// Entries overwritten by newer ones (handed to the sink, if any).
    pub evicted: u64,
}

impl From<&RingStats> for Counts {
    fn from(s: &RingStats) -> Self {
        Self {
            appended: s.appended,
            retained: s.retained,
            evicted: s.evicted,
        }
    }
}

/// Counters of one of a call's rings.
///
/// Exact once appends have stopped; while they run, `evicted` and `retained`
/// may be off by the appends in flight.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct RingStats {
    /// Capacity in entries.
    pub capacity: u64,
    /// Entries ever appended.
    pub appended: u64,
    /// Entries in memory.
    pub retained: u64,
    /// Entries overwritten by newer ones.
    pub evicted: u64,
    /// Appends that found the ring full and overwrote the oldest entry.
    pub overflow_events: u64,
    /// `retained / capacity`, from 0 to 1.
    pub utilisation: f64,
    /// Times an append waited for a slot (a stalled writer one lap behind,
    /// or the capture of the entry it overwrites).
    pub writer_waits: u64,
    /// Entries readers skipped because they were being written or
    /// overwritten while read.
    pub reader_skips: u64,
    /// Hand-offs where the sink made the writer wait (back-pressure).
    pub sink_waits: u64,
    /// Entries the sink refused (kept by the ring, not lost).
    pub refused: u64,
    /// Entries handed to the sink when the call ended.
    pub drained: u64,
    /// Heap bytes the ring holds: slot pages and extension blocks (see
    /// [`Metrics::bytes`](crate::Metrics::bytes)).
    #[serde(default)]
    pub bytes: u64,
}

impl RingStats {
    pub(crate) fn from_metrics(m: &Metrics) -> Self {
        Self {
            capacity: m.capacity,
            appended: m.appended,
            retained: m.retained,
            evicted: m.evicted,
            overflow_events: m.evicted,
            utilisation: m.retained as f64 / m.capacity.max(1) as f64,
            writer_waits: m.writer_waits,
            reader_skips: m.reader_skips,
            sink_waits: m.sink_waits,
            refused: m.refused,
            drained: m.drained,
            bytes: m.bytes,
        }
    }
}

/// Counters of a call: one [`RingStats`] per ring.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::call::{CallState, Limits};
///
/// let call = CallState::new("c", Limits::new(2, 2).expect("valid"));
/// for note in ["a", "b", "c"] {
///     call.append_note(note).expect("live call");
/// }
/// let m = call.metrics();
/// assert_eq!((m.notes.appended, m.notes.evicted, m.notes.overflow_events), (3, 1, 1));
/// assert_eq!((m.audit.appended, m.audit_seqs_issued), (0, 0));
/// let json = serde_json::to_string(&m).expect("serialisable");
/// assert!(json.contains("\"utilisation\":1.0"));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct CallMetrics {
    /// The notes ring.
    pub notes: RingStats,
    /// The audit ring.
    pub audit: RingStats,
    /// Audit seqs handed out: the next event's seq.
    pub audit_seqs_issued: u64,
    /// Audit events written through to the call's archive as they were
    /// logged (0 without [`audit_archive`](super::CallStateBuilder::audit_archive)).
    #[serde(default)]
    pub audit_written: u64,
    /// Audit events the archive or the eviction sink refused (stopped or
    /// stopping): held by the call until
    /// [`take_refused_audit`](super::CallState::take_refused_audit), never
    /// dropped.
    #[serde(default)]
    pub audit_refused: u64,
}

/// A snapshot of a call, for supervisors and end-of-call code.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::call::{CallState, CallSummary, Timestamp};
///
/// let call = CallState::builder("call-9")
///     .clock(|| Timestamp::from_unix_nanos(1_764_063_000_000_000_000))
///     .build();
/// call.append_note("payment plan agreed").expect("live call");
/// let summary = call.summarize();
/// assert_eq!(summary.notes_text, "[2025-11-25 09:30:00] payment plan agreed");
///
/// let yaml = summary.to_yaml().expect("serialisable");
/// assert_eq!(CallSummary::from_yaml(&yaml).expect("parses"), summary);
/// let json = summary.to_json().expect("serialisable");
/// assert_eq!(CallSummary::from_json(&json).expect("parses"), summary);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct CallSummary {
    /// The call.
    pub call_id: String,
    /// When the call state was created.
    pub started_at: Timestamp,
    /// When the call was ended, if it has been.
    pub ended_at: Option<Timestamp>,
    /// Note counts.
    pub notes: Counts,
    /// Audit event counts.
    pub audit: Counts,
    /// All retained notes, rendered and joined as by
    /// [`CallState::all_notes`](super::CallState::all_notes).
    pub notes_text: String,
    /// The retained audit events, in seq order.
    pub audit_events: Vec<AuditEvent>,
    /// Counters of both rings.
    pub metrics: CallMetrics,
}

/// A summary could not be written or read in a text format.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use std::error::Error;
///
/// let err = callring::call::CallSummary::from_json("not json").unwrap_err();
/// assert!(err.to_string().starts_with("call summary JSON:"));
/// assert!(err.source().is_some()); // serde_json's own error
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FormatError {
    format: &'static str,
    message: String,
    /// The serialiser's own error, for [`source`](std::error::Error::source).
    source: Arc<dyn std::error::Error + Send + Sync>,
}

/// Equal when the format and the message are (the sources are not compared).
impl PartialEq for FormatError {
    fn eq(&self, other: &Self) -> bool {
        self.format == other.format && self.message == other.message
    }
}

impl Eq for FormatError {}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call summary {}: {}", self.format, self.message)
    }
}

/// The source is the serialiser's error (serde_json's or serde-saphyr's).
impl std::error::Error for FormatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl FormatError {
    fn new(format: &'static str, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            format,
            message: error.to_string(),
            source: Arc::new(error),
        }
    }
}

impl CallSummary {
    /// Pretty-printed JSON.
    ///
    /// # Errors
    ///
    /// A [`FormatError`] from the serialiser (not expected for summaries).
    pub fn to_json(&self) -> Result<String, FormatError> {
        serde_json::to_string_pretty(self).map_err(|e| FormatError::new("JSON", e))
    }

    /// YAML (via serde-saphyr).
    ///
    /// # Errors
    ///
    /// A [`FormatError`] from the serialiser (not expected for summaries).
    #[cfg(feature = "yaml")]
    #[cfg_attr(docsrs, doc(cfg(feature = "yaml")))]
    pub fn to_yaml(&self) -> Result<String, FormatError> {
        serde_saphyr::to_string(self).map_err(|e| FormatError::new("YAML", e))
    }

    /// Parses JSON written by [`to_json`](CallSummary::to_json).
    ///
    /// # Errors
    ///
    /// A [`FormatError`] saying what and where, for malformed input.
    pub fn from_json(text: &str) -> Result<Self, FormatError> {
        serde_json::from_str(text).map_err(|e| FormatError::new("JSON", e))
    }

    /// Parses YAML written by [`to_yaml`](CallSummary::to_yaml).
    ///
    /// # Errors
    ///
    /// A [`FormatError`] saying what and where, for malformed input.
    #[cfg(feature = "yaml")]
    #[cfg_attr(docsrs, doc(cfg(feature = "yaml")))]
    pub fn from_yaml(text: &str) -> Result<Self, FormatError> {
        serde_saphyr::from_str(text).map_err(|e| FormatError::new("YAML", e))
    }
}
