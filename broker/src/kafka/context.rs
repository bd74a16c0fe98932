//! What the Kafka handlers share: the broker's identity, the cluster metadata, the logs,
//! replication (whose change ring wakes long-polling fetches when data is appended), fetch
//! sessions and the listener's metrics.

use std::sync::Arc;

use super::auto_create::AutoTopicCreator;
use super::fetch_session::{self, FetchSessionCache};
use super::group::{GroupConfig, GroupCoordinator};
use super::metrics::KafkaMetrics;
use super::producer_ids::ProducerIdManager;
use crate::cluster::{ClusterNode, NodeId};
use crate::log::{LogManager, TopicPartition};
use crate::partition::{Replication, ReplicationConfig};

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `num.partitions` for auto-created topics.
    pub default_partitions: u32,
    /// `default.replication.factor` for auto-created topics.
    pub default_replication_factor: u16,
    /// `socket.request.max.bytes`: a larger frame closes the connection.
    pub max_request_bytes: usize,
    /// The cluster id returned in Metadata.
    pub cluster_id: String,
    /// Follower fetching, ISR upkeep (`replica.lag.time.max.ms`, ...).
    pub replication: ReplicationConfig,
    /// The group coordinator's settings (`offsets.retention.minutes`, ...).
    pub groups: GroupConfig,
    /// `replica.selector.class`: whether consumers may read from followers in their rack.
    pub replica_selector: ReplicaSelector,
    /// `max.incremental.fetch.session.cache.slots` (KIP-227); 0 turns fetch sessions off.
    pub max_fetch_sessions: usize,
}

/// Kafka's `replica.selector.class` (KIP-392): which replica a consumer reads from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplicaSelector {
    /// Always the leader (Kafka's default, `LeaderSelector`).
    #[default]
    Leader,
    /// A consumer that names its rack (`client.rack`) is sent to an in-sync replica in that
    /// rack when the leader is elsewhere (`RackAwareReplicaSelector`).
    Rack,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            auto_create_topics: true,
            default_partitions: 1,
            default_replication_factor: 1,
            max_request_bytes: 100 * 1024 * 1024,
            cluster_id: "weir".to_string(),
            replication: ReplicationConfig::default(),
            groups: GroupConfig::default(),
            replica_selector: ReplicaSelector::Leader,
            max_fetch_sessions: crate::kafka::fetch_session::DEFAULT_MAX_SESSIONS,
        }
    }
}

pub struct KafkaContext {
    pub node_id: NodeId,
    pub cluster: Arc<ClusterNode>,
    pub logs: Arc<LogManager>,
    pub config: KafkaConfig,
    pub groups: Arc<GroupCoordinator>,
    pub producer_ids: ProducerIdManager,
    /// Leader/follower state, high watermarks and acks=all waits of the local replicas.
    pub replication: Arc<Replication>,
    /// Incremental fetch sessions (KIP-227) of consumers and followers fetching from here.
    pub fetch_sessions: FetchSessionCache,
    /// Requests, client traffic and connections of the Kafka listener.
    pub metrics: KafkaMetrics,
    /// Creations of topics that clients named (`kafka/auto_create.rs`).
    pub auto_create: Arc<AutoTopicCreator>,
}

impl KafkaContext {
    pub fn new(node_id: NodeId, cluster: Arc<ClusterNode>, logs: Arc<LogManager>, config: KafkaConfig) -> Arc<Self> {
        let replication = Replication::new(node_id, cluster.clone(), logs.clone(), config.replication.clone());
        let groups =
            GroupCoordinator::new(node_id, cluster.clone(), logs.clone(), replication.clone(), config.groups.clone());
        let producer_ids = ProducerIdManager::new(node_id, cluster.clone());
        let fetch_sessions = FetchSessionCache::new(config.max_fetch_sessions, fetch_session::DEFAULT_EVICTION_AFTER);
        let metrics = KafkaMetrics::unregistered();
        let auto_create = AutoTopicCreator::new(cluster.clone());
        Arc::new(Self {
            node_id,
            cluster,
            logs,
            config,
            groups,
            producer_ids,
            replication,
            fetch_sessions,
            metrics,
            auto_create,
        })
    }

    /// Wakes the fetches waiting on the partitions just appended to (`partition/changes.rs`).
    pub fn notify_appended<'a>(&self, appended: impl IntoIterator<Item = &'a TopicPartition>) {
        self.replication.changes.record_all(appended);
    }
}
