//! How voters reach each other: [`ControllerTransport`] carries one [`ControllerRequest`] to a
//! voter and brings back its [`ControllerResponse`]; [`RaftNetworkAdapter`] turns any transport
//! into openraft's network. The server implements the transport over its framed TCP listener;
//! tests use [`crate::local_network::LocalNetwork`].

// openraft's traits fix these error types; helpers return what the traits return.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::sync::Arc;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use crate::raft_types::{RaftNodeId, TypeConfig};
use crate::rpc::{ControllerRequest, ControllerResponse};

/// Why a request got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The voter cannot be reached now (connection refused or lost, node down, partitioned).
    #[error("voter {target} is unreachable: {reason}")]
    Unreachable { target: RaftNodeId, reason: String },
    /// The voter answered something that makes no sense.
    #[error("bad answer from voter {target}: {reason}")]
    Protocol { target: RaftNodeId, reason: String },
}

/// Sends a controller request to voter `target` (at `node.addr`) and waits for its answer.
pub trait ControllerTransport: Send + Sync + 'static {
    fn call(
        &self,
        target: RaftNodeId,
        node: &BasicNode,
        request: ControllerRequest,
    ) -> impl Future<Output = Result<ControllerResponse, TransportError>> + Send;
}

/// openraft's network factory over a [`ControllerTransport`].
pub struct RaftNetworkAdapter<T> {
    transport: Arc<T>,
}

impl<T> RaftNetworkAdapter<T> {
    pub fn new(transport: T) -> RaftNetworkAdapter<T> {
        RaftNetworkAdapter {
            transport: Arc::new(transport),
        }
    }

    /// The network over a transport also used elsewhere (the start-up probe of the voters).
    pub fn shared(transport: Arc<T>) -> RaftNetworkAdapter<T> {
        RaftNetworkAdapter { transport }
    }
}

/// A connection to one voter.
pub struct PeerConnection<T> {
    target: RaftNodeId,
    node: BasicNode,
    transport: Arc<T>,
}

impl<T: ControllerTransport> RaftNetworkFactory<TypeConfig> for RaftNetworkAdapter<T> {
    type Network = PeerConnection<T>;

    async fn new_client(&mut self, target: RaftNodeId, node: &BasicNode) -> PeerConnection<T> {
        PeerConnection {
            target,
            node: node.clone(),
            transport: self.transport.clone(),
        }
    }
}

type RpcResult<R, E = openraft::error::Infallible> =
    Result<R, RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, E>>>;

impl<T: ControllerTransport> PeerConnection<T> {
    async fn send<E: std::error::Error>(
        &self,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, E>>> {
        self.transport
            .call(self.target, &self.node, request)
            .await
            .map_err(|e| match e {
                TransportError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                TransportError::Protocol { .. } => RPCError::Network(NetworkError::new(&e)),
            })
    }

    fn mismatch<E: std::error::Error>(
        &self,
        got: &ControllerResponse,
    ) -> RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, E>> {
        let e = TransportError::Protocol {
            target: self.target,
            reason: format!("answer of the wrong kind: {got:?}"),
        };
        RPCError::Network(NetworkError::new(&e))
    }

    fn remote<R, E: std::error::Error>(
        &self,
        result: Result<R, RaftError<RaftNodeId, E>>,
    ) -> Result<R, RPCError<RaftNodeId, BasicNode, RaftError<RaftNodeId, E>>> {
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl<T: ControllerTransport> RaftNetwork<TypeConfig> for PeerConnection<T> {
    /// After a voter was unreachable, retry it every 50 ms rather than openraft's default
    /// 500 ms: a voter that just restarted is needed at once when another one dies (a kill soon
    /// after a restart otherwise waits out the backoff before the quorum can commit the fence).
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(std::time::Duration::from_millis(50)))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<RaftNodeId>> {
        match self.send(ControllerRequest::AppendEntries(rpc)).await? {
            ControllerResponse::AppendEntries(result) => self.remote(result),
            other => Err(self.mismatch(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<RaftNodeId>, InstallSnapshotError> {
        match self.send(ControllerRequest::InstallSnapshot(rpc)).await? {
            ControllerResponse::InstallSnapshot(result) => self.remote(result),
            other => Err(self.mismatch(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftNodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<RaftNodeId>> {
        match self.send(ControllerRequest::Vote(rpc)).await? {
            ControllerResponse::Vote(result) => self.remote(result),
            other => Err(self.mismatch(&other)),
        }
    }
}
