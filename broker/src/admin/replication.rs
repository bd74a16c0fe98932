//! Replication admin operations for the operator and people: preferred-leader election
//! (`POST /api/v1/partitions/elect-preferred`), partition reassignment
//! (`POST /api/v1/partitions/reassign`, `GET /api/v1/partitions/reassignments`) and broker
//! draining (`/api/v1/brokers/{id}/drain`), and the reassignment throttle
//! (`/api/v1/replication/throttle`). Per-topic `min.insync.replicas` is a topic config
//! (`PATCH /api/v1/topics/{name}`).
//!
//! Reassignments live in the metadata image (`adding` / `removing` of a partition) and are
//! completed by the state machine itself once every adding replica is in the ISR, so they
//! continue through restarts and quorum leader changes; the calls here only start them and
//! return at once (202), as Kafka's AlterPartitionReassignments does. Progress is polled.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer, Serialize};

use super::api::{single_query_param, ApiError, ApiJson};
use super::http::AdminState;
use crate::cluster::drain::plan_drain;
use crate::cluster::election::{self, Outcome};
use crate::cluster::image::{MetadataImage, PartitionRecord, NO_LEADER};
use crate::cluster::reassignment::{propose_reassignment, reassign_cmd, STALE_RETRIES};
use crate::cluster::{ClusterNode, MetadataCommand, MetadataError, NodeId, ProposeError};

pub fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/partitions/elect-preferred", post(elect_preferred))
        .route("/partitions/reassign", post(reassign))
        .route("/partitions/reassignments", get(list_reassignments))
        .route("/brokers/{id}/drain", get(drain_status).post(drain).delete(undrain))
        .route("/replication/throttle", get(throttle).put(set_throttle))
        .route("/replication/throttle/holds/{holder}", axum::routing::put(set_hold).delete(release_hold))
}

