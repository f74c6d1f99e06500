//! The metadata state machine: applies committed [`MetadataBatch`]es to [`Metadata`], builds
//! and installs snapshots, and publishes each applied version to the rest of the node.
//!
//! The state machine is persisted only through snapshots (openraft's "persistent snapshot"
//! mode): a snapshot is the whole metadata, postcard-encoded, written with
//! `Directory::write_atomic` as `raft-snapshot`. After a restart the voter starts from its last
//! snapshot and openraft re-applies the committed entries after it.

// openraft's traits fix these error types; helpers return what the traits return.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftLogId, StorageIOError};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tandem_storage::Directory;
use tokio::sync::watch;

use crate::log_store::OpenError;
use crate::model::Metadata;
use crate::raft_types::{
    ApplyOutcome, Entry, LogId, RaftStorageError, Snapshot, SnapshotMeta, StoredMembership,
    TypeConfig,
};

pub const SNAPSHOT_FILE: &str = "raft-snapshot";

/// The committed metadata as last applied on this voter, shared with the runtime.
pub struct SharedMetadata {
    current: RwLock<(u64, Arc<Metadata>)>,
    version: watch::Sender<u64>,
}

impl SharedMetadata {
    fn new(version: u64, metadata: Arc<Metadata>) -> SharedMetadata {
        SharedMetadata {
            current: RwLock::new((version, metadata)),
            version: watch::Sender::new(version),
        }
    }

    /// The metadata version (count of applied Raft entries) and the metadata.
    pub fn get(&self) -> (u64, Arc<Metadata>) {
        let current = self.current.read();
        (current.0, current.1.clone())
    }

    pub fn version(&self) -> u64 {
        self.current.read().0
    }

    /// Wakes on every newly applied version (long polls of metadata fetches).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn publish(&self, version: u64, metadata: Arc<Metadata>) {
        *self.current.write() = (version, metadata);
        self.version.send_replace(version);
    }
}

fn version_of(last_applied: Option<LogId>) -> u64 {
    last_applied.map_or(0, |l| l.index + 1)
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    /// postcard-encoded [`Metadata`].
    data: Vec<u8>,
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> RaftStorageError {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        openraft::AnyError::new(&e),
    )
    .into()
}

fn snapshot_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> RaftStorageError {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        openraft::AnyError::new(&e),
    )
    .into()
}

/// Snapshot file access, shared by the state machine and its builders.
struct SnapshotStore<D: Directory> {
    dir: Arc<D>,
    /// Serializes writes, so that an older snapshot never replaces a newer one.
    lock: Mutex<()>,
}

impl<D: Directory> SnapshotStore<D> {
    fn read(&self) -> Result<Option<StoredSnapshot>, RaftStorageError> {
        let Some(bytes) = self
            .dir
            .read(SNAPSHOT_FILE)
            .map_err(|e| snapshot_err(ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| snapshot_err(ErrorVerb::Read, e))
    }

    /// Saves `snapshot` unless a snapshot at least as recent is already saved.
    fn save(&self, snapshot: &StoredSnapshot) -> Result<(), RaftStorageError> {
        let _guard = self.lock.lock();
        if let Some(existing) = self.read()? {
            if existing.meta.last_log_id > snapshot.meta.last_log_id {
                return Ok(());
            }
        }
        let bytes =
            postcard::to_allocvec(snapshot).map_err(|e| snapshot_err(ErrorVerb::Write, e))?;
        self.dir
            .write_atomic(SNAPSHOT_FILE, &bytes)
            .map_err(|e| snapshot_err(ErrorVerb::Write, e))
    }
}

/// The metadata state machine of one voter.
pub struct MetadataStateMachine<D: Directory> {
    metadata: Arc<Metadata>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    shared: Arc<SharedMetadata>,
    snapshots: Arc<SnapshotStore<D>>,
}

impl<D: Directory> MetadataStateMachine<D> {
    /// Opens the state machine from the last snapshot in `checkpoints`, if any.
    pub fn open(checkpoints: Arc<D>) -> Result<Self, OpenError> {
        let snapshots = Arc::new(SnapshotStore {
            dir: checkpoints,
            lock: Mutex::new(()),
        });
        let stored = snapshots.read().map_err(|e| OpenError::Corrupt {
            file: SNAPSHOT_FILE.into(),
            reason: e.to_string(),
        })?;
        let (metadata, last_applied, last_membership) = match stored {
            None => (Metadata::default(), None, StoredMembership::default()),
            Some(s) => {
                let metadata: Metadata =
                    postcard::from_bytes(&s.data).map_err(|e| OpenError::Corrupt {
                        file: SNAPSHOT_FILE.into(),
                        reason: e.to_string(),
                    })?;
                (metadata, s.meta.last_log_id, s.meta.last_membership)
            }
        };
        let metadata = Arc::new(metadata);
        let shared = Arc::new(SharedMetadata::new(
            version_of(last_applied),
            metadata.clone(),
        ));
        Ok(MetadataStateMachine {
            metadata,
            last_applied,
            last_membership,
            shared,
            snapshots,
        })
    }

    /// The last entry applied (from the snapshot at open): `None` for a voter that never
    /// applied anything.
    pub fn last_applied(&self) -> Option<LogId> {
        self.last_applied
    }

    pub fn shared(&self) -> Arc<SharedMetadata> {
        self.shared.clone()
    }

    fn publish(&self) {
        self.shared
            .publish(version_of(self.last_applied), self.metadata.clone());
    }
}

/// Builds a snapshot of the state as of when it was created.
pub struct MetadataSnapshotBuilder<D: Directory> {
    metadata: Arc<Metadata>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    snapshots: Arc<SnapshotStore<D>>,
}

impl<D: Directory> RaftSnapshotBuilder<TypeConfig> for MetadataSnapshotBuilder<D> {
    async fn build_snapshot(&mut self) -> Result<Snapshot, RaftStorageError> {
        let data = postcard::to_allocvec(&*self.metadata)
            .map_err(|e| snapshot_err(ErrorVerb::Write, e))?;
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}", l.leader_id.term, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.snapshots.save(&stored)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl<D: Directory> RaftStateMachine<TypeConfig> for MetadataStateMachine<D> {
    type SnapshotBuilder = MetadataSnapshotBuilder<D>;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), RaftStorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyOutcome>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut outcomes = Vec::new();
        for entry in entries {
            let log_id = *entry.get_log_id();
            self.last_applied = Some(log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => ApplyOutcome::Applied,
                EntryPayload::Membership(membership) => {
                    self.last_membership = StoredMembership::new(Some(log_id), membership);
                    ApplyOutcome::Applied
                }
                EntryPayload::Normal(batch) => {
                    let mut next = (*self.metadata).clone();
                    match next.apply_batch(&batch) {
                        Ok(()) => {
                            self.metadata = Arc::new(next);
                            ApplyOutcome::Applied
                        }
                        Err(e) => {
                            tracing::info!(%log_id, error = %e, "refused a stale metadata batch");
                            ApplyOutcome::Refused(e)
                        }
                    }
                }
            };
            outcomes.push(outcome);
        }
        self.publish();
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        MetadataSnapshotBuilder {
            metadata: self.metadata.clone(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, RaftStorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), RaftStorageError> {
        let data = snapshot.into_inner();
        let metadata: Metadata =
            postcard::from_bytes(&data).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        self.snapshots.save(&StoredSnapshot {
            meta: meta.clone(),
            data,
        })?;
        self.metadata = Arc::new(metadata);
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, RaftStorageError> {
        Ok(self.snapshots.read()?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
