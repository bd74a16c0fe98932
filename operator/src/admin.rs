//! Client of the broker's JSON admin API (`docs/admin-api.md`): topics, AMQP exchanges, queues
//! and bindings. [`BrokerAdmin`] is the seam the reconcilers use; [`HttpAdmin`] speaks HTTP/1.1
//! to a real broker, and tests substitute their own implementation.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

/// An error from the admin API, or from reaching it.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum AdminError {
    /// The broker answered with an error body `{"code", "message"}`.
    #[error("broker refused ({status} {code}): {message}")]
    Api { status: u16, code: String, message: String },
    /// No answer: connection refused, timeout, bad URL.
    #[error("broker admin API unreachable: {0}")]
    Unreachable(String),
    /// An answer that is not the documented JSON.
    #[error("unexpected answer from the broker admin API: {0}")]
    Protocol(String),
}

impl AdminError {
    /// The stable error code, when the broker gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AdminError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether retrying later may succeed without a spec change (broker starting, no quorum,
    /// network), as opposed to a refusal of the request itself.
    pub fn is_transient(&self) -> bool {
        match self {
            AdminError::Api { status, .. } => *status == 503 || *status >= 500,
            AdminError::Unreachable(_) => true,
            AdminError::Protocol(_) => false,
        }
    }

    /// A short CamelCase reason for a condition: `Unavailable`, `Unreachable` or the code
    /// (`invalid_config` → `InvalidConfig`).
    pub fn reason(&self) -> String {
        match self {
            AdminError::Api { code, .. } => camel_case(code),
            AdminError::Unreachable(_) => "BrokerUnreachable".to_string(),
            AdminError::Protocol(_) => "BrokerProtocolError".to_string(),
        }
    }
}

fn camel_case(code: &str) -> String {
    code.split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// A topic as the broker shows it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct TopicInfo {
    pub name: String,
    pub topic_id: String,
    pub partitions: i32,
    pub replication_factor: i32,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    #[serde(default)]
    pub assignment: Vec<Vec<i32>>,
}

/// A partition as `GET /api/v1/partitions` shows it (the fields the rebalancer reads).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PartitionInfo {
    pub topic: String,
    pub partition: i32,
    pub leader: Option<i32>,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// A reassignment in progress: replicas catching up, and replicas that leave when it ends.
    #[serde(default)]
    pub adding: Vec<i32>,
    #[serde(default)]
    pub removing: Vec<i32>,
}

impl PartitionInfo {
    /// A reassignment of this partition is in progress.
    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// A reassignment that changes the replica count (a new replication factor), not one
    /// that only swaps brokers (a rebalance or a drain).
    pub fn resizing(&self) -> bool {
        self.adding.len() != self.removing.len()
    }
}

/// A registered broker as `GET /api/v1/cluster` shows it (the fields the rebalancer reads).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClusterBroker {
    pub id: i32,
    #[serde(default)]
    pub alive: bool,
    #[serde(default)]
    pub draining: bool,
    /// Who set the draining mark, if whoever did named itself.
    #[serde(default)]
    pub draining_owner: Option<String>,
    /// The broker's `--rack`, if it has one.
    #[serde(default)]
    pub rack: Option<String>,
}

/// One partition's answer from `POST /api/v1/partitions/reassign` or `.../elect-preferred`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PartitionOutcome {
    pub topic: String,
    pub partition: i32,
    #[serde(default)]
    pub outcome: String,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Deserialize)]
struct Results {
    results: Vec<PartitionOutcome>,
}

/// `GET /api/v1/replication/throttle`: the cluster's own throttle, the named holds on it and
/// the throttle in force (bytes per second, 0: none).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ThrottleView {
    pub bytes_per_sec: u64,
    #[serde(default)]
    pub holds: BTreeMap<String, u64>,
    #[serde(default)]
    pub effective_bytes_per_sec: u64,
}

