//! The comparison report: every contender of every workload, run alternately
//! in one process (A B C .., then B C .. A, ..) for several rounds, so that
//! machine noise hits all of them alike. For each workload it prints the
//! median per contender and the median over rounds of the ratio to the
//! baseline "b" (`std::sync::Mutex<VecDeque<String>>`) measured in the same
//! round. Smaller ratios are better for callring.
//!
//! The read workloads include polling readers (`join_poll`, `all_notes_poll`:
//! 10 appends, then a read by a reader that keeps its state between polls).
//!
//! `cargo bench --bench compare` (about a minute). `ROUNDS=n` overrides the
//! number of rounds (default 9, at least 5).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::Instant;

use hdrhistogram::Histogram;

mod common;
use common::{
    full, full_call, timed_pushes, timed_pushes_of, Call, CallNotes, Callring, CallringCopy, Notes,
    ParkingLot, Queue, SeedCall, SeedVec, StdMutex, N, NOTE, NOTE150, POLL_EVERY,
};

// ------------------------------------------------------- counting allocator

/// Counts allocations and live bytes while `COUNTING` is set (only during the
/// memory workload, so it costs the timed workloads one relaxed load).
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to `System`; the counters are plain
// atomics. (The library forbids unsafe; this is the bench binary.)
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            LIVE.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        }
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            LIVE.fetch_add(new_size as u64, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ------------------------------------------------------------- statistics

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One contender's measurements in one workload, one value per round.
struct Series {
    name: &'static str,
    values: Vec<f64>,
    /// Extra columns (latency workload), medians over rounds.
    extra: Vec<Vec<f64>>,
}

struct Workload {
    key: &'static str,
    title: String,
    unit: &'static str,
    threads: usize,
    series: Vec<Series>,
    extra_names: &'static [&'static str],
}

impl Workload {
    fn new(key: &'static str, title: String, unit: &'static str, threads: usize) -> Self {
        Self {
            key,
            title,
            unit,
            threads,
            series: Vec::new(),
            extra_names: &[],
        }
    }

    fn record(&mut self, name: &'static str, value: f64, extra: Vec<f64>) {
        match self.series.iter_mut().find(|s| s.name == name) {
            Some(s) => {
                s.values.push(value);
                s.extra.push(extra);
            }
            None => self.series.push(Series {
                name,
                values: vec![value],
                extra: vec![extra],
            }),
        }
    }

    /// Median over rounds of (contender / baseline) in the same round.
    fn ratio(&self, name: &str) -> f64 {
        let (Some(s), Some(b)) = (
            self.series.iter().find(|s| s.name == name),
            self.series.iter().find(|s| s.name == StdMutex::NAME),
        ) else {
            return f64::NAN;
        };
        let ratios: Vec<f64> = s.values.iter().zip(&b.values).map(|(x, y)| x / y).collect();
        median(&ratios)
    }

    fn print(&self, cores: usize) {
        let over = if self.threads > cores {
            format!(
                "  ({} threads on {cores} cores: oversubscribed)",
                self.threads
            )
        } else {
            String::new()
        };
        println!("\n{} [{}]{over}", self.title, self.unit);
        let mut header = format!("  {:<12} {:>12} {:>10}", "contender", "median", "ratio/b");
        for name in self.extra_names {
            header.push_str(&format!(" {name:>12}"));
        }
        println!("{header}");
        for s in &self.series {
            let mut line = format!(
                "  {:<12} {:>12.1} {:>10.3}",
                s.name,
                median(&s.values),
                self.ratio(s.name)
            );
            for i in 0..self.extra_names.len() {
                let col: Vec<f64> = s.extra.iter().map(|e| e[i]).collect();
                line.push_str(&format!(" {:>12.0}", median(&col)));
            }
            println!("{line}");
        }
    }
}

// -------------------------------------------------------------- workloads

