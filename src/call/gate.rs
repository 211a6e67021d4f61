//! The audit gate: hands out gap-free audit seqs and lets `end` wait until
//! every seq handed out is in the ring.
//!
//! An audit seq is taken before the event's ring push (the seq is inside the
//! encoded bytes), so without the gate an event that took seq `s` and then
//! lost the race with `end` (its push refused as closed) would leave a gap at
//! `s` in the archive. The gate makes that impossible: a writer enters (one
//! RMW on `state`), takes a seq, pushes, and leaves; `end` shuts the gate (an
//! RMW on the same word) and waits until no writer is inside before closing
//! the ring. Writers never wait for one another or for `end`.
//!
//! | label | access | pairs with |
//! |---|---|---|
//! | G1 | enter: `state.fetch_add(1)`, Relaxed | (none: the RMW on the word `shut` also writes orders it) |
//! | G2 | leave: `state.fetch_sub(1)`, Release | E2 |
//! | E1 | shut: `state.fetch_or(SHUT)`, Relaxed | (none: same-word RMW, see G1) |
//! | E2 | wait: `state.load()` until no writer inside, Acquire | G2 |

use crate::sync::{AtomicU64, Backoff, Ordering};

/// Set in `state` by `shut`; the low bits count writers inside.
const SHUT: u64 = 1 << 63;

#[derive(Debug)]
pub(crate) struct Gate {
    /// `SHUT` | number of writers inside.
    state: AtomicU64,
    /// The next seq.
    next: AtomicU64,
}

/// A writer inside the gate; leaving is `Drop`, so a panic inside still
/// leaves (and `end` cannot hang on it).
#[derive(Debug)]
pub(crate) struct Pass<'a> {
    gate: &'a Gate,
    seq: u64,
}

impl Pass<'_> {
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        // G2 Release: pairs with E2 (Acquire) in `shut`: the holder's ring
        // push (its ticket RMW on the ring head) happens-before the ring's
        // `close`, so the close's RMW on the head comes after that ticket in
        // the head's modification order and the push is never refused.
        self.gate.state.fetch_sub(1, Ordering::Release);
    }
}

impl Gate {
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicU64::new(0),
            next: AtomicU64::new(0),
        }
    }

    /// Enters and takes the next seq, or `None` once shut.
    pub(crate) fn enter(&self) -> Option<Pass<'_>> {
        // G1 Relaxed: entering publishes nothing; what matters is only where
        // this RMW falls against `shut`'s RMW in the word's modification order.
        let state = self.state.fetch_add(1, Ordering::Relaxed);
        if state & SHUT != 0 {
            // Relaxed: we took no seq and did nothing `shut` must see.
            self.state.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        // Relaxed: the RMW alone makes seqs unique; they are published with
        // the event through the ring's slot stamps.
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        Some(Pass { gate: self, seq })
    }

    /// Shuts the gate and waits until every writer that entered before has
    /// left. Returns the number of seqs handed out, or `None` if already shut.
    pub(crate) fn shut(&self) -> Option<u64> {
        // E1 Relaxed: a writer's G1 either precedes this RMW in the word's
        // modification order (it is counted, and we wait for it below) or
        // follows it (it sees SHUT and takes no seq).
        let before = self.state.fetch_or(SHUT, Ordering::Relaxed);
        let mut backoff = Backoff::new();
        // E2 Acquire: pairs with G2; see there.
        while self.state.load(Ordering::Acquire) & !SHUT != 0 {
            backoff.snooze();
        }
        if before & SHUT != 0 {
            return None;
        }
        // Relaxed: every `next` RMW was made by a writer whose G2 we have
        // acquired, so they all happen-before this load.
        Some(self.next.load(Ordering::Relaxed))
    }

    /// Seqs handed out so far.
    pub(crate) fn issued(&self) -> u64 {
        // Relaxed: a statistic.
        self.next.load(Ordering::Relaxed)
    }
}
