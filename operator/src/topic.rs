//! Topic reconciler, broker side: create the topic, grow partitions, keep configs equal to the
//! spec (with `min.insync.replicas`), change the replication factor by reassigning partitions,
//! delete it with the resource.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::json;
use weir_crds::{ClusterRef, DeletionPolicy, Topic, TopicSpec};

use crate::admin::{AdminError, BrokerAdmin, ClusterBroker, NewTopic, PartitionInfo, TopicInfo, TopicPatch};
use crate::controller::Managed;
use crate::rebalance::least_loaded;
use crate::sync::{Change, Removal, SyncOutcome};

/// The config overrides the spec asks for: `config` plus `min.insync.replicas`.
pub fn desired_configs(spec: &TopicSpec) -> BTreeMap<String, String> {
    let mut configs = spec.config.clone();
    if let Some(min_isr) = spec.min_insync_replicas {
        configs.insert("min.insync.replicas".to_string(), min_isr.to_string());
    }
    configs
}

/// The PATCH that brings `actual` to the spec (partitions up, configs set and removed).
pub fn topic_patch(spec: &TopicSpec, actual: &TopicInfo) -> TopicPatch {
    let desired = desired_configs(spec);
    let mut patch = TopicPatch::default();
    if spec.partitions > actual.partitions {
        patch.partitions = Some(spec.partitions);
    }
    for (k, v) in &desired {
        if actual.configs.get(k) != Some(v) {
            patch.configs.insert(k.clone(), v.clone());
        }
    }
    patch.delete_configs = actual.configs.keys().filter(|k| !desired.contains_key(*k)).cloned().collect();
    patch
}

fn describe(patch: &TopicPatch, before: &TopicInfo) -> String {
    let mut parts = Vec::new();
    if let Some(p) = patch.partitions {
        parts.push(format!("partitions {} -> {p}", before.partitions));
    }
    for (k, v) in &patch.configs {
        parts.push(format!("{k}={v}"));
    }
    for k in &patch.delete_configs {
        parts.push(format!("{k} removed"));
    }
    parts.join(", ")
}

/// New replica lists giving every partition of `topic` that has another count exactly `rf`
/// replicas, as `(topic, partition, replicas)`: a replica added goes to the live, non-draining
/// broker outside the list, in a rack the list is not in if there is one (`--rack`), that
/// holds the fewest replicas of all topics (ties to the lowest id), one removed comes off the end of the list, so the preferred leader stays first.
/// `Err(n)` when fewer than `rf` brokers (`n`) can hold a replica.
pub fn replica_targets(
    topic: &str,
    rf: i32,
    partitions: &[PartitionInfo],
    brokers: &[ClusterBroker],
) -> Result<Vec<(String, i32, Vec<i32>)>, usize> {
    let placeable: Vec<i32> = brokers.iter().filter(|b| b.alive && !b.draining).map(|b| b.id).collect();
    let racks: BTreeMap<i32, String> = brokers.iter().filter_map(|b| Some((b.id, b.rack.clone()?))).collect();
    let rf = rf.max(1) as usize;
    let mut load: BTreeMap<i32, usize> = placeable.iter().map(|b| (*b, 0)).collect();
    for p in partitions {
        for b in &p.replicas {
            if let Some(n) = load.get_mut(b) {
                *n += 1;
            }
        }
    }
    let mut mine: Vec<&PartitionInfo> = partitions.iter().filter(|p| p.topic == topic).collect();
    mine.sort_by_key(|p| p.partition);
    let mut targets = Vec::new();
    for p in mine {
        let mut replicas = p.replicas.clone();
        if replicas.len() == rf {
            continue;
        }
        while replicas.len() > rf {
            let gone = replicas.pop().expect("longer than rf >= 1");
            if let Some(n) = load.get_mut(&gone) {
                *n -= 1;
            }
        }
        while replicas.len() < rf {
            let Some(b) = least_loaded(&load, &replicas, &racks, None) else {
                return Err(placeable.len());
            };
            replicas.push(b);
            *load.get_mut(&b).expect("from load") += 1;
        }
        targets.push((topic.to_string(), p.partition, replicas));
    }
    Ok(targets)
}

/// The name under which replication-factor changes hold the reassignment throttle. One for
/// every Topic (holder names are short, topic names are not); a Topic that is ready releases
/// it once no partition of the cluster moves, so one topic finishing does not lift the
/// throttle under another's moves (until that one's next reconcile). Separate from the rebalancer's hold, whose release would
/// otherwise cut these moves loose too.
pub const TOPIC_MOVES_HOLDER: &str = "weir-operator.topics";

