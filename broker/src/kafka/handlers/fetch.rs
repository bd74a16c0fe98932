//! Fetch (key 1), versions 4–12 (topics by name; v13+ topic ids are not served yet).
//! Long poll: the request waits up to max.wait.ms until min.bytes are available. Records
//! are the segment bytes as stored, never re-encoded; ranges of `SENDFILE_MIN_BYTES` or more
//! are not read at all here but sent from the page cache by the server (`file_records`). Consumers read up to the high
//! watermark; followers (replica id >= 0) read up to the log end, and their fetch offset
//! tells the leader how far they are (partition/replication.rs). From v7 a client may keep an
//! incremental fetch session (KIP-227, `kafka/fetch_session.rs`): it then names only what
//! changed, and is answered only for partitions with something new.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;

use super::led_partition_of;
use super::offset_for_leader_epoch::check_current_leader_epoch;
use crate::cluster::image::{MetadataImage, PartitionRecord, TopicRecord};
use crate::cluster::throttle_configs::{LEADER_THROTTLED_RATE, LEADER_THROTTLED_REPLICAS};
use crate::cluster::NodeId;
use crate::kafka::codec::{FramePart, SharedPart};
use crate::kafka::context::{KafkaContext, ReplicaSelector};
use crate::kafka::errors::log_error_code;
use crate::kafka::fetch_session::SessionContext;
use crate::kafka::file_records::{Placeholders, SENDFILE_MIN_BYTES};
use crate::log::TopicPartition;

/// A fetch response and the records in it, to be written as parts of their own rather than
/// copied into the encoded frame: records read into memory, and file ranges (whose `records`
/// in the response are placeholders; see `file_records`).
pub struct FetchOutput {
    pub response: FetchResponse,
    pub shared: Vec<SharedPart>,
}

pub async fn handle(ctx: &KafkaContext, req: FetchRequest, version: i16) -> FetchOutput {
    let session = match ctx.fetch_sessions.begin(&req, version, Instant::now()) {
        Ok(session) => session,
        Err(e) => return session_error(e),
    };
    // An incremental fetch covers every partition of its session, not only those it names.
    let mut output = match &session {
        SessionContext::Incremental { request, .. } => fetch(ctx, request, version).await,
        _ => fetch(ctx, &req, version).await,
    };
    match ctx.fetch_sessions.finish(session, &req, &mut output.response, Instant::now()) {
        Ok(()) => {
            if req.replica_id.0 >= 0 {
                ctx.replication.metrics.bytes_out.inc_by(response_record_bytes(&output.response));
            } else {
                count_consumer_fetch(ctx, &output.response);
            }
            output
        }
        Err(e) => session_error(e),
    }
}

/// The record bytes of a fetch response (file ranges by their length).
fn response_record_bytes(response: &FetchResponse) -> u64 {
    let partitions = response.responses.iter().flat_map(|t| t.partitions.iter());
    partitions.map(|p| p.records.as_ref().map_or(0, |r| r.len() as u64)).sum()
}

/// A consumer's fetch in the client traffic metrics: bytes out in total and by topic, and
/// its partitions answered with an error by topic (topics that exist only).
fn count_consumer_fetch(ctx: &KafkaContext, response: &FetchResponse) {
    let image = ctx.cluster.image();
    let mut total = 0u64;
    for t in &response.responses {
        let (mut bytes, mut failed) = (0u64, 0u64);
        for p in &t.partitions {
            bytes += p.records.as_ref().map_or(0, |r| r.len() as u64);
            failed += u64::from(p.error_code != 0);
        }
        total += bytes;
        let topic = t.topic.0.as_str();
        if image.topics.contains_key(topic) {
            let counters = ctx.metrics.topics.topic(topic);
            counters.bytes_out.inc_by(bytes);
            counters.failed_fetch.inc_by(failed);
        }
    }
    ctx.metrics.bytes_out.inc_by(total);
}

/// A response carrying only a top-level error, as Kafka answers a fetch whose session is
/// unknown or out of step.
fn session_error(e: ResponseError) -> FetchOutput {
    let mut response = FetchResponse::default();
    response.error_code = e.code();
    response.session_id = crate::kafka::fetch_session::INVALID_SESSION_ID;
    FetchOutput { response, shared: Vec::new() }
}

