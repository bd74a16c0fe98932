//! Replication admin operations for the operator and people. Today: preferred-leader
//! election (`POST /api/v1/partitions/elect-preferred`). Per-topic `min.insync.replicas`
//! is a topic config (`PATCH /api/v1/topics/{name}`); reassignment and draining are not
//! built yet (docs/status.md).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::api::{ApiError, ApiJson};
use super::http::AdminState;
use crate::cluster::{MetadataCommand, NodeId};

pub fn routes() -> Router<Arc<AdminState>> {
    Router::new().route("/partitions/elect-preferred", post(elect_preferred))
}

/// Which partitions to consider: all (no topic), every partition of `topic`, or the listed ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElectPreferredRequest {
    pub topic: Option<String>,
    pub partitions: Option<Vec<u32>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionResult {
    pub topic: String,
    pub partition: u32,
    /// The preferred leader (first replica).
    pub preferred: NodeId,
    /// `elected`, `already_leader`, or why it was not: `not_in_isr`, `fenced`, `refused`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectPreferredResponse {
    pub results: Vec<ElectionResult>,
}

/// Move leadership of each chosen partition to its first replica when that broker is live and
/// in the ISR (Kafka's preferred-leader election; never unclean). One `ChangePartition` per
/// partition, with the partition epoch the decision was made from.
async fn elect_preferred(
    State(state): State<Arc<AdminState>>,
    ApiJson(req): ApiJson<ElectPreferredRequest>,
) -> Result<Json<ElectPreferredResponse>, ApiError> {
    let cluster = state
        .cluster()
        .ok_or_else(|| ApiError::unavailable("the broker is starting: the metadata quorum is not joined yet"))?;
    if req.partitions.is_some() && req.topic.is_none() {
        return Err(ApiError::bad_request("'partitions' needs 'topic'"));
    }
    let image = cluster.image();
    if let Some(t) = &req.topic {
        let Some(topic) = image.topics.get(t) else {
            return Err(crate::cluster::MetadataError::UnknownTopic(t.clone()).into());
        };
        if let Some(bad) = req.partitions.iter().flatten().find(|p| **p as usize >= topic.partitions.len()) {
            return Err(ApiError::bad_request(format!("topic '{t}' has no partition {bad}")));
        }
    }
    let live = image.live_brokers();
    let mut results = Vec::new();
    for t in image.topics.values().filter(|t| req.topic.as_ref().is_none_or(|n| *n == t.name)) {
        for (i, p) in t.partitions.iter().enumerate() {
            if req.partitions.as_ref().is_some_and(|ps| !ps.contains(&(i as u32))) {
                continue;
            }
            let Some(&preferred) = p.replicas.first() else { continue };
            let mut r = ElectionResult {
                topic: t.name.clone(),
                partition: i as u32,
                preferred,
                outcome: String::new(),
                message: None,
            };
            r.outcome = if p.leader == preferred as i64 {
                "already_leader".into()
            } else if !live.contains(&preferred) {
                "fenced".into()
            } else if !p.isr.contains(&preferred) {
                "not_in_isr".into()
            } else {
                let cmd = MetadataCommand::ChangePartition {
                    topic: t.name.clone(),
                    partition: i as u32,
                    partition_epoch: p.partition_epoch,
                    leader: Some(preferred as i64),
                    isr: None,
                };
                match cluster.propose(cmd).await {
                    Ok(()) => "elected".into(),
                    Err(e) => {
                        r.message = Some(e.to_string());
                        "refused".into()
                    }
                }
            };
            results.push(r);
        }
    }
    Ok(Json(ElectPreferredResponse { results }))
}
