//! What a node tells the controller about its own past when it registers (DESIGN.md rule 7,
//! Kafka's KIP-966): did its previous process stop cleanly, and has it lost data it had flushed?
//! Both decide whether it stays an eligible leader (ELR) of partitions whose ISR is empty.
//!
//! A marker file in the data directory carries this across processes:
//! - `clean`: the last process stopped cleanly after registering (or after a clean start).
//! - `lost-data`: recovery cut data, or the disk was new, and no registration has reported it yet.
//! - absent: the last process crashed.
//!
//! "Clean" means no unclean stop since a process of this node last registered: a process that
//! never registered cannot launder an earlier crash by stopping cleanly (simulator seed 2284).

use std::path::{Path, PathBuf};

use tandem_storage::{DiskLog, LogConfig};
use tracing::{info, warn};

const MARKER: &str = "node-state";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalState {
    pub previous_shutdown_clean: bool,
    pub lost_data: bool,
}

fn write_marker(data_dir: &Path, content: Option<&str>) -> std::io::Result<()> {
    let path = data_dir.join(MARKER);
    match content {
        Some(content) => {
            let dir = tandem_storage::OsDir::create_all(data_dir)?;
            tandem_storage::Directory::write_atomic(&dir, MARKER, content.as_bytes())
        }
        None => {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
            std::fs::File::open(data_dir)?.sync_all()
        }
    }
}

fn log_dirs(data_dir: &Path) -> Option<Vec<PathBuf>> {
    let entries = std::fs::read_dir(data_dir.join("logs")).ok()?;
    Some(
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect(),
    )
}

impl LocalState {
    /// Reads the marker, recovers every local log (so that a cut tail is found now, before
    /// registering), and records the new state durably: a crash from here on is unclean.
    pub fn load(data_dir: &Path) -> std::io::Result<LocalState> {
        std::fs::create_dir_all(data_dir)?;
        let marker = std::fs::read_to_string(data_dir.join(MARKER)).unwrap_or_default();
        let previous_shutdown_clean = marker.trim() == "clean";
        let mut lost_data = marker.trim() == "lost-data";
        match log_dirs(data_dir) {
            // No logs at all: a new node, or a wiped disk. Saying "lost data" costs a new node
            // nothing (it is in no ELR) and protects committed data if the disk was wiped.
            None => lost_data = true,
            Some(dirs) => {
                for dir in dirs {
                    match DiskLog::open_path(&dir, LogConfig::default()) {
                        Ok(log) if log.recovery_removed_bytes() > 0 => {
                            warn!(log = %dir.display(), bytes = log.recovery_removed_bytes(),
                                "recovery removed data; this node will register as having lost data");
                            lost_data = true;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            warn!(log = %dir.display(), error = %e, "cannot open a local log");
                            lost_data = true;
                        }
                    }
                }
            }
        }
        write_marker(data_dir, lost_data.then_some("lost-data"))?;
        let state = LocalState {
            previous_shutdown_clean,
            lost_data,
        };
        info!(?state, "local state");
        Ok(state)
    }

    /// The controller now knows: a later crash need not report the loss again.
    pub fn registered(data_dir: &Path, state: &LocalState) {
        if state.lost_data {
            if let Err(e) = write_marker(data_dir, None) {
                warn!(error = %e, "could not clear the lost-data marker");
            }
        }
    }

    /// After a clean stop (logs flushed): what the next process may claim.
    pub fn stopped_cleanly(data_dir: &Path, state: &LocalState, registered: bool) {
        let content = if registered || (state.previous_shutdown_clean && !state.lost_data) {
            Some("clean")
        } else if state.lost_data {
            Some("lost-data")
        } else {
            return; // never registered after an unclean stop: still unclean
        };
        if let Err(e) = write_marker(data_dir, content) {
            warn!(error = %e, "could not record the clean shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_reports_lost_data_until_registered() {
        let dir = tempfile::tempdir().unwrap();
        let state = LocalState::load(dir.path()).unwrap();
        assert_eq!(
            state,
            LocalState {
                previous_shutdown_clean: false,
                lost_data: true
            }
        );
        // A crash before registering: the next process must still report it.
        let again = LocalState::load(dir.path()).unwrap();
        assert!(again.lost_data);
        LocalState::registered(dir.path(), &again);
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let after = LocalState::load(dir.path()).unwrap();
        assert_eq!(
            after,
            LocalState {
                previous_shutdown_clean: false,
                lost_data: false
            }
        );
    }

    #[test]
    fn clean_only_after_registering_or_from_a_clean_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        // Crashed, then a process that never registered stops cleanly: still unclean.
        let state = LocalState::load(dir.path()).unwrap();
        LocalState::stopped_cleanly(dir.path(), &state, false);
        assert!(
            !LocalState::load(dir.path())
                .unwrap()
                .previous_shutdown_clean
        );
        // Registered, then stopped cleanly: clean.
        let state = LocalState::load(dir.path()).unwrap();
        LocalState::stopped_cleanly(dir.path(), &state, true);
        let state = LocalState::load(dir.path()).unwrap();
        assert!(state.previous_shutdown_clean);
        // And a crash after that start is unclean again.
        assert!(
            !LocalState::load(dir.path())
                .unwrap()
                .previous_shutdown_clean
        );
    }

    #[test]
    fn a_cut_tail_is_lost_data() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("logs").join("t-0");
        let log = DiskLog::open_path(&log_dir, LogConfig::default()).unwrap();
        let mut b = tandem_storage::BatchBuilder::new(0);
        b.push(0, None, Some(b"v"));
        tandem_storage::Log::append_as_leader(&log, &mut b.build(), 0).unwrap();
        drop(log);
        let segment = log_dir.join("00000000000000000000.log");
        let mut bytes = std::fs::read(&segment).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        std::fs::write(&segment, &bytes).unwrap();
        assert!(LocalState::load(dir.path()).unwrap().lost_data);
    }
}