/// ns per push, `threads` writers, steady state.
fn push<C: Notes>(threads: usize, pushes: u64) -> f64 {
    let store: C = full();
    timed_pushes(&store, threads, pushes).as_nanos() as f64 / pushes as f64
}

/// ns per push of a 150-byte note, one writer, steady state (full of them),
/// with `idle` more threads alive in the process, parked throughout: what a
/// push costs must not grow with the threads an agent host runs.
fn push150<C: Notes>(idle: usize, pushes: u64) -> f64 {
    assert_eq!(NOTE150.len(), 150);
    let store = C::new();
    for _ in 0..2 * N {
        store.push(NOTE150);
    }
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let parked: Vec<_> = (0..idle)
            .map(|_| {
                s.spawn(|| {
                    while !stop.load(Ordering::Acquire) {
                        thread::park();
                    }
                })
            })
            .collect();
        let ns = timed_pushes_of(&store, 1, pushes, NOTE150).as_nanos() as f64 / pushes as f64;
        stop.store(true, Ordering::Release);
        for t in &parked {
            t.thread().unpark();
        }
        ns
    })
}

/// ns per read of a full store.
fn read<C: Notes>(reps: u32, f: impl Fn(&C) -> usize) -> f64 {
    let store: C = full();
    let start = Instant::now();
    let mut total = 0;
    for _ in 0..reps {
        total += f(std::hint::black_box(&store));
    }
    assert!(total > 0);
    start.elapsed().as_nanos() as f64 / f64::from(reps)
}

/// ns per poll of a reader that keeps its state (cursor, cached text): push
/// `POLL_EVERY` notes, then join all notes, `polls` times.
fn join_poll<C: Notes>(polls: u32) -> f64 {
    let store: C = full();
    let start = Instant::now();
    let total = store.join_poll(polls).expect("readable contender");
    let ns = start.elapsed().as_nanos() as f64 / f64::from(polls);
    assert!(total > 0);
    ns
}

/// ns per poll at call level: append `POLL_EVERY` notes, then `all_notes`.
fn all_notes_poll<C: CallNotes>(polls: u32) -> f64 {
    let store: C = full_call();
    let start = Instant::now();
    let total = store.all_notes_poll(polls);
    let ns = start.elapsed().as_nanos() as f64 / f64::from(polls);
    assert!(total > 0);
    ns
}

/// Two writers push `per_writer` notes each, timing every push, while a third
/// thread joins all notes in a loop. Returns p99.9 and the extra columns:
/// p50, p99, p99.9, max (ns), joins/s, appends/s.
fn under_reader<C: Notes>(per_writer: u64) -> (f64, Vec<f64>) {
    let store: C = full();
    let done = AtomicBool::new(false);
    let barrier = Barrier::new(3);
    let (hist, joins, elapsed) = thread::scope(|s| {
        let reader = s.spawn(|| {
            barrier.wait();
            let mut joins = 0u64;
            while !done.load(Ordering::Relaxed) {
                let joined = store.join().expect("readable contender");
                std::hint::black_box(joined);
                joins += 1;
            }
            joins
        });
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let (store, barrier) = (&store, &barrier);
                s.spawn(move || {
                    let mut h = Histogram::<u64>::new(3).expect("valid precision");
                    barrier.wait();
                    for _ in 0..per_writer {
                        let t = Instant::now();
                        store.push(std::hint::black_box(NOTE));
                        let _ = h.record(t.elapsed().as_nanos() as u64);
                    }
                    h
                })
            })
            .collect();
        let start = Instant::now();
        let mut hist = Histogram::<u64>::new(3).expect("valid precision");
        for w in writers {
            hist.add(w.join().expect("writer")).expect("same precision");
        }
        let elapsed = start.elapsed();
        done.store(true, Ordering::Relaxed);
        (hist, reader.join().expect("reader"), elapsed)
    });
    let secs = elapsed.as_secs_f64();
    let p999 = hist.value_at_quantile(0.999) as f64;
    let extra = vec![
        hist.value_at_quantile(0.5) as f64,
        hist.value_at_quantile(0.99) as f64,
        p999,
        hist.max() as f64,
        joins as f64 / secs,
        (2 * per_writer) as f64 / secs,
    ];
    (p999, extra)
}

