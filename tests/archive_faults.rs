//! Archive faults through an injectable file layer: a full disk (with
//! partial writes), failing fsyncs, a directory that refuses new segments,
//! and a fault that outlasts stop. Writers are back-pressured, the error is
//! reported (status, last error, callback, counters), and once the fault
//! clears everything is archived exactly once.
#![cfg(all(not(loom), feature = "call"))]

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use callring::archive::{
    verify, ArchiveConfig, ArchiveError, ArchiveFs, ArchiveStatus, Archiver, FaultEvent, IoOp,
    SegmentFile, StdFs,
};
use callring::call::{AuditEventType, CallState, Details, Limits};

/// Which faults are on. Shared by the file layer and the test.
#[derive(Debug, Default)]
struct Faults {
    /// Every write writes half its buffer, then fails with ENOSPC; every
    /// fsync fails with ENOSPC.
    disk_full: AtomicBool,
    /// The next n fsyncs fail with EIO.
    failing_syncs: AtomicU64,
    /// The next n segment opens fail with EACCES.
    failing_opens: AtomicU64,
    /// Faults injected so far.
    injected: AtomicU64,
}

impl Faults {
    /// Takes one from a countdown, if it is above 0.
    fn take(counter: &AtomicU64) -> bool {
        counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    fn inject(&self, error: io::Error) -> io::Error {
        self.injected.fetch_add(1, Ordering::Relaxed);
        error
    }
}

/// Clears the full-disk fault when dropped (also when a test panics).
struct FreeOnDrop<'a>(&'a Faults);

impl Drop for FreeOnDrop<'_> {
    fn drop(&mut self) {
        self.0.disk_full.store(false, Ordering::Relaxed);
    }
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

#[derive(Debug, Clone, Default)]
struct FaultyFs(Arc<Faults>);

/// A segment that fails on demand. It tracks its length and its last
/// fsynced length so that a failed fsync can lose what a real one may: the
/// dirty pages written since the last successful fsync.
#[derive(Debug)]
struct FaultySegment {
    inner: Box<dyn SegmentFile>,
    faults: Arc<Faults>,
    len: u64,
    synced: u64,
}

impl SegmentFile for FaultySegment {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.faults.disk_full.load(Ordering::Relaxed) {
            // The nasty case: part of the batch reaches the file.
            let half = &buf[..buf.len() / 2];
            self.inner.write_all(half)?;
            self.len += half.len() as u64;
            return Err(self.faults.inject(enospc()));
        }
        self.inner.write_all(buf)?;
        self.len += buf.len() as u64;
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)?;
        self.len = len;
        self.synced = self.synced.min(len);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if self.faults.disk_full.load(Ordering::Relaxed) {
            return Err(self.faults.inject(enospc()));
        }
        if Faults::take(&self.faults.failing_syncs) {
            // EIO, and the unsynced pages are gone (the kernel dropped them;
            // the file reads short).
            self.inner.truncate(self.synced)?;
            self.len = self.synced;
            return Err(self.faults.inject(io::Error::from_raw_os_error(5)));
        }
        self.inner.sync_data()?;
        self.synced = self.len;
        Ok(())
    }
}

impl ArchiveFs for FaultyFs {
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
        if Faults::take(&self.0.failing_opens) {
            return Err(self
                .0
                .inject(io::Error::from(io::ErrorKind::PermissionDenied)));
        }
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        Ok(Box::new(FaultySegment {
            inner: StdFs.open_append(path)?,
            faults: Arc::clone(&self.0),
            len,
            synced: len,
        }))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFs.sync_dir(dir)
    }
}

/// Capacity of the archiver's channel in these tests.
const CHANNEL: usize = 32;

/// What the fault callback saw.
type Seen = Arc<Mutex<Vec<FaultEvent>>>;

fn config(fs: &FaultyFs, seen: &Seen) -> ArchiveConfig {
    let seen = Arc::clone(seen);
    ArchiveConfig::default()
        .fs(fs.clone())
        .channel_capacity(CHANNEL)
        .fsync_every(16)
        .segment_bytes(8 << 10)
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(20))
        .on_fault(move |event| seen.lock().expect("not poisoned").push(event.clone()))
}

