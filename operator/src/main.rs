//! `weir-operator`: runs the Topic, Queue, Exchange and Binding controllers (after winning the
//! leader Lease, when enabled) and serves `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use clap::Parser;
use weir_operator::controller::{run_controllers, Context, Timing};
use weir_operator::leader::Election;
use weir_operator::metrics::Metrics;
use weir_operator::resolver::{UrlTemplateResolver, DEFAULT_ADMIN_URL_TEMPLATE};

#[derive(Debug, Parser)]
#[command(
    name = "weir-operator",
    version,
    about = "Weir operator: reconciles weir.dev resources against broker clusters"
)]
struct Args {
    /// Watch only this namespace (default: every namespace the RBAC allows).
    #[arg(long, env = "WEIR_OPERATOR_NAMESPACE")]
    namespace: Option<String>,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "WEIR_OPERATOR_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    http_listen: SocketAddr,

    /// Admin API URL of a cluster, from `clusterRef` `{name}` and `{namespace}`.
    #[arg(long, env = "WEIR_OPERATOR_ADMIN_URL_TEMPLATE", default_value = DEFAULT_ADMIN_URL_TEMPLATE)]
    admin_url_template: String,

    /// Periodic resync of every resource (repairs drift on the broker).
    #[arg(long, env = "WEIR_OPERATOR_RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,

    /// Elect a leader among operator replicas through a Lease; only the leader reconciles.
    #[arg(long, env = "WEIR_OPERATOR_LEADER_ELECTION", default_value_t = false)]
    leader_election: bool,

    /// Name of the Lease used for leader election.
    #[arg(long, env = "WEIR_OPERATOR_LEASE_NAME", default_value = "weir-operator")]
    lease_name: String,

    /// Namespace of the Lease (default: the pod's namespace, POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,

    /// Identity of this replica in the Lease (default: the pod name, POD_NAME, or the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Name of the broker StatefulSet (and client Service) whose pods the rebalancer watches,
    /// in the operator's namespace (POD_NAMESPACE). Without it, no rebalance planning runs.
    #[arg(long, env = "WEIR_OPERATOR_BROKER_STATEFULSET")]
    broker_statefulset: Option<String>,

    /// What the rebalancer does with its plans: `execute` drains departing brokers, reassigns
    /// replicas onto new ones and elects preferred leaders through the admin API; `plan` only
    /// logs and counts them (docs/operator.md).
    #[arg(long, env = "WEIR_OPERATOR_REBALANCE", value_enum, default_value = "execute")]
    rebalance: weir_operator::rebalance_exec::Mode,

    /// Reassignment throttle (bytes per second, all of a leader's catching-up replicas
    /// together) the operator holds while its moves run (the rebalancer's drains and
    /// reassignments, a Topic's change of replication factor): named holds that never loosen
    /// a lower throttle set by hand, released afterwards; 0: no hold.
    #[arg(long, env = "WEIR_OPERATOR_REBALANCE_THROTTLE_BYTES_PER_SEC", default_value_t = 0)]
    rebalance_throttle_bytes_per_sec: u64,

    /// Log format: `text` or `json` (structured, one object per line).
    #[arg(long, env = "WEIR_OPERATOR_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if args.log_format == "json" {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }

    let metrics = Arc::new(Metrics::new());
    let router = axum::Router::new()
        .route(
            "/metrics",
            get({
                let m = metrics.clone();
                move || async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(args.http_listen).await?;
    tracing::info!(addr = %args.http_listen, "serving /metrics, /healthz, /readyz");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });

    let client = kube::Client::try_default().await?;
    let election = if args.leader_election {
        let ns = args.lease_namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
        let identity = args
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("weir-operator-{}", std::process::id()));
        let election = Election::new(client.clone(), &ns, &args.lease_name, &identity, Duration::from_secs(15));
        election.acquire(metrics.clone()).await;
        Some(election)
    } else {
        metrics.leader.set(1);
        None
    };

    if let Some(sts) = args.broker_statefulset.clone() {
        let ns = args.lease_namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
        let resolver = UrlTemplateResolver::new(args.admin_url_template.clone());
        let url = resolver.url(&ns, &weir_crds::ClusterRef { name: sts.clone(), namespace: None });
        tracing::info!(statefulset = %sts, namespace = %ns, mode = ?args.rebalance, "rebalancing from the broker pods");
        tokio::spawn(weir_operator::rebalance_watch::watch_brokers(
            client.clone(),
            ns,
            sts,
            weir_operator::admin::HttpAdmin::new(url),
            metrics.clone(),
            args.rebalance,
            weir_operator::rebalance_exec::Throttle::new(args.rebalance_throttle_bytes_per_sec),
        ));
    }

    let timing = Timing { resync: Duration::from_secs(args.resync_seconds.max(1)), ..Timing::default() };
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(
            UrlTemplateResolver::new(args.admin_url_template.clone())
                .with_move_throttle(args.rebalance_throttle_bytes_per_sec),
        ),
        metrics,
        timing,
    ));
    tracing::info!(namespace = ?args.namespace, template = %args.admin_url_template, "starting controllers");
    run_controllers(ctx, args.namespace.clone()).await;
    if let Some(e) = election {
        e.step_down().await;
    }
    tracing::info!("stopped");
    Ok(())
}
