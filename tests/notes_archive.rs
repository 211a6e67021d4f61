//! Notes archival (`CallStateBuilder::notes_archive`): every note that
//! leaves a call's notes ring reaches the archive as a note line, exactly
//! once, so the archive and the ring together hold every note ever appended
//! and, after `end`, the archive alone does. Notes take no audit seq and do
//! not change the audit verdict; a full queue back-pressures the appending
//! thread and a stopped archiver refuses notes back to the call: none is
//! dropped.
#![cfg(all(not(loom), feature = "call"))]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use callring::archive::{read_notes, verify, ArchiveConfig, Archiver, NoteRecord, Origin};
use callring::call::{AuditEventType, CallState, Details, EndOutcome, Limits};
use common::Stall;

const AGENTS: usize = 4;
const PER_AGENT: usize = if cfg!(debug_assertions) { 400 } else { 2000 };
const RING: usize = 64;

/// Agent `agent`'s note `i`: short ASCII, non-ASCII, and longer than a
/// slot's 112 payload bytes (spilled), some of them much longer.
fn text(agent: usize, i: usize) -> String {
    match i % 4 {
        0 => format!("agent {agent} note {i}"),
        1 => format!("agent {agent} note {i}: Zoë \"Ø\" 日本語 \u{1F600}\n\ttab"),
        2 => format!("agent {agent} note {i}: {}", "long ".repeat(40)),
        _ => format!("agent {agent} note {i}: {}", "é\u{1F4DE}".repeat(300)),
    }
}

/// A call archiving its notes (and writing its audit through) to `archiver`.
fn call(archiver: &Archiver, id: &str, notes: usize) -> Arc<CallState> {
    Arc::new(
        CallState::builder(id)
            .limits(Limits::new(notes, 100).expect("valid"))
            .audit_archive(archiver.sink(id))
            .notes_archive(archiver.sink(id))
            .build(),
    )
}

/// Agents append notes concurrently; returns each note's text by the seq
/// `append_note` returned.
fn append_concurrently(call: &CallState) -> BTreeMap<u64, String> {
    let appended = Mutex::new(BTreeMap::new());
    thread::scope(|s| {
        for agent in 0..AGENTS {
            let appended = &appended;
            s.spawn(move || {
                let mut mine = Vec::with_capacity(PER_AGENT);
                for i in 0..PER_AGENT {
                    let text = text(agent, i);
                    let seq = call.append_note(&text).expect("live call");
                    mine.push((seq, text));
                }
                appended.lock().expect("lock").extend(mine);
            });
        }
    });
    let appended = appended.into_inner().expect("lock");
    let total = (AGENTS * PER_AGENT) as u64;
    assert_eq!(appended.len() as u64, total, "every seq handed out once");
    assert_eq!(
        appended.keys().copied().collect::<Vec<_>>(),
        (0..total).collect::<Vec<_>>()
    );
    appended
}

fn texts(notes: &[NoteRecord]) -> Vec<&str> {
    notes.iter().map(|n| n.text.as_str()).collect()
}

/// Guarantee 4 for notes, through the archive: while the call is live, the
/// archived notes followed by the notes still in the ring are every note
/// appended, in seq order, each once; after `end` the archive alone is.
#[test]
fn archive_plus_ring_is_every_note_once_and_after_end_the_archive_alone_is() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    let call = call(&archiver, "call-1", RING);
    let appended = append_concurrently(&call);
    let all: Vec<&str> = appended.values().map(String::as_str).collect();

    // Every evicted note was handed over before the append that evicted it
    // returned; flush makes it readable.
    archiver.flush().expect("durable");
    let archived = read_notes(dir.path(), "call-1").expect("readable");
    let in_ring = call.notes();
    assert_eq!(archived.len() + in_ring.len(), all.len());
    assert_eq!(in_ring.len(), RING);
    for (i, note) in archived.iter().enumerate() {
        assert_eq!(note.seq, i as u64, "archived seqs are 0..n, each once");
        assert_eq!(note.reason, Origin::Evicted);
        assert_eq!(note.call_id, "call-1");
    }
    let mut together = texts(&archived);
    together.extend(in_ring.iter().map(|n| n.text.as_str()));
    assert_eq!(together, all);
    // The ring's notes keep their timestamps in the archive too, later.
    let ring_at: Vec<_> = in_ring.iter().map(|n| n.at).collect();

    let outcome = call.end();
    assert!(
        matches!(outcome, EndOutcome::Ended { notes_drained, closed_record: true, .. } if notes_drained == RING as u64),
        "{outcome:?}"
    );
    let stats = archiver.stop().expect("clean stop");
    assert_eq!(stats.notes, all.len() as u64);
    assert_eq!((stats.received, stats.closed_records), (0, 1));

    let archived = read_notes(dir.path(), "call-1").expect("readable");
    assert_eq!(texts(&archived), all, "every note, once, in seq order");
    let drained: Vec<_> = archived
        .iter()
        .filter(|n| n.reason == Origin::Drained)
        .collect();
    assert_eq!(drained.len(), RING);
    assert_eq!(drained.iter().map(|n| n.at).collect::<Vec<_>>(), ring_at);
    assert_eq!(drained[0].seq, (all.len() - RING) as u64);

    let report = verify(dir.path()).expect("readable");
    let trail = &report.calls["call-1"];
    assert_eq!(
        (trail.notes, trail.events, trail.issued),
        (all.len() as u64, 0, Some(0))
    );
    assert!(report.is_complete(), "{report}");
    assert!(report
        .to_string()
        .contains(&format!("{} archived notes", all.len())));
}