/// `POST /api/v1/brokers/{id}/drain`'s answer (the fields the rebalancer reads).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DrainStatus {
    pub broker: i32,
    pub done: bool,
    /// The reassignments this call started.
    #[serde(default)]
    pub started: Vec<Value>,
    #[serde(default)]
    pub blocked: Vec<Value>,
}

/// Body of `POST /api/v1/topics`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
    pub configs: BTreeMap<String, String>,
}

/// Body of `PATCH /api/v1/topics/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TopicPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delete_configs: Vec<String>,
}

impl TopicPatch {
    pub fn is_empty(&self) -> bool {
        self.partitions.is_none() && self.configs.is_empty() && self.delete_configs.is_empty()
    }
}

/// An exchange as the broker shows it (and, without `vhost`/`name`, the `PUT` body).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ExchangeInfo {
    #[serde(rename = "type")]
    pub exchange_type: String,
    pub durable: bool,
    pub auto_delete: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub arguments: BTreeMap<String, Value>,
}

/// A queue as the broker shows it; the `PUT` body is [`QueueDeclare`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QueueInfo {
    #[serde(rename = "type", default)]
    pub queue_type: Option<String>,
    pub durable: bool,
    pub auto_delete: bool,
    #[serde(default)]
    pub arguments: BTreeMap<String, Value>,
    #[serde(default)]
    pub messages: Option<u64>,
    #[serde(default)]
    pub consumers: Option<u64>,
}

/// Body of `PUT /api/v1/vhosts/{vhost}/queues/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueDeclare {
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: BTreeMap<String, Value>,
}

/// A binding, identified by all of its fields (the `POST`/`DELETE` body).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct BindingInfo {
    pub source: String,
    pub destination_type: String,
    pub destination: String,
    pub routing_key: String,
    #[serde(default)]
    pub arguments: BTreeMap<String, Value>,
}

/// Whether a declare created the object or found an equivalent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    Created,
    Existed,
}

/// Guards of a queue deletion (`?if_empty=true`, `?if_unused=true`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteGuards {
    pub if_empty: bool,
    pub if_unused: bool,
}

/// The admin operations the operator needs. `Ok(None)` from a getter means 404.
#[async_trait]
pub trait BrokerAdmin: Send + Sync {
    async fn get_topic(&self, name: &str) -> Result<Option<TopicInfo>, AdminError>;
    async fn create_topic(&self, topic: &NewTopic) -> Result<TopicInfo, AdminError>;
    async fn patch_topic(&self, name: &str, patch: &TopicPatch) -> Result<TopicInfo, AdminError>;
    /// `Ok(false)` when the topic did not exist.
    async fn delete_topic(&self, name: &str) -> Result<bool, AdminError>;

    async fn put_vhost(&self, vhost: &str) -> Result<(), AdminError>;

    async fn get_exchange(&self, vhost: &str, name: &str) -> Result<Option<ExchangeInfo>, AdminError>;
    async fn put_exchange(&self, vhost: &str, name: &str, decl: &ExchangeInfo) -> Result<Declared, AdminError>;
    async fn delete_exchange(&self, vhost: &str, name: &str) -> Result<bool, AdminError>;

    async fn get_queue(&self, vhost: &str, name: &str) -> Result<Option<QueueInfo>, AdminError>;
    async fn put_queue(&self, vhost: &str, name: &str, decl: &QueueDeclare) -> Result<Declared, AdminError>;
    async fn delete_queue(&self, vhost: &str, name: &str, guards: DeleteGuards) -> Result<bool, AdminError>;

    async fn list_bindings(&self, vhost: &str, source: &str) -> Result<Vec<BindingInfo>, AdminError>;
    async fn create_binding(&self, vhost: &str, binding: &BindingInfo) -> Result<Declared, AdminError>;
    async fn delete_binding(&self, vhost: &str, binding: &BindingInfo) -> Result<bool, AdminError>;

