#![cfg(not(loom))]
//! Every error path of the ring layer: the variant, what it carries, a Display
//! text that says what went wrong (with the numbers), and that nothing was
//! stored or lost.

use std::borrow::Borrow;
use std::error::Error as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use callring::{
    BuildError, Bytes, CloseOutcome, DecodeError, EncodeError, Evicted, PushError, Reason, Record,
    Ring, Text, DEFAULT_MAX_ENTRY_BYTES, MAX_CAPACITY, MAX_ENTRY_BYTES, MAX_SLOT_BYTES,
    MIN_SLOT_BYTES,
};

type Log = Arc<Mutex<Vec<Evicted<String>>>>;

fn logging_sink(log: &Log) -> impl Fn(Evicted<String>) + Send + Sync + 'static {
    let log = Arc::clone(log);
    move |e: Evicted<String>| log.lock().unwrap().push(e)
}

fn assert_mentions(text: &str, needles: &[&str]) {
    assert!(!text.trim().is_empty(), "empty message");
    for needle in needles {
        assert!(
            text.contains(needle),
            "{text:?} does not mention {needle:?}"
        );
    }
}

fn snapshot_of(ring: &Ring<Text>) -> Vec<(u64, String)> {
    let snap = ring.snapshot();
    assert_eq!(snap.skipped().total(), 0);
    snap.into_entries()
}

// ---------------------------------------------------------------- BuildError

#[test]
fn zero_capacity() {
    let err = Ring::<Text>::new(0).unwrap_err();
    assert_eq!(err, BuildError::ZeroCapacity);
    assert_mentions(&err.to_string(), &["capacity", "at least 1"]);
    let err = Ring::<Text>::builder().capacity(0).build().unwrap_err();
    assert_eq!(err, BuildError::ZeroCapacity);
    // Usable as a boxed error.
    let boxed: Box<dyn std::error::Error> = Box::new(err);
    assert_eq!(boxed.to_string(), err.to_string());
}

#[test]
fn capacity_too_large() {
    for requested in [MAX_CAPACITY + 1, usize::MAX] {
        let err = Ring::<Text>::new(requested).unwrap_err();
        assert_eq!(
            err,
            BuildError::CapacityTooLarge {
                requested,
                max: MAX_CAPACITY
            }
        );
        let text = err.to_string();
        assert_mentions(&text, &[&requested.to_string(), &MAX_CAPACITY.to_string()]);
    }
    assert_eq!(MAX_CAPACITY, 1 << 28);
}

#[test]
fn slot_bytes_out_of_range_or_unaligned() {
    assert_eq!((MIN_SLOT_BYTES, MAX_SLOT_BYTES), (24, 4096));
    for requested in [
        0,
        8,
        16,                 // too small (a multiple of 8)
        25,                 // not a multiple of 8
        100,                // not a multiple of 8
        4095,               // not a multiple of 8
        MAX_SLOT_BYTES + 8, // too large (a multiple of 8)
        usize::MAX,
    ] {
        let err = Ring::<Text>::builder()
            .capacity(4)
            .slot_bytes(requested)
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            BuildError::SlotBytes {
                requested,
                min: MIN_SLOT_BYTES,
                max: MAX_SLOT_BYTES
            },
            "slot_bytes({requested})"
        );
        assert_mentions(
            &err.to_string(),
            &[&requested.to_string(), "24", "4096", "multiple of 8"],
        );
    }
    // The edges themselves are fine.
    for ok in [MIN_SLOT_BYTES, 32, MAX_SLOT_BYTES] {
        let ring = Ring::<Text>::builder()
            .capacity(2)
            .slot_bytes(ok)
            .build()
            .unwrap();
        assert_eq!(ring.slot_payload_bytes(), ok - 16);
    }
}