/// Notes have their own seqs: interleaved with audit events they neither
/// take audit seqs nor count as events, and the trail stays complete.
#[test]
fn notes_take_no_audit_seq_and_leave_the_audit_verdict_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    let calls = [call(&archiver, "a", 2), call(&archiver, "b", 2)];
    for i in 0..10u64 {
        for call in &calls {
            assert_eq!(call.append_note(&format!("note {i}")), Ok(i));
            let seq = call
                .log_event(&AuditEventType::ToolInvoked, Some("tools"), &Details::new())
                .expect("archived");
            assert_eq!(seq, i, "audit seqs have no gaps for notes");
        }
    }
    // Call "b" stays live: open, with its notes counted all the same.
    let _ = calls[0].end();
    archiver.stop().expect("clean stop");
    let report = verify(dir.path()).expect("readable");
    let (a, b) = (&report.calls["a"], &report.calls["b"]);
    assert!(a.is_complete(), "{a}");
    assert_eq!((a.events, a.last_seq, a.notes), (10, 9, 10));
    assert!(a.gaps.is_empty() && a.duplicates.is_empty());
    assert_eq!((b.events, b.notes, b.issued), (10, 8, None)); // 2 still in b's ring
    assert_eq!((report.events, report.complete, report.open), (20, 1, 1));
    assert_eq!(report.records, 20 + 1 + 18);
    assert_eq!(read_notes(dir.path(), "b").expect("readable").len(), 8);
    assert!(read_notes(dir.path(), "nobody")
        .expect("readable")
        .is_empty());
}

/// Opens the gate when dropped, so a failing test does not leave the
/// appender stuck (and the test hanging).
struct OpenOnDrop<'a>(&'a Stall);

