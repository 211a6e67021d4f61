//! `CallRegistry`: the live calls of one host, looked up from any thread
//! without a lock.
//!
//! The registry is a fixed set of shards, each an [`ArcSwap`] of an immutable
//! map. A lookup loads the current map of its shard (no lock, no contention
//! with other readers); starting or ending a call replaces that shard's map
//! with a copy that has the call added or removed (arc-swap's `rcu`), so the
//! copying cost is a shard's share of the live calls, not all of them.
//!
//! Lifecycle: [`CallRegistry::shutdown`] shuts a door (`src/door.rs`) that every `start`
//! passes through (the call layer's audit gate uses the same door), waits
//! for the starts already inside, and ends every live call, so no call can
//! start behind its back. The live-call cap is an admission counter.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::archive::{ArchiveError, ArchiveSink, ArchiveStats, Archiver};
use crate::call::{
    AuditEvent, CallMetrics, CallState, CallSummary, Clock, EndOutcome, Limits, LimitsError, Note,
};
use crate::door::Door;
use crate::sink::Sink;

/// Shards of the registry: enough that a start or end copies a small map even
/// with tens of thousands of live calls.
const SHARDS: usize = 64;

type Map = HashMap<Arc<str>, Arc<CallState>>;

/// Makes a call's sinks, given its id.
type SinkFactory<T> = Box<dyn Fn(&str) -> Box<dyn Sink<T>> + Send + Sync>;
/// Makes a call's eviction-mode audit sink, and the archive behind it if it
/// is an archive's sink (for the closed record).
type AuditSinkFactory =
    Box<dyn Fn(&str) -> (Box<dyn Sink<AuditEvent>>, Option<ArchiveSink>) + Send + Sync>;
/// Makes a call's write-through archive sink, given its id.
type ArchiveFactory = Box<dyn Fn(&str) -> ArchiveSink + Send + Sync>;

/// How a new call's audit trail leaves memory.
enum AuditOut {
    None,
    Archive(ArchiveFactory),
    Sink(AuditSinkFactory),
}

/// A call [`CallRegistry::end`] ended: its final summary, what `end` did,
/// and the audit events its archive refused (empty unless the archiver was
/// stopped before the call ended). Those must be persisted some other way.
#[derive(Debug, Clone)]
#[non_exhaustive]
#[must_use = "refused audit events must be persisted somewhere"]
pub struct EndedCall {
    /// The call's summary after it ended.
    pub summary: CallSummary,
    /// What [`CallState::end`] reported.
    pub outcome: EndOutcome,
    /// Audit events the archive refused, in seq order (taken from the call).
    pub refused_audit: Vec<AuditEvent>,
    /// Notes the notes sink refused, oldest first (taken from the call):
    /// empty unless a notes archive was stopped before the call ended (or
    /// refuses notes, as the SQLite archiver does), or a sink's receiver
    /// was gone. Persist them some other way.
    pub refused_notes: Vec<Note>,
}
/// Resolves a script type to limits.
type LimitsFn = Box<dyn Fn(&str) -> Result<Limits, LimitsError> + Send + Sync>;

/// Why a registry operation did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryError {
    /// A call with this id is already live.
    AlreadyLive {
        /// The call.
        call_id: String,
    },
    /// No live call has this id (never started, or already ended).
    NotLive {
        /// The call.
        call_id: String,
    },
    /// The limits for the call's script type are invalid.
    Limits(LimitsError),
    /// The registry already holds
    /// [`max_live_calls`](CallRegistryBuilder::max_live_calls) live calls.
    TooManyCalls {
        /// The cap.
        max: usize,
    },
    /// [`shutdown`](CallRegistry::shutdown) has begun: no new calls.
    ShuttingDown,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyLive { call_id } => write!(f, "call {call_id} is already live"),
            Self::NotLive { call_id } => write!(f, "no live call {call_id}"),
            Self::Limits(e) => write!(f, "limits: {e}"),
            Self::TooManyCalls { max } => write!(f, "{max} calls are live, the most allowed"),
            Self::ShuttingDown => f.write_str("the registry is shutting down"),
        }
    }
}

impl std::error::Error for RegistryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Limits(e) => Some(e),
            _ => None,
        }
    }
}

