//! The call layer against the original host's behaviour and tests: retention,
//! the rendered notes format, audit hand-off, end of call, concurrency.
#![cfg(all(not(loom), feature = "call"))]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use callring::call::{
    AuditEvent, AuditEventType, CallError, CallState, CallSummary, Details, EndOutcome, Limits,
    Note, TimeZoneChoice, Timestamp,
};
use callring::{Evicted, Reason};

/// 2025-11-25 09:30:00 UTC.
const T0: i64 = 1_764_063_000_000_000_000;

/// A clock that starts at `T0` and advances by `step` nanoseconds per call.
fn stepping_clock(step: i64) -> impl Fn() -> Timestamp + Send + Sync + 'static {
    let now = AtomicI64::new(T0);
    move || Timestamp::from_unix_nanos(now.fetch_add(step, Ordering::Relaxed))
}

/// What a collecting sink received.
type Got<T> = Arc<Mutex<Vec<Evicted<T>>>>;

fn collect<T: Send + 'static>() -> (Got<T>, impl Fn(Evicted<T>) + Send + Sync + 'static) {
    let got: Got<T> = Arc::default();
    let g = Arc::clone(&got);
    (got, move |e| g.lock().expect("not poisoned").push(e))
}

fn details(pairs: &[(&str, serde_json::Value)]) -> Details {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

// ------------------------------------------------ the original's own tests

#[test]
fn notes_past_the_limit_keep_the_newest_1000_in_order() {
    let call = CallState::new("c", Limits::default());
    for i in 0..1100 {
        call.append_note(&format!("note {i}")).expect("live call");
    }
    let notes = call.notes();
    assert_eq!(notes.len(), 1000);
    let texts: Vec<String> = notes.into_iter().map(|n| n.text).collect();
    let want: Vec<String> = (100..1100).map(|i| format!("note {i}")).collect();
    assert_eq!(texts, want, "oldest 100 gone, newest 1000 in order");
    let m = call.metrics().notes;
    assert_eq!((m.appended, m.retained, m.evicted), (1100, 1000, 100));
    assert_eq!(m.overflow_events, 100);
    assert!((m.utilisation - 1.0).abs() < f64::EPSILON);
}

#[test]
fn audit_past_the_limit_keeps_500_and_hands_100_to_the_sink_once() {
    let (got, sink) = collect::<AuditEvent>();
    let call = CallState::builder("c").audit_sink(sink).build();
    for i in 0..600u64 {
        let d = details(&[("i", i.into()), ("why", "test".into())]);
        let seq = call
            .log_event(&AuditEventType::DataAccessed, Some("tools"), &d)
            .expect("live call");
        assert_eq!(seq, i, "seqs are 0, 1, 2, ...");
    }
    let retained = call.audit_events();
    assert_eq!(retained.len(), 500);
    assert_eq!(
        retained.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (100..600).collect::<Vec<_>>()
    );
    let evicted = got.lock().expect("not poisoned").clone();
    assert_eq!(evicted.len(), 100);
    for (i, e) in evicted.iter().enumerate() {
        assert_eq!((e.seq, e.reason), (i as u64, Reason::Evicted));
        assert_eq!(e.value.seq, i as u64);
        assert_eq!(e.value.details["i"], serde_json::json!(i));
        // The form the archive will write round-trips through serde.
        let json = serde_json::to_string(&e.value).expect("serialises");
        let back: AuditEvent = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, e.value);
    }
    let m = call.metrics().audit;
    assert_eq!((m.appended, m.retained, m.evicted), (600, 500, 100));
}

// ------------------------------------------------------- rendered format

