//! The admin API for AMQP entities: virtual hosts, exchanges, queues and bindings under
//! `/api/v1/vhosts` (see `docs/admin-api.md`). Durable entities are written through the
//! metadata quorum, like topics; non-durable ones live on the answering broker only.
//! Reads come from the answering broker's AMQP core, which follows the quorum.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::{ApiError, ApiJson};
use super::http::AdminState;
use crate::amqp::broker::{BindingInfo, ExchangeInfo, QueueInfo};
use crate::amqp::json_args::{normalize, table_from_json, table_to_json};
use crate::amqp::AmqpCore;
use crate::cluster::amqp_image::{AmqpBindingRecord, AmqpCommand, AmqpExchangeRecord, AmqpQueueRecord};
use crate::cluster::{ClusterNode, MetadataCommand, MetadataError, ProposeError};
use crate::queue::args::first_difference;
use crate::queue::QueueArgs;
use crate::routing::{headers, Destination, ExchangeKind};

/// The path name of the default exchange, whose AMQP name is empty.
const DEFAULT_EXCHANGE_PATH: &str = "amq.default";

pub fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/vhosts", get(list_vhosts))
        .route("/vhosts/{vhost}", get(get_vhost).put(put_vhost).delete(delete_vhost))
        .route("/vhosts/{vhost}/exchanges", get(list_exchanges))
        .route("/vhosts/{vhost}/exchanges/{name}", get(get_exchange).put(put_exchange).delete(delete_exchange))
        .route("/vhosts/{vhost}/queues", get(list_queues))
        .route("/vhosts/{vhost}/queues/{name}", get(get_queue).put(put_queue).delete(delete_queue))
        .route("/vhosts/{vhost}/bindings", get(list_bindings).post(create_binding).delete(delete_binding))
}

// ---------------------------------------------------------------------------------------
// Errors and checks
// ---------------------------------------------------------------------------------------

fn err(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

fn propose_error(e: ProposeError) -> ApiError {
    match e {
        ProposeError::Unavailable(_) => ApiError::unavailable(e.to_string()),
        ProposeError::Metadata(m) => {
            let text = m.to_string();
            let (status, code) = match m {
                MetadataError::UnknownVhost(_) => (StatusCode::NOT_FOUND, "unknown_vhost"),
                MetadataError::UnknownExchange(_) => (StatusCode::NOT_FOUND, "unknown_exchange"),
                MetadataError::UnknownQueue(_) => (StatusCode::NOT_FOUND, "unknown_queue"),
                MetadataError::UnknownBinding(_) => (StatusCode::NOT_FOUND, "unknown_binding"),
                MetadataError::InequivalentArguments(_) => (StatusCode::CONFLICT, "inequivalent_arguments"),
                MetadataError::AccessRefused(_) => (StatusCode::FORBIDDEN, "access_refused"),
                MetadataError::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
                _ => (StatusCode::BAD_REQUEST, "bad_request"),
            };
            err(status, code, text)
        }
    }
}

fn parts(state: &AdminState) -> Result<(Arc<ClusterNode>, Arc<AmqpCore>), ApiError> {
    let cluster = state
        .cluster()
        .cloned()
        .ok_or_else(|| ApiError::unavailable("the broker is starting: the metadata quorum is not joined yet"))?;
    let core =
        state.amqp().cloned().ok_or_else(|| ApiError::unavailable("the broker is starting: AMQP is not up yet"))?;
    Ok((cluster, core))
}

/// Commit a durable change, then bring this broker's AMQP core in line with the image.
async fn propose(cluster: &ClusterNode, core: &AmqpCore, cmd: AmqpCommand) -> Result<(), ApiError> {
    cluster.propose(MetadataCommand::Amqp(cmd)).await.map_err(propose_error)?;
    core.sync_durable(&cluster.image().amqp);
    Ok(())
}

fn check_vhost_name(v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > 255 || v.chars().any(char::is_control) {
        return Err(err(StatusCode::BAD_REQUEST, "invalid_name", format!("invalid vhost name '{v}'")));
    }
    Ok(())
}

fn check_name(kind: &str, n: &str) -> Result<(), ApiError> {
    if n.is_empty() || n.len() > 255 || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!("invalid {kind} name '{n}': 1 to 255 ASCII letters, digits, '-', '_', '.' and ':'"),
        ));
    }
    Ok(())
}

