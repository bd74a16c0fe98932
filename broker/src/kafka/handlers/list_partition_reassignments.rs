//! ListPartitionReassignments (key 46), version 0: what `kafka-reassign-partitions --verify`
//! and AdminClient `list_partition_reassignments` send. The partitions with a reassignment in
//! progress (all, or those of the listed ones), with their replica set (the union during the
//! move) and the replicas being added and removed.

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse};

use crate::kafka::context::KafkaContext;

pub fn handle(ctx: &KafkaContext, req: ListPartitionReassignmentsRequest) -> ListPartitionReassignmentsResponse {
    let image = ctx.cluster.image();
    let ids = |v: &[crate::cluster::NodeId]| v.iter().map(|b| BrokerId(*b as i32)).collect::<Vec<_>>();
    let mut resp = ListPartitionReassignmentsResponse::default();
    for t in image.topics.values() {
        let asked: Option<&Vec<i32>> = match &req.topics {
            None => None,
            Some(ts) => match ts.iter().find(|x| x.name.0.as_str() == t.name) {
                Some(x) => Some(&x.partition_indexes),
                None => continue,
            },
        };
        let mut out = OngoingTopicReassignment::default();
        for (i, p) in t.partitions.iter().enumerate() {
            if !p.reassigning() || asked.is_some_and(|a| !a.contains(&(i as i32))) {
                continue;
            }
            let mut o = OngoingPartitionReassignment::default();
            o.partition_index = i as i32;
            o.replicas = ids(&p.replicas);
            o.adding_replicas = ids(&p.adding);
            o.removing_replicas = ids(&p.removing);
            out.partitions.push(o);
        }
        if !out.partitions.is_empty() {
            out.name = kafka_protocol::messages::TopicName(super::str_bytes(&t.name));
            resp.topics.push(out);
        }
    }
    resp
}