/// The long poll: collects until `min_bytes` are there, an error shows, or `max_wait_ms` ends.
async fn fetch(ctx: &KafkaContext, req: &FetchRequest, version: i16) -> FetchOutput {
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let changes = &ctx.replication.changes;
    let mut changed = changes.subscribe();
    // Made at the first wait: most follower fetches of a busy leader return at once.
    let mut wanted: Option<HashSet<(&str, i32)>> = None;
    let mut first = true;
    loop {
        // Marked before collecting: a change while collecting is looked at next.
        let mut seen = *changed.borrow_and_update();
        let image = ctx.cluster.image();
        let (output, bytes, any_error) = collect(ctx, &image, req, version, first);
        first = false;
        if bytes >= req.min_bytes.max(0) as usize || any_error || Instant::now() >= deadline {
            return output;
        }
        // Sleep until one of this request's partitions gets an append or a high-watermark
        // move, or the deadline; changes of other partitions do not cost a collect.
        let wanted = wanted.get_or_insert_with(|| {
            req.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.as_str(), p.partition))).collect()
        });
        loop {
            let now = Instant::now();
            if now >= deadline || tokio::time::timeout(deadline - now, changed.changed()).await.is_err() {
                break;
            }
            let latest = *changed.borrow_and_update();
            let concerns = changes.concerns(seen, wanted);
            seen = latest;
            if concerns {
                break;
            }
        }
    }
}