/// The live calls of a host.
///
/// Share it in an `Arc`; every method takes `&self`. [`get`](Self::get) is a
/// lock-free load; [`start`](Self::start) and [`end`](Self::end) replace one
/// shard's map. Ending a call removes it first, so when two threads end the
/// same call exactly one of them ends it (and gets its summary).
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::call::{AuditEventType, Details};
/// use callring::host::{CallRegistry, RegistryError};
///
/// let (archive, trail) = crossbeam_channel::unbounded();
/// let registry = CallRegistry::builder()
///     .audit_sink(move |_call_id| archive.clone())
///     .build();
/// let call = registry.start("call-1", "collections").expect("new call");
/// call.log_event(&AuditEventType::CallStarted, None, &Details::new()).expect("live");
///
/// assert!(registry.get("call-1").is_some());
/// let ended = registry.end("call-1").expect("live call");
/// assert_eq!(ended.summary.audit.appended, 1);
/// assert_eq!(trail.len(), 1); // drained to the archive
/// assert!(matches!(registry.end("call-1"), Err(RegistryError::NotLive { .. })));
/// # }
/// ```
pub struct CallRegistry {
    shards: Box<[ArcSwap<Map>]>,
    hasher: RandomState,
    limits: LimitsFn,
    audit: AuditOut,
    notes_sink: Option<SinkFactory<Note>>,
    clock: Option<Arc<dyn Clock>>,
    /// Every `start` passes through; `shutdown` shuts it.
    door: Door,
    max_live: usize,
    /// Calls admitted and not yet removed (at most `max_live`).
    admitted: AtomicUsize,
    /// The archiver handed over with [`CallRegistryBuilder::archiver`], until
    /// `shutdown` stops it.
    archiver: Mutex<Option<Archiver>>,
    /// Counters of the calls that have ended (the live ones are added up on
    /// demand).
    ended: EndedTotals,
}

/// What ended calls appended, kept after they are gone.
#[derive(Debug, Default)]
struct EndedTotals {
    started: AtomicU64,
    ended: AtomicU64,
    notes_appended: AtomicU64,
    notes_evicted: AtomicU64,
    audit_appended: AtomicU64,
    audit_written: AtomicU64,
    audit_refused: AtomicU64,
}

impl EndedTotals {
    fn add(&self, m: &CallMetrics) {
        // Relaxed: statistics; `metrics` documents them as exact only once
        // starts and ends are quiescent.
        let add = |c: &AtomicU64, n: u64| c.fetch_add(n, Ordering::Relaxed);
        add(&self.ended, 1);
        add(&self.notes_appended, m.notes.appended);
        add(&self.notes_evicted, m.notes.evicted);
        add(&self.audit_appended, m.audit.appended);
        add(&self.audit_written, m.audit_written);
        add(&self.audit_refused, m.audit_refused);
    }
}

/// Counters of a registry: its live calls now, and everything its calls have
/// done since it was built (ended calls included). From
/// [`CallRegistry::metrics`]; exact once starts, ends and appends are
/// quiescent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryMetrics {
    /// Calls live now.
    pub live_calls: u64,
    /// Heap bytes the live calls' rings hold (slot pages and extension
    /// blocks; [`RingStats::bytes`](crate::call::RingStats::bytes) summed).
    pub live_bytes: u64,
    /// Calls started since the registry was built.
    pub calls_started: u64,
    /// Calls ended through the registry.
    pub calls_ended: u64,
    /// Notes appended, by live and ended calls.
    pub notes_appended: u64,
    /// Notes overwritten in full rings, by live and ended calls.
    pub notes_evicted: u64,
    /// Audit events appended, by live and ended calls.
    pub audit_appended: u64,
    /// Audit events written through to the archive.
    pub audit_written: u64,
    /// Audit events the archive refused (returned by `end`, never dropped).
    pub audit_refused: u64,
}

/// What [`CallRegistry::shutdown`] did: the calls it ended and, when the
/// registry owned the archiver, how stopping it went.
#[derive(Debug)]
#[non_exhaustive]
#[must_use = "refused audit events must be persisted somewhere"]
pub struct Shutdown {
    /// The calls that were live when shutdown began, each ended: summaries,
    /// outcomes and refused audit events.
    pub ended: Vec<EndedCall>,
    /// What [`Archiver::stop`] returned, if the registry owned the archiver
    /// ([`CallRegistryBuilder::archiver`]); `None` otherwise.
    pub archive: Option<Result<ArchiveStats, ArchiveError>>,
}

