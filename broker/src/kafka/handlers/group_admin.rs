//! DescribeGroups (15, v0–5), ListGroups (16, v0–4), DeleteGroups (42, v0–2).

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, GroupId,
    ListGroupsRequest, ListGroupsResponse,
};

use super::str_bytes;
use crate::kafka::context::KafkaContext;

pub fn describe(ctx: &KafkaContext, req: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    resp.groups = req
        .groups
        .iter()
        .map(|g| {
            let mut out = DescribedGroup::default();
            out.group_id = g.clone();
            match ctx.groups.describe(g.0.as_str()) {
                Err(code) => out.error_code = code,
                Ok(s) => {
                    out.group_state = str_bytes(s.state);
                    out.protocol_type = str_bytes(&s.protocol_type);
                    out.protocol_data = str_bytes(&s.protocol);
                    out.members = s
                        .members
                        .into_iter()
                        .map(|s| {
                            let mut m = DescribedGroupMember::default();
                            m.member_id = str_bytes(&s.member_id);
                            if version >= 4 {
                                m.group_instance_id = s.instance_id.as_deref().map(str_bytes);
                            }
                            m.client_id = str_bytes(&s.client_id);
                            m.client_host = str_bytes(&s.client_host);
                            m.member_metadata = s.metadata;
                            m.member_assignment = s.assignment;
                            m
                        })
                        .collect();
                }
            }
            out
        })
        .collect();
    resp
}

pub fn list(ctx: &KafkaContext, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let mut resp = ListGroupsResponse::default();
    resp.groups = ctx
        .groups
        .list()
        .into_iter()
        .filter(|(_, _, state)| {
            version < 4 || req.states_filter.is_empty() || req.states_filter.iter().any(|f| f.as_str() == *state)
        })
        .map(|(name, protocol_type, state)| {
            let mut g = ListedGroup::default();
            g.group_id = GroupId(str_bytes(&name));
            g.protocol_type = str_bytes(&protocol_type);
            if version >= 4 {
                g.group_state = str_bytes(state);
            }
            g
        })
        .collect();
    resp
}

pub fn delete(ctx: &KafkaContext, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    resp.results = req
        .groups_names
        .iter()
        .map(|g| {
            let mut r = DeletableGroupResult::default();
            r.group_id = g.clone();
            r.error_code = ctx.groups.delete(g.0.as_str());
            r
        })
        .collect();
    resp
}
