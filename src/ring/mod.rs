//! `Ring<R>`: a fixed-capacity, overwrite-oldest ring of atomic-word slots.
//!
//! The scheme is the ticket/lap one of Dmitry Vyukov's bounded MPMC queue (as
//! in crossbeam-queue's `ArrayQueue`), without the consumer side: a single
//! counter hands out one ticket per entry, ticket `t` lives in slot `t % N`,
//! and the writer of `t` may use the slot only once the previous lap's ticket
//! `t - N` has been committed there. Each slot is a seqlock (see `slot.rs`),
//! so readers copy entries without taking anything and discard what changed
//! under them. Bytes beyond a slot's inline payload go to an extension block
//! of the slot (see `arena.rs`), read under the same seqlock.
//!
//! - `write.rs`: push, eviction capture and hand-off to the sink, close/drain.
//! - `read.rs`: the validated scan behind `visit`, `snapshot` and `join`.
//! - `cursor.rs`: incremental reads (`Cursor`, `read_since`) on that scan.
//! - `lines.rs`: a reader's cache of rendered entries on a cursor (`Joiner`).
//! - `table.rs`: the two-level table of lazily allocated pages.
//! - `arena.rs`: extension blocks in size classes, with free lists.
//!
//! Orderings outside the slot itself are labelled in `write.rs` (W1, the
//! previous-lap wait; D1, the drain wait) and `arena.rs` (F1, F2); each names
//! its pair where it is used.

mod arena;
mod cursor;
mod lines;
mod read;
mod table;
mod write;

use std::fmt;
use std::marker::PhantomData;

use crossbeam_queue::SegQueue;

use self::arena::Arena;
use self::table::Table;
use crate::error::BuildError;
use crate::record::Record;
use crate::sink::{Evicted, Sink};
use crate::slot::{Slot, OVERHEAD_WORDS};
use crate::sync::{AtomicU64, CachePadded, Counter, Ordering};

pub use cursor::{Batch, Cursor, Progress};
pub use lines::Joiner;
#[cfg(feature = "call")]
pub(crate) use lines::Lines;
pub use read::{Skipped, Snapshot};
pub use write::CloseOutcome;

/// Set in `head` by `close`; tickets taken with it set are refused.
const CLOSED: u64 = 1 << 63;
/// `close_ticket` before `close` has published the end of the ring.
const OPEN: u64 = u64::MAX;

/// Default slot size: a stamp, a header and 14 inline payload words (112
/// bytes), two cache lines. An 82-byte note fits inline.
pub const DEFAULT_SLOT_BYTES: usize = 128;
/// Smallest slot: stamp, header and one payload word.
pub const MIN_SLOT_BYTES: usize = 8 * (OVERHEAD_WORDS + 1);
/// Largest slot.
pub const MAX_SLOT_BYTES: usize = 4096;
/// Most entries a ring may hold (2^28).
pub const MAX_CAPACITY: usize = 1 << 28;
/// Default longest entry (64 KiB).
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 64 * 1024;
/// Largest accepted [`Builder::max_entry_bytes`] (16 MiB).
pub const MAX_ENTRY_BYTES: usize = 16 * 1024 * 1024;
/// Slots are allocated in pages of about this many bytes, on first use.
const PAGE_BYTES: usize = 4096;

