//! A full archive under async code: `log_event_async` parks its task, not
//! the runtime; `try_log_event` refuses before taking a seq; the
//! `FullQueue` policies refuse the same way. The archive is made full by a
//! file layer whose writes stall until released.
#![cfg(all(not(loom), feature = "async"))]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callring::archive::{verify, ArchiveConfig, Archiver, FullQueue};
use callring::call::{AuditEventType, CallError, CallState, Details};
use common::Stall;

const PLACES: usize = 4;

/// An archiver whose queue holds `PLACES` records, and a call on it; the
/// queue is full when this returns (the archiver's thread is stuck in a
/// write), with `logged` events logged.
fn full_archive(dir: &Path, full: FullQueue) -> (Archiver, Arc<CallState>, Stall, u64) {
    let stall = Stall::default();
    let config = ArchiveConfig::default()
        .channel_capacity(PLACES)
        .fsync_every(1)
        .full_queue(full)
        .fs(stall.fs());
    let archiver = Archiver::start(dir, config).expect("opens");
    let call = Arc::new(
        CallState::builder("call-1")
            .audit_archive(archiver.sink("call-1"))
            .build(),
    );
    stall.close();
    let kind = AuditEventType::ToolInvoked;
    let mut logged = 0;
    // The first event gets the archiver's thread stuck in its write; then
    // the places fill up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match call.try_log_event(&kind, None, &Details::new()) {
            Ok(seq) => {
                assert_eq!(seq, logged);
                logged += 1;
            }
            Err(CallError::Busy { .. }) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "the queue never filled");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(logged > PLACES as u64, "{logged} logged");
    assert!(logged <= PLACES as u64 + 2, "{logged} logged");
    (archiver, call, stall, logged)
}

#[test]
fn try_log_event_refuses_a_full_archive_without_using_a_seq() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (archiver, call, stall, logged) = full_archive(dir.path(), FullQueue::Block);
    for _ in 0..3 {
        let err = call
            .try_log_event(&AuditEventType::ConsentGiven, None, &Details::new())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the audit archive of call call-1 is full; nothing was logged"
        );
    }
    assert_eq!(call.metrics().audit_seqs_issued, logged, "no seq used");
    stall.open();
    // Room again: the next event takes the next seq, with no gap.
    let seq = call
        .log_event(&AuditEventType::ConsentGiven, None, &Details::new())
        .expect("room");
    assert_eq!(seq, logged);
    let _ = call.end();
    archiver.stop().expect("clean stop");
    let report = verify(dir.path()).expect("readable");
    assert!(report.calls["call-1"].is_complete(), "{report:?}");
    assert_eq!(report.events, logged + 1);
}

#[test]
fn full_queue_policies_refuse_before_the_seq() {
    for policy in [
        FullQueue::Refuse,
        FullQueue::Wait(Duration::from_millis(30)),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (archiver, call, stall, logged) = full_archive(dir.path(), policy);
        let started = Instant::now();
        let err = call
            .log_event(&AuditEventType::ConsentGiven, None, &Details::new())
            .unwrap_err();
        assert!(matches!(err, CallError::Busy { .. }), "{policy:?}: {err}");
        if let FullQueue::Wait(d) = policy {
            assert!(started.elapsed() >= d, "gave up before {d:?}");
        }
        assert_eq!(call.metrics().audit_seqs_issued, logged);
        stall.open();
        let _ = call.end();
        archiver.stop().expect("clean stop");
        assert!(verify(dir.path()).expect("readable").calls["call-1"].is_complete());
    }
}

/// On a current-thread runtime a task awaiting room must not stop the other
/// tasks: a ticker keeps ticking while `log_event_async` waits, and the
/// event is logged once the archive has room.
#[tokio::test(flavor = "current_thread")]
async fn log_event_async_yields_to_other_tasks_while_the_archive_is_full() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (archiver, call, stall, logged) = full_archive(dir.path(), FullQueue::Block);
    let ticks = Arc::new(AtomicU64::new(0));
    let ticker = {
        let ticks = Arc::clone(&ticks);
        tokio::spawn(async move {
            loop {
                ticks.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let logging = {
        let call = Arc::clone(&call);
        tokio::spawn(async move {
            call.log_event_async(
                &AuditEventType::ConsentGiven,
                Some("speech"),
                &Details::new(),
            )
            .await
        })
    };
    // The ticker runs while the logging task waits for room.
    let before = ticks.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        ticks.load(Ordering::Relaxed) >= before + 10,
        "the runtime was blocked"
    );
    assert!(!logging.is_finished(), "logged into a full archive");
    assert_eq!(
        call.metrics().audit_seqs_issued,
        logged,
        "no seq while waiting"
    );

    // Room: the archiver's thread wakes the task.
    stall.open();
    let seq = tokio::time::timeout(Duration::from_secs(30), logging)
        .await
        .expect("woken once there was room")
        .expect("task")
        .expect("logged");
    assert_eq!(seq, logged);
    ticker.abort();
    let _ = call.end();
    archiver.stop().expect("clean stop");
    let report = verify(dir.path()).expect("readable");
    assert!(report.calls["call-1"].is_complete());
    assert_eq!(report.events, logged + 1);
}
