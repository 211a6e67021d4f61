//! The shipper's thread: read a batch from the spool, connect if needed,
//! ship it in one transaction; on failure reconnect with backoff, reading
//! the position back from the progress row.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::batch::{count_lines, next_batch, Next};
use super::status::{refresh_lag, Status};
use super::{ShipError, ShipState, ShipperConfig};
use crate::archive::ship::{Batch, Store};
use crate::archive::writer::feed::Shared;
use crate::archive::SpoolPosition;

/// What the handle tells the thread.
#[derive(Debug)]
pub(super) enum Control {
    /// Ship everything durable up to the given end, then exit (or give up at
    /// the deadline).
    Drain {
        until: SpoolPosition,
        deadline: Instant,
    },
    /// Exit now; the progress row says where the next shipper starts.
    Abort,
}

/// Opens the store (on the shipper's thread; again after a failure).
pub(super) type Open<S> = Box<dyn FnMut() -> Result<S, ShipError> + Send>;

/// The shipper's thread, writing to store `S`.
pub(super) struct Worker<S> {
    pub(super) open: Open<S>,
    pub(super) config: ShipperConfig,
    pub(super) dir: PathBuf,
    pub(super) spool_id: String,
    pub(super) shared: Arc<Shared>,
    pub(super) status: Arc<Status>,
    pub(super) control: Receiver<Control>,
    pub(super) conn: Option<S>,
    /// Shipped up to here: the progress row as last committed or read.
    pub(super) position: SpoolPosition,
    /// The batch read and not yet committed.
    pub(super) pending: Option<Box<Batch>>,
    pub(super) drain: Option<(SpoolPosition, Instant)>,
}

/// Why the loop ends.
enum Exit {
    Done,
    Abort,
}

impl<S> Worker<S>
where
    S: Store,
    ShipError: From<S::Error>,
{
    pub(super) fn run(mut self) -> Result<(), ShipError> {
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
                        inner.caught_up_to = inner.caught_up_to.max(Some(limit));
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
        let outcome = conn
            .write(batch, Some(&self.spool_id))
            .map_err(ShipError::from)?;
        let (records, bytes, end) = (batch.records(), batch.bytes, batch.end);
        let skipped = batch.skipped;
        self.position = end;
        self.pending = None;
        self.status.update(|inner| {
            // Lines, as the backlog is counted (skipped notes included).
            inner.shipped_since += records + skipped;
            // Everything before the batch's end is in the database now.
            inner.caught_up_to = inner.caught_up_to.max(Some(end));
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
        let mut conn = (self.open)()?;
        let progress = conn.progress(&self.spool_id).map_err(ShipError::from)?;
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
