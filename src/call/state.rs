//! `CallState`: one call's notes and audit trail, shared by its agent threads.

use std::fmt;
use std::sync::OnceLock;

use super::audit::{AuditEvent, AuditEventType, AuditRecord, Details, EncodedEvent};
use super::gate::Gate;
use super::limits::Limits;
use super::note::{EncodedNote, Note, NoteRecord, NOTE_HEADER};
use super::summary::{CallMetrics, CallSummary, Counts, RingStats};
use super::time::{Clock, PrefixCache, SystemClock, TimeZoneChoice, Timestamp, PREFIX_LEN};
use crate::record::EncodeError;
use crate::ring::Ring;
use crate::sink::Sink;
use crate::PushError;

/// Slot size of both rings: 112 payload bytes, so a note of up to 104 bytes
/// (after its 8-byte timestamp) takes one slot.
const NOTE_SLOT_BYTES: usize = 128;
/// Audit events carry a type, an agent and a JSON details map: 240 payload
/// bytes hold a typical one in one slot, so `max_audit_log` events fit.
const AUDIT_SLOT_BYTES: usize = 256;

/// Why a note or event was not stored. Nothing was stored in any case; the
/// caller still holds what it passed.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::call::{CallError, CallState, Limits};
///
/// let call = CallState::new("call-3", Limits::new(4, 4).expect("valid"));
/// let err = call.append_note(&"x".repeat(10_000)).unwrap_err();
/// assert!(matches!(err, CallError::TooLarge { len: 10_000, .. }));
/// println!("{err}"); // entry of 10000 bytes is longer than the 4096 bytes the call keeps
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// [`CallState::end`] has been called.
    Ended {
        /// The call.
        call_id: String,
    },
    /// The note or encoded event is longer than the ring holds.
    TooLarge {
        /// Its length in bytes (encoded, for events).
        len: usize,
        /// The longest accepted.
        max: usize,
    },
    /// The event's details could not be encoded.
    Encode(EncodeError),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ended { call_id } => write!(f, "call {call_id} has ended"),
            Self::TooLarge { len, max } => {
                write!(
                    f,
                    "entry of {len} bytes is longer than the {max} bytes the call keeps"
                )
            }
            Self::Encode(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Encode(e) => Some(e),
            _ => None,
        }
    }
}

/// What [`CallState::end`] did.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::call::{CallState, EndOutcome};
///
/// let call = CallState::new("call-3", Default::default());
/// call.append_note("bye").expect("live call");
/// // No sinks attached: nothing to drain, the notes stay readable.
/// assert_eq!(call.end(), EndOutcome::Ended { notes_drained: 0, audit_drained: 0 });
/// assert_eq!(call.all_notes().len(), 25);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an ended call's drain counts say whether its sinks got everything"]
pub enum EndOutcome {
    /// This call ended the call and drained both rings to their sinks.
    Ended {
        /// Notes handed to the notes sink (0 without one).
        notes_drained: u64,
        /// Audit events handed to the audit sink (0 without one).
        audit_drained: u64,
    },
    /// The call had already been ended.
    AlreadyEnded,
}