/// `arrival`: the first collect of this request. Only then does a follower's fetch offset
/// count as its progress: it describes the follower's log when the request was sent, and a
/// long poll can outlive that log (a cancelled reassignment deletes it; the same move started
/// again makes a new, empty one), so recording it again later could put a follower with
/// nothing into the ISR.
fn collect(
    ctx: &KafkaContext,
    image: &MetadataImage,
    req: &FetchRequest,
    version: i16,
    arrival: bool,
) -> (FetchOutput, usize, bool) {
    let mut total = 0usize;
    let mut placeholders = Placeholders::default();
    let mut shared = Vec::new();
    let mut any_error = false;
    let follower = (req.replica_id.0 >= 0).then_some(req.replica_id.0 as crate::cluster::NodeId);
    let self_id = ctx.replication.node_id;
    // Consumers may read from followers (KIP-392) when the rack-aware selector is on.
    let follower_reads = follower.is_none() && ctx.config.replica_selector == ReplicaSelector::Rack;
    // A partition sent to a preferred read replica is answered at once, as Kafka does.
    let mut redirected = false;
    let max_total = if req.max_bytes <= 0 { usize::MAX } else { req.max_bytes as usize };
    let mut responses = Vec::with_capacity(req.topics.len());
    for topic in &req.topics {
        let name = topic.topic.0.as_str();
        let record = image.topics.get(name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let mut out = PartitionData::default();
            out.partition_index = p.partition;
            out.high_watermark = -1;
            out.last_stable_offset = -1;
            out.log_start_offset = -1;
            out.preferred_read_replica = BrokerId(-1);
            out.aborted_transactions = if req.isolation_level == 1 { Some(Vec::new()) } else { None };
            out.records = Some(Bytes::new());
            let tp = TopicPartition::new(name, p.partition);
            let leader_here = led_partition_of(ctx, record, &tp);
            out.error_code = match leader_here {
                // KIP-392: a consumer sent here by a leader's preferred read replica.
                Err(code) if code == ResponseError::NotLeaderOrFollower.code() && follower_reads => {
                    let room = max_total.saturating_sub(total);
                    let read = read_as_follower(ctx, record, &tp, p, room, total == 0, &mut placeholders, &mut shared);
                    match read {
                        Ok((hw, start, bytes)) => {
                            ctx.replication.metrics.follower_consumer_bytes.inc_by(bytes.len() as u64);
                            out.high_watermark = hw;
                            out.last_stable_offset = hw;
                            if version >= 5 {
                                out.log_start_offset = start;
                            }
                            total += bytes.len();
                            out.records = Some(bytes);
                            0
                        }
                        Err((code, hw)) => {
                            // Librdkafka takes an out-of-range answer above this replica's
                            // HW as "behind" and goes back to the leader.
                            out.high_watermark = hw;
                            out.last_stable_offset = hw;
                            code
                        }
                    }
                }
                Err(code) => code,
                Ok((part, _)) if p.current_leader_epoch >= 0 && p.current_leader_epoch < part.leader_epoch => {
                    ResponseError::FencedLeaderEpoch.code()
                }
                Ok((part, _)) if p.current_leader_epoch > part.leader_epoch => ResponseError::UnknownLeaderEpoch.code(),
                Ok((part, log)) => {
                    let room = max_total.saturating_sub(total);
                    // A replica that a reassignment is adding fetches within the cluster's
                    // reassignment throttle (partition/throttle.rs); over budget, it gets no
                    // records this time.
                    let throttle_rate = image.effective_replication_throttle();
                    let throttled = throttle_rate > 0 && follower.is_some_and(|f| part.adding.contains(&f));
                    // Kafka's throttle configs: a follower out of the ISR of a partition whose
                    // leader list names this broker fetches within this broker's
                    // leader.replication.throttled.rate.
                    let quota_rate = follower
                        .filter(|f| !part.isr.contains(f))
                        .filter(|_| {
                            image.replica_throttled(name, p.partition as u32, self_id, LEADER_THROTTLED_REPLICAS)
                        })
                        .and_then(|_| image.throttled_rate(self_id, LEADER_THROTTLED_RATE));
                    // KIP-392: a consumer in another rack than this leader is sent to the most
                    // caught-up in-sync replica in its own rack, if there is one.
                    let rack_replicas = (version >= 11 && follower_reads)
                        .then(|| read_replicas_in_rack(image, part, self_id, req.rack_id.as_str()))
                        .filter(|candidates| !candidates.is_empty());
                    let reassignment_held = throttled && !ctx.replication.reassignment_throttle.allows(throttle_rate);
                    let held_back =
                        reassignment_held || quota_rate.is_some_and(|rate| !ctx.replication.leader_quota.allows(rate));
                    // On this task's thread, not through block_in_place: what runs here is
                    // index lookups and at most a read of under SENDFILE_MIN_BYTES (larger
                    // ranges go out by sendfile, which blocks on a page-cache miss the same
                    // way); handing the runtime's core to another thread for it cost more
                    // than the work (a follower's long poll collects several times per batch).
                    let result = (|| {
                        let replica = ctx.replication.ensure_leader(&tp, part, &log);
                        let preferred = rack_replicas.and_then(|c| replica.most_caught_up_follower(c));
                        if let Some(f) = follower.filter(|_| arrival) {
                            ctx.replication.record_follower_fetch(
                                &replica,
                                f,
                                part.leader_epoch,
                                p.fetch_offset,
                                p.log_start_offset,
                                &log,
                            );
                        }
                        let hw = replica.high_watermark();
                        let log = log.lock().expect("log lock");
                        let upper = if follower.is_some() { log.log_end_offset() } else { hw };
                        let start = log.log_start_offset();
                        if preferred.is_some() {
                            return Ok((hw, start, Bytes::new(), preferred));
                        }
                        if held_back {
                            if reassignment_held {
                                ctx.replication.metrics.throttled_fetches.inc();
                            }
                            return Ok((hw, start, Bytes::new(), None));
                        }
                        let want = (p.partition_max_bytes.max(0) as usize).min(room);
                        // The first partition with data gets at least one whole batch, so a
                        // batch larger than the limits never blocks a consumer.
                        let slice = log.read(p.fetch_offset, want, upper, total == 0).map_err(|e| (e, hw))?;
                        drop(log);
                        let bytes = records_bytes(slice, &mut placeholders, &mut shared).map_err(|e| (e, hw))?;
                        Ok::<_, (crate::log::LogError, i64)>((hw, start, bytes, None))
                    })();
                    match result {
                        Ok((hw, start, bytes, preferred)) => {
                            if throttled {
                                ctx.replication.reassignment_throttle.served(bytes.len());
                                ctx.replication.metrics.throttled_bytes.inc_by(bytes.len() as u64);
                            }
                            if quota_rate.is_some() {
                                ctx.replication.leader_quota.served(bytes.len());
                                let counter = &ctx.replication.metrics.quota_throttled_bytes;
                                counter.with_label_values(&["leader"]).inc_by(bytes.len() as u64);
                            }
                            out.high_watermark = hw;
                            out.last_stable_offset = hw;
                            if version >= 5 {
                                out.log_start_offset = start;
                            }
                            if let Some(id) = preferred {
                                out.preferred_read_replica = BrokerId(id as i32);
                                ctx.replication.metrics.preferred_read_replica.inc();
                                redirected = true;
                            }
                            total += bytes.len();
                            out.records = Some(bytes);
                            0
                        }
                        Err((e, hw)) => {
                            if let crate::log::LogError::OffsetOutOfRange { log_start_offset, .. } = e {
                                out.high_watermark = hw;
                                out.last_stable_offset = hw;
                                if version >= 5 {
                                    out.log_start_offset = log_start_offset;
                                }
                            }
                            log_error_code(&e)
                        }
                    }
                }
            };
            any_error |= out.error_code != 0;
            partitions.push(out);
        }
        let mut t = FetchableTopicResponse::default();
        t.topic = topic.topic.clone();
        t.topic_id = topic.topic_id;
        t.partitions = partitions;
        responses.push(t);
    }
    let mut response = FetchResponse::default();
    response.responses = responses;
    (FetchOutput { response, shared }, total, any_error || redirected)
}

