//! The producer: records are routed to partitions (murmur2 for keys, sticky for the rest),
//! batched per partition (linger, max batch bytes), and sent to each partition's leader by a
//! background task, pipelined (several requests in flight per connection).
//!
//! # Idempotence and retries
//!
//! By default the producer is idempotent: it takes a producer id (InitProducerId), and each
//! batch carries the partition's next sequence number, assigned when the batch leaves. A
//! partition has at most **one batch in flight** at a time; the next one is sealed only after
//! the previous one is answered. A retry resends the very same bytes (same producer id,
//! epoch and sequence), so a leader — the same one, or a new one after a failover, which
//! holds the producer state replicated with the log — recognises a batch it already has and
//! answers with its original offset instead of writing it again.
//!
//! Retried (after a metadata refresh and an exponential backoff, until `delivery_timeout`):
//! NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE, FENCED/UNKNOWN_LEADER_EPOCH,
//! UNKNOWN_TOPIC_OR_PARTITION, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS(_AFTER_APPEND),
//! connection failures and request timeouts (the indeterminate answers). Anything else fails
//! the batch's records at once. A batch that finally fails leaves its sequence number used,
//! so the producer then takes a new producer id before sealing more batches.
//!
//! `acks=0` sends without waiting and without idempotence (there is no answer to retry on).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tandem_protocol::errors;
use tandem_protocol::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use tandem_protocol::kafka_protocol::messages::{ProduceRequest, TopicName};
use tandem_protocol::kafka_protocol::protocol::StrBytes;
use tandem_protocol::{ApiKey, RequestKind, ResponseKind, TandemRequest, TandemResponse};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

pub use tandem_protocol::Durability;

use crate::accumulator::{
    Accumulator, AccumulatorConfig, AccumulatorError, ProducerIdentity, ProducerRecord, ReadyBatch,
    TopicPartition,
};
use crate::error::{produce_outcome_indeterminate, reaction, Error, Reaction, Result};
use crate::partitioner::Partitioner;
use crate::Client;

/// How many replicas must have a record before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acks {
    /// No answer at all: fire and forget (no retries, no idempotence).
    None,
    /// The leader appended it.
    Leader,
    /// Every ISR member has it (the HW passed it).
    All,
}

impl Acks {
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl FromStr for Acks {
    type Err = Error;
    fn from_str(s: &str) -> Result<Acks> {
        match s {
            "0" | "none" => Ok(Acks::None),
            "1" | "leader" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(Error::InvalidArgument(format!(
                "acks {other:?}: expected 0, 1 or all"
            ))),
        }
    }
}

/// Producer settings. `ProducerConfig::default()` is idempotent, acks=all, replicated.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// `Flushed` (with acks=all): acknowledged only once every ISR member has the batch on
    /// disk. Sent with Tandem's own Produce key; `Replicated` uses Kafka's Produce.
    pub durability: Durability,
    /// Producer id and sequence numbers, so retries cannot duplicate (ignored with acks=0).
    pub idempotent: bool,
    /// How long a batch waits for more records.
    pub linger: Duration,
    pub max_batch_bytes: usize,
    pub max_record_bytes: usize,
    /// The leader waits this long for the acks before answering REQUEST_TIMED_OUT.
    pub server_timeout: Duration,
    /// How long a record may take, retries included, before it fails.
    pub delivery_timeout: Duration,
    /// Records accepted but not yet answered; `send` waits beyond this (backpressure).
    pub max_buffered_records: usize,
    /// Produce requests in flight per node connection.
    pub max_in_flight_per_connection: usize,
}

impl Default for ProducerConfig {
    fn default() -> ProducerConfig {
        ProducerConfig {
            acks: Acks::All,
            durability: Durability::Replicated,
            idempotent: true,
            linger: Duration::from_millis(5),
            max_batch_bytes: 256 * 1024,
            max_record_bytes: 1024 * 1024,
            server_timeout: Duration::from_secs(5),
            delivery_timeout: Duration::from_secs(60),
            max_buffered_records: 100_000,
            max_in_flight_per_connection: 5,
        }
    }
}

