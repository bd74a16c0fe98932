//! Produce (key 0), versions 3–11: validate and append the batches of every partition this
//! broker leads. acks=0 gets no response; acks=1 answers after the leader's append; acks=all
//! answers once every ISR member has the batches (the high watermark passed them), within the
//! request's timeout. An ISR smaller than `min.insync.replicas` refuses acks=all before the
//! append (NOT_ENOUGH_REPLICAS), or after it if the ISR shrank meanwhile
//! (NOT_ENOUGH_REPLICAS_AFTER_APPEND).
//!
//! The handler has two halves so that a connection can pipeline: `append` writes every batch
//! at once, in request order (idempotent sequences and record order depend on it), and
//! `Appended::complete` waits for the ISR. The connection reads its next request while an
//! earlier one waits, and answers in request order (`kafka/server.rs`).
//!
//! From v10 on (KIP-951), a partition refused with NOT_LEADER_OR_FOLLOWER names its current
//! leader and leader epoch, and the response carries those leaders' endpoints, so that a
//! client (librdkafka 2.4+) moves to the new leader without a Metadata round trip first.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::ResponseError;

use super::{kafka_endpoint, led_partition, str_bytes};
use crate::cluster::image::MetadataImage;
use crate::cluster::NodeId;
use crate::kafka::context::KafkaContext;
use crate::kafka::errors::log_error_code;
use crate::log::{now_ms, TopicPartition};
use crate::partition::replication::PartitionReplica;

/// An acks=all partition waiting for its ISR: where its response is, and what it waits for.
struct AcksWait {
    topic: usize,
    partition: usize,
    replica: Arc<PartitionReplica>,
    leader_epoch: i32,
    required_offset: i64,
    min_isr: usize,
}

/// A produce request whose batches are written (or refused); acks=all partitions may still
/// have to wait for their ISR.
pub struct Appended {
    version: i16,
    acks: i16,
    responses: Vec<TopicProduceResponse>,
    waits: Vec<AcksWait>,
    /// The request's timeout, counted from its arrival.
    deadline: tokio::time::Instant,
}

/// One topic of a produce request, detached from the request's frame.
struct TopicRecords {
    name: String,
    /// (partition index, records)
    partitions: Vec<(i32, Option<Bytes>)>,
}

/// The request's topics with their names copied out and everything else dropped, so that the
/// records are all that still holds the request frame: the log then rewrites offsets and
/// epochs in the frame itself instead of in a copy of every byte (for the common request of
/// one partition; with several, all but the last written are copied).
fn detach(req: ProduceRequest) -> Vec<TopicRecords> {
    req.topic_data
        .into_iter()
        .map(|t| TopicRecords {
            name: t.name.0.as_str().to_string(),
            partitions: t.partition_data.into_iter().map(|p| (p.index, p.records)).collect(),
        })
        .collect()
}

/// A buffer the log may rewrite in place: the records themselves when nothing else holds
/// their frame, else a copy.
fn writable(records: Bytes) -> BytesMut {
    records.try_into_mut().unwrap_or_else(|b| BytesMut::from(&b[..]))
}

