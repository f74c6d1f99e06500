//! The admin HTTP API and the dashboard, against three real `tandem server` processes
//! (docs/observability.md).
//!
//! - `admin_api_serves_metrics_cluster_partitions_and_events`: /metrics names and labels,
//!   /api/cluster (merged views, admin addresses, lag), /api/partitions, /api/events after a
//!   leader is killed, /api/throughput after a produce.
//! - `dashboard_shows_the_new_leader_and_shrunken_isr_after_a_leader_sigkill`: one page in
//!   headless Chromium (driven by chromedriver over WebDriver's HTTP/JSON), open on a node that
//!   survives; SIGKILL the partition's leader; the same page, updating itself, must show the
//!   new leader and the shrunken ISR within [`PAGE_BOUND`]. A screenshot goes to
//!   `<target>/dashboard-after-leader-kill.png`. Chromium and chromedriver come from Debian
//!   (`scripts/test.sh` installs them); without them this test fails, naming what is missing.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http, http_get, wait_for, Cluster};
use serde_json::{json, Value};

/// How long the page may take to show a failover (the cluster itself fails over in well
/// under a second; the page polls every second).
const PAGE_BOUND: Duration = Duration::from_secs(8);

fn get_json(address: &str, path: &str) -> Option<Value> {
    match http_get(address, path)? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

fn partition<'a>(cluster: &'a Value, name: &str) -> Option<&'a Value> {
    cluster["partitions"]
        .as_array()?
        .iter()
        .find(|p| format!("{}-{}", p["topic"].as_str().unwrap_or(""), p["partition"]) == name)
}

fn produce(cluster: &Cluster, topic: &str, lines: &str) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
    command
        .args(["produce", topic, "--bootstrap", &cluster.bootstrap()])
        .env("TANDEM_LOG", "warn");
    let output = cluster.run(command, lines.as_bytes(), Duration::from_secs(30));
    assert!(
        output.status.success(),
        "produce failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn admin_api_serves_metrics_cluster_partitions_and_events() {
    let mut cluster = Cluster::start();
    cluster.create_topic("api", 1, "2");
    produce(&cluster, "api", "a\nb\nc\n");
    let admin = cluster.admin_of(1);

    // /api/cluster: every node answered, each with its admin address; the partition healthy,
    // its followers caught up as the leader measures them.
    let view = wait_for("/api/cluster with three views and no lag", || {
        let view = get_json(&admin, "/api/cluster")?;
        let p = partition(&view, "api-0")?;
        let caught_up = p["replica_offsets"]
            .as_array()?
            .iter()
            .all(|r| r["lag"] == json!(0) && r["lag_ms"] == json!(0));
        (view["views_from"] == json!([1, 2, 3]) && caught_up && p["high_watermark"] == json!(3))
            .then_some(view)
    });
    for (i, node) in view["nodes"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            node["admin_address"].as_str(),
            Some(cluster.admin_of(i as i32 + 1).as_str()),
            "{view}"
        );
    }
    let p = partition(&view, "api-0").unwrap();
    assert_eq!(p["at_risk"], json!([]), "{p}");
    assert_eq!(p["isr"], json!([1, 2, 3]));
    let leader = p["leader"].as_i64().unwrap() as i32;
    assert_eq!(
        get_json(&admin, "/api/partitions").unwrap()[0]["topic"],
        "api"
    );

    // /metrics on the leader: per-partition gauges, follower lag, produce histogram,
    // storage; the controller's counters on the active controller.
    let metrics = wait_for("leader metrics", || {
        let (status, text) = http_get(&cluster.admin_of(leader), "/metrics")?;
        (status == 200 && text.contains("tandem_partition_follower_lag_records")).then_some(text)
    });
    for expected in [
        "tandem_partition_leader{topic=\"api\",partition=\"0\"} 1",
        "tandem_partition_isr_size{topic=\"api\",partition=\"0\"} 3",
        "tandem_partition_under_replicated{topic=\"api\",partition=\"0\"} 0",
        "tandem_partition_under_min_isr{topic=\"api\",partition=\"0\"} 0",
        "tandem_partition_high_watermark{topic=\"api\",partition=\"0\"} 3",
        "tandem_partition_log_end_offset{topic=\"api\",partition=\"0\"} 3",
        "# TYPE tandem_produce_seconds histogram",
        "tandem_produce_records_total 3",
        "# TYPE tandem_storage_append_seconds histogram",
        "# TYPE tandem_partition_follower_lag_ms gauge",
    ] {
        assert!(
            metrics.lines().any(|l| l == expected),
            "missing {expected:?} in the leader's /metrics:\n{metrics}"
        );
    }
    let active = view["active_controller"].as_i64().unwrap() as i32;
    let (_, controller_metrics) = http_get(&cluster.admin_of(active), "/metrics").unwrap();
    assert!(
        controller_metrics.contains("tandem_controller_active 1")
            && controller_metrics.contains("tandem_controller_leader_elections_total")
            && controller_metrics
                .contains("tandem_controller_fencings_total{reason=\"process_exited\"}"),
        "{controller_metrics}"
    );

    // /api/throughput: the three records, within the last minutes.
    wait_for("the produce in /api/throughput", || {
        let t = get_json(&admin, "/api/throughput")?;
        let total: u64 = t["produce_records"]
            .as_array()?
            .iter()
            .filter_map(Value::as_u64)
            .sum();
        (total == 3).then_some(())
    });

    // Kill the leader: the timeline of a survivor shows the fencing, the election and the
    // shrink, in that order; the partition is under-replicated.
    let survivor = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    let survivor_admin = cluster.admin_of(survivor);
    let before = get_json(&survivor_admin, "/api/events").unwrap();
    let since = before["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap_or(0);
    cluster.kill(leader);
    let kinds = wait_for("election and shrink events", || {
        let events = get_json(&survivor_admin, &format!("/api/events?since={since}"))?;
        let kinds: Vec<String> = events["events"]
            .as_array()?
            .iter()
            .filter_map(|e| e["kind"].as_str().map(String::from))
            .collect();
        (kinds.contains(&"leader_elected".to_string()) && kinds.contains(&"isr_shrink".to_string()))
            .then_some(kinds)
    });
    let position = |k: &str| kinds.iter().position(|x| x == k).unwrap();
    assert!(
        kinds.contains(&"node_fenced".to_string())
            && position("node_fenced") < position("leader_elected"),
        "{kinds:?}"
    );
    let view = get_json(&survivor_admin, "/api/cluster").unwrap();
    let p = partition(&view, "api-0").unwrap();
    assert_eq!(p["at_risk"], json!(["under_replicated"]), "{p}");
    assert_eq!(
        http_get(&survivor_admin, "/api/events?since=x").map(|(s, _)| s),
        Some(400)
    );
}

