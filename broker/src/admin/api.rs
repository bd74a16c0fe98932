//! The JSON admin API under `/api/v1`: topics (list, create, get, alter, delete), the
//! cluster (quorum and brokers) and partitions (leaders, ISR, local log offsets).
//!
//! Reads are served from this broker's metadata image. Writes go through the metadata
//! quorum ([`ClusterNode::propose`] and friends), which linearises them and returns only
//! once this broker's image includes the write, so a read after a write on the same broker
//! sees it. Every error, including malformed requests, is JSON `{"code", "message"}` with a
//! stable snake_case `code`; see `docs/admin-api.md` for the table.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::http::AdminState;
use crate::cluster::image::{
    topic_config_keys, validate_topic_configs, validate_topic_name, BrokerRecord, TopicRecord, NO_LEADER,
};
use crate::cluster::{ClusterNode, MetadataCommand, MetadataError, NodeId, ProposeError};
use crate::log::{LogManager, TopicPartition};

/// Largest partition count a topic may have through this API: a guard against a typo (or a
/// hostile request) building a multi-million-entry assignment in the metadata image.
pub const MAX_PARTITIONS: u32 = 10_000;

/// The `/api/v1` routes, to be nested under that prefix.
pub fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/topics", get(list_topics).post(create_topic))
        .route("/topics/{name}", get(get_topic).patch(alter_topic).delete(delete_topic))
        .route("/cluster", get(cluster))
        .route("/partitions", get(partitions))
        .merge(super::amqp::routes())
        .merge(super::replication::routes())
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// An error answer: `status` with the JSON body `{"code": ..., "message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

/// The error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { status, code: code.into(), message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    fn unknown_topic(name: &str) -> Self {
        MetadataError::UnknownTopic(name.to_string()).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { code: self.code, message: self.message })).into_response()
    }
}

/// The stable code of a metadata error: its serde tag (`topic_exists`, `unknown_topic`, ...).
pub fn metadata_error_code(e: &MetadataError) -> String {
    serde_json::to_value(e)
        .ok()
        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_string))
        .unwrap_or_else(|| "metadata_error".to_string())
}

impl From<MetadataError> for ApiError {
    fn from(e: MetadataError) -> Self {
        let status = match e {
            MetadataError::TopicExists(_) => StatusCode::CONFLICT,
            MetadataError::UnknownTopic(_) => StatusCode::NOT_FOUND,
            MetadataError::MetadataVersionTooLow { .. } => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, metadata_error_code(&e), e.to_string())
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::Metadata(m) => m.into(),
            ProposeError::Unavailable(_) => Self::unavailable(e.to_string()),
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such admin API endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
}

// ---------------------------------------------------------------------------------------
// Extractors whose rejections are JSON errors
// ---------------------------------------------------------------------------------------

/// A JSON request body. Unlike `axum::Json`, every rejection is an [`ApiError`]: a body that
/// is not valid JSON, has wrong types or unknown fields is 400 `bad_request`; a missing or
/// non-JSON `Content-Type` is 415 `unsupported_media_type`. Requiring `application/json`
/// also means a browser cannot send these requests cross-origin without a CORS preflight
/// (which this server does not answer), so a web page cannot forge admin writes.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ct = req.headers().get(header::CONTENT_TYPE).map(|ct| ct.to_str().unwrap_or("(not ASCII)"));
        if !ct.is_some_and(is_json_content_type) {
            let got = ct.map_or_else(|| "none".to_string(), |ct| format!("'{ct}'"));
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("the request body must be JSON with Content-Type: application/json (got {got})"),
            ));
        }
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "bad_request" };
            ApiError::new(status, code, rejection.body_text())
        })?;
        serde_json::from_slice(&body).map(ApiJson).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

fn is_json_content_type(ct: &str) -> bool {
    let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The `{name}` path segment of a topic, checked against Kafka's topic name rules.
pub struct TopicName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for TopicName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        validate_topic_name(&name)?;
        Ok(TopicName(name))
    }
}

// ---------------------------------------------------------------------------------------
// Wire types
// ---------------------------------------------------------------------------------------

