#![cfg(not(loom))]
//! Property test: a single-threaded `Ring<Text>` behaves exactly like a
//! `VecDeque` oracle that models tickets the way the ring hands them out.
//!
//! The oracle: every entry takes one ticket, whatever its length, its sequence
//! number is that ticket, and the ring retains the entries among the last
//! `capacity` tickets. Entries longer than `max_entry_bytes` are refused with
//! `TooLarge` and take no ticket; after `close` pushes are refused with
//! `Closed` (a too-large value still reports `TooLarge`: the length check
//! comes before the ticket), and with a sink `close` drains the retained
//! entries in sequence order. Lengths straddle the inline payload and the
//! extension blocks' size classes, so slots keep, swap and give back blocks.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use callring::{CloseOutcome, Evicted, PushError, Reason, Ring, Text};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

/// Stamp and header: the bytes of a slot that are not payload.
const SLOT_OVERHEAD: usize = 16;
const SLOT_SIZES: [usize; 4] = [24, 32, 48, 128];
const SEPARATORS: [&str; 5] = ["", ",", " | ", "\n", "→"];
/// Characters of 1 to 4 bytes (ASCII weighted up), so multi-byte characters
/// straddle word and slot boundaries.
const PALETTE: [char; 14] = [
    'a', 'b', 'Z', '0', ' ', '\n', '\0', 'é', 'ß', 'Ω', '€', '中', '😀', '🦀',
];

type Log = Arc<Mutex<Vec<Evicted<String>>>>;

#[derive(Debug, Clone, Copy)]
struct Setup {
    capacity: usize,
    slot_bytes: usize,
    max_entry: usize,
    sink: bool,
}

impl Setup {
    fn payload(&self) -> usize {
        self.slot_bytes - SLOT_OVERHEAD
    }
}

#[derive(Debug, Clone)]
enum Op {
    Push(String),
    Snapshot,
    Join(&'static str),
    Metrics,
    Close,
}

/// A string of exactly `len` bytes: palette characters while they fit, then
/// ASCII padding.
fn fit(chars: &[char], len: usize) -> String {
    let mut s = String::with_capacity(len);
    for &c in chars {
        if s.len() + c.len_utf8() <= len {
            s.push(c);
        }
    }
    while s.len() < len {
        s.push('p');
    }
    s
}

fn text(payload: usize) -> BoxedStrategy<String> {
    let max = 3 * payload;
    let mut edges = vec![0, 1];
    for k in 1..=3 {
        edges.extend([k * payload - 1, k * payload, k * payload + 1]);
    }
    edges.retain(|&n| n <= max);
    prop_oneof![3 => 0..=max, 2 => select(edges)]
        .prop_flat_map(|len| vec(select(PALETTE.to_vec()), len).prop_map(move |cs| fit(&cs, len)))
        .boxed()
}

fn op(payload: usize) -> BoxedStrategy<Op> {
    prop_oneof![
        20 => text(payload).prop_map(Op::Push),
        2 => Just(Op::Snapshot),
        2 => select(SEPARATORS.to_vec()).prop_map(Op::Join),
        2 => Just(Op::Metrics),
        1 => Just(Op::Close),
    ]
    .boxed()
}

fn scenario() -> impl Strategy<Value = (Setup, Vec<Op>)> {
    (
        1usize..=8,
        select(SLOT_SIZES.to_vec()),
        0usize..4,
        any::<bool>(),
    )
        .prop_flat_map(|(capacity, slot_bytes, max, sink)| {
            let payload = slot_bytes - SLOT_OVERHEAD;
            // Below, at and above the inline payload, up to the longest text.
            let max_entry = [payload / 2, payload, 2 * payload + 5, 3 * payload][max];
            let setup = Setup {
                capacity,
                slot_bytes,
                max_entry,
                sink,
            };
            (Just(setup), vec(op(setup.payload()), 0..48))
        })
}

/// What a push should return.
#[derive(Debug, PartialEq, Eq)]
enum Pushed {
    Seq(u64),
    TooLarge { len: usize, max: usize },
    Closed,
}

/// The oracle.
struct Model {
    capacity: u64,
    payload: usize,
    max_entry: usize,
    sink: bool,
    /// Next ticket.
    head: u64,
    /// Retained entries: (seq, value), oldest first.
    entries: VecDeque<(u64, String)>,
    appended: u64,
    evicted: u64,
    drained: u64,
    closed: bool,
    /// What the sink must have received, in order.
    sink_log: Vec<Evicted<String>>,
    /// Whether each retained entry spilled past the inline payload.
    spilled: VecDeque<bool>,
}

impl Model {
    fn new(setup: Setup) -> Self {
        let payload = setup.payload();
        Self {
            capacity: setup.capacity as u64,
            payload,
            max_entry: setup.max_entry,
            sink: setup.sink,
            head: 0,
            entries: VecDeque::new(),
            appended: 0,
            evicted: 0,
            drained: 0,
            closed: false,
            sink_log: Vec::new(),
            spilled: VecDeque::new(),
        }
    }

