//! The verifier on archives written by hand: complete, open, incomplete and
//! duplicated calls; version-1 archives; a torn last line (reported,
//! truncated on request, repaired by the next archiver), corrupt lines (an
//! error naming file and line), and bad directories.
#![cfg(all(not(loom), feature = "call"))]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use callring::archive::{
    segment_name, verify, verify_with, ArchiveConfig, ArchiveRecord, Archiver, CallStatus,
    FaultEvent, SeqRange, VerifyError, VerifyOptions, SCHEMA_VERSION,
};
use callring::call::{AuditEvent, AuditEventType, CallState, Details, Limits, Timestamp};

fn line(call_id: &str, seq: u64) -> String {
    let event = AuditEvent::new(
        seq,
        Timestamp::from_unix_nanos(1_764_063_000_000_000_000 + seq as i64),
        AuditEventType::ToolInvoked,
        Some("tools".into()),
        Details::new(),
    );
    let record = ArchiveRecord::logged(call_id, event);
    assert_eq!(record.version, SCHEMA_VERSION);
    record.to_line()
}

/// The closed record of a call that handed out `issued` seqs.
fn closed(call_id: &str, issued: u64) -> String {
    format!(
        "{{\"v\":2,\"call_id\":\"{call_id}\",\"record\":\"closed\",\"issued\":{issued},\
         \"at\":\"2025-11-25T09:31:00Z\"}}\n"
    )
}

fn lines(call_id: &str, seqs: impl IntoIterator<Item = u64>) -> String {
    seqs.into_iter().map(|seq| line(call_id, seq)).collect()
}

fn segment(dir: &Path, index: u64, content: &str) -> PathBuf {
    let path = dir.join(segment_name(index));
    fs::write(&path, content).expect("written");
    path
}

#[test]
fn gaps_and_duplicates_are_reported_per_call() {
    let dir = tempfile::tempdir().expect("temp dir");
    segment(
        dir.path(),
        1,
        &(lines("a", [0, 1, 3]) + &lines("b", [2, 1])),
    );
    segment(
        dir.path(),
        2,
        &(lines("a", [3, 4, 7]) + &lines("b", [0]) + &closed("a", 8) + &closed("b", 3)),
    );
    let report = verify(dir.path()).expect("verifies");
    assert_eq!((report.records, report.events), (11, 9));
    assert_eq!(report.segments.len(), 2);
    let a = &report.calls["a"];
    assert_eq!((a.events, a.first_seq, a.last_seq), (6, 0, 7));
    assert_eq!(
        a.gaps,
        [
            SeqRange { first: 2, last: 2 },
            SeqRange { first: 5, last: 6 }
        ]
    );
    assert_eq!(a.duplicates, [SeqRange { first: 3, last: 3 }]);
    assert_eq!(a.duplicate_records, 1);
    assert_eq!(a.status, CallStatus::Duplicated);
    let b = &report.calls["b"];
    assert!(b.is_complete(), "{b}");
    assert!(!report.is_complete() && !report.is_ok());
    assert_eq!((report.complete, report.duplicated), (1, 1));
    assert_eq!(
        report
            .incomplete_calls()
            .map(|(id, _)| id)
            .collect::<Vec<_>>(),
        ["a"]
    );
    let text = report.to_string();
    assert!(
        text.contains(
            "a: DUPLICATED: 6 events, seqs 0..=7, closed with 8 issued; MISSING 3 seqs: 2, 5..=6"
        ),
        "{text}"
    );
    assert!(
        text.contains("result: FAILED: 1 complete, 0 open"),
        "{text}"
    );
    let json = serde_json::to_value(&report).expect("serialisable");
    assert_eq!(json["calls"]["a"]["gaps"][1]["last"], 6);
    assert_eq!(json["calls"]["a"]["status"], "duplicated");
}

/// Each status on its own: a closed call with every seq is complete; one
/// whose closed record says more seqs than are there is incomplete (before
/// closed records existed, a trail cut short passed); a call without a
/// closed record is open, with its missing seqs listed, and not a failure
/// (several agents per call: seq 383 can be missing after a crash while
/// 402 is durable).
#[test]
fn complete_open_and_incomplete_calls_are_told_apart() {
    let dir = tempfile::tempdir().expect("temp dir");
    segment(
        dir.path(),
        1,
        &(lines("whole", 0..6)
            + &closed("whole", 6)
            + &lines("cut", 0..1)
            + &closed("cut", 6)
            + &lines("live", (0..383).chain(384..403))),
    );
    let report = verify(dir.path()).expect("verifies");
    let status = |id: &str| report.calls[id].status;
    assert_eq!(status("whole"), CallStatus::Complete);
    assert_eq!(status("cut"), CallStatus::Incomplete);
    assert_eq!(report.calls["cut"].gaps, [SeqRange { first: 1, last: 5 }]);
    let live = &report.calls["live"];
    assert_eq!(
        (live.status, live.events, live.issued),
        (CallStatus::Open, 402, None)
    );
    assert_eq!(
        live.gaps,
        [SeqRange {
            first: 383,
            last: 383
        }]
    );
    assert_eq!(
        (
            report.complete,
            report.open,
            report.incomplete,
            report.duplicated
        ),
        (1, 1, 1, 0)
    );
    assert!(!report.is_ok());

    // Without the cut call the archive is consistent: open is not an error.
    let dir = tempfile::tempdir().expect("temp dir");
    segment(
        dir.path(),
        1,
        &(lines("whole", 0..6) + &closed("whole", 6) + &lines("live", [0, 1, 5])),
    );
    let report = verify(dir.path()).expect("verifies");
    assert!(report.is_ok() && !report.is_complete(), "{report}");
    assert!(
        report.to_string().contains("live: open: 3 events"),
        "{report}"
    );
}

