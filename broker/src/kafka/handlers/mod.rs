//! One handler per Kafka API. `SUPPORTED` is what ApiVersions advertises: an API appears
//! here only once its handler does what the protocol says for every listed version.

pub mod alter_partition_reassignments;
pub mod api_versions;
pub mod configs;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
pub mod group_admin;
pub mod groups;
pub mod init_producer_id;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod metadata;
pub mod offset_delete;
pub mod offset_for_leader_epoch;
pub mod offsets;
pub mod produce;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::codec::{self, CodecError, ResponseFrame};
use super::context::KafkaContext;
use crate::cluster::image::{BrokerRecord, MetadataImage, PartitionRecord, TopicRecord};
use crate::log::{Log, TopicPartition};

/// (API, lowest version, highest version) served by this broker.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DescribeLogDirs, 0, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
];

pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED.iter().find(|(k, _, _)| *k == key).map(|(_, lo, hi)| (*lo, *hi))
}

/// What a request gets back.
pub enum Reply {
    /// Nothing (produce with acks=0).
    None,
    Now(ResponseFrame),
    /// A produce whose batches are written and that waits for the ISR: the connection reads
    /// on meanwhile and sends this response in its turn.
    Later(Pin<Box<dyn Future<Output = Result<Option<ResponseFrame>, CodecError>> + Send>>),
}

impl From<Option<ResponseFrame>> for Reply {
    fn from(frame: Option<ResponseFrame>) -> Self {
        frame.map_or(Reply::None, Reply::Now)
    }
}

/// Answer one request. An error closes the connection, as Kafka does for requests it cannot
/// parse or serve.
pub async fn handle(
    ctx: &Arc<KafkaContext>,
    api_key: ApiKey,
    header: &RequestHeader,
    client_host: &str,
    mut body: Bytes,
) -> Result<Reply, CodecError> {
    let version = header.request_api_version;
    if api_key == ApiKey::ApiVersions {
        return api_versions::handle(header, body).map(Reply::Now);
    }
    match supported_range(api_key) {
        Some((lo, hi)) if (lo..=hi).contains(&version) => {}
        _ => {
            return Err(CodecError::Malformed(format!("{api_key:?} v{version} is not supported by this broker")));
        }
    }
    let corr = header.correlation_id;
    let client_id = header.client_id.as_ref().map(|c| c.as_str()).unwrap_or("");
    let result = if api_key == ApiKey::Produce {
        produce_reply(ctx, version, corr, &mut body).await
    } else {
        dispatch(ctx, api_key, version, corr, client_id, client_host, &mut body).await.map(Reply::from)
    };
    if let Err(e) = &result {
        tracing::debug!(?api_key, version, error = %e, "request failed");
    }
    result.map_err(|e| match e {
        CodecError::Malformed(m) => CodecError::Malformed(format!("{api_key:?} v{version}: {m}")),
        other => other,
    })
}

/// Produce appends at once; an acks=all request that must wait for its ISR answers later.
async fn produce_reply(
    ctx: &Arc<KafkaContext>,
    version: i16,
    corr: i32,
    body: &mut Bytes,
) -> Result<Reply, CodecError> {
    let req = codec::decode_body(body, version)?;
    // What is left of the frame goes, so that the records can be its only holder.
    *body = Bytes::new();
    let appended = produce::append(ctx, req, version);
    let waits = appended.waits_for_isr();
    let ctx = ctx.clone();
    let respond = async move {
        match appended.complete(&ctx).await {
            Ok(Some(resp)) => codec::encode_response(ApiKey::Produce, version, corr, &resp).map(Some),
            Ok(None) => Ok(None),
            Err(why) => Err(CodecError::Malformed(why)),
        }
    };
    if waits {
        // acks=all: no acks=0 error can come out of it, only the response.
        return Ok(Reply::Later(Box::pin(respond)));
    }
    respond.await.map(Reply::from)
}