    /// Returns what the push should return and how many spilled entries it
    /// evicted.
    fn push(&mut self, value: &str) -> (Pushed, u64) {
        let len = value.len();
        if len > self.max_entry {
            return (
                Pushed::TooLarge {
                    len,
                    max: self.max_entry,
                },
                0,
            );
        }
        if self.closed {
            return (Pushed::Closed, 0);
        }
        let seq = self.head;
        self.head += 1;
        self.appended += 1;
        self.entries.push_back((seq, value.to_owned()));
        self.spilled.push_back(len > self.payload);
        let window = self.head.saturating_sub(self.capacity);
        let mut multi = 0;
        while self.entries.front().is_some_and(|(s, _)| *s < window) {
            let (seq, value) = self.entries.pop_front().expect("checked");
            if self.spilled.pop_front().expect("parallel") {
                multi += 1;
            }
            self.evicted += 1;
            if self.sink {
                self.sink_log
                    .push(Evicted::new(seq, Reason::Evicted, value));
            }
        }
        (Pushed::Seq(seq), multi)
    }

    fn close(&mut self) -> CloseOutcome {
        if self.closed {
            return CloseOutcome::AlreadyClosed;
        }
        self.closed = true;
        if !self.sink {
            return CloseOutcome::Closed { drained: 0 };
        }
        for (seq, value) in &self.entries {
            self.sink_log
                .push(Evicted::new(*seq, Reason::Drained, value.clone()));
        }
        self.drained = self.entries.len() as u64;
        CloseOutcome::Closed {
            drained: self.drained,
        }
    }