/// Moves the topic towards replication factor `rf`: waits while a reassignment of it runs,
/// else holds the throttle and starts the ones `replica_targets` gives.
async fn change_replication_factor(
    admin: &dyn BrokerAdmin,
    name: &str,
    rf: i32,
    topic: &TopicInfo,
    mut changes: Vec<Change>,
) -> Result<SyncOutcome, AdminError> {
    let all = admin.list_partitions().await?;
    let moving = all.iter().filter(|p| p.topic == name && p.reassigning()).count();
    if moving > 0 {
        return Ok(SyncOutcome::progressing(
            "Reassigning",
            format!("replication factor {} -> {rf}: {moving} partitions still moving", topic.replication_factor),
            changes,
        ));
    }
    let brokers = admin.list_brokers().await?;
    let targets = match replica_targets(name, rf, &all, &brokers) {
        Ok(t) => t,
        Err(placeable) => {
            return Ok(SyncOutcome::not_ready(
                "NotEnoughBrokers",
                format!("replication factor {rf} needs {rf} live, non-draining brokers; the cluster has {placeable}"),
                changes,
            ))
        }
    };
    if targets.is_empty() {
        // Every partition already has rf replicas; the topic's figure follows partition 0.
        return Ok(SyncOutcome::progressing(
            "Reassigning",
            format!("replication factor {} -> {rf}: waiting for the broker's view", topic.replication_factor),
            changes,
        ));
    }
    admin.hold_move_throttle(TOPIC_MOVES_HOLDER).await?;
    let refused: Vec<String> = admin
        .reassign(&targets)
        .await?
        .into_iter()
        .filter(|o| o.outcome == "refused")
        .map(|o| format!("{}-{}: {}", o.topic, o.partition, o.message.unwrap_or_default()))
        .collect();
    if !refused.is_empty() {
        return Ok(SyncOutcome::not_ready("ReassignmentRefused", refused.join("; "), changes));
    }
    changes.push(Change::new(
        "Updated",
        format!(
            "replication factor of topic {name} {} -> {rf}: reassigning {} partitions",
            topic.replication_factor,
            targets.len()
        ),
    ));
    Ok(SyncOutcome::progressing(
        "Reassigning",
        format!("replication factor {} -> {rf}: {} partitions moving", topic.replication_factor, targets.len()),
        changes,
    ))
}

/// Brings the broker's topic `name` to `spec`.
pub async fn sync_topic(admin: &dyn BrokerAdmin, name: &str, spec: &TopicSpec) -> Result<SyncOutcome, AdminError> {
    let mut changes = Vec::new();
    let mut topic = match admin.get_topic(name).await? {
        Some(t) => t,
        None => {
            let new = NewTopic {
                name: name.to_string(),
                partitions: spec.partitions,
                replication_factor: spec.replication_factor,
                configs: desired_configs(spec),
            };
            match admin.create_topic(&new).await {
                Ok(t) => {
                    changes.push(Change::new(
                        "Created",
                        format!(
                            "created topic {name} with {} partitions, replication factor {}",
                            t.partitions, t.replication_factor
                        ),
                    ));
                    t
                }
                // Created concurrently (or a retried create that did commit): diff against it.
                Err(e) if e.code() == Some("topic_exists") => admin
                    .get_topic(name)
                    .await?
                    .ok_or_else(|| AdminError::Protocol(format!("topic {name} exists and does not")))?,
                Err(e) => return Err(e),
            }
        }
    };
    let patch = topic_patch(spec, &topic);
    if !patch.is_empty() {
        let note = format!("updated topic {name}: {}", describe(&patch, &topic));
        topic = admin.patch_topic(name, &patch).await?;
        changes.push(Change::new("Updated", note));
    }
    let mut outcome = if spec.partitions < topic.partitions {
        SyncOutcome::not_ready(
            "PartitionsCannotDecrease",
            format!(
                "the topic has {} partitions on the broker, more than the {} asked for; Kafka cannot remove partitions",
                topic.partitions, spec.partitions
            ),
            changes,
        )
    } else if let Some(rf) = spec.replication_factor.filter(|rf| *rf != topic.replication_factor) {
        change_replication_factor(admin, name, rf, &topic, changes).await?
    } else {
        // The broker's replication factor is partition 0's replica count, replicas still being
        // added included: the Topic is ready once no partition of it grows or shrinks any more.
        // While the hold is set, the listing it needs anyway shows that; else one topic's list.
        let moving = admin.settle_move_throttle(TOPIC_MOVES_HOLDER).await?;
        let resizing = if !moving.is_empty() {
            moving.iter().filter(|p| p.topic == name && p.resizing()).count()
        } else if spec.replication_factor.is_some() {
            admin.topic_partitions(name).await?.iter().filter(|p| p.resizing()).count()
        } else {
            0
        };
        match resizing {
            0 => SyncOutcome::ready(changes),
            n => SyncOutcome::progressing(
                "Reassigning",
                format!("replication factor {}: {n} partitions still moving", topic.replication_factor),
                changes,
            ),
        }
    };
    outcome.status_fields.insert("topicId".into(), json!(topic.topic_id));
    outcome.status_fields.insert("partitions".into(), json!(topic.partitions));
    outcome.status_fields.insert("replicationFactor".into(), json!(topic.replication_factor));
    Ok(outcome)
}

