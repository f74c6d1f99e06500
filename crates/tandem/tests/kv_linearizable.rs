//! Linearizability of a table under leader kills, on a real 3-node cluster: several clients
//! issue concurrent put / get (linearizable) / cas / delete on a few keys while the partition's
//! leader is SIGKILLed and restarted, several times; the recorded history is checked by
//! tandem-lincheck (Wing–Gong–Lowe search, per key). The history is written to
//! `<target>/kv-linearizability-history.jsonl` for re-checking.
//!
//! The check is kept honest in the same test: the history with one stale read added (a read,
//! after everything, of a value that was overwritten) must be rejected.
//!
//! Bounded: each client stops after `OPS_PER_CLIENT` operations or `RUN_FOR`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Cluster;
use parking_lot::Mutex;
use tandem_client::table::{CasOutcome, ReadMode, Table, TableConfig};
use tandem_client::{Client, ClientConfig, NewTopic};
use tandem_lincheck::{check_kv, CheckOptions, KvInput, KvOperation, KvOutput};

const CLIENTS: u64 = 4;
const KEYS: u64 = 3;
const OPS_PER_CLIENT: u64 = 5_000;
/// Long enough to span every kill and restart below.
const RUN_FOR: Duration = Duration::from_secs(13);
/// Between a client's operations, so that the history spans the kills without growing huge.
const PAUSE: Duration = Duration::from_millis(5);
const KILLS: usize = 3;

