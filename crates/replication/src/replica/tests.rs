//! One test per rule, each asserting the exact actions a step returns.

use bytes::{Bytes, BytesMut};
use tandem_storage::{BatchBuilder, EpochCache, LogOffsets};

use super::*;
use crate::error::IsrChangeError;
use crate::producer::ProducerTable;
use crate::types::{DivergingEpoch, FetchData, IsrState, ProduceOk, ProduceRequest, ReadRange};

const EPOCH: i32 = 5;
const PARTITION_EPOCH: i32 = 10;

fn config() -> ReplicaConfig {
    ReplicaConfig::default()
}

fn state(leader: NodeId, leader_epoch: i32, isr: &[NodeId], min_insync: usize) -> PartitionState {
    PartitionState {
        leader: Some(leader),
        leader_epoch,
        partition_epoch: PARTITION_EPOCH,
        isr: isr.to_vec(),
        replicas: vec![1, 2, 3],
        min_insync_replicas: min_insync,
    }
}

/// A log model ending at `leo` whose epochs start at `epochs`.
fn log(leo: i64, epochs: &[(i32, i64)]) -> LocalLog {
    let mut cache = EpochCache::new();
    for &(e, o) in epochs {
        cache.assign(e, o).unwrap();
    }
    LocalLog::new(
        LogOffsets {
            log_start_offset: 0,
            log_end_offset: leo,
            flushed_offset: 0,
            high_watermark: 0,
        },
        cache,
        ProducerTable::new(),
    )
}

/// Node 1 leading epoch 5 over an empty log.
fn leader(isr: &[NodeId], min_insync: usize) -> Replica {
    leader_over(log(0, &[]), 0, isr, min_insync)
}

fn leader_over(log: LocalLog, hw: i64, isr: &[NodeId], min_insync: usize) -> Replica {
    let mut r = Replica::new(1, config(), log, hw);
    r.step(0, Event::Metadata(state(1, EPOCH, isr, min_insync)));
    assert_eq!(r.role(), RoleKind::Leader);
    r
}

fn batch(values: &[&str]) -> BytesMut {
    let mut b = BatchBuilder::new(0);
    for v in values {
        b.push(0, None, Some(v.as_bytes()));
    }
    b.build()
}

fn idempotent_batch(producer: (i64, i16, i32), values: &[&str]) -> BytesMut {
    let mut b = BatchBuilder::new(0).producer(producer.0, producer.1, producer.2);
    for v in values {
        b.push(0, None, Some(v.as_bytes()));
    }
    b.build()
}

fn produce_request(acks: Acks, records: BytesMut) -> ProduceRequest {
    ProduceRequest {
        acks,
        durability: Durability::Replicated,
        timeout_ms: 1_000,
        current_leader_epoch: Some(EPOCH),
        records,
    }
}

fn produce(r: &mut Replica, now: i64, id: u64, acks: Acks, values: &[&str]) -> Vec<Action> {
    r.step(
        now,
        Event::Produce {
            id: RequestId(id),
            request: produce_request(acks, batch(values)),
        },
    )
}

/// The batch the leader should append: `values` stamped at `base` with `epoch`.
fn stamped(values: &[&str], base: i64, epoch: i32) -> Bytes {
    let mut b = batch(values);
    batch::set_base_offset(&mut b, base);
    batch::set_leader_epoch(&mut b, epoch);
    b.freeze()
}

fn appended(r: &mut Replica, now: i64, leo: i64) -> Vec<Action> {
    r.step(
        now,
        Event::Appended {
            log_end_offset: leo,
            flushed_offset: 0,
        },
    )
}

fn follower_fetch(replica: NodeId, offset: i64, last_epoch: Option<i32>) -> FetchRequest {
    FetchRequest {
        replica_id: Some(replica),
        fetch_offset: offset,
        last_fetched_epoch: last_epoch,
        current_leader_epoch: Some(EPOCH),
        max_bytes: 1000,
        max_wait_ms: 500,
        known_high_watermark: None,
    }
}

fn fetch(r: &mut Replica, now: i64, id: u64, request: FetchRequest) -> Vec<Action> {
    r.step(
        now,
        Event::Fetch {
            id: RequestId(id),
            request,
        },
    )
}

/// The answer to a follower's fetch (checked against compaction horizon 0 when inside the log).
fn answer(id: u64, hw: i64, leo: i64, offset: i64, end: i64) -> Action {
    with_checked_horizon(
        consumer_answer(id, hw, leo, offset, end),
        (offset > 0).then_some(0),
    )
}

fn with_checked_horizon(mut action: Action, horizon: Option<i64>) -> Action {
    if let Action::RespondFetch {
        result: Ok(data), ..
    } = &mut action
    {
        data.records.compaction_horizon = horizon;
    }
    action
}

fn consumer_answer(id: u64, hw: i64, leo: i64, offset: i64, end: i64) -> Action {
    Action::RespondFetch {
        id: RequestId(id),
        result: Ok(FetchData {
            high_watermark: hw,
            log_start_offset: 0,
            log_end_offset: leo,
            diverging_epoch: None,
            records: ReadRange {
                offset,
                max_bytes: 1000,
                end_offset: end,
                compaction_horizon: None,
            },
            flush_up_to: None,
            compaction_horizon: 0,
        }),
    }
}

fn ok(id: u64, base_offset: i64) -> Action {
    Action::CompleteProduce {
        id: RequestId(id),
        result: Ok(ProduceOk {
            base_offset,
            log_start_offset: 0,
        }),
    }
}

fn failed(id: u64, error: ProduceError) -> Action {
    Action::CompleteProduce {
        id: RequestId(id),
        result: Err(error),
    }
}

fn hw(high_watermark: i64) -> Action {
    Action::HighWatermarkAdvanced { high_watermark }
}

/// A leader with 3 records appended (offsets 0..3) under ISR `isr`.
fn leader_with_three(isr: &[NodeId], min_insync: usize, acks: Acks) -> Replica {
    let mut r = leader(isr, min_insync);
    produce(&mut r, 0, 1, acks, &["a", "b", "c"]);
    appended(&mut r, 0, 3);
    r
}

// ---- rule 1: fencing ----