/// A fixed-capacity, overwrite-oldest, lock-free ring of entries.
///
/// A ring of capacity N keeps the newest N entries, each of any length up to
/// [`max_entry_bytes`](Ring::max_entry_bytes). Any number of threads push
/// through `&self` (share it in an `Arc`); readers take snapshots at any time
/// without blocking writers, and never see a torn entry. When the ring is
/// full, each push overwrites the oldest entry; with a [`Sink`] attached, the
/// overwritten entry is handed to the sink first, whole and exactly once.
/// [`close`](Ring::close) stops pushes and hands everything still in the ring
/// to the sink. Sequence numbers are consecutive: one per entry.
///
/// Progress: readers never wait (a reader that overlaps the instant of
/// `close` may yield once while `close` publishes where the ring ends). A
/// writer waits only when the writer of the same slot one lap earlier (N
/// pushes ago) has not finished, or, with a sink, behind the capture of the
/// entry it overwrites. That is lock-free in practice, not wait-free.
///
/// # Memory
///
/// Each slot holds a stamp, a header and its inline payload
/// ([`slot_payload_bytes`](Ring::slot_payload_bytes), 112 bytes at the default
/// 128-byte slots); slots are allocated a 4 KiB page at a time as tickets first
/// reach them, behind a table whose idle cost is at most a few hundred KiB (an
/// idle ring of 1000 entries holds under 3 KiB, one of [`MAX_CAPACITY`] 4 KiB
/// slots under 0.4 MiB).
/// An entry longer than the inline payload keeps the rest in an extension block
/// of its slot: size classes about 1.25x apart (doubling above 4 KiB). A slot
/// keeps its block while its entries stay in one class; otherwise the block
/// goes to a per-class free list for the next slot that needs that class, so a
/// long entry costs a push no allocation once the ring has seen entries of
/// its size, and the ring holds about what its entries need (measured: about
/// 1.4x the bytes of `Mutex<VecDeque<String>>` with lengths mixed 1..=2000,
/// 1.06x with 150-byte entries). The worst case, every slot having held every
/// class at some time, is about `(N + 16) × (slot + 2.2 × max_entry_bytes)`;
/// [`Metrics::bytes`] reports what a ring holds.
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
    slots: Table,
    arena: Arena,
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
    /// N, in slots (one entry each).
    capacity: u64,
    /// Stamp + header + inline payload words.
    words_per_slot: usize,
    /// Inline payload bytes per slot.
    inline_bytes: usize,
    /// Longest entry accepted.
    max_entry_bytes: usize,
    /// log2 of the slots in a full page.
    page_shift: u32,
    /// `u64::MAX / capacity`, for `t % capacity` without a division.
    reciprocal: u64,
    /// `ceil(2^64 / capacity)`: exact quotients for tickets below
    /// `exact_below`.
    ceil_reciprocal: u64,
    /// `EXACT`, or 0 for a capacity of 1 (whose `ceil_reciprocal`, 2^64,
    /// does not fit).
    exact_below: u64,
    /// log2 of `words_per_slot` if it is a power of two, else `u32::MAX`.
    wps_shift: u32,
}

/// Tickets below this get their slot index from `ceil_reciprocal` without a
/// correction step: `t * ceil(2^64/N) / 2^64` is exactly `t / N` rounded
/// down while `t * (ceil(2^64/N) * N - 2^64) < 2^64`, which holds for
/// `t < 2^64 / N`, at least 2^36 for any accepted capacity.
const EXACT: u64 = 1 << 36;

impl Layout {
    fn new(capacity: usize, slot_bytes: usize, max_entry_bytes: usize) -> Result<Self, BuildError> {
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
        if max_entry_bytes > MAX_ENTRY_BYTES {
            return Err(BuildError::MaxEntryBytes {
                requested: max_entry_bytes,
                max: MAX_ENTRY_BYTES,
            });
        }
        let words_per_slot = slot_bytes / 8;
        // Largest power of two of slots that fits in a page (at least one).
        let per_page = (PAGE_BYTES / slot_bytes).max(1);
        let page_shift = usize::BITS - 1 - per_page.leading_zeros();
        Ok(Self {
            capacity: capacity as u64,
            words_per_slot,
            inline_bytes: Slot::inline_bytes(words_per_slot),
            max_entry_bytes,
            page_shift,
            reciprocal: u64::MAX / capacity as u64,
            ceil_reciprocal: ((1u128 << 64).div_ceil(capacity as u128)) as u64,
            exact_below: if capacity == 1 { 0 } else { EXACT },
            wps_shift: if words_per_slot.is_power_of_two() {
                words_per_slot.trailing_zeros()
            } else {
                u32::MAX
            },
        })
    }

    /// The slot table: pages of `2^page_shift` slots, the last one shorter.
    fn table(&self) -> Table {
        let per_page = 1usize << self.page_shift;
        let capacity = self.capacity as usize;
        let pages = capacity.div_ceil(per_page);
        let last = capacity - (pages - 1) * per_page;
        // One level up to 1024 pages (32 KiB of cells, 4 MiB of slots).
        Table::new(
            pages,
            per_page * self.words_per_slot,
            last * self.words_per_slot,
            1024,
        )
    }

    /// `t % capacity`, by multiplying with a precomputed reciprocal: a
    /// hardware division is most of a single-threaded push's cost otherwise.
    ///
    /// Below `exact_below` (2^36 tickets) the rounded-up reciprocal gives the
    /// quotient exactly, so `t - q * N` needs no correction (see `EXACT`):
    /// two cycles less on the push's critical path, measured as 5% of a
    /// 1-writer push. Above it, with `m = floor((2^64 - 1) / N)`, `q = floor(t * m / 2^64)` is never
    /// above `floor(t / N)` and, for `t < 2^64`, at most one below it, so
    /// `t - q * N` is in `0..2N` and one conditional subtraction finishes.
    #[inline]
    fn index(&self, t: u64) -> u64 {
        if t < self.exact_below {
            let q = ((u128::from(t) * u128::from(self.ceil_reciprocal)) >> 64) as u64;
            return t - q * self.capacity;
        }
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
        let offset = if self.wps_shift == u32::MAX {
            in_page * self.words_per_slot
        } else {
            in_page << self.wps_shift
        };
        (page, offset)
    }

