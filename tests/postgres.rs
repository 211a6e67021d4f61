//! The fleet archive against a live PostgreSQL server: every durable record
//! arrives once, a resend inserts nothing, and neither a killed backend, a
//! server restart nor a SIGKILLed shipping process loses or doubles a
//! record.
//!
//! Needs `CALLRING_PG_URL` (and `CALLRING_PG_CTL` for the restart test);
//! `scripts/with-postgres cargo test --release --test postgres` provides both
//! (the crate's tests always build with the `postgres` feature, through its
//! dev-dependency on itself). Without the URL each test prints that it skips
//! (under `CI` it fails instead: CI never skips these).
#![cfg(all(not(loom), feature = "postgres"))]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use callring::archive::{
    verify, verify_postgres, ArchiveConfig, Archiver, CallStatus, ShipState, Shipper,
    ShipperConfig, VerifyReport,
};
use callring::call::{AuditEventType, CallState, Details, Limits};

/// Events of the big test: the acceptance run in release, fewer in debug.
const EVENTS: u64 = if cfg!(debug_assertions) {
    20_000
} else {
    200_000
};
const THREADS: u64 = 8;
const PER_CALL: u64 = 400;

const CHILD_DIR: &str = "CALLRING_PG_CHILD_DIR";
const CHILD_HOST: &str = "CALLRING_PG_CHILD_HOST";
const CHILD_RUN: &str = "CALLRING_PG_CHILD_RUN";

/// The server's URL, or `None` (with a message) to skip.
fn url(test: &str) -> Option<String> {
    match std::env::var("CALLRING_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: CALLRING_PG_URL is unset under CI; run through scripts/with-postgres"
            );
            println!(
                "{test}: skipped: CALLRING_PG_URL is unset \
                 (run `scripts/with-postgres cargo test --test postgres`)"
            );
            None
        }
    }
}

/// The tests share one server, and one of them restarts it: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A host id no earlier run against the same database used.
fn host_id(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{test}-{}-{nanos}", std::process::id())
}

fn client(url: &str) -> postgres::Client {
    postgres::Config::from_str(url)
        .expect("valid url")
        .connect(postgres::NoTls)
        .expect("connects")
}

fn quick_config(host: &str) -> ShipperConfig {
    ShipperConfig::new(host)
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(500))
        .stop_timeout(Duration::from_secs(120))
}

/// Logs `events` events from `THREADS` threads into `events / PER_CALL`
/// calls (every thread logs into every call, concurrently), ends them all.
/// Returns the number of calls.
fn log_events(archiver: &Archiver, prefix: &str, events: u64) -> u64 {
    assert_eq!(events % PER_CALL, 0, "whole calls only");
    let calls_n = events / PER_CALL;
    let calls: Vec<Arc<CallState>> = (0..calls_n)
        .map(|c| {
            let id = format!("{prefix}-call-{c}");
            Arc::new(
                CallState::builder(&id)
                    .limits(Limits::new(100, 50).expect("valid"))
                    .audit_archive(archiver.sink(&id))
                    .build(),
            )
        })
        .collect();
    thread::scope(|s| {
        for t in 0..THREADS {
            let calls = &calls;
            s.spawn(move || {
                let mut details = Details::new();
                details.insert("thread".into(), t.into());
                for call in calls {
                    for _ in 0..PER_CALL / THREADS {
                        call.log_event(&AuditEventType::ToolInvoked, Some("agent"), &details)
                            .expect("archived");
                    }
                }
            });
        }
    });
    for call in &calls {
        let _ = call.end();
    }
    calls_n
}

/// The database holds exactly what the local archive holds: the same
/// per-call reports.
fn assert_same(local: &VerifyReport, sql: &VerifyReport) {
    assert_eq!(local.calls.len(), sql.calls.len(), "calls");
    for (id, call) in &local.calls {
        assert_eq!(Some(call), sql.calls.get(id), "call {id}");
    }
    assert_eq!(
        (local.events, local.complete, local.open),
        (sql.events, sql.complete, sql.open)
    );
    assert!(sql.is_ok(), "{sql}");
}

