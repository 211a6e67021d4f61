//! The JSON Lines backend: appends records to the current segment, rolls to
//! the next at the size limit, and recovers from failed writes and fsyncs by
//! cutting the segment back to its last durable length and rewriting.
//!
//! Invariant: the current segment's first `synced_len` bytes are durable
//! (fsynced); `pending` holds every byte after them, in memory, until an
//! fsync succeeds. So whatever a failed `write` or `fsync` left in the file
//! past `synced_len` (a partial line, or pages the kernel dropped after a
//! failed fsync) is cut off and written again from `pending`: no record is
//! lost and none is written twice.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;

use crate::archive::error::{IoFailure, IoOp};
use crate::archive::record::{
    encode_closed, encode_line, encode_logged, encode_note, segment_name, Origin,
};
use crate::archive::spool::fs::{ArchiveFs, SegmentFile};
use crate::archive::spool::position::SpoolPosition;
use crate::archive::spool::seal::Job;
use crate::archive::stats::add;
use crate::archive::writer::feed::Shared;
use crate::archive::writer::worker::{decode_logged, Destination, Entry};
use crate::call::EventParts;
// Relaxed: reading a statistics counter on the thread that adds to it.
use crate::sync::Ordering;

/// Segments of one archive directory, written by one archiver.
#[derive(Debug)]
pub(crate) struct Segments {
    fs: Arc<dyn ArchiveFs>,
    dir: PathBuf,
    limit: u64,
    shared: Arc<Shared>,
    /// The current segment's index.
    index: u64,
    /// Open once the current segment has been created.
    file: Option<Box<dyn SegmentFile>>,
    /// Whether the directory was fsynced since the current segment was
    /// created.
    dir_synced: bool,
    /// Bytes of the current segment known durable.
    synced_len: u64,
    /// The current segment's bytes after `synced_len`.
    pending: Vec<u8>,
    pending_records: u64,
    /// How much of `pending` is known written (when not `broken`).
    written: usize,
    /// A write or fsync failed: the file past `synced_len` is unknown.
    broken: bool,
    /// Records for later segments (the current one is full).
    overflow: Vec<u8>,
    overflow_records: u64,
    oldest: Option<Instant>,
    line: Vec<u8>,
    /// Tells the sealer about each segment left behind.
    sealed: Sender<Job>,
}

impl Segments {
    /// Writes segments `first_index`, `first_index + 1`, ... in `dir`.
    pub(crate) fn new(
        fs: Arc<dyn ArchiveFs>,
        dir: PathBuf,
        limit: u64,
        first_index: u64,
        shared: Arc<Shared>,
        sealed: Sender<Job>,
    ) -> Self {
        Self {
            fs,
            dir,
            limit,
            shared,
            index: first_index,
            file: None,
            dir_synced: true,
            synced_len: 0,
            pending: Vec::new(),
            pending_records: 0,
            written: 0,
            broken: false,
            overflow: Vec::new(),
            overflow_records: 0,
            oldest: None,
            line: Vec::new(),
            sealed,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(segment_name(self.index))
    }

    /// Writes `pending` past what is known written; after a failure, first
    /// cuts the segment back to `synced_len` and rewrites all of `pending`.
    fn write_pending(&mut self) -> Result<(), IoFailure> {
        if !self.broken && self.written == self.pending.len() {
            return Ok(());
        }
        if self.file.is_none() {
            let path = self.path();
            let file = self
                .fs
                .open_append(&path)
                .map_err(|e| IoFailure::new(IoOp::Open, &path, &e))?;
            self.file = Some(file);
            self.dir_synced = false;
            add(&self.shared.counters.segments, 1);
        }
        let path = self.path();
        let Some(file) = self.file.as_mut() else {
            return Ok(()); // opened just above
        };
        if self.broken {
            file.truncate(self.synced_len)
                .map_err(|e| IoFailure::new(IoOp::Truncate, &path, &e))?;
            self.written = 0;
            self.broken = false;
        }
        if let Err(e) = file.write_all(&self.pending[self.written..]) {
            self.broken = true;
            return Err(IoFailure::new(IoOp::Write, &path, &e));
        }
        self.written = self.pending.len();
        Ok(())
    }

    /// Makes the current segment's `pending` bytes durable.
    fn sync_current(&mut self) -> Result<(), IoFailure> {
        if self.pending.is_empty() && !self.broken && self.dir_synced {
            return Ok(());
        }
        self.write_pending()?;
        let path = self.path();
        if let (false, Some(file)) = (self.pending.is_empty(), self.file.as_mut()) {
            if let Err(e) = file.sync_data() {
                // After a failed fsync the kernel may have dropped the dirty
                // pages: rewrite them from `pending` before the next try.
                self.broken = true;
                return Err(IoFailure::new(IoOp::Sync, &path, &e));
            }
            add(&self.shared.counters.fsyncs, 1);
        }
        if !self.dir_synced {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| IoFailure::new(IoOp::SyncDir, &self.dir, &e))?;
            self.dir_synced = true;
        }
        let counters = &self.shared.counters;
        add(&counters.synced, self.pending_records);
        add(&counters.bytes, self.pending.len() as u64);
        self.synced_len += self.pending.len() as u64;
        self.shared.spool_end.publish(
            SpoolPosition::new(self.index, self.synced_len),
            counters.synced.load(Ordering::Relaxed),
        );
        self.pending.clear();
        self.pending_records = 0;
        self.written = 0;
        if self.overflow.is_empty() {
            self.oldest = None;
        }
        Ok(())
    }