/// A chromedriver process and one WebDriver session of headless Chromium.
struct Browser {
    driver: Child,
    address: String,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            &self.address,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn chromedriver_path() -> String {
    if let Ok(path) = std::env::var("TANDEM_CHROMEDRIVER") {
        return path;
    }
    let found = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    match found {
        Some(path) => path.to_string(),
        None => panic!(
            "the dashboard test needs Debian's chromium and chromium-driver (chromedriver not \
             found; scripts/test.sh installs them{})",
            std::env::var("TANDEM_BROWSER_INSTALL_FAILED")
                .map(|why| format!("; its install failed: {why}"))
                .unwrap_or_default()
        ),
    }
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let path = chromedriver_path();
        let driver = Command::new(&path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {path}: {e}"));
        let address = format!("127.0.0.1:{port}");
        let ready_by = Instant::now() + Duration::from_secs(20);
        while !http_get(&address, "/status")
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .is_some_and(|v| v["value"]["ready"] == json!(true))
        {
            assert!(Instant::now() < ready_by, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1100"]
        }}}});
        let (status, body) = http(
            &address,
            "POST",
            "/session",
            Some(&capabilities.to_string()),
        )
        .expect("chromedriver answers");
        let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let Some(session) = answer["value"]["sessionId"].as_str() else {
            panic!("chromedriver could not start Chromium (HTTP {status}): {body}");
        };
        Browser {
            session: session.to_string(),
            driver,
            address,
        }
    }

    fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let body = (!body.is_null()).then(|| body.to_string());
        let (status, text) = http(&self.address, method, &path, body.as_deref())
            .unwrap_or_else(|| panic!("chromedriver did not answer {method} {path}"));
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(status, 200, "{method} {path}: {text}");
        answer["value"].clone()
    }

    fn open(&self, url: &str) {
        self.command("POST", "/url", json!({ "url": url }));
    }

    fn eval(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    fn screenshot(&self, path: &std::path::Path) {
        let png = self.command("GET", "/screenshot", Value::Null);
        let bytes = base64_decode(png.as_str().unwrap_or_default());
        std::fs::write(path, bytes).unwrap();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let sextets: Vec<u8> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(sextets.len() * 3 / 4);
    for chunk in sextets.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &s)| acc | (s as u32) << (18 - 6 * i));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((bits >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// What the page shows for one partition: (leader, ISR, risk, successful polls, banner level).
const READ_ROW: &str = r#"
    const row = document.querySelector('tr[data-partition="dash-0"]');
    const banner = document.getElementById("banner");
    return row ? [row.dataset.leader, row.dataset.isr, row.dataset.risk,
                  Number(document.body.dataset.polls), banner.dataset.level] : null;"#;

#[test]
fn dashboard_shows_the_new_leader_and_shrunken_isr_after_a_leader_sigkill() {
    // Fail at once, naming what is missing, before starting any cluster.
    let browser = Browser::start();
    let mut cluster = Cluster::start();
    cluster.create_topic("dash", 1, "2");
    produce(&cluster, "dash", "one\ntwo\nthree\n");
    let leader = cluster.leaders("dash")[0];
    let viewer = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    browser.open(&format!("http://{}/", cluster.admin_of(viewer)));

    let read = |browser: &Browser| -> Option<(String, String, String, i64, String)> {
        let v = browser.eval(READ_ROW);
        Some((
            v[0].as_str()?.to_string(),
            v[1].as_str()?.to_string(),
            v[2].as_str()?.to_string(),
            v[3].as_i64()?,
            v[4].as_str()?.to_string(),
        ))
    };
    let healthy_by = Instant::now() + Duration::from_secs(20);
    let (_, _, _, polls_before, _) = loop {
        let shown = read(&browser);
        if let Some(s) = &shown {
            if s.0 == leader.to_string() && s.1 == "1,2,3" && s.2.is_empty() && s.4 == "ok" {
                break shown.unwrap();
            }
        }
        assert!(
            Instant::now() < healthy_by,
            "the page never showed dash-0 healthy, led by {leader}: {shown:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    cluster.kill(leader);
    let killed_at = Instant::now();
    let shown = loop {
        let shown = read(&browser);
        if let Some(s) = &shown {
            let new_leader = s.0 != leader.to_string() && s.0 != "none";
            let shrunk =
                !s.1.split(',').any(|r| r == leader.to_string()) && s.1.split(',').count() == 2;
            if new_leader && shrunk {
                break shown.unwrap();
            }
        }
        if killed_at.elapsed() > PAGE_BOUND {
            let path = common::target_dir().join("dashboard-failed.png");
            browser.screenshot(&path);
            panic!(
                "after {PAGE_BOUND:?} the page still shows {shown:?} (leader, ISR, risk, polls, banner) \
                 for dash-0 whose leader {leader} was killed; screenshot {}\n{}",
                path.display(),
                cluster.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = killed_at.elapsed();
    eprintln!(
        "dashboard: leader {leader} killed; the page showed leader {} and ISR [{}] after {} ms",
        shown.0,
        shown.1,
        took.as_millis()
    );
    assert!(shown.3 > polls_before, "the same page updated itself");
    assert_eq!(shown.2, "under_replicated", "the partition is flagged");
    assert_eq!(shown.4, "warn", "the banner says under-replicated");
    // The timeline shows the election and the shrink (within a poll or two more).
    let timeline_by = Instant::now() + Duration::from_secs(5);
    loop {
        let kinds = browser.eval(
            "return [...document.querySelectorAll('#events .event')].map(e => e.dataset.kind);",
        );
        let has = |k: &str| kinds.as_array().is_some_and(|a| a.iter().any(|v| v == k));
        if has("leader_elected") && has("isr_shrink") && has("node_fenced") {
            break;
        }
        assert!(
            Instant::now() < timeline_by,
            "timeline lacks the failover: {kinds}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let path = common::target_dir().join("dashboard-after-leader-kill.png");
    browser.screenshot(&path);
    let png = std::fs::read(&path).unwrap();
    assert!(
        png.starts_with(b"\x89PNG"),
        "a PNG screenshot in {}",
        path.display()
    );
    eprintln!("dashboard: screenshot in {}", path.display());
}
