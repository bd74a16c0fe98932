//! End-to-end tests against the weir chart installed on a kind cluster. They run inside the
//! cluster as a Job (e2e/kind/run.sh, e2e/kind/e2e-job.yaml), so that Kafka clients reach the
//! brokers' per-pod advertised addresses; elsewhere they are ignored.
//!
//! Environment: WEIR_E2E_NAMESPACE (default `weir`), WEIR_E2E_CLUSTER (the chart's fullname,
//! default `weir`).

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;
use serde_json::{json, Value};
use weir_crds::{Binding, Exchange, Queue, Topic};
use weir_operator::admin::HttpAdmin;

const TIMEOUT: Duration = Duration::from_secs(180);

fn namespace() -> String {
    std::env::var("WEIR_E2E_NAMESPACE").unwrap_or_else(|_| "weir".into())
}

fn cluster() -> String {
    std::env::var("WEIR_E2E_CLUSTER").unwrap_or_else(|_| "weir".into())
}

fn bootstrap() -> String {
    format!("{}.{}.svc:9092", cluster(), namespace())
}

fn amqp_uri() -> String {
    format!("amqp://guest:guest@{}.{}.svc:5672/%2f", cluster(), namespace())
}

async fn kube() -> Client {
    Client::try_default().await.expect("in-cluster Kubernetes config")
}

/// Polls `check` until it returns Some, or fails after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn ready(obj: &Value) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Creates a weir.dev resource from JSON and waits until its Ready condition is True.
async fn apply_and_wait_ready<K>(api: &Api<K>, obj: Value) -> Value
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    let _ = api.delete(&name, &DeleteParams::default()).await;
    eventually("the previous resource to go", TIMEOUT, || async {
        api.get_opt(&name).await.unwrap().is_none().then_some(())
    })
    .await;
    let k: K = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &k).await.expect("create resource");
    eventually(&format!("{name} Ready"), TIMEOUT, || async {
        let v = serde_json::to_value(api.get(&name).await.ok()?).unwrap();
        ready(&v).then_some(v)
    })
    .await
}

