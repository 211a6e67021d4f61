//! `Ring<R>`: a fixed-capacity, overwrite-oldest ring of atomic-word slots.
//!
//! The scheme is the ticket/lap one of Dmitry Vyukov's bounded MPMC queue (as
//! in crossbeam-queue's `ArrayQueue`), without the consumer side: a single
//! counter hands out tickets, ticket `t` lives in slot `t % N`, and the writer
//! of `t` may use the slot only once the previous lap's ticket `t - N` has been
//! committed there. Each slot is a seqlock (see `slot.rs`), so readers copy
//! entries without taking anything and discard what changed under them.
//!
//! - `write.rs`: push, eviction capture and hand-off to the sink, close/drain.
//! - `read.rs`: the validated scan behind `visit`, `snapshot` and `join`.
//!
//! Orderings outside the slot itself are labelled here and in `write.rs`:
//! W1 (previous-lap wait), W4 (continuation wait), D1 (drain wait); each
//! names its pair where it is used.

mod read;
mod write;

use std::fmt;
use std::marker::PhantomData;

use crossbeam_queue::SegQueue;

use crate::error::BuildError;
use crate::record::Record;
use crate::sink::{Evicted, Sink};
use crate::slot::{Slot, MAX_CHUNKS, OVERHEAD_WORDS};
use crate::sync::{AtomicU64, CachePadded, Counter, OnceLock, Ordering};

pub use read::{Skipped, Snapshot};
pub use write::CloseOutcome;

/// Set in `head` by `close`; tickets taken with it set are refused.
const CLOSED: u64 = 1 << 63;
/// `close_ticket` before `close` has published the end of the ring.
const OPEN: u64 = u64::MAX;

/// Default slot size: a stamp, a header and 14 payload words (112 bytes), two
/// cache lines. An 82-byte note fits in one slot.
pub const DEFAULT_SLOT_BYTES: usize = 128;
/// Smallest slot: stamp, header and one payload word.
pub const MIN_SLOT_BYTES: usize = 8 * (OVERHEAD_WORDS + 1);
/// Largest slot.
pub const MAX_SLOT_BYTES: usize = 4096;
/// Most slots a ring may have (2^28).
pub const MAX_CAPACITY: usize = 1 << 28;
/// Slots are allocated in pages of about this many bytes, on first use.
const PAGE_BYTES: usize = 4096;

/// A fixed-capacity, overwrite-oldest, lock-free ring of entries.
///
/// Any number of threads push through `&self` (share it in an `Arc`); readers
/// take snapshots at any time without blocking writers, and never see a torn
/// entry. When the ring is full, each push overwrites the oldest entry; with a
/// [`Sink`] attached, the overwritten entry is handed to the sink first, whole
/// and exactly once. [`close`](Ring::close) stops pushes and hands everything
/// still in the ring to the sink.
///
/// Progress: readers never wait (a reader that overlaps the instant of
/// `close` may yield once while `close` publishes where the ring ends). A
/// writer waits only when the writer of the same slot one lap earlier (N
/// pushes ago) has not finished, or, with a sink, behind the capture of the
/// entry it overwrites. That is lock-free in practice, not wait-free.
///
/// Entries longer than one slot's payload span consecutive slots; their
/// sequence numbers then skip the extra slots (sequence numbers always grow but
/// are only contiguous when every entry fits one slot).
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use std::sync::Arc;
/// use callring::{Ring, Text};
///
/// let ring = Arc::new(Ring::<Text>::new(3).expect("valid capacity"));
/// std::thread::scope(|s| {
///     for agent in 0..2 {
///         let ring = &ring;
///         s.spawn(move || {
///             for i in 0..3 {
///                 ring.push(format!("agent {agent} note {i}")).expect("open");
///             }
///         });
///     }
/// });
/// let snapshot = ring.snapshot();
/// assert_eq!(snapshot.len(), 3); // the newest three of six
/// assert_eq!(snapshot.seqs().collect::<Vec<_>>(), [3, 4, 5]);
/// # }
/// ```
pub struct Ring<R: Record> {
    /// Next ticket, plus the `CLOSED` bit.
    head: CachePadded<AtomicU64>,
    layout: Layout,
    pages: Box<[OnceLock<Page>]>,
    /// Where the ring ended, published by `close` (or `OPEN`).
    close_ticket: AtomicU64,
    sink: Option<Box<dyn Sink<R::Owned>>>,
    /// Entries a sink refused: kept, not dropped.
    refused: SegQueue<Evicted<R::Owned>>,
    stats: CachePadded<Stats>,
    _record: PhantomData<fn() -> R>,
}

