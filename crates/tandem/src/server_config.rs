//! The settings of `tandem server`: defaults, then a TOML file (`--config`), then flags. Every
//! setting has one name, used for the flag (`--session-timeout-ms`) and the file key
//! (`session-timeout-ms = 600`). `validate` checks the relations correctness depends on before
//! anything starts; docs/operations.md lists every setting with the rule it serves.
//!
//! ```text
//!  Settings::default()  ──>  overlaid by the --config file  ──>  overlaid by flags
//!        ──>  validate (one line per broken relation)  ──>  ServerConfig (runtime)
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tandem_server::runtime::{ServerConfig, Tuning};

/// Every setting of one server. Field names are the file keys (kebab-case) and the flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct Settings {
    // --- identity and addresses ---
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i32>,
    pub listen: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `id=host:port,...`, as the flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voters: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,
    pub max_frame_bytes: usize,
    pub compaction_interval_ms: u64,
    // --- liveness and leases (controller; rules 7, 8) ---
    pub heartbeat_interval_ms: i64,
    pub session_timeout_ms: i64,
    pub lease_ms: i64,
    pub auto_leader_rebalance: bool,
    pub controller_tick_interval_ms: u64,
    pub controller_commit_timeout_ms: u64,
    // --- the controller's Raft ---
    pub raft_heartbeat_interval_ms: u64,
    pub raft_election_timeout_min_ms: u64,
    pub raft_election_timeout_max_ms: u64,
    pub raft_snapshot_after_entries: u64,
    pub raft_entries_kept_after_snapshot: u64,
    pub raft_segment_bytes: u64,
    pub raft_max_entry_bytes: usize,
    pub rejoin_as_new_voter: bool,
    // --- replication (rules 2, 5) ---
    pub replica_lag_time_max_ms: i64,
    pub replica_fetch_wait_max_ms: i64,
    pub replica_fetch_max_bytes: usize,
    pub replica_fetch_backoff_ms: i64,
    pub replica_fetch_timeout_ms: i64,
    pub isr_change_backoff_ms: i64,
    // --- the node's calls to the controller ---
    pub metadata_wait_ms: u32,
    pub controller_retry_ms: u64,
}

impl Default for Settings {
    /// The defaults of the code (`Tuning::default()`): sub-second failover on loopback.
    fn default() -> Settings {
        let tuning = Tuning::default();
        let (quorum, replica) = (&tuning.quorum, &tuning.replica);
        Settings {
            id: None,
            listen: "127.0.0.1:9092".parse().expect("a socket address"),
            advertised: None,
            data_dir: None,
            voters: None,
            admin_listen: None,
            max_frame_bytes: tandem_protocol::DEFAULT_MAX_FRAME_BYTES,
            compaction_interval_ms: 30_000,
            heartbeat_interval_ms: quorum.controller.heartbeat_interval_ms,
            session_timeout_ms: quorum.controller.session_timeout_ms,
            lease_ms: quorum.controller.lease_ms,
            auto_leader_rebalance: quorum.controller.auto_leader_rebalance,
            controller_tick_interval_ms: quorum.tick_interval_ms,
            controller_commit_timeout_ms: quorum.commit_timeout_ms,
            raft_heartbeat_interval_ms: quorum.raft_heartbeat_interval_ms,
            raft_election_timeout_min_ms: quorum.election_timeout_min_ms,
            raft_election_timeout_max_ms: quorum.election_timeout_max_ms,
            raft_snapshot_after_entries: quorum.snapshot_after_entries,
            raft_entries_kept_after_snapshot: quorum.entries_kept_after_snapshot,
            raft_segment_bytes: quorum.log.segment_bytes,
            raft_max_entry_bytes: quorum.log.max_entry_bytes,
            rejoin_as_new_voter: quorum.rejoin_as_new_voter,
            replica_lag_time_max_ms: replica.replica_lag_time_max_ms,
            replica_fetch_wait_max_ms: replica.replica_fetch_wait_max_ms,
            replica_fetch_max_bytes: replica.replica_fetch_max_bytes,
            replica_fetch_backoff_ms: replica.replica_fetch_backoff_ms,
            replica_fetch_timeout_ms: replica.replica_fetch_timeout_ms,
            isr_change_backoff_ms: replica.isr_change_backoff_ms,
            metadata_wait_ms: tuning.metadata_wait_ms,
            controller_retry_ms: tuning.controller_retry_ms,
        }
    }
}

