//! The archive's lifecycle after a segment is sealed: background
//! compression (crash-safe at every step) and retention.
#![cfg(not(loom))]

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use callring::archive::{
    prune_before, verify, ArchiveConfig, ArchiveFs, Archiver, ReadFile, SegmentFile, StdFs,
};
use callring::call::{AuditEventType, CallState, Details, Limits, Timestamp};

/// Writes `calls` calls of `events` events each (ended), in segments of
/// `segment_bytes`, with the calls' clock starting at `t0` and one second
/// per event.
fn write_archive(dir: &Path, config: ArchiveConfig, calls: usize, events: usize, t0: i64) {
    let archiver = Archiver::start(dir, config).expect("archive opens");
    for c in 0..calls {
        let id = format!("call-{c}-{t0}");
        let tick = Arc::new(AtomicU64::new(0));
        let call = CallState::builder(&id)
            .limits(Limits::new(100, 10).expect("valid"))
            .clock(move || {
                let n = tick.fetch_add(1, Ordering::Relaxed) as i64;
                Timestamp::from_unix_nanos(t0 + (c as i64 * 1000 + n) * 1_000_000_000)
            })
            .audit_archive(archiver.sink(&id))
            .build();
        for e in 0..events {
            let mut details = Details::new();
            details.insert(
                "step".into(),
                format!("step {e} of call {c}, ünïcödé").into(),
            );
            call.log_event(&AuditEventType::ToolInvoked, Some("tools"), &details)
                .expect("archived");
        }
        let _ = call.end();
    }
    archiver.stop().expect("clean stop");
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("listed")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every call complete, each record exactly once.
fn assert_whole(dir: &Path, calls: usize, events: usize, context: &str) {
    let report = verify(dir).unwrap_or_else(|e| panic!("{context}: {e}"));
    assert!(report.is_complete(), "{context}: {report}");
    assert_eq!(report.calls.len(), calls, "{context}");
    assert_eq!(
        report.records,
        (calls * (events + 1)) as u64,
        "{context}: every record exactly once"
    );
    for (id, call) in &report.calls {
        assert_eq!(call.events, events as u64, "{context}: {id}");
        assert!(call.duplicates.is_empty(), "{context}: {id}");
    }
}

#[test]
fn sealed_segments_are_compressed_and_read_back_alike() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = || ArchiveConfig::default().segment_bytes(64 << 10);
    write_archive(dir.path(), config(), 40, 50, 0);
    let plain_bytes: u64 = names(dir.path())
        .iter()
        .filter(|n| n.ends_with(".jsonl"))
        .map(|n| std::fs::metadata(dir.path().join(n)).expect("exists").len())
        .sum();
    assert_whole(dir.path(), 40, 50, "plain");

    // The next start seals every earlier segment; compress them.
    let archiver = Archiver::start(dir.path(), config().compress(true)).expect("opens");
    archiver.settle().expect("settled");
    let stats = archiver.stop().expect("clean stop");
    let files = names(dir.path());
    assert!(
        files
            .iter()
            .all(|n| !n.ends_with(".jsonl") && !n.ends_with(".tmp")),
        "{files:?}"
    );
    assert!(stats.compressed_segments >= 3, "{stats:?}");
    assert_eq!(stats.compressed_plain_bytes, plain_bytes);
    let ratio = stats.compressed_plain_bytes as f64 / stats.compressed_bytes as f64;
    assert!(ratio > 3.0, "ratio {ratio:.1}");
    assert_whole(dir.path(), 40, 50, "compressed");
}

/// The real file system, until the `kill_at`-th operation: that one fails
/// (a write leaves half its bytes), and so does every later one, as if the
/// process had died there.
#[derive(Clone)]
struct Dies {
    ops: Arc<AtomicU64>,
    kill_at: u64,
    dead: Arc<AtomicBool>,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Dies {
    fn new(kill_at: u64) -> Self {
        Self {
            ops: Arc::new(AtomicU64::new(0)),
            kill_at,
            dead: Arc::new(AtomicBool::new(false)),
            log: Arc::default(),
        }
    }

    /// Counts one operation; `Err` from the kill on.
    fn op(&self, what: &str, path: &Path) -> io::Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(io::Error::other("dead"));
        }
        let n = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
        self.log.lock().expect("log").push(format!(
            "{n} {what} {}",
            path.file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned())
        ));
        if n >= self.kill_at {
            self.dead.store(true, Ordering::SeqCst);
            return Err(io::Error::other("killed"));
        }
        Ok(())
    }

    fn died(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for Dies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dies(at {})", self.kill_at)
    }
}

