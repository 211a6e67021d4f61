//! Reading the archive back: a byte flipped inside a line is corrupt (by
//! its checksum) naming file and line, through `verify` and through
//! `ArchiveReader::records`; `ArchiveReader::call` on a million records
//! reads only its call's lines once the segments are indexed; `verify`
//! streams, so a gigabyte of segments verifies in a bounded memory (an
//! ignored test: it writes 1 GB).
#![cfg(all(not(loom), feature = "call"))]

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use callring::archive::{
    index_archive, segment_name, verify, verify_with, ArchiveConfig, ArchiveLine, ArchiveReader,
    Archiver, VerifyError, VerifyOptions,
};
use callring::call::{AuditEventType, CallState, Details};

/// Appends an event line of the current schema, checksum included, as the
/// archiver writes it (without going through serde: these tests write
/// millions of lines).
fn event_line(out: &mut Vec<u8>, call_id: &str, seq: u64) {
    let start = out.len();
    write!(
        out,
        "{{\"v\":3,\"call_id\":\"{call_id}\",\"seq\":{seq},\"at\":\"2025-11-25T09:30:00.000000000Z\",\
         \"type\":\"tool_invoked\",\"agent_id\":\"speech\",\"details\":{{\"n\":{seq},\
         \"tool\":\"lookup_account\"}},\"reason\":\"logged\""
    )
    .expect("a Vec takes writes");
    seal(out, start);
}

/// Appends a closed record of `call_id`.
fn closed_line(out: &mut Vec<u8>, call_id: &str, issued: u64) {
    let start = out.len();
    write!(
        out,
        "{{\"v\":3,\"call_id\":\"{call_id}\",\"record\":\"closed\",\"issued\":{issued},\
         \"at\":\"2025-11-25T09:31:00.000000000Z\""
    )
    .expect("a Vec takes writes");
    seal(out, start);
}

/// Ends the line begun at `start`: `,"crc":"<CRC32C of the bytes so
/// far>"}` and the newline.
fn seal(out: &mut Vec<u8>, start: usize) {
    let crc = crc32c::crc32c(&out[start..]);
    writeln!(out, ",\"crc\":\"{crc:08x}\"}}").expect("a Vec takes writes");
}

#[test]
fn generated_lines_are_valid_records() {
    let mut out = Vec::new();
    event_line(&mut out, "c", 7);
    closed_line(&mut out, "c", 8);
    let lines: Vec<_> = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| ArchiveLine::parse(l).expect("valid"))
        .collect();
    assert_eq!(lines.len(), 2);
}

/// A real archive, then one digit changed inside a line (the JSON still
/// parses): `verify` and the reader both name the segment and the line.
#[test]
fn a_flipped_digit_is_corrupt_and_named_by_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
    for id in ["call-a", "call-b"] {
        let call = CallState::builder(id)
            .audit_archive(archiver.sink(id))
            .build();
        for i in 0..5u64 {
            let mut details = Details::new();
            details.insert("amount".into(), (12_345 + i).into());
            call.log_event(&AuditEventType::ToolInvoked, Some("tools"), &details)
                .expect("logged");
        }
        let _ = call.end();
    }
    archiver.stop().expect("clean stop");
    let file = dir.path().join(segment_name(1));
    assert!(verify(dir.path()).expect("verifies").is_complete());

    // Line 3: the third event of call-a; its amount 12347 becomes 12447.
    let text = fs::read_to_string(&file).expect("read");
    let line_start: usize = text.split_inclusive('\n').take(2).map(str::len).sum();
    let at = line_start + text[line_start..].find("12347").expect("the amount") + 2;
    let mut bytes = text.into_bytes();
    bytes[at] = b'4';
    fs::write(&file, &bytes).expect("written");

    let corrupt = |result: Result<(), VerifyError>| match result {
        Err(VerifyError::Corrupt { file, line, reason }) => {
            assert!(reason.contains("checksum"), "{reason}");
            (file, line)
        }
        other => panic!("expected Corrupt, got {other:?}"),
    };
    assert_eq!(corrupt(verify(dir.path()).map(|_| ())), (file.clone(), 3));
    let message = verify(dir.path()).expect_err("corrupt").to_string();
    assert!(
        message.starts_with(&format!("{}:3: corrupt line", file.display())),
        "{message}"
    );

    let reader = ArchiveReader::open(dir.path()).expect("opens");
    let mut records = reader.records();
    for n in 1..=2 {
        let record = records.next().expect("a line").expect("whole");
        assert_eq!((&*record.file, record.line), (file.as_path(), n));
    }
    let err = records.next().expect("the corrupt line").map(|_| ());
    assert_eq!(corrupt(err), (file.clone(), 3));
    assert!(records.next().is_none(), "the iteration ends at an error");

    // Truncation never touches a corrupt archive.
    let opts = VerifyOptions::new().truncate_torn(true);
    assert_eq!(
        corrupt(verify_with(dir.path(), &opts).map(|_| ())),
        (file.clone(), 3)
    );
    assert_eq!(fs::read(&file).expect("read"), bytes);
}

