//! One slot of the ring and the seqlock that guards it.
//!
//! A slot is a stamp, a header word and a fixed number of inline payload
//! words, all `AtomicU64`. The stamp says which ticket the words belong to and
//! whether they are complete: `0` never written, `2t+1` ticket `t` being
//! written, `2t+2` ticket `t` committed. Readers copy the words optimistically
//! and keep the copy only if the stamp was `committed(t)` before and is
//! unchanged after: the seqlock pattern, with the fences Hans Boehm showed
//! correct in the C++11 model ("Can seqlocks get along with programming
//! language memory models?", MSPC 2012). Because the payload lives in atomics,
//! a reader racing a writer sees stale or mixed *values*, never undefined
//! behaviour, and the stamp check throws those away; no `unsafe` is needed.
//!
//! One slot holds one entry. Bytes beyond the inline payload live in an
//! extension block (see `ring/arena.rs`) named by the header; the reader
//! copies them inside the same validation, so a block reused under it is
//! caught by the same re-check (the argument is in `ring/arena.rs`).
//!
//! Orderings are labelled and each label names its pair:
//!
//! | label | access | pairs with |
//! |---|---|---|
//! | W3 | `fence(Release)` after the claim and the block swap | R2 |
//! | W5 | commit: `stamp = committed(t)`, Release | R1, and the ring's waits W1 and D1 |
//! | R1 | reader's first stamp load, Acquire | W5 |
//! | R2 | reader's `fence(Acquire)` before the re-check | W3 |
//!
//! `Slot::read_at`, the same read into a pre-sized buffer (for `join`), has
//! its own R1 and R2 (mutants R1a and R2a in `loom-tests/mutate.py`).
//!
//! The claim itself (`stamp = writing(t)`) is Relaxed: the W3 fence orders it
//! before the payload stores, and the arena's Release push (F1) orders it
//! before any reuse of a block the claim gave up.

use crate::sync::{fence, AtomicU64, Backoff, Ordering};

/// Stamp of ticket `t` while its writer owns the slot.
#[inline]
pub(crate) const fn writing(t: u64) -> u64 {
    2 * t + 1
}

/// Stamp of ticket `t` once its payload is complete.
#[inline]
pub(crate) const fn committed(t: u64) -> u64 {
    2 * t + 2
}

/// Words a slot needs besides its inline payload: the stamp and the header.
pub(crate) const OVERHEAD_WORDS: usize = 2;

/// What the header word says: the entry's length, and the extension block the
/// slot holds (if any). The block stays with the slot across entries of the
/// same size class, so the next owner finds it here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Header {
    /// Entry length in bytes.
    pub(crate) len: u32,
    /// Index of the extension block within its size class, if the entry
    /// spills (the class follows from `len`).
    pub(crate) block: Option<u32>,
}

impl Header {
    #[inline]
    fn encode(self) -> u64 {
        let block = self.block.map_or(0, |b| u64::from(b) + 1);
        (block << 32) | u64::from(self.len)
    }

    #[inline]
    fn decode(word: u64) -> Header {
        Header {
            len: word as u32,
            block: ((word >> 32) as u32).checked_sub(1),
        }
    }
}

/// Why a validated read returned nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    /// The ticket is not committed yet (its writer is still working).
    InFlight,
    /// A later lap has claimed the slot, before or during the read.
    Overwritten,
}

/// A view of one slot inside a page: the stamp, the header and the inline
/// payload words.
#[derive(Clone, Copy)]
pub(crate) struct Slot<'a> {
    stamp: &'a AtomicU64,
    header: &'a AtomicU64,
    inline: &'a [AtomicU64],
}

impl<'a> Slot<'a> {
    /// `raw` is `[stamp, header, payload...]`.
    #[inline]
    pub(crate) fn new(raw: &'a [AtomicU64]) -> Self {
        let [stamp, header, inline @ ..] = raw else {
            panic!("a slot has a stamp and a header");
        };
        Self {
            stamp,
            header,
            inline,
        }
    }

    /// Inline payload bytes of a slot of `words_per_slot` words.
    #[inline]
    pub(crate) const fn inline_bytes(words_per_slot: usize) -> usize {
        (words_per_slot - OVERHEAD_WORDS) * 8
    }

