//! A reader of one call's notes that keeps what it has rendered.
//!
//! Supervisors and LLM turns read a call's notes again and again while agents
//! append a few between reads. [`NotesReader`] keeps the rendered lines in
//! the ring's line cache (`ring/lines.rs`): each read renders only the notes
//! appended since the previous one, drops the lines of notes the ring has
//! overwritten, and hands out the text with one copy (or none, through
//! [`NotesReader::text`]).

use std::fmt;

use super::note::{NoteRecord, NOTE_HEADER};
use super::time::{PrefixCache, TimeZoneChoice, Timestamp, PREFIX_LEN};
use crate::ring::{Lines, Ring};

/// A reader's cached rendering of a call's notes, made by
/// [`CallState::notes_reader`](super::CallState::notes_reader).
///
/// [`all_notes`](NotesReader::all_notes) returns what
/// [`CallState::all_notes`](super::CallState::all_notes) does, but renders
/// only the notes appended since the previous call and drops the ones
/// overwritten since: a poll costs what changed plus one copy of the text.
/// Never blocks appends, and appends never wait for it. A note still being
/// appended when the reader reaches it, and the notes after it, show up at
/// the next read.
///
/// Memory: the reader holds one rendered copy of the call's retained notes.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::call::{CallState, Limits, Timestamp};
///
/// let call = CallState::builder("call-1")
///     .limits(Limits::new(2, 10).expect("valid"))
///     .clock(|| Timestamp::from_unix_nanos(1_764_063_000_000_000_000))
///     .build();
/// let mut reader = call.notes_reader();
/// call.append_note("greeted the caller").expect("live call");
/// assert_eq!(reader.all_notes(), "[2025-11-25 09:30:00] greeted the caller");
/// call.append_note("verified identity").expect("live call");
/// call.append_note("took payment").expect("live call"); // the first note is overwritten
/// assert_eq!(reader.text(), call.all_notes()); // same text, two notes rendered
/// assert_eq!(reader.lagged(), 0);
/// # }
/// ```
pub struct NotesReader<'a> {
    ring: &'a Ring<NoteRecord>,
    view: NotesView,
}

impl fmt::Debug for NotesReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotesReader")
            .field("next", &self.view.lines.next())
            .field("lines", &self.view.lines.len())
            .field("lagged", &self.view.lines.lagged())
            .finish_non_exhaustive()
    }
}

impl<'a> NotesReader<'a> {
    pub(super) fn new(ring: &'a Ring<NoteRecord>, zone: TimeZoneChoice) -> Self {
        Self {
            ring,
            view: NotesView::new(zone),
        }
    }

    /// All notes as one string, as [`CallState::all_notes`] renders them:
    /// the cached lines brought up to date, copied once.
    ///
    /// [`CallState::all_notes`]: super::CallState::all_notes
    #[must_use]
    pub fn all_notes(&mut self) -> String {
        self.text().to_owned()
    }

    /// [`all_notes`](NotesReader::all_notes) without the copy: the text,
    /// brought up to date, borrowed until the next read.
    #[must_use]
    pub fn text(&mut self) -> &str {
        self.view.text(self.ring)
    }

    /// Notes this reader never rendered because the ring overwrote them
    /// before a read reached them (it was polled less than once a lap, or
    /// lapped while reading), since it was made.
    #[must_use]
    pub fn lagged(&self) -> u64 {
        self.view.lines.lagged()
    }
}

/// Rendered notes and the prefix cache, without the ring: what a
/// [`NotesReader`] keeps, and what [`CallState`](super::CallState) keeps
/// behind `all_notes` and `all_notes_shared`.
#[derive(Debug)]
pub(super) struct NotesView {
    lines: Lines,
    prefixes: PrefixCache,
}

impl NotesView {
    pub(super) fn new(zone: TimeZoneChoice) -> Self {
        Self {
            lines: Lines::default(),
            prefixes: PrefixCache::new(zone),
        }
    }

    /// Frees the rendered text (a call that ended keeps no copy of its
    /// notes); the next read renders from scratch.
    pub(super) fn release(&mut self) {
        self.lines = Lines::default();
    }

    /// The notes of `ring`, brought up to date: renders the new notes, drops
    /// the overwritten ones.
    pub(super) fn text(&mut self, ring: &Ring<NoteRecord>) -> &str {
        // Each entry is 8 bytes of nanos then the text; with PAD bytes in
        // front, the rendered prefix overwrites padding + nanos in place.
        const PAD: usize = PREFIX_LEN - NOTE_HEADER;
        let prefixes = &mut self.prefixes;
        self.lines.refresh(ring, PAD, |buf, mark| {
            let Some(head) = buf.get(mark + PAD..mark + PREFIX_LEN) else {
                return false; // shorter than a stored note: skip it
            };
            let mut le = [0u8; NOTE_HEADER];
            le.copy_from_slice(head);
            let at = Timestamp::from_unix_nanos(i64::from_le_bytes(le));
            buf[mark..mark + PREFIX_LEN].copy_from_slice(prefixes.prefix(at));
            buf.push(b'\n');
            true
        });
        self.lines.text(1)
    }

    /// The text as of the last [`text`](NotesView::text).
    pub(super) fn current(&self) -> &str {
        self.lines.text(1)
    }

    /// Whether the last [`text`](NotesView::text) read up to the end of the
    /// ring (see `Lines::reached_end`).
    pub(super) fn reached_end(&self) -> bool {
        self.lines.reached_end()
    }
}
