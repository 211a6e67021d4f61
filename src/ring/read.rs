//! The read side: a validated scan of the last N tickets, in ticket order.
//!
//! Readers take nothing and wait for nothing. Each slot is read with the
//! seqlock in `slot.rs`, its extension block inside the same validation, so a
//! reader racing writers skips entries, never tears them. Reads copy only the
//! bytes an entry uses, straight into the caller's buffer. `visit`,
//! `snapshot` and `join` copy with `Slot::read_at` into a buffer zero-filled
//! once per call (entries back to back for `join`, each at the start for
//! `visit`); `scan_from`, which can pad entries and stop at one in flight,
//! backs cursors, the line caches and the call layer's rendering.

use std::fmt;

use super::Ring;
use crate::record::{Record, Text};
use crate::slot::{Miss, Slot};
use crate::sync::{AtomicU64, Ordering};

/// Entries a read could not return, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Skipped {
    /// Entries still being written when the reader reached them.
    pub in_flight: u64,
    /// Entries overwritten by newer ones before or while they were read.
    pub overwritten: u64,
}

impl Skipped {
    /// Both counts together.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.in_flight + self.overwritten
    }

    fn count(&mut self, miss: Miss) {
        match miss {
            Miss::InFlight => self.in_flight += 1,
            Miss::Overwritten => self.overwritten += 1,
        }
    }
}

/// Owned entries `(seq, value)` in increasing `seq` order, plus what was
/// skipped. Returned by [`Ring::snapshot`].
#[derive(Clone, PartialEq, Eq)]
#[must_use]
pub struct Snapshot<T> {
    entries: Vec<(u64, T)>,
    skipped: Skipped,
}

impl<T> Snapshot<T> {
    /// The entries, oldest first.
    #[must_use]
    pub fn entries(&self) -> &[(u64, T)] {
        &self.entries
    }

    /// Takes the entries out.
    #[must_use]
    pub fn into_entries(self) -> Vec<(u64, T)> {
        self.entries
    }

    /// The values, oldest first.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &T> + '_ {
        self.entries.iter().map(|(_, v)| v)
    }

    /// The sequence numbers, increasing.
    pub fn seqs(&self) -> impl ExactSizeIterator<Item = u64> + '_ {
        self.entries.iter().map(|(s, _)| *s)
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What the snapshot could not include.
    #[must_use]
    pub fn skipped(&self) -> Skipped {
        self.skipped
    }
}

