//! The group coordinator for the classic protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch). Membership is served from memory. Committed
//! offsets are written to `__consumer_offsets` and replicated to the ISR before they are
//! acknowledged; the group's metadata (generation, leader, members and assignments) is
//! written there when a rebalance completes (SyncGroup answers once the ISR has it) and when
//! the group empties (not waited for, as in Kafka). Both are replayed when a partition is
//! first used after a start, so a restarted coordinator knows its members: they go on
//! heartbeating in their generation and are expired only if their session runs out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::Decodable;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::group_record::{self, StoredGroup, StoredMember};
use super::lag::{self, GroupOffsets, LagSnapshot};
use super::offsets::{self, CommittedOffset, PartitionOffsets};
use super::{partition_for, OFFSETS_TOPIC, OFFSETS_TOPIC_PARTITIONS};
use crate::cluster::assignment::random_usize;
use crate::cluster::{ClusterNode, NodeId};
use crate::kafka::auto_create::TopicSpec;
use crate::log::{batch, now_ms, LogError, LogManager, TopicPartition};
use crate::partition::replication::{AcksError, PartitionReplica, Replication};

/// `group.initial.rebalance.delay.ms`: a new group waits this long for more members.
pub const INITIAL_REBALANCE_DELAY: Duration = Duration::from_millis(3000);
/// `group.min.session.timeout.ms` and `group.max.session.timeout.ms`: a joiner asking for a
/// session outside them gets INVALID_SESSION_TIMEOUT, as from Kafka.
pub const MIN_SESSION_TIMEOUT: Duration = Duration::from_millis(6000);
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_millis(1_800_000);

fn code(e: ResponseError) -> i16 {
    e.code()
}

/// A member id as Kafka makes them: the client id and a random suffix.
fn new_member_id(client_id: &str) -> String {
    format!("{client_id}-{:016x}{:016x}", random_usize() as u64, random_usize() as u64)
}

/// Why a write to `__consumer_offsets` failed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("{OFFSETS_TOPIC}-{0} has no local log")]
    NoLocalLog(i32),
    #[error("this broker does not lead {OFFSETS_TOPIC}-{0}")]
    NotLeader(i32),
    #[error(transparent)]
    Log(#[from] LogError),
}

impl WriteError {
    fn code(&self) -> i16 {
        match self {
            WriteError::NoLocalLog(_) => code(ResponseError::CoordinatorNotAvailable),
            WriteError::NotLeader(_) => code(ResponseError::NotCoordinator),
            WriteError::Log(_) => code(ResponseError::KafkaStorageError),
        }
    }
}

/// Where an append to `__consumer_offsets` landed, for waiting on its replication.
struct Written {
    replica: Arc<PartitionReplica>,
    leader_epoch: i32,
    /// The offset after the appended batch.
    required: i64,
}

/// How long an offset commit waits for the ISR (Kafka's `offsets.commit.timeout.ms`).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the sweeper waits before it loads a `__consumer_offsets` partition again after
/// its load failed (a read error), so that a lasting failure does not log ten times a second.
const LOAD_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// The protocol type of Kafka's consumer groups, whose member metadata is a
/// `ConsumerProtocolSubscription`.
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// The newest `ConsumerProtocolSubscription` version the crate decodes.
const CONSUMER_PROTOCOL_SUBSCRIPTION_MAX_VERSION: i16 = 3;

/// Settings of the group coordinator that an operator may change.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `offsets.retention.minutes`: committed offsets of a group that has been empty this long
    /// (or, for a group without members ever, committed this long ago) are deleted.
    pub offsets_retention: Duration,
    /// `offsets.retention.check.interval.ms`: how often expired offsets are looked for.
    pub offsets_retention_check_interval: Duration,
    /// How often the consumer lag on `/metrics` is worked out.
    pub consumer_lag_interval: Duration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
            offsets_retention_check_interval: Duration::from_secs(600),
            consumer_lag_interval: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(&self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

struct Member {
    instance_id: Option<String>,
    client_id: String,
    /// "/" and the address the member's JoinGroup came from, as DescribeGroups reports it.
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat: Instant,
    joined: bool,
}

impl Member {
    fn from_stored(m: &StoredMember, protocol: Option<&str>, now: Instant) -> Self {
        let ms = |v: i32| Duration::from_millis(v.max(0) as u64);
        Self {
            instance_id: m.instance_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            session_timeout: ms(m.session_timeout_ms),
            rebalance_timeout: ms(m.rebalance_timeout_ms),
            // The record keeps only the chosen protocol's metadata, which is all a later
            // rejoin compares against.
            protocols: protocol.map(|p| vec![(p.to_string(), m.subscription.clone())]).unwrap_or_default(),
            assignment: m.assignment.clone(),
            last_heartbeat: now,
            joined: true,
        }
    }
}

impl Member {
    /// The member's metadata for `protocol` (empty when it does not support it).
    fn metadata_for(&self, protocol: Option<&str>) -> Bytes {
        self.protocols.iter().find(|(n, _)| Some(n.as_str()) == protocol).map(|(_, b)| b.clone()).unwrap_or_default()
    }
}

pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, group instance id, metadata): only for the leader.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// A static leader rejoining a stable group gets the members but must not reassign
    /// (KIP-814, JoinGroup v9+).
    pub skip_assignment: bool,
}