async fn delete_and_wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.delete(name, &DeleteParams::default()).await.expect("delete resource");
    eventually(&format!("{name} deleted"), TIMEOUT, || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

fn resource(kind: &str, name: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["clusterRef"] = json!({"name": cluster()});
    json!({"apiVersion": "weir.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

async fn kafka_partitions(topic: &str) -> Option<usize> {
    let client = ClientBuilder::new(vec![bootstrap()]).build().await.ok()?;
    let topics = client.list_topics().await.ok()?;
    topics.into_iter().find(|t| t.name == topic).map(|t| t.partitions.len())
}

fn record(i: usize) -> Record {
    Record {
        key: Some(format!("k{i}").into_bytes()),
        value: Some(format!("v{i}").into_bytes()),
        headers: Default::default(),
        timestamp: chrono::Utc::now(),
    }
}

async fn produce(topic: &str, n: usize) {
    let client = ClientBuilder::new(vec![bootstrap()]).build().await.expect("Kafka client");
    let partition = client.partition_client(topic, 0, UnknownTopicHandling::Retry).await.expect("partition client");
    partition.produce((0..n).map(record).collect(), Compression::NoCompression).await.expect("produce");
}

async fn consume_values(topic: &str) -> Option<Vec<String>> {
    let client = ClientBuilder::new(vec![bootstrap()]).build().await.ok()?;
    let partition = client.partition_client(topic, 0, UnknownTopicHandling::Retry).await.ok()?;
    let (records, _hw) = partition.fetch_records(0, 1..1_000_000, 1_000).await.ok()?;
    Some(records.into_iter().map(|r| String::from_utf8(r.record.value.unwrap_or_default()).unwrap()).collect())
}

#[tokio::test]
#[ignore = "needs a kind cluster with the weir chart: run e2e/kind/run.sh"]
async fn topic_is_ready_usable_follows_partition_edits_and_goes_with_its_resource() {
    let topics: Api<Topic> = Api::namespaced(kube().await, &namespace());
    let v = apply_and_wait_ready(&topics, resource("Topic", "e2e-orders", json!({"partitions": 2}))).await;
    assert_eq!(v["status"]["partitions"], 2);
    produce("e2e-orders", 10).await;
    let values = eventually("10 records back", TIMEOUT, || async {
        consume_values("e2e-orders").await.filter(|v| v.len() == 10)
    })
    .await;
    assert_eq!(values[0], "v0");

    topics
        .patch("e2e-orders", &PatchParams::default(), &Patch::Merge(json!({"spec": {"partitions": 4}})))
        .await
        .expect("edit partitions");
    eventually("the broker to have 4 partitions", TIMEOUT, || async {
        (kafka_partitions("e2e-orders").await == Some(4)).then_some(())
    })
    .await;

    delete_and_wait_gone(&topics, "e2e-orders").await;
    eventually("the broker topic to go", TIMEOUT, || async {
        kafka_partitions("e2e-orders").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a kind cluster with the weir chart: run e2e/kind/run.sh"]
async fn a_retained_topic_stays_on_the_broker() {
    let topics: Api<Topic> = Api::namespaced(kube().await, &namespace());
    apply_and_wait_ready(&topics, resource("Topic", "e2e-kept", json!({"deletionPolicy": "retain"}))).await;
    delete_and_wait_gone(&topics, "e2e-kept").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(kafka_partitions("e2e-kept").await, Some(1), "retained topic must stay");
}

#[tokio::test]
#[ignore = "needs a kind cluster with the weir chart: run e2e/kind/run.sh"]
async fn exchange_queue_and_binding_route_amqp_messages() {
    let client = kube().await;
    let ns = namespace();
    let exchanges: Api<Exchange> = Api::namespaced(client.clone(), &ns);
    let queues: Api<Queue> = Api::namespaced(client.clone(), &ns);
    let bindings: Api<Binding> = Api::namespaced(client, &ns);
    apply_and_wait_ready(&exchanges, resource("Exchange", "e2e-events", json!({"type": "topic"}))).await;
    apply_and_wait_ready(&queues, resource("Queue", "e2e-jobs", json!({}))).await;
    apply_and_wait_ready(
        &bindings,
        resource(
            "Binding",
            "e2e-events-jobs",
            json!({"source": "e2e-events", "destination": "e2e-jobs", "routingKey": "eu.#"}),
        ),
    )
    .await;

    let conn = Connection::connect(&amqp_uri(), ConnectionProperties::default()).await.expect("AMQP connect");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .basic_publish(
            "e2e-events".into(),
            "eu.orders".into(),
            BasicPublishOptions::default(),
            b"hello",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    let got = eventually("the message in e2e-jobs", TIMEOUT, || async {
        channel.basic_get("e2e-jobs".into(), BasicGetOptions { no_ack: true }).await.ok().flatten()
    })
    .await;
    assert_eq!(got.delivery.data, b"hello");

    delete_and_wait_gone(&bindings, "e2e-events-jobs").await;
    delete_and_wait_gone(&queues, "e2e-jobs").await;
    delete_and_wait_gone(&exchanges, "e2e-events").await;
}

#[tokio::test]
#[ignore = "needs a kind cluster with the weir chart: run e2e/kind/run.sh"]
async fn a_deleted_broker_pod_comes_back_with_its_data() {
    let client = kube().await;
    let ns = namespace();
    let topics: Api<Topic> = Api::namespaced(client.clone(), &ns);
    apply_and_wait_ready(&topics, resource("Topic", "e2e-durable", json!({}))).await;
    produce("e2e-durable", 5).await;
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let name = format!("{}-0", cluster());
    let old_uid = pods.get(&name).await.expect("broker pod").metadata.uid;
    pods.delete(&name, &DeleteParams::default()).await.expect("delete broker pod");
    eventually("the broker pod to come back ready", TIMEOUT, || async {
        let pod = pods.get(&name).await.ok()?;
        let ready = pod.status.as_ref()?.conditions.as_ref()?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (pod.metadata.uid != old_uid && ready).then_some(())
    })
    .await;
    let values = eventually("the 5 records after the restart", TIMEOUT, || async {
        consume_values("e2e-durable").await.filter(|v| v.len() == 5)
    })
    .await;
    assert_eq!(values, (0..5).map(|i| format!("v{i}")).collect::<Vec<_>>());
    delete_and_wait_gone(&topics, "e2e-durable").await;
}

#[tokio::test]
#[ignore = "needs a kind cluster with the weir chart: run e2e/kind/run.sh"]
async fn a_new_replication_factor_is_reached_by_reassignment_and_keeps_the_records() {
    let topics: Api<Topic> = Api::namespaced(kube().await, &namespace());
    apply_and_wait_ready(&topics, resource("Topic", "e2e-grow", json!({"replicationFactor": 1}))).await;
    produce("e2e-grow", 10).await;
    topics
        .patch("e2e-grow", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicationFactor": 3}})))
        .await
        .expect("edit replicationFactor");
    eventually("e2e-grow Ready with replication factor 3", TIMEOUT, || async {
        let v = serde_json::to_value(topics.get("e2e-grow").await.ok()?).unwrap();
        (ready(&v) && v["status"]["replicationFactor"] == 3).then_some(())
    })
    .await;
    let values = eventually("the 10 records after the reassignment", TIMEOUT, || async {
        consume_values("e2e-grow").await.filter(|v| v.len() == 10)
    })
    .await;
    assert_eq!(values, (0..10).map(|i| format!("v{i}")).collect::<Vec<_>>());
    delete_and_wait_gone(&topics, "e2e-grow").await;
}

async fn scale_brokers(sts: &Api<StatefulSet>, replicas: i32) {
    sts.patch(&cluster(), &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": replicas}})))
        .await
        .expect("scale the broker StatefulSet");
}

/// Replica lists of `topic`'s partitions and the ids marked draining, from the admin API.
async fn placement(admin: &HttpAdmin, topic: &str) -> Option<(Vec<Vec<i32>>, Vec<i32>)> {
    let mut parts: Vec<_> = admin.list_partitions().await.ok()?.into_iter().filter(|p| p.topic == topic).collect();
    parts.sort_by_key(|p| p.partition);
    let draining = admin.list_brokers().await.ok()?.into_iter().filter(|b| b.draining).map(|b| b.id).collect();
    Some((parts.into_iter().map(|p| p.replicas).collect(), draining))
}

#[tokio::test]
#[ignore = "needs a kind cluster with the weir chart: run e2e/kind/run.sh"]
async fn scaling_down_drains_the_last_broker_and_scaling_up_fills_it_again() {
    let client = kube().await;
    let ns = namespace();
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let topics: Api<Topic> = Api::namespaced(client, &ns);
    let admin = HttpAdmin::new(format!("http://{}.{}.svc:9644", cluster(), ns));
    apply_and_wait_ready(&topics, resource("Topic", "e2e-moves", json!({"partitions": 3, "replicationFactor": 2})))
        .await;
    produce("e2e-moves", 10).await;
    let last = eventually("the topic's placement", TIMEOUT, || async {
        let (replicas, _) = placement(&admin, "e2e-moves").await?;
        (replicas.len() == 3).then(|| replicas.iter().flatten().copied().max().unwrap_or(0))
    })
    .await;
    assert_eq!(last, 2, "three partitions of two replicas use all three brokers");

    // The body runs in its own task so that the StatefulSet is scaled back whatever happens.
    let body = tokio::spawn(async move {
        let sts: Api<StatefulSet> = Api::namespaced(kube().await, &namespace());
        let admin = HttpAdmin::new(format!("http://{}.{}.svc:9644", cluster(), namespace()));
        scale_brokers(&sts, 2).await;
        eventually("broker 2 drained by the operator", TIMEOUT, || async {
            let (replicas, draining) = placement(&admin, "e2e-moves").await?;
            (replicas.iter().all(|r| r.len() == 2 && !r.contains(&2)) && draining.contains(&2)).then_some(())
        })
        .await;
        let values = eventually("the 10 records after the drain", TIMEOUT, || async {
            consume_values("e2e-moves").await.filter(|v| v.len() == 10)
        })
        .await;
        assert_eq!(values, (0..10).map(|i| format!("v{i}")).collect::<Vec<_>>());

        scale_brokers(&sts, 3).await;
        eventually("broker 2 undrained and holding replicas again", TIMEOUT, || async {
            let (replicas, draining) = placement(&admin, "e2e-moves").await?;
            (replicas.iter().any(|r| r.contains(&2)) && draining.is_empty()).then_some(())
        })
        .await;
    })
    .await;
    scale_brokers(&sts, 3).await;
    if let Err(e) = body {
        std::panic::resume_unwind(e.into_panic());
    }
    delete_and_wait_gone(&topics, "e2e-moves").await;
}
