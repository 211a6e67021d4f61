//! Where the durable prefix of a JSON Lines archive ends, in bytes: the
//! position a reader of the segments (the PostgreSQL shipper) may read up to
//! without ever seeing a record that a crash could still take back.
//!
//! The archiver's thread publishes it after every successful fsync and every
//! roll to a new segment; readers take one uncontended lock to look.

use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use std::{fs, io, io::Write, path::Path};

/// A byte position in an archive directory: segment `segment` (its index,
/// as in [`segment_name`](crate::archive::segment_name)), byte `offset` of it.
///
/// Positions order by segment, then offset. As the end of the durable
/// prefix ([`Archiver::durable_end`](crate::archive::Archiver::durable_end)) it means:
/// every segment below `segment` is durable whole, and segment `segment` is
/// durable up to `offset` (which is always at the end of a line).
///
/// # Examples
///
/// ```
/// use callring::archive::SpoolPosition;
///
/// let p = SpoolPosition::new(3, 4096);
/// assert!(SpoolPosition::new(2, 1 << 20) < p);
/// assert_eq!(p.to_string(), "segment 3, byte 4096");
/// ```
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct SpoolPosition {
    /// The segment's index.
    pub segment: u64,
    /// The byte offset in it.
    pub offset: u64,
}

impl SpoolPosition {
    /// Byte `offset` of segment `segment`.
    #[must_use]
    pub const fn new(segment: u64, offset: u64) -> Self {
        Self { segment, offset }
    }
}

impl fmt::Display for SpoolPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "segment {}, byte {}", self.segment, self.offset)
    }
}

/// The durable end as published: the position and how many records this
/// archiver run has made durable up to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DurableEnd {
    pub(crate) position: SpoolPosition,
    pub(crate) records: u64,
}

/// The published durable end (one small mutex: the archiver's thread takes
/// it once per fsync, readers once per look; never a ring writer).
#[derive(Debug, Default)]
pub(crate) struct SpoolEnd(Mutex<DurableEnd>);

impl SpoolEnd {
    fn lock(&self) -> MutexGuard<'_, DurableEnd> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the durable end forward (never back).
    pub(crate) fn publish(&self, position: SpoolPosition, records: u64) {
        let mut end = self.lock();
        if position >= end.position {
            *end = DurableEnd { position, records };
        }
    }

    pub(crate) fn get(&self) -> DurableEnd {
        *self.lock()
    }
}

/// The file naming a spool (an archive directory) for the shipper: its
/// progress row belongs to one spool, and a host whose spool was replaced
/// (a new disk, a new directory) must not resume inside the old one's
/// offsets.
pub(crate) const SPOOL_ID_FILE: &str = "spool.id";

/// The id of the spool in `dir`, created (and fsynced) on first use.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn spool_id(dir: &Path) -> io::Result<String> {
    let path = dir.join(SPOOL_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let id = format!("{nanos:x}-{:x}", std::process::id());
    let tmp = dir.join(format!("{SPOOL_ID_FILE}.{id}.tmp"));
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(id.as_bytes())?;
        file.sync_all()?;
    }
    // Rename, so a reader never sees a half-written id; a racing creator
    // may win, so read back what stuck.
    fs::rename(&tmp, &path)?;
    fs::File::open(dir)?.sync_all()?;
    Ok(fs::read_to_string(&path)?.trim().to_owned())
}