impl JoinResult {
    fn error(error: i16, member_id: String) -> Self {
        Self {
            error,
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id,
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

pub struct SyncResult {
    pub error: i16,
    pub assignment: Bytes,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
}

impl SyncResult {
    fn error(error: i16) -> Self {
        Self { error, assignment: Bytes::new(), protocol_type: None, protocol_name: None }
    }
}

struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED (KIP-394), not yet joined, and when each
    /// is forgotten (its JoinGroup's session timeout later, as in Kafka).
    pending: HashMap<String, Instant>,
    static_members: HashMap<String, String>,
    join_waiters: HashMap<String, oneshot::Sender<JoinResult>>,
    sync_waiters: HashMap<String, oneshot::Sender<SyncResult>>,
    rebalance_deadline: Instant,
    /// A new group does not complete its first join before this.
    join_not_before: Instant,
    /// Set when the group reached a state worth a group metadata record (Stable or Empty);
    /// the coordinator writes it before releasing the group.
    persist_needed: bool,
    /// When the group last became Empty (wall clock, ms): its offsets' retention counts from
    /// then, as in Kafka (KIP-211).
    empty_since_ms: i64,
    /// The generation whose leader's assignment is being written and replicated; SyncGroups
    /// meanwhile (the leader's again included) wait for that write's outcome.
    storing: Option<i32>,
}

impl Group {
    fn new(now: Instant) -> Self {
        Self {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            join_waiters: HashMap::new(),
            sync_waiters: HashMap::new(),
            rebalance_deadline: now,
            join_not_before: now,
            persist_needed: false,
            empty_since_ms: now_ms(),
            storing: None,
        }
    }

    /// The group as its last group metadata record left it: Stable with its members (whose
    /// sessions start now), or Empty.
    fn restore(stored: &StoredGroup, now: Instant) -> Self {
        let mut g = Self::new(now);
        g.generation = stored.generation;
        g.protocol_type = Some(stored.protocol_type.clone()).filter(|t| !t.is_empty());
        if stored.members.is_empty() {
            if stored.state_timestamp >= 0 {
                g.empty_since_ms = stored.state_timestamp;
            }
            return g;
        }
        g.state = GroupState::Stable;
        g.protocol = stored.protocol.clone();
        g.leader = stored.leader.clone();
        for m in &stored.members {
            if let Some(inst) = &m.instance_id {
                g.static_members.insert(inst.clone(), m.member_id.clone());
            }
            g.members.insert(m.member_id.clone(), Member::from_stored(m, stored.protocol.as_deref(), now));
        }
        g
    }

    fn to_stored(&self) -> StoredGroup {
        let protocol = self.protocol.as_deref();
        StoredGroup {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: if self.members.is_empty() { self.empty_since_ms } else { now_ms() },
            members: self
                .members
                .iter()
                .map(|(id, m)| StoredMember {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis().min(i32::MAX as u128) as i32,
                    session_timeout_ms: m.session_timeout.as_millis().min(i32::MAX as u128) as i32,
                    subscription: m.metadata_for(protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Give a restarted static member a new id in place of its old one (KIP-345): the old
    /// instance is fenced, the member keeps its assignment and, if it led, the leadership.
    fn replace_static_member(&mut self, instance_id: &str, old_id: &str, new_id: String) {
        let Some(member) = self.members.remove(old_id) else { return };
        if let Some(tx) = self.join_waiters.remove(old_id) {
            let _ = tx.send(JoinResult::error(code(ResponseError::FencedInstanceId), old_id.to_string()));
        }
        if let Some(tx) = self.sync_waiters.remove(old_id) {
            let _ = tx.send(SyncResult::error(code(ResponseError::FencedInstanceId)));
        }
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        self.static_members.insert(instance_id.to_string(), new_id.clone());
        self.members.insert(new_id, member);
    }

    /// A successful SyncGroup answer: the member's assignment (empty for an unknown member).
    fn sync_ok(&self, member_id: &str) -> SyncResult {
        SyncResult {
            error: 0,
            assignment: self.members.get(member_id).map(|m| m.assignment.clone()).unwrap_or_default(),
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
        }
    }

    /// FENCED_INSTANCE_ID when a request names a static instance now held by another member id.
    fn fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        instance_id.and_then(|i| self.static_members.get(i)).is_some_and(|holder| holder != member_id)
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        let timeout = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or(Duration::from_secs(60));
        self.rebalance_deadline = now + timeout;
        self.join_not_before = if was_empty { now + INITIAL_REBALANCE_DELAY.min(timeout) } else { now };
        for m in self.members.values_mut() {
            m.joined = false;
        }
        for (_, tx) in self.sync_waiters.drain() {
            let _ = tx.send(SyncResult::error(code(ResponseError::RebalanceInProgress)));
        }
    }

    /// Finish the join phase: new generation, protocol, leader; answer every waiting member.
    fn complete_join(&mut self) {
        let not_joined: Vec<String> = self
            .members
            .iter()
            .filter(|(id, m)| !m.joined && !self.join_waiters.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in not_joined {
            self.remove_member(&id);
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        // The first protocol of the first member that every member supports.
        let first = self.members.values().next().expect("non-empty");
        self.protocol = first
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| self.members.values().all(|m| m.protocols.iter().any(|(p, _)| p == n)));
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let now = Instant::now();
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone();
        let members: Vec<(String, Option<String>, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.instance_id.clone(), m.metadata_for(protocol.as_deref())))
            .collect();
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            m.last_heartbeat = now;
        }
        for (id, tx) in self.join_waiters.drain() {
            let _ = tx.send(JoinResult {
                error: 0,
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol_name: protocol.clone(),
                leader: leader.clone(),
                members: if id == leader { members.clone() } else { Vec::new() },
                member_id: id,
                skip_assignment: false,
            });
        }
    }

    fn become_empty(&mut self) {
        self.state = GroupState::Empty;
        self.protocol = None;
        self.leader = None;
        self.empty_since_ms = now_ms();
        self.persist_needed = true;
    }

    /// What the retention of this group's committed offsets counts from (Kafka, KIP-211): for
    /// a group with members, the time it became Empty; for a group that never had members
    /// (offsets committed by standalone consumers), each commit's time. A Stable consumer
    /// group's offsets of topics none of its members subscribes to count from their commit
    /// too; its other offsets, and every offset of a group with members of another protocol
    /// type or in a rebalance, stay.
    fn retention_base(&self) -> RetentionBase {
        match (&self.protocol_type, self.state) {
            (None, _) => RetentionBase::CommitTime,
            (Some(_), GroupState::Empty) if self.pending.is_empty() => RetentionBase::Since(self.empty_since_ms),
            (Some(t), GroupState::Stable) if t == CONSUMER_PROTOCOL_TYPE => {
                self.subscribed_topics().map_or(RetentionBase::Never, RetentionBase::Unsubscribed)
            }
            (Some(_), _) => RetentionBase::Never,
        }
    }

    /// Every topic the members subscribe to, read from their consumer-protocol metadata for
    /// the chosen protocol; `None` when one of them does not decode (nothing is expired then).
    fn subscribed_topics(&self) -> Option<HashSet<String>> {
        let mut topics = HashSet::new();
        for m in self.members.values() {
            let mut metadata = m.metadata_for(self.protocol.as_deref());
            if metadata.len() < 2 {
                return None;
            }
            let version = metadata.get_i16();
            // Fields are only ever appended, so a newer version's prefix decodes (as Kafka does).
            let version = version.min(CONSUMER_PROTOCOL_SUBSCRIPTION_MAX_VERSION);
            let subscription = ConsumerProtocolSubscription::decode(&mut metadata, version).ok()?;
            topics.extend(subscription.topics.iter().map(|t| t.to_string()));
        }
        Some(topics)
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id) {
            if let Some(inst) = m.instance_id {
                if self.static_members.get(&inst).is_some_and(|x| x == id) {
                    self.static_members.remove(&inst);
                }
            }
        }
        if let Some(tx) = self.join_waiters.remove(id) {
            let _ = tx.send(JoinResult::error(code(ResponseError::UnknownMemberId), id.to_string()));
        }
        if let Some(tx) = self.sync_waiters.remove(id) {
            let _ = tx.send(SyncResult::error(code(ResponseError::UnknownMemberId)));
        }
    }

    fn ready_to_complete(&self, now: Instant) -> bool {
        self.state == GroupState::PreparingRebalance
            && now >= self.join_not_before
            && (now >= self.rebalance_deadline || self.members.values().all(|m| m.joined))
    }

    /// One pass of the coordinator's sweeper. Members whose session ran out leave; then a join
    /// phase completes once every member rejoined or the rebalance timeout passed. As in Kafka,
    /// a member waiting in a JoinGroup keeps its place whatever its session, and any other
    /// member needs a heartbeat within its session timeout, in a rebalance too: a member that
    /// died, or one restored from the log whose client lost its id in a coordinator failover,
    /// holds a join phase for its session timeout, not its rebalance timeout
    /// (`max.poll.interval.ms`, five minutes by default).
    fn sweep(&mut self, now: Instant) -> Swept {
        // A member id handed out and never used goes after its session timeout, so that it
        // keeps an Empty group (and its offsets) no longer than that.
        self.pending.retain(|_, forget_at| now < *forget_at);
        let preparing = self.state == GroupState::PreparingRebalance;
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !(preparing && m.joined) && now.duration_since(m.last_heartbeat) > m.session_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.remove_member(id);
        }
        if !expired.is_empty() {
            self.after_departure(now);
        }
        let completed = self.ready_to_complete(now);
        if completed {
            self.complete_join();
        }
        Swept { expired, completed }
    }

    /// After members left or expired: rebalance, or become empty.
    fn after_departure(&mut self, now: Instant) {
        if self.members.is_empty() {
            self.generation += 1;
            self.become_empty();
            for (_, tx) in self.sync_waiters.drain() {
                let _ = tx.send(SyncResult::error(code(ResponseError::RebalanceInProgress)));
            }
        } else if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now);
        }
    }
}

/// Forget what memory holds of `partitions` of `__consumer_offsets`: their offsets, load
/// epochs and groups. Members waiting in a JoinGroup or SyncGroup of those groups get
/// COORDINATOR_NOT_AVAILABLE (their answer's sender is dropped).
fn unload(
    groups: &mut HashMap<String, Group>,
    offsets: &mut HashMap<i32, PartitionOffsets>,
    loaded_epochs: &mut HashMap<i32, i32>,
    partitions: &HashSet<i32>,
) {
    offsets.retain(|p, _| !partitions.contains(p));
    loaded_epochs.retain(|p, _| !partitions.contains(p));
    groups.retain(|name, _| !partitions.contains(&partition_for(name)));
}

/// What one sweep did to a group.
struct Swept {
    /// Members removed because their session ran out.
    expired: Vec<String>,
    /// Whether a join phase completed.
    completed: bool,
}

/// What an offset's retention period counts from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RetentionBase {
    CommitTime,
    Since(i64),
    /// The commit time, for topics outside this set; never for those in it.
    Unsubscribed(HashSet<String>),
    Never,
}

