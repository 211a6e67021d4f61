//! The archiver's thread, shared by the JSON Lines and SQLite archivers: take
//! events from the bounded queue in batches, write them, make them durable
//! by the group-commit policy, retry failures with backoff, and on stop take
//! every event already accepted before exiting.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender};

use crate::archive::config::ArchiveConfig;
use crate::archive::error::ArchiveStatus;
use crate::archive::error::{ArchiveError, IoFailure};
use crate::archive::record::Origin;
use crate::archive::stats::{add, ArchiveStats};
use crate::archive::writer::feed::{ArchiveSink, Msg, Shared};
use crate::call::{AuditEvent, Note, Timestamp};

/// One record for a backend.
pub(crate) enum Entry {
    /// An audit event.
    Event {
        call_id: Arc<str>,
        reason: Origin,
        event: AuditEvent,
    },
    /// An event written through as it was logged, in the ring's encoding:
    /// each backend turns it into its record format directly.
    Logged { call_id: Arc<str>, bytes: Vec<u8> },
    /// A call's end-of-call record.
    Closed {
        call_id: Arc<str>,
        issued: u64,
        at: Timestamp,
    },
    /// A note that left its call's notes ring: note `seq` of the call.
    Note {
        call_id: Arc<str>,
        reason: Origin,
        seq: u64,
        note: Note,
    },
}

/// Where a worker puts records: a segmented JSON Lines directory or SQLite.
///
/// `write` and `sync` are retried after an error until they succeed, so each
/// must leave the backend able to redo the whole operation: nothing
/// buffered may be dropped, and nothing written twice. A successful `sync`
/// makes every record pushed before it durable.
pub(crate) trait Destination: Send + 'static {
    /// Buffers one record (no I/O).
    fn push(&mut self, entry: Entry);
    /// Hands buffered events to the operating system.
    fn write(&mut self) -> Result<(), IoFailure>;
    /// Makes every buffered event durable.
    fn sync(&mut self) -> Result<(), IoFailure>;
    /// Events pushed but not yet durable.
    fn unsynced(&self) -> u64;
    /// When the oldest event not yet durable was pushed.
    fn oldest_unsynced(&self) -> Option<Instant>;
}

/// Events taken from the channel per batch before the batch is written.
const BATCH: usize = 1024;

/// How a stopping worker polls for hand-offs still under way.
const STOP_POLL: Duration = Duration::from_millis(1);

/// The settings a worker needs.
#[derive(Debug, Clone, Copy)]
struct Policy {
    fsync_every: u64,
    fsync_interval: Duration,
    retry_initial: Duration,
    retry_max: Duration,
    stop_timeout: Duration,
}

/// The worker gave up on a failing operation (only ever while stopping).
struct GiveUp(IoFailure);

struct Worker<B> {
    backend: B,
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    policy: Policy,
    /// When stopping gives up (`Some(None)`: never).
    stop_deadline: Option<Option<Instant>>,
    /// Tickets of the records pushed since the last successful sync.
    unsynced_tickets: Vec<u64>,
    /// Synced tickets above the watermark (their senders overtook an
    /// earlier ticket's sender on the channel).
    synced_ahead: BinaryHeap<Reverse<u64>>,
    /// Every ticket below this is durable.
    watermark: u64,
}

/// Rebuilds a written-through event from the ring's encoding. Cannot fail
/// for bytes `CallState` encoded; if it ever did, the seq is kept and the
/// details say what went wrong, so the trail shows the event, not a gap.
pub(crate) fn decode_logged(bytes: &[u8]) -> AuditEvent {
    use crate::call::AuditEventType;
    match crate::call::decode_event(bytes) {
        Ok(event) => event,
        Err(e) => {
            let word = |at: usize| {
                let mut le = [0u8; 8];
                if let Some(b) = bytes.get(at..at + 8) {
                    le.copy_from_slice(b);
                }
                le
            };
            let seq = u64::from_le_bytes(word(0));
            let mut details = crate::call::Details::new();
            details.insert("callring_decode_error".into(), e.to_string().into());
            AuditEvent {
                seq,
                at: Timestamp::from_unix_nanos(i64::from_le_bytes(word(8))),
                kind: AuditEventType::Other("undecodable".into()),
                agent_id: None,
                details,
            }
        }
    }
}

/// Marks the archiver stopped when the worker's thread ends, however it
/// ends: receipt waiters then get `NotRunning` instead of waiting forever,
/// even if the thread panicked.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.set_stopped();
    }
}

impl<B: Destination> Worker<B> {
    fn run(mut self) -> Result<(), ArchiveError> {
        let _stopped = StopOnDrop(Arc::clone(&self.shared));
        let outcome = self.serve();
        match outcome {
            Ok(()) => Ok(()),
            Err(GiveUp(error)) => {
                let lost = self.abandon();
                add(&self.shared.counters.lost, lost);
                Err(ArchiveError::GaveUp {
                    error,
                    lost,
                    stats: Box::new(self.shared.stats()),
                })
            }
        }
    }

