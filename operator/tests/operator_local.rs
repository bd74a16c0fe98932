//! The operator's broker side against a real `weir-broker` process on 127.0.0.1: the HTTP admin
//! client, the diffing and the drift repair of the reconcilers, with no Kubernetes involved.
//! This proves the admin API contract the controllers rely on (docs/admin-api.md): topics and
//! the AMQP vhosts, exchanges, queues and bindings.
//! The broker process comes from `common::brokers`.

mod common;

use std::time::{Duration, Instant};

use common::brokers::Broker;
use serde_json::json;
use weir_crds::{BindingSpec, ExchangeSpec, QueueSpec, TopicSpec};
use weir_operator::admin::{AdminError, BrokerAdmin, DeleteGuards, HttpAdmin, PartitionInfo, TopicPatch};
use weir_operator::sync::{Readiness, Removal};
use weir_operator::{binding, exchange, queue, topic};

fn topic_spec(v: serde_json::Value) -> TopicSpec {
    let mut base = json!({"clusterRef": {"name": "local"}});
    base.as_object_mut().unwrap().extend(v.as_object().unwrap().clone());
    serde_json::from_value(base).unwrap()
}

/// Writes through the admin API may answer 503 right after start-up while the broker
/// registers (docs/admin-api.md, Start-up); the controllers retry those, and so does this.
async fn retry<T, F, Fut>(mut f: F) -> Result<T, AdminError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AdminError>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match f().await {
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return other,
        }
    }
}

#[tokio::test]
async fn topic_reconciler_creates_updates_repairs_and_deletes_on_a_real_broker() {
    let broker = Broker::start().await;
    let admin = broker.admin();
    let spec = topic_spec(json!({"partitions": 2, "minInsyncReplicas": 1, "config": {"retention.ms": "86400000"}}));

    // Create.
    let out = retry(|| topic::sync_topic(&admin, "orders", &spec)).await.unwrap();
    assert!(out.readiness.is_ready(), "{out:?}");
    assert_eq!(out.changes.iter().map(|c| c.reason).collect::<Vec<_>>(), ["Created"]);
    let t = admin.get_topic("orders").await.unwrap().expect("topic exists on the broker");
    assert_eq!(t.partitions, 2);
    assert_eq!(t.configs.get("retention.ms").map(String::as_str), Some("86400000"));
    assert_eq!(t.configs.get("min.insync.replicas").map(String::as_str), Some("1"));
    assert_eq!(out.status_fields["topicId"], json!(t.topic_id));

    // Idempotent: a second sync changes nothing.
    let again = topic::sync_topic(&admin, "orders", &spec).await.unwrap();
    assert!(again.changes.is_empty(), "{again:?}");

    // Update: more partitions, another retention.
    let grown = topic_spec(json!({"partitions": 4, "minInsyncReplicas": 1, "config": {"retention.ms": "3600000"}}));
    let out = topic::sync_topic(&admin, "orders", &grown).await.unwrap();
    assert_eq!(out.changes.iter().map(|c| c.reason).collect::<Vec<_>>(), ["Updated"]);
    let t = admin.get_topic("orders").await.unwrap().unwrap();
    assert_eq!(t.partitions, 4);
    assert_eq!(t.configs.get("retention.ms").map(String::as_str), Some("3600000"));

    // Drift: a config set behind the operator's back is removed.
    let patch = TopicPatch { configs: [("segment.ms".to_string(), "60000".to_string())].into(), ..Default::default() };
    admin.patch_topic("orders", &patch).await.unwrap();
    topic::sync_topic(&admin, "orders", &grown).await.unwrap();
    let t = admin.get_topic("orders").await.unwrap().unwrap();
    assert!(!t.configs.contains_key("segment.ms"), "{:?}", t.configs);

    // Drift: the topic deleted behind the operator's back is recreated (with a new id).
    let old_id = t.topic_id.clone();
    assert!(admin.delete_topic("orders").await.unwrap());
    let out = retry(|| topic::sync_topic(&admin, "orders", &grown)).await.unwrap();
    assert_eq!(out.changes.iter().map(|c| c.reason).collect::<Vec<_>>(), ["Created"]);
    let t = admin.get_topic("orders").await.unwrap().unwrap();
    assert_ne!(t.topic_id, old_id);
    assert_eq!(t.partitions, 4);

    // A spec asking for fewer partitions than the broker has is reported, not applied.
    let fewer = topic_spec(json!({"partitions": 1, "minInsyncReplicas": 1, "config": {"retention.ms": "3600000"}}));
    let out = topic::sync_topic(&admin, "orders", &fewer).await.unwrap();
    assert!(matches!(out.readiness, Readiness::NotReady { reason: "PartitionsCannotDecrease", .. }), "{out:?}");
    assert_eq!(admin.get_topic("orders").await.unwrap().unwrap().partitions, 4);

    // Deletion, then deletion of what is already gone.
    assert!(matches!(topic::remove_topic(&admin, "orders").await.unwrap(), Removal::Deleted(_)));
    assert!(admin.get_topic("orders").await.unwrap().is_none());
    assert_eq!(topic::remove_topic(&admin, "orders").await.unwrap(), Removal::AlreadyGone);
}