/// A record to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    /// `None`: chosen from the key (murmur2), or sticky without a key.
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
    /// `None`: now.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Record {
        Record {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> Record {
        self.key = Some(key.into());
        self
    }

    pub fn partition(mut self, partition: u32) -> Record {
        self.partition = Some(partition);
        self
    }

    pub fn header(mut self, name: impl Into<Bytes>, value: Option<Bytes>) -> Record {
        self.headers.push((name.into(), value));
        self
    }
}

/// Where an acknowledged record is. `offset` is -1 with acks=0.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
}

/// Resolves when the record is acknowledged, or has failed for good.
pub struct DeliveryFuture {
    answer: oneshot::Receiver<Result<RecordMetadata>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.answer)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::ProducerClosed)))
    }
}

enum Command {
    Send {
        record: ProducerRecord,
        topic: String,
        partition: Option<u32>,
        partitions: u32,
        waiter: Waiter,
    },
    Flush(oneshot::Sender<()>),
}

struct Waiter {
    reply: oneshot::Sender<Result<RecordMetadata>>,
    _permit: OwnedSemaphorePermit,
}

/// Sends records; see the module documentation for batching, retries and idempotence.
pub struct Producer {
    client: Client,
    commands: mpsc::UnboundedSender<Command>,
    permits: Arc<Semaphore>,
    identity: Option<ProducerIdentity>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Producer {
    /// Starts a producer (and, if idempotent, gets its producer id).
    pub async fn new(client: Client, mut config: ProducerConfig) -> Result<Producer> {
        if config.acks == Acks::None {
            config.idempotent = false;
        }
        if config.max_batch_bytes == 0 || config.max_in_flight_per_connection == 0 {
            return Err(Error::InvalidArgument(
                "max_batch_bytes and max_in_flight_per_connection must be positive".into(),
            ));
        }
        let identity = if config.idempotent {
            Some(client.init_producer_id().await?)
        } else {
            None
        };
        let (commands, inbox) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(config.max_buffered_records.max(1)));
        let sender = Sender::new(client.clone(), config, identity);
        let task = tokio::spawn(sender.run(inbox));
        Ok(Producer {
            client,
            commands,
            permits,
            identity,
            task: Some(task),
        })
    }

    /// The producer id it started with (`None` when not idempotent).
    pub fn identity(&self) -> Option<ProducerIdentity> {
        self.identity
    }

    /// Queues a record; the returned future resolves when it is acknowledged. Waits only for
    /// buffer space (and metadata, the first time a topic is seen).
    pub async fn send(&self, record: Record) -> Result<DeliveryFuture> {
        let partitions = self.client.partition_count(&record.topic).await?;
        if let Some(p) = record.partition {
            if p >= partitions {
                return Err(Error::UnknownPartition {
                    topic: record.topic,
                    partition: p,
                });
            }
        }
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::ProducerClosed)?;
        let (reply, answer) = oneshot::channel();
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_epoch_ms);
        let command = Command::Send {
            record: ProducerRecord {
                timestamp_ms,
                key: record.key,
                value: record.value,
                headers: record.headers,
            },
            topic: record.topic,
            partition: record.partition,
            partitions,
            waiter: Waiter {
                reply,
                _permit: permit,
            },
        };
        self.commands
            .send(command)
            .map_err(|_| Error::ProducerClosed)?;
        Ok(DeliveryFuture { answer })
    }

    /// Sends one record and waits for its acknowledgement.
    pub async fn send_and_wait(&self, record: Record) -> Result<RecordMetadata> {
        self.send(record).await?.await
    }

    /// Sends everything queued now (no more lingering) and waits until every record sent
    /// before this call is answered (acknowledged or failed).
    pub async fn flush(&self) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.commands
            .send(Command::Flush(done))
            .map_err(|_| Error::ProducerClosed)?;
        wait.await.map_err(|_| Error::ProducerClosed)
    }

    /// Flushes, then stops the background task.
    pub async fn close(mut self) -> Result<()> {
        let flushed = self.flush().await;
        let (closed, _) = mpsc::unbounded_channel();
        self.commands = closed; // drops the real sender: the task ends once idle
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        flushed
    }
}

