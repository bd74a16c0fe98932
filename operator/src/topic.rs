//! Topic reconciler, broker side: create the topic, grow partitions, keep configs equal to the
//! spec (with `min.insync.replicas`), delete it with the resource.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::json;
use weir_crds::{ClusterRef, DeletionPolicy, Topic, TopicSpec};

use crate::admin::{AdminError, BrokerAdmin, NewTopic, TopicInfo, TopicPatch};
use crate::controller::Managed;
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
    } else if spec.replication_factor.is_some_and(|rf| rf != topic.replication_factor) {
        SyncOutcome::not_ready(
            "ReplicationFactorMismatch",
            format!(
                "the topic has replication factor {} on the broker, not {}; changing it needs partition reassignment, which Weir does not offer yet",
                topic.replication_factor,
                spec.replication_factor.unwrap_or_default()
            ),
            changes,
        )
    } else {
        SyncOutcome::ready(changes)
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