#[test]
fn requests_from_older_epochs_are_fenced_and_newer_ones_unknown() {
    let mut r = leader(&[1, 2, 3], 2);
    let mut request = produce_request(Acks::Leader, batch(&["a"]));
    request.current_leader_epoch = Some(EPOCH - 1);
    let out = r.step(
        0,
        Event::Produce {
            id: RequestId(1),
            request: request.clone(),
        },
    );
    assert_eq!(
        out,
        vec![failed(
            1,
            ProduceError::FencedLeaderEpoch {
                request_epoch: 4,
                current_epoch: 5
            }
        )]
    );
    request.current_leader_epoch = Some(EPOCH + 1);
    let out = r.step(
        0,
        Event::Produce {
            id: RequestId(2),
            request,
        },
    );
    assert_eq!(
        out,
        vec![failed(
            2,
            ProduceError::UnknownLeaderEpoch {
                request_epoch: 6,
                current_epoch: 5
            }
        )]
    );
    let mut old = follower_fetch(2, 0, None);
    old.current_leader_epoch = Some(3);
    assert_eq!(
        fetch(&mut r, 0, 3, old),
        vec![Action::RespondFetch {
            id: RequestId(3),
            result: Err(ReadError::FencedLeaderEpoch {
                request_epoch: 3,
                current_epoch: 5
            })
        }]
    );
}

#[test]
fn a_follower_refuses_produce_with_a_leader_hint() {
    let mut r = Replica::new(1, config(), log(0, &[]), 0);
    let out = r.step(0, Event::Metadata(state(2, EPOCH, &[1, 2, 3], 2)));
    assert!(matches!(out.as_slice(), [Action::SendFetch { to: 2, .. }]));
    assert_eq!(
        produce(&mut r, 0, 1, Acks::All, &["a"]),
        vec![failed(
            1,
            ProduceError::NotLeader {
                leader: Some(2),
                leader_epoch: 5
            }
        )]
    );
}

#[test]
fn stale_metadata_is_ignored() {
    let mut r = leader(&[1, 2, 3], 2);
    assert_eq!(
        r.step(0, Event::Metadata(state(2, EPOCH - 1, &[2], 1))),
        vec![]
    );
    assert_eq!(r.role(), RoleKind::Leader);
    assert_eq!(r.leader_epoch(), EPOCH);
}

// ---- rule 4: acks ----

#[test]
fn acks_1_completes_after_the_local_append_only() {
    let mut r = leader(&[1, 2, 3], 2);
    let out = produce(&mut r, 0, 1, Acks::Leader, &["a", "b"]);
    assert_eq!(
        out,
        vec![Action::Append {
            batches: stamped(&["a", "b"], 0, EPOCH),
            compaction_horizon: None,
        }]
    );
    assert_eq!(appended(&mut r, 0, 2), vec![ok(1, 0)]);
    assert_eq!(r.high_watermark(), 0, "no follower has the records");
}

#[test]
fn acks_0_gets_no_reply() {
    let mut r = leader(&[1, 2, 3], 2);
    let out = produce(&mut r, 0, 1, Acks::None, &["a"]);
    assert_eq!(
        out,
        vec![Action::Append {
            batches: stamped(&["a"], 0, EPOCH),
            compaction_horizon: None,
        }]
    );
    assert_eq!(appended(&mut r, 0, 1), vec![]);
}

#[test]
fn acks_all_is_refused_up_front_below_min_insync() {
    let mut r = leader(&[1, 2], 3);
    assert_eq!(
        produce(&mut r, 0, 1, Acks::All, &["a"]),
        vec![failed(
            1,
            ProduceError::NotEnoughReplicas {
                isr_size: 2,
                min_insync_replicas: 3
            }
        )]
    );
    assert_eq!(
        r.local_log().pending_end_offset(),
        0,
        "nothing was appended"
    );
}

#[test]
fn acks_all_completes_when_the_hw_passes_the_batch() {
    let mut r = leader_with_three(&[1, 2], 2, Acks::All);
    assert_eq!(
        fetch(&mut r, 0, 10, follower_fetch(2, 3, Some(EPOCH))),
        vec![hw(3), ok(1, 0), answer(10, 3, 3, 3, 3)]
    );
}

#[test]
fn isr_shrinking_below_min_insync_makes_waiting_acks_all_indeterminate() {
    let mut r = leader_with_three(&[1, 2, 3], 2, Acks::All);
    let out = r.step(
        0,
        Event::Metadata(PartitionState {
            partition_epoch: PARTITION_EPOCH + 1,
            ..state(1, EPOCH, &[1], 2)
        }),
    );
    let error = ProduceError::NotEnoughReplicasAfterAppend {
        base_offset: 0,
        isr_size: 1,
        min_insync_replicas: 2,
    };
    assert!(error.is_indeterminate());
    assert_eq!(out, vec![failed(1, error)]);
    assert_eq!(
        r.high_watermark(),
        0,
        "the HW stays frozen under min.insync"
    );
}

#[test]
fn an_acks_all_produce_that_never_commits_times_out_indeterminate() {
    let mut r = leader_with_three(&[1, 2], 2, Acks::All);
    assert_eq!(r.step(999, Event::Tick), vec![]);
    assert_eq!(
        r.step(1_000, Event::Tick),
        vec![failed(
            1,
            ProduceError::TimedOutAfterAppend { base_offset: 0 }
        )]
    );
}

#[test]
fn stepping_down_fails_waiting_produces_as_indeterminate() {
    let mut r = leader_with_three(&[1, 2], 2, Acks::All);
    let out = r.step(0, Event::Metadata(state(2, EPOCH + 1, &[1, 2], 2)));
    assert_eq!(
        out[0],
        failed(
            1,
            ProduceError::NotLeaderAfterAppend {
                base_offset: 0,
                leader: Some(2),
                leader_epoch: 6,
            }
        )
    );
    assert!(matches!(out[1], Action::SendFetch { to: 2, .. }));
    assert_eq!(out.len(), 2);
}