#[test]
fn max_entry_bytes_out_of_range() {
    let err = Ring::<Text>::builder()
        .max_entry_bytes(MAX_ENTRY_BYTES + 1)
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::MaxEntryBytes {
            requested: MAX_ENTRY_BYTES + 1,
            max: MAX_ENTRY_BYTES
        }
    );
    assert_mentions(
        &err.to_string(),
        &[
            &(MAX_ENTRY_BYTES + 1).to_string(),
            &MAX_ENTRY_BYTES.to_string(),
        ],
    );
    // Both ends of the accepted range build; 0 accepts only the empty entry.
    let ring = Ring::<Text>::builder()
        .max_entry_bytes(MAX_ENTRY_BYTES)
        .build()
        .unwrap();
    let longest = "L".repeat(MAX_ENTRY_BYTES);
    assert_eq!(ring.push(longest.as_str()).unwrap(), 0);
    assert_eq!(ring.snapshot().into_entries(), [(0, longest)]);
    let ring = Ring::<Text>::builder().max_entry_bytes(0).build().unwrap();
    assert_eq!(ring.push("").unwrap(), 0);
    assert!(matches!(
        ring.push("x"),
        Err(PushError::TooLarge { len: 1, max: 0, .. })
    ));
    assert_eq!(
        Ring::<Text>::new(1).unwrap().max_entry_bytes(),
        DEFAULT_MAX_ENTRY_BYTES
    );
}

#[test]
fn capacity_is_checked_before_slot_bytes() {
    // Both wrong: the capacity is reported (one error, deterministic).
    let err = Ring::<Text>::builder()
        .capacity(0)
        .slot_bytes(7)
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::ZeroCapacity);
}

// ------------------------------------------------------- PushError::TooLarge

#[test]
fn too_large_gives_the_value_back_and_stores_nothing() {
    let ring = Ring::<Text>::builder()
        .capacity(2)
        .max_entry_bytes(224)
        .build()
        .unwrap();
    ring.push("kept").unwrap();
    let before = ring.metrics();
    let max = ring.max_entry_bytes();
    assert_eq!(max, 224);

    let huge = "é".repeat(max / 2) + "x"; // max + 1 bytes, multi-byte
    assert_eq!(huge.len(), max + 1);
    let ptr = huge.as_ptr();
    let err = ring.push(huge.clone()).unwrap_err();
    assert!(
        matches!(err, PushError::TooLarge { len, max: m, .. } if len == max + 1 && m == max),
        "{err:?}"
    );
    assert_eq!(err.value(), &huge);
    assert_mentions(
        &err.to_string(),
        &[&(max + 1).to_string(), &max.to_string()],
    );
    assert_mentions(&format!("{err:?}"), &["TooLarge", &(max + 1).to_string()]);
    assert!(err.source().is_none());
    let back = err.into_value();
    assert_eq!(back, huge);

    // The very same allocation comes back, not a copy.
    let again = ring.push(huge).unwrap_err().into_value();
    assert_eq!(again.as_ptr(), ptr);

    // Borrowed values come back as the same borrow.
    let borrowed: &str = &back;
    let err = ring.push(borrowed).unwrap_err();
    assert!(std::ptr::eq(err.into_value(), borrowed));

    // Nothing stored, no ticket taken.
    assert_eq!(ring.metrics(), before);
    assert_eq!(snapshot_of(&ring), [(0, "kept".to_string())]);
    assert_eq!(ring.push("next").unwrap(), 1);
}

#[test]
fn too_large_on_a_closed_ring_reports_the_size() {
    // The length is checked before the ticket, so a closed ring still says
    // TooLarge for a value it could never hold.
    let ring = Ring::<Text>::builder()
        .capacity(1)
        .max_entry_bytes(112)
        .build()
        .unwrap();
    let _ = ring.close();
    let err = ring.push("x".repeat(113)).unwrap_err();
    assert!(
        matches!(
            err,
            PushError::TooLarge {
                len: 113,
                max: 112,
                ..
            }
        ),
        "{err:?}"
    );
}

/// A value type without `Debug`: `PushError`'s Debug must not need it.
struct Opaque(String);

