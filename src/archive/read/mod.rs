//! Reading the archive back, streamed: segments plain or compressed, one
//! line in memory at a time. The verifier reads through this.

pub(crate) mod lines;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::archive::error::{IoFailure, IoOp};
use crate::archive::record::{compressed_segment_name, sort_segments, SegmentPath};
use crate::archive::spool::zst::SegmentReader;
use crate::archive::verify::VerifyError;

use self::lines::ScanError;

/// The segments of the archive in `dir`, in order, and its other files,
/// after checking that `dir` is a directory.
pub(crate) fn list_segments(dir: &Path) -> Result<(Vec<SegmentPath>, Vec<PathBuf>), VerifyError> {
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(VerifyError::NotFound {
                dir: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(IoFailure::new(IoOp::ListDir, dir, &e).into()),
        Ok(meta) if !meta.is_dir() => {
            return Err(VerifyError::NotADirectory {
                path: dir.to_path_buf(),
            })
        }
        Ok(_) => {}
    }
    let names: Vec<_> = fs::read_dir(dir)
        .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect())
        .map_err(|e| IoFailure::new(IoOp::ListDir, dir, &e))?;
    Ok(sort_segments(dir, names))
}

/// A segment opened for reading.
pub(crate) struct Opened {
    pub(crate) reader: SegmentReader,
    /// The file opened: the listed one, or its compressed copy if the
    /// plain file was compressed and removed since it was listed.
    pub(crate) path: PathBuf,
    pub(crate) compressed: bool,
}

/// Opens `segment`, counting the bytes read into `counter`.
pub(crate) fn open_segment(
    segment: &SegmentPath,
    counter: Option<&Arc<AtomicU64>>,
) -> Result<Opened, VerifyError> {
    let count = |reader: SegmentReader| match counter {
        Some(counter) => reader.counting(Arc::clone(counter)),
        None => reader,
    };
    match SegmentReader::open(&segment.path, segment.compressed) {
        Ok(reader) => Ok(Opened {
            reader: count(reader),
            path: segment.path.clone(),
            compressed: segment.compressed,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !segment.compressed => {
            // Sealed meanwhile: the plain file goes only once its compressed
            // copy is whole and durable.
            let path = segment
                .path
                .with_file_name(compressed_segment_name(segment.index));
            match SegmentReader::open(&path, true) {
                Ok(reader) => Ok(Opened {
                    reader: count(reader),
                    path,
                    compressed: true,
                }),
                Err(_) => Err(IoFailure::new(IoOp::Open, &segment.path, &e).into()),
            }
        }
        Err(e) => Err(IoFailure::new(IoOp::Open, &segment.path, &e).into()),
    }
}

/// A line reader's error, placed in `file`.
pub(crate) fn scan_error(e: ScanError, file: &Path) -> VerifyError {
    match e {
        ScanError::Io(e) => IoFailure::new(IoOp::Read, file, &e).into(),
        ScanError::Corrupt { number, reason } => VerifyError::Corrupt {
            file: file.to_path_buf(),
            line: number,
            reason,
        },
    }
}

