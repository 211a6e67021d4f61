//! Contenders shared by the benches: every one keeps the last `N` notes of an
//! 82-byte note, and every workload starts from a full store (steady-state
//! overwrite).
//!
//! Each bench target includes this module with `mod common;` and uses what it
//! needs, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use callring::call::{CallState, Limits, Timestamp};
use callring::{Ring, Text};
use crossbeam_queue::ArrayQueue;

/// Entries kept by every contender (the original's `MAX_NOTES`).
pub const N: usize = 1000;

/// An 82-byte call note.
pub const NOTE: &str =
    "Customer confirmed identity via DOB and postcode; consented to a payment plan.    ";

/// A 150-byte note: longer than a default slot's 112 inline bytes.
pub const NOTE150: &str =
    "Caller disputed the March invoice; agent offered a callback from billing, \
confirmed the postal address and noted a preference for email contact.......";

/// A last-`N` store of notes, shared by writer threads.
pub trait Notes: Sync + Sized {
    /// The `BenchmarkId` function name.
    const NAME: &'static str;
    fn new() -> Self;
    fn push(&self, note: &str);
    /// All notes joined by `\n`, oldest first; `None` if the contender cannot
    /// read without consuming (a queue).
    fn join(&self) -> Option<String>;
    /// Owned copies of all notes; `None` as for `join`.
    fn snapshot(&self) -> Option<Vec<String>>;
    /// `polls` times: push [`POLL_EVERY`] notes, then join all notes as
    /// [`join`](Notes::join) does, by a reader that keeps whatever state it
    /// can between polls. Total bytes joined; `None` as for `join`. By
    /// default a full [`join`](Notes::join) at every poll.
    fn join_poll(&self, polls: u32) -> Option<usize> {
        let mut total = 0;
        for _ in 0..polls {
            for _ in 0..POLL_EVERY {
                self.push(std::hint::black_box(NOTE));
            }
            total += self.join()?.len();
        }
        Some(total)
    }
}

/// Notes pushed between two polls of the polling workloads.
pub const POLL_EVERY: usize = 10;

/// callring's lock-free ring.
pub struct Callring(Ring<Text>);

impl Notes for Callring {
    const NAME: &'static str = "callring";
    fn new() -> Self {
        Self(Ring::new(N).expect("valid capacity"))
    }
    fn push(&self, note: &str) {
        self.0.push(note).expect("open");
    }
    fn join(&self) -> Option<String> {
        Some(self.0.join("\n"))
    }
    fn snapshot(&self) -> Option<Vec<String>> {
        Some(
            self.0
                .snapshot()
                .into_entries()
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
        )
    }
    fn join_poll(&self, polls: u32) -> Option<usize> {
        // The reader's joiner keeps the joined text: each poll copies in the
        // new notes and drops the overwritten ones; the reader gets the
        // joined text as a `&str` (see `CallringCopy` for a copy of it).
        let mut joiner = self.0.joiner("\n");
        let mut total = 0;
        for _ in 0..polls {
            for _ in 0..POLL_EVERY {
                self.push(std::hint::black_box(NOTE));
            }
            total += std::hint::black_box(joiner.text()).len();
        }
        Some(total)
    }
}

/// callring's ring again, polled by a reader that copies the joined text
/// into its own `String` at every poll (`Joiner::join_into`, the buffer
/// reused): what the copy of ~83 KB costs on top of the joiner.
pub struct CallringCopy(Callring);

impl Notes for CallringCopy {
    const NAME: &'static str = "callring-copy";
    fn new() -> Self {
        Self(Callring::new())
    }
    fn push(&self, note: &str) {
        self.0.push(note);
    }
    fn join(&self) -> Option<String> {
        self.0.join()
    }
    fn snapshot(&self) -> Option<Vec<String>> {
        self.0.snapshot()
    }
    fn join_poll(&self, polls: u32) -> Option<usize> {
        let mut joiner = self.0 .0.joiner("\n");
        let mut text = String::new();
        let mut total = 0;
        for _ in 0..polls {
            for _ in 0..POLL_EVERY {
                self.push(std::hint::black_box(NOTE));
            }
            text.clear();
            joiner.join_into(&mut text);
            total += std::hint::black_box(&text).len();
        }
        Some(total)
    }
}

