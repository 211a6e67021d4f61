//! A voice-agent host under load: many live calls, agent threads appending
//! notes and audit events to random calls, a supervisor reading snapshots
//! throughout, calls ending and new ones starting. Every audit event is
//! written through to a JSON Lines archive as it is logged; each ended call
//! gets a closed record. At the end it verifies the archive: every ended
//! call's audit trail complete, no gap, no duplicate. A probe thread measures
//! how long a record waits between its hand-over and the durable watermark
//! passing it.
//!
//! ```sh
//! cargo run --release --example agent_host
//! cargo run --release --example agent_host -- --calls 10000 --agents 8
//! cargo run --release --example agent_host -- --help
//! ```
//!
//! With `--postgres URL` a shipper thread
//! ships the archive into PostgreSQL while the host runs; at the end the
//! run's trails are verified in the database too, and the report gains a
//! `postgres` line (rows shipped, rows/s, lag, gaps, duplicates):
//!
//! ```sh
//! scripts/with-postgres bash -c 'cargo run --release --example agent_host -- \
//!     --seconds 5 --postgres "$CALLRING_PG_URL"'
//! ```
//!
//! Call names are `<host id>/<run>/call-<slot>-<generation>` (the run is the
//! start time in unix seconds), so hosts and runs never collide in a fleet
//! archive.
//!
//! With `--archive-notes` every call also archives its notes (each note as
//! it leaves the call's ring, evicted or drained at the end) into the same
//! archive, and the report gains a `notes archived` line: every note of
//! every ended call found in the archive exactly once.
//!
//! Exit status: 0 when the archive verifies, 1 when it does not, 2 for bad
//! options or an unusable archive directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use callring::archive::{self, ArchiveConfig, ArchiveLine, Archiver};
use callring::call::{AuditEventType, CallSummary, Details, Limits};
use callring::host::{CallRegistry, EndedCall};
use clap::Parser;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

/// Simulate a voice-agent host on callring and verify its audit archive.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Options {
    /// Live calls at any moment.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    calls: u64,
    /// Agent threads appending notes and events.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    agents: u64,
    /// How long the host runs, in seconds, before ending every call.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    seconds: u64,
    /// Appends (notes + events) after which a call ends and a new one starts.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    call_length: u64,
    /// Audit events per 100 appends (the rest are notes).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=100))]
    event_percent: u64,
    /// Archive directory (created if missing; must be empty or an archive).
    /// Default: a new temporary directory, removed at the end.
    #[arg(long)]
    archive: Option<PathBuf>,
    /// Seed for the agents' choices.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print the final summary of this call as YAML (e.g. `call-0-0`).
    #[arg(long, value_name = "CALL")]
    summary: Option<String>,
    /// This host's fleet-unique id (1 to 128 of `A-Z a-z 0-9 . _ : -`):
    /// call names start with it, and it keys the rows in PostgreSQL.
    /// Default: the machine's host name.
    #[arg(long, value_name = "ID")]
    host_id: Option<String>,
    /// Ship the archive to the PostgreSQL database at URL while the host
    /// runs, then verify it there.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Archive every call's notes too (evicted and drained ones) into the
    /// same archive, and verify that each note is there exactly once.
    #[arg(long)]
    archive_notes: bool,
    /// Compress sealed segments in the background while the host runs
    /// (zstd), and the last one after it stops; report the ratio.
    #[arg(long)]
    compress: bool,
}

/// One slot of the host: the call currently in it is `call-{slot}-{generation}`.
struct Slot {
    generation: AtomicU64,
    appends: AtomicU64,
}

/// `<host id>/<run>/call-<slot>-<generation>`; `prefix` is `<host id>/<run>/`.
fn call_id(prefix: &str, slot: usize, generation: u64) -> String {
    format!("{prefix}call-{slot}-{generation}")
}

/// The machine's host name, as a valid host id (`host` if there is none).
fn default_host_id() -> String {
    let name = std::fs::read_to_string("/etc/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let id: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._:-".contains(*c))
        .take(128)
        .collect();
    if id.is_empty() {
        "host".to_owned()
    } else {
        id
    }
}