/// A topic as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicView {
    pub name: String,
    pub topic_id: String,
    /// Partition count.
    pub partitions: usize,
    pub replication_factor: usize,
    /// The topic's config overrides (broker defaults are not listed).
    pub configs: BTreeMap<String, String>,
    /// Replica list per partition; the first replica is the preferred leader.
    pub assignment: Vec<Vec<NodeId>>,
}

impl From<&TopicRecord> for TopicView {
    fn from(t: &TopicRecord) -> Self {
        Self {
            name: t.name.clone(),
            topic_id: t.topic_id.clone(),
            partitions: t.partitions.len(),
            replication_factor: t.replication_factor(),
            configs: t.configs.clone(),
            assignment: t.partitions.iter().map(|p| p.replicas.clone()).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicList {
    pub topics: Vec<TopicView>,
}

/// `POST /api/v1/topics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopicRequest {
    pub name: String,
    /// Default 1 (or the length of `assignment`).
    #[serde(default)]
    pub partitions: Option<u32>,
    /// Default 1 (or the replica count of `assignment`).
    #[serde(default)]
    pub replication_factor: Option<u16>,
    /// Values may be JSON strings, numbers or booleans; they are stored as strings.
    #[serde(default)]
    pub configs: BTreeMap<String, serde_json::Value>,
    /// Explicit replica lists, one per partition.
    #[serde(default)]
    pub assignment: Option<Vec<Vec<NodeId>>>,
}

/// `PATCH /api/v1/topics/{name}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlterTopicRequest {
    /// New total partition count; it can only grow.
    #[serde(default)]
    pub partitions: Option<u32>,
    /// Config overrides to set.
    #[serde(default)]
    pub configs: Option<BTreeMap<String, serde_json::Value>>,
    /// Config overrides to remove (back to the broker default).
    #[serde(default)]
    pub delete_configs: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumView {
    pub leader: Option<NodeId>,
    pub voters: Vec<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerView {
    /// The broker as the metadata image holds it (id, addresses, rack, fenced, epoch).
    #[serde(flatten)]
    pub broker: BrokerRecord,
    /// Not fenced: the quorum leader hears its heartbeats.
    pub alive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The broker answering.
    pub node_id: NodeId,
    /// The metadata version every live broker reads (changes that need a newer one are
    /// refused until then).
    pub metadata_version: u32,
    pub quorum: QuorumView,
    pub brokers: Vec<BrokerView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionView {
    pub topic: String,
    pub partition: u32,
    pub leader: Option<NodeId>,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// An ongoing reassignment: replicas catching up to join, and replicas that leave once
    /// they have. Both empty otherwise.
    #[serde(default)]
    pub adding: Vec<NodeId>,
    #[serde(default)]
    pub removing: Vec<NodeId>,
    /// Offsets of this broker's local replica; null when it has none.
    pub log_start_offset: Option<i64>,
    pub log_end_offset: Option<i64>,
    pub high_watermark: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionList {
    pub partitions: Vec<PartitionView>,
}

// ---------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------

fn cluster_of(state: &AdminState) -> Result<&Arc<ClusterNode>, ApiError> {
    state
        .cluster()
        .ok_or_else(|| ApiError::unavailable("the broker is starting: the metadata quorum is not joined yet"))
}

fn logs_of(state: &AdminState) -> Result<&Arc<LogManager>, ApiError> {
    state.logs().ok_or_else(|| ApiError::unavailable("the broker is starting: the logs are not loaded yet"))
}

fn topic_view(cluster: &ClusterNode, name: &str) -> Result<TopicView, ApiError> {
    cluster.image().topics.get(name).map(TopicView::from).ok_or_else(|| ApiError::unknown_topic(name))
}

/// Config values as the metadata stores them: strings. Numbers and booleans are accepted
/// for convenience and written out as JSON would print them.
fn config_strings(configs: BTreeMap<String, serde_json::Value>) -> Result<BTreeMap<String, String>, ApiError> {
    configs
        .into_iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "config '{k}': value must be a string, number or boolean, got {other}"
                    )))
                }
            };
            Ok((k, s))
        })
        .collect()
}

