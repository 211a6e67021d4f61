#![cfg_attr(not(loom), doc = include_str!("../README.md"))]
#![cfg_attr(
    loom,
    doc = "callring built for the loom model checker (see `loom-tests/`)."
)]
#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]
#![warn(rust_2018_idioms, unreachable_pub)]

pub mod archive;
pub mod call;
mod door;
mod error;
pub mod host;
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
