//! The admin HTTP listener of one node (docs/observability.md):
//!
//! ```text
//!  GET /                  the dashboard (one static page, dashboard.html, polls the API)
//!  GET /metrics           Prometheus text format: this node's figures (metrics.rs)
//!  GET /api/cluster       every node's view merged: nodes, active controller, topics,
//!                         partitions with leader, ISR, epochs, offsets, lag, at_risk
//!  GET /api/partitions    the partitions of /api/cluster
//!  GET /api/events?since= this node's timeline after seq `since` (events.rs)
//!  GET /api/throughput    per-second produce / fetch traffic of every node, summed
//! ```
//!
//! The cluster-wide answers ask every node its own view (Tandem's ClusterStatus key, as
//! `tandem status` once did itself) with a short timeout each, so a dead node costs one
//! refused connection and a frozen one at most [`PEER_TIMEOUT`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tandem_controller::ControllerNode;
use tandem_protocol::{TandemRequest, TandemResponse};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use crate::node::Node;
use crate::peer_client::PeerClient;
use crate::status;

/// How long a cluster-wide answer waits for each other node's view.
pub const PEER_TIMEOUT: Duration = Duration::from_millis(800);

const DASHBOARD: &str = include_str!("dashboard.html");

/// What the admin handlers read.
pub struct Admin {
    pub node: Arc<Node>,
    /// This node's controller voter, if it is one (its counters are in /metrics).
    pub voter: Option<Arc<ControllerNode>>,
    /// Asks the other nodes for their views.
    pub client: Arc<PeerClient>,
}

pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/api/cluster", get(cluster))
        .route("/api/partitions", get(partitions))
        .route("/api/events", get(events))
        .route("/api/throughput", get(throughput))
        .with_state(admin)
}

/// Serves until `stop` turns true.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut stop: watch::Receiver<bool>) {
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, router(admin))
        .with_graceful_shutdown(stopped)
        .await
    {
        warn!(error = %e, "the admin listener stopped");
    }
}

fn answer(content_type: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn json_answer(value: &Value) -> Response {
    answer("application/json", value.to_string())
}

async fn dashboard() -> Response {
    answer("text/html; charset=utf-8", DASHBOARD.to_string())
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    answer(
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        crate::metrics::render(&admin.node, admin.voter.as_deref()),
    )
}

async fn cluster(State(admin): State<Arc<Admin>>) -> Response {
    json_answer(&merged(&admin).await)
}

async fn partitions(State(admin): State<Arc<Admin>>) -> Response {
    json_answer(&merged(&admin).await["partitions"])
}

async fn throughput(State(admin): State<Arc<Admin>>) -> Response {
    json_answer(&status::merge_throughput(&gather(&admin).await))
}

async fn events(State(admin): State<Arc<Admin>>, RawQuery(query): RawQuery) -> Response {
    let since = match parse_since(query.as_deref()) {
        Ok(since) => since,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    let events: Vec<Value> = admin
        .node
        .observability()
        .events
        .since(since)
        .iter()
        .map(|e| e.to_json())
        .collect();
    json_answer(&json!({ "node": admin.node.node_id(), "events": events }))
}

/// `since=N` (default 0); anything else in the query is ignored.
fn parse_since(query: Option<&str>) -> Result<u64, String> {
    for pair in query.unwrap_or_default().split('&') {
        if let Some(value) = pair.strip_prefix("since=") {
            return value
                .parse()
                .map_err(|_| format!("since must be a number, not {value:?}"));
        }
    }
    Ok(0)
}

async fn merged(admin: &Admin) -> Value {
    let views = gather(admin).await;
    let own = admin.node.config().advertised_address.clone();
    let fallback = (own, own_view(&admin.node));
    status::merge_views(&views, fallback)
}

fn own_view(node: &Node) -> Value {
    serde_json::from_str(&status::cluster_json(node)).unwrap_or(Value::Null)
}

/// Every reachable node's own view, by node id, with the address it answered on.
async fn gather(admin: &Admin) -> BTreeMap<i64, (String, Value)> {
    let node = &admin.node;
    let me = node.node_id() as i64;
    let mut views = BTreeMap::new();
    views.insert(
        me,
        (node.config().advertised_address.clone(), own_view(node)),
    );
    let (_, metadata) = node.metadata();
    let mut calls = tokio::task::JoinSet::new();
    for (id, record) in &metadata.nodes {
        let id = *id as i64;
        let Some(endpoint) = record.addresses.first() else {
            continue;
        };
        if id == me {
            continue;
        }
        let address = format!("{}:{}", endpoint.host, endpoint.port);
        let client = Arc::clone(&admin.client);
        calls.spawn(async move {
            let call = client.call(&address, TandemRequest::ClusterStatus);
            let view = match tokio::time::timeout(PEER_TIMEOUT, call).await {
                Ok(Ok(TandemResponse::ClusterStatus(text))) => {
                    serde_json::from_str::<Value>(&text).ok()
                }
                _ => None,
            };
            (id, address, view)
        });
    }
    while let Some(joined) = calls.join_next().await {
        if let Ok((id, address, Some(view))) = joined {
            // Trust a view only for the node it says it is.
            if view["node"].as_i64() == Some(id) {
                views.insert(id, (address, view));
            }
        }
    }
    views
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_parsed_from_the_query() {
        assert_eq!(parse_since(None), Ok(0));
        assert_eq!(parse_since(Some("since=42")), Ok(42));
        assert_eq!(parse_since(Some("x=1&since=7")), Ok(7));
        assert!(parse_since(Some("since=-1")).is_err());
    }

    #[test]
    fn the_dashboard_polls_the_api_it_is_served_with() {
        for path in ["/api/cluster", "/api/events", "/api/throughput"] {
            assert!(
                DASHBOARD.contains(path),
                "dashboard.html does not use {path}"
            );
        }
    }
}
