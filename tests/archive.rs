//! The durable audit archive end to end: 8 agent threads on rings of 500 with
//! the archiver attached, then `verify`; end of call; a crash (SIGKILL of a
//! child process) in the middle of archiving; the SQLite sink.
//!
//! The big test runs 8 x 100,000 events in a release build
//! (`cargo test --release --test archive`); a debug build or `CI` runs
//! 8 x 5,000.
#![cfg(not(loom))]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use callring::archive::{
    read_archive, verify, verify_with, ArchiveConfig, ArchiveError, Archiver, VerifyOptions,
};
use callring::call::{AuditEventType, CallState, Details, EndOutcome, Limits};
use callring::Reason;

fn shrunk() -> bool {
    cfg!(debug_assertions) || std::env::var_os("CI").is_some()
}

fn details(thread: u64, i: u64) -> Details {
    let mut d = Details::new();
    d.insert("thread".into(), thread.into());
    d.insert("i".into(), i.into());
    d
}

fn call(id: &str, max_audit: usize, archiver: &Archiver) -> CallState {
    CallState::builder(id)
        .limits(Limits::new(100, max_audit).expect("valid limits"))
        .audit_sink(archiver.sink(id))
        .build()
}

/// 8 threads x 100,000 events (5,000 shrunk) on 4 calls of 500 retained
/// events, two agent threads per call; every call ended; the archive alone
/// holds every event exactly once, with the right call, agent and details.
#[test]
fn eight_threads_archive_every_event_exactly_once() {
    const THREADS: u64 = 8;
    const CALLS: u64 = 4;
    const MAX_AUDIT: usize = 500;
    let per_thread: u64 = if shrunk() { 5_000 } else { 100_000 };
    let total = THREADS * per_thread;

    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("starts");
    let calls: Vec<CallState> = (0..CALLS)
        .map(|c| call(&format!("call-{c}"), MAX_AUDIT, &archiver))
        .collect();

    let started = Instant::now();
    thread::scope(|s| {
        for t in 0..THREADS {
            let call = &calls[(t % CALLS) as usize];
            s.spawn(move || {
                let agent = format!("agent-{t}");
                for i in 0..per_thread {
                    call.log_event(&AuditEventType::ToolInvoked, Some(&agent), &details(t, i))
                        .expect("live call");
                }
            });
        }
    });
    let logged = started.elapsed();
    let mut sink_waits = 0;
    for call in &calls {
        let retained = call.metrics().audit.retained;
        assert_eq!(
            call.end(),
            EndOutcome::Ended {
                notes_drained: 0,
                audit_drained: retained
            }
        );
        let m = call.metrics().audit;
        assert_eq!(m.refused, 0);
        sink_waits += m.sink_waits;
    }
    let stats = archiver.stop().expect("clean stop");
    let archived = started.elapsed();
    assert_eq!((stats.received, stats.synced), (total, total));
    assert_eq!((stats.errors, stats.lost, stats.refused), (0, 0, 0));

    let mut seen = vec![false; total as usize];
    let mut wrong = 0u64;
    let checked = Instant::now();
    let report = read_archive(dir.path(), |record| {
        let field = |k: &str| record.details.get(k).and_then(|v| v.as_u64());
        let (Some(t), Some(i)) = (field("thread"), field("i")) else {
            wrong += 1;
            return;
        };
        let expected_call = format!("call-{}", t % CALLS);
        let slot = &mut seen[(t * per_thread + i) as usize];
        if *slot
            || record.call_id != expected_call
            || record.agent_id.as_deref() != Some(&format!("agent-{t}"))
        {
            wrong += 1;
        }
        *slot = true;
    })
    .expect("the archive verifies");
    let verify_time = checked.elapsed();

    assert_eq!(
        wrong, 0,
        "records duplicated or attributed to the wrong call"
    );
    assert!(seen.iter().all(|&s| s), "some events are missing");
    assert_eq!(report.records, total);
    assert!(report.is_complete(), "{report}");
    assert!(report.torn_tail.is_none());
    assert_eq!(report.calls.len(), CALLS as usize);
    for (id, trail) in &report.calls {
        let per_call = total / CALLS;
        assert_eq!(
            (trail.events, trail.first_seq, trail.last_seq),
            (per_call, 0, per_call - 1),
            "{id}"
        );
        assert_eq!(trail.drained, MAX_AUDIT as u64, "{id}");
    }
    println!(
        "archive: {total} events by {THREADS} threads logged in {logged:.2?}, archived and \
         fsynced by {archived:.2?} ({:.0} events/s end to end; {} fsyncs, {} segments, \
         {} MB, {sink_waits} writer waits); verified in {verify_time:.2?}",
        total as f64 / archived.as_secs_f64(),
        stats.fsyncs,
        stats.segments,
        stats.bytes >> 20,
    );
}

