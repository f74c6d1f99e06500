//! The Raft log and state machine on tandem-storage: openraft's own storage conformance suite,
//! and crashes that lose exactly what was not synced.

use std::sync::Arc;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
use tandem_controller::log_store::{RaftLogConfig, RaftLogStore};
use tandem_controller::model::{MetadataBatch, MetadataRecord, NodeRecord, NodeStatus};
use tandem_controller::raft_types::{Entry, TypeConfig};
use tandem_controller::state_machine::MetadataStateMachine;
use tandem_storage::{Log, MemDir};

struct MemBuilder;

impl StoreBuilder<TypeConfig, RaftLogStore<MemDir>, MetadataStateMachine<MemDir>, ()>
    for MemBuilder
{
    async fn build(
        &self,
    ) -> Result<((), RaftLogStore<MemDir>, MetadataStateMachine<MemDir>), openraft::StorageError<u64>>
    {
        let checkpoints = Arc::new(MemDir::new());
        let log = RaftLogStore::open(
            MemDir::new(),
            checkpoints.clone(),
            &RaftLogConfig::default(),
        )
        .expect("opens");
        let sm = MetadataStateMachine::open(checkpoints).expect("opens");
        Ok(((), log, sm))
    }
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn register_entry(term: u64, index: u64, node_id: i32, incarnation: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(MetadataBatch {
            records: vec![MetadataRecord::RegisterNode {
                node: NodeRecord {
                    node_id,
                    incarnation,
                    process_id: 7,
                    addresses: vec![],
                    rack: None,
                    status: NodeStatus::Live,
                },
            }],
        }),
    }
}

fn open(log_dir: &MemDir, checkpoints: &MemDir) -> RaftLogStore<MemDir> {
    RaftLogStore::open(
        log_dir.clone(),
        Arc::new(checkpoints.clone()),
        &RaftLogConfig::default(),
    )
    .expect("opens")
}

#[tokio::test]
async fn acknowledged_appends_and_votes_survive_a_crash() {
    let (log_dir, checkpoints) = (MemDir::new(), MemDir::new());
    let mut store = open(&log_dir, &checkpoints);
    store.save_vote(&Vote::new(3, 2)).await.unwrap();
    let entries: Vec<Entry> = (0..5)
        .map(|i| register_entry(1 + i / 3, i, i as i32, i + 1))
        .collect();
    store.blocking_append(entries.clone()).await.unwrap();
    drop(store);

    log_dir.crash_clean_cut();
    checkpoints.crash_clean_cut();
    let mut store = open(&log_dir, &checkpoints);
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(2, 4)));
    assert_eq!(store.try_get_log_entries(0..5).await.unwrap(), entries);
    // The terms are the storage engine's leader epochs.
    let epochs: Vec<(i32, i64)> = store
        .log()
        .epochs()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect();
    assert_eq!(epochs, vec![(1, 0), (2, 3)]);
}

#[tokio::test]
async fn truncation_and_purge_are_durable() {
    let (log_dir, checkpoints) = (MemDir::new(), MemDir::new());
    let mut store = open(&log_dir, &checkpoints);
    let entries: Vec<Entry> = (0..6)
        .map(|i| register_entry(1, i, i as i32, i + 1))
        .collect();
    store.blocking_append(entries.clone()).await.unwrap();
    store.truncate(log_id(1, 4)).await.unwrap();
    store.purge(log_id(1, 1)).await.unwrap();
    log_dir.crash_clean_cut();
    checkpoints.crash_clean_cut();

    let mut store = open(&log_dir, &checkpoints);
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1)));
    assert_eq!(state.last_log_id, Some(log_id(1, 3)));
    assert_eq!(
        store.try_get_log_entries(0..10).await.unwrap(),
        entries[2..4].to_vec()
    );
    // A new term appends after the cut.
    store
        .blocking_append(vec![register_entry(2, 4, 40, 5)])
        .await
        .unwrap();
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(log_id(2, 4))
    );
}

