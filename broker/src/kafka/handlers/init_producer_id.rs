//! InitProducerId (key 22), versions 0–4, for idempotent producers: a new producer id
//! (epoch 0), or the same id with its epoch bumped when the client asks (KIP-360, v3+).
//! Transactional ids are refused: transactions are not served.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::kafka::context::KafkaContext;
use crate::kafka::errors::propose_error_code;

pub async fn handle(ctx: &KafkaContext, req: InitProducerIdRequest, version: i16) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    if req.transactional_id.is_some() {
        resp.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return resp;
    }
    if version >= 3 && req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        resp.producer_id = req.producer_id;
        resp.producer_epoch = req.producer_epoch + 1;
        return resp;
    }
    match ctx.producer_ids.next_id().await {
        Ok(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        Err(e) => resp.error_code = propose_error_code(&e),
    }
    resp
}
