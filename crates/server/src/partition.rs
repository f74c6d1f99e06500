//! One partition replica at run time: the replication core, its log, and the thread that
//! drives them.
//!
//! ```text
//!  requests, fetch answers,      ┌──────────── partition thread ────────────┐
//!  metadata, ISR results  ─────> │ Input ─> Replica::step(now, event)       │
//!  (std mpsc, any thread)        │   log actions ─> driver::perform ─> event │ ─> replies (oneshot)
//!                                │   sends ───────────────────────────────> │ ─> Outbound (to the node)
//!  tick every TICK_MS ─────────> │                                          │
//!                                └──────────────────────────────────────────┘
//! ```
//!
//! The core is synchronous and does blocking file I/O through the driver, so each partition
//! gets its own OS thread rather than a tokio task: an fsync never stalls the network. (A node
//! with thousands of partitions would want a pool; see docs/server.md.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tandem_replication::event::{Action, Event};
use tandem_replication::types::{
    Acks, Durability, FetchData, FetchId, FetchRequest, Isolation, NodeId, ProduceOk,
    ProduceRequest, ReplicaConfig, RequestId,
};
use tandem_replication::{driver, ProduceError, ReadError, Replica, RoleKind};
use tandem_storage::{Log, StorageError};
use tandem_table::read::{Consistency, Token};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::table::{
    not_a_table_read, not_a_table_write, ReadReply, TableQuery, TableRuntime, TableWrite,
    TableWriteError, WriteReply, Written,
};

/// How often the core hears the time pass: bounds how late a long poll, a timeout or an ISR
/// shrink can be.
const TICK_MS: u64 = 10;
/// How often the HW is checkpointed (Kafka: every 5 s); also on shutdown.
const HW_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// Most inputs taken from the inbox in one burst before the leader's deferred appends are
/// written (bounds how long a produce waits behind others).
const MAX_BURST: usize = 256;

/// Which partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// What a partition asks the node to send for it; answers come back as [`Input::Event`].
#[derive(Debug)]
pub enum Outbound {
    Fetch {
        partition: TopicPartition,
        to: NodeId,
        fetch_id: FetchId,
        request: FetchRequest,
    },
    /// The partition has handled the answer to its fetch (and asked for the next one, if it
    /// wants one): its fetcher waits for this before its next Fetch (fetcher.rs).
    FetchAnswered {
        partition: TopicPartition,
    },
    FlushReport {
        partition: TopicPartition,
        to: NodeId,
        leader_epoch: i32,
        flushed_offset: i64,
    },
    ProposeIsr {
        partition: TopicPartition,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<NodeId>,
    },
    RefreshMetadata,
}

pub type ProduceReply = oneshot::Sender<Result<ProduceOk, ProduceError>>;
pub type FetchReply = oneshot::Sender<Result<FetchData<Bytes>, ReadError>>;
pub type OffsetReply = oneshot::Sender<Result<i64, ReadError>>;

/// Which offset a ListOffsets asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    Earliest,
    Latest(Isolation),
    /// The first offset whose timestamp is at or after this one (ms since the epoch).
    Timestamp(i64),
}

/// What the partition thread takes in.
pub enum Input {
    Event(Event),
    Produce {
        request: ProduceRequest,
        /// `None` for acks=0: nobody waits.
        reply: Option<ProduceReply>,
    },
    Fetch {
        request: FetchRequest,
        reply: FetchReply,
    },
    ListOffset {
        query: OffsetQuery,
        current_leader_epoch: Option<i32>,
        reply: OffsetReply,
    },
    /// A put, delete or compare-and-set on a table partition.
    KvWrite {
        write: TableWrite,
        acks: Acks,
        durability: Durability,
        timeout_ms: i64,
        current_leader_epoch: Option<i32>,
        reply: WriteReply,
    },
    /// A get or scan on a table partition.
    KvRead {
        query: TableQuery,
        consistency: Consistency,
        /// The node held its lease when the read arrived (rule 8, for linearizable reads).
        has_lease: bool,
        wait: Duration,
        reply: ReadReply,
    },
    /// Checkpoint the HW, flush, and stop the thread.
    Shutdown,
}

