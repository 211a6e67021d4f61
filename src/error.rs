//! Errors of the ring layer: small enums with `Display`, each carrying what the
//! caller needs to act (and, for a failed push, the value itself).

use std::fmt;

use crate::record::EncodeError;

/// A ring could not be built from the requested settings.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::{BuildError, Ring, Text};
///
/// let err = Ring::<Text>::new(0).unwrap_err();
/// assert_eq!(err, BuildError::ZeroCapacity);
/// assert_eq!(err.to_string(), "ring capacity must be at least 1 slot");
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// A capacity of zero slots.
    ZeroCapacity,
    /// More slots than a ring may have.
    CapacityTooLarge {
        /// What was asked for.
        requested: usize,
        /// The most a ring may have.
        max: usize,
    },
    /// A slot size that is not a multiple of 8 bytes in the allowed range.
    SlotBytes {
        /// What was asked for.
        requested: usize,
        /// The smallest allowed size.
        min: usize,
        /// The largest allowed size.
        max: usize,
    },
    /// A longest entry above [`MAX_ENTRY_BYTES`](crate::MAX_ENTRY_BYTES).
    MaxEntryBytes {
        /// What was asked for.
        requested: usize,
        /// The largest allowed.
        max: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroCapacity => f.write_str("ring capacity must be at least 1 slot"),
            BuildError::CapacityTooLarge { requested, max } => write!(
                f,
                "ring capacity of {requested} slots is larger than the maximum of {max}"
            ),
            BuildError::SlotBytes {
                requested,
                min,
                max,
            } => write!(
                f,
                "slot size of {requested} bytes must be a multiple of 8 from {min} to {max}"
            ),
            BuildError::MaxEntryBytes { requested, max } => write!(
                f,
                "longest entry of {requested} bytes is above the maximum of {max}"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// A push that stored nothing; the value comes back.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::{PushError, Ring, Text};
///
/// let ring = Ring::<Text>::new(1).expect("valid capacity");
/// let _ = ring.close();
/// let err = ring.push(String::from("late note")).unwrap_err();
/// assert!(matches!(err, PushError::Closed(_)));
/// assert_eq!(err.into_value(), "late note");
/// # }
/// ```
#[non_exhaustive]
pub enum PushError<V> {
    /// The ring was closed before this push took its ticket.
    Closed(V),
    /// The encoded value is longer than the ring's
    /// [`max_entry_bytes`](crate::Ring::max_entry_bytes).
    TooLarge {
        /// The value, handed back.
        value: V,
        /// Its encoded length in bytes.
        len: usize,
        /// The longest entry this ring can hold, in bytes.
        max: usize,
    },
    /// The record could not encode the value.
    Encode {
        /// The value, handed back.
        value: V,
        /// What went wrong.
        error: EncodeError,
    },
}

impl<V> PushError<V> {
    /// The value that was not stored.
    #[must_use]
    pub fn into_value(self) -> V {
        match self {
            PushError::Closed(value)
            | PushError::TooLarge { value, .. }
            | PushError::Encode { value, .. } => value,
        }
    }

    /// Borrows the value that was not stored.
    #[must_use]
    pub fn value(&self) -> &V {
        match self {
            PushError::Closed(value)
            | PushError::TooLarge { value, .. }
            | PushError::Encode { value, .. } => value,
        }
    }
}

// Manual, so that `V` needs no `Debug` (as with crossbeam's `SendError`).
impl<V> fmt::Debug for PushError<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Closed(_) => f.write_str("Closed(..)"),
            PushError::TooLarge { len, max, .. } => f
                .debug_struct("TooLarge")
                .field("len", len)
                .field("max", max)
                .finish_non_exhaustive(),
            PushError::Encode { error, .. } => f
                .debug_struct("Encode")
                .field("error", error)
                .finish_non_exhaustive(),
        }
    }
}

impl<V> fmt::Display for PushError<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Closed(_) => f.write_str("push to a closed ring"),
            PushError::TooLarge { len, max, .. } => write!(
                f,
                "entry of {len} bytes is longer than the ring's maximum of {max} bytes"
            ),
            PushError::Encode { error, .. } => write!(f, "{error}"),
        }
    }
}

impl<V> std::error::Error for PushError<V> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PushError::Encode { error, .. } => Some(error),
            _ => None,
        }
    }
}
