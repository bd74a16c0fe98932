//! CreatePartitions (key 37), versions 0–3: grow a topic to `count` partitions, placed as
//! at creation or as the request assigns them. A decrease is INVALID_PARTITIONS.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::cluster::{MetadataCommand, NodeId};
use crate::kafka::context::KafkaContext;
use crate::kafka::errors::propose_error_code;

pub async fn handle(ctx: &KafkaContext, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name = t.name.0.as_str();
        let mut out = CreatePartitionsTopicResult::default();
        out.name = t.name.clone();
        let image = ctx.cluster.image();
        let result = match image.topics.get(name) {
            None => Err((ResponseError::UnknownTopicOrPartition.code(), format!("topic '{name}' does not exist"))),
            Some(topic) if t.count as usize <= topic.partitions.len() => Err((
                ResponseError::InvalidPartitions.code(),
                format!("topic '{name}' has {} partitions; the count can only grow", topic.partitions.len()),
            )),
            Some(_) if req.validate_only => Ok(()),
            Some(_) => match &t.assignments {
                None => ctx.cluster.create_partitions(name, t.count as u32).await,
                Some(a) => {
                    let assignment: Vec<Vec<NodeId>> =
                        a.iter().map(|x| x.broker_ids.iter().map(|b| b.0 as NodeId).collect()).collect();
                    ctx.cluster.propose(MetadataCommand::CreatePartitions { name: name.to_string(), assignment }).await
                }
            }
            .map_err(|e| (propose_error_code(&e), e.to_string())),
        };
        if let Err((code, message)) = result {
            out.error_code = code;
            out.error_message = Some(str_bytes(&message));
        }
        results.push(out);
    }
    let mut resp = CreatePartitionsResponse::default();
    resp.results = results;
    resp
}
