//! The audit gate: hands out gap-free audit seqs and lets `end` wait until
//! every seq handed out is in the ring.
//!
//! An audit seq is taken before the event's ring push (the seq is inside the
//! encoded bytes), so without the gate an event that took seq `s` and then
//! lost the race with `end` (its push refused as closed) would leave a gap at
//! `s` in the archive. The gate makes that impossible: a writer enters the
//! [`Door`], takes a seq, pushes, and leaves; `end` shuts the door and waits
//! until no writer is inside before closing the ring. Writers never wait for
//! one another or for `end`. The orderings are the door's (`src/door.rs`).

use crate::door::{Door, Inside};
use crate::sync::{AtomicU64, Ordering};

#[derive(Debug)]
pub(crate) struct Gate {
    door: Door,
    /// The next seq.
    next: AtomicU64,
}

/// A writer inside the gate, holding its seq; dropping it leaves.
#[derive(Debug)]
pub(crate) struct Pass<'a> {
    _inside: Inside<'a>,
    seq: u64,
}

impl Pass<'_> {
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }
}

impl Gate {
    pub(crate) fn new() -> Self {
        Self {
            door: Door::new(),
            next: AtomicU64::new(0),
        }
    }

    /// Enters and takes the next seq, or `None` once shut.
    pub(crate) fn enter(&self) -> Option<Pass<'_>> {
        let inside = self.door.enter()?;
        // Relaxed: the RMW alone makes seqs unique; they are published with
        // the event through the ring's slot stamps.
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        Some(Pass {
            _inside: inside,
            seq,
        })
    }

    /// Shuts the gate and waits until every writer that entered before has
    /// left: their events are in the ring. Returns the number of seqs handed
    /// out, or `None` if already shut (by another call, which may still be
    /// waiting).
    pub(crate) fn shut(&self) -> Option<u64> {
        let first = self.door.shut();
        self.door.wait_empty();
        // Relaxed: every `next` RMW was made by a writer whose leaving we
        // have acquired (E2), so they all happen-before this load.
        first.then(|| self.next.load(Ordering::Relaxed))
    }

    /// Whether `shut` has been called.
    pub(crate) fn is_shut(&self) -> bool {
        self.door.is_shut()
    }

    /// Seqs handed out so far.
    pub(crate) fn issued(&self) -> u64 {
        // Relaxed: a statistic.
        self.next.load(Ordering::Relaxed)
    }
}
