//! A door on one atomic word: threads enter and leave without ever waiting;
//! one thread shuts it and can then tell when everyone who got in has left.
//!
//! Used where a shutdown must not race a hand-off that already began: the
//! call layer's audit gate (no audit seq is handed out that `end` does not
//! wait for), the archive's sinks (no event accepted that `stop` does not
//! wait for) and the registry (no call starts that `shutdown` does not
//! end). The word holds the `SHUT` bit and the number of threads inside,
//! so entering and shutting are RMWs on the same word and need no fences or
//! `SeqCst`: each enter falls either before the shut in the word's
//! modification order (it is counted) or after it (it sees `SHUT`).
//!
//! | label | access | pairs with |
//! |---|---|---|
//! | G1 | enter: `fetch_add(1)`, Relaxed | (none: an RMW on the word `shut` writes; see the module docs) |
//! | G2 | leave: `fetch_sub(1)`, Release | E2 |
//! | E1 | shut: `fetch_or(SHUT)`, Relaxed | (none: same-word RMW, see G1) |
//! | E2 | count the threads inside, Acquire | G2 |
//!
//! `wait_empty` parks instead of spinning: a thread inside may be blocked for
//! long (on a full archive channel, say), and a spinning `end` would burn a
//! core behind it. Whoever takes the count to zero while the door is shut
//! (the last thread to leave, a refused enterer backing out, or `shut`
//! itself finding nobody inside) opens a [`Latch`]; the waiter then loads
//! the word with E2, which reads a value in the release sequence of every
//! G2 and so sees what each thread did inside.
//!
//! Loom model: `loom-tests/gate.rs` (through `CallState`).

use crate::sync::{AtomicU64, Latch, Ordering};

/// Set by `shut`; the low bits count the threads inside.
const SHUT: u64 = 1 << 63;

#[derive(Debug)]
pub(crate) struct Door {
    state: AtomicU64,
    /// Opened once the door is shut and nobody is inside.
    empty: Latch,
}

/// A thread inside the door. Leaving is `Drop`, so a panic inside still
/// leaves and a shutdown waiting for it cannot hang.
#[derive(Debug)]
pub(crate) struct Inside<'a>(&'a Door);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        // G2 Release: pairs with E2 (Acquire) in `inside`: everything this
        // thread did inside (a ring push, a channel send) happens-before
        // whatever the shutting thread does once it has seen it leave.
        let before = self.0.state.fetch_sub(1, Ordering::Release);
        self.0.left(before);
    }
}

impl Door {
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicU64::new(0),
            empty: Latch::new(),
        }
    }

    /// After a decrement that found `before`: opens the latch if that took
    /// the count of a shut door to zero.
    fn left(&self, before: u64) {
        if before == SHUT | 1 {
            self.empty.open();
        }
    }

    /// Enters, or `None` once the door is shut.
    pub(crate) fn enter(&self) -> Option<Inside<'_>> {
        // G1 Relaxed: entering publishes nothing; what matters is only where
        // this RMW falls against `shut`'s RMW in the word's modification order.
        let state = self.state.fetch_add(1, Ordering::Relaxed);
        if state & SHUT != 0 {
            // Relaxed: this thread did nothing the shutting thread must see.
            let before = self.state.fetch_sub(1, Ordering::Relaxed);
            self.left(before);
            return None;
        }
        Some(Inside(self))
    }

    /// Shuts the door; true if this call shut it (it was open).
    pub(crate) fn shut(&self) -> bool {
        // E1 Relaxed: an enter either precedes this RMW in the word's
        // modification order (it is counted, and `inside` waits for it) or
        // follows it (it sees SHUT and stays out).
        let before = self.state.fetch_or(SHUT, Ordering::Relaxed);
        if before & !SHUT == 0 {
            self.empty.open();
        }
        before & SHUT == 0
    }

    /// Whether the door has been shut.
    pub(crate) fn is_shut(&self) -> bool {
        // Relaxed: a status read; callers that act on what the threads inside
        // did use `inside` (E2).
        self.state.load(Ordering::Relaxed) & SHUT != 0
    }

    /// Threads inside now.
    pub(crate) fn inside(&self) -> u64 {
        // E2 Acquire: pairs with G2; once this reads 0 after `shut`, everything
        // every thread did inside happens-before the caller's next steps.
        self.state.load(Ordering::Acquire) & !SHUT
    }

    /// Waits, parked, until every thread that got inside has left (call
    /// after `shut`).
    pub(crate) fn wait_empty(&self) {
        self.empty.wait();
        // E2 (in `inside`): the value read is at or after the decrement that
        // opened the latch (which happened-before `open`), so it is in the
        // release sequence of every leaver's G2. It may count refused
        // enterers still backing out; they did nothing inside.
        let _ = self.inside();
    }
}
