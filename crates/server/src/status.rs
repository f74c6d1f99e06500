//! The cluster as JSON, for `tandem status` and the admin API: nodes, the active controller,
//! and each partition's leader, ISR, epochs and this node's view of its offsets.

use serde_json::json;

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
    json!({
        "node": node.node_id(),
        "metadata_version": version,
        "nodes": nodes,
        "partitions": partitions,
    })
    .to_string()
}
