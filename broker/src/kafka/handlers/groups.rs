//! JoinGroup (11, v0–9), SyncGroup (14, v0–5), Heartbeat (12, v0–4), LeaveGroup (13, v0–5):
//! the classic group membership protocol, served by `kafka::group::GroupCoordinator`.

use std::time::Duration;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    SyncGroupRequest, SyncGroupResponse,
};

use super::str_bytes;
use crate::kafka::context::KafkaContext;
use crate::kafka::group::coordinator::JoinRequest;

pub async fn join(
    ctx: &KafkaContext,
    req: JoinGroupRequest,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> JoinGroupResponse {
    let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
    let rebalance = if version >= 1 { Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64) } else { session };
    let result = ctx
        .groups
        .join(JoinRequest {
            group: req.group_id.0.as_str().to_string(),
            member_id: req.member_id.as_str().to_string(),
            instance_id: req.group_instance_id.as_ref().map(|s| s.as_str().to_string()),
            client_id: client_id.to_string(),
            client_host: client_host.to_string(),
            session_timeout: session,
            rebalance_timeout: rebalance,
            protocol_type: req.protocol_type.as_str().to_string(),
            protocols: req.protocols.iter().map(|p| (p.name.as_str().to_string(), p.metadata.clone())).collect(),
            require_known_member: version >= 4,
            supports_skip_assignment: version >= 9,
        })
        .await;
    let mut resp = JoinGroupResponse::default();
    resp.error_code = result.error;
    resp.generation_id = result.generation;
    if version >= 7 {
        resp.protocol_type = result.protocol_type.as_deref().map(str_bytes);
        resp.protocol_name = result.protocol_name.as_deref().map(str_bytes);
    } else {
        resp.protocol_name = Some(str_bytes(result.protocol_name.as_deref().unwrap_or("")));
    }
    resp.leader = str_bytes(&result.leader);
    resp.member_id = str_bytes(&result.member_id);
    if version >= 9 {
        resp.skip_assignment = result.skip_assignment;
    }
    resp.members = result
        .members
        .into_iter()
        .map(|(id, inst, meta)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = str_bytes(&id);
            if version >= 5 {
                m.group_instance_id = inst.as_deref().map(str_bytes);
            }
            m.metadata = meta;
            m
        })
        .collect();
    resp
}

pub async fn sync(ctx: &KafkaContext, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let assignments =
        req.assignments.iter().map(|a| (a.member_id.as_str().to_string(), a.assignment.clone())).collect();
    let instance_id = req.group_instance_id.as_ref().map(|s| s.as_str());
    let r = ctx
        .groups
        .sync(req.group_id.0.as_str(), req.generation_id, req.member_id.as_str(), instance_id, assignments)
        .await;
    let mut resp = SyncGroupResponse::default();
    resp.error_code = r.error;
    resp.assignment = r.assignment;
    if version >= 5 {
        resp.protocol_type = r.protocol_type.as_deref().map(str_bytes);
        resp.protocol_name = r.protocol_name.as_deref().map(str_bytes);
    }
    resp
}

pub fn heartbeat(ctx: &KafkaContext, req: HeartbeatRequest) -> HeartbeatResponse {
    let mut resp = HeartbeatResponse::default();
    let instance_id = req.group_instance_id.as_ref().map(|s| s.as_str());
    resp.error_code =
        ctx.groups.heartbeat(req.group_id.0.as_str(), req.generation_id, req.member_id.as_str(), instance_id);
    resp
}

pub fn leave(ctx: &KafkaContext, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.as_str().to_string(), m.group_instance_id.as_ref().map(|s| s.as_str().to_string())))
            .collect()
    } else {
        vec![(req.member_id.as_str().to_string(), None)]
    };
    let mut resp = LeaveGroupResponse::default();
    match ctx.groups.leave(req.group_id.0.as_str(), members.clone()) {
        Err(code) => resp.error_code = code,
        Ok(codes) if version >= 3 => {
            resp.members = members
                .into_iter()
                .zip(codes)
                .map(|((id, inst), code)| {
                    let mut m = MemberResponse::default();
                    m.member_id = str_bytes(&id);
                    m.group_instance_id = inst.as_deref().map(str_bytes);
                    m.error_code = code;
                    m
                })
                .collect();
        }
        Ok(codes) => resp.error_code = codes.first().copied().unwrap_or(0),
    }
    resp
}