fn check_partition_count(count: u64) -> Result<(), ApiError> {
    if count == 0 {
        return Err(MetadataError::InvalidPartitions("a topic needs at least one partition".into()).into());
    }
    if count > MAX_PARTITIONS as u64 {
        return Err(MetadataError::InvalidPartitions(format!(
            "{count} partitions is more than the {MAX_PARTITIONS} this API allows per topic"
        ))
        .into());
    }
    Ok(())
}

/// Replica placement needs registered brokers; right after start-up this broker may not
/// have registered yet, which is a transient condition, not a bad request.
fn require_live_brokers(cluster: &ClusterNode) -> Result<(), ApiError> {
    if cluster.image().live_brokers().is_empty() {
        return Err(ApiError::unavailable("no live broker is registered with the metadata quorum yet; retry shortly"));
    }
    Ok(())
}

async fn list_topics(State(state): State<Arc<AdminState>>) -> Result<Json<TopicList>, ApiError> {
    let cluster = cluster_of(&state)?;
    let topics = cluster.image().topics.values().map(TopicView::from).collect();
    Ok(Json(TopicList { topics }))
}

async fn get_topic(
    State(state): State<Arc<AdminState>>,
    TopicName(name): TopicName,
) -> Result<Json<TopicView>, ApiError> {
    Ok(Json(topic_view(cluster_of(&state)?, &name)?))
}

async fn create_topic(
    State(state): State<Arc<AdminState>>,
    ApiJson(req): ApiJson<CreateTopicRequest>,
) -> Result<Response, ApiError> {
    let cluster = cluster_of(&state)?;
    validate_topic_name(&req.name)?;
    let configs = config_strings(req.configs)?;
    validate_topic_configs(&configs)?;
    let (partitions, replication_factor) = match &req.assignment {
        Some(assignment) => {
            check_partition_count(assignment.len() as u64)?;
            if let Some(p) = req.partitions.filter(|p| *p as usize != assignment.len()) {
                return Err(MetadataError::InvalidReplicaAssignment(format!(
                    "partitions is {p} but the assignment lists {} partitions",
                    assignment.len()
                ))
                .into());
            }
            if let Some(rf) = req.replication_factor {
                if let Some(bad) = assignment.iter().find(|r| r.len() != rf as usize) {
                    return Err(MetadataError::InvalidReplicaAssignment(format!(
                        "replication_factor is {rf} but the assignment has replica list {bad:?}"
                    ))
                    .into());
                }
            }
            (assignment.len() as u32, assignment[0].len() as u16)
        }
        None => {
            let partitions = req.partitions.unwrap_or(1);
            check_partition_count(partitions as u64)?;
            let rf = req.replication_factor.unwrap_or(1);
            if rf == 0 {
                return Err(MetadataError::InvalidReplicationFactor("must be at least 1".into()).into());
            }
            (partitions, rf)
        }
    };
    if cluster.image().topics.contains_key(&req.name) {
        return Err(MetadataError::TopicExists(req.name).into());
    }
    if req.assignment.is_none() {
        require_live_brokers(cluster)?;
    }
    cluster.create_topic(&req.name, partitions, replication_factor, configs, req.assignment).await?;
    let view = topic_view(cluster, &req.name)?;
    let location = format!("/api/v1/topics/{}", view.name);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view)).into_response())
}

