//! The real-process harness: `tandem server` nodes on free loopback ports, one-shot Kafka
//! requests over TCP, and child processes run with a deadline. (The same pattern as
//! cluster.rs, shared by the compat tests.)

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, MetadataRequest, MetadataResponse, RequestHeader, RequestKind,
    ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

/// How long any one wait for the cluster may take.
pub const BOUND: Duration = Duration::from_secs(30);

pub struct Server {
    pub id: i32,
    pub address: String,
    /// Its admin HTTP listener (`--admin-listen`): /metrics, /api/*, the dashboard.
    pub admin_address: String,
    pub child: Option<Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct Cluster {
    pub servers: Vec<Server>,
    /// Holds the nodes' data and logs; removed when the cluster is dropped (kept, and its
    /// path printed, when the test is failing).
    pub dir: tempfile::TempDir,
    /// The `--voters` list every node was started with (a restart passes it again).
    pub voters: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "test failed: the nodes' data and logs are kept in {}",
                self.dir.path().display()
            );
        }
    }
}

impl Cluster {
    /// Three `tandem server` processes, all controller voters, on free loopback ports.
    pub fn start() -> Cluster {
        Cluster::start_n(3)
    }

    /// `count` (1, 3 or 5) `tandem server` processes, all controller voters.
    pub fn start_n(count: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let servers = start_servers(dir.path(), count);
        let voters = voters_of(&servers);
        Cluster {
            servers,
            dir,
            voters,
        }
    }

    /// The node's `--data-dir`, the same across restarts.
    pub fn data_dir(&self, id: i32) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// The directory of one partition replica's log on node `id`.
    pub fn partition_dir(&self, id: i32, topic: &str, partition: i32) -> PathBuf {
        self.data_dir(id)
            .join("logs")
            .join(format!("{topic}-{partition}"))
    }

    pub fn ids(&self) -> Vec<i32> {
        self.servers.iter().map(|s| s.id).collect()
    }

    /// Whether node `id` has a process (running or stopped with SIGSTOP).
    pub fn is_up(&self, id: i32) -> bool {
        self.server(id).child.is_some()
    }

