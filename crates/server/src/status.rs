//! The cluster as JSON, for `tandem status` and the admin API: nodes, the active controller,
//! and each partition's leader, ISR, epochs and this node's view of its offsets.

use serde_json::json;

use tandem_controller::model::FlushPolicy;

use crate::node::Node;

pub fn cluster_json(node: &Node) -> String {
    let (version, metadata) = node.metadata();
    let local: std::collections::BTreeMap<String, serde_json::Value> = node
        .replica_stats()
        .into_iter()
        .map(|(tp, stats)| {
            let load =
                |v: &std::sync::atomic::AtomicI64| v.load(std::sync::atomic::Ordering::Relaxed);
            (
                tp.to_string(),
                json!({
                    "high_watermark": load(&stats.high_watermark),
                    "log_end_offset": load(&stats.log_end_offset),
                    "log_start_offset": load(&stats.log_start_offset),
                }),
            )
        })
        .collect();
    let nodes: Vec<_> = metadata
        .nodes
        .values()
        .map(|n| {
            json!({
                "id": n.node_id,
                "incarnation": n.incarnation,
                "status": format!("{:?}", n.status),
                "address": n.addresses.first().map(|e| format!("{}:{}", e.host, e.port)),
            })
        })
        .collect();
    let partitions: Vec<_> = metadata
        .partitions()
        .map(|(topic, index, p)| {
            let name = format!("{}-{}", topic.name, index);
            json!({
                "topic": topic.name,
                "partition": index,
                "leader": p.leader,
                "leader_epoch": p.leader_epoch,
                "partition_epoch": p.partition_epoch,
                "replicas": p.replicas,
                "isr": p.isr,
                "elr": p.elr,
                "recovering": p.recovering,
                "under_replicated": p.isr.len() < p.replicas.len(),
                "under_min_isr": p.isr.len() < topic.config.min_insync_replicas as usize,
                "local": local.get(&name),
            })
        })
        .collect();
    let topics: Vec<_> = metadata
        .topics
        .values()
        .map(|t| {
            let c = &t.config;
            let flush = match c.flush {
                FlushPolicy::Always => "always".to_string(),
                FlushPolicy::Never => "never".to_string(),
                FlushPolicy::IntervalMs(ms) => ms.to_string(),
            };
            json!({
                "name": t.name,
                "kind": format!("{:?}", t.kind).to_lowercase(),
                "partitions": t.partitions.len(),
                "replication_factor": t.partitions.first().map_or(0, |p| p.replicas.len()),
                // By the names CreateTopics takes.
                "config": {
                    "min.insync.replicas": c.min_insync_replicas.to_string(),
                    "unclean.leader.election.enable": c.unclean_leader_election.to_string(),
                    "tandem.flush": flush,
                    "retention.ms": c.retention_ms.unwrap_or(-1).to_string(),
                    "retention.bytes": c.retention_bytes.map_or(-1, |b| b as i64).to_string(),
                    "max.message.bytes": c.max_message_bytes.to_string(),
                },
            })
        })
        .collect();
    json!({
        "node": node.node_id(),
        "metadata_version": version,
        "active_controller": node.active_controller(),
        "topics": topics,
        "nodes": nodes,
        "partitions": partitions,
    })
    .to_string()
}
