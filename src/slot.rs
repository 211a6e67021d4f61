//! One slot of the ring and the seqlock that guards it.
//!
//! A slot is a stamp and a fixed number of payload words, all `AtomicU64`. The
//! stamp says which ticket the words belong to and whether they are complete:
//! `0` never written, `2t+1` ticket `t` being written, `2t+2` ticket `t`
//! committed. Readers copy the words optimistically and keep the copy only if
//! the stamp was `committed(t)` before and is unchanged after: the seqlock
//! pattern, with the fences Hans Boehm showed correct in the C++11 model ("Can
//! seqlocks get along with programming language memory models?", MSPC 2012).
//! Because the payload lives in atomics, a reader racing a writer sees stale or
//! mixed *values*, never undefined behaviour, and the stamp check throws those
//! away; no `unsafe` is needed.
//!
//! Orderings are labelled and each label names its pair:
//!
//! | label | access | pairs with |
//! |---|---|---|
//! | W2 | claim: `stamp = writing(t)`, Release | the overwriter's continuation wait (ring, W4) |
//! | W3 | `fence(Release)` after the claim | R2 |
//! | W5 | commit: `stamp = committed(t)`, Release | R1, and the ring's waits W1 and D1 |
//! | R1 | reader's first stamp load, Acquire | W5 |
//! | R2 | reader's `fence(Acquire)` before the re-check | W3 |
//!
//! The first word of every slot's payload is a [`Header`]: an entry's first
//! slot records its byte length and slot count, later slots their part index.

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

/// Words a slot needs besides its payload: the stamp and the header.
pub(crate) const OVERHEAD_WORDS: usize = 2;

const KIND_SHIFT: u32 = 62;
const KIND_FIRST: u64 = 1;
const KIND_CONT: u64 = 2;
const LOW_30: u64 = (1 << 30) - 1;
const LOW_32: u64 = u32::MAX as u64;

/// Most slots one entry may span (the header keeps 30 bits for it).
pub(crate) const MAX_CHUNKS: u64 = LOW_30;

/// What the first payload word of a slot says about its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// First slot of an entry of `len` bytes spanning `chunks` slots.
    First { len: u32, chunks: u32 },
    /// Slot `part` (1-based after the first) of a multi-slot entry.
    Cont { part: u32 },
}

impl Header {
    #[inline]
    fn encode(self) -> u64 {
        match self {
            Header::First { len, chunks } => {
                (KIND_FIRST << KIND_SHIFT) | ((u64::from(chunks) & LOW_30) << 32) | u64::from(len)
            }
            Header::Cont { part } => (KIND_CONT << KIND_SHIFT) | u64::from(part),
        }
    }

    /// `None` for a word that is no header: a never-written slot, or garbage
    /// from an unvalidated read (callers discard those after the re-check).
    #[inline]
    pub(crate) fn decode(word: u64) -> Option<Header> {
        match word >> KIND_SHIFT {
            KIND_FIRST => Some(Header::First {
                len: (word & LOW_32) as u32,
                chunks: ((word >> 32) & LOW_30) as u32,
            }),
            KIND_CONT => Some(Header::Cont {
                part: (word & LOW_32) as u32,
            }),
            _ => None,
        }
    }
}

/// What a validated read expects to find.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Want {
    /// The start of an entry (a continuation is reported, not copied).
    First,
    /// Part `part` of an entry, of which `remaining` bytes are still unread.
    Cont { part: u32, remaining: usize },
}

/// Why a validated read returned nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    /// The ticket is not committed yet (its writer is still working).
    InFlight,
    /// A later lap has claimed the slot, before or during the read.
    Overwritten,
}

/// A view of one slot inside a page: the stamp and the payload words.
#[derive(Clone, Copy)]
pub(crate) struct Slot<'a> {
    stamp: &'a AtomicU64,
    /// `words[0]` is the header, the rest is payload.
    words: &'a [AtomicU64],
}

impl<'a> Slot<'a> {
    /// `raw` is `[stamp, header, payload...]`; the ring guarantees at least one
    /// payload word.
    #[inline]
    pub(crate) fn new(raw: &'a [AtomicU64]) -> Self {
        let (stamp, words) = raw.split_first().expect("a slot has a stamp");
        Self { stamp, words }
    }