    /// Waits until the stamp equals `expected`; returns whether it had to wait.
    /// `order` is the ordering of the load that finally observes `expected`,
    /// chosen and justified at the call site.
    #[inline]
    pub(crate) fn wait_for(&self, expected: u64, order: Ordering) -> bool {
        // The uncontended case, inline: one load.
        if self.stamp.load(order) == expected {
            return false;
        }
        wait_slow(self.stamp, expected, order)
    }

    /// The header left by the previous owner. Only the slot's current owner, or
    /// a thread that excludes every writer of the slot, may call this.
    #[inline]
    pub(crate) fn owned_header(&self) -> Header {
        // Relaxed: the caller owns the slot; its Acquire wait (W1 or D1) on
        // the previous commit already ordered this word before this load.
        Header::decode(self.header.load(Ordering::Relaxed))
    }

    /// Claims the slot for ticket `t`. The caller owns it: it has seen
    /// `committed(t - N)` (or `0`) and captured what it had to.
    #[inline]
    pub(crate) fn claim(&self, t: u64) {
        // Relaxed: ordered before the payload stores by W3, and before the
        // release of this slot's old block by that push's Release (F1).
        self.stamp.store(writing(t), Ordering::Relaxed);
    }

    /// Stores the header and the inline part of the entry (at most the inline
    /// payload). Owner only, between `claim` + [`writer_fence`] and `commit`.
    #[inline]
    pub(crate) fn fill(&self, header: Header, inline: &[u8]) {
        // Relaxed stores: published by the commit (W5); a reader that loads
        // one early fails its re-check (W3 pairs with R2).
        self.header.store(header.encode(), Ordering::Relaxed);
        fill_words(self.inline, inline);
    }

    /// Publishes ticket `t`.
    #[inline]
    pub(crate) fn commit(&self, t: u64) {
        // W5 Release: pairs with the reader's Acquire stamp load (R1) and the
        // ring's Acquire waits (W1 next lap, D1 drain): whoever sees
        // committed(t) sees the header and payload stored by `fill`, and the
        // extension block's words.
        self.stamp.store(committed(t), Ordering::Release);
    }

    /// Appends the inline part of an entry of `len` bytes to `out` without
    /// validation. Only for a thread that excludes every writer of the slot
    /// (its owner, or the drainer of a closed ring) after an Acquire wait on
    /// the stamp.
    #[inline]
    pub(crate) fn copy_inline(&self, len: usize, out: &mut Vec<u8>) {
        copy_words(self.inline, len, out);
    }

    /// Validated read of ticket `t`: on success appends the entry to `out`;
    /// on a miss leaves `out` as it was.
    ///
    /// `block(index, tail)` finds the payload words of extension block
    /// `index` for an entry with `tail` bytes past the inline part, or `None`
    /// if there is no such block (only for a header the re-check will reject).
    #[inline(always)]
    pub(crate) fn read<'b>(
        &self,
        t: u64,
        out: &mut Vec<u8>,
        block: impl FnOnce(u32, usize) -> Option<&'b [AtomicU64]>,
    ) -> Result<(), Miss> {
        let expected = committed(t);
        // R1 Acquire: pairs with W5 (commit Release) so that, having seen
        // committed(t), the loads below see ticket t's payload or later stores.
        let s1 = self.stamp.load(Ordering::Acquire);
        if s1 != expected {
            return Err(if s1 < expected {
                Miss::InFlight
            } else {
                Miss::Overwritten
            });
        }
        let mark = out.len();
        // Unvalidated until the re-check: every size derived from it is
        // clamped to the words that exist, so garbage from a racing writer
        // costs a wasted copy, no more.
        let header = Header::decode(self.header.load(Ordering::Relaxed));
        let len = header.len as usize;
        copy_words(self.inline, len, out);
        let inline = self.inline.len() * 8;
        let mut whole = len <= inline;
        if !whole {
            let tail = len - inline;
            if let Some(words) = header.block.and_then(|b| block(b, tail)) {
                copy_words(words, tail, out);
                whole = true;
            }
        }
        // R2 Acquire fence: pairs with the writer's W3 Release fence. If any load
        // above read a store of a later writer, that writer's claim (stored
        // before its W3) is visible to the re-check below, which then fails.
        // A load from a reused extension block reads a store made after its
        // new owner's W3, whose block pop followed our slot's overwriter's
        // claim (F1/F2, see ring/arena.rs): the same re-check catches it.
        fence(Ordering::Acquire);
        // Relaxed: the R2 fence above orders it after the payload loads.
        let s2 = self.stamp.load(Ordering::Relaxed);
        if s2 != s1 || !whole || out.len() - mark != len {
            out.truncate(mark);
            return Err(Miss::Overwritten);
        }
        Ok(())
    }
}

