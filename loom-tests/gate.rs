//! Loom model of the call layer's audit gate: `end` racing agents logging
//! events. Every event that got a seq reaches the audit sink exactly once, the
//! seqs handed out are exactly `0..n` (none lost to a refused push), and an
//! event refused with `Ended` used no seq.
#![cfg(loom)]

mod common;

use std::sync::{Arc as StdArc, Mutex};

use callring::call::{
    AuditEvent, AuditEventType, CallError, CallState, Details, EndOutcome, Limits, Timestamp,
};
use callring::Evicted;
use common::model;
use loom::sync::Arc;
use loom::thread;

#[test]
fn end_racing_two_agents_leaves_no_gap() {
    model(|| {
        let log: StdArc<Mutex<Vec<u64>>> = StdArc::default();
        let sink_log = StdArc::clone(&log);
        let call = Arc::new(
            CallState::builder("loom")
                .limits(Limits::new(1, 1).expect("valid"))
                .clock(|| Timestamp::from_unix_nanos(0))
                .audit_sink(move |e: Evicted<AuditEvent>| {
                    sink_log.lock().unwrap().push(e.value.seq)
                })
                .build(),
        );
        let agents: Vec<_> = (0..2)
            .map(|_| {
                let call = call.clone();
                thread::spawn(move || {
                    match call.log_event(&AuditEventType::ToolInvoked, None, &Details::new()) {
                        Ok(seq) => Some(seq),
                        Err(CallError::Ended { .. }) => None,
                        Err(e) => panic!("unexpected {e}"),
                    }
                })
            })
            .collect();
        let _ = call.end();
        let mut accepted: Vec<u64> = agents
            .into_iter()
            .filter_map(|a| a.join().unwrap())
            .collect();
        accepted.sort_unstable();
        let mut archived = log.lock().unwrap().clone();
        archived.sort_unstable();
        assert_eq!(archived, accepted, "archive = accepted events, once each");
        let n = accepted.len() as u64;
        assert_eq!(accepted, (0..n).collect::<Vec<_>>(), "no gap");
    });
}

/// Two `end`s racing an agent: whichever `end` loses waits for the winner,
/// so when it returns `AlreadyEnded` the sink already holds every event
/// that got a seq (the latch's mutex orders the winner's drain before the
/// loser's return).
#[test]
fn a_second_end_returns_after_the_trail_is_handed_over() {
    model(|| {
        let log: StdArc<Mutex<Vec<u64>>> = StdArc::default();
        let sink_log = StdArc::clone(&log);
        let call = Arc::new(
            CallState::builder("loom")
                .limits(Limits::new(1, 2).expect("valid"))
                .clock(|| Timestamp::from_unix_nanos(0))
                .audit_sink(move |e: Evicted<AuditEvent>| {
                    sink_log.lock().unwrap().push(e.value.seq)
                })
                .build(),
        );
        let agent = {
            let call = call.clone();
            thread::spawn(move || {
                call.log_event(&AuditEventType::ToolInvoked, None, &Details::new())
                    .is_ok()
            })
        };
        let ender = {
            let (call, log) = (call.clone(), StdArc::clone(&log));
            thread::spawn(move || {
                let outcome = call.end();
                (outcome, log.lock().unwrap().len())
            })
        };
        let outcome = call.end();
        let here = log.lock().unwrap().len();
        let (other, there) = ender.join().unwrap();
        let logged = u64::from(agent.join().unwrap());
        let ended = [outcome, other]
            .iter()
            .filter(|o| **o != EndOutcome::AlreadyEnded)
            .count();
        assert_eq!(ended, 1, "exactly one end ends the call");
        // Both ends return only once the trail is in the sink.
        assert_eq!((here as u64, there as u64), (logged, logged));
    });
}
