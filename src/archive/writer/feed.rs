//! The ring-writer side of an archiver: [`ArchiveSink`], the bounded queue's
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
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use event_listener::{Event, IntoNotification, Listener};

use crate::archive::error::ArchiveStatus;
use crate::archive::error::{ArchiveError, FaultCallback, FaultEvent, IoFailure};
use crate::archive::spool::position::SpoolEnd;
use crate::archive::stats::{add, ArchiveStats, Counters};
use crate::call::{AuditEvent, Note, Timestamp};
use crate::door::Door;
use crate::sink::{Delivery, Evicted, Refused, Sink};

/// What travels from sinks (and the handle) to the archiver's thread.
///
/// Every record carries a ticket: its place in the order records were
/// handed over, which the durable watermark counts (see [`Durable`]).
pub(crate) enum Msg {
    /// An event leaving a call's ring (eviction mode).
    Event {
        call_id: Arc<str>,
        entry: Evicted<AuditEvent>,
        ticket: u64,
    },
    /// An event written through as it was logged, in the ring's encoding
    /// (decoded on the archiver's thread, so the logging thread copies and
    /// allocates nothing for it).
    Logged {
        call_id: Arc<str>,
        bytes: Vec<u8>,
        ticket: u64,
    },
    /// A call's end-of-call record.
    Closed {
        call_id: Arc<str>,
        issued: u64,
        at: Timestamp,
        ticket: u64,
    },
    /// A note leaving a call's notes ring (evicted, or drained at the end).
    Note {
        call_id: Arc<str>,
        entry: Evicted<Note>,
        ticket: u64,
    },
    /// Make everything before this durable, then answer.
    Flush(Sender<Result<(), ArchiveError>>),
    /// Wake up: `closed` is set.
    Stop,
}

#[derive(Debug, Default)]
struct State {
    retrying: Option<(IoFailure, u64)>,
    last_error: Option<IoFailure>,
    stopped: bool,
}

/// How far the archive's durable prefix reaches, in hand-off tickets.
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
/// archiver.flush().expect("durable");
/// let d = archiver.durability();
/// assert_eq!((d.handed_over, d.durable, d.lag()), (1, 1, 0));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Durability {
    /// Records handed to the archiver so far.
    pub handed_over: u64,
    /// The durable watermark: the first this many records handed over are
    /// all durable (written and fsynced).
    pub durable: u64,
}

impl Durability {
    /// Records handed over but not yet known durable.
    #[must_use]
    pub fn lag(&self) -> u64 {
        self.handed_over.saturating_sub(self.durable)
    }
}

/// The durable watermark and its waiters.
///
/// Tickets are handed out in the sinks (one `fetch_add` each, inside the
/// door), so two sinks racing can put their records into the channel in the
/// other order; the archiver's thread therefore advances the watermark only
/// over a contiguous run of synced tickets. It lives under a mutex: only
/// waiters and the archiver's thread (once per sync) take it, never a ring
/// writer that does not wait.
#[derive(Debug, Default)]
pub(crate) struct Durable {
    state: Mutex<DurableState>,
    advanced: Condvar,
}

#[derive(Debug, Default)]
struct DurableState {
    watermark: u64,
    /// The archiver's thread has exited: no ticket will become durable.
    stopped: bool,
}

impl Durable {
    fn state(&self) -> MutexGuard<'_, DurableState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every ticket below `watermark` is durable.
    pub(crate) fn advance(&self, watermark: u64) {
        let mut state = self.state();
        if watermark > state.watermark {
            state.watermark = watermark;
            self.advanced.notify_all();
        }
    }

    pub(crate) fn stop(&self) {
        self.state().stopped = true;
        self.advanced.notify_all();
    }

    pub(crate) fn watermark(&self) -> u64 {
        self.state().watermark
    }

