//! A broker's membership in the cluster: it runs the metadata raft group (voter or learner),
//! registers itself, heartbeats the quorum leader, and — while it is the leader — fences
//! brokers that stop heartbeating. Writes from any broker are forwarded to the leader.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry};
use tokio::net::TcpListener;

use super::assignment::{assign_replicas, random_usize};
use super::image::MetadataImage;
use super::network::{self, Envelope, ForwardError, NetworkFactory, Request, RequestHandler, Response, Transport};
use super::store::{self, LogStore, StateMachineStore};
use super::types::{CommandResult, MetadataCommand, MetadataError, NodeId, Raft, METADATA_GROUP};

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    /// The raft database lives in `<data_dir>/raft`.
    pub data_dir: PathBuf,
    /// The address other brokers dial for raft.
    pub raft_addr: String,
    pub kafka_addr: String,
    pub http_addr: String,
    pub rack: Option<String>,
    /// `(id, raft address)` of the voters; other brokers join as learners.
    pub voters: Vec<(NodeId, String)>,
    /// `broker.session.timeout.ms`.
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// The metadata version this broker registers with: `types::METADATA_VERSION`, or lower
    /// to hold the cluster back during a rolling upgrade (`--metadata-version`).
    pub metadata_version: u32,
}

impl ClusterConfig {
    pub fn is_voter(&self) -> bool {
        self.voters.iter().any(|(id, _)| *id == self.node_id)
    }
}

/// Why a metadata write failed.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The state machine refused the command.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// No quorum leader could be reached before the deadline.
    #[error("metadata quorum unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("opening the raft database: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("raft storage: {0}")]
    Storage(#[from] openraft::StorageError<NodeId>),
    #[error("raft: {0}")]
    Raft(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

#[derive(Clone)]
struct ClusterMetrics {
    term: IntGauge,
    last_applied: IntGauge,
    is_leader: IntGauge,
    leader_changes: IntCounter,
    fenced_brokers: IntGauge,
    propose_seconds: Histogram,
    apply_seconds: Histogram,
}

impl ClusterMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            term: IntGauge::with_opts(Opts::new("weir_raft_term", "Current raft term of the metadata quorum"))?,
            last_applied: IntGauge::with_opts(Opts::new(
                "weir_raft_applied_index",
                "Index of the last metadata log entry applied on this broker (the commit index it has seen)",
            ))?,
            is_leader: IntGauge::with_opts(Opts::new(
                "weir_raft_is_leader",
                "1 while this broker leads the metadata quorum",
            ))?,
            leader_changes: IntCounter::with_opts(Opts::new(
                "weir_raft_leader_changes_total",
                "Metadata quorum leader changes seen by this broker",
            ))?,
            fenced_brokers: IntGauge::with_opts(Opts::new("weir_cluster_fenced_brokers", "Brokers currently fenced"))?,
            propose_seconds: Histogram::with_opts(
                HistogramOpts::new("weir_raft_propose_seconds", "Latency of metadata writes from propose to applied")
                    .buckets(prometheus::exponential_buckets(0.0005, 2.0, 14)?),
            )?,
            apply_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "weir_raft_apply_seconds",
                    "Latency of applying and persisting a batch of committed metadata entries",
                )
                .buckets(prometheus::exponential_buckets(0.0001, 2.0, 14)?),
            )?,
        };
        registry.register(Box::new(m.term.clone()))?;
        registry.register(Box::new(m.last_applied.clone()))?;
        registry.register(Box::new(m.is_leader.clone()))?;
        registry.register(Box::new(m.leader_changes.clone()))?;
        registry.register(Box::new(m.fenced_brokers.clone()))?;
        registry.register(Box::new(m.propose_seconds.clone()))?;
        registry.register(Box::new(m.apply_seconds.clone()))?;
        Ok(m)
    }
}

pub struct ClusterNode {
    cfg: ClusterConfig,
    raft: Raft,
    sm: StateMachineStore,
    transport: Arc<Transport>,
    /// Last heartbeat seen from each broker, kept by the quorum leader only.
    last_seen: Mutex<HashMap<NodeId, Instant>>,
    /// When this node last became leader (fencing waits a session timeout after that).
    leader_since: Mutex<Option<Instant>>,
    /// Turns true once the quorum accepted this broker's registration.
    registered: tokio::sync::watch::Sender<bool>,
    /// Set by a controlled shutdown: no more heartbeats, so the fence it proposes stays.
    shutting_down: std::sync::atomic::AtomicBool,
    metrics: ClusterMetrics,
}