/// Validate and append every partition's batches; no waiting.
pub fn append(ctx: &KafkaContext, req: ProduceRequest, version: i16) -> Appended {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(req.timeout_ms.max(0) as u64);
    let acks = req.acks;
    let topics = detach(req);
    let image = ctx.cluster.image();
    // The partitions written, for the fetches waiting on them.
    let mut appended: Vec<TopicPartition> = Vec::new();
    let mut waits = Vec::new();
    let mut responses = Vec::with_capacity(topics.len());
    for topic in topics {
        let name = topic.name;
        let record = image.topics.get(&name);
        // Only topics that exist get series: a client naming others adds none.
        let counters = record.map(|_| ctx.metrics.topics.topic(&name));
        let min_isr: usize =
            record.and_then(|t| t.configs.get("min.insync.replicas")).and_then(|v| v.parse().ok()).unwrap_or(1);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (index, records) in topic.partitions {
            let mut out = PartitionProduceResponse::default();
            out.index = index;
            out.base_offset = -1;
            out.log_append_time_ms = -1;
            out.log_start_offset = -1;
            let code = match led_partition(ctx, &image, &name, index) {
                Err(code) => code,
                Ok((part, _)) if acks == -1 && part.isr.len() < min_isr => {
                    set_message(
                        &mut out,
                        version,
                        &format!("ISR has {} members, min.insync.replicas is {min_isr}", part.isr.len()),
                    );
                    ResponseError::NotEnoughReplicas.code()
                }
                Ok((part, log)) => match records {
                    None => ResponseError::CorruptMessage.code(),
                    Some(records) => {
                        let mut buf = writable(records);
                        let records_len = buf.len() as u64;
                        let epoch = part.leader_epoch;
                        let tp = TopicPartition::new(&name, index);
                        // Written only while this broker still leads at the image's epoch.
                        let result = tokio::task::block_in_place(|| {
                            ctx.replication.append_as_leader(&tp, part, &log, |log| {
                                log.append(&mut buf, epoch, now_ms()).map(|info| (info, log.log_start_offset()))
                            })
                        })
                        .map(|(appended, replica)| appended.map(|(info, start)| (info, start, replica)));
                        match result {
                            None => {
                                set_message(&mut out, version, "this broker no longer leads the partition");
                                ResponseError::NotLeaderOrFollower.code()
                            }
                            Some(Ok((info, start, replica))) => {
                                appended.push(tp.clone());
                                let records_count = (info.last_offset - info.first_offset + 1).max(0) as u64;
                                ctx.metrics.bytes_in.inc_by(records_len);
                                ctx.metrics.messages_in.inc_by(records_count);
                                if let Some(c) = &counters {
                                    c.bytes_in.inc_by(records_len);
                                    c.messages_in.inc_by(records_count);
                                }
                                if acks == -1 {
                                    waits.push(AcksWait {
                                        topic: responses.len(),
                                        partition: partitions.len(),
                                        replica,
                                        leader_epoch: epoch,
                                        required_offset: info.last_offset + 1,
                                        min_isr,
                                    });
                                }
                                out.base_offset = info.first_offset;
                                out.log_append_time_ms = info.log_append_time.unwrap_or(-1);
                                if version >= 5 {
                                    out.log_start_offset = start;
                                }
                                0
                            }
                            Some(Err(e)) => {
                                tracing::debug!(topic = %name, partition = index, error = %e, "produce refused");
                                set_message(&mut out, version, &e.to_string());
                                log_error_code(&e)
                            }
                        }
                    }
                },
            };
            if code != 0 {
                tracing::debug!(topic = %name, partition = index, code, "produce error");
                if let Some(c) = &counters {
                    c.failed_produce.inc();
                }
            }
            out.error_code = code;
            partitions.push(out);
        }
        let mut t = TopicProduceResponse::default();
        t.name = TopicName(str_bytes(&name));
        t.partition_responses = partitions;
        responses.push(t);
    }
    if !appended.is_empty() {
        ctx.notify_appended(&appended);
    }
    Appended { version, acks, responses, waits, deadline }
}

impl Appended {
    /// Whether `complete` may have to wait (acks=all partitions were written).
    pub fn waits_for_isr(&self) -> bool {
        !self.waits.is_empty()
    }

    /// The produce purgatory: every acks=all partition waits for its ISR, all against the
    /// same deadline (the request's timeout); then the response, if the request gets one.
    /// `Err` closes the connection (a failed acks=0 produce).
    pub async fn complete(self, ctx: &KafkaContext) -> Result<Option<ProduceResponse>, String> {
        let Appended { version, acks, mut responses, waits, deadline } = self;
        for w in waits {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let waited =
                ctx.replication.wait_for_isr(&w.replica, w.leader_epoch, w.required_offset, w.min_isr, left).await;
            if let Err(e) = waited {
                let out = &mut responses[w.topic].partition_responses[w.partition];
                tracing::debug!(partition = %w.replica.tp, error = %e, "acks=all produce failed");
                out.error_code = e.code();
                set_message(out, version, &e.to_string());
                ctx.metrics.topics.topic(&w.replica.tp.topic).failed_produce.inc();
            }
        }
        if acks == 0 {
            // No response to carry the error: Kafka closes the connection instead, so the
            // client notices (and refreshes its metadata) rather than losing messages silently.
            let failed = responses.iter().flat_map(|t| t.partition_responses.iter()).find(|p| p.error_code != 0);
            if let Some(p) = failed {
                return Err(format!("acks=0 produce failed with error {} on partition {}", p.error_code, p.index));
            }
            return Ok(None);
        }
        let not_leader = ResponseError::NotLeaderOrFollower.code();
        let refused_for_leadership =
            responses.iter().flat_map(|t| t.partition_responses.iter()).any(|p| p.error_code == not_leader);
        let mut resp = ProduceResponse::default();
        resp.responses = responses;
        // The image is read only for a response that needs hints, not for every produce.
        if version >= 10 && refused_for_leadership {
            add_leader_hints(&mut resp, &ctx.cluster.image(), ctx.node_id);
        }
        Ok(Some(resp))
    }
}