/// Geometry of a ring: how tickets map to words.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// N, in slots.
    capacity: u64,
    /// Stamp + header + payload words.
    words_per_slot: usize,
    /// Payload bytes per slot.
    payload_bytes: usize,
    /// log2 of the slots in a full page.
    page_shift: u32,
    /// `u64::MAX / capacity`, for `t % capacity` without a division.
    reciprocal: u64,
}

impl Layout {
    fn new(capacity: usize, slot_bytes: usize) -> Result<Self, BuildError> {
        if capacity == 0 {
            return Err(BuildError::ZeroCapacity);
        }
        if capacity > MAX_CAPACITY {
            return Err(BuildError::CapacityTooLarge {
                requested: capacity,
                max: MAX_CAPACITY,
            });
        }
        if !slot_bytes.is_multiple_of(8) || !(MIN_SLOT_BYTES..=MAX_SLOT_BYTES).contains(&slot_bytes)
        {
            return Err(BuildError::SlotBytes {
                requested: slot_bytes,
                min: MIN_SLOT_BYTES,
                max: MAX_SLOT_BYTES,
            });
        }
        let words_per_slot = slot_bytes / 8;
        // Largest power of two of slots that fits in a page (at least one).
        let per_page = (PAGE_BYTES / slot_bytes).max(1);
        let page_shift = usize::BITS - 1 - per_page.leading_zeros();
        Ok(Self {
            capacity: capacity as u64,
            words_per_slot,
            payload_bytes: Slot::payload_bytes(words_per_slot),
            page_shift,
            reciprocal: u64::MAX / capacity as u64,
        })
    }

    fn pages(&self) -> usize {
        let per_page = 1usize << self.page_shift;
        (self.capacity as usize).div_ceil(per_page)
    }

    /// Words in page `page` (the last page holds only the remaining slots).
    fn page_words(&self, page: usize) -> usize {
        let per_page = 1usize << self.page_shift;
        let slots = per_page.min(self.capacity as usize - page * per_page);
        slots * self.words_per_slot
    }

    /// `t % capacity`, by multiplying with the precomputed reciprocal: a
    /// hardware division is most of a single-threaded push's cost otherwise.
    ///
    /// With `m = floor((2^64 - 1) / N)`, `q = floor(t * m / 2^64)` is never
    /// above `floor(t / N)` and, for `t < 2^64`, at most one below it, so
    /// `t - q * N` is in `0..2N` and one conditional subtraction finishes.
    #[inline]
    fn index(&self, t: u64) -> u64 {
        let q = ((u128::from(t) * u128::from(self.reciprocal)) >> 64) as u64;
        let r = t - q * self.capacity;
        if r >= self.capacity {
            r - self.capacity
        } else {
            r
        }
    }

    /// Page and word offset of ticket `t`.
    #[inline]
    fn locate(&self, t: u64) -> (usize, usize) {
        let index = self.index(t) as usize;
        let page = index >> self.page_shift;
        let in_page = index & ((1 << self.page_shift) - 1);
        (page, in_page * self.words_per_slot)
    }

    /// Longest entry, in bytes.
    #[inline]
    fn max_entry_bytes(&self) -> usize {
        let slots = self.capacity.min(MAX_CHUNKS) as usize;
        slots
            .saturating_mul(self.payload_bytes)
            .min(u32::MAX as usize)
    }

    /// Slots an entry of `len` bytes takes, or `None` if it cannot fit.
    #[inline]
    fn chunks_for(&self, len: usize) -> Option<u64> {
        if len <= self.payload_bytes {
            return Some(1); // the common case, without a division
        }
        if len > self.max_entry_bytes() {
            return None;
        }
        Some(len.div_ceil(self.payload_bytes).max(1) as u64)
    }
}

/// One page of slots, starting on a cache-line boundary so that a 128-byte
/// slot covers exactly two lines (a heap block is only 16-byte aligned, and a
/// slot straddling three lines costs a push one more line to own). Aligned
/// without `unsafe`: over-allocate by up to 7 words and start at the first
/// word whose address is a multiple of 64. A page never moves once built.
struct Page {
    words: Box<[AtomicU64]>,
    start: usize,
}

impl Page {
    const LINE_WORDS: usize = 8;