fn cluster_of(state: &AdminState) -> Result<&Arc<ClusterNode>, ApiError> {
    state
        .cluster()
        .ok_or_else(|| ApiError::unavailable("the broker is starting: the metadata quorum is not joined yet"))
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
/// in the ISR (`cluster::election`).
async fn elect_preferred(
    State(state): State<Arc<AdminState>>,
    ApiJson(req): ApiJson<ElectPreferredRequest>,
) -> Result<Json<ElectPreferredResponse>, ApiError> {
    let cluster = cluster_of(&state)?;
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
    drop(image);
    let chosen = |topic: &str, partition: u32| {
        req.topic.as_ref().is_none_or(|t| t == topic)
            && req.partitions.as_ref().is_none_or(|ps| ps.contains(&partition))
    };
    let results = election::elect_preferred(cluster, chosen)
        .await
        .into_iter()
        .map(|e| {
            let (outcome, message) = match e.outcome {
                Outcome::Elected => ("elected", None),
                Outcome::AlreadyLeader => ("already_leader", None),
                Outcome::Fenced => ("fenced", None),
                Outcome::Draining => ("draining", None),
                Outcome::NotInIsr => ("not_in_isr", None),
                Outcome::Refused(err) => ("refused", Some(err.to_string())),
            };
            ElectionResult {
                topic: e.topic,
                partition: e.partition,
                preferred: e.preferred,
                outcome: outcome.into(),
                message,
            }
        })
        .collect();
    Ok(Json(ElectPreferredResponse { results }))
}

// ---------------------------------------------------------------------------------------
// Reassignment
// ---------------------------------------------------------------------------------------

/// `replicas` must be present: a list starts (or replaces) a reassignment, `null` cancels
/// the running one. A missing field is refused rather than read as a cancel.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Vec<NodeId>>>, D::Error> {
    Option::<Vec<NodeId>>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReassignEntry {
    pub topic: String,
    pub partition: u32,
    #[serde(default, deserialize_with = "present")]
    pub replicas: Option<Option<Vec<NodeId>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReassignRequest {
    pub partitions: Vec<ReassignEntry>,
}

/// A partition's replica state as the reassignment endpoints show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassignmentView {
    pub topic: String,
    pub partition: u32,
    /// Current replicas: during a reassignment the union of target and leaving replicas.
    pub replicas: Vec<NodeId>,
    /// What `replicas` will be once the reassignment completes.
    pub target_replicas: Vec<NodeId>,
    pub adding: Vec<NodeId>,
    pub removing: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub leader: Option<NodeId>,
    pub partition_epoch: i32,
}

impl ReassignmentView {
    fn new(topic: &str, partition: u32, p: &PartitionRecord) -> Self {
        Self {
            topic: topic.to_string(),
            partition,
            replicas: p.replicas.clone(),
            target_replicas: p.target_replicas(),
            adding: p.adding.clone(),
            removing: p.removing.clone(),
            isr: p.isr.clone(),
            leader: (p.leader != NO_LEADER).then_some(p.leader as NodeId),
            partition_epoch: p.partition_epoch,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassignResult {
    /// `started` (new replicas are catching up), `completed` (nothing to catch up: done at
    /// once), `cancelled`, `no_change`, or `refused` (see `message`).
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(flatten)]
    pub state: ReassignmentView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassignResponse {
    pub results: Vec<ReassignResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassignmentList {
    pub reassignments: Vec<ReassignmentView>,
}

/// Start, replace or cancel reassignments: every entry is checked against a copy of the image
/// first (nothing is proposed if one is invalid), then proposed one by one. Answers 202 at
/// once; `GET /api/v1/partitions/reassignments` shows progress.
async fn reassign(
    State(state): State<Arc<AdminState>>,
    ApiJson(req): ApiJson<ReassignRequest>,
) -> Result<(StatusCode, Json<ReassignResponse>), ApiError> {
    let cluster = cluster_of(&state)?;
    if req.partitions.is_empty() {
        return Err(ApiError::bad_request("'partitions' is empty"));
    }
    let mut seen = BTreeSet::new();
    let mut dry = (*cluster.image()).clone();
    for e in &req.partitions {
        let Some(target) = &e.replicas else {
            return Err(ApiError::bad_request(format!(
                "{}-{}: 'replicas' is required (a list, or null to cancel)",
                e.topic, e.partition
            )));
        };
        if !seen.insert((e.topic.clone(), e.partition)) {
            return Err(ApiError::bad_request(format!("{}-{} is listed twice", e.topic, e.partition)));
        }
        let cmd = reassign_cmd(&dry, &e.topic, e.partition, target.clone());
        if let Err(err) = dry.apply(&cmd) {
            let mut api: ApiError = err.into();
            api.message = format!("{}-{}: {}", e.topic, e.partition, api.message);
            return Err(api);
        }
    }
    let mut results = Vec::new();
    for e in req.partitions {
        let target = e.replicas.expect("checked");
        let before = cluster.image();
        let p = before.partition(&e.topic, e.partition).expect("checked").clone();
        let no_change = match &target {
            Some(t) => *t == p.replicas && !p.reassigning(),
            None => false,
        };
        let (outcome, message) = if no_change {
            ("no_change".to_string(), None)
        } else {
            match propose_reassignment(cluster, &e.topic, e.partition, target.clone()).await {
                Ok(()) => {
                    let after = cluster.image();
                    let reassigning = after.partition(&e.topic, e.partition).is_some_and(|p| p.reassigning());
                    let o = match (&target, reassigning) {
                        (None, _) => "cancelled",
                        (Some(_), true) => "started",
                        (Some(_), false) => "completed",
                    };
                    (o.to_string(), None)
                }
                Err(err) => ("refused".to_string(), Some(err.to_string())),
            }
        };
        let image = cluster.image();
        let p = image.partition(&e.topic, e.partition).expect("topics are not deleted here");
        results.push(ReassignResult { outcome, message, state: ReassignmentView::new(&e.topic, e.partition, p) });
    }
    Ok((StatusCode::ACCEPTED, Json(ReassignResponse { results })))
}

async fn list_reassignments(State(state): State<Arc<AdminState>>) -> Result<Json<ReassignmentList>, ApiError> {
    let image = cluster_of(&state)?.image();
    let reassignments = image
        .topics
        .values()
        .flat_map(|t| {
            t.partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| p.reassigning())
                .map(|(i, p)| ReassignmentView::new(&t.name, i as u32, p))
        })
        .collect();
    Ok(Json(ReassignmentList { reassignments }))
}

// ---------------------------------------------------------------------------------------
// Draining a broker
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedView {
    pub topic: String,
    pub partition: u32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStatus {
    pub broker: NodeId,
    /// The broker is marked draining: no new replica is placed or added on it.
    pub draining: bool,
    /// Who set the mark, if the call that set it named an owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Draining and it holds no replica (and so leads nothing) any more.
    pub done: bool,
    /// Partitions that still have a replica on the broker (moving or blocked).
    pub remaining: Vec<ReassignmentView>,
    /// Partitions the broker still leads.
    pub leaderships: usize,
    /// Set by `POST`: what this call started, and what it could not move.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<Vec<ReassignmentView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Vec<BlockedView>>,
}

fn broker_id(raw: &str, image: &MetadataImage) -> Result<NodeId, ApiError> {
    let id: NodeId = raw.parse().map_err(|_| ApiError::bad_request(format!("'{raw}' is not a broker id")))?;
    if !image.brokers.contains_key(&id) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_broker", format!("broker {id} is not registered")));
    }
    Ok(id)
}

fn drain_view(image: &MetadataImage, broker: NodeId) -> DrainStatus {
    let mut remaining = Vec::new();
    let mut leaderships = 0;
    for t in image.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            if p.replicas.contains(&broker) {
                remaining.push(ReassignmentView::new(&t.name, i as u32, p));
            }
            if p.leader == broker as i64 {
                leaderships += 1;
            }
        }
    }
    let draining = image.brokers.get(&broker).is_some_and(|b| b.draining);
    DrainStatus {
        broker,
        draining,
        owner: image.brokers.get(&broker).and_then(|b| b.draining_owner.clone()),
        done: draining && remaining.is_empty(),
        remaining,
        leaderships,
        started: None,
        blocked: None,
    }
}

async fn drain_status(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<DrainStatus>, ApiError> {
    let image = cluster_of(&state)?.image();
    let id = broker_id(&id, &image)?;
    Ok(Json(drain_view(&image, id)))
}

/// Owner and holder names: 1–64 characters of ASCII letters, digits, `.`, `_` and `-`.
fn valid_name(what: &str, name: String) -> Result<String, ApiError> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(name)
    } else {
        Err(ApiError::bad_request(format!("{what} '{name}' must be 1 to 64 ASCII letters, digits, '.', '_' or '-'")))
    }
}

/// Mark the broker draining, then start one reassignment per partition that has a replica
/// there (targets from `plan_drain`), and move leadership off it where no other broker can
/// take the replica. A plan made from an image that moved on (stale partition epoch) is made
/// again. Repeating the call is harmless: partitions already moving are left alone, and the
/// mark keeps the owner it was set with.
async fn drain(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<(StatusCode, Json<DrainStatus>), ApiError> {
    let cluster = cluster_of(&state)?;
    // `?owner=`: who sets the mark (the operator passes its own name, to recognise its marks
    // after a restart).
    let owner = single_query_param(query.as_deref(), "owner")?.map(|o| valid_name("owner", o)).transpose()?;
    let id = broker_id(&id, &cluster.image())?;
    if !cluster.image().brokers[&id].draining {
        cluster.propose(MetadataCommand::SetBrokerDraining { broker_id: id, draining: true, owner }).await?;
    }
    let mut started = Vec::new();
    let mut blocked = Vec::new();
    for _ in 0..STALE_RETRIES {
        let plan = plan_drain(&cluster.image(), id);
        blocked = plan.blocked;
        let mut stale = false;
        for m in plan.moves {
            let cmd = MetadataCommand::ReassignPartition {
                topic: m.topic.clone(),
                partition: m.partition,
                partition_epoch: m.partition_epoch,
                target: Some(m.target),
            };
            match cluster.propose(cmd).await {
                Ok(()) => {
                    if let Some(p) = cluster.image().partition(&m.topic, m.partition) {
                        started.push(ReassignmentView::new(&m.topic, m.partition, p));
                    }
                }
                Err(ProposeError::Metadata(MetadataError::StalePartitionEpoch { .. })) => stale = true,
                Err(e) => return Err(e.into()),
            }
        }
        if !stale {
            break;
        }
    }
    // Partitions that keep a replica here: at least their leadership goes to another live
    // ISR member.
    for _ in 0..STALE_RETRIES {
        let image = cluster.image();
        let live = image.live_brokers();
        let mut stale = false;
        for b in &blocked {
            let Some(p) = image.partition(&b.topic, b.partition) else { continue };
            if p.leader != id as i64 {
                continue;
            }
            let Some(next) = p.replicas.iter().find(|r| **r != id && p.isr.contains(r) && live.contains(r)) else {
                continue;
            };
            let cmd = MetadataCommand::ChangePartition {
                topic: b.topic.clone(),
                partition: b.partition,
                partition_epoch: p.partition_epoch,
                leader: Some(*next as i64),
                isr: None,
            };
            match cluster.propose(cmd).await {
                Ok(()) => {}
                Err(ProposeError::Metadata(MetadataError::StalePartitionEpoch { .. })) => stale = true,
                Err(e) => return Err(e.into()),
            }
        }
        if !stale {
            break;
        }
    }
    let mut status = drain_view(&cluster.image(), id);
    status.started = Some(started);
    status.blocked = Some(
        blocked.into_iter().map(|b| BlockedView { topic: b.topic, partition: b.partition, reason: b.reason }).collect(),
    );
    Ok((StatusCode::ACCEPTED, Json(status)))
}

/// Clear the draining mark (the broker takes new replicas again). Reassignments already
/// started keep running; cancel them through `POST /api/v1/partitions/reassign`.
async fn undrain(State(state): State<Arc<AdminState>>, Path(id): Path<String>) -> Result<Json<DrainStatus>, ApiError> {
    let cluster = cluster_of(&state)?;
    let id = broker_id(&id, &cluster.image())?;
    cluster.propose(MetadataCommand::SetBrokerDraining { broker_id: id, draining: false, owner: None }).await?;
    Ok(Json(drain_view(&cluster.image(), id)))
}

/// The reassignment throttle: bytes per second each leader serves, in all, to replicas that
/// reassignments are adding (Kafka's `leader.replication.throttled.rate`, applied to exactly
/// the replicas `kafka-reassign-partitions --throttle` names). 0: unthrottled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSetting {
    pub bytes_per_sec: u64,
}

/// `GET /api/v1/replication/throttle` and the answer to every change of it: the cluster's own
/// value, the named holds, and the throttle in force (the lowest non-zero of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleView {
    pub bytes_per_sec: u64,
    pub holds: BTreeMap<String, u64>,
    pub effective_bytes_per_sec: u64,
}