/// What the original host produced: `f"[{now:%Y-%m-%d %H:%M:%S}] {note}"` per
/// note, joined with `"\n"`.
fn original_format(stamps_and_texts: &[(i64, String)]) -> String {
    stamps_and_texts
        .iter()
        .map(|(nanos, text)| {
            let t = chrono::DateTime::from_timestamp_nanos(*nanos);
            format!("[{}] {text}", t.format("%Y-%m-%d %H:%M:%S"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn all_notes_is_byte_identical_to_the_original_format() {
    // 0.37 s per note: some notes share a second, some cross midnight,
    // a month and a year boundary across the runs below.
    for start in [T0, 1_767_225_590_000_000_000 /* 2025-12-31 23:59:50 */] {
        let step = 370_000_000;
        let now = AtomicI64::new(start);
        let call = CallState::builder("c")
            .limits(Limits::new(50, 10).expect("valid"))
            .clock(move || Timestamp::from_unix_nanos(now.fetch_add(step, Ordering::Relaxed)))
            .build();
        // The builder read the clock once for the start time.
        let mut expected = Vec::new();
        let mut t = start + step;
        for i in 0..80 {
            let text = match i % 4 {
                0 => format!("note {i}"),
                1 => String::new(),
                2 => format!("multi-byte ünïcödé ✓ {i}"),
                _ => format!("{i} {}", "long ".repeat(30)), // spans slots
            };
            call.append_note(&text).expect("live call");
            expected.push((t, text));
            t += step;
        }
        let retained = &expected[expected.len() - call.notes().len()..];
        assert_eq!(call.all_notes(), original_format(retained));
        assert_eq!(call.summarize().notes_text, call.all_notes());
        let rendered: Vec<String> = call.notes().iter().map(Note::to_string).collect();
        assert_eq!(rendered.join("\n"), call.all_notes());
    }
}

#[test]
fn all_notes_of_an_empty_call_is_empty() {
    let call = CallState::new("c", Limits::default());
    assert_eq!(call.all_notes(), "");
    assert!(call.notes().is_empty());
    assert!(call.audit_events().is_empty());
}

#[test]
fn local_time_renders_in_the_hosts_zone() {
    let call = CallState::builder("c")
        .clock(|| Timestamp::from_unix_nanos(T0))
        .time_zone(TimeZoneChoice::Local)
        .build();
    call.append_note("hi").expect("live call");
    let want = chrono::DateTime::from_timestamp_nanos(T0)
        .with_timezone(&chrono::Local)
        .format("[%Y-%m-%d %H:%M:%S] hi")
        .to_string();
    assert_eq!(call.all_notes(), want);
}

// ------------------------------------------------------------ end of call

#[test]
fn end_drains_everything_and_refuses_later_appends() {
    let (events, audit_sink) = collect::<AuditEvent>();
    let (notes, notes_sink) = collect::<Note>();
    let call = CallState::builder("call-1")
        .limits(Limits::new(3, 4).expect("valid"))
        .audit_sink(audit_sink)
        .notes_sink(notes_sink)
        .clock(stepping_clock(1_000_000_000))
        .build();
    for i in 0..5 {
        call.append_note(&format!("n{i}")).expect("live call");
    }
    for kind in [
        AuditEventType::CallStarted,
        AuditEventType::ConsentGiven,
        AuditEventType::ToolInvoked,
        AuditEventType::Escalated,
        AuditEventType::Other("custom".into()),
        AuditEventType::CallEnded,
    ] {
        call.log_event(&kind, None, &Details::new())
            .expect("live call");
    }
    assert!(!call.is_ended());
    assert_eq!(
        call.end(),
        EndOutcome::Ended {
            notes_drained: 3,
            audit_drained: 4,
            audit_refused: 0,
            closed_record: false,
        }
    );
    assert!(call.is_ended());
    assert_eq!(call.end(), EndOutcome::AlreadyEnded);

    let err = call.append_note("late").unwrap_err();
    assert_eq!(
        err,
        CallError::Ended {
            call_id: "call-1".into()
        }
    );
    assert_eq!(err.to_string(), "call call-1 has ended");
    let err = call
        .log_event(&AuditEventType::NoteEdited, None, &Details::new())
        .unwrap_err();
    assert!(matches!(err, CallError::Ended { .. }));

    // The audit sink alone holds the whole trail: seqs 0..6, once each.
    let events = events.lock().expect("not poisoned");
    let seqs: Vec<u64> = events.iter().map(|e| e.value.seq).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4, 5]);
    let reasons: Vec<Reason> = events.iter().map(|e| e.reason).collect();
    assert_eq!(reasons[..2], [Reason::Evicted; 2]);
    assert_eq!(reasons[2..], [Reason::Drained; 4]);
    let notes = notes.lock().expect("not poisoned");
    let texts: Vec<&str> = notes.iter().map(|e| e.value.text.as_str()).collect();
    assert_eq!(texts, ["n0", "n1", "n2", "n3", "n4"]);

    let summary = call.summarize();
    assert!(summary.ended_at > Some(summary.started_at));
    assert_eq!(summary.metrics.audit.drained, 4);
    assert_eq!(summary.metrics.audit_seqs_issued, 6);
}

#[test]
fn too_large_note_is_refused_with_its_size() {
    let call = CallState::new("c", Limits::new(2, 2).expect("valid"));
    let err = call.append_note(&"x".repeat(10_000)).unwrap_err();
    let CallError::TooLarge { len, max } = err else {
        panic!("expected TooLarge, got {err:?}");
    };
    assert_eq!(len, 10_000);
    assert!(max < 10_000 && max > 100);
    assert!(call.append_note(&"x".repeat(max)).is_ok());
    let m = call.metrics().notes;
    assert_eq!(m.appended, 1);
    // An event too large for the audit ring takes no seq.
    let big = details(&[("blob", "y".repeat(10_000).into())]);
    let err = call
        .log_event(&AuditEventType::DataAccessed, None, &big)
        .unwrap_err();
    assert!(matches!(err, CallError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("bytes"));
    let seq = call
        .log_event(&AuditEventType::DataAccessed, None, &Details::new())
        .expect("live call");
    assert_eq!(seq, 0, "the refused event used no seq");
}

// ------------------------------------------------------------ summaries

#[test]
fn summaries_round_trip_through_json_and_yaml() {
    let call = CallState::builder("call: \"quoted\" #1")
        .clock(stepping_clock(123_456_789))
        .build();
    call.append_note("line with: colon, # hash and \"quotes\"")
        .expect("live call");
    call.append_note("second\nline").expect("live call");
    let d = details(&[
        ("amount", serde_json::json!(99.95)),
        ("nested", serde_json::json!({"k": [1, "two", null, true]})),
        ("empty", serde_json::json!({})),
    ]);
    call.log_event(&AuditEventType::PaymentArranged, Some("billing"), &d)
        .expect("live call");
    call.log_event(&AuditEventType::Other("x: y".into()), None, &Details::new())
        .expect("live call");
    let _ = call.end();
    let summary = call.summarize();
    let json = summary.to_json().expect("serialises");
    assert_eq!(CallSummary::from_json(&json).expect("parses"), summary);
    #[cfg(feature = "yaml")]
    {
        let yaml = summary.to_yaml().expect("serialises");
        assert_eq!(
            CallSummary::from_yaml(&yaml).expect("parses"),
            summary,
            "{yaml}"
        );
        let err = CallSummary::from_yaml("call_id: [").unwrap_err();
        assert!(err.to_string().starts_with("call summary YAML:"), "{err}");
    }
    assert!(json.contains(r#""type": "payment_arranged""#), "{json}");

    let err = CallSummary::from_json("{\"call_id\": 5}").unwrap_err();
    assert!(err.to_string().starts_with("call summary JSON:"), "{err}");
}

// ------------------------------------------------------------ concurrency

/// A note written by agent `a` as its `i`th: self-describing, so a reader can
/// tell a torn note from a whole one.
fn agent_note(a: u64, i: u64) -> String {
    let fill = ((a * 7 + i * 13) % 60) as usize;
    format!("agent {a} note {i} {}|{fill}", "z".repeat(fill))
}

fn check_note(text: &str) {
    let mut words = text.split(' ');
    let (Some("agent"), Some(a), Some("note"), Some(i)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        panic!("torn note {text:?}");
    };
    let (a, i) = (a.parse().expect("agent"), i.parse().expect("index"));
    assert_eq!(text, agent_note(a, i), "torn note");
}

#[test]
fn eight_agents_and_a_summariser_lose_and_tear_nothing() {
    const AGENTS: u64 = 8;
    let per_agent: u64 = if cfg!(debug_assertions) {
        2_500
    } else {
        10_000
    };
    let (evicted, sink) = collect::<AuditEvent>();
    let call = CallState::builder("busy")
        .limits(Limits::new(1000, 500).expect("valid"))
        .audit_sink(sink)
        .build();
    let done = AtomicBool::new(false);
    let summaries = AtomicU64::new(0);
    thread::scope(|s| {
        s.spawn(|| {
            let mut round = 0u64;
            loop {
                let stop = done.load(Ordering::Acquire);
                let summary = call.summarize();
                for line in summary.notes_text.lines() {
                    // "[YYYY-mm-dd HH:MM:SS] " then the note.
                    assert_eq!(line.as_bytes()[0], b'[');
                    check_note(&line[22..]);
                }
                let seqs: Vec<u64> = summary.audit_events.iter().map(|e| e.seq).collect();
                assert!(seqs.windows(2).all(|w| w[0] < w[1]));
                let json = summary.to_json().expect("serialises");
                assert_eq!(CallSummary::from_json(&json).expect("parses"), summary);
                #[cfg(feature = "yaml")]
                if round.is_multiple_of(16) {
                    let yaml = summary.to_yaml().expect("serialises");
                    assert_eq!(CallSummary::from_yaml(&yaml).expect("parses"), summary);
                }
                round += 1;
                summaries.fetch_add(1, Ordering::Relaxed);
                if stop {
                    break;
                }
            }
        });
        thread::scope(|agents| {
            for a in 0..AGENTS {
                let call = &call;
                agents.spawn(move || {
                    for i in 0..per_agent {
                        if i % 4 == 3 {
                            let d = details(&[("agent", a.into()), ("i", i.into())]);
                            call.log_event(&AuditEventType::ToolInvoked, Some("tools"), &d)
                                .expect("live call");
                        } else {
                            call.append_note(&agent_note(a, i)).expect("live call");
                        }
                    }
                });
            }
        });
        done.store(true, Ordering::Release);
    });
    assert!(summaries.load(Ordering::Relaxed) >= 1);

    let total = AGENTS * per_agent;
    let events = total / 4;
    let m = call.metrics();
    assert_eq!(m.notes.appended, total - events);
    assert_eq!(m.audit.appended, events);
    assert_eq!(m.audit_seqs_issued, events);
    assert_eq!((m.notes.retained, m.audit.retained), (1000, 500));
    for note in call.notes() {
        check_note(&note.text);
    }
    let _ = call.end();
    // Evicted + drained = every seq, once.
    let seqs: Vec<u64> = evicted
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|e| e.value.seq)
        .collect();
    assert_eq!(seqs.len() as u64, events);
    let unique: BTreeSet<u64> = seqs.into_iter().collect();
    assert_eq!(unique, (0..events).collect());
}

/// `end` racing agents: every event that got a seq reaches the sink once, the
/// seqs are exactly `0..n` (no gap from a refused event), and every refused
/// call got `Ended`.
#[test]
fn end_racing_agents_leaves_no_gap_in_the_trail() {
    let rounds = if cfg!(debug_assertions) { 30 } else { 200 };
    for round in 0..rounds {
        let (evicted, sink) = collect::<AuditEvent>();
        let call = CallState::builder("race")
            .limits(Limits::new(4, 4).expect("valid"))
            .audit_sink(sink)
            .build();
        let started = AtomicU64::new(0);
        let accepted: Vec<u64> = thread::scope(|s| {
            let agents: Vec<_> = (0..3)
                .map(|_| {
                    let (call, started) = (&call, &started);
                    s.spawn(move || {
                        let mut mine = Vec::new();
                        loop {
                            started.fetch_add(1, Ordering::Relaxed);
                            match call.log_event(
                                &AuditEventType::ToolInvoked,
                                None,
                                &Details::new(),
                            ) {
                                Ok(seq) => mine.push(seq),
                                Err(CallError::Ended { .. }) => return mine,
                                Err(e) => panic!("unexpected {e}"),
                            }
                        }
                    })
                })
                .collect();
            while started.load(Ordering::Relaxed) < 10 + (round * 13) % 200 {
                thread::yield_now();
            }
            let _ = call.end();
            agents
                .into_iter()
                .flat_map(|h| h.join().expect("agent"))
                .collect()
        });
        let mut got: Vec<u64> = evicted
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|e| e.value.seq)
            .collect();
        got.sort_unstable();
        let mut want = accepted;
        want.sort_unstable();
        assert_eq!(got, want, "round {round}: archive = accepted events");
        assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>(), "no gap");
    }
}

/// The shared rendering is never stale: readers hammering
/// `all_notes_shared` while agents append end up, once the agents are done,
/// with exactly the retained notes, and a reader that overlapped an append
/// never pins a rendering that lacks it.
#[test]
fn shared_notes_rendering_is_never_stale() {
    use std::sync::atomic::AtomicBool;
    let rounds = if cfg!(debug_assertions) { 20 } else { 200 };
    for _ in 0..rounds {
        let call = CallState::new("c", Limits::new(50, 10).expect("valid"));
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !done.load(Ordering::Relaxed) {
                        let _ = call.all_notes_shared();
                    }
                });
            }
            let writers: Vec<_> = (0..3)
                .map(|t| {
                    let call = &call;
                    s.spawn(move || {
                        for i in 0..40 {
                            call.append_note(&format!("w{t} n{i}")).expect("live call");
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().expect("writer");
            }
            done.store(true, Ordering::Relaxed);
        });
        let expected: Vec<String> = call.notes().into_iter().map(|n| n.text).collect();
        assert_eq!(expected.len(), 50);
        let shared = call.all_notes_shared();
        let got: Vec<&str> = shared
            .lines()
            .map(|l| l.split_once("] ").expect("prefixed").1)
            .collect();
        assert_eq!(got, expected);
        assert_eq!(call.all_notes(), &*shared);
    }
}
