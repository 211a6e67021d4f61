//! `callring-archive`: check, read back, compress and prune a callring
//! audit archive directory.
//!
//! ```sh
//! callring-archive verify DIR [--json] [--truncate-torn]
//! callring-archive show CALL DIR [--json]
//! callring-archive stats DIR [--json]
//! callring-archive prune DIR --before TIME
//! callring-archive index DIR
//! callring-archive compress DIR [--level N]
//! ```
//!
//! Exit status: 0 on success; 1 when `verify` finds a call incomplete or
//! duplicated (or `show` finds no such call); 2 when the command could not
//! do its job: bad usage, a missing directory, an I/O error, a corrupt line
//! (named by file and line), an archive in use by a running archiver.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use callring::archive::{
    compress_archive, prune_before, verify_with, ArchiveLine, ArchiveReader, VerifyOptions,
    VerifyReport,
};
use callring::call::Timestamp;
use clap::{Parser, Subcommand};

const EXIT_STATUS: &str = "\
Exit status:
  0  success (verify: no call incomplete or duplicated; open calls and a
     torn tail are reported but are not failures)
  1  verify: some call is incomplete or duplicated; show: no such call
  2  the command could not do its job: bad usage, a missing directory, an
     I/O error, a corrupt line (named by file and line), or an archive in
     use by a running archiver (prune, compress, --truncate-torn)";

#[derive(Debug, Parser)]
#[command(
    name = "callring-archive",
    version,
    about = "Check, read back, index, compress and prune a callring audit archive",
    after_help = EXIT_STATUS
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify every call's trail: complete, open, incomplete or duplicated;
    /// a crash's torn tail; segments removed by retention.
    #[command(after_help = EXIT_STATUS)]
    Verify {
        /// The archive directory.
        dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Cut a torn last line off the last segment (refused while an
        /// archiver holds the directory).
        #[arg(long)]
        truncate_torn: bool,
    },
    /// Print one call's trail in seq order (its events, then its closed
    /// record), reading only the segments (and byte ranges) that hold it.
    #[command(after_help = EXIT_STATUS)]
    Show {
        /// The call's id.
        call: String,
        /// The archive directory.
        dir: PathBuf,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Summarize the archive: segments, bytes on disk and plain, records,
    /// calls, time range, pruned segments.
    #[command(after_help = EXIT_STATUS)]
    Stats {
        /// The archive directory.
        dir: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove every sealed segment whose newest record is older than TIME,
    /// recording each in the archive's pruning manifest (so verify reports
    /// it as pruned, not as gaps). Refused while an archiver holds DIR.
    #[command(after_help = EXIT_STATUS)]
    Prune {
        /// The archive directory.
        dir: PathBuf,
        /// An RFC 3339 time (2025-11-25T09:30:00Z), or an age: a number
        /// followed by d, h, m or s (90d: older than 90 days).
        #[arg(long, value_name = "TIME", value_parser = parse_before)]
        before: Timestamp,
    },
    /// Write the index (audit-N.idx) of every sealed segment that lacks a
    /// valid one, so `show` reads only the lines of the call it shows (a
    /// running archiver indexes each segment it seals by itself).
    #[command(after_help = EXIT_STATUS)]
    Index {
        /// The archive directory.
        dir: PathBuf,
    },
    /// Compress every plain segment (zstd). Refused while an archiver holds
    /// DIR (a running archiver compresses its sealed segments itself with
    /// ArchiveConfig::compress).
    #[command(after_help = EXIT_STATUS)]
    Compress {
        /// The archive directory.
        dir: PathBuf,
        /// The zstd level, 1 to 22.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=22))]
        level: i32,
    },
}

/// An RFC 3339 time, or an age (`90d`, `12h`, `30m`, `45s`) before now.
fn parse_before(text: &str) -> Result<Timestamp, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let unit = match text.chars().last() {
        Some('d') => 86_400,
        Some('h') => 3_600,
        Some('m') => 60,
        Some('s') => 1,
        _ => {
            return Err(format!(
                "{text:?} is neither an RFC 3339 time nor an age like 90d"
            ))
        }
    };
    let count: i64 = text[..text.len() - 1]
        .parse()
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor an age like 90d"))?;
    let nanos = count
        .checked_mul(unit)
        .and_then(|s| s.checked_mul(1_000_000_000))
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("age {text:?} is out of range"))?;
    Ok(Timestamp::from_unix_nanos(
        Timestamp::now().unix_nanos().saturating_sub(nanos),
    ))
}