fn check_host_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid --host-id {id:?}: use 1 to 128 characters of A-Z a-z 0-9 . _ : -"
        ))
    }
}

/// Totals gathered from ended calls.
#[derive(Default)]
struct Totals {
    calls: u64,
    calls_with_events: u64,
    notes_appended: u64,
    notes_evicted: u64,
    events_appended: u64,
    events_written: u64,
    events_refused: u64,
    closed_records: u64,
    writer_waits: u64,
    reader_skips: u64,
    notes_refused: u64,
    /// Notes appended per ended call (with `--archive-notes`).
    notes_by_call: HashMap<String, u64>,
}

impl Totals {
    fn add(&mut self, ended: &EndedCall) {
        let s = &ended.summary;
        self.calls += 1;
        self.events_refused += ended.refused_audit.len() as u64;
        self.notes_refused += ended.refused_notes.len() as u64;
        if let callring::call::EndOutcome::Ended {
            closed_record: true,
            ..
        } = ended.outcome
        {
            self.closed_records += 1;
        }
        if s.metrics.audit.appended > 0 {
            self.calls_with_events += 1;
        }
        self.notes_appended += s.metrics.notes.appended;
        self.notes_by_call
            .insert(s.call_id.clone(), s.metrics.notes.appended);
        self.notes_evicted += s.metrics.notes.evicted;
        self.events_appended += s.metrics.audit.appended;
        self.events_written += s.metrics.audit_written;
        self.writer_waits += s.metrics.notes.writer_waits + s.metrics.audit.writer_waits;
        self.reader_skips += s.metrics.notes.reader_skips + s.metrics.audit.reader_skips;
    }
}

/// One call's archived notes while the archive is read: a bit per note seq.
#[derive(Default)]
struct NotesSeen {
    bits: Vec<u64>,
    once: u64,
    twice: u64,
    unknown: u64,
}

impl NotesSeen {
    /// Note `seq` of a call that appended `appended` notes.
    fn see(&mut self, seq: u64, appended: u64) {
        if seq >= appended {
            self.unknown += 1;
            return;
        }
        if self.bits.is_empty() {
            self.bits = vec![0; appended.div_ceil(64) as usize];
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.once += 1;
        } else {
            self.twice += 1;
        }
    }
}

fn main() -> ExitCode {
    let options = Options::parse();
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("agent_host: {message}");
            ExitCode::from(2)
        }
    }
}