fn unknown_vhost(v: &str) -> ApiError {
    err(StatusCode::NOT_FOUND, "unknown_vhost", format!("vhost '{v}' does not exist"))
}

fn object(v: Value, what: &str) -> Result<Value, ApiError> {
    match v {
        Value::Object(_) => Ok(v),
        Value::Null => Ok(Value::Object(Default::default())),
        other => Err(ApiError::bad_request(format!("{what} must be a JSON object, got {other}"))),
    }
}

/// `?if_unused=true&if_empty=true`: the flags present and true; unknown keys are refused.
fn flags(query: Option<&str>, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
    let mut on = Vec::new();
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        if !allowed.contains(&k) {
            return Err(ApiError::bad_request(format!("unknown query parameter '{k}'")));
        }
        match v {
            "true" | "1" => on.push(k.to_string()),
            "false" | "0" => {}
            _ => return Err(ApiError::bad_request(format!("query parameter '{k}' must be true or false"))),
        }
    }
    Ok(on)
}

// ---------------------------------------------------------------------------------------
// Wire types
// ---------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct VhostView {
    name: String,
}

#[derive(Debug, Serialize)]
struct ExchangeView {
    vhost: String,
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    durable: bool,
    auto_delete: bool,
    internal: bool,
    arguments: Value,
}

impl ExchangeView {
    fn new(vhost: &str, e: &ExchangeInfo) -> Self {
        Self {
            vhost: vhost.to_string(),
            name: e.name.clone(),
            kind: e.kind.as_str(),
            durable: e.durable,
            auto_delete: e.auto_delete,
            internal: e.internal,
            arguments: table_to_json(&e.arguments),
        }
    }
}

#[derive(Debug, Serialize)]
struct QueueView {
    vhost: String,
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    durable: bool,
    auto_delete: bool,
    exclusive: bool,
    arguments: Value,
    node: u64,
    messages: u64,
    messages_ready: u64,
    messages_unacknowledged: u64,
    consumers: u64,
}

impl QueueView {
    fn new(vhost: &str, q: &QueueInfo, node: u64) -> Self {
        Self {
            vhost: vhost.to_string(),
            name: q.name.clone(),
            kind: "classic",
            durable: q.durable,
            auto_delete: q.auto_delete,
            exclusive: q.exclusive,
            arguments: table_to_json(&q.arguments),
            node,
            messages: q.ready + q.unacked,
            messages_ready: q.ready,
            messages_unacknowledged: q.unacked,
            consumers: q.consumers,
        }
    }
}

#[derive(Debug, Serialize)]
struct BindingView {
    vhost: String,
    source: String,
    destination_type: &'static str,
    destination: String,
    routing_key: String,
    arguments: Value,
}

