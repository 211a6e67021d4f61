//! Archiver settings: segment size, group-commit policy, channel size, retry
//! backoff, the file layer and the fault callback.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::error::{ArchiveError, FaultCallback, FaultEvent};
use super::writer::feed::FullQueue;
use crate::archive::spool::fs::{ArchiveFs, StdFs};

/// Settings of an [`Archiver`](super::Archiver) (and of the SQLite archiver,
/// which ignores `segment_bytes` and `fs`).
///
/// Group commit: the archiver writes records as they arrive (in batches of
/// whatever is queued) and makes them durable (`fsync`, or an SQLite commit)
/// once `fsync_every` records are waiting or the oldest has waited
/// `fsync_interval`, whichever comes first, and on every
/// [`flush`](super::Archiver::flush) and at stop. A smaller `fsync_every`
/// loses less in a crash but caps throughput near `fsync_every` records per
/// fsync latency (1024 records at 0.4 ms per fsync: about 2.5 million
/// records/s); the channel absorbs bursts and back-pressures beyond that.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use std::time::Duration;
/// use callring::archive::{ArchiveConfig, FaultEvent};
///
/// let config = ArchiveConfig::default()
///     .segment_bytes(16 << 20)
///     .fsync_every(256)
///     .fsync_interval(Duration::from_millis(10))
///     .on_fault(|event: &FaultEvent| eprintln!("archive: {event:?}"));
/// assert_eq!(config.settings().fsync_every, 256);
/// # }
/// ```
#[derive(Clone)]
#[must_use]
pub struct ArchiveConfig {
    pub(crate) segment_bytes: u64,
    pub(crate) fsync_every: u64,
    pub(crate) fsync_interval: Duration,
    pub(crate) channel_capacity: usize,
    pub(crate) full_queue: FullQueue,
    pub(crate) retry_initial: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) stop_timeout: Duration,
    pub(crate) fs: Arc<dyn ArchiveFs>,
    pub(crate) on_fault: Option<Arc<FaultCallback>>,
    pub(crate) compress: bool,
    pub(crate) compression_level: i32,
    pub(crate) max_age: Option<Duration>,
    pub(crate) max_bytes: Option<u64>,
}

/// An [`ArchiveConfig`]'s settings, read back with
/// [`ArchiveConfig::settings`] (the file layer and the fault callback aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveSettings {
    /// Segments roll at this size.
    pub segment_bytes: u64,
    /// fsync once this many records are waiting.
    pub fsync_every: u64,
    /// fsync once the oldest unsynced record has waited this long.
    pub fsync_interval: Duration,
    /// Records the queue to the archiver holds.
    pub channel_capacity: usize,
    /// What `log_event` does when the queue is full.
    pub full_queue: FullQueue,
    /// First backoff after a failed write or fsync.
    pub retry_initial: Duration,
    /// Longest backoff.
    pub retry_max: Duration,
    /// How long `stop` retries a failing disk.
    pub stop_timeout: Duration,
    /// Whether sealed segments are compressed in the background.
    pub compress: bool,
    /// The zstd level they are compressed at.
    pub compression_level: i32,
    /// Sealed segments whose newest record is older than this are pruned.
    pub max_age: Option<Duration>,
    /// The oldest sealed segments are pruned while the segments take more.
    pub max_bytes: Option<u64>,
}

impl fmt::Debug for ArchiveConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArchiveConfig")
            .field("segment_bytes", &self.segment_bytes)
            .field("fsync_every", &self.fsync_every)
            .field("fsync_interval", &self.fsync_interval)
            .field("channel_capacity", &self.channel_capacity)
            .field("full_queue", &self.full_queue)
            .field("retry_initial", &self.retry_initial)
            .field("retry_max", &self.retry_max)
            .field("stop_timeout", &self.stop_timeout)
            .field("fs", &self.fs)
            .field("on_fault", &self.on_fault.is_some())
            .field("compress", &self.compress)
            .field("compression_level", &self.compression_level)
            .field("max_age", &self.max_age)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Default group commit: fsync after this many records...
