//! `CallRegistry`: concurrent start / end / lookup, and ending a call twice.
#![cfg(all(not(loom), feature = "host"))]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use callring::call::{AuditEvent, AuditEventType, Details, Limits, LimitsError};
use callring::host::{CallRegistry, RegistryError};
use callring::Evicted;

fn registry_with_archive() -> (
    CallRegistry,
    crossbeam_channel::Receiver<Evicted<AuditEvent>>,
) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let registry = CallRegistry::builder()
        .limits(|_script| Limits::new(8, 4))
        .audit_sink(move |_id| tx.clone())
        .build();
    (registry, rx)
}

#[test]
fn start_lookup_end() {
    let (registry, archive) = registry_with_archive();
    assert!(registry.is_empty());
    let call = registry.start("a", "sales").expect("new");
    assert!(matches!(
        registry.start("a", "sales"),
        Err(RegistryError::AlreadyLive { ref call_id }) if call_id == "a"
    ));
    for _ in 0..6 {
        call.log_event(&AuditEventType::ToolInvoked, None, &Details::new())
            .expect("live");
    }
    assert!(Arc::ptr_eq(&registry.get("a").expect("live"), &call));
    assert_eq!(registry.live(), ["a"]);
    let ended = registry.end("a").expect("live");
    assert!(ended.refused_audit.is_empty());
    let summary = ended.summary;
    assert_eq!((summary.call_id.as_str(), summary.audit.appended), ("a", 6));
    assert!(summary.ended_at.is_some());
    assert!(registry.get("a").is_none());
    assert_eq!(archive.try_iter().count(), 6, "2 evicted + 4 drained");
    let err = registry.end("a").unwrap_err();
    assert_eq!(err.to_string(), "no live call a");
    // The id can be reused once ended.
    registry.start("a", "sales").expect("new again");
}

#[test]
fn bad_limits_are_reported_not_defaulted() {
    let registry = CallRegistry::builder()
        .limits(|script| {
            if script == "broken" {
                Limits::new(0, 1)
            } else {
                Ok(Limits::default())
            }
        })
        .build();
    let err = registry.start("x", "broken").unwrap_err();
    assert!(matches!(
        err,
        RegistryError::Limits(LimitsError::Zero { .. })
    ));
    assert!(registry.is_empty());
    registry.start("x", "fine").expect("valid");
}

#[test]
fn two_threads_ending_the_same_call_end_it_once() {
    for round in 0..200 {
        let (registry, archive) = registry_with_archive();
        let call = registry.start("c", "s").expect("new");
        for _ in 0..5 {
            call.log_event(&AuditEventType::ToolInvoked, None, &Details::new())
                .expect("live");
        }
        let barrier = Barrier::new(2);
        let results: Vec<_> = thread::scope(|s| {
            let enders: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        registry.end("c")
                    })
                })
                .collect();
            enders
                .into_iter()
                .map(|h| h.join().expect("ender"))
                .collect()
        });
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: exactly one ender");
        assert!(results
            .iter()
            .any(|r| matches!(r, Err(RegistryError::NotLive { .. }))));
        let seqs: Vec<u64> = archive.try_iter().map(|e| e.value.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4], "drained once, not twice");
    }
}