/// Archives written before schema version 2 (no `"v"`, no closed records)
/// still verify: every call is open.
#[test]
fn version_one_archives_still_verify() {
    let dir = tempfile::tempdir().expect("temp dir");
    let v1 =
        "{\"call_id\":\"old\",\"seq\":0,\"at\":\"2025-11-25T09:30:00Z\",\"type\":\"call_started\",\
              \"agent_id\":null,\"details\":{},\"reason\":\"drained\"}\n";
    segment(dir.path(), 1, v1);
    let report = verify(dir.path()).expect("verifies");
    let old = &report.calls["old"];
    assert_eq!(
        (old.status, old.events, old.drained),
        (CallStatus::Open, 1, 1)
    );
    assert!(report.is_ok());
    let mut versions = Vec::new();
    callring::archive::read_archive(dir.path(), |r| versions.push(r.version)).expect("reads");
    assert_eq!(versions, [1]);
}

/// A torn last line built by hand: reported with file, line, offset and
/// length; kept unless truncation is asked for; cut exactly at the last
/// whole record when it is.
#[test]
fn a_torn_last_line_is_reported_and_truncated_on_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    segment(dir.path(), 1, &lines("a", 0..4));
    let whole = lines("a", 4..7);
    let partial = line("a", 7);
    let content = whole.clone() + &partial[..partial.len() / 2];
    let path = segment(dir.path(), 2, &content);

    let report = verify(dir.path()).expect("a torn tail is not an error");
    let torn = report.torn_tail.clone().expect("torn tail found");
    assert_eq!(torn.file, path);
    assert_eq!(torn.line, 4);
    assert_eq!(torn.offset, whole.len() as u64);
    assert_eq!(torn.bytes, (partial.len() / 2) as u64);
    assert!(!torn.truncated);
    assert_eq!(report.records, 7);
    assert!(report.is_ok(), "the torn record was never durable");
    assert!(report.to_string().contains("torn tail: "));
    assert_eq!(
        fs::read(&path).expect("read").len(),
        content.len(),
        "untouched"
    );

    let repaired =
        verify_with(dir.path(), &VerifyOptions::new().truncate_torn(true)).expect("truncates");
    assert!(repaired.torn_tail.expect("reported").truncated);
    assert_eq!(fs::read_to_string(&path).expect("read"), whole);
    let clean = verify(dir.path()).expect("verifies");
    assert_eq!((clean.torn_tail, clean.records), (None, 7));
}

/// The next archiver on a crashed directory cuts the torn tail (and says
/// so), then appends to a new segment.
#[test]
fn a_new_archiver_repairs_the_torn_tail_it_finds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partial = line("old", 3);
    let torn = &partial[..10];
    let path = segment(dir.path(), 1, &(lines("old", 0..3) + torn));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let config = {
        let seen = Arc::clone(&seen);
        ArchiveConfig::default().on_fault(move |e| seen.lock().expect("ok").push(e.clone()))
    };
    let archiver = Archiver::start(dir.path(), config).expect("starts");
    assert_eq!(archiver.stats().repaired_torn_bytes, torn.len() as u64);
    let call = CallState::builder("new")
        .limits(Limits::new(10, 1).expect("valid"))
        .audit_archive(archiver.sink("new"))
        .build();
    call.log_event(&AuditEventType::CallStarted, None, &Details::new())
        .expect("live call");
    let _ = call.end();
    archiver.stop().expect("clean stop");

    assert_eq!(
        *seen.lock().expect("ok"),
        [FaultEvent::TornTailRepaired {
            file: path.clone(),
            bytes: torn.len() as u64
        }]
    );
    let report = verify(dir.path()).expect("verifies");
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.records, 5); // 3 old, 1 new event, its closed record
    assert_eq!(report.segments[1].file, dir.path().join(segment_name(2)));
    assert!(report.calls["new"].is_complete(), "{report}");
    assert_eq!(report.calls["old"].status, CallStatus::Open);
}