/// KIP-951: each partition refused with NOT_LEADER_OR_FOLLOWER gets its leader and leader
/// epoch from `image` (the newest this broker has applied, which may be newer than the one
/// the append checked), and the response gets the Kafka endpoint of each leader named. No hint
/// when the image names no live leader, or this broker itself (its image is behind the
/// change that refused the write): the client then asks for Metadata, as before v10.
fn add_leader_hints(resp: &mut ProduceResponse, image: &MetadataImage, this_broker: NodeId) {
    let not_leader = ResponseError::NotLeaderOrFollower.code();
    let mut leaders = BTreeSet::new();
    for t in resp.responses.iter_mut() {
        let topic = image.topics.get(t.name.0.as_str());
        for p in t.partition_responses.iter_mut().filter(|p| p.error_code == not_leader) {
            let Some(part) = topic.and_then(|t| t.partitions.get(p.index as usize)) else { continue };
            let Ok(leader) = NodeId::try_from(part.leader) else { continue };
            if leader == this_broker || !image.is_live(leader) {
                continue;
            }
            let mut current = LeaderIdAndEpoch::default();
            current.leader_id = BrokerId(leader as i32);
            current.leader_epoch = part.leader_epoch;
            p.current_leader = current;
            leaders.insert(leader);
        }
    }
    resp.node_endpoints = leaders
        .into_iter()
        .filter_map(|id| {
            let b = image.brokers.get(&id)?;
            let (host, port) = kafka_endpoint(b)?;
            let mut e = NodeEndpoint::default();
            e.node_id = BrokerId(id as i32);
            e.host = str_bytes(&host);
            e.port = port;
            e.rack = b.rack.as_deref().map(str_bytes);
            Some(e)
        })
        .collect();
}

