//! Incremental reads: a reader that remembers the next seq it wants and, each
//! time it comes back, reads only the entries pushed since.
//!
//! Like a receiver of tokio's `broadcast` channel, a reader that falls more
//! than a lap behind learns how many entries it missed (`Lagged(n)` there,
//! [`Progress::lagged`] here); unlike it, nothing is consumed and writers
//! never wait for readers. The reads are the validated scan of `read.rs`,
//! started at the cursor's seq, with one difference: the scan stops at the
//! first entry still being written, so the next read starts there and every
//! entry reaches the cursor once, in order, or is counted as missed. No new
//! ordering is involved: each entry is read through the slot's seqlock (R1,
//! R2 in `slot.rs`), the head load only bounds the scan.

use std::fmt;

use super::read::Until;
use super::Ring;
use crate::record::Record;
use crate::sync::Ordering;

/// What one incremental read did: where the next one starts, and how many
/// entries since the previous one it can never return.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// The seq the next read starts at: one past the newest entry read, or
    /// the seq of an entry that was still being written (read next time).
    pub next: u64,
    /// Entries the reader missed because the ring overwrote them before it
    /// got to them (it fell more than a lap behind, or was lapped while
    /// reading). `0` while the reader keeps up.
    pub lagged: u64,
}

/// Owned entries `(seq, value)` read by [`Cursor::read`], oldest first, and
/// how many were missed since the previous read.
#[derive(Clone, PartialEq, Eq)]
#[must_use]
pub struct Batch<T> {
    entries: Vec<(u64, T)>,
    lagged: u64,
}

impl<T> Batch<T> {
    /// The new entries, oldest first.
    #[must_use]
    pub fn entries(&self) -> &[(u64, T)] {
        &self.entries
    }

    /// Takes the entries out.
    #[must_use]
    pub fn into_entries(self) -> Vec<(u64, T)> {
        self.entries
    }

    /// Entries overwritten before the cursor could read them (see
    /// [`Progress::lagged`]).
    #[must_use]
    pub fn lagged(&self) -> u64 {
        self.lagged
    }
}

impl<T: fmt::Debug> fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("entries", &self.entries)
            .field("lagged", &self.lagged)
            .finish()
    }
}