    /// Waits until `ticket` is durable, the archiver stops, or `deadline`.
    pub(crate) fn wait(&self, ticket: u64, deadline: Option<Instant>) -> Result<(), ArchiveError> {
        let mut state = self.state();
        loop {
            if state.watermark > ticket {
                return Ok(());
            }
            if state.stopped {
                return Err(ArchiveError::NotRunning);
            }
            state = match deadline {
                None => self
                    .advanced
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        return Err(ArchiveError::Timeout {
                            waited: Duration::ZERO,
                        });
                    }
                    self.advanced
                        .wait_timeout(state, at - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

/// What [`CallState::log_event`](crate::call::CallState::log_event) does
/// when the archiver's queue
/// ([`channel_capacity`](crate::archive::ArchiveConfig::channel_capacity)
/// records) is full. Whatever the choice, a refusal happens before the
/// event takes a seq: nothing is logged, nothing is lost, the caller still
/// has the event and gets [`CallError::Busy`](crate::call::CallError::Busy).
///
/// [`try_log_event`](crate::call::CallState::try_log_event) never waits and
/// `log_event_async` (feature `async`) awaits room
/// whatever this says (except `Refuse`, which it honours). End-of-call
/// records and eviction-mode hand-offs always wait: the ring has already
/// given up their entries.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use std::time::Duration;
/// use callring::archive::{ArchiveConfig, FullQueue};
///
/// let config = ArchiveConfig::default().full_queue(FullQueue::Wait(Duration::from_millis(50)));
/// # let _ = config;
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FullQueue {
    /// Wait for room as long as it takes (back-pressure; the default).
    #[default]
    Block,
    /// Wait at most this long, then refuse.
    Wait(Duration),
    /// Refuse at once.
    Refuse,
}

/// How long a sender may wait for room.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    Forever,
    Until(Instant),
    No,
}

/// Why no place was reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoRoom {
    /// The queue stayed full for as long as the caller would wait.
    Full,
    /// The archiver is stopping or stopped.
    Closed,
}

/// Places in the archiver's queue, so that a record's place is reserved
/// before anything that cannot be undone (an audit seq) happens, and waits
/// for room can block, time out, or be awaited. The channel itself is
/// unbounded; every record goes in only with a place, so it never holds
/// more than `capacity` records (plus a flush or stop message).
///
/// Waiting uses `event_listener`: a sender that finds no place registers a
/// listener, checks again, and only then sleeps (or awaits), so a place
/// given back between its check and its registration is not missed.
struct Room {
    free: Counter,
    freed: Event,
}

impl fmt::Debug for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Room")
            .field("free", &self.free.load(Ordering::Relaxed)) // a status read
            .finish_non_exhaustive()
    }
}

impl Room {
    fn new(capacity: usize) -> Self {
        Self {
            free: Counter::new(capacity.max(1) as u64),
            freed: Event::new(),
        }
    }

    fn try_take(&self) -> bool {
        // Relaxed: a count of places, only the RMW's atomicity matters; the
        // record itself is published by the channel.
        self.free
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    fn give_back(&self) {
        // Relaxed: as in `try_take`. The notification below has its own
        // fence, which pairs with the waiter's re-check after `listen`.
        self.free.fetch_add(1, Ordering::Relaxed);
        self.freed.notify(1.additional());
    }

    /// Places taken now (records in the queue or about to be).
    fn taken(&self, capacity: u64) -> u64 {
        // Relaxed: a status read for a gauge.
        capacity.saturating_sub(self.free.load(Ordering::Relaxed))
    }

    fn wake_all(&self) {
        self.freed.notify(usize::MAX);
    }
}

/// A reserved place in the archiver's queue: given back on drop unless a
/// record went into the queue with it (the archiver's thread gives it back
/// when it takes the record out).
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    shared: &'a Shared,
    /// Whether the reservation had to wait.
    pub(crate) waited: bool,
}

