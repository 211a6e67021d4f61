//! What the shipper tells: its state, position, lag, last error and
//! counters, shared between the handle and the thread.

use std::fmt;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::ShipError;
use crate::archive::SpoolPosition;
use crate::call::Timestamp;

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
    /// Spool records in committed batches (events and closed records;
    /// archived notes are read past, not shipped).
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
pub(super) struct Status {
    pub(super) inner: Mutex<Inner>,
    pub(super) changed: Condvar,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) status: ShipperStatus,
    /// Everything before this is in the database: the end of the last
    /// committed batch, or the durable end a read found nothing more up to.
    pub(super) caught_up_to: Option<SpoolPosition>,
    /// Lag bookkeeping, reset at each connect: the backlog counted then, the
    /// archiver's durable record count then, records committed since.
    pub(super) backlog: u64,
    pub(super) base_records: u64,
    pub(super) shipped_since: u64,
    pub(super) oldest_pending: Option<Timestamp>,
}

impl Status {
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Inner)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }
}

/// Lag from the bookkeeping; `durable_records` is the archiver's count now.
pub(super) fn refresh_lag(inner: &mut Inner, durable_records: u64) {
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
