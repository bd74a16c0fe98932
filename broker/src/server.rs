//! Runtime wiring of the broker process: admin HTTP server, log loading, background
//! maintenance, and the clean shutdown on SIGTERM / SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::admin::{self, AdminState};
use crate::cli::BrokerArgs;
use crate::cluster::{ClusterConfig, ClusterNode, NodeId};
use crate::kafka::context::KafkaConfig;
use crate::kafka::KafkaContext;
use crate::log::{now_ms, LogConfig, LogManager, LogMetrics};
use crate::partition::ReplicaManager;

/// How often the log maintenance pass (flush, retention, cleaning) runs.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);
/// How long the admin server may take to finish open requests once told to stop.
const HTTP_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Run the broker until SIGTERM or SIGINT, then shut down cleanly. Returns an error (and the
/// process exits non-zero) if start-up or the clean shutdown fails.
pub async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let node_id = args.resolved_node_id();
    let voters = args.resolved_voters(node_id);
    crate::log::segment::set_write_piece_bytes(args.log_write_piece_bytes);
    info!(
        node_id,
        data_dir = %args.data_dir.display(),
        voters = %voters.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        version = env!("CARGO_PKG_VERSION"),
        "starting weir broker"
    );
    if !voters.iter().any(|v| v.id == node_id) {
        warn!(node_id, "this node is not among --voters; it will not take part in the controller quorum");
    }
    // Without --kafka-advertised, a wildcard listen address is advertised as localhost: the
    // single-node default is for clients on the same machine; in Kubernetes the chart sets it.
    let kafka_advertised = args.kafka_advertised.as_ref().map_or_else(
        || {
            if args.kafka_listen.ip().is_unspecified() {
                format!("localhost:{}", args.kafka_listen.port())
            } else {
                args.kafka_listen.to_string()
            }
        },
        |a| a.to_string(),
    );
    info!(
        kafka_listen = %args.kafka_listen,
        kafka_advertised = %kafka_advertised,
        amqp_listen = %args.amqp_listen,
        raft_listen = %args.raft_listen,
        "listeners configured"
    );
    let amqp_config = amqp_config(&args)?;

    // Signals first, so that a SIGTERM during log loading is ours to handle.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;

    let registry = prometheus::Registry::new();
    let log_metrics = LogMetrics::new(&registry).context("registering log metrics")?;
    admin::register_process_metrics(&registry, node_id).context("registering process metrics")?;
    let admin_state = AdminState::new(registry);

    // The admin server is up (healthz 200, readyz 503) while the logs load.
    let listener = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .with_context(|| format!("binding --http-listen {}", args.http_listen))?;
    let http_addr = listener.local_addr().context("reading the admin listener address")?;
    info!(%http_addr, "admin HTTP server listening (/healthz, /readyz, /metrics)");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http_task = {
        let mut stop = stop_rx.clone();
        tokio::spawn(admin::serve(listener, admin_state.clone(), async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    };

    // Load and recover the logs. This cannot be interrupted; a signal meanwhile exits at
    // once without the clean-shutdown marker (nothing was written that needs flushing, and
    // the next start recovers the logs again).
    info!(data_dir = %args.data_dir.display(), "loading logs");
    let data_dir = args.data_dir.clone();
    let recovery_threads = usize::from(args.num_recovery_threads_per_data_dir);
    let open = tokio::task::spawn_blocking(move || {
        LogManager::open_with_threads(&data_dir, LogConfig::default(), log_metrics, recovery_threads)
    });
    let (manager, report) = tokio::select! {
        res = open => res.context("log loading task failed")?.context("loading logs")?,
        sig = wait_for_signal(&mut sigterm, &mut sigint) => {
            warn!(signal = sig, "shutdown requested while loading logs; exiting without a clean shutdown");
            stop_http(&stop_tx, http_task).await;
            return Ok(());
        }
    };
    let manager = Arc::new(manager);
    manager.set_producer_id_expiration_ms(args.producer_id_expiration_ms);
    info!(
        partitions = report.partitions,
        clean_shutdown = report.clean_shutdown,
        truncated_bytes = report.truncated_bytes,
        from_producer_snapshots = report.from_producer_snapshots,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "logs loaded"
    );

    // Join the metadata quorum and keep the local logs in line with it.
    let raft_listener = tokio::net::TcpListener::bind(args.raft_listen)
        .await
        .with_context(|| format!("binding --raft-listen {}", args.raft_listen))?;
    let own_raft_addr = voters
        .iter()
        .find(|v| v.id == node_id)
        .map(|v| v.addr.to_string())
        .unwrap_or_else(|| advertised(args.raft_listen, &kafka_advertised));
    let cluster_config = ClusterConfig {
        node_id: node_id as NodeId,
        data_dir: args.data_dir.clone(),
        raft_addr: own_raft_addr,
        kafka_addr: kafka_advertised.clone(),
        http_addr: advertised(http_addr, &kafka_advertised),
        rack: args.rack.clone().filter(|r| !r.is_empty()),
        voters: voters.iter().map(|v| (v.id as NodeId, v.addr.to_string())).collect(),
        session_timeout: Duration::from_millis(args.broker_session_timeout_ms),
        heartbeat_interval: Duration::from_millis(1000),
        metadata_version: args.metadata_version,
    };
    let cluster = ClusterNode::start(cluster_config, raft_listener, admin_state.registry())
        .await
        .context("starting the metadata quorum member")?;
    info!(raft_listen = %args.raft_listen, "raft listener open");
    let replicas = Arc::new(ReplicaManager::new(node_id as NodeId, manager.clone()));
    tokio::spawn(replicas.run(cluster.clone()));
    admin_state.set_cluster(cluster.clone(), manager.clone());

    let kafka_listener = tokio::net::TcpListener::bind(args.kafka_listen)
        .await
        .with_context(|| format!("binding --kafka-listen {}", args.kafka_listen))?;
    let mut kafka_config = KafkaConfig::default();
    kafka_config.replication.replica_lag_time_max_ms = args.replica_lag_time_max_ms as i64;
    kafka_config.replication.fetch_wait_max_ms = args.replica_fetch_wait_max_ms;
    kafka_config.replica_selector = args.replica_selector;
    kafka_config.max_fetch_sessions = args.max_incremental_fetch_session_cache_slots;
    kafka_config.replication.fetch_partition_max_bytes = args.replica_fetch_max_bytes;
    kafka_config.replication.fetch_response_max_bytes = args.replica_fetch_response_max_bytes;
    kafka_config.groups.offsets_retention = Duration::from_millis(
        args.offsets_retention_ms.unwrap_or(args.offsets_retention_minutes.saturating_mul(60_000)),
    );
    kafka_config.groups.offsets_retention_check_interval =
        Duration::from_millis(args.offsets_retention_check_interval_ms.max(1));
    kafka_config.groups.consumer_lag_interval = Duration::from_millis(args.consumer_lag_interval_ms.max(100));
    let kafka = KafkaContext::new(node_id as NodeId, cluster.clone(), manager.clone(), kafka_config);
    kafka.replication.metrics.register(admin_state.registry()).context("registering replication metrics")?;
    kafka.fetch_sessions.metrics.register(admin_state.registry()).context("registering fetch session metrics")?;
    let topics_of = Arc::downgrade(&cluster);
    let topic_exists = move |topic: &str| topics_of.upgrade().is_some_and(|c| c.image().topics.contains_key(topic));
    kafka.metrics.register(admin_state.registry(), topic_exists).context("registering Kafka listener metrics")?;
    admin_state
        .registry()
        .register(Box::new(crate::kafka::group::lag::LagCollector::new(kafka.groups.lag.clone())))
        .context("registering consumer lag metrics")?;
    tokio::spawn(kafka.replication.clone().run());
    admin_state.set_replication(kafka.replication.clone());
    let replication = kafka.replication.clone();
    info!(kafka_listen = %args.kafka_listen, kafka_advertised = %kafka_advertised, "Kafka listener bound");
    let amqp_listener = tokio::net::TcpListener::bind(args.amqp_listen)
        .await
        .with_context(|| format!("binding --amqp-listen {}", args.amqp_listen))?;
    let amqp = crate::amqp::AmqpCore::new(amqp_config);
    crate::amqp::server::follow_cluster(amqp.clone(), cluster.clone());
    crate::amqp::alarm::watch(
        amqp.clone(),
        crate::amqp::alarm::AlarmLimits {
            data_dir: args.data_dir.clone(),
            disk_free_limit: args.amqp_disk_free_limit,
            memory_limit: if args.amqp_memory_limit > 0 {
                args.amqp_memory_limit
            } else {
                total_memory_bytes().map_or(0, |m| m / 10 * 4)
            },
        },
    );
    admin_state.set_amqp(amqp.clone());
    crate::amqp::metrics::register(&amqp, admin_state.registry()).context("registering AMQP metrics")?;
    info!(amqp_listen = %args.amqp_listen, "AMQP listener bound");
    // Ready once the quorum knows this broker: before that, writes and placement fail.
    let early_stop = tokio::select! {
        _ = cluster.wait_registered() => None,
        sig = wait_for_signal(&mut sigterm, &mut sigint) => {
            warn!(signal = sig, "shutdown requested before registration completed");
            Some(Ok(()))
        }
        reason = cluster.quorum_failed() => {
            error!(%reason, "the metadata store failed before registration completed; shutting down");
            Some(Err(anyhow::anyhow!("the metadata store failed: {reason}")))
        }
        reason = manager.dir_failure().failed() => {
            error!(%reason, "the data directory failed before registration completed; stopping without a clean shutdown");
            Some(Err(anyhow::anyhow!("the data directory failed: {reason}")))
        }
    };
    if let Some(outcome) = early_stop {
        stop_http(&stop_tx, http_task).await;
        cluster.shutdown().await;
        // Closing the logs writes to them; a failed directory is left for recovery instead.
        if !manager.dir_failure().has_failed() {
            let m = manager.clone();
            tokio::task::spawn_blocking(move || m.shutdown()).await.context("log shutdown task failed")??;
        }
        return outcome;
    }
    // Clients are served from here on, as Kafka binds its listeners at start but enables
    // request processing only once the broker has caught up with the metadata log. Until the
    // registration this broker's image is the one it stopped with: after a restart it may name
    // deposed leaders, deleted topics and old queues. Connections made meanwhile waited in the
    // listen backlog (registration waits until the local image has applied it).
    tokio::spawn(crate::kafka::server::serve(kafka_listener, kafka));
    tokio::spawn(crate::amqp::server::serve(amqp_listener, amqp));
    admin_state.set_ready(true);
    info!("broker ready");

    let maintenance_task = tokio::spawn(maintenance_loop(manager.clone(), stop_rx.clone()));

    // Run until a signal, until the admin server fails, or until the metadata store or the
    // data directory fails.
    let mut quorum_failed = false;
    let mut dir_failed = false;
    let mut http_failed = false;
    let failure = tokio::select! {
        sig = wait_for_signal(&mut sigterm, &mut sigint) => {
            info!(signal = sig, "shutting down");
            None
        }
        res = &mut http_task => {
            http_failed = true;
            Some(match res {
                Ok(Ok(())) => anyhow::anyhow!("admin HTTP server stopped unexpectedly"),
                Ok(Err(e)) => anyhow::Error::new(e).context("admin HTTP server failed"),
                Err(e) => anyhow::Error::new(e).context("admin HTTP server task failed"),
            })
        }
        // As Kafka shuts a broker down when its metadata log directory fails: a broker whose
        // quorum member is gone would keep serving a frozen image (no leader changes, no ISR
        // changes, no new topics) while its health checks said nothing was wrong.
        reason = cluster.quorum_failed() => {
            error!(%reason, "the metadata store failed; shutting down");
            quorum_failed = true;
            Some(anyhow::anyhow!("the metadata store failed: {reason}"))
        }
        // As Kafka halts when its last log directory fails: the logs refuse writes from now
        // on, so the partitions led here must move to their ISR (the controlled shutdown
        // below, or the session timeout); and the next start recovers the logs from their
        // files.
        reason = manager.dir_failure().failed() => {
            error!(%reason, "the data directory failed; stopping without a clean shutdown");
            dir_failed = true;
            Some(anyhow::anyhow!("the data directory failed: {reason}"))
        }
    };

    // A second signal during shutdown gives up on the clean shutdown.
    tokio::spawn(async move {
        let sig = wait_for_signal(&mut sigterm, &mut sigint).await;
        error!(signal = sig, "second signal during shutdown; exiting without a clean shutdown");
        std::process::exit(1);
    });

    admin_state.set_ready(false);
    // Both need the quorum.
    if args.shutdown_drain_wait_ms > 0 && !quorum_failed && !dir_failed {
        cluster.wait_for_drain(Duration::from_millis(args.shutdown_drain_wait_ms)).await;
    }
    if args.controlled_shutdown_enable && !quorum_failed {
        // Also after the data directory failed (Kafka then halts and waits for the session
        // timeout): the fence moves leadership at once. The quorum may not commit it if this
        // broker leads it, its metadata store being on the failed disk, so the wait is short.
        let mut timeout_ms = args.controlled_shutdown_timeout_ms;
        if dir_failed {
            timeout_ms = timeout_ms.min(args.broker_session_timeout_ms / 2);
        }
        cluster.controlled_shutdown(Duration::from_millis(timeout_ms)).await;
    }
    if !http_failed {
        stop_http(&stop_tx, http_task).await;
    } else {
        let _ = stop_tx.send(true);
    }
    // The loop finishes the pass it is in, then stops.
    if let Err(e) = maintenance_task.await {
        error!(error = %e, "log maintenance task failed");
    }

    cluster.shutdown().await;
    if dir_failed {
        replication.stop_fetchers();
        return Err(failure.expect("set with dir_failed"));
    }
    // The high watermarks as of now, so the restarted broker starts from them, once the
    // replica fetchers have stopped writing (as Kafka stops them before closing its logs).
    tokio::task::spawn_blocking(move || {
        replication.stop_fetchers();
        replication.checkpoint_high_watermarks()
    })
    .await
    .context("high-watermark checkpoint task failed")?;
    let shutdown_manager = manager.clone();
    let closed = tokio::task::spawn_blocking(move || shutdown_manager.shutdown())
        .await
        .context("log shutdown task failed")
        .and_then(|closed| closed.context("shutting down logs"));
    match closed {
        Ok(()) => info!("logs flushed and checkpointed; clean shutdown complete"),
        // The failure that stopped the broker is the one it exits with: closing the logs after
        // it can fail for the same cause (a full disk fails the metadata store first and then
        // the high-watermark checkpoint).
        Err(e) if failure.is_some() => error!(error = format!("{e:#}"), "closing the logs failed too"),
        Err(e) => return Err(e),
    }
    failure.map_or(Ok(()), Err)
}

/// MemTotal from /proc/meminfo, in bytes.
fn total_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The AMQP settings from the command line: `guest`/`guest` plus `--amqp-users`.
fn amqp_config(args: &BrokerArgs) -> anyhow::Result<crate::amqp::AmqpConfig> {
    let mut config = crate::amqp::AmqpConfig {
        data_dir: Some(args.data_dir.join("amqp")),
        guest_loopback_only: args.amqp_guest_loopback_only,
        heartbeat_secs: args.amqp_heartbeat,
        ..Default::default()
    };
    for entry in args.amqp_users.iter().filter(|e| !e.is_empty()) {
        let (user, password) =
            entry.split_once(':').with_context(|| format!("--amqp-users entry '{entry}' is not USER:PASSWORD"))?;
        config.users.insert(user.to_string(), password.to_string());
    }
    Ok(config)
}

/// Tell the admin server to stop accepting and wait (bounded) for open requests.
async fn stop_http(stop_tx: &watch::Sender<bool>, mut http_task: tokio::task::JoinHandle<std::io::Result<()>>) {
    let _ = stop_tx.send(true);
    match tokio::time::timeout(HTTP_DRAIN_TIMEOUT, &mut http_task).await {
        Ok(Ok(Ok(()))) => info!("admin HTTP server stopped"),
        Ok(Ok(Err(e))) => error!(error = %e, "admin HTTP server failed"),
        Ok(Err(e)) => error!(error = %e, "admin HTTP server task failed"),
        Err(_) => {
            warn!("admin HTTP connections still open after {HTTP_DRAIN_TIMEOUT:?}; closing them");
            http_task.abort();
        }
    }
}

/// Run `run_maintenance` every second on the blocking pool until `stop` turns true. A failed
/// or panicking pass is logged and the next one runs as usual.
async fn maintenance_loop(manager: Arc<LogManager>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(MAINTENANCE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; the logs were just loaded
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = ticker.tick() => {}
        }
        let m = manager.clone();
        // Awaited to the end even when a stop arrives meanwhile, so that `shutdown` never
        // runs concurrently with a maintenance pass.
        match tokio::task::spawn_blocking(move || m.run_maintenance(now_ms())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = %e, "log maintenance failed"),
            Err(e) => error!(error = %e, "log maintenance panicked"),
        }
    }
}

async fn wait_for_signal(sigterm: &mut Signal, sigint: &mut Signal) -> &'static str {
    tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    }
}

/// The address others should use for a listener bound to `listen`: the listen address
/// itself, or — when it is a wildcard — the host of the advertised Kafka address.
fn advertised(listen: std::net::SocketAddr, kafka_advertised: &str) -> String {
    if !listen.ip().is_unspecified() {
        return listen.to_string();
    }
    let host = kafka_advertised.rsplit_once(':').map(|(h, _)| h).unwrap_or("localhost");
    let host = if host == "0.0.0.0" || host == "[::]" { "localhost" } else { host };
    format!("{host}:{}", listen.port())
}