impl Permit<'_> {
    /// The record went into the queue: its place is the archiver's now.
    fn spend(self) {
        std::mem::forget(self);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.shared.room.give_back();
    }
}

impl Shared {
    /// Reserves a place in the queue, waiting as `wait` says.
    pub(crate) fn reserve(&self, wait: Wait) -> Result<Permit<'_>, NoRoom> {
        let mut waited = false;
        loop {
            if let Some(permit) = self.try_reserve(waited)? {
                return Ok(permit);
            }
            if let Wait::No = wait {
                return Err(NoRoom::Full);
            }
            let listener = self.room.freed.listen();
            // Checked again with the listener registered: a place given
            // back before `listen` is seen here, one after it wakes us.
            if let Some(permit) = self.try_reserve(waited)? {
                return Ok(permit);
            }
            self.begin_wait(&mut waited);
            match wait {
                Wait::Forever => listener.wait(),
                Wait::Until(at) => {
                    if listener.wait_deadline(at).is_none() {
                        return self.reserve(Wait::No);
                    }
                }
                Wait::No => unreachable!("returned above"),
            }
        }
    }

    /// [`reserve`](Shared::reserve), awaiting room instead of blocking.
    #[cfg(feature = "async")]
    pub(crate) async fn reserve_async(&self) -> Result<Permit<'_>, NoRoom> {
        let mut waited = false;
        loop {
            if let Some(permit) = self.try_reserve(waited)? {
                return Ok(permit);
            }
            let listener = self.room.freed.listen();
            if let Some(permit) = self.try_reserve(waited)? {
                return Ok(permit);
            }
            self.begin_wait(&mut waited);
            listener.await;
        }
    }

    /// One attempt at a place: `Ok(None)` if the queue is full now.
    fn try_reserve(&self, waited: bool) -> Result<Option<Permit<'_>>, NoRoom> {
        if self.is_closed() {
            return Err(NoRoom::Closed);
        }
        // `then`, not `then_some`: a permit built and dropped would give
        // back a place it never took.
        Ok(self.room.try_take().then(|| Permit {
            shared: self,
            waited,
        }))
    }

    /// A sender is about to wait for room: counted once per hand-off, as
    /// the wait begins, so a stall shows while it lasts.
    fn begin_wait(&self, waited: &mut bool) {
        if !*waited {
            add(&self.counters.sink_waits, 1);
            crate::obs::sink_wait();
            *waited = true;
        }
    }

    /// How `log_event` waits, by the configured policy.
    pub(crate) fn log_wait(&self) -> Wait {
        match self.full {
            FullQueue::Block => Wait::Forever,
            FullQueue::Wait(d) => Instant::now()
                .checked_add(d)
                .map_or(Wait::Forever, Wait::Until),
            FullQueue::Refuse => Wait::No,
        }
    }

    /// Whether `log_event_async` may wait at all.
    #[cfg(feature = "async")]
    pub(crate) fn may_wait(&self) -> bool {
        self.full != FullQueue::Refuse
    }
}

/// Shared by the handle, the sinks and the archiver's thread.
pub(crate) struct Shared {
    /// Sinks enter it for each hand-off; `close` shuts it, and `stop` waits
    /// until no hand-off is inside (see `crate::door`).
    door: Door,
    pub(crate) counters: Counters,
    /// The next hand-off ticket.
    tickets: Counter,
    /// Places left in the archiver's queue.
    room: Room,
    /// Places in all.
    capacity: u64,
    /// What `log_event` does when the queue is full.
    full: FullQueue,
    /// Whether the destination keeps notes (the JSON Lines spool does; the
    /// SQLite archiver keeps audit records only, and its sinks refuse notes).
    keeps_notes: bool,
    pub(crate) durable: Durable,
    /// Where the durable prefix of the segments ends (JSON Lines only).
    pub(crate) spool_end: SpoolEnd,
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
    pub(crate) fn new(
        on_fault: Option<Arc<FaultCallback>>,
        capacity: usize,
        full: FullQueue,
    ) -> Self {
        Self {
            door: Door::new(),
            counters: Counters::default(),
            tickets: Counter::new(0),
            room: Room::new(capacity),
            capacity: capacity.max(1) as u64,
            full,
            keeps_notes: true,
            durable: Durable::default(),
            spool_end: SpoolEnd::default(),
            state: Mutex::default(),
            on_fault,
        }
    }

