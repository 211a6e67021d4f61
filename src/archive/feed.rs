//! The ring-writer side of an archiver: [`ArchiveSink`], the bounded channel's
//! messages, and the state the archiver shares with its handle.
//!
//! Ring writers touch only the channel and a few atomics here, never a mutex.
//! Stop uses a [`Door`] so that no event is left in the channel when the
//! archiver's thread exits: a sink enters it for each hand-off and leaves
//! once its event is in the channel; the stopper shuts it, then keeps
//! draining until no hand-off is inside. Entering and shutting are RMWs on
//! one word, so either the sink's enter comes first (the stopper waits for
//! its event) or it sees the door shut and refuses the event back to the ring.

use crate::sync::{Counter, Ordering};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use super::config::{FaultCallback, FaultEvent};
use super::error::{ArchiveError, IoFailure};
use crate::call::AuditEvent;
use crate::door::Door;
use crate::sink::{Delivery, Evicted, Refused, Sink};

/// What travels from sinks (and the handle) to the archiver's thread.
pub(crate) enum Msg {
    /// An event leaving a call's ring.
    Event {
        call_id: Arc<str>,
        entry: Evicted<AuditEvent>,
    },
    /// Make everything before this durable, then answer.
    Flush(Sender<Result<(), ArchiveError>>),
    /// Wake up: `closed` is set.
    Stop,
}

/// Counters of an archiver, read with `stats()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ArchiveStats {
    /// Events the archiver took from the channel.
    pub received: u64,
    /// Events made durable (fsynced, or committed to SQLite).
    pub synced: u64,
    /// Bytes made durable (JSON Lines only).
    pub bytes: u64,
    /// Successful fsyncs (or SQLite commits).
    pub fsyncs: u64,
    /// Segments created.
    pub segments: u64,
    /// Hand-offs that found the channel full and waited (back-pressure; the
    /// rings count these too, as `sink_waits`).
    pub sink_waits: u64,
    /// Hand-offs refused because the archiver was stopping or stopped; the
    /// ring keeps those events (`Ring::take_refused`).
    pub refused: u64,
    /// Failed file operations.
    pub errors: u64,
    /// Retries after failures.
    pub retries: u64,
    /// Events given up on at stop (0 unless stop returned `GaveUp`).
    pub lost: u64,
    /// Events whose (call, seq) was already archived (SQLite only; the
    /// JSON Lines verifier finds them on disk).
    pub duplicates: u64,
    /// Bytes of a torn tail cut from the previous run's last segment at
    /// start.
    pub repaired_torn_bytes: u64,
}

/// Whether the archiver is keeping up or retrying a fault.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArchiveStatus {
    /// Writing normally.
    Running,
    /// An operation keeps failing; the archiver retries with backoff and ring
    /// writers wait once the channel is full.
    Retrying {
        /// The latest failure.
        error: IoFailure,
        /// Failed attempts so far.
        attempts: u64,
    },
    /// The archiver's thread has exited.
    Stopped,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) received: Counter,
    pub(crate) synced: Counter,
    pub(crate) bytes: Counter,
    pub(crate) fsyncs: Counter,
    pub(crate) segments: Counter,
    pub(crate) sink_waits: Counter,
    pub(crate) refused: Counter,
    pub(crate) errors: Counter,
    pub(crate) retries: Counter,
    pub(crate) lost: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) repaired_torn_bytes: Counter,
}

