//! DeleteTopics (key 20), versions 1–6 (by name, or by topic id from v6).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::ResponseError;

use super::{str_bytes, topic_uuid};
use crate::cluster::MetadataCommand;
use crate::kafka::context::KafkaContext;
use crate::kafka::errors::propose_error_code;

pub async fn handle(ctx: &KafkaContext, req: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let image = ctx.cluster.image();
    // v0–5 list names; v6 lists (name or id) states.
    let mut targets: Vec<(Option<String>, uuid::Uuid)> =
        req.topic_names.iter().map(|n| (Some(n.0.as_str().to_string()), uuid::Uuid::nil())).collect();
    targets.extend(req.topics.iter().map(|t| (t.name.as_ref().map(|n| n.0.as_str().to_string()), t.topic_id)));
    let mut results = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let mut out = DeletableTopicResult::default();
        if version >= 6 {
            out.topic_id = id;
        }
        let name =
            name.or_else(|| image.topics.values().find(|t| topic_uuid(&t.topic_id) == id).map(|t| t.name.clone()));
        match name {
            None => out.error_code = ResponseError::UnknownTopicId.code(),
            Some(name) => {
                out.name = Some(TopicName(str_bytes(&name)));
                if let Some(t) = image.topics.get(&name).filter(|_| version >= 6) {
                    out.topic_id = topic_uuid(&t.topic_id);
                }
                if let Err(e) = ctx.cluster.propose(MetadataCommand::DeleteTopic { name: name.clone() }).await {
                    out.error_code = propose_error_code(&e);
                    if version >= 5 {
                        out.error_message = Some(str_bytes(&e.to_string()));
                    }
                }
            }
        }
        results.push(out);
    }
    let mut resp = DeleteTopicsResponse::default();
    resp.responses = results;
    resp
}