    /// For a destination that keeps audit records only: its sinks refuse
    /// notes (the calls keep them, see
    /// [`CallState::take_refused_notes`](crate::call::CallState::take_refused_notes)).
    #[cfg(feature = "sqlite")]
    pub(crate) fn refusing_notes(mut self) -> Self {
        self.keeps_notes = false;
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuse new hand-offs from now on, and wake every sink waiting for
    /// room (it will be refused).
    pub(crate) fn close(&self) {
        let _ = self.door.shut();
        self.room.wake_all();
    }

    /// Reports the queue's depth to the `metrics` gauge.
    pub(crate) fn report_depth(&self) {
        crate::obs::queue_depth(self.room.taken(self.capacity));
    }

    /// The archiver's thread took a record out of the queue: its place is
    /// free again.
    pub(crate) fn taken_out(&self) {
        self.room.give_back();
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
        ArchiveStats {
            handed_over: self.handed_over(),
            ..self.counters.snapshot()
        }
    }

    /// Takes the next hand-off ticket. Call only inside the door, right
    /// before the record goes into the channel.
    fn ticket(&self) -> u64 {
        // Relaxed: the RMW alone makes tickets unique; whether a ticket is
        // durable is published under the `Durable` mutex.
        self.tickets.fetch_add(1, Ordering::Relaxed)
    }

    fn handed_over(&self) -> u64 {
        // Relaxed: a statistic.
        self.tickets.load(Ordering::Relaxed)
    }

    pub(crate) fn durability(&self) -> Durability {
        // Watermark first: it can only trail the tickets read after it.
        let durable = self.durable.watermark();
        Durability {
            handed_over: self.handed_over(),
            durable,
        }
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
        crate::obs::archive_fault(&error, attempt, retry_in);
        {
            let mut state = self.state();
            state.retrying = Some((error.clone(), attempt));
            state.last_error = Some(error.clone());
        }
        self.tell(&FaultEvent::Failed {
            error,
            attempt,
            retry_in,
        });
    }

    /// An operation succeeded after `attempts` failures.
    pub(crate) fn recovered(&self, attempts: u64) {
        self.state().retrying = None;
        crate::obs::archive_recovered(attempts);
        self.tell(&FaultEvent::Recovered { attempts });
    }

    /// Calls the host's fault callback. It runs on the archiver's thread; a
    /// panic in it is caught (and ignored) so it cannot stop the archiver.
    pub(crate) fn tell(&self, event: &FaultEvent) {
        if let Some(callback) = &self.on_fault {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(event)));
        }
    }

    pub(crate) fn set_stopped(&self) {
        self.state().stopped = true;
        self.durable.stop();
        // Nothing will take records out any more: refuse new ones rather
        // than let their senders wait for room forever.
        self.close();
    }
}