/// Counts checked in SQL alone: every call's seqs are `0..issued`, each once.
fn assert_whole_in_sql(url: &str, host: &str, calls: u64, events: u64) {
    let mut db = client(url);
    let row = db
        .query_one(
            "SELECT count(*), count(DISTINCT (call_id, seq)) \
             FROM callring_audit_events WHERE host_id = $1",
            &[&host],
        )
        .expect("query");
    let (rows, distinct): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((rows as u64, distinct as u64), (events, events));
    let whole: i64 = db
        .query_one(
            "SELECT count(*) FROM callring_audit_calls c JOIN ( \
                 SELECT call_id, count(*) AS n, min(seq) AS lo, max(seq) AS hi \
                 FROM callring_audit_events WHERE host_id = $1 GROUP BY call_id \
             ) e USING (call_id) \
             WHERE c.host_id = $1 AND e.n = c.issued AND e.lo = 0 AND e.hi = c.issued - 1",
            &[&host],
        )
        .expect("query")
        .get(0);
    assert_eq!(
        whole as u64, calls,
        "calls whose seqs are 0..issued, each once"
    );
    let duplicates: i64 = db
        .query_one(
            "SELECT count(*) FROM callring_audit_duplicates WHERE host_id = $1",
            &[&host],
        )
        .expect("query")
        .get(0);
    assert_eq!(duplicates, 0);
}

#[test]
fn events_from_eight_threads_arrive_once_each() {
    let Some(url) = url("events_from_eight_threads_arrive_once_each") else {
        return;
    };
    let _serial = serial();
    let host = host_id("many");
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("archive");
    let shipper = Shipper::start(&archiver, &url, quick_config(&host)).expect("shipper");
    let started = Instant::now();
    let calls = log_events(&archiver, "c", EVENTS);
    archiver.stop().expect("archive stops");
    let stats = shipper.stop().expect("everything shipped");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{EVENTS} events + {calls} closed records from {THREADS} threads shipped in {secs:.2} s \
         ({:.0} records/s, logging and shipping at once; {} batches)",
        stats.records as f64 / secs,
        stats.batches
    );
    assert_eq!(stats.records, EVENTS + calls);
    assert_eq!(
        (stats.events_inserted, stats.closed_inserted),
        (EVENTS, calls)
    );
    assert_eq!((stats.already_present, stats.duplicates), (0, 0));
    assert_whole_in_sql(&url, &host, calls, EVENTS);
    let sql = verify_postgres(&url, &host).expect("verified in SQL");
    assert!(sql.is_complete(), "{sql}");
    assert_eq!(sql.complete, calls);
    assert_same(&verify(dir.path()).expect("local verify"), &sql);
}