impl Borrow<str> for Opaque {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[test]
fn push_error_debug_does_not_need_value_debug() {
    let ring = Ring::<Text>::builder()
        .capacity(1)
        .max_entry_bytes(112)
        .build()
        .unwrap();
    let err = ring.push(Opaque("y".repeat(200))).unwrap_err();
    assert_mentions(&format!("{err:?}"), &["TooLarge", "200", "112"]);
    assert_eq!(err.into_value().0.len(), 200);
    let _ = ring.close();
    let err = ring.push(Opaque("late".into())).unwrap_err();
    assert_eq!(format!("{err:?}"), "Closed(..)");
    assert_eq!(err.into_value().0, "late");
}

// --------------------------------------------------------- PushError::Closed

#[test]
fn closed_gives_the_value_back() {
    let ring = Ring::<Text>::new(4).unwrap();
    ring.push("before").unwrap();
    assert_eq!(ring.close(), CloseOutcome::Closed { drained: 0 });
    let before = ring.metrics();
    assert!(before.closed);

    let late = String::from("after close");
    let ptr = late.as_ptr();
    let err = ring.push(late).unwrap_err();
    assert!(matches!(err, PushError::Closed(_)), "{err:?}");
    assert_eq!(err.value(), "after close");
    assert_mentions(&err.to_string(), &["closed"]);
    assert!(err.source().is_none());
    let back = err.into_value();
    assert_eq!((back.as_str(), back.as_ptr()), ("after close", ptr));

    // A value longer than the inline payload is refused the same way.
    let long = "z".repeat(300);
    assert_eq!(ring.push(long.as_str()).unwrap_err().into_value(), long);

    // Nothing stored; the ring stays readable; close is idempotent.
    assert_eq!(ring.metrics(), before);
    assert_eq!(snapshot_of(&ring), [(0, "before".to_string())]);
    assert_eq!(ring.join("|"), "before");
    assert_eq!(ring.close(), CloseOutcome::AlreadyClosed);
    assert_eq!(ring.metrics(), before);
}

// --------------------------------------- PushError::Encode and decode errors

/// Text that refuses to store anything mentioning a password, and that reads
/// back any entry starting with `!` as corrupt.
struct Guarded;

impl Record for Guarded {
    type Value = str;
    type Owned = String;
    type Encoded<'a> = &'a [u8];

    fn encode(value: &str) -> Result<&[u8], EncodeError> {
        if value.contains("password") {
            return Err(EncodeError::custom(format!(
                "refusing a {}-byte secret",
                value.len()
            )));
        }
        Ok(value.as_bytes())
    }