/// The live state of one call: notes and an audit trail in lock-free rings.
///
/// Share it between the call's agent threads in an `Arc`; every method takes
/// `&self`. Appending never takes a lock; reading (all notes, a summary)
/// never blocks an append. When a ring is full the oldest entry is
/// overwritten; with a sink attached it is handed to the sink first, exactly
/// once. [`end`](CallState::end) closes both rings and drains what is left
/// to the sinks, so an ended call's audit sink holds the whole trail, seqs
/// `0..n`, each once.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use std::sync::Arc;
/// use callring::call::{AuditEventType, CallState, Details, Limits};
///
/// let (tx, archive) = crossbeam_channel::unbounded();
/// let call = Arc::new(
///     CallState::builder("call-42")
///         .limits(Limits::new(1000, 2).expect("valid"))
///         .audit_sink(tx)
///         .build(),
/// );
/// std::thread::scope(|s| {
///     s.spawn(|| call.append_note("caller asked about the invoice"));
///     s.spawn(|| {
///         for kind in [AuditEventType::CallStarted, AuditEventType::IdentityVerified] {
///             call.log_event(&kind, Some("speech"), &Details::new()).expect("live call");
///         }
///     });
/// });
/// call.log_event(&AuditEventType::CallEnded, None, &Details::new()).expect("live call");
/// let summary = call.summarize();
/// assert_eq!(summary.audit.retained, 2);
/// let _ = call.end();
/// // The archive got the evicted event, then the two drained ones.
/// let seqs: Vec<u64> = archive.try_iter().map(|e| e.value.seq).collect();
/// assert_eq!(seqs.len(), 3);
/// # }
/// ```
pub struct CallState {
    call_id: String,
    limits: Limits,
    started_at: Timestamp,
    ended_at: OnceLock<Timestamp>,
    zone: TimeZoneChoice,
    clock: Box<dyn Clock>,
    notes: Ring<NoteRecord>,
    audit: Ring<AuditRecord>,
    gate: Gate,
}

impl fmt::Debug for CallState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallState")
            .field("call_id", &self.call_id)
            .field("limits", &self.limits)
            .field("started_at", &self.started_at)
            .field("ended_at", &self.ended_at.get())
            .field("notes", &self.notes)
            .field("audit", &self.audit)
            .finish_non_exhaustive()
    }
}

/// Builds a [`CallState`]: limits, sinks, clock and time zone.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::call::{CallState, Limits, TimeZoneChoice, Timestamp};
///
/// let (archive, _trail) = crossbeam_channel::bounded(1024); // back-pressures when full
/// let call = CallState::builder("call-8")
///     .limits(Limits::new(2000, 800).expect("valid"))
///     .audit_sink(archive)
///     .clock(Timestamp::now)
///     .time_zone(TimeZoneChoice::Utc)
///     .build();
/// assert_eq!(call.limits().max_notes(), 2000);
/// # }
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct CallStateBuilder {
    call_id: String,
    limits: Limits,
    audit_sink: Option<Box<dyn Sink<AuditEvent>>>,
    notes_sink: Option<Box<dyn Sink<Note>>>,
    clock: Box<dyn Clock>,
    zone: TimeZoneChoice,
}

impl fmt::Debug for CallStateBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallStateBuilder")
            .field("call_id", &self.call_id)
            .field("limits", &self.limits)
            .field("audit_sink", &self.audit_sink.is_some())
            .field("notes_sink", &self.notes_sink.is_some())
            .field("zone", &self.zone)
            .finish_non_exhaustive()
    }
}

impl CallStateBuilder {
    /// Ring sizes (default: [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Where evicted and, at [`end`](CallState::end), remaining audit events
    /// go: the archive. Without one, evicted events are dropped (counted).
    pub fn audit_sink(mut self, sink: impl Sink<AuditEvent> + 'static) -> Self {
        self.audit_sink = Some(Box::new(sink));
        self
    }

    /// Where evicted and remaining notes go. Optional.
    pub fn notes_sink(mut self, sink: impl Sink<Note> + 'static) -> Self {
        self.notes_sink = Some(Box::new(sink));
        self
    }

    /// The clock that stamps notes and events (default: [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// The time zone notes are rendered in (default UTC).
    pub fn time_zone(mut self, zone: TimeZoneChoice) -> Self {
        self.zone = zone;
        self
    }