fn details(t: u64, i: u64) -> Details {
    let mut d = Details::new();
    d.insert("t".into(), t.into());
    d.insert("i".into(), i.into());
    d
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// A full disk from the start: writers stall on the full channel (ring
/// `sink_waits`), the archiver reports the error and retries; a flush times
/// out; after the disk frees up, every event is archived exactly once
/// although every failed write left half a batch in the file.
#[test]
fn disk_full_back_pressures_then_archives_everything_once() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 400;
    const CALLS: u64 = 2;
    const RING: usize = 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let fs = FaultyFs::default();
    let seen = Seen::default();
    fs.0.disk_full.store(true, Ordering::Relaxed);
    let archiver = Archiver::start(dir.path(), config(&fs, &seen)).expect("starts");
    let calls: Vec<CallState> = (0..CALLS)
        .map(|c| {
            let id = format!("call-{c}");
            CallState::builder(&id)
                .limits(Limits::new(10, RING).expect("valid"))
                .audit_archive(archiver.sink(&id))
                .build()
        })
        .collect();
    let logged = AtomicU64::new(0);

    thread::scope(|s| {
        // If an assertion below fails, free the disk so the writers finish
        // and the failure is reported instead of hanging.
        let _freed = FreeOnDrop(&fs.0);
        for t in 0..THREADS {
            let (call, logged) = (&calls[(t % CALLS) as usize], &logged);
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    call.log_event(&AuditEventType::DataAccessed, Some("db"), &details(t, i))
                        .expect("live call");
                    logged.fetch_add(1, Ordering::Relaxed);
                }
            });
        }

        // The archiver retries, the channel fills, the writers wait.
        wait_for("retrying status", || {
            matches!(archiver.status(), ArchiveStatus::Retrying { .. })
        });
        // The archiver takes nothing more while it retries, so the writers
        // stop exactly when the channel is full: every event logged is taken
        // or in the channel, and each writer waits inside `log_event` with
        // one more. Had a sink dropped events instead of waiting, they would
        // go further. Wait for exactly that, not a neighbouring condition: a
        // writer counts its wait just before it blocks, after the channel
        // filled (an earlier version asserted `sink_waits` right after the
        // count condition, which can hold first, and failed 1 run in 12).
        wait_for("every writer blocked on the archive", || {
            let stats = archiver.stats();
            logged.load(Ordering::Relaxed) == stats.received + CHANNEL as u64
                && stats.sink_waits >= THREADS
        });
        let (stats, before) = (archiver.stats(), logged.load(Ordering::Relaxed));
        assert!(before < THREADS * PER_THREAD, "writers must be held back");
        assert!(matches!(
            archiver.flush_timeout(Duration::from_millis(50)),
            Err(ArchiveError::Timeout { .. })
        ));
        let (stats_after, after) = (archiver.stats(), logged.load(Ordering::Relaxed));
        assert_eq!(stats_after.synced, 0, "nothing is durable on a full disk");
        assert_eq!(
            stats_after.received, stats.received,
            "the archiver takes no more"
        );
        assert_eq!(after, before, "writers are blocked, not dropping events");
        match archiver.status() {
            ArchiveStatus::Retrying { error, attempts } => {
                assert_eq!(error.os_error, Some(28));
                assert!(error.is_storage_full(), "{error}");
                assert!(matches!(error.op, IoOp::Write | IoOp::Sync), "{error}");
                assert!(attempts >= 1);
            }
            other => panic!("expected Retrying, got {other:?}"),
        }

        fs.0.disk_full.store(false, Ordering::Relaxed);
    });
    for call in &calls {
        let _ = call.end();
    }
    archiver.flush().expect("flushed");
    assert_eq!(archiver.status(), ArchiveStatus::Running);
    assert_eq!(archiver.last_error().map(|e| e.os_error), Some(Some(28)));
    let stats = archiver.stop().expect("clean stop once the disk has room");

    let injected = fs.0.injected.load(Ordering::Relaxed);
    assert!(injected > 0);
    assert_eq!(stats.errors, injected, "every injected fault is counted");
    assert!(stats.retries >= stats.errors, "{stats:?}");
    assert!(stats.sink_waits > 0, "{stats:?}");
    assert_eq!((stats.lost, stats.refused), (0, 0));
    let seen = seen.lock().expect("not poisoned");
    let failed = seen
        .iter()
        .filter(|e| matches!(e, FaultEvent::Failed { error, .. } if error.os_error == Some(28)))
        .count() as u64;
    assert_eq!(failed, injected);
    assert!(seen
        .iter()
        .any(|e| matches!(e, FaultEvent::Recovered { attempts } if *attempts >= 1)));

    let report = verify(dir.path()).expect("no torn or half-written lines remain");
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.events, THREADS * PER_THREAD);
    // Events and one closed record per call.
    assert_eq!(stats.synced, THREADS * PER_THREAD + CALLS);
    assert!(report.torn_tail.is_none());
}