    fn decode(bytes: &[u8]) -> Result<String, DecodeError> {
        if bytes.first() == Some(&b'!') {
            return Err(DecodeError::custom("entry marked corrupt"));
        }
        String::from_utf8(bytes.to_vec()).map_err(|e| DecodeError::InvalidUtf8 {
            valid_up_to: e.utf8_error().valid_up_to(),
        })
    }
}

#[test]
fn encode_error_gives_the_value_back_and_stores_nothing() {
    let ring = Ring::<Guarded>::new(3).unwrap();
    assert_eq!(ring.push("hello").unwrap(), 0);
    let before = ring.metrics();

    let secret = String::from("my password is hunter2");
    let err = ring.push(secret.clone()).unwrap_err();
    let PushError::Encode { error, .. } = &err else {
        panic!("expected Encode, got {err:?}");
    };
    assert_eq!(
        *error,
        EncodeError::custom(format!("refusing a {}-byte secret", secret.len()))
    );
    assert_eq!(
        error.to_string(),
        "cannot encode value: refusing a 22-byte secret"
    );
    assert_eq!(err.to_string(), error.to_string());
    assert_eq!(
        err.source().map(ToString::to_string),
        Some(error.to_string())
    );
    assert_mentions(&format!("{err:?}"), &["Encode", "22-byte"]);
    assert_eq!(err.into_value(), secret);

    assert_eq!(ring.metrics(), before);
    assert_eq!(ring.snapshot().into_entries(), [(0, "hello".to_string())]);
    // No ticket was taken.
    assert_eq!(ring.push("world").unwrap(), 1);
}

#[test]
fn encode_runs_before_the_closed_check() {
    // Documented order: encode, length, then the ticket (which sees CLOSED).
    let ring = Ring::<Guarded>::new(1).unwrap();
    let _ = ring.close();
    let err = ring.push("password").unwrap_err();
    assert!(matches!(err, PushError::Encode { .. }), "{err:?}");
    assert!(matches!(
        ring.push("fine").unwrap_err(),
        PushError::Closed("fine")
    ));
}

#[test]
fn undecodable_entry_is_left_out_of_snapshots_and_counted() {
    let ring = Ring::<Guarded>::new(4).unwrap();
    for v in ["ok", "!bad", "fine"] {
        ring.push(v).unwrap();
    }
    assert_eq!(ring.metrics().undecodable, 0);
    let snap = ring.snapshot();
    assert_eq!(
        snap.entries(),
        [(0, "ok".to_string()), (2, "fine".to_string())]
    );
    // Not a concurrency skip: the entry was read whole, it just did not decode.
    assert_eq!(snap.skipped().total(), 0);
    let m = ring.metrics();
    assert_eq!(m.undecodable, 1);
    assert_eq!(m.reader_skips, 0);
    // It is still stored: raw reads see it, and it still counts as retained.
    assert_eq!((m.appended, m.retained), (3, 3));
    let mut raw = Vec::new();
    ring.visit(|seq, bytes| raw.push((seq, bytes.to_vec())));
    assert_eq!(
        raw,
        [
            (0, b"ok".to_vec()),
            (1, b"!bad".to_vec()),
            (2, b"fine".to_vec())
        ]
    );
    assert_eq!(
        DecodeError::custom("x").to_string(),
        "cannot decode entry: x"
    );
}

#[test]
fn undecodable_entry_never_reaches_the_sink_and_is_counted() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let ring = Ring::<Guarded>::builder()
        .capacity(2)
        .sink(tx)
        .build()
        .unwrap();
    for v in ["!bad", "x", "y"] {
        ring.push(v).unwrap(); // "y" evicts "!bad"
    }
    // The sink has nothing it could be given (the value does not decode):
    // nothing arrives, the failure is counted, the ring carries on.
    assert!(rx.try_recv().is_err());
    let m = ring.metrics();
    assert_eq!((m.evicted, m.undecodable, m.refused), (1, 1, 0));
    assert!(ring.take_refused().is_empty());
    ring.push("z").unwrap(); // evicts "x"
    let got: Vec<_> = rx.try_iter().map(|e| (e.seq, e.reason, e.value)).collect();
    assert_eq!(got, [(1, Reason::Evicted, "x".to_string())]);
}

// ------------------------------------------------------------ refusing sink

#[test]
fn disconnected_channel_sink_refuses_and_nothing_is_lost() {
    let (tx, rx) = crossbeam_channel::bounded::<Evicted<String>>(1);
    drop(rx);
    let ring = Ring::<Text>::builder()
        .capacity(2)
        .slot_bytes(32) // 16 payload bytes
        .sink(tx)
        .build()
        .unwrap();
    // "a", "b" fill the ring; "c" evicts "a"; the 20-byte entry (one
    // ticket, 4 bytes in an extension block) evicts "b".
    let long = "twenty bytes exactly";
    assert_eq!(long.len(), 20);
    for (v, seq) in [("a", 0), ("b", 1), ("c", 2), (long, 3)] {
        assert_eq!(ring.push(v).unwrap(), seq, "pushes succeed regardless");
    }
    let m = ring.metrics();
    assert_eq!((m.appended, m.evicted, m.refused), (4, 2, 2));
    assert_eq!(m.sink_panics, 0);
    let refused = ring.take_refused();
    assert_eq!(
        refused,
        [
            Evicted::new(0, Reason::Evicted, "a".to_string()),
            Evicted::new(1, Reason::Evicted, "b".to_string()),
        ]
    );
    assert!(ring.take_refused().is_empty(), "taken once");
    assert_eq!(ring.metrics().refused, 2, "a count, not a queue length");

    // close drains into the same dead channel: refused too, kept too.
    assert_eq!(ring.close(), CloseOutcome::Closed { drained: 2 });
    let m = ring.metrics();
    assert_eq!((m.refused, m.drained), (4, 2));
    assert_eq!(
        ring.take_refused(),
        [
            Evicted::new(2, Reason::Drained, "c".to_string()),
            Evicted::new(3, Reason::Drained, long.to_string()),
        ]
    );
}

