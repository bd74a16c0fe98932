//! CreateTopics (key 19), versions 2–7: through the metadata quorum, with configs, explicit
//! assignments and validate_only (checked against the image, nothing written).

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;

use super::{str_bytes, topic_uuid};
use crate::cluster::image::{validate_topic_configs, validate_topic_name};
use crate::cluster::NodeId;
use crate::kafka::context::KafkaContext;
use crate::kafka::errors::{metadata_error_code, propose_error_code};

pub async fn handle(ctx: &KafkaContext, req: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.as_str().to_string();
        let mut out = CreatableTopicResult::default();
        out.name = t.name.clone();
        let configs: BTreeMap<String, String> = t
            .configs
            .iter()
            .filter_map(|c| c.value.as_ref().map(|v| (c.name.as_str().to_string(), v.as_str().to_string())))
            .collect();
        let assignment: Option<Vec<Vec<NodeId>>> = if t.assignments.is_empty() {
            None
        } else {
            let mut a: Vec<_> = t.assignments.iter().collect();
            a.sort_by_key(|x| x.partition_index);
            Some(a.iter().map(|x| x.broker_ids.iter().map(|b| b.0 as NodeId).collect()).collect())
        };
        let partitions = if t.num_partitions == -1 { ctx.config.default_partitions as i32 } else { t.num_partitions };
        let rf = if t.replication_factor == -1 {
            ctx.config.default_replication_factor as i16
        } else {
            t.replication_factor
        };
        let pre = validate_topic_name(&name).and_then(|_| validate_topic_configs(&configs));
        let result = match pre {
            Err(e) => Err((metadata_error_code(&e), e.to_string())),
            Ok(()) if assignment.is_none() && partitions < 1 => {
                Err((ResponseError::InvalidPartitions.code(), "partitions must be at least 1".into()))
            }
            Ok(()) if assignment.is_none() && rf < 1 => {
                Err((ResponseError::InvalidReplicationFactor.code(), "replication factor must be at least 1".into()))
            }
            Ok(()) if req.validate_only => {
                let image = ctx.cluster.image();
                if image.topics.contains_key(&name) {
                    Err((ResponseError::TopicAlreadyExists.code(), format!("topic '{name}' already exists")))
                } else if assignment.is_none() && rf as usize > image.live_brokers().len() {
                    Err((
                        ResponseError::InvalidReplicationFactor.code(),
                        format!(
                            "replication factor {rf} is larger than the {} live brokers",
                            image.live_brokers().len()
                        ),
                    ))
                } else {
                    Ok(())
                }
            }
            Ok(()) => ctx
                .cluster
                .create_topic(&name, partitions as u32, rf as u16, configs.clone(), assignment.clone())
                .await
                .map_err(|e| (propose_error_code(&e), e.to_string())),
        };
        match result {
            Ok(()) if version >= 5 => {
                let image = ctx.cluster.image();
                if let Some(topic) = image.topics.get(&name) {
                    if version >= 7 {
                        out.topic_id = topic_uuid(&topic.topic_id);
                    }
                    out.num_partitions = topic.partitions.len() as i32;
                    out.replication_factor = topic.replication_factor() as i16;
                } else {
                    out.num_partitions = assignment.as_ref().map(|a| a.len() as i32).unwrap_or(partitions);
                    out.replication_factor = assignment.as_ref().map(|a| a[0].len() as i16).unwrap_or(rf);
                }
            }
            Ok(()) => {}
            Err((code, message)) => {
                out.error_code = code;
                out.error_message = Some(str_bytes(&message));
                if version >= 5 {
                    out.num_partitions = -1;
                    out.replication_factor = -1;
                }
            }
        }
        results.push(out);
    }
    let mut resp = CreateTopicsResponse::default();
    resp.topics = results;
    resp
}