impl Shutdown {
    /// Every audit event that did not reach the archive, across all ended
    /// calls: these must be persisted some other way.
    pub fn refused_audit(&self) -> impl Iterator<Item = &AuditEvent> + '_ {
        self.ended.iter().flat_map(|e| e.refused_audit.iter())
    }

    /// Whether everything reached the archive (every audit event, and every
    /// note a notes sink was given) and it stopped cleanly.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.refused_audit().next().is_none()
            && self.ended.iter().all(|e| e.refused_notes.is_empty())
            && !matches!(self.archive, Some(Err(_)))
    }
}

impl fmt::Debug for AuditOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Archive(_) => "write-through archive",
            Self::Sink(_) => "eviction sink",
        })
    }
}

impl fmt::Debug for CallRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallRegistry")
            .field("live", &self.len())
            .field("audit", &self.audit)
            .field("notes_sink", &self.notes_sink.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds a [`CallRegistry`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct CallRegistryBuilder {
    limits: LimitsFn,
    audit: AuditOut,
    notes_sink: Option<SinkFactory<Note>>,
    max_live: usize,
    archiver: Option<Archiver>,
    clock: Option<Arc<dyn Clock>>,
}

impl fmt::Debug for CallRegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallRegistryBuilder")
            .field("audit", &self.audit)
            .field("notes_sink", &self.notes_sink.is_some())
            .finish_non_exhaustive()
    }
}

impl CallRegistryBuilder {
    /// How a script type becomes [`Limits`] (default:
    /// [`Limits::from_env_for`], read at each start).
    pub fn limits(
        mut self,
        limits: impl Fn(&str) -> Result<Limits, LimitsError> + Send + Sync + 'static,
    ) -> Self {
        self.limits = Box::new(limits);
        self
    }

    /// Each new call writes its audit events through to the archive sink
    /// `make` returns for its id (see
    /// [`CallStateBuilder::audit_archive`](crate::call::CallStateBuilder::audit_archive)).
    /// Replaces an [`audit_sink`](CallRegistryBuilder::audit_sink).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use std::sync::Arc;
    /// use callring::archive::{ArchiveConfig, Archiver};
    /// use callring::host::CallRegistry;
    ///
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let archiver = Arc::new(Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens"));
    /// let registry = {
    ///     let archiver = Arc::clone(&archiver);
    ///     CallRegistry::builder().audit_archive(move |id| archiver.sink(id)).build()
    /// };
    /// let call = registry.start("call-1", "default").expect("new call");
    /// assert!(call.writes_through());
    /// # }
    /// ```
    pub fn audit_archive(
        mut self,
        make: impl Fn(&str) -> ArchiveSink + Send + Sync + 'static,
    ) -> Self {
        self.audit = AuditOut::Archive(Box::new(make));
        self
    }

    /// Hands the registry an archiver: each new call writes its audit events
    /// through to it (as [`audit_archive`](CallRegistryBuilder::audit_archive)
    /// with `archiver.sink(id)`), and [`shutdown`](CallRegistry::shutdown)
    /// flushes and stops it after the last call has ended.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::archive::{verify, ArchiveConfig, Archiver};
    /// use callring::call::{AuditEventType, Details};
    /// use callring::host::CallRegistry;
    ///
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    /// let registry = CallRegistry::builder().archiver(archiver).build();
    /// let call = registry.start("call-1", "default").expect("new call");
    /// call.log_event(&AuditEventType::CallStarted, None, &Details::new()).expect("archived");
    ///
    /// let shutdown = registry.shutdown();
    /// assert!(shutdown.is_clean());
    /// assert_eq!(shutdown.ended.len(), 1);
    /// assert!(verify(dir.path()).expect("readable").calls["call-1"].is_complete());
    /// # }
    /// ```
    pub fn archiver(mut self, archiver: Archiver) -> Self {
        let base = archiver.sink("");
        self.audit = AuditOut::Archive(Box::new(move |id: &str| base.for_call(id)));
        self.archiver = Some(archiver);
        self
    }

    /// The clock every new call stamps its notes and events with, and that
    /// [`end_idle`](CallRegistry::end_idle) measures idleness by (default:
    /// the system clock).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// At most `max` live calls: a `start` beyond them is
    /// [`RegistryError::TooManyCalls`] (default: no cap).
    pub fn max_live_calls(mut self, max: usize) -> Self {
        self.max_live = max;
        self
    }

    /// The eviction-mode audit sink of each new call, made from its id (see
    /// [`CallStateBuilder::audit_sink`](crate::call::CallStateBuilder::audit_sink)).
    /// Replaces an [`audit_archive`](CallRegistryBuilder::audit_archive).
    pub fn audit_sink<S: Sink<AuditEvent> + 'static>(
        mut self,
        make: impl Fn(&str) -> S + Send + Sync + 'static,
    ) -> Self {
        self.audit = AuditOut::Sink(Box::new(move |id: &str| {
            let sink = make(id);
            let archive = (&sink as &dyn Any).downcast_ref::<ArchiveSink>().cloned();
            (Box::new(sink) as Box<dyn Sink<AuditEvent>>, archive)
        }));
        self
    }