/// The command's outcome: an exit status, or an error message (status 2).
type Outcome = Result<ExitCode, String>;

fn main() -> ExitCode {
    // clap exits with status 2 on a usage error (0 for --help, --version).
    let Cli { command } = Cli::parse();
    let outcome = match command {
        Command::Verify {
            dir,
            json,
            truncate_torn,
        } => verify(&dir, json, truncate_torn),
        Command::Show { call, dir, json } => show(&call, &dir, json),
        Command::Stats { dir, json } => stats(&dir, json),
        Command::Prune { dir, before } => prune_before(&dir, before)
            .map(|report| {
                println!("{report}");
                for s in &report.segments {
                    println!(
                        "  segment {} ({}): {} records, {} bytes, newest record {}",
                        s.segment,
                        s.file,
                        s.records,
                        s.bytes,
                        s.last_at.map_or_else(|| "none".into(), |t| t.to_string())
                    );
                }
                ExitCode::SUCCESS
            })
            .map_err(|e| e.to_string()),
        Command::Index { dir } => callring::archive::index_archive(&dir)
            .map(|summary| {
                println!(
                    "indexed {} segment(s); {} already indexed, {} skipped (being written, or torn)",
                    summary.written,
                    summary.current,
                    summary.skipped.len()
                );
                ExitCode::SUCCESS
            })
            .map_err(|e| e.to_string()),
        Command::Compress { dir, level } => compress_archive(&dir, level)
            .map(|report| {
                println!("{report}");
                ExitCode::SUCCESS
            })
            .map_err(|e| e.to_string()),
    };
    outcome.unwrap_or_else(|message| {
        eprintln!("callring-archive: error: {message}");
        ExitCode::from(2)
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string_pretty(value).map_err(|e| format!("cannot render JSON: {e}"))
}

fn verify(dir: &Path, json: bool, truncate_torn: bool) -> Outcome {
    let options = VerifyOptions::new().truncate_torn(truncate_torn);
    let report = verify_with(dir, &options).map_err(|e| e.to_string())?;
    if json {
        println!("{}", to_json(&report)?);
    } else {
        println!("{report}");
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn show(call: &str, dir: &Path, json: bool) -> Outcome {
    let reader = ArchiveReader::open(dir).map_err(|e| e.to_string())?;
    let trail = reader.call(call).map_err(|e| e.to_string())?;
    if trail.is_empty() && trail.pruned.is_empty() {
        eprintln!("callring-archive: no call {call:?} in {}", dir.display());
        return Ok(ExitCode::from(1));
    }
    for line in &trail.lines {
        if json {
            let json = match line {
                ArchiveLine::Event(e) => serde_json::to_string(e),
                ArchiveLine::Note(n) => serde_json::to_string(n),
                ArchiveLine::Closed(c) => serde_json::to_string(&Closed {
                    v: c.version,
                    call_id: &c.call_id,
                    record: "closed",
                    issued: c.issued,
                    at: c.at,
                }),
            };
            println!("{}", json.map_err(|e| format!("cannot render JSON: {e}"))?);
            continue;
        }
        match line {
            ArchiveLine::Event(e) => println!(
                "{:>6}  {}  {}  agent={}  reason={}  details={}",
                e.seq,
                e.at,
                e.kind,
                e.agent_id.as_deref().unwrap_or("-"),
                e.reason,
                serde_json::to_string(&e.details).unwrap_or_default()
            ),
            ArchiveLine::Note(n) => {
                println!("note {:>6}  {}  {}  {}", n.seq, n.at, n.reason, n.text)
            }
            ArchiveLine::Closed(c) => println!("closed  {}  issued={}", c.at, c.issued),
        }
    }
    if !trail.pruned.is_empty() {
        let ranges: Vec<String> = trail
            .pruned
            .iter()
            .map(|r| format!("{}..={}", r.first, r.last))
            .collect();
        eprintln!(
            "callring-archive: seqs pruned by retention: {}",
            ranges.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A closed record as `show --json` prints it (the archive line's fields,
/// in its order, without the checksum).
#[derive(serde::Serialize)]
struct Closed<'a> {
    v: u32,
    call_id: &'a str,
    record: &'static str,
    issued: u64,
    at: Timestamp,
}

/// What `stats` prints.
#[derive(Debug, Default, serde::Serialize)]
struct Stats {
    dir: PathBuf,
    segments: u64,
    compressed_segments: u64,
    bytes_on_disk: u64,
    plain_bytes: u64,
    records: u64,
    events: u64,
    notes: u64,
    closed_records: u64,
    calls: u64,
    complete: u64,
    open: u64,
    incomplete: u64,
    duplicated: u64,
    first_at: Option<Timestamp>,
    last_at: Option<Timestamp>,
    pruned_segments: u64,
    pruned_records: u64,
}

fn stats(dir: &Path, json: bool) -> Outcome {
    let mut first_at: Option<Timestamp> = None;
    let mut last_at: Option<Timestamp> = None;
    let report: VerifyReport = callring::archive::read_archive_lines(dir, |line| {
        let at = match &line {
            ArchiveLine::Event(e) => e.at,
            ArchiveLine::Closed(c) => c.at,
            ArchiveLine::Note(n) => n.at,
        };
        first_at = Some(first_at.map_or(at, |t| t.min(at)));
        last_at = Some(last_at.map_or(at, |t| t.max(at)));
    })
    .map_err(|e| e.to_string())?;
    let stats = Stats {
        dir: dir.to_path_buf(),
        segments: report.segments.len() as u64,
        compressed_segments: report.segments.iter().filter(|s| s.compressed).count() as u64,
        bytes_on_disk: report.segments.iter().map(|s| s.bytes).sum(),
        plain_bytes: report.segments.iter().map(|s| s.plain_bytes).sum(),
        records: report.records,
        events: report.events,
        notes: report.calls.values().map(|c| c.notes).sum(),
        closed_records: report.calls.values().map(|c| c.closed_records).sum(),
        calls: report.calls.len() as u64,
        complete: report.complete,
        open: report.open,
        incomplete: report.incomplete,
        duplicated: report.duplicated,
        first_at,
        last_at,
        pruned_segments: report.pruned_segments.len() as u64,
        pruned_records: report.pruned_records,
    };
    if json {
        println!("{}", to_json(&stats)?);
        return Ok(ExitCode::SUCCESS);
    }
    let ratio = if stats.bytes_on_disk == 0 {
        1.0
    } else {
        stats.plain_bytes as f64 / stats.bytes_on_disk as f64
    };
    let time = |t: Option<Timestamp>| t.map_or_else(|| "-".into(), |t| t.to_string());
    println!("archive {}", stats.dir.display());
    println!(
        "  segments   {} ({} compressed), {} bytes on disk, {} plain ({ratio:.1}x)",
        stats.segments, stats.compressed_segments, stats.bytes_on_disk, stats.plain_bytes
    );
    println!(
        "  records    {} ({} events, {} notes, {} closed)",
        stats.records, stats.events, stats.notes, stats.closed_records
    );
    println!(
        "  calls      {} ({} complete, {} open, {} incomplete, {} duplicated)",
        stats.calls, stats.complete, stats.open, stats.incomplete, stats.duplicated
    );
    println!(
        "  time       {} .. {}",
        time(stats.first_at),
        time(stats.last_at)
    );
    println!(
        "  pruned     {} segments, {} records",
        stats.pruned_segments, stats.pruned_records
    );
    Ok(ExitCode::SUCCESS)
}
