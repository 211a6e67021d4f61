//! The fleet archive (feature `postgres`): a shipper thread that tails the
//! local JSON Lines archive, the host's durable spool, into PostgreSQL,
//! exactly once, and a verifier that checks the trails in SQL.
//!
//! The design, the exactly-once argument and the tables are documented on
//! [`Shipper`].

mod batch;
mod sql;
mod verify;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::error::{IoFailure, IoOp};
use super::feed::Shared;
use super::spool::spool_id;
use super::{Archiver, SpoolPosition};
use crate::call::Timestamp;
use batch::{count_lines, next_batch, Batch, Next};
use sql::Connection;

pub use verify::verify_postgres;

/// Settings of a [`Shipper`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use callring::archive::ShipperConfig;
///
/// let config = ShipperConfig::new("host-eu-1")
///     .batch_records(5_000)
///     .retry_backoff(Duration::from_millis(50), Duration::from_secs(5));
/// assert_eq!(config.host_id(), "host-eu-1");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ShipperConfig {
    host_id: String,
    batch_records: usize,
    batch_bytes: usize,
    poll_interval: Duration,
    retry_initial: Duration,
    retry_max: Duration,
    connect_timeout: Duration,
    stop_timeout: Duration,
}

/// Default records per batch (one transaction).
pub const DEFAULT_BATCH_RECORDS: usize = 10_000;

impl ShipperConfig {
    /// Settings for the host `host_id`: the fleet-unique name of this host,
    /// part of every key in the database. 1 to 128 characters of
    /// `A-Z a-z 0-9 . _ : -`.
    pub fn new(host_id: impl Into<String>) -> Self {
        Self {
            host_id: host_id.into(),
            batch_records: DEFAULT_BATCH_RECORDS,
            batch_bytes: 8 << 20,
            poll_interval: Duration::from_millis(10),
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(30),
        }
    }

    /// The host's id.
    #[must_use]
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// Records per batch, each batch one transaction (default
    /// [`DEFAULT_BATCH_RECORDS`]; at least 1).
    pub fn batch_records(mut self, records: usize) -> Self {
        self.batch_records = records;
        self
    }

    /// Bytes of spool read per batch at most (default 8 MiB; a longer line
    /// is still read whole).
    pub fn batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes;
        self
    }

    /// How often an idle shipper looks for newly durable records (default
    /// 10 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Backoff between attempts while PostgreSQL fails: starts at `initial`,
    /// doubles, capped at `max` (defaults 50 ms and 5 s).
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_initial = initial;
        self.retry_max = max;
        self
    }

    /// Timeout of one connection attempt (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long [`Shipper::stop`] keeps trying to ship what is durable
    /// before it gives up (default 30 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<(), ShipError> {
        let invalid = |setting, reason: &str| {
            Err(ShipError::InvalidConfig {
                setting,
                reason: reason.to_owned(),
            })
        };
        check_host_id(&self.host_id)?;
        if self.batch_records == 0 {
            return invalid("batch_records", "must be at least 1 record");
        }
        if self.batch_bytes == 0 {
            return invalid("batch_bytes", "must be at least 1 byte");
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return invalid("retry_backoff", "initial must be non-zero and at most max");
        }
        Ok(())
    }
}

/// Checks a host id: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
pub(crate) fn check_host_id(host_id: &str) -> Result<(), ShipError> {
    let ok = !host_id.is_empty()
        && host_id.len() <= 128
        && host_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ShipError::InvalidConfig {
            setting: "host_id",
            reason: format!("{host_id:?} must be 1 to 128 characters of A-Z a-z 0-9 . _ : -"),
        })
    }
}

