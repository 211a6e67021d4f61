//! Compressed segments: a sealed segment's lines as a run of independent
//! zstd frames, each holding whole lines (about [`FRAME_BYTES`] of them, a
//! longer line alone), then a skippable frame with the table of where each
//! frame starts, in the plain bytes and in the file:
//!
//! ```text
//! frame 0 | frame 1 | ... | frame n-1 | skippable: [plain_k u64, file_k u64] * n, plain_len u64, n u32, "CRZT"
//! ```
//!
//! (integers little-endian). A zstd decoder reads the whole file as the
//! plain segment (it skips the table); the table lets a reader start at any
//! plain offset by decompressing only the frames that hold it, so reading
//! one call's lines back costs its frames, not the segment.
//!
//! Plain offsets stay the segment's identity: spool positions, torn-tail
//! offsets and the per-segment index all count plain bytes, whether the
//! segment is compressed or not.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::archive::spool::fs::SegmentFile;
use std::sync::atomic::Ordering;

/// Plain bytes per frame (whole lines; a longer line is a frame alone).
pub(crate) const FRAME_BYTES: usize = 1 << 20;

/// The table's footer magic.
const MAGIC: &[u8; 4] = b"CRZT";
/// A zstd skippable frame's magic (any of 0x184D2A50..=0x184D2A5F).
const SKIPPABLE: u32 = 0x184D_2A5E;
/// `plain_len u64, n u32, MAGIC`.
const FOOTER: u64 = 16;

/// What compressing a segment wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Compressed {
    /// Plain bytes read.
    pub(crate) plain: u64,
    /// Bytes written.
    pub(crate) compressed: u64,
}

/// Compresses the plain segment `src` into `dst` (frames, then the table).
/// Reads line by line: memory is one frame, whatever the segment's size.
pub(crate) fn compress(
    src: &mut dyn BufRead,
    dst: &mut dyn SegmentFile,
    level: i32,
) -> io::Result<Compressed> {
    let mut table: Vec<(u64, u64)> = Vec::new();
    let mut plain = Vec::with_capacity(FRAME_BYTES + 4096);
    let mut out = Vec::new();
    let mut plain_at = 0u64;
    let mut file_at = 0u64;
    let mut flush = |plain: &mut Vec<u8>, out: &mut Vec<u8>| -> io::Result<()> {
        if plain.is_empty() {
            return Ok(());
        }
        out.clear();
        zstd::stream::copy_encode(&plain[..], &mut *out, level)?;
        dst.write_all(out)?;
        table.push((plain_at, file_at));
        plain_at += plain.len() as u64;
        file_at += out.len() as u64;
        plain.clear();
        Ok(())
    };
    loop {
        let before = plain.len();
        let n = src.read_until(b'\n', &mut plain)?;
        if n == 0 {
            break;
        }
        if plain.len() >= FRAME_BYTES {
            if before > 0 {
                // The frame is full without this line: it starts the next.
                let line = plain.split_off(before);
                flush(&mut plain, &mut out)?;
                plain = line;
            }
            if plain.len() >= FRAME_BYTES {
                flush(&mut plain, &mut out)?;
            }
        }
    }
    flush(&mut plain, &mut out)?;
    let mut tail = Vec::with_capacity(8 + table.len() * 16 + FOOTER as usize);
    let size = table.len() * 16 + FOOTER as usize;
    tail.extend_from_slice(&SKIPPABLE.to_le_bytes());
    let size = u32::try_from(size).map_err(|_| io::Error::other("segment has too many frames"))?;
    tail.extend_from_slice(&size.to_le_bytes());
    for (p, f) in &table {
        tail.extend_from_slice(&p.to_le_bytes());
        tail.extend_from_slice(&f.to_le_bytes());
    }
    tail.extend_from_slice(&plain_at.to_le_bytes());
    tail.extend_from_slice(&(table.len() as u32).to_le_bytes());
    tail.extend_from_slice(MAGIC);
    dst.write_all(&tail)?;
    Ok(Compressed {
        plain: plain_at,
        compressed: file_at + tail.len() as u64,
    })
}

/// A segment file opened for reading, plain or compressed, addressed in
/// plain bytes.
#[derive(Debug)]
pub(crate) struct SegmentReader {
    file: File,
    /// For a compressed segment: each frame's `(plain start, file start)`,
    /// and where the frames end in the file.
    frames: Option<(Vec<(u64, u64)>, u64)>,
    plain_len: u64,
    counter: Option<Arc<AtomicU64>>,
}