/// Error messages exist in the response from v8 on; the encoder refuses them before.
fn set_message(out: &mut PartitionProduceResponse, version: i16, message: &str) {
    if version >= 8 {
        out.error_message = Some(str_bytes(message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, RequestHeader, TransactionalId};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use crate::kafka::codec;

    /// A produce request frame as the server reads it: header and body in one buffer.
    fn frame(partitions: &[&[u8]]) -> Bytes {
        let version = 9;
        let mut header = RequestHeader::default();
        header.request_api_key = ApiKey::Produce as i16;
        header.request_api_version = version;
        header.client_id = Some(StrBytes::from_static_str("a-client"));
        let mut topic = TopicProduceData::default();
        topic.name = TopicName(StrBytes::from_static_str("orders"));
        topic.partition_data = partitions
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut p = PartitionProduceData::default();
                p.index = i as i32;
                p.records = Some(Bytes::copy_from_slice(r));
                p
            })
            .collect();
        let mut req = ProduceRequest::default();
        req.transactional_id = Some(TransactionalId(StrBytes::from_static_str("tx")));
        req.acks = -1;
        req.topic_data = vec![topic];
        let mut buf = BytesMut::new();
        header.encode(&mut buf, ApiKey::Produce.request_header_version(version)).unwrap();
        req.encode(&mut buf, version).unwrap();
        buf.put_u8(0); // not read: what follows a body stays in the frame
        buf.freeze()
    }

    /// Decoded as `kafka/server.rs` and `handlers::produce_reply` do, then detached.
    fn decode_and_detach(mut frame: Bytes) -> (RequestHeader, Vec<TopicRecords>) {
        let (_, header) = codec::decode_header(&mut frame).unwrap();
        let req: ProduceRequest = codec::decode_body(&mut frame, header.request_api_version).unwrap();
        drop(frame);
        (header, detach(req))
    }

    /// The buffer `writable` gives for `records`, and whether it is the records' own memory.
    fn written(records: Option<Bytes>) -> (BytesMut, bool) {
        let records = records.unwrap();
        let at = records.as_ptr();
        let buf = writable(records);
        let in_place = buf.as_ptr() == at;
        (buf, in_place)
    }

    fn refused(partitions: &[(i32, i16)]) -> ProduceResponse {
        let mut t = TopicProduceResponse::default();
        t.name = TopicName(str_bytes("orders"));
        t.partition_responses = partitions
            .iter()
            .map(|&(index, error_code)| {
                let mut p = PartitionProduceResponse::default();
                p.index = index;
                p.error_code = error_code;
                p
            })
            .collect();
        let mut resp = ProduceResponse::default();
        resp.responses = vec![t];
        resp
    }

    #[test]
    fn a_partition_refused_for_leadership_names_its_leader_and_the_response_its_endpoint() {
        use crate::cluster::image::{BrokerRecord, PartitionRecord, TopicRecord};
        let mut image = MetadataImage::default();
        for id in 0..4u64 {
            let b = BrokerRecord {
                id,
                raft_addr: String::new(),
                kafka_addr: format!("127.0.0.{}:{}", id + 1, 9092 + id),
                http_addr: String::new(),
                rack: (id == 1).then(|| "rack-a".to_string()),
                fenced: id == 3,
                epoch: 1,
                draining: false,
                draining_owner: None,
                metadata_version: 0,
            };
            image.brokers.insert(id, b);
        }
        let part = |leader: i64, leader_epoch: i32| PartitionRecord {
            replicas: vec![0, 1, 2],
            isr: vec![0, 1, 2],
            leader,
            leader_epoch,
            partition_epoch: 1,
            adding: Vec::new(),
            removing: Vec::new(),
        };
        let topic = TopicRecord {
            name: "orders".into(),
            topic_id: "id".into(),
            configs: Default::default(),
            // 0: led by 1; 1: by this broker (0) in a stale image; 2: leaderless; 3: fenced 3;
            // 4: led by 1 but refused for another reason.
            partitions: vec![part(1, 7), part(0, 3), part(-1, 4), part(3, 2), part(1, 9)],
        };
        image.topics.insert("orders".into(), topic);
        let not_leader = ResponseError::NotLeaderOrFollower.code();
        let mut resp = refused(&[
            (0, not_leader),
            (1, not_leader),
            (2, not_leader),
            (3, not_leader),
            (4, ResponseError::NotEnoughReplicas.code()),
            (9, not_leader),
        ]);
        add_leader_hints(&mut resp, &image, 0);
        let hints: Vec<(i32, i32)> = resp.responses[0]
            .partition_responses
            .iter()
            .map(|p| (p.current_leader.leader_id.0, p.current_leader.leader_epoch))
            .collect();
        assert_eq!(hints, vec![(1, 7), (-1, -1), (-1, -1), (-1, -1), (-1, -1), (-1, -1)]);
        assert_eq!(resp.node_endpoints.len(), 1);
        let e = &resp.node_endpoints[0];
        assert_eq!((e.node_id.0, e.host.as_str(), e.port), (1, "127.0.0.2", 9093));
        assert_eq!(e.rack.as_deref(), Some("rack-a"));

        // Encoded as v10 tagged fields, they decode back; v9 has no such fields.
        use kafka_protocol::protocol::{Decodable, Encodable};
        let mut buf = BytesMut::new();
        resp.encode(&mut buf, 10).unwrap();
        let back = ProduceResponse::decode(&mut buf.freeze(), 10).unwrap();
        assert_eq!(back.responses[0].partition_responses[0].current_leader.leader_id.0, 1);
        assert_eq!(back.node_endpoints.len(), 1);
    }

    #[test]
    fn one_partition_is_written_in_its_frame_without_a_copy() {
        let (header, topics) = decode_and_detach(frame(&[b"batch bytes"]));
        assert_eq!(header.client_id.as_deref(), Some("a-client"));
        assert_eq!(topics.len(), 1);
        assert_eq!(topics[0].name, "orders");
        let (index, records) = topics.into_iter().next().unwrap().partitions.pop().unwrap();
        assert_eq!(index, 0);
        assert!(records.as_ref().unwrap().is_unique(), "something besides the records still holds the frame");
        let (buf, in_place) = written(records);
        assert!(in_place, "the records were copied");
        assert_eq!(&buf[..], b"batch bytes");
    }

    #[test]
    fn several_partitions_share_the_frame_until_the_last() {
        let (_, topics) = decode_and_detach(frame(&[b"first", b"second"]));
        let mut parts = topics.into_iter().next().unwrap().partitions.into_iter();
        let (first, in_place) = written(parts.next().unwrap().1);
        assert!(!in_place, "a buffer the other partition still shares must be copied");
        assert_eq!(&first[..], b"first");
        let (second, in_place) = written(parts.next().unwrap().1);
        assert!(in_place, "the last partition holds the frame alone");
        assert_eq!(&second[..], b"second");
    }
}