/// A torn last line ends the reader's iteration quietly; it says where.
#[test]
fn the_reader_stops_at_a_torn_tail_and_says_where() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bytes = Vec::new();
    for seq in 0..3 {
        event_line(&mut bytes, "a", seq);
    }
    let whole = bytes.len();
    event_line(&mut bytes, "a", 3);
    bytes.truncate(whole + 40);
    fs::write(dir.path().join(segment_name(1)), &bytes).expect("written");

    let reader = ArchiveReader::open(dir.path()).expect("opens");
    let mut records = reader.records();
    let seqs: Vec<u64> = (&mut records)
        .map(|r| match r.expect("whole").record {
            ArchiveLine::Event(e) => e.seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, [0, 1, 2]);
    let torn = records.torn_tail().expect("torn tail");
    assert_eq!((torn.line, torn.offset, torn.bytes), (4, whole as u64, 40));
    assert_eq!(
        verify(dir.path()).expect("verifies").torn_tail.as_ref(),
        Some(torn)
    );
    assert_eq!(reader.bytes_read(), bytes.len() as u64);
}

/// `index_archive` leaves alone the segment a running archiver writes.
#[test]
fn indexing_skips_the_segment_a_running_archiver_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |id: &str| {
        let archiver = Archiver::start(dir.path(), ArchiveConfig::default()).expect("opens");
        let call = CallState::builder(id)
            .audit_archive(archiver.sink(id))
            .build();
        call.log_event(&AuditEventType::CallStarted, None, &Details::new())
            .expect("logged");
        let _ = call.end();
        archiver.flush().expect("durable");
        archiver
    };
    run("one").stop().expect("stops");
    run("two").stop().expect("stops");
    let running = run("three");
    // The running archiver's sealer has indexed (or is indexing) the
    // sealed segments 1 and 2; index_archive does what is left of that.
    let summary = index_archive(dir.path()).expect("indexes");
    assert_eq!(
        (summary.segments, summary.written + summary.current),
        (3, 2)
    );
    assert_eq!(summary.skipped, [dir.path().join(segment_name(3))]);
    assert!(summary.to_string().contains("skipped"), "{summary}");
    running.stop().expect("stops");
    let summary = index_archive(dir.path()).expect("indexes");
    assert_eq!((summary.written, summary.current), (1, 2));
    assert!(summary.skipped.is_empty());

    let reader = ArchiveReader::open(dir.path()).expect("opens");
    let trail = reader.call("two").expect("reads");
    assert_eq!((trail.indexed, trail.scanned), (3, 0));
    assert_eq!(trail.lines.len(), 2);
    assert!(reader.call("nobody").expect("reads").is_empty());
}

/// Records of many calls, `LIVE` of them at a time (their lines
/// interleave, seqs slightly out of order as several agents log), written
/// into segments of about `segment_bytes`. Returns the calls' ids in the
/// order they started and the archive's size in bytes.
fn write_archive(
    dir: &Path,
    records: u64,
    per_call: u64,
    segment_bytes: usize,
) -> (Vec<String>, u64) {
    const LIVE: usize = 50;
    let mut started: Vec<String> = Vec::new();
    // Per live slot: its call and the next seq to write.
    let mut live: Vec<(usize, u64)> = Vec::new();
    let mut segment = 1;
    let mut total = 0;
    let mut buf = Vec::with_capacity(segment_bytes + 4096);
    let mut rng = fastrand::Rng::with_seed(0x16);
    let mut written = 0;
    while written < records {
        while live.len() < LIVE {
            started.push(format!("call-{:06}", started.len()));
            live.push((started.len() - 1, 0));
        }
        let slot = rng.usize(0..live.len());
        let (call, next) = live[slot];
        let id = &started[call];
        if next + 1 == per_call {
            closed_line(&mut buf, id, per_call - 1);
            live.swap_remove(slot);
        } else if next + 2 < per_call && rng.u8(0..4) == 0 {
            // Two agents: the later seq lands first.
            event_line(&mut buf, id, next + 1);
            event_line(&mut buf, id, next);
            written += 1;
            live[slot].1 += 2;
        } else {
            event_line(&mut buf, id, next);
            live[slot].1 += 1;
        }
        written += 1;
        if buf.len() >= segment_bytes {
            fs::write(dir.join(segment_name(segment)), &buf).expect("segment written");
            total += buf.len() as u64;
            segment += 1;
            buf.clear();
        }
    }
    fs::write(dir.join(segment_name(segment)), &buf).expect("segment written");
    total += buf.len() as u64;
    (started, total)
}

