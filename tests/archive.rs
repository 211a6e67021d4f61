//! The durable audit archive end to end: 8 agent threads on rings of 500
//! writing through to the archiver, then `verify`; end of call and its
//! closed record; eviction mode; the SQLite sink. (Crashes: `tests/crash.rs`.)
//!
//! The big test runs 8 x 100,000 events in a release build
//! (`cargo test --release --test archive`); a debug build or `CI` runs
//! 8 x 5,000.
#![cfg(all(not(loom), feature = "call"))]

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use callring::archive::{
    read_archive, verify, ArchiveConfig, ArchiveError, Archiver, CallStatus, Origin,
};
use callring::call::{AuditEventType, CallError, CallState, Details, EndOutcome, Limits};

fn shrunk() -> bool {
    cfg!(debug_assertions) || std::env::var_os("CI").is_some()
}

fn details(thread: u64, i: u64) -> Details {
    let mut d = Details::new();
    d.insert("thread".into(), thread.into());
    d.insert("i".into(), i.into());
    d
}

/// A call writing through to `archiver`.
fn call(id: &str, max_audit: usize, archiver: &Archiver) -> CallState {
    CallState::builder(id)
        .limits(Limits::new(100, max_audit).expect("valid limits"))
        .audit_archive(archiver.sink(id))
        .build()
}

/// A call handing events to `archiver` only as they leave its ring.
fn evicting_call(id: &str, max_audit: usize, archiver: &Archiver) -> CallState {
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
        assert_eq!(
            call.end(),
            EndOutcome::Ended {
                notes_drained: 0,
                audit_drained: 0,
                audit_refused: 0,
                closed_record: true,
            }
        );
        let m = call.metrics();
        assert_eq!((m.audit_written, m.audit_refused), (total / CALLS, 0));
        sink_waits += m.audit.sink_waits;
    }
    let stats = archiver.stop().expect("clean stop");
    let archived = started.elapsed();
    // Every event, plus one closed record per call.
    assert_eq!((stats.received, stats.logged), (total, total));
    assert_eq!((stats.synced, stats.closed_records), (total + CALLS, CALLS));
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
    assert_eq!((report.records, report.events), (total + CALLS, total));
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.complete, CALLS);
    assert!(report.torn_tail.is_none());
    assert_eq!(report.calls.len(), CALLS as usize);
    for (id, trail) in &report.calls {
        let per_call = total / CALLS;
        assert_eq!(
            (trail.events, trail.first_seq, trail.last_seq, trail.issued),
            (per_call, 0, per_call - 1, Some(per_call)),
            "{id}"
        );
        assert_eq!((trail.logged, trail.drained), (per_call, 0), "{id}");
    }
    assert!(calls.iter().all(|c| c.audit_events().len() == MAX_AUDIT));
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

/// Write-through: for an ended call the archive alone holds the trail, seqs
/// 0..n each once with reason `logged`, and the closed record says n, in any
/// thread interleaving; a call ended with fewer events than its ring holds
/// too. Nothing is handed over again at eviction or end.
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

    let mut reasons: BTreeMap<(String, u64), Origin> = BTreeMap::new();
    let report = read_archive(dir.path(), |r| {
        reasons.insert((r.call_id, r.seq), r.reason);
    })
    .expect("verifies");
    assert!(report.is_complete(), "{report}");
    let busy_trail = &report.calls["busy"];
    assert_eq!(
        (busy_trail.events, busy_trail.last_seq, busy_trail.issued),
        (120, 119, Some(120))
    );
    assert_eq!((busy_trail.logged, busy_trail.drained), (120, 0));
    let quiet_trail = &report.calls["quiet"];
    assert_eq!((quiet_trail.events, quiet_trail.issued), (3, Some(3)));
    assert!(reasons.values().all(|&r| r == Origin::Logged));
    assert_eq!(reasons.len(), 123);
    archiver.stop().expect("clean stop");
}

