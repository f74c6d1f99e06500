//! [`Client`]: bootstrap, a connection per node, the metadata cache, and admin operations.
//! Cheap to clone; producers and consumers share one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tandem_protocol::errors;
use tandem_protocol::kafka_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig,
};
use tandem_protocol::kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, InitProducerIdRequest, MetadataRequest, ProducerId,
    TopicName,
};
use tandem_protocol::kafka_protocol::protocol::StrBytes;
use tandem_protocol::{ApiKey, RequestKind, ResponseKind, TandemRequest, TandemResponse};

use crate::accumulator::ProducerIdentity;
use crate::connection::Connection;
use crate::error::{backoff, Error, Result};
use crate::metadata::{ClusterMetadata, TopicMetadata};

/// Settings shared by everything built on one [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// "host:port" of any nodes; one reachable node is enough.
    pub bootstrap: Vec<String>,
    pub client_id: String,
    pub connect_timeout: Duration,
    /// How long to wait for an answer (long polls add their wait to this).
    pub request_timeout: Duration,
    /// First retry delay; doubles per attempt up to `max_retry_backoff`.
    pub retry_backoff: Duration,
    pub max_retry_backoff: Duration,
    /// How long admin operations and offset lookups keep retrying transient errors.
    pub operation_timeout: Duration,
    pub max_frame_bytes: usize,
}

impl ClientConfig {
    /// Defaults, with these bootstrap addresses.
    pub fn new<S: Into<String>>(bootstrap: impl IntoIterator<Item = S>) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap.into_iter().map(Into::into).collect(),
            client_id: "tandem-client".into(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            retry_backoff: Duration::from_millis(20),
            max_retry_backoff: Duration::from_secs(1),
            operation_timeout: Duration::from_secs(30),
            max_frame_bytes: tandem_protocol::DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: u32,
    /// `None`: the server's default (3, or fewer nodes).
    pub replication_factor: Option<u16>,
    /// Kafka's names (`min.insync.replicas`, `retention.ms`, ...) plus Tandem's
    /// (`tandem.flush` = always|never|<ms>, `tandem.kind` = log|table).
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, partitions: u32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: None,
            configs: Vec::new(),
        }
    }

    pub fn replication_factor(mut self, rf: u16) -> NewTopic {
        self.replication_factor = Some(rf);
        self
    }

    pub fn config(mut self, name: impl Into<String>, value: impl Into<String>) -> NewTopic {
        self.configs.push((name.into(), value.into()));
        self
    }
}

/// The cluster as one node sees it (`tandem status`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterStatus {
    /// The node that answered.
    pub answered_by: String,
    pub json: serde_json::Value,
}

/// Counts for a one-line summary of [`ClusterStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusSummary {
    pub nodes: usize,
    pub live_nodes: usize,
    pub partitions: usize,
    pub offline: usize,
    pub under_replicated: usize,
    pub under_min_isr: usize,
}

impl ClusterStatus {
    pub fn summary(&self) -> StatusSummary {
        summarize(&self.json)
    }
}

/// Reads the counts out of the status JSON (missing fields count as zero).
pub fn summarize(json: &serde_json::Value) -> StatusSummary {
    let empty = Vec::new();
    let nodes = json["nodes"].as_array().unwrap_or(&empty);
    let partitions = json["partitions"].as_array().unwrap_or(&empty);
    let flag = |p: &&serde_json::Value, name: &str| p[name].as_bool().unwrap_or(false);
    StatusSummary {
        nodes: nodes.len(),
        live_nodes: nodes
            .iter()
            .filter(|n| n["status"].as_str().is_some_and(|s| s != "Fenced"))
            .count(),
        partitions: partitions.len(),
        offline: partitions.iter().filter(|p| p["leader"].is_null()).count(),
        under_replicated: partitions
            .iter()
            .filter(|p| flag(p, "under_replicated"))
            .count(),
        under_min_isr: partitions
            .iter()
            .filter(|p| flag(p, "under_min_isr"))
            .count(),
    }
}