/// One call's way into an archiver: its bounded queue, tagged with the
/// call's id.
///
/// From [`Archiver::sink`](crate::archive::Archiver::sink). Give it to
/// [`CallStateBuilder::audit_archive`](crate::call::CallStateBuilder::audit_archive)
/// and every event is written through as it is logged, with a closed record
/// at the end of the call. It is also a [`Sink`] for the ring's eviction mode
/// ([`CallStateBuilder::audit_sink`](crate::call::CallStateBuilder::audit_sink)),
/// which hands events over only as they leave the ring. Either way a full
/// queue ([`channel_capacity`](crate::archive::ArchiveConfig::channel_capacity)
/// records) makes the caller wait (counted in [`ArchiveStats::sink_waits`]),
/// or for `log_event` refuse before the seq as the archive's [`FullQueue`]
/// says; nothing is dropped. Once the archiver is
/// stopping, records are refused back: `log_event` reports
/// [`CallError::NotArchived`](crate::call::CallError::NotArchived) and the
/// call keeps the event.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::archive::{ArchiveConfig, Archiver};
/// use callring::call::CallState;
///
/// let dir = tempfile::tempdir().expect("temp dir");
/// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
/// let sink = archiver.sink("call-9");
/// assert_eq!(sink.call_id(), "call-9");
/// let call = CallState::builder("call-9").audit_archive(sink).build();
/// assert!(call.writes_through());
/// # }
/// ```
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

    /// A sink of the same archiver for another call: what
    /// [`Archiver::sink`](crate::archive::Archiver::sink) returns, for code that
    /// keeps a sink rather than the archiver (after the archiver stops, its
    /// sinks refuse every record).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::archive::{ArchiveConfig, Archiver};
    ///
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    /// let template = archiver.sink("template");
    /// assert_eq!(template.for_call("call-2").call_id(), "call-2");
    /// # }
    /// ```
    #[must_use]
    pub fn for_call(&self, call_id: &str) -> ArchiveSink {
        Self::new(
            Arc::from(call_id),
            self.tx.clone(),
            Arc::clone(&self.shared),
        )
    }
}

/// The event inside a message a sink built; sinks only build `Msg::Event`.
fn into_entry(msg: Msg) -> Evicted<AuditEvent> {
    match msg {
        Msg::Event { entry, .. } => entry,
        _ => unreachable!("`accept` sends only events"),
    }
}

/// A write-through hand-off the archive could not take: the archiver is
/// stopping or stopped. Carries back what was handed over.
#[derive(Debug)]
pub(crate) struct NotTaken<T>(pub(crate) T);

impl ArchiveSink {
    /// Hands `msg` (built with the ticket it is given) to the archiver's
    /// thread, waiting while the queue is full. `Err` gives the message
    /// back when the archiver is stopping or gone.
    // The refused message goes back to the caller whole, by value: boxing it
    // would allocate on every hand-off to save a move on a rare path.
    #[allow(clippy::result_large_err)]
    fn send(&self, build: impl FnOnce(u64) -> Msg) -> Result<(u64, Delivery), NotTaken<Msg>> {
        match self.shared.reserve(Wait::Forever) {
            Ok(permit) => self.send_with(permit, build),
            Err(_) => {
                add(&self.shared.counters.refused, 1);
                Err(NotTaken(build(u64::MAX)))
            }
        }
    }

    /// [`send`](ArchiveSink::send) into a place already reserved.
    #[allow(clippy::result_large_err)] // as for `send`
    fn send_with(
        &self,
        permit: Permit<'_>,
        build: impl FnOnce(u64) -> Msg,
    ) -> Result<(u64, Delivery), NotTaken<Msg>> {
        // Inside the door until the record is in the channel (or refused).
        let Some(_inside) = self.shared.door.enter() else {
            add(&self.shared.counters.refused, 1);
            return Err(NotTaken(build(u64::MAX)));
        };
        let ticket = self.shared.ticket();
        let msg = build(ticket);
        // The channel is unbounded (the permit is the bound): this never
        // waits, and fails only if the archiver's thread is gone.
        match self.tx.try_send(msg) {
            Ok(()) => {
                let delivery = if permit.waited {
                    Delivery::AfterWaiting
                } else {
                    Delivery::Immediate
                };
                permit.spend();
                Ok((ticket, delivery))
            }
            Err(TrySendError::Full(msg) | TrySendError::Disconnected(msg)) => {
                add(&self.shared.counters.refused, 1);
                Err(NotTaken(msg))
            }
        }
    }

