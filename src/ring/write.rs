//! The write side: push, eviction capture and hand-off, close and drain.
//!
//! A push encodes its value and checks its length *before* taking its ticket,
//! so nothing can fail after the `fetch_add`: a ticket that were never
//! committed would block its slot for every later lap. With its one ticket
//! the writer then
//!
//! 1. waits until the slot holds the previous lap's ticket committed (W1);
//! 2. with a sink, copies the entry it is about to overwrite (inline part and
//!    extension block) and hands it to the sink;
//! 3. claims the slot (stamp = writing);
//! 4. keeps the slot's extension block if the new entry needs the same size
//!    class, otherwise releases it (F1) and takes one of the right class (F2);
//!
//! then issues its release fence (W3), stores the header, the inline bytes and
//! the block's bytes, and commits (W5). The only wait points at an older
//! ticket of the same slot, so waits cannot form a cycle.

use std::borrow::Borrow;
use std::panic::{self, AssertUnwindSafe};

use super::{Ring, CLOSED};
use crate::error::PushError;
use crate::record::{EncodeError, Record};
use crate::sink::{Delivery, Evicted, Reason, Refused};
use crate::slot::{committed, fill_words, writer_fence, Header, Slot};
use crate::sync::{Counter, Ordering};

/// What `close` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseOutcome {
    /// This call closed the ring and handed `drained` entries to the sink
    /// (0 without a sink: the entries stay readable in the ring).
    Closed {
        /// Entries handed to the sink with [`Reason::Drained`].
        drained: u64,
    },
    /// An earlier call had closed the ring; this one did nothing.
    AlreadyClosed,
}

/// Why `push_ref` stored nothing (the value is attached by `push`).
enum Rejected {
    Closed,
    TooLarge { len: usize, max: usize },
    Encode(EncodeError),
}

/// A panic from a sink, caught so the push can finish its commits first.
type Panic = Box<dyn std::any::Any + Send + 'static>;

#[inline]
fn bump(counter: &Counter) {
    // Relaxed: statistics counters publish nothing.
    counter.fetch_add(1, Ordering::Relaxed);
}

impl<R: Record> Ring<R> {
    /// Appends `value`, overwriting the oldest entry when the ring is full, and
    /// returns its sequence number.
    ///
    /// Accepts anything that borrows as the record's value: `&str` or `String`
    /// for [`Text`](crate::Text). Pushing a `&str` into a ring without a sink
    /// allocates nothing. Safe from any number of threads at once.
    ///
    /// # Errors
    ///
    /// The value comes back inside [`PushError`] when the ring is closed, the
    /// encoded value is longer than [`max_entry_bytes`](Ring::max_entry_bytes),
    /// or the record cannot encode it. Nothing is stored in those cases.
    ///
    /// # Panics
    ///
    /// If the attached sink panics during a hand-off, the push first finishes
    /// (its entry is stored) and then resumes the sink's panic.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::{PushError, Ring, Text};
    ///
    /// let ring = Ring::<Text>::new(2).expect("valid capacity");
    /// assert_eq!(ring.push("first").expect("open"), 0);
    /// assert_eq!(ring.push(String::from("second")).expect("open"), 1);
    ///
    /// let huge = "x".repeat(ring.max_entry_bytes() + 1);
    /// let err = ring.push(huge).unwrap_err();
    /// assert!(matches!(err, PushError::TooLarge { .. }));
    /// # }
    /// ```
    #[inline]
    pub fn push<V: Borrow<R::Value>>(&self, value: V) -> Result<u64, PushError<V>> {
        match self.push_ref(value.borrow()) {
            Ok(seq) => Ok(seq),
            Err(Rejected::Closed) => Err(PushError::Closed(value)),
            Err(Rejected::TooLarge { len, max }) => Err(PushError::TooLarge { value, len, max }),
            Err(Rejected::Encode(error)) => Err(PushError::Encode { value, error }),
        }
    }

    #[inline]
    fn push_ref(&self, value: &R::Value) -> Result<u64, Rejected> {
        let encoded = R::encode(value).map_err(Rejected::Encode)?;
        let bytes = encoded.as_ref();
        if bytes.len() > self.layout.max_entry_bytes {
            return Err(Rejected::TooLarge {
                len: bytes.len(),
                max: self.layout.max_entry_bytes,
            });
        }
        // Relaxed: the ticket only has to be unique, which the RMW's atomicity
        // guarantees; everything it guards is published through the slot stamps
        // (W5/R1). The loom models run with exactly this ordering.
        let ticket = self.head.fetch_add(1, Ordering::Relaxed);
        if ticket & CLOSED != 0 {
            return Err(Rejected::Closed);
        }
        if self.sink.is_none() {
            self.write(ticket, bytes);
        } else if let Some(payload) = self.write_with_sink(ticket, bytes) {
            panic::resume_unwind(payload);
        }
        Ok(ticket)
    }