impl std::fmt::Display for StatusSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} nodes live, {} partitions: {} offline, {} under-replicated, {} under min ISR",
            self.live_nodes,
            self.nodes,
            self.partitions,
            self.offline,
            self.under_replicated,
            self.under_min_isr
        )
    }
}

/// A handle on a Tandem cluster. Clone it freely.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    metadata: RwLock<ClusterMetadata>,
    /// One refresh at a time; callers that queued behind a refresh reuse its result.
    refresh: tokio::sync::Mutex<()>,
    refreshes: AtomicU64,
    /// For backoff jitter and rotating over nodes.
    counter: AtomicU64,
}

impl Client {
    /// Connects to the first reachable bootstrap node and loads the cluster's metadata.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        if config.bootstrap.is_empty() {
            return Err(Error::NoBootstrap);
        }
        let client = Client {
            inner: Arc::new(Inner {
                config,
                connections: Mutex::new(HashMap::new()),
                metadata: RwLock::new(ClusterMetadata::default()),
                refresh: tokio::sync::Mutex::new(()),
                refreshes: AtomicU64::new(0),
                counter: AtomicU64::new(std::process::id() as u64),
            }),
        };
        client.refresh_metadata().await?;
        Ok(client)
    }

    /// [`Client::connect`] with default settings.
    pub async fn bootstrap(addresses: &str) -> Result<Client> {
        let list: Vec<String> = addresses
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        Client::connect(ClientConfig::new(list)).await
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// A copy of the cached metadata.
    pub fn metadata(&self) -> ClusterMetadata {
        self.inner.metadata.read().clone()
    }

    pub(crate) fn with_metadata<T>(&self, f: impl FnOnce(&ClusterMetadata) -> T) -> T {
        f(&self.inner.metadata.read())
    }

    pub(crate) fn update_metadata(&self, f: impl FnOnce(&mut ClusterMetadata)) {
        f(&mut self.inner.metadata.write())
    }

    pub(crate) fn next_seed(&self) -> u64 {
        self.inner.counter.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        backoff(
            attempt,
            self.inner.config.retry_backoff,
            self.inner.config.max_retry_backoff,
            self.next_seed(),
        )
    }

    /// The open connection to `address`, opening one if needed.
    pub(crate) async fn connection(&self, address: &str) -> Result<Arc<Connection>> {
        if let Some(existing) = self.inner.connections.lock().get(address) {
            if !existing.is_closed() {
                return Ok(Arc::clone(existing));
            }
        }
        let config = &self.inner.config;
        let fresh = Arc::new(
            Connection::open(
                address,
                &config.client_id,
                config.connect_timeout,
                config.request_timeout,
                config.max_frame_bytes,
            )
            .await?,
        );
        let mut connections = self.inner.connections.lock();
        match connections.get(address) {
            Some(other) if !other.is_closed() => Ok(Arc::clone(other)),
            _ => {
                connections.insert(address.to_string(), Arc::clone(&fresh));
                Ok(fresh)
            }
        }
    }

    /// Candidate nodes for requests any node can answer: known brokers (rotated), then the
    /// bootstrap list.
    fn any_node_addresses(&self) -> Vec<String> {
        let mut known: Vec<String> = self
            .inner
            .metadata
            .read()
            .brokers
            .values()
            .cloned()
            .collect();
        if !known.is_empty() {
            let shift = self.next_seed() as usize % known.len();
            known.rotate_left(shift);
        }
        for b in &self.inner.config.bootstrap {
            if !known.contains(b) {
                known.push(b.clone());
            }
        }
        known
    }

    /// Sends a Kafka request to the first node that answers.
    async fn call_any(&self, key: ApiKey, body: RequestKind) -> Result<(String, ResponseKind)> {
        let mut last = Error::NoBootstrap;
        for address in self.any_node_addresses() {
            let attempt = async {
                let connection = self.connection(&address).await?;
                connection
                    .call(key, body.clone(), self.inner.config.request_timeout)
                    .await
            };
            match attempt.await {
                Ok(response) => return Ok((address, response)),
                Err(e) => {
                    tracing::debug!(%address, error = %e, "node did not answer");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Reloads the metadata of every topic from any node. Concurrent callers share one
    /// refresh.
    pub async fn refresh_metadata(&self) -> Result<()> {
        let seen = self.inner.refreshes.load(Ordering::Acquire);
        let _guard = self.inner.refresh.lock().await;
        if self.inner.refreshes.load(Ordering::Acquire) != seen {
            return Ok(()); // someone refreshed while we queued
        }
        let request = MetadataRequest::default()
            .with_topics(None)
            .with_allow_auto_topic_creation(false);
        let (_, response) = self
            .call_any(ApiKey::Metadata, RequestKind::Metadata(request))
            .await?;
        let ResponseKind::Metadata(response) = response else {
            return Err(Error::Other("Metadata answered with another api".into()));
        };
        let fresh = ClusterMetadata::from_response(&response);
        self.inner.metadata.write().merge(fresh);
        self.inner.refreshes.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The partition count of `topic`, refreshing metadata once if it is not known.
    pub async fn partition_count(&self, topic: &str) -> Result<u32> {
        if let Some(n) = self.with_metadata(|m| m.partition_count(topic)) {
            return Ok(n);
        }
        self.refresh_metadata().await?;
        self.with_metadata(|m| m.partition_count(topic))
            .ok_or_else(|| Error::UnknownTopic(topic.to_string()))
    }

    /// Every topic, freshly loaded.
    pub async fn list_topics(&self) -> Result<Vec<TopicMetadata>> {
        self.refresh_metadata().await?;
        Ok(self.with_metadata(|m| m.topics.values().cloned().collect()))
    }

    /// Retries `op` on transient errors until it succeeds, fails for good, or the operation
    /// timeout passes.
    pub(crate) async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.inner.config.operation_timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    tracing::debug!(what, attempt, error = %e, "retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    let _ = self.refresh_metadata().await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates a topic and waits (within the operation timeout) until every partition has a
    /// leader in the client's metadata.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        if topic.partitions == 0 {
            return Err(Error::InvalidArgument(
                "a topic needs at least one partition".into(),
            ));
        }
        let creatable = CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.name.clone())))
            .with_num_partitions(topic.partitions as i32)
            .with_replication_factor(topic.replication_factor.map_or(-1, |rf| rf as i16))
            .with_configs(
                topic
                    .configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .collect(),
            );
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(self.inner.config.request_timeout.as_millis() as i32)
            .with_topics(vec![creatable]);
        let name = topic.name.clone();
        self.retrying("create topic", || {
            let request = request.clone();
            let name = name.clone();
            async move {
                let (_, response) = self
                    .call_any(ApiKey::CreateTopics, RequestKind::CreateTopics(request))
                    .await?;
                let ResponseKind::CreateTopics(response) = response else {
                    return Err(Error::Other(
                        "CreateTopics answered with another api".into(),
                    ));
                };
                let result = response
                    .topics
                    .first()
                    .ok_or_else(|| Error::Other("CreateTopics answered with no topic".into()))?;
                match result.error_code {
                    errors::NONE => Ok(()),
                    errors::TOPIC_ALREADY_EXISTS => Err(Error::TopicAlreadyExists(name)),
                    code => Err(Error::server(
                        format!("create topic {name:?}"),
                        code,
                        result.error_message.as_ref().map(|m| m.to_string()),
                    )),
                }
            }
        })
        .await?;
        // Wait for leaders so that a produce right after this finds them.
        let deadline = Instant::now() + self.inner.config.operation_timeout;
        let mut attempt = 0;
        loop {
            self.refresh_metadata().await?;
            let ready = self.with_metadata(|m| {
                m.topics.get(&topic.name).is_some_and(|t| {
                    t.partitions.len() == topic.partitions as usize
                        && t.partitions.iter().all(|p| p.leader.is_some())
                })
            });
            if ready || Instant::now() >= deadline {
                return Ok(());
            }
            attempt += 1;
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = DeleteTopicsRequest::default()
            .with_timeout_ms(self.inner.config.request_timeout.as_millis() as i32)
            .with_topic_names(vec![TopicName(StrBytes::from_string(name.to_string()))]);
        self.retrying("delete topic", || {
            let request = request.clone();
            async move {
                let (_, response) = self
                    .call_any(ApiKey::DeleteTopics, RequestKind::DeleteTopics(request))
                    .await?;
                let ResponseKind::DeleteTopics(response) = response else {
                    return Err(Error::Other(
                        "DeleteTopics answered with another api".into(),
                    ));
                };
                let result = response
                    .responses
                    .first()
                    .ok_or_else(|| Error::Other("DeleteTopics answered with no topic".into()))?;
                match result.error_code {
                    errors::NONE => Ok(()),
                    errors::UNKNOWN_TOPIC_OR_PARTITION => {
                        Err(Error::UnknownTopic(name.to_string()))
                    }
                    code => Err(Error::server(
                        format!("delete topic {name:?}"),
                        code,
                        result.error_message.as_ref().map(|m| m.to_string()),
                    )),
                }
            }
        })
        .await?;
        let _ = self.refresh_metadata().await;
        Ok(())
    }

    /// The cluster status JSON (Tandem's ClusterStatus key), from any node.
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        let mut last = Error::NoBootstrap;
        for address in self.any_node_addresses() {
            match self.cluster_status_at(&address).await {
                Ok(status) => return Ok(status),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The cluster status JSON as the node at `address` sees it (its own replicas' offsets
    /// are in each partition's `local`).
    pub async fn cluster_status_at(&self, address: &str) -> Result<ClusterStatus> {
        let connection = self.connection(address).await?;
        let response = connection
            .call_tandem(
                &TandemRequest::ClusterStatus,
                self.inner.config.request_timeout,
            )
            .await?;
        match response {
            TandemResponse::ClusterStatus(text) => {
                let json = serde_json::from_str(&text).map_err(|e| Error::Protocol {
                    address: address.to_string(),
                    reason: format!("status is not JSON: {e}"),
                })?;
                Ok(ClusterStatus {
                    answered_by: address.to_string(),
                    json,
                })
            }
            TandemResponse::Error {
                error_code,
                message,
            } => Err(Error::server("cluster status", error_code, Some(message))),
            _ => Err(Error::Protocol {
                address: address.to_string(),
                reason: "ClusterStatus answered with another message".into(),
            }),
        }
    }

    /// A fresh idempotent producer identity (InitProducerId).
    pub async fn init_producer_id(&self) -> Result<ProducerIdentity> {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        self.retrying("init producer id", || {
            let request = request.clone();
            async move {
                let (_, response) = self
                    .call_any(ApiKey::InitProducerId, RequestKind::InitProducerId(request))
                    .await?;
                let ResponseKind::InitProducerId(response) = response else {
                    return Err(Error::Other(
                        "InitProducerId answered with another api".into(),
                    ));
                };
                if response.error_code != errors::NONE {
                    return Err(Error::server("init producer id", response.error_code, None));
                }
                Ok(ProducerIdentity {
                    producer_id: response.producer_id.0,
                    producer_epoch: response.producer_epoch,
                })
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_summary_counts_what_the_json_says() {
        let json: serde_json::Value = serde_json::json!({
            "nodes": [
                {"id": 1, "status": "Live"}, {"id": 2, "status": "Fenced"}, {"id": 3, "status": "Live"}
            ],
            "partitions": [
                {"leader": 1, "under_replicated": true, "under_min_isr": false},
                {"leader": null, "under_replicated": true, "under_min_isr": true},
                {"leader": 3, "under_replicated": false, "under_min_isr": false}
            ]
        });
        let s = summarize(&json);
        assert_eq!(
            s,
            StatusSummary {
                nodes: 3,
                live_nodes: 2,
                partitions: 3,
                offline: 1,
                under_replicated: 2,
                under_min_isr: 1
            }
        );
        assert_eq!(
            s.to_string(),
            "2/3 nodes live, 3 partitions: 1 offline, 2 under-replicated, 1 under min ISR"
        );
        assert_eq!(
            summarize(&serde_json::Value::Null),
            StatusSummary::default()
        );
    }
}
