//! The cluster as JSON, for `tandem status` and the admin API: nodes, the active controller,
//! and each partition's leader, ISR, epochs and this node's view of its offsets.

use std::collections::BTreeMap;

use serde_json::{json, Value};

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
                    // On the leader: what it knows of each follower.
                    "followers": stats.followers.lock().iter().map(|f| json!({
                        "id": f.node_id,
                        "log_end_offset": f.log_end_offset,
                        "lag": f.lag_records,
                        "lag_ms": f.lag_ms,
                    })).collect::<Vec<_>>(),
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
                "admin_address": n
                    .addresses
                    .iter()
                    .find(|e| e.listener == "admin")
                    .map(|e| format!("{}:{}", e.host, e.port)),
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
                "min_insync_replicas": topic.config.min_insync_replicas,
                "offline": p.leader.is_none(),
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
    // Per-second traffic of this node, oldest first: [unix_s, produce_records, produce_bytes,
    // consumer_fetch_bytes, follower_fetch_bytes] (merged across nodes by /api/throughput).
    let throughput: Vec<_> = node
        .observability()
        .throughput
        .samples()
        .iter()
        .map(|t| {
            json!([
                t.unix_s,
                t.produce_records,
                t.produce_bytes,
                t.consumer_fetch_bytes,
                t.follower_fetch_bytes
            ])
        })
        .collect();
    json!({
        "node": node.node_id(),
        "metadata_version": version,
        "active_controller": node.active_controller(),
        "throughput": throughput,
        "topics": topics,
        "nodes": nodes,
        "partitions": partitions,
    })
    .to_string()
}

/// Why a partition's data is at risk, worst first (empty: it is not). Reads the flags of a
/// partition in [`cluster_json`].
pub fn risks(partition: &Value) -> Vec<&'static str> {
    let flag = |name: &str| partition[name].as_bool() == Some(true);
    let mut risks = Vec::new();
    if partition["leader"].is_null() {
        risks.push("offline");
    }
    if flag("recovering") {
        risks.push("recovering");
    }
    if flag("under_min_isr") {
        risks.push("under_min_isr");
    }
    if flag("under_replicated") {
        risks.push("under_replicated");
    }
    risks
}

/// Every node's own view (`node id -> (address, cluster_json)`) merged into one: the base is
/// the view with the newest metadata; each partition gains `high_watermark` (its leader's),
/// `replica_offsets` (each replica's HW and LEO as it reported them, its lag behind the
/// leader's LEO in records, and in ms as the leader measures it) and `at_risk`.
/// `answered_by` names the view used when no view is in `views`.
pub fn merge_views(views: &BTreeMap<i64, (String, Value)>, fallback: (String, Value)) -> Value {
    let (answered_by, mut base) = views
        .values()
        .max_by_key(|(_, v)| v["metadata_version"].as_u64().unwrap_or(0))
        .cloned()
        .unwrap_or(fallback);
    // What node `id` reports about its own replica of topic-partition.
    let local = |id: i64, topic: &str, partition: i64| -> Option<&Value> {
        let (_, view) = views.get(&id)?;
        let p = view["partitions"].as_array()?.iter().find(|p| {
            p["topic"].as_str() == Some(topic) && p["partition"].as_i64() == Some(partition)
        })?;
        Some(&p["local"]).filter(|l| l.is_object())
    };
    let offsets = |l: &Value| Some((l["high_watermark"].as_i64()?, l["log_end_offset"].as_i64()?));
    if let Some(partitions) = base["partitions"].as_array_mut() {
        for p in partitions {
            let topic = p["topic"].as_str().unwrap_or_default().to_string();
            let index = p["partition"].as_i64().unwrap_or(-1);
            let leader_local = p["leader"].as_i64().and_then(|l| local(l, &topic, index));
            let leader_offsets = leader_local.and_then(offsets);
            let follower = |id: i64| {
                leader_local.and_then(|l| {
                    l["followers"]
                        .as_array()?
                        .iter()
                        .find(|f| f["id"].as_i64() == Some(id))
                })
            };
            let replicas: Vec<i64> = p["replicas"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_i64)
                .collect();
            let replica_offsets: Vec<Value> = replicas
                .iter()
                .map(|&r| {
                    let lag_ms = if Some(r) == p["leader"].as_i64() {
                        json!(0)
                    } else {
                        follower(r).map_or(Value::Null, |f| f["lag_ms"].clone())
                    };
                    match local(r, &topic, index).and_then(offsets) {
                        Some((hw, leo)) => json!({
                            "id": r,
                            "high_watermark": hw,
                            "log_end_offset": leo,
                            "lag": leader_offsets.map(|(_, leader_leo)| (leader_leo - leo).max(0)),
                            "lag_ms": lag_ms,
                        }),
                        None => json!({
                            "id": r,
                            "reported": false,
                            // The leader still knows how far behind it is.
                            "lag": follower(r).map_or(Value::Null, |f| f["lag"].clone()),
                            "lag_ms": lag_ms,
                        }),
                    }
                })
                .collect();
            p["high_watermark"] = json!(leader_offsets.map(|(hw, _)| hw));
            p["replica_offsets"] = json!(replica_offsets);
            p["at_risk"] = json!(risks(p));
        }
    }
    if let Some(object) = base.as_object_mut() {
        object.remove("throughput");
    }
    base["answered_by"] = json!(answered_by);
    base["views_from"] = json!(views.keys().collect::<Vec<_>>());
    base
}