impl RetentionBase {
    fn expired(&self, topic: &str, offset: &CommittedOffset, now_ms: i64, retention_ms: i64) -> bool {
        match self {
            RetentionBase::CommitTime => now_ms - offset.commit_timestamp >= retention_ms,
            RetentionBase::Since(t) => now_ms - t >= retention_ms,
            RetentionBase::Unsubscribed(subscribed) => {
                !subscribed.contains(topic) && now_ms - offset.commit_timestamp >= retention_ms
            }
            RetentionBase::Never => false,
        }
    }
}

pub struct JoinRequest {
    pub group: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: an unknown joiner first gets MEMBER_ID_REQUIRED with its id (KIP-394).
    pub require_known_member: bool,
    /// v9+: a rejoining static leader can be told to keep the current assignment (KIP-814).
    pub supports_skip_assignment: bool,
}

/// A topic's partitions with their committed offset, if any.
pub type TopicOffsets = (String, Vec<(i32, Option<CommittedOffset>)>);

pub struct OffsetToCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// A summary of a group for DescribeGroups / ListGroups / the admin API.
pub struct GroupSummary {
    pub group: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberSummary>,
}

/// One member as DescribeGroups shows it.
pub struct MemberSummary {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The chosen protocol's subscription metadata.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

pub struct GroupCoordinator {
    pub(super) node_id: NodeId,
    pub(super) cluster: Arc<ClusterNode>,
    logs: Arc<LogManager>,
    /// Leader state of the `__consumer_offsets` partitions, for appending as their leader;
    /// its change ring wakes the followers long-polling them.
    pub(super) replication: Arc<Replication>,
    groups: Mutex<HashMap<String, Group>>,
    /// `__consumer_offsets` partitions replayed since start, with their offsets.
    offsets: Mutex<HashMap<i32, PartitionOffsets>>,
    /// The leader epoch of each partition in `offsets` when it was replayed. Another epoch
    /// means leadership moved away and back: others may have written meanwhile.
    loaded_epochs: Mutex<HashMap<i32, i32>>,
    config: GroupConfig,
    /// The lag of the groups coordinated here, for `/metrics` (`lag.rs`).
    pub lag: Arc<LagSnapshot>,
}

impl GroupCoordinator {
    pub fn new(
        node_id: NodeId,
        cluster: Arc<ClusterNode>,
        logs: Arc<LogManager>,
        replication: Arc<Replication>,
        config: GroupConfig,
    ) -> Arc<Self> {
        let c = Arc::new(Self {
            node_id,
            cluster,
            logs,
            replication,
            groups: Mutex::new(HashMap::new()),
            offsets: Mutex::new(HashMap::new()),
            loaded_epochs: Mutex::new(HashMap::new()),
            config,
            lag: Arc::new(LagSnapshot::default()),
        });
        tokio::spawn(c.clone().sweeper());
        tokio::spawn(lag::run(Arc::downgrade(&c), c.lag.clone(), c.config.consumer_lag_interval));
        c
    }

    /// How `__consumer_offsets` is created at its first use: compacted, RF up to 3.
    pub fn offsets_topic_spec(&self) -> TopicSpec {
        let replication_factor = self.cluster.image().live_brokers().len().clamp(1, 3) as u16;
        let mut configs = BTreeMap::new();
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert("segment.bytes".to_string(), (100 * 1024 * 1024).to_string());
        TopicSpec { partitions: OFFSETS_TOPIC_PARTITIONS, replication_factor, configs }
    }

    /// The coordinator broker of `group`: the leader of its `__consumer_offsets` partition.
    pub fn coordinator_of(&self, group: &str) -> Option<NodeId> {
        let image = self.cluster.image();
        let p = image.partition(OFFSETS_TOPIC, partition_for(group) as u32)?;
        (p.leader >= 0).then_some(p.leader as NodeId)
    }

    /// 0 when this broker coordinates `group` and its offsets are loaded; else the error.
    fn check_coordinator(&self, group: &str) -> i16 {
        if self.coordinator_of(group) != Some(self.node_id) {
            return code(ResponseError::NotCoordinator);
        }
        match self.ensure_loaded(partition_for(group)) {
            Ok(()) => 0,
            Err(c) => c,
        }
    }

