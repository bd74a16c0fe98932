//! DescribeCluster (key 60), versions 0–2: the live brokers (and fenced ones when asked,
//! v2), the cluster id and the controller (this broker: every broker forwards admin requests
//! to the metadata quorum, `announced_controller`).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{kafka_endpoint, str_bytes};
use crate::kafka::context::KafkaContext;

pub async fn handle(ctx: &KafkaContext, req: DescribeClusterRequest, version: i16) -> DescribeClusterResponse {
    let image = ctx.cluster.image();
    let include_fenced = version >= 2 && req.include_fenced_brokers;
    let mut resp = DescribeClusterResponse::default();
    resp.cluster_id = str_bytes(&ctx.config.cluster_id);
    resp.controller_id = BrokerId(super::announced_controller(ctx, &image));
    if version >= 1 {
        resp.endpoint_type = 1;
    }
    resp.brokers = image
        .brokers
        .values()
        .filter(|b| include_fenced || !b.fenced)
        .filter_map(|b| {
            let (host, port) = kafka_endpoint(b)?;
            let mut e = DescribeClusterBroker::default();
            e.broker_id = BrokerId(b.id as i32);
            e.host = str_bytes(&host);
            e.port = port;
            e.rack = b.rack.as_deref().map(str_bytes);
            if version >= 2 {
                e.is_fenced = b.fenced;
            }
            Some(e)
        })
        .collect();
    resp
}