/// The shipping rate on its own: a spool of `EVENTS` events written first,
/// then shipped with nothing else running (the figure in the README).
#[test]
fn sustained_shipping_rate() {
    let Some(url) = url("sustained_shipping_rate") else {
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("archive");
    let calls = log_events(&archiver, "c", EVENTS);
    archiver.stop().expect("archive stops");
    for batch in [1_000, 10_000] {
        let host = host_id(&format!("rate{batch}"));
        let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("archive");
        let started = Instant::now();
        let shipper = Shipper::start(&archiver, &url, quick_config(&host).batch_records(batch))
            .expect("shipper");
        shipper
            .wait_shipped(Duration::from_secs(600))
            .expect("caught up");
        let secs = started.elapsed().as_secs_f64();
        archiver.stop().expect("archive stops");
        let stats = shipper.stop().expect("shipped");
        assert_eq!(stats.records, EVENTS + calls);
        println!(
            "shipped a spool of {} records in {secs:.2} s: {:.0} rows/s \
             (batches of {batch}, one connection, server on this machine)",
            stats.records,
            stats.records as f64 / secs
        );
    }
}

#[test]
fn a_resent_spool_inserts_nothing() {
    let Some(url) = url("a_resent_spool_inserts_nothing") else {
        return;
    };
    let _serial = serial();
    let host = host_id("resend");
    let dir = tempfile::tempdir().expect("temp dir");
    let events = 4_000;
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("archive");
    let shipper = Shipper::start(&archiver, &url, quick_config(&host)).expect("shipper");
    let calls = log_events(&archiver, "c", events);
    archiver.stop().expect("archive stops");
    let first = shipper.stop().expect("shipped");
    assert_eq!(first.events_inserted, events);

    // Forget the progress: the next shipper resends the whole spool.
    client(&url)
        .execute(
            "UPDATE callring_ship_progress SET segment = 0, \"offset\" = 0 WHERE host_id = $1",
            &[&host],
        )
        .expect("progress reset");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("archive");
    let shipper =
        Shipper::start(&archiver, &url, quick_config(&host).batch_records(500)).expect("shipper");
    archiver.stop().expect("archive stops");
    let again = shipper.stop().expect("resent");
    assert_eq!(again.records, events + calls);
    assert_eq!((again.events_inserted, again.closed_inserted), (0, 0));
    assert_eq!(
        (again.already_present, again.duplicates),
        (events + calls, 0)
    );
    assert_whole_in_sql(&url, &host, calls, events);
}

#[test]
fn a_duplicate_in_the_spool_is_reported_by_the_sql_verifier() {
    let Some(url) = url("a_duplicate_in_the_spool_is_reported_by_the_sql_verifier") else {
        return;
    };
    let _serial = serial();
    let host = host_id("dup");
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("archive");
    let _ = log_events(&archiver, "c", PER_CALL);
    archiver.stop().expect("archive stops");
    // A second segment repeating seq 5 of the call: a bug a verifier must
    // see, not a resend to absorb.
    let first = dir.path().join("audit-000000000001.jsonl");
    let text = std::fs::read_to_string(&first).expect("segment");
    let line = text
        .lines()
        .find(|l| l.contains("\"seq\":5,"))
        .expect("seq 5");
    std::fs::write(
        dir.path().join("audit-000000000002.jsonl"),
        format!("{line}\n"),
    )
    .expect("written");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("archive");
    let shipper = Shipper::start(&archiver, &url, quick_config(&host)).expect("shipper");
    archiver.stop().expect("archive stops");
    let stats = shipper.stop().expect("shipped");
    assert_eq!((stats.already_present, stats.duplicates), (1, 1));
    let sql = verify_postgres(&url, &host).expect("verified");
    let local = verify(dir.path()).expect("local verify");
    assert_eq!(sql.duplicated, 1);
    assert_same_shape(&local, &sql);
}

/// Like `assert_same`, for reports that are allowed to fail.
fn assert_same_shape(local: &VerifyReport, sql: &VerifyReport) {
    for (id, call) in &local.calls {
        assert_eq!(Some(call), sql.calls.get(id), "call {id}");
    }
}

/// The backend serving `host`'s shipper, if it is inside a batch's
/// transaction (running one of its inserts, or between two statements).
fn busy_shipper_backend(db: &mut postgres::Client, host: &str) -> Option<i32> {
    let name: String = format!("callring-shipper {host}")
        .chars()
        .take(63)
        .collect();
    db.query_opt(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
         AND xact_start IS NOT NULL AND state <> 'idle' \
         AND position('INSERT INTO callring_' in query) > 0 LIMIT 1",
        &[&name],
    )
    .expect("query")
    .map(|row| row.get(0))
}

#[test]
fn terminated_backends_lose_and_duplicate_nothing() {
    let Some(url) = url("terminated_backends_lose_and_duplicate_nothing") else {
        return;
    };
    let _serial = serial();
    const ROUNDS: u64 = 8;
    const CHUNK: u64 = if cfg!(debug_assertions) {
        2_000
    } else {
        12_000
    };
    let host = host_id("kill");
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("archive");
    let shipper =
        Shipper::start(&archiver, &url, quick_config(&host).batch_records(200)).expect("shipper");
    let mut db = client(&url);
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut calls, mut killed) = (0, 0);
    for round in 0..ROUNDS {
        // A backlog of batches, then kill the shipper's backend while it is
        // inside one of their transactions: before its commit, or while the
        // commit is under way.
        calls += log_events(&archiver, &format!("round{round}"), CHUNK);
        archiver.flush().expect("durable");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(pid) = busy_shipper_backend(&mut db, &host) {
                let done: bool = db
                    .query_one("SELECT pg_terminate_backend($1)", &[&pid])
                    .expect("terminate")
                    .get(0);
                killed += u64::from(done);
                break;
            }
            thread::sleep(Duration::from_micros(rng.u64(0..3_000)));
        }
    }
    archiver.stop().expect("archive stops");
    let stats = shipper.stop().expect("everything shipped");
    println!("{killed} backends terminated mid-batch; {stats:?}");
    assert!(
        killed >= ROUNDS / 2,
        "terminated only {killed} backends mid-batch"
    );
    assert!(stats.connects > 1 && stats.errors > 0, "{stats:?}");
    assert_eq!(stats.duplicates, 0);
    assert_whole_in_sql(&url, &host, calls, ROUNDS * CHUNK);
    let sql = verify_postgres(&url, &host).expect("verified");
    assert!(sql.is_complete(), "{sql}");
    assert_same(&verify(dir.path()).expect("local verify"), &sql);
}

