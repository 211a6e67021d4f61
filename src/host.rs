//! `CallRegistry`: the live calls of one host, looked up from any thread
//! without a lock.
//!
//! The registry is a fixed set of shards, each an [`ArcSwap`] of an immutable
//! map. A lookup loads the current map of its shard (no lock, no contention
//! with other readers); starting or ending a call replaces that shard's map
//! with a copy that has the call added or removed (arc-swap's `rcu`), so the
//! copying cost is a shard's share of the live calls, not all of them.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::archive::ArchiveSink;
use crate::call::{AuditEvent, CallState, CallSummary, EndOutcome, Limits, LimitsError, Note};
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
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyLive { call_id } => write!(f, "call {call_id} is already live"),
            Self::NotLive { call_id } => write!(f, "no live call {call_id}"),
            Self::Limits(e) => write!(f, "limits: {e}"),
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

    /// The notes sink of each new call, made from its id. Optional.
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
    /// [`RegistryError::Limits`] if the script type's limits are invalid.
    pub fn start(&self, call_id: &str, script_type: &str) -> Result<Arc<CallState>, RegistryError> {
        let limits = (self.limits)(script_type).map_err(RegistryError::Limits)?;
        let shard = self.shard(call_id);
        if shard.load().contains_key(call_id) {
            return Err(RegistryError::AlreadyLive {
                call_id: call_id.to_owned(),
            });
        }
        let mut builder = CallState::builder(call_id).limits(limits);
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
    /// [`CallState::end`]).
    pub fn end(&self, call_id: &str) -> Result<EndedCall, RegistryError> {
        let not_live = || RegistryError::NotLive {
            call_id: call_id.to_owned(),
        };
        let call = self.get(call_id).ok_or_else(not_live)?;
        // End before removing: a racing second `end` (here or on the call
        // itself) waits inside `CallState::end` until the trail is handed
        // over, so neither caller returns before that.
        let outcome = call.end();
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
        if !removed {
            return Err(not_live());
        }
        Ok(EndedCall {
            summary: call.summarize(),
            outcome,
            refused_audit: call.take_refused_audit(),
        })
    }
}
