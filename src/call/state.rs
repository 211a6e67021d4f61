//! `CallState`: one call's notes and audit trail, shared by its agent threads.

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use crossbeam_queue::SegQueue;

use super::audit::{AuditEvent, AuditEventType, AuditRecord, Details, EncodedEvent};
use super::gate::Gate;
use super::limits::Limits;
use super::note::{EncodedNote, Note, NoteRecord, NOTE_HEADER};
use super::reader::{NotesReader, NotesView};
use super::summary::{CallMetrics, CallSummary, Counts, RingStats};
use super::time::{Clock, PrefixCache, SystemClock, TimeZoneChoice, Timestamp, PREFIX_LEN};
use crate::archive::{ArchiveError, ArchiveSink, NoRoom, Permit, Receipt, Wait};
use crate::obs::{self, RingKind};
use crate::record::EncodeError;
use crate::ring::Ring;
use crate::sink::Sink;
use crate::sync::{Counter, Latch, Ordering};
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
    /// The event was logged (it has `seq` and is in the call's ring) but
    /// the call's archive refused it: the archiver is stopping or stopped.
    /// The call keeps it for
    /// [`take_refused_audit`](CallState::take_refused_audit).
    NotArchived {
        /// The call.
        call_id: String,
        /// The event's seq.
        seq: u64,
    },
    /// The event was archived but did not become durable: the archiver
    /// gave up or stopped first (see the error).
    NotDurable {
        /// The event's seq.
        seq: u64,
        /// Why.
        error: ArchiveError,
    },
    /// A durable receipt was asked for, but the call has no archive
    /// ([`CallStateBuilder::audit_archive`]). Nothing was logged.
    NoArchive {
        /// The call.
        call_id: String,
    },
    /// The archive's queue was full, and the caller would not wait (or not
    /// that long: see [`FullQueue`](crate::archive::FullQueue)). Nothing was
    /// logged and no seq was used: retry, or log later.
    Busy {
        /// The call.
        call_id: String,
    },
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
            Self::NotArchived { call_id, seq } => write!(
                f,
                "audit event {seq} of call {call_id} was logged in memory but the archive \
                 refused it (stopping or stopped); take it back with take_refused_audit"
            ),
            Self::NotDurable { seq, error } => {
                write!(f, "audit event {seq} did not become durable: {error}")
            }
            Self::NoArchive { call_id } => write!(
                f,
                "call {call_id} has no audit archive to wait on (see audit_archive)"
            ),
            Self::Busy { call_id } => write!(
                f,
                "the audit archive of call {call_id} is full; nothing was logged"
            ),
        }
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Encode(e) => Some(e),
            Self::NotDurable { error, .. } => Some(error),
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
/// // No sink or archive attached: nothing to drain, the notes stay readable.
/// assert_eq!(
///     call.end(),
///     EndOutcome::Ended {
///         notes_drained: 0,
///         audit_drained: 0,
///         audit_refused: 0,
///         closed_record: false,
///     }
/// );
/// assert_eq!(call.end(), EndOutcome::AlreadyEnded);
/// assert_eq!(call.all_notes().len(), 25);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an ended call's counts say whether its archive got everything"]
#[non_exhaustive]
pub enum EndOutcome {
    /// This call ended the call: both rings are closed, an eviction sink got
    /// what was left in its ring, and the archive got the closed record.
    Ended {
        /// Notes the notes sink accepted at the end (0 without one; notes
        /// it refused are kept for
        /// [`CallState::take_refused_notes`]).
        notes_drained: u64,
        /// Audit events the eviction sink accepted at the end (0 without
        /// one, and with an archive, which already has every event).
        audit_drained: u64,
        /// Audit events refused over the call's life (archive stopped, or
        /// eviction sink gone), kept for
        /// [`CallState::take_refused_audit`] until taken. Never counted as
        /// drained.
        audit_refused: u64,
        /// Whether the archive took the call's closed record (false without
        /// an archive, or when it refused it).
        closed_record: bool,
    },
    /// Another call of `end` ended the call; it had finished when this one
    /// returned.
    AlreadyEnded,
}

