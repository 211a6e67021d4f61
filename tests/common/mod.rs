//! Shared by the archive tests that inject faults through the file layer.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use callring::archive::{ArchiveFs, SegmentFile, StdFs};

type Wrap = dyn Fn(Box<dyn SegmentFile>) -> Box<dyn SegmentFile> + Send + Sync;

/// The standard file layer, except that every segment it opens is wrapped
/// by `wrap` (which decides how writes and fsyncs misbehave).
#[derive(Clone)]
pub struct WrapFs(Arc<Wrap>);

impl WrapFs {
    pub fn new(
        wrap: impl Fn(Box<dyn SegmentFile>) -> Box<dyn SegmentFile> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(wrap))
    }
}

impl fmt::Debug for WrapFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WrapFs")
    }
}

impl ArchiveFs for WrapFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        StdFs.list_dir(dir)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        StdFs.read(path)
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        Ok((self.0)(StdFs.open_append(path)?))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFs.sync_dir(dir)
    }
}

/// Writes wait while the gate is closed. (Not every test binary that
/// includes this module uses it.)
#[allow(dead_code)]
#[derive(Debug, Clone, Default)]
pub struct Stall(Arc<(Mutex<bool>, Condvar)>);

#[allow(dead_code)]
impl Stall {
    pub fn close(&self) {
        *self.0 .0.lock().expect("lock") = true;
    }
    pub fn open(&self) {
        *self.0 .0.lock().expect("lock") = false;
        self.0 .1.notify_all();
    }
    /// The standard file layer with every segment's writes waiting here.
    pub fn fs(&self) -> WrapFs {
        let stall = self.clone();
        WrapFs::new(move |inner| {
            Box::new(StalledSegment {
                inner,
                stall: stall.clone(),
            })
        })
    }
    pub fn pass(&self) {
        let mut closed = self.0 .0.lock().expect("lock");
        while *closed {
            closed = self.0 .1.wait(closed).expect("lock");
        }
    }
}

/// A segment whose writes wait at the [`Stall`].
#[allow(dead_code)]
#[derive(Debug)]
pub struct StalledSegment {
    pub inner: Box<dyn SegmentFile>,
    pub stall: Stall,
}

impl SegmentFile for StalledSegment {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.stall.pass();
        self.inner.write_all(buf)
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.inner.sync_data()
    }
}