/// For an ended call the archive alone holds the trail: seqs 0..n, each
/// once, the last `max_audit` with reason `drained`, in any thread
/// interleaving; and a call ended with fewer events than its ring holds has
/// all of them drained.
#[test]
fn an_ended_call_is_complete_in_the_archive_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("starts");
    let busy = call("busy", 7, &archiver);
    let quiet = call("quiet", 7, &archiver);
    thread::scope(|s| {
        for t in 0..3 {
            let busy = &busy;
            s.spawn(move || {
                for i in 0..40 {
                    busy.log_event(&AuditEventType::DataAccessed, None, &details(t, i))
                        .expect("live call");
                }
            });
        }
    });
    for i in 0..3 {
        quiet
            .log_event(
                &AuditEventType::ConsentGiven,
                Some("speech"),
                &details(0, i),
            )
            .expect("live call");
    }
    let _ = busy.end();
    let _ = quiet.end();
    archiver.flush().expect("flushed");

    let mut reasons: BTreeMap<(String, u64), Reason> = BTreeMap::new();
    let report = read_archive(dir.path(), |r| {
        reasons.insert((r.call_id, r.seq), r.reason);
    })
    .expect("verifies");
    assert!(report.is_complete(), "{report}");
    let busy_trail = &report.calls["busy"];
    assert_eq!((busy_trail.events, busy_trail.last_seq), (120, 119));
    assert_eq!(busy_trail.drained, 7);
    let quiet_trail = &report.calls["quiet"];
    assert_eq!((quiet_trail.events, quiet_trail.drained), (3, 3));
    // The drained ones are the newest seqs of each call.
    for seq in 0..120 {
        let want = if seq >= 113 {
            Reason::Drained
        } else {
            Reason::Evicted
        };
        assert_eq!(reasons[&("busy".to_owned(), seq)], want, "seq {seq}");
    }
    archiver.stop().expect("clean stop");
}

/// After stop, hand-offs are refused and the ring keeps the event: nothing
/// is dropped silently.
#[test]
fn hand_offs_after_stop_are_refused_not_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("starts");
    let late = call("late", 2, &archiver);
    let stats = archiver.stop().expect("clean stop");
    assert_eq!(stats.received, 0);
    for i in 0..5 {
        late.log_event(&AuditEventType::Escalated, None, &details(0, i))
            .expect("live call");
    }
    let m = late.metrics().audit;
    assert_eq!((m.evicted, m.refused), (3, 3));
}

/// Flush makes everything handed over durable and visible to `verify`,
/// while the archiver keeps running.
#[test]
fn flush_makes_handed_over_events_durable_now() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ArchiveConfig::default()
        .fsync_every(1_000_000)
        .fsync_interval(Duration::from_secs(3600));
    let archiver = Archiver::start(dir.path(), config).expect("starts");
    let c = call("c", 1, &archiver);
    for i in 0..10 {
        c.log_event(&AuditEventType::ToolInvoked, None, &details(0, i))
            .expect("live call");
    }
    archiver.flush().expect("flushed");
    let stats = archiver.stats();
    assert_eq!((stats.synced, stats.fsyncs), (9, 1));
    assert_eq!(verify(dir.path()).expect("verifies").calls["c"].events, 9);
    assert!(matches!(
        Archiver::start(dir.path(), ArchiveConfig::default()),
        Err(ArchiveError::Locked { .. })
    ));
    drop(archiver); // stops too
    assert_eq!(verify(dir.path()).expect("verifies").calls["c"].events, 9);
}

/// Segments roll before the next record would pass the size limit, are
/// numbered 1, 2, 3, ... and hold whole records; a record larger than the
/// limit gets a segment of its own. One big batch (no fsync until stop)
/// spans many segments.
#[test]
fn segments_roll_at_the_size_limit() {
    for limit in [1_000u64, 1] {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = ArchiveConfig::default()
            .segment_bytes(limit)
            .fsync_every(1_000_000)
            .fsync_interval(Duration::from_secs(3600));
        let archiver = Archiver::start(dir.path(), config).expect("starts");
        let c = call("c", 1, &archiver);
        for i in 0..200 {
            c.log_event(&AuditEventType::ToolInvoked, None, &details(0, i))
                .expect("live call");
        }
        let _ = c.end();
        let stats = archiver.stop().expect("clean stop");
        let report = verify(dir.path()).expect("verifies");
        assert!(report.is_complete(), "{report}");
        assert_eq!(report.records, 200);
        assert_eq!(report.segments.len() as u64, stats.segments);
        let longest = 200; // a record here is well under 200 bytes
        for (i, segment) in report.segments.iter().enumerate() {
            let name = segment.file.file_name().expect("named");
            assert_eq!(
                name.to_str(),
                Some(&*callring::archive::segment_name(i as u64 + 1))
            );
            if limit == 1 {
                assert_eq!(segment.records, 1);
            } else {
                assert!(segment.bytes <= limit, "{segment:?}");
                let last = i + 1 == report.segments.len();
                assert!(last || segment.bytes > limit - longest, "{segment:?}");
            }
        }
    }
}