    fn new(words: usize) -> Self {
        let words: Box<[AtomicU64]> = (0..words + Self::LINE_WORDS - 1)
            .map(|_| AtomicU64::new(0))
            .collect();
        // Loom's atomics are not 8 bytes wide; alignment is moot there.
        let start = if cfg!(loom) {
            0
        } else {
            let misaligned = (words.as_ptr() as usize % 64) / 8;
            (Self::LINE_WORDS - misaligned) % Self::LINE_WORDS
        };
        Self { words, start }
    }

    #[inline]
    fn words(&self) -> &[AtomicU64] {
        &self.words[self.start..]
    }
}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Page")
            .field("words", &(self.words.len() - self.start))
            .finish()
    }
}

/// Slow-path counters (see [`Metrics`]).
#[derive(Debug, Default)]
struct Stats {
    /// Tickets beyond the first of multi-slot entries.
    extra_tickets: Counter,
    /// Continuation slots overwritten (not entries of their own).
    evicted_continuations: Counter,
    writer_waits: Counter,
    reader_skips: Counter,
    sink_waits: Counter,
    refused: Counter,
    sink_panics: Counter,
    undecodable: Counter,
    drained: Counter,
}

/// Counters of one ring, read with [`Ring::metrics`].
///
/// Exact once writers are quiescent; while pushes are in flight `evicted` and
/// `retained` may be off by the entries being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Metrics {
    /// Capacity in slots.
    pub capacity: u64,
    /// Entries pushed (not counting refused pushes).
    pub appended: u64,
    /// Entries overwritten by newer ones (with a sink: handed over as evicted).
    pub evicted: u64,
    /// Entries still in the ring: `appended - evicted`.
    pub retained: u64,
    /// Times a writer had to wait for a slot (a stalled previous-lap writer,
    /// or the capture of the entry it overwrites).
    pub writer_waits: u64,
    /// Entries readers skipped because they were in flight or overwritten.
    pub reader_skips: u64,
    /// Hand-offs where the sink made the writer wait (back-pressure).
    pub sink_waits: u64,
    /// Entries the sink refused; kept for [`Ring::take_refused`].
    pub refused: u64,
    /// Hand-offs during which the sink panicked.
    pub sink_panics: u64,
    /// Failed decodes (a `Record` bug): one per snapshot or hand-off that
    /// met an entry whose bytes `decode` rejected or panicked on. Such an
    /// entry is left out of snapshots and never reaches the sink.
    pub undecodable: u64,
    /// Entries handed to the sink by `close`.
    pub drained: u64,
    /// Whether the ring is closed.
    pub closed: bool,
}

/// Builds a [`Ring`]: capacity, slot size, and an optional sink.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::{Ring, Text};
///
/// let ring = Ring::<Text>::builder()
///     .capacity(1000)
///     .slot_bytes(256)
///     .sink(|e: callring::Evicted<String>| println!("archive {}: {}", e.seq, e.value))
///     .build()
///     .expect("valid settings");
/// assert_eq!(ring.capacity(), 1000);
/// # }
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<R: Record> {
    capacity: usize,
    slot_bytes: usize,
    sink: Option<Box<dyn Sink<R::Owned>>>,
}

impl<R: Record> fmt::Debug for Builder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("capacity", &self.capacity)
            .field("slot_bytes", &self.slot_bytes)
            .field("sink", &self.sink.is_some())
            .finish()
    }
}

impl<R: Record> Builder<R> {
    /// Number of slots (default 1000). An entry longer than one slot's payload
    /// takes several.
    pub fn capacity(mut self, slots: usize) -> Self {
        self.capacity = slots;
        self
    }

    /// Bytes per slot including its 16 bytes of stamp and header: a multiple of
    /// 8 from 24 to 4096 (default 128, which holds 112 payload bytes).
    pub fn slot_bytes(mut self, bytes: usize) -> Self {
        self.slot_bytes = bytes;
        self
    }

    /// Hands every evicted entry, and on `close` every remaining one, to `sink`.
    pub fn sink(mut self, sink: impl Sink<R::Owned> + 'static) -> Self {
        self.sink = Some(Box::new(sink));
        self
    }