const RPC_TIMEOUT: Duration = Duration::from_secs(3);
const PROPOSE_DEADLINE: Duration = Duration::from_secs(15);

impl ClusterNode {
    /// Open the raft storage, start the metadata group, serve raft on `listener`, and start
    /// the background tasks (bootstrap or join, registration, heartbeats, fencing).
    pub async fn start(
        cfg: ClusterConfig,
        listener: TcpListener,
        registry: &Registry,
    ) -> Result<Arc<Self>, ClusterError> {
        let db = store::open_db(&cfg.data_dir.join("raft"))?;
        let log_store = LogStore::new(db.clone(), METADATA_GROUP);
        let metrics = ClusterMetrics::new(registry)?;
        let sm = StateMachineStore::open(db, METADATA_GROUP)?.with_apply_histogram(metrics.apply_seconds.clone());
        let raft_config = openraft::Config {
            cluster_name: "weir-metadata".into(),
            // openraft 0.9 followers wait the leader lease (= election_timeout_max) plus an
            // election timeout before campaigning: 1.5 + 0.75..1.5 s to a new leader.
            heartbeat_interval: 150,
            election_timeout_min: 750,
            election_timeout_max: 1500,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(1000),
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let transport = Transport::new();
        let factory = NetworkFactory { transport: transport.clone(), group: METADATA_GROUP };
        let raft = Raft::new(cfg.node_id, Arc::new(raft_config), factory, log_store, sm.clone())
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let node = Arc::new(Self {
            metrics,
            cfg,
            raft,
            sm,
            transport,
            last_seen: Mutex::new(HashMap::new()),
            leader_since: Mutex::new(None),
            registered: tokio::sync::watch::channel(false).0,
            shutting_down: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(network::serve(listener, node.clone()));
        tokio::spawn(node.clone().bootstrap_or_join());
        tokio::spawn(node.clone().register_loop());
        tokio::spawn(node.clone().heartbeat_loop());
        tokio::spawn(node.clone().controller_loop());
        tokio::spawn(node.clone().metrics_loop());
        Ok(node)
    }

    pub fn node_id(&self) -> NodeId {
        self.cfg.node_id
    }

    /// This broker's metadata image as of the last applied command: shared, never changed
    /// in place (the next apply publishes a new one), so taking it costs one `Arc` clone.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.sm.image()
    }

    /// Changes to the image: the value is bumped after every apply.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.sm.subscribe()
    }

    /// The quorum leader and voters as this broker sees them.
    pub fn quorum(&self) -> (Option<NodeId>, Vec<NodeId>) {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.current_leader, m.membership_config.membership().voter_ids().collect())
    }

