//! One segment's lines, read one at a time from a buffered stream (plain or
//! decompressed), each parsed and checked, with the torn-tail rule of
//! [`torn_tail_start`](crate::archive::record) applied as the stream ends
//! instead of on the whole file: memory is one line, whatever the segment's
//! size.
//!
//! The rule, streamed: a run of lines of NUL bytes (zero-filled blocks
//! after a power loss) is held back, as a position only, until what follows
//! decides it; an unterminated last line that does not parse, together with
//! the NUL lines just before it, or NUL lines alone at the end, is the torn
//! tail (only where one is allowed: the end of a plain last segment).
//! Anything else that does not parse is corrupt.

use std::io::{self, BufRead};

use crate::archive::record::{parse_line, ArchiveLine};

/// A line longer than this is corrupt: no record comes near it (a ring
/// entry is at most 16 MiB), and reading stays bounded.
pub(crate) const MAX_LINE_BYTES: usize = 64 << 20;

/// One record and where it is.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// The line's number in its segment, 1-based.
    pub(crate) number: u64,
    /// Its plain byte offset in the segment.
    pub(crate) offset: u64,
    /// Its length in bytes, `\n` included.
    pub(crate) len: u64,
    /// The record.
    pub(crate) line: ArchiveLine,
}

/// What reading the next line found.
#[derive(Debug)]
pub(crate) enum Step {
    /// A record.
    Line(Scanned),
    /// The torn tail: from this line (1-based) and plain offset to the end.
    Torn {
        /// Its first line, 1-based.
        number: u64,
        /// Its plain offset.
        offset: u64,
    },
}