    /// Builds the ring. Slots are allocated lazily, a page at a time, as
    /// tickets first reach them.
    ///
    /// # Errors
    ///
    /// [`BuildError`] for a capacity of 0 or above [`MAX_CAPACITY`], or a slot
    /// size that is not a multiple of 8 in `24..=4096`.
    pub fn build(self) -> Result<Ring<R>, BuildError> {
        let layout = Layout::new(self.capacity, self.slot_bytes)?;
        let pages = (0..layout.pages()).map(|_| OnceLock::new()).collect();
        let ring = Ring {
            head: CachePadded::new(AtomicU64::new(0)),
            layout,
            pages,
            close_ticket: AtomicU64::new(OPEN),
            sink: self.sink,
            refused: SegQueue::new(),
            stats: CachePadded::new(Stats::default()),
            _record: PhantomData,
        };
        // Under loom, allocate every page now, before the model's threads run,
        // so page initialisation (std's OnceLock, invisible to loom) never races.
        if cfg!(loom) {
            for page in 0..ring.pages.len() {
                ring.page(page);
            }
        }
        Ok(ring)
    }
}

impl<R: Record> Ring<R> {
    /// A ring of `capacity` slots of [`DEFAULT_SLOT_BYTES`], without a sink.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroCapacity`] or [`BuildError::CapacityTooLarge`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// let ring = callring::Ring::<callring::Text>::new(500).expect("valid capacity");
    /// assert_eq!(ring.capacity(), 500);
    /// assert!(ring.is_empty());
    /// # }
    /// ```
    pub fn new(capacity: usize) -> Result<Self, BuildError> {
        Self::builder().capacity(capacity).build()
    }

    /// A builder with the defaults: 1000 slots of 128 bytes, no sink.
    pub fn builder() -> Builder<R> {
        Builder {
            capacity: 1000,
            slot_bytes: DEFAULT_SLOT_BYTES,
            sink: None,
        }
    }

