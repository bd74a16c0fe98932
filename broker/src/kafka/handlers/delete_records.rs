//! DeleteRecords (key 21), versions 0–2 (KIP-107; `kafka-delete-records`, Kafka Streams
//! purging its repartition topics). The partition's leader moves its log start up to the
//! requested offset (-1: the high watermark), which hides the records below at once and
//! deletes the segments holding only them, and checkpoints it; the answer comes once every
//! replica on a live broker has moved its own start that far (the low watermark: followers
//! take the leader's start from their fetch responses and report theirs in their fetches), or
//! at the request's timeout with REQUEST_TIMED_OUT. As Kafka: an offset above the high
//! watermark is OFFSET_OUT_OF_RANGE, a topic whose `cleanup.policy` lacks `delete` gets
//! POLICY_VIOLATION, an internal topic INVALID_TOPIC_EXCEPTION.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::led_partition_of;
use crate::cluster::image::TopicRecord;
use crate::kafka::context::KafkaContext;
use crate::kafka::errors::log_error_code;
use crate::kafka::group::OFFSETS_TOPIC;
use crate::log::{Log, TopicPartition};
use crate::partition::replication::PartitionReplica;

/// `offset` -1 in a request: delete up to the high watermark.
const HIGH_WATERMARK: i64 = -1;

/// How often a request waiting for the low watermark looks again. Followers report their
/// log start with their next fetch, which a leader's append or its long poll brings within
/// `replica.fetch.wait.max.ms`; an admin operation can afford the polling.
const LOW_WATERMARK_POLL: Duration = Duration::from_millis(10);

/// A partition whose leader moved its start, waiting for its replicas to follow.
struct Waiting {
    topic: usize,
    partition: usize,
    replica: Arc<PartitionReplica>,
    leader_epoch: i32,
    offset: i64,
    log: Arc<Mutex<Log>>,
}

pub async fn handle(ctx: &KafkaContext, req: DeleteRecordsRequest, _version: i16) -> DeleteRecordsResponse {
    let image = ctx.cluster.image();
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut waiting = Vec::new();
    let mut moved = false;
    for t in req.topics {
        let record = image.topics.get(t.name.0.as_str());
        let mut results = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let mut out = DeleteRecordsPartitionResult::default();
            out.partition_index = p.partition_index;
            out.low_watermark = -1;
            let tp = TopicPartition::new(t.name.0.as_str(), p.partition_index);
            match delete_as_leader(ctx, record, &tp, p.offset) {
                Err(code) => out.error_code = code,
                Ok((w, start_moved)) => {
                    moved |= start_moved;
                    waiting.push(Waiting { topic: topics.len(), partition: results.len(), ..w });
                }
            }
            results.push(out);
        }
        let mut result = DeleteRecordsTopicResult::default();
        result.name = t.name;
        result.partitions = results;
        topics.push(result);
    }
    // Before any answer: a restart must not bring the deleted records back.
    if moved {
        if let Err(e) = tokio::task::block_in_place(|| ctx.logs.checkpoint_log_start_offsets()) {
            tracing::error!(error = %e, "writing the log start checkpoint failed");
            for w in waiting.drain(..) {
                topics[w.topic].partitions[w.partition].error_code = ResponseError::KafkaStorageError.code();
            }
        }
    }

    let deadline = Instant::now() + Duration::from_millis(req.timeout_ms.max(0) as u64);
    loop {
        let image = ctx.cluster.image();
        waiting.retain(|w| {
            let out = &mut topics[w.topic].partitions[w.partition];
            let leader_start = w.log.lock().expect("log lock").log_start_offset();
            match w.replica.low_watermark(w.leader_epoch, leader_start, |b| image.is_live(b)) {
                None => {
                    out.error_code = ResponseError::NotLeaderOrFollower.code();
                    false
                }
                Some(low) => {
                    out.low_watermark = low;
                    low < w.offset
                }
            }
        });
        if waiting.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(LOW_WATERMARK_POLL).await;
    }
    for w in waiting {
        topics[w.topic].partitions[w.partition].error_code = ResponseError::RequestTimedOut.code();
    }
    let mut resp = DeleteRecordsResponse::default();
    resp.topics = topics;
    resp
}

/// Move the log start of `tp`, led here, to `requested`; the partition to wait for, and
/// whether the start moved.
fn delete_as_leader(
    ctx: &KafkaContext,
    record: Option<&TopicRecord>,
    tp: &TopicPartition,
    requested: i64,
) -> Result<(Waiting, bool), i16> {
    if tp.topic == OFFSETS_TOPIC {
        return Err(ResponseError::InvalidTopicException.code());
    }
    let (part, log) = led_partition_of(ctx, record, tp)?;
    if !log.lock().expect("log lock").config().cleanup_delete {
        return Err(ResponseError::PolicyViolation.code());
    }
    let replica = ctx.replication.ensure_leader(tp, part, &log);
    // The HW only grows while this broker leads, so checking against it here holds for the
    // move below, which happens only at this same leader epoch.
    let hw = replica.high_watermark();
    let offset = if requested == HIGH_WATERMARK { hw } else { requested };
    if offset < 0 || offset > hw {
        return Err(ResponseError::OffsetOutOfRange.code());
    }
    let moved = tokio::task::block_in_place(|| {
        ctx.replication.append_as_leader(tp, part, &log, |log| log.advance_log_start_offset(offset))
    });
    match moved {
        None => Err(ResponseError::NotLeaderOrFollower.code()),
        Some((Err(e), _)) => Err(log_error_code(&e)),
        Some((Ok(start_moved), replica)) => {
            let w = Waiting { topic: 0, partition: 0, replica, leader_epoch: part.leader_epoch, offset, log };
            Ok((w, start_moved))
        }
    }
}