pub const DEFAULT_FSYNC_EVERY: u64 = 1024;
/// ... or when the oldest unsynced record is this old.
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_millis(20);
/// Default channel capacity, in events.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 4096;
/// Default zstd level for sealed segments (when compression is on).
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            fsync_every: DEFAULT_FSYNC_EVERY,
            fsync_interval: DEFAULT_FSYNC_INTERVAL,
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
            full_queue: FullQueue::Block,
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_secs(2),
            stop_timeout: Duration::from_secs(30),
            fs: Arc::new(StdFs),
            on_fault: None,
            compress: false,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            max_age: None,
            max_bytes: None,
        }
    }
}

impl ArchiveConfig {
    /// A segment is closed and the next one started when the next record
    /// would take it past this size (default [`DEFAULT_SEGMENT_BYTES`]). A
    /// record larger than the limit gets a segment of its own.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// fsync once this many records are waiting (default
    /// [`DEFAULT_FSYNC_EVERY`]; at least 1).
    pub fn fsync_every(mut self, records: u64) -> Self {
        self.fsync_every = records;
        self
    }

    /// fsync once the oldest unsynced record has waited this long (default
    /// [`DEFAULT_FSYNC_INTERVAL`]).
    pub fn fsync_interval(mut self, interval: Duration) -> Self {
        self.fsync_interval = interval;
        self
    }

    /// Records the queue between ring writers and the archiver holds before
    /// writers wait (default [`DEFAULT_CHANNEL_CAPACITY`]; at least 1).
    pub fn channel_capacity(mut self, events: usize) -> Self {
        self.channel_capacity = events;
        self
    }

    /// What `log_event` does when the queue is full (default
    /// [`FullQueue::Block`]: wait for room).
    pub fn full_queue(mut self, policy: FullQueue) -> Self {
        self.full_queue = policy;
        self
    }

