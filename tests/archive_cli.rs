//! The `callring-archive` command: every subcommand, its output and its
//! exit status.
#![cfg(not(loom))]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use callring::archive::{ArchiveConfig, Archiver};
use callring::call::{AuditEventType, CallState, Details, Timestamp};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callring-archive"))
        .args(args)
        .output()
        .expect("runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Three ended calls of `events` events; the first two a year old, in a
/// run (and so segments) of their own.
fn archive(dir: &Path, events: usize) {
    let day = 86_400 * 1_000_000_000i64;
    let now = Timestamp::now().unix_nanos();
    for (run, (calls, t0)) in [
        (&["old-1", "old-2"][..], now - 365 * day),
        (&["new-1"][..], now),
    ]
    .into_iter()
    .enumerate()
    {
        let config = ArchiveConfig::default().segment_bytes(4 << 10);
        let archiver = Archiver::start(dir, config).expect("opens");
        for id in calls {
            let clock = Arc::new(AtomicI64::new(t0));
            let call = CallState::builder(*id)
                .clock(move || {
                    Timestamp::from_unix_nanos(clock.fetch_add(1_000_000, Ordering::Relaxed))
                })
                .audit_archive(archiver.sink(id))
                .build();
            for e in 0..events {
                let mut details = Details::new();
                details.insert("n".into(), (e as u64).into());
                call.log_event(&AuditEventType::ToolInvoked, Some("tools"), &details)
                    .expect("archived");
            }
            let _ = call.end();
        }
        archiver.stop().expect("clean stop");
        assert!(run < 2);
    }
}

#[test]
fn verify_show_stats_compress_and_prune() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().to_str().expect("utf-8 path");
    archive(dir.path(), 40);

    let out = cli(&["verify", d]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("3 complete"), "{stdout}");

    let out = cli(&["show", "old-2", d]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 41, "{stdout}");
    assert!(lines[0].trim_start().starts_with("0 "), "{stdout}");
    assert!(lines[40].starts_with("closed"), "{stdout}");

    let out = cli(&["show", "old-2", d, "--json"]);
    let (stdout, _) = text(&out);
    let seqs: Vec<u64> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["seq"].as_u64())
        .collect();
    assert_eq!(seqs, (0..40).collect::<Vec<_>>());

    let out = cli(&["show", "no-such-call", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("no call"), "{:?}", text(&out));

    let out = cli(&["compress", d]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.starts_with("compressed "), "{stdout}");

    let out = cli(&["stats", d, "--json"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let stats: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(stats["calls"], 3);
    assert_eq!(stats["records"], 3 * 41);
    assert_eq!(stats["segments"], stats["compressed_segments"]);

    // Prune what is older than 30 days: the old calls' segments.
    let out = cli(&["prune", d, "--before", "30d"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.starts_with("pruned "), "{stdout}");
    let out = cli(&["verify", d]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("pruned"), "{stdout}");
    let out = cli(&["show", "new-1", d]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out).0.lines().count(), 41);
}

#[test]
fn errors_exit_2_with_a_message_and_help_documents_exit_statuses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing");
    let out = cli(&["verify", missing.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("does not exist"), "{:?}", text(&out));

    let out = cli(&[
        "prune",
        dir.path().to_str().expect("utf-8"),
        "--before",
        "yesterday",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("RFC 3339"), "{:?}", text(&out));

    let out = cli(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));

    let out = cli(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let (stdout, _) = text(&out);
    for word in [
        "verify",
        "show",
        "stats",
        "prune",
        "compress",
        "Exit status",
    ] {
        assert!(stdout.contains(word), "{word}: {stdout}");
    }

    // A corrupt line is named by file and line.
    archive(dir.path(), 5);
    let segment = dir.path().join(callring::archive::segment_name(1));
    let mut bytes = std::fs::read(&segment).expect("read");
    let second_line = bytes.iter().position(|&b| b == b'\n').expect("a line") + 1;
    let at = second_line
        + bytes[second_line..]
            .windows(6)
            .position(|w| w == b"\"seq\":")
            .expect("a seq")
        + 6;
    bytes[at] = if bytes[at] == b'7' { b'8' } else { b'7' };
    std::fs::write(&segment, &bytes).expect("written");
    let out = cli(&["verify", dir.path().to_str().expect("utf-8")]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stderr.contains(&format!("{}:2:", segment.display())),
        "{stderr}"
    );

    // A running archiver's directory is not pruned behind its back.
    let live = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(live.path(), ArchiveConfig::default()).expect("opens");
    let out = cli(&[
        "prune",
        live.path().to_str().expect("utf-8"),
        "--before",
        "1d",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("running archiver") || text(&out).1.contains("in use"),
        "{:?}",
        text(&out)
    );
    archiver.stop().expect("clean stop");
}
