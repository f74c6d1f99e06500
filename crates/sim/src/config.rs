//! What one seed simulates: the cluster's shape and settings, and its fault mix ("swarm
//! testing": each seed enables a random subset of fault kinds at random rates, so that some
//! seeds see a few faults and some many, and rare interleavings of two kinds get room).

use crate::rng::Rng;

/// How replicas make data durable, and so which crashes may lose what (see docs/simulation.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurabilityMode {
    /// Every append is fsynced before it counts (log flush `Always`, topic flush `Always`):
    /// a power loss loses nothing any replica reported, so crashes may strike anyone any time.
    FlushAlways,
    /// Kafka's default, no fsync: a power loss loses the unflushed tail. Such lossy faults
    /// strike only while every replica is up, registered and in the ISR, one at a time,
    /// because acks=all promises nothing beyond that (every ISR member losing its page cache
    /// at once loses committed data by design).
    FlushNever,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: i32,
    /// Controller voters, in the processes of nodes 1..=voters.
    pub voters: i32,
    /// The controller's Raft snapshots after this many entries (and purges its log).
    pub raft_snapshot_after_entries: u64,
    pub partitions: u32,
    pub replication_factor: u16,
    pub min_insync_replicas: u16,
    pub durability: DurabilityMode,
    /// Virtual time with faults, then virtual time to recover and make progress.
    pub fault_phase_ms: i64,
    pub liveness_bound_ms: i64,
    pub faults: FaultMix,
    pub producers: usize,
    pub consumers: usize,
    /// Table faults and compaction (`kv::TableMix`, a draw stream of its own).
    pub tables: crate::kv::TableMix,
}

/// Rates of each fault kind; zero means off for this seed.
#[derive(Debug, Clone, Default)]
pub struct FaultMix {
    pub drop_probability: f64,
    pub duplicate_probability: f64,
    pub max_latency_ms: i64,
    /// Mean time between fault events of each kind, in ms (0: never).
    pub partition_every_ms: i64,
    pub crash_every_ms: i64,
    /// Kill a partition's leader (with a quick restart): leader churn, new leaders whose HW
    /// lags their epoch start, followers catching up across epochs (KAFKA-7128's ground).
    pub leader_kill_every_ms: i64,
    pub power_loss_every_ms: i64,
    pub wipe_every_ms: i64,
    pub clean_restart_every_ms: i64,
    pub corrupt_every_ms: i64,
    pub slow_every_ms: i64,
    /// Kill the node whose voter is the active controller.
    pub controller_failover_every_ms: i64,
    /// Node clocks run at 1 ± this (parts per thousand).
    pub clock_skew_permille: i64,
}

impl SimConfig {
    /// The configuration a seed implies: the seed alone decides everything.
    pub fn from_seed(seed: u64) -> SimConfig {
        let mut rng = Rng::new(seed ^ 0x5EED_C0F1_6000_0000);
        let nodes = *rng.pick(&[3, 3, 3, 3, 4, 5]);
        let partitions = *rng.pick(&[1, 1, 1, 2]);
        let min_insync_replicas = *rng.pick(&[2, 2, 2, 1]);
        let durability = if rng.chance(0.5) {
            DurabilityMode::FlushAlways
        } else {
            DurabilityMode::FlushNever
        };
        // Swarm: each kind on with probability ~1/2, at a rate from gentle to brutal.
        let every = |rng: &mut Rng, p: f64, low: i64, high: i64| {
            if rng.chance(p) {
                rng.range(low, high)
            } else {
                0
            }
        };
        let faults = FaultMix {
            drop_probability: if rng.chance(0.5) {
                rng.range(1, 100) as f64 / 1000.0
            } else {
                0.0
            },
            duplicate_probability: if rng.chance(0.4) {
                rng.range(1, 50) as f64 / 1000.0
            } else {
                0.0
            },
            max_latency_ms: *rng.pick(&[1, 5, 20, 60]),
            partition_every_ms: every(&mut rng, 0.6, 400, 4000),
            crash_every_ms: every(&mut rng, 0.6, 500, 5000),
            power_loss_every_ms: every(&mut rng, 0.4, 1000, 6000),
            wipe_every_ms: every(&mut rng, 0.25, 2000, 8000),
            clean_restart_every_ms: every(&mut rng, 0.3, 1000, 6000),
            corrupt_every_ms: every(&mut rng, 0.25, 1500, 8000),
            slow_every_ms: every(&mut rng, 0.4, 500, 4000),
            // Only where an unclean restart keeps a replica eligible (flush always): with flush
            // never, each kill drops the leader from the ELR (KIP-966), and quick successive
            // kills would leave most such seeds' partitions offline by design.
            leader_kill_every_ms: match (every(&mut rng, 0.4, 300, 1500), durability) {
                (every, DurabilityMode::FlushAlways) => every,
                (_, DurabilityMode::FlushNever) => 0,
            },
            controller_failover_every_ms: every(&mut rng, 0.4, 700, 5000),
            clock_skew_permille: *rng.pick(&[0, 0, 10, 50]),
        };
        let voters = if nodes == 5 && rng.chance(0.3) { 5 } else { 3 };
        let raft_snapshot_after_entries = *rng.pick(&[8, 40, 1000]);
        SimConfig {
            seed,
            nodes,
            voters,
            raft_snapshot_after_entries,
            partitions,
            replication_factor: 3,
            min_insync_replicas,
            durability,
            fault_phase_ms: 12_000,
            liveness_bound_ms: 8_000,
            faults,
            producers: rng.range(2, 4) as usize,
            consumers: rng.range(1, 2) as usize,
            tables: crate::kv::TableMix::from_seed(seed),
        }
    }

    /// One line for a summary or a failure report.
    pub fn describe(&self) -> String {
        let f = &self.faults;
        format!(
            "{} nodes ({} voters, Raft snapshot every {} entries), {} partition(s), RF {}, min.insync {}, {:?}; drop {:.3} dup {:.3} latency<={}ms \
             every(ms): partition {} crash {} leader-kill {} power-loss {} wipe {} clean-restart {} corrupt {} slow {} \
             controller-failover {}; clock skew {}‰; {}",
            self.nodes,
            self.voters,
            self.raft_snapshot_after_entries,
            self.partitions,
            self.replication_factor,
            self.min_insync_replicas,
            self.durability,
            f.drop_probability,
            f.duplicate_probability,
            f.max_latency_ms,
            f.partition_every_ms,
            f.crash_every_ms,
            f.leader_kill_every_ms,
            f.power_loss_every_ms,
            f.wipe_every_ms,
            f.clean_restart_every_ms,
            f.corrupt_every_ms,
            f.slow_every_ms,
            f.controller_failover_every_ms,
            f.clock_skew_permille,
            self.tables.describe(),
        )
    }
}