/// 8 threads start, look up, log into and end overlapping sets of calls;
/// afterwards every call that was started was ended exactly once and the
/// archive holds each call's trail exactly once.
#[test]
fn eight_threads_start_end_and_look_up_concurrently() {
    const THREADS: u64 = 8;
    let rounds: u64 = if cfg!(debug_assertions) { 300 } else { 3000 };
    let (registry, archive) = registry_with_archive();
    let started = AtomicU64::new(0);
    let ended = AtomicU64::new(0);
    let events = AtomicU64::new(0);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (registry, started, ended, events) = (&registry, &started, &ended, &events);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                for _ in 0..rounds {
                    // Ids collide across threads on purpose.
                    let id = format!("call-{}", rng.u32(0..64));
                    match rng.u8(0..4) {
                        0 => {
                            if registry.start(&id, "s").is_ok() {
                                started.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        1 => {
                            if registry.end(&id).is_ok() {
                                ended.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            if let Some(call) = registry.get(&id) {
                                // The call may be ended between get and log.
                                if call
                                    .log_event(&AuditEventType::DataAccessed, None, &Details::new())
                                    .is_ok()
                                {
                                    events.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    let still_live = registry.live();
    for id in &still_live {
        let ended = registry.end(id).expect("live");
        assert!(ended.refused_audit.is_empty());
    }
    let started = started.load(Ordering::Relaxed);
    assert_eq!(
        ended.load(Ordering::Relaxed) + still_live.len() as u64,
        started
    );
    assert!(registry.is_empty());
    // Every event of every call reached the archive once: per call, seqs
    // 0..n; across calls, the total.
    let archived: Vec<Evicted<AuditEvent>> = archive.try_iter().collect();
    assert_eq!(archived.len() as u64, events.load(Ordering::Relaxed));
    let zeros = archived.iter().filter(|e| e.value.seq == 0).count() as u64;
    assert!(zeros <= started);
}

// ------------------------------------------------------------- lifecycle

#[test]
fn the_live_call_cap_refuses_starts_until_a_call_ends() {
    let registry = CallRegistry::builder().max_live_calls(2).build();
    let _a = registry.start("a", "default").expect("1 of 2");
    let _b = registry.start("b", "default").expect("2 of 2");
    let err = registry.start("c", "default").unwrap_err();
    assert_eq!(err, RegistryError::TooManyCalls { max: 2 });
    assert_eq!(err.to_string(), "2 calls are live, the most allowed");
    // A refused duplicate does not use up a place either.
    assert!(matches!(
        registry.start("a", "default"),
        Err(RegistryError::TooManyCalls { .. } | RegistryError::AlreadyLive { .. })
    ));
    let _ = registry.end("a").expect("live");
    registry.start("c", "default").expect("a place was freed");
    assert_eq!(registry.len(), 2);
}

#[test]
fn end_idle_ends_only_the_calls_idle_long_enough() {
    use callring::call::Timestamp;
    use std::sync::atomic::AtomicI64;
    use std::time::Duration;

    let now = Arc::new(AtomicI64::new(1_000 * 1_000_000_000));
    let clock = {
        let now = Arc::clone(&now);
        move || Timestamp::from_unix_nanos(now.load(Ordering::Relaxed))
    };
    let secs = |s: i64| s * 1_000_000_000;
    let registry = CallRegistry::builder().clock(clock).build();
    let busy = registry.start("busy", "default").expect("new");
    let _quiet = registry.start("quiet", "default").expect("new");
    now.fetch_add(secs(10), Ordering::Relaxed);
    busy.log_event(&AuditEventType::ToolInvoked, None, &Details::new())
        .expect("live");
    now.fetch_add(secs(5), Ordering::Relaxed);
    assert_eq!(busy.idle_for(), Duration::from_secs(5));

    let ended = registry.end_idle(Duration::from_secs(8));
    let ids: Vec<_> = ended.iter().map(|e| e.summary.call_id.as_str()).collect();
    assert_eq!(ids, ["quiet"]);
    assert!(registry.end_idle(Duration::from_secs(8)).is_empty());

    now.fetch_add(secs(1), Ordering::Relaxed);
    busy.append_note("still here").expect("live");
    now.fetch_add(secs(7), Ordering::Relaxed);
    assert!(
        registry.end_idle(Duration::from_secs(8)).is_empty(),
        "the note counts"
    );
    now.fetch_add(secs(1), Ordering::Relaxed);
    assert_eq!(registry.end_idle(Duration::from_secs(8)).len(), 1);
    assert!(registry.is_empty());
}

#[test]
fn metrics_outlive_the_calls_they_count() {
    let registry = CallRegistry::builder()
        .limits(|_| Limits::new(4, 4))
        .build();
    for id in ["a", "b"] {
        let call = registry.start(id, "default").expect("new");
        for i in 0..6 {
            call.append_note(&format!("note {i}")).expect("live");
        }
        call.log_event(&AuditEventType::ToolInvoked, None, &Details::new())
            .expect("live");
    }
    let live = registry.metrics();
    assert_eq!(
        (live.live_calls, live.calls_started, live.calls_ended),
        (2, 2, 0)
    );
    assert!(live.live_bytes > 0);
    let _ = registry.end("a").expect("live");
    let m = registry.metrics();
    assert_eq!((m.live_calls, m.calls_started, m.calls_ended), (1, 2, 1));
    assert_eq!(
        (m.notes_appended, m.notes_evicted, m.audit_appended),
        (12, 4, 2)
    );
    assert!(m.live_bytes > 0 && m.live_bytes < live.live_bytes);
}

/// Agents keep logging to live calls and a starter keeps starting calls
/// while the host shuts down: every event whose `log_event` returned `Ok`
/// is in the archive exactly once (or returned as refused), every call has
/// its closed record, and nothing starts after shutdown began.
#[test]
fn shutdown_with_agents_still_appending_archives_every_event_once() {
    use callring::archive::{read_archive_lines, ArchiveConfig, ArchiveLine, Archiver};
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;
    use std::time::Duration;

    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    let registry = CallRegistry::builder()
        .limits(|_| Limits::new(16, 8))
        .archiver(archiver)
        .build();
    let started = Mutex::new(Vec::new());
    for i in 0..8 {
        registry
            .start(&format!("call-{i}"), "default")
            .expect("new");
        started.lock().expect("lock").push(format!("call-{i}"));
    }
    let stop = AtomicBool::new(false);
    let logged: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());
    let logged_so_far = AtomicU64::new(0);
    let shutdown = thread::scope(|s| {
        for agent in 0..4u64 {
            let (registry, stop, logged, started) = (&registry, &stop, &logged, &started);
            let logged_so_far = &logged_so_far;
            s.spawn(move || {
                let mut mine = Vec::new();
                let mut i = agent;
                while !stop.load(Ordering::Acquire) {
                    let id = {
                        let started = started.lock().expect("lock");
                        started[(i as usize * 7) % started.len()].clone()
                    };
                    i += 1;
                    if let Some(call) = registry.get(&id) {
                        let kind = AuditEventType::Other(format!("agent {agent}"));
                        if let Ok(seq) = call.log_event(&kind, None, &Details::new()) {
                            mine.push((id, seq));
                            // Relaxed: a count the main thread only waits on.
                            logged_so_far.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                logged.lock().expect("lock").extend(mine);
            });
        }
        let (registry, stop, started) = (&registry, &stop, &started);
        s.spawn(move || {
            for i in 8.. {
                let id = format!("call-{i}");
                match registry.start(&id, "default") {
                    Ok(_) => started.lock().expect("lock").push(id),
                    Err(RegistryError::ShuttingDown) => break,
                    Err(e) => panic!("{e}"),
                }
                if stop.load(Ordering::Acquire) {
                    break;
                }
                thread::sleep(Duration::from_millis(1));
            }
        });
        // Shut down once the agents are well under way (over 100 events).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while logged_so_far.load(Ordering::Relaxed) <= 100 {
            assert!(
                std::time::Instant::now() < deadline,
                "agents logged too little"
            );
            thread::sleep(Duration::from_millis(1));
        }
        let shutdown = registry.shutdown();
        // Agents keep trying for a while after the shutdown returned.
        thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Release);
        shutdown
    });
    assert!(registry.is_empty());
    assert!(
        matches!(shutdown.archive, Some(Ok(_))),
        "{:?}",
        shutdown.archive
    );
    assert!(shutdown.is_clean());
    let started = started.into_inner().expect("lock");
    assert_eq!(
        shutdown.ended.len(),
        started.len(),
        "every call ended by shutdown"
    );

    let logged = logged.into_inner().expect("lock");
    assert!(logged.len() > 100, "agents logged only {}", logged.len());
    let mut archived: HashMap<(String, u64), u32> = HashMap::new();
    let mut closed = HashSet::new();
    let report = read_archive_lines(dir.path(), |line| match line {
        ArchiveLine::Event(r) => *archived.entry((r.call_id, r.seq)).or_default() += 1,
        ArchiveLine::Closed(c) => {
            assert!(closed.insert(c.call_id.clone()), "two closed records");
        }
        ArchiveLine::Note(n) => panic!("no call archives its notes here: {n:?}"),
    })
    .expect("readable");
    assert_eq!(report.duplicated + report.incomplete + report.open, 0);
    assert!(
        archived.values().all(|&n| n == 1),
        "an event archived twice"
    );
    assert_eq!(archived.len(), logged.len(), "archived = logged");
    for key in &logged {
        assert!(archived.contains_key(key), "{key:?} logged, not archived");
    }
    assert_eq!(
        closed.len(),
        started.len(),
        "every call has its closed record"
    );
}