/// Why a segment could not be read to its end.
#[derive(Debug)]
pub(crate) enum ScanError {
    /// Reading (or decompressing) failed.
    Io(io::Error),
    /// A line that is not a record, other than a torn tail.
    Corrupt {
        /// The line, 1-based.
        number: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// A raw line as read: its bytes are in the reader's buffer.
struct Read {
    /// Bytes taken from the stream, `\n` included.
    len: u64,
    terminated: bool,
    /// Longer than [`MAX_LINE_BYTES`]: its bytes were not kept.
    too_long: bool,
    /// Non-empty and all NUL bytes.
    nul: bool,
}

/// The lines of one segment, from a stream that starts at a line's start.
pub(crate) struct SegmentLines<R> {
    src: R,
    buf: Vec<u8>,
    /// The next line's number and plain offset.
    number: u64,
    offset: u64,
    /// Whether a torn tail may end this stream (the end of a plain last
    /// segment); elsewhere it is corrupt.
    tail_allowed: bool,
    /// The first line of a run of NUL lines not yet decided.
    nul_run: Option<(u64, u64)>,
    done: bool,
}

impl<R: BufRead> SegmentLines<R> {
    /// Reads `src` from its first line, numbered 1 at offset 0.
    pub(crate) fn new(src: R, tail_allowed: bool) -> Self {
        Self::starting_at(src, 1, 0, tail_allowed)
    }

    /// Reads `src`, which starts at line `number` (1-based) and plain
    /// `offset` of its segment.
    pub(crate) fn starting_at(src: R, number: u64, offset: u64, tail_allowed: bool) -> Self {
        Self {
            src,
            buf: Vec::new(),
            number,
            offset,
            tail_allowed,
            nul_run: None,
            done: false,
        }
    }

    /// The plain offset after the last line read.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record, the torn tail, or `None` at the end. After an error
    /// or the torn tail, always `None`.
    pub(crate) fn next_step(&mut self) -> Option<Result<Step, ScanError>> {
        if self.done {
            return None;
        }
        let step = self.step();
        if !matches!(step, Some(Ok(Step::Line(_)))) {
            self.done = true;
        }
        step
    }

    fn step(&mut self) -> Option<Result<Step, ScanError>> {
        loop {
            let read = match self.read_line() {
                Ok(read) => read,
                Err(e) => return Some(Err(ScanError::Io(e))),
            };
            let Some(read) = read else {
                // The end: NUL lines alone at the end are the tail.
                let (number, offset) = self.nul_run?;
                return Some(self.tail_or_corrupt(number, offset));
            };
            let (number, offset) = (self.number, self.offset);
            self.number += 1;
            self.offset += read.len;
            if read.nul && self.tail_allowed {
                self.nul_run.get_or_insert((number, offset));
                if read.terminated {
                    continue;
                }
                let (number, offset) = self.nul_run.unwrap_or((number, offset));
                return Some(self.tail_or_corrupt(number, offset));
            }
            let parsed = if read.too_long {
                Err(format!("line longer than {MAX_LINE_BYTES} bytes"))
            } else {
                parse_line(&self.buf).map_err(|e| e.to_string())
            };
            if let Some((nul_number, nul_offset)) = self.nul_run {
                // NUL lines before this one: a tail only if this is its
                // unparsable unterminated end.
                return Some(if !read.terminated && parsed.is_err() {
                    self.tail_or_corrupt(nul_number, nul_offset)
                } else {
                    Err(nul_lines(nul_number))
                });
            }
            return Some(match parsed {
                Ok(line) => Ok(Step::Line(Scanned {
                    number,
                    offset,
                    len: read.len,
                    line,
                })),
                Err(_) if !read.terminated && self.tail_allowed => {
                    Ok(Step::Torn { number, offset })
                }
                Err(reason) => Err(ScanError::Corrupt { number, reason }),
            });
        }
    }

    fn tail_or_corrupt(&self, number: u64, offset: u64) -> Result<Step, ScanError> {
        if self.tail_allowed {
            Ok(Step::Torn { number, offset })
        } else {
            Err(nul_lines(number))
        }
    }

    /// Reads one line into `buf` (without its `\n`); `None` at the end.
    fn read_line(&mut self) -> io::Result<Option<Read>> {
        self.buf.clear();
        let mut len = 0u64;
        let mut too_long = false;
        let mut nul = true;
        loop {
            let available = match self.src.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok((len > 0).then(|| Read {
                    len,
                    terminated: false,
                    too_long,
                    nul: self.is_nul(too_long, nul),
                }));
            }
            let newline = available.iter().position(|&b| b == b'\n');
            let chunk = &available[..newline.unwrap_or(available.len())];
            if too_long {
                nul &= chunk.iter().all(|&b| b == 0);
            } else if self.buf.len() + chunk.len() > MAX_LINE_BYTES {
                too_long = true;
                nul = self.buf.iter().chain(chunk).all(|&b| b == 0);
                self.buf = Vec::new();
            } else {
                self.buf.extend_from_slice(chunk);
            }
            let used = chunk.len() + usize::from(newline.is_some());
            len += used as u64;
            self.src.consume(used);
            if newline.is_some() {
                return Ok(Some(Read {
                    len,
                    terminated: true,
                    too_long,
                    nul: self.is_nul(too_long, nul),
                }));
            }
        }
    }

    /// Whether the line just read is non-empty and all NUL bytes (`nul`
    /// says so for an overlong line, whose bytes were not kept).
    fn is_nul(&self, too_long: bool, nul: bool) -> bool {
        if too_long {
            nul
        } else {
            !self.buf.is_empty() && self.buf.iter().all(|&b| b == 0)
        }
    }
}

impl<R: BufRead> Iterator for SegmentLines<R> {
    type Item = Result<Step, ScanError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_step()
    }
}