    /// Every partition's replicas, leader, ISR and reassignment in progress. Only a change of
    /// a topic's replication factor needs it; an admin without it says so.
    async fn list_partitions(&self) -> Result<Vec<PartitionInfo>, AdminError> {
        Err(AdminError::Protocol("this admin does not list partitions".into()))
    }
    /// The partitions of one topic, as `list_partitions` shows them.
    async fn topic_partitions(&self, name: &str) -> Result<Vec<PartitionInfo>, AdminError> {
        Ok(self.list_partitions().await?.into_iter().filter(|p| p.topic == name).collect())
    }
    /// The registered brokers (alive, draining).
    async fn list_brokers(&self) -> Result<Vec<ClusterBroker>, AdminError> {
        Err(AdminError::Protocol("this admin does not list brokers".into()))
    }
    /// Start reassignments to these `(topic, partition, replicas)` targets.
    async fn reassign(&self, _targets: &[(String, i32, Vec<i32>)]) -> Result<Vec<PartitionOutcome>, AdminError> {
        Err(AdminError::Protocol("this admin does not reassign partitions".into()))
    }
    /// Before starting moves: hold the reassignment throttle under `holder` at the rate the
    /// operator's moves run at. An admin without such a rate holds nothing.
    async fn hold_move_throttle(&self, _holder: &str) -> Result<(), AdminError> {
        Ok(())
    }
    /// If `holder` holds the throttle: release the hold once no partition of the cluster is
    /// moving, and return the partitions still moving. Without a hold, nothing is listed.
    async fn settle_move_throttle(&self, _holder: &str) -> Result<Vec<PartitionInfo>, AdminError> {
        Ok(Vec::new())
    }
}

/// Characters escaped in a path segment: everything but unreserved ones (`/` becomes `%2F`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// [`BrokerAdmin`] over HTTP/1.1 to one broker's admin listener, e.g. `http://weir.ns.svc:9644`.
#[derive(Clone)]
pub struct HttpAdmin {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    /// What the operator's own moves hold the reassignment throttle at (0: no hold), for
    /// `BrokerAdmin::hold_move_throttle`.
    move_throttle: u64,
}

impl HttpAdmin {
    /// `base` is the scheme, host and port, without a trailing `/api/v1`.
    pub fn new(base: impl Into<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        HttpAdmin {
            base: base.into().trim_end_matches('/').to_string(),
            client,
            timeout: Duration::from_secs(30),
            move_throttle: 0,
        }
    }

