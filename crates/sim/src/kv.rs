//! Table clients: puts, deletes, compare-and-sets (on versions they read) and gets at every
//! consistency on a few keys of each partition, each client a session (it remembers the highest token per partition from its writes and reads, and sends
//! it with its at-least reads, as `tandem_client::table::Table` does in `ReadMode::Session`).
//! Every client-visible outcome is recorded with its call and return times for the checks:
//! `checks/table_linearizable.rs` (the history), `checks/session_reads.rs` (at-least reads).
//!
//! The last key of each partition is written with acks=1, the others with acks=all. They are
//! not mixed on one key: an acknowledged acks=1 write may be lost, so the linearizability
//! check could only take it as an operation of unknown outcome, and then a compare-and-set on
//! the version its ack returned (which the client knows) would look impossible to it.
//!
//! Times in the history are the world's event counter (strictly increasing, so the real-time
//! order of a return and a later call is never a tie); virtual ms are kept for reports.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tandem_replication::{Acks, NodeId};
use tandem_table::{
    Consistency, Entry, ReadError, TableQuery, TableReadError, TableWrite, TableWriteError, Token,
};

use crate::checks;
use crate::config::SimConfig;
use crate::net::{Endpoint, Part, Payload};
use crate::rng::Rng;
use crate::world::World;

/// A client gives up on a request it has no answer to after this long: the outcome is unknown.
const KV_TIMEOUT_MS: i64 = 3_000;
/// The produce timeout a table write carries (and a parked mismatch's).
const KV_WRITE_TIMEOUT_MS: i64 = 2_000;
/// How long an at-least read may wait on a replica that has not applied the token yet.
const AT_LEAST_WAIT_MS: i64 = 100;
/// Keys per partition: few, so that clients contend.
const KEYS_PER_PARTITION: u32 = 3;

/// What a seed does to its tables besides the client workload: damaged snapshot files,
/// compaction. Drawn from a stream of its own (the seed with a constant mixed in), so that
/// adding to it does not move the draws of the rest of the configuration.
#[derive(Debug, Clone, Default)]
pub struct TableMix {
    /// Mean time between damaging a replica's stored table snapshot (a flipped bit, a cut, an
    /// empty file) and restarting its node, in ms (0: never).
    pub damage_snapshot_every_ms: i64,
    /// Mean time between compactions of each table replica's log, in ms (0: never).
    pub compact_every_ms: i64,
    /// Compaction's `tombstone_retention_ms` (Kafka's `delete.retention.ms`).
    pub tombstone_retention_ms: i64,
}

/// Compaction in the simulator is on unless `SIM_COMPACTION=0` (for debugging: is a failure
/// about compaction?). The draws are the same either way, so a seed differs only in its
/// compactions, and every run of a seed with the same setting is the same.
pub fn compaction_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SIM_COMPACTION").map_or(true, |v| v != "0"))
}

impl TableMix {
    pub fn from_seed(seed: u64) -> TableMix {
        let mut rng = Rng::new(seed ^ 0x7AB1_E5C0_0000_0000);
        TableMix {
            damage_snapshot_every_ms: if rng.chance(0.4) {
                rng.range(800, 5_000)
            } else {
                0
            },
            compact_every_ms: match rng.chance(0.6) {
                true if compaction_enabled() => rng.range(200, 3_000),
                true => {
                    rng.range(200, 3_000);
                    0
                }
                false => 0,
            },
            tombstone_retention_ms: *rng.pick(&[0, 0, 300, 3_000]),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "tables: damage-snapshot every {} ms, compaction every {} ms (tombstones kept {} ms)",
            self.damage_snapshot_every_ms, self.compact_every_ms, self.tombstone_retention_ms
        )
    }
}