/// Kafka's `RackAwareReplicaSelector`, first half: for a consumer in `rack`, the live in-sync
/// replicas in that rack other than this leader, none if this leader is in that rack. The
/// leader then picks the most caught-up of them. Only in-sync replicas: they hold everything
/// up to the high watermark, which is as far as a consumer can have read.
fn read_replicas_in_rack(image: &MetadataImage, part: &PartitionRecord, leader: NodeId, rack: &str) -> Vec<NodeId> {
    let rack_of = |b: NodeId| image.brokers.get(&b).and_then(|r| r.rack.as_deref());
    if rack.is_empty() || rack_of(leader) == Some(rack) {
        return Vec::new();
    }
    part.isr.iter().copied().filter(|b| *b != leader && image.is_live(*b) && rack_of(*b) == Some(rack)).collect()
}

/// A consumer's fetch from a follower replica in the ISR: up to this replica's high watermark
/// (it follows the leader's, one fetch round behind). The same epoch checks as at the leader.
/// An offset past this replica's log end is OFFSET_OUT_OF_RANGE with this replica's HW, which
/// clients read as "this replica is behind" and take back to the leader.
#[allow(clippy::too_many_arguments)]
fn read_as_follower(
    ctx: &KafkaContext,
    topic: Option<&TopicRecord>,
    tp: &TopicPartition,
    p: &kafka_protocol::messages::fetch_request::FetchPartition,
    room: usize,
    first: bool,
    placeholders: &mut Placeholders,
    shared: &mut Vec<SharedPart>,
) -> Result<(i64, i64, Bytes), (i16, i64)> {
    let not_here = (ResponseError::NotLeaderOrFollower.code(), -1);
    let part = topic.and_then(|t| t.partitions.get(tp.partition as usize)).ok_or(not_here)?;
    // Out of the ISR, this replica's HW may stall: the client goes back to the leader.
    if !part.isr.contains(&ctx.node_id) {
        return Err(not_here);
    }
    check_current_leader_epoch(p.current_leader_epoch, part.leader_epoch).map_err(|code| (code, -1))?;
    let log = ctx.logs.get(tp).ok_or(not_here)?;
    let replica = ctx.replication.replica(tp).ok_or(not_here)?;
    let hw = replica.high_watermark();
    let log = log.lock().expect("log lock");
    let start = log.log_start_offset();
    let want = (p.partition_max_bytes.max(0) as usize).min(room);
    let slice = log.read(p.fetch_offset, want, hw, first).map_err(|e| (log_error_code(&e), hw))?;
    drop(log);
    let bytes = records_bytes(slice, placeholders, shared).map_err(|e| (log_error_code(&e), hw))?;
    Ok((hw, start, bytes))
}

/// The records of a slice as the response carries them: a placeholder whose bytes go out by
/// sendfile (`SENDFILE_MIN_BYTES` or more), else the bytes read now.
fn records_bytes(
    slice: Option<crate::log::LogSlice>,
    placeholders: &mut Placeholders,
    shared: &mut Vec<SharedPart>,
) -> Result<Bytes, crate::log::LogError> {
    let Some(s) = slice else { return Ok(Bytes::new()) };
    if s.len >= SENDFILE_MIN_BYTES {
        if let Some(placeholder) = placeholders.take(s.len) {
            shared.push(SharedPart { body: placeholder.clone(), wire: FramePart::File(s) });
            return Ok(placeholder);
        }
    }
    let read = Bytes::from(s.to_vec().map_err(|e| crate::log::LogError::io("segment", e))?);
    shared.push(SharedPart::bytes(read.clone()));
    Ok(read)
}