    fn server(&self, id: i32) -> &Server {
        self.servers
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn server_mut(&mut self, id: i32) -> &mut Server {
        self.servers
            .iter_mut()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Starts node `id` again after a kill or stop: same `--id`, `--listen`, `--voters` and
    /// `--data-dir`, so it comes back as the same node (a new incarnation) with its log. Its
    /// log file is appended to.
    pub fn restart(&mut self, id: i32) {
        assert!(!self.is_up(id), "node {id} is still running");
        let dir = self.dir.path().to_path_buf();
        let voters = self.voters.clone();
        let server = self.server_mut(id);
        let child = spawn_server(
            &dir,
            id,
            &server.address,
            &server.admin_address,
            &voters,
            true,
        );
        server.child = Some(child);
    }

    /// `restart`, with extra `tandem server` flags (e.g. `--rejoin-as-new-voter`).
    pub fn restart_with_args(&mut self, id: i32, extra: &[&str]) {
        assert!(!self.is_up(id), "node {id} is still running");
        let dir = self.dir.path().to_path_buf();
        let voters = self.voters.clone();
        let server = self.server_mut(id);
        let child = spawn_server_with_args(
            &dir,
            id,
            &server.address,
            &server.admin_address,
            &voters,
            extra,
        );
        server.child = Some(child);
    }

    /// Waits at most `timeout` for node `id`'s process to exit by itself; its exit status
    /// (the node is then down), or `None` if it still runs.
    pub fn wait_for_exit(
        &mut self,
        id: i32,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let server = self.server_mut(id);
        let child = server.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                server.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The whole log of node `id` (all its processes).
    pub fn log_of(&self, id: i32) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }

    /// Sends `signal` (libc::SIGSTOP, SIGCONT, SIGTERM, ...) to node `id`'s process.
    pub fn signal(&self, id: i32, signal: i32) {
        let child = self
            .server(id)
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is not running"));
        // SAFETY: kill(2) on the pid of our own child, which we have not waited for yet.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", child.id());
    }

    /// Freezes node `id` (SIGSTOP): its process stays, its sockets stay open, it does nothing.
    pub fn pause(&self, id: i32) {
        self.signal(id, libc::SIGSTOP);
    }

    /// Lets a frozen node go on (SIGCONT).
    pub fn resume(&self, id: i32) {
        self.signal(id, libc::SIGCONT);
    }

    /// Stops the given nodes cleanly (SIGTERM to all at once: controlled shutdown, HW
    /// checkpoint, flush) and waits for them, at most `timeout`; a node still running then is
    /// SIGKILLed. Returns the ids of the nodes that had to be killed.
    pub fn stop(&mut self, ids: &[i32], timeout: Duration) -> Vec<i32> {
        for &id in ids {
            if self.is_up(id) {
                self.signal(id, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + timeout;
        let mut killed = Vec::new();
        for &id in ids {
            let Some(mut child) = self.server_mut(id).child.take() else {
                continue;
            };
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    killed.push(id);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        killed
    }

    /// Comma-separated addresses, for a client's bootstrap list.
    pub fn bootstrap(&self) -> String {
        self.servers
            .iter()
            .map(|s| s.address.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `id`'s admin HTTP address (host:port).
    pub fn admin_of(&self, id: i32) -> String {
        self.server(id).admin_address.clone()
    }

    pub fn address_of(&self, id: i32) -> String {
        self.servers
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.address.clone())
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Kills a node with SIGKILL.
    pub fn kill(&mut self, id: i32) {
        let server = self.server_mut(id);
        if let Some(mut child) = server.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Runs a client with a deadline; on timeout, fails with its output and the nodes' logs.
    pub fn run(&self, command: Command, stdin: &[u8], timeout: Duration) -> Output {
        run_with_timeout(command, stdin, timeout)
            .unwrap_or_else(|message| panic!("{message}\n{}", self.logs()))
    }

    /// The tail of every node's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for s in &self.servers {
            let path = self.dir.path().join(format!("node-{}.log", s.id));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            out.push_str(&format!("--- node {} ({}) ---\n", s.id, path.display()));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Creates a topic through Kafka's CreateTopics (retried until the controller is up) and
    /// waits until every partition has a leader and a full ISR as every node sees it. The
    /// replication factor is the number of nodes.
    pub fn create_topic(&self, topic: &str, partitions: i32, min_insync: &str) {
        self.create_topic_with(topic, partitions, self.servers.len() as i16, min_insync);
    }

    /// `create_topic` with a replication factor of `replication_factor`.
    pub fn create_topic_with(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
        min_insync: &str,
    ) {
        let first = self.servers[0].address.clone();
        let create = CreateTopicsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("min.insync.replicas"))
                    .with_value(Some(StrBytes::from_string(
                        min_insync.to_string(),
                    )))])]);
        wait_for("the topic to be created", || {
            match kafka(
                &first,
                ApiKey::CreateTopics,
                5,
                RequestKind::CreateTopics(create.clone()),
            ) {
                Some(ResponseKind::CreateTopics(r)) if matches!(r.topics[0].error_code, 0 | 36) => {
                    Some(())
                }
                _ => None,
            }
        });
        self.wait_until_ready_with(topic, partitions as usize, replication_factor as usize);
    }

    /// Waits until every node reports every partition of `topic` led, with a full ISR.
    pub fn wait_until_ready(&self, topic: &str, partitions: usize) {
        self.wait_until_ready_with(topic, partitions, self.servers.len());
    }

    /// Waits until every running node reports every partition of `topic` led, with
    /// `replicas` in its ISR.
    pub fn wait_until_ready_with(&self, topic: &str, partitions: usize, replicas: usize) {
        for server in self.servers.iter().filter(|s| s.child.is_some()) {
            wait_for("every partition led with a full ISR", || {
                let m = metadata(&server.address, Some(topic))?;
                let t = m.topics.first()?;
                (t.error_code == 0
                    && t.partitions.len() == partitions
                    && t.partitions
                        .iter()
                        .all(|p| p.leader_id.0 >= 0 && p.isr_nodes.len() == replicas))
                .then_some(())
            });
        }
    }

    /// Leader of each partition of `topic`, by partition index.
    pub fn leaders(&self, topic: &str) -> Vec<i32> {
        let m = metadata(&self.servers[0].address, Some(topic)).expect("metadata");
        let mut partitions: Vec<(i32, i32)> = m.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.leader_id.0))
            .collect();
        partitions.sort();
        partitions.into_iter().map(|(_, l)| l).collect()
    }
}

/// A port for a server to listen on. Taken below Linux's ephemeral range (32768–60999), so
/// that an outgoing connection of this or another test cannot take it between this check and
/// the server's bind (a port from `bind(0)` is ephemeral and was seen taken so in CI); each
/// call moves on, so one test process never hands out a port twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 12_000;
    const SPAN: u32 = 20_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Each test process starts at its own place in the range.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN)
}

pub fn start_servers(dir: &Path, count: usize) -> Vec<Server> {
    let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
    let voters: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect();
    let voters = voters.join(",");
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let id = i as i32 + 1;
            let address = format!("127.0.0.1:{port}");
            let admin_address = format!("127.0.0.1:{}", free_port());
            let child = spawn_server(dir, id, &address, &admin_address, &voters, false);
            Server {
                id,
                address,
                admin_address,
                child: Some(child),
            }
        })
        .collect()
}

fn voters_of(servers: &[Server]) -> String {
    servers
        .iter()
        .map(|s| format!("{}={}", s.id, s.address))
        .collect::<Vec<_>>()
        .join(",")
}

/// One `tandem server` process: data in `dir/node-<id>`, its log (stderr) in
/// `dir/node-<id>.log` (appended to when `restart`).
pub fn spawn_server(
    dir: &Path,
    id: i32,
    address: &str,
    admin_address: &str,
    voters: &str,
    restart: bool,
) -> Child {
    start_server(dir, id, address, admin_address, voters, restart, &[])
}