impl<T> IntoIterator for Snapshot<T> {
    type Item = (u64, T);
    type IntoIter = std::vec::IntoIter<(u64, T)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<T: fmt::Debug> fmt::Debug for Snapshot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("entries", &self.entries)
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl<R: Record> Ring<R> {
    /// Calls `f(seq, bytes)` for every entry that can be read whole, oldest
    /// first, without blocking writers. `bytes` is the entry's encoding, valid
    /// for the call only. Uses one scratch buffer for the whole call; see
    /// [`visit_with`](Ring::visit_with) to reuse one across calls.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// let ring = callring::Ring::<callring::Text>::new(4).expect("valid");
    /// ring.push("abc").expect("open");
    /// ring.push("de").expect("open");
    /// let mut total = 0;
    /// let skipped = ring.visit(|_seq, bytes| total += bytes.len());
    /// assert_eq!((total, skipped.total()), (5, 0));
    /// # }
    /// ```
    pub fn visit<F: FnMut(u64, &[u8])>(&self, f: F) -> Skipped {
        let mut scratch = Vec::with_capacity(self.layout.inline_bytes);
        self.visit_with(&mut scratch, f)
    }

    /// [`visit`](Ring::visit) with a caller-owned scratch buffer: no allocation
    /// once the buffer has grown to the longest entry.
    pub fn visit_with<F: FnMut(u64, &[u8])>(&self, scratch: &mut Vec<u8>, mut f: F) -> Skipped {
        // Every entry is read to the start of the scratch buffer, zero-filled
        // once for the call (Slot::read_at grows it for a longer entry):
        // no zero-fill and no length update per entry, as in `join_into`.
        scratch.clear();
        scratch.resize(self.layout.inline_bytes, 0);
        let mut skipped = Skipped::default();
        let end = self.end_ticket();
        let wps = self.layout.words_per_slot;
        for (first, run, words) in self.runs(end.saturating_sub(self.layout.capacity), end) {
            let Some(words) = words else {
                // Their writers have not even allocated the page yet.
                skipped.in_flight += run as u64;
                continue;
            };
            for (ticket, raw) in (first..).zip(words.chunks_exact(wps)) {
                let read = Slot::new(raw)
                    .read_at(ticket, scratch, 0, 0, |b, tail| self.arena.payload(b, tail));
                match read {
                    Ok(len) => f(ticket, &scratch[..len]),
                    Err(miss) => skipped.count(miss),
                }
            }
        }
        scratch.clear();
        if skipped.total() > 0 {
            self.stats
                .reader_skips
                .fetch_add(skipped.total(), Ordering::Relaxed); // a statistic
        }
        skipped
    }

    /// Owned copies of every entry that can be read whole, in `seq` order,
    /// with counts of what was skipped. Never makes a writer wait.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// let ring = callring::Ring::<callring::Text>::new(2).expect("valid");
    /// for note in ["a", "b", "c"] {
    ///     ring.push(note).expect("open");
    /// }
    /// let snap = ring.snapshot();
    /// assert_eq!(snap.entries(), [(1, "b".to_string()), (2, "c".to_string())]);
    /// assert_eq!(snap.skipped().total(), 0);
    /// # }
    /// ```
    pub fn snapshot(&self) -> Snapshot<R::Owned> {
        let mut entries = Vec::with_capacity(self.len().min(self.capacity()));
        let mut undecodable = 0;
        let skipped = self.visit(|seq, bytes| match R::decode(bytes) {
            Ok(value) => entries.push((seq, value)),
            Err(_) => undecodable += 1,
        });
        if undecodable > 0 {
            self.stats
                .undecodable
                .fetch_add(undecodable, Ordering::Relaxed); // a statistic
        }
        Snapshot { entries, skipped }
    }

    /// The validated scan of the last N tickets. For each entry read whole,
    /// `pad` zero bytes and then its bytes are appended to `buf` from offset
    /// `mark`, and `emit(seq, buf, mark)` is called; `emit` may keep or
    /// truncate them. The padding is for a caller that rewrites a fixed-size
    /// header in place into something longer (a rendered timestamp) without
    /// moving the rest of the entry.
    #[cfg(feature = "call")]
    pub(crate) fn scan_padded(
        &self,
        buf: &mut Vec<u8>,
        pad: usize,
        emit: impl FnMut(u64, &mut Vec<u8>, usize),
    ) -> Skipped {
        self.scan_from(0, Until::End, buf, pad, emit).skipped
    }

    /// The scan behind every read: validates tickets from `from` (raised to
    /// the oldest the ring still holds) up to the end of the ring, appending
    /// each entry read whole to `buf` after `pad` zero bytes and calling
    /// `emit(seq, buf, mark)` as [`scan_padded`](Ring::scan_padded) does.
    ///
    /// With [`Until::InFlight`] it stops at the first entry still being
    /// written and reports its ticket as `next`, so an incremental reader
    /// comes back for it: entries are then seen in order, none twice.
    #[inline(always)]
    pub(crate) fn scan_from(
        &self,
        from: u64,
        until: Until,
        buf: &mut Vec<u8>,
        pad: usize,
        mut emit: impl FnMut(u64, &mut Vec<u8>, usize),
    ) -> Scanned {
        let end = self.end_ticket();
        let start = from.max(end.saturating_sub(self.layout.capacity));
        let mut scanned = Scanned {
            end,
            next: end.max(from),
            behind: start - from,
            skipped: Skipped::default(),
        };
        self.for_slots(start, end, |ticket, slot| {
            let mark = buf.len();
            if pad > 0 {
                buf.resize(mark + pad, 0);
            }
            let read = match slot {
                Some(slot) => slot.read(ticket, buf, |block, tail| self.arena.payload(block, tail)),
                // Its writer has not even allocated the page yet.
                None => Err(Miss::InFlight),
            };
            match read {
                Ok(()) => emit(ticket, buf, mark),
                Err(miss) => {
                    buf.truncate(mark);
                    if miss == Miss::InFlight && until == Until::InFlight {
                        scanned.next = ticket;
                        return false;
                    }
                    scanned.skipped.count(miss);
                }
            }
            true
        });
        if scanned.skipped.total() > 0 {
            self.stats
                .reader_skips
                .fetch_add(scanned.skipped.total(), Ordering::Relaxed); // a statistic
        }
        scanned
    }

    /// Calls `each(ticket, slot)` for the tickets `start..end` in order (at
    /// most N of them), `None` for a slot whose page is not allocated yet,
    /// until `each` returns `false`. Walks each page's slots as one run of
    /// words: no division and no page look-up per ticket.
    #[inline(always)]
    fn for_slots<'a>(
        &'a self,
        start: u64,
        end: u64,
        mut each: impl FnMut(u64, Option<Slot<'a>>) -> bool,
    ) {
        let wps = self.layout.words_per_slot;
        for (first, run, words) in self.runs(start, end) {
            let mut ticket = first;
            match words {
                Some(words) => {
                    for raw in words.chunks_exact(wps) {
                        if !each(ticket, Some(Slot::new(raw))) {
                            return;
                        }
                        ticket += 1;
                    }
                }
                None => {
                    for _ in 0..run {
                        if !each(ticket, None) {
                            return;
                        }
                        ticket += 1;
                    }
                }
            }
        }
    }
}

impl<R: Record> Ring<R> {
    /// The slot of ticket `t` if its page exists (readers never allocate).
    fn peek_slot(&self, t: u64) -> Option<Slot<'_>> {
        let (page, offset) = self.layout.locate(t);
        let words = self.slots.get(page)?;
        Some(Slot::new(
            &words[offset..offset + self.layout.words_per_slot],
        ))
    }