/// The waiting part of [`Slot::wait_for`], out of line and taking only the
/// stamp: taking the whole `Slot` would make the push path build one on the
/// stack for the rare wait.
#[cold]
#[inline(never)]
fn wait_slow(stamp: &AtomicU64, expected: u64, order: Ordering) -> bool {
    let mut backoff = Backoff::new();
    loop {
        let seen = stamp.load(order);
        if seen == expected {
            return true;
        }
        // A slot's stamp only grows and nobody passes a ticket that is
        // waiting for it (guarantee 5); this would be a protocol bug.
        debug_assert!(seen < expected, "stamp {seen} passed {expected}");
        backoff.snooze();
    }
}

impl Slot<'_> {
    /// [`read`](Slot::read) into a pre-sized buffer: copies ticket `t`'s
    /// entry to `out[at..]` and returns its length, or the miss. `out` is
    /// grown (zero-filled, at least doubling) only when the entry, rounded up
    /// to whole words, plus `room` more bytes does not fit; bytes of `out`
    /// past `at + len` may be overwritten. A scan that writes entries back to
    /// back this way zero-fills its buffer once, not once per entry.
    #[inline(always)]
    pub(crate) fn read_at<'b>(
        &self,
        t: u64,
        out: &mut Vec<u8>,
        at: usize,
        room: usize,
        block: impl FnOnce(u32, usize) -> Option<&'b [AtomicU64]>,
    ) -> Result<usize, Miss> {
        let expected = committed(t);
        // R1 Acquire: pairs with W5 (commit Release), as in `read`.
        let first = self.stamp.load(Ordering::Acquire);
        if first != expected {
            return Err(if first < expected {
                Miss::InFlight
            } else {
                Miss::Overwritten
            });
        }
        // Unvalidated until the re-check; every size is clamped to the words
        // that exist, so a racing writer's garbage costs a wasted copy.
        // The word is decoded in full only for a spilled entry: a `Header`
        // kept live across the copy is spilled to the stack per entry.
        let word = self.header.load(Ordering::Relaxed);
        let len = Header::decode(word).len as usize;
        let whole = if len <= self.inline.len() * 8 {
            // The common case, kept short: few live values, no spills to
            // the stack (measured: join of 1000 82-byte notes, see join_into).
            let words = &self.inline[..len.div_ceil(8)];
            let need = at + words.len() * 8 + room;
            if out.len() < need {
                grow(out, need);
            }
            load_words(words, &mut out[at..at + words.len() * 8]);
            true
        } else {
            copy_spilled(self.inline, Header::decode(word), out, at, room, block)
        };
        // R2 Acquire fence: pairs with the writer's W3 Release fence, as in
        // `read`: a load above that read a later writer's store makes the
        // re-check below fail.
        fence(Ordering::Acquire);
        // Relaxed: ordered after the payload loads by the R2 fence above.
        let second = self.stamp.load(Ordering::Relaxed);
        if second != first || !whole {
            return Err(Miss::Overwritten);
        }
        Ok(len)
    }
}

/// [`Slot::read_at`]'s copy of an entry longer than the inline payload:
/// the inline words, then the extension block's. `false` if the block named
/// by the (unvalidated) header is missing or too short. A free function of
/// the inline words, not a method: taking the `Slot` by reference would make
/// every read of a short entry build one on the stack.
#[inline(never)]
fn copy_spilled<'b>(
    inline_words: &[AtomicU64],
    header: Header,
    out: &mut Vec<u8>,
    at: usize,
    room: usize,
    block: impl FnOnce(u32, usize) -> Option<&'b [AtomicU64]>,
) -> bool {
    let inline = inline_words.len() * 8;
    let tail = header.len as usize - inline;
    let Some(words) = header.block.and_then(|b| block(b, tail)) else {
        return false;
    };
    let tail_words = &words[..tail.div_ceil(8).min(words.len())];
    let need = at + inline + tail_words.len() * 8 + room;
    if out.len() < need {
        grow(out, need);
    }
    let (head, rest) = out[at..].split_at_mut(inline);
    load_words(inline_words, head);
    load_words(tail_words, &mut rest[..tail_words.len() * 8]);
    tail_words.len() * 8 >= tail
}

