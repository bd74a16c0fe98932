//! `Topic`: a Kafka topic.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ClusterRef, DeletionPolicy};

/// A Kafka topic on a Weir cluster. The operator creates it through the broker admin API,
/// grows its partitions, keeps its configs equal to `config` (plus `min.insync.replicas`), and
/// deletes it with the resource unless `deletionPolicy` is `retain`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Topic",
    doc = "A Kafka topic on a Weir cluster (weir.dev).",
    namespaced,
    status = "TopicStatus",
    shortname = "wtopic",
    category = "weir",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterRef.name"}"#,
    printcolumn = r#"{"name":"Partitions","type":"integer","jsonPath":".spec.partitions"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicationFactor"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("has(self.spec.name) || size(self.metadata.name) <= 249").message("a Topic without spec.name takes metadata.name as the topic name, which must be at most 249 characters")
)]
#[x_kube(
    validation = Rule::new("self.partitions >= oldSelf.partitions").message("partitions can only be increased: Kafka cannot remove a partition without moving keys to other partitions"),
    validation = Rule::new("has(self.name) == has(oldSelf.name) && (!has(self.name) || self.name == oldSelf.name)").message("spec.name is immutable: create a new Topic to rename"),
    validation = Rule::new("has(self.replicationFactor) || !has(oldSelf.replicationFactor)").message("replicationFactor cannot be removed once set: set the number of replicas wanted instead"),
    validation = Rule::new("self.clusterRef == oldSelf.clusterRef").message("clusterRef is immutable"),
    validation = Rule::new("!has(self.minInsyncReplicas) || !has(self.replicationFactor) || self.minInsyncReplicas <= self.replicationFactor").message("minInsyncReplicas must not exceed replicationFactor, or no acks=all write could ever succeed"),
    validation = Rule::new("!has(self.config) || !('min.insync.replicas' in self.config)").message("set min.insync.replicas through spec.minInsyncReplicas, not spec.config")
)]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// The broker cluster the topic lives on.
    pub cluster_ref: ClusterRef,
    /// Topic name on the broker (default: `metadata.name`). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub name: Option<String>,
    /// Partition count. It can only grow.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 10000))]
    pub partitions: i32,
    /// Replicas per partition (default: the broker's, 1). Changing it reassigns the topic's
    /// partitions: replicas are added on the brokers holding the fewest, or removed from the end
    /// of each partition's list (the preferred leader stays). Once set it cannot be removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub replication_factor: Option<i32>,
    /// `min.insync.replicas` of the topic (default: the broker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub min_insync_replicas: Option<i32>,
    /// Topic config overrides (`retention.ms`, `cleanup.policy`, ...). The operator owns the
    /// topic's overrides: one set behind its back that is not listed here is removed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub config: BTreeMap<String, String>,
    /// `delete` (default) deletes the topic and its data with the resource; `retain` keeps it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_partitions() -> i32 {
    1
}

impl Topic {
    /// Name of the topic on the broker.
    pub fn topic_name(&self) -> String {
        self.spec.name.clone().unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}

/// What the operator last saw of the topic on the broker.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// The `metadata.generation` the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and `Synced`, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Topic id the broker gave the topic (changes if the topic is deleted and created again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// Partition count on the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Replication factor on the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
}