/// The baseline "b": `std::sync::Mutex<VecDeque<String>>`, pop-front when
/// full. Allocates and frees outside the lock, as a careful user would.
pub struct StdMutex(Mutex<VecDeque<String>>);

impl Notes for StdMutex {
    const NAME: &'static str = "std-mutex";
    fn new() -> Self {
        Self(Mutex::new(VecDeque::with_capacity(N)))
    }
    fn push(&self, note: &str) {
        let note = note.to_owned();
        let old = {
            let mut q = self.0.lock().expect("not poisoned");
            let old = if q.len() == N { q.pop_front() } else { None };
            q.push_back(note);
            old
        };
        drop(old);
    }
    fn join(&self) -> Option<String> {
        Some(join_strings(self.0.lock().expect("not poisoned").iter()))
    }
    fn snapshot(&self) -> Option<Vec<String>> {
        Some(
            self.0
                .lock()
                .expect("not poisoned")
                .iter()
                .cloned()
                .collect(),
        )
    }
}

/// `parking_lot::Mutex<VecDeque<String>>`: the same, with a faster lock.
pub struct ParkingLot(parking_lot::Mutex<VecDeque<String>>);

impl Notes for ParkingLot {
    const NAME: &'static str = "parking_lot";
    fn new() -> Self {
        Self(parking_lot::Mutex::new(VecDeque::with_capacity(N)))
    }
    fn push(&self, note: &str) {
        let note = note.to_owned();
        let old = {
            let mut q = self.0.lock();
            let old = if q.len() == N { q.pop_front() } else { None };
            q.push_back(note);
            old
        };
        drop(old);
    }
    fn join(&self) -> Option<String> {
        Some(join_strings(self.0.lock().iter()))
    }
    fn snapshot(&self) -> Option<Vec<String>> {
        Some(self.0.lock().iter().cloned().collect())
    }
}

/// The original host, faithfully: a `Mutex<Vec<String>>` that appends, and
/// when over `N` replaces the list by its last `N` entries (`notes[-N:]`, a new
/// list every append once full). Joins under the lock.
pub struct SeedVec(Mutex<Vec<String>>);

impl Notes for SeedVec {
    const NAME: &'static str = "seed-vec";
    fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }
    fn push(&self, note: &str) {
        let mut v = self.0.lock().expect("not poisoned");
        v.push(note.to_owned());
        if v.len() > N {
            let start = v.len() - N;
            *v = v.drain(start..).collect();
        }
    }
    fn join(&self) -> Option<String> {
        Some(self.0.lock().expect("not poisoned").join("\n"))
    }
    fn snapshot(&self) -> Option<Vec<String>> {
        Some(self.0.lock().expect("not poisoned").clone())
    }
}

/// `crossbeam_queue::ArrayQueue::force_push`: a lock-free bounded queue that
/// overwrites its oldest element. It cannot be read without consuming, so it
/// only takes part in push workloads.
pub struct Queue(ArrayQueue<String>);

impl Notes for Queue {
    const NAME: &'static str = "arrayqueue";
    fn new() -> Self {
        Self(ArrayQueue::new(N))
    }
    fn push(&self, note: &str) {
        drop(self.0.force_push(note.to_owned()));
    }
    fn join(&self) -> Option<String> {
        None
    }
    fn snapshot(&self) -> Option<Vec<String>> {
        None
    }
}

fn join_strings<'a>(items: impl ExactSizeIterator<Item = &'a String> + Clone) -> String {
    let len: usize = items.clone().map(|s| s.len() + 1).sum();
    let mut out = String::with_capacity(len);
    for (i, s) in items.enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(s);
    }
    out
}

