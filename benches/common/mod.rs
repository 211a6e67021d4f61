//! Contenders shared by the benches: every one keeps the last `N` notes.
//!
//! Each bench target includes this module with `mod common;` and uses what it
//! needs, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use callring::{Ring, Text};

/// Entries kept by every contender (the original's `MAX_NOTES`).
pub const N: usize = 1000;

/// An 82-byte call note.
pub const NOTE: &str =
    "Customer confirmed identity via DOB and postcode; consented to a payment plan.    ";

/// A last-`N` store of notes, shared by writer threads.
pub trait Notes: Sync {
    /// The name used as the `BenchmarkId` function name.
    const NAME: &'static str;
    fn new() -> Self;
    fn push(&self, note: &str);
    /// All notes joined by `\n`, oldest first.
    fn join(&self) -> String;
    /// Owned copies of all notes.
    fn snapshot(&self) -> Vec<String>;
}

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
    fn join(&self) -> String {
        self.0.join("\n")
    }
    fn snapshot(&self) -> Vec<String> {
        self.0
            .snapshot()
            .into_entries()
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }
}

/// The baseline "b": `std::sync::Mutex<VecDeque<String>>`, pop-front when full.
pub struct StdMutex(Mutex<VecDeque<String>>);

impl Notes for StdMutex {
    const NAME: &'static str = "std-mutex-vecdeque";
    fn new() -> Self {
        Self(Mutex::new(VecDeque::with_capacity(N)))
    }
    fn push(&self, note: &str) {
        let note = note.to_owned(); // allocate outside the lock
        let old = {
            let mut q = self.0.lock().expect("not poisoned");
            let old = if q.len() == N { q.pop_front() } else { None };
            q.push_back(note);
            old
        };
        drop(old); // free outside the lock
    }
    fn join(&self) -> String {
        let q = self.0.lock().expect("not poisoned");
        let mut out = String::with_capacity(q.iter().map(|s| s.len() + 1).sum());
        for (i, s) in q.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(s);
        }
        out
    }
    fn snapshot(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("not poisoned")
            .iter()
            .cloned()
            .collect()
    }
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
    let per_thread = iters.div_ceil(threads as u64);
    let barrier = Barrier::new(threads + 1);
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    for _ in 0..per_thread {
                        c.push(std::hint::black_box(NOTE));
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