fn now_epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A sealed batch on its way (or back for a retry).
struct InFlight {
    tp: TopicPartition,
    bytes: Bytes,
    waiters: Vec<Waiter>,
    attempts: u32,
    created: Instant,
    ready_at: Instant,
    last_error: Option<Error>,
    /// An attempt may have been appended somewhere.
    maybe_written: bool,
}

/// One partition's answer.
struct Answer {
    code: i16,
    base_offset: i64,
    message: Option<String>,
    leader_hint: Option<(i32, i32)>,
}

enum Event {
    Sent {
        address: String,
        batches: Vec<(InFlight, Result<Option<Answer>>)>,
    },
    Refreshed,
    Identity(Result<ProducerIdentity>),
}

type EventFuture = Pin<Box<dyn Future<Output = Event> + Send>>;

struct Sender {
    client: Client,
    config: ProducerConfig,
    accumulator: Accumulator,
    partitioner: Partitioner,
    partition_counts: HashMap<String, u32>,
    waiters: HashMap<TopicPartition, VecDeque<Waiter>>,
    /// Partitions with a sealed batch in flight or waiting for a retry.
    busy: HashSet<TopicPartition>,
    retries: Vec<InFlight>,
    in_flight: HashMap<String, usize>,
    events: FuturesUnordered<EventFuture>,
    refresh_pending: bool,
    last_refresh: Option<Instant>,
    needs_identity: bool,
    identity_pending: bool,
    identity_attempts: u32,
    flushes: Vec<oneshot::Sender<()>>,
    input_closed: bool,
    started: Instant,
}

impl Sender {
    fn new(client: Client, config: ProducerConfig, identity: Option<ProducerIdentity>) -> Sender {
        let accumulator = Accumulator::new(
            AccumulatorConfig {
                max_batch_bytes: config.max_batch_bytes,
                linger_ms: config.linger.as_millis() as i64,
                max_record_bytes: config.max_record_bytes,
            },
            identity,
        );
        let seed = client.next_seed() ^ now_epoch_ms() as u64;
        Sender {
            client,
            config,
            accumulator,
            partitioner: Partitioner::new(seed),
            partition_counts: HashMap::new(),
            waiters: HashMap::new(),
            busy: HashSet::new(),
            retries: Vec::new(),
            in_flight: HashMap::new(),
            events: FuturesUnordered::new(),
            refresh_pending: false,
            last_refresh: None,
            needs_identity: false,
            identity_pending: false,
            identity_attempts: 0,
            flushes: Vec::new(),
            input_closed: false,
            started: Instant::now(),
        }
    }