/// ns per `append_note`, one thread, steady state.
fn append<C: CallNotes>(appends: u32) -> f64 {
    let store: C = full_call();
    let start = Instant::now();
    for _ in 0..appends {
        store.append_note(std::hint::black_box(NOTE));
    }
    start.elapsed().as_nanos() as f64 / f64::from(appends)
}

/// ns per `all_notes` of 1000 notes.
fn render<C: CallNotes>(reps: u32) -> f64 {
    let store: C = full_call();
    let start = Instant::now();
    let mut total = 0;
    for _ in 0..reps {
        total += store.all_notes().len();
    }
    assert!(total > 0);
    start.elapsed().as_nanos() as f64 / f64::from(reps)
}

/// Live heap bytes per retained note at steady state, and allocations per
/// push, measured with the counting allocator (deterministic: one run).
fn memory<C: Notes>() -> (f64, f64) {
    COUNTING.store(true, Ordering::SeqCst);
    let live0 = LIVE.load(Ordering::SeqCst);
    let store: C = full();
    let bytes = (LIVE.load(Ordering::SeqCst) - live0) as f64 / N as f64;
    let allocs0 = ALLOCS.load(Ordering::SeqCst);
    for _ in 0..10_000 {
        store.push(NOTE);
    }
    let allocs = (ALLOCS.load(Ordering::SeqCst) - allocs0) as f64 / 10_000.0;
    drop(store);
    COUNTING.store(false, Ordering::SeqCst);
    (bytes, allocs)
}

// ------------------------------------------------------------------- main

/// Runs `jobs` in a rotated order each round, so no contender always goes
/// first (warm caches, turbo) or last.
fn rotated<T>(jobs: &mut [T], round: usize, mut run: impl FnMut(&mut T)) {
    let n = jobs.len();
    for i in 0..n {
        run(&mut jobs[(i + round) % n]);
    }
}