impl BindingView {
    fn new(vhost: &str, b: &BindingInfo) -> Self {
        Self {
            vhost: vhost.to_string(),
            source: b.source.clone(),
            destination_type: b.destination.kind(),
            destination: b.destination.name().to_string(),
            routing_key: b.routing_key.clone(),
            arguments: table_to_json(&b.arguments),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutExchange {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default = "yes")]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    arguments: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutQueue {
    #[serde(default = "yes")]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    arguments: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BindingRequest {
    source: String,
    destination: String,
    #[serde(default = "queue_type")]
    destination_type: String,
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    arguments: Value,
}

fn yes() -> bool {
    true
}
fn queue_type() -> String {
    "queue".to_string()
}

fn created(location: String, body: impl Serialize) -> Response {
    (StatusCode::CREATED, [(header::LOCATION, location)], Json(body)).into_response()
}

// ---------------------------------------------------------------------------------------
// Vhosts
// ---------------------------------------------------------------------------------------

async fn list_vhosts(State(state): State<Arc<AdminState>>) -> Result<Json<Value>, ApiError> {
    let (cluster, _) = parts(&state)?;
    let vhosts: Vec<VhostView> =
        cluster.image().amqp.vhost_names().into_iter().map(|name| VhostView { name }).collect();
    Ok(Json(serde_json::json!({ "vhosts": vhosts })))
}

async fn get_vhost(
    State(state): State<Arc<AdminState>>,
    Path(vhost): Path<String>,
) -> Result<Json<VhostView>, ApiError> {
    let (cluster, _) = parts(&state)?;
    check_vhost_name(&vhost)?;
    if cluster.image().amqp.vhost(&vhost).is_none() {
        return Err(unknown_vhost(&vhost));
    }
    Ok(Json(VhostView { name: vhost }))
}

async fn put_vhost(
    State(state): State<Arc<AdminState>>,
    Path(vhost): Path<String>,
    ApiJson(_): ApiJson<Empty>,
) -> Result<Response, ApiError> {
    let (cluster, core) = parts(&state)?;
    check_vhost_name(&vhost)?;
    if cluster.image().amqp.vhost(&vhost).is_some() {
        return Ok(Json(VhostView { name: vhost }).into_response());
    }
    propose(&cluster, &core, AmqpCommand::DeclareVhost { name: vhost.clone() }).await?;
    Ok(created(format!("/api/v1/vhosts/{}", encode(&vhost)), VhostView { name: vhost }))
}

async fn delete_vhost(State(state): State<Arc<AdminState>>, Path(vhost): Path<String>) -> Result<StatusCode, ApiError> {
    let (cluster, core) = parts(&state)?;
    check_vhost_name(&vhost)?;
    propose(&cluster, &core, AmqpCommand::DeleteVhost { name: vhost }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Percent-encode a path segment (for Location headers).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Exchanges
// ---------------------------------------------------------------------------------------

fn exchange_name(path: &str) -> Result<String, ApiError> {
    if path == DEFAULT_EXCHANGE_PATH {
        return Ok(String::new());
    }
    check_name("exchange", path)?;
    Ok(path.to_string())
}

fn find_exchange(core: &AmqpCore, vhost: &str, name: &str) -> Result<Option<ExchangeInfo>, ApiError> {
    let all = core.exchanges(vhost).ok_or_else(|| unknown_vhost(vhost))?;
    Ok(all.into_iter().find(|e| e.name == name))
}

fn no_exchange(vhost: &str, name: &str) -> ApiError {
    err(StatusCode::NOT_FOUND, "unknown_exchange", format!("no exchange '{name}' in vhost '{vhost}'"))
}

async fn list_exchanges(
    State(state): State<Arc<AdminState>>,
    Path(vhost): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, core) = parts(&state)?;
    let list = core.exchanges(&vhost).ok_or_else(|| unknown_vhost(&vhost))?;
    let views: Vec<ExchangeView> = list.iter().map(|e| ExchangeView::new(&vhost, e)).collect();
    Ok(Json(serde_json::json!({ "exchanges": views })))
}

async fn get_exchange(
    State(state): State<Arc<AdminState>>,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<ExchangeView>, ApiError> {
    let (_, core) = parts(&state)?;
    let name = exchange_name(&name)?;
    let e = find_exchange(&core, &vhost, &name)?.ok_or_else(|| no_exchange(&vhost, &name))?;
    Ok(Json(ExchangeView::new(&vhost, &e)))
}

async fn put_exchange(
    State(state): State<Arc<AdminState>>,
    Path((vhost, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<PutExchange>,
) -> Result<Response, ApiError> {
    let (cluster, core) = parts(&state)?;
    let name = exchange_name(&name)?;
    if name.is_empty() {
        return Err(err(StatusCode::FORBIDDEN, "access_refused", "operation not permitted on the default exchange"));
    }
    let kind = ExchangeKind::parse(&req.kind).ok_or_else(|| {
        err(StatusCode::BAD_REQUEST, "invalid_arguments", format!("unknown exchange type '{}'", req.kind))
    })?;
    let arguments = object(req.arguments, "arguments")?;
    if arguments.get("alternate-exchange").is_some_and(|v| !v.is_string()) {
        return Err(err(StatusCode::BAD_REQUEST, "invalid_arguments", "alternate-exchange must be a string"));
    }
    let table = table_from_json(&arguments);
    if let Some(e) = find_exchange(&core, &vhost, &name)? {
        let same = e.kind == kind
            && e.durable == req.durable
            && e.auto_delete == req.auto_delete
            && e.internal == req.internal
            && table_to_json(&e.arguments) == arguments;
        if !same {
            return Err(err(
                StatusCode::CONFLICT,
                "inequivalent_arguments",
                format!("exchange '{name}' in vhost '{vhost}' exists with other properties: {}", describe_exchange(&e)),
            ));
        }
        return Ok(Json(ExchangeView::new(&vhost, &e)).into_response());
    }
    if name.starts_with("amq.") {
        return Err(err(
            StatusCode::FORBIDDEN,
            "access_refused",
            format!("exchange name '{name}' contains reserved prefix 'amq.*'"),
        ));
    }
    let info = ExchangeInfo {
        name: name.clone(),
        kind,
        durable: req.durable,
        auto_delete: req.auto_delete,
        internal: req.internal,
        arguments: table,
        bindings_as_source: 0,
    };
    if req.durable {
        let exchange = AmqpExchangeRecord {
            name: name.clone(),
            kind: kind.as_str().to_string(),
            auto_delete: req.auto_delete,
            internal: req.internal,
            arguments: arguments.clone(),
        };
        propose(&cluster, &core, AmqpCommand::DeclareExchange { vhost: vhost.clone(), exchange }).await?;
    } else {
        core.declare_exchange_local(&vhost, &info);
    }
    let e = find_exchange(&core, &vhost, &name)?.unwrap_or(info);
    Ok(created(format!("/api/v1/vhosts/{}/exchanges/{}", encode(&vhost), encode(&name)), ExchangeView::new(&vhost, &e)))
}

fn describe_exchange(e: &ExchangeInfo) -> String {
    format!(
        "type {}, durable {}, auto_delete {}, internal {}, arguments {}",
        e.kind.as_str(),
        e.durable,
        e.auto_delete,
        e.internal,
        table_to_json(&e.arguments)
    )
}

async fn delete_exchange(
    State(state): State<Arc<AdminState>>,
    Path((vhost, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, ApiError> {
    let (cluster, core) = parts(&state)?;
    let name = exchange_name(&name)?;
    let flags = flags(query.as_deref(), &["if_unused"])?;
    let e = find_exchange(&core, &vhost, &name)?.ok_or_else(|| no_exchange(&vhost, &name))?;
    if name.is_empty() || crate::cluster::amqp_image::STANDARD_EXCHANGES.iter().any(|(n, _)| *n == name) {
        return Err(err(StatusCode::FORBIDDEN, "access_refused", format!("exchange '{name}' cannot be deleted")));
    }
    if flags.iter().any(|f| f == "if_unused") && e.bindings_as_source > 0 {
        return Err(err(StatusCode::CONFLICT, "in_use", format!("exchange '{name}' in vhost '{vhost}' in use")));
    }
    if e.durable {
        propose(&cluster, &core, AmqpCommand::DeleteExchange { vhost, name }).await?;
    } else {
        core.delete_exchange_local(&vhost, &name);
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------
// Queues
// ---------------------------------------------------------------------------------------

fn find_queue(core: &AmqpCore, vhost: &str, name: &str) -> Result<Option<QueueInfo>, ApiError> {
    let all = core.queues(vhost).ok_or_else(|| unknown_vhost(vhost))?;
    Ok(all.into_iter().find(|q| q.name == name))
}

fn no_queue(vhost: &str, name: &str) -> ApiError {
    err(StatusCode::NOT_FOUND, "unknown_queue", format!("no queue '{name}' in vhost '{vhost}'"))
}

/// The broker hosting a queue: the declaring broker for durable queues, this one otherwise.
fn queue_node(cluster: &ClusterNode, vhost: &str, name: &str) -> u64 {
    cluster
        .image()
        .amqp
        .vhost(vhost)
        .and_then(|v| v.queues.get(name).map(|q| q.node))
        .unwrap_or_else(|| cluster.node_id())
}

async fn list_queues(State(state): State<Arc<AdminState>>, Path(vhost): Path<String>) -> Result<Json<Value>, ApiError> {
    let (cluster, core) = parts(&state)?;
    let list = core.queues(&vhost).ok_or_else(|| unknown_vhost(&vhost))?;
    let views: Vec<QueueView> =
        list.iter().map(|q| QueueView::new(&vhost, q, queue_node(&cluster, &vhost, &q.name))).collect();
    Ok(Json(serde_json::json!({ "queues": views })))
}

async fn get_queue(
    State(state): State<Arc<AdminState>>,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<QueueView>, ApiError> {
    let (cluster, core) = parts(&state)?;
    check_name("queue", &name)?;
    let q = find_queue(&core, &vhost, &name)?.ok_or_else(|| no_queue(&vhost, &name))?;
    Ok(Json(QueueView::new(&vhost, &q, queue_node(&cluster, &vhost, &name))))
}

async fn put_queue(
    State(state): State<Arc<AdminState>>,
    Path((vhost, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<PutQueue>,
) -> Result<Response, ApiError> {
    let (cluster, core) = parts(&state)?;
    check_name("queue", &name)?;
    let arguments = object(req.arguments, "arguments")?;
    let table = table_from_json(&arguments);
    QueueArgs::parse(&table, &name, &vhost).map_err(|e| err(StatusCode::BAD_REQUEST, "invalid_arguments", e))?;
    if let Some(q) = find_queue(&core, &vhost, &name)? {
        if q.exclusive {
            return Err(err(
                StatusCode::CONFLICT,
                "resource_locked",
                format!("queue '{name}' in vhost '{vhost}' is exclusive to an AMQP connection"),
            ));
        }
        let diff = if q.durable != req.durable {
            Some("durable")
        } else if q.auto_delete != req.auto_delete {
            Some("auto_delete")
        } else {
            first_difference(&q.arguments, &table)
        };
        if let Some(d) = diff {
            return Err(err(
                StatusCode::CONFLICT,
                "inequivalent_arguments",
                format!("queue '{name}' in vhost '{vhost}' exists with a different '{d}'"),
            ));
        }
        return Ok(Json(QueueView::new(&vhost, &q, queue_node(&cluster, &vhost, &name))).into_response());
    }
    if name.starts_with("amq.") {
        return Err(err(
            StatusCode::FORBIDDEN,
            "access_refused",
            format!("queue name '{name}' contains reserved prefix 'amq.*'"),
        ));
    }
    if req.durable {
        let queue =
            AmqpQueueRecord { name: name.clone(), auto_delete: req.auto_delete, arguments, node: cluster.node_id() };
        propose(&cluster, &core, AmqpCommand::DeclareQueue { vhost: vhost.clone(), queue }).await?;
    } else {
        core.declare_queue_local(&vhost, &name, req.auto_delete, &table)
            .map_err(|e| err(StatusCode::BAD_REQUEST, "invalid_arguments", e))?;
    }
    let q = find_queue(&core, &vhost, &name)?.ok_or_else(|| no_queue(&vhost, &name))?;
    Ok(created(
        format!("/api/v1/vhosts/{}/queues/{}", encode(&vhost), encode(&name)),
        QueueView::new(&vhost, &q, queue_node(&cluster, &vhost, &name)),
    ))
}

async fn delete_queue(
    State(state): State<Arc<AdminState>>,
    Path((vhost, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, ApiError> {
    let (cluster, core) = parts(&state)?;
    check_name("queue", &name)?;
    let flags = flags(query.as_deref(), &["if_unused", "if_empty"])?;
    let q = find_queue(&core, &vhost, &name)?.ok_or_else(|| no_queue(&vhost, &name))?;
    if q.exclusive {
        return Err(err(
            StatusCode::CONFLICT,
            "resource_locked",
            format!("queue '{name}' is exclusive to an AMQP connection"),
        ));
    }
    if flags.iter().any(|f| f == "if_unused") && q.consumers > 0 {
        return Err(err(StatusCode::CONFLICT, "in_use", format!("queue '{name}' in vhost '{vhost}' has consumers")));
    }
    if flags.iter().any(|f| f == "if_empty") && q.ready > 0 {
        return Err(err(StatusCode::CONFLICT, "not_empty", format!("queue '{name}' in vhost '{vhost}' is not empty")));
    }
    if q.durable {
        propose(&cluster, &core, AmqpCommand::DeleteQueue { vhost, name }).await?;
    } else {
        core.delete_queue_local(&vhost, &name);
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------
// Bindings
// ---------------------------------------------------------------------------------------

fn binding_filter(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !["source", "destination", "destination_type"].contains(&k) {
            return Err(ApiError::bad_request(format!("unknown query parameter '{k}'")));
        }
        out.push((k.to_string(), super::api::percent_decode(v)?));
    }
    Ok(out)
}

async fn list_bindings(
    State(state): State<Arc<AdminState>>,
    Path(vhost): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let (_, core) = parts(&state)?;
    let filter = binding_filter(query.as_deref())?;
    let list = core.bindings(&vhost).ok_or_else(|| unknown_vhost(&vhost))?;
    let views: Vec<BindingView> = list
        .iter()
        .filter(|b| {
            filter.iter().all(|(k, v)| match k.as_str() {
                "source" => b.source == *v,
                "destination" => b.destination.name() == v,
                _ => b.destination.kind() == v,
            })
        })
        .map(|b| BindingView::new(&vhost, b))
        .collect();
    Ok(Json(serde_json::json!({ "bindings": views })))
}

/// Check a binding request against what exists; the binding and whether it is durable.
fn resolve_binding(core: &AmqpCore, vhost: &str, req: BindingRequest) -> Result<(BindingInfo, bool), ApiError> {
    if req.source.is_empty() || req.source == DEFAULT_EXCHANGE_PATH {
        return Err(err(StatusCode::FORBIDDEN, "access_refused", "the default exchange cannot be bound"));
    }
    check_name("exchange", &req.source)?;
    check_name(&req.destination_type, &req.destination)?;
    let arguments = object(req.arguments, "arguments")?;
    let source = find_exchange(core, vhost, &req.source)?.ok_or_else(|| no_exchange(vhost, &req.source))?;
    let (destination, dest_durable) = match req.destination_type.as_str() {
        "queue" => {
            let q = find_queue(core, vhost, &req.destination)?.ok_or_else(|| no_queue(vhost, &req.destination))?;
            (Destination::Queue(q.name), q.durable && !q.exclusive)
        }
        "exchange" => {
            let e =
                find_exchange(core, vhost, &req.destination)?.ok_or_else(|| no_exchange(vhost, &req.destination))?;
            (Destination::Exchange(e.name), e.durable)
        }
        other => {
            return Err(ApiError::bad_request(format!("destination_type must be 'queue' or 'exchange', not '{other}'")))
        }
    };
    let table = normalize(&table_from_json(&arguments));
    if source.kind == ExchangeKind::Headers {
        headers::x_match(&table).map_err(|e| err(StatusCode::BAD_REQUEST, "invalid_arguments", e))?;
    }
    let durable = source.durable && dest_durable;
    Ok((BindingInfo { source: source.name, destination, routing_key: req.routing_key, arguments: table }, durable))
}

fn binding_record(b: &BindingInfo) -> AmqpBindingRecord {
    AmqpBindingRecord {
        source: b.source.clone(),
        destination_type: b.destination.kind().to_string(),
        destination: b.destination.name().to_string(),
        routing_key: b.routing_key.clone(),
        arguments: table_to_json(&b.arguments),
    }
}

fn binding_exists(core: &AmqpCore, vhost: &str, b: &BindingInfo) -> bool {
    core.bindings(vhost).is_some_and(|all| {
        all.iter().any(|x| {
            x.source == b.source
                && x.destination == b.destination
                && x.routing_key == b.routing_key
                && normalize(&x.arguments) == b.arguments
        })
    })
}

async fn create_binding(
    State(state): State<Arc<AdminState>>,
    Path(vhost): Path<String>,
    ApiJson(req): ApiJson<BindingRequest>,
) -> Result<Response, ApiError> {
    let (cluster, core) = parts(&state)?;
    let (binding, durable) = resolve_binding(&core, &vhost, req)?;
    if binding_exists(&core, &vhost, &binding) {
        return Ok(Json(BindingView::new(&vhost, &binding)).into_response());
    }
    if durable {
        propose(&cluster, &core, AmqpCommand::Bind { vhost: vhost.clone(), binding: binding_record(&binding) }).await?;
    } else {
        core.bind_local(&vhost, &binding, true);
    }
    Ok((StatusCode::CREATED, Json(BindingView::new(&vhost, &binding))).into_response())
}

async fn delete_binding(
    State(state): State<Arc<AdminState>>,
    Path(vhost): Path<String>,
    ApiJson(req): ApiJson<BindingRequest>,
) -> Result<StatusCode, ApiError> {
    let (cluster, core) = parts(&state)?;
    let (binding, durable) = resolve_binding(&core, &vhost, req)?;
    if !binding_exists(&core, &vhost, &binding) {
        return Err(err(StatusCode::NOT_FOUND, "unknown_binding", "no such binding"));
    }
    if durable {
        propose(&cluster, &core, AmqpCommand::Unbind { vhost, binding: binding_record(&binding) }).await?;
    } else {
        core.bind_local(&vhost, &binding, false);
    }
    Ok(StatusCode::NO_CONTENT)
}