/// The live state of one call: notes and an audit trail in lock-free rings.
///
/// Share it between the call's agent threads in an `Arc`; every method takes
/// `&self`. Appending never takes a lock; reading (all notes, a summary)
/// never blocks an append. When a ring is full the oldest entry is
/// overwritten.
///
/// The audit trail reaches its archive in one of two modes, chosen on the
/// builder:
///
/// - **write-through** ([`audit_archive`](CallStateBuilder::audit_archive),
///   the one to use for compliance): every event is handed to the archive as
///   part of [`log_event`](CallState::log_event), after it has its seq and is
///   in the ring, and is on disk within the archive's group-commit window;
///   [`end`](CallState::end) writes a closed record carrying the number of
///   seqs issued. The ring is the in-memory window that
///   [`audit_events`](CallState::audit_events) and
///   [`summarize`](CallState::summarize) read; nothing is handed over again
///   when it is evicted.
/// - **on eviction** ([`audit_sink`](CallStateBuilder::audit_sink), any
///   [`Sink`]): an event is handed over when a newer one overwrites it, and
///   at `end` what is left is drained (then, for an archive's sink, the
///   closed record). Until then it lives only in memory.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use std::sync::Arc;
/// use callring::archive::{verify, ArchiveConfig, Archiver};
/// use callring::call::{AuditEventType, CallState, Details, Limits};
///
/// let dir = tempfile::tempdir().expect("temp dir");
/// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
/// let call = Arc::new(
///     CallState::builder("call-42")
///         .limits(Limits::new(1000, 2).expect("valid"))
///         .audit_archive(archiver.sink("call-42"))
///         .build(),
/// );
/// std::thread::scope(|s| {
///     s.spawn(|| call.append_note("caller asked about the invoice"));
///     s.spawn(|| {
///         for kind in [AuditEventType::CallStarted, AuditEventType::IdentityVerified] {
///             call.log_event(&kind, Some("speech"), &Details::new()).expect("archived");
///         }
///     });
/// });
/// call.log_event(&AuditEventType::CallEnded, None, &Details::new()).expect("archived");
/// assert_eq!(call.summarize().audit.retained, 2); // the ring keeps the newest 2
/// let _ = call.end(); // the closed record: 3 seqs issued
/// archiver.stop().expect("clean stop");
/// let report = verify(dir.path()).expect("readable");
/// assert!(report.calls["call-42"].is_complete()); // all 3 events, on disk
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
    /// Write-through archive, if any.
    archive: Option<ArchiveSink>,
    /// The archive behind the eviction sink, if it is one (closed record).
    evicts_to_archive: Option<ArchiveSink>,
    /// Events the archive refused, kept until taken.
    refused_audit: SegQueue<AuditEvent>,
    audit_written: Counter,
    audit_refused: Counter,
    /// Opened when the `end` that shut the gate has finished.
    ended: Latch,
    /// The last complete rendering of the notes (see `all_notes_shared`).
    /// Only readers touch it; appends never do.
    notes_cache: ArcSwapOption<RenderedNotes>,
    /// The notes rendered so far, brought up to date by `all_notes` and
    /// `all_notes_shared` (one reader at a time: `try_lock`, and a reader
    /// that finds it taken renders from scratch, so readers never wait).
    notes_view: Mutex<NotesView>,
}

/// All notes rendered at a given ticket count of the notes ring.
#[derive(Debug)]
struct RenderedNotes {
    tickets: u64,
    text: Arc<str>,
}

/// Opens the latch when dropped, so an `end` that panics still releases the
/// `end`s waiting for it.
struct OpenOnDrop<'a>(&'a Latch);

impl Drop for OpenOnDrop<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
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
    audit_archive: Option<ArchiveSink>,
    audit_sink: Option<Box<dyn Sink<AuditEvent>>>,
    /// An archive's sink given as the eviction sink: the closed record goes
    /// there too.
    evicts_to_archive: Option<ArchiveSink>,
    notes_sink: Option<Box<dyn Sink<Note>>>,
    clock: Box<dyn Clock>,
    zone: TimeZoneChoice,
}