/// Syncs until the outcome is no longer `Reassigning`; returns it and every change on the way.
async fn sync_until_settled(admin: &HttpAdmin, spec: &TopicSpec) -> (weir_operator::sync::SyncOutcome, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut notes = Vec::new();
    loop {
        let out = retry(|| topic::sync_topic(admin, "orders", spec)).await.unwrap();
        notes.extend(out.changes.iter().map(|c| c.note.clone()));
        if !matches!(out.readiness, Readiness::Progressing { reason: "Reassigning", .. }) {
            return (out, notes);
        }
        assert!(Instant::now() < deadline, "still reassigning after 60 s: {out:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replication_factor_reassigns_the_topic_on_real_brokers() {
    const MOVE_THROTTLE: u64 = 50_000_000;
    let brokers = Broker::cluster(8, 3).await;
    // The operator's --rebalance-throttle-bytes-per-sec, as the resolver hands it on.
    let admin = brokers[0].admin().with_move_throttle(MOVE_THROTTLE);
    let replicas = |parts: &[PartitionInfo]| {
        let mut p: Vec<_> = parts.iter().filter(|p| p.topic == "orders").cloned().collect();
        p.sort_by_key(|p| p.partition);
        p
    };
    let one = topic_spec(json!({"partitions": 3, "replicationFactor": 1}));
    let (out, _) = sync_until_settled(&admin, &one).await;
    assert!(out.readiness.is_ready(), "{out:?}");
    let before = replicas(&admin.list_partitions().await.unwrap());

    // 1 -> 3: every partition on every broker, the preferred leader kept first. The moves
    // start under the Topics' throttle hold, which the first ready sync releases.
    let three = topic_spec(json!({"partitions": 3, "replicationFactor": 3}));
    let first = retry(|| topic::sync_topic(&admin, "orders", &three)).await.unwrap();
    assert!(first.changes.iter().any(|c| c.note.contains("1 -> 3: reassigning 3 partitions")), "{first:?}");
    let holds = admin.throttle_view().await.unwrap().holds;
    assert_eq!(holds.get(topic::TOPIC_MOVES_HOLDER), Some(&MOVE_THROTTLE), "{holds:?}");
    let (out, notes) = sync_until_settled(&admin, &three).await;
    assert!(out.readiness.is_ready(), "{out:?}");
    assert!(notes.is_empty(), "started again: {notes:?}");
    assert_eq!(out.status_fields["replicationFactor"], json!(3));
    assert!(admin.throttle_view().await.unwrap().holds.is_empty(), "the hold outlived the moves");
    let grown = replicas(&admin.list_partitions().await.unwrap());
    for (b, g) in before.iter().zip(&grown) {
        assert_eq!(g.replicas.len(), 3, "{g:?}");
        assert_eq!(g.replicas[0], b.replicas[0], "preferred leader moved: {g:?}");
        let mut all = g.replicas.clone();
        all.sort();
        assert_eq!(all, [0, 1, 2]);
    }

    // 3 -> 2: the last replica of each list goes.
    let two = topic_spec(json!({"partitions": 3, "replicationFactor": 2}));
    let (out, _) = sync_until_settled(&admin, &two).await;
    assert!(out.readiness.is_ready(), "{out:?}");
    for (g, s) in grown.iter().zip(&replicas(&admin.list_partitions().await.unwrap())) {
        assert_eq!(s.replicas, g.replicas[..2], "{s:?}");
    }

    // More replicas than brokers: reported, nothing started.
    let four = topic_spec(json!({"partitions": 3, "replicationFactor": 4}));
    let out = topic::sync_topic(&admin, "orders", &four).await.unwrap();
    assert!(matches!(out.readiness, Readiness::NotReady { reason: "NotEnoughBrokers", .. }), "{out:?}");
    assert!(admin.list_partitions().await.unwrap().iter().all(|p| p.adding.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_throttle_hold_a_topic_is_ready_only_once_every_partition_moved() {
    let brokers = Broker::cluster(8, 3).await;
    // No --rebalance-throttle-bytes-per-sec: nothing holds the throttle, so readiness cannot
    // come from the hold's listing.
    let admin = brokers[0].admin();
    let one = topic_spec(json!({"partitions": 6, "replicationFactor": 1}));
    let (out, _) = sync_until_settled(&admin, &one).await;
    assert!(out.readiness.is_ready(), "{out:?}");
    let three = topic_spec(json!({"partitions": 6, "replicationFactor": 3}));
    let first = retry(|| topic::sync_topic(&admin, "orders", &three)).await.unwrap();
    assert!(first.changes.iter().any(|c| c.note.contains("1 -> 3: reassigning 6 partitions")), "{first:?}");
    let (out, _) = sync_until_settled(&admin, &three).await;
    assert!(out.readiness.is_ready(), "{out:?}");
    let parts = admin.topic_partitions("orders").await.unwrap();
    assert_eq!(parts.len(), 6);
    for p in &parts {
        assert!(!p.reassigning() && p.replicas.len() == 3 && p.isr.len() == 3, "ready while {p:?}");
    }
}

#[tokio::test]
async fn broker_refusals_come_back_as_typed_errors() {
    let broker = Broker::start().await;
    let admin = broker.admin();
    let bad_config = topic_spec(json!({"config": {"retention.ms": "soon"}}));
    let err = retry(|| topic::sync_topic(&admin, "bad", &bad_config)).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_config"), "{err}");
    assert_eq!(err.reason(), "InvalidConfig");
    assert!(!err.is_transient());
    // One broker cannot hold three replicas.
    let too_many = topic_spec(json!({"replicationFactor": 3}));
    let err = retry(|| topic::sync_topic(&admin, "rf3", &too_many)).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_replication_factor"), "{err}");
    assert!(admin.get_topic("bad").await.unwrap().is_none());
}

#[tokio::test]
async fn an_unreachable_broker_is_a_transient_error() {
    let closed = common::brokers::free_addr("127.0.0.1");
    let admin = HttpAdmin::new(format!("http://{closed}"));
    let err = topic::sync_topic(&admin, "x", &topic_spec(json!({}))).await.unwrap_err();
    assert!(matches!(err, AdminError::Unreachable(_)), "{err}");
    assert!(err.is_transient());
    assert_eq!(err.reason(), "BrokerUnreachable");
}

/// Exchange, Queue and Binding reconcilers against the AMQP admin endpoints
/// (docs/admin-api.md, "AMQP entities").
#[tokio::test]
async fn amqp_reconcilers_declare_refuse_repair_and_delete_on_a_real_broker() {
    let broker = Broker::start().await;
    let admin = broker.admin();
    let ex: ExchangeSpec = serde_json::from_value(json!({"clusterRef": {"name": "local"}, "type": "topic"})).unwrap();
    let out = retry(|| exchange::sync_exchange(&admin, "events", &ex)).await.unwrap();
    assert_eq!(out.changes.iter().map(|c| c.reason).collect::<Vec<_>>(), ["Created"]);
    assert!(exchange::sync_exchange(&admin, "events", &ex).await.unwrap().changes.is_empty());

    let q: QueueSpec = serde_json::from_value(
        json!({"clusterRef": {"name": "local"}, "arguments": {"x-message-ttl": 60000}, "deleteIfEmpty": true}),
    )
    .unwrap();
    let out = queue::sync_queue(&admin, "jobs", &q).await.unwrap();
    assert_eq!(out.changes.iter().map(|c| c.reason).collect::<Vec<_>>(), ["Created"]);
    // Other arguments: the broker refuses to change the queue in place; reported as not ready.
    let q2: QueueSpec =
        serde_json::from_value(json!({"clusterRef": {"name": "local"}, "arguments": {"x-message-ttl": 1}})).unwrap();
    let out = queue::sync_queue(&admin, "jobs", &q2).await.unwrap();
    assert!(matches!(out.readiness, Readiness::NotReady { reason: "InequivalentArguments", .. }), "{out:?}");

    let b: BindingSpec = serde_json::from_value(
        json!({"clusterRef": {"name": "local"}, "source": "events", "destination": "jobs", "routingKey": "eu.#"}),
    )
    .unwrap();
    let out = binding::sync_binding(&admin, &b).await.unwrap();
    assert_eq!(out.changes.iter().map(|c| c.reason).collect::<Vec<_>>(), ["Created"]);
    assert!(admin.list_bindings("/", "events").await.unwrap().iter().any(|x| x.routing_key == "eu.#"));
    assert!(matches!(binding::remove_binding(&admin, &b).await.unwrap(), Removal::Deleted(_)));
    // Recreated after a delete behind the operator's back.
    admin.delete_queue("/", "jobs", DeleteGuards::default()).await.unwrap();
    let out = queue::sync_queue(&admin, "jobs", &q).await.unwrap();
    assert_eq!(out.changes.iter().map(|c| c.reason).collect::<Vec<_>>(), ["Created"]);
    assert!(matches!(
        queue::remove_queue(&admin, "/", "jobs", DeleteGuards { if_empty: true, if_unused: false }).await.unwrap(),
        Removal::Deleted(_)
    ));
    assert!(matches!(exchange::remove_exchange(&admin, "/", "events").await.unwrap(), Removal::Deleted(_)));
    assert_eq!(exchange::remove_exchange(&admin, "/", "events").await.unwrap(), Removal::AlreadyGone);
}
