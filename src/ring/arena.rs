//! Extension blocks: where an entry's bytes beyond its slot's inline payload
//! live, in size classes, recycled through lock-free free lists.
//!
//! Each size class is an arena of equal blocks in lazily allocated pages (a
//! `Table`) that never move or shrink while the ring lives, so a block is named
//! by its index and readers may load from any block at any time. A free list
//! per class is a Treiber stack of block indices with an ABA tag, packed into
//! one `AtomicU64` (tag in the high half, index + 1 in the low half); a free
//! block's first word links to the next.
//!
//! A slot keeps its block while consecutive entries in it need the same size
//! class, so steady traffic of one size touches no free list at all. When the
//! class changes, the slot's owner (after the previous-lap wait, after its
//! claim, before its W3 fence) pushes the old block onto its class's list and
//! pops, or allocates, one of the new class. Memory thus follows what the ring
//! holds: per class, the most blocks ever in use at once (plus the writers
//! mid-swap), never every slot's largest entry.
//!
//! Why a reader cannot keep bytes of a block that was reused under it: reader
//! R copies ticket `t`'s block `b` between its stamp load (R1) and its re-check.
//! Suppose `b` is reused: `t`'s slot is claimed by the next lap's owner O,
//! which pushes `b` (F1, Release, after its claim); writer X of another slot
//! pops `b` (F2, Acquire), then issues its own W3 fence and stores into `b`.
//! If R loaded one of X's stores, R's Acquire fence (R2) synchronises with X's
//! W3, so O's claim, which happens-before F1 and thus before X's pop, is
//! visible to R's re-check: the stamp moved and R discards the copy. The loom
//! model `spilled_block_reused_under_a_reader` exercises exactly this.
//!
//! | label | access | pairs with |
//! |---|---|---|
//! | F1 | push: CAS of the list head, Release | F2 |
//! | F2 | pop: load of the list head (first, and on a failed CAS), Acquire | F1 |
//!
//! F2 does two jobs: the popper reads the top block's link stored by its
//! pusher (a stale link would lose blocks or hand one out twice), and it
//! inherits the pusher's claim (the reader argument above). Every change of
//! the head is a CAS, so an Acquire load of any later head value still
//! synchronises with every earlier push (release sequences continue through
//! read-modify-writes). The successful CAS itself can be Relaxed: it reads
//! the value F2 already acquired (the tag makes each value unique).

use std::fmt;

use super::table::Table;
use crate::sync::{AtomicU64, Backoff, Counter, OnceLock, Ordering};

/// Payload words of the size classes up to 512 words: each about 1.25 times
/// the previous (waste under 20% per block, about 10% on average). Above 512
/// words classes double, which keeps the sum of all class sizes (the worst
/// case per slot, see `Ring`'s docs) near 2.2 times the largest.
const SMALL: [u32; SMALL_CLASSES] = small_classes();
const SMALL_CLASSES: usize = 28;
/// Largest class of the 1.25 series.
const SMALL_MAX: usize = 512;

const fn small_classes() -> [u32; SMALL_CLASSES] {
    let mut out = [0u32; SMALL_CLASSES];
    let mut w = 1u32;
    let mut i = 0;
    while i < SMALL_CLASSES {
        out[i] = if w as usize > SMALL_MAX {
            SMALL_MAX as u32
        } else {
            w
        };
        let step = if w / 4 > 1 { w / 4 } else { 1 };
        w += step;
        i += 1;
    }
    out
}

/// Class of each word count `0..=SMALL_MAX` (0 is never asked for).
static CLASS_OF: [u8; SMALL_MAX + 1] = class_table();

const fn class_table() -> [u8; SMALL_MAX + 1] {
    let mut out = [0u8; SMALL_MAX + 1];
    let mut words = 1;
    let mut class = 0;
    while words <= SMALL_MAX {
        while (SMALL[class] as usize) < words {
            class += 1;
        }
        out[words] = class as u8;
        words += 1;
    }
    out
}

