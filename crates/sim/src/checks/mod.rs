//! The invariants, one file each, named after the property. [`after_step`] runs the
//! per-step ones after every event; `acked_writes`, `reads_below_hw`, `session_reads`,
//! `scan_reads`,
//! `table_linearizable` and `liveness` run where their event happens (an acknowledgement, a
//! read, the end of the run).
//!
//! State the checks keep between steps lives in [`CheckState`]: the committed history of each
//! partition (every batch any replica ever exposed below its HW), which is the reference the
//! other checks compare against.

pub mod acked_writes;
pub mod controller_agreement;
pub mod epochs_monotonic;
pub mod hw_monotonic;
pub mod hw_within_isr;
pub mod liveness;
pub mod logs_agree;
pub mod no_duplicates;
pub mod raft_votes;
pub mod reads_below_hw;
pub mod scan_reads;
pub mod session_reads;
pub mod single_leader;
pub mod table_linearizable;
pub mod table_matches_log;

use std::collections::BTreeMap;

use bytes::Bytes;
use tandem_replication::NodeId;

use crate::net::Part;
use crate::node::Slot;
use crate::world::World;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub check: &'static str,
    pub detail: String,
}

impl Violation {
    pub fn new(check: &'static str, detail: impl Into<String>) -> Violation {
        Violation {
            check,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.check, self.detail)
    }
}

/// A batch of the committed history.
#[derive(Debug, Clone)]
pub struct CommittedBatch {
    pub last_offset: i64,
    pub bytes: Bytes,
    /// Who exposed it first, for the report.
    pub first_seen: (NodeId, i64),
}

/// What one replica (one process life) showed at the previous step.
#[derive(Debug, Clone)]
pub struct ReplicaSeen {
    pub epochs: (i32, i32),
    pub high_watermark: i64,
    /// Its LEO when its HW was last looked at (`hw_monotonic`).
    pub log_end_offset: i64,
    /// Its log below here has been compared with the committed history.
    pub verified_to: i64,
    /// The slot (serial) and its compaction count when last compared: a compaction rewrote
    /// the log below its HW, so it is compared again from its start.
    pub compacted: (u64, u64),
}

#[derive(Debug, Default)]
pub struct CheckState {
    pub committed: BTreeMap<Part, BTreeMap<i64, CommittedBatch>>,
    /// (partition, producer id, producer epoch, base sequence) -> base offset.
    pub producer_batches: BTreeMap<(Part, i64, i16, i32), i64>,
    /// (partition, leader epoch) -> the node seen leading it.
    pub leaders: BTreeMap<(Part, i32), NodeId>,
    /// (partition, leader epoch) -> the highest HW its leader showed.
    pub leader_high_watermarks: BTreeMap<(Part, i32), i64>,
    /// (node, process generation, partition) -> what that replica showed.
    pub replicas: BTreeMap<(NodeId, u64, Part), ReplicaSeen>,
    /// The table writes of the committed history, per key.
    pub table_writes: session_reads::CommittedWrites,
    /// What each replica slot's table showed when last compared with its log.
    pub tables: table_matches_log::Compared,
    /// Each controller voter's latest Raft vote.
    pub raft_votes: BTreeMap<NodeId, tandem_controller::raft_types::Vote>,
    /// Metadata version -> (the first voter seen at it, its metadata).
    pub metadata_versions: BTreeMap<u64, (NodeId, std::sync::Arc<tandem_controller::Metadata>)>,
}

impl CheckState {
    /// End of the committed history of a partition.
    pub fn committed_end(&self, part: Part) -> i64 {
        self.committed
            .get(&part)
            .and_then(|m| m.values().next_back())
            .map_or(0, |b| b.last_offset + 1)
    }
}

/// One running replica, for the checks.
pub struct ReplicaRef<'a> {
    pub node: NodeId,
    pub generation: u64,
    pub part: Part,
    pub slot: &'a Slot,
}

pub fn replicas(world: &World) -> Vec<ReplicaRef<'_>> {
    let mut out = Vec::new();
    for node in world.nodes.values() {
        let Some(p) = &node.process else { continue };
        for (part, slot) in &p.replicas {
            out.push(ReplicaRef {
                node: node.id,
                generation: p.generation,
                part: *part,
                slot,
            });
        }
    }
    out
}

/// Runs every per-step invariant; the first violation ends the run.
pub fn after_step(world: &mut World) {
    let mut state = std::mem::take(&mut world.checks);
    let result = (|| {
        single_leader::check(world, &mut state)?;
        epochs_monotonic::check(world, &mut state)?;
        hw_monotonic::check(world, &mut state)?;
        hw_within_isr::check(world)?;
        logs_agree::check(world, &mut state)?;
        table_matches_log::check(world, &mut state)?;
        Ok(())
    })();
    world.checks = state;
    if let Err(v) = result {
        world.fail(v);
    }
}
