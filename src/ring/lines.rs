//! A reader's cache of rendered entries, kept up to date incrementally.
//!
//! Behind [`Joiner`] (a text ring's entries joined by a separator) and the
//! call layer's `NotesReader` (rendered notes): each read renders only the
//! entries pushed since the previous one (the cursor scan of `read.rs`),
//! drops the ones the ring has overwritten, and hands out the text with one
//! copy or none. Lines live in one `String`; dropped lines are an offset,
//! reclaimed once they are half of it (one move of the live text).

use std::collections::VecDeque;
use std::fmt;

use super::read::Until;
use super::Ring;
use crate::record::{Record, Text};

/// Rendered entries, each followed by a separator, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    /// The lines; those before `start` are dropped.
    text: String,
    start: usize,
    /// `(seq, offset in text one past the line's separator)`, oldest first.
    lines: VecDeque<(u64, usize)>,
    /// One past each new line's end in `scratch`, during a refresh.
    ends: Vec<(u64, usize)>,
    next: u64,
    lagged: u64,
    /// Whether the last refresh read up to the end of the ring (it did not
    /// stop at an entry in flight).
    reached_end: bool,
    scratch: Vec<u8>,
}

impl Lines {
    /// Brings the lines up to date with `ring`. Each new entry's bytes are
    /// appended to a buffer after `pad` zero bytes, at offset `mark`;
    /// `render(buf, mark)` rewrites them into the line and its separator, or
    /// returns `false` to leave the entry out (it truncates `buf` to `mark`).
    pub(crate) fn refresh<R: Record>(
        &mut self,
        ring: &Ring<R>,
        pad: usize,
        mut render: impl FnMut(&mut Vec<u8>, usize) -> bool,
    ) {
        self.scratch.clear();
        self.ends.clear();
        let ends = &mut self.ends;
        let scanned = ring.scan_from(
            self.next,
            Until::InFlight,
            &mut self.scratch,
            pad,
            |seq, buf, mark| {
                if render(buf, mark) {
                    ends.push((seq, buf.len()));
                } else {
                    buf.truncate(mark);
                }
            },
        );
        self.next = scanned.next;
        self.reached_end = scanned.next >= scanned.end;
        self.lagged += scanned.behind + scanned.skipped.overwritten;
        // Lines of entries the ring had overwritten when the scan began.
        let oldest = scanned.end.saturating_sub(ring.capacity() as u64);
        while let Some(&(_, end)) = self.lines.front().filter(|(seq, _)| *seq < oldest) {
            self.start = end;
            self.lines.pop_front();
        }
        if self.start > self.text.len() / 2 {
            self.text.drain(..self.start);
            for (_, end) in &mut self.lines {
                *end -= self.start;
            }
            self.start = 0;
        }
        let base = self.text.len();
        // Entries pushed as `&str` and read back whole are valid UTF-8;
        // this stays total rather than trusting it.
        if let Ok(new) = std::str::from_utf8(&self.scratch) {
            self.text.push_str(new);
            let lines = self.ends.iter().map(|&(seq, end)| (seq, base + end));
            self.lines.extend(lines);
        } else {
            let mut from = 0;
            for &(seq, end) in &self.ends {
                let line = String::from_utf8_lossy(&self.scratch[from..end]);
                self.text.push_str(&line);
                self.lines.push_back((seq, self.text.len()));
                from = end;
            }
        }
    }

    /// The live lines, without the last separator (`sep_len` bytes).
    pub(crate) fn text(&self, sep_len: usize) -> &str {
        let text = &self.text[self.start..];
        let end = text.len().saturating_sub(sep_len);
        text.get(..end).unwrap_or(text)
    }

    /// Entries overwritten before a refresh reached them.
    pub(crate) fn lagged(&self) -> u64 {
        self.lagged
    }

    /// Lines held.
    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether the last refresh read up to the end of the ring: then the
    /// lines hold every entry a fresh scan begun at the same time could have
    /// returned.
    #[cfg(feature = "call")]
    pub(crate) fn reached_end(&self) -> bool {
        self.reached_end
    }

    /// The seq the next refresh starts at.
    pub(crate) fn next(&self) -> u64 {
        self.next
    }
}

/// A reader's cached join of a text ring's entries, made by
/// [`Ring::joiner`]: [`join`](Joiner::join) returns what
/// [`Ring::join`] does, but copies in only the entries pushed since the
/// previous call and drops the ones overwritten since, so a poll costs what
/// changed plus one copy of the text ([`text`](Joiner::text): none). Never
/// blocks pushes. An entry still being written when the joiner reaches it,
/// and the entries after it, show up at the next read.
///
/// Memory: the joiner holds one copy of the ring's retained text.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// let ring = callring::Ring::<callring::Text>::new(2).expect("valid");
/// let mut joiner = ring.joiner("\n");
/// ring.push("a").expect("open");
/// ring.push("b").expect("open");
/// assert_eq!(joiner.join(), "a\nb");
/// ring.push("c").expect("open"); // "a" is overwritten
/// assert_eq!(joiner.text(), "b\nc");
/// assert_eq!(joiner.lagged(), 0);
/// # }
/// ```
pub struct Joiner<'a> {
    ring: &'a Ring<Text>,
    sep: String,
    lines: Lines,
}

impl fmt::Debug for Joiner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Joiner")
            .field("sep", &self.sep)
            .field("next", &self.lines.next())
            .field("lines", &self.lines.len())
            .field("lagged", &self.lines.lagged())
            .finish_non_exhaustive()
    }
}

impl Joiner<'_> {
    /// All entries joined by the separator, brought up to date, copied once.
    #[must_use]
    pub fn join(&mut self) -> String {
        self.text().to_owned()
    }

    /// Appends all entries joined by the separator to `out`, brought up to
    /// date: with a buffer kept across polls, one copy into memory already
    /// allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// let ring = callring::Ring::<callring::Text>::new(10).expect("valid");
    /// let mut joiner = ring.joiner("\n");
    /// let mut text = String::new();
    /// for note in ["a", "b"] {
    ///     ring.push(note).expect("open");
    ///     text.clear();
    ///     joiner.join_into(&mut text);
    /// }
    /// assert_eq!(text, "a\nb");
    /// # }
    /// ```
    pub fn join_into(&mut self, out: &mut String) {
        out.push_str(self.text());
    }

    /// [`join`](Joiner::join) without the copy: borrowed until the next read.
    #[must_use]
    pub fn text(&mut self) -> &str {
        let sep = self.sep.as_bytes();
        self.lines.refresh(self.ring, 0, |buf, _| {
            buf.extend_from_slice(sep);
            true
        });
        self.lines.text(sep.len())
    }

    /// Entries this joiner never saw because the ring overwrote them before
    /// a read reached them (see [`Progress::lagged`](crate::Progress)).
    #[must_use]
    pub fn lagged(&self) -> u64 {
        self.lines.lagged()
    }
}

impl Ring<Text> {
    /// A joiner with separator `sep`: a reader that keeps the joined text
    /// and, at each [`join`](Joiner::join), adds only what is new.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// let ring = callring::Ring::<callring::Text>::new(100).expect("valid");
    /// let mut joiner = ring.joiner(", ");
    /// for i in 0..3 {
    ///     ring.push(i.to_string()).expect("open");
    ///     assert_eq!(joiner.text(), ring.join(", "));
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn joiner(&self, sep: &str) -> Joiner<'_> {
        Joiner {
            ring: self,
            sep: sep.to_owned(),
            lines: Lines::default(),
        }
    }
}