#[derive(Debug)]
struct DyingFile {
    inner: Box<dyn SegmentFile>,
    fs: Dies,
    path: PathBuf,
}

impl SegmentFile for DyingFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Err(e) = self.fs.op("write", &self.path) {
            if !buf.is_empty() && e.to_string() == "killed" {
                let _ = self.inner.write_all(&buf[..buf.len() / 2]);
            }
            return Err(e);
        }
        self.inner.write_all(buf)
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.fs.op("truncate", &self.path)?;
        self.inner.truncate(len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.fs.op("sync", &self.path)?;
        self.inner.sync_data()
    }
}

impl ArchiveFs for Dies {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        StdFs.lock_dir(dir)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        self.op("list", dir)?;
        StdFs.list_dir(dir)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.op("read", path)?;
        StdFs.read(path)
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        self.op("open", path)?;
        Ok(Box::new(DyingFile {
            inner: StdFs.open_append(path)?,
            fs: self.clone(),
            path: path.to_path_buf(),
        }))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.op("sync_dir", dir)?;
        StdFs.sync_dir(dir)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        self.op("open_read", path)?;
        StdFs.open_read(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.op("rename", from)?;
        StdFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.op("remove", path)?;
        StdFs.remove_file(path)
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        self.op("len", path)?;
        StdFs.file_len(path)
    }
}

/// Compression killed at every step, one run per step: whatever the kill
/// left verifies with every record exactly once, and the next start
/// finishes the job.
#[test]
fn compression_killed_at_every_step_leaves_every_record_exactly_once() {
    let (calls, events) = (12, 30);
    let original = tempfile::tempdir().expect("temp dir");
    let config = || {
        ArchiveConfig::default()
            .segment_bytes(8 << 10)
            .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
            .stop_timeout(Duration::from_millis(50))
    };
    write_archive(original.path(), config(), calls, events, 0);
    assert_whole(original.path(), calls, events, "written");
    let sealed = names(original.path())
        .iter()
        .filter(|n| n.ends_with(".jsonl"))
        .count();
    assert!(sealed >= 3, "several segments to compress");

    let mut kill_at = 1;
    loop {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in names(original.path()) {
            if name.ends_with(".jsonl") {
                std::fs::copy(original.path().join(&name), dir.path().join(&name)).expect("copied");
            }
        }
        let fs = Dies::new(kill_at);
        match Archiver::start(dir.path(), config().compress(true).fs(fs.clone())) {
            Ok(archiver) => {
                // Err once the kill happened (the sealer keeps failing).
                let _ = archiver.settle();
                drop(archiver);
            }
            Err(_) => assert!(fs.died(), "start failed only at the kill"),
        }
        let context = format!(
            "killed at op {kill_at}: {:?}; files {:?}",
            fs.log.lock().expect("log").last(),
            names(dir.path())
        );
        assert_whole(dir.path(), calls, events, &context);

        // The next start cleans up and finishes.
        let archiver = Archiver::start(dir.path(), config().compress(true)).expect("restarts");
        archiver.settle().expect("settled");
        archiver.stop().expect("clean stop");
        let files = names(dir.path());
        assert!(
            files
                .iter()
                .all(|n| !n.ends_with(".tmp") && !n.ends_with(".jsonl") || n == "pruned.jsonl"),
            "{context}: after restart {files:?}"
        );
        assert_whole(dir.path(), calls, events, &format!("{context}, restarted"));
        if !fs.died() {
            break; // every step has been killed once
        }
        kill_at += 1;
    }
    eprintln!("killed at each of {kill_at} file operations ({sealed} sealed segments)");
    assert!(kill_at > 6 * sealed as u64, "killed at {kill_at} steps");
}

