//! The read side: a validated scan of the last N tickets, in ticket order.
//!
//! Readers take nothing and wait for nothing. Each slot is read with the
//! seqlock in `slot.rs`, its extension block inside the same validation, so a
//! reader racing writers skips entries, never tears them. The scan copies only
//! the bytes an entry uses, straight into the caller's buffer, and truncates
//! back if a re-check fails.

use std::fmt;

use super::Ring;
use crate::record::{Record, Text};
use crate::slot::{Miss, Slot};
use crate::sync::Ordering;

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
        scratch.clear();
        self.scan(scratch, |seq, buf, mark| {
            f(seq, &buf[mark..]);
            buf.truncate(mark);
        })
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
    /// its bytes are appended to `buf` from offset `mark` and
    /// `emit(seq, buf, mark)` is called; `emit` may keep or truncate them.
    pub(crate) fn scan(
        &self,
        buf: &mut Vec<u8>,
        emit: impl FnMut(u64, &mut Vec<u8>, usize),
    ) -> Skipped {
        self.scan_padded(buf, 0, emit)
    }

    /// [`scan`](Ring::scan), with `pad` zero bytes in `buf` before each entry's
    /// bytes (`emit` still gets the offset where the padding starts), for a
    /// caller that rewrites a fixed-size header in place into something longer
    /// (a rendered timestamp) without moving the rest of the entry.
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
        let layout = &self.layout;
        let wps = layout.words_per_slot;
        let per_page = 1usize << layout.page_shift;
        let capacity = layout.capacity as usize;
        let mut ticket = start;
        while ticket < end {
            let (page, offset) = layout.locate(ticket);
            let in_page = offset / wps;
            let index = (page << layout.page_shift) + in_page;
            // Slots left in this page (the last page may be short), then in
            // the tickets asked for.
            let left = (per_page - in_page).min(capacity - index);
            let run = (end - ticket).min(left as u64) as usize;
            match self.slots.get(page) {
                Some(words) => {
                    for raw in words[offset..offset + run * wps].chunks_exact(wps) {
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

/// Where a scan stops.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Until {
    /// At the end of the ring, skipping (and counting) entries in flight.
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
        // One allocation for the common case of entries that fit inline.
        let per_entry = self.layout.inline_bytes + sep.len();
        bytes.reserve(self.len().min(self.capacity()) * per_entry);
        let skipped = match sep.as_bytes() {
            // The common one-byte separator as a push: a runtime-length
            // append is a memcpy call per entry.
            &[byte] => self.scan(&mut bytes, |_, buf, _| buf.push(byte)),
            sep => self.scan(&mut bytes, |_, buf, _| buf.extend_from_slice(sep)),
        };
        if bytes.len() > start {
            bytes.truncate(bytes.len() - sep.len());
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
