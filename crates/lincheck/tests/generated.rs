//! Generated histories: a random sequential execution of a key-value table, each operation
//! then stretched into an interval around its moment, is linearizable by construction. One
//! mutation that no order can explain makes it not. Plus the performance case.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tandem_lincheck::{check_kv, CheckOptions, KvCheckResult, KvInput, KvOperation, KvOutput};

/// SplitMix64: small, seeded, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Workload {
    clients: u64,
    operations: u64,
    keys: u64,
    /// Chance that an operation's outcome is unknown (it then takes effect or not, 50/50).
    unknown_percent: u64,
    /// How far a call may come before, and a return after, the operation's moment. Moments
    /// are 10 apart and a client's ops 10 × clients apart, so with a spread below
    /// 5 × clients a client never overlaps itself.
    spread: u64,
}

/// One key's truth during the sequential execution.
#[derive(Default)]
struct KeyState {
    current: Option<(Vec<u8>, u64)>,
    /// Versions clients have learnt (from acknowledgements and reads): a CAS only expects
    /// one of these, as a real client would.
    revealed: Vec<u64>,
}

fn generate(seed: u64, workload: &Workload) -> Vec<KvOperation> {
    let mut rng = Rng(seed);
    let mut keys: HashMap<u64, KeyState> = HashMap::new();
    let mut next_offset = 1;
    let mut history = Vec::new();
    for index in 0..workload.operations {
        let client = index % workload.clients;
        let key_index = rng.below(workload.keys);
        let key = keys.entry(key_index).or_default();
        let moment = 10 * index + workload.spread;
        let unknown = rng.percent(workload.unknown_percent);
        let takes_effect = !unknown || rng.percent(50);

        let value = format!("c{client}-{index}").into_bytes();
        let input = match rng.below(10) {
            0..=3 => KvInput::Get,
            4..=5 => KvInput::Put { value },
            6 => KvInput::Delete,
            _ => {
                let expected = if key.revealed.is_empty() || rng.percent(20) {
                    None
                } else if rng.percent(70) {
                    key.revealed.last().copied()
                } else {
                    Some(key.revealed[rng.below(key.revealed.len() as u64) as usize])
                };
                let new = (!rng.percent(20)).then_some(value);
                KvInput::Cas { expected, new }
            }
        };

        let mut output = match &input {
            KvInput::Get => KvOutput::Read(key.current.clone()),
            KvInput::Put { .. } | KvInput::Delete => KvOutput::Written {
                version: next_offset,
            },
            KvInput::Cas { expected, .. } => {
                let current_version = key.current.as_ref().map(|(_, version)| *version);
                if current_version == *expected {
                    KvOutput::Written {
                        version: next_offset,
                    }
                } else {
                    KvOutput::CasMismatch
                }
            }
        };
        if takes_effect {
            if let KvOutput::Written { version } = output {
                next_offset += 1;
                key.current = match &input {
                    KvInput::Put { value } => Some((value.clone(), version)),
                    KvInput::Cas { new, .. } => new.clone().map(|value| (value, version)),
                    _ => None,
                };
            }
        }
        if unknown {
            output = KvOutput::Unknown;
        } else {
            match &output {
                KvOutput::Written { version } => key.revealed.push(*version),
                KvOutput::Read(Some((_, version))) => key.revealed.push(*version),
                _ => {}
            }
        }

        let call_time = moment - rng.below(workload.spread + 1);
        let return_time = moment + rng.below(workload.spread + 1);
        history.push(KvOperation {
            client,
            key: format!("k{key_index}").into_bytes(),
            call_time,
            return_time: (!unknown).then_some(return_time),
            input,
            output,
        });
    }
    history
}

fn small_workload(rng: &mut Rng) -> Workload {
    Workload {
        clients: 1 + rng.below(5),
        operations: 1 + rng.below(60),
        keys: 1 + rng.below(3),
        unknown_percent: rng.below(25),
        spread: rng.below(60),
    }
}

#[test]
fn generated_histories_are_linearizable() {
    let mut rng = Rng(1);
    for seed in 0..500 {
        let history = generate(seed, &small_workload(&mut rng));
        let result = check_kv(&history, &CheckOptions::default());
        assert!(result.is_linearizable(), "seed {seed}: {result}");
    }
}