    /// Backoff after a failed write or fsync: starts at `initial`, doubles
    /// per failed attempt, capped at `max` (defaults 10 ms and 2 s).
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_initial = initial;
        self.retry_max = max;
        self
    }

    /// How long [`stop`](super::Archiver::stop) keeps retrying a failing
    /// disk before it gives up and reports the events it could not make
    /// durable (default 30 s). While running, the archiver never gives up.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// The file layer (default [`StdFs`]); tests inject faults through it.
    pub fn fs(mut self, fs: impl ArchiveFs + 'static) -> Self {
        self.fs = Arc::new(fs);
        self
    }

    /// Called on the archiver's thread at every failed attempt and at
    /// recovery. Keep it short; it must not log audit events to a call whose
    /// sink is this archiver (the archiver would wait for itself).
    pub fn on_fault(mut self, callback: impl Fn(&FaultEvent) + Send + Sync + 'static) -> Self {
        self.on_fault = Some(Arc::new(callback));
        self
    }

    /// Compress every sealed segment in the background (default off): a
    /// segment is sealed when the archiver moves on to the next one, and at
    /// start every earlier segment is. The archiver's background sealer
    /// writes `audit-N.jsonl.zst` (independent zstd frames of whole lines
    /// and a frame table), fsyncs it, renames it into place, fsyncs the
    /// directory and only then removes `audit-N.jsonl`; a crash at any step
    /// leaves exactly one readable copy of every record, and the next start
    /// finishes or discards the half-done step. Every reader of the archive
    /// (`verify`, [`ArchiveReader`](crate::archive::ArchiveReader), the
    /// shipper) reads compressed and plain segments alike. The segment being
    /// written is never compressed; the writer never waits for the sealer.
    pub fn compress(mut self, on: bool) -> Self {
        self.compress = on;
        self
    }

    /// The zstd level of [`compress`](ArchiveConfig::compress) (default
    /// [`DEFAULT_COMPRESSION_LEVEL`]; 1 to 22, higher is smaller and
    /// slower).
    pub fn compression_level(mut self, level: i32) -> Self {
        self.compression_level = level;
        self
    }

    /// Retention by age (default none): sealed segments whose newest record
    /// is older than `age` are removed by the background sealer, each
    /// recorded first in the archive's pruning manifest so that `verify`
    /// reports what was pruned instead of gaps. Checked at start, after
    /// each sealed segment and once a minute. See
    /// [`Archiver::prune_before`](crate::archive::Archiver::prune_before).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Retention by size (default none): while the segments take more than
    /// `bytes` on disk, the oldest sealed segment is pruned as by
    /// [`max_age`](ArchiveConfig::max_age). The segment being written is
    /// never pruned, so the archive can exceed `bytes` by about one
    /// [`segment_bytes`](ArchiveConfig::segment_bytes).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// The settings, to read back (the methods of the same names set them).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::archive::{ArchiveConfig, FullQueue, DEFAULT_FSYNC_EVERY};
    ///
    /// let config = ArchiveConfig::default().channel_capacity(64);
    /// let settings = config.settings();
    /// assert_eq!(settings.channel_capacity, 64);
    /// assert_eq!(settings.fsync_every, DEFAULT_FSYNC_EVERY);
    /// assert_eq!(settings.full_queue, FullQueue::Block);
    /// # }
    /// ```
    #[must_use]
    pub fn settings(&self) -> ArchiveSettings {
        ArchiveSettings {
            segment_bytes: self.segment_bytes,
            fsync_every: self.fsync_every,
            fsync_interval: self.fsync_interval,
            channel_capacity: self.channel_capacity,
            full_queue: self.full_queue,
            retry_initial: self.retry_initial,
            retry_max: self.retry_max,
            stop_timeout: self.stop_timeout,
            compress: self.compress,
            compression_level: self.compression_level,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ArchiveError> {
        let invalid = |setting, reason: &str| {
            Err(ArchiveError::InvalidConfig {
                setting,
                reason: reason.to_owned(),
            })
        };
        if self.segment_bytes == 0 {
            return invalid("segment_bytes", "must be at least 1 byte");
        }
        if self.fsync_every == 0 {
            return invalid("fsync_every", "must be at least 1 record");
        }
        if self.channel_capacity == 0 {
            return invalid("channel_capacity", "must be at least 1 event");
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return invalid(
                "retry_backoff",
                &format!(
                    "initial ({:?}) must be non-zero and at most max ({:?})",
                    self.retry_initial, self.retry_max
                ),
            );
        }
        if !(1..=22).contains(&self.compression_level) {
            return invalid("compression_level", "must be 1 to 22 (zstd's levels)");
        }
        if self.max_age.is_some_and(|age| age.is_zero()) {
            return invalid("max_age", "must be more than zero");
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_settings_are_named() {
        let cases = [
            (ArchiveConfig::default().segment_bytes(0), "segment_bytes"),
            (ArchiveConfig::default().fsync_every(0), "fsync_every"),
            (
                ArchiveConfig::default().channel_capacity(0),
                "channel_capacity",
            ),
            (
                ArchiveConfig::default().retry_backoff(Duration::ZERO, Duration::ZERO),
                "retry_backoff",
            ),
            (
                ArchiveConfig::default()
                    .retry_backoff(Duration::from_secs(2), Duration::from_secs(1)),
                "retry_backoff",
            ),
            (
                ArchiveConfig::default().compression_level(0),
                "compression_level",
            ),
            (ArchiveConfig::default().max_age(Duration::ZERO), "max_age"),
        ];
        for (config, name) in cases {
            match config.validate() {
                Err(ArchiveError::InvalidConfig { setting, .. }) => assert_eq!(setting, name),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(ArchiveConfig::default().validate(), Ok(()));
    }
}