/// `spawn_server` of a restarted node, with extra `tandem server` flags.
pub fn spawn_server_with_args(
    dir: &Path,
    id: i32,
    address: &str,
    admin_address: &str,
    voters: &str,
    extra: &[&str],
) -> Child {
    start_server(dir, id, address, admin_address, voters, true, extra)
}

fn start_server(
    dir: &Path,
    id: i32,
    address: &str,
    admin_address: &str,
    voters: &str,
    restart: bool,
    extra: &[&str],
) -> Child {
    let path = dir.join(format!("node-{id}.log"));
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    if restart {
        let with = if extra.is_empty() {
            String::new()
        } else {
            format!(" with {extra:?}")
        };
        let _ = writeln!(log, "===== test harness: node {id} restarted{with} =====");
    }
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "server",
            "--id",
            &id.to_string(),
            "--listen",
            address,
            "--voters",
            voters,
            "--admin-listen",
            admin_address,
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(dir.join(format!("node-{id}")))
        .env("TANDEM_LOG", "info,openraft=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start tandem server")
}

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// One Kafka request over a fresh connection; `None` if the node cannot be reached.
pub fn kafka(
    address: &str,
    api_key: ApiKey,
    version: i16,
    body: RequestKind,
) -> Option<ResponseKind> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("compat-test")));
    let frame = tandem_protocol::encode_request(&header, &body).ok()?;
    stream.write_all(&(frame.len() as u32).to_be_bytes()).ok()?;
    stream.write_all(&frame).ok()?;
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).ok()?;
    let mut response = vec![0u8; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut response).ok()?;
    let (correlation_id, response) =
        tandem_protocol::decode_response(api_key, version, Bytes::from(response)).ok()?;
    assert_eq!(correlation_id, 7);
    Some(response)
}

/// Metadata v9 for one topic (or all with `None`).
pub fn metadata(address: &str, topic: Option<&str>) -> Option<MetadataResponse> {
    let request = MetadataRequest::default()
        .with_topics(topic.map(|t| vec![MetadataRequestTopic::default().with_name(Some(name(t)))]));
    match kafka(address, ApiKey::Metadata, 9, RequestKind::Metadata(request))? {
        ResponseKind::Metadata(m) => Some(m),
        _ => None,
    }
}

/// Tandem's ClusterStatus (API key 1000) as `address` sees it: JSON with the nodes, and each
/// partition's leader, ISR, epochs and this node's own `local` HW / LEO. `None` if the node
/// cannot be reached or answers something else.
pub fn status(address: &str) -> Option<serde_json::Value> {
    use tandem_protocol::{
        decode_tandem_response, encode_tandem_request, TandemRequest, TandemResponse,
    };
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let frame = encode_tandem_request(9, &TandemRequest::ClusterStatus);
    stream.write_all(&(frame.len() as u32).to_be_bytes()).ok()?;
    stream.write_all(&frame).ok()?;
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).ok()?;
    let mut response = vec![0u8; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut response).ok()?;
    match decode_tandem_response(Bytes::from(response)).ok()? {
        (9, TandemResponse::ClusterStatus(text)) => serde_json::from_str(&text).ok(),
        _ => None,
    }
}

pub fn wait_for<T>(what: &str, mut attempt: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(value) = attempt() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a child process to completion with `stdin` fed in, killing it after `timeout` (an
/// `Err` with what it printed). Returns its output whatever its exit status.
pub fn run_with_timeout(
    mut command: Command,
    stdin: &[u8],
    timeout: Duration,
) -> Result<Output, String> {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    let Some(status) = status else {
        return Err(format!(
            "{what} did not finish within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ));
    };
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// The target dir this test was built in (`CARGO_TARGET_TMPDIR` is `<target>/tmp`).
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One HTTP/1.1 GET over a fresh connection: `(status code, body)`, `None` if the node cannot
/// be reached or answers garbage. Bodies are small JSON or text (Content-Length or chunked).
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    http(address, "GET", path, None)
}

/// One HTTP/1.1 request with an optional JSON body; see [`http_get`].
pub fn http(address: &str, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let request = match body {
        Some(body) => format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        None => format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"),
    };
    stream.write_all(request.as_bytes()).ok()?;
    // Read the head, then as much body as Content-Length says (some servers, chromedriver
    // among them, keep the connection open), else to the end.
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    let split = loop {
        if let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break split;
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        response.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let content_length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    let mut body = response[split + 4..].to_vec();
    match content_length {
        Some(length) => {
            while body.len() < length {
                let n = stream.read(&mut buf).ok()?;
                if n == 0 {
                    return None;
                }
                body.extend_from_slice(&buf[..n]);
            }
            body.truncate(length);
        }
        None => {
            stream.read_to_end(&mut body).ok()?;
        }
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..end]).ok()?.trim(), 16).ok()?;
            rest = &rest[end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body = out;
    }
    Some((status, String::from_utf8(body).ok()?))
}