    /// Reserves a place for a logged event, before its seq is taken.
    pub(crate) fn reserve(&self, wait: Wait) -> Result<Permit<'_>, NoRoom> {
        let reserved = self.shared.reserve(wait);
        if let Err(NoRoom::Closed) = reserved {
            add(&self.shared.counters.refused, 1);
        }
        reserved
    }

    /// [`reserve`](ArchiveSink::reserve), awaiting room.
    #[cfg(feature = "async")]
    pub(crate) async fn reserve_async(&self) -> Result<Permit<'_>, NoRoom> {
        let reserved = self.shared.reserve_async().await;
        if let Err(NoRoom::Closed) = reserved {
            add(&self.shared.counters.refused, 1);
        }
        reserved
    }

    /// How `log_event` waits for room, by the archive's [`FullQueue`].
    pub(crate) fn log_wait(&self) -> Wait {
        self.shared.log_wait()
    }

    /// Whether `log_event_async` may wait for room.
    #[cfg(feature = "async")]
    pub(crate) fn may_wait(&self) -> bool {
        self.shared.may_wait()
    }

    /// Writes through one logged event, given in the ring's encoding, into
    /// the place `permit` reserved. Returns its receipt; `Err` gives the
    /// bytes back.
    pub(crate) fn submit_logged(
        &self,
        permit: Permit<'_>,
        bytes: Vec<u8>,
    ) -> Result<Receipt, NotTaken<Vec<u8>>> {
        let call_id = Arc::clone(&self.call_id);
        match self.send_with(permit, |ticket| Msg::Logged {
            call_id,
            bytes,
            ticket,
        }) {
            Ok((ticket, _)) => Ok(Receipt {
                ticket,
                shared: Arc::clone(&self.shared),
            }),
            Err(NotTaken(Msg::Logged { bytes, .. })) => Err(NotTaken(bytes)),
            Err(_) => unreachable!("`submit_logged` sends only logged events"),
        }
    }

    /// Writes the call's end-of-call record: `issued` seqs, ended `at`.
    pub(crate) fn submit_closed(
        &self,
        issued: u64,
        at: Timestamp,
    ) -> Result<Receipt, NotTaken<()>> {
        let call_id = Arc::clone(&self.call_id);
        self.send(|ticket| Msg::Closed {
            call_id,
            issued,
            at,
            ticket,
        })
        .map(|(ticket, _)| Receipt {
            ticket,
            shared: Arc::clone(&self.shared),
        })
        .map_err(|_| NotTaken(()))
    }
}

impl Sink<AuditEvent> for ArchiveSink {
    fn accept(&self, entry: Evicted<AuditEvent>) -> Result<Delivery, Refused<AuditEvent>> {
        let call_id = Arc::clone(&self.call_id);
        match self.send(|ticket| Msg::Event {
            call_id,
            entry,
            ticket,
        }) {
            Ok((_, delivery)) => Ok(delivery),
            Err(NotTaken(msg)) => Err(Refused(into_entry(msg))),
        }
    }
}

/// Archives the notes of a call: each note as it leaves the notes ring
/// (evicted, or drained at [`end`](crate::call::CallState::end)), as a
/// note line ([`NoteRecord`](crate::archive::NoteRecord)) with the note's
/// own seq; notes take no audit seq. Set it with
/// [`CallStateBuilder::notes_archive`](crate::call::CallStateBuilder::notes_archive).
///
/// As for audit events in eviction mode, a full queue makes the appending
/// thread wait (the ring has already given the note up, so the archive's
/// [`FullQueue`] policy does not apply), counted in
/// [`ArchiveStats::sink_waits`]; a stopping or stopped archiver refuses the
/// note back to the ring, which keeps it for
/// [`CallState::take_refused_notes`](crate::call::CallState::take_refused_notes).
/// The SQLite archiver keeps audit records only: its sinks refuse every note
/// the same way.
impl Sink<Note> for ArchiveSink {
    fn accept(&self, entry: Evicted<Note>) -> Result<Delivery, Refused<Note>> {
        if !self.shared.keeps_notes {
            add(&self.shared.counters.refused, 1);
            return Err(Refused(entry));
        }
        let call_id = Arc::clone(&self.call_id);
        match self.send(|ticket| Msg::Note {
            call_id,
            entry,
            ticket,
        }) {
            Ok((_, delivery)) => Ok(delivery),
            Err(NotTaken(Msg::Note { entry, .. })) => Err(Refused(entry)),
            Err(_) => unreachable!("`accept` sends only notes here"),
        }
    }
}

