//! How a value becomes bytes in the ring and back.
//!
//! A [`Record`] encodes a borrowed value into bytes *before* the ring hands out
//! a ticket, so every failure (and any panic in user code) happens while
//! nothing is reserved; after the ticket the ring only copies bytes. It decodes
//! bytes back into an owned value for snapshots and sinks.

use std::fmt;

/// How values of one kind are stored in a [`Ring`](crate::Ring).
///
/// `encode` runs before a ticket is taken: an error there is returned to the
/// caller with the value and nothing is stored. `decode` turns the exact bytes
/// `encode` produced back into an owned value; it must not panic on other
/// bytes (return an error instead).
///
/// # Examples
///
/// A record for `u64` counters, stored as 8 little-endian bytes:
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::{DecodeError, EncodeError, Record, Ring};
///
/// struct Counter;
///
/// impl Record for Counter {
///     type Value = u64;
///     type Owned = u64;
///     type Encoded<'a> = [u8; 8];
///
///     fn encode(value: &u64) -> Result<[u8; 8], EncodeError> {
///         Ok(value.to_le_bytes())
///     }
///
///     fn decode(bytes: &[u8]) -> Result<u64, DecodeError> {
///         let array: [u8; 8] = bytes
///             .try_into()
///             .map_err(|_| DecodeError::custom("a counter is 8 bytes"))?;
///         Ok(u64::from_le_bytes(array))
///     }
/// }
///
/// let ring = Ring::<Counter>::new(4).expect("valid capacity");
/// ring.push(7u64).expect("ring is open");
/// assert_eq!(ring.snapshot().values().collect::<Vec<_>>(), [&7]);
/// # }
/// ```
pub trait Record: 'static {
    /// What `push` borrows.
    type Value: ?Sized;
    /// What snapshots and sinks receive.
    type Owned: Send + 'static;
    /// The encoded bytes: a borrow of the value where the bytes already exist
    /// (text, byte strings), an owned buffer otherwise.
    type Encoded<'a>: AsRef<[u8]>
    where
        Self::Value: 'a;

    /// Encodes `value`. Called before any ticket is taken.
    ///
    /// # Errors
    ///
    /// Any [`EncodeError`]; the push then returns the value to its caller.
    fn encode(value: &Self::Value) -> Result<Self::Encoded<'_>, EncodeError>;

    /// Decodes bytes produced by `encode`.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for bytes `encode` could not have produced.
    fn decode(bytes: &[u8]) -> Result<Self::Owned, DecodeError>;
}

/// UTF-8 text: push `&str` (or `String`), read `String`. Encoding borrows the
/// string's bytes, so a push allocates nothing.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::{Ring, Text};
///
/// let ring = Ring::<Text>::new(2).expect("valid capacity");
/// ring.push("caller asked about the invoice").expect("ring is open");
/// assert_eq!(ring.join("\n"), "caller asked about the invoice");
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Text;

impl Record for Text {
    type Value = str;
    type Owned = String;
    type Encoded<'a> = &'a [u8];

    fn encode(value: &str) -> Result<&[u8], EncodeError> {
        Ok(value.as_bytes())
    }

    fn decode(bytes: &[u8]) -> Result<String, DecodeError> {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| DecodeError::InvalidUtf8 {
                valid_up_to: e.valid_up_to(),
            })
    }
}

/// Raw bytes: push `&[u8]` (or `Vec<u8>`), read `Vec<u8>`. Encoding borrows, so
/// a push allocates nothing.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::{Bytes, Ring};
///
/// let ring = Ring::<Bytes>::new(2).expect("valid capacity");
/// ring.push(&b"\x00\x01"[..]).expect("ring is open");
/// assert_eq!(ring.snapshot().values().collect::<Vec<_>>(), [&vec![0u8, 1]]);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Bytes;

impl Record for Bytes {
    type Value = [u8];
    type Owned = Vec<u8>;
    type Encoded<'a> = &'a [u8];

    fn encode(value: &[u8]) -> Result<&[u8], EncodeError> {
        Ok(value)
    }

    fn decode(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
        Ok(bytes.to_vec())
    }
}

/// A value could not be encoded; returned by [`Record::encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError {
    message: Box<str>,
}

impl EncodeError {
    /// An error with a message, for `Record` implementations.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = callring::EncodeError::custom("details map too deep");
    /// assert_eq!(e.to_string(), "cannot encode value: details map too deep");
    /// ```
    #[must_use]
    pub fn custom(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string().into_boxed_str(),
        }
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot encode value: {}", self.message)
    }
}

impl std::error::Error for EncodeError {}

/// Stored bytes could not be decoded; returned by [`Record::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Text that is not UTF-8; `valid_up_to` bytes were valid.
    InvalidUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// Another problem, described by a `Record` implementation.
    Custom(Box<str>),
}

impl DecodeError {
    /// An error with a message, for `Record` implementations.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = callring::DecodeError::custom("truncated event");
    /// assert_eq!(e.to_string(), "cannot decode entry: truncated event");
    /// ```
    #[must_use]
    pub fn custom(message: impl fmt::Display) -> Self {
        Self::Custom(message.to_string().into_boxed_str())
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::InvalidUtf8 { valid_up_to } => write!(
                f,
                "cannot decode entry: invalid UTF-8 after {valid_up_to} bytes"
            ),
            DecodeError::Custom(message) => write!(f, "cannot decode entry: {message}"),
        }
    }
}

impl std::error::Error for DecodeError {}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn text_rejects_invalid_utf8() {
        assert_eq!(
            Text::decode(b"ok\xff"),
            Err(DecodeError::InvalidUtf8 { valid_up_to: 2 })
        );
        assert_eq!(Text::decode("héllo".as_bytes()).as_deref(), Ok("héllo"));
    }

    #[test]
    fn text_encoding_borrows() {
        let s = "note";
        let encoded = Text::encode(s).unwrap();
        assert!(std::ptr::eq(encoded.as_ptr(), s.as_ptr()));
    }
}