/// The per-second traffic of every node summed by second, oldest first, as columns:
/// `{"unix_s": [...], "produce_records": [...], "produce_bytes": [...],
/// "consumer_fetch_bytes": [...], "follower_fetch_bytes": [...]}`.
pub fn merge_throughput(views: &BTreeMap<i64, (String, Value)>) -> Value {
    let mut by_second: BTreeMap<i64, [u64; 4]> = BTreeMap::new();
    for (_, view) in views.values() {
        for sample in view["throughput"].as_array().into_iter().flatten() {
            let Some(unix_s) = sample[0].as_i64() else {
                continue;
            };
            let sums = by_second.entry(unix_s).or_default();
            for (i, sum) in sums.iter_mut().enumerate() {
                *sum += sample[i + 1].as_u64().unwrap_or(0);
            }
        }
    }
    let column = |i: usize| by_second.values().map(|s| s[i]).collect::<Vec<_>>();
    json!({
        "unix_s": by_second.keys().collect::<Vec<_>>(),
        "produce_records": column(0),
        "produce_bytes": column(1),
        "consumer_fetch_bytes": column(2),
        "follower_fetch_bytes": column(3),
        "nodes": views.keys().collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(node: i64, version: u64, leader: i64, isr: &[i64], local: Value) -> Value {
        json!({
            "node": node,
            "metadata_version": version,
            "nodes": [],
            "throughput": [[100, 5, 500, 0, 0], [101, 1, 100, 0, 0]],
            "partitions": [{
                "topic": "t", "partition": 0, "leader": leader, "replicas": [1, 2, 3],
                "isr": isr, "recovering": false, "under_replicated": isr.len() < 3,
                "under_min_isr": isr.len() < 2, "local": local,
            }],
        })
    }

    #[test]
    fn merging_takes_the_newest_metadata_and_each_replicas_own_offsets_and_lag() {
        let leader_local = json!({
            "high_watermark": 10, "log_end_offset": 12,
            "followers": [{"id": 2, "lag": 2, "lag_ms": 40}, {"id": 3, "lag": 12, "lag_ms": 2500}],
        });
        let mut views = BTreeMap::new();
        views.insert(1, ("a:1".to_string(), view(1, 7, 1, &[1, 2], leader_local)));
        views.insert(
            2,
            (
                "a:2".to_string(),
                view(
                    2,
                    6,
                    1,
                    &[1, 2, 3],
                    json!({"high_watermark": 10, "log_end_offset": 10}),
                ),
            ),
        );
        let merged = merge_views(&views, ("none".into(), Value::Null));
        assert_eq!(merged["answered_by"], "a:1", "the newest metadata wins");
        assert_eq!(merged["views_from"], json!([1, 2]));
        assert!(merged.get("throughput").is_none());
        let p = &merged["partitions"][0];
        assert_eq!(p["high_watermark"], 10);
        assert_eq!(p["at_risk"], json!(["under_replicated"]));
        let r = &p["replica_offsets"];
        assert_eq!(
            r[0],
            json!({"id": 1, "high_watermark": 10, "log_end_offset": 12, "lag": 0, "lag_ms": 0})
        );
        assert_eq!(
            r[1],
            json!({"id": 2, "high_watermark": 10, "log_end_offset": 10, "lag": 2, "lag_ms": 40})
        );
        assert_eq!(
            r[2],
            json!({"id": 3, "reported": false, "lag": 12, "lag_ms": 2500})
        );
    }

    #[test]
    fn risks_name_every_reason_worst_first() {
        let p = json!({"leader": null, "recovering": true, "under_min_isr": true, "under_replicated": true});
        assert_eq!(
            risks(&p),
            vec!["offline", "recovering", "under_min_isr", "under_replicated"]
        );
        assert!(risks(&json!({"leader": 1})).is_empty());
    }

    #[test]
    fn throughput_is_summed_by_second_across_nodes() {
        let mut views = BTreeMap::new();
        views.insert(1, (String::new(), view(1, 1, 1, &[1], Value::Null)));
        views.insert(2, (String::new(), view(2, 1, 1, &[1], Value::Null)));
        let merged = merge_throughput(&views);
        assert_eq!(merged["unix_s"], json!([100, 101]));
        assert_eq!(merged["produce_records"], json!([10, 2]));
        assert_eq!(merged["produce_bytes"], json!([1000, 200]));
    }
}