impl Slot<'_> {
    /// The length the header says, unvalidated: a size hint for a reader's
    /// buffer, nothing more.
    #[inline]
    pub(crate) fn len_hint(&self) -> usize {
        // Relaxed: a hint; nothing is read on its strength.
        Header::decode(self.header.load(Ordering::Relaxed)).len as usize
    }
}

/// Grows `out` to at least `need` bytes, at least doubling.
#[cold]
#[inline(never)]
fn grow(out: &mut Vec<u8>, need: usize) {
    out.resize(need.max(2 * out.len()), 0);
}

/// Stores each word of `words`, little-endian, into `dst` (`8 * words.len()`
/// bytes).
#[inline(always)]
fn load_words(words: &[AtomicU64], dst: &mut [u8]) {
    for (d, word) in dst.chunks_exact_mut(8).zip(words) {
        // Relaxed: validated afterwards by the reader's re-check (R2).
        d.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
    }
}

/// Stores `bytes` into `words` (at most `words.len() * 8` bytes), little-endian.
#[inline]
pub(crate) fn fill_words(words: &[AtomicU64], bytes: &[u8]) {
    debug_assert!(bytes.len() <= words.len() * 8);
    // Relaxed stores: published by the commit (W5); a reader that loads one
    // early fails its re-check (W3 pairs with R2).
    // Zipped by value, not through `&mut ChunksExact`: both iterators are
    // then random-access and the loop keeps one counter instead of testing
    // two ends per word (measured, one writer: 82-byte push 11.9 -> 11.6
    // ns, 150-byte push 20.7 -> 17.6 ns).
    for (word, chunk) in words.iter().zip(bytes.chunks_exact(8)) {
        let mut le = [0u8; 8];
        le.copy_from_slice(chunk);
        word.store(u64::from_le_bytes(le), Ordering::Relaxed);
    }
    if !bytes.len().is_multiple_of(8) {
        words[bytes.len() / 8].store(tail_word(bytes), Ordering::Relaxed);
    }
}

/// Appends the first `nbytes` bytes held in `words` to `out` (clamped to what
/// `words` holds).
#[inline(always)]
pub(crate) fn copy_words(words: &[AtomicU64], nbytes: usize, out: &mut Vec<u8>) {
    let nbytes = nbytes.min(words.len() * 8);
    let n = nbytes.div_ceil(8);
    // Zero-fill whole words, then store each loaded word into place
    // through a slice (pointer and length stay in registers). Measured
    // alternatives (single-threaded join of 1000 82-byte notes): appending
    // word by word, 18.7 us (every u8 store may alias the Vec's length, so
    // each append reloads it after the previous store: a store-forwarding
    // chain); loading into a local block and appending it, 18.7 us (the
    // block's 16-byte reloads span two 8-byte stores and cannot be
    // forwarded); this, 13.0 us, of which the zero-fill is ~16%.
    let start = out.len();
    out.resize(start + n * 8, 0);
    for (dst, word) in out[start..].chunks_exact_mut(8).zip(&words[..n]) {
        // Relaxed: validated afterwards by the reader's re-check (R2), or
        // owned by the caller after an Acquire wait (W1, D1).
        dst.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
    }
    out.truncate(start + nbytes);
}

/// The last `len % 8` bytes of `bytes` as a little-endian word, zero-padded.
///
/// Built from an overlapping 8-byte load and a shift when possible: copying
/// the tail into a zeroed array costs a `memcpy` call and then a failed store
/// forwarding when the array is loaded as one word, which profiling showed as
/// a fifth of a single-threaded push.
#[inline]
fn tail_word(bytes: &[u8]) -> u64 {
    let tail = bytes.len() % 8;
    debug_assert!(tail != 0);
    if let Some(last8) = bytes.len().checked_sub(8).map(|start| &bytes[start..]) {
        let word = u64::from_le_bytes(last8.try_into().expect("8 bytes"));
        word >> (8 * (8 - tail))
    } else {
        bytes
            .iter()
            .rev()
            .fold(0u64, |word, &b| (word << 8) | u64::from(b))
    }
}