    fn joined(&self, sep: &str) -> String {
        let values: Vec<&str> = self.entries.iter().map(|(_, v)| v.as_str()).collect();
        values.join(sep)
    }
}

/// Everything observable, compared with the oracle.
fn check(ring: &Ring<Text>, model: &Model, log: &Log) -> Result<(), TestCaseError> {
    let snap = ring.snapshot();
    prop_assert_eq!(snap.skipped().total(), 0, "single thread: nothing skipped");
    let expected: Vec<(u64, String)> = model.entries.iter().cloned().collect();
    prop_assert_eq!(snap.entries(), &expected[..]);
    prop_assert_eq!(snap.len(), expected.len());

    let mut visited = Vec::new();
    let skipped = ring.visit(|seq, bytes| visited.push((seq, bytes.to_vec())));
    prop_assert_eq!(skipped.total(), 0);
    let expected_bytes: Vec<(u64, Vec<u8>)> = expected
        .iter()
        .map(|(s, v)| (*s, v.as_bytes().to_vec()))
        .collect();
    prop_assert_eq!(visited, expected_bytes);

    prop_assert_eq!(ring.join(","), model.joined(","));
    let mut out = String::from("prefix:");
    let skipped = ring.join_into(" / ", &mut out);
    prop_assert_eq!(skipped.total(), 0);
    prop_assert_eq!(out, format!("prefix:{}", model.joined(" / ")));

    let m = ring.metrics();
    prop_assert_eq!(m.capacity, model.capacity);
    prop_assert_eq!(m.appended, model.appended);
    prop_assert_eq!(m.evicted, model.evicted);
    prop_assert_eq!(m.retained, model.entries.len() as u64);
    prop_assert_eq!(m.drained, model.drained);
    prop_assert_eq!(m.closed, model.closed);
    prop_assert_eq!(
        (m.writer_waits, m.reader_skips, m.sink_waits),
        (0, 0, 0),
        "one thread never waits or skips"
    );
    prop_assert_eq!((m.refused, m.sink_panics, m.undecodable), (0, 0, 0));
    prop_assert_eq!(ring.len(), model.entries.len());
    prop_assert_eq!(ring.is_empty(), model.entries.is_empty());
    prop_assert_eq!(ring.is_closed(), model.closed);
    prop_assert!(m.bytes > 0 || model.head == 0);

    let received = log.lock().expect("sink never panics").clone();
    prop_assert_eq!(&received[..], &model.sink_log[..]);
    prop_assert!(ring.take_refused().is_empty());
    Ok(())
}

/// Coverage of the interesting paths across all cases, so that a generator
/// change that stops reaching them fails the test instead of passing vacuously.
#[derive(Default)]
struct Coverage {
    spilled_evicted_to_sink: AtomicUsize,
    spilled_evicted_no_sink: AtomicUsize,
    too_large: AtomicUsize,
    closed_push: AtomicUsize,
    drained_nonempty: AtomicUsize,
    wrapped_multi_lap: AtomicUsize,
}

fn run_push(
    ring: &Ring<Text>,
    model: &mut Model,
    value: &str,
    cov: &Coverage,
) -> Result<(), TestCaseError> {
    let (want, multi) = model.push(value);
    if multi > 0 {
        let counter = if model.sink {
            &cov.spilled_evicted_to_sink
        } else {
            &cov.spilled_evicted_no_sink
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    if model.head > 2 * model.capacity {
        cov.wrapped_multi_lap.fetch_add(1, Ordering::Relaxed);
    }
    match (ring.push(value.to_owned()), want) {
        (Ok(seq), Pushed::Seq(expected)) => prop_assert_eq!(seq, expected),
        (
            Err(PushError::TooLarge {
                value: back,
                len,
                max,
            }),
            Pushed::TooLarge { len: l, max: m },
        ) => {
            cov.too_large.fetch_add(1, Ordering::Relaxed);
            prop_assert_eq!((len, max), (l, m));
            prop_assert_eq!(back, value);
        }
        (Err(PushError::Closed(back)), Pushed::Closed) => {
            cov.closed_push.fetch_add(1, Ordering::Relaxed);
            prop_assert_eq!(back, value);
        }
        (got, want) => {
            return Err(TestCaseError::fail(format!(
                "push of {} bytes: got {got:?}, model says {want:?}",
                value.len()
            )))
        }
    }
    Ok(())
}

fn run_close(ring: &Ring<Text>, model: &mut Model, cov: &Coverage) -> Result<(), TestCaseError> {
    let want = model.close();
    if matches!(want, CloseOutcome::Closed { drained } if drained > 0) {
        cov.drained_nonempty.fetch_add(1, Ordering::Relaxed);
    }
    prop_assert_eq!(ring.close(), want);
    Ok(())
}

fn run_case(setup: Setup, ops: &[Op], cov: &Coverage) -> Result<(), TestCaseError> {
    let log: Log = Arc::default();
    let mut builder = Ring::<Text>::builder()
        .capacity(setup.capacity)
        .slot_bytes(setup.slot_bytes)
        .max_entry_bytes(setup.max_entry);
    if setup.sink {
        let log = Arc::clone(&log);
        builder = builder.sink(move |e: Evicted<String>| log.lock().expect("no panic").push(e));
    }
    let ring = builder.build().expect("valid settings");
    let mut model = Model::new(setup);

    prop_assert_eq!(ring.capacity(), setup.capacity);
    prop_assert_eq!(ring.slot_payload_bytes(), model.payload);
    prop_assert_eq!(ring.max_entry_bytes(), model.max_entry);
    prop_assert_eq!(ring.has_sink(), setup.sink);
    check(&ring, &model, &log)?;

    for op in ops {
        match op {
            Op::Push(value) => run_push(&ring, &mut model, value, cov)?,
            Op::Snapshot => {
                let expected: Vec<(u64, String)> = model.entries.iter().cloned().collect();
                let snap = ring.snapshot();
                prop_assert_eq!(snap.seqs().collect::<Vec<_>>(), {
                    expected.iter().map(|(s, _)| *s).collect::<Vec<_>>()
                });
                prop_assert_eq!(snap.into_entries(), expected);
            }
            Op::Join(sep) => prop_assert_eq!(ring.join(sep), model.joined(sep)),
            Op::Metrics => {
                let m = ring.metrics();
                prop_assert_eq!(m.retained, m.appended - m.evicted);
                prop_assert_eq!(m.appended, model.appended);
            }
            Op::Close => run_close(&ring, &mut model, cov)?,
        }
        check(&ring, &model, &log)?;
    }

    // Every case ends with close, a late push, and a second close.
    run_close(&ring, &mut model, cov)?;
    check(&ring, &model, &log)?;
    run_push(&ring, &mut model, "late", cov)?;
    check(&ring, &model, &log)?;
    prop_assert_eq!(ring.close(), CloseOutcome::AlreadyClosed);
    check(&ring, &model, &log)?;

    if setup.sink {
        // Exactly once: every appended entry reached the sink, once.
        let received = log.lock().expect("no panic").clone();
        prop_assert_eq!(received.len() as u64, model.appended);
        let mut seqs: Vec<u64> = received.iter().map(|e| e.seq).collect();
        seqs.dedup();
        prop_assert_eq!(seqs.len(), received.len(), "a seq handed over twice");
        prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]), "out of order");
    }
    Ok(())
}

