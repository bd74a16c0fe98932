//! `Exchange`: an AMQP 0-9-1 exchange.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ClusterRef, DeletionPolicy, ResourceStatus};
use crate::queue::{default_true, default_vhost};

/// An AMQP exchange on a Weir cluster, declared through the broker admin API.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Exchange",
    doc = "An AMQP 0-9-1 exchange on a Weir cluster (weir.dev).",
    namespaced,
    status = "ResourceStatus",
    shortname = "wexchange",
    category = "weir",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterRef.name"}"#,
    printcolumn = r#"{"name":"Vhost","type":"string","jsonPath":".spec.vhost"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("has(self.spec.name) || size(self.metadata.name) <= 255").message("an Exchange without spec.name takes metadata.name as the exchange name, which must be at most 255 characters"),
    validation = Rule::new("has(self.spec.name) || !self.metadata.name.startsWith('amq.')").message("exchange names starting with 'amq.' are reserved by AMQP")
)]
#[x_kube(
    validation = Rule::new("has(self.name) == has(oldSelf.name) && (!has(self.name) || self.name == oldSelf.name)").message("spec.name is immutable: create a new Exchange to rename"),
    validation = Rule::new("self.vhost == oldSelf.vhost").message("vhost is immutable"),
    validation = Rule::new("self.type == oldSelf.type").message("type is immutable: AMQP refuses to redeclare an exchange with another type"),
    validation = Rule::new("self.durable == oldSelf.durable && self.autoDelete == oldSelf.autoDelete && self.internal == oldSelf.internal").message("durable, autoDelete and internal are immutable (AMQP refuses to redeclare an exchange with other properties)"),
    validation = Rule::new("self.clusterRef == oldSelf.clusterRef").message("clusterRef is immutable"),
    validation = Rule::new("!has(self.name) || !self.name.startsWith('amq.')").message("exchange names starting with 'amq.' are reserved by AMQP")
)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeSpec {
    /// The broker cluster the exchange lives on.
    pub cluster_ref: ClusterRef,
    /// Exchange name on the broker (default: `metadata.name`). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub name: Option<String>,
    /// Virtual host. Immutable.
    #[serde(default = "default_vhost")]
    #[schemars(length(min = 1, max = 255))]
    pub vhost: String,
    /// `direct`, `fanout`, `topic` or `headers`. Immutable.
    #[serde(rename = "type")]
    pub exchange_type: ExchangeType,
    /// Survives a broker restart. Immutable.
    #[serde(default = "default_true")]
    pub durable: bool,
    /// Deleted by the broker when its last binding goes. Immutable.
    #[serde(default)]
    pub auto_delete: bool,
    /// Clients cannot publish to an internal exchange; only exchange-to-exchange bindings feed
    /// it. Immutable.
    #[serde(default)]
    pub internal: bool,
    /// Exchange arguments (for example `alternate-exchange`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::common::arguments_schema")]
    pub arguments: BTreeMap<String, serde_json::Value>,
    /// `delete` (default) deletes the exchange with the resource; `retain` keeps it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// AMQP exchange types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Fanout => "fanout",
            ExchangeType::Topic => "topic",
            ExchangeType::Headers => "headers",
        }
    }
}

impl Exchange {
    /// Name of the exchange on the broker.
    pub fn exchange_name(&self) -> String {
        self.spec.name.clone().unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}
