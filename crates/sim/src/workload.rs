//! The clients: producers (acks 0 / 1 / all, some idempotent, retrying after errors, timeouts
//! and failovers), consumers reading committed data from any replica (follower reads), and
//! the oracle: what each produce's outcome was, as far as its client can tell.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tandem_controller::Metadata;
use tandem_replication::{Acks, Durability, FetchRequest, NodeId, ProduceError, ProduceRequest};
use tandem_storage::batch::split_batches;
use tandem_storage::BatchBuilder;

use crate::checks;
use crate::config::{DurabilityMode, SimConfig};
use crate::net::{Endpoint, Message, Part, Payload};
use crate::node::partition_state;
use crate::rng::Rng;
use crate::world::{Ev, World};

const CLIENT_TICK_MS: i64 = 10;
const PRODUCE_TIMEOUT_MS: i64 = 2_000;
/// A client gives up on a request it has no answer to after this long.
const CLIENT_TIMEOUT_MS: i64 = 3_000;
const CONSUMER_TIMEOUT_MS: i64 = 1_000;

/// What a client knows of one produced batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sent, no answer yet.
    Pending,
    /// Acknowledged at this base offset.
    Acked { base_offset: i64 },
    /// May or may not be in the log (a timeout, an "after append" error, acks=0).
    Indeterminate,
}

#[derive(Debug, Clone)]
pub struct ProducedBatch {
    pub part: Part,
    pub acks: Acks,
    pub values: Vec<String>,
    pub outcome: Outcome,
}

pub struct Producer {
    pub id: usize,
    part: Part,
    acks: Acks,
    durability: Durability,
    /// Producer id and epoch when idempotent (rule 9).
    idempotence: Option<(i64, i16)>,
    next_sequence: i32,
    /// The batch in flight: its oracle id, records, and the current attempt.
    current: Option<InFlight>,
    next_at: i64,
}

struct InFlight {
    batch: u64,
    records: bytes::BytesMut,
    count: i32,
    request: u64,
    sent_at: i64,
    attempts: u32,
}

pub struct Consumer {
    part: Part,
    position: i64,
    in_flight: Option<(u64, i64)>,
    next_at: i64,
}

pub struct Clients {
    pub producers: Vec<Producer>,
    pub consumers: Vec<Consumer>,
    pub batches: BTreeMap<u64, ProducedBatch>,
    next_batch: u64,
    pub(crate) next_request: u64,
    /// Clients' metadata: refreshed from the committed metadata now and then (a client asks
    /// any node), so it may be stale.
    view: Option<Arc<Metadata>>,
    view_at: i64,
    /// When the faults stopped, and the first acks=all acknowledgement after it.
    pub liveness_from: Option<i64>,
    pub acked_after_heal: BTreeMap<Part, i64>,
}

impl Clients {
    pub fn new(cfg: &SimConfig, rng: &mut Rng) -> Clients {
        let mut producers = Vec::new();
        for id in 0..cfg.producers {
            // The first producer of each partition is idempotent acks=all: the progress probe.
            let part = (id as u32) % cfg.partitions;
            let (acks, idempotent) = if (id as u32) < cfg.partitions {
                (Acks::All, true)
            } else {
                match rng.range(0, 3) {
                    0 => (Acks::All, true),
                    1 => (Acks::All, false),
                    2 => (Acks::Leader, false),
                    _ => (Acks::None, false),
                }
            };
            let durability = if acks == Acks::All
                && cfg.durability == DurabilityMode::FlushNever
                && rng.chance(0.25)
            {
                Durability::Flushed
            } else {
                Durability::Replicated
            };
            producers.push(Producer {
                id,
                part,
                acks,
                durability,
                idempotence: idempotent.then_some((1000 + id as i64, 0)),
                next_sequence: 0,
                current: None,
                next_at: 0,
            });
        }
        let consumers = (0..cfg.consumers)
            .map(|i| Consumer {
                part: (i as u32) % cfg.partitions,
                position: 0,
                in_flight: None,
                next_at: 0,
            })
            .collect();
        Clients {
            producers,
            consumers,
            batches: BTreeMap::new(),
            next_batch: 0,
            next_request: 0,
            view: None,
            view_at: i64::MIN,
            liveness_from: None,
            acked_after_heal: BTreeMap::new(),
        }
    }

    pub fn liveness_started(&mut self, now: i64) {
        self.liveness_from = Some(now);
    }
}

