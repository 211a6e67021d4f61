//! The sync facade: the only module that names atomics, fences, spin hints and
//! threads.
//!
//! Under `cfg(loom)` it re-exports loom's types so the model checker sees every
//! access that carries an ordering; otherwise std's. The layout follows tokio's
//! `src/loom/` and thingbuf's `src/loom.rs`: one switch here, no `cfg` sprinkled
//! through the algorithm.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64};

pub(crate) use std::sync::atomic::Ordering;

/// Statistics counters. They are only ever touched with `Relaxed` read-modify-
/// writes on slow paths and publish nothing, so they stay std atomics even under
/// loom: modelling them would only multiply interleavings without checking any
/// ordering.
pub(crate) type Counter = std::sync::atomic::AtomicU64;

/// Pads the ticket counter to its own cache line(s) so that appenders bouncing
/// it do not also bounce the fields next to it.
pub(crate) use crossbeam_utils::CachePadded;

/// A write-once cell for lazily allocated slot pages. Pages are allocated once
/// and never move; under loom every page is allocated before the model's
/// threads start (see `Ring::build`), so loom never needs to see inside it.
pub(crate) use std::sync::OnceLock;

/// Exponential backoff for the protocol's few waits.
///
/// Spins briefly, then yields the thread: with more threads than cores the
/// thread being waited for is often descheduled, and spinning would only burn
/// its time slice. Under loom every step yields through loom, which is what lets
/// the model checker schedule the awaited thread (loom cannot see
/// `core::hint::spin_loop`).
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    #[cfg_attr(loom, allow(dead_code))] // loom yields at every step
    step: u32,
}

/// Steps `0..=SPIN_LIMIT` spin `2^step` times; later steps yield.
#[cfg(not(loom))]
const SPIN_LIMIT: u32 = 6;

impl Backoff {
    pub(crate) fn new() -> Self {
        Self { step: 0 }
    }

    /// Waits a little longer each call.
    pub(crate) fn snooze(&mut self) {
        #[cfg(loom)]
        {
            loom::thread::yield_now();
        }
        #[cfg(not(loom))]
        {
            if self.step <= SPIN_LIMIT {
                for _ in 0..(1u32 << self.step) {
                    std::hint::spin_loop();
                }
                self.step += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(all(loom, feature = "call"))]
use loom::sync::{Condvar, Mutex};
#[cfg(all(not(loom), feature = "call"))]
use std::sync::{Condvar, Mutex};

/// A one-shot latch: threads wait until one thread opens it. For the rare
/// waits that can last long (a second `CallState::end` waiting for the first
/// to finish draining), where spinning or yielding would burn a core. Under
/// loom it is loom's mutex and condition variable, so models see the wait.
#[cfg(feature = "call")]
pub(crate) struct Latch {
    open: Mutex<bool>,
    opened: Condvar,
}

#[cfg(feature = "call")]
impl std::fmt::Debug for Latch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latch").finish_non_exhaustive()
    }
}

#[cfg(feature = "call")]
impl Latch {
    pub(crate) fn new() -> Self {
        Self {
            open: Mutex::new(false),
            opened: Condvar::new(),
        }
    }

    /// Opens the latch and wakes every waiter. Everything the opener did
    /// before happens-before a waiter's return (the mutex orders it).
    pub(crate) fn open(&self) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *open = true;
        self.opened.notify_all();
    }

    /// Waits until the latch is open.
    pub(crate) fn wait(&self) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while !*open {
            open = self
                .opened
                .wait(open)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}