#[test]
fn single_thread_ring_matches_the_ticket_model() {
    let defaults = Config::default();
    let config = Config {
        // 512 cases take well under a second in debug; PROPTEST_CASES overrides.
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            defaults.cases
        } else {
            512
        },
        // Do not write regression files into the source tree.
        failure_persistence: None,
        ..defaults
    };
    let mut runner = TestRunner::new(config);
    let cov = Coverage::default();
    let result = runner.run(&scenario(), |(setup, ops)| run_case(setup, &ops, &cov));
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, (setup, ops))) => {
            panic!("{reason}\nminimal case: {setup:?}\nops: {ops:#?}")
        }
        Err(e) => panic!("{e}"),
    }
    let count = |c: &AtomicUsize| c.load(Ordering::Relaxed);
    for (what, n) in [
        (
            "spilled entry evicted to a sink",
            count(&cov.spilled_evicted_to_sink),
        ),
        (
            "spilled entry evicted without sink",
            count(&cov.spilled_evicted_no_sink),
        ),
        ("too-large push", count(&cov.too_large)),
        ("push after close", count(&cov.closed_push)),
        ("close draining entries", count(&cov.drained_nonempty)),
        ("ring wrapped twice", count(&cov.wrapped_multi_lap)),
    ] {
        assert!(n > 0, "the generator never reached: {what}");
    }
}

/// One ticket per entry, spelled out: long and short entries take one seq
/// each, a ring of 4 keeps the newest 4 whatever their lengths, and each
/// evicted entry reaches the sink whole, once.
#[test]
fn long_entries_take_one_ticket_each() {
    let log: Log = Arc::default();
    let sink_log = Arc::clone(&log);
    let ring = Ring::<Text>::builder()
        .capacity(4)
        .slot_bytes(24) // 8 payload bytes inline
        .sink(move |e: Evicted<String>| sink_log.lock().unwrap().push(e))
        .build()
        .unwrap();
    let values: Vec<String> = (0..10)
        .map(|i| format!("{i}:{}", "x".repeat([0, 6, 7, 20, 300, 9][i % 6])))
        .collect();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(ring.push(v.as_str()).unwrap(), i as u64);
    }
    let snap = ring.snapshot();
    let newest: Vec<(u64, String)> = (6..10).map(|i| (i, values[i as usize].clone())).collect();
    assert_eq!(snap.entries(), &newest[..]);
    let evicted: Vec<(u64, String)> = log
        .lock()
        .unwrap()
        .iter()
        .map(|e| (e.seq, e.value.clone()))
        .collect();
    let oldest: Vec<(u64, String)> = (0..6).map(|i| (i, values[i as usize].clone())).collect();
    assert_eq!(evicted, oldest);
    let m = ring.metrics();
    assert_eq!((m.appended, m.evicted, m.retained), (10, 6, 4));
    assert_eq!(ring.close(), CloseOutcome::Closed { drained: 4 });
}