fn micros(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

/// A tiny deterministic generator per client (no rand dependency needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

async fn run_client(id: u64, table: Table, start: Instant, history: Arc<Mutex<Vec<KvOperation>>>) {
    let mut rng = Lcg(id * 7919 + 17);
    // The last version this client saw per key: what its CAS expects.
    let mut seen: Vec<Option<u64>> = vec![None; KEYS as usize];
    for n in 0..OPS_PER_CLIENT {
        if start.elapsed() > RUN_FOR {
            break;
        }
        tokio::time::sleep(PAUSE).await;
        let k = rng.next(KEYS);
        let key = format!("key-{k}").into_bytes();
        let call_time = micros(start);
        let (input, output) = match rng.next(10) {
            0..=2 => {
                let value = format!("c{id}-{n}").into_bytes();
                let output = match table.put(key.clone(), value.clone()).await {
                    Ok(token) => KvOutput::Written {
                        version: token.offset as u64,
                    },
                    Err(_) => KvOutput::Unknown,
                };
                (KvInput::Put { value }, output)
            }
            3 => {
                let output = match table.delete(key.clone()).await {
                    Ok(token) => KvOutput::Written {
                        version: token.offset as u64,
                    },
                    Err(_) => KvOutput::Unknown,
                };
                (KvInput::Delete, output)
            }
            4..=5 => {
                let value = format!("c{id}-{n}").into_bytes();
                let expected = seen[k as usize];
                let output = match table
                    .cas(key.clone(), expected.map(|v| v as i64), Some(value.clone()))
                    .await
                {
                    Ok(CasOutcome::Written(token)) => KvOutput::Written {
                        version: token.offset as u64,
                    },
                    Ok(CasOutcome::Mismatch { current }) => {
                        seen[k as usize] = current.map(|v| v as u64);
                        KvOutput::CasMismatch
                    }
                    Err(_) => KvOutput::Unknown,
                };
                (
                    KvInput::Cas {
                        expected,
                        new: Some(value),
                    },
                    output,
                )
            }
            _ => match table.get(key.clone(), ReadMode::Linearizable).await {
                Ok(entry) => {
                    let read = entry.map(|e| (e.value.to_vec(), e.version as u64));
                    seen[k as usize] = read.as_ref().map(|(_, v)| *v);
                    (KvInput::Get, KvOutput::Read(read))
                }
                // A failed read had no effect: nothing to record.
                Err(_) => continue,
            },
        };
        let return_time = micros(start);
        history.lock().push(KvOperation {
            client: id,
            key,
            call_time,
            return_time: Some(return_time),
            input,
            output,
        });
    }
}

#[test]
fn table_history_is_linearizable_across_leader_kills() {
    let mut cluster = Cluster::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addresses: Vec<String> = cluster.servers.iter().map(|s| s.address.clone()).collect();
    let client = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(c) = Client::connect(ClientConfig::new(addresses.clone())).await {
                let _ = c.refresh_metadata().await;
                if c.metadata().brokers.len() == 3 {
                    break c;
                }
            }
            assert!(Instant::now() < deadline, "the cluster never came up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    rt.block_on(
        client.create_topic(
            NewTopic::new("lin", 1)
                .replication_factor(3)
                .config("tandem.kind", "table")
                .config("min.insync.replicas", "2"),
        ),
    )
    .unwrap();
    cluster.wait_until_ready("lin", 1);

    let start = Instant::now();
    let history = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let table = Table::new(
                client.clone(),
                "lin",
                TableConfig {
                    write_timeout: Duration::from_secs(3),
                    ..TableConfig::default()
                },
            );
            rt.spawn(run_client(id, table, start, Arc::clone(&history)))
        })
        .collect();
    // Kill the partition's leader a few times while the clients run; restart it each time.
    for round in 0..KILLS {
        std::thread::sleep(Duration::from_millis(2_500));
        let leader = cluster.leaders("lin")[0];
        if leader < 0 {
            continue;
        }
        eprintln!("round {round}: SIGKILL leader {leader}");
        cluster.kill(leader);
        std::thread::sleep(Duration::from_millis(1_000));
        cluster.restart(leader);
    }
    assert!(start.elapsed() < RUN_FOR, "the kills outlasted the clients");
    for handle in clients {
        rt.block_on(handle).unwrap();
    }
    let history = history.lock().clone();
    let path = common::target_dir().join("kv-linearizability-history.jsonl");
    let _ = std::fs::write(&path, tandem_lincheck::history_to_json_lines(&history));
    let writes = history
        .iter()
        .filter(|o| matches!(o.output, KvOutput::Written { .. }))
        .count();
    let reads = history
        .iter()
        .filter(|o| matches!(o.output, KvOutput::Read(_)))
        .count();
    let unknown = history
        .iter()
        .filter(|o| o.output == KvOutput::Unknown)
        .count();
    eprintln!(
        "{} operations ({writes} acknowledged writes, {reads} reads, {unknown} unknown outcomes); history in {}",
        history.len(),
        path.display()
    );
    assert!(writes >= 50 && reads >= 50, "too little happened to judge");

    let options = CheckOptions {
        deadline: Some(Instant::now() + Duration::from_secs(60)),
        ..CheckOptions::default()
    };
    let verdict = check_kv(&history, &options);
    assert!(verdict.is_linearizable(), "{verdict}\n{}", cluster.logs());

    // The same history plus one stale read must be rejected: a read, after everything else,
    // of the first value acknowledged on a key that was overwritten later.
    let end = history
        .iter()
        .filter_map(|o| o.return_time)
        .max()
        .unwrap_or(0);
    let mut writes_by_key: std::collections::BTreeMap<Vec<u8>, Vec<&KvOperation>> =
        Default::default();
    for op in &history {
        if let (KvInput::Put { .. }, KvOutput::Written { .. }) = (&op.input, &op.output) {
            writes_by_key.entry(op.key.clone()).or_default().push(op);
        }
    }
    let (key, first) = writes_by_key
        .iter()
        .find_map(|(k, ops)| {
            let first = ops.iter().min_by_key(|o| o.return_time)?;
            let overwritten = ops
                .iter()
                .any(|o| o.call_time > first.return_time.unwrap_or(u64::MAX));
            overwritten.then(|| (k.clone(), *first))
        })
        .expect("some key written twice in sequence");
    let (KvInput::Put { value }, KvOutput::Written { version }) = (&first.input, &first.output)
    else {
        unreachable!()
    };
    let mut tampered = history.clone();
    tampered.push(KvOperation {
        client: 999,
        key,
        call_time: end + 1,
        return_time: Some(end + 2),
        input: KvInput::Get,
        output: KvOutput::Read(Some((value.clone(), *version))),
    });
    let verdict = check_kv(&tampered, &options);
    assert!(
        !verdict.is_linearizable(),
        "a stale read slipped past the checker: {verdict}"
    );
}