/// Why shipping (or verifying in the database) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShipError {
    /// A setting is out of range.
    InvalidConfig {
        /// The setting.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The connection string does not parse.
    Url {
        /// The parser's message.
        reason: String,
    },
    /// PostgreSQL refused or failed: connecting, a statement, a commit.
    Database {
        /// The SQLSTATE, when the server sent one (`57P01`: the backend was
        /// terminated).
        code: Option<String>,
        /// The message.
        message: String,
    },
    /// Another shipper holds this host's lock (one shipper per `host_id`).
    HostBusy {
        /// The host.
        host_id: String,
    },
    /// A segment of the spool could not be read.
    Spool(IoFailure),
    /// A line of the spool's durable prefix is not a record. Shipping stops
    /// there (and retries) until the segment is repaired.
    CorruptSpool {
        /// The segment.
        file: PathBuf,
        /// The line's byte offset.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The thread could not be started.
    Spawn {
        /// The operating system's message.
        message: String,
    },
    /// The shipper's thread panicked (a bug).
    Panicked,
    /// The shipper's thread is gone.
    NotRunning,
    /// A wait did not finish in time.
    Timeout {
        /// How long the caller waited.
        waited: Duration,
    },
    /// Stop could not ship everything durable within the stop timeout.
    GaveUp {
        /// Records durable in the spool but not in the database; a later
        /// shipper on the same spool resumes with them.
        lag_records: u64,
        /// The last error, if one kept it from finishing.
        last_error: Option<Box<ShipError>>,
    },
}

impl fmt::Display for ShipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig { setting, reason } => {
                write!(f, "invalid shipper setting `{setting}`: {reason}")
            }
            Self::Url { reason } => write!(f, "invalid PostgreSQL connection string: {reason}"),
            Self::Database { code, message } => match code {
                Some(code) => write!(f, "PostgreSQL error {code}: {message}"),
                None => write!(f, "PostgreSQL: {message}"),
            },
            Self::HostBusy { host_id } => write!(
                f,
                "another shipper is shipping host {host_id:?} (one shipper per host id)"
            ),
            Self::Spool(e) => e.fmt(f),
            Self::CorruptSpool {
                file,
                offset,
                reason,
            } => write!(
                f,
                "{} byte {offset}: corrupt line in the durable spool: {reason}",
                file.display()
            ),
            Self::Spawn { message } => write!(f, "cannot start the shipper thread: {message}"),
            Self::Panicked => f.write_str("the shipper thread panicked"),
            Self::NotRunning => f.write_str("the shipper is not running"),
            Self::Timeout { waited } => write!(f, "shipping did not catch up within {waited:?}"),
            Self::GaveUp {
                lag_records,
                last_error,
            } => {
                write!(
                    f,
                    "shipper gave up at stop with {lag_records} durable records not shipped"
                )?;
                match last_error {
                    Some(e) => write!(f, " ({e})"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for ShipError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spool(e) => Some(e),
            _ => None,
        }
    }
}

impl From<postgres::Error> for ShipError {
    fn from(e: postgres::Error) -> Self {
        let code = e.code().map(|c| c.code().to_owned());
        let message = match e.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => e.to_string(),
        };
        Self::Database { code, message }
    }
}

/// What the shipper is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShipState {
    /// Connecting (first time, or after an error).
    Connecting,
    /// Shipping a backlog.
    Shipping,
    /// Everything durable is in the database; waiting for more.
    CaughtUp,
    /// The last attempt failed; waiting to retry (see
    /// [`ShipperStatus::last_error`]).
    Retrying,
    /// The thread has exited.
    Stopped,
}

impl fmt::Display for ShipState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connecting => "connecting",
            Self::Shipping => "shipping",
            Self::CaughtUp => "caught up",
            Self::Retrying => "retrying",
            Self::Stopped => "stopped",
        })
    }
}

/// Counters of a shipper (this run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShipperStats {
    /// Spool records in committed batches (events and closed records).
    pub records: u64,
    /// Event rows inserted.
    pub events_inserted: u64,
    /// Closed records inserted.
    pub closed_inserted: u64,
    /// Records whose key was already in the database (resent after a
    /// failure, or duplicates; see `duplicates`).
    pub already_present: u64,
    /// Records found to be real duplicates (same key, another spool
    /// position).
    pub duplicates: u64,
    /// Committed batches.
    pub batches: u64,
    /// Spool bytes in committed batches.
    pub bytes: u64,
    /// Successful connections (1 + reconnects).
    pub connects: u64,
    /// Failed attempts (connects, batches, reads).
    pub errors: u64,
}

/// Where a shipper stands: state, position, lag, last error and counters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ShipperStatus {
    /// The host.
    pub host_id: String,
    /// What it is doing.
    pub state: ShipState,
    /// Shipped up to here (the progress row, as last committed or read).
    pub position: SpoolPosition,
    /// The spool's durable end when last looked at.
    pub durable_end: SpoolPosition,
    /// Records durable in the spool and not yet in the database.
    pub lag_records: u64,
    /// Age of the oldest record not yet in the database (zero when caught
    /// up).
    pub lag: Duration,
    /// Consecutive failed attempts (0 while things work).
    pub attempts: u64,
    /// The most recent failure, kept after recovery.
    pub last_error: Option<ShipError>,
    /// The counters.
    pub stats: ShipperStats,
}

/// Shared by the handle and the thread.
#[derive(Debug)]
struct Status {
    inner: Mutex<Inner>,
    changed: Condvar,
}

#[derive(Debug)]
struct Inner {
    status: ShipperStatus,
    /// The durable end of the last read that found nothing more: everything
    /// before it is in the database.
    caught_up_to: Option<SpoolPosition>,
    /// Lag bookkeeping, reset at each connect: the backlog counted then, the
    /// archiver's durable record count then, records committed since.
    backlog: u64,
    base_records: u64,
    shipped_since: u64,
    oldest_pending: Option<Timestamp>,
}

