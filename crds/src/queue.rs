//! `Queue`: an AMQP 0-9-1 queue.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ClusterRef, DeletionPolicy, ResourceStatus};

/// An AMQP queue on a Weir cluster, declared through the broker admin API.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Queue",
    doc = "An AMQP 0-9-1 queue on a Weir cluster (weir.dev).",
    namespaced,
    status = "ResourceStatus",
    shortname = "wqueue",
    category = "weir",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterRef.name"}"#,
    printcolumn = r#"{"name":"Vhost","type":"string","jsonPath":".spec.vhost"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("has(self.spec.name) || size(self.metadata.name) <= 255").message("a Queue without spec.name takes metadata.name as the queue name, which must be at most 255 characters")
)]
#[x_kube(
    validation = Rule::new("has(self.name) == has(oldSelf.name) && (!has(self.name) || self.name == oldSelf.name)").message("spec.name is immutable: create a new Queue to rename"),
    validation = Rule::new("self.vhost == oldSelf.vhost").message("vhost is immutable"),
    validation = Rule::new("self.type == oldSelf.type").message("type is immutable: a queue cannot change between classic, quorum and stream"),
    validation = Rule::new("self.durable == oldSelf.durable && self.autoDelete == oldSelf.autoDelete").message("durable and autoDelete are immutable (AMQP refuses to redeclare a queue with other properties)"),
    validation = Rule::new("self.clusterRef == oldSelf.clusterRef").message("clusterRef is immutable"),
    validation = Rule::new("self.type == 'classic' || (self.durable && !self.autoDelete)").message("quorum and stream queues must be durable and not auto-delete"),
    validation = Rule::new("!has(self.arguments) || !('x-queue-type' in self.arguments)").message("set the queue type through spec.type, not the x-queue-type argument")
)]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// The broker cluster the queue lives on.
    pub cluster_ref: ClusterRef,
    /// Queue name on the broker (default: `metadata.name`). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub name: Option<String>,
    /// Virtual host. Immutable.
    #[serde(default = "default_vhost")]
    #[schemars(length(min = 1, max = 255))]
    pub vhost: String,
    /// `classic`, `quorum` or `stream` (the `x-queue-type` argument). Immutable.
    #[serde(default, rename = "type")]
    pub queue_type: QueueType,
    /// Survives a broker restart. Immutable.
    #[serde(default = "default_true")]
    pub durable: bool,
    /// Deleted by the broker when its last consumer goes. Immutable.
    #[serde(default)]
    pub auto_delete: bool,
    /// Queue arguments (`x-message-ttl`, `x-max-length`, `x-dead-letter-exchange`, ...), values
    /// as AMQP field values: strings, integers, booleans.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::common::arguments_schema")]
    pub arguments: BTreeMap<String, serde_json::Value>,
    /// `delete` (default) deletes the queue and its messages with the resource; `retain` keeps it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// On deletion, delete the queue only if it holds no messages (else the resource waits).
    #[serde(default)]
    pub delete_if_empty: bool,
    /// On deletion, delete the queue only if it has no consumers (else the resource waits).
    #[serde(default)]
    pub delete_if_unused: bool,
}

/// AMQP queue types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// A single-replica queue on one broker.
    #[default]
    Classic,
    /// A replicated queue (one raft group per queue).
    Quorum,
    /// An append-only log, read from an offset; also a Kafka topic.
    Stream,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }
}

impl Queue {
    /// Name of the queue on the broker.
    pub fn queue_name(&self) -> String {
        self.spec.name.clone().unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}

pub(crate) fn default_vhost() -> String {
    "/".to_string()
}

pub(crate) fn default_true() -> bool {
    true
}
