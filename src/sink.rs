//! Where entries go when they leave the ring: the eviction sink.
//!
//! With a sink attached, the writer that is about to overwrite an entry copies
//! it out (extension block included) and hands it to the sink *before* it
//! claims the slot; `close` hands over everything still in the ring. So at every
//! instant each entry is in the ring, in the sink, or (during the hand-off) in
//! both, never in neither; and each entry is handed over exactly once.

use std::fmt;

/// Why an entry was handed to the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Reason {
    /// A newer entry needed its slot.
    Evicted,
    /// The ring was closed and drained.
    Drained,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Evicted => "evicted",
            Reason::Drained => "drained",
        })
    }
}

/// An entry leaving the ring: its sequence number, why, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Evicted<T> {
    /// The entry's sequence number (the one `push` returned).
    pub seq: u64,
    /// Evicted by a newer entry, or drained by `close`.
    pub reason: Reason,
    /// The decoded value.
    pub value: T,
}

impl<T> Evicted<T> {
    /// Builds an entry; the ring does this, sinks and tests may too.
    #[must_use]
    pub fn new(seq: u64, reason: Reason, value: T) -> Self {
        Self { seq, reason, value }
    }
}

/// How a sink took an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// Taken at once.
    Immediate,
    /// Taken after waiting for room (back-pressure); the ring counts these.
    AfterWaiting,
}

/// A sink could not take an entry and handed it back. The ring keeps such
/// entries (see [`Ring::take_refused`](crate::Ring::take_refused)) rather than
/// drop them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused<T>(pub Evicted<T>);

impl<T> fmt::Display for Refused<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sink refused entry {}", self.0.seq)
    }
}

impl<T: fmt::Debug> std::error::Error for Refused<T> {}

/// Receives every entry that leaves a ring, exactly once.
///
/// `accept` runs on the thread of the writer that evicts the entry (or of the
/// caller of `close`) before that writer reuses the slot, so a slow sink slows
/// writers down (back-pressure) and never loses an entry. It may block. It must
/// not push into the ring it serves: the pushing writer may have to wait for
/// the very slot whose hand-off is calling it.
///
/// Implemented for closures `Fn(Evicted<T>)`, for
/// `crossbeam_channel::Sender<Evicted<T>>` (a full bounded channel blocks and
/// is counted as back-pressure; a disconnected one refuses), and for
/// `Arc<S>` and `Box<dyn Sink<T>>` of a sink (one sink shared by many rings).
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::{Reason, Ring, Text};
///
/// let (tx, rx) = crossbeam_channel::unbounded();
/// let ring = Ring::<Text>::builder().capacity(2).sink(tx).build().expect("valid");
/// for note in ["a", "b", "c"] {
///     ring.push(note).expect("open");
/// }
/// let evicted = rx.try_recv().expect("`a` made room for `c`");
/// assert_eq!((evicted.seq, evicted.reason, evicted.value.as_str()), (0, Reason::Evicted, "a"));
/// # }
/// ```
pub trait Sink<T>: Send + Sync {
    /// Takes one entry.
    ///
    /// # Errors
    ///
    /// [`Refused`] with the entry when the sink cannot take it (for example, a
    /// channel whose receiver is gone).
    fn accept(&self, entry: Evicted<T>) -> Result<Delivery, Refused<T>>;
}

impl<T, F> Sink<T> for F
where
    F: Fn(Evicted<T>) + Send + Sync,
{
    fn accept(&self, entry: Evicted<T>) -> Result<Delivery, Refused<T>> {
        self(entry);
        Ok(Delivery::Immediate)
    }
}

/// A boxed sink is a sink (so a ring can take one chosen at run time).
impl<T> Sink<T> for Box<dyn Sink<T>> {
    fn accept(&self, entry: Evicted<T>) -> Result<Delivery, Refused<T>> {
        (**self).accept(entry)
    }
}

/// A shared sink is a sink: one archive or channel behind many rings.
///
/// ```
/// # #[cfg(not(loom))] {
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use callring::{Evicted, Ring, Text};
///
/// let evictions = Arc::new(AtomicUsize::new(0));
/// let seen = Arc::clone(&evictions);
/// let count = Arc::new(move |_: Evicted<String>| {
///     seen.fetch_add(1, Ordering::Relaxed);
/// });
/// let a = Ring::<Text>::builder().capacity(1).sink(Arc::clone(&count)).build().expect("valid");
/// let b = Ring::<Text>::builder().capacity(1).sink(count).build().expect("valid");
/// for ring in [&a, &b] {
///     ring.push("first").expect("open");
///     ring.push("second").expect("open"); // evicts "first"
/// }
/// assert_eq!(evictions.load(Ordering::Relaxed), 2);
/// # }
/// ```
impl<T, S: Sink<T> + ?Sized> Sink<T> for std::sync::Arc<S> {
    fn accept(&self, entry: Evicted<T>) -> Result<Delivery, Refused<T>> {
        (**self).accept(entry)
    }
}

impl<T: Send> Sink<T> for crossbeam_channel::Sender<Evicted<T>> {
    fn accept(&self, entry: Evicted<T>) -> Result<Delivery, Refused<T>> {
        use crossbeam_channel::TrySendError;
        match self.try_send(entry) {
            Ok(()) => Ok(Delivery::Immediate),
            Err(TrySendError::Full(entry)) => match self.send(entry) {
                Ok(()) => Ok(Delivery::AfterWaiting),
                Err(crossbeam_channel::SendError(entry)) => Err(Refused(entry)),
            },
            Err(TrySendError::Disconnected(entry)) => Err(Refused(entry)),
        }
    }
}