impl SegmentReader {
    /// Opens `path`; `compressed` says which kind it is (by its name).
    pub(crate) fn open(path: &Path, compressed: bool) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        if !compressed {
            return Ok(Self {
                file,
                frames: None,
                plain_len: len,
                counter: None,
            });
        }
        let corrupt = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a compressed segment: {what}"),
            )
        };
        if len < FOOTER + 8 {
            return Err(corrupt("too short"));
        }
        let mut footer = [0u8; FOOTER as usize];
        file.seek(SeekFrom::Start(len - FOOTER))?;
        file.read_exact(&mut footer)?;
        if &footer[12..] != MAGIC {
            return Err(corrupt("no frame table"));
        }
        let plain_len = u64::from_le_bytes(footer[..8].try_into().expect("8 bytes"));
        let n = u64::from(u32::from_le_bytes(
            footer[8..12].try_into().expect("4 bytes"),
        ));
        let table_bytes = n * 16;
        let Some(frames_end) = len.checked_sub(FOOTER + table_bytes + 8) else {
            return Err(corrupt("frame table longer than the file"));
        };
        let mut raw = vec![0u8; table_bytes as usize];
        file.seek(SeekFrom::Start(frames_end + 8))?;
        file.read_exact(&mut raw)?;
        let table: Vec<(u64, u64)> = raw
            .chunks_exact(16)
            .map(|c| {
                (
                    u64::from_le_bytes(c[..8].try_into().expect("8 bytes")),
                    u64::from_le_bytes(c[8..].try_into().expect("8 bytes")),
                )
            })
            .collect();
        let ordered = table.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let in_range = table
            .iter()
            .all(|&(p, f)| p < plain_len.max(1) && f < frames_end.max(1));
        if !ordered || !in_range || table.first().is_some_and(|&(p, f)| p != 0 || f != 0) {
            return Err(corrupt("frame table out of order"));
        }
        if table.is_empty() != (plain_len == 0) {
            return Err(corrupt("frame table does not match the plain length"));
        }
        Ok(Self {
            file,
            frames: Some((table, frames_end)),
            plain_len,
            counter: None,
        })
    }

    /// Counts the file bytes read from now on into `counter`.
    pub(crate) fn counting(mut self, counter: Arc<AtomicU64>) -> Self {
        self.counter = Some(counter);
        self
    }

    /// The plain segment's length in bytes.
    pub(crate) fn plain_len(&self) -> u64 {
        self.plain_len
    }

    /// The plain bytes `start..end` (`end` clamped to the length), read
    /// through a buffer; decompresses only the frames that hold them.
    pub(crate) fn range(self, start: u64, end: u64) -> io::Result<Box<dyn BufRead + Send>> {
        let Self {
            mut file,
            frames,
            plain_len,
            counter,
        } = self;
        let end = end.min(plain_len);
        let start = start.min(end);
        let want = end - start;
        match frames {
            None => {
                file.seek(SeekFrom::Start(start))?;
                let counted = Counted {
                    inner: file,
                    counter,
                };
                Ok(Box::new(BufReader::new(counted.take(want))))
            }
            Some((table, frames_end)) => {
                if want == 0 {
                    return Ok(Box::new(io::empty()));
                }
                // The frame holding `start`, and the first frame at or after `end`.
                let first = table
                    .partition_point(|&(p, _)| p <= start)
                    .saturating_sub(1);
                let stop = table.partition_point(|&(p, _)| p < end);
                let (plain_first, file_first) = table[first];
                let file_stop = table.get(stop).map_or(frames_end, |&(_, f)| f);
                file.seek(SeekFrom::Start(file_first))?;
                let counted = Counted {
                    inner: file,
                    counter,
                };
                let mut decoder = zstd::stream::read::Decoder::with_buffer(BufReader::new(
                    counted.take(file_stop - file_first),
                ))?;
                io::copy(
                    &mut (&mut decoder).take(start - plain_first),
                    &mut io::sink(),
                )?;
                Ok(Box::new(BufReader::new(decoder.take(want))))
            }
        }
    }

    /// The whole plain segment, from its start.
    pub(crate) fn all(self) -> io::Result<Box<dyn BufRead + Send>> {
        let len = self.plain_len;
        self.range(0, len)
    }
}

