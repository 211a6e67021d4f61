#![cfg_attr(all(not(loom), feature = "call"), doc = include_str!("../README.md"))]
#![cfg_attr(
    all(not(loom), not(feature = "call")),
    doc = "callring built without its `call` feature: the ring alone ([`Ring`], [`Sink`], \
           [`Record`]). The README, with the call layer, is the crate documentation of \
           the default build."
)]
#![cfg_attr(
    loom,
    doc = "callring built for the loom model checker (see `loom-tests/`)."
)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]
#![warn(rust_2018_idioms, unreachable_pub)]

#[cfg(feature = "call")]
#[cfg_attr(docsrs, doc(cfg(feature = "call")))]
pub mod archive;
#[cfg(feature = "call")]
#[cfg_attr(docsrs, doc(cfg(feature = "call")))]
pub mod call;
#[cfg(feature = "call")]
mod door;
mod error;
#[cfg(feature = "host")]
#[cfg_attr(docsrs, doc(cfg(feature = "host")))]
pub mod host;
#[cfg(feature = "call")]
mod obs;
mod record;
mod ring;
mod sink;
mod slot;
mod sync;

pub use error::{BuildError, PushError};
pub use record::{Bytes, DecodeError, EncodeError, Record, Text};
pub use ring::{
    Batch, Builder, CloseOutcome, Cursor, Joiner, Metrics, Progress, Ring, Skipped, Snapshot,
    DEFAULT_MAX_ENTRY_BYTES, DEFAULT_SLOT_BYTES, MAX_CAPACITY, MAX_ENTRY_BYTES, MAX_SLOT_BYTES,
    MIN_SLOT_BYTES,
};
pub use sink::{Delivery, Evicted, Reason, Refused, Sink};
