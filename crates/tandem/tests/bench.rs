//! `tandem bench` end to end, with tiny bounds: it runs against a 3-node cluster and prints
//! one parseable JSON object. (The benchmarks themselves are not tests: bench/compare and
//! docs/benchmarks.md.)

mod common;

use std::process::Command;
use std::time::Duration;

use common::{run_with_timeout, Cluster};

fn bench(cluster: &Cluster, args: &[&str]) -> (serde_json::Value, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
    command
        .arg("bench")
        .args(args)
        .args(["--bootstrap", &cluster.bootstrap(), "--json"])
        .env("TANDEM_LOG", "warn");
    let output = run_with_timeout(command, b"", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        output.status.success(),
        "tandem bench {args:?}: {}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    let json = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}\nstderr: {stderr}"));
    (json, stderr)
}

#[test]
fn bench_produce_and_consume_print_one_json_result() {
    let cluster = Cluster::start();
    let (produced, _) = bench(
        &cluster,
        &[
            "produce",
            "--topic",
            "tiny",
            "--clients",
            "2",
            "--records",
            "300",
            "--duration-secs",
            "20",
        ],
    );
    assert_eq!(produced["bench"], "produce");
    assert_eq!(produced["ok"], 300, "{produced}");
    assert_eq!(produced["errors"], 0, "{produced}");
    assert!(produced["records_per_s"].as_f64().unwrap() > 0.0);
    let latency = &produced["latency_ms"];
    for key in ["p50", "p99", "p999", "max"] {
        assert!(latency[key].as_f64().unwrap() > 0.0, "{key}: {produced}");
    }
    assert!(latency["p50"].as_f64() <= latency["max"].as_f64());
    assert_eq!(produced["topic"]["replication_factor"], 3);

    // 300 records plus one warm-up record per client.
    let (consumed, _) = bench(
        &cluster,
        &[
            "consume",
            "--topic",
            "tiny",
            "--records",
            "302",
            "--read-from",
            "follower",
        ],
    );
    assert_eq!(consumed["ok"], 302, "{consumed}");
    assert_eq!(consumed["bytes"], 302 * 100, "{consumed}");
}

#[test]
fn bench_kv_puts_gets_and_cas_print_one_json_result() {
    let cluster = Cluster::start();
    let (put, _) = bench(
        &cluster,
        &[
            "kv",
            "--op",
            "put",
            "--clients",
            "2",
            "--records",
            "100",
            "--keys",
            "50",
        ],
    );
    assert_eq!(
        (put["bench"].as_str(), put["ok"].as_u64()),
        (Some("kv"), Some(100)),
        "{put}"
    );
    assert_eq!(put["errors"], 0, "{put}");
    for consistency in ["linearizable", "follower"] {
        let (get, _) = bench(
            &cluster,
            &[
                "kv",
                "--op",
                "get",
                "--consistency",
                consistency,
                "--preload",
                "20",
                "--records",
                "100",
            ],
        );
        assert_eq!(get["ok"], 100, "{get}");
        assert!(get["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{get}");
    }
    let (cas, _) = bench(
        &cluster,
        &[
            "kv",
            "--op",
            "cas",
            "--keys",
            "20",
            "--preload",
            "20",
            "--records",
            "50",
        ],
    );
    assert_eq!(cas["ok"], 50, "{cas}");
    // One client, one operation at a time: every CAS is on the version it just read.
    assert_eq!(cas["cas_mismatches"], 0, "{cas}");
}