impl Status {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut Inner)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }
}

/// What the handle tells the thread.
#[derive(Debug)]
enum Control {
    /// Ship everything durable up to the given end, then exit (or give up at
    /// the deadline).
    Drain {
        until: SpoolPosition,
        deadline: Instant,
    },
    /// Exit now; the progress row says where the next shipper starts.
    Abort,
}

/// Ships one host's JSON Lines archive into PostgreSQL, exactly once.
///
/// Start it on a running [`Archiver`]; it reads that archive's directory up
/// to its durable end. Stop the archiver first and the shipper after, and
/// [`stop`](Shipper::stop) ships everything.
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
/// `callring_audit_duplicates`, and [`verify_postgres`] reports its call as
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
    /// Starts shipping `archiver`'s directory to the PostgreSQL database at
    /// `url` (a libpq-style connection string:
    /// `postgres://user@host:port/db` or `host=... user=...`).
    ///
    /// Returns at once: connecting happens on the shipper's thread, and a
    /// server that is down is retried with backoff (see
    /// [`status`](Shipper::status)).
    ///
    /// # Errors
    ///
    /// [`ShipError::InvalidConfig`], [`ShipError::Url`] for a connection
    /// string that does not parse, [`ShipError::Spawn`].
    pub fn start(archiver: &Archiver, url: &str, config: ShipperConfig) -> Result<Self, ShipError> {
        config.validate()?;
        let mut pg = postgres::Config::from_str(url).map_err(|e| ShipError::Url {
            reason: e.to_string(),
        })?;
        pg.connect_timeout(config.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            // Names the connection after the host (at most 63 bytes), so an
            // operator can find it in `pg_stat_activity`.
            .application_name(
                &format!("callring-shipper {}", config.host_id)
                    .chars()
                    .take(63)
                    .collect::<String>(),
            );
        let shared = archiver.shared();
        let dir = archiver.dir().to_path_buf();
        let spool_id = spool_id(&dir).map_err(|e| {
            ShipError::Spool(IoFailure::new(
                IoOp::Write,
                dir.join(super::spool::SPOOL_ID_FILE),
                &e,
            ))
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
            pg,
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

/// Lag from the bookkeeping; `durable_records` is the archiver's count now.
fn refresh_lag(inner: &mut Inner, durable_records: u64) {
    let grown = durable_records.saturating_sub(inner.base_records);
    let lag = (inner.backlog + grown).saturating_sub(inner.shipped_since);
    inner.status.lag_records = lag;
    inner.status.lag = match (lag, inner.oldest_pending) {
        (0, _) | (_, None) => Duration::ZERO,
        (_, Some(at)) => {
            let nanos = Timestamp::now()
                .unix_nanos()
                .saturating_sub(at.unix_nanos());
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
        }
    };
}

/// The shipper's thread.
struct Worker {
    pg: postgres::Config,
    config: ShipperConfig,
    dir: PathBuf,
    spool_id: String,
    shared: Arc<Shared>,
    status: Arc<Status>,
    control: Receiver<Control>,
    conn: Option<Connection>,
    /// Shipped up to here: the progress row as last committed or read.
    position: SpoolPosition,
    /// The batch read and not yet committed.
    pending: Option<Box<Batch>>,
    drain: Option<(SpoolPosition, Instant)>,
}

/// Why the loop ends.
enum Exit {
    Done,
    Abort,
}

impl Worker {
    fn run(mut self) -> Result<(), ShipError> {
        let result = self.serve();
        self.status
            .update(|inner| inner.status.state = ShipState::Stopped);
        result
    }

    fn serve(&mut self) -> Result<(), ShipError> {
        let mut backoff = self.config.retry_initial;
        loop {
            match self.step() {
                Ok(Some(Exit::Done | Exit::Abort)) => return Ok(()),
                Ok(None) => backoff = self.config.retry_initial,
                Err(error) => {
                    let is_database = matches!(
                        error,
                        ShipError::Database { .. } | ShipError::HostBusy { .. }
                    );
                    if is_database {
                        // Reconnect: the next connect reads the progress row
                        // back, whatever the failed commit did.
                        self.conn = None;
                    }
                    self.status.update(|inner| {
                        let s = &mut inner.status;
                        s.state = ShipState::Retrying;
                        s.attempts += 1;
                        s.stats.errors += 1;
                        s.last_error = Some(error.clone());
                    });
                    let mut wait = backoff;
                    if let Some((_, deadline)) = self.drain {
                        let now = Instant::now();
                        if now >= deadline {
                            return Err(self.gave_up(Some(error)));
                        }
                        wait = wait.min(deadline - now);
                    }
                    if let Some(exit) = self.sleep(wait) {
                        return exit;
                    }
                    backoff = backoff.saturating_mul(2).min(self.config.retry_max);
                }
            }
        }
    }

    fn gave_up(&self, last_error: Option<ShipError>) -> ShipError {
        let end = self.shared.spool_end.get();
        let mut inner = self.status.lock();
        refresh_lag(&mut inner, end.records);
        ShipError::GaveUp {
            lag_records: inner.status.lag_records,
            last_error: last_error.map(Box::new),
        }
    }

    /// Waits `wait` or until told to stop; `Some` to exit.
    fn sleep(&mut self, wait: Duration) -> Option<Result<(), ShipError>> {
        match self.control.recv_timeout(wait) {
            Ok(Control::Abort) | Err(RecvTimeoutError::Disconnected) => Some(Ok(())),
            Ok(Control::Drain { until, deadline }) => {
                self.drain = Some((until, deadline));
                None
            }
            Err(RecvTimeoutError::Timeout) => None,
        }
    }

    /// One round: connect if needed, read a batch if none is pending, ship
    /// it. `Some` to exit.
    fn step(&mut self) -> Result<Option<Exit>, ShipError> {
        match self.control.try_recv() {
            Ok(Control::Abort) => return Ok(Some(Exit::Abort)),
            Ok(Control::Drain { until, deadline }) => self.drain = Some((until, deadline)),
            Err(_) => {}
        }
        let end = self.shared.spool_end.get();
        let limit = match self.drain {
            Some((until, _)) => until.min(end.position),
            None => end.position,
        };
        if self.pending.is_none() {
            match next_batch(
                &self.dir,
                self.position,
                limit,
                self.config.batch_records,
                self.config.batch_bytes,
            )? {
                Next::Batch(batch) => {
                    self.status.update(|inner| {
                        inner.oldest_pending = batch.oldest;
                        inner.status.durable_end = end.position;
                        inner.status.state = ShipState::Shipping;
                    });
                    self.pending = Some(batch);
                }
                Next::CaughtUp(at) => {
                    self.position = self.position.max(at);
                    self.status.update(|inner| {
                        inner.caught_up_to = Some(limit);
                        inner.oldest_pending = None;
                        inner.status.durable_end = end.position;
                        inner.status.state = ShipState::CaughtUp;
                        inner.status.attempts = 0;
                    });
                    if self.drain.is_some() {
                        return Ok(Some(Exit::Done));
                    }
                    return Ok(self.sleep(self.config.poll_interval).map(|_| Exit::Abort));
                }
            }
        }
        // Connect after reading: while the server is down, the batch read
        // tells how old the oldest unshipped record is. A connect that finds
        // the progress row elsewhere drops the batch.
        if self.conn.is_none() {
            self.connect()?;
        }
        let Some(batch) = self.pending.as_ref() else {
            return Ok(None);
        };
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let outcome = conn.ship(&self.config.host_id, &self.spool_id, batch)?;
        let (records, bytes, end) = (batch.records(), batch.bytes, batch.end);
        self.position = end;
        self.pending = None;
        self.status.update(|inner| {
            inner.shipped_since += records;
            let s = &mut inner.status;
            s.position = s.position.max(end);
            s.attempts = 0;
            s.stats.records += records;
            s.stats.bytes += bytes;
            s.stats.batches += 1;
            s.stats.events_inserted += outcome.events_inserted;
            s.stats.closed_inserted += outcome.closed_inserted;
            s.stats.already_present += outcome.already_present;
            s.stats.duplicates += outcome.duplicates;
        });
        Ok(None)
    }

    /// Connects, sets up the schema, takes the host's lock, reads the
    /// progress row back and recounts the backlog.
    fn connect(&mut self) -> Result<(), ShipError> {
        self.status
            .update(|inner| inner.status.state = ShipState::Connecting);
        let mut conn = Connection::open(&self.pg, &self.config.host_id)?;
        let progress = conn.progress(&self.config.host_id, &self.spool_id)?;
        let end = self.shared.spool_end.get();
        let backlog = count_lines(&self.dir, progress, end.position)?;
        if let Some(batch) = &self.pending {
            if progress >= batch.end {
                // The commit that failed did happen.
                self.pending = None;
            } else if progress != self.position {
                // Someone else moved the progress row: read again from it.
                self.pending = None;
            }
        }
        self.position = progress;
        self.conn = Some(conn);
        self.status.update(|inner| {
            inner.backlog = backlog;
            inner.base_records = end.records;
            inner.shipped_since = 0;
            let s = &mut inner.status;
            s.position = progress;
            s.durable_end = end.position;
            s.stats.connects += 1;
        });
        Ok(())
    }
}