impl ThrottleView {
    fn of(image: &MetadataImage) -> Self {
        ThrottleView {
            bytes_per_sec: image.replication_throttle_bytes_per_sec,
            holds: image.replication_throttle_holds.clone(),
            effective_bytes_per_sec: image.effective_replication_throttle(),
        }
    }
}

async fn throttle(State(state): State<Arc<AdminState>>) -> Result<Json<ThrottleView>, ApiError> {
    Ok(Json(ThrottleView::of(&cluster_of(&state)?.image())))
}

/// Set the throttle for every broker (a metadata command, so it survives restarts and
/// reaches every leader); the answer comes once it is committed and applied here.
async fn set_throttle(
    State(state): State<Arc<AdminState>>,
    ApiJson(req): ApiJson<ThrottleSetting>,
) -> Result<Json<ThrottleView>, ApiError> {
    let cluster = cluster_of(&state)?;
    cluster.propose(MetadataCommand::SetReplicationThrottle { bytes_per_sec: req.bytes_per_sec }).await?;
    Ok(Json(ThrottleView::of(&cluster.image())))
}

/// Set a named hold (`bytes_per_sec` 0 removes it, as `DELETE` does). A hold can only tighten
/// the throttle in force, never loosen what someone else set.
async fn set_hold(
    State(state): State<Arc<AdminState>>,
    Path(holder): Path<String>,
    ApiJson(req): ApiJson<ThrottleSetting>,
) -> Result<Json<ThrottleView>, ApiError> {
    let cluster = cluster_of(&state)?;
    let holder = valid_name("holder", holder)?;
    cluster.propose(MetadataCommand::SetReplicationThrottleHold { holder, bytes_per_sec: req.bytes_per_sec }).await?;
    Ok(Json(ThrottleView::of(&cluster.image())))
}

/// Remove a named hold; removing one that is not there is not an error.
async fn release_hold(
    State(state): State<Arc<AdminState>>,
    Path(holder): Path<String>,
) -> Result<Json<ThrottleView>, ApiError> {
    let cluster = cluster_of(&state)?;
    let holder = valid_name("holder", holder)?;
    if cluster.image().replication_throttle_holds.contains_key(&holder) {
        cluster.propose(MetadataCommand::SetReplicationThrottleHold { holder, bytes_per_sec: 0 }).await?;
    }
    Ok(Json(ThrottleView::of(&cluster.image())))
}