#[test]
fn pruning_removes_old_sealed_segments_and_records_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let day = 86_400 * 1_000_000_000i64;
    let config = || ArchiveConfig::default().segment_bytes(16 << 10);
    // Old calls (a year ago), then recent ones, in separate runs so they
    // are in separate segments.
    let now = Timestamp::now().unix_nanos();
    write_archive(dir.path(), config(), 10, 20, now - 365 * day);
    let old_segments = names(dir.path())
        .iter()
        .filter(|n| n.ends_with(".jsonl"))
        .count();
    write_archive(dir.path(), config(), 10, 20, now - day);

    let cutoff = Timestamp::from_unix_nanos(now - 30 * day);
    let report = prune_before(dir.path(), cutoff).expect("pruned");
    assert_eq!(report.segments.len(), old_segments, "{report}");
    assert_eq!(report.records, 10 * 21);
    let pruned_calls: usize = report.segments.iter().map(|s| s.calls.len()).sum();
    assert!(pruned_calls >= 10);
    for segment in &report.segments {
        assert!(segment.last_at.is_some_and(|t| t < cutoff));
        assert!(!dir.path().join(&segment.file).exists());
    }
    assert!(dir.path().join("pruned.jsonl").exists());
    // Verify reports what was pruned, and no call as incomplete: the old
    // calls' trails were removed whole, with their closed records.
    let verified = verify(dir.path()).expect("readable");
    assert!(verified.is_ok() && verified.is_complete(), "{verified}");
    assert_eq!(verified.pruned_segments.len(), old_segments);
    assert_eq!(verified.pruned_records, 10 * 21);
    assert!(verified.pruned_through.is_some_and(|t| t < cutoff));
    // Calls with no record left are not listed (the report would grow with
    // every call ever pruned); the pruned segments' counts are.
    assert_eq!(verified.calls.len(), 10);
    assert_eq!(verified.records, 10 * 21, "the recent calls only");
    assert!(
        verified.to_string().contains("pruned by retention"),
        "{verified}"
    );
    // A second prune finds nothing more.
    let again = prune_before(dir.path(), cutoff).expect("pruned");
    assert!(again.segments.is_empty(), "{again}");

    // A running archiver refuses an offline prune of its directory.
    let archiver = Archiver::start(dir.path(), config()).expect("opens");
    assert!(matches!(
        prune_before(dir.path(), cutoff),
        Err(callring::archive::ArchiveError::Locked { .. })
    ));
    // Its own prune by age removes the rest but the segment being written.
    let report = archiver
        .prune_before(Timestamp::from_unix_nanos(now + day))
        .expect("pruned");
    assert!(!report.segments.is_empty());
    archiver.stop().expect("clean stop");
}

#[test]
fn retention_by_size_keeps_the_archive_under_its_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ArchiveConfig::default()
        .segment_bytes(16 << 10)
        .max_bytes(64 << 10);
    let archiver = Archiver::start(dir.path(), config).expect("opens");
    let call = CallState::builder("long-call")
        .audit_archive(archiver.sink("long-call"))
        .build();
    for _ in 0..3000 {
        call.log_event(&AuditEventType::ToolInvoked, Some("tools"), &Details::new())
            .expect("archived");
    }
    archiver.flush().expect("durable");
    archiver.settle().expect("settled");
    let stats = archiver.stats();
    assert!(stats.pruned_segments > 0, "{stats:?}");
    let total: u64 = names(dir.path())
        .iter()
        .filter(|n| n.starts_with("audit-"))
        .map(|n| std::fs::metadata(dir.path().join(n)).expect("exists").len())
        .sum();
    assert!(total <= (64 << 10) + (16 << 10), "{total} bytes");
    let _ = call.end();
    archiver.stop().expect("clean stop");
    // The call's first events were pruned: listed as pruned, not as gaps.
    let report = verify(dir.path()).expect("readable");
    assert!(report.is_complete(), "{report}");
    let trail = &report.calls["long-call"];
    assert_eq!(trail.pruned.first().map(|r| r.first), Some(0), "{trail:?}");
    let pruned: u64 = trail.pruned.iter().map(|r| r.len()).sum();
    assert_eq!(trail.events + pruned, 3000, "{trail:?}");
    assert!(trail.gaps.is_empty());
    let reader = callring::archive::ArchiveReader::open(dir.path()).expect("opens");
    let back = reader.call("long-call").expect("readable");
    assert_eq!(back.pruned, trail.pruned);
    assert_eq!(back.events().count() as u64, trail.events);
}