/// NUL lines followed by a record: not a crash's tail.
fn nul_lines(number: u64) -> ScanError {
    ScanError::Corrupt {
        number,
        reason: "a line of NUL bytes (a zero-filled block) where records follow".into(),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::archive::record::torn_tail_start;

    fn record(seq: u64) -> Vec<u8> {
        let at = crate::call::Timestamp::from_unix_nanos(1_764_063_000_000_000_000);
        let event = crate::call::AuditEvent::new(
            seq,
            at,
            crate::call::AuditEventType::ToolInvoked,
            None,
            crate::call::Details::new(),
        );
        let mut out = Vec::new();
        crate::archive::record::encode_line("c", crate::archive::Origin::Logged, &event, &mut out);
        out
    }

    /// What the scanner makes of `bytes`: records read, then the tail's
    /// start, or the corrupt line.
    fn scan(bytes: &[u8], tail_allowed: bool) -> (u64, Result<Option<u64>, u64>) {
        let mut lines = SegmentLines::new(bytes, tail_allowed);
        let mut records = 0;
        for step in &mut lines {
            match step {
                Ok(Step::Line(_)) => records += 1,
                Ok(Step::Torn { offset, .. }) => return (records, Ok(Some(offset))),
                Err(ScanError::Corrupt { number, .. }) => return (records, Err(number)),
                Err(ScanError::Io(e)) => panic!("{e}"),
            }
        }
        (records, Ok(None))
    }

    /// The streamed rule agrees with `torn_tail_start` on every shape of
    /// end a crash (or a bad disk) leaves.
    #[test]
    fn the_streamed_tail_rule_matches_the_whole_file_rule() {
        let whole = [record(0), record(1)].concat();
        let partial = &record(2)[..30];
        let cases: Vec<Vec<u8>> = vec![
            whole.clone(),
            Vec::new(),
            [&whole[..], partial].concat(),
            whole[..whole.len() - 1].to_vec(),
            [&whole[..], &[0, 0, 0, b'\n', 0, 0][..]].concat(),
            [&whole[..], &[0, 0, b'\n', 0, b'\n'][..]].concat(),
            [&whole[..], &[0, 0, b'\n'][..], partial].concat(),
            [&whole[..], b"{\"call_id\n"].concat(),
            [&whole[..], &[0, 0, b'\n'][..], &record(2)].concat(),
            [
                &whole[..],
                &[0, 0, b'\n'][..],
                &record(2)[..record(2).len() - 1],
            ]
            .concat(),
            [&whole[..], b"\n"].concat(),
            [&whole[..], b"\n", partial].concat(),
        ];
        for (i, bytes) in cases.iter().enumerate() {
            let (records, found) = scan(bytes, true);
            // What the verifier made of the whole file before it streamed:
            // the tail, then every line before it must parse.
            let tail = torn_tail_start(bytes);
            let body = &bytes[..tail.unwrap_or(bytes.len())];
            let body = body.strip_suffix(b"\n").unwrap_or(body);
            let all_parse =
                body.is_empty() || body.split(|&b| b == b'\n').all(|l| parse_line(l).is_ok());
            if all_parse {
                assert_eq!(found, Ok(tail.map(|t| t as u64)), "case {i}");
            } else {
                assert!(found.is_err(), "case {i}: {found:?}");
            }
            assert!(records <= 3, "case {i}");
        }
        // Where no tail is allowed, the same ends are corrupt.
        assert_eq!(scan(&[&whole[..], partial].concat(), false), (2, Err(3)));
        assert_eq!(
            scan(&[&whole[..], &[0, 0, b'\n'][..]].concat(), false),
            (2, Err(3))
        );
    }

    #[test]
    fn lines_carry_their_number_offset_and_length() {
        let bytes = [record(0), record(1), record(2)].concat();
        let steps: Vec<(u64, u64, u64)> = SegmentLines::new(&bytes[..], false)
            .map(|s| match s {
                Ok(Step::Line(l)) => (l.number, l.offset, l.len),
                other => panic!("{other:?}"),
            })
            .collect();
        let n = record(0).len() as u64;
        assert_eq!(steps, [(1, 0, n), (2, n, n), (3, 2 * n, n)]);
        // Reading from the middle keeps the segment's numbering.
        let mut from = SegmentLines::starting_at(&bytes[n as usize..], 2, n, false);
        match from.next_step() {
            Some(Ok(Step::Line(l))) => assert_eq!((l.number, l.offset), (2, n)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_overlong_line_is_corrupt_without_being_kept() {
        let mut bytes = record(0);
        bytes.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        bytes.push(b'\n');
        bytes.extend(record(1));
        let mut lines = SegmentLines::new(&bytes[..], true);
        assert!(matches!(lines.next_step(), Some(Ok(Step::Line(_)))));
        match lines.next_step() {
            Some(Err(ScanError::Corrupt { number, reason })) => {
                assert_eq!(number, 2);
                assert!(reason.contains("longer than"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(lines.buf.capacity() <= MAX_LINE_BYTES);
        assert!(lines.next_step().is_none());
    }
}
