//! Types of the metadata quorum: the openraft type configuration, the commands the
//! replicated state machine applies, and their typed errors.

use std::collections::BTreeMap;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// Broker id = raft node id = StatefulSet ordinal. Kafka carries broker ids as i32.
pub type NodeId = u64;

/// Every raft message and every stored key carries the id of its raft group. The metadata
/// quorum is group 0; quorum queues will each be another group on the same plumbing.
pub type GroupId = u64;
pub const METADATA_GROUP: GroupId = 0;

/// The newest metadata version this binary reads and writes (Kafka's `metadata.version`).
/// A command that an older broker could not read needs a higher version, and is proposed only
/// once every live broker registered with at least that version, so that a rolling upgrade
/// never puts an entry in the raft log that a broker still on the old binary cannot decode
/// (it would stop following the log). Each version adds:
///
/// - 0: everything up to and including the reassignment throttle;
/// - 1: named throttle holds (`SetReplicationThrottleHold`) and the owner of a draining mark;
/// - 2: Kafka's throttle configs (`AlterBrokerConfig`, and the topic configs
///   `leader.replication.throttled.replicas` / `follower.replication.throttled.replicas`,
///   which an older broker refuses as unknown keys).
///
/// A new optional field of an existing command counts too: an old broker would skip it, and
/// its image would then differ from the others' for good.
pub const METADATA_VERSION: u32 = 2;

openraft::declare_raft_types!(
    /// openraft types of the metadata quorum.
    pub TypeConfig:
        D = MetadataCommand,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime
);

pub type Raft = openraft::Raft<TypeConfig>;

/// One change to the cluster metadata. Everything non-deterministic (wall clock, random
/// replica placement) is decided by the proposer and carried in the command, so that every
/// replica that applies the log reaches the same image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetadataCommand {
    /// A broker announces itself (at every start); registering unfences it.
    RegisterBroker {
        broker_id: NodeId,
        raft_addr: String,
        kafka_addr: String,
        http_addr: String,
        rack: Option<String>,
        /// The newest metadata version the broker reads (absent from brokers older than the
        /// versioning: 0).
        #[serde(default)]
        metadata_version: u32,
    },
    /// The quorum leader saw no heartbeat for `broker.session.timeout.ms`: fence the broker
    /// and move leadership of its partitions to another ISR member.
    FenceBroker {
        broker_id: NodeId,
    },
    /// A fenced broker heartbeats again.
    UnfenceBroker {
        broker_id: NodeId,
    },
    CreateTopic {
        name: String,
        topic_id: String,
        /// One replica list per partition, first replica = preferred leader.
        assignment: Vec<Vec<NodeId>>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    /// Add partitions; `assignment` holds the replica lists of the new partitions only.
    CreatePartitions {
        name: String,
        assignment: Vec<Vec<NodeId>>,
    },
    AlterTopicConfig {
        name: String,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    },
    /// Start, replace or cancel a reassignment of a partition's replicas (Kafka's
    /// AlterPartitionReassignments). `target` is the wanted replica list (first = preferred
    /// leader); `None` cancels an ongoing reassignment (back to the original replicas). The
    /// replica set becomes the union of target and original while the adding replicas catch
    /// up; the state machine completes the move once they are all in the ISR. Refused unless
    /// `partition_epoch` is the current one.
    ReassignPartition {
        topic: String,
        partition: u32,
        partition_epoch: i32,
        target: Option<Vec<NodeId>>,
    },
    /// Mark a broker as draining (no replicas placed or added on it) or clear the mark.
    /// `owner` names who set the mark (the operator names itself, so that a restarted
    /// operator still knows which marks are its own); it is kept only when the mark is set on
    /// a broker not draining yet.
    SetBrokerDraining {
        broker_id: NodeId,
        draining: bool,
        #[serde(default)]
        owner: Option<String>,
    },
    /// The reassignment throttle, in bytes per second for every leader (0: none): what a
    /// leader serves to replicas a reassignment is adding (`partition/throttle.rs`).
    SetReplicationThrottle {
        bytes_per_sec: u64,
    },
    /// A named hold on the reassignment throttle (0 removes it): while any hold is set, the
    /// throttle in force is the lowest non-zero value among the holds and the cluster's own
    /// (`MetadataImage::effective_replication_throttle`). The operator holds one while its
    /// own moves run, kept in the metadata so that it survives the operator's restarts.
    SetReplicationThrottleHold {
        holder: String,
        bytes_per_sec: u64,
    },
    /// Set or delete dynamic broker configs (Kafka's IncrementalAlterConfigs on a broker
    /// resource): `resource` is a broker id, or "" for every broker's default. Only the
    /// replication throttle rates (`throttle_configs.rs`).
    AlterBrokerConfig {
        resource: String,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    },
    /// Hand `broker_id` the next `count` idempotent-producer ids (KIP-730's block allocation).
    AllocateProducerIds {
        broker_id: NodeId,
        count: u32,
    },
    /// Leader / ISR change proposed by a partition leader or the controller (KRaft's
    /// PartitionChangeRecord). Refused unless `partition_epoch` is the current one.
    ChangePartition {
        topic: String,
        partition: u32,
        partition_epoch: i32,
        leader: Option<i64>,
        isr: Option<Vec<NodeId>>,
    },
    /// A change to the durable AMQP entities (vhosts, exchanges, queues, bindings).
    Amqp(super::amqp_image::AmqpCommand),
}

