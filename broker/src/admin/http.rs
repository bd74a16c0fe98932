//! axum server for `/healthz`, `/readyz`, `/metrics` and the JSON admin API under
//! `/api/v1` (see [`super::api`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Gauge, IntGaugeVec, Opts, Registry, TextEncoder};

/// State shared by the handlers: the readiness flag and the registry `/metrics` exports.
pub struct AdminState {
    ready: AtomicBool,
    registry: Registry,
    /// Set once the metadata quorum client and the logs are up; the JSON API answers 503 before.
    cluster: std::sync::OnceLock<Arc<crate::cluster::ClusterNode>>,
    logs: std::sync::OnceLock<Arc<crate::log::LogManager>>,
    /// The AMQP core, for the AMQP entity endpoints.
    amqp: std::sync::OnceLock<Arc<crate::amqp::AmqpCore>>,
    /// Partition replication (high watermarks); set with the Kafka listener.
    replication: std::sync::OnceLock<Arc<crate::partition::Replication>>,
}

impl AdminState {
    /// Not ready until [`AdminState::set_ready`] is called.
    pub fn new(registry: Registry) -> Arc<Self> {
        Arc::new(Self {
            ready: AtomicBool::new(false),
            registry,
            cluster: std::sync::OnceLock::new(),
            logs: std::sync::OnceLock::new(),
            amqp: std::sync::OnceLock::new(),
            replication: std::sync::OnceLock::new(),
        })
    }
    pub fn set_cluster(&self, cluster: Arc<crate::cluster::ClusterNode>, logs: Arc<crate::log::LogManager>) {
        let _ = self.cluster.set(cluster);
        let _ = self.logs.set(logs);
    }
    pub fn set_amqp(&self, core: Arc<crate::amqp::AmqpCore>) {
        let _ = self.amqp.set(core);
    }
    pub fn amqp(&self) -> Option<&Arc<crate::amqp::AmqpCore>> {
        self.amqp.get()
    }
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::ClusterNode>> {
        self.cluster.get()
    }
    pub fn logs(&self) -> Option<&Arc<crate::log::LogManager>> {
        self.logs.get()
    }
    pub fn set_replication(&self, replication: Arc<crate::partition::Replication>) {
        let _ = self.replication.set(replication);
    }
    pub fn replication(&self) -> Option<&Arc<crate::partition::Replication>> {
        self.replication.get()
    }
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", super::api::routes())
        .with_state(state)
}

/// Serve the admin routes on `listener` until `shutdown` completes; then stop accepting and
/// wait for the open connections to finish their requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

/// Liveness: 200 while the process can answer at all.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: 200 once the logs are loaded, 503 before that and during shutdown.
async fn readyz(State(state): State<Arc<AdminState>>) -> (StatusCode, &'static str) {
    if state.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    let encoder = TextEncoder::new();
    let mut buf = Vec::with_capacity(4096);
    match encoder.encode(&state.registry.gather(), &mut buf) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], buf).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics failed: {e}")).into_response()
        }
    }
}

/// `weir_build_info{version,node_id} 1` and `weir_process_start_time_seconds`.
pub fn register_process_metrics(registry: &Registry, node_id: u32) -> prometheus::Result<()> {
    let build_info = IntGaugeVec::new(
        Opts::new("weir_build_info", "Build and identity of this broker; always 1"),
        &["version", "node_id"],
    )?;
    build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), &node_id.to_string()]).set(1);
    registry.register(Box::new(build_info))?;

    let start_time = Gauge::with_opts(Opts::new(
        "weir_process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds",
    ))?;
    start_time.set(crate::log::now_ms() as f64 / 1000.0);
    registry.register(Box::new(start_time))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    async fn request(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    /// Before start-up completes the JSON API answers 503 JSON; malformed requests and
    /// unknown endpoints are JSON errors too.
    #[tokio::test]
    async fn json_api_errors_before_start_up() {
        let state = AdminState::new(Registry::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, state, std::future::pending()));
        let code = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap()["code"].clone();

        for path in ["/api/v1/topics", "/api/v1/topics/t", "/api/v1/cluster", "/api/v1/partitions"] {
            let (status, head, body) = get(addr, path).await;
            assert_eq!((status, code(&body)), (503, "unavailable".into()), "{path}: {body}");
            assert!(head.contains("content-type: application/json"), "{head}");
        }
        let (status, _, body) = request(addr, "POST", "/api/v1/topics", "{not json").await;
        assert_eq!((status, code(&body)), (400, "bad_request".into()), "{body}");
        let (status, _, body) = get(addr, "/api/v1/topics/bad%20name").await;
        assert_eq!((status, code(&body)), (400, "invalid_topic_name".into()), "{body}");
        let (status, _, body) = get(addr, "/api/v1/nope").await;
        assert_eq!((status, code(&body)), (404, "not_found".into()), "{body}");
        let (status, head, body) = request(addr, "PUT", "/api/v1/topics", "{}").await;
        assert_eq!((status, code(&body)), (405, "method_not_allowed".into()), "{body}");
        assert!(head.contains("allow: "), "{head}");
        server.abort();
    }

    #[tokio::test]
    async fn probes_metrics_and_graceful_shutdown() {
        let registry = Registry::new();
        register_process_metrics(&registry, 3).unwrap();
        let state = AdminState::new(registry);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(serve(listener, state.clone(), async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }));

        let (status, _, body) = get(addr, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        assert_eq!(get(addr, "/readyz").await.0, 503);
        state.set_ready(true);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        state.set_ready(false);
        assert_eq!(get(addr, "/readyz").await.0, 503);

        let (status, head, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: text/plain; version=0.0.4"), "{head}");
        assert!(body.contains("weir_build_info{node_id=\"3\",version=\""), "{body}");
        assert!(body.contains("weir_process_start_time_seconds "), "{body}");

        assert_eq!(get(addr, "/nope").await.0, 404);

        tx.send(true).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting after shutdown");
    }
}
