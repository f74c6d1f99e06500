//! One server process: bind the listener, start the controller voter (if this node is one)
//! and the node, serve until asked to stop, then stop in order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tandem_controller::{ControllerNode, QuorumConfig};
use tandem_storage::OsDir;
use tokio::sync::watch;
use tracing::info;

use crate::listener::{self, Services};
use tandem_replication::types::ReplicaConfig;

use crate::node::{Node, NodeConfig};
use crate::peer_client::PeerClient;
use crate::tcp_peers::{TcpControllerTransport, TcpPeers};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub node_id: i32,
    pub listen: SocketAddr,
    /// host:port others use to reach this node; defaults to `listen`.
    pub advertised: Option<String>,
    pub data_dir: PathBuf,
    /// Controller voters: id -> host:port.
    pub voters: BTreeMap<u64, String>,
    pub max_frame_bytes: usize,
    /// Where the admin HTTP listener (/metrics, /api/*, the dashboard) binds; `None`: no
    /// admin listener.
    pub admin_listen: Option<SocketAddr>,
    /// How often table partitions are compacted.
    pub compaction_interval: std::time::Duration,
    /// Every timeout and size of the controller voter and the node.
    pub tuning: Tuning,
}

/// The timeouts and sizes of one server (docs/operations.md lists each, with the rule it
/// serves). `Default` gives the defaults tuned for one machine's loopback.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// The controller voter's settings; its `node_id` and `voters` are the server's.
    pub quorum: QuorumConfig,
    /// The replicas' replication settings (lag time, long poll, backoffs, fetch size).
    pub replica: ReplicaConfig,
    /// Long-poll wait of the node's metadata fetches.
    pub metadata_wait_ms: u32,
    /// Pause before the node retries a controller call that found no active controller.
    pub controller_retry_ms: u64,
}

impl Default for Tuning {
    fn default() -> Tuning {
        let node = NodeConfig::new(0, String::new(), PathBuf::new(), BTreeMap::new());
        Tuning {
            quorum: QuorumConfig::new(0, BTreeMap::new()),
            replica: node.replica,
            metadata_wait_ms: node.metadata_wait_ms,
            controller_retry_ms: node.controller_retry_ms,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("the controller voter did not start: {0}")]
    Controller(#[from] tandem_controller::StartError),
    #[error("bad configuration: {0}")]
    Config(String),
}

/// Runs the server until `stop` turns true; then moves leaderships away, flushes and returns.
pub async fn run(config: ServerConfig, mut stop: watch::Receiver<bool>) -> Result<(), ServerError> {
    if config.voters.is_empty() {
        return Err(ServerError::Config(
            "at least one controller voter is needed".into(),
        ));
    }
    let listener = listener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            address: config.listen,
            source,
        })?;
    let advertised = config.advertised.clone().unwrap_or_else(|| {
        listener
            .local_addr()
            .map_or_else(|_| config.listen.to_string(), |a| a.to_string())
    });
    let data_dir_error = |path: &PathBuf| {
        let path = path.display().to_string();
        move |source| ServerError::DataDir { path, source }
    };
    std::fs::create_dir_all(&config.data_dir).map_err(data_dir_error(&config.data_dir))?;
    let admin_listener = match config.admin_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| ServerError::Bind { address, source })?,
        ),
        None => None,
    };
    let admin_address = admin_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|bound| admin_advertised(bound, &advertised));
    let client = Arc::new(PeerClient::new(config.max_frame_bytes));
    let voter = if config.voters.contains_key(&(config.node_id as u64)) {
        let controller_dir = config.data_dir.join("controller");
        let log_dir = controller_dir.join("raft-log");
        let checkpoint_dir = controller_dir.join("checkpoints");
        let log = OsDir::create_all(&log_dir).map_err(data_dir_error(&log_dir))?;
        let checkpoints =
            OsDir::create_all(&checkpoint_dir).map_err(data_dir_error(&checkpoint_dir))?;
        let quorum = QuorumConfig {
            node_id: config.node_id as u64,
            voters: config.voters.clone(),
            ..config.tuning.quorum.clone()
        };
        let transport = TcpControllerTransport {
            client: Arc::clone(&client),
        };
        Some(ControllerNode::start(quorum, log, checkpoints, transport).await?)
    } else {
        None
    };
    let mut node_config = NodeConfig::new(
        config.node_id,
        advertised.clone(),
        config.data_dir.clone(),
        config.voters.clone(),
    );
    node_config.admin_address = admin_address.clone();
    node_config.compaction_interval = config.compaction_interval;
    node_config.replica = config.tuning.replica.clone();
    node_config.metadata_wait_ms = config.tuning.metadata_wait_ms;
    node_config.controller_retry_ms = config.tuning.controller_retry_ms;
    let node = Node::start(
        node_config,
        Arc::new(TcpPeers::new(Arc::clone(&client), config.node_id)),
    )
    .map_err(data_dir_error(&config.data_dir))?;
    let services = Arc::new(Services {
        node: Arc::clone(&node),
        voter: voter.clone(),
        max_frame_bytes: config.max_frame_bytes,
    });
    let (stop_listening, listening) = watch::channel(false);
    let admin_serving = admin_listener.map(|admin_listener| {
        let admin = Arc::new(crate::admin::Admin {
            node: Arc::clone(&node),
            voter: voter.clone(),
            client: Arc::clone(&client),
        });
        tokio::spawn(crate::admin::serve(
            admin_listener,
            admin,
            listening.clone(),
        ))
    });
    let serving = tokio::spawn(listener::serve(listener, services, listening));
    info!(node = config.node_id, %advertised, voter = voter.is_some(), "node started");
    if let Some(admin) = &admin_address {
        info!(
            node = config.node_id,
            "admin: dashboard http://{admin}/ metrics http://{admin}/metrics"
        );
    }
    // A voter without Raft state finds out in the background whether it may join; when it
    // may not (it lost its state while the quorum exists), the server stops with that error.
    let refused = async {
        match &voter {
            Some(voter) => match voter.joined().await {
                Ok(()) => std::future::pending().await,
                Err(e) => e,
            },
            None => std::future::pending().await,
        }
    };
    let refused = tokio::select! {
        _ = stop.wait_for(|s| *s) => None,
        e = refused => Some(e),
    };
    if refused.is_some() {
        info!(
            node = config.node_id,
            "stopping: the controller voter may not run"
        );
    } else {
        info!(node = config.node_id, "stopping: moving leaderships away");
    }
    node.shutdown(refused.is_none()).await;
    if let Some(voter) = &voter {
        voter.shutdown().await;
    }
    stop_listening.send_replace(true);
    let _ = serving.await;
    if let Some(admin_serving) = admin_serving {
        // A dashboard's keep-alive connection must not hold the stop up.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), admin_serving).await;
    }
    info!(node = config.node_id, "stopped");
    match refused {
        Some(e) => Err(ServerError::Controller(e)),
        None => Ok(()),
    }
}

/// The admin address others should use: the bound one, with the advertised host when bound to
/// every interface (0.0.0.0 or ::).
fn admin_advertised(bound: SocketAddr, advertised: &str) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let host = advertised
        .rsplit_once(':')
        .map_or(advertised, |(host, _)| host);
    format!("{host}:{}", bound.port())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_admin_address_takes_the_advertised_host_when_bound_to_every_interface() {
        let any = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(super::admin_advertised(any, "host-a:9092"), "host-a:8080");
        let loopback = "127.0.0.1:8081".parse().unwrap();
        assert_eq!(
            super::admin_advertised(loopback, "host-a:9092"),
            "127.0.0.1:8081"
        );
    }
}