    fn ensure_loaded(&self, partition: i32) -> Result<(), i16> {
        let part = self.cluster.image().partition(OFFSETS_TOPIC, partition as u32).cloned();
        let epoch = part.as_ref().map(|p| p.leader_epoch);
        // Lock order everywhere: groups, then offsets, then loaded epochs, then a log.
        let mut groups = self.groups.lock().expect("groups lock");
        let mut offsets = self.offsets.lock().expect("offsets lock");
        let mut loaded_epochs = self.loaded_epochs.lock().expect("loaded epochs lock");
        if offsets.contains_key(&partition) {
            if loaded_epochs.get(&partition) == epoch.as_ref() {
                return Ok(());
            }
            // Led again after a leader change: while another broker coordinated these groups,
            // their commits and memberships reached this log only as replicated records, so
            // what memory holds may be stale. Drop it and replay the log, as Kafka unloads a
            // partition's groups when it stops leading and loads them when it leads again.
            // Members waiting in a JoinGroup or SyncGroup get COORDINATOR_NOT_AVAILABLE.
            unload(&mut groups, &mut offsets, &mut loaded_epochs, &HashSet::from([partition]));
            tracing::info!(partition, leader_epoch = ?epoch, "__consumer_offsets partition led again; reloading it");
        }
        let tp = TopicPartition::new(OFFSETS_TOPIC, partition);
        let Some(log) = self.logs.get(&tp) else {
            return Err(code(ResponseError::CoordinatorLoadInProgress));
        };
        let loaded = tokio::task::block_in_place(|| {
            // Take the leader role first if the replica has not yet: a fetcher still following
            // the previous leader could otherwise append records after the replay read the log.
            if let Some(part) = part.as_ref().filter(|p| p.leader == self.node_id as i64) {
                self.replication.ensure_leader(&tp, part, &log);
            }
            offsets::load(&log.lock().expect("log lock"))
        });
        match loaded {
            Ok(loaded) => {
                let now = Instant::now();
                let mut restored = 0;
                for (name, stored) in &loaded.groups {
                    if !groups.contains_key(name) {
                        groups.insert(name.clone(), Group::restore(stored, now));
                        restored += 1;
                    }
                }
                tracing::info!(
                    partition,
                    groups_with_offsets = loaded.offsets.len(),
                    groups_restored = restored,
                    "loaded __consumer_offsets partition"
                );
                offsets.insert(partition, loaded.offsets);
                if let Some(epoch) = epoch {
                    loaded_epochs.insert(partition, epoch);
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(partition, error = %e, "loading __consumer_offsets failed");
                Err(code(ResponseError::CoordinatorNotAvailable))
            }
        }
    }

    pub async fn join(&self, req: JoinRequest) -> JoinResult {
        let err = self.check_coordinator(&req.group);
        if err != 0 {
            return JoinResult::error(err, req.member_id);
        }
        if !(MIN_SESSION_TIMEOUT..=MAX_SESSION_TIMEOUT).contains(&req.session_timeout) {
            return JoinResult::error(code(ResponseError::InvalidSessionTimeout), req.member_id);
        }
        if req.protocols.is_empty() || req.protocol_type.is_empty() {
            return JoinResult::error(code(ResponseError::InconsistentGroupProtocol), req.member_id);
        }
        // What to wait for once the groups lock is released.
        enum Answer {
            Waiter(oneshot::Receiver<JoinResult>),
            OnceStored(JoinResult, Result<Written, WriteError>),
        }
        let answer = 'locked: {
            let now = Instant::now();
            let mut groups = self.groups.lock().expect("groups lock");
            let g = groups.entry(req.group.clone()).or_insert_with(|| Group::new(now));
            if !g.members.is_empty() {
                let same_type = g.protocol_type.as_deref() == Some(req.protocol_type.as_str());
                let common = g
                    .members
                    .values()
                    .next()
                    .is_none_or(|m| req.protocols.iter().any(|(n, _)| m.protocols.iter().any(|(p, _)| p == n)));
                if !same_type || !common {
                    return JoinResult::error(code(ResponseError::InconsistentGroupProtocol), req.member_id);
                }
            }
            let member_id = if req.member_id.is_empty() {
                match req.instance_id.as_ref().and_then(|i| g.static_members.get(i)).cloned() {
                    // A static member restarting keeps its place under a new id (KIP-345).
                    Some(existing) => {
                        let inst = req.instance_id.as_deref().expect("static");
                        let new_id = new_member_id(&req.client_id);
                        g.replace_static_member(inst, &existing, new_id.clone());
                        if let Some(result) = Self::rejoin_stable_static(g, &new_id, &req, now) {
                            // Answered once the new member id is replicated (Kafka stores the
                            // group before answering), so a failover fences the old one too.
                            g.persist_needed = false;
                            let written = self.write_group_record(&req.group, g);
                            break 'locked Answer::OnceStored(result, written);
                        }
                        new_id
                    }
                    None => {
                        let id = new_member_id(&req.client_id);
                        if req.require_known_member && req.instance_id.is_none() {
                            g.pending.insert(id.clone(), now + req.session_timeout);
                            return JoinResult::error(code(ResponseError::MemberIdRequired), id);
                        }
                        id
                    }
                }
            } else if g.fenced(&req.member_id, req.instance_id.as_deref()) {
                return JoinResult::error(code(ResponseError::FencedInstanceId), req.member_id);
            } else if g.members.contains_key(&req.member_id) || g.pending.contains_key(&req.member_id) {
                req.member_id.clone()
            } else {
                return JoinResult::error(code(ResponseError::UnknownMemberId), req.member_id);
            };
            g.pending.remove(&member_id);
            if g.state != GroupState::PreparingRebalance {
                g.prepare_rebalance(now);
            }
            g.protocol_type = Some(req.protocol_type.clone());
            let member = g.members.entry(member_id.clone()).or_insert_with(|| Member {
                instance_id: req.instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_heartbeat: now,
                joined: false,
            });
            member.protocols = req.protocols.clone();
            member.client_host = req.client_host.clone();
            member.session_timeout = req.session_timeout;
            member.rebalance_timeout = req.rebalance_timeout;
            member.last_heartbeat = now;
            member.joined = true;
            if let Some(inst) = &req.instance_id {
                g.static_members.insert(inst.clone(), member_id.clone());
            }
            let deadline = now + req.rebalance_timeout;
            if deadline > g.rebalance_deadline {
                g.rebalance_deadline = deadline;
            }
            let (tx, rx) = oneshot::channel();
            if let Some(old) = g.join_waiters.insert(member_id.clone(), tx) {
                let _ = old.send(JoinResult::error(code(ResponseError::UnknownMemberId), member_id.clone()));
            }
            if g.ready_to_complete(now) {
                g.complete_join();
                self.persist_if_needed(&req.group, g);
            }
            Answer::Waiter(rx)
        };
        match answer {
            Answer::Waiter(rx) => rx
                .await
                .unwrap_or_else(|_| JoinResult::error(code(ResponseError::CoordinatorNotAvailable), String::new())),
            Answer::OnceStored(result, written) => match self.replicated(&req.group, written).await {
                Ok(()) => result,
                Err(error) => JoinResult::error(error, result.member_id),
            },
        }
    }

    /// A static member rejoined (already under its new id) a Stable group with the same
    /// subscription: no rebalance, it gets the current generation back and its assignment
    /// from SyncGroup. A rejoining leader on JoinGroup below v9 cannot be told to keep the
    /// assignment, so it rebalances (None).
    fn rejoin_stable_static(g: &mut Group, member_id: &str, req: &JoinRequest, now: Instant) -> Option<JoinResult> {
        if g.state != GroupState::Stable || g.protocol_type.as_deref() != Some(req.protocol_type.as_str()) {
            return None;
        }
        let chosen = g.protocol.clone()?;
        let member = g.members.get(member_id)?;
        let same_subscription =
            req.protocols.iter().any(|(n, meta)| *n == chosen && *meta == member.metadata_for(Some(&chosen)));
        let is_leader = g.leader.as_deref() == Some(member_id);
        if !same_subscription || (is_leader && !req.supports_skip_assignment) {
            return None;
        }
        let member = g.members.get_mut(member_id).expect("checked");
        member.protocols = req.protocols.clone();
        // A restarted static member may come from another address (a rescheduled pod).
        member.client_host = req.client_host.clone();
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.last_heartbeat = now;
        // The member id changed: record it, so a coordinator restart fences the old one too.
        g.persist_needed = true;
        let members = if is_leader {
            g.members.iter().map(|(id, m)| (id.clone(), m.instance_id.clone(), m.metadata_for(Some(&chosen)))).collect()
        } else {
            Vec::new()
        };
        Some(JoinResult {
            error: 0,
            generation: g.generation,
            protocol_type: g.protocol_type.clone(),
            protocol_name: Some(chosen),
            leader: g.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
            skip_assignment: is_leader,
        })
    }

    /// Write the group's metadata record if a state change asked for one, without waiting for
    /// its replication (as Kafka, for a group that emptied). A failed write is logged and the
    /// group goes on from memory; the next change writes it again.
    fn persist_if_needed(&self, name: &str, g: &mut Group) {
        if !g.persist_needed {
            return;
        }
        g.persist_needed = false;
        if let Err(e) = self.write_group_record(name, g) {
            tracing::error!(group = name, error = %e, "writing group metadata failed");
        }
    }

    /// Append the group's metadata record as it is in memory now.
    fn write_group_record(&self, name: &str, g: &Group) -> Result<Written, WriteError> {
        let key = group_record::encode_key(name);
        let value = group_record::encode_value(&g.to_stored());
        self.append_records(partition_for(name), &[(Some(key.as_slice()), Some(value.as_slice()))])
    }

    /// Wait until every in-sync replica has a group metadata record (Kafka's
    /// `offsets.commit.required.acks=-1` for the group store too). The error is the code Kafka
    /// answers a failed group store with.
    async fn replicated(&self, group: &str, written: Result<Written, WriteError>) -> Result<(), i16> {
        let written = written.map_err(|e| {
            tracing::error!(group, error = %e, "writing group metadata failed");
            match e {
                WriteError::NoLocalLog(_) => code(ResponseError::CoordinatorNotAvailable),
                WriteError::NotLeader(_) | WriteError::Log(_) => code(ResponseError::NotCoordinator),
            }
        })?;
        let waited =
            self.replication.wait_for_isr(&written.replica, written.leader_epoch, written.required, 1, COMMIT_TIMEOUT);
        waited.await.map_err(|e| {
            tracing::info!(group, error = %e, "group metadata not replicated");
            match e {
                AcksError::Timeout => code(ResponseError::RebalanceInProgress),
                AcksError::NotEnoughReplicasAfterAppend => code(ResponseError::CoordinatorNotAvailable),
                AcksError::NotLeader => code(ResponseError::NotCoordinator),
            }
        })
    }

