//! OffsetDelete (key 47), version 0 (KIP-496; `kafka-consumer-groups --delete-offsets`,
//! kafka-python's `delete_group_offsets`): the group's coordinator drops its committed offsets
//! of the named partitions (`GroupCoordinator::delete_offsets` has the rules). As Kafka:
//! partitions of topics or partition numbers the metadata does not know are answered
//! UNKNOWN_TOPIC_OR_PARTITION and not deleted; a group-level error comes with no topics.

use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::ResponseError;

use crate::kafka::context::KafkaContext;

pub fn handle(ctx: &KafkaContext, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let image = ctx.cluster.image();
    let mut resp = OffsetDeleteResponse::default();
    // Every asked partition gets a result slot; the known ones are deleted together.
    let mut known = Vec::new();
    let mut slots = Vec::new();
    for t in &req.topics {
        let mut out = OffsetDeleteResponseTopic::default();
        out.name = t.name.clone();
        for p in &t.partitions {
            let mut r = OffsetDeleteResponsePartition::default();
            r.partition_index = p.partition_index;
            let exists =
                u32::try_from(p.partition_index).is_ok_and(|i| image.partition(t.name.0.as_str(), i).is_some());
            if exists {
                slots.push((resp.topics.len(), out.partitions.len()));
                known.push((t.name.0.as_str().to_string(), p.partition_index));
            } else {
                r.error_code = ResponseError::UnknownTopicOrPartition.code();
            }
            out.partitions.push(r);
        }
        resp.topics.push(out);
    }
    match ctx.groups.delete_offsets(req.group_id.0.as_str(), &known) {
        Err(code) => {
            resp.error_code = code;
            resp.topics.clear();
        }
        Ok(codes) => {
            for ((t, p), code) in slots.into_iter().zip(codes) {
                resp.topics[t].partitions[p].error_code = code;
            }
        }
    }
    resp
}
