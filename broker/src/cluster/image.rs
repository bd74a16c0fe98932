//! The metadata image: what exists in the cluster, as the state machine holds it. `apply`
//! validates every command, so replaying the log always yields the same image; every
//! broker keeps one and serves reads from it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::throttle_configs;
use super::types::{MetadataCommand, MetadataError, NodeId};
use crate::log::LogConfig;

/// No leader (Kafka's -1).
pub const NO_LEADER: i64 = -1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub id: NodeId,
    pub raft_addr: String,
    pub kafka_addr: String,
    pub http_addr: String,
    pub rack: Option<String>,
    pub fenced: bool,
    /// Bumped at every registration (a restart), as KRaft's broker epoch.
    pub epoch: u64,
    /// Being drained by the operator: no replica is placed or added here (kept across
    /// restarts until cleared).
    #[serde(default)]
    pub draining: bool,
    /// Who set the draining mark, when the caller named itself (`?owner=` on the drain call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_owner: Option<String>,
    /// The newest metadata version the broker reads, as it registered (0 for brokers older
    /// than the versioning).
    #[serde(default)]
    pub metadata_version: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub leader: i64,
    pub leader_epoch: i32,
    /// Bumped at every change of replicas, ISR or leader; stale proposals are refused.
    pub partition_epoch: i32,
    /// An ongoing reassignment (KIP-455): replicas being added (they catch up as followers
    /// and are part of `replicas` meanwhile) and replicas to drop once every adding one is
    /// in the ISR. Both empty when no reassignment runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<NodeId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<NodeId>,
}

