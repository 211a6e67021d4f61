//! `kill -9` in the middle of a busy host: the test re-executes itself as a
//! child that runs 8 agent threads on each of 50 calls, writing every audit
//! event through to an archive, and records each event it saw confirmed
//! durable (a `Receipt` that waited). The parent SIGKILLs it at a random
//! moment, 10 times, then checks: every confirmed event is in the archive
//! exactly once, `verify` finds no incomplete or duplicated call (the calls
//! live at the kill are open, the ended ones complete), the archive command
//! exits 0, and a new archiver on the crashed directory carries on.
#![cfg(all(not(loom), feature = "call"))]

use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use callring::archive::{
    read_archive, verify, verify_with, ArchiveConfig, Archiver, CallStatus, VerifyOptions,
};
use callring::call::{AuditEventType, CallError, Details, Limits};
use callring::host::CallRegistry;

const CHILD_DIR: &str = "CALLRING_CRASH_CHILD_DIR";
const CALLS: u64 = 50;
const AGENTS: u64 = 8;
/// A call ends after this many events and the next one takes its place.
const CALL_EVENTS: u64 = 400;
/// Events an agent logs before it waits on the last one's receipt.
const BATCH: usize = 4;
const RUNS: u64 = 10;

fn archive_dir(dir: &Path) -> PathBuf {
    dir.join("archive")
}

fn confirmed_file(dir: &Path) -> PathBuf {
    dir.join("confirmed")
}

/// The child: never returns on its own; the parent kills it.
#[test]
#[ignore = "run by sigkill_loses_no_confirmed_event"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let archiver = Arc::new(
        Archiver::start(archive_dir(&dir), ArchiveConfig::default()).expect("archive starts"),
    );
    let confirmed = Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(confirmed_file(&dir))
            .expect("confirmation file"),
    );
    let registry = {
        let archiver = Arc::clone(&archiver);
        CallRegistry::builder()
            .limits(|_| Limits::new(100, 50))
            .audit_archive(move |id| archiver.sink(id))
            .build()
    };
    let generations: Vec<AtomicU64> = (0..CALLS).map(|_| AtomicU64::new(0)).collect();
    for slot in 0..CALLS {
        registry
            .start(&format!("call-{slot}-0"), "default")
            .expect("new call");
    }
    thread::scope(|s| {
        for slot in 0..CALLS {
            for agent in 0..AGENTS {
                let (registry, generations, confirmed) = (&registry, &generations, &confirmed);
                s.spawn(move || {
                    let mut details = Details::new();
                    details.insert("agent".into(), agent.into());
                    let mut lines = String::new();
                    loop {
                        let generation = generations[slot as usize].load(Ordering::Acquire);
                        let id = format!("call-{slot}-{generation}");
                        let Some(call) = registry.get(&id) else {
                            thread::yield_now();
                            continue;
                        };
                        let mut receipts = Vec::with_capacity(BATCH);
                        for _ in 0..BATCH {
                            match call.log_event_receipt(
                                &AuditEventType::ToolInvoked,
                                Some("agent"),
                                &details,
                            ) {
                                Ok(logged) => receipts.push(logged),
                                Err(CallError::Ended { .. }) => break,
                                Err(e) => panic!("{id}: {e}"),
                            }
                        }
                        // One wait covers the batch: the watermark is a
                        // prefix of hand-offs, and this thread handed these
                        // over in order.
                        if let Some((_, last)) = receipts.last() {
                            last.wait().expect("durable");
                        }
                        lines.clear();
                        for (seq, receipt) in &receipts {
                            assert!(receipt.is_durable());
                            lines.push_str(&format!("{id} {seq}\n"));
                        }
                        // One write per batch, after the wait: the file only
                        // ever claims what is already durable.
                        confirmed
                            .lock()
                            .expect("not poisoned")
                            .write_all(lines.as_bytes())
                            .expect("confirmation written");
                        if agent == 0 && call.metrics().audit_seqs_issued >= CALL_EVENTS {
                            let ended = registry.end(&id).expect("this agent ends it");
                            assert!(ended.refused_audit.is_empty());
                            let next = format!("call-{slot}-{}", generation + 1);
                            registry.start(&next, "default").expect("next call");
                            generations[slot as usize].store(generation + 1, Ordering::Release);
                        }
                    }
                });
            }
        }
    });
}