    /// Hold the reassignment throttle at `bytes_per_sec` while moves this admin's callers
    /// start run (`--rebalance-throttle-bytes-per-sec`; 0: no hold).
    pub fn with_move_throttle(mut self, bytes_per_sec: u64) -> Self {
        self.move_throttle = bytes_per_sec;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /api/v1/partitions`: every partition's replicas, leader and ISR.
    pub async fn list_partitions(&self) -> Result<Vec<PartitionInfo>, AdminError> {
        self.partitions("/partitions").await
    }

    async fn partitions(&self, path: &str) -> Result<Vec<PartitionInfo>, AdminError> {
        #[derive(Deserialize)]
        struct List {
            partitions: Vec<PartitionInfo>,
        }
        let (status, body) = self.call(Method::GET, path, None).await?;
        match status {
            StatusCode::OK => Self::parse::<List>(&body).map(|l| l.partitions),
            _ => Err(Self::error(status, &body)),
        }
    }

    /// `GET /api/v1/topics`.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>, AdminError> {
        #[derive(Deserialize)]
        struct List {
            topics: Vec<TopicInfo>,
        }
        let (status, body) = self.call(Method::GET, "/topics", None).await?;
        match status {
            StatusCode::OK => Self::parse::<List>(&body).map(|l| l.topics),
            _ => Err(Self::error(status, &body)),
        }
    }

    /// `GET /api/v1/cluster`: the registered brokers.
    pub async fn list_brokers(&self) -> Result<Vec<ClusterBroker>, AdminError> {
        #[derive(Deserialize)]
        struct Cluster {
            brokers: Vec<ClusterBroker>,
        }
        let (status, body) = self.call(Method::GET, "/cluster", None).await?;
        match status {
            StatusCode::OK => Self::parse::<Cluster>(&body).map(|c| c.brokers),
            _ => Err(Self::error(status, &body)),
        }
    }

    /// `POST /api/v1/partitions/reassign`: start (or replace) reassignments to these replica
    /// lists, all checked before any starts. Answers once they are committed, not moved.
    pub async fn reassign(&self, targets: &[(String, i32, Vec<i32>)]) -> Result<Vec<PartitionOutcome>, AdminError> {
        let partitions: Vec<Value> = targets
            .iter()
            .map(|(topic, partition, replicas)| {
                serde_json::json!({"topic": topic, "partition": partition, "replicas": replicas})
            })
            .collect();
        let body = serde_json::json!({ "partitions": partitions });
        let (status, body) = self.call(Method::POST, "/partitions/reassign", Some(&body)).await?;
        match status {
            StatusCode::ACCEPTED | StatusCode::OK => Self::parse::<Results>(&body).map(|r| r.results),
            _ => Err(Self::error(status, &body)),
        }
    }

    /// `POST /api/v1/partitions/elect-preferred` for some partitions of one topic.
    pub async fn elect_preferred(&self, topic: &str, partitions: &[i32]) -> Result<Vec<PartitionOutcome>, AdminError> {
        let body = serde_json::json!({"topic": topic, "partitions": partitions});
        let (status, body) = self.call(Method::POST, "/partitions/elect-preferred", Some(&body)).await?;
        match status {
            StatusCode::OK => Self::parse::<Results>(&body).map(|r| r.results),
            _ => Err(Self::error(status, &body)),
        }
    }

    /// `POST /api/v1/brokers/{id}/drain`: mark it draining and move its replicas off it
    /// (harmless to repeat). `owner` is recorded with the mark when this call sets it.
    pub async fn drain(&self, broker: i32, owner: Option<&str>) -> Result<DrainStatus, AdminError> {
        let query = owner.map(|o| format!("?owner={}", seg(o))).unwrap_or_default();
        let (status, body) =
            self.call(Method::POST, &format!("/brokers/{broker}/drain{query}"), Some(&serde_json::json!({}))).await?;
        match status {
            StatusCode::ACCEPTED | StatusCode::OK => Self::parse(&body),
            _ => Err(Self::error(status, &body)),
        }
    }

    /// `DELETE /api/v1/brokers/{id}/drain`: clear the draining mark.
    pub async fn undrain(&self, broker: i32) -> Result<DrainStatus, AdminError> {
        let (status, body) = self.call(Method::DELETE, &format!("/brokers/{broker}/drain"), None).await?;
        match status {
            StatusCode::OK => Self::parse(&body),
            _ => Err(Self::error(status, &body)),
        }
    }

    /// `GET /api/v1/replication/throttle`, whole.
    pub async fn throttle_view(&self) -> Result<ThrottleView, AdminError> {
        let (status, body) = self.call(Method::GET, "/replication/throttle", None).await?;
        match status {
            StatusCode::OK => Self::parse(&body),
            _ => Err(Self::error(status, &body)),
        }
    }

    /// `PUT /api/v1/replication/throttle/holds/{holder}`: hold the throttle at most at
    /// `bytes_per_sec` until released.
    pub async fn hold_throttle(&self, holder: &str, bytes_per_sec: u64) -> Result<(), AdminError> {
        let body = serde_json::json!({ "bytes_per_sec": bytes_per_sec });
        let path = format!("/replication/throttle/holds/{}", seg(holder));
        let (status, body) = self.call(Method::PUT, &path, Some(&body)).await?;
        match status {
            StatusCode::OK => Ok(()),
            _ => Err(Self::error(status, &body)),
        }
    }

    /// Hold the throttle under `holder` at `bytes_per_sec` before moves start (0: nothing to
    /// hold), unless it is held there already.
    pub async fn hold_throttle_for_moves(&self, holder: &str, bytes_per_sec: u64) -> Result<(), AdminError> {
        if bytes_per_sec == 0 {
            return Ok(());
        }
        if self.throttle_view().await?.holds.get(holder) == Some(&bytes_per_sec) {
            return Ok(());
        }
        match self.hold_throttle(holder, bytes_per_sec).await {
            // Brokers mid-upgrade (some still on a binary without holds) cannot take one yet;
            // a move that a scale-down or a Topic needs goes on unthrottled rather than waiting.
            Err(e) if matches!(e.code(), Some("metadata_version_too_low" | "not_found")) => {
                tracing::warn!(holder, error = %e, "cannot hold the reassignment throttle yet; moving without it");
                Ok(())
            }
            other => other,
        }
    }

    /// Release `holder`'s hold if there is one (also one an earlier operator left, stopped
    /// mid-move or run with another rate).
    pub async fn release_throttle_hold_if_held(&self, holder: &str) -> Result<(), AdminError> {
        if self.throttle_view().await?.holds.contains_key(holder) {
            self.release_throttle_hold(holder).await?;
        }
        Ok(())
    }

    /// `DELETE /api/v1/replication/throttle/holds/{holder}`.
    pub async fn release_throttle_hold(&self, holder: &str) -> Result<(), AdminError> {
        let path = format!("/replication/throttle/holds/{}", seg(holder));
        let (status, body) = self.call(Method::DELETE, &path, None).await?;
        match status {
            StatusCode::OK => Ok(()),
            _ => Err(Self::error(status, &body)),
        }
    }

    /// `PUT /api/v1/replication/throttle`: set the reassignment throttle for every broker.
    pub async fn set_replication_throttle(&self, bytes_per_sec: u64) -> Result<(), AdminError> {
        let body = serde_json::json!({ "bytes_per_sec": bytes_per_sec });
        let (status, body) = self.call(Method::PUT, "/replication/throttle", Some(&body)).await?;
        match status {
            StatusCode::OK => Ok(()),
            _ => Err(Self::error(status, &body)),
        }
    }

    /// Whether the broker answers `/readyz` with 200 (registered with the metadata quorum).
    pub async fn readyz(&self) -> Result<bool, AdminError> {
        let uri = format!("{}/readyz", self.base);
        let req =
            Request::get(&uri).body(Full::new(Bytes::new())).map_err(|e| AdminError::Unreachable(e.to_string()))?;
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| AdminError::Unreachable(format!("GET {uri}: no answer")))?
            .map_err(|e| AdminError::Unreachable(format!("GET {uri}: {e}")))?;
        Ok(resp.status() == StatusCode::OK)
    }

    /// One request; returns the status and the body bytes.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(StatusCode, Bytes), AdminError> {
        let uri = format!("{}/api/v1{}", self.base, path);
        let mut req = Request::builder().method(method.clone()).uri(&uri).header(header::ACCEPT, "application/json");
        let bytes = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v).expect("JSON values serialize"))
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(bytes)).map_err(|e| AdminError::Unreachable(format!("{uri}: {e}")))?;
        let send = async {
            let resp =
                self.client.request(req).await.map_err(|e| AdminError::Unreachable(format!("{method} {uri}: {e}")))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| AdminError::Unreachable(format!("{method} {uri}: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, send)
            .await
            .map_err(|_| AdminError::Unreachable(format!("{method} {uri}: no answer within {:?}", self.timeout)))?
    }

    fn error(status: StatusCode, body: &[u8]) -> AdminError {
        #[derive(Deserialize)]
        struct ErrorBody {
            code: String,
            message: String,
        }
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(e) => AdminError::Api { status: status.as_u16(), code: e.code, message: e.message },
            Err(_) => AdminError::Api {
                status: status.as_u16(),
                code: format!("http_{}", status.as_u16()),
                message: String::from_utf8_lossy(body).chars().take(200).collect(),
            },
        }
    }

    fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
        serde_json::from_slice(body).map_err(|e| AdminError::Protocol(e.to_string()))
    }

    /// GET that maps 404 with one of `missing_codes` to `None`.
    async fn get_opt<T: DeserializeOwned>(&self, path: &str, missing_codes: &[&str]) -> Result<Option<T>, AdminError> {
        let (status, body) = self.call(Method::GET, path, None).await?;
        match status {
            StatusCode::OK => Self::parse(&body).map(Some),
            _ => {
                let err = Self::error(status, &body);
                if status == StatusCode::NOT_FOUND && err.code().is_some_and(|c| missing_codes.contains(&c)) {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn declare(&self, path: &str, body: &Value) -> Result<Declared, AdminError> {
        let (status, resp) = self.call(Method::PUT, path, Some(body)).await?;
        match status {
            StatusCode::CREATED => Ok(Declared::Created),
            StatusCode::OK => Ok(Declared::Existed),
            _ => Err(Self::error(status, &resp)),
        }
    }

    /// DELETE: `Ok(true)` on 204, `Ok(false)` on 404 with one of `missing_codes`.
    async fn delete(&self, path: &str, body: Option<&Value>, missing_codes: &[&str]) -> Result<bool, AdminError> {
        let (status, resp) = self.call(Method::DELETE, path, body).await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(true),
            _ => {
                let err = Self::error(status, &resp);
                if status == StatusCode::NOT_FOUND && err.code().is_some_and(|c| missing_codes.contains(&c)) {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
        }
    }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("admin request bodies serialize")
}

#[async_trait]
impl BrokerAdmin for HttpAdmin {
    async fn list_partitions(&self) -> Result<Vec<PartitionInfo>, AdminError> {
        HttpAdmin::list_partitions(self).await
    }

    async fn topic_partitions(&self, name: &str) -> Result<Vec<PartitionInfo>, AdminError> {
        HttpAdmin::partitions(self, &format!("/partitions?topic={}", seg(name))).await
    }

    async fn list_brokers(&self) -> Result<Vec<ClusterBroker>, AdminError> {
        HttpAdmin::list_brokers(self).await
    }

    async fn reassign(&self, targets: &[(String, i32, Vec<i32>)]) -> Result<Vec<PartitionOutcome>, AdminError> {
        HttpAdmin::reassign(self, targets).await
    }

    async fn hold_move_throttle(&self, holder: &str) -> Result<(), AdminError> {
        self.hold_throttle_for_moves(holder, self.move_throttle).await
    }

    async fn settle_move_throttle(&self, holder: &str) -> Result<Vec<PartitionInfo>, AdminError> {
        // One GET in the usual case (no hold): ready Topics call this at every reconcile.
        if !self.throttle_view().await?.holds.contains_key(holder) {
            return Ok(Vec::new());
        }
        let moving: Vec<PartitionInfo> =
            self.list_partitions().await?.into_iter().filter(PartitionInfo::reassigning).collect();
        if moving.is_empty() {
            self.release_throttle_hold(holder).await?;
        }
        Ok(moving)
    }

    async fn get_topic(&self, name: &str) -> Result<Option<TopicInfo>, AdminError> {
        self.get_opt(&format!("/topics/{}", seg(name)), &["unknown_topic"]).await
    }

    async fn create_topic(&self, topic: &NewTopic) -> Result<TopicInfo, AdminError> {
        let (status, body) = self.call(Method::POST, "/topics", Some(&to_value(topic))).await?;
        match status {
            StatusCode::CREATED => Self::parse(&body),
            _ => Err(Self::error(status, &body)),
        }
    }

    async fn patch_topic(&self, name: &str, patch: &TopicPatch) -> Result<TopicInfo, AdminError> {
        let (status, body) =
            self.call(Method::PATCH, &format!("/topics/{}", seg(name)), Some(&to_value(patch))).await?;
        match status {
            StatusCode::OK => Self::parse(&body),
            _ => Err(Self::error(status, &body)),
        }
    }

    async fn delete_topic(&self, name: &str) -> Result<bool, AdminError> {
        self.delete(&format!("/topics/{}", seg(name)), None, &["unknown_topic"]).await
    }

    async fn put_vhost(&self, vhost: &str) -> Result<(), AdminError> {
        self.declare(&format!("/vhosts/{}", seg(vhost)), &serde_json::json!({})).await.map(|_| ())
    }

    async fn get_exchange(&self, vhost: &str, name: &str) -> Result<Option<ExchangeInfo>, AdminError> {
        self.get_opt(&format!("/vhosts/{}/exchanges/{}", seg(vhost), seg(name)), &["unknown_exchange", "unknown_vhost"])
            .await
    }

    async fn put_exchange(&self, vhost: &str, name: &str, decl: &ExchangeInfo) -> Result<Declared, AdminError> {
        self.declare(&format!("/vhosts/{}/exchanges/{}", seg(vhost), seg(name)), &to_value(decl)).await
    }

    async fn delete_exchange(&self, vhost: &str, name: &str) -> Result<bool, AdminError> {
        self.delete(
            &format!("/vhosts/{}/exchanges/{}", seg(vhost), seg(name)),
            None,
            &["unknown_exchange", "unknown_vhost"],
        )
        .await
    }

    async fn get_queue(&self, vhost: &str, name: &str) -> Result<Option<QueueInfo>, AdminError> {
        self.get_opt(&format!("/vhosts/{}/queues/{}", seg(vhost), seg(name)), &["unknown_queue", "unknown_vhost"]).await
    }

    async fn put_queue(&self, vhost: &str, name: &str, decl: &QueueDeclare) -> Result<Declared, AdminError> {
        self.declare(&format!("/vhosts/{}/queues/{}", seg(vhost), seg(name)), &to_value(decl)).await
    }

    async fn delete_queue(&self, vhost: &str, name: &str, guards: DeleteGuards) -> Result<bool, AdminError> {
        let mut query = Vec::new();
        if guards.if_unused {
            query.push("if_unused=true");
        }
        if guards.if_empty {
            query.push("if_empty=true");
        }
        let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
        self.delete(
            &format!("/vhosts/{}/queues/{}{query}", seg(vhost), seg(name)),
            None,
            &["unknown_queue", "unknown_vhost"],
        )
        .await
    }

    async fn list_bindings(&self, vhost: &str, source: &str) -> Result<Vec<BindingInfo>, AdminError> {
        #[derive(Deserialize)]
        struct List {
            bindings: Vec<BindingInfo>,
        }
        let path = format!("/vhosts/{}/bindings?source={}", seg(vhost), seg(source));
        let (status, body) = self.call(Method::GET, &path, None).await?;
        match status {
            StatusCode::OK => Self::parse::<List>(&body).map(|l| l.bindings),
            _ => Err(Self::error(status, &body)),
        }
    }

    async fn create_binding(&self, vhost: &str, binding: &BindingInfo) -> Result<Declared, AdminError> {
        let (status, body) =
            self.call(Method::POST, &format!("/vhosts/{}/bindings", seg(vhost)), Some(&to_value(binding))).await?;
        match status {
            StatusCode::CREATED => Ok(Declared::Created),
            StatusCode::OK => Ok(Declared::Existed),
            _ => Err(Self::error(status, &body)),
        }
    }

    async fn delete_binding(&self, vhost: &str, binding: &BindingInfo) -> Result<bool, AdminError> {
        self.delete(&format!("/vhosts/{}/bindings", seg(vhost)), Some(&to_value(binding)), &["unknown_binding"]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhost_slash_is_percent_encoded_in_paths() {
        assert_eq!(seg("/"), "%2F");
        assert_eq!(seg("orders.eu"), "orders.eu");
        assert_eq!(seg("a b"), "a%20b");
    }

    #[test]
    fn error_codes_become_condition_reasons() {
        let e = AdminError::Api { status: 400, code: "invalid_config".into(), message: "x".into() };
        assert_eq!(e.reason(), "InvalidConfig");
        assert!(!e.is_transient());
        let e = AdminError::Api { status: 503, code: "unavailable".into(), message: "x".into() };
        assert!(e.is_transient());
        assert_eq!(AdminError::Unreachable("x".into()).reason(), "BrokerUnreachable");
    }

    #[test]
    fn non_json_error_bodies_keep_the_status() {
        let e = HttpAdmin::error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(e.code(), Some("http_502"));
    }
}