    /// Moves to the next segment; the current one must be durable.
    fn roll(&mut self) {
        debug_assert!(self.pending.is_empty() && !self.broken);
        self.file = None;
        // Unbounded: never waits. A gone sealer (stopping) seals it at the
        // next start.
        let _ = self.sealed.send(Job::Sealed(self.index));
        self.index += 1;
        self.synced_len = 0;
        // The previous segment is durable whole.
        let records = self.shared.spool_end.get().records;
        self.shared
            .spool_end
            .publish(SpoolPosition::new(self.index, 0), records);
    }

    /// Moves the records of `overflow` that fit an empty segment (at least
    /// one) into `pending`.
    fn refill(&mut self) {
        let mut cut = 0;
        for (i, _) in self
            .overflow
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
        {
            let end = i + 1;
            if cut > 0 && end as u64 > self.limit {
                break;
            }
            cut = end;
            self.pending_records += 1;
            self.overflow_records -= 1;
        }
        self.pending.extend_from_slice(&self.overflow[..cut]);
        self.overflow.drain(..cut);
    }
}

impl Destination for Segments {
    fn push(&mut self, entry: Entry) {
        self.line.clear();
        match entry {
            Entry::Event {
                call_id,
                reason,
                event,
            } => encode_line(&call_id, reason, &event, &mut self.line),
            Entry::Logged { call_id, bytes } => match EventParts::parse(&bytes) {
                Ok(parts) => encode_logged(&call_id, &parts, &mut self.line),
                Err(_) => {
                    let event = decode_logged(&bytes);
                    encode_line(&call_id, Origin::Logged, &event, &mut self.line);
                }
            },
            Entry::Closed {
                call_id,
                issued,
                at,
            } => encode_closed(&call_id, issued, at, &mut self.line),
            Entry::Note {
                call_id,
                reason,
                seq,
                note,
            } => encode_note(&call_id, seq, reason, &note, &mut self.line),
        }
        let len = self.synced_len + self.pending.len() as u64;
        let fits = len == 0 || len + self.line.len() as u64 <= self.limit;
        if self.overflow.is_empty() && fits {
            self.pending.extend_from_slice(&self.line);
            self.pending_records += 1;
        } else {
            self.overflow.extend_from_slice(&self.line);
            self.overflow_records += 1;
        }
        self.oldest.get_or_insert_with(Instant::now);
    }

    fn write(&mut self) -> Result<(), IoFailure> {
        loop {
            self.write_pending()?;
            if self.overflow.is_empty() {
                return Ok(());
            }
            // The current segment is full: make it durable, start the next.
            self.sync_current()?;
            self.roll();
            self.refill();
        }
    }

    fn sync(&mut self) -> Result<(), IoFailure> {
        self.write()?;
        self.sync_current()
    }

    fn unsynced(&self) -> u64 {
        self.pending_records + self.overflow_records
    }

    fn oldest_unsynced(&self) -> Option<Instant> {
        self.oldest
    }
}