/// Adds to a statistics counter. Relaxed: counters publish nothing.
pub(crate) fn add(counter: &Counter, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> ArchiveStats {
        // Relaxed: statistics.
        let get = |c: &Counter| c.load(Ordering::Relaxed);
        ArchiveStats {
            received: get(&self.received),
            synced: get(&self.synced),
            bytes: get(&self.bytes),
            fsyncs: get(&self.fsyncs),
            segments: get(&self.segments),
            sink_waits: get(&self.sink_waits),
            refused: get(&self.refused),
            errors: get(&self.errors),
            retries: get(&self.retries),
            lost: get(&self.lost),
            duplicates: get(&self.duplicates),
            repaired_torn_bytes: get(&self.repaired_torn_bytes),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    retrying: Option<(IoFailure, u64)>,
    last_error: Option<IoFailure>,
    stopped: bool,
}

/// Shared by the handle, the sinks and the archiver's thread.
pub(crate) struct Shared {
    /// Sinks enter it for each hand-off; `close` shuts it, and `stop` waits
    /// until no hand-off is inside (see `crate::door`).
    door: Door,
    pub(crate) counters: Counters,
    /// Touched by the archiver's thread and the host's status queries only.
    state: Mutex<State>,
    on_fault: Option<Arc<FaultCallback>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("door", &self.door)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(on_fault: Option<Arc<FaultCallback>>) -> Self {
        Self {
            door: Door::new(),
            counters: Counters::default(),
            state: Mutex::default(),
            on_fault,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuse new hand-offs from now on.
    pub(crate) fn close(&self) {
        let _ = self.door.shut();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.door.is_shut()
    }

    /// Hand-offs under way. Once this reads 0 after `close`, every accepted
    /// event is in the channel (the door's Release/Acquire pair).
    pub(crate) fn inflight(&self) -> u64 {
        self.door.inside()
    }

    pub(crate) fn stats(&self) -> ArchiveStats {
        self.counters.snapshot()
    }

    pub(crate) fn status(&self) -> ArchiveStatus {
        let state = self.state();
        match (&state.retrying, state.stopped) {
            (_, true) => ArchiveStatus::Stopped,
            (Some((error, attempts)), false) => ArchiveStatus::Retrying {
                error: error.clone(),
                attempts: *attempts,
            },
            (None, false) => ArchiveStatus::Running,
        }
    }

    pub(crate) fn last_error(&self) -> Option<IoFailure> {
        self.state().last_error.clone()
    }

    /// An attempt failed: record it, tell the host.
    pub(crate) fn failed(&self, error: IoFailure, attempt: u64, retry_in: Duration) {
        add(&self.counters.errors, 1);
        {
            let mut state = self.state();
            state.retrying = Some((error.clone(), attempt));
            state.last_error = Some(error.clone());
        }
        if let Some(callback) = &self.on_fault {
            callback(&FaultEvent::Failed {
                error,
                attempt,
                retry_in,
            });
        }
    }

    /// An operation succeeded after `attempts` failures.
    pub(crate) fn recovered(&self, attempts: u64) {
        self.state().retrying = None;
        if let Some(callback) = &self.on_fault {
            callback(&FaultEvent::Recovered { attempts });
        }
    }

    pub(crate) fn set_stopped(&self) {
        self.state().stopped = true;
    }
}

/// The sink for one call's audit ring: hands evicted and drained events to an
/// archiver through its bounded channel.
///
/// From [`Archiver::sink`](super::Archiver::sink). A full channel makes the
/// ring writer wait ([`Delivery::AfterWaiting`], counted by the ring as
/// `sink_waits` and by the archiver); nothing is dropped. Once the archiver is
/// stopping, events are refused and the ring keeps them
/// ([`Ring::take_refused`](crate::Ring::take_refused)).
#[derive(Clone)]
pub struct ArchiveSink {
    call_id: Arc<str>,
    tx: Sender<Msg>,
    shared: Arc<Shared>,
}

impl fmt::Debug for ArchiveSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArchiveSink")
            .field("call_id", &self.call_id)
            .finish_non_exhaustive()
    }
}

impl ArchiveSink {
    pub(crate) fn new(call_id: Arc<str>, tx: Sender<Msg>, shared: Arc<Shared>) -> Self {
        Self {
            call_id,
            tx,
            shared,
        }
    }

    /// The call whose events this sink archives.
    #[must_use]
    pub fn call_id(&self) -> &str {
        &self.call_id
    }
}

/// The event inside a message a sink built; sinks only build `Msg::Event`.
fn into_entry(msg: Msg) -> Evicted<AuditEvent> {
    match msg {
        Msg::Event { entry, .. } => entry,
        Msg::Flush(_) | Msg::Stop => unreachable!("sinks send only events"),
    }
}

impl Sink<AuditEvent> for ArchiveSink {
    fn accept(&self, entry: Evicted<AuditEvent>) -> Result<Delivery, Refused<AuditEvent>> {
        // Inside the door until the event is in the channel (or refused).
        let Some(_inside) = self.shared.door.enter() else {
            add(&self.shared.counters.refused, 1);
            return Err(Refused(entry));
        };
        let msg = Msg::Event {
            call_id: Arc::clone(&self.call_id),
            entry,
        };
        let refused = |msg| {
            add(&self.shared.counters.refused, 1);
            Err(Refused(into_entry(msg)))
        };
        match self.tx.try_send(msg) {
            Ok(()) => Ok(Delivery::Immediate),
            Err(TrySendError::Full(msg)) => {
                add(&self.shared.counters.sink_waits, 1);
                match self.tx.send(msg) {
                    Ok(()) => Ok(Delivery::AfterWaiting),
                    Err(crossbeam_channel::SendError(msg)) => refused(msg),
                }
            }
            Err(TrySendError::Disconnected(msg)) => refused(msg),
        }
    }
}