/// Eviction mode (any `Sink`, here the archive's): events reach the archive
/// as they leave the ring and at end, the newest `max_audit` drained, then
/// the closed record (the sink is an archive's); until `end` the trail is
/// only in memory, and a call without the closed record verifies open.
#[test]
fn eviction_mode_hands_over_at_eviction_and_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("starts");
    let c = evicting_call("evicting", 7, &archiver);
    for i in 0..20 {
        c.log_event(&AuditEventType::DataAccessed, None, &details(0, i))
            .expect("live call");
    }
    assert!(!c.writes_through());
    assert_eq!(
        c.end(),
        EndOutcome::Ended {
            notes_drained: 0,
            audit_drained: 7,
            audit_refused: 0,
            closed_record: true,
        }
    );
    let open = evicting_call("never-ended", 7, &archiver);
    open.log_event(&AuditEventType::CallStarted, None, &details(0, 0))
        .expect("live call");
    archiver.stop().expect("clean stop");
    let mut reasons = Vec::new();
    let report = read_archive(dir.path(), |r| {
        if r.call_id == "evicting" {
            reasons.push((r.seq, r.reason));
        }
    })
    .expect("verifies");
    reasons.sort_unstable_by_key(|&(seq, _)| seq);
    for (seq, reason) in reasons {
        let want = if seq >= 13 {
            Origin::Drained
        } else {
            Origin::Evicted
        };
        assert_eq!(reason, want, "seq {seq}");
    }
    let trail = &report.calls["evicting"];
    assert_eq!(
        (trail.status, trail.events, trail.drained),
        (CallStatus::Complete, 20, 7)
    );
    // Still live when the archive stopped: its one event never left the
    // ring, so the archive has nothing of it.
    assert!(!report.calls.contains_key("never-ended"));
    assert!(report.is_ok() && report.is_complete(), "{report}");
}

/// With the archiver stopped before the call ends (the wrong shutdown
/// order), `log_event` says the archive refused the event, the call keeps
/// it (metrics, `take_refused_audit`), `end` does not count it as drained
/// and reports the closed record unwritten; `verify` does not call the
/// trail complete. Before write-through, `log_event` returned `Ok`, `end`
/// counted the refused events as drained and `verify` said complete.
#[test]
fn events_refused_by_a_stopped_archive_are_reported_and_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("starts");
    let late = call("late", 2, &archiver);
    late.log_event(&AuditEventType::CallStarted, None, &details(0, 0))
        .expect("archived");
    let stats = archiver.stop().expect("clean stop");
    assert_eq!(stats.received, 1);
    for i in 1..6 {
        let err = late
            .log_event(&AuditEventType::Escalated, None, &details(0, i))
            .unwrap_err();
        assert_eq!(
            err,
            CallError::NotArchived {
                call_id: "late".into(),
                seq: i
            }
        );
    }
    let m = late.metrics();
    assert_eq!(
        (m.audit_written, m.audit_refused, m.audit_seqs_issued),
        (1, 5, 6)
    );
    assert_eq!(
        late.end(),
        EndOutcome::Ended {
            notes_drained: 0,
            audit_drained: 0,
            audit_refused: 5,
            closed_record: false,
        }
    );
    let refused: Vec<u64> = late.take_refused_audit().iter().map(|e| e.seq).collect();
    assert_eq!(refused, [1, 2, 3, 4, 5]);
    assert!(
        late.take_refused_audit().is_empty(),
        "each is returned once"
    );
    let report = verify(dir.path()).expect("verifies");
    let trail = &report.calls["late"];
    assert_eq!((trail.status, trail.events), (CallStatus::Open, 1));
    assert!(!report.is_complete(), "{report}");
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
    assert_eq!((stats.synced, stats.fsyncs), (10, 1));
    let d = archiver.durability();
    assert_eq!((d.handed_over, d.durable), (10, 10));
    assert_eq!(verify(dir.path()).expect("verifies").calls["c"].events, 10);
    assert!(matches!(
        Archiver::start(dir.path(), ArchiveConfig::default()),
        Err(ArchiveError::Locked { .. })
    ));
    drop(archiver); // stops too
    assert_eq!(verify(dir.path()).expect("verifies").calls["c"].events, 10);
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
        assert_eq!((report.records, report.events), (201, 200));
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
                .audit_archive(archiver.sink(&id))
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
    let again = AuditEvent::new(
        0,
        Timestamp::from_unix_nanos(0),
        AuditEventType::CallStarted,
        None,
        Details::new(),
    );
    archiver
        .sink("call-0")
        .accept(Evicted::new(0, callring::Reason::Evicted, again))
        .expect("accepted");
    let stats = archiver.stop().expect("clean stop");
    let total = THREADS * per_thread;
    // Every event, the two closed records, and the resent one.
    assert_eq!(
        (stats.synced, stats.duplicates, stats.errors),
        (total + 3, 1, 0)
    );

    let db = rusqlite::Connection::open(&path).expect("opens");
    let mut per_call = db
        .prepare(
            "SELECT call_id, count(*), count(DISTINCT seq), min(seq), max(seq), \
             sum(reason = 'logged'), min(type) FROM audit_events GROUP BY call_id ORDER BY call_id",
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
                n,
                r#"{"other":"probe"}"#.to_owned()
            )
        );
    }
    assert_eq!(rows.len(), 2);
    let closed: Vec<(String, i64)> = db
        .prepare("SELECT call_id, issued FROM audit_calls ORDER BY call_id")
        .expect("prepares")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("queries")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(closed, [("call-0".to_owned(), n), ("call-1".to_owned(), n)]);

    // The SQL verifier agrees: both trails whole (the resent seq 0 was
    // refused by the key, so it is not there to find).
    let report = callring::archive::verify_sqlite(&path).expect("verifies");
    assert!(report.is_complete(), "{report}");
    assert_eq!((report.complete, report.events), (2, total));
    assert!(matches!(
        callring::archive::verify_sqlite(dir.path().join("missing.sqlite")),
        Err(callring::archive::VerifyError::NotFound { .. })
    ));
}

