//! The audit trail's end-of-call contract and its exactness: a second `end`
//! waits for the first; a panicking notes sink cannot keep the audit ring
//! open or its closed record unwritten; float details and summaries round
//! trip exactly through the ring, the archive and JSON.
#![cfg(all(not(loom), feature = "call"))]

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use callring::archive::{read_archive, verify, ArchiveConfig, Archiver, CallStatus};
use callring::call::{
    AuditEvent, AuditEventType, CallError, CallState, CallSummary, Details, EndOutcome, Limits,
    Note,
};
use callring::Evicted;

/// Waits (with a deadline) until `cond` holds.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// An eviction sink whose first hand-off says it has started (`entered`)
/// and then blocks until `release`; it records the seqs it took in `trail`.
#[derive(Clone, Default)]
struct BlockingSink {
    trail: Arc<Mutex<Vec<u64>>>,
    entered: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
}

impl BlockingSink {
    fn sink(&self) -> impl Fn(Evicted<AuditEvent>) + Send + Sync + 'static {
        let this = self.clone();
        move |e: Evicted<AuditEvent>| {
            this.entered.store(true, Ordering::SeqCst);
            while !this.release.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(1));
            }
            this.trail.lock().expect("not poisoned").push(e.value.seq);
        }
    }

    fn taken(&self) -> usize {
        self.trail.lock().expect("not poisoned").len()
    }
}

/// A second `end` racing the first returns only once the first has handed
/// the whole trail over. Before, it returned `AlreadyEnded` at once, while
/// the first was still draining, so a handler that ended and then flushed
/// archived part of the trail.
#[test]
fn a_second_end_waits_for_the_first_to_finish() {
    const EVENTS: u64 = 6;
    // The drain's first hand-off blocks until the test releases it.
    let blocking = BlockingSink::default();
    let call = Arc::new(
        CallState::builder("c")
            .limits(Limits::new(10, 10).expect("valid"))
            .audit_sink(blocking.sink())
            .build(),
    );
    for _ in 0..EVENTS {
        call.log_event(&AuditEventType::ToolInvoked, None, &Details::new())
            .expect("live call");
    }
    let first = thread::spawn({
        let call = call.clone();
        move || call.end()
    });
    wait_for("the first end to be draining", || {
        blocking.entered.load(Ordering::SeqCst)
    });
    let second = thread::spawn({
        let (call, blocking) = (call.clone(), blocking.clone());
        move || {
            let outcome = call.end();
            // What the archive holds the moment the second end returns.
            (outcome, blocking.taken() as u64)
        }
    });
    // Give a wrong second end every chance to return early.
    let deadline = Instant::now() + Duration::from_millis(200);
    while !second.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    blocking.release.store(true, Ordering::SeqCst);
    let (outcome, seen) = second.join().expect("second end");
    assert_eq!(outcome, EndOutcome::AlreadyEnded);
    assert_eq!(
        seen, EVENTS,
        "the second end returned before the trail was handed over"
    );
    assert!(matches!(
        first.join().expect("first end"),
        EndOutcome::Ended {
            audit_drained: EVENTS,
            ..
        }
    ));
}

/// A notes sink that panics inside `end`: the audit ring is still closed,
/// the closed record written (the archive verifies the call complete),
/// then the panic reaches the caller; a second `end` reports the call
/// ended. Before, the panic skipped the audit ring: never closed, never
/// drained, no second chance.
#[test]
fn a_panicking_notes_sink_does_not_stop_the_audit_trail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("starts");
    let call = CallState::builder("c")
        .limits(Limits::new(2, 4).expect("valid"))
        .audit_archive(archiver.sink("c"))
        .notes_sink(|_: Evicted<Note>| panic!("notes sink is broken"))
        .build();
    for i in 0..2 {
        call.append_note(&format!("note {i}")).expect("live call");
    }
    for _ in 0..5 {
        call.log_event(&AuditEventType::DataAccessed, None, &Details::new())
            .expect("archived");
    }
    let result = panic::catch_unwind(AssertUnwindSafe(|| call.end()));
    let payload = result.expect_err("the sink's panic reaches the caller");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"notes sink is broken")
    );
    assert!(call.is_ended());
    assert!(matches!(
        call.log_event(&AuditEventType::CallEnded, None, &Details::new()),
        Err(CallError::Ended { .. })
    ));
    assert_eq!(
        call.audit_events().len(),
        4,
        "the audit ring is still readable"
    );
    assert_eq!(call.end(), EndOutcome::AlreadyEnded);
    archiver.stop().expect("clean stop");
    let report = verify(dir.path()).expect("verifies");
    let trail = &report.calls["c"];
    assert_eq!(
        (trail.status, trail.events, trail.issued),
        (CallStatus::Complete, 5, Some(5))
    );
}

/// 20,000 floats: random bit patterns (finite), subnormals, ±0.0, 1/11,
/// `f64::MAX`, `f64::MIN_POSITIVE`.
fn floats() -> Vec<f64> {
    let mut rng = fastrand::Rng::with_seed(11);
    let mut out = vec![
        1.0 / 11.0,
        0.0,
        -0.0,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        -f64::MIN_POSITIVE,
        f64::EPSILON,
        5e-324,
        -5e-324,
        f64::from_bits(0x000f_ffff_ffff_ffff), // the largest subnormal
        0.1 + 0.2,
    ];
    while out.len() < 20_000 {
        let x = f64::from_bits(rng.u64(..));
        if x.is_finite() {
            out.push(x);
        }
        // Subnormals and everyday magnitudes too, not only huge exponents.
        out.push(f64::from_bits(rng.u64(..) & 0x800f_ffff_ffff_ffff));
        out.push(rng.f64() * 1000.0);
    }
    out.truncate(20_000);
    out
}