    /// Wait until this broker is registered with the quorum (a leader exists and accepted
    /// it): before that it cannot place replicas or serve metadata about itself.
    pub async fn wait_registered(&self) {
        let mut rx = self.registered.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Whether `wait_registered` would return at once.
    pub fn is_registered(&self) -> bool {
        *self.registered.borrow()
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }

    /// Resolves, with the reason, once the metadata quorum's raft core has stopped by itself:
    /// a storage failure such as a full disk under its RocksDB. openraft does not restart it,
    /// so this broker can no longer take part in the metadata quorum. Awaited only while the
    /// broker runs, so a requested shutdown never resolves it.
    pub async fn quorum_failed(&self) -> String {
        let mut rx = self.raft.metrics();
        loop {
            let failed = rx.borrow_and_update().running_state.clone().err();
            if let Some(fatal) = failed {
                return fatal.to_string();
            }
            if rx.changed().await.is_err() {
                return "the raft core ended".to_string();
            }
        }
    }

    /// A broker marked draining that is asked to stop first lets the moves taking its replicas
    /// off finish (up to `timeout`): it is the source they copy from, and a partition whose
    /// only replica it holds would otherwise be offline until it came back. This closes the
    /// window of a scale-down in which the operator drains a broker whose pod is already
    /// terminating. Partitions the drain could not move (blocked) are not waited for.
    pub async fn wait_for_drain(&self, timeout: Duration) {
        let me = self.cfg.node_id;
        let moving_off = |image: &MetadataImage| {
            image.topics.values().flat_map(|t| t.partitions.iter()).filter(|p| p.removing.contains(&me)).count()
        };
        let image = self.image();
        let moving = moving_off(&image);
        if !image.brokers.get(&me).is_some_and(|b| b.draining) || moving == 0 {
            return;
        }
        tracing::info!(moving, "draining: waiting for the moves off this broker before stopping");
        let mut changes = self.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            while moving_off(&self.image()) > 0 {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        match waited {
            Ok(()) => tracing::info!("draining: the moves off this broker finished"),
            Err(_) => tracing::warn!(
                ?timeout,
                moving = moving_off(&self.image()),
                "draining: moves still running; stopping anyway"
            ),
        }
    }

    /// Kafka's controlled shutdown: before this broker stops, the quorum fences it, which
    /// moves the leadership of its partitions to other in-sync replicas and takes it out of
    /// every ISR it shares with another broker, so that clients and acks=all move on at once
    /// instead of after the session timeout. Heartbeats stop first, so the quorum leader does
    /// not unfence it again (it unfences only on a heartbeat newer than the fence). Skipped
    /// when no other live broker could take anything over; given up after `timeout` (no
    /// quorum), leaving the session timeout to fence it.
    pub async fn controlled_shutdown(&self, timeout: Duration) {
        self.shutting_down.store(true, std::sync::atomic::Ordering::SeqCst);
        let me = self.cfg.node_id;
        let image = self.image();
        if !image.is_live(me) {
            return;
        }
        if !image.live_brokers().iter().any(|b| *b != me) {
            tracing::info!("controlled shutdown: no other live broker to take over; skipped");
            return;
        }
        let started = Instant::now();
        match tokio::time::timeout(timeout, self.propose(MetadataCommand::FenceBroker { broker_id: me })).await {
            Ok(Ok(())) => {
                let image = self.image();
                let still_leading =
                    image.topics.values().flat_map(|t| t.partitions.iter()).filter(|p| p.leader == me as i64).count();
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    still_leading,
                    "controlled shutdown: fenced; leadership moved to the other in-sync replicas"
                );
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "controlled shutdown refused; stopping without it"),
            Err(_) => tracing::warn!(?timeout, "controlled shutdown not committed in time; stopping without it"),
        }
    }

    /// By server state, not `current_leader`: a restarted old leader briefly reloads its saved
    /// vote and names itself leader before it learns the new term.
    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    fn leader_addr(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&leader)?.addr.clone();
        Some((leader, addr))
    }