/// A reader that counts the bytes it reads.
#[derive(Debug)]
struct Counted<R> {
    inner: R,
    counter: Option<Arc<AtomicU64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(counter) = &self.counter {
            // Relaxed: a statistics counter of bytes read, summed after
            // the reads (nothing is published through it).
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// Writes into a `Vec` (tests, and sizing).
impl SegmentFile for Vec<u8> {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        Vec::truncate(self, usize::try_from(len).unwrap_or(usize::MAX));
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn lines(n: usize, width: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            let body = format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i % width));
            out.extend_from_slice(body.as_bytes());
        }
        out
    }

    fn compressed(plain: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut out = Vec::new();
        let sizes = compress(&mut &plain[..], &mut out, 3).expect("compresses");
        assert_eq!(sizes.plain, plain.len() as u64);
        assert_eq!(sizes.compressed, out.len() as u64);
        let path = dir.path().join("seg.jsonl.zst");
        std::fs::write(&path, &out).expect("written");
        (dir, path)
    }

    fn read(path: &Path, start: u64, end: u64) -> Vec<u8> {
        let mut out = Vec::new();
        SegmentReader::open(path, true)
            .expect("opens")
            .range(start, end)
            .expect("range")
            .read_to_end(&mut out)
            .expect("reads");
        out
    }

    #[test]
    fn any_range_reads_back_the_plain_bytes() {
        let plain = lines(60_000, 90); // several frames
        let (_dir, path) = compressed(&plain);
        let reader = SegmentReader::open(&path, true).expect("opens");
        assert!(reader.frames.as_ref().expect("compressed").0.len() > 2);
        assert_eq!(reader.plain_len(), plain.len() as u64);
        let len = plain.len() as u64;
        for (start, end) in [
            (0, len),
            (0, 10),
            (5, 5),
            (len - 7, len),
            (FRAME_BYTES as u64 - 3, FRAME_BYTES as u64 + 3),
            (1_500_000, 2_600_000),
            (len - 1, len + 100),
        ] {
            let want = &plain[start as usize..end.min(len) as usize];
            assert_eq!(read(&path, start, end), want, "{start}..{end}");
        }
        // A plain zstd decoder reads the whole file and skips the table.
        let whole =
            zstd::stream::decode_all(&std::fs::read(&path).expect("read")[..]).expect("decodes");
        assert_eq!(whole, plain);
    }

    #[test]
    fn frames_hold_whole_lines_and_long_lines_alone() {
        let mut plain = lines(10, 5);
        plain.extend_from_slice(&vec![b'y'; 3 * FRAME_BYTES]);
        plain.push(b'\n');
        plain.extend_from_slice(&lines(10, 5));
        let (_dir, path) = compressed(&plain);
        let reader = SegmentReader::open(&path, true).expect("opens");
        let (table, _) = reader.frames.as_ref().expect("compressed");
        for &(p, _) in table.iter().skip(1) {
            assert_eq!(plain[p as usize - 1], b'\n', "frame at {p} starts a line");
        }
        assert_eq!(table.len(), 3);
        assert_eq!(read(&path, 0, u64::MAX), plain);
    }

    #[test]
    fn an_empty_segment_compresses_and_reads_back_empty() {
        let (_dir, path) = compressed(b"");
        assert_eq!(read(&path, 0, u64::MAX), b"");
    }

    #[test]
    fn a_range_decompresses_only_its_frames() {
        let plain = lines(60_000, 90);
        let (_dir, path) = compressed(&plain);
        let total = std::fs::metadata(&path).expect("exists").len();
        let counter = Arc::new(AtomicU64::new(0));
        let mut out = Vec::new();
        SegmentReader::open(&path, true)
            .expect("opens")
            .counting(Arc::clone(&counter))
            .range(2_000_000, 2_000_100)
            .expect("range")
            .read_to_end(&mut out)
            .expect("reads");
        assert_eq!(out, &plain[2_000_000..2_000_100]);
        let read = counter.load(Ordering::Relaxed);
        assert!(read > 0 && read * 2 < total, "read {read} of {total}");
    }

    #[test]
    fn a_frame_table_that_contradicts_its_length_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.jsonl.zst");
        // A skippable frame holding an empty table that claims 100 plain bytes.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&SKIPPABLE.to_le_bytes());
        bytes.extend_from_slice(&(FOOTER as u32).to_le_bytes());
        bytes.extend_from_slice(&100u64.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(MAGIC);
        std::fs::write(&path, &bytes).expect("written");
        let err = SegmentReader::open(&path, true).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_file_that_is_not_a_compressed_segment_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.jsonl.zst");
        std::fs::write(&path, b"{\"not\":\"zstd\"}\n plus some more bytes").expect("written");
        let err = SegmentReader::open(&path, true).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
