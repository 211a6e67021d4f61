//! The shipper's settings and the host id's rules.

use std::time::Duration;

use super::ShipError;

/// Settings of a [`Shipper`](super::Shipper).
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
    pub(crate) host_id: String,
    pub(crate) batch_records: usize,
    pub(crate) batch_bytes: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) retry_initial: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) stop_timeout: Duration,
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

    /// How long [`Shipper::stop`](super::Shipper::stop) keeps trying to ship what is durable
    /// before it gives up (default 30 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ShipError> {
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