    /// Commit `cmd` through the quorum (forwarding to the leader if needed) and wait until
    /// this broker's image includes it, so a read after a write here sees the write.
    pub async fn propose(&self, cmd: MetadataCommand) -> Result<(), ProposeError> {
        // Checked here, before the command reaches the log: a broker that cannot decode an
        // entry cannot skip it.
        self.image().check_metadata_version(&cmd)?;
        let started = Instant::now();
        let deadline = started + PROPOSE_DEADLINE;
        let mut last_err = String::from("no leader elected");
        while Instant::now() < deadline {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let write = match tokio::time::timeout(remaining, self.raft.client_write(cmd.clone())).await {
                Ok(w) => w,
                Err(_) => {
                    last_err = "not committed before the deadline (a leader without a quorum?)".into();
                    break;
                }
            };
            let outcome = match write {
                Ok(resp) => Some((resp.data, resp.log_id.index)),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => {
                    match fwd.leader_node.map(|n| n.addr).or_else(|| self.leader_addr().map(|(_, a)| a)) {
                        Some(addr) if fwd.leader_id != Some(self.cfg.node_id) => {
                            let env = Envelope { group: METADATA_GROUP, request: Request::Propose(cmd.clone()) };
                            match self.transport.call(&addr, &env, RPC_TIMEOUT).await {
                                Ok(Response::Propose(Ok(done))) => Some(done),
                                Ok(Response::Propose(Err(e))) => {
                                    last_err = e.to_string();
                                    None
                                }
                                Ok(other) => {
                                    last_err = format!("unexpected response {other:?}");
                                    None
                                }
                                Err(e) => {
                                    last_err = format!("leader at {addr}: {e}");
                                    None
                                }
                            }
                        }
                        _ => {
                            last_err = "no quorum leader known".into();
                            None
                        }
                    }
                }
                Err(e) => {
                    last_err = e.to_string();
                    None
                }
            };
            if let Some((CommandResult(result), index)) = outcome {
                self.wait_applied(index, deadline).await;
                self.metrics.propose_seconds.observe(started.elapsed().as_secs_f64());
                return result.map_err(ProposeError::Metadata);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(ProposeError::Unavailable(last_err))
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) {
        let mut rx = self.raft.metrics();
        let timeout = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(timeout, rx.wait_for(|m| m.last_applied.is_some_and(|l| l.index >= index))).await;
    }

    // ---- convenience writes used by the admin API and, later, the Kafka handlers ----

    /// Create a topic. Without an explicit assignment, replicas are placed over the live
    /// brokers as Kafka does (round-robin from a random start).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: BTreeMap<String, String>,
        assignment: Option<Vec<Vec<NodeId>>>,
    ) -> Result<(), ProposeError> {
        let assignment = match assignment {
            Some(a) => a,
            None => self.place_replicas(0, partitions, replication_factor)?,
        };
        let topic_id = format!("{:016x}{:016x}", random_usize() as u64, random_usize() as u64);
        self.propose(MetadataCommand::CreateTopic { name: name.to_string(), topic_id, assignment, configs }).await
    }

    /// Grow a topic to `total` partitions.
    pub async fn create_partitions(&self, name: &str, total: u32) -> Result<(), ProposeError> {
        let image = self.image();
        let topic = image.topics.get(name).ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?;
        let current = topic.partitions.len() as u32;
        if total <= current {
            return Err(MetadataError::InvalidPartitions(format!(
                "topic '{name}' has {current} partitions; the count can only grow"
            ))
            .into());
        }
        let assignment = self.place_replicas(current, total - current, topic.replication_factor() as u16)?;
        self.propose(MetadataCommand::CreatePartitions { name: name.to_string(), assignment }).await
    }

    fn place_replicas(&self, first: u32, count: u32, rf: u16) -> Result<Vec<Vec<NodeId>>, ProposeError> {
        if count == 0 {
            return Err(MetadataError::InvalidPartitions("must be at least 1".into()).into());
        }
        let image = self.image();
        // Draining brokers take no new replicas.
        let live = image.placeable_brokers();
        if image.live_brokers().is_empty() {
            // No broker registered yet (the quorum is still forming): a retryable condition,
            // not a bad replication factor.
            return Err(ProposeError::Unavailable("no live broker registered yet".into()));
        }
        if rf == 0 || rf as usize > live.len() {
            return Err(MetadataError::InvalidReplicationFactor(format!(
                "replication factor {rf} with {} live, non-draining brokers",
                live.len()
            ))
            .into());
        }
        // Brokers without a rack share the rack "": with none set, the rack-unaware placement.
        let racked: Vec<(NodeId, &str)> =
            live.iter().map(|b| (*b, image.brokers[b].rack.as_deref().unwrap_or(""))).collect();
        Ok(assign_replicas(&racked, first, count, rf as usize, random_usize(), random_usize()))
    }

    // ---- background tasks ----

    /// The lowest-id voter initialises the quorum with every voter; a broker outside the
    /// voters asks the leader to add it as a learner.
    async fn bootstrap_or_join(self: Arc<Self>) {
        if self.cfg.is_voter() {
            let lowest = self.cfg.voters.iter().map(|(id, _)| *id).min();
            if lowest == Some(self.cfg.node_id) && !self.raft.is_initialized().await.unwrap_or(true) {
                let members: BTreeMap<NodeId, BasicNode> =
                    self.cfg.voters.iter().map(|(id, addr)| (*id, BasicNode::new(addr))).collect();
                match self.raft.initialize(members).await {
                    Ok(()) => tracing::info!(voters = ?self.cfg.voters, "initialised the metadata quorum"),
                    Err(e) => tracing::debug!(error = %e, "quorum already initialised"),
                }
            }
            return;
        }
        loop {
            for (_, addr) in &self.cfg.voters {
                let env = Envelope {
                    group: METADATA_GROUP,
                    request: Request::AddLearner { node_id: self.cfg.node_id, raft_addr: self.cfg.raft_addr.clone() },
                };
                if let Ok(Response::AddLearner(Ok(()))) = self.transport.call(addr, &env, RPC_TIMEOUT).await {
                    tracing::info!("joined the metadata quorum as a learner");
                    return;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Register this broker (at every start) until the quorum accepts it.
    async fn register_loop(self: Arc<Self>) {
        let cmd = MetadataCommand::RegisterBroker {
            broker_id: self.cfg.node_id,
            raft_addr: self.cfg.raft_addr.clone(),
            kafka_addr: self.cfg.kafka_addr.clone(),
            http_addr: self.cfg.http_addr.clone(),
            rack: self.cfg.rack.clone(),
            metadata_version: self.cfg.metadata_version,
        };
        loop {
            match self.propose(cmd.clone()).await {
                Ok(()) => {
                    tracing::info!(broker_id = self.cfg.node_id, "registered with the metadata quorum");
                    self.registered.send_replace(true);
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "registration not accepted yet"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn record_heartbeat(&self, broker: NodeId) {
        self.last_seen.lock().expect("heartbeat lock").insert(broker, Instant::now());
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.heartbeat_interval);
        loop {
            tick.tick().await;
            if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            match self.leader_addr() {
                Some((leader, _)) if leader == self.cfg.node_id => self.record_heartbeat(self.cfg.node_id),
                Some((_, addr)) => {
                    let env =
                        Envelope { group: METADATA_GROUP, request: Request::Heartbeat { broker_id: self.cfg.node_id } };
                    let _ = self.transport.call(&addr, &env, RPC_TIMEOUT).await;
                }
                None => {}
            }
        }
    }

    /// While leader: fence brokers silent past the session timeout, unfence those back.
    async fn controller_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut epochs: HashMap<NodeId, u64> = HashMap::new();
        // When this leader first saw each broker fenced: only a heartbeat after that unfences
        // it, so a broker that fenced itself in a controlled shutdown stays fenced.
        let mut fenced_seen: HashMap<NodeId, Instant> = HashMap::new();
        loop {
            tick.tick().await;
            if !self.is_leader() {
                *self.leader_since.lock().expect("leader lock") = None;
                epochs.clear();
                fenced_seen.clear();
                continue;
            }
            let now = Instant::now();
            let since = *self.leader_since.lock().expect("leader lock").get_or_insert_with(|| {
                // A new leader has no heartbeat history: give every broker a full session.
                let mut seen = self.last_seen.lock().expect("heartbeat lock");
                seen.clear();
                now
            });
            let image = self.image();
            for broker in image.brokers.values() {
                // A (re-)registration is a sign of life: start its session now.
                if epochs.insert(broker.id, broker.epoch).is_some_and(|e| e != broker.epoch) {
                    self.record_heartbeat(broker.id);
                }
                if broker.fenced {
                    fenced_seen.entry(broker.id).or_insert(now);
                } else {
                    fenced_seen.remove(&broker.id);
                }
                let heard = self.last_seen.lock().expect("heartbeat lock").get(&broker.id).copied();
                let session =
                    Session { heard, fenced_since: fenced_seen.get(&broker.id).copied(), leader_since: since };
                let cmd = match session.change(now, self.cfg.session_timeout) {
                    Some(FencingChange::Fence) => {
                        tracing::warn!(
                            broker_id = broker.id,
                            "no heartbeat for the session timeout; fencing the broker"
                        );
                        MetadataCommand::FenceBroker { broker_id: broker.id }
                    }
                    Some(FencingChange::Unfence) => {
                        tracing::info!(broker_id = broker.id, "fenced broker heartbeats again; unfencing it");
                        MetadataCommand::UnfenceBroker { broker_id: broker.id }
                    }
                    None => continue,
                };
                if let Err(e) = self.propose(cmd).await {
                    tracing::warn!(error = %e, "broker fencing change failed");
                }
            }
        }
    }

    async fn metrics_loop(self: Arc<Self>) {
        let mut rx = self.raft.metrics();
        let mut image_rx = self.subscribe();
        let mut leader = None;
        loop {
            {
                let m = rx.borrow_and_update();
                self.metrics.term.set(m.current_term as i64);
                self.metrics.last_applied.set(m.last_applied.map(|l| l.index as i64).unwrap_or(0));
                self.metrics.is_leader.set((m.state == ServerState::Leader) as i64);
                if m.current_leader != leader {
                    if m.current_leader.is_some() {
                        self.metrics.leader_changes.inc();
                        tracing::info!(leader = ?m.current_leader, term = m.current_term, "metadata quorum leader");
                    }
                    leader = m.current_leader;
                }
            }
            let fenced = self.sm.image().brokers.values().filter(|b| b.fenced).count();
            self.metrics.fenced_brokers.set(fenced as i64);
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                r = image_rx.changed() => if r.is_err() { return },
            }
        }
    }
}

impl RequestHandler for ClusterNode {
    async fn handle(self: Arc<Self>, env: Envelope) -> Response {
        if env.group != METADATA_GROUP {
            return Response::Refused(format!("unknown raft group {}", env.group));
        }
        match env.request {
            Request::AppendEntries(rpc) => Response::AppendEntries(self.raft.append_entries(rpc).await),
            Request::Vote(rpc) => Response::Vote(self.raft.vote(rpc).await),
            Request::InstallSnapshot(rpc) => Response::InstallSnapshot(self.raft.install_snapshot(rpc).await),
            Request::Propose(cmd) => {
                Response::Propose(match tokio::time::timeout(RPC_TIMEOUT, self.raft.client_write(cmd)).await {
                    Err(_) => Err(ForwardError::Failed("not committed in time (no quorum?)".into())),
                    Ok(Ok(resp)) => Ok((resp.data, resp.log_id.index)),
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                        Err(ForwardError::NotLeader { leader: f.leader_id })
                    }
                    Ok(Err(e)) => Err(ForwardError::Failed(e.to_string())),
                })
            }
            Request::AddLearner { node_id, raft_addr } => {
                Response::AddLearner(match self.raft.add_learner(node_id, BasicNode::new(raft_addr), false).await {
                    Ok(_) => Ok(()),
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                        Err(ForwardError::NotLeader { leader: f.leader_id })
                    }
                    Err(e) => Err(ForwardError::Failed(e.to_string())),
                })
            }
            Request::Heartbeat { broker_id } => Response::Heartbeat(if self.is_leader() {
                self.record_heartbeat(broker_id);
                Ok(())
            } else {
                Err(ForwardError::NotLeader { leader: self.raft.metrics().borrow().current_leader })
            }),
        }
    }
}

/// One broker as the quorum leader's controller sees it.
struct Session {
    /// The broker's last heartbeat to this leader, if any.
    heard: Option<Instant>,
    /// When this leader first saw the broker fenced; `None` while it is not.
    fenced_since: Option<Instant>,
    /// When this node became leader: a broker it has not heard yet gets a full session from then.
    leader_since: Instant,
}

#[derive(Debug, PartialEq, Eq)]
enum FencingChange {
    Fence,
    Unfence,
}

impl Session {
    /// Fence a broker silent for the session timeout; unfence a fenced one only on a heartbeat
    /// newer than its fence, so that a broker that fenced itself in a controlled shutdown
    /// (and stopped heartbeating first) is not brought back by the heartbeats before it.
    fn change(&self, now: Instant, session_timeout: Duration) -> Option<FencingChange> {
        let alive = now.duration_since(self.heard.unwrap_or(self.leader_since)) < session_timeout;
        match self.fenced_since {
            None if !alive => Some(FencingChange::Fence),
            Some(fenced) if alive && self.heard.is_some_and(|t| t > fenced) => Some(FencingChange::Unfence),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fencing_follows_heartbeats_and_a_controlled_shutdown_stays_fenced() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let timeout = Duration::from_secs(9);
        let session = |heard: Option<u64>, fenced_since: Option<u64>| Session {
            heard: heard.map(at),
            fenced_since: fenced_since.map(at),
            leader_since: t0,
        };
        // A new leader gives an unheard broker a full session, then fences it.
        assert_eq!(session(None, None).change(at(8_000), timeout), None);
        assert_eq!(session(None, None).change(at(9_000), timeout), Some(FencingChange::Fence));
        assert_eq!(session(Some(5_000), None).change(at(13_000), timeout), None);
        assert_eq!(session(Some(5_000), None).change(at(14_000), timeout), Some(FencingChange::Fence));
        // Fenced for silence, heard again: unfenced.
        assert_eq!(session(Some(20_000), Some(14_000)).change(at(20_100), timeout), Some(FencingChange::Unfence));
        // Fenced by its own controlled shutdown right after its last heartbeat: stays fenced,
        // and is not fenced again.
        assert_eq!(session(Some(1_000), Some(1_050)).change(at(1_500), timeout), None);
        assert_eq!(session(Some(1_000), Some(1_050)).change(at(30_000), timeout), None);
        // Fenced and still silent: nothing to do.
        assert_eq!(session(None, Some(9_000)).change(at(9_500), timeout), None);
    }
}