    /// Capacity in slots.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.layout.capacity as usize
    }

    /// Payload bytes one slot holds; longer entries span several slots.
    #[must_use]
    pub fn slot_payload_bytes(&self) -> usize {
        self.layout.payload_bytes
    }

    /// Longest entry the ring accepts, in bytes.
    #[must_use]
    pub fn max_entry_bytes(&self) -> usize {
        self.layout.max_entry_bytes()
    }

    /// Entries currently retained (see [`Metrics::retained`]).
    #[must_use]
    pub fn len(&self) -> usize {
        self.metrics().retained as usize
    }

    /// Whether no entry is retained.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether [`close`](Ring::close) has been called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        // Relaxed: a status read; it publishes nothing and orders nothing.
        self.head.load(Ordering::Relaxed) & CLOSED != 0
    }

    /// Whether a sink is attached.
    #[must_use]
    pub fn has_sink(&self) -> bool {
        self.sink.is_some()
    }

    /// The ring's counters. Computing them costs a few loads; nothing on the
    /// push fast path updates a shared counter.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// let ring = callring::Ring::<callring::Text>::new(2).expect("valid");
    /// for note in ["a", "b", "c"] {
    ///     ring.push(note).expect("open");
    /// }
    /// let m = ring.metrics();
    /// assert_eq!((m.appended, m.retained, m.evicted), (3, 2, 1));
    /// # }
    /// ```
    #[must_use]
    pub fn metrics(&self) -> Metrics {
        let tickets = self.end_ticket();
        let s = &*self.stats;
        // Relaxed: statistics; exact once writers are quiescent.
        let load = |c: &Counter| c.load(Ordering::Relaxed);
        let appended = tickets.saturating_sub(load(&s.extra_tickets));
        let evicted = tickets
            .saturating_sub(self.layout.capacity)
            .saturating_sub(load(&s.evicted_continuations))
            .min(appended);
        Metrics {
            capacity: self.layout.capacity,
            appended,
            evicted,
            retained: appended - evicted,
            writer_waits: load(&s.writer_waits),
            reader_skips: load(&s.reader_skips),
            sink_waits: load(&s.sink_waits),
            refused: load(&s.refused),
            sink_panics: load(&s.sink_panics),
            undecodable: load(&s.undecodable),
            drained: load(&s.drained),
            closed: self.is_closed(),
        }
    }

    /// Takes the entries the sink refused (for example because its channel's
    /// receiver was dropped), oldest hand-off first. They are kept until taken.
    #[must_use]
    pub fn take_refused(&self) -> Vec<Evicted<R::Owned>> {
        std::iter::from_fn(|| self.refused.pop()).collect()
    }

    /// Tickets taken so far (by pushes that were not refused): one past the
    /// newest entry's ticket. Changes whenever a push takes a ticket.
    #[inline]
    pub(crate) fn tickets(&self) -> u64 {
        self.end_ticket()
    }

    /// One past the last ticket readers should look at: the head, or where
    /// `close` ended the ring (pushes refused after it still bump the head).
    #[inline]
    fn end_ticket(&self) -> u64 {
        // Relaxed: the head value only bounds the scan. An entry whose push
        // happened-before this call has its fetch_add ordered before this load
        // (coherence), and its contents are read through the stamps (R1).
        let head = self.head.load(Ordering::Relaxed);
        if head & CLOSED == 0 {
            return head;
        }
        let mut backoff = crate::sync::Backoff::new();
        loop {
            // Relaxed: only the value matters; `close` stores it right after
            // setting CLOSED, and it is a copy of what its fetch_or returned.
            let end = self.close_ticket.load(Ordering::Relaxed);
            if end != OPEN {
                return end;
            }
            backoff.snooze();
        }
    }

    #[inline(always)]
    fn page(&self, page: usize) -> &[AtomicU64] {
        match self.pages[page].get() {
            Some(built) => built.words(),
            None => self.first_touch(page),
        }
    }

    /// Builds page `page` (or finds it built by a racing writer).
    #[cold]
    #[inline(never)]
    fn first_touch(&self, page: usize) -> &[AtomicU64] {
        self.pages[page]
            .get_or_init(|| Page::new(self.layout.page_words(page)))
            .words()
    }

    /// The slot of ticket `t`, allocating its page on first use. Always
    /// inlined: returned from a call, the slot goes through memory and the
    /// caller reloads it in a wider load that store forwarding cannot serve.
    #[inline(always)]
    fn slot(&self, t: u64) -> Slot<'_> {
        let (page, offset) = self.layout.locate(t);
        let words = self.page(page);
        Slot::new(&words[offset..offset + self.layout.words_per_slot])
    }

    /// The slot of ticket `t` if its page exists (readers never allocate),
    /// remembering the last page looked up: a scan walks slots in order, so
    /// it looks each page up once instead of once per entry.
    #[inline(always)]
    fn slot_cached<'a>(
        &'a self,
        t: u64,
        cache: &mut Option<(usize, &'a [AtomicU64])>,
    ) -> Option<Slot<'a>> {
        let (page, offset) = self.layout.locate(t);
        let words = match *cache {
            Some((cached, words)) if cached == page => words,
            _ => {
                let words = self.pages[page].get()?.words();
                *cache = Some((page, words));
                words
            }
        };
        Some(Slot::new(
            &words[offset..offset + self.layout.words_per_slot],
        ))
    }

    /// The slot of ticket `t` if its page exists (readers never allocate).
    #[inline(always)]
    fn slot_if_allocated(&self, t: u64) -> Option<Slot<'_>> {
        let (page, offset) = self.layout.locate(t);
        let words = self.pages[page].get()?.words();
        Some(Slot::new(
            &words[offset..offset + self.layout.words_per_slot],
        ))
    }
}

impl<R: Record> fmt::Debug for Ring<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.layout.capacity)
            .field("slot_payload_bytes", &self.layout.payload_bytes)
            .field("sink", &self.sink.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout(capacity: usize) -> Layout {
        Layout::new(capacity, DEFAULT_SLOT_BYTES).expect("valid")
    }

    #[test]
    fn index_matches_remainder_at_the_edges() {
        for n in [
            1,
            2,
            3,
            7,
            1000,
            1023,
            1024,
            1025,
            MAX_CAPACITY - 1,
            MAX_CAPACITY,
        ] {
            let l = layout(n);
            let n = n as u64;
            for t in [
                0,
                1,
                n - 1,
                n,
                n + 1,
                2 * n - 1,
                1 << 62,
                (1 << 63) - 1,
                u64::MAX - 1,
                u64::MAX,
            ] {
                assert_eq!(l.index(t), t % n, "t = {t}, n = {n}");
            }
        }
    }

    proptest! {
        #[test]
        fn index_matches_remainder(n in 1..=MAX_CAPACITY, t in any::<u64>()) {
            prop_assert_eq!(layout(n).index(t), t % n as u64);
        }
    }

    #[test]
    fn pages_start_on_a_cache_line() {
        for words in [3, 16, 512, 4096 / 8] {
            let page = Page::new(words);
            assert_eq!(page.words().as_ptr() as usize % 64, 0);
            assert!(page.words().len() >= words);
        }
    }
}