/// A reader's place in a ring: the next seq it wants, and a scratch buffer.
///
/// Each [`visit`](Cursor::visit) or [`read`](Cursor::read) returns the entries
/// pushed since the previous one, each once and in seq order, and moves the
/// cursor past them. A cursor that fell behind by more than the ring's
/// capacity is told how many entries it missed and carries on from the
/// oldest entry still held. Reading never blocks writers and consumes
/// nothing: any number of cursors read the same ring independently.
///
/// An entry still being written when the cursor reaches it ends the read
/// there; it and the entries after it come with the next read (or are
/// counted as missed, if the ring overwrites them first).
///
/// A cursor is plain data: use it with the ring it was made for (with
/// another ring it reads that ring's entries from its seq on).
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::{Cursor, Ring, Text};
///
/// let ring = Ring::<Text>::new(3).expect("valid");
/// let mut cursor = Cursor::new();
/// ring.push("a").expect("open");
/// ring.push("b").expect("open");
/// let batch = cursor.read(&ring);
/// assert_eq!(batch.entries(), [(0, "a".to_string()), (1, "b".to_string())]);
///
/// ring.push("c").expect("open");
/// let batch = cursor.read(&ring); // only what is new
/// assert_eq!((batch.entries(), batch.lagged()), (&[(2, "c".to_string())][..], 0));
///
/// for note in ["d", "e", "f", "g"] {
///     ring.push(note).expect("open"); // more than a lap: "d" is overwritten unread
/// }
/// let batch = cursor.read(&ring);
/// assert_eq!(batch.lagged(), 1);
/// assert_eq!(batch.entries().len(), 3); // e, f, g
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Cursor {
    next: u64,
    scratch: Vec<u8>,
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Cursor {
    /// A cursor at seq 0: its first read returns every entry the ring still
    /// holds and counts the ones it no longer does as missed.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A cursor whose next read starts at `seq`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// let ring = callring::Ring::<callring::Text>::new(8).expect("valid");
    /// for note in ["a", "b", "c"] {
    ///     ring.push(note).expect("open");
    /// }
    /// let mut cursor = callring::Cursor::at(2);
    /// assert_eq!(cursor.read(&ring).entries(), [(2, "c".to_string())]);
    /// # }
    /// ```
    #[must_use]
    pub fn at(seq: u64) -> Self {
        Self {
            next: seq,
            scratch: Vec::new(),
        }
    }

    /// The seq the next read starts at.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Calls `f(seq, bytes)` for each entry pushed since the previous read,
    /// oldest first (`bytes` is the entry's encoding, valid for the call),
    /// and moves the cursor past them. Allocates nothing once the cursor's
    /// scratch buffer has grown to the longest entry.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// let ring = callring::Ring::<callring::Text>::new(4).expect("valid");
    /// let mut cursor = ring.cursor();
    /// ring.push("abc").expect("open");
    /// let mut seen = Vec::new();
    /// let progress = cursor.visit(&ring, |seq, bytes| seen.push((seq, bytes.len())));
    /// assert_eq!((seen, progress.next, progress.lagged), (vec![(0, 3)], 1, 0));
    /// # }
    /// ```
    pub fn visit<R: Record>(&mut self, ring: &Ring<R>, mut f: impl FnMut(u64, &[u8])) -> Progress {
        self.scratch.clear();
        let scanned = ring.scan_from(self.next, Until::InFlight, &mut self.scratch, 0, {
            |seq, buf, mark| {
                f(seq, &buf[mark..]);
                buf.truncate(mark);
            }
        });
        self.next = scanned.next;
        Progress {
            next: scanned.next,
            lagged: scanned.behind + scanned.skipped.overwritten,
        }
    }

    /// Owned copies of the entries pushed since the previous read, oldest
    /// first, and how many were missed; moves the cursor past them.
    pub fn read<R: Record>(&mut self, ring: &Ring<R>) -> Batch<R::Owned> {
        let mut entries = Vec::new();
        let mut undecodable = 0;
        let progress = self.visit(ring, |seq, bytes| match R::decode(bytes) {
            Ok(value) => entries.push((seq, value)),
            Err(_) => undecodable += 1,
        });
        if undecodable > 0 {
            ring.stats
                .undecodable
                .fetch_add(undecodable, Ordering::Relaxed); // a statistic
        }
        Batch {
            entries,
            lagged: progress.lagged,
        }
    }
}

impl<R: Record> Ring<R> {
    /// A cursor at the oldest entry the ring holds now: its first read
    /// returns what a snapshot would, later reads only what is new.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// let ring = callring::Ring::<callring::Text>::new(2).expect("valid");
    /// for note in ["a", "b", "c"] {
    ///     ring.push(note).expect("open");
    /// }
    /// let mut cursor = ring.cursor();
    /// assert_eq!(cursor.next_seq(), 1);
    /// assert_eq!(cursor.read(&ring).lagged(), 0);
    /// # }
    /// ```
    #[must_use]
    pub fn cursor(&self) -> Cursor {
        Cursor::at(self.end_ticket().saturating_sub(self.layout.capacity))
    }

    /// Calls `f(seq, bytes)` for every entry with a seq of at least `seq`,
    /// oldest first, without blocking writers; returns where to continue and
    /// how many entries from `seq` on were overwritten before they could be
    /// read. Stops at an entry still being written (its seq is
    /// [`Progress::next`]). [`Cursor`] keeps the seq and a scratch buffer for
    /// you.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// let ring = callring::Ring::<callring::Text>::new(2).expect("valid");
    /// for note in ["a", "b", "c"] {
    ///     ring.push(note).expect("open");
    /// }
    /// let mut seqs = Vec::new();
    /// let progress = ring.read_since(0, |seq, _| seqs.push(seq));
    /// assert_eq!((seqs, progress.next, progress.lagged), (vec![1, 2], 3, 1));
    /// # }
    /// ```
    #[must_use = "the progress says where the next read starts"]
    pub fn read_since(&self, seq: u64, f: impl FnMut(u64, &[u8])) -> Progress {
        Cursor::at(seq).visit(self, f)
    }
}