    fn now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Command>) {
        loop {
            self.dispatch();
            if self.flushes_done() && self.input_closed && self.events.is_empty() {
                return;
            }
            let wake = self.next_wake();
            tokio::select! {
                command = inbox.recv(), if !self.input_closed => match command {
                    Some(command) => {
                        self.on_command(command);
                        // Take whatever else is queued before dispatching: bigger batches.
                        for _ in 0..10_000 {
                            match inbox.try_recv() {
                                Ok(command) => self.on_command(command),
                                Err(_) => break,
                            }
                        }
                    }
                    None => self.input_closed = true,
                },
                Some(event) = self.events.next(), if !self.events.is_empty() => self.on_event(event),
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    fn idle(&self) -> bool {
        self.accumulator.pending_records() == 0 && self.busy.is_empty() && self.retries.is_empty()
    }

    /// Answers flushes once nothing is pending; true when no flush (or close) is waiting.
    fn flushes_done(&mut self) -> bool {
        if self.idle() {
            for done in self.flushes.drain(..) {
                let _ = done.send(());
            }
            return true;
        }
        self.flushes.is_empty() && !self.input_closed
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let soon = now + self.config.linger.max(Duration::from_millis(1));
        let mut wake = now + Duration::from_secs(1);
        if let Some(deadline) = self.accumulator.next_deadline_ms() {
            let at = self.started + Duration::from_millis(deadline.max(0) as u64);
            // A due batch still here is waiting for a leader or a free connection slot.
            wake = wake.min(if at <= now {
                soon.max(now + self.client.config().retry_backoff)
            } else {
                at
            });
        }
        for retry in &self.retries {
            wake = wake.min(retry.ready_at.max(now + Duration::from_millis(1)));
        }
        wake
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Flush(done) => self.flushes.push(done),
            Command::Send {
                record,
                topic,
                partition,
                partitions,
                waiter,
            } => {
                // No per-record clone of the topic name: only its first record inserts it.
                match self.partition_counts.get_mut(&topic) {
                    Some(known) => *known = partitions.max(*known),
                    None => {
                        self.partition_counts.insert(topic.clone(), partitions);
                    }
                }
                let partition = partition.unwrap_or_else(|| {
                    self.partitioner
                        .partition(&topic, record.key.as_deref(), partitions)
                });
                let tp = TopicPartition { topic, partition };
                let now = self.now_ms();
                match self.accumulator.append(&tp, &record, now) {
                    Ok(outcome) => {
                        if outcome.closed_batch {
                            self.partitioner
                                .batch_closed(&tp.topic, partition, partitions);
                        }
                        self.waiters.entry(tp).or_default().push_back(waiter);
                    }
                    Err(AccumulatorError::RecordTooLarge { size, max }) => {
                        let _ = waiter.reply.send(Err(Error::RecordTooLarge { size, max }));
                    }
                }
            }
        }
    }

    fn leader_address(&self, tp: &TopicPartition) -> Option<(String, i32)> {
        self.client.with_metadata(|m| {
            m.leader(&tp.topic, tp.partition)
                .map(|(_, address, epoch)| (address.to_string(), epoch))
        })
    }

    fn has_capacity(&self, address: &str) -> bool {
        self.in_flight.get(address).copied().unwrap_or(0) < self.config.max_in_flight_per_connection
    }

    fn request_refresh(&mut self) {
        if self.refresh_pending {
            return;
        }
        self.refresh_pending = true;
        let gap = self.client.config().retry_backoff;
        let wait = self
            .last_refresh
            .map_or(Duration::ZERO, |at| gap.saturating_sub(at.elapsed()));
        let client = self.client.clone();
        self.events.push(Box::pin(async move {
            tokio::time::sleep(wait).await;
            if let Err(e) = client.refresh_metadata().await {
                tracing::debug!(error = %e, "metadata refresh failed");
            }
            Event::Refreshed
        }));
    }

    fn request_identity(&mut self) {
        if self.identity_pending {
            return;
        }
        self.identity_pending = true;
        self.identity_attempts += 1;
        let wait = if self.identity_attempts > 1 {
            self.client.backoff(self.identity_attempts - 1)
        } else {
            Duration::ZERO
        };
        let client = self.client.clone();
        self.events.push(Box::pin(async move {
            tokio::time::sleep(wait).await;
            Event::Identity(client.init_producer_id().await)
        }));
    }

    /// Seals what may leave, and sends every batch that has a leader and a free slot.
    fn dispatch(&mut self) {
        let now = Instant::now();
        let flushing = !self.flushes.is_empty() || self.input_closed;
        if self.needs_identity {
            self.request_identity();
        } else {
            let drain_now = (!flushing).then(|| self.now_ms());
            let drained = {
                let busy = &self.busy;
                let client = &self.client;
                let in_flight = &self.in_flight;
                let max = self.config.max_in_flight_per_connection;
                self.accumulator.drain_sendable(drain_now, |tp| {
                    if busy.contains(tp) {
                        return false;
                    }
                    // Without a leader the batch is sealed anyway and waits as a retry, so
                    // that the delivery timeout covers it.
                    client.with_metadata(|m| match m.leader(&tp.topic, tp.partition) {
                        Some((_, address, _)) => in_flight.get(address).copied().unwrap_or(0) < max,
                        None => true,
                    })
                })
            };
            for batch in drained {
                self.sealed(batch, now);
            }
        }

        // Group what can go now by leader.
        let mut groups: HashMap<String, Vec<(InFlight, i32)>> = HashMap::new();
        let mut waiting = Vec::new();
        let mut need_refresh = false;
        for batch in std::mem::take(&mut self.retries) {
            if now.duration_since(batch.created) > self.config.delivery_timeout {
                self.fail(batch, None);
                continue;
            }
            if batch.ready_at > now {
                waiting.push(batch);
                continue;
            }
            match self.leader_address(&batch.tp) {
                Some((address, epoch)) if self.has_capacity(&address) => {
                    groups.entry(address).or_default().push((batch, epoch));
                }
                Some(_) => waiting.push(batch),
                None => {
                    need_refresh = true;
                    waiting.push(batch);
                }
            }
        }
        self.retries = waiting;
        if need_refresh {
            self.request_refresh();
        }
        for (address, batches) in groups {
            *self.in_flight.entry(address.clone()).or_default() += 1;
            self.send_group(address, batches);
        }
    }

    /// A batch left the accumulator: it takes its records' waiters and queues to be sent.
    fn sealed(&mut self, batch: ReadyBatch, now: Instant) {
        let ReadyBatch {
            destination,
            bytes,
            record_count,
            ..
        } = batch;
        let waiters: Vec<Waiter> = match self.waiters.get_mut(&destination) {
            Some(queue) => {
                let n = (record_count.max(0) as usize).min(queue.len());
                queue.drain(..n).collect()
            }
            None => Vec::new(),
        };
        if let Some(&n) = self.partition_counts.get(&destination.topic) {
            self.partitioner
                .batch_closed(&destination.topic, destination.partition, n);
        }
        self.busy.insert(destination.clone());
        self.retries.push(InFlight {
            tp: destination,
            bytes: bytes.freeze(),
            waiters,
            attempts: 0,
            created: now,
            ready_at: now,
            last_error: None,
            maybe_written: false,
        });
    }

    fn send_group(&mut self, address: String, batches: Vec<(InFlight, i32)>) {
        let client = self.client.clone();
        let acks = self.config.acks;
        let durability = self.config.durability;
        let server_timeout = self.config.server_timeout;
        let timeout = client.config().request_timeout + server_timeout;
        let future = async move {
            let batches: Vec<(InFlight, i32)> = batches
                .into_iter()
                .map(|(mut b, epoch)| {
                    b.attempts += 1;
                    (b, epoch)
                })
                .collect();
            let connection = match client.connection(&address).await {
                Ok(c) => c,
                Err(e) => {
                    let batches = batches
                        .into_iter()
                        .map(|(b, _)| (b, Err(e.clone())))
                        .collect();
                    return Event::Sent { address, batches };
                }
            };
            if durability == Durability::Flushed && acks != Acks::None {
                // Tandem's key: one partition per request, all pipelined on the connection.
                let calls = batches.into_iter().map(|(batch, epoch)| {
                    let connection = Arc::clone(&connection);
                    async move {
                        let request = TandemRequest::Produce {
                            topic: batch.tp.topic.clone(),
                            partition: batch.tp.partition as i32,
                            acks: acks.wire(),
                            durability,
                            timeout_ms: server_timeout.as_millis() as i32,
                            current_leader_epoch: Some(epoch),
                            records: batch.bytes.to_vec(),
                        };
                        let answer = match connection.call_tandem(&request, timeout).await {
                            Ok(TandemResponse::Produce {
                                error_code,
                                base_offset,
                                leader_hint,
                                leader_epoch,
                                ..
                            }) => Ok(Some(Answer {
                                code: error_code,
                                base_offset,
                                message: None,
                                leader_hint: leader_hint.zip(leader_epoch),
                            })),
                            Ok(TandemResponse::Error {
                                error_code,
                                message,
                            }) => Ok(Some(Answer {
                                code: error_code,
                                base_offset: -1,
                                message: Some(message),
                                leader_hint: None,
                            })),
                            Ok(_) => Err(Error::Protocol {
                                address: connection.address().to_string(),
                                reason: "Produce answered with another message".into(),
                            }),
                            Err(e) => Err(e),
                        };
                        (batch, answer)
                    }
                });
                let batches = futures_util::future::join_all(calls).await;
                return Event::Sent { address, batches };
            }
            let mut topics: Vec<TopicProduceData> = Vec::new();
            for (batch, _) in &batches {
                let data = PartitionProduceData::default()
                    .with_index(batch.tp.partition as i32)
                    .with_records(Some(batch.bytes.clone()));
                match topics
                    .iter_mut()
                    .find(|t| t.name.0.as_str() == batch.tp.topic)
                {
                    Some(t) => t.partition_data.push(data),
                    None => topics.push(
                        TopicProduceData::default()
                            .with_name(TopicName(StrBytes::from_string(batch.tp.topic.clone())))
                            .with_partition_data(vec![data]),
                    ),
                }
            }
            let request = ProduceRequest::default()
                .with_acks(acks.wire())
                .with_timeout_ms(server_timeout.as_millis() as i32)
                .with_topic_data(topics);
            if acks == Acks::None {
                let sent = connection.send_only(ApiKey::Produce, RequestKind::Produce(request));
                let batches = batches
                    .into_iter()
                    .map(|(b, _)| (b, sent.clone().map(|_| None)))
                    .collect();
                return Event::Sent { address, batches };
            }
            let response = connection
                .call(ApiKey::Produce, RequestKind::Produce(request), timeout)
                .await;
            let batches = batches
                .into_iter()
                .map(|(batch, _)| {
                    let answer = match &response {
                        Err(e) => Err(e.clone()),
                        Ok(ResponseKind::Produce(r)) => r
                            .responses
                            .iter()
                            .filter(|t| t.name.0.as_str() == batch.tp.topic)
                            .flat_map(|t| t.partition_responses.iter())
                            .find(|p| p.index == batch.tp.partition as i32)
                            .map(|p| {
                                Some(Answer {
                                    code: p.error_code,
                                    base_offset: p.base_offset,
                                    message: p.error_message.as_ref().map(|m| m.to_string()),
                                    leader_hint: (p.current_leader.leader_id.0 >= 0).then_some((
                                        p.current_leader.leader_id.0,
                                        p.current_leader.leader_epoch,
                                    )),
                                })
                            })
                            .ok_or_else(|| Error::Protocol {
                                address: address.clone(),
                                reason: format!(
                                    "no answer for {}-{}",
                                    batch.tp.topic, batch.tp.partition
                                ),
                            }),
                        Ok(_) => Err(Error::Protocol {
                            address: address.clone(),
                            reason: "Produce answered with another api".into(),
                        }),
                    };
                    (batch, answer)
                })
                .collect();
            Event::Sent { address, batches }
        };
        self.events.push(Box::pin(future));
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Refreshed => {
                self.refresh_pending = false;
                self.last_refresh = Some(Instant::now());
            }
            Event::Identity(Ok(identity)) => {
                self.identity_pending = false;
                self.identity_attempts = 0;
                self.needs_identity = false;
                tracing::debug!(?identity, "new producer id");
                self.accumulator.set_producer(Some(identity));
            }
            Event::Identity(Err(e)) => {
                self.identity_pending = false;
                tracing::warn!(error = %e, "could not get a producer id; retrying");
            }
            Event::Sent { address, batches } => {
                if let Some(n) = self.in_flight.get_mut(&address) {
                    *n = n.saturating_sub(1);
                }
                for (batch, answer) in batches {
                    self.on_answer(batch, answer);
                }
            }
        }
    }

    fn on_answer(&mut self, mut batch: InFlight, answer: Result<Option<Answer>>) {
        let context = || format!("produce to {}-{}", batch.tp.topic, batch.tp.partition);
        let error = match answer {
            Ok(None) => return self.succeed(batch, -1),
            Ok(Some(a)) if a.code == errors::NONE => return self.succeed(batch, a.base_offset),
            // Kafka's answer to a duplicate whose offset it no longer knows: it is written.
            Ok(Some(a)) if a.code == errors::DUPLICATE_SEQUENCE_NUMBER => {
                return self.succeed(batch, -1)
            }
            Ok(Some(a)) => {
                if let Some((leader, epoch)) = a.leader_hint {
                    let tp = batch.tp.clone();
                    self.client.update_metadata(|m| {
                        m.apply_leader_hint(&tp.topic, tp.partition, leader, epoch)
                    });
                }
                batch.maybe_written |= produce_outcome_indeterminate(a.code);
                let error = Error::server(context(), a.code, a.message);
                if reaction(a.code) != Reaction::Retry {
                    return self.fail(batch, Some(error));
                }
                error
            }
            Err(e) => {
                // Sent (or maybe sent) and no answer: it may have been appended.
                batch.maybe_written |= !matches!(e, Error::Unreachable { .. });
                if !e.is_network() {
                    return self.fail(batch, Some(e));
                }
                e
            }
        };
        tracing::debug!(error = %error, attempts = batch.attempts, "produce will be retried");
        batch.last_error = Some(error);
        if batch.created.elapsed() > self.config.delivery_timeout {
            return self.fail(batch, None);
        }
        batch.ready_at = Instant::now() + self.client.backoff(batch.attempts);
        self.retries.push(batch);
        self.request_refresh();
    }

    fn succeed(&mut self, batch: InFlight, base_offset: i64) {
        self.busy.remove(&batch.tp);
        for (i, waiter) in batch.waiters.into_iter().enumerate() {
            let offset = if base_offset >= 0 {
                base_offset + i as i64
            } else {
                -1
            };
            let _ = waiter.reply.send(Ok(RecordMetadata {
                topic: batch.tp.topic.clone(),
                partition: batch.tp.partition,
                offset,
            }));
        }
    }

    /// The batch's records fail. Its sequence numbers are spent, so an idempotent producer
    /// takes a new producer id before sealing anything else.
    fn fail(&mut self, batch: InFlight, error: Option<Error>) {
        self.busy.remove(&batch.tp);
        if self.config.idempotent {
            self.needs_identity = true;
        }
        let last = error
            .clone()
            .or(batch.last_error.clone())
            .unwrap_or(Error::Timeout {
                address: "(no leader)".into(),
                after_ms: batch.created.elapsed().as_millis() as u64,
            });
        let error = match error {
            Some(e) if !batch.maybe_written => e,
            _ => Error::DeliveryFailed {
                attempts: batch.attempts,
                elapsed_ms: batch.created.elapsed().as_millis() as u64,
                indeterminate: batch.maybe_written,
                last_error: Box::new(last),
            },
        };
        tracing::debug!(error = %error, "produce failed");
        for waiter in batch.waiters {
            let _ = waiter.reply.send(Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_parse_like_the_cli_spells_them() {
        assert_eq!("all".parse::<Acks>().unwrap(), Acks::All);
        assert_eq!("-1".parse::<Acks>().unwrap(), Acks::All);
        assert_eq!("1".parse::<Acks>().unwrap(), Acks::Leader);
        assert_eq!("0".parse::<Acks>().unwrap(), Acks::None);
        assert!("2".parse::<Acks>().is_err());
        assert_eq!(Acks::All.wire(), -1);
    }

    #[test]
    fn records_build_up() {
        let r = Record::new("t", "v").key("k").partition(3);
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.partition, Some(3));
        assert_eq!(r.value.as_deref(), Some(&b"v"[..]));
    }
}