/// A record handed to an archiver, to wait on until it is durable.
///
/// From [`CallState::log_event_receipt`](crate::call::CallState::log_event_receipt).
/// Waiting costs one group-commit window once every record handed over
/// before this one has reached the archiver: it fsyncs when
/// [`fsync_every`](crate::archive::ArchiveConfig::fsync_every) records are waiting or
/// the oldest has waited [`fsync_interval`](crate::archive::ArchiveConfig::fsync_interval)
/// (20 ms by default), plus the time that write and fsync take; every waiter
/// of that window is released by the same fsync. (The watermark is a prefix
/// of hand-offs, so a receipt also waits for earlier senders held up by
/// back-pressure or descheduled; with more busy threads than cores that
/// stretches the wait: see the simulator's report in the README.) Checking without waiting
/// ([`is_durable`](Receipt::is_durable)) takes one uncontended lock.
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
/// receipt.wait().expect("on disk"); // only now acknowledge the consent
/// assert!(receipt.is_durable());
/// assert_eq!(seq, 0);
/// # }
/// ```
#[must_use = "a receipt tells nothing unless it is waited on or checked"]
#[derive(Clone)]
pub struct Receipt {
    ticket: u64,
    shared: Arc<Shared>,
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receipt")
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

impl Receipt {
    /// The record's place among all records handed to its archiver: it is
    /// durable once [`Durability::durable`] exceeds it.
    #[must_use]
    pub fn ticket(&self) -> u64 {
        self.ticket
    }

    /// Whether the record is durable now.
    #[must_use]
    pub fn is_durable(&self) -> bool {
        self.shared.durable.watermark() > self.ticket
    }

    /// Waits until the record is durable (written and fsynced). While a
    /// fault persists this waits for it to clear; see
    /// [`wait_timeout`](Receipt::wait_timeout).
    ///
    /// # Errors
    ///
    /// [`ArchiveError::NotRunning`] if the archiver stopped without making
    /// it durable (it gave up, or its thread panicked).
    pub fn wait(&self) -> Result<(), ArchiveError> {
        self.shared.durable.wait(self.ticket, None)
    }

    /// [`wait`](Receipt::wait), at most `timeout` (a timeout too long to
    /// represent waits without a deadline).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use std::time::Duration;
    /// use callring::archive::{ArchiveConfig, Archiver};
    /// use callring::call::{AuditEventType, CallState, Details};
    ///
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    /// let call = CallState::builder("c").audit_archive(archiver.sink("c")).build();
    /// let (_, receipt) = call
    ///     .log_event_receipt(&AuditEventType::DataAccessed, None, &Details::new())
    ///     .expect("archived");
    /// receipt.wait_timeout(Duration::from_secs(10)).expect("durable in time");
    /// receipt.wait_timeout(Duration::MAX).expect("no overflow, no panic");
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ArchiveError::Timeout`] if it is not durable in time (it may still
    /// become durable later); [`ArchiveError::NotRunning`] as for `wait`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), ArchiveError> {
        self.shared
            .durable
            .wait(self.ticket, Instant::now().checked_add(timeout))
            .map_err(|e| match e {
                ArchiveError::Timeout { .. } => ArchiveError::Timeout { waited: timeout },
                other => other,
            })
    }
}