    /// Builds the call state; its start time is read from the clock now.
    #[must_use]
    pub fn build(self) -> CallState {
        let mut notes = Ring::builder()
            .capacity(self.limits.max_notes())
            .slot_bytes(NOTE_SLOT_BYTES)
            .max_entry_bytes(self.limits.max_note_bytes() + NOTE_HEADER);
        if let Some(sink) = self.notes_sink {
            notes = notes.sink(sink);
        }
        let mut audit = Ring::builder()
            .capacity(self.limits.max_audit_log())
            .slot_bytes(AUDIT_SLOT_BYTES)
            .max_entry_bytes(self.limits.max_event_bytes());
        if let Some(sink) = self.audit_sink {
            audit = audit.sink(sink);
        }
        CallState {
            started_at: self.clock.now(),
            call_id: self.call_id,
            limits: self.limits,
            ended_at: OnceLock::new(),
            zone: self.zone,
            clock: self.clock,
            // `Limits` keeps both sizes in 1..=MAX_LIMIT, far below the ring's
            // MAX_CAPACITY, and the slot sizes are valid constants.
            notes: notes.build().expect("validated limits build a ring"),
            audit: audit.build().expect("validated limits build a ring"),
            gate: Gate::new(),
        }
    }
}

impl CallState {
    /// A call with the given limits, the system clock, UTC, and no sinks.
    #[must_use]
    pub fn new(call_id: impl Into<String>, limits: Limits) -> Self {
        Self::builder(call_id).limits(limits).build()
    }

    /// A builder with the defaults.
    pub fn builder(call_id: impl Into<String>) -> CallStateBuilder {
        CallStateBuilder {
            call_id: call_id.into(),
            limits: Limits::default(),
            audit_sink: None,
            notes_sink: None,
            clock: Box::new(SystemClock),
            zone: TimeZoneChoice::Utc,
        }
    }

    /// The call's id.
    #[must_use]
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The call's limits.
    #[must_use]
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether [`end`](CallState::end) has been called.
    #[must_use]
    pub fn is_ended(&self) -> bool {
        self.notes.is_closed()
    }

    /// Appends a note stamped with the clock's time and returns its seq
    /// (0, 1, 2, ... whatever the notes' lengths). Allocates nothing for
    /// notes up to 104 bytes, nor for longer ones once the ring has seen
    /// their sizes.
    ///
    /// # Errors
    ///
    /// [`CallError::Ended`] after [`end`](CallState::end);
    /// [`CallError::TooLarge`] for a note longer than the ring.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::call::{CallError, CallState, Limits};
    ///
    /// let call = CallState::new("call-1", Limits::default());
    /// assert_eq!(call.append_note("greeted the caller"), Ok(0));
    /// assert_eq!(call.append_note("caller asked for a callback"), Ok(1));
    /// let _ = call.end();
    /// assert!(matches!(call.append_note("too late"), Err(CallError::Ended { .. })));
    /// # }
    /// ```
    pub fn append_note(&self, text: &str) -> Result<u64, CallError> {
        let encoded = EncodedNote::new(self.clock.now(), text);
        self.notes
            .push(encoded.bytes())
            .map_err(|e| self.push_error(e, NOTE_HEADER))
    }

    /// Logs an audit event stamped with the clock's time and returns its
    /// seq: 0 for the call's first event, then 1, 2, ... with no gaps.
    ///
    /// # Errors
    ///
    /// [`CallError::Ended`] after [`end`](CallState::end) (no seq is used);
    /// [`CallError::TooLarge`] if the encoded event is longer than the ring;
    /// [`CallError::Encode`] if `details` cannot be encoded.
    ///
    /// # Panics
    ///
    /// Only if the audit sink panics while taking an evicted event; the event
    /// is stored first (see [`Ring::push`]).
    pub fn log_event(
        &self,
        kind: &AuditEventType,
        agent_id: Option<&str>,
        details: &Details,
    ) -> Result<u64, CallError> {
        let mut encoded = EncodedEvent::new(self.clock.now(), kind, agent_id, details)
            .map_err(CallError::Encode)?;
        let max = self.audit.max_entry_bytes();
        if encoded.len() > max {
            return Err(CallError::TooLarge {
                len: encoded.len(),
                max,
            });
        }
        // Everything that can fail has been checked: take the seq.
        let pass = self.gate.enter().ok_or_else(|| self.ended())?;
        encoded.set_seq(pass.seq());
        match self.audit.push(encoded.bytes()) {
            Ok(_) => Ok(pass.seq()),
            // Unreachable: the gate keeps the ring open while `pass` lives and
            // the length was checked. Reported, not panicked, if it ever were.
            Err(e) => Err(self.push_error(e, 0)),
        }
    }