    /// Bytes of an entry of `len` bytes that go to an extension block.
    #[inline]
    fn tail(&self, len: usize) -> usize {
        len.saturating_sub(self.inline_bytes)
    }
}

/// Slow-path counters (see [`Metrics`]).
#[derive(Debug, Default)]
struct Stats {
    writer_waits: Counter,
    reader_skips: Counter,
    sink_waits: Counter,
    refused: Counter,
    sink_panics: Counter,
    undecodable: Counter,
    drained: Counter,
    /// Heap bytes of slot pages and the slot table.
    slot_bytes: Counter,
}

/// Counters of one ring, read with [`Ring::metrics`].
///
/// Exact once writers are quiescent; while pushes are in flight `evicted` and
/// `retained` may be off by the entries being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Metrics {
    /// Capacity in entries.
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
    /// Heap bytes the ring holds: slot pages, page tables and extension
    /// blocks (free ones included), not the `Ring` value itself.
    #[cfg_attr(feature = "serde", serde(default))]
    pub bytes: u64,
    /// Whether the ring is closed.
    pub closed: bool,
}

/// Builds a [`Ring`]: capacity, slot size, longest entry, and an optional sink.
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
///     .max_entry_bytes(8 * 1024)
///     .sink(|e: callring::Evicted<String>| println!("archive {}: {}", e.seq, e.value))
///     .build()
///     .expect("valid settings");
/// assert_eq!((ring.capacity(), ring.max_entry_bytes()), (1000, 8192));
/// # }
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<R: Record> {
    capacity: usize,
    slot_bytes: usize,
    max_entry_bytes: usize,
    sink: Option<Box<dyn Sink<R::Owned>>>,
}

impl<R: Record> fmt::Debug for Builder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("capacity", &self.capacity)
            .field("slot_bytes", &self.slot_bytes)
            .field("max_entry_bytes", &self.max_entry_bytes)
            .field("sink", &self.sink.is_some())
            .finish()
    }
}

impl<R: Record> Builder<R> {
    /// Number of entries kept (default 1000), whatever their lengths.
    pub fn capacity(mut self, entries: usize) -> Self {
        self.capacity = entries;
        self
    }

    /// Bytes per slot including its 16 bytes of stamp and header: a multiple of
    /// 8 from 24 to 4096 (default 128, which holds 112 payload bytes inline).
    /// Longer entries keep the rest in an extension block.
    pub fn slot_bytes(mut self, bytes: usize) -> Self {
        self.slot_bytes = bytes;
        self
    }

    /// Longest entry accepted, in encoded bytes (default
    /// [`DEFAULT_MAX_ENTRY_BYTES`], at most [`MAX_ENTRY_BYTES`]); a longer one
    /// is refused with [`PushError::TooLarge`](crate::PushError::TooLarge).
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// Hands every evicted entry, and on `close` every remaining one, to `sink`.
    pub fn sink(mut self, sink: impl Sink<R::Owned> + 'static) -> Self {
        self.sink = Some(Box::new(sink));
        self
    }

    /// Builds the ring. Allocates only the top of its page tables (at most a
    /// few hundred KiB for [`MAX_CAPACITY`], a few hundred bytes for a
    /// thousand entries); slots and blocks are allocated as they are first
    /// used.
    ///
    /// # Errors
    ///
    /// [`BuildError`] for a capacity of 0 or above [`MAX_CAPACITY`], a slot
    /// size that is not a multiple of 8 in `24..=4096`, or a longest entry
    /// above [`MAX_ENTRY_BYTES`].
    pub fn build(self) -> Result<Ring<R>, BuildError> {
        let layout = Layout::new(self.capacity, self.slot_bytes, self.max_entry_bytes)?;
        let slots = layout.table();
        let ring = Ring {
            head: CachePadded::new(AtomicU64::new(0)),
            layout,
            arena: Arena::new(layout.tail(layout.max_entry_bytes), self.capacity),
            stats: CachePadded::new(Stats {
                slot_bytes: Counter::new(slots.top_bytes() as u64),
                ..Stats::default()
            }),
            slots,
            close_ticket: AtomicU64::new(OPEN),
            sink: self.sink,
            refused: SegQueue::new(),
            _record: PhantomData,
        };
        // Under loom, allocate every page now, before the model's threads run,
        // so page initialisation (std's OnceLock, invisible to loom) never races.
        if cfg!(loom) {
            ring.slots.alloc_all(|b| ring.add_slot_bytes(b));
            ring.arena.alloc_all();
        }
        Ok(ring)
    }
}

