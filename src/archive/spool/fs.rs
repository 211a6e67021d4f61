//! The file layer under the archiver, as a small trait so tests can inject
//! faults (a full disk, a read-only directory) and clear them again.

use std::any::Any;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;

/// The name of the lock file in an archive directory.
pub const LOCK_FILE: &str = "archive.lock";

/// The file operations the archiver needs. [`StdFs`] is the real one.
///
/// Every method may fail with any [`io::Error`]; the archiver reports it
/// (status, callback, counters) and retries, so an implementation that
/// returns `ENOSPC` for a while and then succeeds exercises the whole fault
/// path.
///
/// # Examples
///
/// A file layer whose segments refuse writes while a switch is on:
///
/// ```
/// # #[cfg(not(loom))] {
/// use std::io;
/// use std::path::Path;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
/// use callring::archive::{ArchiveFs, SegmentFile, StdFs};
///
/// #[derive(Debug, Clone, Default)]
/// struct DiskFull(Arc<AtomicBool>);
///
/// #[derive(Debug)]
/// struct Segment(Box<dyn SegmentFile>, Arc<AtomicBool>);
///
/// impl SegmentFile for Segment {
///     fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
///         if self.1.load(Ordering::Relaxed) {
///             return Err(io::Error::from_raw_os_error(28)); // ENOSPC
///         }
///         self.0.write_all(buf)
///     }
///     fn truncate(&mut self, len: u64) -> io::Result<()> { self.0.truncate(len) }
///     fn sync_data(&mut self) -> io::Result<()> { self.0.sync_data() }
/// }
///
/// impl ArchiveFs for DiskFull {
///     fn create_dir_all(&self, dir: &Path) -> io::Result<()> { StdFs.create_dir_all(dir) }
///     fn list_dir(&self, dir: &Path) -> io::Result<Vec<std::ffi::OsString>> { StdFs.list_dir(dir) }
///     fn read(&self, path: &Path) -> io::Result<Vec<u8>> { StdFs.read(path) }
///     fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
///         Ok(Box::new(Segment(StdFs.open_append(path)?, Arc::clone(&self.0))))
///     }
///     fn sync_dir(&self, dir: &Path) -> io::Result<()> { StdFs.sync_dir(dir) }
/// }
///
/// let fs = DiskFull::default();
/// let config = callring::archive::ArchiveConfig::default().fs(fs.clone());
/// # let _ = config;
/// # }
/// ```
pub trait ArchiveFs: Send + Sync + fmt::Debug {
    /// Creates `dir` and any missing parents.
    ///
    /// # Errors
    ///
    /// Whatever the file system reports.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Locks `dir` against a second archiver until the returned guard is
    /// dropped. Fails with [`io::ErrorKind::WouldBlock`] if it is held.
    /// The default takes no lock.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when another archiver holds the lock; anything else the
    /// file system reports.
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        let _ = dir;
        Ok(Box::new(()))
    }

    /// The names of the entries in `dir`.
    ///
    /// # Errors
    ///
    /// Whatever the file system reports.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>>;

    /// The whole content of `path`.
    ///
    /// # Errors
    ///
    /// Whatever the file system reports.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Opens `path` for appending, creating it if missing.
    ///
    /// # Errors
    ///
    /// Whatever the file system reports.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;

    /// Makes the names in `dir` durable (`fsync` on the directory), so a
    /// new segment is still listed after a power loss.
    ///
    /// # Errors
    ///
    /// Whatever the file system reports.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Opens `path` for reading from its start (a sealed segment being
    /// indexed or compressed). The default opens it with `std::fs`.
    ///
    /// # Errors
    ///
    /// Whatever the file system reports.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        Ok(Box::new(File::open(path)?))
    }

    /// Renames `from` to `to`, replacing `to` (the last step of writing a
    /// file atomically). The default is `std::fs::rename`.
    ///
    /// # Errors
    ///
    /// Whatever the file system reports.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    /// Removes the file `path` (a segment replaced by its compressed copy,
    /// or pruned). The default is `std::fs::remove_file`.
    ///
    /// # Errors
    ///
    /// Whatever the file system reports.
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    /// The length of the file `path` in bytes. The default reads its
    /// metadata with `std::fs`.
    ///
    /// # Errors
    ///
    /// Whatever the file system reports.
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }
}

/// A file opened by [`ArchiveFs::open_read`]: readable and seekable.
pub trait ReadFile: Read + Seek + Send + fmt::Debug {}

impl<T: Read + Seek + Send + fmt::Debug> ReadFile for T {}

/// Writes `bytes` to `dir/name` atomically: to a temporary file first
/// (`name.<process>-<n>.tmp`, unique to this writer, so a sealer and an
/// offline `index_archive` writing the same index never share one),
/// fsynced, then renamed over `name`, and the directory fsynced. A crash at
/// any step leaves either the old `name` (or none) or the new one whole, and
/// at most a stray `.tmp` file that readers ignore and the next start
/// removes.
pub(crate) fn write_atomically(
    fs: &dyn ArchiveFs,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // Relaxed: only uniqueness is needed, which every RMW gives.
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{name}.{}-{n}{TMP_SUFFIX}", std::process::id()));
    let mut file = fs.open_append(&tmp)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_data())
        .and_then(|()| {
            drop(file);
            fs.rename(&tmp, &dir.join(name))
        });
    if let Err(e) = written {
        let _ = remove_if_present(fs, &tmp);
        return Err(e);
    }
    fs.sync_dir(dir)
}

/// The suffix of a file being written atomically; a crash can leave one
/// behind, and every reader ignores it.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Removes `path`; a file already gone is not an error.
pub(crate) fn remove_if_present(fs: &dyn ArchiveFs, path: &Path) -> io::Result<()> {
    match fs.remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// A segment opened for appending.
pub trait SegmentFile: Send + fmt::Debug {
    /// Appends all of `buf`. On error, any prefix of it may have been
    /// written: the archiver truncates back to the last good length before
    /// it retries.
    ///
    /// # Errors
    ///
    /// Whatever the file system reports.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;

    /// Cuts the file to `len` bytes; later appends continue from there.
    ///
    /// # Errors
    ///
    /// Whatever the file system reports.
    fn truncate(&mut self, len: u64) -> io::Result<()>;

    /// Makes everything written so far durable (`fdatasync`).
    ///
    /// # Errors
    ///
    /// Whatever the file system reports.
    fn sync_data(&mut self) -> io::Result<()>;
}

/// The real file system, through `std::fs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

/// A held lock on an archive directory: the open lock file.
#[derive(Debug)]
struct DirLock(#[allow(dead_code)] File);

impl ArchiveFs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn Any + Send + Sync>> {
        Ok(Box::new(DirLock(lock_dir(dir)?)))
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Box::new(StdSegment(file)))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// Takes the archive directory's lock (an exclusive advisory lock on
/// [`LOCK_FILE`]); `WouldBlock` if another holder has it.
///
/// A lock just released can still be held for a moment by a child process
/// that another thread of the releasing process was spawning: the lock file's
/// descriptor is in the child between its fork and its exec (where
/// close-on-exec drops it). So a `WouldBlock` is retried for up to
/// [`LOCK_PATIENCE`] before it is reported.
pub(crate) fn lock_dir(dir: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(fs::TryLockError::WouldBlock) => return Err(io::ErrorKind::WouldBlock.into()),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// How long [`lock_dir`] retries a held lock.
pub(crate) const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(250);

/// A segment file opened with `O_APPEND`.
#[derive(Debug)]
struct StdSegment(File);

impl SegmentFile for StdSegment {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        // With O_APPEND, the next write lands at the new end.
        self.0.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}
