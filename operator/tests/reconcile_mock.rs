//! Reconciler tests with kube-rs's mock-client pattern: the Kubernetes API is a tower-test
//! double (tests/common/mock_api.rs), the broker admin API a map-backed stand-in
//! (tests/common/fake_admin.rs). For each kind: create, update, drift repair, deletion with and
//! without `retain`, and admin API errors turned into conditions.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fake_admin::FakeAdmin;
use common::mock_api::{condition, deleting, resource, MockApi};
use kube::runtime::controller::Action;
use serde_json::{json, Value};
use weir_crds::{ClusterRef, Topic};
use weir_operator::admin::{AdminError, BrokerAdmin, TopicInfo};
use weir_operator::controller::{reconcile, Context, Managed, Timing};
use weir_operator::metrics::Metrics;
use weir_operator::resolver::AdminResolver;

struct Fixed(Arc<FakeAdmin>);

impl AdminResolver for Fixed {
    fn admin(&self, _: &str, _: &ClusterRef) -> Arc<dyn BrokerAdmin> {
        self.0.clone()
    }
}

const TIMING: Timing = Timing {
    resync: Duration::from_secs(300),
    retry_transient: Duration::from_secs(10),
    retry_refused: Duration::from_secs(60),
};

struct Run {
    api: MockApi,
    result: Result<Action, weir_operator::controller::Error>,
    metrics: Arc<Metrics>,
}

/// Reconciles `obj` (kind `K`) once against `admin`, with a mock API server.
async fn run<K: Managed>(obj: Value, admin: &Arc<FakeAdmin>) -> Run {
    let api = MockApi::new(obj.clone());
    let metrics = Arc::new(Metrics::new());
    let ctx = Arc::new(Context::new(api.client.clone(), Arc::new(Fixed(admin.clone())), metrics.clone(), TIMING));
    let k: K = serde_json::from_value(obj).expect("test resource parses");
    let result =
        tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(k), ctx)).await.expect("reconcile hangs");
    api.abort();
    Run { api, result, metrics }
}

fn topic_spec() -> Value {
    json!({"clusterRef": {"name": "weir"}, "partitions": 3, "minInsyncReplicas": 1,
           "config": {"retention.ms": "86400000"}})
}

