//! Running seeds: one seed (replay), or many across threads for a count or a duration, with
//! seeds per second and a summary. A failing seed is replayed with tracing on (the run is
//! deterministic, so it fails the same way) to print the last events before the failure.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::checks::Violation;
use crate::config::SimConfig;
use crate::world::{Stats, World};

#[derive(Debug, Clone)]
pub struct SeedResult {
    pub seed: u64,
    pub failure: Option<Violation>,
    pub stats: Stats,
    /// The last events before the end (only when run with tracing).
    pub trace: Vec<String>,
}

/// Runs one seed. A panic inside a core (a broken internal assertion) is a failure too.
pub fn run_seed(seed: u64, tracing: bool) -> SeedResult {
    let cfg = SimConfig::from_seed(seed);
    let mut world = World::new(cfg, tracing);
    let outcome = catch_unwind(AssertUnwindSafe(|| world.run()));
    let mut failure = world.failure.clone();
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        failure = Some(Violation::new("panic", message));
    }
    SeedResult {
        seed,
        failure,
        stats: world.stats.clone(),
        trace: world.trace_lines(),
    }
}

/// The command that replays `seed`, with the mutation features this binary was built with.
pub fn replay_command(seed: u64) -> String {
    let features = enabled_mutations();
    let features = if features.is_empty() {
        String::new()
    } else {
        format!(" --features {}", features.join(","))
    };
    format!("cargo run -p tandem-sim --release{features} -- --seed {seed}")
}

pub fn enabled_mutations() -> Vec<&'static str> {
    let mut m = Vec::new();
    if cfg!(feature = "mutation-truncate-to-hw") {
        m.push("mutation-truncate-to-hw");
    }
    if cfg!(feature = "mutation-early-isr-removal") {
        m.push("mutation-early-isr-removal");
    }
    if cfg!(feature = "mutation-skip-epoch-fencing") {
        m.push("mutation-skip-epoch-fencing");
    }
    if cfg!(feature = "mutation-ack-before-hw") {
        m.push("mutation-ack-before-hw");
    }
    if cfg!(feature = "mutation-rejoin-without-epoch-start") {
        m.push("mutation-rejoin-without-epoch-start");
    }
    if cfg!(feature = "mutation-cas-on-committed-only") {
        m.push("mutation-cas-on-committed-only");
    }
    if cfg!(feature = "mutation-follower-ignores-token") {
        m.push("mutation-follower-ignores-token");
    }
    if cfg!(feature = "mutation-linearizable-without-epoch-start") {
        m.push("mutation-linearizable-without-epoch-start");
    }
    if cfg!(feature = "mutation-table-ignores-truncation") {
        m.push("mutation-table-ignores-truncation");
    }
    if cfg!(feature = "mutation-ignore-truncated-token") {
        m.push("mutation-ignore-truncated-token");
    }
    m
}

/// The report of a failed seed: the check, the seed's fault mix, the replay command and the
/// trace of the last events.
pub fn failure_report(seed: u64) -> String {
    let result = run_seed(seed, true);
    let cfg = SimConfig::from_seed(seed);
    let mut out = String::new();
    match &result.failure {
        Some(v) => out.push_str(&format!("seed {seed} FAILED: {v}\n")),
        None => out.push_str(&format!(
            "seed {seed} passed when replayed with tracing: nondeterminism!\n"
        )),
    }
    out.push_str(&format!("config: {}\n", cfg.describe()));
    out.push_str(&format!("replay: {}\n", replay_command(seed)));
    out.push_str(&format!("last {} events:\n", result.trace.len()));
    for line in &result.trace {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("replay: {}\n", replay_command(seed)));
    out
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub seeds: u64,
    pub failures: Vec<(u64, Violation)>,
    pub events: u64,
    pub virtual_ms: i64,
    pub acked_all: u64,
    pub reads: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub offline_by_design: u64,
    /// Raft terms the controller quorum went through, and partition leader elections.
    pub raft_terms: u64,
    pub elections: u64,
    pub kv_ops: u64,
    pub kv_reads: u64,
    pub kv_scans: u64,
    pub kv_checked: u64,
    pub lincheck_unknown: u64,
    pub snapshots_loaded: u64,
    pub snapshots_discarded: u64,
    pub snapshots_damaged: u64,
    pub compactions: u64,
    pub records_compacted: u64,
    pub elapsed: Duration,
}