/// The size class for `words` payload words.
#[inline]
pub(super) fn class_of(words: usize) -> usize {
    if words <= SMALL_MAX {
        usize::from(CLASS_OF[words])
    } else {
        // 513..=1024 words is class SMALL_CLASSES, then one per doubling.
        let log = (usize::BITS - (words - 1).leading_zeros()) as usize;
        SMALL_CLASSES + log - 10
    }
}

/// Payload words of a block of class `class`.
#[inline]
pub(super) fn class_words(class: usize) -> usize {
    if class < SMALL_CLASSES {
        SMALL[class] as usize
    } else {
        1 << (10 + class - SMALL_CLASSES)
    }
}

/// Bytes a page of blocks aims at: large enough that allocations stay rare
/// (one per ~2 KiB of blocks), small enough that a class's part-used last page
/// wastes little.
const PAGE_BYTES: usize = 2048;

/// Blocks a class may hold beyond one per slot. Each slot accounts for at
/// most one block of a class at any instant (named by its header, or popped by
/// its owner for the entry being written), so a class with more blocks than
/// slots has one free or on its way to the free list: a writer that finds the
/// class at its cap and the list empty waits (briefly) for that push. The
/// slack only makes such waits rarer when writers race on an empty list.
const WRITER_SLACK: u64 = if cfg!(loom) { 1 } else { 16 };

/// Empty-list marker in the low half of a list head.
const NIL: u64 = 0;
const LOW: u64 = u32::MAX as u64;

/// One size class: its free list, how many blocks exist, and where they live.
struct Class {
    /// Tag << 32 | (index + 1) of the top free block, or NIL.
    free: AtomicU64,
    /// Blocks allocated so far (indices `0..allocated`).
    allocated: AtomicU64,
    /// Boxed: an idle ring's classes cost a few words each.
    blocks: OnceLock<Box<Table>>,
}

/// The extension blocks of one ring.
pub(super) struct Arena {
    classes: Box<[Class]>,
    /// Most blocks a class may have.
    cap: u64,
    /// Heap bytes held by the arena (pages, directories, tables).
    bytes: Counter,
}

impl Arena {
    /// An arena for tails of up to `max_tail` bytes in a ring of `slots`.
    /// Allocates only the class headers.
    pub(super) fn new(max_tail: usize, slots: usize) -> Self {
        let classes = if max_tail == 0 {
            0
        } else {
            class_of(max_tail.div_ceil(8)) + 1
        };
        let arena = Self {
            classes: (0..classes)
                .map(|_| Class {
                    free: AtomicU64::new(NIL),
                    allocated: AtomicU64::new(0),
                    blocks: OnceLock::new(),
                })
                .collect(),
            cap: (slots as u64 + WRITER_SLACK).min(LOW - 1),
            bytes: Counter::new(0),
        };
        arena.add_bytes(arena.classes.len() * std::mem::size_of::<Class>());
        arena
    }

