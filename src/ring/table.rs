//! A table of lazily allocated pages of `AtomicU64` words: one level of
//! empty cells for up to `flat_max` pages (chosen by the caller), two levels
//! above that.
//!
//! Used for the slots and for each size class of extension blocks. Building a
//! table allocates only its top level: at most `flat_max` empty cells, or
//! about `sqrt(pages)` of them, so any accepted ring builds in constant time
//! and small memory; a directory (the other `sqrt(pages)`) and a page are
//! allocated on first use. One level saves a push a dependent load. Neither ever
//! moves or is freed while the ring lives, which is what lets readers hold
//! plain references into them.

use std::fmt;

use crate::sync::{AtomicU64, OnceLock};

/// One page, starting on a cache-line boundary so that a 128-byte slot covers
/// exactly two lines (a heap block is only 16-byte aligned, and a slot
/// straddling three lines costs a push one more line to own). Aligned without
/// `unsafe`: over-allocate by up to 7 words and start at the first word whose
/// address is a multiple of 64.
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

type Dir = Box<[OnceLock<Page>]>;

/// Pages `0..pages` of `page_words` words each (the last one `last_words`).
pub(super) struct Table {
    page_words: usize,
    last_words: usize,
    pages: usize,
    top: Top,
}

enum Top {
    /// Every page's cell, allocated up front.
    Flat(Dir),
    /// Directories of `1 << shift` cells, each allocated on first use.
    Dirs {
        shift: u32,
        dirs: Box<[OnceLock<Dir>]>,
    },
}

impl Table {
    /// A table of `pages` pages, one level if there are at most `flat_max`;
    /// nothing but the top level is allocated.
    pub(super) fn new(pages: usize, page_words: usize, last_words: usize, flat_max: usize) -> Self {
        debug_assert!(pages >= 1 && last_words <= page_words);
        let top = if pages <= flat_max {
            Top::Flat((0..pages).map(|_| OnceLock::new()).collect())
        } else {
            // About sqrt(pages) directories of about sqrt(pages) pages each.
            let bits = usize::BITS - (pages - 1).leading_zeros();
            let shift = bits.div_ceil(2);
            let dirs = pages.div_ceil(1 << shift);
            Top::Dirs {
                shift,
                dirs: (0..dirs).map(|_| OnceLock::new()).collect(),
            }
        };
        Self {
            page_words,
            last_words,
            pages,
            top,
        }
    }

    /// Heap bytes of the top level (what an idle table costs).
    pub(super) fn top_bytes(&self) -> usize {
        match &self.top {
            Top::Flat(cells) => cells.len() * std::mem::size_of::<OnceLock<Page>>(),
            Top::Dirs { dirs, .. } => dirs.len() * std::mem::size_of::<OnceLock<Dir>>(),
        }
    }

    /// Page `page` if it has been allocated.
    #[inline(always)]
    pub(super) fn get(&self, page: usize) -> Option<&[AtomicU64]> {
        let cell = match &self.top {
            Top::Flat(cells) => cells.get(page)?,
            Top::Dirs { shift, dirs } => {
                let dir = dirs.get(page >> shift)?.get()?;
                dir.get(page & ((1 << shift) - 1))?
            }
        };
        Some(cell.get()?.words())
    }

    /// Page `page`, allocating it (and its directory) on first use; calls
    /// `allocated(bytes)` for what this call allocated.
    #[cold]
    #[inline(never)]
    pub(super) fn get_or_alloc(&self, page: usize, allocated: impl Fn(usize)) -> &[AtomicU64] {
        let cell = match &self.top {
            Top::Flat(cells) => &cells[page],
            Top::Dirs { shift, dirs } => {
                let d = page >> shift;
                let dir = dirs[d].get_or_init(|| {
                    let first = d << shift;
                    let len = (self.pages - first).min(1 << shift);
                    allocated(len * std::mem::size_of::<OnceLock<Page>>());
                    (0..len).map(|_| OnceLock::new()).collect()
                });
                &dir[page & ((1 << shift) - 1)]
            }
        };
        cell.get_or_init(|| {
            let words = if page + 1 == self.pages {
                self.last_words
            } else {
                self.page_words
            };
            let page = Page::new(words);
            allocated(page.words.len() * 8);
            page
        })
        .words()
    }

    /// Allocates every page now (for loom: std's `OnceLock` is invisible to
    /// the model checker, so no page may be first touched by a model thread).
    pub(super) fn alloc_all(&self, allocated: impl Fn(usize)) {
        for page in 0..self.pages {
            self.get_or_alloc(page, &allocated);
        }
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("pages", &self.pages)
            .field("page_words", &self.page_words)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn pages_start_on_a_cache_line() {
        for words in [3, 16, 512, 4096 / 8] {
            let page = Page::new(words);
            assert_eq!(page.words().as_ptr() as usize % 64, 0);
            assert!(page.words().len() >= words);
        }
    }

    #[test]
    fn every_page_is_reachable_and_sized() {
        for pages in [1usize, 2, 3, 5, 16, 17, 1000, 1025, 5000] {
            let table = Table::new(pages, 4, 2, 1024);
            assert_eq!(matches!(table.top, Top::Flat(_)), pages <= 1024);
            for p in 0..pages {
                assert!(table.get(p).is_none());
                // Up to 7 words more, to start on a cache line.
                let words = table.get_or_alloc(p, |_| {}).len();
                let want = if p + 1 == pages { 2 } else { 4 };
                assert!((want..want + 8).contains(&words), "{words} words");
                assert!(table.get(p).is_some());
            }
            assert!(table.get(pages).is_none());
        }
    }

    #[test]
    fn a_huge_table_is_small_until_used() {
        let table = Table::new(1 << 28, 512, 512, 1024);
        assert!(table.top_bytes() <= 512 * 1024, "{}", table.top_bytes());
    }
}