    /// Steps 1, 3 and 4 and the stores for `ticket`, without a sink.
    #[inline(always)]
    fn write(&self, ticket: u64, bytes: &[u8]) {
        let slot = self.slot(ticket);
        let old = self.take_over(slot, ticket);
        self.store(slot, ticket, old, bytes);
    }

    /// [`write`](Ring::write) with step 2: the entry being overwritten goes
    /// to the sink before the slot is claimed. Returns a caught sink panic.
    #[inline(never)]
    fn write_with_sink(&self, ticket: u64, bytes: &[u8]) -> Option<Panic> {
        let slot = self.slot(ticket);
        let old = self.take_over(slot, ticket);
        let panic = match ticket.checked_sub(self.layout.capacity) {
            Some(seq) => self.evict(slot, seq, old),
            None => None,
        };
        self.store(slot, ticket, old, bytes);
        panic
    }

    /// Step 1 for ticket `ticket` in `slot`: waits for the previous lap and
    /// returns the header it left (whose block the caller now owns).
    #[inline(always)]
    fn take_over(&self, slot: Slot<'_>, ticket: u64) -> Header {
        let Some(old) = ticket.checked_sub(self.layout.capacity) else {
            // First lap: the slot was never written.
            return Header::default();
        };
        // W1 Acquire: pairs with W5 (commit Release) of ticket `old`: its
        // header, inline and block stores happen-before the loads below
        // (capture) and before this writer's own stores to the same words.
        if slot.wait_for(committed(old), Ordering::Acquire) {
            bump(&self.stats.writer_waits);
        }
        slot.owned_header()
    }

    /// Steps 3 and 4 and the stores: claim, swap blocks if needed, W3, fill,
    /// commit.
    #[inline(always)]
    fn store(&self, slot: Slot<'_>, ticket: u64, old: Header, bytes: &[u8]) {
        slot.claim(ticket);
        if bytes.len() <= self.layout.inline_bytes && old.block.is_none() {
            // The common case: inline before and after, no block to swap.
            writer_fence();
            slot.fill(
                Header {
                    len: bytes.len() as u32,
                    block: None,
                },
                bytes,
            );
        } else {
            self.store_spilled(ticket, old, bytes);
        }
        slot.commit(ticket);
    }

    /// [`store`](Ring::store) of an entry that spills, or into a slot that
    /// holds a block: everything between the claim and the commit.
    ///
    /// Out of line, and finding the slot again from the ticket: taking the
    /// caller's `Slot` by reference would make every push build one on the
    /// stack, the inline-only ones included.
    #[inline(never)]
    fn store_spilled(&self, ticket: u64, old: Header, bytes: &[u8]) {
        let slot = self.slot(ticket);
        let (inline, tail) = bytes.split_at(bytes.len().min(self.layout.inline_bytes));
        // After the claim (F1 publishes it to the block's next owner), before
        // W3 (which orders the pop before this writer's stores into it).
        let block = self
            .arena
            .swap(old.block, self.layout.tail(old.len as usize), tail.len());
        writer_fence();
        slot.fill(
            Header {
                len: bytes.len() as u32,
                block,
            },
            inline,
        );
        if let Some(block) = block {
            fill_words(self.arena.owned(block, tail.len()), tail);
        }
    }

    /// Hands the entry of ticket `old` (in `slot`) to the sink. Out of line:
    /// without a sink the push path never comes here.
    #[inline(never)]
    fn evict(&self, slot: Slot<'_>, old: u64, header: Header) -> Option<Panic> {
        let bytes = self.capture(slot, header);
        self.hand_off(old, Reason::Evicted, &bytes)
    }

    /// Copies the entry described by `header` out of `slot`, which the caller
    /// owns or excludes every writer from (after an Acquire wait, W1 or D1).
    /// Its extension block is the slot's own: only the slot's next owner
    /// releases it, after this capture.
    fn capture(&self, slot: Slot<'_>, header: Header) -> Vec<u8> {
        let len = header.len as usize;
        let mut bytes = Vec::with_capacity(len);
        slot.copy_inline(len, &mut bytes);
        let tail = self.layout.tail(len);
        if let Some(block) = header.block.filter(|_| tail > 0) {
            crate::slot::copy_words(self.arena.owned(block, tail), tail, &mut bytes);
        }
        bytes
    }