fn same_bits(a: &serde_json::Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| a.to_bits() == b.to_bits())
}

/// Float details come back bit for bit from the ring (`audit_events`), from
/// the archive, and a summary's JSON round trip keeps `utilisation` exact.
/// Before, about 30% of random floats came back one ULP off.
#[test]
fn float_details_and_summaries_round_trip_exactly() {
    const PER_EVENT: usize = 100;
    let values = floats();
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("starts");
    let events = values.len() / PER_EVENT;
    // Room for every event whether the ring counts entries or slots.
    let call = CallState::builder("floats")
        .limits(Limits::new(3, events * 16).expect("valid"))
        .audit_archive(archiver.sink("floats"))
        .build();
    for chunk in values.chunks(PER_EVENT) {
        let details: Details = chunk
            .iter()
            .enumerate()
            .map(|(i, &x)| (format!("x{i:03}"), serde_json::Value::from(x)))
            .collect();
        call.log_event(&AuditEventType::PaymentArranged, None, &details)
            .expect("archived");
    }
    let check = |seq: u64, details: &Details| {
        let chunk = &values[seq as usize * PER_EVENT..][..PER_EVENT];
        for (i, &x) in chunk.iter().enumerate() {
            let got = &details[&format!("x{i:03}")];
            assert!(
                same_bits(got, x),
                "seq {seq} x{i}: {x:e} came back as {got}"
            );
        }
    };
    let in_memory = call.audit_events();
    assert_eq!(in_memory.len(), events);
    for e in &in_memory {
        check(e.seq, &e.details);
    }

    // A summary's utilisation: 1 of 3 notes is 1/3, not exact in binary.
    call.append_note("one").expect("live call");
    let summary = call.summarize();
    let back = CallSummary::from_json(&summary.to_json().expect("json")).expect("parses");
    assert_eq!(
        back.metrics.notes.utilisation.to_bits(),
        summary.metrics.notes.utilisation.to_bits()
    );
    assert_eq!(back, summary);

    let _ = call.end();
    archiver.stop().expect("clean stop");
    let mut archived = 0;
    read_archive(dir.path(), |r| {
        check(r.seq, &r.details);
        archived += 1;
    })
    .expect("verifies");
    assert_eq!(archived, events);
}

/// The same through the registry: two handlers end the same call; exactly
/// one gets `Ok`, and neither returns before the trail is handed over.
/// Before, the second got `NotLive` at once while the first was draining.
#[test]
fn racing_registry_ends_both_wait_for_the_trail() {
    use callring::host::{CallRegistry, RegistryError};

    const EVENTS: usize = 5;
    let blocking = BlockingSink::default();
    let registry = Arc::new({
        let blocking = blocking.clone();
        CallRegistry::builder()
            .limits(|_| Limits::new(10, 10))
            .audit_sink(move |_id| blocking.sink())
            .build()
    });
    let call = registry.start("c", "default").expect("new call");
    for _ in 0..EVENTS {
        call.log_event(&AuditEventType::ToolInvoked, None, &Details::new())
            .expect("live call");
    }
    let ender = |registry: Arc<CallRegistry>, blocking: BlockingSink| {
        thread::spawn(move || {
            let result = registry.end("c");
            (result, blocking.taken())
        })
    };
    let first = ender(registry.clone(), blocking.clone());
    wait_for("the first end to be draining", || {
        blocking.entered.load(Ordering::SeqCst)
    });
    let second = ender(registry.clone(), blocking.clone());
    let deadline = Instant::now() + Duration::from_millis(200);
    while !second.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    blocking.release.store(true, Ordering::SeqCst);
    let results = [first.join().expect("first"), second.join().expect("second")];
    for (_, seen) in &results {
        assert_eq!(
            *seen, EVENTS,
            "an end returned before the trail was handed over"
        );
    }
    let oks = results.iter().filter(|(r, _)| r.is_ok()).count();
    assert_eq!(oks, 1, "exactly one end succeeds");
    assert!(results
        .iter()
        .any(|(r, _)| matches!(r, Err(RegistryError::NotLive { .. }))));
    assert!(registry.get("c").is_none());
}

/// A clock that panics inside `end`: both rings are still closed and the
/// closed record written before the panic reaches the caller.
#[test]
fn a_panicking_clock_in_end_still_closes_the_call() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("starts");
    let broken = Arc::new(AtomicBool::new(false));
    let call = CallState::builder("c")
        .audit_archive(archiver.sink("c"))
        .clock({
            let broken = broken.clone();
            move || {
                assert!(!broken.load(Ordering::SeqCst), "clock is broken");
                callring::call::Timestamp::from_unix_nanos(0)
            }
        })
        .build();
    call.log_event(&AuditEventType::CallStarted, None, &Details::new())
        .expect("archived");
    broken.store(true, Ordering::SeqCst);
    assert!(panic::catch_unwind(AssertUnwindSafe(|| call.end())).is_err());
    broken.store(false, Ordering::SeqCst);
    assert!(matches!(
        call.append_note("after"),
        Err(CallError::Ended { .. })
    ));
    assert_eq!(call.end(), EndOutcome::AlreadyEnded);
    archiver.stop().expect("clean stop");
    let report = verify(dir.path()).expect("verifies");
    assert_eq!(report.calls["c"].status, CallStatus::Complete);
}