// ----------------------------------------------------------- panicking sink

#[test]
fn panicking_sink_resumes_in_push_but_the_entry_is_stored() {
    let log: Log = Arc::default();
    let seen = Arc::clone(&log);
    let ring = Ring::<Text>::builder()
        .capacity(2)
        .sink(move |e: Evicted<String>| {
            if e.value == "boom" {
                panic!("sink exploded on seq {}", e.seq);
            }
            seen.lock().unwrap().push(e);
        })
        .build()
        .unwrap();
    ring.push("boom").unwrap();
    ring.push("b").unwrap();
    // "c" evicts "boom": the sink panics inside this push.
    let payload = catch_unwind(AssertUnwindSafe(|| ring.push("c"))).unwrap_err();
    let message = payload
        .downcast_ref::<String>()
        .expect("formatted panic message");
    assert_eq!(message, "sink exploded on seq 0");

    // The push finished before resuming: "c" is stored at seq 2.
    assert_eq!(
        snapshot_of(&ring),
        [(1, "b".to_string()), (2, "c".to_string())]
    );
    let m = ring.metrics();
    assert_eq!((m.appended, m.evicted, m.sink_panics), (3, 1, 1));
    assert_eq!(m.writer_waits, 0);

    // Later operations work, on the very next ticket.
    assert_eq!(ring.push("d").unwrap(), 3);
    assert_eq!(ring.close(), CloseOutcome::Closed { drained: 2 });
    let got: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .map(|e| (e.seq, e.reason, e.value.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (1, Reason::Evicted, "b".to_string()),
            (2, Reason::Drained, "c".to_string()),
            (3, Reason::Drained, "d".to_string()),
        ]
    );
    assert_eq!(ring.metrics().sink_panics, 1);
}

#[test]
fn panicking_sink_during_a_spilled_push_stores_the_entry() {
    let ring = Ring::<Text>::builder()
        .capacity(3)
        .slot_bytes(24) // 8 payload bytes
        .sink(|e: Evicted<String>| panic!("no archive for {}", e.value))
        .build()
        .unwrap();
    for v in ["a", "b", "c"] {
        ring.push(v).unwrap();
    }
    // 17 bytes: 8 inline, 9 in a block; evicts "a" and resumes its panic.
    let payload = catch_unwind(AssertUnwindSafe(|| ring.push("seventeen bytes!!"))).unwrap_err();
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("no archive for a")
    );
    let kept = [
        (1, "b".to_string()),
        (2, "c".to_string()),
        (3, "seventeen bytes!!".to_string()),
    ];
    assert_eq!(snapshot_of(&ring), kept);
    let m = ring.metrics();
    assert_eq!((m.appended, m.evicted, m.sink_panics), (4, 1, 1));
    assert_eq!(ring.join(""), "bcseventeen bytes!!");
}