impl Drop for OpenOnDrop<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// A stalled archive fills its queue: the append whose note evicts an older
/// one waits for room (counted), rather than drop the older note; once the
/// archive moves again every note is archived once.
#[test]
fn a_full_queue_makes_the_evicting_append_wait_and_drops_nothing() {
    const NOTES: u64 = 40;
    let dir = tempfile::tempdir().expect("temp dir");
    let stall = Stall::default();
    let config = ArchiveConfig::default()
        .channel_capacity(4)
        .fsync_every(1)
        .fs(stall.fs());
    let archiver = Archiver::start(dir.path(), config).expect("opens");
    let call = CallState::builder("c")
        .limits(Limits::new(1, 1).expect("valid"))
        .notes_archive(archiver.sink("c"))
        .build();
    stall.close();
    let done = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|s| {
        let _open = OpenOnDrop(&stall);
        s.spawn(|| {
            for i in 0..NOTES {
                assert_eq!(call.append_note(&format!("n{i}")), Ok(i));
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        wait_for("the appender to wait for room", || {
            archiver.stats().sink_waits > 0
        });
        assert!(!done.load(std::sync::atomic::Ordering::Acquire));
    });
    assert!(call.metrics().notes.sink_waits > 0);
    let _ = call.end();
    let stats = archiver.stop().expect("clean stop");
    assert_eq!((stats.notes, stats.refused), (NOTES, 0));
    let archived = read_notes(dir.path(), "c").expect("readable");
    let want: Vec<String> = (0..NOTES).map(|i| format!("n{i}")).collect();
    assert_eq!(texts(&archived), want);
}

/// The wrong shutdown order (stop the archiver, then keep appending and
/// end) loses no note: the archive refuses them back to the call, which
/// keeps them for `take_refused_notes`.
#[test]
fn a_stopped_archiver_refuses_notes_back_to_the_call() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    let call = call(&archiver, "c", 2);
    for i in 0..5 {
        call.append_note(&format!("n{i}")).expect("live call"); // n0..n2 evicted, archived
    }
    archiver.stop().expect("clean stop");
    for i in 5..8 {
        call.append_note(&format!("n{i}")).expect("stored"); // evicts n3..n5: refused
    }
    let outcome = call.end(); // n6 and n7 drained: refused too
    assert!(
        matches!(
            outcome,
            EndOutcome::Ended {
                notes_drained: 0,
                ..
            }
        ),
        "{outcome:?}"
    );
    let archived = read_notes(dir.path(), "c").expect("readable");
    let mut all = texts(&archived)
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    all.extend(call.take_refused_notes().into_iter().map(|n| n.text));
    let want: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    assert_eq!(all, want);
    assert!(call.take_refused_notes().is_empty());
}

/// Built without `notes_archive`, nothing about notes reaches the archive
/// (off by default).
#[test]
fn notes_are_not_archived_by_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    let call = CallState::builder("c")
        .limits(Limits::new(1, 1).expect("valid"))
        .audit_archive(archiver.sink("c"))
        .build();
    for i in 0..5 {
        call.append_note(&format!("n{i}")).expect("live call");
    }
    let _ = call.end();
    assert_eq!(archiver.stop().expect("clean stop").notes, 0);
    assert!(read_notes(dir.path(), "c").expect("readable").is_empty());
    assert_eq!(verify(dir.path()).expect("readable").calls["c"].notes, 0);
}

/// The SQLite side keeps audit only: the shipper reads past note lines
/// (its progress and lag move past them) and ships the events and closed
/// records; the SQLite archiver's sinks refuse notes back to the call.
#[cfg(feature = "sqlite")]
#[test]
fn sqlite_ships_and_keeps_audit_only_and_refuses_notes() {
    use callring::archive::{verify_sqlite, Shipper, ShipperConfig, SqliteArchiver};

    let dir = tempfile::tempdir().expect("temp dir");
    let spool = dir.path().join("spool");
    let db = dir.path().join("audit.sqlite");
    let archiver = Archiver::start(&spool, ArchiveConfig::default()).expect("opens");
    let shipper =
        Shipper::start_sqlite(&archiver, &db, ShipperConfig::new("host-1")).expect("starts");
    let call = call(&archiver, "c", 2);
    for i in 0..10 {
        call.append_note(&format!("n{i}")).expect("live call");
        if i % 5 == 0 {
            call.log_event(&AuditEventType::ToolInvoked, None, &Details::new())
                .expect("archived");
        }
    }
    let _ = call.end();
    archiver.flush().expect("durable");
    wait_for("the shipper to catch up", || {
        shipper.status().lag_records == 0 && shipper.status().stats.records == 3
    });
    archiver.stop().expect("clean stop");
    let stats = shipper.stop().expect("everything shipped");
    assert_eq!((stats.events_inserted, stats.closed_inserted), (2, 1));
    let report = verify_sqlite(&db).expect("verified");
    assert!(report.is_complete(), "{report}");
    assert_eq!((report.calls["c"].events, report.calls["c"].notes), (2, 0));
    assert_eq!(read_notes(&spool, "c").expect("readable").len(), 10);

    let table = dir.path().join("table.sqlite");
    let sqlite = SqliteArchiver::start(&table, ArchiveConfig::default()).expect("opens");
    let call = CallState::builder("d")
        .limits(Limits::new(1, 1).expect("valid"))
        .notes_archive(sqlite.sink("d"))
        .build();
    call.append_note("first").expect("live call");
    call.append_note("second")
        .expect("stored; evicts first: refused");
    let _ = call.end(); // drains second: refused
    let refused: Vec<String> = call
        .take_refused_notes()
        .into_iter()
        .map(|n| n.text)
        .collect();
    assert_eq!(refused, ["first", "second"]);
    let stats = sqlite.stop().expect("clean stop");
    assert_eq!((stats.notes, stats.refused), (0, 2));
}