    /// Payload bytes one slot holds.
    #[inline]
    pub(crate) fn payload_bytes(words_per_slot: usize) -> usize {
        (words_per_slot - OVERHEAD_WORDS) * 8
    }

    #[inline]
    fn capacity_bytes(&self) -> usize {
        (self.words.len() - 1) * 8
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
        self.wait_for_slow(expected, order)
    }

    #[cold]
    #[inline(never)]
    fn wait_for_slow(&self, expected: u64, order: Ordering) -> bool {
        let mut backoff = Backoff::new();
        let mut waited = false;
        loop {
            let stamp = self.stamp.load(order);
            if stamp == expected {
                return waited;
            }
            // A slot's stamp only grows and nobody passes a ticket that is
            // waiting for it (guarantee 5); this would be a protocol bug.
            debug_assert!(stamp < expected, "stamp {stamp} passed {expected}");
            waited = true;
            backoff.snooze();
        }
    }

    /// Waits until the stamp is greater than `stamp`: the ticket that owned the
    /// slot has been claimed by its overwriter. Returns whether it had to wait.
    pub(crate) fn wait_past(&self, stamp: u64, order: Ordering) -> bool {
        let mut backoff = Backoff::new();
        let mut waited = false;
        while self.stamp.load(order) <= stamp {
            waited = true;
            backoff.snooze();
        }
        waited
    }

    /// The header left by the previous owner. Only the slot's current owner, or
    /// a thread that excludes every writer of the slot, may call this: it is a
    /// plain `Relaxed` load ordered by the caller's Acquire wait.
    #[inline]
    pub(crate) fn owned_header(&self) -> Option<Header> {
        // Relaxed: the caller owns the slot; its Acquire wait (W1 or D1) on
        // the previous commit already ordered these words before this load.
        Header::decode(self.words[0].load(Ordering::Relaxed))
    }

    /// Claims the slot for ticket `t`. The caller owns it: it has seen
    /// `committed(t - N)` (or `0`) and captured what it had to.
    #[inline]
    pub(crate) fn claim(&self, t: u64) {
        // W2 Release: pairs with the Acquire continuation wait (ring, W4) of the
        // writer that overwrites a later slot of the entry captured before this
        // claim, so the capture's loads happen before that writer's stores.
        self.stamp.store(writing(t), Ordering::Release);
    }

    /// Stores the header and `bytes` (at most one slot's payload). Owner only,
    /// between `claim` + [`writer_fence`] and `commit`.
    #[inline]
    pub(crate) fn fill(&self, header: Header, bytes: &[u8]) {
        debug_assert!(bytes.len() <= self.capacity_bytes());
        // Relaxed stores: published by the commit (W5); a reader that loads
        // one early fails its re-check (W3 pairs with R2).
        self.words[0].store(header.encode(), Ordering::Relaxed);
        let mut chunks = bytes.chunks_exact(8);
        for (word, chunk) in self.words[1..].iter().zip(&mut chunks) {
            let mut le = [0u8; 8];
            le.copy_from_slice(chunk);
            word.store(u64::from_le_bytes(le), Ordering::Relaxed);
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            self.words[1 + bytes.len() / 8].store(tail_word(bytes), Ordering::Relaxed);
        }
    }

    /// Publishes ticket `t`.
    #[inline]
    pub(crate) fn commit(&self, t: u64) {
        // W5 Release: pairs with the reader's Acquire stamp load (R1) and the
        // ring's Acquire waits (W1 next lap, D1 drain): whoever sees
        // committed(t) sees the header and payload stored by `fill`.
        self.stamp.store(committed(t), Ordering::Release);
    }