/// Runs the cluster's `pg_ctl` (from `scripts/with-postgres`); starts the
/// server again on drop if a test stopped it and then failed.
struct PgCtl {
    path: std::ffi::OsString,
    stopped: bool,
}

impl PgCtl {
    fn run(&mut self, args: &[&str]) {
        let status = Command::new(&self.path)
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl {args:?}: {status}");
        self.stopped = args.first() == Some(&"stop");
    }
}

impl Drop for PgCtl {
    fn drop(&mut self) {
        if self.stopped {
            let _ = Command::new(&self.path).arg("start").status();
        }
    }
}

#[test]
fn a_server_restart_loses_and_duplicates_nothing() {
    let Some(url) = url("a_server_restart_loses_and_duplicates_nothing") else {
        return;
    };
    let Some(path) = std::env::var_os("CALLRING_PG_CTL") else {
        assert!(std::env::var_os("CI").is_none(), "CALLRING_PG_CTL unset");
        println!(
            "a_server_restart_loses_and_duplicates_nothing: skipped: CALLRING_PG_CTL is unset"
        );
        return;
    };
    let _serial = serial();
    let mut ctl = PgCtl {
        path,
        stopped: false,
    };
    let host = host_id("restart");
    let dir = tempfile::tempdir().expect("temp dir");
    let events = EVENTS / 5;
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("archive");
    let shipper =
        Shipper::start(&archiver, &url, quick_config(&host).batch_records(1_000)).expect("shipper");
    let mut calls = log_events(&archiver, "before", events);
    archiver.flush().expect("durable");
    let deadline = Instant::now() + Duration::from_secs(20);
    while shipper.stats().batches == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    // Mid-run: the server crashes (no shutdown checkpoint) while the shipper
    // works through its backlog, and stays down while the host logs on.
    ctl.run(&["stop", "-m", "immediate"]);
    let started = Instant::now();
    calls += log_events(&archiver, "during", events);
    archiver
        .flush()
        .expect("the local archive is never blocked");
    println!(
        "logged {events} events during the outage in {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let during = loop {
        let status = shipper.status();
        if status.state == ShipState::Retrying || Instant::now() > deadline {
            break status;
        }
        thread::sleep(Duration::from_millis(20));
    };
    println!("during the outage: {during:?}");
    assert_eq!(during.state, ShipState::Retrying, "{during:?}");
    assert!(
        during.last_error.is_some() && during.lag_records > 0,
        "{during:?}"
    );
    assert!(during.lag > Duration::ZERO, "{during:?}");
    // The server recovers from its WAL; the shipper reconnects and resumes
    // from its progress row.
    ctl.run(&["start"]);
    calls += log_events(&archiver, "after", events);
    archiver.stop().expect("archive stops");
    let stats = shipper.stop().expect("everything shipped");
    println!("after the restart: {stats:?}");
    assert!(stats.errors > 0 && stats.connects > 1, "{stats:?}");
    assert_eq!(stats.duplicates, 0);
    assert_whole_in_sql(&url, &host, calls, 3 * events);
    let sql = verify_postgres(&url, &host).expect("verified");
    assert!(sql.is_complete(), "{sql}");
    assert_same(&verify(dir.path()).expect("local verify"), &sql);
}

