//! `callring_archive`: check a durable audit archive.
//!
//! ```sh
//! cargo run --example callring_archive -- verify DIR [--json] [--truncate-torn]
//! ```
//!
//! Reads every segment in `DIR` and reports each call's trail as
//! *complete* (closed record, seqs `0..issued` each once), *open* (no closed
//! record: live, or live when the host crashed; its durable events and
//! missing seqs are listed), *incomplete* (closed, with seqs missing) or
//! *duplicated*, and a torn last line left by a crash (cut off with
//! `--truncate-torn`). Human-readable by default, JSON with `--json`.
//!
//! Exit status: 0 when no call is incomplete or duplicated (open calls and a
//! torn tail are reported but are not failures: a crash loses only records
//! never confirmed durable); 1 when some call is incomplete or duplicated;
//! 2 when the archive cannot be verified: bad usage, a missing directory, an
//! I/O error, or a corrupt line (the message names the file and line).

use std::path::PathBuf;
use std::process::ExitCode;

use callring::archive::{verify_with, VerifyOptions};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "callring_archive", about = "Check a callring audit archive")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify every call's trail in an archive directory.
    Verify {
        /// The archive directory (holding audit-NNNNNNNNNNNN.jsonl segments).
        dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Cut a torn last line off the last segment (refused while an
        /// archiver holds the directory).
        #[arg(long)]
        truncate_torn: bool,
    },
}

fn main() -> ExitCode {
    // clap exits with status 2 on a usage error (and 0 for --help).
    let Cli { command } = Cli::parse();
    let Command::Verify {
        dir,
        json,
        truncate_torn,
    } = command;
    let options = VerifyOptions::new().truncate_torn(truncate_torn);
    let report = match verify_with(&dir, &options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("callring_archive: error: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("callring_archive: error: cannot render the report as JSON: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        println!("{report}");
    }
    if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