#[tokio::test]
async fn the_state_machine_restarts_from_its_snapshot() {
    let checkpoints = Arc::new(MemDir::new());
    let mut sm = MetadataStateMachine::open(checkpoints.clone()).unwrap();
    sm.apply(vec![register_entry(1, 0, 5, 1), register_entry(1, 1, 6, 2)])
        .await
        .unwrap();
    let mut builder = sm.get_snapshot_builder().await;
    use openraft::storage::RaftSnapshotBuilder;
    builder.build_snapshot().await.unwrap();
    // An entry refused as stale changes nothing (incarnation 9 is not the next one).
    let outcomes = sm.apply(vec![register_entry(1, 2, 7, 9)]).await.unwrap();
    assert!(matches!(
        outcomes[0],
        tandem_controller::raft_types::ApplyOutcome::Refused(_)
    ));
    let live = sm.shared().get();
    assert_eq!(live.0, 3);
    assert!(live.1.node(7).is_none());
    drop(sm);

    checkpoints.crash_clean_cut();
    let mut sm = MetadataStateMachine::open(checkpoints).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1)));
    let (version, metadata) = sm.shared().get();
    assert_eq!(version, 2);
    assert_eq!(
        metadata.nodes.keys().copied().collect::<Vec<_>>(),
        vec![5, 6]
    );
}

type Checks = Suite<TypeConfig, RaftLogStore<MemDir>, MetadataStateMachine<MemDir>, MemBuilder, ()>;

/// Runs one test of openraft's suite on a fresh store; the failure, if any, with its name.
fn run<F, Fu>(name: &str, test: F) -> Option<String>
where
    F: FnOnce(RaftLogStore<MemDir>, MetadataStateMachine<MemDir>) -> Fu,
    Fu: std::future::Future<Output = Result<(), openraft::StorageError<u64>>>,
{
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let result = runtime.block_on(async {
        let ((), store, sm) = MemBuilder.build().await?;
        test(store, sm).await
    });
    result.err().map(|e| format!("{name}: {e}"))
}

/// Runs the named tests of [`Checks`], each on a fresh store; the failures.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        [$(run(stringify!($name), Checks::$name)),*].into_iter().flatten().collect()
    };
}

/// openraft's storage conformance suite (`Suite::test_all`), test by test, less one:
/// `get_initial_state_membership_from_log_and_sm` appends index 1 after the store was purged
/// up to index 2, which treats the log as a map; a Raft log never appends below its purge
/// point, and this store refuses such a hole or overwrite.
#[test]
fn openraft_storage_suite_passes_on_tandem_storage() {
    let mut failures: Vec<String> = suite![
        last_membership_in_log_initial,
        last_membership_in_log,
        last_membership_in_log_multi_step,
        get_membership_initial,
        get_membership_from_log_and_empty_sm,
        get_membership_from_empty_log_and_sm,
        get_membership_from_log_le_sm_last_applied,
        get_membership_from_log_gt_sm_last_applied_1,
        get_membership_from_log_gt_sm_last_applied_2,
        get_initial_state_without_init,
        get_initial_state_with_state,
        get_initial_state_last_log_gt_sm,
        get_initial_state_last_log_lt_sm,
        get_initial_state_log_ids,
        get_initial_state_re_apply_committed,
        save_vote,
        get_log_entries,
        limited_get_log_entries,
        try_get_log_entry,
        initial_logs,
        get_log_state,
        get_log_id,
        last_id_in_log,
        last_applied_state,
        purge_logs_upto_0,
        purge_logs_upto_5,
        purge_logs_upto_20,
        delete_logs_since_11,
        delete_logs_since_0,
        append_to_log,
        snapshot_meta,
        apply_single,
        apply_multiple,
    ];
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    if let Err(e) = runtime.block_on(Checks::transfer_snapshot(&MemBuilder)) {
        failures.push(format!("transfer_snapshot: {e}"));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