#[test]
fn an_unreachable_server_never_blocks_the_archive_and_shows_as_lag() {
    // Port 1 on loopback: nothing listens there. Needs no server at all.
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("archive");
    let shipper = Shipper::start(
        &archiver,
        "postgres://callring@127.0.0.1:1/callring",
        ShipperConfig::new("offline")
            .retry_backoff(Duration::from_millis(10), Duration::from_millis(50))
            .connect_timeout(Duration::from_millis(200)),
    )
    .expect("starts without a server");
    let started = Instant::now();
    let calls = log_events(&archiver, "c", 8_000);
    archiver
        .flush()
        .expect("the local archive is durable regardless");
    assert!(started.elapsed() < Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = shipper.status();
        if status.last_error.is_some() || Instant::now() > deadline {
            break status;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert!(matches!(
        status.state,
        ShipState::Retrying | ShipState::Connecting
    ));
    assert!(status.last_error.is_some(), "{status:?}");
    thread::sleep(Duration::from_millis(50));
    let status = shipper.status();
    // Nothing shipped yet: the lag counts every durable record. (Lag
    // bookkeeping starts at a connect; before the first one it counts
    // what the archiver made durable since the shipper started.)
    assert_eq!(status.lag_records, 8_000 + calls, "{status:?}");
    assert!(
        shipper.wait_shipped(Duration::from_millis(100)).is_err(),
        "nothing can be shipped"
    );
    let verdict = shipper.abort();
    assert!(verdict.is_ok(), "{verdict:?}");
    archiver.stop().expect("archive stops");
    assert!(verify(dir.path()).expect("local").is_complete());
}

/// The child of `a_sigkilled_shipper_resumes_from_its_progress_row`: logs
/// and ships until it is killed.
#[test]
#[ignore = "run by a_sigkilled_shipper_resumes_from_its_progress_row"]
fn shipping_child() {
    let (Some(dir), Ok(host), Ok(run), Ok(url)) = (
        std::env::var_os(CHILD_DIR).map(PathBuf::from),
        std::env::var(CHILD_HOST),
        std::env::var(CHILD_RUN),
        std::env::var("CALLRING_PG_URL"),
    ) else {
        return;
    };
    let archiver = Archiver::start(&dir, ArchiveConfig::default()).expect("archive");
    let _shipper =
        Shipper::start(&archiver, &url, quick_config(&host).batch_records(500)).expect("shipper");
    thread::scope(|s| {
        for t in 0..4 {
            let (archiver, run) = (&archiver, &run);
            s.spawn(move || {
                for generation in 0.. {
                    let id = format!("r{run}-t{t}-{generation}");
                    let call = CallState::builder(&id)
                        .audit_archive(archiver.sink(&id))
                        .build();
                    // About 20 ms per call, so calls are live at the kill.
                    for _ in 0..100 {
                        call.log_event(&AuditEventType::ToolInvoked, None, &Details::new())
                            .expect("archived");
                        thread::sleep(Duration::from_micros(200));
                    }
                    let _ = call.end();
                }
            });
        }
    });
}

/// The host's progress row; `None` also while the first shipper has not
/// created the tables yet.
fn progress(db: &mut postgres::Client, host: &str) -> Option<(i64, i64)> {
    db.query_opt(
        "SELECT segment, \"offset\" FROM callring_ship_progress WHERE host_id = $1",
        &[&host],
    )
    .ok()
    .flatten()
    .map(|row| (row.get(0), row.get(1)))
}

/// Waits until no other client session is connected to this database (a
/// killed client's backend finishes what it had received, then exits).
fn wait_for_other_sessions_to_end(db: &mut postgres::Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let others: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                &[],
            )
            .expect("query")
            .get(0);
        if others == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{others} sessions still connected"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Lines of the spool from `(segment, offset)` on.
fn lines_after(dir: &Path, from: (i64, i64)) -> u64 {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        // Segments only (not their indexes, `audit-N.idx`).
        .filter(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|name| {
            let index: i64 = name[6..18].parse().expect("index");
            let bytes = std::fs::read(dir.join(name)).expect("segment");
            let skip = match index.cmp(&from.0) {
                std::cmp::Ordering::Less => bytes.len(),
                std::cmp::Ordering::Equal => (from.1 as usize).min(bytes.len()),
                std::cmp::Ordering::Greater => 0,
            };
            bytes[skip..].iter().filter(|&&b| b == b'\n').count() as u64
        })
        .sum()
}

#[test]
fn a_sigkilled_shipper_resumes_from_its_progress_row() {
    let Some(url) = url("a_sigkilled_shipper_resumes_from_its_progress_row") else {
        return;
    };
    let _serial = serial();
    let host = host_id("sigkill");
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = dir.path().join("spool");
    let mut db = client(&url);
    let exe = std::env::current_exe().expect("test binary");
    let mut last = None;
    for run in 0..3 {
        let mut child = Command::new(&exe)
            .args(["--ignored", "--exact", "shipping_child", "--nocapture"])
            .env(CHILD_DIR, &spool)
            .env(CHILD_HOST, &host)
            .env(CHILD_RUN, run.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("child starts");
        // Kill it once it has shipped past where the last run stopped.
        let deadline = Instant::now() + Duration::from_secs(60);
        while progress(&mut db, &host) <= last && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(Duration::from_millis(100 + 150 * run));
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        // A COMMIT the child sent before it died is still carried out by its
        // server backend: read the progress row once that backend is gone.
        wait_for_other_sessions_to_end(&mut db);
        let now = progress(&mut db, &host);
        assert!(now > last, "run {run} shipped nothing");
        last = now;
    }
    // The rows in the database are exactly the spool up to the progress
    // row: the transaction under way at the kill left nothing.
    let at = last.expect("progress");
    let rows: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM callring_audit_events WHERE host_id = $1) \
                  + (SELECT count(*) FROM callring_audit_calls WHERE host_id = $1)",
            &[&host],
        )
        .expect("query")
        .get(0);
    let all_lines = lines_after(&spool, (0, 0));
    let unshipped_lines = lines_after(&spool, at);
    // (The last kill may have cut a torn tail that the next start repairs.)
    assert_eq!(rows as u64, all_lines - unshipped_lines);

    // Restarted on the same spool: resumes at the progress row, so it
    // resends nothing.
    let archiver = Archiver::start(&spool, ArchiveConfig::default()).expect("archive");
    let pending = lines_after(&spool, at);
    let shipper = Shipper::start(&archiver, &url, quick_config(&host)).expect("shipper");
    archiver.stop().expect("archive stops");
    let stats = shipper.stop().expect("shipped");
    println!(
        "3 SIGKILLed shipping processes; the restart resumed at segment {}, byte {} \
         ({} records already in the database) and shipped the {pending} after it: {stats:?}",
        at.0, at.1, rows
    );
    assert_eq!(stats.records, pending, "{stats:?}");
    assert_eq!((stats.already_present, stats.duplicates), (0, 0));

    let local = verify(&spool).expect("local verify");
    let sql = verify_postgres(&url, &host).expect("verified");
    assert!(
        local.open > 0 && local.complete > 0,
        "{} open, {} complete",
        local.open,
        local.complete
    );
    assert_same(&local, &sql);
    assert!(sql
        .calls
        .values()
        .all(|c| matches!(c.status, CallStatus::Complete | CallStatus::Open)));
}
