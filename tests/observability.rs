//! The `tracing` events and `metrics` instruments (features `tracing` and
//! `metrics`): one process-wide subscriber and recorder, so one test.
#![cfg(all(not(loom), feature = "tracing", feature = "metrics", feature = "host"))]

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use callring::archive::{ArchiveConfig, Archiver, SegmentFile};
use callring::call::{AuditEventType, Details, Limits};
use callring::host::CallRegistry;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use tracing::{span, Event, Level, Metadata, Subscriber};

mod common;
use common::WrapFs;

/// Collects (level, message) of every event.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<(Level, String)>>>);

struct Message<'a>(&'a mut String);

impl tracing::field::Visit for Message<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Events {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = String::new();
        event.record(&mut Message(&mut message));
        let level = *event.metadata().level();
        self.0.lock().expect("lock").push((level, message));
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

/// A segment whose fsyncs report EIO while the shared count is above 0.
#[derive(Debug)]
struct FlakySegment(Box<dyn SegmentFile>, Arc<AtomicU64>);

impl SegmentFile for FlakySegment {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.truncate(len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        let left = self.1.load(Ordering::Relaxed);
        if left > 0 {
            self.1.store(left - 1, Ordering::Relaxed);
            return Err(io::Error::from_raw_os_error(5));
        }
        self.0.sync_data()
    }
}

#[test]
fn faults_recovery_repairs_and_instruments_are_reported() {
    let events = Events::default();
    tracing::subscriber::set_global_default(events.clone()).expect("first subscriber");
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("first recorder");

    // A crash left a torn line: repaired (info) at start.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("audit-000000000001.jsonl"),
        b"{\"v\":2,\"call_id\":\"old\",\"se",
    )
    .expect("write");
    let failing = Arc::new(AtomicU64::new(0));
    let fs = {
        let failing = Arc::clone(&failing);
        WrapFs::new(move |inner| Box::new(FlakySegment(inner, Arc::clone(&failing))))
    };
    let config = ArchiveConfig::default().fs(fs).retry_backoff(
        std::time::Duration::from_millis(1),
        std::time::Duration::from_millis(5),
    );
    let archiver = Archiver::start(dir.path(), config).expect("opens");
    // Two failed fsyncs from now on (two warns), then recovery (info).
    failing.store(2, Ordering::Relaxed);
    let registry = CallRegistry::builder()
        .limits(|_| Limits::new(2, 8))
        .archiver(archiver)
        .build();
    let call = registry.start("call-1", "default").expect("new call");
    for note in ["a", "b", "c"] {
        call.append_note(note).expect("live");
    }
    for _ in 0..2 {
        call.log_event(&AuditEventType::ToolInvoked, None, &Details::new())
            .expect("live");
    }
    let shutdown = registry.shutdown();
    assert!(shutdown.is_clean(), "{shutdown:?}");

    let seen = events.0.lock().expect("lock").clone();
    let count = |level: Level, text: &str| {
        seen.iter()
            .filter(|(l, m)| *l == level && m.contains(text))
            .count()
    };
    assert_eq!(count(Level::INFO, "torn tail"), 1, "{seen:?}");
    assert!(count(Level::WARN, "retrying") >= 2, "{seen:?}");
    assert!(count(Level::INFO, "recovered") >= 1, "{seen:?}");

    let mut values = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        values.insert((kind, key.name().to_owned(), labels.join(",")), value);
    }
    let counter = |name: &str, labels: &str| match values.get(&(
        MetricKind::Counter,
        name.into(),
        labels.into(),
    )) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name}{{{labels}}}: {other:?} in {values:?}"),
    };
    assert_eq!(counter("callring_appended_total", "ring=notes"), 3);
    assert_eq!(counter("callring_appended_total", "ring=audit"), 2);
    assert_eq!(counter("callring_evicted_total", "ring=notes"), 1);
    assert!(counter("callring_archive_faults_total", "") >= 2);
    match values.get(&(
        MetricKind::Gauge,
        "callring_live_calls".into(),
        String::new(),
    )) {
        Some(DebugValue::Gauge(v)) => assert_eq!(v.into_inner(), 0.0),
        other => panic!("live calls: {other:?}"),
    }
    match values.get(&(
        MetricKind::Histogram,
        "callring_archive_fsync_seconds".into(),
        String::new(),
    )) {
        Some(DebugValue::Histogram(samples)) => assert!(!samples.is_empty()),
        other => panic!("fsync latency: {other:?}"),
    }
    assert!(values.contains_key(&(
        MetricKind::Gauge,
        "callring_archive_queue_depth".into(),
        String::new()
    )));
}
