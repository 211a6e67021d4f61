//! Durable sinks for evicted audit events (work in progress).