#[tokio::test]
async fn topic_create_writes_ready_status_and_a_created_event() {
    let admin = Arc::new(FakeAdmin::new());
    let r = run::<Topic>(resource("Topic", "orders", topic_spec()), &admin).await;
    assert_eq!(r.result.unwrap(), Action::requeue(TIMING.resync));
    let t = admin.state.lock().unwrap().topics.get("orders").cloned().expect("topic created on the broker");
    assert_eq!(t.partitions, 3);
    assert_eq!(t.configs.get("retention.ms").map(String::as_str), Some("86400000"));
    assert_eq!(t.configs.get("min.insync.replicas").map(String::as_str), Some("1"));
    assert_eq!(r.api.events(), vec![("Normal".to_string(), "Created".to_string())]);
    let status = r.api.last_status().expect("status written");
    assert_eq!(condition(&status, "Ready"), ("True".into(), "InSync".into()));
    assert_eq!(condition(&status, "Synced"), ("True".into(), "Synced".into()));
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["topicId"], json!(t.topic_id));
    assert_eq!(status["partitions"], 3);
    assert!(r.metrics.render().contains(r#"weir_operator_reconciles_total{kind="Topic",result="ok"} 1"#));
}

#[tokio::test]
async fn topic_without_finalizer_gets_one_first() {
    let admin = Arc::new(FakeAdmin::new());
    let mut obj = resource("Topic", "orders", topic_spec());
    obj["metadata"]["finalizers"] = json!([]);
    let r = run::<Topic>(obj, &admin).await;
    assert_eq!(r.result.unwrap(), Action::await_change());
    let patches: Vec<_> = r.api.recorded().into_iter().filter(|x| x.is_object_patch()).collect();
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert!(patches[0].body.to_string().contains("weir.dev/broker-object"), "{:?}", patches[0].body);
    assert!(admin.calls().is_empty(), "the broker is not touched before the finalizer is in place");
}

#[tokio::test]
async fn topic_update_grows_partitions_and_owns_configs() {
    let admin = Arc::new(FakeAdmin::new());
    admin.state.lock().unwrap().topics.insert(
        "orders".into(),
        TopicInfo {
            name: "orders".into(),
            topic_id: "ab".repeat(16),
            partitions: 1,
            replication_factor: 1,
            configs: [("retention.ms".to_string(), "1".to_string()), ("segment.ms".to_string(), "5".to_string())]
                .into(),
            assignment: vec![vec![0]],
        },
    );
    let r = run::<Topic>(resource("Topic", "orders", topic_spec()), &admin).await;
    r.result.unwrap();
    let t = admin.state.lock().unwrap().topics["orders"].clone();
    assert_eq!(t.partitions, 3);
    assert_eq!(
        t.configs,
        [("min.insync.replicas".to_string(), "1".to_string()), ("retention.ms".to_string(), "86400000".to_string())]
            .into(),
        "a config set behind the operator's back (segment.ms) is removed"
    );
    assert_eq!(r.api.events(), vec![("Normal".to_string(), "Updated".to_string())]);
    assert_eq!(condition(&r.api.last_status().unwrap(), "Ready").0, "True");
}

#[tokio::test]
async fn topic_deleted_behind_the_operators_back_is_recreated_on_resync() {
    let admin = Arc::new(FakeAdmin::new());
    let first = run::<Topic>(resource("Topic", "orders", topic_spec()), &admin).await;
    first.result.unwrap();
    let mut obj = resource("Topic", "orders", topic_spec());
    obj["status"] = first.api.last_status().unwrap();
    // Nothing to do: no events, no status write (an identical status is not rewritten).
    let idle = run::<Topic>(obj.clone(), &admin).await;
    idle.result.unwrap();
    assert!(idle.api.recorded().is_empty(), "{:?}", idle.api.recorded());
    let old_id = admin.state.lock().unwrap().topics["orders"].topic_id.clone();
    admin.delete_topic("orders").await.unwrap();
    let repaired = run::<Topic>(obj, &admin).await;
    repaired.result.unwrap();
    let new_id = admin.state.lock().unwrap().topics.get("orders").expect("recreated").topic_id.clone();
    assert_ne!(new_id, old_id);
    assert_eq!(repaired.api.events(), vec![("Normal".to_string(), "Created".to_string())]);
    assert_eq!(repaired.api.last_status().unwrap()["topicId"], json!(new_id));
}

#[tokio::test]
async fn topic_deletion_deletes_the_broker_topic_then_the_finalizer() {
    let admin = Arc::new(FakeAdmin::new());
    run::<Topic>(resource("Topic", "orders", topic_spec()), &admin).await.result.unwrap();
    let r = run::<Topic>(deleting(resource("Topic", "orders", topic_spec())), &admin).await;
    assert_eq!(r.result.unwrap(), Action::await_change());
    assert!(admin.state.lock().unwrap().topics.is_empty());
    assert_eq!(r.api.events(), vec![("Normal".to_string(), "Deleted".to_string())]);
    let last = r.api.recorded().last().cloned().unwrap();
    assert!(last.is_object_patch(), "the finalizer is removed last: {last:?}");
    assert!(last.body.to_string().contains("remove"), "{:?}", last.body);
}

#[tokio::test]
async fn topic_deletion_with_retain_keeps_the_broker_topic() {
    let admin = Arc::new(FakeAdmin::new());
    let mut spec = topic_spec();
    spec["deletionPolicy"] = json!("retain");
    run::<Topic>(resource("Topic", "orders", spec.clone()), &admin).await.result.unwrap();
    let r = run::<Topic>(deleting(resource("Topic", "orders", spec)), &admin).await;
    r.result.unwrap();
    assert!(admin.state.lock().unwrap().topics.contains_key("orders"), "retained");
    assert!(!admin.calls().iter().any(|c| c.starts_with("DELETE")), "{:?}", admin.calls());
    assert_eq!(r.api.events(), vec![("Normal".to_string(), "Retained".to_string())]);
    assert!(r.api.recorded().last().unwrap().is_object_patch(), "finalizer removed");
}

#[tokio::test]
async fn topic_refused_by_the_broker_reports_the_code_in_conditions() {
    let admin = Arc::new(FakeAdmin::new());
    let mut spec = topic_spec();
    spec["config"] = json!({"bogus.key": "1"});
    let r = run::<Topic>(resource("Topic", "orders", spec), &admin).await;
    assert_eq!(r.result.unwrap(), Action::requeue(TIMING.retry_refused));
    let status = r.api.last_status().unwrap();
    assert_eq!(condition(&status, "Ready"), ("False".into(), "InvalidConfig".into()));
    assert_eq!(condition(&status, "Synced"), ("False".into(), "InvalidConfig".into()));
    assert_eq!(r.api.events(), vec![("Warning".to_string(), "InvalidConfig".to_string())]);
    assert!(r
        .metrics
        .render()
        .contains(r#"weir_operator_reconcile_errors_total{kind="Topic",reason="InvalidConfig"} 1"#));
}

#[tokio::test]
async fn topic_with_unreachable_broker_is_unknown_and_retried_soon() {
    let admin = Arc::new(FakeAdmin::new());
    admin.state.lock().unwrap().fail_with = Some(AdminError::Unreachable("connection refused".into()));
    let r = run::<Topic>(resource("Topic", "orders", topic_spec()), &admin).await;
    assert_eq!(r.result.unwrap(), Action::requeue(TIMING.retry_transient));
    let status = r.api.last_status().unwrap();
    assert_eq!(condition(&status, "Ready"), ("Unknown".into(), "BrokerUnreachable".into()));
    assert_eq!(condition(&status, "Synced").0, "False");
}

#[tokio::test]
async fn topic_deletion_with_unreachable_broker_keeps_the_finalizer() {
    let admin = Arc::new(FakeAdmin::new());
    admin.state.lock().unwrap().fail_with = Some(AdminError::Unreachable("connection refused".into()));
    let r = run::<Topic>(deleting(resource("Topic", "orders", topic_spec())), &admin).await;
    assert!(r.result.is_err());
    assert!(!r.api.recorded().iter().any(|x| x.is_object_patch()), "finalizer kept: {:?}", r.api.recorded());
}

#[tokio::test]
async fn topic_with_more_partitions_on_the_broker_is_not_ready() {
    let admin = Arc::new(FakeAdmin::new());
    let mut spec = topic_spec();
    spec["partitions"] = json!(6);
    run::<Topic>(resource("Topic", "orders", spec), &admin).await.result.unwrap();
    let r = run::<Topic>(resource("Topic", "orders", topic_spec()), &admin).await;
    r.result.unwrap();
    assert_eq!(condition(&r.api.last_status().unwrap(), "Ready"), ("False".into(), "PartitionsCannotDecrease".into()));
    assert_eq!(admin.state.lock().unwrap().topics["orders"].partitions, 6);
}

fn queue_spec() -> Value {
    json!({"clusterRef": {"name": "weir"}, "vhost": "/", "type": "classic", "durable": true, "autoDelete": false,
           "arguments": {"x-message-ttl": 60000}, "deleteIfEmpty": true})
}

#[tokio::test]
async fn queue_create_drift_repair_and_inequivalent_arguments() {
    use weir_crds::Queue;
    let admin = Arc::new(FakeAdmin::new());
    let r = run::<Queue>(resource("Queue", "jobs", queue_spec()), &admin).await;
    assert_eq!(r.result.unwrap(), Action::requeue(TIMING.resync));
    assert_eq!(r.api.events(), vec![("Normal".to_string(), "Created".to_string())]);
    let q = admin.state.lock().unwrap().queues[&("/".to_string(), "jobs".to_string())].clone();
    assert_eq!(q.arguments.get("x-message-ttl"), Some(&json!(60000)));
    assert!(!q.arguments.contains_key("x-queue-type"), "classic is the default and not sent");
    let mut obj = resource("Queue", "jobs", queue_spec());
    obj["status"] = r.api.last_status().unwrap();
    // Deleted behind our back: declared again.
    admin.state.lock().unwrap().queues.clear();
    let repaired = run::<Queue>(obj.clone(), &admin).await;
    repaired.result.unwrap();
    assert_eq!(repaired.api.events(), vec![("Normal".to_string(), "Created".to_string())]);
    // Arguments edited: the broker refuses to change a queue in place; reported, not retried hot.
    let mut spec = queue_spec();
    spec["arguments"] = json!({"x-message-ttl": 1000});
    let mut changed = resource("Queue", "jobs", spec);
    changed["status"] = obj["status"].clone();
    let r = run::<Queue>(changed, &admin).await;
    assert_eq!(r.result.unwrap(), Action::requeue(TIMING.retry_refused));
    assert_eq!(condition(&r.api.last_status().unwrap(), "Ready"), ("False".into(), "InequivalentArguments".into()));
    assert_eq!(condition(&r.api.last_status().unwrap(), "Synced").0, "True");
    assert_eq!(r.api.events(), vec![("Warning".to_string(), "InequivalentArguments".to_string())]);
}

#[tokio::test]
async fn queue_in_a_missing_vhost_creates_the_vhost() {
    use weir_crds::Queue;
    let admin = Arc::new(FakeAdmin::new());
    let mut spec = queue_spec();
    spec["vhost"] = json!("orders");
    let r = run::<Queue>(resource("Queue", "jobs", spec), &admin).await;
    r.result.unwrap();
    assert!(admin.state.lock().unwrap().queues.contains_key(&("orders".to_string(), "jobs".to_string())));
    assert_eq!(
        r.api.events(),
        vec![("Normal".to_string(), "VhostCreated".to_string()), ("Normal".to_string(), "Created".to_string())]
    );
}

#[tokio::test]
async fn queue_deletion_waits_while_not_empty_then_deletes() {
    use weir_crds::Queue;
    let admin = Arc::new(FakeAdmin::new());
    run::<Queue>(resource("Queue", "jobs", queue_spec()), &admin).await.result.unwrap();
    let key = ("/".to_string(), "jobs".to_string());
    admin.state.lock().unwrap().queue_messages.insert(key.clone(), 5);
    let blocked = run::<Queue>(deleting(resource("Queue", "jobs", queue_spec())), &admin).await;
    assert!(blocked.result.is_err());
    assert!(admin.state.lock().unwrap().queues.contains_key(&key));
    assert!(!blocked.api.recorded().iter().any(|x| x.is_object_patch()), "finalizer kept");
    assert_eq!(condition(&blocked.api.last_status().unwrap(), "Ready").1, "QueueNotEmpty");
    assert!(admin.calls().iter().any(|c| c.contains("if_empty=true")), "{:?}", admin.calls());
    admin.state.lock().unwrap().queue_messages.clear();
    let done = run::<Queue>(deleting(resource("Queue", "jobs", queue_spec())), &admin).await;
    done.result.unwrap();
    assert!(!admin.state.lock().unwrap().queues.contains_key(&key));
    assert_eq!(done.api.events(), vec![("Normal".to_string(), "Deleted".to_string())]);
}

#[tokio::test]
async fn queue_deletion_with_retain_keeps_the_queue() {
    use weir_crds::Queue;
    let admin = Arc::new(FakeAdmin::new());
    let mut spec = queue_spec();
    spec["deletionPolicy"] = json!("retain");
    run::<Queue>(resource("Queue", "jobs", spec.clone()), &admin).await.result.unwrap();
    run::<Queue>(deleting(resource("Queue", "jobs", spec)), &admin).await.result.unwrap();
    assert_eq!(admin.state.lock().unwrap().queues.len(), 1);
}

fn exchange_spec() -> Value {
    json!({"clusterRef": {"name": "weir"}, "vhost": "/", "type": "topic", "durable": true, "autoDelete": false})
}

#[tokio::test]
async fn exchange_create_update_refused_delete_and_retain() {
    use weir_crds::Exchange;
    let admin = Arc::new(FakeAdmin::new());
    let r = run::<Exchange>(resource("Exchange", "events", exchange_spec()), &admin).await;
    r.result.unwrap();
    assert_eq!(r.api.events(), vec![("Normal".to_string(), "Created".to_string())]);
    assert_eq!(admin.state.lock().unwrap().exchanges[&("/".to_string(), "events".to_string())].exchange_type, "topic");
    // An exchange of another type under that name: reported as a condition.
    let mut fanout = exchange_spec();
    fanout["type"] = json!("fanout");
    let r = run::<Exchange>(resource("Exchange", "events", fanout), &admin).await;
    r.result.unwrap();
    assert_eq!(condition(&r.api.last_status().unwrap(), "Ready"), ("False".into(), "InequivalentArguments".into()));
    // Deletion.
    let r = run::<Exchange>(deleting(resource("Exchange", "events", exchange_spec())), &admin).await;
    r.result.unwrap();
    assert!(admin.state.lock().unwrap().exchanges.is_empty());
    // Retain.
    let mut spec = exchange_spec();
    spec["deletionPolicy"] = json!("retain");
    run::<Exchange>(resource("Exchange", "events", spec.clone()), &admin).await.result.unwrap();
    run::<Exchange>(deleting(resource("Exchange", "events", spec)), &admin).await.result.unwrap();
    assert_eq!(admin.state.lock().unwrap().exchanges.len(), 1);
}

#[tokio::test]
async fn exchange_admin_error_becomes_a_condition() {
    use weir_crds::Exchange;
    let admin = Arc::new(FakeAdmin::new());
    admin.state.lock().unwrap().fail_with =
        Some(AdminError::Api { status: 403, code: "access_refused".into(), message: "amq. names are reserved".into() });
    let r = run::<Exchange>(resource("Exchange", "events", exchange_spec()), &admin).await;
    r.result.unwrap();
    assert_eq!(condition(&r.api.last_status().unwrap(), "Ready"), ("False".into(), "AccessRefused".into()));
}

fn binding_spec() -> Value {
    json!({"clusterRef": {"name": "weir"}, "vhost": "/", "source": "events", "destination": "jobs",
           "destinationType": "queue", "routingKey": "eu.#"})
}

#[tokio::test]
async fn binding_waits_for_its_exchange_then_binds_repairs_and_unbinds() {
    use weir_crds::Binding;
    let admin = Arc::new(FakeAdmin::new());
    let r = run::<Binding>(resource("Binding", "events-jobs", binding_spec()), &admin).await;
    assert_eq!(r.result.unwrap(), Action::requeue(TIMING.retry_refused));
    assert_eq!(condition(&r.api.last_status().unwrap(), "Ready"), ("False".into(), "WaitingForEndpoints".into()));
    run::<weir_crds::Exchange>(resource("Exchange", "events", exchange_spec()), &admin).await.result.unwrap();
    let r = run::<Binding>(resource("Binding", "events-jobs", binding_spec()), &admin).await;
    r.result.unwrap();
    assert_eq!(r.api.events(), vec![("Normal".to_string(), "Created".to_string())]);
    assert_eq!(admin.state.lock().unwrap().bindings.len(), 1);
    // Unbound behind our back: bound again.
    admin.state.lock().unwrap().bindings.clear();
    run::<Binding>(resource("Binding", "events-jobs", binding_spec()), &admin).await.result.unwrap();
    assert_eq!(admin.state.lock().unwrap().bindings.len(), 1);
    // Deletion unbinds.
    let r = run::<Binding>(deleting(resource("Binding", "events-jobs", binding_spec())), &admin).await;
    r.result.unwrap();
    assert!(admin.state.lock().unwrap().bindings.is_empty());
    assert_eq!(r.api.events(), vec![("Normal".to_string(), "Deleted".to_string())]);
    // Retain keeps it.
    let mut spec = binding_spec();
    spec["deletionPolicy"] = json!("retain");
    run::<Binding>(resource("Binding", "events-jobs", spec.clone()), &admin).await.result.unwrap();
    run::<Binding>(deleting(resource("Binding", "events-jobs", spec)), &admin).await.result.unwrap();
    assert_eq!(admin.state.lock().unwrap().bindings.len(), 1);
}

#[tokio::test]
async fn queue_refused_by_the_broker_reports_the_code_in_conditions() {
    use weir_crds::Queue;
    let admin = Arc::new(FakeAdmin::new());
    admin.state.lock().unwrap().fail_with = Some(AdminError::Api {
        status: 400,
        code: "invalid_arguments".into(),
        message: "x-queue-type quorum is not supported yet".into(),
    });
    let mut spec = queue_spec();
    spec["type"] = json!("quorum");
    let r = run::<Queue>(resource("Queue", "jobs", spec), &admin).await;
    assert_eq!(r.result.unwrap(), Action::requeue(TIMING.retry_refused));
    let status = r.api.last_status().unwrap();
    assert_eq!(condition(&status, "Ready"), ("False".into(), "InvalidArguments".into()));
    assert_eq!(condition(&status, "Synced"), ("False".into(), "InvalidArguments".into()));
    assert_eq!(r.api.events(), vec![("Warning".to_string(), "InvalidArguments".to_string())]);
    assert!(admin.calls().iter().any(|c| c == "PUT queue / jobs"), "{:?}", admin.calls());
}

#[tokio::test]
async fn binding_arguments_reach_the_broker_as_strings() {
    use weir_crds::Binding;
    let admin = Arc::new(FakeAdmin::new());
    run::<weir_crds::Exchange>(resource("Exchange", "events", exchange_spec()), &admin).await.result.unwrap();
    let mut spec = binding_spec();
    spec["arguments"] = json!({"x-match": "all", "region": "eu"});
    run::<Binding>(resource("Binding", "b", spec), &admin).await.result.unwrap();
    let bound = admin.state.lock().unwrap().bindings[0].1.clone();
    assert_eq!(bound.arguments.get("x-match"), Some(&json!("all")));
    assert_eq!(bound.arguments.get("region"), Some(&json!("eu")));
}