    /// All notes as one string, oldest first, each rendered as
    /// `[%Y-%m-%d %H:%M:%S] text` and separated by `\n`; the empty string when
    /// there are none. The original host's `get_all_notes`.
    ///
    /// Never blocks appends: notes being written or overwritten during the
    /// call are left out.
    #[must_use]
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::call::{CallState, Timestamp};
    ///
    /// let call = CallState::builder("call-1")
    ///     .clock(|| Timestamp::from_unix_nanos(1_764_063_000_000_000_000))
    ///     .build();
    /// call.append_note("greeted the caller").expect("live call");
    /// call.append_note("verified identity").expect("live call");
    /// assert_eq!(
    ///     call.all_notes(),
    ///     "[2025-11-25 09:30:00] greeted the caller\n[2025-11-25 09:30:00] verified identity"
    /// );
    /// # }
    /// ```
    pub fn all_notes(&self) -> String {
        let mut out = Vec::with_capacity(
            self.notes.len().min(self.notes.capacity())
                * (PREFIX_LEN + self.notes.slot_payload_bytes()),
        );
        let mut prefixes = PrefixCache::new(self.zone);
        // Each entry is 8 bytes of nanos then the text; with PAD bytes in
        // front, the rendered prefix overwrites padding + nanos in place.
        const PAD: usize = PREFIX_LEN - NOTE_HEADER;
        self.notes.scan_padded(&mut out, PAD, |_, buf, mark| {
            let Some(head) = buf.get(mark + PAD..mark + PREFIX_LEN) else {
                buf.truncate(mark); // shorter than a stored note: skip it
                return;
            };
            let mut le = [0u8; NOTE_HEADER];
            le.copy_from_slice(head);
            let at = Timestamp::from_unix_nanos(i64::from_le_bytes(le));
            buf[mark..mark + PREFIX_LEN].copy_from_slice(prefixes.prefix(at));
            buf.push(b'\n');
        });
        out.pop(); // the last separator, if any
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Owned copies of the retained notes, oldest first.
    #[must_use]
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// let call = callring::call::CallState::new("c", callring::call::Limits::new(2, 2).expect("valid"));
    /// for text in ["a", "b", "c"] {
    ///     call.append_note(text).expect("live call");
    /// }
    /// let texts: Vec<String> = call.notes().into_iter().map(|n| n.text).collect();
    /// assert_eq!(texts, ["b", "c"]);
    /// # }
    /// ```
    pub fn notes(&self) -> Vec<Note> {
        self.notes
            .snapshot()
            .into_entries()
            .into_iter()
            .map(|(_, note)| note)
            .collect()
    }

    /// Owned copies of the retained audit events, in seq order.
    #[must_use]
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::call::{AuditEventType, CallState, Details};
    ///
    /// let call = CallState::new("c", Default::default());
    /// call.log_event(&AuditEventType::CallStarted, None, &Details::new()).expect("live call");
    /// call.log_event(&AuditEventType::Escalated, Some("supervisor"), &Details::new()).expect("live call");
    /// let kinds: Vec<_> = call.audit_events().into_iter().map(|e| e.kind).collect();
    /// assert_eq!(kinds, [AuditEventType::CallStarted, AuditEventType::Escalated]);
    /// # }
    /// ```
    pub fn audit_events(&self) -> Vec<AuditEvent> {
        let mut events: Vec<AuditEvent> = self
            .audit
            .snapshot()
            .into_entries()
            .into_iter()
            .map(|(_, event)| event)
            .collect();
        // Seqs and ring tickets are taken in separate steps, so two racing
        // writers can store their events out of seq order.
        events.sort_by_key(|e| e.seq);
        events
    }

    /// Counters of both rings.
    #[must_use]
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// let call = callring::call::CallState::new("c", callring::call::Limits::new(2, 2).expect("valid"));
    /// for text in ["a", "b", "c"] {
    ///     call.append_note(text).expect("live call");
    /// }
    /// let m = call.metrics().notes;
    /// assert_eq!((m.appended, m.retained, m.evicted), (3, 2, 1));
    /// assert_eq!(m.utilisation, 1.0);
    /// # }
    /// ```
    pub fn metrics(&self) -> CallMetrics {
        CallMetrics {
            notes: RingStats::from_metrics(&self.notes.metrics()),
            audit: RingStats::from_metrics(&self.audit.metrics()),
            audit_seqs_issued: self.gate.issued(),
        }
    }

    /// A serialisable summary: counts, all notes as text, the retained audit
    /// events and the metrics. Never blocks appends.
    #[must_use]
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// let call = callring::call::CallState::new("call-5", Default::default());
    /// call.append_note("hello").expect("live call");
    /// let summary = call.summarize();
    /// assert_eq!((summary.call_id.as_str(), summary.notes.retained), ("call-5", 1));
    /// assert!(summary.to_json().expect("serialisable").contains("\"call_id\": \"call-5\""));
    /// # }
    /// ```
    pub fn summarize(&self) -> CallSummary {
        let notes_text = self.all_notes();
        let audit_events = self.audit_events();
        let metrics = self.metrics();
        CallSummary {
            call_id: self.call_id.clone(),
            started_at: self.started_at,
            ended_at: self.ended_at.get().copied(),
            notes: Counts::from(&metrics.notes),
            audit: Counts::from(&metrics.audit),
            notes_text,
            audit_events,
            metrics,
        }
    }

    /// Ends the call: later appends and events are refused, then both rings
    /// are closed and everything still in them is handed to their sinks (with
    /// [`Reason::Drained`](crate::Reason::Drained)). Waits for appends already
    /// under way. Only the first call does anything.
    ///
    /// # Panics
    ///
    /// Only if a sink panics during the drain, after the drain has finished
    /// (see [`Ring::close`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::call::{AuditEventType, CallState, Details, EndOutcome};
    ///
    /// let (archive, trail) = crossbeam_channel::unbounded();
    /// let call = CallState::builder("c").audit_sink(archive).build();
    /// call.log_event(&AuditEventType::CallEnded, None, &Details::new()).expect("live call");
    /// assert_eq!(call.end(), EndOutcome::Ended { notes_drained: 0, audit_drained: 1 });
    /// assert_eq!(call.end(), EndOutcome::AlreadyEnded);
    /// assert_eq!(trail.len(), 1);
    /// # }
    /// ```
    pub fn end(&self) -> EndOutcome {
        // Shut the gate first: once it returns, every audit seq handed out is
        // in the ring, so closing the ring refuses no event that has a seq.
        if self.gate.shut().is_none() {
            return EndOutcome::AlreadyEnded;
        }
        let _ = self.ended_at.set(self.clock.now());
        let drained = |outcome| match outcome {
            crate::CloseOutcome::Closed { drained } => drained,
            crate::CloseOutcome::AlreadyClosed => 0,
        };
        let notes_drained = drained(self.notes.close());
        let audit_drained = drained(self.audit.close());
        EndOutcome::Ended {
            notes_drained,
            audit_drained,
        }
    }

    fn ended(&self) -> CallError {
        CallError::Ended {
            call_id: self.call_id.clone(),
        }
    }

    fn push_error<V>(&self, error: PushError<V>, header: usize) -> CallError {
        match error {
            PushError::Closed(_) => self.ended(),
            PushError::TooLarge { len, max, .. } => CallError::TooLarge {
                len: len - header,
                max: max - header,
            },
            PushError::Encode { error, .. } => CallError::Encode(error),
        }
    }
}