#[test]
fn panicking_sink_during_close_finishes_the_drain_then_resumes() {
    let log: Log = Arc::default();
    let seen = Arc::clone(&log);
    let ring = Ring::<Text>::builder()
        .capacity(4)
        .sink(move |e: Evicted<String>| {
            if e.seq == 1 {
                panic!("drain hiccup");
            }
            seen.lock().unwrap().push(e);
        })
        .build()
        .unwrap();
    for v in ["a", "b", "c"] {
        ring.push(v).unwrap();
    }
    let payload = catch_unwind(AssertUnwindSafe(|| ring.close())).unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"drain hiccup"));
    // Entries after the panicking one were still handed over.
    let seqs: Vec<_> = log.lock().unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [0, 2]);
    assert!(ring.is_closed());
    assert_eq!(ring.metrics().sink_panics, 1);
    assert_eq!(ring.close(), CloseOutcome::AlreadyClosed);
    assert_eq!(log.lock().unwrap().len(), 2, "no second drain");
    assert!(matches!(ring.push("late"), Err(PushError::Closed("late"))));
}

// ------------------------------------------------------------ other records

#[test]
fn bytes_record_stores_invalid_utf8() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let ring = Ring::<Bytes>::builder()
        .capacity(1)
        .max_entry_bytes(200)
        .sink(tx)
        .build()
        .unwrap();
    let junk: &[u8] = &[0xff, 0xfe, 0x00, 0xc3, 0x28, 0x80];
    ring.push(junk).unwrap();
    assert_eq!(ring.snapshot().into_entries(), [(0, junk.to_vec())]);
    ring.push(vec![0xc0u8; 300]).unwrap_err(); // longer than max_entry_bytes
    ring.push(Vec::new()).unwrap(); // empty: evicts `junk`
    let e = rx.try_recv().unwrap();
    assert_eq!(
        (e.seq, e.reason, e.value),
        (0, Reason::Evicted, junk.to_vec())
    );
    assert_eq!(ring.snapshot().into_entries(), [(1, Vec::new())]);
    assert_eq!(ring.metrics().undecodable, 0);
}

// -------------------------------------------------------- capacity-1 edges

#[test]
fn capacity_one_and_the_exact_size_limit() {
    let ring = Ring::<Text>::builder()
        .capacity(1)
        .max_entry_bytes(112)
        .build()
        .unwrap();
    assert_eq!(ring.capacity(), 1);
    assert_eq!(ring.slot_payload_bytes(), 112);
    assert_eq!(ring.max_entry_bytes(), 112);

    let exact = "x".repeat(112);
    assert_eq!(ring.push(exact.as_str()).unwrap(), 0);
    assert_eq!(snapshot_of(&ring), [(0, exact.clone())]);

    // Exactly the limit with multi-byte characters: overwrites the first.
    let wide = "é".repeat(56);
    assert_eq!(wide.len(), 112);
    assert_eq!(ring.push(wide.as_str()).unwrap(), 1);
    assert_eq!(snapshot_of(&ring), [(1, wide.clone())]);

    // One more byte does not fit, and changes nothing.
    let before = ring.metrics();
    let over = "x".repeat(113);
    let err = ring.push(over.as_str()).unwrap_err();
    assert!(
        matches!(
            err,
            PushError::TooLarge {
                len: 113,
                max: 112,
                ..
            }
        ),
        "{err:?}"
    );
    assert_mentions(&err.to_string(), &["113", "112"]);
    assert_eq!(err.into_value(), over);
    assert_eq!(ring.metrics(), before);
    assert_eq!(snapshot_of(&ring), [(1, wide.clone())]);

    // The empty entry takes a slot too.
    assert_eq!(ring.push("").unwrap(), 2);
    assert_eq!(snapshot_of(&ring), [(2, String::new())]);
    let m = ring.metrics();
    assert_eq!((m.appended, m.evicted, m.retained), (3, 2, 1));
    assert_eq!(ring.join(", "), "");
}