    /// The notes sink of each new call, made from its id. Optional. With
    /// `move |id| archiver.sink(id)` each call archives its notes (see
    /// [`CallStateBuilder::notes_archive`](crate::call::CallStateBuilder::notes_archive)).
    pub fn notes_sink<S: Sink<Note> + 'static>(
        mut self,
        make: impl Fn(&str) -> S + Send + Sync + 'static,
    ) -> Self {
        self.notes_sink = Some(Box::new(move |id: &str| -> Box<dyn Sink<Note>> {
            Box::new(make(id))
        }));
        self
    }

    /// Builds the registry, empty.
    #[must_use]
    pub fn build(self) -> CallRegistry {
        CallRegistry {
            shards: (0..SHARDS).map(|_| ArcSwap::default()).collect(),
            hasher: RandomState::new(),
            limits: self.limits,
            audit: self.audit,
            notes_sink: self.notes_sink,
            clock: self.clock,
            door: Door::new(),
            max_live: self.max_live,
            admitted: AtomicUsize::new(0),
            archiver: Mutex::new(self.archiver),
            ended: EndedTotals::default(),
        }
    }
}

impl Default for CallRegistry {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl CallRegistry {
    /// A builder: limits from the environment per script type, no sinks.
    pub fn builder() -> CallRegistryBuilder {
        CallRegistryBuilder {
            limits: Box::new(Limits::from_env_for),
            audit: AuditOut::None,
            notes_sink: None,
            max_live: usize::MAX,
            archiver: None,
            clock: None,
        }
    }

    fn shard(&self, call_id: &str) -> &ArcSwap<Map> {
        let index = self.hasher.hash_one(call_id) as usize % SHARDS;
        &self.shards[index]
    }

    /// Starts a call of `script_type` (which selects its [`Limits`]).
    ///
    /// # Errors
    ///
    /// [`RegistryError::AlreadyLive`] if a call with this id is live;
    /// [`RegistryError::Limits`] if the script type's limits are invalid;
    /// [`RegistryError::TooManyCalls`] at the
    /// [cap](CallRegistryBuilder::max_live_calls);
    /// [`RegistryError::ShuttingDown`] once [`shutdown`](Self::shutdown) has
    /// begun.
    pub fn start(&self, call_id: &str, script_type: &str) -> Result<Arc<CallState>, RegistryError> {
        // Inside the door until the call is in the map (or refused), so a
        // shutdown either waits for this start or refuses it.
        let _inside = self.door.enter().ok_or(RegistryError::ShuttingDown)?;
        let limits = (self.limits)(script_type).map_err(RegistryError::Limits)?;
        let admitted = Admission::new(&self.admitted, self.max_live)?;
        let shard = self.shard(call_id);
        if shard.load().contains_key(call_id) {
            return Err(RegistryError::AlreadyLive {
                call_id: call_id.to_owned(),
            });
        }
        let mut builder = CallState::builder(call_id).limits(limits);
        if let Some(clock) = &self.clock {
            let clock = Arc::clone(clock);
            builder = builder.clock(move || clock.now());
        }
        match &self.audit {
            AuditOut::None => {}
            AuditOut::Archive(make) => builder = builder.audit_archive(make(call_id)),
            AuditOut::Sink(make) => {
                let (sink, archive) = make(call_id);
                builder = builder.eviction_sink(sink, archive);
            }
        }
        if let Some(make) = &self.notes_sink {
            builder = builder.notes_sink(make(call_id));
        }
        let call = Arc::new(builder.build());
        let key: Arc<str> = Arc::from(call_id);
        // `rcu` may run the closure more than once (when another start or end
        // replaced the map meanwhile); the last run decides.
        let mut inserted = false;
        shard.rcu(|map| {
            if map.contains_key(call_id) {
                inserted = false;
                return Arc::clone(map);
            }
            inserted = true;
            let mut next = Map::clone(map);
            next.insert(Arc::clone(&key), Arc::clone(&call));
            Arc::new(next)
        });
        if inserted {
            admitted.keep();
            // Relaxed: a status read for a gauge.
            crate::obs::live_calls(self.admitted.load(Ordering::Relaxed));
            // Relaxed: a statistic.
            self.ended.started.fetch_add(1, Ordering::Relaxed);
            Ok(call)
        } else {
            Err(RegistryError::AlreadyLive {
                call_id: call_id.to_owned(),
            })
        }
    }

