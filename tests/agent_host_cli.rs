//! The simulator's command line: a short run verifies its archive (exit 0),
//! and bad options get a clear message with exit status 2, no backtrace.
//! `cargo test` builds the examples; this runs the built `agent_host`.
#![cfg(all(not(loom), feature = "host"))]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn agent_host() -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/agent_host
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir
        .join("examples")
        .join(format!("agent_host{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} not built (cargo test builds examples)",
        path.display()
    );
    path
}

fn run(args: &[&str]) -> Output {
    Command::new(agent_host())
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("runs")
}

/// A one-second host of 20 calls and 2 agents archiving to `archive`, with
/// `extra` options; fails the test unless it exits 0. Returns its stdout.
fn short_run(archive: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "--calls",
        "20",
        "--agents",
        "2",
        "--seconds",
        "1",
        "--call-length",
        "300",
        "--archive",
        archive.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    let out = run(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn a_short_run_verifies_its_archive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("archive");
    let stdout = short_run(&archive, &["--summary", "call-0-0"]);
    assert!(stdout.contains(" 0 gaps, 0 duplicates"), "{stdout}");
    assert!(stdout.contains("(verified)"), "{stdout}");
    // The archive is where we said, and verifies on its own too.
    let report = callring::archive::verify(&archive).expect("readable");
    assert!(report.is_complete() && report.records > 0);
}

/// With `--archive-notes` every note of every call is archived once: the
/// report's count equals the notes appended, and the archive agrees.
#[test]
fn archive_notes_archives_every_note_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("archive");
    let stdout = short_run(&archive, &["--archive-notes"]);
    // "  appends            N (x M/s): NOTES notes, E audit events"
    let appended: u64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("appends"))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no appends line: {stdout}"));
    // "  notes archived     N of M appended, each once (...) (verified)"
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("notes archived"))
        .unwrap_or_else(|| panic!("no notes line: {stdout}"));
    assert!(line.ends_with("(verified)"), "{line}");
    assert!(
        line.contains(&format!(
            " {appended} of {appended} appended, each once (0 twice"
        )),
        "{line}"
    );
    assert!(appended > 0, "{stdout}");
    assert!(stdout.contains(" 0 gaps, 0 duplicates"), "{stdout}");
    let report = callring::archive::verify(&archive).expect("readable");
    assert!(report.is_complete(), "{report}");
    assert_eq!(
        report.calls.values().map(|c| c.notes).sum::<u64>(),
        appended
    );
}

/// With `--compress` the archive ends up compressed, every segment, and
/// still verifies; the report gives the ratio.
#[test]
fn compress_leaves_only_compressed_segments_that_verify() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("archive");
    let stdout = short_run(&archive, &["--compress"]);
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("compression"))
        .unwrap_or_else(|| panic!("no compression line: {stdout}"));
    assert!(line.contains("MB on disk ("), "{line}");
    assert!(stdout.contains("(verified)"), "{stdout}");
    let names: Vec<String> = std::fs::read_dir(&archive)
        .expect("listed")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("audit-") && n.contains(".jsonl"))
        .collect();
    assert!(!names.is_empty());
    assert!(names.iter().all(|n| n.ends_with(".jsonl.zst")), "{names:?}");
    let report = callring::archive::verify(&archive).expect("readable");
    assert!(report.is_complete() && report.records > 0, "{report}");
}

#[test]
fn bad_options_exit_2_with_a_message() {
    for args in [
        &["--calls", "0"][..],
        &["--calls", "-5"],
        &["--agents", "many"],
        &["--seconds", "0"],
        &["--event-percent", "101"],
        &["--no-such-flag"],
    ] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn an_unusable_archive_directory_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let out = run(&[
        "--archive",
        file.join("sub").to_str().expect("utf-8"),
        "--seconds",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot create archive directory"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