/// Makes sure `dir` can hold an archive: creates it, writes and removes a probe.
fn prepare_archive_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create archive directory {}: {e}", dir.display()))?;
    let probe = dir.join(".agent_host_probe");
    std::fs::write(&probe, b"probe")
        .map_err(|e| format!("archive directory {} is not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

fn run(o: &Options) -> Result<bool, String> {
    let temp;
    let dir = match &o.archive {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
            temp.path().to_path_buf()
        }
    };
    prepare_archive_dir(&dir)?;
    let host_id = o.host_id.clone().unwrap_or_else(default_host_id);
    check_host_id(&host_id)?;
    #[cfg(not(feature = "postgres"))]
    if o.postgres.is_some() {
        return Err("--postgres needs the library's postgres feature, \
                    which this build does not have (it is off under --cfg loom)"
            .to_owned());
    }
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let prefix = format!("{host_id}/{run_id}/");
    let prefix: &str = &prefix;
    let archiver = Arc::new(
        Archiver::start(&dir, ArchiveConfig::default().compress(o.compress))
            .map_err(|e| format!("cannot start the archive in {}: {e}", dir.display()))?,
    );
    #[cfg(feature = "postgres")]
    let shipper = match &o.postgres {
        None => None,
        Some(url) => Some(
            archive::Shipper::start(
                &archiver,
                url,
                archive::ShipperConfig::new(&host_id).stop_timeout(Duration::from_secs(3600)),
            )
            .map_err(|e| format!("cannot start shipping to PostgreSQL: {e}"))?,
        ),
    };
    #[cfg(feature = "postgres")]
    let mut max_ship_lag = (0u64, Duration::ZERO);
    let registry = {
        let audit = Arc::clone(&archiver);
        let builder = CallRegistry::builder()
            .limits(|_script| Ok(Limits::default()))
            .audit_archive(move |id| audit.sink(id));
        if o.archive_notes {
            let notes = Arc::clone(&archiver);
            builder.notes_sink(move |id| notes.sink(id)).build()
        } else {
            builder.build()
        }
    };

    let slots: Vec<Slot> = (0..o.calls)
        .map(|_| Slot {
            generation: AtomicU64::new(0),
            appends: AtomicU64::new(0),
        })
        .collect();
    for (i, _) in slots.iter().enumerate() {
        registry
            .start(&call_id(prefix, i, 0), "default")
            .map_err(|e| e.to_string())?;
    }

    let totals = Mutex::new(Totals::default());
    let wanted_summary: Mutex<Option<CallSummary>> = Mutex::new(None);
    let record = |ended: EndedCall| {
        totals.lock().expect("not poisoned").add(&ended);
        let wanted = o.summary.as_deref().is_some_and(|name| {
            let id = ended.summary.call_id.as_str();
            id == name || id.strip_prefix(prefix) == Some(name)
        });
        if wanted {
            *wanted_summary.lock().expect("not poisoned") = Some(ended.summary);
        }
    };
    let appends = AtomicU64::new(0);
    let raced = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let deadline = Duration::from_secs(o.seconds);
    let started = Instant::now();

    let bar = ProgressBar::new(o.seconds);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len}s {msg}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );

    let (snapshots, snapshot_hist, durable_lag, max_lag_records) = thread::scope(|s| {
        for agent in 0..o.agents {
            let (registry, slots, appends, raced, stop, record) =
                (&registry, &slots, &appends, &raced, &stop, &record);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(o.seed.wrapping_add(agent));
                let mut local = 0u64;
                let mut text = String::with_capacity(128);
                while !stop.load(Ordering::Relaxed) {
                    let i = rng.usize(0..slots.len());
                    let slot = &slots[i];
                    let generation = slot.generation.load(Ordering::Acquire);
                    let id = call_id(prefix, i, generation);
                    let Some(call) = registry.get(&id) else {
                        raced.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let ok = if rng.u64(0..100) < o.event_percent {
                        let mut details = Details::new();
                        details.insert("agent".into(), agent.into());
                        details.insert("tool".into(), "crm.lookup".into());
                        call.log_event(&AuditEventType::ToolInvoked, Some("tools"), &details)
                            .is_ok()
                    } else {
                        use std::fmt::Write;
                        text.clear();
                        let _ = write!(
                            text,
                            "agent {agent}: caller confirmed detail {} of the payment plan",
                            rng.u32(0..100_000)
                        );
                        call.append_note(&text).is_ok()
                    };
                    if !ok {
                        raced.fetch_add(1, Ordering::Relaxed); // ended meanwhile
                        continue;
                    }
                    local += 1;
                    if local.is_multiple_of(1024) {
                        appends.fetch_add(1024, Ordering::Relaxed);
                    }
                    // The append that completes the call ends it and starts the next.
                    if slot.appends.fetch_add(1, Ordering::AcqRel) + 1 == o.call_length {
                        if let Ok(summary) = registry.end(&id) {
                            record(summary);
                        }
                        slot.appends.store(0, Ordering::Release);
                        let next = generation + 1;
                        if registry.start(&call_id(prefix, i, next), "default").is_ok() {
                            slot.generation.store(next, Ordering::Release);
                        }
                    }
                }
                appends.fetch_add(local % 1024, Ordering::Relaxed);
            });
        }
        // The supervisor: snapshots of random live calls, timed.
        let supervisor = s.spawn(|| {
            let mut rng = fastrand::Rng::with_seed(o.seed ^ 0x5eed);
            let mut hist = Histogram::<u64>::new(3).expect("valid precision");
            let mut count = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let i = rng.usize(0..slots.len());
                let id = call_id(prefix, i, slots[i].generation.load(Ordering::Acquire));
                let Some(call) = registry.get(&id) else {
                    continue;
                };
                let t = Instant::now();
                let notes = call.all_notes();
                let summary = call.summarize();
                let _ = hist.record(t.elapsed().as_nanos() as u64);
                std::hint::black_box((notes, summary));
                count += 1;
            }
            (count, hist)
        });
        // The durability probe: how long the newest record handed over waits
        // until the durable watermark passes it, and how many records the
        // watermark trails by.
        let probe = s.spawn(|| {
            let mut hist = Histogram::<u64>::new(3).expect("valid precision");
            let mut max_lag = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tip = archiver.durability();
                max_lag = max_lag.max(tip.lag());
                if tip.lag() == 0 {
                    thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let t = Instant::now();
                while archiver.durability().durable < tip.handed_over
                    && !stop.load(Ordering::Relaxed)
                {
                    thread::sleep(Duration::from_micros(500));
                }
                let _ = hist.record(t.elapsed().as_micros() as u64);
                thread::sleep(Duration::from_millis(5));
            }
            (hist, max_lag)
        });
        while started.elapsed() < deadline {
            thread::sleep(Duration::from_millis(200));
            bar.set_position(started.elapsed().as_secs().min(o.seconds));
            bar.set_message(format!(
                "{:.1} M appends",
                appends.load(Ordering::Relaxed) as f64 / 1e6
            ));
            #[cfg(feature = "postgres")]
            if let Some(shipper) = &shipper {
                let status = shipper.status();
                max_ship_lag.0 = max_ship_lag.0.max(status.lag_records);
                max_ship_lag.1 = max_ship_lag.1.max(status.lag);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let (count, hist) = supervisor.join().expect("supervisor");
        let (lag, max_lag) = probe.join().expect("probe");
        (count, hist, lag, max_lag)
    });
    let run_time = started.elapsed();
    #[cfg(feature = "postgres")]
    let ship_at_end = shipper.as_ref().map(|s| (s.status(), Instant::now()));
    bar.finish_and_clear();

    // End every call still live: drained to the archive.
    for id in registry.live() {
        if let Ok(summary) = registry.end(&id) {
            record(summary);
        }
    }
    drop(registry); // releases its handle on the archiver
    let archiver = Arc::try_unwrap(archiver)
        .map_err(|_| "the archiver is still shared after every call ended".to_owned())?;
    let archive_stats = archiver
        .stop()
        .map_err(|e| format!("archive failed to stop cleanly: {e}"))?;
    // The segment written last is sealed by the stop: compress it too.
    let after_stop = if o.compress {
        Some(
            archive::compress_archive(&dir, archive::DEFAULT_COMPRESSION_LEVEL)
                .map_err(|e| format!("cannot compress the archive's last segment: {e}"))?,
        )
    } else {
        None
    };
    let totals = totals.into_inner().expect("not poisoned");
    // One pass: the verifier's report, and each archived note checked
    // against the notes its call appended.
    let mut notes_seen: HashMap<String, NotesSeen> = HashMap::new();
    let mut notes_of_unknown_calls = 0u64;
    let report = archive::read_archive_lines(&dir, |line| {
        if let ArchiveLine::Note(note) = line {
            match totals.notes_by_call.get(&note.call_id) {
                Some(&appended) => notes_seen
                    .entry(note.call_id)
                    .or_default()
                    .see(note.seq, appended),
                None => notes_of_unknown_calls += 1,
            }
        }
    })
    .map_err(|e| format!("cannot verify the archive: {e}"))?;
    #[cfg(feature = "postgres")]
    let shipped = match (shipper, &o.postgres, ship_at_end) {
        (Some(shipper), Some(url), Some(at_end)) => Some(finish_shipping(
            shipper,
            url,
            &host_id,
            prefix,
            &report,
            at_end,
            max_ship_lag,
        )?),
        _ => None,
    };

    let appended = totals.notes_appended + totals.events_appended;
    let secs = run_time.as_secs_f64();
    let pct = |q: f64| Duration::from_nanos(snapshot_hist.value_at_quantile(q));
    println!(
        "callring agent host: {} s, {} agent threads, {} live calls",
        o.seconds, o.agents, o.calls
    );
    println!(
        "  machine            {} cores{}",
        thread::available_parallelism().map_or(1, |n| n.get()),
        if o.agents + 1 > thread::available_parallelism().map_or(1, |n| n.get() as u64) {
            " (agent + supervisor threads outnumber cores)"
        } else {
            ""
        }
    );
    println!("  calls ended        {}", totals.calls);
    println!(
        "  appends            {appended} ({:.2} M/s): {} notes, {} audit events",
        appended as f64 / secs / 1e6,
        totals.notes_appended,
        totals.events_appended
    );
    println!(
        "  appends raced end  {} (call ended between lookup and append; refused, not lost)",
        raced.load(Ordering::Relaxed)
    );
    println!(
        "  notes evicted      {} ({})",
        totals.notes_evicted,
        if o.archive_notes {
            "archived as they left the ring"
        } else {
            "no notes sink: dropped by design; --archive-notes keeps them"
        }
    );
    let lag = |q: f64| Duration::from_micros(durable_lag.value_at_quantile(q));
    println!(
        "  events archived    {} written through as logged, {} refused, {} closed records",
        totals.events_written, totals.events_refused, totals.closed_records
    );
    println!(
        "  durable watermark  a record handed over is durable within p50 {:?}, p99 {:?}, max {:?} \
         ({} probes); the watermark trailed by at most {max_lag_records} records",
        lag(0.5),
        lag(0.99),
        Duration::from_micros(durable_lag.max()),
        durable_lag.len()
    );
    println!(
        "  snapshots          {snapshots} (all notes + summary of a live call): p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        pct(0.5),
        pct(0.99),
        pct(0.999),
        Duration::from_nanos(snapshot_hist.max())
    );
    println!(
        "  writer waits       {} (slot), {} (archive back-pressure); reader skips {}",
        totals.writer_waits, archive_stats.sink_waits, totals.reader_skips
    );
    println!(
        "  archive            {} records in {} segments, {} fsyncs, {} I/O errors, {} MB in {}",
        archive_stats.synced,
        archive_stats.segments,
        archive_stats.fsyncs,
        archive_stats.errors,
        archive_stats.bytes / 1_000_000,
        dir.display()
    );
    if let Some(last) = after_stop {
        let on_disk: u64 = std::fs::read_dir(&dir)
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("audit-"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        let s = &archive_stats;
        println!(
            "  compression        {} segments by the sealer while running ({} MB -> {} MB, {:.2} s of its thread), {} after the stop ({:.2} s); {} MB plain -> {} MB on disk ({:.1}x)",
            s.compressed_segments,
            s.compressed_plain_bytes / 1_000_000,
            s.compressed_bytes / 1_000_000,
            s.compress_micros as f64 / 1e6,
            last.segments,
            last.elapsed.as_secs_f64(),
            s.bytes / 1_000_000,
            on_disk / 1_000_000,
            s.bytes as f64 / on_disk.max(1) as f64
        );
    }
    if let Some(peak) = peak_memory() {
        println!("  peak memory        {peak}");
    }
    let gaps: usize = report.calls.values().map(|c| c.gaps.len()).sum();
    let duplicates: usize = report.calls.values().map(|c| c.duplicates.len()).sum();
    // Every ended call is in the archive with its closed record, complete,
    // and the archive holds exactly the events appended.
    let verified = report.is_complete()
        && report.complete == totals.calls
        && report.events == totals.events_appended
        && totals.events_written == totals.events_appended
        && report.torn_tail.is_none();
    println!(
        "  verification       {} calls complete, {} open, {gaps} gaps, {duplicates} duplicates, {} events ({})",
        report.complete,
        report.open,
        report.events,
        if verified { "verified" } else { "FAILED" }
    );
    let notes_verified = if o.archive_notes {
        let once: u64 = notes_seen.values().map(|n| n.once).sum();
        let twice: u64 = notes_seen.values().map(|n| n.twice).sum();
        let unknown: u64 =
            notes_seen.values().map(|n| n.unknown).sum::<u64>() + notes_of_unknown_calls;
        let counted: u64 = report.calls.values().map(|c| c.notes).sum();
        let ok = once == totals.notes_appended
            && twice == 0
            && unknown == 0
            && counted == once
            && archive_stats.notes == once
            && totals.notes_refused == 0;
        println!(
            "  notes archived     {} of {} appended, each once ({twice} twice, {unknown} unknown, \
             {} refused; verifier counted {counted}) ({})",
            once,
            totals.notes_appended,
            totals.notes_refused,
            if ok { "verified" } else { "FAILED" }
        );
        ok
    } else {
        true
    };
    let verified = verified && notes_verified;
    #[cfg(feature = "postgres")]
    let verified = match shipped {
        Some(shipped) => {
            println!("{}", shipped.line);
            verified && shipped.verified
        }
        None => verified,
    };
    if let Some(id) = &o.summary {
        match wanted_summary.into_inner().expect("not poisoned") {
            Some(summary) => println!(
                "\n{}",
                summary
                    .to_yaml()
                    .map_err(|e| format!("summary of {id}: {e}"))?
            ),
            None => println!("\nno call {id} ended during the run"),
        }
    }
    Ok(verified)
}