impl World {
    pub fn client_tick(&mut self) {
        self.schedule(self.now + CLIENT_TICK_MS, Ev::ClientTick);
        let now = self.now;
        if self.clients.view_at + 500 <= now {
            self.refresh_client_view();
        }
        for i in 0..self.clients.producers.len() {
            self.producer_step(i);
        }
        for i in 0..self.clients.consumers.len() {
            self.consumer_step(i);
        }
        for i in 0..self.kv.clients.len() {
            self.kv_step(i);
        }
    }

    pub(crate) fn refresh_client_view(&mut self) {
        self.clients.view = Some(self.controller.metadata.clone());
        self.clients.view_at = self.now;
    }

    pub(crate) fn leader_of(&self, part: Part) -> Option<(NodeId, i32)> {
        let view = self.clients.view.as_ref()?;
        let topic_id = *view.topics.keys().next()?;
        let p = partition_state(view, topic_id, part)?;
        Some((p.leader?, p.leader_epoch))
    }

    fn producer_step(&mut self, i: usize) {
        let now = self.now;
        let p = &self.clients.producers[i];
        if let Some(f) = &p.current {
            if now - f.sent_at < CLIENT_TIMEOUT_MS {
                return;
            }
            // No answer: the request or its reply was lost. Indeterminate; retry.
            let request = f.request;
            self.trace(|| format!("producer {i}: no answer to #{request}, retrying"));
            self.retry(i);
            return;
        }
        if now < p.next_at {
            return;
        }
        // A new batch of 1-3 records, values unique across the run.
        let count = self.rng.range(1, 3) as i32;
        self.clients.next_batch += 1;
        let batch = self.clients.next_batch;
        let p = &mut self.clients.producers[i];
        let mut builder = BatchBuilder::new(now);
        if let Some((pid, epoch)) = p.idempotence {
            builder = builder.producer(pid, epoch, p.next_sequence);
            p.next_sequence = p.next_sequence.wrapping_add(count);
        }
        let values: Vec<String> = (0..count).map(|k| format!("b{batch}.{k}")).collect();
        for v in &values {
            builder.push(now, None, Some(v.as_bytes()));
        }
        self.clients.batches.insert(
            batch,
            ProducedBatch {
                part: p.part,
                acks: p.acks,
                values,
                outcome: Outcome::Pending,
            },
        );
        p.current = Some(InFlight {
            batch,
            records: builder.build(),
            count,
            request: 0,
            sent_at: now,
            attempts: 0,
        });
        self.send_produce(i);
    }

    fn send_produce(&mut self, i: usize) {
        let now = self.now;
        let part = self.clients.producers[i].part;
        let target = self.leader_of(part);
        let with_epoch = self.rng.chance(0.8);
        self.clients.next_request += 1;
        let client_request = self.clients.next_request;
        let p = &mut self.clients.producers[i];
        let Some(f) = p.current.as_mut() else { return };
        f.request = client_request;
        f.sent_at = now;
        f.attempts += 1;
        let Some((leader, epoch)) = target else {
            // No leader known: try again soon (the timeout path resends).
            f.sent_at = now - CLIENT_TIMEOUT_MS + 100;
            return;
        };
        let request = ProduceRequest {
            acks: p.acks,
            durability: p.durability,
            timeout_ms: PRODUCE_TIMEOUT_MS,
            current_leader_epoch: with_epoch.then_some(epoch),
            records: f.records.clone(),
        };
        let acks_none = p.acks == Acks::None;
        let batch = f.batch;
        self.send(
            Endpoint::Clients,
            Endpoint::Node(leader),
            None,
            Payload::Produce {
                client_request,
                part,
                request,
            },
        );
        if acks_none {
            // Fire and forget: no answer on success.
            self.set_outcome(batch, Outcome::Indeterminate);
            let p = &mut self.clients.producers[i];
            p.current = None;
            p.next_at = now + 20;
        }
    }

    /// Sends the batch in flight again: an idempotent producer with the same sequence (the
    /// leader answers a duplicate with the original offset), others as a new attempt that
    /// may duplicate. After a few attempts a non-idempotent producer gives up.
    fn retry(&mut self, i: usize) {
        let now = self.now;
        let p = &mut self.clients.producers[i];
        let Some(f) = p.current.as_ref() else { return };
        let batch = f.batch;
        if p.idempotence.is_none() && f.attempts >= 3 {
            p.current = None;
            p.next_at = now + 50;
            self.mark_indeterminate(batch);
            return;
        }
        self.mark_indeterminate(batch);
        self.refresh_client_view();
        self.send_produce(i);
    }

    fn set_outcome(&mut self, batch: u64, outcome: Outcome) {
        if let Some(b) = self.clients.batches.get_mut(&batch) {
            b.outcome = outcome;
        }
    }

