//! Pieces every Weir resource shares: the cluster reference, the deletion policy and the status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the broker object exists and matches the spec.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: the last reconcile applied the spec (or found nothing to do) without error.
pub const CONDITION_SYNCED: &str = "Synced";

/// The broker cluster (the Helm release of the `weir` chart) a resource belongs to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// Name of the broker cluster: the name of its client Service (the chart's fullname,
    /// `<release>-weir` unless overridden). The operator reaches the admin API through it.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Namespace of the broker cluster; defaults to the resource's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// What happens to the broker object when the resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeletionPolicy {
    /// Delete the broker object (and its messages) with the resource.
    #[default]
    Delete,
    /// Keep the broker object; only the resource goes.
    Retain,
}

/// Status shared by Queue, Exchange and Binding (Topic has its own with partition details).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    /// The `metadata.generation` the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and `Synced`, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Schema of an AMQP arguments table: an object whose values are any JSON the broker accepts
/// (strings, integers, booleans); the broker validates them.
pub(crate) fn arguments_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": { "x-kubernetes-preserve-unknown-fields": true }
    })
}