/// Hosts share one archiver between threads (an `Arc<Archiver>` handing out
/// sinks as calls start).
#[test]
fn handles_are_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Archiver>();
    shared::<callring::archive::ArchiveSink>();
    #[cfg(feature = "sqlite")]
    shared::<callring::archive::SqliteArchiver>();
}

/// Environment variables of the crash test's child.
const CRASH_DIR: &str = "CALLRING_ARCHIVE_CRASH_DIR";
const CRASH_CALLS: u64 = 3;
const CRASH_RING: u64 = 20;

/// The crash test's child (ignored unless run by the parent): archives
/// continuously from one writer thread per call, fsync every 16 records or
/// 2 ms, small segments; after each flush prints `durable <call> <n>`: seqs
/// `0..n` of that call are fsynced.
#[test]
#[ignore = "run by crash_keeps_everything_fsynced_and_reports_the_torn_tail"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR) else {
        return;
    };
    let config = ArchiveConfig::default()
        .fsync_every(16)
        .fsync_interval(Duration::from_millis(2))
        .segment_bytes(64 << 10)
        .channel_capacity(64);
    let archiver = Archiver::start(&dir, config).expect("starts");
    let handed: Vec<AtomicU64> = (0..CRASH_CALLS).map(|_| AtomicU64::new(0)).collect();
    let calls: Vec<CallState> = (0..CRASH_CALLS)
        .map(|c| call(&format!("call-{c}"), CRASH_RING as usize, &archiver))
        .collect();
    thread::scope(|s| {
        for (c, call) in calls.iter().enumerate() {
            let handed = &handed[c];
            s.spawn(move || {
                for i in 0.. {
                    let seq = call
                        .log_event(&AuditEventType::ToolInvoked, Some("agent"), &details(0, i))
                        .expect("live call");
                    // One writer per call: pushing seq n handed seqs up to
                    // n - RING to the sink before `log_event` returned.
                    // Release: pairs with the Acquire load below.
                    handed.store((seq + 1).saturating_sub(CRASH_RING), Ordering::Release);
                }
            });
        }
        loop {
            // Acquire: the hand-offs counted happened before this flush.
            let snapshot: Vec<u64> = handed.iter().map(|h| h.load(Ordering::Acquire)).collect();
            archiver.flush().expect("flushed");
            for (c, n) in snapshot.iter().enumerate() {
                println!("durable call-{c} {n}");
            }
            thread::sleep(Duration::from_millis(5));
        }
    });
}