/// Runs `n` events through an archiver on `fs`, one call of 5.
fn archive_events(
    dir: &Path,
    fs: &FaultyFs,
    seen: &Seen,
    n: u64,
) -> callring::archive::ArchiveStats {
    let archiver = Archiver::start(dir, config(fs, seen)).expect("starts");
    let call = CallState::builder("c")
        .limits(Limits::new(10, 5).expect("valid"))
        .audit_archive(archiver.sink("c"))
        .build();
    for i in 0..n {
        call.log_event(&AuditEventType::ToolInvoked, None, &details(0, i))
            .expect("live call");
    }
    let _ = call.end();
    archiver.stop().expect("clean stop")
}

/// Failed fsyncs that drop dirty pages: the archiver cuts back to the last
/// durable length and rewrites, so nothing is lost and nothing doubled.
#[test]
fn failed_fsyncs_are_retried_without_duplicates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fs = FaultyFs::default();
    let seen = Seen::default();
    fs.0.failing_syncs.store(3, Ordering::Relaxed);
    let stats = archive_events(dir.path(), &fs, &seen, 300);
    assert_eq!((stats.errors, stats.retries), (3, 3));
    let report = verify(dir.path()).expect("verifies");
    assert!(report.is_complete(), "{report}");
    assert_eq!((report.events, report.records), (300, 301));
    let seen = seen.lock().expect("not poisoned");
    assert!(seen.iter().any(|e| matches!(
        e,
        FaultEvent::Failed { error, .. } if error.op == IoOp::Sync && error.os_error == Some(5)
    )));
}

/// A directory that refuses new segments for a while (permission denied):
/// the segment is created on a later attempt; small segments roll often.
#[test]
fn refused_segment_creation_is_retried() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fs = FaultyFs::default();
    let seen = Seen::default();
    fs.0.failing_opens.store(4, Ordering::Relaxed);
    let stats = archive_events(dir.path(), &fs, &seen, 500);
    assert_eq!(stats.errors, 4);
    assert!(stats.segments > 2, "{stats:?}");
    let report = verify(dir.path()).expect("verifies");
    assert!(report.is_complete(), "{report}");
    assert_eq!((report.events, report.records), (500, 501));
    assert_eq!(report.segments.len() as u64, stats.segments);
    let seen = seen.lock().expect("not poisoned");
    assert!(seen.iter().any(|e| matches!(
        e,
        FaultEvent::Failed { error, .. }
            if error.op == IoOp::Open && error.kind == io::ErrorKind::PermissionDenied
    )));
}

/// A fault that outlasts `stop_timeout`: stop gives up and says how many
/// events are not known to be durable, rather than hang or pretend.
#[test]
fn stop_gives_up_after_its_timeout_and_counts_what_is_lost() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fs = FaultyFs::default();
    let seen = Seen::default();
    fs.0.disk_full.store(true, Ordering::Relaxed);
    let config = config(&fs, &seen)
        .channel_capacity(1000)
        .stop_timeout(Duration::from_millis(100));
    let archiver = Archiver::start(dir.path(), config).expect("starts");
    let call = CallState::builder("c")
        .limits(Limits::new(10, 1).expect("valid"))
        .audit_archive(archiver.sink("c"))
        .build();
    for i in 0..50 {
        call.log_event(&AuditEventType::ToolInvoked, None, &details(0, i))
            .expect("live call");
    }
    let _ = call.end();
    let started = Instant::now();
    match archiver.stop() {
        Err(ArchiveError::GaveUp { error, lost, stats }) => {
            // 50 events and the closed record.
            assert_eq!(lost, 51);
            assert_eq!((stats.lost, stats.synced), (51, 0));
            assert!(error.is_storage_full());
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(call.metrics().audit_refused, 0);
}