    fn add_bytes(&self, n: usize) {
        // Relaxed: a statistic.
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Heap bytes the arena holds.
    pub(super) fn bytes(&self) -> u64 {
        // Relaxed: a statistic.
        self.bytes.load(Ordering::Relaxed)
    }

    /// Words of a block of `class`, including its link word.
    #[inline]
    fn stride(class: usize) -> usize {
        class_words(class) + 1
    }

    /// log2 of blocks per page of `class`.
    #[inline]
    fn page_shift(class: usize) -> u32 {
        let per_page = (PAGE_BYTES / (8 * Self::stride(class))).max(1);
        usize::BITS - 1 - per_page.leading_zeros()
    }

    fn table(&self, class: usize) -> &Table {
        self.classes[class].blocks.get_or_init(|| {
            let shift = Self::page_shift(class);
            let pages = (self.cap as usize).div_ceil(1 << shift);
            let words = Self::stride(class) << shift;
            // Two levels past 64 pages: a class of 2 KiB blocks in a large
            // ring has a page per block, and its cells should cost in
            // proportion to the blocks in use, not to the cap.
            let table = Box::new(Table::new(pages, words, words, 64));
            self.add_bytes(std::mem::size_of::<Table>() + table.top_bytes());
            table
        })
    }

    /// All words of block `index` of `class` (link first), if allocated.
    #[inline(always)]
    fn block(&self, class: usize, index: u32) -> Option<&[AtomicU64]> {
        let shift = Self::page_shift(class);
        let stride = Self::stride(class);
        let index = index as usize;
        let page = self.classes.get(class)?.blocks.get()?.get(index >> shift)?;
        let start = (index & ((1 << shift) - 1)) * stride;
        page.get(start..start + stride)
    }

    /// The payload words of block `index` holding a tail of `tail` bytes, if
    /// such a block exists (readers: an unvalidated header may name anything).
    #[inline(always)]
    pub(super) fn payload(&self, index: u32, tail: usize) -> Option<&[AtomicU64]> {
        let class = class_of(tail.div_ceil(8));
        Some(&self.block(class, index)?[1..])
    }

    /// The block the owner of a slot should fill with a tail of `tail` bytes,
    /// given the block it holds for the previous entry's tail (`old_tail`
    /// bytes, 0 for none). Keeps the block if the class is unchanged;
    /// otherwise releases it and takes one of the new class. Call after the
    /// slot's claim (F1 relies on it) and before the W3 fence.
    #[inline]
    pub(super) fn swap(&self, old: Option<u32>, old_tail: usize, tail: usize) -> Option<u32> {
        let class = (tail > 0).then(|| class_of(tail.div_ceil(8)));
        let old = old.map(|b| (class_of(old_tail.div_ceil(8)), b));
        match (old, class) {
            (Some((c, b)), Some(n)) if c == n => Some(b),
            (None, None) => None,
            (old, class) => self.swap_slow(old, class),
        }
    }

    #[inline(never)]
    fn swap_slow(&self, old: Option<(usize, u32)>, class: Option<usize>) -> Option<u32> {
        if let Some((c, b)) = old {
            // A header names a class this arena has, unless the ring was
            // built with a header it did not write (never): skip, not panic.
            if c < self.classes.len() {
                self.push(c, b);
            }
        }
        class.map(|c| self.pop_or_alloc(c))
    }

    /// The payload words of block `index` of the class for `tail` bytes, for
    /// the writer that owns it. Its page exists: the owner allocated or
    /// popped it.
    #[inline]
    pub(super) fn owned(&self, index: u32, tail: usize) -> &[AtomicU64] {
        self.payload(index, tail)
            .expect("an owned block's page was allocated before it was handed out")
    }

    fn push(&self, class: usize, index: u32) {
        let c = &self.classes[class];
        let link = &self.block(class, index).expect("a block in use exists")[0];
        // Relaxed: only the value matters; a failed CAS reloads it.
        let mut head = c.free.load(Ordering::Relaxed);
        loop {
            // Relaxed: published to the popper by the Release CAS below (F1).
            link.store(head & LOW, Ordering::Relaxed);
            let new = (head & !LOW).wrapping_add(1 << 32) | (u64::from(index) + 1);
            // F1 Release: pairs with F2 (pop's Acquire). The popper sees the
            // link stored above, and everything this writer did before: its
            // claim of the slot that held the block, which is what makes a
            // reader of the block's old entry fail its re-check.
            match c
                .free
                .compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    fn pop_or_alloc(&self, class: usize) -> u32 {
        let c = &self.classes[class];
        let mut backoff = Backoff::new();
        loop {
            if let Some(index) = self.pop(class) {
                return index;
            }
            // Relaxed: the count only hands out unique indices; the page is
            // published through its OnceLock.
            let n = c.allocated.load(Ordering::Relaxed);
            if n < self.cap {
                // Relaxed: as above.
                if c.allocated
                    .compare_exchange(n, n + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    let table = self.table(class);
                    let shift = Self::page_shift(class);
                    table.get_or_alloc(n as usize >> shift, |b| self.add_bytes(b));
                    return n as u32;
                }
            } else {
                // Every block of the class is held by a slot or by a writer
                // mid-swap; one of those writers is about to free one.
                backoff.snooze();
            }
        }
    }

    fn pop(&self, class: usize) -> Option<u32> {
        let c = &self.classes[class];
        // F2 Acquire: pairs with F1 (push's Release CAS): the link of the top
        // block, and the pusher's claim, happen-before what follows.
        let mut head = c.free.load(Ordering::Acquire);
        loop {
            let top = head & LOW;
            if top == NIL {
                return None;
            }
            let index = (top - 1) as u32;
            // Relaxed: ordered by F2; if the block was popped and pushed again
            // since, the tag has moved and the CAS below fails.
            let next = self.block(class, index)?[0].load(Ordering::Relaxed);
            let new = (head & !LOW).wrapping_add(1 << 32) | (next & LOW);
            // Success Relaxed: it reads the value F2 acquired (see the module
            // docs). Failure F2 Acquire: the next round reads the new top's
            // link.
            match c
                .free
                .compare_exchange_weak(head, new, Ordering::Relaxed, Ordering::Acquire)
            {
                Ok(_) => return Some(index),
                Err(now) => head = now,
            }
        }
    }

    /// Allocates every page of every class now (loom: see `Table::alloc_all`).
    pub(super) fn alloc_all(&self) {
        for class in 0..self.classes.len() {
            self.table(class).alloc_all(|b| self.add_bytes(b));
        }
    }
}

impl fmt::Debug for Arena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arena")
            .field("classes", &self.classes.len())
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

/// The free list alone under loom: blocks pushed by one thread while another
/// pops are never lost nor handed out twice (a stale link would do either).
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use loom::sync::Arc;

    #[test]
    fn free_list_loses_and_duplicates_no_block() {
        let mut builder = loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = Some(2);
        }
        builder.max_branches = 100_000;
        builder.check(|| {
            let arena = Arc::new(Arena::new(8, 2)); // class 0 only, cap 3
            arena.alloc_all();
            let (b0, b1) = (arena.pop_or_alloc(0), arena.pop_or_alloc(0));
            let pusher = {
                let arena = arena.clone();
                loom::thread::spawn(move || {
                    arena.push(0, b0);
                    arena.push(0, b1);
                })
            };
            let popper = {
                let arena = arena.clone();
                loom::thread::spawn(move || [arena.pop_or_alloc(0), arena.pop_or_alloc(0)])
            };
            let popped = popper.join().unwrap();
            pusher.join().unwrap();
            let mut all: Vec<u32> = popped.to_vec();
            while let Some(b) = arena.pop(0) {
                all.push(b);
            }
            let n = all.len();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), n, "a block handed out twice: {all:?}");
            assert!(
                all.contains(&b0) && all.contains(&b1),
                "a block lost: {all:?}"
            );
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn classes_grow_and_cover_every_size() {
        assert_eq!(SMALL[..8], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(SMALL[SMALL_CLASSES - 1] as usize, SMALL_MAX);
        for pair in SMALL.windows(2) {
            assert!(pair[0] < pair[1], "{pair:?}");
            assert!(pair[1] * 4 <= pair[0] * 5 + 4, "{pair:?}");
        }
        for words in 1..=(1 << 21) {
            let class = class_of(words);
            assert!(class_words(class) >= words, "{words}");
            if class > 0 {
                assert!(class_words(class - 1) < words, "{words}");
            }
        }
    }

    #[test]
    fn same_class_keeps_the_block_and_freed_blocks_are_reused() {
        let arena = Arena::new(4096, 4);
        let a = arena.swap(None, 0, 100).expect("a block");
        assert_eq!(arena.swap(Some(a), 100, 98), Some(a)); // 13 words both
        let b = arena.swap(Some(a), 100, 1000).expect("a bigger block");
        assert_eq!(arena.swap(None, 0, 100), Some(a), "a came back");
        assert_eq!(arena.swap(Some(b), 1000, 0), None);
        assert_eq!(arena.swap(None, 0, 1000), Some(b), "b came back");
    }

    #[test]
    fn a_full_class_recycles_and_holds_at_most_its_cap() {
        let arena = Arena::new(64, 2);
        let mut held: Vec<u32> = (0..arena.cap).map(|_| arena.pop_or_alloc(0)).collect();
        held.sort_unstable();
        held.dedup();
        assert_eq!(held.len() as u64, arena.cap);
        arena.push(0, held[3]);
        assert_eq!(arena.pop_or_alloc(0), held[3]);
    }
}
