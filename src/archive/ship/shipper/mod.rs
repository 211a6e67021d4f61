//! The shipper (features `postgres`, `sqlite`): a thread that tails the
//! local JSON Lines archive, the host's durable spool, into a [`Store`],
//! exactly once: PostgreSQL for a fleet ([`Shipper::start`]), or an SQLite
//! file ([`Shipper::start_sqlite`]).
//!
//! The design, the exactly-once argument and the tables are documented on
//! [`Shipper`].

mod batch;
mod config;
mod error;
mod status;
mod worker;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::archive::error::{IoFailure, IoOp};
use crate::archive::ship::Store;
use crate::archive::spool::position::{spool_id, SPOOL_ID_FILE};
use crate::archive::writer::feed::Shared;
use crate::archive::{Archiver, SpoolPosition};
use status::{refresh_lag, Inner, Status};
use worker::{Control, Worker};

#[cfg(feature = "postgres")]
pub(crate) use config::check_host_id;
pub use config::{ShipperConfig, DEFAULT_BATCH_RECORDS};
pub use error::ShipError;
pub use status::{ShipState, ShipperStats, ShipperStatus};

/// Ships one host's JSON Lines archive into PostgreSQL (`Shipper::start`,
/// feature `postgres`), exactly once; or into an SQLite file
/// (`Shipper::start_sqlite`, feature `sqlite`), by the same steps, minus
/// what is said below about hosts, locks and duplicates.
///
/// Start it on a running [`Archiver`]; it reads that archive's directory up
/// to its durable end. Stop the archiver first and the shipper after, and
/// [`stop`](Shipper::stop) ships everything.
///
/// It ships audit records only (events and closed records): archived notes
/// ([`NoteRecord`](crate::archive::NoteRecord) lines, written for calls built
/// with [`notes_archive`](crate::call::CallStateBuilder::notes_archive)) are
/// read past and stay in the spool; the progress row moves past them too.
///
/// # Exactly once
///
/// The shipper reads only the spool's durable prefix
/// ([`Archiver::durable_end`]): whole lines that no crash can take back. It
/// ships them in batches, each in one transaction that
///
/// 1. inserts the batch's events keyed `(host_id, call_id, seq)` and its
///    closed records keyed `(host_id, call_id)`, both with
///    `ON CONFLICT DO NOTHING`, and
/// 2. moves the host's progress row `(host_id, segment, offset)` to the end
///    of the batch.
///
/// Rows and progress commit together or not at all. On every (re)connect the
/// shipper reads its position back from the progress row, never from its own
/// memory: after a failed commit (a killed backend, a server restart, a
/// SIGKILLed host) it resends from the last committed batch, and whatever of
/// that batch did commit is absorbed by the keys. So every durable record
/// reaches the database once, and a resend inserts nothing.
///
/// A row that conflicts with one shipped from a *different* spool position
/// is a real duplicate (the same seq twice in the spool, or two hosts
/// configured with one `host_id`): it is recorded in
/// `callring_audit_duplicates`, and `verify_postgres` reports its call as
/// duplicated. The check runs only for batches that inserted fewer rows than
/// they carry, so it costs nothing while shipping normally.
///
/// # Tables
///
/// Created if missing (under an advisory lock, so hosts starting together do
/// not race):
///
/// ```text
/// callring_audit_events     (host_id, call_id, seq) primary key; at, at_ns, type,
///                           agent_id, details jsonb, reason, spool_segment, spool_offset
/// callring_audit_calls      (host_id, call_id) primary key; issued, closed_at,
///                           closed_at_ns, spool_segment, spool_offset
/// callring_audit_duplicates (host_id, spool_segment, spool_offset) primary key;
///                           call_id, record ('event' or 'closed'), seq
/// callring_ship_progress    host_id primary key; segment, offset, records, spool_id,
///                           updated_at
/// ```
///
/// # Outages
///
/// The shipper never blocks the local archive: it only reads files the
/// archiver has fsynced. While PostgreSQL is unreachable the spool simply
/// grows (the archiver keeps writing segments), the shipper retries with
/// exponential backoff ([`ShipperConfig::retry_backoff`]), and
/// [`Shipper::status`] shows the state, the last error and the lag in
/// records and seconds. When the server is back it catches up from its
/// progress row.
///
/// One shipper per `host_id` at a time: it holds a session advisory lock
/// for its host while connected ([`ShipError::HostBusy`] otherwise).
///
/// The progress row belongs to one spool: the shipper names its archive
/// directory with a random id (the file `spool.id`, created on first use)
/// and resumes from the row only if the id matches. A host whose spool was
/// replaced ships its new spool from the start.
///
/// # Examples
///
/// ```no_run
/// # #[cfg(not(loom))] {
/// use callring::archive::{verify_postgres, ArchiveConfig, Archiver, Shipper, ShipperConfig};
/// use callring::call::{AuditEventType, CallState, Details};
///
/// let url = "postgres://callring@127.0.0.1:5432/callring";
/// let dir = tempfile::tempdir().expect("temp dir");
/// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
/// let shipper = Shipper::start(&archiver, url, ShipperConfig::new("host-1")).expect("starts");
///
/// let call = CallState::builder("call-1").audit_archive(archiver.sink("call-1")).build();
/// call.log_event(&AuditEventType::CallStarted, None, &Details::new()).expect("archived");
/// let _ = call.end();
///
/// archiver.stop().expect("local archive durable");
/// let stats = shipper.stop().expect("everything shipped");
/// assert_eq!(stats.records, 2); // the event and the closed record
///
/// let report = verify_postgres(url, "host-1").expect("verified in SQL");
/// assert!(report.is_complete());
/// # }
/// ```
pub struct Shipper {
    host_id: String,
    dir: PathBuf,
    shared: Arc<Shared>,
    status: Arc<Status>,
    control: Sender<Control>,
    stop_timeout: Duration,
    thread: Option<JoinHandle<Result<(), ShipError>>>,
}

