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
    let client = Arc::new(PeerClient::new(config.max_frame_bytes));
    let voter = if config.voters.contains_key(&(config.node_id as u64)) {
        let controller_dir = config.data_dir.join("controller");
        let log_dir = controller_dir.join("raft-log");
        let checkpoint_dir = controller_dir.join("checkpoints");
        let log = OsDir::create_all(&log_dir).map_err(data_dir_error(&log_dir))?;
        let checkpoints =
            OsDir::create_all(&checkpoint_dir).map_err(data_dir_error(&checkpoint_dir))?;
        let quorum = QuorumConfig::new(config.node_id as u64, config.voters.clone());
        let transport = TcpControllerTransport {
            client: Arc::clone(&client),
        };
        Some(ControllerNode::start(quorum, log, checkpoints, transport).await?)
    } else {
        None
    };
    let node_config = NodeConfig::new(
        config.node_id,
        advertised.clone(),
        config.data_dir.clone(),
        config.voters.clone(),
    );
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
    let serving = tokio::spawn(listener::serve(listener, services, listening));
    info!(node = config.node_id, %advertised, voter = voter.is_some(), "node started");
    let _ = stop.wait_for(|s| *s).await;
    info!(node = config.node_id, "stopping: moving leaderships away");
    node.shutdown(true).await;
    if let Some(voter) = &voter {
        voter.shutdown().await;
    }
    stop_listening.send_replace(true);
    let _ = serving.await;
    info!(node = config.node_id, "stopped");
    Ok(())
}
