//! FindCoordinator (key 10), versions 0–4: the group coordinator is the leader of the
//! group's `__consumer_offsets` partition (the topic is created on first use, in the
//! background: `kafka/auto_create.rs`). Transaction
//! coordinators (key type 1) are not served.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::{kafka_endpoint, str_bytes};
use crate::kafka::auto_create::{outcome_by, COMMIT_WAIT};
use crate::kafka::context::KafkaContext;
use crate::kafka::group::OFFSETS_TOPIC;

struct Found {
    error: i16,
    message: Option<String>,
    node: i32,
    host: String,
    port: i32,
}

async fn find(ctx: &KafkaContext, key: &str, key_type: i8) -> Found {
    let fail = |error: i16, message: &str| Found {
        error,
        message: Some(message.to_string()),
        node: -1,
        host: String::new(),
        port: -1,
    };
    if key_type != 0 {
        return fail(ResponseError::InvalidRequest.code(), "only group coordinators are served (no transactions yet)");
    }
    if !ctx.cluster.image().topics.contains_key(OFFSETS_TOPIC) {
        let mut creation = ctx.auto_create.start(OFFSETS_TOPIC, ctx.groups.offsets_topic_spec());
        match outcome_by(&mut creation, Instant::now() + COMMIT_WAIT).await {
            Some(Ok(())) => {}
            Some(Err(e)) => return fail(ResponseError::CoordinatorNotAvailable.code(), &e.to_string()),
            None => return fail(ResponseError::CoordinatorNotAvailable.code(), "the offsets topic is being created"),
        }
    }
    let Some(node) = ctx.groups.coordinator_of(key) else {
        return fail(ResponseError::CoordinatorNotAvailable.code(), "the group's offsets partition has no leader");
    };
    let image = ctx.cluster.image();
    let Some((host, port)) = image.brokers.get(&node).and_then(kafka_endpoint) else {
        return fail(ResponseError::CoordinatorNotAvailable.code(), "coordinator address unknown");
    };
    Found { error: 0, message: None, node: node as i32, host, port }
}

pub async fn handle(ctx: &KafkaContext, req: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let mut resp = FindCoordinatorResponse::default();
    if version >= 4 {
        for key in &req.coordinator_keys {
            let f = find(ctx, key.as_str(), req.key_type).await;
            let mut c = Coordinator::default();
            c.key = key.clone();
            c.node_id = BrokerId(f.node);
            c.host = str_bytes(&f.host);
            c.port = f.port;
            c.error_code = f.error;
            c.error_message = f.message.as_deref().map(str_bytes);
            resp.coordinators.push(c);
        }
        return resp;
    }
    let f = find(ctx, req.key.as_str(), if version >= 1 { req.key_type } else { 0 }).await;
    resp.error_code = f.error;
    if version >= 1 {
        resp.error_message = f.message.as_deref().map(str_bytes);
    }
    resp.node_id = BrokerId(f.node);
    resp.host = str_bytes(&f.host);
    resp.port = f.port;
    resp
}