impl fmt::Debug for CallStateBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallStateBuilder")
            .field("call_id", &self.call_id)
            .field("limits", &self.limits)
            .field("audit_archive", &self.audit_archive)
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

    /// Writes every audit event through to an archive as it is logged
    /// (write-through mode), and the call's closed record at
    /// [`end`](CallState::end). `sink` comes from
    /// [`Archiver::sink`](crate::archive::Archiver::sink) (or the SQLite
    /// archiver's). Replaces an [`audit_sink`](CallStateBuilder::audit_sink):
    /// a call has one audit mode.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::archive::{ArchiveConfig, Archiver};
    /// use callring::call::{AuditEventType, CallState, Details};
    ///
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    /// let call = CallState::builder("call-1").audit_archive(archiver.sink("call-1")).build();
    /// call.log_event(&AuditEventType::CallStarted, None, &Details::new()).expect("archived");
    /// assert_eq!(call.metrics().audit_written, 1);
    /// # }
    /// ```
    pub fn audit_archive(mut self, sink: ArchiveSink) -> Self {
        self.audit_archive = Some(sink);
        self.audit_sink = None;
        self.evicts_to_archive = None;
        self
    }

    /// Hands each audit event to `sink` when a newer one evicts it from the
    /// ring, and at [`end`](CallState::end) the ones still there (eviction
    /// mode). Until then an event lives only in memory, so for an archive of
    /// record use [`audit_archive`](CallStateBuilder::audit_archive), which
    /// this replaces. Without either, evicted events are dropped (counted).
    /// Given an archive's [`ArchiveSink`], `end` also writes the call's
    /// closed record there, after the drained events.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::call::{AuditEventType, CallState, Details, Limits};
    ///
    /// let (sink, evicted) = crossbeam_channel::unbounded();
    /// let call = CallState::builder("c")
    ///     .limits(Limits::new(10, 1).expect("valid"))
    ///     .audit_sink(sink)
    ///     .build();
    /// for _ in 0..3 {
    ///     call.log_event(&AuditEventType::ToolInvoked, None, &Details::new()).expect("live");
    /// }
    /// assert_eq!(evicted.len(), 2); // seqs 0 and 1 left the ring of 1
    /// # }
    /// ```
    pub fn audit_sink<S: Sink<AuditEvent> + 'static>(self, sink: S) -> Self {
        let archive = (&sink as &dyn Any).downcast_ref::<ArchiveSink>().cloned();
        self.eviction_sink(Box::new(sink), archive)
    }

    /// [`audit_sink`](CallStateBuilder::audit_sink) for a sink already boxed
    /// (by the registry), with the archive it hands to, if it is one.
    pub(crate) fn eviction_sink(
        mut self,
        sink: Box<dyn Sink<AuditEvent>>,
        archive: Option<ArchiveSink>,
    ) -> Self {
        self.audit_sink = Some(sink);
        self.evicts_to_archive = archive;
        self.audit_archive = None;
        self
    }

    /// Where evicted and remaining notes go. Optional: without it (or
    /// [`notes_archive`](CallStateBuilder::notes_archive), which this
    /// replaces) a note the ring overwrites is gone (counted as evicted).
    pub fn notes_sink(mut self, sink: impl Sink<Note> + 'static) -> Self {
        self.notes_sink = Some(Box::new(sink));
        self
    }

    /// Archives the call's notes: each note that leaves the notes ring,
    /// evicted by a newer one or drained at [`end`](CallState::end), is
    /// written to the archive as a note line
    /// ([`NoteRecord`](crate::archive::NoteRecord)), with its note seq
    /// (notes take no audit seq). So after `end` the archive holds every
    /// note of the call exactly once, and before it, the archive and the
    /// ring together do; [`read_notes`](crate::archive::read_notes) reads
    /// them back. Off by default; replaces a
    /// [`notes_sink`](CallStateBuilder::notes_sink). `sink` comes from
    /// [`Archiver::sink`](crate::archive::Archiver::sink), usually the same
    /// archive the call's [`audit_archive`](CallStateBuilder::audit_archive)
    /// writes to (its closed record then follows the drained notes).
    ///
    /// Unlike audit events, notes are not written through: a note reaches
    /// the archive only when it leaves the ring. While the archive's queue
    /// is full, [`append_note`](CallState::append_note) waits when its note
    /// evicts an older one (back-pressure, counted in the notes'
    /// `sink_waits`), whatever the archive's
    /// [`FullQueue`](crate::archive::FullQueue) says; a stopping or stopped
    /// archiver (or an SQLite one, which keeps audit records only) refuses
    /// notes, which the call keeps for
    /// [`take_refused_notes`](CallState::take_refused_notes). No note is
    /// dropped silently.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::archive::{read_notes, verify, ArchiveConfig, Archiver};
    /// use callring::call::{CallState, EndOutcome, Limits};
    ///
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    /// let call = CallState::builder("call-1")
    ///     .limits(Limits::new(2, 10).expect("valid")) // the ring keeps 2 notes
    ///     .audit_archive(archiver.sink("call-1"))
    ///     .notes_archive(archiver.sink("call-1"))
    ///     .build();
    /// for text in ["greeted", "verified", "Zoë asked for a refund"] {
    ///     call.append_note(text).expect("live call"); // the 3rd evicts "greeted"
    /// }
    /// assert!(matches!(call.end(), EndOutcome::Ended { notes_drained: 2, .. }));
    /// archiver.stop().expect("clean stop");
    ///
    /// let notes = read_notes(dir.path(), "call-1").expect("readable");
    /// let texts: Vec<&str> = notes.iter().map(|n| n.text.as_str()).collect();
    /// assert_eq!(texts, ["greeted", "verified", "Zoë asked for a refund"]);
    /// let report = verify(dir.path()).expect("readable");
    /// assert_eq!(report.calls["call-1"].notes, 3);
    /// assert!(report.is_complete()); // notes are not audit events
    /// # }
    /// ```
    pub fn notes_archive(self, sink: ArchiveSink) -> Self {
        self.notes_sink(sink)
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
            archive: self.audit_archive,
            evicts_to_archive: self.evicts_to_archive,
            refused_audit: SegQueue::new(),
            audit_written: Counter::new(0),
            audit_refused: Counter::new(0),
            ended: Latch::new(),
            notes_cache: ArcSwapOption::empty(),
            notes_view: Mutex::new(NotesView::new(self.zone)),
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
            audit_archive: None,
            audit_sink: None,
            evicts_to_archive: None,
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

    /// Whether [`end`](CallState::end) has been called (it may still be
    /// finishing).
    #[must_use]
    pub fn is_ended(&self) -> bool {
        self.gate.is_shut()
    }

    /// When the call last did something: the timestamp of its newest note or
    /// audit event still in memory, or its start if it has none. Reads the
    /// newest entry of each ring (appends pay nothing for this).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use std::sync::atomic::{AtomicI64, Ordering};
    /// use std::time::Duration;
    /// use callring::call::{CallState, Timestamp};
    ///
    /// static NOW: AtomicI64 = AtomicI64::new(1_000_000_000);
    /// let call = CallState::builder("c")
    ///     .clock(|| Timestamp::from_unix_nanos(NOW.load(Ordering::Relaxed)))
    ///     .build();
    /// NOW.store(3_000_000_000, Ordering::Relaxed);
    /// call.append_note("caller verified").expect("live call");
    /// NOW.store(10_000_000_000, Ordering::Relaxed);
    /// assert_eq!(call.last_activity(), Timestamp::from_unix_nanos(3_000_000_000));
    /// assert_eq!(call.idle_for(), Duration::from_secs(7));
    /// # }
    /// ```
    #[must_use]
    pub fn last_activity(&self) -> Timestamp {
        let mut buf = Vec::new();
        let mut latest = self.started_at;
        if self.notes.newest_into(&mut buf).is_some() {
            if let Ok((at, _)) = super::note::split(&buf) {
                latest = latest.max(at);
            }
        }
        buf.clear();
        if self.audit.newest_into(&mut buf).is_some() {
            if let Ok(at) = super::audit::timestamp(&buf) {
                latest = latest.max(at);
            }
        }
        latest
    }

    /// How long since [`last_activity`](CallState::last_activity), by the
    /// call's clock (zero if the clock went back).
    #[must_use]
    pub fn idle_for(&self) -> Duration {
        let nanos = self
            .clock
            .now()
            .unix_nanos()
            .saturating_sub(self.last_activity().unix_nanos());
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
    }

    /// Whether audit events are written through to an archive
    /// ([`CallStateBuilder::audit_archive`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// let call = callring::call::CallState::new("c", Default::default());
    /// assert!(!call.writes_through());
    /// # }
    /// ```
    #[must_use]
    pub fn writes_through(&self) -> bool {
        self.archive.is_some()
    }

    /// Appends a note stamped with the clock's time and returns its seq
    /// (0, 1, 2, ... whatever the notes' lengths). Allocates nothing for
    /// notes up to 104 bytes, nor for longer ones once the ring has seen
    /// their sizes.
    ///
    /// With a notes sink ([`notes_sink`](CallStateBuilder::notes_sink),
    /// [`notes_archive`](CallStateBuilder::notes_archive)), a note that
    /// evicts an older one first hands that one to the sink, on this thread:
    /// a sink that is full makes this wait (for an archive, until its queue
    /// has room), and one that refuses leaves the older note for
    /// [`take_refused_notes`](CallState::take_refused_notes); the new note
    /// is stored either way.
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
        let seq = self
            .notes
            .push(encoded.bytes())
            .map_err(|e| self.push_error(e, NOTE_HEADER))?;
        obs::appended(RingKind::Notes, seq, self.limits.max_notes());
        Ok(seq)
    }

    /// Logs an audit event stamped with the clock's time and returns its
    /// seq: 0 for the call's first event, then 1, 2, ... with no gaps.
    ///
    /// With an archive ([`CallStateBuilder::audit_archive`]) the event is
    /// handed to it before this returns, so it is on disk within the
    /// archive's group-commit window (by default 20 ms or 1024 records); to
    /// wait for that, use [`log_event_receipt`](CallState::log_event_receipt)
    /// or [`log_event_durable`](CallState::log_event_durable). A full archive
    /// queue makes this wait (back-pressure), never drops the event; with the
    /// archive's [`FullQueue`](crate::archive::FullQueue) set to `Wait(d)` or
    /// `Refuse` it gives up instead, with [`CallError::Busy`], before the
    /// event takes a seq. [`try_log_event`](CallState::try_log_event) never
    /// waits; `log_event_async` (feature `async`) awaits room.
    ///
    /// # Errors
    ///
    /// [`CallError::Ended`] after [`end`](CallState::end) (no seq is used);
    /// [`CallError::TooLarge`] if the encoded event is longer than the ring;
    /// [`CallError::Encode`] if `details` cannot be encoded;
    /// [`CallError::NotArchived`] if the archive refused the event (it is
    /// stopping or stopped): the event has its seq and is kept for
    /// [`take_refused_audit`](CallState::take_refused_audit);
    /// [`CallError::Busy`] if the archive's queue stayed full longer than its
    /// [`FullQueue`](crate::archive::FullQueue) policy allows (nothing logged).
    ///
    /// # Panics
    ///
    /// Only if an eviction sink panics while taking an evicted event; the
    /// event is stored first (see [`Ring::push`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::call::{AuditEventType, CallError, CallState, Details};
    ///
    /// let call = CallState::new("call-1", Default::default());
    /// let mut details = Details::new();
    /// details.insert("amount".into(), 120.5.into());
    /// assert_eq!(call.log_event(&AuditEventType::PaymentArranged, Some("tools"), &details), Ok(0));
    /// let _ = call.end();
    /// let late = call.log_event(&AuditEventType::CallEnded, None, &details);
    /// assert!(matches!(late, Err(CallError::Ended { .. })));
    /// # }
    /// ```
    pub fn log_event(
        &self,
        kind: &AuditEventType,
        agent_id: Option<&str>,
        details: &Details,
    ) -> Result<u64, CallError> {
        self.log(kind, agent_id, details).map(|(seq, _)| seq)
    }

    /// [`log_event`](CallState::log_event) for a call with an archive,
    /// returning the seq and a [`Receipt`] to wait on until the event is
    /// durable (for events such as consent that must not be acknowledged
    /// before they are on disk). Waiting costs at most one group-commit
    /// window (see [`Receipt`]); logging costs what `log_event` does.
    ///
    /// # Errors
    ///
    /// As [`log_event`](CallState::log_event); [`CallError::NoArchive`]
    /// (before anything is logged) for a call without an archive.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::archive::{ArchiveConfig, Archiver};
    /// use callring::call::{AuditEventType, CallState, Details};
    ///
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    /// let call = CallState::builder("call-1").audit_archive(archiver.sink("call-1")).build();
    /// let (seq, receipt) = call
    ///     .log_event_receipt(&AuditEventType::ConsentGiven, Some("speech"), &Details::new())
    ///     .expect("archived");
    /// receipt.wait().expect("durable");
    /// assert_eq!(seq, 0);
    /// # }
    /// ```
    pub fn log_event_receipt(
        &self,
        kind: &AuditEventType,
        agent_id: Option<&str>,
        details: &Details,
    ) -> Result<(u64, Receipt), CallError> {
        if self.archive.is_none() {
            return Err(CallError::NoArchive {
                call_id: self.call_id.clone(),
            });
        }
        match self.log(kind, agent_id, details)? {
            (seq, Some(receipt)) => Ok((seq, receipt)),
            // `log` returns a receipt whenever the call has an archive.
            (seq, None) => Err(CallError::NotArchived {
                call_id: self.call_id.clone(),
                seq,
            }),
        }
    }

    /// [`log_event_receipt`](CallState::log_event_receipt), then waits until
    /// the event is durable. Returns its seq.
    ///
    /// # Errors
    ///
    /// As [`log_event_receipt`](CallState::log_event_receipt);
    /// [`CallError::NotDurable`] if the archiver stopped or gave up before
    /// the event was on disk.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::archive::{ArchiveConfig, Archiver};
    /// use callring::call::{AuditEventType, CallError, CallState, Details};
    ///
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    /// let call = CallState::builder("c").audit_archive(archiver.sink("c")).build();
    /// let seq = call
    ///     .log_event_durable(&AuditEventType::ConsentGiven, Some("speech"), &Details::new())
    ///     .expect("on disk");
    /// assert_eq!((seq, archiver.durability().durable), (0, 1));
    ///
    /// // Without an archive there is nothing to wait for, and nothing is logged.
    /// let plain = CallState::new("p", Default::default());
    /// let err = plain.log_event_durable(&AuditEventType::ConsentGiven, None, &Details::new());
    /// assert!(matches!(err, Err(CallError::NoArchive { .. })));
    /// assert_eq!(plain.metrics().audit_seqs_issued, 0);
    /// # }
    /// ```
    pub fn log_event_durable(
        &self,
        kind: &AuditEventType,
        agent_id: Option<&str>,
        details: &Details,
    ) -> Result<u64, CallError> {
        let (seq, receipt) = self.log_event_receipt(kind, agent_id, details)?;
        receipt
            .wait()
            .map(|()| seq)
            .map_err(|error| CallError::NotDurable { seq, error })
    }

    fn log(
        &self,
        kind: &AuditEventType,
        agent_id: Option<&str>,
        details: &Details,
    ) -> Result<(u64, Option<Receipt>), CallError> {
        let wait = self.archive.as_ref().map(ArchiveSink::log_wait);
        self.log_waiting(kind, agent_id, details, wait)
    }

    /// `log` with the archive's room awaited as `wait` says (`None`: the
    /// call has no archive).
    fn log_waiting(
        &self,
        kind: &AuditEventType,
        agent_id: Option<&str>,
        details: &Details,
        wait: Option<Wait>,
    ) -> Result<(u64, Option<Receipt>), CallError> {
        let (at, encoded) = self.encode_event(kind, agent_id, details)?;
        let permit = match (&self.archive, wait) {
            (Some(archive), Some(wait)) => self.reserved(archive.reserve(wait))?,
            _ => None,
        };
        self.log_encoded(at, encoded, permit, kind, agent_id, details)
    }

    /// Stamps and encodes an event, checking everything that can fail
    /// before a seq is taken.
    fn encode_event(
        &self,
        kind: &AuditEventType,
        agent_id: Option<&str>,
        details: &Details,
    ) -> Result<(Timestamp, EncodedEvent), CallError> {
        let at = self.clock.now();
        let encoded = EncodedEvent::new(at, kind, agent_id, details).map_err(CallError::Encode)?;
        let max = self.audit.max_entry_bytes();
        if encoded.len() > max {
            return Err(CallError::TooLarge {
                len: encoded.len(),
                max,
            });
        }
        Ok((at, encoded))
    }

    /// A place in the archive's queue, `Busy` if it stayed full, or `None`
    /// if the archive is stopping (the event is then logged and refused,
    /// as before: see [`CallError::NotArchived`]).
    fn reserved<'a>(
        &self,
        reserved: Result<Permit<'a>, NoRoom>,
    ) -> Result<Option<Permit<'a>>, CallError> {
        match reserved {
            Ok(permit) => Ok(Some(permit)),
            Err(NoRoom::Closed) => Ok(None),
            Err(NoRoom::Full) => Err(CallError::Busy {
                call_id: self.call_id.clone(),
            }),
        }
    }

    /// Takes the seq, stores the event and hands it to the archive (into
    /// the place `permit` reserved; none means the archive is stopping).
    fn log_encoded(
        &self,
        at: Timestamp,
        mut encoded: EncodedEvent,
        permit: Option<Permit<'_>>,
        kind: &AuditEventType,
        agent_id: Option<&str>,
        details: &Details,
    ) -> Result<(u64, Option<Receipt>), CallError> {
        // Everything that can fail has been checked: take the seq. The pass
        // is held until the event is in the ring and handed to the archive,
        // so `end` (which waits for every pass) writes the closed record
        // after every event of the call.
        let pass = self.gate.enter().ok_or_else(|| self.ended())?;
        let seq = pass.seq();
        encoded.set_seq(seq);
        if let Err(e) = self.audit.push(encoded.bytes()) {
            // Unreachable: the gate keeps the ring open while `pass` lives and
            // the length was checked. Reported, not panicked, if it ever were.
            return Err(self.push_error(e, 0));
        }
        obs::appended(RingKind::Audit, seq, self.limits.max_audit_log());
        let Some(archive) = &self.archive else {
            return Ok((seq, None));
        };
        let submitted = match permit {
            Some(permit) => archive
                .submit_logged(permit, encoded.into_bytes())
                .map_err(drop),
            None => Err(()),
        };
        match submitted {
            Ok(receipt) => {
                // Relaxed: a statistic.
                self.audit_written.fetch_add(1, Ordering::Relaxed);
                Ok((seq, Some(receipt)))
            }
            Err(()) => {
                self.refused_audit.push(AuditEvent {
                    seq,
                    at,
                    kind: kind.clone(),
                    agent_id: agent_id.map(str::to_owned),
                    details: details.clone(),
                });
                // Relaxed: a statistic.
                self.audit_refused.fetch_add(1, Ordering::Relaxed);
                Err(CallError::NotArchived {
                    call_id: self.call_id.clone(),
                    seq,
                })
            }
        }
    }

    /// [`log_event`](CallState::log_event) that never waits for the
    /// archive: if its queue is full, returns [`CallError::Busy`] before the
    /// event takes a seq, so nothing is logged and the caller may retry.
    /// Without an archive it is `log_event`.
    ///
    /// # Errors
    ///
    /// As [`log_event`](CallState::log_event), and [`CallError::Busy`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::archive::{ArchiveConfig, Archiver};
    /// use callring::call::{AuditEventType, CallState, Details};
    ///
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    /// let call = CallState::builder("call-1").audit_archive(archiver.sink("call-1")).build();
    /// match call.try_log_event(&AuditEventType::ToolInvoked, Some("tools"), &Details::new()) {
    ///     Ok(seq) => assert_eq!(seq, 0),
    ///     Err(e) => println!("archive busy, retry later: {e}"),
    /// }
    /// # }
    /// ```
    pub fn try_log_event(
        &self,
        kind: &AuditEventType,
        agent_id: Option<&str>,
        details: &Details,
    ) -> Result<u64, CallError> {
        let wait = self.archive.as_ref().map(|_| Wait::No);
        self.log_waiting(kind, agent_id, details, wait)
            .map(|(seq, _)| seq)
    }

    /// [`log_event`](CallState::log_event) for async code: awaits room in
    /// the archive's queue instead of blocking the thread, so a full archive
    /// parks the task, not a runtime worker. Any runtime will do (the future
    /// is woken by the archiver's thread). With
    /// [`FullQueue::Refuse`](crate::archive::FullQueue::Refuse) it returns
    /// [`CallError::Busy`] at once instead; a deadline is the caller's
    /// (wrap it in your runtime's timeout: dropping the future before it
    /// completes logs nothing).
    ///
    /// # Errors
    ///
    /// As [`log_event`](CallState::log_event), and [`CallError::Busy`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::archive::{ArchiveConfig, Archiver};
    /// use callring::call::{AuditEventType, CallState, Details};
    ///
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    /// let call = CallState::builder("call-1").audit_archive(archiver.sink("call-1")).build();
    /// let details = Details::new();
    /// let logged = call.log_event_async(&AuditEventType::CallStarted, None, &details);
    /// // Any executor drives it; a tokio task would `.await` it.
    /// assert_eq!(block_on(logged), Ok(0));
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
    /// #         std::thread::yield_now();
    /// #     }
    /// # }
    /// # }
    /// ```
    #[cfg(feature = "async")]
    #[cfg_attr(docsrs, doc(cfg(feature = "async")))]
    pub async fn log_event_async(
        &self,
        kind: &AuditEventType,
        agent_id: Option<&str>,
        details: &Details,
    ) -> Result<u64, CallError> {
        let (at, encoded) = self.encode_event(kind, agent_id, details)?;
        let permit = match &self.archive {
            Some(archive) if archive.may_wait() => self.reserved(archive.reserve_async().await)?,
            Some(archive) => self.reserved(archive.reserve(Wait::No))?,
            None => None,
        };
        self.log_encoded(at, encoded, permit, kind, agent_id, details)
            .map(|(seq, _)| seq)
    }

    /// Takes the audit events the archive (or the eviction sink) refused,
    /// in seq order: with the archive stopped before the call ended, every
    /// event logged since. They are kept until taken, never dropped; each is
    /// returned once.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::archive::{ArchiveConfig, Archiver};
    /// use callring::call::{AuditEventType, CallError, CallState, Details};
    ///
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    /// let call = CallState::builder("call-1").audit_archive(archiver.sink("call-1")).build();
    /// archiver.stop().expect("clean stop"); // the wrong order: stop before end
    /// let err = call.log_event(&AuditEventType::CallEnded, None, &Details::new()).unwrap_err();
    /// assert!(matches!(err, CallError::NotArchived { seq: 0, .. }));
    /// let refused = call.take_refused_audit();
    /// assert_eq!(refused.len(), 1);
    /// assert!(call.take_refused_audit().is_empty());
    /// # }
    /// ```
    #[must_use = "refused audit events must be persisted somewhere"]
    pub fn take_refused_audit(&self) -> Vec<AuditEvent> {
        let mut events: Vec<AuditEvent> = std::iter::from_fn(|| self.refused_audit.pop()).collect();
        events.extend(self.audit.take_refused().into_iter().map(|e| e.value));
        events.sort_by_key(|e| e.seq);
        events
    }

    /// Takes the notes the notes sink refused (for example a channel whose
    /// receiver is gone), oldest first. Kept until taken, never dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::call::{CallState, Limits};
    ///
    /// let (sink, receiver) = crossbeam_channel::unbounded();
    /// drop(receiver); // nobody takes evicted notes any more
    /// let call = CallState::builder("c")
    ///     .limits(Limits::new(1, 1).expect("valid"))
    ///     .notes_sink(sink)
    ///     .build();
    /// call.append_note("first").expect("live call");
    /// call.append_note("second").expect("live call"); // evicts "first": refused
    /// let refused: Vec<String> = call.take_refused_notes().into_iter().map(|n| n.text).collect();
    /// assert_eq!(refused, ["first"]);
    /// # }
    /// ```
    #[must_use = "refused notes are otherwise lost"]
    pub fn take_refused_notes(&self) -> Vec<Note> {
        self.notes
            .take_refused()
            .into_iter()
            .map(|e| e.value)
            .collect()
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
        let before = self.notes.tickets();
        match self.cached_notes(before) {
            Some(text) => String::from(&*text),
            None => self
                .with_view(|text| text.to_owned())
                .unwrap_or_else(|| self.render_notes().0),
        }
    }

    /// [`all_notes`](CallState::all_notes), shared: while no note has been
    /// appended since the last complete rendering, every call returns that
    /// same `Arc` (one atomic load and a reference count), so a supervisor
    /// re-reading an idle call pays nothing, and a binding can keep its own
    /// copy keyed on the pointer. A rendering is kept only when no append
    /// started or was in flight while it was made, so the cached text is
    /// exactly what a fresh scan would return. Never blocks appends.
    ///
    /// Both this and `all_notes` keep the rendered lines between calls and,
    /// after appends, render only the new notes (plus one copy of the text);
    /// the call then holds one rendered copy of its notes besides the ring.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use std::sync::Arc;
    /// use callring::call::CallState;
    ///
    /// let call = CallState::new("c", Default::default());
    /// call.append_note("hello").expect("live call");
    /// let a = call.all_notes_shared();
    /// assert!(Arc::ptr_eq(&a, &call.all_notes_shared())); // nothing new: the same text
    /// call.append_note("again").expect("live call");
    /// let b = call.all_notes_shared();
    /// assert!(!Arc::ptr_eq(&a, &b) && b.ends_with("again"));
    /// # }
    /// ```
    #[must_use]
    pub fn all_notes_shared(&self) -> Arc<str> {
        let before = self.notes.tickets();
        if let Some(text) = self.cached_notes(before) {
            return text;
        }
        // The view read up to the end of the ring as of `before` or later:
        // complete unless a ticket was taken since (checked below).
        let (text, complete) = match self.with_view(|text| Arc::<str>::from(text)) {
            Some(text) => (text, true),
            None => {
                let (text, complete) = self.render_notes();
                (Arc::from(text), complete)
            }
        };
        // Keep it only if it is the whole ring as of `before`: nothing was
        // skipped (in flight or overwritten) and no ticket was taken since.
        if complete && self.notes.tickets() == before && !self.is_ended() {
            self.notes_cache.store(Some(Arc::new(RenderedNotes {
                tickets: before,
                text: Arc::clone(&text),
            })));
        }
        text
    }

    /// `f` of the notes view brought up to date, if no other reader holds
    /// the view and it read up to the end of the ring (it stops at a note in
    /// flight, after which a fresh scan would still find committed notes).
    ///
    /// `None` once the call has ended: an ended call keeps no rendering (see
    /// [`end`](CallState::end)), so its reads render from scratch.
    fn with_view<T>(&self, f: impl FnOnce(&str) -> T) -> Option<T> {
        if self.is_ended() {
            return None;
        }
        let mut view = self.notes_view.try_lock().ok()?;
        let _ = view.text(&self.notes);
        view.reached_end().then(|| f(view.current()))
    }

    /// Frees the readers' renderings of the notes (the view `all_notes`
    /// keeps up to date, and the last shared rendering): an ended call held
    /// one copy of its notes until it was dropped. A reader holding the view
    /// right now keeps it; a later read renders again.
    fn release_notes_views(&self) {
        if let Ok(mut view) = self.notes_view.try_lock() {
            view.release();
        }
        self.notes_cache.store(None);
    }

    /// The cached rendering, if it was made at ticket count `tickets`.
    fn cached_notes(&self, tickets: u64) -> Option<Arc<str>> {
        let cached = self.notes_cache.load();
        cached
            .as_ref()
            .filter(|c| c.tickets == tickets)
            .map(|c| Arc::clone(&c.text))
    }

    /// Renders every note; `true` if none was skipped.
    fn render_notes(&self) -> (String, bool) {
        let mut out = Vec::with_capacity(
            self.notes.len().min(self.notes.capacity())
                * (PREFIX_LEN + self.notes.slot_payload_bytes()),
        );
        let mut prefixes = PrefixCache::new(self.zone);
        // Each entry is 8 bytes of nanos then the text; with PAD bytes in
        // front, the rendered prefix overwrites padding + nanos in place.
        const PAD: usize = PREFIX_LEN - NOTE_HEADER;
        let mut malformed = false;
        let skipped = self.notes.scan_padded(&mut out, PAD, |_, buf, mark| {
            let Some(head) = buf.get(mark + PAD..mark + PREFIX_LEN) else {
                buf.truncate(mark); // shorter than a stored note: skip it
                malformed = true;
                return;
            };
            let mut le = [0u8; NOTE_HEADER];
            le.copy_from_slice(head);
            let at = Timestamp::from_unix_nanos(i64::from_le_bytes(le));
            buf[mark..mark + PREFIX_LEN].copy_from_slice(prefixes.prefix(at));
            buf.push(b'\n');
        });
        out.pop(); // the last separator, if any
        let text = String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        (text, skipped.total() == 0 && !malformed)
    }

    /// A reader that keeps the notes it has rendered: its
    /// [`all_notes`](NotesReader::all_notes) renders only what was appended
    /// since its previous call. For a supervisor that polls one call's notes
    /// again and again; each reader holds its own rendered copy.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// let call = callring::call::CallState::new("c", Default::default());
    /// let mut reader = call.notes_reader();
    /// call.append_note("hello").expect("live call");
    /// assert_eq!(reader.all_notes(), call.all_notes());
    /// # }
    /// ```
    #[must_use]
    pub fn notes_reader(&self) -> NotesReader<'_> {
        NotesReader::new(&self.notes, self.zone)
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
            // Relaxed: statistics.
            audit_written: self.audit_written.load(Ordering::Relaxed),
            audit_refused: self.audit_refused.load(Ordering::Relaxed)
                + self.audit.metrics().refused,
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

    /// Ends the call: later events (and, once the notes ring is closed,
    /// notes) are refused; waits for events already being logged; closes
    /// both rings; an eviction sink gets what is left in its ring (with
    /// [`Reason::Drained`](crate::Reason::Drained)), the notes sink (or
    /// [notes archive](CallStateBuilder::notes_archive)) the notes first;
    /// the archive gets the closed record, which carries the number of seqs
    /// issued, after them.
    ///
    /// Whoever calls it, it returns only once the trail has been handed
    /// over: a second `end` racing the first waits for the first to finish,
    /// then returns [`EndOutcome::AlreadyEnded`]. So a handler that ends a
    /// call and then flushes the archive always flushes the whole trail.
    ///
    /// Shutdown order: end the calls, then stop the archiver. The wrong
    /// order loses nothing silently: events logged after the archiver
    /// stopped return [`CallError::NotArchived`] and are kept for
    /// [`take_refused_audit`](CallState::take_refused_audit), `end` reports
    /// them in [`EndOutcome::Ended::audit_refused`] and the closed record as
    /// not written.
    ///
    /// A sink must not call `end` on its own call: that `end` would wait for
    /// the one that is calling the sink.
    ///
    /// `end` also frees the rendering of the notes that
    /// [`all_notes`](CallState::all_notes) and
    /// [`all_notes_shared`](CallState::all_notes_shared) keep between reads
    /// (about one byte per byte of text), so an ended call that stays around
    /// holds no copy of its notes; a read after `end` renders them afresh
    /// and keeps nothing (a summary taken after `end` included).
    ///
    /// # Panics
    ///
    /// Only if a sink (or the clock) panics during `end`. Both rings are
    /// still closed, drained and the closed record written first; then the
    /// first panic is resumed (see [`Ring::close`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::call::{AuditEventType, CallState, Details, EndOutcome};
    ///
    /// let (sink, trail) = crossbeam_channel::unbounded();
    /// let call = CallState::builder("c").audit_sink(sink).build();
    /// call.log_event(&AuditEventType::CallEnded, None, &Details::new()).expect("live call");
    /// assert_eq!(
    ///     call.end(),
    ///     EndOutcome::Ended {
    ///         notes_drained: 0,
    ///         audit_drained: 1,
    ///         audit_refused: 0,
    ///         closed_record: false, // a channel is not an archive: no closed record
    ///     }
    /// );
    /// assert_eq!(call.end(), EndOutcome::AlreadyEnded);
    /// assert_eq!(trail.len(), 1);
    /// # }
    /// ```
    pub fn end(&self) -> EndOutcome {
        // Shut the gate first: once it returns, every audit seq handed out is
        // in the ring and handed to the archive, so closing the ring refuses
        // no event that has a seq, and the closed record comes after them.
        let Some(issued) = self.gate.shut() else {
            // Another `end` shut it: wait until it has handed everything over.
            self.ended.wait();
            return EndOutcome::AlreadyEnded;
        };
        // Whatever happens below (a panicking clock or sink), racing `end`s
        // must not wait forever.
        let _open = OpenOnDrop(&self.ended);
        // Nothing below may skip closing the rings: a panicking clock or
        // sink is caught, both rings are handled, then the first panic is
        // resumed.
        let clock = panic::catch_unwind(AssertUnwindSafe(|| self.clock.now()));
        let at = match &clock {
            Ok(at) => *at,
            Err(_) => Timestamp::now(),
        };
        let _ = self.ended_at.set(at);
        let drained = |outcome| match outcome {
            crate::CloseOutcome::Closed { drained } => drained,
            crate::CloseOutcome::AlreadyClosed => 0,
        };
        // Entries a sink refuses during the drain are kept by the ring, not
        // drained: take them out of the ring's count.
        let close = |ring_refused: &dyn Fn() -> u64, close: &dyn Fn() -> u64| {
            let before = ring_refused();
            panic::catch_unwind(AssertUnwindSafe(close))
                .map(|n| n.saturating_sub(ring_refused() - before))
        };
        let notes = close(&|| self.notes.metrics().refused, &|| {
            drained(self.notes.close())
        });
        let audit = close(&|| self.audit.metrics().refused, &|| {
            drained(self.audit.close())
        });
        let closed_record = match self.archive.as_ref().or(self.evicts_to_archive.as_ref()) {
            Some(archive) => archive.submit_closed(issued, at).is_ok(),
            None => false,
        };
        let mut first_panic = clock.err();
        let mut count = |result: std::thread::Result<u64>| match result {
            Ok(n) => n,
            Err(payload) => {
                first_panic.get_or_insert(payload);
                0
            }
        };
        let notes_drained = count(notes);
        let audit_drained = count(audit);
        self.release_notes_views();
        if let Some(payload) = first_panic {
            panic::resume_unwind(payload);
        }
        EndOutcome::Ended {
            notes_drained,
            audit_drained,
            audit_refused: self.metrics().audit_refused,
            closed_record,
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