/// A database made before write-through (its `reason` check refuses
/// `logged`) is migrated at start, keeping its rows.
#[cfg(feature = "sqlite")]
#[test]
fn sqlite_tables_from_before_write_through_are_migrated() {
    use callring::archive::SqliteArchiver;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("old.sqlite");
    {
        let db = rusqlite::Connection::open(&path).expect("opens");
        db.execute_batch(
            "CREATE TABLE audit_events (
                call_id TEXT NOT NULL, seq INTEGER NOT NULL, at TEXT NOT NULL,
                type TEXT NOT NULL, agent_id TEXT, details TEXT NOT NULL,
                reason TEXT NOT NULL CHECK (reason IN ('evicted', 'drained')),
                PRIMARY KEY (call_id, seq)) WITHOUT ROWID;
             INSERT INTO audit_events VALUES
                ('old', 0, '2025-11-25T09:30:00Z', 'call_started', NULL, '{}', 'drained');",
        )
        .expect("old schema");
    }
    let archiver = SqliteArchiver::start(&path, ArchiveConfig::default()).expect("migrates");
    let call = CallState::builder("new")
        .audit_archive(archiver.sink("new"))
        .build();
    call.log_event(&AuditEventType::CallStarted, None, &Details::new())
        .expect("archived");
    let _ = call.end();
    let stats = archiver.stop().expect("clean stop");
    assert_eq!((stats.synced, stats.errors), (2, 0));
    let db = rusqlite::Connection::open(&path).expect("opens");
    let reasons: Vec<(String, String)> = db
        .prepare("SELECT call_id, reason FROM audit_events ORDER BY call_id")
        .expect("prepares")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("queries")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        reasons,
        [
            ("new".to_owned(), "logged".to_owned()),
            ("old".to_owned(), "drained".to_owned())
        ]
    );
}

/// A registry whose eviction sink is an archive's: `end` writes the closed
/// record after the drained events, so the call verifies complete.
#[test]
fn a_registry_with_an_archive_as_eviction_sink_closes_its_calls() {
    use callring::host::CallRegistry;
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Arc::new(Archiver::start(dir.path(), ArchiveConfig::default()).expect("starts"));
    let registry = {
        let archiver = Arc::clone(&archiver);
        CallRegistry::builder()
            .limits(|_| Limits::new(10, 3))
            .audit_sink(move |id| archiver.sink(id))
            .build()
    };
    let call = registry.start("r", "default").expect("new call");
    for i in 0..8 {
        call.log_event(&AuditEventType::ToolInvoked, None, &details(0, i))
            .expect("live call");
    }
    drop(call);
    let ended = registry.end("r").expect("live");
    assert!(matches!(
        ended.outcome,
        EndOutcome::Ended {
            audit_drained: 3,
            closed_record: true,
            ..
        }
    ));
    drop(registry);
    Arc::try_unwrap(archiver)
        .expect("no other handle")
        .stop()
        .expect("clean stop");
    let report = verify(dir.path()).expect("verifies");
    assert_eq!(report.calls["r"].status, CallStatus::Complete);
}