async fn alter_topic(
    State(state): State<Arc<AdminState>>,
    TopicName(name): TopicName,
    ApiJson(req): ApiJson<AlterTopicRequest>,
) -> Result<Json<TopicView>, ApiError> {
    let cluster = cluster_of(&state)?;
    let image = cluster.image();
    let topic = image.topics.get(&name).ok_or_else(|| ApiError::unknown_topic(&name))?;

    if let Some(total) = req.partitions {
        let current = topic.partitions.len() as u32;
        if total <= current {
            return Err(MetadataError::InvalidPartitions(format!(
                "topic '{name}' has {current} partitions and the count can only be increased; asked for {total}"
            ))
            .into());
        }
        check_partition_count(total as u64)?;
    }

    let set = config_strings(req.configs.unwrap_or_default())?;
    let delete = req.delete_configs.unwrap_or_default();
    if let Some(k) = delete.iter().find(|k| set.contains_key(*k)) {
        return Err(MetadataError::InvalidConfig(format!("config '{k}' is both set and deleted")).into());
    }
    if let Some(k) = delete.iter().find(|k| !topic_config_keys().any(|known| known == k.as_str())) {
        return Err(MetadataError::InvalidConfig(format!("unknown config key {k}")).into());
    }
    // Validate the result up front, so that a bad config fails before any write.
    let mut merged = topic.configs.clone();
    for k in &delete {
        merged.remove(k);
    }
    merged.extend(set.clone());
    validate_topic_configs(&merged)?;

    // Configs first: retrying a PATCH whose partition step failed then repeats an idempotent
    // config write, while the reverse order would make the retry fail on the partition count.
    if !set.is_empty() || !delete.is_empty() {
        cluster.propose(MetadataCommand::AlterTopicConfig { name: name.clone(), set, delete }).await?;
    }
    if let Some(total) = req.partitions {
        require_live_brokers(cluster)?;
        cluster.create_partitions(&name, total).await?;
    }
    Ok(Json(topic_view(cluster, &name)?))
}

async fn delete_topic(
    State(state): State<Arc<AdminState>>,
    TopicName(name): TopicName,
) -> Result<StatusCode, ApiError> {
    let cluster = cluster_of(&state)?;
    if !cluster.image().topics.contains_key(&name) {
        return Err(ApiError::unknown_topic(&name));
    }
    cluster.propose(MetadataCommand::DeleteTopic { name }).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn cluster(State(state): State<Arc<AdminState>>) -> Result<Json<ClusterView>, ApiError> {
    let cluster = cluster_of(&state)?;
    let (leader, voters) = cluster.quorum();
    let brokers =
        cluster.image().brokers.values().map(|b| BrokerView { broker: b.clone(), alive: !b.fenced }).collect();
    let metadata_version = cluster.image().metadata_version();
    Ok(Json(ClusterView {
        node_id: cluster.node_id(),
        metadata_version,
        quorum: QuorumView { leader, voters },
        brokers,
    }))
}

/// The value of the one query parameter an endpoint takes, `key` (decoded; the last one if
/// repeated); any other parameter is a 400.
pub(crate) fn single_query_param(query: Option<&str>, key: &str) -> Result<Option<String>, ApiError> {
    let mut found = None;
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(k)?.as_str() {
            k if k == key => found = Some(percent_decode(value)?),
            other => return Err(ApiError::bad_request(format!("unknown query parameter '{other}'"))),
        }
    }
    Ok(found)
}

/// `application/x-www-form-urlencoded` decoding of one query component.
pub(crate) fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request(format!("malformed query string component '{s}'"));
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).ok_or_else(bad)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad())
}