/// Fills a contender to steady state: full, every push overwriting.
pub fn full<C: Notes>() -> C {
    let c = C::new();
    for _ in 0..2 * N {
        c.push(NOTE);
    }
    c
}

/// Wall time for `threads` threads to push `iters` notes in total between
/// them, all released by one barrier. Per-push cost = result / iters.
pub fn timed_pushes<C: Notes>(c: &C, threads: usize, iters: u64) -> Duration {
    timed_pushes_of(c, threads, iters, NOTE)
}

/// [`timed_pushes`] of `note`.
pub fn timed_pushes_of<C: Notes>(c: &C, threads: usize, iters: u64, note: &str) -> Duration {
    let per_thread = iters.div_ceil(threads as u64).max(1);
    let barrier = Barrier::new(threads + 1);
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    for _ in 0..per_thread {
                        c.push(std::hint::black_box(note));
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("writer");
        }
        start.elapsed()
    })
    .mul_f64(iters as f64 / (per_thread * threads as u64) as f64)
}

// ------------------------------------------------------------- call level

/// A fixed clock for the call-level contenders: 2026-11-25 09:30:00 UTC.
pub const CALL_T0: i64 = 1_795_599_000_000_000_000;

/// Appends and renders call notes.
pub trait CallNotes: Sync + Sized {
    const NAME: &'static str;
    fn new() -> Self;
    fn append_note(&self, note: &str);
    fn all_notes(&self) -> String;
    /// `polls` times: append [`POLL_EVERY`] notes, then `all_notes` by a
    /// reader that keeps whatever state it can between polls. Total bytes.
    fn all_notes_poll(&self, polls: u32) -> usize;
}

/// callring's `CallState`.
pub struct Call(CallState);

impl CallNotes for Call {
    const NAME: &'static str = "callring";
    fn new() -> Self {
        Self(
            CallState::builder("bench")
                .limits(Limits::new(N, 500).expect("valid"))
                .clock(Timestamp::now)
                .build(),
        )
    }
    fn append_note(&self, note: &str) {
        self.0.append_note(note).expect("live call");
    }
    fn all_notes(&self) -> String {
        self.0.all_notes()
    }
    fn all_notes_poll(&self, polls: u32) -> usize {
        // A supervisor's cached reader: renders only the new notes.
        let mut reader = self.0.notes_reader();
        let mut total = 0;
        for _ in 0..polls {
            for _ in 0..POLL_EVERY {
                self.append_note(std::hint::black_box(NOTE));
            }
            total += reader.all_notes().len();
        }
        total
    }
}

/// The original host's `CallState`, faithfully: every append formats
/// `[%Y-%m-%d %H:%M:%S] note` with strftime and stores the `String` in a
/// `Mutex<VecDeque<String>>`; `get_all_notes` joins under the lock.
pub struct SeedCall(Mutex<VecDeque<String>>);

impl CallNotes for SeedCall {
    const NAME: &'static str = "std-mutex";
    fn new() -> Self {
        Self(Mutex::new(VecDeque::with_capacity(N)))
    }
    fn append_note(&self, note: &str) {
        let line = format!(
            "[{}] {note}",
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S")
        );
        let old = {
            let mut q = self.0.lock().expect("not poisoned");
            let old = if q.len() == N { q.pop_front() } else { None };
            q.push_back(line);
            old
        };
        drop(old);
    }
    fn all_notes(&self) -> String {
        join_strings(self.0.lock().expect("not poisoned").iter())
    }
    fn all_notes_poll(&self, polls: u32) -> usize {
        // `get_all_notes` joins under the lock at every poll.
        let mut total = 0;
        for _ in 0..polls {
            for _ in 0..POLL_EVERY {
                self.append_note(std::hint::black_box(NOTE));
            }
            total += self.all_notes().len();
        }
        total
    }
}

/// A call store filled to steady state.
pub fn full_call<C: CallNotes>() -> C {
    let c = C::new();
    for _ in 0..2 * N {
        c.append_note(NOTE);
    }
    c
}