type Job = (&'static str, fn() -> (f64, Vec<f64>));

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass other
    // flags. Either way this binary only ever runs the report.
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(9)
        .max(5);
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let started = Instant::now();
    println!("callring comparison report");
    println!(
        "machine: {cores} cores, {}; {rounds} rounds, contenders alternated in each",
        cpu_model()
    );
    println!("b = std::sync::Mutex<VecDeque<String>>; every store keeps the last {N} notes of 82 bytes, full before timing");

    const PUSHES: u64 = 400_000;
    macro_rules! push_jobs {
        ($threads:expr) => {
            vec![
                (
                    Callring::NAME,
                    (|| (push::<Callring>($threads, PUSHES), vec![])) as fn() -> _,
                ),
                (StdMutex::NAME, || {
                    (push::<StdMutex>($threads, PUSHES), vec![])
                }),
                (ParkingLot::NAME, || {
                    (push::<ParkingLot>($threads, PUSHES), vec![])
                }),
                (SeedVec::NAME, || {
                    (push::<SeedVec>($threads, PUSHES / 8), vec![])
                }),
                (Queue::NAME, || (push::<Queue>($threads, PUSHES), vec![])),
            ]
        };
    }
    let mut workloads: Vec<(Workload, Vec<Job>)> = vec![
        (
            Workload::new("push1", "push, 1 writer".into(), "ns/push", 1),
            push_jobs!(1),
        ),
        (
            Workload::new("push2", "push, 2 writers".into(), "ns/push", 2),
            push_jobs!(2),
        ),
        (
            Workload::new("push4", "push, 4 writers".into(), "ns/push", 4),
            push_jobs!(4),
        ),
        (
            Workload::new(
                "push150",
                "push a 150-byte note, 1 writer".into(),
                "ns/push",
                1,
            ),
            vec![
                (Callring::NAME, || (push150::<Callring>(0, PUSHES), vec![])),
                (StdMutex::NAME, || (push150::<StdMutex>(0, PUSHES), vec![])),
            ],
        ),
        (
            Workload::new(
                "push150_t64",
                "push a 150-byte note, 1 writer, 63 more threads parked in the process".into(),
                "ns/push",
                1,
            ),
            vec![
                (Callring::NAME, || (push150::<Callring>(63, PUSHES), vec![])),
                (StdMutex::NAME, || (push150::<StdMutex>(63, PUSHES), vec![])),
            ],
        ),
        (
            Workload::new(
                "join",
                format!("join all {N} notes, 1 thread"),
                "ns/join",
                1,
            ),
            vec![
                (Callring::NAME, || {
                    (
                        read::<Callring>(300, |s| s.join().map_or(0, |j| j.len())),
                        vec![],
                    )
                }),
                (StdMutex::NAME, || {
                    (
                        read::<StdMutex>(300, |s| s.join().map_or(0, |j| j.len())),
                        vec![],
                    )
                }),
                (ParkingLot::NAME, || {
                    (
                        read::<ParkingLot>(300, |s| s.join().map_or(0, |j| j.len())),
                        vec![],
                    )
                }),
                (SeedVec::NAME, || {
                    (
                        read::<SeedVec>(300, |s| s.join().map_or(0, |j| j.len())),
                        vec![],
                    )
                }),
            ],
        ),
        (
            Workload::new(
                "join_poll",
                format!("join all {N} notes after every {POLL_EVERY} pushes, reader keeps its state"),
                "ns/poll",
                1,
            ),
            vec![
                (Callring::NAME, || (join_poll::<Callring>(300), vec![])),
                (CallringCopy::NAME, || {
                    (join_poll::<CallringCopy>(300), vec![])
                }),
                (StdMutex::NAME, || (join_poll::<StdMutex>(300), vec![])),
                (ParkingLot::NAME, || (join_poll::<ParkingLot>(300), vec![])),
            ],
        ),
        (
            Workload::new(
                "snapshot",
                format!("snapshot {N} notes to owned Strings, 1 thread"),
                "ns/snapshot",
                1,
            ),
            vec![
                (Callring::NAME, || {
                    (
                        read::<Callring>(200, |s| s.snapshot().map_or(0, |v| v.len())),
                        vec![],
                    )
                }),
                (StdMutex::NAME, || {
                    (
                        read::<StdMutex>(200, |s| s.snapshot().map_or(0, |v| v.len())),
                        vec![],
                    )
                }),
                (ParkingLot::NAME, || {
                    (
                        read::<ParkingLot>(200, |s| s.snapshot().map_or(0, |v| v.len())),
                        vec![],
                    )
                }),
                (SeedVec::NAME, || {
                    (
                        read::<SeedVec>(200, |s| s.snapshot().map_or(0, |v| v.len())),
                        vec![],
                    )
                }),
            ],
        ),
        (
            {
                let mut w = Workload::new(
                    "p999_under_reader",
                    "push latency, 2 writers while a 3rd thread joins all notes in a loop".into(),
                    "p99.9 ns",
                    3,
                );
                w.extra_names = &["p50", "p99", "p99.9", "max", "joins/s", "appends/s"];
                w
            },
            vec![
                (Callring::NAME, || under_reader::<Callring>(100_000)),
                (StdMutex::NAME, || under_reader::<StdMutex>(100_000)),
                (ParkingLot::NAME, || under_reader::<ParkingLot>(100_000)),
                (SeedVec::NAME, || under_reader::<SeedVec>(10_000)),
            ],
        ),
        (
            Workload::new(
                "append_note",
                "call level: append_note, 1 thread".into(),
                "ns/append",
                1,
            ),
            vec![
                (Call::NAME, || (append::<Call>(200_000), vec![])),
                (SeedCall::NAME, || (append::<SeedCall>(200_000), vec![])),
            ],
        ),
        (
            Workload::new(
                "all_notes",
                format!("call level: all_notes of {N} notes, 1 thread"),
                "ns/call",
                1,
            ),
            vec![
                (Call::NAME, || (render::<Call>(300), vec![])),
                (SeedCall::NAME, || (render::<SeedCall>(300), vec![])),
            ],
        ),
        (
            Workload::new(
                "all_notes_poll",
                format!(
                    "call level: all_notes of {N} notes after every {POLL_EVERY} appends, reader keeps its state"
                ),
                "ns/poll",
                1,
            ),
            vec![
                (Call::NAME, || (all_notes_poll::<Call>(300), vec![])),
                (SeedCall::NAME, || (all_notes_poll::<SeedCall>(300), vec![])),
            ],
        ),
    ];

    for round in 0..rounds {
        for (workload, jobs) in &mut workloads {
            rotated(jobs, round, |(name, job)| {
                let (value, extra) = job();
                workload.record(name, value, extra);
            });
        }
        eprint!(
            "round {}/{rounds} done ({:.0?})\r",
            round + 1,
            started.elapsed()
        );
    }
    eprintln!();
    for (workload, _) in &workloads {
        workload.print(cores);
    }

    println!("\nmemory at steady state (one run; the counting allocator is exact)");
    println!(
        "  {:<12} {:>16} {:>16}",
        "contender", "bytes/retained", "allocs/push"
    );
    let mem: Vec<(&str, (f64, f64))> = vec![
        (Callring::NAME, memory::<Callring>()),
        (StdMutex::NAME, memory::<StdMutex>()),
        (ParkingLot::NAME, memory::<ParkingLot>()),
        (SeedVec::NAME, memory::<SeedVec>()),
        (Queue::NAME, memory::<Queue>()),
    ];
    for (name, (bytes, allocs)) in &mem {
        println!("  {name:<12} {bytes:>16.1} {allocs:>16.2}");
    }

    let find = |key: &str| {
        workloads
            .iter()
            .find(|(w, _)| w.key == key)
            .map_or(f64::NAN, |(w, _)| w.ratio(Callring::NAME))
    };
    let under = workloads
        .iter()
        .find(|(w, _)| w.key == "p999_under_reader")
        .map(|(w, _)| w);
    if let Some(w) = under {
        let pl = w.ratio(ParkingLot::NAME);
        let cr = w.ratio(Callring::NAME);
        println!(
            "\np99.9 under reader: callring/b = {cr:.3}, parking_lot/b = {pl:.3} ({})",
            if cr <= pl {
                "callring no worse than parking_lot"
            } else {
                "parking_lot better"
            }
        );
    }
    println!("finished in {:.0?}", started.elapsed());
    let ns = |key: &str| {
        workloads
            .iter()
            .find(|(w, _)| w.key == key)
            .and_then(|(w, _)| w.series.iter().find(|s| s.name == Callring::NAME))
            .map_or(f64::NAN, |s| median(&s.values))
    };
    println!(
        "callring 150-byte push: {:.1} ns alone, {:.1} ns with 63 more threads ({:.2}x)",
        ns("push150"),
        ns("push150_t64"),
        ns("push150_t64") / ns("push150")
    );
    println!(
        "ratio-summary: push1={:.3} push2={:.3} p999_under_reader={:.3} join={:.3} \
         push150={:.3} push150_t64={:.3} snapshot={:.3} join_poll={:.3} all_notes_poll={:.3}",
        find("push1"),
        find("push2"),
        find("p999_under_reader"),
        find("join"),
        find("push150"),
        find("push150_t64"),
        find("snapshot"),
        find("join_poll"),
        find("all_notes_poll")
    );
}
