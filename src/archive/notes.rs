//! Reading a call's archived notes back: the note lines of one call, in
//! seq order, from the lines of every segment.

use std::path::Path;

use crate::archive::record::{ArchiveLine, NoteRecord};
use crate::archive::verify::{read_archive_lines, VerifyError};

/// The archived notes of call `call_id` in the archive in `dir`, in seq
/// order (the order they were appended): the notes that left its ring
/// (evicted, or drained when it ended), written by a call built with
/// [`notes_archive`](crate::call::CallStateBuilder::notes_archive).
///
/// For an ended call these are all its notes, seqs `0..n` each once, unless
/// retention pruned segments holding some of them (those are gone; see
/// [`ArchiveConfig::max_age`](crate::archive::ArchiveConfig::max_age)). For a
/// live one, they and the notes still in its ring
/// ([`CallState::notes`](crate::call::CallState::notes)) are all its notes,
/// each in exactly one of the two places (but read them at different times
/// and a note can move between). A note line found twice (which only a bug
/// or a copied segment could cause) is returned twice.
///
/// Reads the whole archive, like [`verify`](crate::archive::verify), and
/// keeps only this call's notes in memory.
///
/// # Errors
///
/// As [`verify`](crate::archive::verify): a missing directory, an
/// unreadable segment, a corrupt line. A torn last line is skipped (it was
/// never durable).
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::archive::{read_notes, ArchiveConfig, Archiver, Origin};
/// use callring::call::{CallState, Limits};
///
/// let dir = tempfile::tempdir().expect("temp dir");
/// let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
/// let call = CallState::builder("call-5")
///     .limits(Limits::new(1, 1).expect("valid"))
///     .notes_archive(archiver.sink("call-5"))
///     .build();
/// call.append_note("first").expect("live call");
/// call.append_note("second").expect("live call"); // evicts "first"
/// archiver.flush().expect("durable");
///
/// let archived = read_notes(dir.path(), "call-5").expect("readable");
/// assert_eq!((archived[0].seq, archived[0].text.as_str()), (0, "first"));
/// assert_eq!(archived[0].reason, Origin::Evicted);
/// assert_eq!(call.notes()[0].text, "second"); // still in the ring
/// # }
/// ```
pub fn read_notes(dir: impl AsRef<Path>, call_id: &str) -> Result<Vec<NoteRecord>, VerifyError> {
    let mut notes = Vec::new();
    read_archive_lines(dir, |line| {
        if let ArchiveLine::Note(note) = line {
            if note.call_id == call_id {
                notes.push(note);
            }
        }
    })?;
    // Stable: equal seqs (duplicates) stay in archive order.
    notes.sort_by_key(|n| n.seq);
    Ok(notes)
}
