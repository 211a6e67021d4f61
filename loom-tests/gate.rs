//! Loom model of the call layer's audit gate: `end` racing agents logging
//! events. Every event that got a seq reaches the audit sink exactly once, the
//! seqs handed out are exactly `0..n` (none lost to a refused push), and an
//! event refused with `Ended` used no seq.
#![cfg(loom)]

mod common;

use std::sync::{Arc as StdArc, Mutex};

use callring::call::{
    AuditEvent, AuditEventType, CallError, CallState, Details, Limits, Timestamp,
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