    /// The live call `call_id`, if any. Lock-free.
    #[must_use]
    pub fn get(&self, call_id: &str) -> Option<Arc<CallState>> {
        self.shard(call_id).load().get(call_id).cloned()
    }

    /// Ids of the live calls (a snapshot; unordered).
    #[must_use]
    pub fn live(&self) -> Vec<String> {
        self.shards
            .iter()
            .flat_map(|s| s.load().keys().map(|k| k.to_string()).collect::<Vec<_>>())
            .collect()
    }

    /// Number of live calls.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.load().len()).sum()
    }

    /// Whether no call is live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends `call_id` (see [`CallState::end`]: the closed record goes to the
    /// archive, eviction sinks get what is left), removes it from the
    /// registry, and returns its final summary, the end's outcome and the
    /// audit events the archive refused. When two threads end the same call,
    /// exactly one gets `Ok`, and neither returns before the call's trail
    /// has been handed over (so a handler may flush the archive right
    /// after). The outcome is [`EndOutcome::AlreadyEnded`] if the call had
    /// been ended directly, or by the racing caller.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NotLive`] if no live call has this id.
    ///
    /// # Panics
    ///
    /// Only if one of the call's sinks panics during the drain (see
    /// [`CallState::end`]); the call is removed from the registry first.
    pub fn end(&self, call_id: &str) -> Result<EndedCall, RegistryError> {
        let not_live = || RegistryError::NotLive {
            call_id: call_id.to_owned(),
        };
        let call = self.get(call_id).ok_or_else(not_live)?;
        // End before removing: a racing second `end` (here or on the call
        // itself) waits inside `CallState::end` until the trail is handed
        // over, so neither caller returns before that.
        // A sink panicking inside `end` must not leave an ended call
        // registered: remove it first, then resume the panic.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call.end()));
        let mut removed = false;
        self.shard(call_id).rcu(|map| {
            removed = map.get(call_id).is_some_and(|c| Arc::ptr_eq(c, &call));
            if !removed {
                return Arc::clone(map);
            }
            let mut next = Map::clone(map);
            next.remove(call_id);
            Arc::new(next)
        });
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(payload) => std::panic::resume_unwind(payload),
        };
        if !removed {
            return Err(not_live());
        }
        // Relaxed: an admission count; it guards no data (see `Admission`).
        let live = self.admitted.fetch_sub(1, Ordering::Relaxed) - 1;
        crate::obs::live_calls(live);
        self.ended.add(&call.metrics());
        Ok(EndedCall {
            summary: call.summarize(),
            outcome,
            refused_audit: call.take_refused_audit(),
            refused_notes: call.take_refused_notes(),
        })
    }

    /// Ends every call idle for at least `max_idle` (by
    /// [`CallState::idle_for`]: since its newest note or event, or its
    /// start), as [`end`](Self::end) does, and returns them. A call that
    /// another thread ends meanwhile is left to that thread.
    ///
    /// # Panics
    ///
    /// As [`end`](Self::end): only if a sink panics.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use std::time::Duration;
    /// use callring::host::CallRegistry;
    ///
    /// let registry = CallRegistry::default();
    /// let _ = registry.start("quiet", "default").expect("new call");
    /// assert!(registry.end_idle(Duration::from_secs(3600)).is_empty());
    /// let ended = registry.end_idle(Duration::ZERO);
    /// assert_eq!(ended.len(), 1);
    /// assert!(registry.is_empty());
    /// # }
    /// ```
    #[must_use = "refused audit events must be persisted somewhere"]
    pub fn end_idle(&self, max_idle: Duration) -> Vec<EndedCall> {
        self.calls()
            .into_iter()
            .filter(|call| call.idle_for() >= max_idle)
            .filter_map(|call| self.end(call.call_id()).ok())
            .collect()
    }

    /// Shuts the registry down: refuses new calls from now on (a `start`
    /// already under way finishes first), ends every live call (closed
    /// records to the archive, eviction sinks drained), then flushes and
    /// stops the archiver if the registry owns one
    /// ([`CallRegistryBuilder::archiver`]). Every audit event logged before
    /// shutdown began is then in the archive or in
    /// [`Shutdown::refused_audit`], once; an agent still appending gets
    /// [`CallError::Ended`](crate::call::CallError::Ended). A second call
    /// finds nothing left to end.
    ///
    /// # Panics
    ///
    /// As [`end`](Self::end): only if a sink panics.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::host::{CallRegistry, RegistryError};
    ///
    /// let registry = CallRegistry::default();
    /// let call = registry.start("call-1", "default").expect("new call");
    /// call.append_note("verified").expect("live call");
    /// let shutdown = registry.shutdown();
    /// assert_eq!(shutdown.ended.len(), 1);
    /// assert!(call.append_note("late").is_err());
    /// assert_eq!(registry.start("call-2", "default").unwrap_err(), RegistryError::ShuttingDown);
    /// # }
    /// ```
    pub fn shutdown(&self) -> Shutdown {
        self.door.shut();
        self.door.wait_empty();
        let ended = self
            .calls()
            .into_iter()
            .filter_map(|call| self.end(call.call_id()).ok())
            .collect();
        let archiver = self
            .archiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        Shutdown {
            ended,
            archive: archiver.map(Archiver::stop),
        }
    }

    /// The registry's counters: live calls and their heap bytes now, and
    /// what every call since the registry was built has appended.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::host::CallRegistry;
    ///
    /// let registry = CallRegistry::default();
    /// let call = registry.start("call-1", "default").expect("new call");
    /// call.append_note("verified").expect("live call");
    /// let _ = registry.end("call-1").expect("live");
    /// let m = registry.metrics();
    /// assert_eq!((m.live_calls, m.calls_started, m.calls_ended), (0, 1, 1));
    /// assert_eq!(m.notes_appended, 1); // counted after the call is gone
    /// # }
    /// ```
    #[must_use]
    pub fn metrics(&self) -> RegistryMetrics {
        // Relaxed: statistics (see `EndedTotals::add`).
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let e = &self.ended;
        let mut m = RegistryMetrics {
            live_calls: 0,
            live_bytes: 0,
            calls_started: load(&e.started),
            calls_ended: load(&e.ended),
            notes_appended: load(&e.notes_appended),
            notes_evicted: load(&e.notes_evicted),
            audit_appended: load(&e.audit_appended),
            audit_written: load(&e.audit_written),
            audit_refused: load(&e.audit_refused),
        };
        for call in self.calls() {
            let c = call.metrics();
            m.live_calls += 1;
            m.live_bytes += c.notes.bytes + c.audit.bytes;
            m.notes_appended += c.notes.appended;
            m.notes_evicted += c.notes.evicted;
            m.audit_appended += c.audit.appended;
            m.audit_written += c.audit_written;
            m.audit_refused += c.audit_refused;
        }
        m
    }

    /// The live calls (a snapshot).
    fn calls(&self) -> Vec<Arc<CallState>> {
        self.shards
            .iter()
            .flat_map(|s| s.load().values().cloned().collect::<Vec<_>>())
            .collect()
    }
}

/// A reserved place under the live-call cap, given back on drop unless the
/// call was registered.
struct Admission<'a> {
    admitted: &'a AtomicUsize,
    kept: bool,
}

impl<'a> Admission<'a> {
    fn new(admitted: &'a AtomicUsize, max: usize) -> Result<Self, RegistryError> {
        // Relaxed: an admission count, only its RMWs' atomicity matters: no
        // data is published through it (the call is published by its
        // shard's ArcSwap).
        admitted
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| RegistryError::TooManyCalls { max })?;
        Ok(Self {
            admitted,
            kept: false,
        })
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.kept {
            // Relaxed: see `new`.
            self.admitted.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