    /// The tickets `start..end` (at most N of them) as runs of consecutive
    /// slots within one page: `(first ticket, number of slots, the run's
    /// words or None if its page is not allocated yet)`.
    #[inline]
    fn runs(
        &self,
        start: u64,
        end: u64,
    ) -> impl Iterator<Item = (u64, usize, Option<&[AtomicU64]>)> {
        let layout = self.layout;
        let wps = layout.words_per_slot;
        let per_page = 1usize << layout.page_shift;
        let capacity = layout.capacity as usize;
        let mut ticket = start;
        std::iter::from_fn(move || {
            if ticket >= end {
                return None;
            }
            let (page, offset) = layout.locate(ticket);
            let in_page = offset / wps;
            let index = (page << layout.page_shift) + in_page;
            // Slots left in this page (the last page may be short), then in
            // the tickets asked for.
            let left = (per_page - in_page).min(capacity - index);
            let run = (end - ticket).min(left as u64) as usize;
            let words = self
                .slots
                .get(page)
                .map(|words| &words[offset..offset + run * wps]);
            let first = ticket;
            ticket += run as u64;
            Some((first, run, words))
        })
    }
}

/// Where a scan stops.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Until {
    /// At the end of the ring, skipping (and counting) entries in flight.
    #[cfg_attr(not(feature = "call"), allow(dead_code))] // used by the call layer
    End,
    /// At the first entry in flight, or the end of the ring.
    InFlight,
}