impl fmt::Debug for Shipper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shipper")
            .field("host_id", &self.host_id)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Shipper {
    /// Starts the shipper's thread over `archiver`'s spool, writing to the
    /// store `open` opens (on the thread, again after every failure).
    pub(crate) fn spawn<S>(
        archiver: &Archiver,
        config: ShipperConfig,
        open: impl FnMut() -> Result<S, ShipError> + Send + 'static,
    ) -> Result<Self, ShipError>
    where
        S: Store + Send + 'static,
        ShipError: From<S::Error>,
    {
        config.validate()?;
        let shared = archiver.shared();
        let dir = archiver.dir().to_path_buf();
        let spool_id = spool_id(&dir).map_err(|e| {
            ShipError::Spool(IoFailure::new(IoOp::Write, dir.join(SPOOL_ID_FILE), &e))
        })?;
        let end = shared.spool_end.get().position;
        let status = Arc::new(Status {
            inner: Mutex::new(Inner {
                status: ShipperStatus {
                    host_id: config.host_id.clone(),
                    state: ShipState::Connecting,
                    position: SpoolPosition::default(),
                    durable_end: end,
                    lag_records: 0,
                    lag: Duration::ZERO,
                    attempts: 0,
                    last_error: None,
                    stats: ShipperStats::default(),
                },
                caught_up_to: None,
                backlog: 0,
                base_records: 0,
                shipped_since: 0,
                oldest_pending: None,
            }),
            changed: Condvar::new(),
        });
        let (control, rx) = crossbeam_channel::bounded(4);
        let stop_timeout = config.stop_timeout;
        let worker = Worker {
            open: Box::new(open),
            config,
            dir: dir.clone(),
            spool_id,
            shared: Arc::clone(&shared),
            status: Arc::clone(&status),
            control: rx,
            conn: None,
            position: SpoolPosition::default(),
            pending: None,
            drain: None,
        };
        let host_id = worker.config.host_id.clone();
        let thread = thread::Builder::new()
            .name("callring-shipper".to_owned())
            .spawn(move || worker.run())
            .map_err(|e| ShipError::Spawn {
                message: e.to_string(),
            })?;
        Ok(Self {
            host_id,
            dir,
            shared,
            status,
            control,
            stop_timeout,
            thread: Some(thread),
        })
    }

    /// The host this shipper ships.
    #[must_use]
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// State, position, lag (records and seconds), last error, counters.
    #[must_use]
    pub fn status(&self) -> ShipperStatus {
        let end = self.shared.spool_end.get();
        let mut inner = self.status.lock();
        refresh_lag(&mut inner, end.records);
        inner.status.durable_end = inner.status.durable_end.max(end.position);
        inner.status.clone()
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> ShipperStats {
        self.status.lock().status.stats
    }

    /// Waits until every record durable in the spool when this is called is
    /// in the database.
    ///
    /// # Errors
    ///
    /// [`ShipError::Timeout`] if that takes longer than `timeout` (the
    /// shipper goes on), [`ShipError::NotRunning`] if its thread is gone.
    pub fn wait_shipped(&self, timeout: Duration) -> Result<(), ShipError> {
        let target = self.shared.spool_end.get().position;
        let deadline = Instant::now() + timeout;
        let mut inner = self.status.lock();
        loop {
            if inner.caught_up_to.is_some_and(|p| p >= target) {
                return Ok(());
            }
            if inner.status.state == ShipState::Stopped {
                return Err(ShipError::NotRunning);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ShipError::Timeout { waited: timeout });
            }
            inner = self
                .status
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Ships everything durable in the spool now (stop the archiver first to
    /// ship everything), then stops the thread.
    ///
    /// # Errors
    ///
    /// [`ShipError::GaveUp`] if that did not finish within
    /// [`ShipperConfig::stop_timeout`] (the progress row says where a later
    /// shipper resumes; nothing is lost), [`ShipError::Panicked`].
    pub fn stop(mut self) -> Result<ShipperStats, ShipError> {
        let until = self.shared.spool_end.get().position;
        let deadline = Instant::now() + self.stop_timeout;
        self.finish(Control::Drain { until, deadline })
    }

    /// Stops the thread after the batch under way, without shipping the
    /// rest; a later shipper on the same spool resumes from the progress
    /// row.
    ///
    /// # Errors
    ///
    /// [`ShipError::Panicked`] if the thread panicked.
    pub fn abort(mut self) -> Result<ShipperStats, ShipError> {
        self.finish(Control::Abort)
    }

    fn finish(&mut self, control: Control) -> Result<ShipperStats, ShipError> {
        let Some(thread) = self.thread.take() else {
            return Ok(self.stats());
        };
        let _ = self.control.send(control);
        let result = match thread.join() {
            Ok(result) => result,
            Err(_) => Err(ShipError::Panicked),
        };
        self.status
            .update(|inner| inner.status.state = ShipState::Stopped);
        result.map(|()| self.stats())
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        let _ = self.finish(Control::Abort);
    }
}