/// SIGKILL in the middle of archiving: afterwards `verify` parses the
/// archive (reporting a torn tail if the kill cut a write), finds no gap and
/// no duplicate in any call, and every call has at least the events its last
/// flush made durable. Truncating the torn tail, and a new archiver's start
/// on the crashed directory, both leave a clean archive.
#[test]
fn crash_keeps_everything_fsynced_and_reports_the_torn_tail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["crash_child", "--exact", "--ignored", "--nocapture"])
        .env(CRASH_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().expect("piped");
    let (lines_tx, lines) = crossbeam_channel::unbounded();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut durable: BTreeMap<String, u64> = BTreeMap::new();
    let record = |durable: &mut BTreeMap<String, u64>, line: String| {
        let mut parts = line.split_whitespace();
        if let (Some("durable"), Some(call), Some(n)) = (parts.next(), parts.next(), parts.next()) {
            // A line cut by the kill may carry a shorter number: that only
            // claims less.
            if let Ok(n) = n.parse::<u64>() {
                durable.insert(call.to_owned(), n);
            }
        }
    };
    // Let it run until every call has a few hundred durable events.
    let deadline = Instant::now() + Duration::from_secs(60);
    while durable.len() < CRASH_CALLS as usize || durable.values().any(|&n| n < 300) {
        assert!(
            Instant::now() < deadline,
            "child made no progress: {durable:?}"
        );
        match lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => record(&mut durable, line),
            Err(e) => panic!("child stopped talking: {e}; {durable:?}"),
        }
    }
    thread::sleep(Duration::from_millis(50));
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("reaped");
    assert!(!status.success(), "the child was killed, not finished");
    reader.join().expect("reader");
    // Lines printed before the kill: each says what was fsynced already.
    for line in lines.try_iter() {
        record(&mut durable, line);
    }

    let report = verify(dir.path()).expect("a crashed archive still parses");
    println!(
        "crash: durable per call {durable:?}; torn tail {:?}",
        report.torn_tail
    );
    assert!(report.segments.len() > 1, "segments rolled during the run");
    for (call, &n) in &durable {
        let trail = &report.calls[call];
        assert!(trail.is_complete(), "{call}: {trail}");
        assert!(
            trail.last_seq + 1 >= n,
            "{call}: fsynced through {n} but the archive ends at {}",
            trail.last_seq
        );
    }

    let repaired = verify_with(dir.path(), &VerifyOptions::new().truncate_torn(true))
        .expect("truncation succeeds");
    assert_eq!(
        repaired.torn_tail.as_ref().map(|t| t.truncated),
        report.torn_tail.as_ref().map(|_| true)
    );
    let clean = verify(dir.path()).expect("verifies");
    assert!(clean.torn_tail.is_none() && clean.is_complete());
    assert_eq!(clean.records, report.records);

    // A new run on the crashed directory appends after it.
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("restarts");
    let next = call("call-after", 2, &archiver);
    for i in 0..5 {
        next.log_event(&AuditEventType::CallStarted, None, &details(1, i))
            .expect("live call");
    }
    let _ = next.end();
    archiver.stop().expect("clean stop");
    let after = verify(dir.path()).expect("verifies");
    assert!(after.is_complete(), "{after}");
    assert_eq!(after.records, report.records + 5);
}

/// The SQLite sink: the same trail in a table keyed by (call_id, seq);
/// duplicates are detected and counted, not inserted.
#[cfg(feature = "sqlite")]
#[test]
fn sqlite_archive_holds_every_event_once() {
    use callring::archive::SqliteArchiver;
    use callring::call::{AuditEvent, Timestamp};
    use callring::{Evicted, Sink};

    const THREADS: u64 = 4;
    let per_thread: u64 = if shrunk() { 2_000 } else { 25_000 };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("audit.sqlite");
    let archiver = SqliteArchiver::start(&path, ArchiveConfig::default()).expect("starts");
    let calls: Vec<CallState> = (0..2)
        .map(|c| {
            let id = format!("call-{c}");
            CallState::builder(&id)
                .limits(Limits::new(100, 50).expect("valid"))
                .audit_sink(archiver.sink(&id))
                .build()
        })
        .collect();
    thread::scope(|s| {
        for t in 0..THREADS {
            let call = &calls[(t % 2) as usize];
            s.spawn(move || {
                for i in 0..per_thread {
                    call.log_event(&AuditEventType::Other("probe".into()), None, &details(t, i))
                        .expect("live call");
                }
            });
        }
    });
    for call in &calls {
        let _ = call.end();
    }
    // The same (call, seq) again: detected, not inserted.
    let again = AuditEvent {
        seq: 0,
        at: Timestamp::from_unix_nanos(0),
        kind: AuditEventType::CallStarted,
        agent_id: None,
        details: Details::new(),
    };
    archiver
        .sink("call-0")
        .accept(Evicted::new(0, Reason::Evicted, again))
        .expect("accepted");
    let stats = archiver.stop().expect("clean stop");
    let total = THREADS * per_thread;
    assert_eq!(
        (stats.synced, stats.duplicates, stats.errors),
        (total + 1, 1, 0)
    );

    let db = rusqlite::Connection::open(&path).expect("opens");
    let mut per_call = db
        .prepare(
            "SELECT call_id, count(*), count(DISTINCT seq), min(seq), max(seq), \
             sum(reason = 'drained'), min(type) FROM audit_events GROUP BY call_id ORDER BY call_id",
        )
        .expect("prepares");
    let rows: Vec<(String, i64, i64, i64, i64, i64, String)> = per_call
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .expect("queries")
        .collect::<Result<_, _>>()
        .expect("rows");
    let n = i64::try_from(total / 2).expect("small");
    for (c, row) in rows.iter().enumerate() {
        assert_eq!(
            row,
            &(
                format!("call-{c}"),
                n,
                n,
                0,
                n - 1,
                50,
                r#"{"other":"probe"}"#.to_owned()
            )
        );
    }
    assert_eq!(rows.len(), 2);
}