impl Settings {
    /// The defaults overlaid by a TOML file; unknown keys are refused (a typo must not leave
    /// a timeout at its default silently).
    pub fn from_file(path: &Path) -> Result<Settings, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
        Settings::from_toml(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }

    pub fn from_toml(text: &str) -> Result<Settings, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }

    /// The effective settings as TOML (`--print-config`): loadable again with `--config`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("settings always serialize")
    }

    /// The relations correctness depends on, and the ranges that make sense. The error is one
    /// line naming the settings involved (by their flag / key names).
    pub fn validate(&self) -> Result<(), String> {
        positive("heartbeat-interval-ms", self.heartbeat_interval_ms)?;
        positive("session-timeout-ms", self.session_timeout_ms)?;
        positive("lease-ms", self.lease_ms)?;
        positive(
            "controller-tick-interval-ms",
            self.controller_tick_interval_ms as i64,
        )?;
        positive(
            "controller-commit-timeout-ms",
            self.controller_commit_timeout_ms as i64,
        )?;
        positive(
            "raft-heartbeat-interval-ms",
            self.raft_heartbeat_interval_ms as i64,
        )?;
        positive(
            "raft-snapshot-after-entries",
            self.raft_snapshot_after_entries as i64,
        )?;
        positive("replica-lag-time-max-ms", self.replica_lag_time_max_ms)?;
        positive("replica-fetch-wait-max-ms", self.replica_fetch_wait_max_ms)?;
        positive(
            "replica-fetch-max-bytes",
            self.replica_fetch_max_bytes as i64,
        )?;
        positive("replica-fetch-backoff-ms", self.replica_fetch_backoff_ms)?;
        positive("replica-fetch-timeout-ms", self.replica_fetch_timeout_ms)?;
        positive("isr-change-backoff-ms", self.isr_change_backoff_ms)?;
        positive("metadata-wait-ms", self.metadata_wait_ms as i64)?;
        positive("controller-retry-ms", self.controller_retry_ms as i64)?;
        positive("raft-segment-bytes", self.raft_segment_bytes as i64)?;
        positive("raft-max-entry-bytes", self.raft_max_entry_bytes as i64)?;
        if self.compaction_interval_ms < 100 {
            return Err(format!(
                "compaction-interval-ms {} must be at least 100",
                self.compaction_interval_ms
            ));
        }
        if self.max_frame_bytes < 1024 {
            return Err(format!(
                "max-frame-bytes {} must be at least 1024",
                self.max_frame_bytes
            ));
        }
        // Rule 7: a node heartbeats several times per session, or a delayed heartbeat fences it.
        if self.heartbeat_interval_ms >= self.session_timeout_ms {
            return Err(format!(
                "heartbeat-interval-ms {} must be below session-timeout-ms {}: a node must heartbeat within its session",
                self.heartbeat_interval_ms, self.session_timeout_ms
            ));
        }
        // Rule 8: the lease is renewed by heartbeats, so it must outlast the interval ...
        if self.lease_ms <= self.heartbeat_interval_ms {
            return Err(format!(
                "lease-ms {} must exceed heartbeat-interval-ms {}, or every lease lapses between heartbeats",
                self.lease_ms, self.heartbeat_interval_ms
            ));
        }
        // ... and end before the controller can fence the node and elect a successor, with a
        // quarter of the session as margin for clock-rate drift and pauses.
        if self.lease_ms * 4 > self.session_timeout_ms * 3 {
            return Err(format!(
                "lease-ms {} must be at most 3/4 of session-timeout-ms {} (rule 8: a leader's lease ends, with margin, before a successor can be elected)",
                self.lease_ms, self.session_timeout_ms
            ));
        }
        // Leases are granted from the controller's last quorum confirmation, made every tick.
        if self.controller_tick_interval_ms as i64 >= self.lease_ms {
            return Err(format!(
                "controller-tick-interval-ms {} must be below lease-ms {}: leases count from the controller's last quorum confirmation, made every tick",
                self.controller_tick_interval_ms, self.lease_ms
            ));
        }
        if self.raft_heartbeat_interval_ms >= self.raft_election_timeout_min_ms {
            return Err(format!(
                "raft-heartbeat-interval-ms {} must be below raft-election-timeout-min-ms {}, or followers stand for election while the leader is alive",
                self.raft_heartbeat_interval_ms, self.raft_election_timeout_min_ms
            ));
        }
        if self.raft_election_timeout_max_ms <= self.raft_election_timeout_min_ms {
            return Err(format!(
                "raft-election-timeout-max-ms {} must exceed raft-election-timeout-min-ms {} (a random timeout in between breaks split votes)",
                self.raft_election_timeout_max_ms, self.raft_election_timeout_min_ms
            ));
        }
        // Rule 5: a follower long-polling an idle leader is caught up, not lagging.
        if self.replica_lag_time_max_ms <= self.replica_fetch_wait_max_ms {
            return Err(format!(
                "replica-lag-time-max-ms {} must exceed replica-fetch-wait-max-ms {}, or a caught-up follower waiting in a long poll leaves the ISR",
                self.replica_lag_time_max_ms, self.replica_fetch_wait_max_ms
            ));
        }
        if self.replica_fetch_timeout_ms <= self.replica_fetch_wait_max_ms {
            return Err(format!(
                "replica-fetch-timeout-ms {} must exceed replica-fetch-wait-max-ms {}, or every long poll is given up before the leader answers",
                self.replica_fetch_timeout_ms, self.replica_fetch_wait_max_ms
            ));
        }
        if self.replica_fetch_max_bytes >= self.max_frame_bytes {
            return Err(format!(
                "replica-fetch-max-bytes {} must be below max-frame-bytes {}, or a full fetch response is refused as too large",
                self.replica_fetch_max_bytes, self.max_frame_bytes
            ));
        }
        if let Some(voters) = &self.voters {
            parse_voters(voters).map_err(|e| format!("voters: {e}"))?;
        }
        Ok(())
    }

    /// The runtime's configuration; `id`, `data-dir` and `voters` must be set.
    pub fn server_config(&self) -> Result<ServerConfig, String> {
        let missing =
            |name: &str| format!("--{name} is required (a flag, or `{name}` in the --config file)");
        let node_id = self.id.ok_or_else(|| missing("id"))?;
        let data_dir = self.data_dir.clone().ok_or_else(|| missing("data-dir"))?;
        let voters = parse_voters(self.voters.as_deref().ok_or_else(|| missing("voters"))?)
            .map_err(|e| format!("voters: {e}"))?;
        let mut tuning = Tuning::default();
        let quorum = &mut tuning.quorum;
        quorum.controller.heartbeat_interval_ms = self.heartbeat_interval_ms;
        quorum.controller.session_timeout_ms = self.session_timeout_ms;
        quorum.controller.lease_ms = self.lease_ms;
        quorum.controller.auto_leader_rebalance = self.auto_leader_rebalance;
        quorum.tick_interval_ms = self.controller_tick_interval_ms;
        quorum.commit_timeout_ms = self.controller_commit_timeout_ms;
        quorum.raft_heartbeat_interval_ms = self.raft_heartbeat_interval_ms;
        quorum.election_timeout_min_ms = self.raft_election_timeout_min_ms;
        quorum.election_timeout_max_ms = self.raft_election_timeout_max_ms;
        quorum.snapshot_after_entries = self.raft_snapshot_after_entries;
        quorum.entries_kept_after_snapshot = self.raft_entries_kept_after_snapshot;
        quorum.log.segment_bytes = self.raft_segment_bytes;
        quorum.log.max_entry_bytes = self.raft_max_entry_bytes;
        quorum.rejoin_as_new_voter = self.rejoin_as_new_voter;
        let replica = &mut tuning.replica;
        replica.replica_lag_time_max_ms = self.replica_lag_time_max_ms;
        replica.replica_fetch_wait_max_ms = self.replica_fetch_wait_max_ms;
        replica.replica_fetch_max_bytes = self.replica_fetch_max_bytes;
        replica.replica_fetch_backoff_ms = self.replica_fetch_backoff_ms;
        replica.replica_fetch_timeout_ms = self.replica_fetch_timeout_ms;
        replica.isr_change_backoff_ms = self.isr_change_backoff_ms;
        tuning.metadata_wait_ms = self.metadata_wait_ms;
        tuning.controller_retry_ms = self.controller_retry_ms;
        Ok(ServerConfig {
            node_id,
            listen: self.listen,
            advertised: self.advertised.clone(),
            data_dir,
            voters,
            max_frame_bytes: self.max_frame_bytes,
            admin_listen: self.admin_listen,
            compaction_interval: Duration::from_millis(self.compaction_interval_ms),
            tuning,
        })
    }
}

