//! The CEL admission rules in the CRD schemas, evaluated client-side by kube's CEL validator (the
//! same rules the API server runs): immutable fields, increase-only partitions and bounds are
//! refused with the documented message; valid objects and edits pass.

use kube::core::cel::Validator;
use kube::CustomResourceExt;
use serde_json::{json, Value};
use weir_crds::{Binding, Exchange, Queue, Topic};

fn schema<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap()
}

fn object(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": kind, "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

/// Messages of the rules the object (or the update from `old`) breaks.
fn broken<K: CustomResourceExt>(obj: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema::<K>(), obj, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_iter().map(|e| e.to_string()).collect(),
    }
}

fn assert_refused<K: CustomResourceExt>(obj: &Value, old: Option<&Value>, needle: &str) {
    let errs = broken::<K>(obj, old);
    assert!(errs.iter().any(|e| e.contains(needle)), "expected a refusal mentioning {needle:?}, got {errs:?}");
}

fn topic(spec: Value) -> Value {
    object("Topic", "orders", spec)
}

#[test]
fn topic_valid_create_and_growth_pass() {
    let v1 = topic(json!({"clusterRef": {"name": "weir"}, "partitions": 3, "replicationFactor": 3,
        "minInsyncReplicas": 2, "config": {"retention.ms": "1000"}, "deletionPolicy": "delete"}));
    assert_eq!(broken::<Topic>(&v1, None), Vec::<String>::new());
    let v2 = topic(json!({"clusterRef": {"name": "weir"}, "partitions": 6, "replicationFactor": 3,
        "minInsyncReplicas": 1, "config": {}, "deletionPolicy": "retain"}));
    assert_eq!(broken::<Topic>(&v2, Some(&v1)), Vec::<String>::new());
}

#[test]
fn topic_partition_decrease_is_refused() {
    let old = topic(json!({"clusterRef": {"name": "weir"}, "partitions": 6}));
    let new = topic(json!({"clusterRef": {"name": "weir"}, "partitions": 3}));
    assert_refused::<Topic>(&new, Some(&old), "partitions can only be increased");
}

#[test]
fn topic_rename_and_replication_factor_removal_are_refused() {
    let old = topic(json!({"clusterRef": {"name": "weir"}, "partitions": 1, "name": "a", "replicationFactor": 1}));
    let renamed = topic(json!({"clusterRef": {"name": "weir"}, "partitions": 1, "name": "b", "replicationFactor": 1}));
    assert_refused::<Topic>(&renamed, Some(&old), "spec.name is immutable");
    let unnamed = topic(json!({"clusterRef": {"name": "weir"}, "partitions": 1, "replicationFactor": 1}));
    assert_refused::<Topic>(&unnamed, Some(&old), "spec.name is immutable");
    // A new replication factor is a reassignment the operator carries out; removing the field
    // would leave the wanted count undefined.
    let rf = topic(json!({"clusterRef": {"name": "weir"}, "partitions": 1, "name": "a", "replicationFactor": 3}));
    assert!(broken::<Topic>(&rf, Some(&old)).is_empty(), "{:?}", broken::<Topic>(&rf, Some(&old)));
    let no_rf = topic(json!({"clusterRef": {"name": "weir"}, "partitions": 1, "name": "a"}));
    assert_refused::<Topic>(&no_rf, Some(&old), "replicationFactor cannot be removed");
    let moved = topic(json!({"clusterRef": {"name": "other"}, "partitions": 1, "name": "a", "replicationFactor": 1}));
    assert_refused::<Topic>(&moved, Some(&old), "clusterRef is immutable");
}

#[test]
fn topic_min_isr_rules() {
    let too_high = topic(json!({"clusterRef": {"name": "weir"}, "replicationFactor": 2, "minInsyncReplicas": 3}));
    assert_refused::<Topic>(&too_high, None, "minInsyncReplicas must not exceed replicationFactor");
    let in_config = topic(json!({"clusterRef": {"name": "weir"}, "config": {"min.insync.replicas": "2"}}));
    assert_refused::<Topic>(&in_config, None, "spec.minInsyncReplicas");
}