/// W3: the writer's fence between its claim (and block swap) and its payload
/// stores.
#[inline]
pub(crate) fn writer_fence() {
    // W3 Release fence: pairs with the reader's R2 Acquire fence. Orders the
    // claim (stamp = writing) and the extension block's pop before every
    // payload store that follows, so a reader that loaded any of those
    // stores fails its re-check.
    fence(Ordering::Release);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn raw(words: usize) -> Vec<AtomicU64> {
        (0..words).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn header_round_trips() {
        for h in [
            Header {
                len: 0,
                block: None,
            },
            Header {
                len: u32::MAX,
                block: Some(0),
            },
            Header {
                len: 7,
                block: Some(u32::MAX - 1),
            },
        ] {
            assert_eq!(Header::decode(h.encode()), h);
        }
        assert_eq!(Header::decode(0), Header::default());
    }

    #[test]
    fn tail_word_matches_a_zero_padded_copy() {
        let bytes: Vec<u8> = (1..=40).collect();
        for len in (1..=40).filter(|len| len % 8 != 0) {
            let b = &bytes[..len];
            let tail = &b[len - len % 8..];
            let mut le = [0u8; 8];
            le[..tail.len()].copy_from_slice(tail);
            assert_eq!(tail_word(b), u64::from_le_bytes(le), "len {len}");
        }
    }

    #[test]
    fn fill_then_read_returns_the_bytes() {
        let words = raw(6); // stamp, header, 4 payload words = 32 bytes
        let block = raw(4); // 32 more bytes outside the slot
        let slot = Slot::new(&words);
        for len in [0usize, 1, 7, 8, 9, 31, 32, 33, 40, 64] {
            let bytes: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
            let t = len as u64;
            slot.claim(t);
            writer_fence();
            let (inline, tail) = bytes.split_at(len.min(32));
            let header = Header {
                len: len as u32,
                block: (!tail.is_empty()).then_some(5),
            };
            slot.fill(header, inline);
            fill_words(&block, tail);
            slot.commit(t);
            let find = |b: u32, _| (b == 5).then_some(&block[..]);
            let mut out = vec![0xAA];
            assert!(slot.read(t, &mut out, find).is_ok());
            assert_eq!(&out[1..], &bytes[..]);
            // A read for another ticket misses and leaves `out` alone.
            assert_eq!(slot.read(t + 1, &mut out, find), Err(Miss::InFlight));
            if t > 0 {
                let miss = slot.read(t - 1, &mut out, find);
                assert_eq!(miss, Err(Miss::Overwritten));
            }
            assert_eq!(&out[1..], &bytes[..]);
            // A block that cannot be found is a miss, never a short entry.
            if !tail.is_empty() {
                let mut out = Vec::new();
                assert_eq!(slot.read(t, &mut out, |_, _| None), Err(Miss::Overwritten));
                assert!(out.is_empty());
            }
        }
    }

    #[test]
    fn read_at_matches_read() {
        let words = raw(6); // 32 inline bytes
        let block = raw(4);
        let slot = Slot::new(&words);
        let mut out = vec![0xEE; 3];
        let mut at = 3;
        for len in [0usize, 1, 8, 31, 32, 33, 64] {
            let bytes: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(13)).collect();
            let t = len as u64 + 1;
            slot.claim(t);
            writer_fence();
            let (inline, tail) = bytes.split_at(len.min(32));
            let header = Header {
                len: len as u32,
                block: (!tail.is_empty()).then_some(2),
            };
            slot.fill(header, inline);
            fill_words(&block, tail);
            slot.commit(t);
            let find = |b: u32, _| (b == 2).then_some(&block[..]);
            // Entries land back to back; the buffer grows as needed.
            assert_eq!(slot.read_at(t, &mut out, at, 1, find), Ok(len));
            assert_eq!(&out[at..at + len], &bytes[..], "len {len}");
            assert!(out.len() > at + len, "room for a separator");
            at += len;
            assert_eq!(
                slot.read_at(t + 1, &mut out, at, 0, find),
                Err(Miss::InFlight)
            );
            assert_eq!(
                slot.read_at(t - 1, &mut out, at, 0, find),
                Err(Miss::Overwritten)
            );
            if !tail.is_empty() {
                let none = slot.read_at(t, &mut out, at, 0, |_, _| None);
                assert_eq!(none, Err(Miss::Overwritten));
            }
        }
        assert_eq!(&out[..3], &[0xEE; 3]);
    }

    #[test]
    fn a_slot_being_written_is_in_flight() {
        let words = raw(3);
        let slot = Slot::new(&words);
        slot.claim(4);
        let mut out = Vec::new();
        assert_eq!(slot.read(4, &mut out, |_, _| None), Err(Miss::InFlight));
        assert!(out.is_empty());
    }
}