fn positive(name: &str, value: i64) -> Result<(), String> {
    if value <= 0 {
        return Err(format!("{name} must be positive, not {value}"));
    }
    Ok(())
}

/// `id=host:port,...` with 1, 3 or 5 voters.
pub fn parse_voters(text: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut voters = BTreeMap::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (id, address) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not id=host:port"))?;
        let id: u64 = id
            .parse()
            .map_err(|_| format!("bad voter id in {part:?}"))?;
        if !address.contains(':') {
            return Err(format!("{address:?} is not host:port"));
        }
        voters.insert(id, address.to_string());
    }
    if ![1, 3, 5].contains(&voters.len()) {
        return Err(format!("{} voters; use 1, 3 or 5", voters.len()));
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(change: impl FnOnce(&mut Settings)) -> Result<(), String> {
        let mut settings = Settings::default();
        change(&mut settings);
        settings.validate()
    }

    #[test]
    fn the_defaults_are_valid_and_match_the_code() {
        let settings = Settings::default();
        settings.validate().unwrap();
        // Sub-second failover on loopback (docs/server.md).
        assert_eq!(settings.heartbeat_interval_ms, 100);
        assert_eq!(settings.session_timeout_ms, 600);
        assert_eq!(settings.lease_ms, 400);
        assert_eq!(settings.replica_lag_time_max_ms, 2_000);
        assert_eq!(settings.replica_fetch_wait_max_ms, 200);
        assert_eq!(settings.raft_election_timeout_min_ms, 150);
    }

    #[test]
    fn a_file_overlays_the_defaults_with_the_flag_names() {
        let settings = Settings::from_toml(
            "id = 3\nvoters = \"3=127.0.0.1:1\"\nsession-timeout-ms = 2000\nlease-ms = 1200\n",
        )
        .unwrap();
        assert_eq!(settings.id, Some(3));
        assert_eq!(settings.session_timeout_ms, 2000);
        assert_eq!(settings.lease_ms, 1200);
        assert_eq!(
            settings.heartbeat_interval_ms,
            Settings::default().heartbeat_interval_ms
        );
        let config = settings.server_config().unwrap_err();
        assert!(config.contains("--data-dir is required"), "{config}");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused() {
        let typo = Settings::from_toml("session-timeout = 2000\n").unwrap_err();
        assert!(typo.contains("session-timeout"), "{typo}");
        let wrong = Settings::from_toml("lease-ms = \"long\"\n").unwrap_err();
        assert!(!wrong.is_empty());
    }

    #[test]
    fn print_config_output_loads_back_unchanged() {
        let settings = Settings {
            id: Some(2),
            voters: Some("1=a:1,2=b:2,3=c:3".into()),
            data_dir: Some("/var/lib/tandem".into()),
            lease_ms: 350,
            ..Settings::default()
        };
        let again = Settings::from_toml(&settings.to_toml()).unwrap();
        assert_eq!(again, settings);
    }

    #[test]
    fn the_lease_must_end_before_the_session_with_margin() {
        // Rule 8.
        let e = with(|s| s.lease_ms = 500).unwrap_err();
        assert!(
            e.contains("lease-ms 500 must be at most 3/4 of session-timeout-ms 600"),
            "{e}"
        );
        with(|s| s.lease_ms = 450).unwrap();
        let e = with(|s| {
            s.session_timeout_ms = 300;
        })
        .unwrap_err();
        assert!(e.contains("lease-ms 400"), "{e}");
    }

    #[test]
    fn the_heartbeat_must_fit_in_the_session_and_the_lease() {
        let e = with(|s| {
            s.heartbeat_interval_ms = 700;
            s.lease_ms = 450;
        })
        .unwrap_err();
        assert!(
            e.contains("heartbeat-interval-ms 700 must be below session-timeout-ms"),
            "{e}"
        );
        let e = with(|s| s.heartbeat_interval_ms = 400).unwrap_err();
        assert!(
            e.contains("lease-ms 400 must exceed heartbeat-interval-ms 400"),
            "{e}"
        );
    }

    #[test]
    fn the_lag_time_must_exceed_the_long_poll() {
        let e = with(|s| s.replica_fetch_wait_max_ms = 2_000).unwrap_err();
        assert!(
            e.contains("replica-lag-time-max-ms 2000 must exceed replica-fetch-wait-max-ms 2000"),
            "{e}"
        );
        let e = with(|s| s.replica_fetch_timeout_ms = 200).unwrap_err();
        assert!(e.contains("replica-fetch-timeout-ms 200"), "{e}");
    }

    #[test]
    fn raft_timers_and_the_controller_tick_are_checked() {
        let e = with(|s| s.raft_heartbeat_interval_ms = 150).unwrap_err();
        assert!(e.contains("raft-heartbeat-interval-ms 150"), "{e}");
        let e = with(|s| s.raft_election_timeout_max_ms = 150).unwrap_err();
        assert!(e.contains("raft-election-timeout-max-ms 150"), "{e}");
        let e = with(|s| s.controller_tick_interval_ms = 400).unwrap_err();
        assert!(e.contains("controller-tick-interval-ms 400"), "{e}");
        let e = with(|s| s.metadata_wait_ms = 0).unwrap_err();
        assert!(e.contains("metadata-wait-ms must be positive"), "{e}");
        let e = with(|s| s.replica_fetch_max_bytes = s.max_frame_bytes).unwrap_err();
        assert!(e.contains("replica-fetch-max-bytes"), "{e}");
    }

    #[test]
    fn the_settings_reach_the_runtime_config() {
        let settings = Settings {
            id: Some(1),
            data_dir: Some("d".into()),
            voters: Some("1=127.0.0.1:9092".into()),
            session_timeout_ms: 1000,
            replica_lag_time_max_ms: 5000,
            raft_election_timeout_max_ms: 900,
            metadata_wait_ms: 700,
            rejoin_as_new_voter: true,
            ..Settings::default()
        };
        let config = settings.server_config().unwrap();
        assert_eq!(config.tuning.quorum.controller.session_timeout_ms, 1000);
        assert_eq!(config.tuning.replica.replica_lag_time_max_ms, 5000);
        assert_eq!(config.tuning.quorum.election_timeout_max_ms, 900);
        assert_eq!(config.tuning.metadata_wait_ms, 700);
        assert!(config.tuning.quorum.rejoin_as_new_voter);
        assert_eq!(config.voters.len(), 1);
    }
}