#[test]
fn topic_long_metadata_name_needs_spec_name() {
    let long = "t".repeat(250);
    let obj = object("Topic", &long, json!({"clusterRef": {"name": "weir"}}));
    assert_refused::<Topic>(&obj, None, "at most 249 characters");
    let named = object("Topic", &long, json!({"clusterRef": {"name": "weir"}, "name": "short"}));
    assert_eq!(broken::<Topic>(&named, None), Vec::<String>::new());
}

fn queue(spec: Value) -> Value {
    object("Queue", "jobs", spec)
}

#[test]
fn queue_rules() {
    let old = queue(json!({"clusterRef": {"name": "weir"}, "vhost": "/", "type": "quorum", "durable": true,
        "autoDelete": false, "arguments": {"x-max-length": 10}}));
    assert_eq!(broken::<Queue>(&old, None), Vec::<String>::new());
    // Arguments may change (the operator applies what the broker allows).
    let args = queue(json!({"clusterRef": {"name": "weir"}, "vhost": "/", "type": "quorum", "durable": true,
        "autoDelete": false, "arguments": {"x-max-length": 20}}));
    assert_eq!(broken::<Queue>(&args, Some(&old)), Vec::<String>::new());
    let retyped = queue(json!({"clusterRef": {"name": "weir"}, "vhost": "/", "type": "classic", "durable": true,
        "autoDelete": false}));
    assert_refused::<Queue>(&retyped, Some(&old), "type is immutable");
    let vhost = queue(json!({"clusterRef": {"name": "weir"}, "vhost": "/other", "type": "quorum", "durable": true,
        "autoDelete": false}));
    assert_refused::<Queue>(&vhost, Some(&old), "vhost is immutable");
    let transient_quorum =
        queue(json!({"clusterRef": {"name": "weir"}, "vhost": "/", "type": "quorum", "durable": false,
        "autoDelete": false}));
    assert_refused::<Queue>(&transient_quorum, None, "must be durable");
    let typed_arg = queue(json!({"clusterRef": {"name": "weir"}, "vhost": "/", "type": "classic", "durable": true,
        "autoDelete": false, "arguments": {"x-queue-type": "quorum"}}));
    assert_refused::<Queue>(&typed_arg, None, "through spec.type");
}

#[test]
fn exchange_rules() {
    let old = object(
        "Exchange",
        "events",
        json!({"clusterRef": {"name": "weir"}, "vhost": "/", "type": "topic",
        "durable": true, "autoDelete": false}),
    );
    assert_eq!(broken::<Exchange>(&old, None), Vec::<String>::new());
    let retyped = object(
        "Exchange",
        "events",
        json!({"clusterRef": {"name": "weir"}, "vhost": "/", "type": "fanout",
        "durable": true, "autoDelete": false}),
    );
    assert_refused::<Exchange>(&retyped, Some(&old), "type is immutable");
    let reserved = object(
        "Exchange",
        "amq.mine",
        json!({"clusterRef": {"name": "weir"}, "vhost": "/", "type": "topic",
        "durable": true, "autoDelete": false}),
    );
    assert_refused::<Exchange>(&reserved, None, "reserved");
    let reserved_spec = object(
        "Exchange",
        "x",
        json!({"clusterRef": {"name": "weir"}, "name": "amq.x", "vhost": "/",
        "type": "topic", "durable": true, "autoDelete": false}),
    );
    assert_refused::<Exchange>(&reserved_spec, None, "reserved");
}

#[test]
fn binding_rules() {
    let spec = json!({"clusterRef": {"name": "weir"}, "vhost": "/", "source": "events", "destination": "jobs",
        "destinationType": "queue", "routingKey": "a.*", "deletionPolicy": "delete"});
    let old = object("Binding", "b", spec.clone());
    assert_eq!(broken::<Binding>(&old, None), Vec::<String>::new());
    let mut retain = spec.clone();
    retain["deletionPolicy"] = json!("retain");
    assert_eq!(broken::<Binding>(&object("Binding", "b", retain), Some(&old)), Vec::<String>::new());
    let mut rekeyed = spec.clone();
    rekeyed["routingKey"] = json!("b.#");
    assert_refused::<Binding>(&object("Binding", "b", rekeyed), Some(&old), "create a new Binding");
    let mut args = spec.clone();
    args["arguments"] = json!({"x-match": "all"});
    assert_refused::<Binding>(&object("Binding", "b", args), Some(&old), "arguments are immutable");
}