/// A whole last record that lost only its newline is a record, not a tail.
#[test]
fn a_last_record_without_its_newline_still_counts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let content = lines("a", 0..3);
    segment(dir.path(), 1, content.trim_end());
    let report = verify(dir.path()).expect("verifies");
    assert_eq!((report.records, report.torn_tail), (3, None));
}

fn corrupt_at(result: Result<callring::archive::VerifyReport, VerifyError>) -> (PathBuf, u64) {
    match result {
        Err(VerifyError::Corrupt { file, line, reason }) => {
            assert!(!reason.is_empty());
            (file, line)
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Corrupt lines anywhere but the torn tail of the last segment are errors
/// that name the file and line.
#[test]
fn corrupt_lines_name_their_file_and_line() {
    // In the middle of the last segment.
    let dir = tempfile::tempdir().expect("temp dir");
    let good = lines("a", 0..2);
    let path = segment(
        dir.path(),
        1,
        &(good.clone() + "{\"call_id\": 12}\n" + &good),
    );
    let err = verify(dir.path());
    assert_eq!(corrupt_at(err.clone()), (path.clone(), 3));
    let message = err.expect_err("corrupt").to_string();
    assert!(
        message.starts_with(&format!("{}:3: corrupt line", path.display())),
        "{message}"
    );

    // A torn line in a segment that is not the last one.
    let dir = tempfile::tempdir().expect("temp dir");
    let partial = line("a", 2);
    let first = segment(dir.path(), 1, &(lines("a", 0..2) + &partial[..20]));
    segment(dir.path(), 2, &lines("a", 2..4));
    assert_eq!(corrupt_at(verify(dir.path())), (first, 3));

    // A terminated garbage line at the very end is corruption, not a tail.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = segment(dir.path(), 1, &(lines("a", 0..2) + "garbage\n"));
    assert_eq!(corrupt_at(verify(dir.path())), (path, 3));

    // An empty line, and a record missing a field.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = segment(
        dir.path(),
        1,
        &(lines("a", 0..1) + "\n" + &lines("a", 1..2)),
    );
    assert_eq!(corrupt_at(verify(dir.path())), (path, 2));
    let dir = tempfile::tempdir().expect("temp dir");
    let no_reason = line("a", 0).replace(",\"reason\":\"logged\"", "");
    let path = segment(dir.path(), 1, &(no_reason + &line("a", 1)));
    assert_eq!(corrupt_at(verify(dir.path())), (path, 1));

    // Truncation never touches a corrupt archive.
    let dir = tempfile::tempdir().expect("temp dir");
    let content = lines("a", 0..1) + "nope\n" + &line("a", 1)[..5];
    let path = segment(dir.path(), 1, &content);
    let opts = VerifyOptions::new().truncate_torn(true);
    assert_eq!(
        corrupt_at(verify_with(dir.path(), &opts)),
        (path.clone(), 2)
    );
    assert_eq!(fs::read_to_string(&path).expect("read"), content);
}

#[test]
fn empty_missing_and_unrelated_directories() {
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = verify(dir.path()).expect("an empty archive verifies");
    assert_eq!(
        (empty.records, empty.segments.len(), empty.calls.len()),
        (0, 0, 0)
    );
    assert!(empty.is_complete());

    let missing = dir.path().join("nope");
    assert_eq!(
        verify(&missing),
        Err(VerifyError::NotFound {
            dir: missing.clone()
        })
    );
    assert!(verify(&missing)
        .expect_err("missing")
        .to_string()
        .contains("does not exist"));

    let file = dir.path().join("file.txt");
    fs::write(&file, "hello\n").expect("written");
    assert_eq!(
        verify(&file),
        Err(VerifyError::NotADirectory { path: file.clone() })
    );

    // Unrelated files (and near-miss names) are listed and left alone.
    fs::write(dir.path().join("audit-1.jsonl"), "not a segment").expect("written");
    fs::create_dir(dir.path().join("audit-000000000009.jsonl.d")).expect("created");
    segment(dir.path(), 3, &lines("a", 0..2));
    let report = verify(dir.path()).expect("verifies");
    assert_eq!(report.records, 2);
    let ignored: Vec<_> = report
        .ignored
        .iter()
        .map(|p| p.file_name().expect("named").to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        ignored,
        ["audit-000000000009.jsonl.d", "audit-1.jsonl", "file.txt"]
    );
}

/// Truncation takes the archive's lock: never under a running archiver.
#[test]
fn truncation_refuses_while_an_archiver_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("starts");
    let opts = VerifyOptions::new().truncate_torn(true);
    assert_eq!(
        verify_with(dir.path(), &opts),
        Err(VerifyError::Locked {
            dir: dir.path().to_path_buf()
        })
    );
    assert!(verify(dir.path()).is_ok(), "reading needs no lock");
    archiver.stop().expect("clean stop");
    assert!(verify_with(dir.path(), &opts).is_ok());
}
