//! An in-process network of controller voters, for tests: every message is postcard-encoded and
//! decoded on the way (as over TCP), and any voter can be cut off or brought back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};

use openraft::BasicNode;
use parking_lot::RwLock;

use crate::network::{ControllerTransport, TransportError};
use crate::node::ControllerNode;
use crate::raft_types::RaftNodeId;
use crate::rpc::{ControllerRequest, ControllerResponse};

#[derive(Default)]
struct Inner {
    /// Weak: a voter holds its transport, which holds this network.
    voters: BTreeMap<RaftNodeId, Weak<ControllerNode>>,
    /// Voters that can neither send nor receive.
    isolated: BTreeSet<RaftNodeId>,
}

/// The voters of one test cluster; clones share it.
#[derive(Clone, Default)]
pub struct LocalNetwork {
    inner: Arc<RwLock<Inner>>,
}

impl LocalNetwork {
    pub fn new() -> LocalNetwork {
        LocalNetwork::default()
    }

    /// The transport voter `from` sends with.
    pub fn transport(&self, from: RaftNodeId) -> LocalTransport {
        LocalTransport {
            from: Some(from),
            network: self.clone(),
        }
    }

    /// A transport for a non-voter (a data node talking to the controller).
    pub fn client(&self) -> LocalTransport {
        LocalTransport {
            from: None,
            network: self.clone(),
        }
    }

    pub fn add(&self, node: &Arc<ControllerNode>) {
        self.inner
            .write()
            .voters
            .insert(node.id(), Arc::downgrade(node));
    }

    pub fn remove(&self, id: RaftNodeId) {
        self.inner.write().voters.remove(&id);
    }

    pub fn isolate(&self, id: RaftNodeId) {
        self.inner.write().isolated.insert(id);
    }

    pub fn heal(&self, id: RaftNodeId) {
        self.inner.write().isolated.remove(&id);
    }
}

/// Sends requests through a [`LocalNetwork`].
#[derive(Clone)]
pub struct LocalTransport {
    from: Option<RaftNodeId>,
    network: LocalNetwork,
}

impl LocalTransport {
    /// Sends `request` to voter `target`.
    pub async fn send(
        &self,
        target: RaftNodeId,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, TransportError> {
        let unreachable = |reason: &str| TransportError::Unreachable {
            target,
            reason: reason.to_string(),
        };
        let node = {
            let inner = self.network.inner.read();
            if self.from.is_some_and(|f| inner.isolated.contains(&f)) {
                return Err(unreachable("the sender is isolated"));
            }
            if inner.isolated.contains(&target) {
                return Err(unreachable("the voter is isolated"));
            }
            inner
                .voters
                .get(&target)
                .and_then(Weak::upgrade)
                .ok_or_else(|| unreachable("no such voter running"))?
        };
        let protocol = |e: crate::rpc::DecodeError| TransportError::Protocol {
            target,
            reason: e.to_string(),
        };
        let request = ControllerRequest::decode(&request.encode()).map_err(protocol)?;
        let response = node.handle(request).await;
        // The answer is lost if the voter was cut off meanwhile.
        if self.network.inner.read().isolated.contains(&target) {
            return Err(unreachable("the voter was isolated"));
        }
        ControllerResponse::decode(&response.encode()).map_err(protocol)
    }
}

impl ControllerTransport for LocalTransport {
    async fn call(
        &self,
        target: RaftNodeId,
        _node: &BasicNode,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, TransportError> {
        self.send(target, request).await
    }
}