impl<R: Record> Ring<R> {
    /// A ring of `capacity` entries with [`DEFAULT_SLOT_BYTES`] slots and
    /// entries of up to [`DEFAULT_MAX_ENTRY_BYTES`], without a sink.
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

    /// A builder with the defaults: 1000 entries, 128-byte slots, entries of
    /// up to 64 KiB, no sink.
    pub fn builder() -> Builder<R> {
        Builder {
            capacity: 1000,
            slot_bytes: DEFAULT_SLOT_BYTES,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            sink: None,
        }
    }

    /// Capacity in entries.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.layout.capacity as usize
    }

    /// Payload bytes a slot holds inline; the rest of a longer entry goes to
    /// an extension block.
    #[must_use]
    pub fn slot_payload_bytes(&self) -> usize {
        self.layout.inline_bytes
    }

    /// Longest entry the ring accepts, in bytes.
    #[must_use]
    pub fn max_entry_bytes(&self) -> usize {
        self.layout.max_entry_bytes
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
    /// assert!(m.bytes > 0);
    /// # }
    /// ```
    #[must_use]
    pub fn metrics(&self) -> Metrics {
        let appended = self.end_ticket();
        let s = &*self.stats;
        // Relaxed: statistics; exact once writers are quiescent.
        let load = |c: &Counter| c.load(Ordering::Relaxed);
        let evicted = appended.saturating_sub(self.layout.capacity);
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
            bytes: load(&s.slot_bytes) + self.arena.bytes(),
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
    #[cfg(feature = "call")]
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

    /// Appends the newest entry that reads whole to `buf` and returns its seq,
    /// looking back from the head (over 1, 2, 4, ... of the newest tickets);
    /// `None` if no entry reads whole. Like every read, never makes a writer
    /// wait.
    #[cfg(feature = "call")]
    pub(crate) fn newest_into(&self, buf: &mut Vec<u8>) -> Option<u64> {
        let end = self.end_ticket();
        let oldest = end.saturating_sub(self.layout.capacity);
        let mut back = 1;
        let mut scratch = Vec::new();
        loop {
            let from = end.saturating_sub(back).max(oldest);
            let mut newest = None;
            scratch.clear();
            self.scan_from(from, read::Until::End, &mut scratch, 0, |seq, b, mark| {
                newest = Some((seq, mark, b.len()));
            });
            if let Some((seq, mark, len)) = newest {
                buf.extend_from_slice(&scratch[mark..len]);
                return Some(seq);
            }
            if from == oldest {
                return None;
            }
            back *= 2;
        }
    }

    fn add_slot_bytes(&self, n: usize) {
        // Relaxed: a statistic.
        self.stats.slot_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Builds page `page` (or finds it built by a racing writer).
    #[cold]
    #[inline(never)]
    fn first_touch(&self, page: usize) -> &[AtomicU64] {
        self.slots.get_or_alloc(page, |b| self.add_slot_bytes(b))
    }

    /// The slot of ticket `t`, allocating its page on first use. Always
    /// inlined: returned from a call, the slot goes through memory and the
    /// caller reloads it in a wider load that store forwarding cannot serve.
    #[inline(always)]
    fn slot(&self, t: u64) -> Slot<'_> {
        let (page, offset) = self.layout.locate(t);
        let words = match self.slots.get(page) {
            Some(words) => words,
            None => self.first_touch(page),
        };
        Slot::new(&words[offset..][..self.layout.words_per_slot])
    }
}

impl<R: Record> fmt::Debug for Ring<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.layout.capacity)
            .field("slot_payload_bytes", &self.layout.inline_bytes)
            .field("max_entry_bytes", &self.layout.max_entry_bytes)
            .field("sink", &self.sink.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout(capacity: usize) -> Layout {
        Layout::new(capacity, DEFAULT_SLOT_BYTES, DEFAULT_MAX_ENTRY_BYTES).expect("valid")
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
                EXACT - n - 1,
                EXACT - 2,
                EXACT - 1,
                EXACT,
                EXACT + 1,
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

        #[test]
        fn index_matches_remainder_below_exact(n in 1..=MAX_CAPACITY, t in 0..EXACT) {
            prop_assert_eq!(layout(n).index(t), t % n as u64);
        }
    }
}