    fn mark_indeterminate(&mut self, batch: u64) {
        if let Some(b) = self.clients.batches.get_mut(&batch) {
            if b.outcome == Outcome::Pending {
                b.outcome = Outcome::Indeterminate;
            }
        }
    }

    fn consumer_step(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.clients.consumers[i];
        if let Some((_, sent)) = c.in_flight {
            if now - sent < CONSUMER_TIMEOUT_MS {
                return;
            }
            c.in_flight = None;
        }
        if now < c.next_at {
            return;
        }
        let part = c.part;
        let position = c.position;
        // Follower reads: any replica of the partition answers below its own HW.
        let nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
        let node = *self.rng.pick(&nodes);
        self.clients.next_request += 1;
        let client_request = self.clients.next_request;
        self.clients.consumers[i].in_flight = Some((client_request, now));
        let request = FetchRequest {
            replica_id: None,
            fetch_offset: position,
            last_fetched_epoch: None,
            current_leader_epoch: None,
            max_bytes: 8 << 10,
            max_wait_ms: 100,
            known_high_watermark: None,
        };
        self.send(
            Endpoint::Clients,
            Endpoint::Node(node),
            None,
            Payload::ConsumerFetch {
                client_request,
                part,
                request,
            },
        );
    }

    pub fn clients_receive(&mut self, m: Message) {
        match m.payload {
            Payload::ProduceReply {
                client_request,
                result,
            } => {
                let Some(i) = self.clients.producers.iter().position(|p| {
                    p.current
                        .as_ref()
                        .is_some_and(|f| f.request == client_request)
                }) else {
                    return; // an answer to an attempt given up on
                };
                let now = self.now;
                let p = &mut self.clients.producers[i];
                let f = p.current.as_ref().expect("found above");
                let (batch, count) = (f.batch, f.count);
                match result {
                    Ok(ok) => {
                        p.current = None;
                        p.next_at = now + 5;
                        let acks = p.acks;
                        let part = p.part;
                        self.set_outcome(
                            batch,
                            Outcome::Acked {
                                base_offset: ok.base_offset,
                            },
                        );
                        match acks {
                            Acks::All => {
                                self.stats.acked_all += 1;
                                if self.clients.liveness_from.is_some() {
                                    self.clients.acked_after_heal.entry(part).or_insert(now);
                                }
                                if let Err(v) = checks::acked_writes::on_ack(self, batch) {
                                    self.fail(v);
                                }
                            }
                            _ => self.stats.acked_leader += 1,
                        }
                    }
                    Err(
                        ProduceError::OutOfOrderSequence { .. }
                        | ProduceError::InvalidProducerEpoch { .. },
                    ) => {
                        // The producer's sequence state is lost: bump the producer epoch and
                        // start its sequence again (Kafka's KIP-360). The batch is given up.
                        if let Some((pid, epoch)) = p.idempotence {
                            p.idempotence = Some((pid, epoch + 1));
                        }
                        p.next_sequence = 0;
                        p.current = None;
                        p.next_at = now + 50;
                        let _ = count;
                        self.mark_indeterminate(batch);
                    }
                    Err(e) => {
                        if e.is_indeterminate() {
                            self.stats.indeterminate += 1;
                        }
                        // Refresh metadata and retry after a short backoff.
                        if let Some(f) = p.current.as_mut() {
                            f.sent_at = now - CLIENT_TIMEOUT_MS + 30;
                        }
                        self.trace(|| format!("producer {i}: {e}"));
                        self.refresh_client_view();
                    }
                }
            }
            Payload::ConsumerFetchReply {
                client_request,
                result,
            } => {
                let Some(i) = self
                    .clients
                    .consumers
                    .iter()
                    .position(|c| c.in_flight.is_some_and(|(r, _)| r == client_request))
                else {
                    return;
                };
                let now = self.now;
                let c = &mut self.clients.consumers[i];
                c.in_flight = None;
                c.next_at = now + 20;
                if let Ok(bytes) = result {
                    let position = c.position;
                    if let Some(next) = advance(&bytes, position) {
                        c.position = next;
                        self.stats.reads += 1;
                    }
                }
            }
            payload @ (Payload::KvWriteReply { .. } | Payload::KvReadReply { .. }) => {
                self.kv_receive(payload)
            }
            _ => {}
        }
    }
}

/// The consumer's next position after reading `bytes` at `position`.
fn advance(bytes: &Bytes, position: i64) -> Option<i64> {
    let mut next = None;
    for (header, _) in split_batches(bytes).map_while(Result::ok) {
        if header.next_offset() > position {
            next = Some(header.next_offset());
        }
    }
    next
}