pub enum Limit {
    Seeds(u64),
    Duration(Duration),
}

/// Runs seeds `first..` on `jobs` threads until the limit, or the first failure unless
/// `keep_going`.
pub fn run_many(first: u64, limit: Limit, jobs: usize, keep_going: bool) -> Summary {
    let next = Arc::new(AtomicU64::new(first));
    let stop = Arc::new(AtomicBool::new(false));
    let summary = Arc::new(Mutex::new(Summary::default()));
    let start = Instant::now();
    let workers: Vec<_> = (0..jobs.max(1))
        .map(|_| {
            let (next, stop, summary) = (next.clone(), stop.clone(), summary.clone());
            let limit = match &limit {
                Limit::Seeds(n) => Limit::Seeds(*n),
                Limit::Duration(d) => Limit::Duration(*d),
            };
            std::thread::spawn(move || loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Limit::Duration(d) = limit {
                    if start.elapsed() >= d {
                        return;
                    }
                }
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if let Limit::Seeds(n) = limit {
                    if seed >= first + n {
                        return;
                    }
                }
                let r = run_seed(seed, false);
                let mut s = summary.lock().unwrap_or_else(|e| e.into_inner());
                s.seeds += 1;
                s.events += r.stats.events;
                s.virtual_ms += r.stats.virtual_ms;
                s.acked_all += r.stats.acked_all;
                s.reads += r.stats.reads;
                s.offline_by_design += u64::from(r.stats.offline_by_design);
                s.raft_terms += r.stats.raft_terms;
                s.elections += r.stats.elections;
                s.kv_ops += r.stats.kv_ops;
                s.kv_reads += r.stats.kv_reads;
                s.kv_scans += r.stats.kv_scans;
                s.kv_checked += r.stats.kv_checked;
                s.lincheck_unknown += u64::from(r.stats.lincheck_unknown);
                s.snapshots_loaded += r.stats.snapshots_loaded;
                s.snapshots_discarded += r.stats.snapshots_discarded;
                s.snapshots_damaged += r.stats.snapshots_damaged;
                s.compactions += r.stats.compactions;
                s.records_compacted += r.stats.records_compacted;
                for (k, v) in &r.stats.faults {
                    *s.faults.entry(k).or_default() += v;
                }
                if let Some(v) = r.failure {
                    s.failures.push((seed, v));
                    if !keep_going {
                        stop.store(true, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let mut s = summary.lock().unwrap_or_else(|e| e.into_inner()).clone();
    s.elapsed = start.elapsed();
    s.failures.sort_by_key(|f| f.0);
    s
}

pub fn format_summary(s: &Summary) -> String {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    let faults: Vec<String> = s.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!(
        "{} seeds in {:.1} s: {:.2} seeds/s, {:.0} events/s, {:.0}x virtual time; {} acks=all acknowledged, \
         {} reads; table: {} operations, {} reads answered ({} scans), {} checked for linearizability \
         ({} seeds without a verdict), {} snapshots restored, {} discarded ({} damaged), {} compactions removed {} records; controller: {} Raft terms, \
         {} partition elections; faults: {}; offline by design: {}; failures: {}",
        s.seeds,
        secs,
        s.seeds as f64 / secs,
        s.events as f64 / secs,
        s.virtual_ms as f64 / 1000.0 / secs,
        s.acked_all,
        s.reads,
        s.kv_ops,
        s.kv_reads,
        s.kv_scans,
        s.kv_checked,
        s.lincheck_unknown,
        s.snapshots_loaded,
        s.snapshots_discarded,
        s.snapshots_damaged,
        s.compactions,
        s.records_compacted,
        s.raft_terms,
        s.elections,
        faults.join(", "),
        s.offline_by_design,
        s.failures.len()
    )
}

const USAGE: &str =
    "usage: tandem-sim [--seeds N | --duration SECS] [--from SEED] [--jobs J] [--keep-going]
       tandem-sim --seed SEED [--trace]
Runs the deterministic simulation (docs/simulation.md). Exit status 1 when a seed fails.";

/// The command line: the `tandem-sim` binary's whole main, and what `tandem sim` calls.
/// Returns the process exit status.
pub fn run(args: impl IntoIterator<Item = String>) -> i32 {
    let args: Vec<String> = args.into_iter().collect();
    let mut seeds = None;
    let mut duration = None;
    let mut seed = None;
    let mut from = None;
    let mut jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut keep_going = false;
    let mut trace = false;
    let mut i = 0;
    while i < args.len() {
        let value = |i: usize| args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match args[i].as_str() {
            "--seeds" => seeds = value(i),
            "--duration" => duration = value(i),
            "--seed" => seed = value(i),
            "--from" => from = value(i),
            "--jobs" => jobs = value(i).map_or(jobs, |j| j as usize),
            "--keep-going" => {
                keep_going = true;
                i += 1;
                continue;
            }
            "--trace" => {
                trace = true;
                i += 1;
                continue;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                return 2;
            }
        }
        if args
            .get(i + 1)
            .and_then(|v| v.parse::<u64>().ok())
            .is_none()
        {
            eprintln!("{} needs a number\n{USAGE}", args[i]);
            return 2;
        }
        i += 2;
    }
    let mutations = enabled_mutations();
    if !mutations.is_empty() {
        println!("built with mutations: {}", mutations.join(", "));
    }
    if let Some(seed) = seed {
        let start = Instant::now();
        let r = run_seed(seed, trace);
        println!("config: {}", SimConfig::from_seed(seed).describe());
        if trace {
            for line in &r.trace {
                println!("  {line}");
            }
        }
        return match r.failure {
            None => {
                println!(
                    "seed {seed} passed: {} events, {} ms virtual, {} acks=all acknowledged, \
                     {} table operations ({} checked, verdict {}), {:.2} s",
                    r.stats.events,
                    r.stats.virtual_ms,
                    r.stats.acked_all,
                    r.stats.kv_ops,
                    r.stats.kv_checked,
                    if r.stats.lincheck_unknown {
                        "none: out of steps"
                    } else {
                        "linearizable"
                    },
                    start.elapsed().as_secs_f64()
                );
                0
            }
            Some(_) => {
                println!("{}", failure_report(seed));
                1
            }
        };
    }
    let limit = match (seeds, duration) {
        (Some(n), _) => Limit::Seeds(n),
        (None, Some(d)) => Limit::Duration(Duration::from_secs(d)),
        (None, None) => Limit::Seeds(100),
    };
    // Without --from a duration run explores fresh seeds; a count run starts at 0.
    let first = from.unwrap_or(match limit {
        Limit::Seeds(_) => 0,
        Limit::Duration(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() << 20),
    });
    println!("running seeds from {first} on {jobs} thread(s)");
    // Panics are reported with their seed; the default hook would only add noise.
    std::panic::set_hook(Box::new(|_| {}));
    let summary = run_many(first, limit, jobs, keep_going);
    let _ = std::panic::take_hook();
    println!("{}", format_summary(&summary));
    if summary.failures.is_empty() {
        return 0;
    }
    for (seed, v) in &summary.failures {
        println!("seed {seed} failed: {v}");
    }
    if let Some((seed, _)) = summary.failures.first() {
        println!("\n{}", failure_report(*seed));
    }
    1
}