/// An offline prune may remove every segment; the next archiver must not
/// reuse a pruned segment's number (readers would skip it as pruned).
#[test]
fn segments_written_after_everything_was_pruned_are_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = || ArchiveConfig::default().segment_bytes(16 << 10);
    write_archive(dir.path(), config(), 3, 20, 0);
    let report = prune_before(dir.path(), Timestamp::now()).expect("pruned");
    assert!(!report.segments.is_empty());
    assert!(names(dir.path()).iter().all(|n| !n.starts_with("audit-")));
    let now = Timestamp::now().unix_nanos();
    write_archive(dir.path(), config(), 2, 10, now);
    let verified = verify(dir.path()).expect("readable");
    assert!(verified.is_complete(), "{verified}");
    assert_eq!(
        verified.records,
        2 * 11,
        "the new calls are read: {verified}"
    );
    // And a later start does not remove them as pruned.
    let archiver = Archiver::start(dir.path(), config()).expect("restarts");
    archiver.stop().expect("clean stop");
    assert_eq!(verify(dir.path()).expect("readable").records, 2 * 11);
}

/// A crash between a segment's manifest line and its removal: readers skip
/// the segment (the manifest accounts for it), and the next prune removes
/// it without listing it twice.
#[test]
fn a_segment_left_behind_by_an_interrupted_prune_is_counted_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = || ArchiveConfig::default().segment_bytes(16 << 10);
    write_archive(dir.path(), config(), 4, 30, 0);
    let now = Timestamp::now().unix_nanos();
    write_archive(dir.path(), config(), 2, 10, now);
    let first = dir.path().join(callring::archive::segment_name(1));
    let saved = std::fs::read(&first).expect("segment 1");
    let report = prune_before(dir.path(), Timestamp::from_unix_nanos(now - 1)).expect("pruned");
    assert!(report.segments.iter().any(|s| s.segment == 1), "{report}");
    let manifest = dir.path().join("pruned.jsonl");
    let lines = std::fs::read_to_string(&manifest)
        .expect("manifest")
        .lines()
        .count();
    let before = verify(dir.path()).expect("readable");

    std::fs::write(&first, &saved).expect("left behind"); // the crash
    let after = verify(dir.path()).expect("readable");
    assert_eq!(after.records, before.records, "not read twice");
    assert_eq!(after.pruned_records, before.pruned_records);
    assert!(after.is_ok(), "{after}");
    let again = prune_before(dir.path(), Timestamp::from_unix_nanos(now - 1)).expect("pruned");
    assert!(again.segments.is_empty(), "{again}");
    assert!(!first.exists(), "removed by the next prune");
    let lines_after = std::fs::read_to_string(&manifest)
        .expect("manifest")
        .lines()
        .count();
    assert_eq!(lines_after, lines, "listed once");
}

/// Retention keeps a segment it cannot account for record by record.
#[test]
fn a_segment_with_a_line_that_is_not_a_record_is_not_pruned() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_archive(dir.path(), ArchiveConfig::default(), 2, 5, 0);
    let first = dir.path().join(callring::archive::segment_name(1));
    let mut bytes = std::fs::read(&first).expect("segment");
    bytes.extend_from_slice(b"{\"v\":99,\"from\":\"a newer callring\"}\n");
    std::fs::write(&first, &bytes).expect("written");
    let report = prune_before(dir.path(), Timestamp::now()).expect("ran");
    assert!(report.segments.is_empty(), "{report}");
    assert_eq!(report.skipped.len(), 1, "{report}");
    assert!(report.to_string().contains("line 13: "), "{report}");
    assert!(first.exists());
}

/// Offline compression of an archive whose last segment ends in a crash's
/// torn line: the torn line is cut first, and the archive verifies.
#[test]
fn offline_compression_cuts_a_torn_tail_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_archive(dir.path(), ArchiveConfig::default(), 3, 10, 0);
    let last = dir.path().join(callring::archive::segment_name(1));
    let mut bytes = std::fs::read(&last).expect("segment");
    bytes.extend_from_slice(b"{\"v\":3,\"call_id\":\"cut-off");
    std::fs::write(&last, &bytes).expect("written");
    assert!(verify(dir.path()).expect("readable").torn_tail.is_some());
    let report = callring::archive::compress_archive(dir.path(), 3).expect("compressed");
    assert_eq!(report.repaired_torn_bytes, 25, "{report:?}");
    let verified = verify(dir.path()).expect("readable");
    assert!(
        verified.is_complete() && verified.torn_tail.is_none(),
        "{verified}"
    );
    assert_eq!(verified.records, 3 * 11);
}
