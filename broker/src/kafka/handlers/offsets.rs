//! OffsetCommit (key 8, v2–8) and OffsetFetch (key 9, v1–7): committed offsets of a group,
//! kept in `__consumer_offsets` by the coordinator.

use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};

use super::str_bytes;
use crate::kafka::context::KafkaContext;
use crate::kafka::group::coordinator::OffsetToCommit;

pub async fn commit(ctx: &KafkaContext, req: OffsetCommitRequest, version: i16) -> OffsetCommitResponse {
    let mut flat = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            flat.push(OffsetToCommit {
                topic: t.name.0.as_str().to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if version >= 6 { p.committed_leader_epoch } else { -1 },
                metadata: p.committed_metadata.as_ref().map(|m| m.as_str().to_string()).unwrap_or_default(),
            });
        }
    }
    let mut codes = ctx
        .groups
        .commit(req.group_id.0.as_str(), req.generation_id_or_member_epoch, req.member_id.as_str(), flat)
        .await
        .into_iter();
    let mut resp = OffsetCommitResponse::default();
    resp.topics = req
        .topics
        .iter()
        .map(|t| {
            let mut rt = OffsetCommitResponseTopic::default();
            rt.name = t.name.clone();
            rt.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut rp = OffsetCommitResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = codes.next().unwrap_or(0);
                    rp
                })
                .collect();
            rt
        })
        .collect();
    resp
}

pub fn fetch(ctx: &KafkaContext, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let topics = req
        .topics
        .as_ref()
        .map(|ts| ts.iter().map(|t| (t.name.0.as_str().to_string(), t.partition_indexes.clone())).collect());
    let mut resp = OffsetFetchResponse::default();
    match ctx.groups.fetch(req.group_id.0.as_str(), topics) {
        Err(code) => {
            if version >= 2 {
                resp.error_code = code;
            } else {
                // v1 has no top-level error: report it on every partition asked for.
                resp.topics = req
                    .topics
                    .iter()
                    .flatten()
                    .map(|t| {
                        let mut rt = OffsetFetchResponseTopic::default();
                        rt.name = t.name.clone();
                        rt.partitions = t
                            .partition_indexes
                            .iter()
                            .map(|p| {
                                let mut rp = OffsetFetchResponsePartition::default();
                                rp.partition_index = *p;
                                rp.committed_offset = -1;
                                rp.error_code = code;
                                rp
                            })
                            .collect();
                        rt
                    })
                    .collect();
            }
        }
        Ok(found) => {
            resp.topics = found
                .into_iter()
                .map(|(t, parts)| {
                    let mut rt = OffsetFetchResponseTopic::default();
                    rt.name = TopicName(str_bytes(&t));
                    rt.partitions = parts
                        .into_iter()
                        .map(|(p, c)| {
                            let mut rp = OffsetFetchResponsePartition::default();
                            rp.partition_index = p;
                            rp.committed_offset = c.as_ref().map(|c| c.offset).unwrap_or(-1);
                            if version >= 5 {
                                rp.committed_leader_epoch = c.as_ref().map(|c| c.leader_epoch).unwrap_or(-1);
                            }
                            rp.metadata = Some(str_bytes(c.as_ref().map(|c| c.metadata.as_str()).unwrap_or("")));
                            rp
                        })
                        .collect();
                    rt
                })
                .collect();
        }
    }
    resp
}