    /// Appends `nbytes` of payload to `out` without validation. Only for a
    /// thread that excludes every writer of the slot (its owner, a capturer, or
    /// the drainer of a closed ring) after an Acquire wait on the stamp.
    #[inline(always)]
    pub(crate) fn copy_payload(&self, nbytes: usize, out: &mut Vec<u8>) {
        let nbytes = nbytes.min(self.capacity_bytes());
        let words = nbytes.div_ceil(8);
        // Zero-fill whole words, then store each loaded word into place
        // through a slice (pointer and length stay in registers). Measured
        // alternatives (single-threaded join of 1000 82-byte notes): appending
        // word by word, 18.7 us (every u8 store may alias the Vec's length, so
        // each append reloads it after the previous store: a store-forwarding
        // chain); loading into a local block and appending it, 18.7 us (the
        // block's 16-byte reloads span two 8-byte stores and cannot be
        // forwarded); this, 13.0 us, of which the zero-fill is ~16%.
        let start = out.len();
        out.resize(start + words * 8, 0);
        for (dst, word) in out[start..].chunks_exact_mut(8).zip(&self.words[1..=words]) {
            // Relaxed: validated afterwards by the reader's re-check (R2), or
            // owned by the caller after an Acquire wait (W1, D1).
            dst.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        out.truncate(start + nbytes);
    }

    /// Validated read of ticket `t`: on success appends this slot's share of the
    /// entry to `out` and returns its header; on a miss leaves `out` as it was.
    ///
    /// For `Want::First` a first slot's payload is copied (up to one slot's
    /// worth); a continuation is validated and returned without copying. An
    /// `Err` is returned when the slot does not hold ticket `t` complete and
    /// unchanged for the whole read. A validated header that is not what was
    /// wanted is returned as `Ok` for the caller to judge.
    #[inline(always)]
    pub(crate) fn read(&self, t: u64, want: Want, out: &mut Vec<u8>) -> Result<Header, Miss> {
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
        // Unvalidated until the re-check: sizes derived from it are clamped to
        // the slot, so garbage from a racing writer costs a wasted copy, no more.
        let header = Header::decode(self.words[0].load(Ordering::Relaxed));
        let nbytes = match (header, want) {
            (Some(Header::First { len, .. }), Want::First) => len as usize,
            (Some(Header::Cont { part }), Want::Cont { part: p, remaining }) if part == p => {
                remaining
            }
            _ => 0,
        };
        self.copy_payload(nbytes, out);
        // R2 Acquire fence: pairs with the writer's W3 Release fence. If any load
        // above read a store of a later writer, that writer's claim (stored
        // before its W3) is visible to the re-check below, which then fails.
        fence(Ordering::Acquire);
        // Relaxed: the R2 fence above orders it after the payload loads.
        let s2 = self.stamp.load(Ordering::Relaxed);
        if s2 != s1 {
            out.truncate(mark);
            return Err(Miss::Overwritten);
        }
        // Validated: `header` is what ticket t's writer stored.
        header.ok_or_else(|| {
            out.truncate(mark);
            Miss::Overwritten
        })
    }
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

/// W3: the writer's fence between its claims and its payload stores.
#[inline]
pub(crate) fn writer_fence() {
    // W3 Release fence: pairs with the reader's R2 Acquire fence. Orders the
    // claim (W2, stamp = writing) before every payload store that follows, so a
    // reader that loaded any of those stores fails its re-check.
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
            Header::First { len: 0, chunks: 1 },
            Header::First {
                len: u32::MAX,
                chunks: MAX_CHUNKS as u32,
            },
            Header::Cont { part: 1 },
            Header::Cont { part: u32::MAX },
        ] {
            assert_eq!(Header::decode(h.encode()), Some(h));
        }
        assert_eq!(Header::decode(0), None);
        assert_eq!(Header::decode(3 << KIND_SHIFT), None);
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
        let slot = Slot::new(&words);
        for len in [0usize, 1, 7, 8, 9, 31, 32] {
            let bytes: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
            let t = len as u64;
            slot.claim(t);
            writer_fence();
            slot.fill(
                Header::First {
                    len: len as u32,
                    chunks: 1,
                },
                &bytes,
            );
            slot.commit(t);
            let mut out = vec![0xAA];
            assert!(slot.read(t, Want::First, &mut out).is_ok());
            assert_eq!(&out[1..], &bytes[..]);
            // A read for another ticket misses and leaves `out` alone.
            assert_eq!(slot.read(t + 1, Want::First, &mut out), Err(Miss::InFlight));
            if t > 0 {
                let miss = slot.read(t - 1, Want::First, &mut out);
                assert_eq!(miss, Err(Miss::Overwritten));
            }
            assert_eq!(&out[1..], &bytes[..]);
        }
    }

    #[test]
    fn a_slot_being_written_is_in_flight() {
        let words = raw(3);
        let slot = Slot::new(&words);
        slot.claim(4);
        let mut out = Vec::new();
        assert_eq!(slot.read(4, Want::First, &mut out), Err(Miss::InFlight));
        assert!(out.is_empty());
    }
}