#[test]
fn a_read_of_a_value_never_written_is_always_caught() {
    let mut rng = Rng(2);
    let mut mutated = 0;
    for seed in 0..500 {
        let mut history = generate(seed, &small_workload(&mut rng));
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| matches!(history[i].output, KvOutput::Read(_)))
            .collect();
        if reads.is_empty() {
            continue;
        }
        let victim = reads[rng.below(reads.len() as u64) as usize];
        history[victim].output = KvOutput::Read(Some((b"never written".to_vec(), 1)));
        mutated += 1;
        let result = check_kv(&history, &CheckOptions::default());
        assert!(
            matches!(result, KvCheckResult::NotLinearizable { .. }),
            "seed {seed}, operation {victim}: {result}"
        );
    }
    assert!(mutated > 300, "only {mutated} histories had a read");
}

#[test]
fn two_acknowledged_writes_with_one_version_are_always_caught() {
    let mut rng = Rng(3);
    let mut mutated = 0;
    for seed in 0..500 {
        let mut history = generate(seed, &small_workload(&mut rng));
        // The first two acknowledged writes of one key (versions strictly increase per key,
        // so no order admits both with the same version).
        let mut first_write: HashMap<Vec<u8>, u64> = HashMap::new();
        let duplicate = history.iter().position(|operation| {
            let KvOutput::Written { version } = operation.output else {
                return false;
            };
            first_write.entry(operation.key.clone()).or_insert(version) != &version
        });
        let Some(second) = duplicate else { continue };
        let version = first_write[&history[second].key];
        history[second].output = KvOutput::Written { version };
        mutated += 1;
        let result = check_kv(&history, &CheckOptions::default());
        assert!(
            matches!(result, KvCheckResult::NotLinearizable { .. }),
            "seed {seed}, operation {second}: {result}"
        );
    }
    assert!(
        mutated > 200,
        "only {mutated} histories had two writes on a key"
    );
}

/// Per operation, how many others overlap it in time: on any key, and on its own key.
fn mean_overlap(history: &[KvOperation]) -> (f64, f64) {
    let interval = |operation: &KvOperation| {
        (
            operation.call_time,
            operation.return_time.unwrap_or(u64::MAX),
        )
    };
    let (mut any, mut same) = (0u64, 0u64);
    for (i, a) in history.iter().enumerate() {
        let (a_call, a_return) = interval(a);
        for (j, b) in history.iter().enumerate() {
            let (b_call, b_return) = interval(b);
            if i != j && a_call <= b_return && b_call <= a_return {
                any += 1;
                same += u64::from(a.key == b.key);
            }
        }
    }
    let count = history.len() as f64;
    (any as f64 / count, same as f64 / count)
}

fn performance_case(unknown_percent: u64) -> (Vec<KvOperation>, Duration) {
    let workload = Workload {
        clients: 10,
        operations: 10 * 2_000,
        keys: 5,
        unknown_percent,
        spread: 45,
    };
    let history = generate(42, &workload);
    let started = Instant::now();
    let result = check_kv(&history, &CheckOptions::default());
    let elapsed = started.elapsed();
    assert!(result.is_linearizable(), "{result}");
    (history, elapsed)
}

#[test]
fn ten_clients_two_thousand_operations_each_on_five_keys() {
    for unknown_percent in [0, 1] {
        let (history, elapsed) = performance_case(unknown_percent);
        let (any, same) = mean_overlap(&history[..2_000]);
        println!(
            "{} operations, {unknown_percent}% unknown: checked in {elapsed:?} \
             (first 2,000: {any:.1} overlapping per operation, {same:.1} on the same key)",
            history.len()
        );
        // Typically far less; generous for a shared machine and debug builds.
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    }
}

#[test]
fn a_violation_in_a_long_history_is_found_within_the_budget() {
    let workload = Workload {
        clients: 10,
        operations: 10 * 2_000,
        keys: 5,
        unknown_percent: 1,
        spread: 45,
    };
    let mut history = generate(7, &workload);
    let late_read = (0..history.len())
        .rev()
        .find(|&i| matches!(history[i].output, KvOutput::Read(Some(_))))
        .unwrap();
    history[late_read].output = KvOutput::Read(Some((b"never written".to_vec(), 1)));
    let started = Instant::now();
    let result = check_kv(&history, &CheckOptions::default());
    println!(
        "violation found in {:?} (1% unknown outcomes)",
        started.elapsed()
    );
    assert!(
        matches!(result, KvCheckResult::NotLinearizable { .. }),
        "{result}"
    );
}