#[test]
fn a_batch_that_is_not_exactly_one_valid_batch_is_refused() {
    let mut r = leader(&[1, 2], 1);
    let mut two = batch(&["a"]);
    two.extend_from_slice(&batch(&["b"]));
    let out = r.step(
        0,
        Event::Produce {
            id: RequestId(1),
            request: produce_request(Acks::Leader, two),
        },
    );
    assert_eq!(
        out,
        vec![failed(
            1,
            ProduceError::InvalidRequest("a produce must hold exactly one record batch")
        )]
    );
    let mut corrupt = batch(&["a"]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    let out = r.step(
        0,
        Event::Produce {
            id: RequestId(2),
            request: produce_request(Acks::Leader, corrupt),
        },
    );
    assert!(matches!(
        out.as_slice(),
        [Action::CompleteProduce {
            result: Err(ProduceError::InvalidRecord(_)),
            ..
        }]
    ));
}

// ---- rule 3: the high watermark ----

#[test]
fn hw_is_the_min_leo_over_the_isr() {
    let mut r = leader_with_three(&[1, 2, 3], 2, Acks::Leader);
    // Follower 3 has not fetched in this epoch: its LEO is unknown, so the HW waits.
    assert_eq!(
        fetch(&mut r, 0, 10, follower_fetch(2, 3, Some(EPOCH))),
        vec![answer(10, 0, 3, 3, 3)]
    );
    assert_eq!(
        fetch(&mut r, 0, 11, follower_fetch(3, 2, Some(EPOCH))),
        vec![hw(2), answer(11, 2, 3, 2, 3)]
    );
}

#[test]
fn hw_does_not_advance_while_the_isr_is_below_min_insync() {
    let mut r = leader_with_three(&[1, 2], 3, Acks::Leader);
    assert_eq!(
        fetch(&mut r, 0, 10, follower_fetch(2, 3, Some(EPOCH))),
        vec![answer(10, 0, 3, 3, 3)]
    );
    assert_eq!(r.high_watermark(), 0);
}

#[test]
fn hw_never_goes_backwards_when_a_follower_fetches_lower() {
    let mut r = leader_with_three(&[1, 2], 2, Acks::Leader);
    fetch(&mut r, 0, 10, follower_fetch(2, 3, Some(EPOCH)));
    assert_eq!(r.high_watermark(), 3);
    assert_eq!(
        fetch(&mut r, 0, 11, follower_fetch(2, 1, Some(EPOCH))),
        vec![answer(11, 3, 3, 1, 3)]
    );
    assert_eq!(r.high_watermark(), 3);
}

#[test]
fn a_proposed_removal_counts_only_once_committed() {
    let mut r = leader_with_three(&[1, 2, 3], 2, Acks::Leader);
    fetch(&mut r, 0, 10, follower_fetch(2, 3, Some(EPOCH)));
    // 3 never fetches: after the lag time the leader proposes {1, 2}...
    let out = r.step(30_001, Event::Tick);
    assert_eq!(
        out,
        vec![Action::ProposeIsr {
            leader_epoch: EPOCH,
            partition_epoch: PARTITION_EPOCH,
            isr: vec![1, 2]
        }]
    );
    // ... but until the controller commits it, 3 still holds the HW back.
    assert_eq!(
        fetch(&mut r, 30_001, 11, follower_fetch(2, 3, Some(EPOCH))),
        vec![]
    );
    assert_eq!(r.high_watermark(), 0);
    assert_eq!(
        r.step(30_001, Event::Tick),
        vec![],
        "one proposal in flight"
    );
    let out = r.step(
        30_002,
        Event::IsrChangeResult(Ok(IsrState {
            leader_epoch: EPOCH,
            partition_epoch: PARTITION_EPOCH + 1,
            isr: vec![1, 2],
        })),
    );
    assert_eq!(
        out,
        vec![hw(3), answer(11, 3, 3, 3, 3)],
        "and the parked fetch learns it"
    );
}

#[test]
fn a_proposed_addition_counts_at_once() {
    let mut r = leader_with_three(&[1, 2], 2, Acks::Leader);
    fetch(&mut r, 0, 10, follower_fetch(2, 3, Some(EPOCH)));
    assert_eq!(r.high_watermark(), 3);
    // 3 catches up: proposed at once, and from now on the HW waits for it too.
    let out = fetch(&mut r, 0, 11, follower_fetch(3, 3, Some(EPOCH)));
    assert_eq!(
        out,
        vec![
            Action::ProposeIsr {
                leader_epoch: EPOCH,
                partition_epoch: PARTITION_EPOCH,
                isr: vec![1, 2, 3]
            },
            answer(11, 3, 3, 3, 3)
        ]
    );
    produce(&mut r, 0, 2, Acks::Leader, &["d"]);
    appended(&mut r, 0, 4);
    fetch(&mut r, 0, 12, follower_fetch(2, 4, Some(EPOCH)));
    assert_eq!(
        r.high_watermark(),
        3,
        "3 (proposed) has not fetched offset 3 yet"
    );
}

// ---- rule 5: ISR changes ----

#[test]
fn a_lagging_follower_is_proposed_out_after_the_lag_time() {
    let mut r = leader_with_three(&[1, 2, 3], 2, Acks::Leader);
    fetch(&mut r, 0, 10, follower_fetch(2, 3, Some(EPOCH)));
    fetch(&mut r, 0, 11, follower_fetch(3, 1, Some(EPOCH)));
    assert_eq!(
        r.step(30_000, Event::Tick),
        vec![],
        "not yet past replica.lag.time.max"
    );
    assert_eq!(
        r.step(30_001, Event::Tick),
        vec![Action::ProposeIsr {
            leader_epoch: EPOCH,
            partition_epoch: PARTITION_EPOCH,
            isr: vec![1, 2]
        }]
    );
}

#[test]
fn a_caught_up_follower_stays_in_sync_on_an_idle_partition() {
    let mut r = leader_with_three(&[1, 2], 2, Acks::Leader);
    fetch(&mut r, 0, 10, follower_fetch(2, 3, Some(EPOCH)));
    assert_eq!(
        fetch(&mut r, 0, 11, follower_fetch(2, 3, Some(EPOCH))),
        vec![],
        "parked"
    );
    // Caught up to the leader's LEO, so in sync however long ago it last caught up.
    assert_eq!(r.step(100_000, Event::Tick), vec![answer(11, 3, 3, 3, 3)]);
    assert_eq!(r.isr_proposal(), None);
}

#[test]
fn a_stale_proposal_waits_for_metadata() {
    let mut r = leader_with_three(&[1, 2, 3], 2, Acks::Leader);
    r.step(30_001, Event::Tick);
    let out = r.step(
        30_001,
        Event::IsrChangeResult(Err(IsrChangeError::InvalidUpdateVersion)),
    );
    assert_eq!(out, vec![]);
    assert_eq!(
        r.step(60_000, Event::Tick),
        vec![],
        "no retry before new metadata"
    );
    let out = r.step(
        60_000,
        Event::Metadata(PartitionState {
            partition_epoch: PARTITION_EPOCH + 1,
            ..state(1, EPOCH, &[1, 2, 3], 2)
        }),
    );
    assert_eq!(out, vec![]);
    assert_eq!(
        r.step(60_001, Event::Tick),
        vec![Action::ProposeIsr {
            leader_epoch: EPOCH,
            partition_epoch: PARTITION_EPOCH + 1,
            isr: vec![1]
        }]
    );
}

#[test]
fn a_follower_rejoins_only_past_the_hw_and_the_epoch_start() {
    // KAFKA-7128: the new leader's epoch starts at 8, its HW is still 5.
    let mut r = leader_over(log(8, &[(1, 0)]), 5, &[1, 2], 2);
    assert_eq!(
        fetch(&mut r, 0, 10, follower_fetch(3, 6, Some(1))),
        vec![answer(10, 5, 8, 6, 8)]
    );
    assert_eq!(r.isr_proposal(), None, "LEO 6 ≥ HW 5 but < epoch start 8");
    let out = fetch(&mut r, 0, 11, follower_fetch(3, 8, Some(1)));
    assert_eq!(
        out[0],
        Action::ProposeIsr {
            leader_epoch: EPOCH,
            partition_epoch: PARTITION_EPOCH,
            isr: vec![1, 2, 3]
        }
    );
}

// ---- rule 3: a new leader's latest offset ----

#[test]
fn a_new_leader_answers_offset_not_available_until_its_hw_reaches_its_epoch_start() {
    let mut r = leader_over(log(8, &[(1, 0)]), 5, &[1, 2], 2);
    assert_eq!(
        r.latest_offset(Some(EPOCH), Isolation::Committed),
        Err(ReadError::OffsetNotAvailable {
            high_watermark: 5,
            epoch_start_offset: 8
        })
    );
    assert_eq!(
        fetch(&mut r, 0, 10, follower_fetch(2, 8, Some(1))),
        vec![hw(8), answer(10, 8, 8, 8, 8)]
    );
    assert_eq!(r.latest_offset(Some(EPOCH), Isolation::Committed), Ok(8));
}

// ---- rule 2: long poll ----

#[test]
fn a_fetch_with_nothing_new_is_parked_until_an_append() {
    let mut r = leader_with_three(&[1, 2], 2, Acks::Leader);
    fetch(&mut r, 0, 10, follower_fetch(2, 3, Some(EPOCH)));
    assert_eq!(
        fetch(&mut r, 1, 11, follower_fetch(2, 3, Some(EPOCH))),
        vec![],
        "parked"
    );
    assert_eq!(r.parked_fetches(), 1);
    produce(&mut r, 2, 2, Acks::Leader, &["d"]);
    assert_eq!(
        appended(&mut r, 2, 4),
        vec![answer(11, 3, 4, 3, 4), ok(2, 3)]
    );
}

#[test]
fn a_parked_fetch_is_answered_empty_at_its_max_wait() {
    let mut r = leader_with_three(&[1, 2], 2, Acks::Leader);
    fetch(&mut r, 0, 10, follower_fetch(2, 3, Some(EPOCH)));
    assert_eq!(
        fetch(&mut r, 100, 11, follower_fetch(2, 3, Some(EPOCH))),
        vec![]
    );
    assert_eq!(r.step(599, Event::Tick), vec![]);
    assert_eq!(r.step(600, Event::Tick), vec![answer(11, 3, 3, 3, 3)]);
}

#[test]
fn a_parked_follower_fetch_wakes_when_the_hw_moves() {
    let mut r = leader_with_three(&[1, 2, 3], 2, Acks::Leader);
    fetch(&mut r, 0, 10, follower_fetch(2, 3, Some(EPOCH)));
    assert_eq!(
        fetch(&mut r, 0, 11, follower_fetch(2, 3, Some(EPOCH))),
        vec![],
        "parked"
    );
    // 3 catches up: the HW moves to 3, and 2 is told at once rather than at its max wait.
    assert_eq!(
        fetch(&mut r, 0, 12, follower_fetch(3, 3, Some(EPOCH))),
        vec![hw(3), answer(11, 3, 3, 3, 3), answer(12, 3, 3, 3, 3)]
    );
}

/// A follower's fetch that says which HW it knows (what every Tandem follower sends).
fn fetch_knowing(replica: NodeId, offset: i64, known_hw: i64) -> FetchRequest {
    FetchRequest {
        known_high_watermark: Some(known_hw),
        ..follower_fetch(replica, offset, Some(EPOCH))
    }
}

#[test]
fn a_follower_whose_known_hw_is_behind_is_answered_at_once() {
    let mut r = leader_with_three(&[1, 2, 3], 2, Acks::Leader);
    assert_eq!(
        fetch(&mut r, 0, 11, fetch_knowing(2, 3, 0)),
        vec![],
        "parked"
    );
    // 3 catches up: the HW moves to 3 and 2's parked fetch is answered with it...
    assert_eq!(
        fetch(&mut r, 0, 12, fetch_knowing(3, 3, 0)),
        vec![hw(3), answer(11, 3, 3, 3, 3), answer(12, 3, 3, 3, 3)]
    );
    // ...but that answer never reached 2 (its fetcher had stopped waiting for it). 2 says it
    // still knows HW 0: it is answered at once, not parked until the HW moves again.
    assert_eq!(
        fetch(&mut r, 1, 13, fetch_knowing(2, 3, 0)),
        vec![answer(13, 3, 3, 3, 3)]
    );
    assert_eq!(r.parked_fetches(), 0);
}

#[test]
fn a_follower_that_knows_the_hw_is_parked() {
    let mut r = leader_with_three(&[1, 2], 2, Acks::Leader);
    assert_eq!(
        fetch(&mut r, 0, 10, fetch_knowing(2, 3, 0)),
        vec![hw(3), answer(10, 3, 3, 3, 3)]
    );
    // Nothing new and the HW it knows is ours: it waits for news (no busy loop).
    assert_eq!(fetch(&mut r, 1, 11, fetch_knowing(2, 3, 3)), vec![]);
    assert_eq!(r.parked_fetches(), 1);
    // A follower ahead of a new leader's HW is not news either.
    assert_eq!(
        fetch(&mut r, 2, 12, fetch_knowing(2, 3, 5)),
        vec![answer(11, 3, 3, 3, 3)]
    );
    assert_eq!(r.parked_fetches(), 1);
}

#[test]
fn a_new_fetch_from_a_follower_answers_its_abandoned_parked_one() {
    let mut r = leader_with_three(&[1, 2], 2, Acks::Leader);
    fetch(&mut r, 0, 10, fetch_knowing(2, 3, 0));
    assert_eq!(
        fetch(&mut r, 1, 11, fetch_knowing(2, 3, 3)),
        vec![],
        "parked"
    );
    // The follower gave up on 11 and fetches again: 11 is answered now (the driver drops
    // it), and only 12 stays parked.
    assert_eq!(
        fetch(&mut r, 2, 12, fetch_knowing(2, 3, 3)),
        vec![answer(11, 3, 3, 3, 3)]
    );
    assert_eq!(r.parked_fetches(), 1);
    // Another follower's parked fetch is not its to supersede.
    fetch(&mut r, 3, 13, fetch_knowing(3, 3, 3));
    assert_eq!(r.parked_fetches(), 2);
}

#[test]
fn a_consumer_reads_only_below_the_hw() {
    let mut r = leader_with_three(&[1, 2], 2, Acks::Leader);
    fetch(&mut r, 0, 10, follower_fetch(2, 2, Some(EPOCH)));
    let consumer = FetchRequest {
        replica_id: None,
        current_leader_epoch: None,
        ..follower_fetch(0, 0, None)
    };
    assert_eq!(
        fetch(&mut r, 0, 11, consumer.clone()),
        vec![answer(11, 2, 3, 0, 2)]
    );
    let at_hw = FetchRequest {
        fetch_offset: 2,
        ..consumer
    };
    assert_eq!(
        fetch(&mut r, 0, 12, at_hw),
        vec![],
        "parked until the HW moves"
    );
}

// ---- rule 6: divergence, on the leader ----

fn diverging(id: u64, hw: i64, leo: i64, offset: i64, epoch: i32, end_offset: i64) -> Action {
    Action::RespondFetch {
        id: RequestId(id),
        result: Ok(FetchData {
            high_watermark: hw,
            log_start_offset: 0,
            log_end_offset: leo,
            diverging_epoch: Some(DivergingEpoch { epoch, end_offset }),
            records: ReadRange {
                offset,
                max_bytes: 1000,
                end_offset: offset,
                compaction_horizon: None,
            },
            flush_up_to: None,
            compaction_horizon: 0,
        }),
    }
}

#[test]
fn the_leader_detects_divergence_from_the_last_fetched_epoch() {
    // Leader log: epoch 1 at 0..5, epoch 3 at 5..8; it leads epoch 5 from offset 8.
    let mut r = leader_over(log(8, &[(1, 0), (3, 5)]), 0, &[1, 2, 3], 2);
    // Epoch 2 is unknown here: its largest known predecessor, 1, ends at 5.
    assert_eq!(
        fetch(&mut r, 0, 10, follower_fetch(2, 7, Some(2))),
        vec![diverging(10, 0, 8, 7, 1, 5)]
    );
    // Epoch 3 ends at 8 here, below the follower's fetch offset 9.
    assert_eq!(
        fetch(&mut r, 0, 11, follower_fetch(2, 9, Some(3))),
        vec![diverging(11, 0, 8, 9, 3, 8)]
    );
    // Epoch 4 (a zombie's) is answered by the current epoch's start, though no batch wrote it.
    assert_eq!(
        fetch(&mut r, 0, 12, follower_fetch(2, 6, Some(4))),
        vec![diverging(12, 0, 8, 6, 3, 8)]
    );
    // Epoch 3 up to 8 agrees: records, no divergence, and the follower's LEO counts.
    assert_eq!(
        fetch(&mut r, 0, 13, follower_fetch(2, 8, Some(3))),
        vec![answer(13, 0, 8, 8, 8)]
    );
    assert_eq!(r.follower_log_end_offset(2), Some(8));
}

#[test]
fn a_diverging_fetch_does_not_count_as_progress() {
    let mut r = leader_over(log(8, &[(1, 0), (3, 5)]), 0, &[1, 2], 2);
    fetch(&mut r, 0, 10, follower_fetch(2, 9, Some(3)));
    assert_eq!(r.follower_log_end_offset(2), None);
    assert_eq!(r.high_watermark(), 0);
}

// ---- rule 6: divergence, on the follower ----

/// Node 2 following node 1 in epoch 5, over `log`, with its first fetch taken.
fn follower_over(log: LocalLog, hw: i64) -> (Replica, FetchId) {
    let mut r = Replica::new(2, config(), log, hw);
    let out = r.step(0, Event::Metadata(state(1, EPOCH, &[1, 2], 1)));
    let [Action::SendFetch { fetch_id, .. }] = out.as_slice() else {
        panic!("expected one fetch, got {out:?}");
    };
    (r, *fetch_id)
}

fn data(
    hw: i64,
    diverging: Option<(i32, i64)>,
    records: Bytes,
) -> Result<FetchData<Bytes>, ReadError> {
    Ok(FetchData {
        high_watermark: hw,
        log_start_offset: 0,
        log_end_offset: 100,
        diverging_epoch: diverging.map(|(epoch, end_offset)| DivergingEpoch { epoch, end_offset }),
        records,
        flush_up_to: None,
        compaction_horizon: 0,
    })
}

/// Node 2's fetch to node 1, saying it knows HW `known_hw`.
fn send_fetch(id: u64, offset: i64, last_epoch: Option<i32>, known_hw: i64) -> Action {
    Action::SendFetch {
        to: 1,
        fetch_id: FetchId(id),
        request: FetchRequest {
            replica_id: Some(2),
            fetch_offset: offset,
            last_fetched_epoch: last_epoch,
            current_leader_epoch: Some(EPOCH),
            max_bytes: config().replica_fetch_max_bytes,
            max_wait_ms: config().replica_fetch_wait_max_ms,
            known_high_watermark: Some(known_hw),
        },
    }
}

#[test]
fn a_restarted_follower_fetches_from_its_leo_not_its_hw() {
    // KIP-101: the HW checkpoint says 2, the log holds 5. Truncating to 2 loses acked data.
    let mut r = Replica::new(2, config(), log(5, &[(1, 0)]), 2);
    let out = r.step(0, Event::Metadata(state(1, EPOCH, &[1, 2], 1)));
    assert_eq!(out, vec![send_fetch(1, 5, Some(1), 2)]);
}

#[test]
fn the_follower_truncates_to_where_a_known_epoch_ends_on_both_sides() {
    let (mut r, fetch_id) = follower_over(log(8, &[(1, 0), (2, 5)]), 0);
    let out = r.step(
        0,
        Event::FetchResponse {
            fetch_id,
            response: data(50, Some((1, 6)), Bytes::new()),
        },
    );
    // Epoch 1 ends at 6 on the leader, at 5 here: cut to 5, and the leader's HW 50 is not applied.
    assert_eq!(
        out,
        vec![Action::Truncate { offset: 5 }, send_fetch(2, 5, Some(1), 0)]
    );
    assert_eq!(r.high_watermark(), 0);
}

#[test]
fn the_follower_iterates_when_it_does_not_know_the_leaders_epoch() {
    // KIP-279: we know epochs 1, 2, 4; the leader answers with 3, which we never saw.
    let (mut r, fetch_id) = follower_over(log(9, &[(1, 0), (2, 3), (4, 6)]), 0);
    let out = r.step(
        0,
        Event::FetchResponse {
            fetch_id,
            response: data(0, Some((3, 7)), Bytes::new()),
        },
    );
    // Cut to the end of our largest epoch below 3 (epoch 2 ends at 6) and ask again.
    assert_eq!(
        out,
        vec![Action::Truncate { offset: 6 }, send_fetch(2, 6, Some(2), 0)]
    );
}

#[test]
fn the_follower_applies_the_leaders_hw_after_appending_as_min_with_its_leo() {
    let (mut r, fetch_id) = follower_over(log(0, &[]), 0);
    let records = stamped(&["a", "b"], 0, EPOCH);
    let out = r.step(
        0,
        Event::FetchResponse {
            fetch_id,
            response: data(10, None, records.clone()),
        },
    );
    // The leader never compacted (horizon 0): nothing to raise.
    assert_eq!(
        out,
        vec![Action::Append {
            batches: records,
            compaction_horizon: None,
        }]
    );
    assert_eq!(
        r.high_watermark(),
        0,
        "not before the records are on the log"
    );
    let out = appended(&mut r, 0, 2);
    assert_eq!(out, vec![hw(2), send_fetch(2, 2, Some(EPOCH), 2)]);
}

#[test]
fn the_follower_refreshes_metadata_when_fenced_and_backs_off_when_the_leader_is_behind() {
    let (mut r, fetch_id) = follower_over(log(0, &[]), 0);
    let out = r.step(
        0,
        Event::FetchResponse {
            fetch_id,
            response: Err(ReadError::FencedLeaderEpoch {
                request_epoch: 5,
                current_epoch: 6,
            }),
        },
    );
    assert_eq!(out, vec![Action::RefreshMetadata]);
    assert_eq!(r.step(999, Event::Tick), vec![]);
    assert_eq!(r.step(1_000, Event::Tick), vec![send_fetch(2, 0, None, 0)]);
    let out = r.step(
        1_000,
        Event::FetchResponse {
            fetch_id: FetchId(2),
            response: Err(ReadError::UnknownLeaderEpoch {
                request_epoch: 5,
                current_epoch: 4,
            }),
        },
    );
    assert_eq!(out, vec![]);
    assert_eq!(r.step(2_000, Event::Tick), vec![send_fetch(3, 0, None, 0)]);
}

#[test]
fn an_answer_to_an_old_fetch_is_dropped() {
    let (mut r, fetch_id) = follower_over(log(0, &[]), 0);
    r.step(0, Event::Metadata(state(3, EPOCH + 1, &[2, 3], 1)));
    let out = r.step(
        0,
        Event::FetchResponse {
            fetch_id,
            response: data(9, None, stamped(&["x"], 0, EPOCH)),
        },
    );
    assert_eq!(out, vec![]);
}

#[test]
fn a_follower_refuses_records_before_its_leo_and_takes_a_gap() {
    let (mut r, fetch_id) = follower_over(log(3, &[(EPOCH, 0)]), 0);
    let out = r.step(
        0,
        Event::FetchResponse {
            fetch_id,
            response: data(9, None, stamped(&["x"], 1, EPOCH)),
        },
    );
    assert_eq!(out, vec![]);
    assert_eq!(r.local_log().pending_end_offset(), 3);
    // A gap a leader's compaction left is fine: offsets jump, the log end follows.
    let fetch_id = match r.step(1_000, Event::Tick).as_slice() {
        [Action::SendFetch { fetch_id, .. }] => *fetch_id,
        other => panic!("expected a fetch, got {other:?}"),
    };
    let gap = stamped(&["y"], 7, EPOCH);
    let out = r.step(
        1_000,
        Event::FetchResponse {
            fetch_id,
            response: data(9, None, gap.clone()),
        },
    );
    assert_eq!(
        out,
        vec![Action::Append {
            batches: gap,
            compaction_horizon: None,
        }]
    );
    assert_eq!(r.local_log().pending_end_offset(), 8);
}

// ---- rule 9: idempotent producers ----

#[test]
fn a_retried_batch_gets_its_original_offset() {
    let mut r = leader(&[1], 1);
    let send = |r: &mut Replica, id: u64, seq: i32, values: &[&str]| {
        r.step(
            0,
            Event::Produce {
                id: RequestId(id),
                request: produce_request(Acks::Leader, idempotent_batch((7, 0, seq), values)),
            },
        )
    };
    assert_eq!(send(&mut r, 1, 0, &["a", "b"]).len(), 1);
    appended(&mut r, 0, 2);
    assert_eq!(
        send(&mut r, 2, 0, &["a", "b"]),
        vec![ok(2, 0)],
        "no second append"
    );
    assert_eq!(
        send(&mut r, 3, 5, &["c"]),
        vec![failed(
            3,
            ProduceError::OutOfOrderSequence {
                producer_id: 7,
                expected_sequence: 2,
                sequence: 5
            }
        )]
    );
}

#[test]
fn a_retry_of_an_uncommitted_batch_waits_for_it_to_commit() {
    let mut r = leader(&[1, 2], 2);
    let request = || produce_request(Acks::All, idempotent_batch((7, 0, 0), &["a"]));
    r.step(
        0,
        Event::Produce {
            id: RequestId(1),
            request: request(),
        },
    );
    appended(&mut r, 0, 1);
    assert_eq!(
        r.step(
            0,
            Event::Produce {
                id: RequestId(2),
                request: request()
            }
        ),
        vec![]
    );
    assert_eq!(
        fetch(&mut r, 0, 10, follower_fetch(2, 1, Some(EPOCH))),
        vec![hw(1), ok(1, 0), ok(2, 0), answer(10, 1, 1, 1, 1)]
    );
}

// ---- durability = flushed ----

#[test]
fn a_flushed_produce_waits_for_every_isr_member_to_flush() {
    let mut r = leader(&[1, 2], 2);
    let request = ProduceRequest {
        durability: Durability::Flushed,
        ..produce_request(Acks::All, batch(&["a"]))
    };
    let out = r.step(
        0,
        Event::Produce {
            id: RequestId(1),
            request,
        },
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        appended(&mut r, 0, 1),
        vec![Action::Flush],
        "the leader flushes its own log"
    );
    let out = fetch(&mut r, 0, 10, follower_fetch(2, 1, Some(EPOCH)));
    let [Action::HighWatermarkAdvanced { high_watermark: 1 }, Action::RespondFetch { result: Ok(d), .. }] =
        out.as_slice()
    else {
        panic!("unexpected {out:?}");
    };
    assert_eq!(d.flush_up_to, Some(1), "followers are asked to flush");
    assert_eq!(
        r.step(0, Event::Flushed { flushed_offset: 1 }),
        vec![],
        "the follower has not"
    );
    let out = r.step(
        0,
        Event::FlushReport {
            replica_id: 2,
            leader_epoch: EPOCH,
            flushed_offset: 1,
        },
    );
    assert_eq!(out, vec![ok(1, 0)]);
}

/// Found by the simulator (seed 57): a duplicated flush report delivered late lowered the
/// leader's view of the follower's flushed offset, and a retried flushed produce then waited
/// forever (a follower reports only increases).
#[test]
fn a_late_flush_report_does_not_lower_the_flushed_offset() {
    let mut r = leader(&[1, 2], 2);
    let request = ProduceRequest {
        durability: Durability::Flushed,
        ..produce_request(Acks::All, batch(&["a"]))
    };
    r.step(
        0,
        Event::Produce {
            id: RequestId(1),
            request,
        },
    );
    appended(&mut r, 0, 1);
    r.step(0, Event::Flushed { flushed_offset: 1 });
    for flushed_offset in [1, 0] {
        r.step(
            0,
            Event::FlushReport {
                replica_id: 2,
                leader_epoch: EPOCH,
                flushed_offset,
            },
        );
    }
    let out = fetch(&mut r, 0, 10, follower_fetch(2, 1, Some(EPOCH)));
    assert!(
        out.contains(&ok(1, 0)),
        "acknowledged once replicated: {out:?}"
    );
}

/// Found by the simulator (seed 57): a retried flushed produce whose batch is already in the
/// log appends nothing, so nothing used to issue the flush it waits for.
#[test]
fn a_retried_flushed_produce_flushes_the_log_it_waits_for() {
    let mut r = leader(&[1], 1);
    let request = || ProduceRequest {
        durability: Durability::Replicated,
        ..produce_request(Acks::All, idempotent_batch((7, 0, 0), &["a"]))
    };
    r.step(
        0,
        Event::Produce {
            id: RequestId(1),
            request: request(),
        },
    );
    let out = appended(&mut r, 0, 1);
    assert!(out.contains(&ok(1, 0)), "{out:?}");
    let retry = ProduceRequest {
        durability: Durability::Flushed,
        ..request()
    };
    let out = r.step(
        0,
        Event::Produce {
            id: RequestId(2),
            request: retry,
        },
    );
    assert_eq!(
        out,
        vec![Action::Flush],
        "the retry needs the batch on disk"
    );
    let out = r.step(0, Event::Flushed { flushed_offset: 1 });
    assert_eq!(out, vec![ok(2, 0)]);
}

/// Found by the simulator (seed 339): a flush report is a one-way message, and a lost one
/// was never sent again, so a leader waiting for it on an idle partition waited forever.
#[test]
fn a_follower_sends_its_flush_report_again_while_the_leader_asks() {
    let (mut r, fetch_id) = follower_over(log(3, &[(1, 0)]), 0);
    r.step(0, Event::Flushed { flushed_offset: 3 });
    let asking = |fetch_id| Event::FetchResponse {
        fetch_id,
        response: Ok(FetchData {
            flush_up_to: Some(3),
            compaction_horizon: 0,
            high_watermark: 3,
            ..data_ok()
        }),
    };
    let report = Action::SendFlushReport {
        to: 1,
        leader_epoch: EPOCH,
        flushed_offset: 3,
    };
    let out = r.step(0, asking(fetch_id));
    assert!(out.contains(&report), "{out:?}");
    // The report is lost. The leader's next answer, a long poll later, still asks.
    let wait = config().replica_fetch_wait_max_ms;
    let out = r.step(wait, asking(FetchId(2)));
    assert!(out.contains(&report), "sent again: {out:?}");
}

fn data_ok() -> FetchData<Bytes> {
    FetchData {
        high_watermark: 0,
        log_start_offset: 0,
        log_end_offset: 3,
        diverging_epoch: None,
        records: Bytes::new(),
        flush_up_to: None,
        compaction_horizon: 0,
    }
}

/// Found by the simulator (seed 239): an ISR expansion sent twice commits once; the copy that
/// is refused as stale must not make the leader forget the addition before metadata says
/// which state won, or its HW passes a member the controller has just put in the ISR.
#[test]
fn a_stale_refusal_of_an_addition_keeps_counting_it_until_metadata() {
    let mut r = leader_with_three(&[1, 2], 1, Acks::Leader);
    fetch(&mut r, 0, 10, follower_fetch(2, 3, Some(EPOCH)));
    let out = fetch(&mut r, 0, 11, follower_fetch(3, 3, Some(EPOCH)));
    assert!(
        out.contains(&Action::ProposeIsr {
            leader_epoch: EPOCH,
            partition_epoch: PARTITION_EPOCH,
            isr: vec![1, 2, 3]
        }),
        "{out:?}"
    );
    r.step(
        0,
        Event::IsrChangeResult(Err(IsrChangeError::InvalidUpdateVersion)),
    );
    produce(&mut r, 0, 2, Acks::Leader, &["d"]);
    appended(&mut r, 0, 4);
    let out = fetch(&mut r, 0, 12, follower_fetch(2, 4, Some(EPOCH)));
    assert!(!out.contains(&hw(4)), "node 3 may be in the ISR: {out:?}");
    assert_eq!(r.high_watermark(), 3);
}

/// Found by the simulator (seed 847): an ISR expansion went unanswered (the controller did
/// not commit it within the node's wait) and committed later. A leader that dropped it let its
/// HW pass the added member's LEO before the metadata arrived. No answer is no refusal: the
/// addition keeps counting, and the same proposal is sent again after the back-off.
#[test]
fn an_unanswered_addition_keeps_counting_and_is_sent_again() {
    let mut r = leader_with_three(&[1, 2], 1, Acks::Leader);
    fetch(&mut r, 0, 10, follower_fetch(2, 3, Some(EPOCH)));
    let proposal = Action::ProposeIsr {
        leader_epoch: EPOCH,
        partition_epoch: PARTITION_EPOCH,
        isr: vec![1, 2, 3],
    };
    let out = fetch(&mut r, 0, 11, follower_fetch(3, 3, Some(EPOCH)));
    assert!(out.contains(&proposal), "{out:?}");
    r.step(0, Event::IsrChangeResult(Err(IsrChangeError::Unavailable)));
    produce(&mut r, 0, 2, Acks::Leader, &["d"]);
    appended(&mut r, 0, 4);
    let out = fetch(&mut r, 0, 12, follower_fetch(2, 4, Some(EPOCH)));
    assert!(!out.contains(&hw(4)), "node 3 may be in the ISR: {out:?}");
    assert_eq!(r.high_watermark(), 3);
    assert!(!r.step(999, Event::Tick).contains(&proposal));
    assert!(r.step(1_000, Event::Tick).contains(&proposal));
}

/// Found by the simulator (seed 899): a follower copying below the leader's compaction
/// horizon may go on from where it got to, but one whose log went back since it was last
/// answered (a restart whose recovery cut a corrupt tail) holds records of its own from
/// before, possibly a key whose delete the compaction removed: it must copy again.
#[test]
fn a_follower_whose_log_went_back_below_the_horizon_copies_again() {
    let mut r = leader_with_three(&[1, 2], 1, Acks::Leader);
    r.step(
        0,
        Event::Compacted {
            compaction_horizon: 3,
        },
    );
    let ok = |out: &[Action]| {
        out.iter().any(|a| {
            matches!(a, Action::RespondFetch {
                result: Ok(data),
                ..
            } if data.diverging_epoch.is_none())
        })
    };
    let out_of_range = |out: &[Action]| {
        out.iter().any(|a| {
            matches!(
                a,
                Action::RespondFetch {
                    result: Err(ReadError::OffsetOutOfRange { .. }),
                    ..
                }
            )
        })
    };
    let request = |offset| follower_fetch(2, offset, (offset > 0).then_some(EPOCH));
    let out = fetch(&mut r, 0, 10, request(1));
    assert!(out_of_range(&out), "below the horizon: {out:?}");
    // The copy from the start goes on while nothing more is removed...
    assert!(ok(&fetch(&mut r, 0, 11, request(0))));
    assert!(ok(&fetch(&mut r, 0, 12, request(2))));
    assert!(ok(&fetch(&mut r, 0, 13, request(2))));
    // ...but not from further back than it was.
    let out = fetch(&mut r, 0, 14, request(1));
    assert!(out_of_range(&out), "its log went back: {out:?}");
}

// ---- failures ----

#[test]
fn after_a_log_failure_everything_is_refused() {
    let mut r = leader(&[1], 1);
    produce(&mut r, 0, 1, Acks::Leader, &["a"]);
    let out = r.step(
        0,
        Event::LogFailed {
            reason: "disk gone".into(),
        },
    );
    assert_eq!(
        out,
        vec![failed(1, ProduceError::Storage("disk gone".into()))]
    );
    assert_eq!(
        produce(&mut r, 0, 2, Acks::Leader, &["b"]),
        vec![failed(2, ProduceError::Storage("disk gone".into()))]
    );
}

#[test]
fn follower_lags_report_records_and_time_behind_the_leader() {
    let mut r = leader_with_three(&[1, 2, 3], 2, Acks::Leader);
    // Leader LEO 3. Follower 2 fetches up to it; follower 3 stays at 1.
    fetch(&mut r, 0, 10, follower_fetch(2, 3, Some(EPOCH)));
    fetch(&mut r, 0, 11, follower_fetch(3, 1, Some(EPOCH)));
    r.step(1_500, Event::Tick);
    let lags = r.follower_lags();
    assert_eq!(
        lags,
        vec![
            FollowerLag {
                node_id: 2,
                log_end_offset: Some(3),
                lag_records: Some(0),
                lag_ms: Some(0),
            },
            FollowerLag {
                node_id: 3,
                log_end_offset: Some(1),
                lag_records: Some(2),
                // In the ISR since the leader change at time 0, not caught up since.
                lag_ms: Some(1_500),
            },
        ]
    );
    let follower = Replica::new(2, config(), log(0, &[]), 0);
    assert!(follower.follower_lags().is_empty(), "only a leader knows");
}

/// Batches from below the leader's compaction horizon may lack removed tombstones: the
/// follower's horizon rises to cover them, but never past the leader's (simulator seed 3: a
/// replica that raised it to every copied chunk's end later, as leader, sent followers that
/// never needed it to copy its whole log, and their HW went back to 0).
/// Sim seed 12: a log copied from a compacted one is whole only up to the leader's horizon, so
/// the follower's horizon rises to it with the first batches, however far they reach: its
/// table then serves nothing until the copy gets there. Raised only to each chunk's end, the
/// follower's HW stopped inside the cleaned region, on a state that never existed.
#[test]
fn a_follower_copying_a_compacted_log_raises_its_horizon_to_the_leaders_at_once() {
    let (mut r, fetch_id) = follower_over(log(0, &[]), 0);
    let records = stamped(&["a", "b", "c"], 0, EPOCH);
    let answer = data(10, None, records.clone()).map(|d| FetchData {
        compaction_horizon: 8,
        ..d
    });
    let out = r.step(
        0,
        Event::FetchResponse {
            fetch_id,
            response: answer,
        },
    );
    assert_eq!(
        out,
        vec![Action::Append {
            batches: records,
            compaction_horizon: Some(8),
        }]
    );
    assert_eq!(r.local_log().compaction_horizon_target(), 8);
    assert_eq!(
        r.local_log().compaction_horizon(),
        0,
        "nothing appended yet"
    );
}

/// A follower fetching from at or above the leader's horizon receives batches compaction never
/// touched: its horizon stays.
#[test]
fn a_follower_above_the_leaders_horizon_keeps_its_own() {
    let (mut r, fetch_id) = follower_over(log(3, &[(EPOCH, 0)]), 0);
    let records = stamped(&["d"], 3, EPOCH);
    let answer = data(10, None, records.clone()).map(|d| FetchData {
        compaction_horizon: 2,
        ..d
    });
    let out = r.step(
        0,
        Event::FetchResponse {
            fetch_id,
            response: answer,
        },
    );
    assert_eq!(
        out,
        vec![Action::Append {
            batches: records,
            compaction_horizon: None,
        }]
    );
}

#[test]
fn a_follower_raises_its_compaction_horizon_only_as_far_as_the_leaders() {
    let (mut r, fetch_id) = follower_over(log(0, &[]), 0);
    let records = stamped(&["a", "b", "c"], 0, EPOCH);
    let answer = |horizon: i64, records: Bytes| {
        data(10, None, records).map(|d| FetchData {
            compaction_horizon: horizon,
            ..d
        })
    };
    let out = r.step(
        0,
        Event::FetchResponse {
            fetch_id,
            response: answer(2, records.clone()),
        },
    );
    assert_eq!(
        out,
        vec![Action::Append {
            batches: records,
            compaction_horizon: Some(2),
        }]
    );
}