/// Figures other threads read without asking the partition thread.
#[derive(Debug, Default)]
pub struct PartitionStats {
    pub high_watermark: AtomicI64,
    pub log_end_offset: AtomicI64,
    pub log_start_offset: AtomicI64,
    pub leader_epoch: AtomicI64,
    /// On the leader, each follower's lag (metrics, admin API); empty elsewhere.
    pub followers: parking_lot::Mutex<Vec<tandem_replication::FollowerLag>>,
}

/// A running partition replica.
pub struct PartitionHandle {
    pub partition: TopicPartition,
    /// The replica's log, shared with the compactor (which works beside the thread).
    pub log: Arc<dyn Log>,
    input: mpsc::Sender<Input>,
    pub stats: Arc<PartitionStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PartitionHandle {
    /// Starts the partition's thread over `log`, rebuilding the core's model from it. A table
    /// partition (`table_snapshot`: where its snapshot lives) also loads its table.
    pub fn start(
        partition: TopicPartition,
        node_id: NodeId,
        config: ReplicaConfig,
        log: Arc<dyn Log>,
        table_snapshot: Option<std::path::PathBuf>,
        outbound: tokio::sync::mpsc::UnboundedSender<Outbound>,
    ) -> Result<PartitionHandle, StorageError> {
        let (local_log, high_watermark) = driver::recover(&*log)?;
        let table = match table_snapshot {
            Some(path) => Some(TableRuntime::load(&*log, path, high_watermark)?),
            None => None,
        };
        let replica = Replica::new(node_id, config, local_log, high_watermark);
        let stats = Arc::new(PartitionStats::default());
        let (input, inbox) = mpsc::channel();
        let shared_log = Arc::clone(&log);
        let mut runner = Runner {
            partition: partition.clone(),
            replica,
            log,
            outbound,
            stats: Arc::clone(&stats),
            started: Instant::now(),
            next_request: 0,
            produces: BTreeMap::new(),
            table_writes: BTreeMap::new(),
            fetches: BTreeMap::new(),
            table,
            last_checkpoint: Instant::now(),
            checkpointed_high_watermark: high_watermark,
            deferred_appends: Vec::new(),
        };
        runner.publish_stats();
        let thread = std::thread::Builder::new()
            .name(format!("partition {partition}"))
            .spawn(move || runner.run(inbox))
            .map_err(|e| StorageError::Io {
                action: "starting the partition thread".into(),
                dir: String::new(),
                source: e,
            })?;
        Ok(PartitionHandle {
            partition,
            log: shared_log,
            input,
            stats,
            thread: Some(thread),
        })
    }

    /// Hands something to the partition thread; false if it has stopped.
    pub fn send(&self, input: Input) -> bool {
        self.input.send(input).is_ok()
    }

    /// Stops the thread after a final HW checkpoint and flush, and waits for it.
    pub fn stop(mut self) {
        let _ = self.input.send(Input::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for PartitionHandle {
    fn drop(&mut self) {
        let _ = self.input.send(Input::Shutdown);
    }
}

struct Runner {
    partition: TopicPartition,
    replica: Replica,
    log: Arc<dyn Log>,
    outbound: tokio::sync::mpsc::UnboundedSender<Outbound>,
    stats: Arc<PartitionStats>,
    /// The origin of the core's clock: monotonic, as the core requires.
    started: Instant,
    next_request: u64,
    produces: BTreeMap<RequestId, ProduceReply>,
    /// Table writes waiting for their acks, with the epoch they were appended in.
    table_writes: BTreeMap<RequestId, (WriteReply, i32)>,
    fetches: BTreeMap<RequestId, FetchReply>,
    /// Set for a table partition.
    table: Option<TableRuntime>,
    last_checkpoint: Instant,
    checkpointed_high_watermark: i64,
    /// The leader's appends issued by the core but not written yet: written together once the
    /// inbox is drained, so that a burst of produces shares one write and, with flush=always,
    /// one fsync (group commit; the core allows appends in flight: LEO ≤ pending end).
    deferred_appends: Vec<Bytes>,
}

impl Runner {
    fn now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    fn run(&mut self, inbox: mpsc::Receiver<Input>) {
        let tick = Duration::from_millis(TICK_MS);
        let mut next_tick = Instant::now() + tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(wait) {
                Ok(Input::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Ok(input) => {
                    self.handle(input);
                    // Whatever else is queued joins this burst: their appends share a write.
                    let mut stop = false;
                    for _ in 0..MAX_BURST {
                        match inbox.try_recv() {
                            Ok(Input::Shutdown) => {
                                stop = true;
                                break;
                            }
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                    }
                    self.write_deferred_appends();
                    if stop {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_tick {
                self.step(Event::Tick);
                self.write_deferred_appends();
                next_tick = Instant::now() + tick;
                if self.last_checkpoint.elapsed() >= HW_CHECKPOINT_INTERVAL {
                    self.checkpoint_high_watermark();
                }
                if let Some(table) = &mut self.table {
                    table.maybe_snapshot(&self.replica, &*self.log, false);
                }
            }
        }
        self.write_deferred_appends();
        self.checkpoint_high_watermark();
        if let Some(table) = &mut self.table {
            table.maybe_snapshot(&self.replica, &*self.log, true);
            table.shut_down();
        }
        if let Err(e) = self.log.close() {
            warn!(partition = %self.partition, error = %e, "flushing the log at shutdown failed");
        }
        // Whoever still waits learns that this replica is gone.
        for (_, reply) in std::mem::take(&mut self.produces) {
            let _ = reply.send(Err(ProduceError::Storage("the replica stopped".into())));
        }
        for (_, reply) in std::mem::take(&mut self.fetches) {
            let _ = reply.send(Err(ReadError::Storage("the replica stopped".into())));
        }
        for (_, (reply, _)) in std::mem::take(&mut self.table_writes) {
            let _ = reply.send(Err(
                ProduceError::Storage("the replica stopped".into()).into()
            ));
        }
    }

    fn request_id(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Event(event) => {
                if let (
                    Some(table),
                    Event::FetchResponse {
                        response: Ok(data), ..
                    },
                ) = (&mut self.table, &event)
                {
                    table.on_leader_log_end_offset(data.log_end_offset);
                }
                let answer = matches!(
                    event,
                    Event::FetchResponse { .. } | Event::FetchFailed { .. }
                );
                self.step(event);
                if answer {
                    self.send_out(Outbound::FetchAnswered {
                        partition: self.partition.clone(),
                    });
                }
            }
            Input::Produce { request, reply } => {
                let id = self.request_id();
                if let Some(reply) = reply {
                    self.produces.insert(id, reply);
                }
                self.step(Event::Produce { id, request });
            }
            Input::Fetch { request, reply } => {
                let id = self.request_id();
                self.fetches.insert(id, reply);
                self.step(Event::Fetch { id, request });
            }
            Input::ListOffset {
                query,
                current_leader_epoch,
                reply,
            } => {
                let _ = reply.send(self.list_offset(query, current_leader_epoch));
            }
            Input::KvWrite {
                write,
                acks,
                durability,
                timeout_ms,
                current_leader_epoch,
                reply,
            } => self.table_write(
                write,
                acks,
                durability,
                timeout_ms,
                current_leader_epoch,
                reply,
            ),
            Input::KvRead {
                query,
                consistency,
                has_lease,
                wait,
                reply,
            } => match &mut self.table {
                Some(table) => {
                    let now = self.started.elapsed().as_millis() as i64;
                    table.read(
                        &self.replica,
                        query,
                        consistency,
                        has_lease,
                        now,
                        wait,
                        reply,
                    )
                }
                None => {
                    let _ = reply.send(Err(not_a_table_read(&self.partition.topic)));
                }
            },
            Input::Shutdown => {}
        }
    }

    /// A table write: decided (for a compare-and-set) against the latest appended state,
    /// then produced like any batch, acknowledged per its acks.
    fn table_write(
        &mut self,
        write: TableWrite,
        acks: Acks,
        durability: Durability,
        timeout_ms: i64,
        current_leader_epoch: Option<i32>,
        reply: WriteReply,
    ) {
        let Some(table) = &mut self.table else {
            let _ = reply.send(Err(not_a_table_write(&self.partition.topic)));
            return;
        };
        let reply = match write.expected {
            Some(expected) => {
                let now = self.started.elapsed().as_millis() as i64;
                match table.decide_cas(&self.replica, &write.key, expected, now, timeout_ms, reply)
                {
                    Some(reply) => reply,
                    None => return, // answered, or parked until the HW decides
                }
            }
            None => reply,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut batch = tandem_storage::BatchBuilder::new(now);
        batch.push(now, Some(&write.key), write.value.as_deref());
        let request = ProduceRequest {
            acks,
            durability,
            timeout_ms,
            current_leader_epoch,
            records: batch.build(),
        };
        let id = self.request_id();
        if acks == Acks::None {
            let _ = reply.send(Ok(Written { token: None }));
        } else {
            self.table_writes
                .insert(id, (reply, self.replica.leader_epoch()));
        }
        self.step(Event::Produce { id, request });
    }

    fn list_offset(
        &self,
        query: OffsetQuery,
        current_leader_epoch: Option<i32>,
    ) -> Result<i64, ReadError> {
        match query {
            OffsetQuery::Earliest => self.replica.earliest_offset(current_leader_epoch),
            OffsetQuery::Latest(isolation) => {
                self.replica.latest_offset(current_leader_epoch, isolation)
            }
            OffsetQuery::Timestamp(timestamp) => {
                // Only what is committed: the leader answers, below its HW.
                let high_watermark = self
                    .replica
                    .latest_offset(current_leader_epoch, Isolation::Committed)?;
                match self.log.offset_for_timestamp(timestamp) {
                    Ok(Some((offset, _))) if offset < high_watermark => Ok(offset),
                    Ok(_) => Ok(-1),
                    Err(e) => Err(ReadError::Storage(e.to_string())),
                }
            }
        }
    }

    /// Feeds one event and performs the actions, including the events the log actions report.
    fn step(&mut self, event: Event) {
        let mut events = std::collections::VecDeque::from([event]);
        while let Some(event) = events.pop_front() {
            let now = self.now_ms();
            for action in self.replica.step(now, event) {
                if let Action::Append {
                    batches,
                    compaction_horizon: None,
                } = &action
                {
                    if self.replica.role() == RoleKind::Leader {
                        self.deferred_appends.push(batches.clone());
                        if let Some(table) = &mut self.table {
                            table.on_log_action(&action, false);
                        }
                        continue;
                    }
                }
                // Log actions reach the log in the core's order: deferred appends first.
                if is_log_action(&action) {
                    if let Some(report) = self.perform_deferred_appends() {
                        events.push_back(report);
                    }
                }
                let report = driver::perform(&*self.log, &action);
                if let Some(table) = &mut self.table {
                    let failed = matches!(report, Some(Event::LogFailed { .. }));
                    table.on_log_action(&action, failed);
                    // The table follows the HW before any reply leaves: a client that got
                    // its ack and then reads sees its write.
                    table.commit_to(self.replica.high_watermark());
                }
                match report {
                    Some(report) => events.push_back(report),
                    None => self.deliver(action),
                }
            }
        }
        if let Some(table) = &mut self.table {
            let now = self.started.elapsed().as_millis() as i64;
            table.after_step(&self.replica, &*self.log, now);
        }
        self.publish_stats();
    }

    /// Writes the deferred appends as one append (one fsync under flush=always) and returns
    /// the event it reports.
    fn perform_deferred_appends(&mut self) -> Option<Event> {
        if self.deferred_appends.is_empty() {
            return None;
        }
        let batches = if self.deferred_appends.len() == 1 {
            self.deferred_appends.pop().unwrap_or_default()
        } else {
            let total = self.deferred_appends.iter().map(Bytes::len).sum();
            let mut joined = bytes::BytesMut::with_capacity(total);
            for b in self.deferred_appends.drain(..) {
                joined.extend_from_slice(&b);
            }
            joined.freeze()
        };
        let report = driver::perform(
            &*self.log,
            &Action::Append {
                batches,
                compaction_horizon: None,
            },
        );
        if let (Some(table), Some(Event::LogFailed { .. })) = (&mut self.table, &report) {
            table.on_log_action(&Action::Flush, true);
        }
        report
    }

    /// The burst is over: write what the core appended meanwhile, and let it see the result.
    fn write_deferred_appends(&mut self) {
        // Stepping the report may issue more appends (bounded: each round needs new input).
        for _ in 0..4 {
            match self.perform_deferred_appends() {
                Some(report) => self.step(report),
                None => return,
            }
        }
    }

    fn deliver(&mut self, action: Action) {
        let partition = self.partition.clone();
        match action {
            Action::Append { .. }
            | Action::Truncate { .. }
            | Action::TruncateFullyAndStartAt { .. }
            | Action::Flush => {} // performed by the driver
            Action::SendFetch {
                to,
                fetch_id,
                request,
            } => self.send_out(Outbound::Fetch {
                partition,
                to,
                fetch_id,
                request,
            }),
            Action::SendFlushReport {
                to,
                leader_epoch,
                flushed_offset,
            } => self.send_out(Outbound::FlushReport {
                partition,
                to,
                leader_epoch,
                flushed_offset,
            }),
            Action::RespondFetch { id, result } => {
                let Some(reply) = self.fetches.remove(&id) else {
                    return;
                };
                let answer = result.and_then(|data| {
                    let range = data.records;
                    driver::read_range(&*self.log, range)
                        .map(|bytes| data.with_records(bytes))
                        .map_err(|e| ReadError::Storage(e.to_string()))
                });
                let _ = reply.send(answer);
            }
            Action::CompleteProduce { id, result } => {
                if let Some(reply) = self.produces.remove(&id) {
                    let _ = reply.send(result);
                } else if let Some((reply, leader_epoch)) = self.table_writes.remove(&id) {
                    let _ = reply.send(
                        result
                            .map(|ok| Written {
                                token: Some(Token {
                                    offset: ok.base_offset,
                                    leader_epoch,
                                }),
                            })
                            .map_err(TableWriteError::from),
                    );
                }
            }
            Action::ProposeIsr {
                leader_epoch,
                partition_epoch,
                isr,
            } => self.send_out(Outbound::ProposeIsr {
                partition,
                leader_epoch,
                partition_epoch,
                isr,
            }),
            Action::HighWatermarkAdvanced { .. } => {} // checkpointed on a timer
            Action::RefreshMetadata => self.send_out(Outbound::RefreshMetadata),
        }
    }

    fn send_out(&self, message: Outbound) {
        if self.outbound.send(message).is_err() {
            debug!(partition = %self.partition, "the node is stopping; dropped an outbound message");
        }
    }

    fn publish_stats(&self) {
        let log = self.replica.local_log();
        self.stats
            .high_watermark
            .store(self.replica.high_watermark(), Ordering::Relaxed);
        self.stats
            .log_end_offset
            .store(log.log_end_offset(), Ordering::Relaxed);
        self.stats
            .log_start_offset
            .store(log.log_start_offset(), Ordering::Relaxed);
        self.stats
            .leader_epoch
            .store(self.replica.leader_epoch() as i64, Ordering::Relaxed);
        let followers = self.replica.follower_lags();
        let mut published = self.stats.followers.lock();
        if *published != followers {
            *published = followers;
        }
    }

    fn checkpoint_high_watermark(&mut self) {
        self.last_checkpoint = Instant::now();
        let high_watermark = self.replica.high_watermark();
        if high_watermark == self.checkpointed_high_watermark {
            return;
        }
        match self.log.checkpoint_high_watermark(high_watermark) {
            Ok(()) => self.checkpointed_high_watermark = high_watermark,
            Err(e) => warn!(partition = %self.partition, error = %e, "HW checkpoint failed"),
        }
    }
}

/// Actions the driver performs on the log (they must reach it in the core's order).
fn is_log_action(action: &Action) -> bool {
    matches!(
        action,
        Action::Append { .. }
            | Action::Truncate { .. }
            | Action::TruncateFullyAndStartAt { .. }
            | Action::Flush
    )
}