    /// Append one batch of records to this coordinator's `__consumer_offsets` partition, as
    /// its leader: refused when this broker does not lead it (at the image's leader epoch), so
    /// that a former coordinator never writes into a replica it now follows.
    fn append_records(&self, partition: i32, records: &[batch::KeyValue<'_>]) -> Result<Written, WriteError> {
        let tp = TopicPartition::new(OFFSETS_TOPIC, partition);
        let Some(log) = self.logs.get(&tp) else {
            return Err(WriteError::NoLocalLog(partition));
        };
        let image = self.cluster.image();
        let part = match image.partition(OFFSETS_TOPIC, partition as u32) {
            Some(p) if p.leader == self.node_id as i64 => p,
            _ => return Err(WriteError::NotLeader(partition)),
        };
        let now = now_ms();
        let mut batch = batch::build_batch(records, now);
        let epoch = part.leader_epoch;
        let appended = tokio::task::block_in_place(|| {
            self.replication.append_as_leader(&tp, part, &log, |log| log.append(&mut batch, epoch, now))
        });
        let (result, replica) = appended.ok_or(WriteError::NotLeader(partition))?;
        let written = Written { replica, leader_epoch: epoch, required: result?.last_offset + 1 };
        self.replication.changes.record(&tp);
        Ok(written)
    }

    pub async fn sync(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncResult {
        let err = self.check_coordinator(group);
        if err != 0 {
            return SyncResult::error(err);
        }
        // The leader stores the assignment; everyone else waits for that to end.
        enum Turn {
            Wait(oneshot::Receiver<SyncResult>),
            Store(Result<Written, WriteError>),
        }
        let turn = {
            let mut groups = self.groups.lock().expect("groups lock");
            let Some(g) = groups.get_mut(group) else { return SyncResult::error(code(ResponseError::UnknownMemberId)) };
            if g.fenced(member_id, instance_id) {
                return SyncResult::error(code(ResponseError::FencedInstanceId));
            }
            if !g.members.contains_key(member_id) {
                return SyncResult::error(code(ResponseError::UnknownMemberId));
            }
            if generation != g.generation {
                return SyncResult::error(code(ResponseError::IllegalGeneration));
            }
            match g.state {
                GroupState::PreparingRebalance => return SyncResult::error(code(ResponseError::RebalanceInProgress)),
                GroupState::Empty => return SyncResult::error(code(ResponseError::UnknownMemberId)),
                GroupState::Stable => return g.sync_ok(member_id),
                GroupState::CompletingRebalance => {}
            }
            g.members.get_mut(member_id).expect("checked").last_heartbeat = Instant::now();
            if g.leader.as_deref() != Some(member_id) || g.storing == Some(generation) {
                let (tx, rx) = oneshot::channel();
                g.sync_waiters.insert(member_id.to_string(), tx);
                Turn::Wait(rx)
            } else {
                let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                for (id, m) in g.members.iter_mut() {
                    m.assignment = given.remove(id).unwrap_or_default();
                }
                // Nobody learns the assignment before the ISR has it, as in Kafka: a coordinator
                // failover then finds the group Stable in this generation, not one behind.
                g.storing = Some(generation);
                g.persist_needed = false;
                Turn::Store(self.write_group_record(group, g))
            }
        };
        let written = match turn {
            Turn::Store(written) => written,
            Turn::Wait(rx) => {
                return rx.await.unwrap_or_else(|_| SyncResult::error(code(ResponseError::CoordinatorNotAvailable)))
            }
        };
        let stored = self.replicated(group, written).await;
        let mut groups = self.groups.lock().expect("groups lock");
        let Some(g) = groups.get_mut(group) else { return SyncResult::error(code(ResponseError::UnknownMemberId)) };
        // A join or departure meanwhile started another rebalance: the members waiting were
        // told so, and so is the leader.
        if g.state != GroupState::CompletingRebalance || g.generation != generation || g.storing != Some(generation) {
            let error = if g.members.contains_key(member_id) {
                ResponseError::RebalanceInProgress
            } else {
                ResponseError::UnknownMemberId
            };
            return SyncResult::error(code(error));
        }
        g.storing = None;
        match stored {
            Ok(()) => {
                g.state = GroupState::Stable;
                let waiting: Vec<_> = g.sync_waiters.drain().collect();
                for (id, tx) in waiting {
                    let _ = tx.send(g.sync_ok(&id));
                }
                g.sync_ok(member_id)
            }
            Err(error) => {
                // Kafka: every member waiting gets the error, and the group rebalances.
                for m in g.members.values_mut() {
                    m.assignment = Bytes::new();
                }
                for (_, tx) in g.sync_waiters.drain() {
                    let _ = tx.send(SyncResult::error(error));
                }
                g.prepare_rebalance(Instant::now());
                SyncResult::error(error)
            }
        }
    }

    pub fn heartbeat(&self, group: &str, generation: i32, member_id: &str, instance_id: Option<&str>) -> i16 {
        let err = self.check_coordinator(group);
        if err != 0 {
            return err;
        }
        let mut groups = self.groups.lock().expect("groups lock");
        let Some(g) = groups.get_mut(group) else { return code(ResponseError::UnknownMemberId) };
        if g.fenced(member_id, instance_id) {
            return code(ResponseError::FencedInstanceId);
        }
        let Some(m) = g.members.get_mut(member_id) else { return code(ResponseError::UnknownMemberId) };
        m.last_heartbeat = Instant::now();
        if generation != g.generation {
            return code(ResponseError::IllegalGeneration);
        }
        if g.state == GroupState::PreparingRebalance {
            return code(ResponseError::RebalanceInProgress);
        }
        0
    }

    /// Remove members (by id, or by group instance id when the id is empty). Per-member codes.
    pub fn leave(&self, group: &str, members: Vec<(String, Option<String>)>) -> Result<Vec<i16>, i16> {
        let err = self.check_coordinator(group);
        if err != 0 {
            return Err(err);
        }
        let mut groups = self.groups.lock().expect("groups lock");
        let Some(g) = groups.get_mut(group) else { return Err(code(ResponseError::UnknownMemberId)) };
        let mut codes = Vec::with_capacity(members.len());
        let mut removed = false;
        for (id, inst) in members {
            if !id.is_empty() && g.fenced(&id, inst.as_deref()) {
                codes.push(code(ResponseError::FencedInstanceId));
                continue;
            }
            let id = if id.is_empty() {
                inst.and_then(|i| g.static_members.get(&i).cloned()).unwrap_or_default()
            } else {
                id
            };
            if g.members.contains_key(&id) {
                g.remove_member(&id);
                removed = true;
                codes.push(0);
            } else {
                codes.push(code(ResponseError::UnknownMemberId));
            }
        }
        if removed {
            g.after_departure(Instant::now());
            self.persist_if_needed(group, g);
        }
        Ok(codes)
    }

    /// Validate and persist a commit; one code per offset.
    /// Commit offsets: answered once every in-sync replica of the group's `__consumer_offsets`
    /// partition has them (Kafka's `offsets.commit.required.acks=-1`), so that an acknowledged
    /// commit survives a coordinator failover.
    pub async fn commit(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        offsets: Vec<OffsetToCommit>,
    ) -> Vec<i16> {
        let n = offsets.len();
        let written = match self.commit_locally(group, generation, member_id, offsets) {
            Ok(Some(w)) => w,
            Ok(None) => return Vec::new(),
            Err(code) => return vec![code; n],
        };
        let waited =
            self.replication.wait_for_isr(&written.replica, written.leader_epoch, written.required, 1, COMMIT_TIMEOUT);
        match waited.await {
            Ok(()) => vec![0; n],
            Err(e) => {
                tracing::debug!(group, error = %e, "committed offsets not replicated");
                // Kafka's mapping of a failed offsets append.
                vec![
                    match e {
                        AcksError::Timeout => code(ResponseError::RequestTimedOut),
                        AcksError::NotEnoughReplicasAfterAppend => code(ResponseError::CoordinatorNotAvailable),
                        AcksError::NotLeader => code(ResponseError::NotCoordinator),
                    };
                    n
                ]
            }
        }
    }

    /// Validate and append a commit, and apply it to memory (which follows the local log,
    /// the leader's truth). `Ok(None)`: nothing to commit.
    fn commit_locally(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<Option<Written>, i16> {
        let err = self.check_coordinator(group);
        if err != 0 {
            return Err(err);
        }
        {
            let groups = self.groups.lock().expect("groups lock");
            match groups.get(group) {
                // Simple consumers (no membership) commit with generation -1.
                None if generation < 0 => {}
                Some(g) if generation < 0 && g.members.is_empty() => {}
                None => return Err(code(ResponseError::IllegalGeneration)),
                Some(g) => {
                    if !g.members.contains_key(member_id) {
                        return Err(code(ResponseError::UnknownMemberId));
                    }
                    if generation != g.generation {
                        return Err(code(ResponseError::IllegalGeneration));
                    }
                    if g.state == GroupState::PreparingRebalance {
                        return Err(code(ResponseError::RebalanceInProgress));
                    }
                }
            }
        }
        let partition = partition_for(group);
        let now = now_ms();
        let entries: Vec<(Vec<u8>, Vec<u8>, CommittedOffset)> = offsets
            .iter()
            .map(|o| {
                let v = CommittedOffset {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata: o.metadata.clone(),
                    commit_timestamp: now,
                };
                (offsets::encode_key(group, &o.topic, o.partition), offsets::encode_value(&v), v)
            })
            .collect();
        if entries.is_empty() {
            return Ok(None);
        }
        let records: Vec<batch::KeyValue<'_>> =
            entries.iter().map(|(k, v, _)| (Some(k.as_slice()), Some(v.as_slice()))).collect();
        // The offsets lock orders commits of a partition: memory follows the log.
        let mut loaded = self.offsets.lock().expect("offsets lock");
        let written = match self.append_records(partition, &records) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(group, error = %e, "writing committed offsets failed");
                return Err(e.code());
            }
        };
        let groups = loaded.entry(partition).or_default();
        let g = groups.entry(group.to_string()).or_default();
        for (o, (_, _, v)) in offsets.iter().zip(entries) {
            g.insert((o.topic.clone(), o.partition), v);
        }
        Ok(Some(written))
    }

    /// Committed offsets of `group`: for the given partitions, or all (topics = None).
    pub fn fetch(&self, group: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> Result<Vec<TopicOffsets>, i16> {
        let err = self.check_coordinator(group);
        if err != 0 {
            return Err(err);
        }
        let loaded = self.offsets.lock().expect("offsets lock");
        let empty = HashMap::new();
        let committed = loaded.get(&partition_for(group)).and_then(|p| p.get(group)).unwrap_or(&empty);
        Ok(match topics {
            Some(list) => list
                .into_iter()
                .map(|(t, parts)| {
                    let ps = parts.into_iter().map(|p| (p, committed.get(&(t.clone(), p)).cloned())).collect();
                    (t, ps)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<CommittedOffset>)>> = BTreeMap::new();
                for ((t, p), v) in committed {
                    by_topic.entry(t.clone()).or_default().push((*p, Some(v.clone())));
                }
                by_topic.into_iter().collect()
            }
        })
    }

    pub fn describe(&self, group: &str) -> Result<GroupSummary, i16> {
        let err = self.check_coordinator(group);
        if err != 0 {
            return Err(err);
        }
        let groups = self.groups.lock().expect("groups lock");
        Ok(match groups.get(group) {
            None => GroupSummary {
                group: group.to_string(),
                state: "Dead",
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            },
            Some(g) => GroupSummary {
                group: group.to_string(),
                state: g.state.name(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                protocol: g.protocol.clone().unwrap_or_default(),
                members: g
                    .members
                    .iter()
                    .map(|(id, m)| MemberSummary {
                        member_id: id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: m.metadata_for(g.protocol.as_deref()),
                        assignment: m.assignment.clone(),
                    })
                    .collect(),
            },
        })
    }

    /// Groups this broker coordinates: (name, protocol type, state). Groups known only by
    /// their committed offsets are listed as Empty.
    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        let mut out: BTreeMap<String, (String, &'static str)> = BTreeMap::new();
        for (name, g) in self.groups.lock().expect("groups lock").iter() {
            if self.coordinator_of(name) == Some(self.node_id) {
                out.insert(name.clone(), (g.protocol_type.clone().unwrap_or_default(), g.state.name()));
            }
        }
        for partition in self.offsets.lock().expect("offsets lock").values() {
            for (name, offsets) in partition {
                if !offsets.is_empty() && self.coordinator_of(name) == Some(self.node_id) {
                    out.entry(name.clone()).or_insert((String::new(), GroupState::Empty.name()));
                }
            }
        }
        out.into_iter().map(|(n, (t, s))| (n, t, s)).collect()
    }

    /// Delete an empty group and its committed offsets (tombstones in `__consumer_offsets`).
    pub fn delete(&self, group: &str) -> i16 {
        let err = self.check_coordinator(group);
        if err != 0 {
            return err;
        }
        let mut groups = self.groups.lock().expect("groups lock");
        if groups.get(group).is_some_and(|g| !g.members.is_empty()) {
            return code(ResponseError::NonEmptyGroup);
        }
        let partition = partition_for(group);
        let mut loaded = self.offsets.lock().expect("offsets lock");
        let committed: Vec<(String, i32)> =
            loaded.get(&partition).and_then(|p| p.get(group)).map(|g| g.keys().cloned().collect()).unwrap_or_default();
        if committed.is_empty() && !groups.contains_key(group) {
            return code(ResponseError::GroupIdNotFound);
        }
        // Tombstones for every commit and for the group metadata record, in one batch.
        let mut keys: Vec<Vec<u8>> = committed.iter().map(|(t, p)| offsets::encode_key(group, t, *p)).collect();
        if groups.contains_key(group) {
            keys.push(group_record::encode_key(group));
        }
        if !keys.is_empty() {
            let records: Vec<batch::KeyValue<'_>> = keys.iter().map(|k| (Some(k.as_slice()), None)).collect();
            if let Err(e) = self.append_records(partition, &records) {
                tracing::error!(group, error = %e, "writing group deletion failed");
                return e.code();
            }
        }
        if let Some(p) = loaded.get_mut(&partition) {
            p.remove(group);
        }
        groups.remove(group);
        0
    }

    /// OffsetDelete (Kafka's `handleDeleteOffsets`): drop `group`'s committed offsets of
    /// `partitions`, with tombstones in `__consumer_offsets` (appended, not waited for, as
    /// Kafka's group cleanup and DeleteGroups). A group without members (or one only ever
    /// committed to) loses any of them; a consumer group with members keeps those of topics a
    /// member subscribes to (GROUP_SUBSCRIBED_TO_TOPIC; all of them if a subscription does not
    /// decode); a group of another protocol with members refuses (NON_EMPTY_GROUP). A
    /// partition without a committed offset succeeds. One code per partition, in order.
    pub fn delete_offsets(&self, group: &str, partitions: &[(String, i32)]) -> Result<Vec<i16>, i16> {
        let err = self.check_coordinator(group);
        if err != 0 {
            return Err(err);
        }
        let groups = self.groups.lock().expect("groups lock");
        let partition = partition_for(group);
        let mut loaded = self.offsets.lock().expect("offsets lock");
        let committed = loaded.get(&partition).and_then(|p| p.get(group));
        let members = groups.get(group).filter(|g| !g.members.is_empty());
        if committed.is_none() && !groups.contains_key(group) {
            return Err(code(ResponseError::GroupIdNotFound));
        }
        // None: nothing is held; Some(None): every topic is (a subscription did not decode).
        let held: Option<Option<HashSet<String>>> = match members {
            None => None,
            Some(g) if g.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE) => Some(g.subscribed_topics()),
            Some(_) => return Err(code(ResponseError::NonEmptyGroup)),
        };
        let mut results = vec![0; partitions.len()];
        let mut doomed = Vec::new();
        for (i, (topic, p)) in partitions.iter().enumerate() {
            if held.as_ref().is_some_and(|h| h.as_ref().is_none_or(|topics| topics.contains(topic))) {
                results[i] = code(ResponseError::GroupSubscribedToTopic);
            } else if committed.is_some_and(|c| c.contains_key(&(topic.clone(), *p))) {
                doomed.push((topic.clone(), *p));
            }
        }
        if doomed.is_empty() {
            return Ok(results);
        }
        let keys: Vec<Vec<u8>> = doomed.iter().map(|(t, p)| offsets::encode_key(group, t, *p)).collect();
        let records: Vec<batch::KeyValue<'_>> = keys.iter().map(|k| (Some(k.as_slice()), None)).collect();
        if let Err(e) = self.append_records(partition, &records) {
            tracing::error!(group, error = %e, "writing deleted offsets failed");
            return Err(e.code());
        }
        if let Some(by_group) = loaded.get_mut(&partition) {
            if let Some(offsets) = by_group.get_mut(group) {
                for tp in &doomed {
                    offsets.remove(tp);
                }
                if offsets.is_empty() {
                    by_group.remove(group);
                }
            }
        }
        Ok(results)
    }

    /// Delete committed offsets past `offsets.retention.minutes` (tombstones in
    /// `__consumer_offsets`), then the Empty groups left without offsets (Kafka moves them to
    /// Dead and writes a tombstone for their metadata). Only in partitions this broker leads
    /// and has loaded.
    fn expire_offsets(&self, now_ms: i64) {
        let retention_ms = self.config.offsets_retention.as_millis().min(i64::MAX as u128) as i64;
        let current = self.current_partitions();
        let mut groups = self.groups.lock().expect("groups lock");
        let mut loaded = self.offsets.lock().expect("offsets lock");
        for (&partition, committed) in loaded.iter_mut() {
            if !current.contains(&partition) {
                continue;
            }
            // Per group, its expired (topic, partition)s.
            let mut expired: HashMap<String, Vec<(String, i32)>> = HashMap::new();
            for (group, offsets) in committed.iter() {
                let base = groups.get(group).map_or(RetentionBase::CommitTime, Group::retention_base);
                let gone: Vec<(String, i32)> = offsets
                    .iter()
                    .filter(|((topic, _), v)| base.expired(topic, v, now_ms, retention_ms))
                    .map(|(tp, _)| tp.clone())
                    .collect();
                if !gone.is_empty() {
                    expired.insert(group.clone(), gone);
                }
            }
            // Empty groups whose offsets are all gone (or never were) end too.
            let ending: Vec<String> = groups
                .iter()
                .filter(|(name, g)| {
                    partition_for(name) == partition
                        && g.state == GroupState::Empty
                        && g.pending.is_empty()
                        && committed.get(*name).is_none_or(|o| expired.get(*name).is_some_and(|e| e.len() == o.len()))
                })
                .map(|(name, _)| name.clone())
                .collect();
            if expired.is_empty() && ending.is_empty() {
                continue;
            }
            let mut keys: Vec<Vec<u8>> =
                expired.iter().flat_map(|(g, tps)| tps.iter().map(|(t, p)| offsets::encode_key(g, t, *p))).collect();
            let expired_count = keys.len();
            keys.extend(ending.iter().map(|g| group_record::encode_key(g)));
            let records: Vec<batch::KeyValue<'_>> = keys.iter().map(|k| (Some(k.as_slice()), None)).collect();
            if let Err(e) = self.append_records(partition, &records) {
                tracing::error!(partition, error = %e, "writing expired offsets failed");
                continue;
            }
            for (g, tps) in expired {
                let Some(offsets) = committed.get_mut(&g) else { continue };
                for tp in &tps {
                    offsets.remove(tp);
                }
                if offsets.is_empty() {
                    committed.remove(&g);
                }
            }
            for g in &ending {
                groups.remove(g);
            }
            tracing::info!(partition, offsets = expired_count, groups = ending.len(), "expired committed offsets");
        }
    }

    /// The `__consumer_offsets` partitions this broker leads and holds as loaded in its current
    /// leadership (leader epoch). Only their groups and offsets may be acted on without a
    /// request: a partition led again since its load holds what another coordinator may have
    /// changed meanwhile, until the next sweep or request reloads it (`ensure_loaded`).
    fn current_partitions(&self) -> HashSet<i32> {
        let image = self.cluster.image();
        let loaded_epochs = self.loaded_epochs.lock().expect("loaded epochs lock");
        loaded_epochs
            .iter()
            .filter(|(&partition, &epoch)| {
                image
                    .partition(OFFSETS_TOPIC, partition as u32)
                    .is_some_and(|p| p.leader == self.node_id as i64 && p.leader_epoch == epoch)
            })
            .map(|(&partition, _)| partition)
            .collect()
    }

    /// Drop what memory holds of partitions this broker no longer leads, or leads again since
    /// it loaded them, as Kafka unloads a partition's groups when it stops leading it: members
    /// waiting in a JoinGroup or SyncGroup there get COORDINATOR_NOT_AVAILABLE and look for the
    /// coordinator again, instead of waiting for their rebalance timeout. A partition led here
    /// again is loaded from the log by the next sweep. Returns the partitions that stay.
    fn unload_stale_partitions(&self, groups: &mut HashMap<String, Group>) -> HashSet<i32> {
        let current = self.current_partitions();
        // Lock order: groups (held by the caller), then offsets, then loaded epochs.
        let mut offsets = self.offsets.lock().expect("offsets lock");
        let mut loaded_epochs = self.loaded_epochs.lock().expect("loaded epochs lock");
        let stale: HashSet<i32> = offsets.keys().filter(|p| !current.contains(p)).copied().collect();
        if !stale.is_empty() {
            unload(groups, &mut offsets, &mut loaded_epochs, &stale);
            tracing::info!(partitions = ?stale, "__consumer_offsets partitions no longer led here since loaded; unloaded");
        }
        current
    }

    /// The committed offsets of the groups coordinated here (partitions loaded in this
    /// leadership): (group, [(topic, partition, offset)]).
    pub fn committed_here(&self) -> Vec<GroupOffsets> {
        let current = self.current_partitions();
        let offsets = self.offsets.lock().expect("offsets lock");
        offsets
            .iter()
            .filter(|(p, _)| current.contains(p))
            .flat_map(|(_, groups)| groups.iter())
            .map(|(group, committed)| {
                (group.clone(), committed.iter().map(|((t, p), c)| (t.clone(), *p, c.offset)).collect())
            })
            .collect()
    }

    /// Load every `__consumer_offsets` partition this broker leads and has not loaded in this
    /// leadership, as Kafka's coordinator loads a partition's groups when it is elected its
    /// leader: ListGroups then names them all, and offsets retention and session expiry reach
    /// groups nobody has asked about since. A partition that cannot be loaded yet (no local
    /// log) is tried again at the next sweep, or by the next request for one of its groups.
    fn load_led_partitions(&self, failed_until: &mut HashMap<i32, Instant>, now: Instant) {
        let image = self.cluster.image();
        let Some(topic) = image.topics.get(OFFSETS_TOPIC) else { return };
        let unloaded: Vec<i32> = {
            let loaded_epochs = self.loaded_epochs.lock().expect("loaded epochs lock");
            (0i32..)
                .zip(&topic.partitions)
                .filter(|(p, rec)| rec.leader == self.node_id as i64 && loaded_epochs.get(p) != Some(&rec.leader_epoch))
                .map(|(p, _)| p)
                .collect()
        };
        for partition in unloaded {
            if failed_until.get(&partition).is_some_and(|until| now < *until) {
                continue;
            }
            // A load that failed (logged by the load itself) is tried again after a pause, not
            // at every sweep; requests for its groups still try at once.
            if self.ensure_loaded(partition) == Err(code(ResponseError::CoordinatorNotAvailable)) {
                failed_until.insert(partition, now + LOAD_RETRY_PAUSE);
            } else {
                failed_until.remove(&partition);
            }
        }
    }

    /// Load partitions led here; expire members past their session timeout; complete joins
    /// whose time has come.
    async fn sweeper(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut next_retention_check = Instant::now() + self.config.offsets_retention_check_interval;
        let mut load_failed_until = HashMap::new();
        loop {
            tick.tick().await;
            let now = Instant::now();
            self.load_led_partitions(&mut load_failed_until, now);
            if now >= next_retention_check {
                next_retention_check = now + self.config.offsets_retention_check_interval;
                self.expire_offsets(now_ms());
            }
            let mut groups = self.groups.lock().expect("groups lock");
            let current = self.unload_stale_partitions(&mut groups);
            for (name, g) in groups.iter_mut() {
                // Only groups of partitions loaded in this leadership are swept; a group whose
                // partition is not loaded (a request loading it races this sweep) waits.
                if !current.contains(&partition_for(name)) {
                    continue;
                }
                let swept = g.sweep(now);
                for id in &swept.expired {
                    tracing::info!(group = %name, member = %id, "member session expired");
                }
                if swept.completed {
                    tracing::info!(group = %name, generation = g.generation, members = g.members.len(), "rebalance complete");
                }
                self.persist_if_needed(name, g);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed_at(commit_timestamp: i64) -> CommittedOffset {
        CommittedOffset { offset: 1, leader_epoch: -1, metadata: String::new(), commit_timestamp }
    }

    #[test]
    fn retention_counts_from_the_commit_without_membership_and_from_emptiness_with_it() {
        let now = Instant::now();
        let retention = 1_000;
        let old = committed_at(10_000);

        // Offsets only (no consumer protocol ever): each commit's own time.
        let standalone = Group::new(now);
        assert_eq!(standalone.retention_base(), RetentionBase::CommitTime);
        assert!(RetentionBase::CommitTime.expired("t", &old, 11_000, retention));
        assert!(!RetentionBase::CommitTime.expired("t", &old, 10_999, retention));

        // A group with a member whose metadata is not a consumer subscription: never, however
        // old the commit.
        let mut group = Group::new(now);
        group.protocol_type = Some("consumer".to_string());
        group.protocol = Some("range".to_string());
        group.state = GroupState::Stable;
        group.members.insert("m-0".to_string(), member_with(now, "range", Bytes::from_static(b"\x00")));
        assert_eq!(group.retention_base(), RetentionBase::Never);
        assert!(!group.retention_base().expired("t", &old, i64::MAX / 2, retention));

        // Once it empties: from that moment, not from the commit.
        group.members.clear();
        group.become_empty();
        let since = group.empty_since_ms;
        assert_eq!(group.retention_base(), RetentionBase::Since(since));
        assert!(!group.retention_base().expired("t", &old, since + retention - 1, retention));
        assert!(group.retention_base().expired("t", &old, since + retention, retention));

        // A member id handed out (KIP-394) and not yet joined keeps the group.
        group.pending.insert("m-1".to_string(), now + Duration::from_secs(10));
        assert_eq!(group.retention_base(), RetentionBase::Never);
        group.sweep(now + Duration::from_secs(9));
        assert_eq!(group.retention_base(), RetentionBase::Never);
        // ... for its session timeout: an id handed out and never used is then forgotten.
        group.sweep(now + Duration::from_secs(10));
        assert_eq!(group.retention_base(), RetentionBase::Since(since));
    }

    fn member_with(now: Instant, protocol: &str, metadata: Bytes) -> Member {
        Member {
            instance_id: None,
            client_id: "c".to_string(),
            client_host: "/127.0.0.1".to_string(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocols: vec![(protocol.to_string(), metadata)],
            assignment: Bytes::new(),
            last_heartbeat: now,
            joined: true,
        }
    }

    /// A consumer's JoinGroup metadata: the subscription's version, then the subscription.
    fn subscription(version: i16, topics: &[&str]) -> Bytes {
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let mut s = ConsumerProtocolSubscription::default();
        s.topics = topics.iter().map(|t| StrBytes::from_string(t.to_string())).collect();
        let mut buf = bytes::BytesMut::new();
        buf.extend_from_slice(&version.to_be_bytes());
        s.encode(&mut buf, version).expect("encode subscription");
        buf.freeze()
    }

    #[test]
    fn a_stable_consumer_group_expires_offsets_of_topics_it_no_longer_subscribes_to() {
        let now = Instant::now();
        let retention = 1_000;
        let old = committed_at(10_000);
        let mut group = Group::new(now);
        group.protocol_type = Some("consumer".to_string());
        group.protocol = Some("range".to_string());
        group.state = GroupState::Stable;
        group.members.insert("m-0".to_string(), member_with(now, "range", subscription(1, &["orders"])));
        group.members.insert("m-1".to_string(), member_with(now, "range", subscription(3, &["payments"])));

        let base = group.retention_base();
        let subscribed: HashSet<String> = ["orders", "payments"].iter().map(|t| t.to_string()).collect();
        assert_eq!(base, RetentionBase::Unsubscribed(subscribed));
        // Subscribed topics stay however old their commits are.
        assert!(!base.expired("orders", &old, i64::MAX / 2, retention));
        assert!(!base.expired("payments", &old, i64::MAX / 2, retention));
        // Others count from their commit.
        assert!(!base.expired("audit", &old, 10_999, retention));
        assert!(base.expired("audit", &old, 11_000, retention));

        // A subscription version newer than the crate knows still decodes (fields are appended).
        group.members.insert("m-2".to_string(), member_with(now, "range", subscription(3, &["audit"])));
        if let Some(m) = group.members.get_mut("m-2") {
            let mut v = m.protocols[0].1.to_vec();
            v[0..2].copy_from_slice(&9i16.to_be_bytes());
            m.protocols[0].1 = Bytes::from(v);
        }
        assert!(!group.retention_base().expired("audit", &old, i64::MAX / 2, retention));

        // During a rebalance nothing expires (subscriptions may be changing).
        group.state = GroupState::PreparingRebalance;
        assert_eq!(group.retention_base(), RetentionBase::Never);
        // Nor for a group of another protocol type (Connect, a stream processor's own).
        group.state = GroupState::Stable;
        group.protocol_type = Some("connect".to_string());
        assert_eq!(group.retention_base(), RetentionBase::Never);
    }

    #[test]
    fn a_member_that_neither_rejoins_nor_heartbeats_leaves_a_join_phase_after_its_session() {
        let t0 = Instant::now();
        let at = |secs: f64| t0 + Duration::from_secs_f64(secs);
        let member = |heartbeat: Instant| Member {
            rebalance_timeout: Duration::from_secs(300),
            last_heartbeat: heartbeat,
            ..member_with(heartbeat, "range", Bytes::new())
        };
        // A Stable group of two (10 s sessions, librdkafka's 300 s max.poll.interval.ms); then
        // "dead" stops (a killed consumer, or a member restored from the log whose client lost
        // its id), a new member joins, and "live" rejoins.
        let mut group = Group::new(t0);
        group.protocol_type = Some("consumer".to_string());
        group.protocol = Some("range".to_string());
        group.state = GroupState::Stable;
        group.members.insert("dead".to_string(), member(t0));
        group.members.insert("live".to_string(), member(t0));
        group.prepare_rebalance(at(1.0));
        let mut answers = Vec::new();
        for id in ["live", "new"] {
            let m = group.members.entry(id.to_string()).or_insert_with(|| member(at(1.0)));
            m.joined = true;
            let (tx, rx) = oneshot::channel();
            group.join_waiters.insert(id.to_string(), tx);
            answers.push(rx);
        }

        let swept = group.sweep(at(5.0));
        assert!(swept.expired.is_empty() && !swept.completed);
        assert_eq!(group.state, GroupState::PreparingRebalance);

        // Past dead's session (10 s from its last heartbeat), long before the rebalance timeout:
        // it leaves and the join completes. "live" waits in its JoinGroup, so its own older
        // heartbeat does not expire it.
        let swept = group.sweep(at(10.5));
        assert_eq!(swept.expired, vec!["dead".to_string()]);
        assert!(swept.completed);
        assert_eq!(group.state, GroupState::CompletingRebalance);
        assert_eq!(group.members.keys().collect::<Vec<_>>(), ["live", "new"]);
        for mut rx in answers {
            let answer = rx.try_recv().expect("answered");
            assert_eq!((answer.error, answer.generation), (0, 1));
        }
    }

    #[test]
    fn an_empty_group_restored_from_its_record_keeps_the_time_it_emptied() {
        let stored = StoredGroup {
            protocol_type: "consumer".to_string(),
            generation: 4,
            protocol: None,
            leader: None,
            state_timestamp: 1_700_000_000_000,
            members: Vec::new(),
        };
        let g = Group::restore(&stored, Instant::now());
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.retention_base(), RetentionBase::Since(1_700_000_000_000));
        assert_eq!(g.to_stored().state_timestamp, 1_700_000_000_000);
    }
}