/// Durations too long to add to an instant mean "no deadline", never a
/// panic on the archiver's thread (which would leave receipts waiting).
#[test]
fn huge_durations_mean_no_deadline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ArchiveConfig::default()
        .fsync_interval(Duration::MAX)
        .fsync_every(1)
        .stop_timeout(Duration::MAX);
    let archiver = Archiver::start(dir.path(), config).expect("starts");
    let c = call("c", 4, &archiver);
    let (_, receipt) = c
        .log_event_receipt(&AuditEventType::ConsentGiven, None, &details(0, 0))
        .expect("archived");
    receipt.wait_timeout(Duration::MAX).expect("durable");
    archiver.flush_timeout(Duration::MAX).expect("flushed");
    assert_eq!(archiver.status(), callring::archive::ArchiveStatus::Running);
    let _ = c.end();
    archiver.stop().expect("clean stop");
}

/// The shipper into SQLite: a spool logged by several threads arrives once
/// each, a restarted shipper resumes from its progress row, and a resend
/// from the start of the spool inserts nothing.
#[cfg(feature = "sqlite")]
#[test]
fn a_spool_shipped_into_sqlite_arrives_once_and_resumes_from_its_progress_row() {
    use callring::archive::{verify_sqlite, Archiver, Shipper, ShipperConfig};

    const THREADS: u64 = 4;
    const CALLS: u64 = 8;
    let per_thread: u64 = if shrunk() { 1_000 } else { 10_000 };
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = dir.path().join("spool");
    let db = dir.path().join("audit.sqlite");
    let config = || ShipperConfig::new("host-1").batch_records(500);

    let archiver = Archiver::start(&spool, ArchiveConfig::default()).expect("starts");
    let shipper = Shipper::start_sqlite(&archiver, &db, config()).expect("ships");
    let calls: Vec<CallState> = (0..CALLS)
        .map(|c| {
            let id = format!("call-{c}");
            CallState::builder(&id)
                .limits(Limits::new(100, 50).expect("valid"))
                .audit_archive(archiver.sink(&id))
                .build()
        })
        .collect();
    thread::scope(|s| {
        for t in 0..THREADS {
            let calls = &calls;
            s.spawn(move || {
                for i in 0..per_thread {
                    let call = &calls[((t + i) % CALLS) as usize];
                    call.log_event(&AuditEventType::ToolInvoked, None, &details(t, i))
                        .expect("live call");
                }
            });
        }
    });
    for call in &calls {
        let _ = call.end();
    }
    archiver.stop().expect("durable locally");
    let stats = shipper.stop().expect("everything shipped");
    let total = THREADS * per_thread;
    assert_eq!(
        (stats.records, stats.events_inserted, stats.closed_inserted),
        (total + CALLS, total, CALLS)
    );
    assert_eq!((stats.already_present, stats.duplicates), (0, 0));
    let report = verify_sqlite(&db).expect("verifies");
    assert!(report.is_complete(), "{report}");
    assert_eq!((report.complete, report.events), (CALLS, total));

    // A new run on the same spool: the shipper resumes after everything.
    let archiver = Archiver::start(&spool, ArchiveConfig::default()).expect("restarts");
    let shipper = Shipper::start_sqlite(&archiver, &db, config()).expect("ships");
    archiver.stop().expect("stops");
    let again = shipper.stop().expect("stops");
    assert_eq!((again.records, again.events_inserted), (0, 0));

    // Without its progress row it resends the whole spool: the keys absorb it.
    rusqlite::Connection::open(&db)
        .expect("opens")
        .execute("DELETE FROM audit_progress", [])
        .expect("deleted");
    let archiver = Archiver::start(&spool, ArchiveConfig::default()).expect("restarts");
    let shipper = Shipper::start_sqlite(&archiver, &db, config()).expect("ships");
    archiver.stop().expect("stops");
    let resent = shipper.stop().expect("stops");
    assert_eq!(
        (
            resent.records,
            resent.events_inserted,
            resent.closed_inserted
        ),
        (total + CALLS, 0, 0)
    );
    assert_eq!(resent.already_present, total + CALLS);
    assert!(verify_sqlite(&db).expect("verifies").is_complete());
}
