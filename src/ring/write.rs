//! The write side: push, eviction capture and hand-off, close and drain.
//!
//! A push encodes its value *before* taking tickets, so nothing can fail after
//! the `fetch_add`: a ticket that were never committed would block its slot
//! for every later lap. For each of its `k` tickets the writer then
//!
//! 1. waits until the slot holds the previous lap's ticket committed (W1);
//! 2. with a sink, deals with the entry it is about to overwrite: if this is
//!    that entry's first slot, copies the whole entry out and hands it to the
//!    sink; if it is a
//!    later slot, waits until the entry's first slot has been claimed by its
//!    overwriter, i.e. the capture is done (W4);
//! 3. claims the slot (W2).
//!
//! then issues one release fence (W3), fills every slot, and commits each
//! (W5). Every wait points at an older ticket, so waits cannot form a cycle.

use std::borrow::Borrow;
use std::panic::{self, AssertUnwindSafe};

use super::{Ring, CLOSED};
use crate::error::PushError;
use crate::record::{EncodeError, Record};
use crate::sink::{Delivery, Evicted, Reason, Refused};
use crate::slot::{committed, writer_fence, Header, Slot};
use crate::sync::{Counter, Ordering};

/// What `close` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    pub fn push<V: Borrow<R::Value>>(&self, value: V) -> Result<u64, PushError<V>> {
        match self.push_ref(value.borrow()) {
            Ok(seq) => Ok(seq),
            Err(Rejected::Closed) => Err(PushError::Closed(value)),
            Err(Rejected::TooLarge { len, max }) => Err(PushError::TooLarge { value, len, max }),
            Err(Rejected::Encode(error)) => Err(PushError::Encode { value, error }),
        }
    }

    fn push_ref(&self, value: &R::Value) -> Result<u64, Rejected> {
        let encoded = R::encode(value).map_err(Rejected::Encode)?;
        let bytes = encoded.as_ref();
        let chunks = self
            .layout
            .chunks_for(bytes.len())
            .ok_or(Rejected::TooLarge {
                len: bytes.len(),
                max: self.layout.max_entry_bytes(),
            })?;
        // Relaxed: the ticket only has to be unique, which the RMW's atomicity
        // guarantees; everything it guards is published through the slot stamps
        // (W5/R1). The loom models run with exactly this ordering.
        let ticket = self.head.fetch_add(chunks, Ordering::Relaxed);
        if ticket & CLOSED != 0 {
            return Err(Rejected::Closed);
        }
        if chunks > 1 {
            self.stats
                .extra_tickets
                .fetch_add(chunks - 1, Ordering::Relaxed); // a statistic
        }
        let panic = if chunks == 1 {
            self.write_one(ticket, bytes)
        } else {
            self.write_many(ticket, chunks, bytes)
        };
        if let Some(payload) = panic {
            panic::resume_unwind(payload);
        }
        Ok(ticket)
    }

    /// The common case: an entry that fits one slot.
    #[inline]
    fn write_one(&self, ticket: u64, bytes: &[u8]) -> Option<Panic> {
        let slot = self.slot(ticket);
        let panic = self.take_over(slot, ticket);
        slot.claim(ticket);
        writer_fence();
        slot.fill(
            Header::First {
                len: bytes.len() as u32,
                chunks: 1,
            },
            bytes,
        );
        slot.commit(ticket);
        panic
    }

    /// An entry spanning `chunks` consecutive tickets from `first`.
    fn write_many(&self, first: u64, chunks: u64, bytes: &[u8]) -> Option<Panic> {
        let mut panic = None;
        for ticket in first..first + chunks {
            let caught = self.take_over(self.slot(ticket), ticket);
            panic = panic.or(caught);
            self.slot(ticket).claim(ticket);
        }
        writer_fence();
        // Fill every slot before committing any: a capturer that acquired the
        // first slot's commit reads the later slots without further waits.
        let per_slot = self.layout.payload_bytes;
        for (part, piece) in bytes.chunks(per_slot).enumerate() {
            let header = if part == 0 {
                Header::First {
                    len: bytes.len() as u32,
                    chunks: chunks as u32,
                }
            } else {
                Header::Cont { part: part as u32 }
            };
            self.slot(first + part as u64).fill(header, piece);
        }
        for ticket in first..first + chunks {
            self.slot(ticket).commit(ticket);
        }
        panic
    }

    /// Steps 1 and 2 for ticket `ticket` in `slot`: wait for the previous lap,
    /// then release the entry being overwritten. Returns a caught sink panic.
    #[inline]
    fn take_over(&self, slot: Slot<'_>, ticket: u64) -> Option<Panic> {
        let Some(old) = ticket.checked_sub(self.layout.capacity) else {
            return None; // first lap: the slot was never written
        };
        // W1 Acquire: pairs with W5 (commit Release) of ticket `old`: its
        // header and payload stores happen-before the loads below (capture)
        // and before this writer's own stores to the same words.
        if slot.wait_for(committed(old), Ordering::Acquire) {
            bump(&self.stats.writer_waits);
        }
        match slot.owned_header() {
            Some(Header::First { len, chunks }) if self.sink.is_some() => {
                self.evict(slot, old, len, chunks)
            }
            Some(Header::Cont { part }) => {
                self.evict_continuation(old, part);
                None
            }
            _ => None,
        }
    }

    /// Hands the entry starting at ticket `old` (in `slot`) to the sink. Out of
    /// line: without a sink the push path never comes here.
    #[inline(never)]
    fn evict(&self, slot: Slot<'_>, old: u64, len: u32, chunks: u32) -> Option<Panic> {
        let bytes = self.capture(slot, old, len, chunks);
        self.hand_off(old, Reason::Evicted, &bytes)
    }

    /// Overwriting a later slot of a multi-slot entry: count it, and with a
    /// sink wait for the entry's capture.
    #[cold]
    #[inline(never)]
    fn evict_continuation(&self, cont: u64, part: u32) {
        bump(&self.stats.evicted_continuations);
        if self.sink.is_some() {
            self.await_capture(cont, part);
        }
    }

    /// Waits until the first slot of the entry whose part `part` lives at
    /// ticket `cont` has been claimed by its overwriter, which claims it only
    /// after copying the whole entry, this slot included.
    fn await_capture(&self, cont: u64, part: u32) {
        let Some(first) = cont.checked_sub(u64::from(part)) else {
            return;
        };
        // W4 Acquire: pairs with W2 (claim Release) of the capturer of ticket
        // `first` (or any later stamp of that slot, all Release by writers
        // ordered after it): the capture's loads of this slot happen-before
        // this writer's stores. Loom cannot show this one failing when weakened:
        // the bad outcome is the capture *loading a later store* (the load-
        // buffering shape), which loom does not explore.
        if self
            .slot(first)
            .wait_past(committed(first), Ordering::Acquire)
        {
            bump(&self.stats.writer_waits);
        }
    }

    /// Copies the entry starting at ticket `seq` (whose first slot is `slot`,
    /// owned or excluded by the caller) out of the ring.
    ///
    /// The caller has acquired `committed(seq)` (W1 or D1), and the entry's
    /// writer filled every slot before committing any (`write_many`), so all
    /// the entry's words are visible without waiting for the later slots'
    /// commits. No writer can touch the later slots meanwhile: their
    /// overwriters wait for our claim of the first slot (W4).
    fn capture(&self, slot: Slot<'_>, seq: u64, len: u32, chunks: u32) -> Vec<u8> {
        let len = len as usize;
        let per_slot = self.layout.payload_bytes;
        let mut bytes = Vec::with_capacity(len);
        slot.copy_payload(len.min(per_slot), &mut bytes);
        for part in 1..u64::from(chunks) {
            let remaining = len - bytes.len();
            self.slot(seq + part)
                .copy_payload(remaining.min(per_slot), &mut bytes);
        }
        bytes
    }

    /// Decodes and hands one entry to the sink. Returns a caught panic.
    ///
    /// Runs between a writer's `fetch_add` and its commit, so nothing in it may
    /// unwind: a ticket that is never committed would block its slot forever.
    /// Both the user's `decode` and the sink run under `catch_unwind`; the
    /// caller resumes the panic once its slots are committed.
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
            // in `capture` race with nobody. Entries whose first slot is older
            // than the window were captured by their overwriters, which
            // committed these slots only after handing them over.
            slot.wait_for(committed(ticket), Ordering::Acquire);
            if let Some(Header::First { len, chunks }) = slot.owned_header() {
                let bytes = self.capture(slot, ticket, len, chunks);
                let panic = self.hand_off(ticket, Reason::Drained, &bytes);
                first_panic = first_panic.or(panic);
            }
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
