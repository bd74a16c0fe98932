//! DescribeProducers (key 61), version 0 (KIP-664; `kafka-transactions describe-producers`,
//! kafka-python's `describe_producers`): the idempotent producers a partition replica holds
//! state for, with epoch, last sequence and last timestamp. As Kafka, any replica answers
//! from its own log (a follower's state follows its leader's batches); a partition with no
//! replica here gets NOT_LEADER_OR_FOLLOWER, an unknown one UNKNOWN_TOPIC_OR_PARTITION. No
//! transactions, so the coordinator epoch and transaction start are always -1.

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState as DescribedProducer, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::kafka::context::KafkaContext;
use crate::log::TopicPartition;

pub fn handle(ctx: &KafkaContext, req: DescribeProducersRequest) -> DescribeProducersResponse {
    let image = ctx.cluster.image();
    let mut resp = DescribeProducersResponse::default();
    for t in req.topics {
        let mut out = TopicResponse::default();
        for index in t.partition_indexes {
            let mut p = PartitionResponse::default();
            p.partition_index = index;
            let exists = u32::try_from(index).is_ok_and(|i| image.partition(t.name.0.as_str(), i).is_some());
            match exists.then(|| ctx.logs.get(&TopicPartition::new(t.name.0.as_str(), index))) {
                None => p.error_code = ResponseError::UnknownTopicOrPartition.code(),
                Some(None) => p.error_code = ResponseError::NotLeaderOrFollower.code(),
                Some(Some(log)) => {
                    let producers = log.lock().expect("log lock").active_producers();
                    p.active_producers = producers
                        .into_iter()
                        .map(|a| {
                            let mut d = DescribedProducer::default();
                            d.producer_id = ProducerId(a.producer_id);
                            d.producer_epoch = a.epoch as i32;
                            d.last_sequence = a.last_sequence;
                            d.last_timestamp = a.last_timestamp;
                            d.coordinator_epoch = -1;
                            d.current_txn_start_offset = -1;
                            d
                        })
                        .collect();
                }
            }
            out.partitions.push(p);
        }
        out.name = t.name;
        resp.topics.push(out);
    }
    resp
}