/// A million records in several segments: once indexed, one call's trail
/// reads back exactly, in seq order, reading a small fraction of the
/// archive; without indexes the same trail needs every byte.
#[test]
fn one_call_of_a_million_records_reads_only_its_lines() {
    let records = 1_000_000;
    let per_call = 200; // 199 events and the closed record
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let (calls, total) = write_archive(dir.path(), records, per_call, 16 << 20);
    let written = started.elapsed();

    let started = Instant::now();
    let summary = index_archive(dir.path()).expect("indexes");
    let indexing = started.elapsed();
    assert!(summary.segments >= 5, "{summary}");
    assert_eq!(summary.written, summary.segments);

    let wanted = &calls[calls.len() / 2];
    let reader = ArchiveReader::open(dir.path()).expect("opens");
    let started = Instant::now();
    let trail = reader.call(wanted).expect("reads");
    let reading = started.elapsed();
    let seqs: Vec<u64> = trail.events().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..per_call - 1).collect::<Vec<_>>());
    assert!(trail.events().all(|e| e.call_id == *wanted));
    assert_eq!(trail.closed().map(|c| c.issued), Some(per_call - 1));
    assert!(matches!(trail.lines.last(), Some(ArchiveLine::Closed(_))));
    assert_eq!(trail.indexed, summary.segments);
    let read = reader.bytes_read();
    println!(
        "call({wanted}) of {records} records ({} calls, {} segments, {} MB): read {read} \
         bytes ({:.3}% of {total}) in {reading:.2?}; written in {written:.2?}, indexed in \
         {indexing:.2?}",
        calls.len(),
        summary.segments,
        total >> 20,
        read as f64 * 100.0 / total as f64,
    );
    assert!(read * 20 < total, "read {read} of {total} bytes");

    // Without the indexes: the same trail, from every byte.
    for entry in fs::read_dir(dir.path()).expect("listed") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "idx") {
            fs::remove_file(path).expect("removed");
        }
    }
    let unindexed = ArchiveReader::open(dir.path()).expect("opens");
    let again = unindexed.call(wanted).expect("reads");
    assert_eq!(again.lines, trail.lines);
    assert_eq!(unindexed.bytes_read(), total);
    assert_eq!(again.scanned, summary.segments);
}

const CHILD_DIR: &str = "CALLRING_VERIFY_1GB_DIR";

/// The child of `verify_1gb_stays_under_64mb_of_memory`: verifies the
/// archive in its directory and prints the report's totals, the time and
/// its peak resident memory.
#[test]
#[ignore = "run by verify_1gb_stays_under_64mb_of_memory"]
fn verify_1gb_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let started = Instant::now();
    let report = verify(&dir).expect("verifies");
    let elapsed = started.elapsed();
    assert!(report.is_complete(), "not complete");
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: 0 kB");
    println!(
        "CHILD records={} calls={} segments={} elapsed_ms={} {hwm}",
        report.records,
        report.calls.len(),
        report.segments.len(),
        elapsed.as_millis()
    );
}

/// About 1 GB of segments (5 million records, 25,000 calls): `verify`, in
/// a child process, keeps its peak resident memory under 64 MB.
///
/// `cargo test --release --test archive_reader -- --ignored verify_1gb`
#[test]
#[ignore = "writes 1 GB of segments; run in release with --ignored verify_1gb"]
fn verify_1gb_stays_under_64mb_of_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let total = write_big_archive(dir.path(), 1 << 30);
    let written = started.elapsed();
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args(["verify_1gb_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_DIR, dir.path())
        .output()
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("CHILD "))
        .expect("the child's figures");
    let hwm_kb: u64 = line
        .split("VmHWM:")
        .nth(1)
        .and_then(|s| s.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in kB");
    println!(
        "verify of {} MB (written in {written:.2?}): {line}",
        total >> 20
    );
    assert!(hwm_kb < 64 * 1024, "peak RSS {hwm_kb} kB");
}

/// Writes about `bytes` of segments (64 MB each) of 200-record calls, 50
/// live at a time, every call ended. Returns the bytes written.
fn write_big_archive(dir: &Path, bytes: u64) -> u64 {
    const SEGMENT: u64 = 64 << 20;
    const LIVE: u64 = 50;
    const PER_CALL: u64 = 200;
    let mut total = 0;
    let mut line = Vec::with_capacity(512);
    let mut segment = 1;
    let mut file = BufWriter::with_capacity(8 << 20, segment_file(dir, segment));
    let mut in_segment = 0;
    let mut generation = 0u64;
    while total < bytes {
        // `LIVE` calls interleaved, round robin, each to its closed record.
        for seq in 0..PER_CALL {
            for slot in 0..LIVE {
                line.clear();
                let id = format!("call-{generation}-{slot}");
                if seq + 1 == PER_CALL {
                    closed_line(&mut line, &id, PER_CALL - 1);
                } else {
                    event_line(&mut line, &id, seq);
                }
                file.write_all(&line).expect("written");
                in_segment += line.len() as u64;
                total += line.len() as u64;
                if in_segment >= SEGMENT {
                    file.flush().expect("flushed");
                    segment += 1;
                    file = BufWriter::with_capacity(8 << 20, segment_file(dir, segment));
                    in_segment = 0;
                }
            }
        }
        generation += 1;
    }
    file.flush().expect("flushed");
    total
}

fn segment_file(dir: &Path, index: u64) -> fs::File {
    fs::File::create(dir.join(segment_name(index))).expect("segment created")
}