/// How a get was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    Linearizable,
    Leader,
    Follower,
    FollowerBounded,
    /// At least the session's token for the partition.
    Session,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    Put(Bytes),
    Delete,
    Cas {
        expected: Option<i64>,
        new: Option<Bytes>,
    },
    Get(ReadKind),
    /// One partition's page of a scan: keys starting with `prefix`, in `[from, to)`, at most
    /// `limit` of them (the server's per-partition scan; the client merges partitions).
    Scan {
        kind: ReadKind,
        prefix: Bytes,
        from: Bytes,
        to: Option<Bytes>,
        limit: usize,
    },
}

impl KvOp {
    /// How a get or a scan was asked.
    pub fn read_kind(&self) -> Option<ReadKind> {
        match self {
            KvOp::Get(kind) | KvOp::Scan { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOutcome {
    /// No answer yet.
    Pending,
    /// Written at the token's offset (acknowledged per the client's acks).
    Written(Token),
    CasMismatch,
    /// The key's value and version, and the replica's token.
    Read {
        entry: Option<(Bytes, i64)>,
        token: Option<Token>,
    },
    /// A scan's page: its entries in key order, the key to continue from, the replica's token.
    Scanned {
        entries: Vec<(Bytes, Entry)>,
        next: Option<Bytes>,
        token: Option<Token>,
    },
    /// A definite failure: nothing was written (not the leader, no lease, not enough
    /// replicas before the append), or a read that was refused.
    Failed,
    /// A timeout or an indeterminate error: a write may take effect at any later time, or not.
    Unknown,
}

/// One operation as its client saw it.
#[derive(Debug, Clone)]
pub struct KvRecord {
    pub client: usize,
    pub part: Part,
    pub key: Bytes,
    pub op: KvOp,
    pub acks: Acks,
    pub node: NodeId,
    pub request: u64,
    /// The session token an at-least read sent.
    pub token: Option<Token>,
    pub call: u64,
    pub call_ms: i64,
    pub ret: Option<u64>,
    pub ret_ms: Option<i64>,
    pub outcome: KvOutcome,
}

pub struct KvClient {
    pub id: usize,
    /// The highest token per partition from this client's writes and reads.
    pub session: BTreeMap<Part, Token>,
    /// Per key, this client's last acknowledged write: its token, whether it was a put (else
    /// a delete), and its acks.
    pub last_write: BTreeMap<Bytes, (Token, bool, Acks)>,
    /// Per key, the version this client saw last (`None`: absent), for compare-and-sets.
    seen: BTreeMap<Bytes, Option<i64>>,
    /// The operation in flight: its index in the history.
    in_flight: Option<usize>,
    next_at: i64,
    writes: u64,
}

pub struct KvClients {
    pub clients: Vec<KvClient>,
    pub history: Vec<KvRecord>,
    /// Every key, with its partition and the acks its writes use.
    pub keys: Vec<(Part, Bytes, Acks)>,
    /// Partitions whose table answered a linearizable read issued after the faults stopped
    /// (liveness).
    pub linearizable_after_heal: BTreeSet<Part>,
}

impl KvClients {
    pub fn new(cfg: &SimConfig, rng: &mut Rng) -> KvClients {
        let count = rng.range(2, 4) as usize;
        let clients = (0..count)
            .map(|id| KvClient {
                id,
                session: BTreeMap::new(),
                last_write: BTreeMap::new(),
                seen: BTreeMap::new(),
                in_flight: None,
                next_at: 0,
                writes: 0,
            })
            .collect();
        let keys = (0..cfg.partitions)
            .flat_map(|part| {
                (0..KEYS_PER_PARTITION).map(move |k| {
                    let key = Bytes::from(format!("p{part}k{k}").into_bytes());
                    let acks = if k + 1 == KEYS_PER_PARTITION {
                        Acks::Leader
                    } else {
                        Acks::All
                    };
                    (part, key, acks)
                })
            })
            .collect();
        KvClients {
            clients,
            history: Vec::new(),
            keys,
            linearizable_after_heal: BTreeSet::new(),
        }
    }
}

impl World {
    pub fn kv_step(&mut self, i: usize) {
        let now = self.now;
        let client = &self.kv.clients[i];
        if let Some(index) = client.in_flight {
            if now - self.kv.history[index].call_ms < KV_TIMEOUT_MS {
                return;
            }
            // No answer: the request or its reply was lost, or the node crashed.
            let record = &mut self.kv.history[index];
            record.outcome = KvOutcome::Unknown;
            record.ret = Some(self.stats.events);
            record.ret_ms = Some(now);
            let client = &mut self.kv.clients[i];
            client.in_flight = None;
            client.next_at = now + 10;
            return;
        }
        if now < client.next_at {
            return;
        }
        let (part, key, acks) = self.rng.pick(&self.kv.keys).clone();
        let roll = self.rng.range(0, 99);
        let client = &mut self.kv.clients[i];
        let unique_value = |client: &mut KvClient| {
            client.writes += 1;
            Bytes::from(format!("c{}-{}", client.id, client.writes).into_bytes())
        };
        let op = match roll {
            0..=24 => KvOp::Put(unique_value(client)),
            25..=32 => KvOp::Delete,
            33..=54 => {
                let expected = client.seen.get(&key).copied().flatten();
                let new = if roll % 8 == 0 {
                    None
                } else {
                    Some(unique_value(client))
                };
                KvOp::Cas { expected, new }
            }
            _ => {
                let kind = match self.rng.range(0, 9) {
                    0..=3 => ReadKind::Linearizable,
                    4 => ReadKind::Leader,
                    5 => ReadKind::Follower,
                    6 => ReadKind::FollowerBounded,
                    _ => ReadKind::Session,
                };
                if roll >= 92 {
                    self.scan_op(part, kind)
                } else {
                    KvOp::Get(kind)
                }
            }
        };
        let session = self.kv.clients[i].session.get(&part).copied();
        // Writes and leader reads go to the leader in the client's (maybe stale) view;
        // follower and session reads to any replica of the partition.
        let leader = self.leader_of(part);
        let node = match op.read_kind() {
            Some(ReadKind::Follower | ReadKind::FollowerBounded | ReadKind::Session) => {
                let nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
                Some(*self.rng.pick(&nodes))
            }
            _ => leader.map(|(n, _)| n),
        };
        let Some(node) = node else {
            // No leader known: ask the controller again and try later.
            self.refresh_client_view();
            self.kv.clients[i].next_at = now + 50;
            return;
        };
        self.clients.next_request += 1;
        let request = self.clients.next_request;
        let consistency = match op.read_kind() {
            Some(ReadKind::Linearizable) => Some(Consistency::Linearizable),
            Some(ReadKind::Leader) => Some(Consistency::Leader),
            Some(ReadKind::Follower) => Some(Consistency::Follower {
                max_lag_offsets: None,
                max_lag_ms: None,
            }),
            Some(ReadKind::FollowerBounded) => Some(Consistency::Follower {
                max_lag_offsets: Some(self.rng.range(0, 20)),
                max_lag_ms: Some(self.rng.range(50, 1_000)),
            }),
            Some(ReadKind::Session) => Some(match session {
                Some(token) => Consistency::AtLeast(token),
                None => Consistency::Follower {
                    max_lag_offsets: None,
                    max_lag_ms: None,
                },
            }),
            _ => None,
        };
        let payload = match (&op, consistency) {
            (KvOp::Get(_), Some(consistency)) => Payload::KvRead {
                client_request: request,
                part,
                query: TableQuery::Get { key: key.clone() },
                consistency,
                wait_ms: AT_LEAST_WAIT_MS,
            },
            (
                KvOp::Scan {
                    prefix,
                    from,
                    to,
                    limit,
                    ..
                },
                Some(consistency),
            ) => Payload::KvRead {
                client_request: request,
                part,
                query: TableQuery::Scan {
                    prefix: prefix.clone(),
                    from: from.clone(),
                    to: to.clone(),
                    limit: *limit,
                },
                consistency,
                wait_ms: AT_LEAST_WAIT_MS,
            },
            _ => {
                let write = match &op {
                    KvOp::Put(value) => TableWrite {
                        key: key.clone(),
                        value: Some(value.clone()),
                        expected: None,
                    },
                    KvOp::Cas { expected, new } => TableWrite {
                        key: key.clone(),
                        value: new.clone(),
                        expected: Some(*expected),
                    },
                    _ => TableWrite {
                        key: key.clone(),
                        value: None,
                        expected: None,
                    },
                };
                Payload::KvWrite {
                    client_request: request,
                    part,
                    write,
                    acks,
                    timeout_ms: KV_WRITE_TIMEOUT_MS,
                    current_leader_epoch: leader.map(|(_, epoch)| epoch),
                }
            }
        };
        let token = match consistency {
            Some(Consistency::AtLeast(token)) => Some(token),
            _ => None,
        };
        self.kv.history.push(KvRecord {
            client: i,
            part,
            key,
            op,
            acks,
            node,
            request,
            token,
            call: self.stats.events,
            call_ms: now,
            ret: None,
            ret_ms: None,
            outcome: KvOutcome::Pending,
        });
        self.kv.clients[i].in_flight = Some(self.kv.history.len() - 1);
        self.stats.kv_ops += 1;
        self.send(Endpoint::Clients, Endpoint::Node(node), None, payload);
    }

    /// A scan of partition `part`: a prefix (all of the partition's keys, or none of them),
    /// a start key, maybe an end, and a limit below the partition's key count half the time,
    /// so that pages are cut and carry a continuation key.
    fn scan_op(&mut self, part: Part, kind: ReadKind) -> KvOp {
        let keys: Vec<Bytes> = self
            .kv
            .keys
            .iter()
            .filter(|(p, _, _)| *p == part)
            .map(|(_, k, _)| k.clone())
            .collect();
        let prefix = match self.rng.range(0, 3) {
            0 => Bytes::new(),
            1 | 2 => Bytes::from(format!("p{part}k").into_bytes()),
            _ => Bytes::from_static(b"none"),
        };
        let from = if self.rng.chance(0.5) {
            Bytes::new()
        } else {
            self.rng.pick(&keys).clone()
        };
        let to = self.rng.chance(0.3).then(|| self.rng.pick(&keys).clone());
        let limit = self.rng.range(1, KEYS_PER_PARTITION as i64 + 1) as usize;
        KvOp::Scan {
            kind,
            prefix,
            from,
            to,
            limit,
        }
    }

    /// A table answer reached the clients.
    pub fn kv_receive(&mut self, payload: Payload) {
        let (request, write, read) = match payload {
            Payload::KvWriteReply {
                client_request,
                result,
            } => (client_request, Some(result), None),
            Payload::KvReadReply {
                client_request,
                result,
            } => (client_request, None, Some(result)),
            _ => return,
        };
        let Some(i) = self.kv.clients.iter().position(|c| {
            c.in_flight
                .is_some_and(|index| self.kv.history[index].request == request)
        }) else {
            return; // an answer to a request given up on
        };
        let Some(index) = self.kv.clients[i].in_flight.take() else {
            return;
        };
        let now = self.now;
        self.kv.clients[i].next_at = now + self.rng.range(2, 30);
        let record = &mut self.kv.history[index];
        record.ret = Some(self.stats.events);
        record.ret_ms = Some(now);
        let (part, key, acks) = (record.part, record.key.clone(), record.acks);
        let client = &mut self.kv.clients[i];
        if let Some(result) = write {
            let outcome = match result {
                Ok(written) => match written.token {
                    Some(token) => {
                        let put = match &record.op {
                            KvOp::Put(_) => true,
                            KvOp::Cas { new, .. } => new.is_some(),
                            _ => false,
                        };
                        raise(&mut client.session, part, token);
                        client.last_write.insert(key.clone(), (token, put, acks));
                        client.seen.insert(key.clone(), put.then_some(token.offset));
                        KvOutcome::Written(token)
                    }
                    None => KvOutcome::Unknown,
                },
                // The current version a mismatch names is not used for the next
                // compare-and-set: the linearizability checker learns versions only from
                // acknowledged writes and gets, so a compare-and-set on a version it cannot
                // know (that of a write with an unknown outcome) would look impossible to it.
                Err(TableWriteError::CasMismatch { .. }) => KvOutcome::CasMismatch,
                Err(TableWriteError::Produce(e)) if e.is_indeterminate() => KvOutcome::Unknown,
                Err(TableWriteError::Produce(_)) => KvOutcome::Failed,
            };
            if outcome == KvOutcome::Failed {
                self.refresh_client_view();
            }
            self.kv.history[index].outcome = outcome;
            return;
        }
        let Some(result) = read else { return };
        match result {
            Ok(answer) if matches!(record.op, KvOp::Scan { .. }) => {
                if let Some(token) = answer.token {
                    raise(&mut client.session, part, token);
                }
                record.outcome = KvOutcome::Scanned {
                    entries: answer.entries,
                    next: answer.next,
                    token: answer.token,
                };
                self.stats.kv_reads += 1;
                self.stats.kv_scans += 1;
            }
            Ok(answer) => {
                let entry = answer
                    .entries
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, e)| (e.value.clone(), e.version));
                // Only linearizable reads feed compare-and-sets, for the same reason as above:
                // the checker sees only those reads, so only they tell it the version of a
                // write whose outcome the writer does not know.
                if record.op == KvOp::Get(ReadKind::Linearizable) {
                    client
                        .seen
                        .insert(key.clone(), entry.as_ref().map(|(_, v)| *v));
                    if self
                        .clients
                        .liveness_from
                        .is_some_and(|from| record.call_ms >= from)
                    {
                        self.kv.linearizable_after_heal.insert(part);
                    }
                }
                if let Some(token) = answer.token {
                    raise(&mut client.session, part, token);
                }
                record.outcome = KvOutcome::Read {
                    entry,
                    token: answer.token,
                };
                self.stats.kv_reads += 1;
            }
            Err(TableReadError::Read(ReadError::TokenTruncated { .. })) => {
                // A write of this session was lost in a failover (acks=1): forget the
                // session's acks=1 writes of the partition, and its token there but for its
                // acks=all writes (which cannot be lost).
                record.outcome = KvOutcome::Failed;
                client.session.remove(&part);
                let keys: Vec<(Bytes, Token, Acks)> = client
                    .last_write
                    .iter()
                    .filter(|(k, _)| {
                        self.kv
                            .keys
                            .iter()
                            .any(|(p, key, _)| *p == part && key == *k)
                    })
                    .map(|(k, (t, _, a))| (k.clone(), *t, *a))
                    .collect();
                for (k, t, a) in keys {
                    if a == Acks::All {
                        raise(&mut client.session, part, t);
                    } else {
                        client.last_write.remove(&k);
                    }
                }
            }
            Err(_) => {
                record.outcome = KvOutcome::Failed;
                if record.op.read_kind() != Some(ReadKind::Session) {
                    self.refresh_client_view();
                }
            }
        }
        if let Err(v) = checks::session_reads::on_answer(self, index)
            .and_then(|()| checks::scan_reads::on_answer(self, index))
        {
            self.fail(v);
        }
    }

    /// At the end of the run: what is still in flight has an unknown outcome.
    pub fn kv_finish(&mut self) {
        for client in &mut self.kv.clients {
            if let Some(index) = client.in_flight.take() {
                self.kv.history[index].outcome = KvOutcome::Unknown;
            }
        }
    }
}

/// Raises a session token (the highest offset wins).
fn raise(session: &mut BTreeMap<Part, Token>, part: Part, token: Token) {
    let entry = session.entry(part).or_insert(token);
    if token.offset > entry.offset {
        *entry = token;
    }
}
