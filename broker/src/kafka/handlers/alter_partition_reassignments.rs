//! AlterPartitionReassignments (key 45), versions 0–1: what `kafka-reassign-partitions
//! --execute` / `--cancel` and AdminClient `alter_partition_reassignments` send (KIP-455).
//! Each partition is checked against the current metadata and proposed on its own (as Kafka
//! answers per partition); the moves themselves are the state machine's, as for the admin API
//! (`cluster::reassignment`, docs/replication.md).

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::cluster::reassignment::{propose_reassignment, reassign_cmd};
use crate::cluster::NodeId;
use crate::kafka::context::KafkaContext;
use crate::kafka::errors::{metadata_error_code, propose_error_code};

pub async fn handle(
    ctx: &KafkaContext,
    req: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    // v1 (KIP-860) may forbid changing the replication factor; v0 always allows it.
    let allow_rf_change = version < 1 || req.allow_replication_factor_change;
    let mut responses = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let topic = t.name.0.as_str();
        let mut out = ReassignableTopicResponse::default();
        out.name = t.name.clone();
        for p in &t.partitions {
            let target: Option<Vec<NodeId>> =
                p.replicas.as_ref().map(|r| r.iter().map(|b| b.0.max(-1) as NodeId).collect());
            let result = reassign_one(ctx, topic, p.partition_index, target, allow_rf_change).await;
            let mut r = ReassignablePartitionResponse::default();
            r.partition_index = p.partition_index;
            if let Err((code, message)) = result {
                r.error_code = code;
                r.error_message = Some(str_bytes(&message));
            }
            out.partitions.push(r);
        }
        responses.push(out);
    }
    let mut resp = AlterPartitionReassignmentsResponse::default();
    resp.allow_replication_factor_change = allow_rf_change;
    resp.responses = responses;
    resp
}

async fn reassign_one(
    ctx: &KafkaContext,
    topic: &str,
    partition: i32,
    target: Option<Vec<NodeId>>,
    allow_rf_change: bool,
) -> Result<(), (i16, String)> {
    let image = ctx.cluster.image();
    let Some(current) = u32::try_from(partition).ok().and_then(|p| image.partition(topic, p)) else {
        return Err((
            ResponseError::UnknownTopicOrPartition.code(),
            format!("topic '{topic}' has no partition {partition}"),
        ));
    };
    let partition = partition as u32;
    match &target {
        None if !current.reassigning() => {
            return Err((
                ResponseError::NoReassignmentInProgress.code(),
                format!("{topic}-{partition} is not being reassigned"),
            ))
        }
        Some(t) if !allow_rf_change && t.len() != current.target_replicas().len() => {
            return Err((
                ResponseError::InvalidReplicationFactor.code(),
                format!(
                "{topic}-{partition}: {} replicas would change the replication factor {}, which the request forbids",
                t.len(),
                current.target_replicas().len()
            ),
            ))
        }
        Some(t) if *t == current.replicas && !current.reassigning() => return Ok(()),
        _ => {}
    }
    // Checked against a copy of the metadata first, so a refusal names the rule.
    let mut dry = (*image).clone();
    dry.apply(&reassign_cmd(&image, topic, partition, target.clone()))
        .map_err(|e| (metadata_error_code(&e), e.to_string()))?;
    drop(image);
    propose_reassignment(&ctx.cluster, topic, partition, target)
        .await
        .map_err(|e| (propose_error_code(&e), e.to_string()))
}