    /// Decodes and hands one entry to the sink. Returns a caught panic.
    ///
    /// Runs between a writer's `fetch_add` and its commit, so nothing in it may
    /// unwind: a ticket that is never committed would block its slot forever.
    /// Both the user's `decode` and the sink run under `catch_unwind`; the
    /// caller resumes the panic once its slot is committed.
    fn hand_off(&self, seq: u64, reason: Reason, bytes: &[u8]) -> Option<Panic> {
        let sink = self.sink.as_deref()?;
        let value = match panic::catch_unwind(AssertUnwindSafe(|| R::decode(bytes))) {
            Ok(Ok(value)) => value,
            Ok(Err(_)) => {
                bump(&self.stats.undecodable);
                return None;
            }
            Err(payload) => {
                bump(&self.stats.undecodable);
                return Some(payload);
            }
        };
        let entry = Evicted::new(seq, reason, value);
        match panic::catch_unwind(AssertUnwindSafe(|| sink.accept(entry))) {
            Ok(Ok(Delivery::Immediate)) => {}
            Ok(Ok(Delivery::AfterWaiting)) => bump(&self.stats.sink_waits),
            Ok(Err(Refused(entry))) => {
                bump(&self.stats.refused);
                self.refused.push(entry);
            }
            Err(payload) => {
                bump(&self.stats.sink_panics);
                return Some(payload);
            }
        }
        if reason == Reason::Drained {
            bump(&self.stats.drained);
        }
        None
    }

    /// Closes the ring: later pushes get their value back in
    /// [`PushError::Closed`]; pushes that took their ticket before finish
    /// normally. With a sink, waits for those and hands every entry still in
    /// the ring to the sink in sequence order, with [`Reason::Drained`].
    /// The drained entries stay readable (snapshots copy them; `retained`
    /// still counts them), so after close the sink holds a copy of the ring.
    ///
    /// Idempotent: only the first call drains (a second drain would hand every
    /// entry over twice); later calls return [`CloseOutcome::AlreadyClosed`]
    /// at once. The ring stays readable after close.
    ///
    /// # Panics
    ///
    /// If the sink (or the record's `decode`) panics during the drain, the
    /// drain first finishes handing over the remaining entries and then
    /// resumes the first panic.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::{CloseOutcome, Reason, Ring, Text};
    ///
    /// let (tx, rx) = crossbeam_channel::unbounded();
    /// let ring = Ring::<Text>::builder().capacity(4).sink(tx).build().expect("valid");
    /// ring.push("greeting").expect("open");
    /// ring.push("consent given").expect("open");
    /// assert_eq!(ring.close(), CloseOutcome::Closed { drained: 2 });
    /// assert_eq!(ring.close(), CloseOutcome::AlreadyClosed);
    /// let drained: Vec<_> = rx.try_iter().map(|e| (e.seq, e.reason)).collect();
    /// assert_eq!(drained, [(0, Reason::Drained), (1, Reason::Drained)]);
    /// # }
    /// ```
    pub fn close(&self) -> CloseOutcome {
        // Relaxed: the RMW alone splits tickets into before and after close
        // (every fetch_add is ordered before or after it); the drain below
        // reads slots through its own Acquire waits (D1).
        let end = self.head.fetch_or(CLOSED, Ordering::Relaxed);
        if end & CLOSED != 0 {
            return CloseOutcome::AlreadyClosed;
        }
        // Relaxed: readers need only the value (see `end_ticket`).
        self.close_ticket.store(end, Ordering::Relaxed);
        if self.sink.is_none() {
            return CloseOutcome::Closed { drained: 0 };
        }
        let mut first_panic = None;
        for ticket in end.saturating_sub(self.layout.capacity)..end {
            let slot = self.slot(ticket);
            // D1 Acquire: pairs with W5 of `ticket`: wait for pushes that took
            // their ticket before close, and see what they stored. No writer
            // can follow them (later tickets are refused), so the plain copies
            // in `capture`, extension block included (only a later owner of
            // this slot could release it), race with nobody. Entries older
            // than the window were captured by their overwriters, which
            // committed these slots only after handing them over.
            slot.wait_for(committed(ticket), Ordering::Acquire);
            let bytes = self.capture(slot, slot.owned_header());
            let panic = self.hand_off(ticket, Reason::Drained, &bytes);
            first_panic = first_panic.or(panic);
        }
        if let Some(payload) = first_panic {
            panic::resume_unwind(payload);
        }
        // Only this call drains (the fetch_or above lets exactly one through),
        // so the counter holds exactly its hand-offs: accepted or refused-and-
        // kept, not undecodable ones nor ones whose sink call panicked.
        CloseOutcome::Closed {
            // Relaxed: bumped only by this thread's hand-offs above.
            drained: self.stats.drained.load(Ordering::Relaxed),
        }
    }
}