impl MetadataCommand {
    /// The lowest metadata version whose brokers can read this command.
    pub fn metadata_version(&self) -> u32 {
        match self {
            MetadataCommand::SetReplicationThrottleHold { .. } => 1,
            MetadataCommand::SetBrokerDraining { owner: Some(_), .. } => 1,
            MetadataCommand::AlterBrokerConfig { .. } => 2,
            MetadataCommand::CreateTopic { configs, .. } if names_throttled_replicas(configs.keys()) => 2,
            MetadataCommand::AlterTopicConfig { set, delete, .. }
                if names_throttled_replicas(set.keys().chain(delete.iter())) =>
            {
                2
            }
            _ => 0,
        }
    }
}

fn names_throttled_replicas<'a>(mut keys: impl Iterator<Item = &'a String>) -> bool {
    keys.any(|k| super::throttle_configs::TOPIC_REPLICA_LIST_KEYS.contains(&k.as_str()))
}

/// The state machine's answer to one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult(pub Result<(), MetadataError>);

/// Why the state machine refused a command. Mapped to Kafka error codes and HTTP statuses
/// at the edges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", content = "message", rename_all = "snake_case")]
pub enum MetadataError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("invalid topic name: {0}")]
    InvalidTopicName(String),
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("broker {0} is not registered")]
    UnknownBroker(NodeId),
    #[error("partition {topic}-{partition} does not exist")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("stale partition epoch {given} (current {current})")]
    StalePartitionEpoch { given: i32, current: i32 },
    #[error("invalid partition change: {0}")]
    InvalidPartitionChange(String),
    #[error("vhost '{0}' does not exist")]
    UnknownVhost(String),
    #[error("no exchange '{0}'")]
    UnknownExchange(String),
    #[error("no queue '{0}'")]
    UnknownQueue(String),
    #[error("no such binding: {0}")]
    UnknownBinding(String),
    #[error("{0}")]
    InequivalentArguments(String),
    #[error("{0}")]
    AccessRefused(String),
    #[error("{0}")]
    InvalidName(String),
    /// A command newer than some live broker can read (a rolling upgrade not finished, or a
    /// broker pinned with `--metadata-version`).
    #[error("this change needs metadata version {needed}, but broker(s) {behind:?} run version {current}; upgrade them (or lift their --metadata-version) first")]
    MetadataVersionTooLow { needed: u32, current: u32, behind: Vec<NodeId> },
}
