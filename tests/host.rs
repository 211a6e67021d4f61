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