async fn partitions(
    State(state): State<Arc<AdminState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<PartitionList>, ApiError> {
    let cluster = cluster_of(&state)?;
    let logs = logs_of(&state)?.clone();
    let filter = single_query_param(query.as_deref(), "topic")?;
    let image = cluster.image();
    if let Some(topic) = &filter {
        validate_topic_name(topic)?;
        if !image.topics.contains_key(topic) {
            return Err(ApiError::unknown_topic(topic));
        }
    }
    let me = cluster.node_id();
    let replication = state.replication().cloned();
    // Reading offsets takes each log's lock, which maintenance (flush, cleaning) may hold for
    // a while: keep it off the async workers.
    let list = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for t in image.topics.values().filter(|t| filter.as_ref().is_none_or(|f| *f == t.name)) {
            for (i, p) in t.partitions.iter().enumerate() {
                let tp = TopicPartition::new(&t.name, i as i32);
                let local = if p.replicas.contains(&me) {
                    logs.get(&tp).map(|log| {
                        let log = log.lock().expect("log lock");
                        (log.log_start_offset(), log.log_end_offset())
                    })
                } else {
                    None
                };
                // The replica's high watermark (the leader's, as known here on a follower).
                let hw = replication.as_ref().and_then(|r| r.replica(&tp)).map(|r| r.high_watermark());
                out.push(PartitionView {
                    topic: t.name.clone(),
                    partition: i as u32,
                    leader: (p.leader != NO_LEADER).then_some(p.leader as NodeId),
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    adding: p.adding.clone(),
                    removing: p.removing.clone(),
                    log_start_offset: local.map(|(start, _)| start),
                    log_end_offset: local.map(|(_, end)| end),
                    // Before replication has looked at the replica, nothing above the log start is
                    // known to be committed (what it starts from).
                    high_watermark: local.map(|(start, _)| hw.unwrap_or(start)),
                });
            }
        }
        out
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("reading offsets: {e}")))?;
    Ok(Json(PartitionList { partitions: list }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_errors_keep_their_codes_and_statuses() {
        let cases = [
            (MetadataError::TopicExists("t".into()), 409, "topic_exists"),
            (MetadataError::UnknownTopic("t".into()), 404, "unknown_topic"),
            (MetadataError::InvalidTopicName("x".into()), 400, "invalid_topic_name"),
            (MetadataError::InvalidPartitions("x".into()), 400, "invalid_partitions"),
            (MetadataError::InvalidReplicationFactor("x".into()), 400, "invalid_replication_factor"),
            (MetadataError::InvalidReplicaAssignment("x".into()), 400, "invalid_replica_assignment"),
            (MetadataError::InvalidConfig("x".into()), 400, "invalid_config"),
            (MetadataError::UnknownBroker(7), 400, "unknown_broker"),
            (MetadataError::UnknownPartition { topic: "t".into(), partition: 1 }, 400, "unknown_partition"),
            (MetadataError::StalePartitionEpoch { given: 1, current: 2 }, 400, "stale_partition_epoch"),
            (MetadataError::InvalidPartitionChange("x".into()), 400, "invalid_partition_change"),
        ];
        for (e, status, code) in cases {
            let message = e.to_string();
            let api = ApiError::from(e);
            assert_eq!((api.status.as_u16(), api.code.as_str()), (status, code));
            assert_eq!(api.message, message);
        }
        let api = ApiError::from(ProposeError::Unavailable("no leader".into()));
        assert_eq!((api.status.as_u16(), api.code.as_str()), (503, "unavailable"));
    }

    #[test]
    fn query_strings_are_decoded_and_checked() {
        // As `GET /api/v1/partitions` reads its one parameter.
        let partitions_filter = |query| single_query_param(query, "topic");
        assert_eq!(partitions_filter(None).unwrap(), None);
        assert_eq!(partitions_filter(Some("")).unwrap(), None);
        assert_eq!(partitions_filter(Some("topic=a.b")).unwrap(), Some("a.b".into()));
        assert_eq!(partitions_filter(Some("topic=a%2Db&")).unwrap(), Some("a-b".into()));
        assert_eq!(partitions_filter(Some("topic=a+b")).unwrap(), Some("a b".into()));
        assert_eq!(partitions_filter(Some("other=1")).unwrap_err().code, "bad_request");
        assert_eq!(partitions_filter(Some("topic=%zz")).unwrap_err().code, "bad_request");
        assert_eq!(partitions_filter(Some("topic=%4")).unwrap_err().code, "bad_request");
    }

    #[test]
    fn json_content_types() {
        for ok in
            ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"]
        {
            assert!(is_json_content_type(ok), "{ok}");
        }
        for bad in ["text/plain", "application/x-www-form-urlencoded", ""] {
            assert!(!is_json_content_type(bad), "{bad}");
        }
    }

    #[test]
    fn config_values_become_strings() {
        let mut m = BTreeMap::new();
        m.insert("retention.ms".to_string(), serde_json::json!(1000));
        m.insert("cleanup.policy".to_string(), serde_json::json!("compact"));
        m.insert("unclean.leader.election.enable".to_string(), serde_json::json!(false));
        let s = config_strings(m).unwrap();
        assert_eq!(s["retention.ms"], "1000");
        assert_eq!(s["cleanup.policy"], "compact");
        assert_eq!(s["unclean.leader.election.enable"], "false");
        let mut bad = BTreeMap::new();
        bad.insert("retention.ms".to_string(), serde_json::Value::Null);
        assert_eq!(config_strings(bad).unwrap_err().code, "bad_request");
    }
}