#[test]
fn capacity_one_smallest_slot_with_a_sink() {
    let log: Log = Arc::default();
    let ring = Ring::<Text>::builder()
        .capacity(1)
        .slot_bytes(MIN_SLOT_BYTES)
        .max_entry_bytes(20)
        .sink(logging_sink(&log))
        .build()
        .unwrap();
    assert_eq!((ring.slot_payload_bytes(), ring.max_entry_bytes()), (8, 20));
    assert_eq!(ring.push("8 bytes!").unwrap(), 0);
    assert!(matches!(
        ring.push("twenty-one bytes long"),
        Err(PushError::TooLarge {
            len: 21,
            max: 20,
            ..
        })
    ));
    assert_eq!(ring.push("twenty bytes exactly").unwrap(), 1); // 8 + 12 spilled
    assert_eq!(ring.push("€€").unwrap(), 2); // 6 bytes: gives the block back
    assert_eq!(ring.close(), CloseOutcome::Closed { drained: 1 });
    assert_eq!(
        *log.lock().unwrap(),
        [
            Evicted::new(0, Reason::Evicted, "8 bytes!".to_string()),
            Evicted::new(1, Reason::Evicted, "twenty bytes exactly".to_string()),
            Evicted::new(2, Reason::Drained, "€€".to_string()),
        ]
    );
}

// ------------------------------------------------------ panicking decode

/// Text whose `decode` panics on `boom` (a buggy user `Record`).
struct Panicky;

impl Record for Panicky {
    type Value = str;
    type Owned = String;
    type Encoded<'a> = &'a [u8];

    fn encode(value: &str) -> Result<&[u8], EncodeError> {
        Ok(value.as_bytes())
    }

    fn decode(bytes: &[u8]) -> Result<String, DecodeError> {
        assert!(bytes != b"boom", "decode bug");
        Ok(String::from_utf8(bytes.to_vec()).expect("pushed as str"))
    }
}

/// Runs `f` on another thread and fails (instead of hanging) if it does not
/// finish within a few seconds.
fn finishes<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} hangs"))
}

#[test]
fn decode_panic_during_eviction_does_not_wedge_the_slot() {
    let log = Log::default();
    let ring = Arc::new(
        Ring::<Panicky>::builder()
            .capacity(1)
            .sink(logging_sink(&log))
            .build()
            .unwrap(),
    );
    ring.push("boom").unwrap();
    // Evicting "boom" runs the panicking decode between the ticket and the
    // commit; the push must still commit "x" before resuming the panic.
    assert!(catch_unwind(AssertUnwindSafe(|| ring.push("x"))).is_err());
    let r = Arc::clone(&ring);
    assert_eq!(
        finishes("a push after a decode panic", move || r.push("y").unwrap()),
        2
    );
    let r = Arc::clone(&ring);
    let outcome = finishes("close after a decode panic", move || r.close());
    assert_eq!(outcome, CloseOutcome::Closed { drained: 1 });
    let got: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.value.clone())
        .collect();
    assert_eq!(got, ["x", "y"]);
    assert_eq!(ring.metrics().undecodable, 1);
}

#[test]
fn decode_panic_during_drain_finishes_the_drain_then_resumes() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let ring = Ring::<Panicky>::builder()
        .capacity(4)
        .sink(tx)
        .build()
        .unwrap();
    for v in ["a", "boom", "b"] {
        ring.push(v).unwrap();
    }
    assert!(catch_unwind(AssertUnwindSafe(|| ring.close())).is_err());
    assert_eq!(ring.close(), CloseOutcome::AlreadyClosed);
    let got: Vec<_> = rx.try_iter().map(|e| (e.seq, e.value)).collect();
    assert_eq!(got, [(0, "a".to_string()), (2, "b".to_string())]);
    let m = ring.metrics();
    assert_eq!((m.drained, m.undecodable), (2, 1));
}

#[test]
fn close_outcome_counts_only_what_reached_the_sink() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let ring = Ring::<Guarded>::builder()
        .capacity(4)
        .sink(tx)
        .build()
        .unwrap();
    ring.push("!bad").unwrap();
    ring.push("good").unwrap();
    assert_eq!(ring.close(), CloseOutcome::Closed { drained: 1 });
    assert_eq!(rx.try_iter().count(), 1);
    assert_eq!(ring.metrics().drained, 1);
}