/// Deletes the broker's topic `name`.
pub async fn remove_topic(admin: &dyn BrokerAdmin, name: &str) -> Result<Removal, AdminError> {
    Ok(if admin.delete_topic(name).await? {
        Removal::Deleted(Change::new("Deleted", format!("deleted topic {name} and its data")))
    } else {
        Removal::AlreadyGone
    })
}

#[async_trait]
impl Managed for Topic {
    const KIND: &'static str = "Topic";

    fn cluster_ref(&self) -> &ClusterRef {
        &self.spec.cluster_ref
    }

    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy
    }

    fn current_status(&self) -> Option<serde_json::Value> {
        self.status.as_ref().map(|s| serde_json::to_value(s).expect("status serializes"))
    }

    async fn sync(&self, admin: &dyn BrokerAdmin) -> Result<SyncOutcome, AdminError> {
        sync_topic(admin, &self.topic_name(), &self.spec).await
    }

    async fn remove(&self, admin: &dyn BrokerAdmin) -> Result<Removal, AdminError> {
        remove_topic(admin, &self.topic_name()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(topic: &str, partition: i32, replicas: &[i32]) -> PartitionInfo {
        PartitionInfo {
            topic: topic.into(),
            partition,
            leader: replicas.first().copied(),
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            adding: vec![],
            removing: vec![],
        }
    }

    fn brokers(ids: &[i32]) -> Vec<ClusterBroker> {
        ids.iter()
            .map(|&id| ClusterBroker { id, alive: true, draining: false, draining_owner: None, rack: None })
            .collect()
    }

    #[test]
    fn growing_adds_the_least_loaded_brokers_and_keeps_the_preferred_leader() {
        // Broker 0 already holds another topic's replica, so "orders" grows onto 1 and 2 first.
        let parts = vec![part("orders", 0, &[0]), part("orders", 1, &[1]), part("other", 0, &[0])];
        let t = replica_targets("orders", 2, &parts, &brokers(&[0, 1, 2])).unwrap();
        assert_eq!(t, vec![("orders".into(), 0, vec![0, 2]), ("orders".into(), 1, vec![1, 2])]);
        let t = replica_targets("orders", 3, &parts, &brokers(&[0, 1, 2])).unwrap();
        assert!(t.iter().all(|(_, p, r)| r.len() == 3 && r[0] == *p), "{t:?}");
    }

    #[test]
    fn growing_prefers_a_rack_the_partition_is_not_in() {
        // Racks: 0 and 1 in a, 2 in b. Broker 1 holds nothing, 2 holds one replica already,
        // yet the new replica of [0] goes to 2: rack a has one.
        let mut cluster = brokers(&[0, 1, 2]);
        for (b, rack) in cluster.iter_mut().zip(["a", "a", "b"]) {
            b.rack = Some(rack.to_string());
        }
        let parts = vec![part("t", 0, &[0]), part("u", 0, &[2])];
        assert_eq!(replica_targets("t", 2, &parts, &cluster), Ok(vec![("t".to_string(), 0, vec![0, 2])]));
        assert_eq!(replica_targets("t", 3, &parts, &cluster), Ok(vec![("t".to_string(), 0, vec![0, 2, 1])]));
    }

    #[test]
    fn shrinking_drops_from_the_end_and_equal_partitions_are_left_alone() {
        let parts = vec![part("orders", 0, &[2, 0, 1]), part("orders", 1, &[1, 2])];
        let t = replica_targets("orders", 2, &parts, &brokers(&[0, 1, 2])).unwrap();
        assert_eq!(t, vec![("orders".into(), 0, vec![2, 0])]);
    }

    #[test]
    fn draining_dead_or_too_few_brokers_are_not_used() {
        let parts = vec![part("orders", 0, &[0])];
        let mut b = brokers(&[0, 1, 2]);
        b[1].draining = true;
        assert_eq!(replica_targets("orders", 2, &parts, &b).unwrap(), vec![("orders".into(), 0, vec![0, 2])]);
        b[2].alive = false;
        assert_eq!(replica_targets("orders", 2, &parts, &b), Err(1));
    }
}