    fn serve(&mut self) -> Result<(), GiveUp> {
        let mut stopping = false;
        while !stopping {
            let due = self.sync_deadline();
            let first = match due {
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => self.rx.recv_deadline(at),
            };
            match first {
                Ok(msg) => {
                    stopping |= self.handle(msg)?;
                    for _ in 1..BATCH {
                        if self.backend.unsynced() >= self.policy.fsync_every {
                            break;
                        }
                        match self.rx.try_recv() {
                            Ok(msg) => stopping |= self.handle(msg)?,
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stopping = true,
            }
            stopping |= self.shared.is_closed();
            self.shared.report_depth();
            self.retry(B::write)?;
            if self.sync_is_due() {
                self.sync()?;
            }
        }
        // Stopping: `closed` is set, so new hand-offs are refused; take every
        // event whose hand-off was accepted, then make it all durable.
        self.drain(|worker, msg| worker.handle(msg).map(drop))?;
        self.sync()
    }

    /// Makes every pushed record durable, then moves the watermark over the
    /// contiguous run of synced tickets and wakes its waiters.
    fn sync(&mut self) -> Result<(), GiveUp> {
        let started = Instant::now();
        self.retry(B::sync)?;
        crate::obs::fsynced(started.elapsed());
        if self.unsynced_tickets.is_empty() {
            return Ok(());
        }
        self.synced_ahead
            .extend(self.unsynced_tickets.drain(..).map(Reverse));
        let before = self.watermark;
        while self.synced_ahead.peek() == Some(&Reverse(self.watermark)) {
            self.synced_ahead.pop();
            self.watermark += 1;
        }
        if self.watermark > before {
            self.shared.durable.advance(self.watermark);
        }
        Ok(())
    }

    /// Feeds every message still coming to `f`: until no hand-off is under
    /// way and the channel is empty. Call only once `closed` is set.
    fn drain(
        &mut self,
        mut f: impl FnMut(&mut Self, Msg) -> Result<(), GiveUp>,
    ) -> Result<(), GiveUp> {
        loop {
            while let Ok(msg) = self.rx.try_recv() {
                f(self, msg)?;
            }
            if self.shared.inflight() == 0 {
                // Every accepted hand-off has put its event in the channel.
                while let Ok(msg) = self.rx.try_recv() {
                    f(self, msg)?;
                }
                return Ok(());
            }
            if let Ok(msg) = self.rx.recv_timeout(STOP_POLL) {
                f(self, msg)?;
            }
        }
    }

    /// After giving up: count what is not durable, answer pending flushes.
    fn abandon(&mut self) -> u64 {
        let mut lost = self.backend.unsynced();
        let _ = self.drain(|worker, msg| {
            if let Msg::Event { .. } | Msg::Logged { .. } | Msg::Closed { .. } | Msg::Note { .. } =
                msg
            {
                lost += 1;
                worker.shared.taken_out();
            }
            // A `Flush`'s answer channel is dropped: the caller sees
            // `NotRunning`.
            Ok(())
        });
        lost
    }

    /// Handles one message; `true` for `Stop`.
    fn handle(&mut self, msg: Msg) -> Result<bool, GiveUp> {
        if let Msg::Event { .. } | Msg::Logged { .. } | Msg::Closed { .. } | Msg::Note { .. } = msg
        {
            self.shared.taken_out();
        }
        match msg {
            Msg::Event {
                call_id,
                entry,
                ticket,
            } => {
                add(&self.shared.counters.received, 1);
                self.backend.push(Entry::Event {
                    call_id,
                    reason: entry.reason.into(),
                    event: entry.value,
                });
                self.unsynced_tickets.push(ticket);
                Ok(false)
            }
            Msg::Logged {
                call_id,
                bytes,
                ticket,
            } => {
                add(&self.shared.counters.received, 1);
                add(&self.shared.counters.logged, 1);
                self.backend.push(Entry::Logged { call_id, bytes });
                self.unsynced_tickets.push(ticket);
                Ok(false)
            }
            Msg::Closed {
                call_id,
                issued,
                at,
                ticket,
            } => {
                add(&self.shared.counters.closed_records, 1);
                self.backend.push(Entry::Closed {
                    call_id,
                    issued,
                    at,
                });
                self.unsynced_tickets.push(ticket);
                Ok(false)
            }
            Msg::Note {
                call_id,
                entry,
                ticket,
            } => {
                add(&self.shared.counters.notes, 1);
                self.backend.push(Entry::Note {
                    call_id,
                    reason: entry.reason.into(),
                    seq: entry.seq,
                    note: entry.value,
                });
                self.unsynced_tickets.push(ticket);
                Ok(false)
            }
            Msg::Flush(ack) => match self.sync() {
                Ok(()) => {
                    let _ = ack.send(Ok(()));
                    Ok(false)
                }
                Err(GiveUp(error)) => {
                    let _ = ack.send(Err(ArchiveError::Io(error.clone())));
                    Err(GiveUp(error))
                }
            },
            Msg::Stop => Ok(true),
        }
    }

    /// When the unsynced events must be made durable by age.
    fn sync_deadline(&self) -> Option<Instant> {
        // An interval too long to add means "never by age".
        self.backend
            .oldest_unsynced()
            .and_then(|t| t.checked_add(self.policy.fsync_interval))
    }

    fn sync_is_due(&self) -> bool {
        self.backend.unsynced() >= self.policy.fsync_every
            || self.sync_deadline().is_some_and(|at| at <= Instant::now())
    }

    /// Runs `op` until it succeeds, with exponential backoff between
    /// attempts; every failure is reported (status, counters, callback).
    /// Gives up only while stopping, after `stop_timeout`.
    fn retry(&mut self, op: fn(&mut B) -> Result<(), IoFailure>) -> Result<(), GiveUp> {
        let mut attempts = 0;
        let mut backoff = self.policy.retry_initial;
        loop {
            let error = match op(&mut self.backend) {
                Ok(()) => {
                    if attempts > 0 {
                        self.shared.recovered(attempts);
                    }
                    return Ok(());
                }
                Err(error) => error,
            };
            attempts += 1;
            let mut wait = backoff;
            let mut give_up = false;
            if self.shared.is_closed() {
                let now = Instant::now();
                // A timeout too long to add never expires.
                if let Some(deadline) = *self
                    .stop_deadline
                    .get_or_insert_with(|| now.checked_add(self.policy.stop_timeout))
                {
                    give_up = now >= deadline;
                    wait = if give_up {
                        Duration::ZERO
                    } else {
                        wait.min(deadline - now)
                    };
                }
            }
            self.shared.failed(error.clone(), attempts, wait);
            if give_up {
                return Err(GiveUp(error));
            }
            thread::sleep(wait);
            add(&self.shared.counters.retries, 1);
            backoff = backoff.saturating_mul(2).min(self.policy.retry_max);
        }
    }
}

/// An archiver's handle: the channel's sending side, the shared state, and
/// the thread.
#[derive(Debug)]
pub(crate) struct Core {
    tx: Sender<Msg>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<(), ArchiveError>>>,
}

impl Core {
    /// Starts a worker thread named `name` over `backend`.
    pub(crate) fn spawn<B: Destination>(
        name: &str,
        backend: B,
        config: &ArchiveConfig,
        shared: Arc<Shared>,
    ) -> Result<Self, ArchiveError> {
        // Unbounded: the queue's bound is the places sinks reserve before
        // sending (see `Room` in feed.rs), so a send never waits here.
        let (tx, rx) = crossbeam_channel::unbounded();
        let worker = Worker {
            backend,
            rx,
            shared: Arc::clone(&shared),
            policy: Policy {
                fsync_every: config.fsync_every,
                fsync_interval: config.fsync_interval,
                retry_initial: config.retry_initial,
                retry_max: config.retry_max,
                stop_timeout: config.stop_timeout,
            },
            stop_deadline: None,
            unsynced_tickets: Vec::new(),
            synced_ahead: BinaryHeap::new(),
            watermark: 0,
        };
        let thread = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || worker.run())
            .map_err(|e| ArchiveError::Spawn {
                message: e.to_string(),
            })?;
        Ok(Self {
            tx,
            shared,
            thread: Some(thread),
        })
    }

    pub(crate) fn sink(&self, call_id: &str) -> ArchiveSink {
        ArchiveSink::new(
            Arc::from(call_id),
            self.tx.clone(),
            Arc::clone(&self.shared),
        )
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn shared_arc(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    pub(crate) fn status(&self) -> ArchiveStatus {
        self.shared.status()
    }

    /// Waits until everything handed over before the call is durable.
    pub(crate) fn flush(&self, timeout: Option<Duration>) -> Result<(), ArchiveError> {
        // A timeout too long to add is no deadline.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let timed_out = || ArchiveError::Timeout {
            waited: timeout.unwrap_or_default(),
        };
        let (ack, done) = crossbeam_channel::bounded(1);
        let msg = Msg::Flush(ack);
        match deadline {
            None => self.tx.send(msg).map_err(|_| ArchiveError::NotRunning)?,
            Some(at) => self.tx.send_deadline(msg, at).map_err(|e| match e {
                SendTimeoutError::Timeout(_) => timed_out(),
                SendTimeoutError::Disconnected(_) => ArchiveError::NotRunning,
            })?,
        }
        match deadline {
            None => done.recv().unwrap_or(Err(ArchiveError::NotRunning)),
            Some(at) => match done.recv_deadline(at) {
                Ok(result) => result,
                Err(RecvTimeoutError::Timeout) => Err(timed_out()),
                Err(RecvTimeoutError::Disconnected) => Err(ArchiveError::NotRunning),
            },
        }
    }

    /// Refuses new hand-offs, archives every accepted one, syncs, joins.
    pub(crate) fn stop(&mut self) -> Result<ArchiveStats, ArchiveError> {
        let Some(thread) = self.thread.take() else {
            return Ok(self.shared.stats());
        };
        self.shared.close();
        // Wakes a waiting worker (the channel is unbounded: this never
        // waits); fails if the worker is gone already.
        let _ = self.tx.send(Msg::Stop);
        match thread.join() {
            Ok(Ok(())) => Ok(self.shared.stats()),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                self.shared.set_stopped();
                Err(ArchiveError::Panicked)
            }
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