/// What shipping to PostgreSQL did: the report line and its verdict.
#[cfg(feature = "postgres")]
struct Shipped {
    line: String,
    verified: bool,
}

/// Ships what is left (the archiver has stopped), verifies this run's calls
/// in the database against the local archive, and words the report line.
#[cfg(feature = "postgres")]
fn finish_shipping(
    shipper: archive::Shipper,
    url: &str,
    host_id: &str,
    prefix: &str,
    local: &archive::VerifyReport,
    (at_end, run_end): (archive::ShipperStatus, Instant),
    max_lag: (u64, Duration),
) -> Result<Shipped, String> {
    let stats = shipper
        .stop()
        .map_err(|e| format!("shipping to PostgreSQL failed: {e}"))?;
    // From the end of the run (the local archive's stop and verify share the
    // machine with the shipper meanwhile).
    let drained = run_end.elapsed();
    let sql = archive::verify_postgres(url, host_id)
        .map_err(|e| format!("cannot verify the trails in PostgreSQL: {e}"))?;
    // This run's calls only: the database may hold the host's earlier runs.
    let ours = |r: &archive::VerifyReport| -> Vec<(String, archive::CallReport)> {
        r.calls
            .iter()
            .filter(|(id, _)| id.starts_with(prefix))
            .map(|(id, c)| {
                let mut c = c.clone();
                c.notes = 0; // audit only is shipped
                (id.clone(), c)
            })
            .collect()
    };
    let (local_calls, sql_calls) = (ours(local), ours(&sql));
    let records = |calls: &[(String, archive::CallReport)]| -> u64 {
        calls.iter().map(|(_, c)| c.events + c.closed_records).sum()
    };
    let final_lag = records(&local_calls).saturating_sub(records(&sql_calls));
    let gaps: usize = sql_calls.iter().map(|(_, c)| c.gaps.len()).sum();
    let duplicates: usize = sql_calls.iter().map(|(_, c)| c.duplicates.len()).sum();
    let complete = sql_calls.iter().filter(|(_, c)| c.is_complete()).count();
    let verified = local_calls == sql_calls && final_lag == 0 && stats.duplicates == 0;
    let after_run = stats.records.saturating_sub(at_end.stats.records);
    let shipping_time = drained.as_secs_f64().max(1e-9);
    let line = format!(
        "  postgres           {} rows shipped as host {host_id} ({:.0} rows/s draining the backlog after the run, \
         {after_run} rows in {:.1} s), final lag {final_lag} records; lag at end of run {} records / {:.1} s \
         (max {} / {:.1} s); in SQL {complete} calls complete, {gaps} gaps, {duplicates} duplicates ({})",
        stats.events_inserted + stats.closed_inserted,
        after_run as f64 / shipping_time,
        drained.as_secs_f64(),
        at_end.lag_records,
        at_end.lag.as_secs_f64(),
        max_lag.0,
        max_lag.1.as_secs_f64(),
        if verified { "verified" } else { "FAILED" }
    );
    Ok(Shipped { line, verified })
}

/// Peak resident memory, from /proc (Linux).
fn peak_memory() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.trim_start_matches("VmHWM:").trim().to_owned())
}