/// What [`Ring::scan_from`] did.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scanned {
    /// The end of the ring when the scan began: entries below `end - N`
    /// were overwritten (or being overwritten) by then.
    pub(crate) end: u64,
    /// Where a reader should continue: the end of the ring, or the ticket of
    /// the entry in flight that stopped the scan ([`Until::InFlight`]).
    pub(crate) next: u64,
    /// Tickets from `from` that the ring had already overwritten when the
    /// scan began.
    pub(crate) behind: u64,
    /// Entries skipped during the scan (never the one that stopped it).
    pub(crate) skipped: Skipped,
}

impl Ring<Text> {
    /// All notes as one string, oldest first, separated by `sep`; the empty
    /// string when there are none. Entries being written or overwritten during
    /// the call are left out (see [`join_into`](Ring::join_into) for counts).
    ///
    /// Copies each entry's bytes once, straight into the result, and checks
    /// UTF-8 once over the whole string.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// let ring = callring::Ring::<callring::Text>::new(3).expect("valid");
    /// for note in ["hello", "verified", "goodbye"] {
    ///     ring.push(note).expect("open");
    /// }
    /// assert_eq!(ring.join("\n"), "hello\nverified\ngoodbye");
    /// # }
    /// ```
    #[must_use]
    pub fn join(&self, sep: &str) -> String {
        let mut out = String::new();
        let _ = self.join_into(sep, &mut out);
        out
    }

    /// Appends all notes to `out`, separated by `sep`, and returns what was
    /// skipped.
    pub fn join_into(&self, sep: &str, out: &mut String) -> Skipped {
        let mut bytes = std::mem::take(out).into_bytes();
        let start = bytes.len();
        let sep = sep.as_bytes();
        // Zero-filled once, sized by the newest entry's length (a hint read
        // without validation, at most a slot's inline payload), and grown
        // by doubling if the entries turn out longer; entries are then
        // written back to back at `pos` (Slot::read_at), without a
        // zero-fill and a length update per entry. Measured (callgrind and
        // compare, join of 1000 82-byte notes): zero-filling the worst case
        // (a full slot per entry) instead cost 0.2-0.3 of the ratio to b.
        let end = self.end_ticket();
        let hint = match end.checked_sub(1).and_then(|t| self.peek_slot(t)) {
            Some(slot) => slot.len_hint().min(self.layout.inline_bytes),
            None => self.layout.inline_bytes,
        };
        let per_entry = hint.next_multiple_of(8) + sep.len();
        bytes.resize(start + self.len().min(self.capacity()) * per_entry, 0);
        let mut pos = start;
        let mut skipped = Skipped::default();
        let wps = self.layout.words_per_slot;
        // A plain loop, not a closure: `pos` stays in a register.
        for (first, run, words) in self.runs(end.saturating_sub(self.layout.capacity), end) {
            let Some(words) = words else {
                // Their writers have not even allocated the page yet.
                skipped.in_flight += run as u64;
                continue;
            };
            for (ticket, raw) in (first..).zip(words.chunks_exact(wps)) {
                let read = Slot::new(raw).read_at(ticket, &mut bytes, pos, sep.len(), |b, tail| {
                    self.arena.payload(b, tail)
                });
                match read {
                    Ok(len) => {
                        pos += len;
                        match sep {
                            // The common one-byte separator as a store: a
                            // runtime-length copy is a memcpy call per entry.
                            &[byte] => bytes[pos] = byte,
                            sep => bytes[pos..pos + sep.len()].copy_from_slice(sep),
                        }
                        pos += sep.len();
                    }
                    Err(miss) => skipped.count(miss),
                }
            }
        }
        bytes.truncate(if pos > start { pos - sep.len() } else { start });
        if skipped.total() > 0 {
            self.stats
                .reader_skips
                .fetch_add(skipped.total(), Ordering::Relaxed); // a statistic
        }
        *out = match String::from_utf8(bytes) {
            Ok(text) => text,
            // Unreachable for a ring of `&str` pushes (validated reads return
            // exactly the bytes pushed); kept total rather than panicking.
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        skipped
    }
}