/// `call seq` lines the child confirmed; a line the kill cut is ignored.
fn read_confirmed(path: &Path) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    whole
        .lines()
        .filter_map(|line| {
            let (call, seq) = line.split_once(' ')?;
            Some((call.to_owned(), seq.parse().ok()?))
        })
        .collect()
}

/// The `callring-archive` command (feature `cli`, on by default), built by
/// `cargo test` for the integration tests.
fn archive_command() -> PathBuf {
    option_env!("CARGO_BIN_EXE_callring-archive")
        .map(PathBuf::from)
        .unwrap_or_default()
}

#[test]
fn sigkill_loses_no_confirmed_event() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_c0de);
    let mut total_confirmed = 0;
    let mut open_calls = 0;
    let mut complete_calls = 0;
    for run in 0..RUNS {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["crash_child", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("child starts");
        let alive_for = Duration::from_millis(rng.u64(50..=800));
        let started = Instant::now();
        while started.elapsed() < alive_for {
            assert!(
                child.try_wait().expect("child status").is_none(),
                "run {run}: the child exited by itself"
            );
            thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");

        let confirmed = read_confirmed(&confirmed_file(dir.path()));
        let archive = archive_dir(dir.path());
        if !archive.exists() {
            assert!(confirmed.is_empty());
            continue; // killed before the archiver started
        }
        let mut archived: HashSet<(String, u64)> = HashSet::new();
        let report = read_archive(&archive, |r| {
            archived.insert((r.call_id, r.seq));
        })
        .expect("a crashed archive still parses");
        assert!(report.is_ok(), "run {run}: {report}");
        assert_eq!(
            report.duplicated + report.incomplete,
            0,
            "run {run}: {report}"
        );
        let mut per_call: BTreeMap<&str, u64> = BTreeMap::new();
        for (call, seq) in &confirmed {
            assert!(
                archived.contains(&(call.clone(), *seq)),
                "run {run}: {call} seq {seq} was confirmed durable but is not in the archive"
            );
            *per_call.entry(call).or_default() += 1;
        }
        // Exactly once: duplicates would have made the report fail above.
        for call in per_call.keys() {
            let trail = &report.calls[*call];
            assert!(
                matches!(trail.status, CallStatus::Open | CallStatus::Complete),
                "run {run}: {call}: {trail}"
            );
        }
        open_calls += report.open;
        complete_calls += report.complete;
        total_confirmed += confirmed.len();

        // The archive command agrees: exit 0, the live calls reported open.
        // (Without the `cli` feature only the library's verdict above is
        // checked.)
        let command = archive_command();
        if command.exists() {
            let out = Command::new(command)
                .args(["verify", archive.to_str().expect("utf-8 path")])
                .output()
                .expect("callring-archive runs");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(0), "run {run}: {stdout}");
            if report.open > 0 {
                assert!(stdout.contains(": open: "), "run {run}: {stdout}");
            }
        } else if run == 0 {
            println!(
                "crash: {} not built; checking verify() only",
                command.display()
            );
        }

        // A torn tail is cut on request; a new archiver then appends after it.
        let cut = verify_with(&archive, &VerifyOptions::new().truncate_torn(true))
            .expect("truncation succeeds");
        assert!(cut.torn_tail.is_none_or(|t| t.truncated));
        let archiver = Archiver::start(&archive, ArchiveConfig::default()).expect("restarts");
        let call = callring::call::CallState::builder("after")
            .audit_archive(archiver.sink("after"))
            .build();
        call.log_event_durable(&AuditEventType::CallStarted, None, &Details::new())
            .expect("durable");
        let _ = call.end();
        archiver.stop().expect("clean stop");
        let after = verify(&archive).expect("verifies");
        assert!(after.is_ok(), "run {run}: {after}");
        assert_eq!(after.calls["after"].status, CallStatus::Complete);
        assert_eq!(after.events, report.events + 1);
    }
    println!(
        "crash: {RUNS} kills, {total_confirmed} events confirmed durable, all archived once; \
         {open_calls} calls open at the kills, {complete_calls} complete"
    );
    assert!(total_confirmed > 0, "no run confirmed anything");
    assert!(open_calls > 0, "no call was live at a kill");
}