async fn dispatch(
    ctx: &KafkaContext,
    api_key: ApiKey,
    version: i16,
    corr: i32,
    client_id: &str,
    client_host: &str,
    body: &mut Bytes,
) -> Result<Option<ResponseFrame>, CodecError> {
    match api_key {
        ApiKey::Metadata => {
            let req = codec::decode_body(body, version)?;
            let resp = metadata::handle(ctx, req, version).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::Fetch => {
            let req = codec::decode_body(body, version)?;
            let fetch::FetchOutput { response, shared } = fetch::handle(ctx, req, version).await;
            // The records go out as they were read (or as file ranges), without a copy into
            // the encoded response.
            codec::encode_response_sharing(api_key, version, corr, &response, &shared).map(Some)
        }
        ApiKey::ListOffsets => {
            let req = codec::decode_body(body, version)?;
            let resp = list_offsets::handle(ctx, req, version).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::CreateTopics => {
            let req = codec::decode_body(body, version)?;
            let resp = create_topics::handle(ctx, req, version).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::DeleteTopics => {
            let req = codec::decode_body(body, version)?;
            let resp = delete_topics::handle(ctx, req, version).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::DescribeConfigs => {
            let req = codec::decode_body(body, version)?;
            let resp = configs::describe(ctx, req, version).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::AlterConfigs => {
            let req = codec::decode_body(body, version)?;
            let resp = configs::alter(ctx, req).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::IncrementalAlterConfigs => {
            let req = codec::decode_body(body, version)?;
            let resp = configs::incremental_alter(ctx, req).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::CreatePartitions => {
            let req = codec::decode_body(body, version)?;
            let resp = create_partitions::handle(ctx, req).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::AlterPartitionReassignments => {
            let req = codec::decode_body(body, version)?;
            let resp = alter_partition_reassignments::handle(ctx, req, version).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::ListPartitionReassignments => {
            let req = codec::decode_body(body, version)?;
            let resp = list_partition_reassignments::handle(ctx, req);
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::DescribeProducers => {
            let req = codec::decode_body(body, version)?;
            let resp = describe_producers::handle(ctx, req);
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::DescribeLogDirs => {
            let req = codec::decode_body(body, version)?;
            let resp = describe_log_dirs::handle(ctx, req, version);
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::OffsetDelete => {
            let req = codec::decode_body(body, version)?;
            let resp = offset_delete::handle(ctx, req);
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::DeleteRecords => {
            let req = codec::decode_body(body, version)?;
            let resp = delete_records::handle(ctx, req, version).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::ElectLeaders => {
            let req = codec::decode_body(body, version)?;
            let resp = elect_leaders::handle(ctx, req, version).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::DescribeCluster => {
            let req = codec::decode_body(body, version)?;
            let resp = describe_cluster::handle(ctx, req, version).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::FindCoordinator => {
            let req = codec::decode_body(body, version)?;
            let resp = find_coordinator::handle(ctx, req, version).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::JoinGroup => {
            let req = codec::decode_body(body, version)?;
            let resp = groups::join(ctx, req, version, client_id, client_host).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::SyncGroup => {
            let req = codec::decode_body(body, version)?;
            let resp = groups::sync(ctx, req, version).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::Heartbeat => {
            let req = codec::decode_body(body, version)?;
            let resp = groups::heartbeat(ctx, req);
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::LeaveGroup => {
            let req = codec::decode_body(body, version)?;
            let resp = groups::leave(ctx, req, version);
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::OffsetCommit => {
            let req = codec::decode_body(body, version)?;
            let resp = offsets::commit(ctx, req, version).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::OffsetFetch => {
            let req = codec::decode_body(body, version)?;
            let resp = offsets::fetch(ctx, req, version);
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::DescribeGroups => {
            let req = codec::decode_body(body, version)?;
            let resp = group_admin::describe(ctx, req, version);
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::ListGroups => {
            let req = codec::decode_body(body, version)?;
            let resp = group_admin::list(ctx, req, version);
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::DeleteGroups => {
            let req = codec::decode_body(body, version)?;
            let resp = group_admin::delete(ctx, req);
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::InitProducerId => {
            let req = codec::decode_body(body, version)?;
            let resp = init_producer_id::handle(ctx, req, version).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        ApiKey::OffsetForLeaderEpoch => {
            let req = codec::decode_body(body, version)?;
            let resp = offset_for_leader_epoch::handle(ctx, req).await;
            codec::encode_response(api_key, version, corr, &resp).map(Some)
        }
        other => Err(CodecError::Malformed(format!("{other:?} has no handler"))),
    }
}

/// The partition record and local log of a partition this broker leads, or the error code a
/// client gets otherwise: UNKNOWN_TOPIC_OR_PARTITION, or NOT_LEADER_OR_FOLLOWER (also while
/// the replica manager has not created the log yet, so the client retries).
pub(crate) fn led_partition<'a>(
    ctx: &KafkaContext,
    image: &'a MetadataImage,
    topic: &str,
    partition: i32,
) -> Result<(&'a PartitionRecord, Arc<Mutex<Log>>), i16> {
    led_partition_of(ctx, image.topics.get(topic), &TopicPartition::new(topic, partition))
}

/// `led_partition` for a caller that looked the topic up once for many of its partitions.
pub(crate) fn led_partition_of<'a>(
    ctx: &KafkaContext,
    topic: Option<&'a TopicRecord>,
    tp: &TopicPartition,
) -> Result<(&'a PartitionRecord, Arc<Mutex<Log>>), i16> {
    let part = topic
        .and_then(|t| t.partitions.get(tp.partition as usize))
        .ok_or(ResponseError::UnknownTopicOrPartition.code())?;
    if part.leader != ctx.node_id as i64 {
        return Err(ResponseError::NotLeaderOrFollower.code());
    }
    let log = ctx.logs.get(tp).ok_or(ResponseError::NotLeaderOrFollower.code())?;
    Ok((part, log))
}

/// Host and port of a broker's Kafka listener, as Metadata and FindCoordinator announce it.
pub(crate) fn kafka_endpoint(b: &BrokerRecord) -> Option<(String, i32)> {
    let (host, port) = b.kafka_addr.rsplit_once(':')?;
    Some((host.trim_start_matches('[').trim_end_matches(']').to_string(), port.parse().ok()?))
}

/// The controller id Metadata and DescribeCluster announce: this broker, while it is
/// registered and unfenced. Every broker forwards admin requests (CreateTopics, DeleteTopics,
/// ElectLeaders, ...) to the metadata quorum, as a KRaft Kafka broker does, and Kafka then
/// names a live broker rather than the quorum leader; clients send admin requests to the
/// controller they last heard of, and one that names the quorum leader keeps waiting for it
/// after it dies. Before this broker is registered: the quorum leader.
pub(crate) fn announced_controller(ctx: &KafkaContext, image: &MetadataImage) -> i32 {
    if image.brokers.get(&ctx.node_id).is_some_and(|b| !b.fenced) {
        return ctx.node_id as i32;
    }
    ctx.cluster.quorum().0.map(|l| l as i32).unwrap_or(-1)
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Our topic ids are 32 hex digits; Kafka's are UUIDs. The same 128 bits either way.
pub(crate) fn topic_uuid(topic_id: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(topic_id).unwrap_or(uuid::Uuid::nil())
}