impl PartitionRecord {
    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replica list the partition will have once its reassignment completes (the
    /// current one when none runs).
    pub fn target_replicas(&self) -> Vec<NodeId> {
        self.replicas.iter().copied().filter(|r| !self.removing.contains(r)).collect()
    }

    /// The replica list before the ongoing reassignment started.
    pub fn original_replicas(&self) -> Vec<NodeId> {
        self.replicas.iter().copied().filter(|r| !self.adding.contains(r)).collect()
    }

    /// Finish the ongoing reassignment if every adding replica is in the ISR: the removed
    /// replicas leave replicas and ISR, and leadership moves to the first target replica in
    /// the ISR when the leader is removed. Returns whether it changed anything; the caller
    /// bumps the partition epoch.
    fn maybe_complete_reassignment(&mut self, live: &BTreeSet<NodeId>) -> bool {
        if !self.reassigning() || !self.adding.iter().all(|r| self.isr.contains(r)) {
            return false;
        }
        let target = self.target_replicas();
        let isr: Vec<NodeId> = self.isr.iter().copied().filter(|r| target.contains(r)).collect();
        let leader_stays = self.leader != NO_LEADER && target.contains(&(self.leader as NodeId));
        let new_leader = if leader_stays {
            self.leader
        } else {
            match target.iter().find(|r| isr.contains(r) && live.contains(r)) {
                Some(l) => *l as i64,
                // Nobody to lead after the move: wait (a broker coming back retries).
                None => return false,
            }
        };
        if new_leader != self.leader {
            self.leader = new_leader;
            self.leader_epoch += 1;
        }
        self.replicas = target;
        self.isr = isr;
        self.adding.clear();
        self.removing.clear();
        true
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub topic_id: String,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionRecord>,
}

impl TopicRecord {
    pub fn replication_factor(&self) -> usize {
        self.partitions.first().map(|p| p.replicas.len()).unwrap_or(0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub brokers: BTreeMap<NodeId, BrokerRecord>,
    pub topics: BTreeMap<String, TopicRecord>,
    /// The first producer id not handed out yet.
    #[serde(default)]
    pub next_producer_id: i64,
    /// The last block of producer ids `[start, end)` handed to each broker.
    #[serde(default)]
    pub producer_id_blocks: BTreeMap<NodeId, (i64, i64)>,
    /// Durable AMQP entities.
    #[serde(default)]
    pub amqp: super::amqp_image::AmqpImage,
    /// What each leader may serve per second to replicas being added by reassignments
    /// (0: unthrottled); `partition/throttle.rs`.
    #[serde(default)]
    pub replication_throttle_bytes_per_sec: u64,
    /// Named holds on that throttle (holder → bytes per second, never 0); see
    /// `effective_replication_throttle`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replication_throttle_holds: BTreeMap<String, u64>,
    /// Dynamic broker configs by resource name ("" = every broker's default, else a broker
    /// id): Kafka's replication throttle rates (`throttle_configs.rs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
}

/// Topic config keys beyond the log's own.
const TOPIC_ONLY_CONFIG_KEYS: &[&str] = &[
    "min.insync.replicas",
    "unclean.leader.election.enable",
    throttle_configs::LEADER_THROTTLED_REPLICAS,
    throttle_configs::FOLLOWER_THROTTLED_REPLICAS,
];

/// Refuse unknown keys and bad values: the log's keys through `LogConfig`, plus the topic's.
pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), MetadataError> {
    let mut log_keys = BTreeMap::new();
    for (k, v) in configs {
        match k.as_str() {
            "min.insync.replicas" => match v.trim().parse::<i32>() {
                Ok(n) if n >= 1 => {}
                _ => return Err(MetadataError::InvalidConfig(format!("{k}={v}: must be an integer >= 1"))),
            },
            "unclean.leader.election.enable" => {
                if v != "true" && v != "false" {
                    return Err(MetadataError::InvalidConfig(format!("{k}={v}: must be true or false")));
                }
            }
            k if throttle_configs::TOPIC_REPLICA_LIST_KEYS.contains(&k) => {
                throttle_configs::validate_replica_list(k, v)?
            }
            _ => {
                log_keys.insert(k.clone(), v.clone());
            }
        }
    }
    LogConfig::default().with_overrides(&log_keys).map(|_| ()).map_err(|e| MetadataError::InvalidConfig(e.to_string()))
}

/// Every topic config key the broker understands.
pub fn topic_config_keys() -> impl Iterator<Item = &'static str> {
    crate::log::config::LOG_CONFIG_KEYS.iter().chain(TOPIC_ONLY_CONFIG_KEYS).copied()
}

/// Kafka's topic name rules: 1..=249 chars of [a-zA-Z0-9._-], not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    let bad = |why: &str| Err(MetadataError::InvalidTopicName(format!("'{name}': {why}")));
    if name.is_empty() {
        return bad("empty");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if name.len() > 249 {
        return bad("longer than 249 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

impl MetadataImage {
    pub fn live_brokers(&self) -> Vec<NodeId> {
        self.brokers.values().filter(|b| !b.fenced).map(|b| b.id).collect()
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionRecord> {
        self.topics.get(topic)?.partitions.get(partition as usize)
    }

    /// Registered and not fenced.
    pub fn is_live(&self, id: NodeId) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// Apply one committed command. On error the image is unchanged.
    pub fn apply(&mut self, cmd: &MetadataCommand) -> Result<(), MetadataError> {
        match cmd {
            MetadataCommand::RegisterBroker { broker_id, raft_addr, kafka_addr, http_addr, rack, metadata_version } => {
                // A restart: a new epoch; the draining mark and its owner stay.
                let previous = self.brokers.get(broker_id);
                let epoch = previous.map(|b| b.epoch + 1).unwrap_or(0);
                let draining = previous.is_some_and(|b| b.draining);
                let draining_owner = previous.and_then(|b| b.draining_owner.clone());
                self.brokers.insert(
                    *broker_id,
                    BrokerRecord {
                        id: *broker_id,
                        raft_addr: raft_addr.clone(),
                        kafka_addr: kafka_addr.clone(),
                        http_addr: http_addr.clone(),
                        rack: rack.clone(),
                        fenced: false,
                        epoch,
                        draining,
                        draining_owner,
                        metadata_version: *metadata_version,
                    },
                );
                self.elect_offline_partitions_with(*broker_id);
                Ok(())
            }
            MetadataCommand::FenceBroker { broker_id } => {
                let b = self.brokers.get_mut(broker_id).ok_or(MetadataError::UnknownBroker(*broker_id))?;
                if b.fenced {
                    return Ok(());
                }
                b.fenced = true;
                self.move_leadership_off(*broker_id);
                Ok(())
            }
            MetadataCommand::UnfenceBroker { broker_id } => {
                let b = self.brokers.get_mut(broker_id).ok_or(MetadataError::UnknownBroker(*broker_id))?;
                b.fenced = false;
                self.elect_offline_partitions_with(*broker_id);
                Ok(())
            }
            MetadataCommand::CreateTopic { name, topic_id, assignment, configs } => {
                validate_topic_name(name)?;
                if self.topics.contains_key(name) {
                    return Err(MetadataError::TopicExists(name.clone()));
                }
                // Kafka refuses names that collide once '.' and '_' are folded (metric names).
                let folded = name.replace('.', "_");
                if let Some(other) = self.topics.keys().find(|t| t.replace('.', "_") == folded) {
                    return Err(MetadataError::InvalidTopicName(format!(
                        "'{name}' collides with existing topic '{other}'"
                    )));
                }
                if assignment.is_empty() {
                    return Err(MetadataError::InvalidPartitions("a topic needs at least one partition".into()));
                }
                validate_topic_configs(configs)?;
                let rf = assignment[0].len();
                self.validate_assignment(assignment, rf)?;
                let partitions = assignment.iter().map(|r| self.new_partition(r)).collect();
                self.topics.insert(
                    name.clone(),
                    TopicRecord {
                        name: name.clone(),
                        topic_id: topic_id.clone(),
                        configs: configs.clone(),
                        partitions,
                    },
                );
                Ok(())
            }
            MetadataCommand::DeleteTopic { name } => {
                self.topics.remove(name).map(|_| ()).ok_or_else(|| MetadataError::UnknownTopic(name.clone()))
            }
            MetadataCommand::CreatePartitions { name, assignment } => {
                let topic = self.topics.get(name).ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?;
                if assignment.is_empty() {
                    return Err(MetadataError::InvalidPartitions("no partitions to add".into()));
                }
                let rf = topic.replication_factor();
                self.validate_assignment(assignment, rf)?;
                let new: Vec<_> = assignment.iter().map(|r| self.new_partition(r)).collect();
                self.topics.get_mut(name).expect("checked").partitions.extend(new);
                Ok(())
            }
            MetadataCommand::AlterTopicConfig { name, set, delete } => {
                let topic = self.topics.get(name).ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?;
                let mut configs = topic.configs.clone();
                for k in delete {
                    if !topic_config_keys().any(|known| known == k) {
                        return Err(MetadataError::InvalidConfig(format!("unknown config key {k}")));
                    }
                    configs.remove(k);
                }
                configs.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
                validate_topic_configs(&configs)?;
                self.topics.get_mut(name).expect("checked").configs = configs;
                Ok(())
            }
            MetadataCommand::ReassignPartition { topic, partition, partition_epoch, target } => {
                let live: BTreeSet<NodeId> = self.live_brokers().into_iter().collect();
                let p = self.partition(topic, *partition).ok_or_else(|| self.unknown_partition(topic, *partition))?;
                if *partition_epoch != p.partition_epoch {
                    return Err(MetadataError::StalePartitionEpoch {
                        given: *partition_epoch,
                        current: p.partition_epoch,
                    });
                }
                let original = p.original_replicas();
                let target = match target {
                    Some(t) => t.clone(),
                    None if !p.reassigning() => {
                        return Err(MetadataError::InvalidReplicaAssignment(format!(
                            "no reassignment of {topic}-{partition} to cancel"
                        )))
                    }
                    None => original.clone(),
                };
                if target.is_empty() {
                    return Err(MetadataError::InvalidReplicaAssignment("the target replica list is empty".into()));
                }
                if target.iter().collect::<BTreeSet<_>>().len() != target.len() {
                    return Err(MetadataError::InvalidReplicaAssignment(format!("{target:?} repeats a broker")));
                }
                if let Some(unknown) = target.iter().find(|r| !self.brokers.contains_key(r)) {
                    return Err(MetadataError::UnknownBroker(*unknown));
                }
                let adding: Vec<NodeId> = target.iter().copied().filter(|r| !original.contains(r)).collect();
                // A new replica must be able to catch up, and a draining broker takes none.
                if let Some(b) = adding.iter().find(|r| !live.contains(r) || self.brokers[r].draining) {
                    return Err(MetadataError::InvalidReplicaAssignment(format!(
                        "broker {b} is fenced or draining and cannot take a new replica"
                    )));
                }
                let removing: Vec<NodeId> = original.iter().copied().filter(|r| !target.contains(r)).collect();
                // Target first (the preferred leader stays first), then the replicas on their way out.
                let mut replicas = target.clone();
                replicas.extend(removing.iter().copied());
                let isr: Vec<NodeId> = p.isr.iter().copied().filter(|r| replicas.contains(r)).collect();
                if isr.is_empty() {
                    return Err(MetadataError::InvalidPartitionChange(format!(
                        "no ISR member of {topic}-{partition} would remain in {replicas:?}"
                    )));
                }
                let p = self.partition_mut(topic, *partition)?;
                p.replicas = replicas;
                p.isr = isr;
                p.adding = adding;
                p.removing = removing;
                if p.leader != NO_LEADER && !p.replicas.contains(&(p.leader as NodeId)) {
                    // Cancelling can drop a leader that was one of the adding replicas.
                    p.leader = p.isr.iter().find(|r| live.contains(r)).map(|l| *l as i64).unwrap_or(NO_LEADER);
                    p.leader_epoch += 1;
                }
                p.maybe_complete_reassignment(&live);
                p.partition_epoch += 1;
                Ok(())
            }
            MetadataCommand::SetBrokerDraining { broker_id, draining, owner } => {
                let b = self.brokers.get_mut(broker_id).ok_or(MetadataError::UnknownBroker(*broker_id))?;
                // The first to mark a broker owns the mark; marking it again changes nothing.
                if !*draining {
                    b.draining_owner = None;
                } else if !b.draining {
                    b.draining_owner = owner.clone();
                }
                b.draining = *draining;
                Ok(())
            }
            MetadataCommand::SetReplicationThrottle { bytes_per_sec } => {
                self.replication_throttle_bytes_per_sec = *bytes_per_sec;
                Ok(())
            }
            MetadataCommand::SetReplicationThrottleHold { holder, bytes_per_sec } => {
                if *bytes_per_sec == 0 {
                    self.replication_throttle_holds.remove(holder);
                } else {
                    self.replication_throttle_holds.insert(holder.clone(), *bytes_per_sec);
                }
                Ok(())
            }
            MetadataCommand::AlterBrokerConfig { resource, set, delete } => {
                throttle_configs::validate_broker_resource(resource)?;
                let configs = throttle_configs::altered_broker_configs(self.broker_configs.get(resource), set, delete)?;
                if configs.is_empty() {
                    self.broker_configs.remove(resource);
                } else {
                    self.broker_configs.insert(resource.clone(), configs);
                }
                Ok(())
            }
            MetadataCommand::AllocateProducerIds { broker_id, count } => {
                if *count == 0 {
                    return Err(MetadataError::InvalidPartitionChange(
                        "a producer id block needs at least one id".into(),
                    ));
                }
                let start = self.next_producer_id;
                self.next_producer_id += *count as i64;
                self.producer_id_blocks.insert(*broker_id, (start, self.next_producer_id));
                Ok(())
            }
            MetadataCommand::Amqp(cmd) => self.amqp.apply(cmd),
            MetadataCommand::ChangePartition { topic, partition, partition_epoch, leader, isr } => {
                let live: BTreeSet<NodeId> = self.live_brokers().into_iter().collect();
                let p = self.partition_mut(topic, *partition)?;
                if *partition_epoch != p.partition_epoch {
                    return Err(MetadataError::StalePartitionEpoch {
                        given: *partition_epoch,
                        current: p.partition_epoch,
                    });
                }
                let new_isr = isr.clone().unwrap_or_else(|| p.isr.clone());
                if new_isr.is_empty() || new_isr.iter().any(|r| !p.replicas.contains(r)) {
                    return Err(MetadataError::InvalidPartitionChange(format!(
                        "ISR {new_isr:?} must be a non-empty subset of replicas {:?}",
                        p.replicas
                    )));
                }
                if let Some(fenced) = new_isr.iter().find(|r| !p.isr.contains(r) && !live.contains(r)) {
                    return Err(MetadataError::InvalidPartitionChange(format!(
                        "broker {fenced} is fenced and cannot join the ISR"
                    )));
                }
                let new_leader = leader.unwrap_or(p.leader);
                if new_leader != NO_LEADER {
                    let l = new_leader as NodeId;
                    if !new_isr.contains(&l) || !live.contains(&l) {
                        return Err(MetadataError::InvalidPartitionChange(format!(
                            "leader {new_leader} must be a live ISR member"
                        )));
                    }
                }
                if new_leader != p.leader {
                    p.leader_epoch += 1;
                }
                p.leader = new_leader;
                p.isr = new_isr;
                // An ISR that now holds every adding replica finishes a reassignment (KRaft
                // does the same when it applies an AlterPartition).
                p.maybe_complete_reassignment(&live);
                p.partition_epoch += 1;
                Ok(())
            }
        }
    }

    fn unknown_partition(&self, topic: &str, partition: u32) -> MetadataError {
        if self.topics.contains_key(topic) {
            MetadataError::UnknownPartition { topic: topic.to_string(), partition }
        } else {
            MetadataError::UnknownTopic(topic.to_string())
        }
    }

    /// The metadata version the cluster can use: the lowest any live broker registered with
    /// (0 with none live). A fenced broker does not hold it back; one that comes back on an
    /// old binary while a newer command is in the log stops following the log until upgraded.
    pub fn metadata_version(&self) -> u32 {
        self.brokers.values().filter(|b| !b.fenced).map(|b| b.metadata_version).min().unwrap_or(0)
    }

    /// Refuse `cmd` if some live broker could not read it.
    pub fn check_metadata_version(&self, cmd: &MetadataCommand) -> Result<(), MetadataError> {
        let needed = cmd.metadata_version();
        let current = self.metadata_version();
        if needed <= current {
            return Ok(());
        }
        let behind = self.brokers.values().filter(|b| !b.fenced && b.metadata_version < needed).map(|b| b.id).collect();
        Err(MetadataError::MetadataVersionTooLow { needed, current, behind })
    }

    /// The reassignment throttle in force: the lowest non-zero value among the cluster's own
    /// and the holds (a hold never loosens a throttle someone else set); 0 when none is set.
    pub fn effective_replication_throttle(&self) -> u64 {
        std::iter::once(self.replication_throttle_bytes_per_sec)
            .chain(self.replication_throttle_holds.values().copied())
            .filter(|v| *v > 0)
            .min()
            .unwrap_or(0)
    }

    /// A dynamic broker config of `broker`: its own value, else the cluster default's, with
    /// whether it came from the default.
    pub fn broker_config(&self, broker: NodeId, key: &str) -> Option<(&str, bool)> {
        // Asked once per replica fetch round: nothing to look up (or allocate) unless set.
        if self.broker_configs.is_empty() {
            return None;
        }
        let own = self.broker_configs.get(&broker.to_string()).and_then(|c| c.get(key)).map(|v| (v.as_str(), false));
        own.or_else(|| self.broker_configs.get("").and_then(|c| c.get(key)).map(|v| (v.as_str(), true)))
    }

    /// The Kafka throttle rate `key` (`leader.` or `follower.replication.throttled.rate`) in
    /// force on `broker`, if one is set.
    pub fn throttled_rate(&self, broker: NodeId, key: &str) -> Option<u64> {
        self.broker_config(broker, key).and_then(|(v, _)| throttle_configs::parse_rate(v))
    }

    /// Whether topic `topic`'s throttled-replica list `key` names `(partition, broker)`.
    pub fn replica_throttled(&self, topic: &str, partition: u32, broker: NodeId, key: &str) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|t| throttle_configs::topic_names_replica(&t.configs, key, partition, broker))
    }

    /// Live brokers that may take new replicas (not draining).
    pub fn placeable_brokers(&self) -> Vec<NodeId> {
        self.brokers.values().filter(|b| !b.fenced && !b.draining).map(|b| b.id).collect()
    }

    fn partition_mut(&mut self, topic: &str, partition: u32) -> Result<&mut PartitionRecord, MetadataError> {
        self.topics
            .get_mut(topic)
            .ok_or_else(|| MetadataError::UnknownTopic(topic.to_string()))?
            .partitions
            .get_mut(partition as usize)
            .ok_or(MetadataError::UnknownPartition { topic: topic.to_string(), partition })
    }

    fn validate_assignment(&self, assignment: &[Vec<NodeId>], rf: usize) -> Result<(), MetadataError> {
        let live = self.live_brokers().len();
        if rf == 0 {
            return Err(MetadataError::InvalidReplicationFactor("must be at least 1".into()));
        }
        for replicas in assignment {
            if replicas.len() != rf {
                return Err(MetadataError::InvalidReplicaAssignment(format!(
                    "every partition needs {rf} replicas, got {replicas:?}"
                )));
            }
            if replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len() {
                return Err(MetadataError::InvalidReplicaAssignment(format!("{replicas:?} repeats a broker")));
            }
            if let Some(unknown) = replicas.iter().find(|r| !self.brokers.contains_key(r)) {
                return Err(MetadataError::UnknownBroker(*unknown));
            }
        }
        if rf > live {
            return Err(MetadataError::InvalidReplicationFactor(format!(
                "replication factor {rf} is larger than the {live} live brokers"
            )));
        }
        Ok(())
    }

    fn new_partition(&self, replicas: &[NodeId]) -> PartitionRecord {
        let isr: Vec<NodeId> = replicas.iter().copied().filter(|r| self.is_live(*r)).collect();
        let leader = isr.first().map(|l| *l as i64).unwrap_or(NO_LEADER);
        PartitionRecord {
            replicas: replicas.to_vec(),
            isr,
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    /// A broker was fenced: drop it from every ISR (unless it is the last member, as KRaft
    /// keeps it so the partition can come back with it) and elect a new leader from the
    /// remaining live ISR; with `unclean.leader.election.enable=true`, from any live replica.
    fn move_leadership_off(&mut self, fenced: NodeId) {
        let live: BTreeSet<NodeId> = self.live_brokers().into_iter().collect();
        for topic in self.topics.values_mut() {
            let unclean = topic.configs.get("unclean.leader.election.enable").is_some_and(|v| v == "true");
            for p in &mut topic.partitions {
                if !p.replicas.contains(&fenced) {
                    continue;
                }
                let mut changed = false;
                if p.isr.contains(&fenced) && p.isr.len() > 1 {
                    p.isr.retain(|r| *r != fenced);
                    changed = true;
                }
                if p.leader == fenced as i64 {
                    let next = p
                        .replicas
                        .iter()
                        .find(|r| p.isr.contains(r) && live.contains(r))
                        .or_else(|| if unclean { p.replicas.iter().find(|r| live.contains(r)) } else { None })
                        .copied();
                    match next {
                        Some(l) => {
                            p.leader = l as i64;
                            if !p.isr.contains(&l) {
                                p.isr = vec![l]; // unclean: the new leader's log is the truth
                            }
                        }
                        None => p.leader = NO_LEADER,
                    }
                    p.leader_epoch += 1;
                    changed = true;
                }
                if changed {
                    p.partition_epoch += 1;
                }
            }
        }
    }

    /// A broker came back: partitions without a leader whose ISR holds it get it as leader.
    /// Reassignments that waited for a broker to lead after the move are retried too.
    fn elect_offline_partitions_with(&mut self, broker: NodeId) {
        let live: BTreeSet<NodeId> = self.live_brokers().into_iter().collect();
        for topic in self.topics.values_mut() {
            for p in &mut topic.partitions {
                let mut changed = false;
                if p.leader == NO_LEADER && p.isr.contains(&broker) {
                    p.leader = broker as i64;
                    p.leader_epoch += 1;
                    changed = true;
                }
                changed |= p.maybe_complete_reassignment(&live);
                if changed {
                    p.partition_epoch += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::types::METADATA_VERSION;

    fn register(img: &mut MetadataImage, id: NodeId) {
        img.apply(&MetadataCommand::RegisterBroker {
            broker_id: id,
            raft_addr: format!("127.0.0.{}:9093", id + 1),
            kafka_addr: format!("127.0.0.{}:9092", id + 1),
            http_addr: format!("127.0.0.{}:9644", id + 1),
            rack: None,
            metadata_version: METADATA_VERSION,
        })
        .unwrap();
    }

    fn create(img: &mut MetadataImage, name: &str, assignment: Vec<Vec<NodeId>>) -> Result<(), MetadataError> {
        img.apply(&MetadataCommand::CreateTopic {
            name: name.into(),
            topic_id: "id".into(),
            assignment,
            configs: BTreeMap::new(),
        })
    }

    #[test]
    fn create_topic_validates_names_collisions_and_replication() {
        let mut img = MetadataImage::default();
        register(&mut img, 0);
        register(&mut img, 1);
        assert!(matches!(create(&mut img, "bad name", vec![vec![0]]), Err(MetadataError::InvalidTopicName(_))));
        create(&mut img, "a.b", vec![vec![0, 1], vec![1, 0]]).unwrap();
        assert!(matches!(create(&mut img, "a.b", vec![vec![0]]), Err(MetadataError::TopicExists(_))));
        assert!(matches!(create(&mut img, "a_b", vec![vec![0]]), Err(MetadataError::InvalidTopicName(_))));
        assert!(matches!(create(&mut img, "x", vec![vec![0, 1, 2]]), Err(MetadataError::UnknownBroker(2))));
        assert!(matches!(create(&mut img, "x", vec![vec![0, 0]]), Err(MetadataError::InvalidReplicaAssignment(_))));
        let mut bad_cfg = BTreeMap::new();
        bad_cfg.insert("retention.ms".to_string(), "soon".to_string());
        let r = img.apply(&MetadataCommand::CreateTopic {
            name: "y".into(),
            topic_id: "id".into(),
            assignment: vec![vec![0]],
            configs: bad_cfg,
        });
        assert!(matches!(r, Err(MetadataError::InvalidConfig(_))));
        let p = img.partition("a.b", 1).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1, 0]));
    }

    #[test]
    fn replication_factor_above_live_brokers_is_refused() {
        let mut img = MetadataImage::default();
        for id in 0..3 {
            register(&mut img, id);
        }
        img.apply(&MetadataCommand::FenceBroker { broker_id: 2 }).unwrap();
        assert!(matches!(create(&mut img, "t", vec![vec![0, 1, 2]]), Err(MetadataError::InvalidReplicationFactor(_))));
    }

    #[test]
    fn fencing_moves_leadership_within_isr_and_unfencing_restores_offline_partitions() {
        let mut img = MetadataImage::default();
        for id in 0..3 {
            register(&mut img, id);
        }
        create(&mut img, "t", vec![vec![0, 1, 2]]).unwrap();
        create(&mut img, "u", vec![vec![1]]).unwrap();
        img.apply(&MetadataCommand::FenceBroker { broker_id: 0 }).unwrap();
        let p0 = img.partition("t", 0).unwrap().clone();
        assert_eq!((p0.leader, p0.isr.clone(), p0.leader_epoch), (1, vec![1, 2], 1));
        img.apply(&MetadataCommand::FenceBroker { broker_id: 1 }).unwrap();
        assert_eq!(img.partition("t", 0).unwrap().leader, 2);
        // Topic u has only broker 1: offline, ISR kept so it can come back.
        let p1 = img.partition("u", 0).unwrap().clone();
        assert_eq!((p1.leader, p1.isr.clone()), (NO_LEADER, vec![1]));
        img.apply(&MetadataCommand::UnfenceBroker { broker_id: 1 }).unwrap();
        assert_eq!(img.partition("u", 0).unwrap().leader, 1);
        // Broker 0 is out of the ISR of partition 0: it never becomes leader by unfencing.
        img.apply(&MetadataCommand::UnfenceBroker { broker_id: 0 }).unwrap();
        assert_eq!(img.partition("t", 0).unwrap().leader, 2);
    }

    #[test]
    fn unclean_election_only_when_the_topic_allows_it() {
        let mut img = MetadataImage::default();
        for id in 0..2 {
            register(&mut img, id);
        }
        for (name, unclean) in [("clean", "false"), ("unclean", "true")] {
            let mut configs = BTreeMap::new();
            configs.insert("unclean.leader.election.enable".to_string(), unclean.to_string());
            img.apply(&MetadataCommand::CreateTopic {
                name: name.into(),
                topic_id: "id".into(),
                assignment: vec![vec![0, 1]],
                configs,
            })
            .unwrap();
            // Broker 1 falls out of the ISR (its leader proposes the shrink).
            let epoch = img.partition(name, 0).unwrap().partition_epoch;
            img.apply(&MetadataCommand::ChangePartition {
                topic: name.into(),
                partition: 0,
                partition_epoch: epoch,
                leader: None,
                isr: Some(vec![0]),
            })
            .unwrap();
        }
        img.apply(&MetadataCommand::FenceBroker { broker_id: 0 }).unwrap();
        // Without unclean election the out-of-sync replica never leads: no leader.
        let clean = img.partition("clean", 0).unwrap();
        assert_eq!((clean.leader, clean.isr.clone()), (NO_LEADER, vec![0]));
        // With it, the live out-of-sync replica leads and the ISR restarts from it.
        let unclean = img.partition("unclean", 0).unwrap();
        assert_eq!((unclean.leader, unclean.isr.clone()), (1, vec![1]));
    }

    #[test]
    fn partition_changes_need_the_current_epoch_and_a_live_isr_leader() {
        let mut img = MetadataImage::default();
        for id in 0..3 {
            register(&mut img, id);
        }
        create(&mut img, "t", vec![vec![0, 1, 2]]).unwrap();
        let change = |epoch, leader, isr| MetadataCommand::ChangePartition {
            topic: "t".into(),
            partition: 0,
            partition_epoch: epoch,
            leader,
            isr,
        };
        img.apply(&change(0, None, Some(vec![0, 1]))).unwrap();
        assert!(matches!(img.apply(&change(0, None, Some(vec![0]))), Err(MetadataError::StalePartitionEpoch { .. })));
        assert!(matches!(img.apply(&change(1, Some(2), None)), Err(MetadataError::InvalidPartitionChange(_))));
        img.apply(&change(1, Some(1), None)).unwrap();
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 1, 2));
        // A fenced broker cannot be added back to the ISR.
        img.apply(&MetadataCommand::FenceBroker { broker_id: 2 }).unwrap();
        let epoch = img.partition("t", 0).unwrap().partition_epoch;
        assert!(matches!(
            img.apply(&change(epoch, None, Some(vec![0, 1, 2]))),
            Err(MetadataError::InvalidPartitionChange(_))
        ));
    }

    #[test]
    fn alter_config_and_create_partitions() {
        let mut img = MetadataImage::default();
        register(&mut img, 0);
        create(&mut img, "t", vec![vec![0]]).unwrap();
        let mut set = BTreeMap::new();
        set.insert("cleanup.policy".to_string(), "compact".to_string());
        img.apply(&MetadataCommand::AlterTopicConfig { name: "t".into(), set, delete: vec![] }).unwrap();
        assert_eq!(img.topics["t"].configs["cleanup.policy"], "compact");
        let r = img.apply(&MetadataCommand::AlterTopicConfig {
            name: "t".into(),
            set: BTreeMap::new(),
            delete: vec!["nope".into()],
        });
        assert!(r.is_err());
        img.apply(&MetadataCommand::CreatePartitions { name: "t".into(), assignment: vec![vec![0], vec![0]] }).unwrap();
        assert_eq!(img.topics["t"].partitions.len(), 3);
        assert!(img.apply(&MetadataCommand::DeleteTopic { name: "t".into() }).is_ok());
        assert!(matches!(
            img.apply(&MetadataCommand::DeleteTopic { name: "t".into() }),
            Err(MetadataError::UnknownTopic(_))
        ));
    }

    fn reassign(img: &mut MetadataImage, target: Option<Vec<NodeId>>) -> Result<(), MetadataError> {
        let epoch = img.partition("t", 0).unwrap().partition_epoch;
        img.apply(&MetadataCommand::ReassignPartition {
            topic: "t".into(),
            partition: 0,
            partition_epoch: epoch,
            target,
        })
    }

    fn set_isr(img: &mut MetadataImage, isr: Vec<NodeId>) -> Result<(), MetadataError> {
        let epoch = img.partition("t", 0).unwrap().partition_epoch;
        img.apply(&MetadataCommand::ChangePartition {
            topic: "t".into(),
            partition: 0,
            partition_epoch: epoch,
            leader: None,
            isr: Some(isr),
        })
    }

    #[test]
    fn reassignment_adds_first_and_removes_once_the_new_replicas_are_in_sync() {
        let mut img = MetadataImage::default();
        for id in 0..4 {
            register(&mut img, id);
        }
        create(&mut img, "t", vec![vec![0, 1, 2]]).unwrap();
        // Move the leader's replica 0 to broker 3.
        reassign(&mut img, Some(vec![3, 1, 2])).unwrap();
        let p = img.partition("t", 0).unwrap().clone();
        assert_eq!(p.replicas, vec![3, 1, 2, 0], "union: target first, then the leaving replica");
        assert_eq!((p.adding.clone(), p.removing.clone()), (vec![3], vec![0]));
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch, p.partition_epoch), (0, vec![0, 1, 2], 0, 1));
        assert_eq!(p.target_replicas(), vec![3, 1, 2]);
        // The ISR growing without the new replica changes nothing else.
        set_isr(&mut img, vec![0, 1]).unwrap();
        assert!(img.partition("t", 0).unwrap().reassigning());
        // Once broker 3 joins the ISR the move completes in the same command: 0 leaves, and
        // leadership goes to the first target replica in the ISR, with a new leader epoch.
        set_isr(&mut img, vec![0, 1, 3]).unwrap();
        let p = img.partition("t", 0).unwrap().clone();
        assert!(!p.reassigning());
        assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader, p.leader_epoch), (vec![3, 1, 2], vec![1, 3], 3, 1));
        // JSON of an image without reassignments has no adding/removing fields (old images load).
        let json = serde_json::to_string(&p).unwrap();
        assert!(!json.contains("adding"), "{json}");
        let back: PartitionRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn reassignment_refuses_stale_epochs_and_bad_targets() {
        let mut img = MetadataImage::default();
        for id in 0..4 {
            register(&mut img, id);
        }
        create(&mut img, "t", vec![vec![0, 1]]).unwrap();
        let stale = MetadataCommand::ReassignPartition {
            topic: "t".into(),
            partition: 0,
            partition_epoch: 7,
            target: Some(vec![2, 3]),
        };
        assert!(matches!(img.apply(&stale), Err(MetadataError::StalePartitionEpoch { given: 7, current: 0 })));
        assert!(matches!(reassign(&mut img, Some(vec![])), Err(MetadataError::InvalidReplicaAssignment(_))));
        assert!(matches!(reassign(&mut img, Some(vec![2, 2])), Err(MetadataError::InvalidReplicaAssignment(_))));
        assert!(matches!(reassign(&mut img, Some(vec![9])), Err(MetadataError::UnknownBroker(9))));
        assert!(matches!(reassign(&mut img, None), Err(MetadataError::InvalidReplicaAssignment(_))));
        let bad_partition = MetadataCommand::ReassignPartition {
            topic: "t".into(),
            partition: 5,
            partition_epoch: 0,
            target: Some(vec![0]),
        };
        assert!(matches!(img.apply(&bad_partition), Err(MetadataError::UnknownPartition { .. })));
        // Fenced and draining brokers take no new replica.
        img.apply(&MetadataCommand::FenceBroker { broker_id: 3 }).unwrap();
        assert!(matches!(reassign(&mut img, Some(vec![0, 3])), Err(MetadataError::InvalidReplicaAssignment(_))));
        let drain = |owner: &str| MetadataCommand::SetBrokerDraining {
            broker_id: 2,
            draining: true,
            owner: Some(owner.to_string()),
        };
        img.apply(&drain("weir-operator")).unwrap();
        assert!(matches!(reassign(&mut img, Some(vec![0, 2])), Err(MetadataError::InvalidReplicaAssignment(_))));
        assert_eq!(img.placeable_brokers(), vec![0, 1]);
        // The first owner keeps the mark when it is set again.
        img.apply(&drain("ops")).unwrap();
        assert_eq!(img.brokers[&2].draining_owner.as_deref(), Some("weir-operator"));
        // The mark and its owner survive a re-registration (a restart during a drain).
        register(&mut img, 2);
        assert!(img.brokers[&2].draining);
        assert_eq!(img.brokers[&2].draining_owner.as_deref(), Some("weir-operator"));
        assert_eq!(img.partition("t", 0).unwrap().partition_epoch, 0, "nothing applied");
        // Clearing the mark clears its owner; the next mark is whoever sets it.
        img.apply(&MetadataCommand::SetBrokerDraining { broker_id: 2, draining: false, owner: None }).unwrap();
        assert_eq!((img.brokers[&2].draining, img.brokers[&2].draining_owner.as_deref()), (false, None));
        img.apply(&drain("ops")).unwrap();
        assert_eq!(img.brokers[&2].draining_owner.as_deref(), Some("ops"));
    }

    #[test]
    fn newer_commands_wait_until_every_live_broker_reads_their_version() {
        let mut img = MetadataImage::default();
        for id in 0..3 {
            register(&mut img, id);
        }
        let hold = MetadataCommand::SetReplicationThrottleHold { holder: "x".into(), bytes_per_sec: 1 };
        assert_eq!(hold.metadata_version(), 1);
        let drain = |owner: Option<&str>| MetadataCommand::SetBrokerDraining {
            broker_id: 0,
            draining: true,
            owner: owner.map(str::to_string),
        };
        assert_eq!((drain(Some("weir-operator")).metadata_version(), drain(None).metadata_version()), (1, 0));
        assert_eq!(img.metadata_version(), METADATA_VERSION);
        assert_eq!(img.check_metadata_version(&hold), Ok(()));
        // Broker 2 restarts on an older binary (its registration has no version).
        let old =
            r#"{"type":"register_broker","broker_id":2,"raft_addr":"a","kafka_addr":"b","http_addr":"c","rack":null}"#;
        img.apply(&serde_json::from_str(old).unwrap()).unwrap();
        assert_eq!(img.metadata_version(), 0);
        assert_eq!(
            img.check_metadata_version(&hold),
            Err(MetadataError::MetadataVersionTooLow { needed: 1, current: 0, behind: vec![2] })
        );
        // Version-0 commands go on; a fenced old broker does not hold the cluster back.
        assert_eq!(img.check_metadata_version(&MetadataCommand::SetReplicationThrottle { bytes_per_sec: 1 }), Ok(()));
        img.apply(&MetadataCommand::FenceBroker { broker_id: 2 }).unwrap();
        assert_eq!(img.check_metadata_version(&hold), Ok(()));
        // Images written before the versioning read back with version 0 for every broker.
        let json =
            serde_json::to_string(&img).unwrap().replace(&format!(r#""metadata_version":{METADATA_VERSION}"#), "");
        let json = json.replace(",}", "}");
        let back: MetadataImage = serde_json::from_str(&json).unwrap();
        assert!(back.brokers.values().all(|b| b.metadata_version == 0), "{json}");
    }

    #[test]
    fn the_throttle_in_force_is_the_lowest_of_the_clusters_value_and_the_holds() {
        let mut img = MetadataImage::default();
        assert_eq!(img.effective_replication_throttle(), 0);
        let hold = |holder: &str, bytes_per_sec| MetadataCommand::SetReplicationThrottleHold {
            holder: holder.to_string(),
            bytes_per_sec,
        };
        img.apply(&hold("weir-operator", 50)).unwrap();
        assert_eq!(img.effective_replication_throttle(), 50, "a hold alone is in force");
        img.apply(&MetadataCommand::SetReplicationThrottle { bytes_per_sec: 20 }).unwrap();
        assert_eq!(img.effective_replication_throttle(), 20, "a hold never loosens the cluster's value");
        img.apply(&hold("ops", 10)).unwrap();
        assert_eq!(img.effective_replication_throttle(), 10);
        img.apply(&hold("ops", 0)).unwrap();
        img.apply(&hold("weir-operator", 0)).unwrap();
        assert!(img.replication_throttle_holds.is_empty());
        assert_eq!(img.effective_replication_throttle(), 20, "released holds leave the cluster's value");
        // Images written before holds existed read back without any.
        let old = r#"{"brokers":{},"topics":{},"replication_throttle_bytes_per_sec":7}"#;
        let back: MetadataImage = serde_json::from_str(old).unwrap();
        assert_eq!((back.effective_replication_throttle(), back.replication_throttle_holds.len()), (7, 0));
    }

    #[test]
    fn kafka_throttle_configs_fall_back_to_the_default_and_need_version_2() {
        use crate::cluster::throttle_configs::{
            FOLLOWER_THROTTLED_REPLICAS, LEADER_THROTTLED_RATE, LEADER_THROTTLED_REPLICAS,
        };
        let mut img = MetadataImage::default();
        for id in 0..3 {
            register(&mut img, id);
        }
        let alter = |resource: &str, set: &[(&str, &str)], delete: &[&str]| MetadataCommand::AlterBrokerConfig {
            resource: resource.to_string(),
            set: set.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            delete: delete.iter().map(|k| k.to_string()).collect(),
        };
        assert_eq!(img.throttled_rate(1, LEADER_THROTTLED_RATE), None);
        img.apply(&alter("", &[(LEADER_THROTTLED_RATE, "500")], &[])).unwrap();
        img.apply(&alter("1", &[(LEADER_THROTTLED_RATE, "100")], &[])).unwrap();
        assert_eq!(img.throttled_rate(1, LEADER_THROTTLED_RATE), Some(100), "a broker's own value first");
        assert_eq!(img.broker_config(2, LEADER_THROTTLED_RATE), Some(("500", true)), "then the default");
        // A refused change leaves the image as it was.
        assert!(img.apply(&alter("1", &[(LEADER_THROTTLED_RATE, "-5")], &[])).is_err());
        assert!(img.apply(&alter("one", &[(LEADER_THROTTLED_RATE, "5")], &[])).is_err());
        assert_eq!(img.throttled_rate(1, LEADER_THROTTLED_RATE), Some(100));
        img.apply(&alter("1", &[], &[LEADER_THROTTLED_RATE])).unwrap();
        assert_eq!(img.throttled_rate(1, LEADER_THROTTLED_RATE), Some(500));
        img.apply(&alter("", &[], &[LEADER_THROTTLED_RATE])).unwrap();
        assert!(img.broker_configs.is_empty(), "emptied resources are dropped");

        // Topic replica lists: validated, and looked up per (partition, broker).
        img.apply(&MetadataCommand::CreateTopic {
            name: "t".into(),
            topic_id: "id".into(),
            assignment: vec![vec![0, 1], vec![1, 2]],
            configs: BTreeMap::from([(LEADER_THROTTLED_REPLICAS.to_string(), "1:1".to_string())]),
        })
        .unwrap();
        assert!(img.replica_throttled("t", 1, 1, LEADER_THROTTLED_REPLICAS));
        assert!(!img.replica_throttled("t", 0, 1, LEADER_THROTTLED_REPLICAS));
        assert!(!img.replica_throttled("t", 1, 1, FOLLOWER_THROTTLED_REPLICAS));
        let bad = MetadataCommand::AlterTopicConfig {
            name: "t".into(),
            set: BTreeMap::from([(FOLLOWER_THROTTLED_REPLICAS.to_string(), "1-2".to_string())]),
            delete: vec![],
        };
        assert!(matches!(img.apply(&bad), Err(MetadataError::InvalidConfig(_))));

        // Brokers on version 1 would refuse the topic keys as unknown, or not decode the
        // broker command: both wait for version 2.
        assert_eq!(alter("", &[], &[]).metadata_version(), 2);
        assert_eq!(bad.metadata_version(), 2);
        let unrelated = MetadataCommand::AlterTopicConfig {
            name: "t".into(),
            set: BTreeMap::from([("retention.ms".to_string(), "1".to_string())]),
            delete: vec![],
        };
        assert_eq!(unrelated.metadata_version(), 0);
        let delete_list = MetadataCommand::AlterTopicConfig {
            name: "t".into(),
            set: BTreeMap::new(),
            delete: vec![LEADER_THROTTLED_REPLICAS.to_string()],
        };
        assert_eq!(delete_list.metadata_version(), 2);
    }

    #[test]
    fn shrinking_completes_at_once_and_cancel_restores_the_original_replicas() {
        let mut img = MetadataImage::default();
        for id in 0..4 {
            register(&mut img, id);
        }
        create(&mut img, "t", vec![vec![0, 1, 2]]).unwrap();
        // Dropping a replica needs no catch-up: done in one command, leader moved off 0.
        reassign(&mut img, Some(vec![1, 2])).unwrap();
        let p = img.partition("t", 0).unwrap().clone();
        assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader, p.leader_epoch), (vec![1, 2], vec![1, 2], 1, 1));
        assert!(!p.reassigning());
        // Start a move 2 -> 3, then cancel it: back to [1, 2].
        reassign(&mut img, Some(vec![1, 3])).unwrap();
        assert_eq!(img.partition("t", 0).unwrap().replicas, vec![1, 3, 2]);
        // Replace it with another target while it runs: the original is still [1, 2].
        reassign(&mut img, Some(vec![0, 1])).unwrap();
        let p = img.partition("t", 0).unwrap().clone();
        assert_eq!((p.replicas.clone(), p.adding.clone(), p.removing.clone()), (vec![0, 1, 2], vec![0], vec![2]));
        reassign(&mut img, None).unwrap();
        let p = img.partition("t", 0).unwrap().clone();
        assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader), (vec![1, 2], vec![1, 2], 1));
        assert!(!p.reassigning());
    }

    #[test]
    fn a_fenced_adding_replica_keeps_the_reassignment_pending() {
        let mut img = MetadataImage::default();
        for id in 0..3 {
            register(&mut img, id);
        }
        create(&mut img, "t", vec![vec![0, 1]]).unwrap();
        reassign(&mut img, Some(vec![2, 1])).unwrap();
        img.apply(&MetadataCommand::FenceBroker { broker_id: 2 }).unwrap();
        // A leader's stale view cannot put the fenced new replica in the ISR.
        assert!(matches!(set_isr(&mut img, vec![0, 1, 2]), Err(MetadataError::InvalidPartitionChange(_))));
        assert!(img.partition("t", 0).unwrap().reassigning());
        img.apply(&MetadataCommand::UnfenceBroker { broker_id: 2 }).unwrap();
        set_isr(&mut img, vec![0, 1, 2]).unwrap();
        let p = img.partition("t", 0).unwrap().clone();
        // Leadership goes to the first target replica (2), not to the remaining old one (1).
        assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader, p.leader_epoch), (vec![2, 1], vec![1, 2], 2, 1));
    }
}
