//! `Binding`: an AMQP 0-9-1 binding from an exchange to a queue or another exchange.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ClusterRef, DeletionPolicy, ResourceStatus};
use crate::queue::default_vhost;

/// A binding on a Weir cluster. A binding is identified by all of its fields, so none of them
/// can change (except `deletionPolicy`): create a new Binding and delete the old one instead.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Binding",
    doc = "An AMQP 0-9-1 binding on a Weir cluster (weir.dev).",
    namespaced,
    status = "ResourceStatus",
    shortname = "wbinding",
    category = "weir",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterRef.name"}"#,
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.source"}"#,
    printcolumn = r#"{"name":"Destination","type":"string","jsonPath":".spec.destination"}"#,
    printcolumn = r#"{"name":"Key","type":"string","jsonPath":".spec.routingKey"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("self.vhost == oldSelf.vhost && self.source == oldSelf.source && self.destination == oldSelf.destination && self.destinationType == oldSelf.destinationType && self.routingKey == oldSelf.routingKey").message("a binding is identified by vhost, source, destination, destinationType and routingKey, which are immutable: create a new Binding instead"),
    validation = Rule::new("has(self.arguments) == has(oldSelf.arguments) && (!has(self.arguments) || self.arguments == oldSelf.arguments)").message("binding arguments are immutable: create a new Binding instead"),
    validation = Rule::new("self.clusterRef == oldSelf.clusterRef").message("clusterRef is immutable")
)]
#[serde(rename_all = "camelCase")]
pub struct BindingSpec {
    /// The broker cluster the binding lives on.
    pub cluster_ref: ClusterRef,
    /// Virtual host of the source and the destination.
    #[serde(default = "default_vhost")]
    #[schemars(length(min = 1, max = 255))]
    pub vhost: String,
    /// Source exchange (not the default exchange, which binds every queue implicitly).
    #[schemars(length(min = 1, max = 255))]
    pub source: String,
    /// Destination queue or exchange.
    #[schemars(length(min = 1, max = 255))]
    pub destination: String,
    /// `queue` (default) or `exchange`.
    #[serde(default)]
    pub destination_type: BindingDestinationType,
    /// Routing key (binding key); `*` and `#` match words on topic exchanges.
    #[serde(default)]
    #[schemars(length(max = 255))]
    pub routing_key: String,
    /// Binding arguments (for example `x-match` and the headers to match on headers
    /// exchanges), as strings. String-valued and bounded so that the API server can bound the
    /// cost of the immutability rule that compares them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub arguments: BTreeMap<String, BindingArgument>,
    /// `delete` (default) removes the binding with the resource; `retain` keeps it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// One binding argument value (at most 255 characters).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(transparent)]
pub struct BindingArgument(#[schemars(length(max = 255))] pub String);

/// What a binding routes to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BindingDestinationType {
    #[default]
    Queue,
    Exchange,
}

impl BindingDestinationType {
    pub fn as_str(self) -> &'static str {
        match self {
            BindingDestinationType::Queue => "queue",
            BindingDestinationType::Exchange => "exchange",
        }
    }
}
