//! Call notes: a timestamp and a line of text.

use std::fmt;

use super::time::{PrefixCache, TimeZoneChoice, Timestamp};
use crate::record::{DecodeError, EncodeError, Record};

/// One call note, as read back from a [`CallState`](super::CallState).
///
/// `Display` renders it as the original host did:
/// `[%Y-%m-%d %H:%M:%S] text`, in UTC.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::call::{Note, Timestamp};
///
/// let note = Note::new(Timestamp::from_unix_nanos(0), "call started");
/// assert_eq!(note.to_string(), "[1970-01-01 00:00:00] call started");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Note {
    /// When the note was appended.
    pub at: Timestamp,
    /// The note's text.
    pub text: String,
}

impl Note {
    /// A note with the given time and text.
    pub fn new(at: Timestamp, text: impl Into<String>) -> Self {
        Self {
            at,
            text: text.into(),
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut prefix = Vec::with_capacity(super::time::PREFIX_LEN);
        PrefixCache::new(TimeZoneChoice::Utc).push(self.at, &mut prefix);
        f.write_str(std::str::from_utf8(&prefix).map_err(|_| fmt::Error)?)?;
        f.write_str(&self.text)
    }
}

/// Bytes of a stored note before its text: the timestamp, little-endian.
pub(crate) const NOTE_HEADER: usize = 8;

/// How notes are stored in the ring: 8 bytes of unix nanoseconds, then the
/// UTF-8 text. [`CallState`](super::CallState) builds the encoding in a stack
/// buffer (see [`EncodedNote`]), so appending a note allocates nothing.
#[derive(Debug)]
pub(crate) struct NoteRecord;

impl Record for NoteRecord {
    type Value = [u8];
    type Owned = Note;
    type Encoded<'a> = &'a [u8];

    fn encode(value: &[u8]) -> Result<&[u8], EncodeError> {
        Ok(value)
    }

    fn decode(bytes: &[u8]) -> Result<Note, DecodeError> {
        let (at, text) = split(bytes)?;
        Ok(Note {
            at,
            text: text.to_owned(),
        })
    }
}

/// Splits a stored note into its timestamp and text.
pub(crate) fn split(bytes: &[u8]) -> Result<(Timestamp, &str), DecodeError> {
    if bytes.len() < NOTE_HEADER {
        return Err(DecodeError::custom(format!(
            "a stored note is at least {NOTE_HEADER} bytes, got {}",
            bytes.len()
        )));
    }
    let (head, text) = bytes.split_at(NOTE_HEADER);
    let nanos = i64::from_le_bytes(head.try_into().map_err(|_| DecodeError::custom("header"))?);
    let text = std::str::from_utf8(text).map_err(|e| DecodeError::InvalidUtf8 {
        valid_up_to: e.valid_up_to() + NOTE_HEADER,
    })?;
    Ok((Timestamp::from_unix_nanos(nanos), text))
}

/// A note encoded for the ring, on the stack when it is short.
pub(crate) enum EncodedNote {
    Inline { buf: [u8; INLINE], len: usize },
    Heap(Vec<u8>),
}

/// Notes up to this many bytes (with their 8-byte timestamp) are encoded
/// without touching the heap: one default slot's payload.
const INLINE: usize = 112;

impl EncodedNote {
    pub(crate) fn new(at: Timestamp, text: &str) -> Self {
        let total = NOTE_HEADER + text.len();
        if total <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..NOTE_HEADER].copy_from_slice(&at.unix_nanos().to_le_bytes());
            buf[NOTE_HEADER..total].copy_from_slice(text.as_bytes());
            Self::Inline { buf, len: total }
        } else {
            let mut bytes = Vec::with_capacity(total);
            bytes.extend_from_slice(&at.unix_nanos().to_le_bytes());
            bytes.extend_from_slice(text.as_bytes());
            Self::Heap(bytes)
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Self::Inline { buf, len } => &buf[..*len],
            Self::Heap(bytes) => bytes,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_short_and_long() {
        for text in ["", "hi", &"é".repeat(100)] {
            let at = Timestamp::from_unix_nanos(-5);
            let enc = EncodedNote::new(at, text);
            assert_eq!(NoteRecord::decode(enc.bytes()), Ok(Note::new(at, text)));
        }
    }

    #[test]
    fn bad_bytes_are_errors() {
        assert!(NoteRecord::decode(b"short").is_err());
        let mut bytes = 0i64.to_le_bytes().to_vec();
        bytes.push(0xff);
        assert_eq!(
            NoteRecord::decode(&bytes),
            Err(DecodeError::InvalidUtf8 { valid_up_to: 8 })
        );
    }
}
