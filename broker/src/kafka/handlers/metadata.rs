//! Metadata (key 3), versions 0–12: brokers, controller, topics and partitions from this
//! broker's image; unknown topics are created when `auto.create.topics.enable` and the
//! request allow it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError;

use super::{kafka_endpoint, str_bytes, topic_uuid};
use crate::cluster::image::{validate_topic_name, MetadataImage, PartitionRecord, TopicRecord, NO_LEADER};
use crate::kafka::auto_create::{outcome_by, TopicSpec, COMMIT_WAIT};
use crate::kafka::context::KafkaContext;
use crate::kafka::errors::propose_error_code;
use crate::log::TopicPartition;

pub async fn handle(ctx: &KafkaContext, req: MetadataRequest, version: i16) -> MetadataResponse {
    let mut image = ctx.cluster.image();
    let allow_auto_create = ctx.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);

    // None = every topic (v1+); an empty list means every topic only in v0.
    let wanted: Option<Vec<(Option<String>, uuid::Uuid)>> = match &req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t.iter().map(|t| (t.name.as_ref().map(|n| n.0.as_str().to_string()), t.topic_id)).collect()),
    };

    let mut topics = Vec::new();
    match wanted {
        None => {
            for t in image.topics.values() {
                topics.push(topic_entry(ctx, &image, t, version));
            }
        }
        Some(list) => {
            let mut errors = BTreeMap::new();
            let mut creations = Vec::new();
            for (name, _) in &list {
                let Some(name) = name else { continue };
                if image.topics.contains_key(name) || !allow_auto_create {
                    continue;
                }
                if let Err(e) = validate_topic_name(name) {
                    errors.insert(name.clone(), crate::kafka::errors::metadata_error_code(&e));
                    continue;
                }
                let spec = TopicSpec {
                    partitions: ctx.config.default_partitions,
                    replication_factor: ctx.config.default_replication_factor,
                    configs: BTreeMap::new(),
                };
                creations.push((name.clone(), ctx.auto_create.start(name, spec)));
            }
            // One wait for them all: a request naming many new topics waits no longer.
            let deadline = tokio::time::Instant::now() + COMMIT_WAIT;
            let mut created = Vec::new();
            for (name, mut creation) in creations {
                match outcome_by(&mut creation, deadline).await {
                    Some(Ok(())) => created.push(name),
                    Some(Err(e)) => {
                        errors.insert(name, propose_error_code(&e));
                    }
                    // Still being created: Kafka's answer for a topic it is auto-creating.
                    None => {
                        errors.insert(name, ResponseError::LeaderNotAvailable.code());
                    }
                }
            }
            image = if created.is_empty() { ctx.cluster.image() } else { wait_for_local_logs(ctx, &created).await };
            for (name, id) in list {
                let found = match &name {
                    Some(n) => image.topics.get(n),
                    None => image.topics.values().find(|t| topic_uuid(&t.topic_id) == id),
                };
                match found {
                    Some(t) => topics.push(topic_entry(ctx, &image, t, version)),
                    None => {
                        let mut e = MetadataResponseTopic::default();
                        e.name = name.as_deref().map(|n| TopicName(str_bytes(n)));
                        if version >= 10 {
                            e.topic_id = id;
                        }
                        e.error_code = name
                            .as_ref()
                            .and_then(|n| errors.get(n).copied())
                            .unwrap_or(ResponseError::UnknownTopicOrPartition.code());
                        topics.push(e);
                    }
                }
            }
        }
    }

    let mut resp = MetadataResponse::default();
    resp.brokers = image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .filter_map(|b| {
            let (host, port) = kafka_endpoint(b)?;
            let mut e = MetadataResponseBroker::default();
            e.node_id = BrokerId(b.id as i32);
            e.host = str_bytes(&host);
            e.port = port;
            if version >= 1 {
                e.rack = b.rack.as_deref().map(str_bytes);
            }
            Some(e)
        })
        .collect();
    if version >= 2 {
        resp.cluster_id = Some(str_bytes(&ctx.config.cluster_id));
    }
    if version >= 1 {
        resp.controller_id = BrokerId(super::announced_controller(ctx, &image));
    }
    resp.topics = topics;
    resp
}

/// How long a Metadata request that auto-created topics waits for the partitions this broker
/// leads to have their logs.
const AUTO_CREATE_WAIT: Duration = Duration::from_secs(2);

/// The image once every partition of `created` that this broker leads has its local log (the
/// replica manager makes it when it applies the creation), or at `AUTO_CREATE_WAIT`. Until
/// then such a partition is announced as LEADER_NOT_AVAILABLE (see `topic_entry`), and
/// librdkafka asks again only after its backoff, about a second for a producer's first
/// batches; waiting here a few milliseconds instead lets the first request go out at once.
async fn wait_for_local_logs(ctx: &KafkaContext, created: &[String]) -> Arc<MetadataImage> {
    let deadline = Instant::now() + AUTO_CREATE_WAIT;
    loop {
        let image = ctx.cluster.image();
        let ready = created.iter().all(|name| {
            image
                .topics
                .get(name)
                .is_none_or(|t| t.partitions.iter().enumerate().all(|(i, p)| !led_here_without_log(ctx, t, i, p)))
        });
        if ready || Instant::now() >= deadline {
            return image;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Whether this broker leads partition `index` of `t` but has not made its log yet. Such a
/// partition is only announced once its log exists: a client sent here a moment too early
/// would get NOT_LEADER_OR_FOLLOWER and retry its batches out of order.
fn led_here_without_log(ctx: &KafkaContext, t: &TopicRecord, index: usize, p: &PartitionRecord) -> bool {
    p.leader == ctx.node_id as i64 && ctx.logs.get(&TopicPartition::new(&t.name, index as i32)).is_none()
}

/// Fields are set only in the versions that carry them: the encoder refuses the others.
fn topic_entry(ctx: &KafkaContext, image: &MetadataImage, t: &TopicRecord, version: i16) -> MetadataResponseTopic {
    let mut e = MetadataResponseTopic::default();
    e.name = Some(TopicName(str_bytes(&t.name)));
    if version >= 10 {
        e.topic_id = topic_uuid(&t.topic_id);
    }
    if version >= 1 {
        e.is_internal = t.name.starts_with("__");
    }
    e.partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut m = MetadataResponsePartition::default();
            m.partition_index = i as i32;
            m.leader_id = BrokerId(p.leader as i32);
            if version >= 7 {
                m.leader_epoch = p.leader_epoch;
            }
            m.replica_nodes = p.replicas.iter().map(|r| BrokerId(*r as i32)).collect();
            m.isr_nodes = p.isr.iter().map(|r| BrokerId(*r as i32)).collect();
            if version >= 5 {
                m.offline_replicas = p
                    .replicas
                    .iter()
                    .filter(|r| image.brokers.get(r).is_none_or(|b| b.fenced))
                    .map(|r| BrokerId(*r as i32))
                    .collect();
            }
            if p.leader == NO_LEADER || led_here_without_log(ctx, t, i, p) {
                // As Kafka: no leader id with this error, or clients send to it anyway.
                m.error_code = ResponseError::LeaderNotAvailable.code();
                m.leader_id = BrokerId(-1);
            }
            m
        })
        .collect();
    e
}
