//! Partition replication on this broker: the role of every local replica (leader, follower
//! or neither) as the metadata image says, the high watermark, the leader's view of its
//! followers, ISR shrink/expand proposals, and the acks=all wait (the produce purgatory).
//!
//! - The image is the only source of leadership and ISR. A leader proposes ISR changes
//!   (`ChangePartition` with the partition epoch it saw) and uses them only once they are
//!   committed and applied, i.e. once they appear in the image.
//! - The high watermark (HW) is the smallest log end offset of the ISR; it only grows
//!   while a broker leads. Consumers read below it; acks=all completes once it passes
//!   the batch. Followers learn it from the leader's fetch responses.
//! - Followers copy the leader's log through `fetcher.rs`, one fetcher per leader broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foldhash::HashMapExt;
use kafka_protocol::ResponseError;
use tokio::sync::watch;

use super::changes::PartitionChanges;
use super::fetcher::FetcherHandle;
use super::hw_checkpoint;
use super::leader::LeaderState;
use super::metrics::ReplicationMetrics;
use super::throttle::ReplicationThrottle;
use crate::cluster::image::{MetadataImage, PartitionRecord};
use crate::cluster::types::MetadataCommand;
use crate::cluster::{ClusterNode, NodeId};
use crate::log::{now_ms, Log, LogError, LogManager, TopicPartition};

#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// `replica.lag.time.max.ms`: an ISR follower not caught up this long is removed.
    pub replica_lag_time_max_ms: i64,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch waits for data.
    pub fetch_wait_max_ms: i32,
    /// `replica.fetch.max.bytes` (per partition) and `replica.fetch.response.max.bytes`.
    pub fetch_partition_max_bytes: i32,
    pub fetch_response_max_bytes: i32,
    /// `replica.fetch.backoff.ms`: pause after a failed fetch.
    pub fetch_backoff_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            replica_lag_time_max_ms: 30_000,
            fetch_wait_max_ms: 500,
            fetch_partition_max_bytes: 1024 * 1024,
            fetch_response_max_bytes: 10 * 1024 * 1024,
            fetch_backoff_ms: 500,
        }
    }
}

/// What this broker is for one partition.
#[derive(Debug, Clone)]
pub enum Role {
    None,
    Leader { state: LeaderState, isr: Vec<NodeId>, partition_epoch: i32 },
    Follower { leader: NodeId, leader_epoch: i32 },
}

pub struct PartitionReplica {
    pub tp: TopicPartition,
    /// `Log::instance` of the log this replica's state describes.
    log_instance: u64,
    role: Mutex<Role>,
    /// The high watermark; waiters (acks=all) watch it. Also bumped without a change when
    /// the role changes, so waiters re-check whether they still lead.
    hw: watch::Sender<i64>,
    isr_change_in_flight: AtomicBool,
}

impl PartitionReplica {
    pub fn high_watermark(&self) -> i64 {
        *self.hw.borrow()
    }
    pub fn role(&self) -> Role {
        self.role.lock().expect("role lock").clone()
    }
    /// The role, locked, if this broker follows `leader` at `leader_epoch`: the fetcher
    /// holds it while it changes the log, so a leadership change cannot interleave.
    pub fn lock_if_following(&self, leader: NodeId, leader_epoch: i32) -> Option<std::sync::MutexGuard<'_, Role>> {
        let role = self.role.lock().expect("role lock");
        matches!(&*role, Role::Follower { leader: l, leader_epoch: e } if *l == leader && *e == leader_epoch)
            .then_some(role)
    }
    /// As leader, the most caught-up of `candidates` (`LeaderState::most_caught_up`).
    pub fn most_caught_up_follower(&self, candidates: impl IntoIterator<Item = NodeId>) -> Option<NodeId> {
        match &*self.role.lock().expect("role lock") {
            Role::Leader { state, .. } => state.most_caught_up(candidates),
            _ => None,
        }
    }
    /// As leader at `leader_epoch`, the low watermark (`LeaderState::low_watermark`) given
    /// the leader's own log start; `None` when not that leader (any more).
    pub fn low_watermark(
        &self,
        leader_epoch: i32,
        leader_log_start: i64,
        live: impl Fn(NodeId) -> bool,
    ) -> Option<i64> {
        match &*self.role.lock().expect("role lock") {
            Role::Leader { state, .. } if state.leader_epoch == leader_epoch => {
                Some(state.low_watermark(leader_log_start, live))
            }
            _ => None,
        }
    }
    /// Drop whatever role this replica had; acks=all waiters wake and give up.
    fn stand_down(&self) {
        let mut role = self.role.lock().expect("role lock");
        if !matches!(*role, Role::None) {
            *role = Role::None;
            drop(role);
            self.hw.send_modify(|_| {});
        }
    }
    fn set_hw_at_least(&self, hw: i64) -> bool {
        self.hw.send_if_modified(|cur| {
            if hw > *cur {
                *cur = hw;
                true
            } else {
                false
            }
        })
    }
    /// A follower takes the leader's HW capped at its own log end (it may go down: a new
    /// leader's HW can lag the old one's).
    /// Returns whether it changed.
    pub fn set_follower_hw(&self, hw: i64) -> bool {
        self.hw.send_if_modified(|cur| {
            let changed = *cur != hw;
            *cur = hw;
            changed
        })
    }
}

/// Why an acks=all produce did not complete; mapped to Kafka error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AcksError {
    #[error("the request timed out before every in-sync replica had the records")]
    Timeout,
    #[error("the ISR shrank below min.insync.replicas after the records were written")]
    NotEnoughReplicasAfterAppend,
    #[error("this broker stopped leading the partition")]
    NotLeader,
}

impl AcksError {
    pub fn code(self) -> i16 {
        match self {
            AcksError::Timeout => ResponseError::RequestTimedOut.code(),
            AcksError::NotEnoughReplicasAfterAppend => ResponseError::NotEnoughReplicasAfterAppend.code(),
            AcksError::NotLeader => ResponseError::NotLeaderOrFollower.code(),
        }
    }
}

pub struct Replication {
    pub node_id: NodeId,
    pub cluster: Arc<ClusterNode>,
    pub logs: Arc<LogManager>,
    pub config: ReplicationConfig,
    pub metrics: ReplicationMetrics,
    /// Looked up for every partition of every fetch: hashed with foldhash, not SipHash.
    partitions: Mutex<foldhash::HashMap<TopicPartition, Arc<PartitionReplica>>>,
    fetchers: Mutex<BTreeMap<NodeId, Arc<FetcherHandle>>>,
    /// Appends and high-watermark moves by partition, which waiting fetches wake on
    /// (`changes.rs`; the produce path and the group coordinator record their appends here).
    pub changes: Arc<PartitionChanges>,
    /// High watermarks read from the checkpoint at start, each used once when its replica is
    /// first set up (`hw_checkpoint.rs`).
    checkpointed_hw: Mutex<HashMap<TopicPartition, i64>>,
    /// What the checkpoint file holds now, to skip rewriting an unchanged one.
    written_hw: Mutex<Option<HashMap<TopicPartition, i64>>>,
    /// The leader epoch of every partition in the newest image the reconcile applied (local
    /// replica or not): a request handler holding an older image must not make this broker
    /// leader again (it may have just lost leadership or the replica).
    leader_epochs: Mutex<foldhash::HashMap<TopicPartition, i32>>,
    /// Set by `stop_fetchers` at shutdown: the fetchers write nothing more.
    fetchers_stopped: AtomicBool,
    /// The byte budget of fetches by replicas a reassignment is adding.
    pub reassignment_throttle: ReplicationThrottle,
    /// Kafka's throttle configs (`cluster/throttle_configs.rs`): what this broker serves as a
    /// leader to out-of-sync followers of the partitions its leader list names, and what it
    /// fetches as a follower of the partitions its follower list names.
    pub leader_quota: ReplicationThrottle,
    pub follower_quota: ReplicationThrottle,
}

/// `replica.high.watermark.checkpoint.interval.ms`.
const HW_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

impl Replication {
    pub fn new(
        node_id: NodeId,
        cluster: Arc<ClusterNode>,
        logs: Arc<LogManager>,
        config: ReplicationConfig,
    ) -> Arc<Self> {
        let checkpointed = hw_checkpoint::read(logs.data_dir()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "high-watermark checkpoint unreadable; starting replicas from their log starts");
            HashMap::new()
        });
        Arc::new(Self {
            checkpointed_hw: Mutex::new(checkpointed),
            written_hw: Mutex::new(None),
            leader_epochs: Mutex::new(foldhash::HashMap::new()),
            node_id,
            cluster,
            logs,
            config,
            metrics: ReplicationMetrics::unregistered(),
            partitions: Mutex::new(foldhash::HashMap::new()),
            fetchers: Mutex::new(BTreeMap::new()),
            changes: Arc::new(PartitionChanges::default()),
            fetchers_stopped: AtomicBool::new(false),
            reassignment_throttle: ReplicationThrottle::default(),
            leader_quota: ReplicationThrottle::default(),
            follower_quota: ReplicationThrottle::default(),
        })
    }

    /// Shutdown: the replica fetchers write nothing more. Each checks the flag under the
    /// log's lock before it writes, and closing a log takes that lock, so a write in progress
    /// finishes before the close and none comes after it.
    pub fn stop_fetchers(&self) {
        self.fetchers_stopped.store(true, Ordering::SeqCst);
        for f in self.fetchers.lock().expect("fetchers lock").values() {
            f.wake();
        }
    }

    pub(crate) fn fetchers_stopped(&self) -> bool {
        self.fetchers_stopped.load(Ordering::SeqCst)
    }

    /// `tp`'s high watermark advanced: consumer fetches waiting on it look again.
    pub(crate) fn notify_progress(&self, tp: &TopicPartition) {
        self.changes.record(tp);
    }

    pub fn replica(&self, tp: &TopicPartition) -> Option<Arc<PartitionReplica>> {
        self.partitions.lock().expect("partitions lock").get(tp).cloned()
    }

    fn replica_or_create(&self, tp: &TopicPartition, log: &Mutex<Log>) -> Arc<PartitionReplica> {
        let (instance, start, end) = {
            let log = log.lock().expect("log lock");
            (log.instance(), log.log_start_offset(), log.log_end_offset())
        };
        let mut map = self.partitions.lock().expect("partitions lock");
        let fresh_log = match map.get(tp) {
            Some(rep) if rep.log_instance == instance => return rep.clone(),
            Some(old) => {
                // The log was deleted and made again (a topic recreated under its name): the
                // old replica's HW, ISR and followers belong to the old log. Its waiters give up.
                tracing::info!(partition = %tp, "the partition's log was replaced; starting its replica afresh");
                old.stand_down();
                true
            }
            None => false,
        };
        // Committed as far as the checkpoint says (capped by what the log holds after
        // recovery), else only up to the log start. A checkpoint is of the log this process
        // opened at start, never of a replacement.
        let checkpointed = self.checkpointed_hw.lock().expect("checkpoint lock").remove(tp).filter(|_| !fresh_log);
        let hw = checkpointed.map_or(start, |hw| hw.clamp(start, end.max(start)));
        let rep = Arc::new(PartitionReplica {
            tp: tp.clone(),
            log_instance: instance,
            role: Mutex::new(Role::None),
            hw: watch::channel(hw).0,
            isr_change_in_flight: AtomicBool::new(false),
        });
        map.insert(tp.clone(), rep.clone());
        rep
    }

    /// The replica of a partition the image says this broker leads, made leader first if it
    /// was not (new epoch: the epoch is recorded in the leader-epoch cache, followers get a
    /// fresh lag window). Keeps the ISR and follower set in line with `part`.
    pub fn ensure_leader(
        &self,
        tp: &TopicPartition,
        part: &PartitionRecord,
        log: &Mutex<Log>,
    ) -> Arc<PartitionReplica> {
        self.ensure_leader_from(tp, part, log, false)
    }

    /// `current`: `part` comes from the newest image (the reconcile). Request handlers pass the
    /// image they started from, which may be older than the one the role was last set from;
    /// their call never takes the ISR or follower set back to an older partition epoch (it
    /// would drop a follower the maximal ISR waits for).
    fn ensure_leader_from(
        &self,
        tp: &TopicPartition,
        part: &PartitionRecord,
        log: &Mutex<Log>,
        current: bool,
    ) -> Arc<PartitionReplica> {
        if !current {
            // The common case for a request handler: already leader at this leader epoch, and
            // `part` brings no newer partition epoch. Nothing to change, and the HW is already
            // recomputed by whatever moved it (appends, follower fetches, ISR changes).
            if let Some(rep) = self.replica(tp).filter(|r| r.log_instance == log.lock().expect("log lock").instance()) {
                let unchanged = matches!(&*rep.role.lock().expect("role lock"),
                    Role::Leader { state, partition_epoch, .. }
                        if state.leader_epoch == part.leader_epoch && part.partition_epoch <= *partition_epoch);
                if unchanged {
                    return rep;
                }
            }
        }
        if !current && !self.cluster.is_registered() {
            // Before this broker's registration its image may be the one from before a
            // restart (see `run`): a request handler takes no role from it, so a Produce is
            // answered NOT_LEADER_OR_FOLLOWER instead of being acknowledged by a leader that
            // the quorum has replaced.
            return self.replica_or_create(tp, log);
        }
        if !current && self.leader_epochs.lock().expect("epochs lock").get(tp).is_some_and(|e| *e > part.leader_epoch) {
            // A stale image: leave the role alone (appends check it, `append_as_leader`).
            return self.replica_or_create(tp, log);
        }
        let rep = self.replica_or_create(tp, log);
        let now = now_ms();
        let followers: Vec<NodeId> = part.replicas.iter().copied().filter(|r| *r != self.node_id).collect();
        let became_leader;
        {
            let mut role = rep.role.lock().expect("role lock");
            match &mut *role {
                Role::Leader { state, isr, partition_epoch } if state.leader_epoch == part.leader_epoch => {
                    let changed = if current {
                        *partition_epoch != part.partition_epoch
                    } else {
                        part.partition_epoch > *partition_epoch
                    };
                    // Replica set changes always bump the partition epoch.
                    if changed {
                        state.set_followers(&followers, now);
                        *isr = part.isr.clone();
                        *partition_epoch = part.partition_epoch;
                    }
                    became_leader = false;
                }
                _ => {
                    let start = {
                        let mut log = log.lock().expect("log lock");
                        match log.assign_leader_epoch(part.leader_epoch) {
                            Ok(()) => {}
                            // Deleted under a request handler since its check: appends refuse.
                            Err(e @ LogError::Deleted { .. }) => {
                                tracing::debug!(partition = %tp, error = %e, "not recording the leader epoch");
                            }
                            Err(e) => tracing::error!(partition = %tp, error = %e, "recording the leader epoch failed"),
                        }
                        log.log_end_offset()
                    };
                    *role = Role::Leader {
                        state: LeaderState::new(part.leader_epoch, start, followers, now),
                        isr: part.isr.clone(),
                        partition_epoch: part.partition_epoch,
                    };
                    became_leader = true;
                }
            }
        }
        if became_leader {
            tracing::info!(partition = %tp, leader_epoch = part.leader_epoch, isr = ?part.isr, hw = rep.high_watermark(), "became leader");
            self.unregister_follower(tp);
            rep.hw.send_modify(|_| {});
        }
        self.update_leader_hw(&rep, log);
        rep
    }

    /// Run `append` on the log of `tp` as its leader at `part`'s leader epoch (the leader
    /// role set up from `part` if this broker has none yet), holding the role lock across it
    /// so that a leadership change cannot slip in between the check and the write; then
    /// recompute the HW (an ISR of the leader alone commits at once). `None`: not the leader
    /// at that epoch (any more).
    pub fn append_as_leader<R>(
        &self,
        tp: &TopicPartition,
        part: &PartitionRecord,
        log: &Mutex<Log>,
        append: impl FnOnce(&mut Log) -> R,
    ) -> Option<(R, Arc<PartitionReplica>)> {
        if log.lock().expect("log lock").is_deleted() {
            // Looked up before the replica manager deleted it: nothing to lead any more.
            return None;
        }
        let rep = self.ensure_leader(tp, part, log);
        let role = rep.role.lock().expect("role lock");
        if !matches!(&*role, Role::Leader { state, .. } if state.leader_epoch == part.leader_epoch) {
            return None;
        }
        let mut locked = log.lock().expect("log lock");
        let out = append(&mut locked);
        drop(locked);
        drop(role);
        self.update_leader_hw(&rep, log);
        Some((out, rep))
    }

    /// Recompute a leader's HW from the ISR's log end offsets; wakes waiters if it moved.
    pub fn update_leader_hw(&self, rep: &PartitionReplica, log: &Mutex<Log>) {
        let leo = log.lock().expect("log lock").log_end_offset();
        let hw = {
            let role = rep.role.lock().expect("role lock");
            let Role::Leader { state, isr, .. } = &*role else { return };
            state.isr_high_watermark(self.node_id, leo, isr)
        };
        if let Some(hw) = hw {
            if rep.set_hw_at_least(hw.min(leo)) {
                self.notify_progress(&rep.tp);
            }
        }
    }

    /// A follower fetched `fetch_offset` from a partition this broker leads in `leader_epoch`
    /// (the epoch the request was checked against), reporting its log start offset
    /// `log_start`. A fetch checked against another epoch of this broker's leadership (it lost
    /// and regained it meanwhile, its log possibly truncated in between) is not recorded.
    pub fn record_follower_fetch(
        &self,
        rep: &PartitionReplica,
        follower: NodeId,
        leader_epoch: i32,
        fetch_offset: i64,
        log_start: i64,
        log: &Mutex<Log>,
    ) {
        {
            let mut role = rep.role.lock().expect("role lock");
            let Role::Leader { state, .. } = &mut *role else { return };
            if state.leader_epoch != leader_epoch {
                return;
            }
            // Read under the role lock: the log end of this same leadership.
            let leo = log.lock().expect("log lock").log_end_offset();
            if fetch_offset > leo {
                tracing::info!(partition = %rep.tp, follower, fetch_offset, log_end_offset = leo, leader_epoch,
                    "a follower fetched past this leader's log end (a divergent tail it has yet to truncate)");
            }
            state.record_log_start(follower, log_start);
            // The HW depends on the follower's log end only: unchanged, it cannot move.
            if !state.record_fetch(follower, fetch_offset, leo, now_ms()) {
                return;
            }
        }
        self.update_leader_hw(rep, log);
    }

    /// acks=all: wait until the HW passes `required` (the offset after the batch), the
    /// request timeout passes, or this broker stops leading. Then the ISR must still hold
    /// `min_isr` members, else NOT_ENOUGH_REPLICAS_AFTER_APPEND (as Kafka).
    pub async fn wait_for_isr(
        &self,
        rep: &PartitionReplica,
        leader_epoch: i32,
        required: i64,
        min_isr: usize,
        timeout: Duration,
    ) -> Result<(), AcksError> {
        let mut rx = rep.hw.subscribe();
        self.metrics.purgatory_size.inc();
        let _guard = GaugeGuard(&self.metrics.purgatory_size);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let role = rep.role.lock().expect("role lock");
                match &*role {
                    Role::Leader { state, isr, .. } if state.leader_epoch == leader_epoch => {
                        if *rx.borrow_and_update() >= required {
                            return if isr.len() < min_isr {
                                Err(AcksError::NotEnoughReplicasAfterAppend)
                            } else {
                                Ok(())
                            };
                        }
                    }
                    _ => return Err(AcksError::NotLeader),
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(AcksError::NotLeader),
                Err(_) => return Err(AcksError::Timeout),
            }
        }
    }

    /// Bring every local replica's role in line with `image`: leaders start/stop, followers
    /// are handed to the fetcher of their leader.
    pub fn reconcile(self: &Arc<Self>, image: &MetadataImage) {
        // First the epochs, so a handler with an older image is refused from now on.
        {
            let mut epochs = self.leader_epochs.lock().expect("epochs lock");
            let mut next = foldhash::HashMap::with_capacity(epochs.len());
            for t in image.topics.values() {
                for (i, p) in t.partitions.iter().enumerate() {
                    let tp = TopicPartition::new(&t.name, i as i32);
                    let e = epochs.get(&tp).map_or(p.leader_epoch, |old| (*old).max(p.leader_epoch));
                    next.insert(tp, e);
                }
            }
            *epochs = next;
        }
        let mut seen = std::collections::HashSet::new();
        for t in image.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                if !p.replicas.contains(&self.node_id) {
                    continue;
                }
                let tp = TopicPartition::new(&t.name, i as i32);
                let Some(log) = self.logs.get(&tp) else { continue };
                seen.insert(tp.clone());
                if p.leader == self.node_id as i64 {
                    self.ensure_leader_from(&tp, p, &log, true);
                } else if p.leader >= 0 {
                    self.become_follower(&tp, p.leader as NodeId, p.leader_epoch, &log);
                } else {
                    self.become_none(&tp);
                }
            }
        }
        let unseen: Vec<TopicPartition> =
            self.partitions.lock().expect("partitions lock").keys().filter(|tp| !seen.contains(*tp)).cloned().collect();
        if !unseen.is_empty() {
            // Unseen is not gone: a Produce may have set up a partition that this pass found
            // without a log (the replica manager made it meanwhile) or that `image` predates.
            // Sweeping it would fail that Produce's acks=all wait after its append, and the
            // client's retry would write the batch twice. Only what the newest image (read
            // after the keys, so it is at least as new as any handler's) no longer places on
            // this broker goes.
            let newest = self.cluster.image();
            for tp in unseen.into_iter().filter(|tp| !placed_here(&newest, tp, self.node_id)) {
                self.become_none(&tp);
                self.partitions.lock().expect("partitions lock").remove(&tp);
            }
        }
        self.update_gauges(image);
    }

    fn become_follower(self: &Arc<Self>, tp: &TopicPartition, leader: NodeId, leader_epoch: i32, log: &Mutex<Log>) {
        let rep = self.replica_or_create(tp, log);
        {
            let mut role = rep.role.lock().expect("role lock");
            if let Role::Follower { leader: l, leader_epoch: e } = &*role {
                if *l == leader && *e == leader_epoch {
                    return;
                }
            }
            *role = Role::Follower { leader, leader_epoch };
        }
        tracing::info!(partition = %tp, leader, leader_epoch, "following");
        rep.hw.send_modify(|_| {}); // acks=all waiters of a former leader give up
        self.unregister_follower(tp);
        let fetcher = {
            let mut fetchers = self.fetchers.lock().expect("fetchers lock");
            fetchers.entry(leader).or_insert_with(|| FetcherHandle::start(self.clone(), leader)).clone()
        };
        fetcher.add_partition(tp.clone(), leader_epoch);
    }

    fn become_none(&self, tp: &TopicPartition) {
        if let Some(rep) = self.replica(tp) {
            rep.stand_down();
        }
        self.unregister_follower(tp);
    }

    fn unregister_follower(&self, tp: &TopicPartition) {
        for f in self.fetchers.lock().expect("fetchers lock").values() {
            f.remove_partition(tp);
        }
    }

    /// Whether this broker still follows `leader` at `leader_epoch` for `tp` (the fetcher
    /// checks before it appends or truncates).
    pub fn is_following(
        &self,
        tp: &TopicPartition,
        leader: NodeId,
        leader_epoch: i32,
    ) -> Option<Arc<PartitionReplica>> {
        let rep = self.replica(tp)?;
        let ok = matches!(&*rep.role.lock().expect("role lock"),
            Role::Follower { leader: l, leader_epoch: e } if *l == leader && *e == leader_epoch);
        ok.then_some(rep)
    }

    /// Periodic ISR upkeep on led partitions: propose removing followers that are not caught
    /// up for `replica.lag.time.max.ms`, and adding followers that caught up. One proposal
    /// per partition at a time; a stale partition epoch means the image moved on, and the
    /// next pass decides again from the new image.
    pub async fn run_isr_maintenance(self: Arc<Self>) {
        let period = Duration::from_millis((self.config.replica_lag_time_max_ms / 4).clamp(100, 1000) as u64);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.update_fetcher_gauges();
            let reps: Vec<Arc<PartitionReplica>> =
                self.partitions.lock().expect("partitions lock").values().cloned().collect();
            let now = now_ms();
            // Fenced brokers never rejoin an ISR (the state machine refuses it too).
            let live: Vec<NodeId> = self.cluster.image().live_brokers();
            for rep in reps {
                if rep.isr_change_in_flight.swap(true, Ordering::AcqRel) {
                    continue;
                }
                let proposal = {
                    let mut role = rep.role.lock().expect("role lock");
                    let Role::Leader { state, isr, partition_epoch } = &mut *role else {
                        rep.isr_change_in_flight.store(false, Ordering::Release);
                        continue;
                    };
                    let hw = rep.high_watermark();
                    let out = state.out_of_sync(self.node_id, isr, now, self.config.replica_lag_time_max_ms);
                    let lag_max = self.config.replica_lag_time_max_ms;
                    let back: Vec<NodeId> = state
                        .caught_up_outside_isr(isr, hw, now, lag_max)
                        .into_iter()
                        .filter(|b| live.contains(b))
                        .collect();
                    if out.is_empty() && back.is_empty() {
                        rep.isr_change_in_flight.store(false, Ordering::Release);
                        continue;
                    }
                    let committed = isr.clone();
                    let mut new_isr: Vec<NodeId> = isr.iter().copied().filter(|r| !out.contains(r)).collect();
                    new_isr.extend(back.iter().copied());
                    // KIP-497's maximal ISR: while the expansion is in flight the high watermark
                    // already waits for the joining followers, so that once the change is
                    // committed every member has every record acknowledged meanwhile (a joining
                    // follower can be elected leader at once, e.g. when it completes a
                    // reassignment). Leaving members keep counting until the commit.
                    isr.extend(back.iter().copied());
                    (new_isr, committed, *partition_epoch, out, back)
                };
                let (isr, committed, partition_epoch, out, back) = proposal;
                let me = self.clone();
                let rep2 = rep.clone();
                tokio::spawn(async move {
                    let cmd = MetadataCommand::ChangePartition {
                        topic: rep2.tp.topic.clone(),
                        partition: rep2.tp.partition as u32,
                        partition_epoch,
                        leader: None,
                        isr: Some(isr.clone()),
                    };
                    match me.cluster.propose(cmd).await {
                        Ok(()) => {
                            tracing::info!(partition = %rep2.tp, ?isr, removed = ?out, added = ?back, "ISR changed");
                            me.metrics.isr_shrinks.inc_by(out.len() as u64);
                            me.metrics.isr_expands.inc_by(back.len() as u64);
                        }
                        Err(e) => {
                            tracing::info!(partition = %rep2.tp, ?isr, error = %e, "ISR change refused");
                            // Back to the committed ISR, unless the image already moved on (the
                            // reconcile then set the ISR from it).
                            let mut role = rep2.role.lock().expect("role lock");
                            if let Role::Leader { isr, partition_epoch: e, .. } = &mut *role {
                                if *e == partition_epoch {
                                    *isr = committed;
                                }
                            }
                            drop(role);
                            // Without the joining followers the HW may move on at once.
                            if let Some(log) = me.logs.get(&rep2.tp) {
                                me.update_leader_hw(&rep2, &log);
                            }
                        }
                    }
                    rep2.isr_change_in_flight.store(false, Ordering::Release);
                });
            }
        }
    }

    /// Write every local replica's high watermark to the checkpoint file, unless it holds
    /// exactly that already. Blocking I/O.
    pub fn checkpoint_high_watermarks(&self) {
        let mut hws: HashMap<TopicPartition, i64> = self
            .partitions
            .lock()
            .expect("partitions lock")
            .iter()
            .map(|(tp, rep)| (tp.clone(), rep.high_watermark()))
            .collect();
        // Replicas not set up yet keep the value they had.
        for (tp, hw) in self.checkpointed_hw.lock().expect("checkpoint lock").iter() {
            if self.logs.get(tp).is_some() {
                hws.entry(tp.clone()).or_insert(*hw);
            }
        }
        let mut written = self.written_hw.lock().expect("checkpoint lock");
        if written.as_ref() == Some(&hws) {
            return;
        }
        match hw_checkpoint::write(self.logs.data_dir(), &hws) {
            Ok(()) => *written = Some(hws),
            Err(e) => {
                tracing::warn!(error = %e, "writing the high-watermark checkpoint failed");
                self.logs.dir_failure().record(&e);
            }
        }
    }

    async fn run_hw_checkpoints(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(HW_CHECKPOINT_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let me = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || me.checkpoint_high_watermarks()).await {
                tracing::error!(error = %e, "high-watermark checkpoint task failed");
            }
        }
    }

    /// Follow the image: reconcile at every change until the cluster node stops.
    pub async fn run(self: Arc<Self>) {
        // Not before this broker's registration is in its own image: until then the image is
        // the one from before the restart, which can name this broker leader of partitions
        // that elected another leader meanwhile; acting on it would take acks=1 writes that
        // the real leader never sees. Kafka's brokers likewise wait to catch up with the
        // metadata log before they take a role.
        self.cluster.wait_registered().await;
        tokio::spawn(self.clone().run_isr_maintenance());
        tokio::spawn(self.clone().run_hw_checkpoints());
        let mut rx = self.cluster.subscribe();
        loop {
            let image = self.cluster.image();
            let me = self.clone();
            // Log locks and the epoch checkpoint write are blocking work.
            if let Err(e) = tokio::task::spawn_blocking(move || me.reconcile(&image)).await {
                tracing::error!(error = %e, "replication reconcile failed");
            }
            // A log created by the replica manager after this image arrived is picked up at
            // the next change or on the next tick.
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Fetcher lag in messages and seconds. Called after every replica fetch and on the ISR
    /// maintenance tick, so the seconds keep growing while a fetcher gets no answers.
    pub fn update_fetcher_gauges(&self) {
        let now = now_ms();
        let (messages, ms) = {
            let fetchers = self.fetchers.lock().expect("fetchers lock");
            (fetchers.values().map(|f| f.lag()).sum(), fetchers.values().map(|f| f.lag_ms(now)).max().unwrap_or(0))
        };
        self.metrics.fetcher_lag_messages.set(messages);
        self.metrics.fetcher_lag_seconds.set(ms as f64 / 1000.0);
    }

    fn update_gauges(&self, image: &MetadataImage) {
        let mut under_replicated = 0;
        let mut under_min_isr = 0;
        for t in image.topics.values() {
            let min_isr: usize = t.configs.get("min.insync.replicas").and_then(|v| v.parse().ok()).unwrap_or(1);
            for p in &t.partitions {
                if p.leader != self.node_id as i64 {
                    continue;
                }
                if p.isr.len() < p.replicas.len() {
                    under_replicated += 1;
                }
                if p.isr.len() < min_isr {
                    under_min_isr += 1;
                }
            }
        }
        self.metrics.under_replicated.set(under_replicated);
        self.metrics.under_min_isr.set(under_min_isr);
    }
}

/// Whether `image` lists `node` among the replicas of `tp`.
fn placed_here(image: &MetadataImage, tp: &TopicPartition, node: NodeId) -> bool {
    u32::try_from(tp.partition)
        .ok()
        .and_then(|p| image.partition(&tp.topic, p))
        .is_some_and(|p| p.replicas.contains(&node))
}

struct GaugeGuard<'a>(&'a prometheus::IntGauge);
impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cluster::node::ClusterConfig;
    use crate::log::batch::build_batch;
    use crate::log::{LogConfig, LogMetrics};

    /// One in-process broker 0 with `other_voters` beside it in the metadata quorum, a log
    /// manager and replication, with no replica manager or reconcile loop running, so a test
    /// orders their steps; not waiting for its registration.
    async fn broker(
        dir: &std::path::Path,
        other_voters: &[(NodeId, String)],
    ) -> (Arc<ClusterNode>, Arc<LogManager>, Arc<Replication>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let raft_addr = listener.local_addr().unwrap().to_string();
        let mut voters = vec![(0, raft_addr.clone())];
        voters.extend_from_slice(other_voters);
        let cfg = ClusterConfig {
            node_id: 0,
            data_dir: dir.join("meta"),
            raft_addr,
            kafka_addr: "127.0.0.1:1".into(),
            http_addr: "127.0.0.1:2".into(),
            rack: None,
            voters,
            session_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_millis(200),
            metadata_version: crate::cluster::types::METADATA_VERSION,
        };
        let cluster = ClusterNode::start(cfg, listener, &prometheus::Registry::new()).await.unwrap();
        let (logs, _) = LogManager::open(&dir.join("logs"), LogConfig::default(), LogMetrics::unregistered()).unwrap();
        let logs = Arc::new(logs);
        let replication = Replication::new(0, cluster.clone(), logs.clone(), ReplicationConfig::default());
        (cluster, logs, replication)
    }

    /// `broker` as the only voter, registered.
    async fn single_broker(dir: &std::path::Path) -> (Arc<ClusterNode>, Arc<LogManager>, Arc<Replication>) {
        let (cluster, logs, replication) = broker(dir, &[]).await;
        tokio::time::timeout(Duration::from_secs(30), cluster.wait_registered()).await.expect("registered");
        (cluster, logs, replication)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn before_registration_a_produce_finds_no_leader() {
        // The other voter never answers: no quorum, so this broker never registers, and its
        // image is whatever it held before (here a partition it led).
        let dir = tempfile::tempdir().unwrap();
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (cluster, logs, replication) = broker(dir.path(), &[(1, silent.local_addr().unwrap().to_string())]).await;
        let tp = TopicPartition::new("stale", 0);
        let log = logs.get_or_create(&tp, LogConfig::default()).unwrap();
        let part = PartitionRecord {
            replicas: vec![0, 1],
            isr: vec![0, 1],
            leader: 0,
            leader_epoch: 3,
            partition_epoch: 5,
            adding: Vec::new(),
            removing: Vec::new(),
        };
        assert!(!cluster.is_registered());
        let mut b = build_batch(&[(None, Some(&b"early"[..]))], now_ms());
        let appended = replication.append_as_leader(&tp, &part, &log, |l| l.append(&mut b, 3, now_ms()).unwrap());
        assert!(appended.is_none(), "a broker that has not registered led a partition from its old image");
        assert_eq!(log.lock().unwrap().log_end_offset(), 0, "the produce was written");
        assert!(matches!(replication.replica(&tp).unwrap().role(), Role::None));
        cluster.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reconcile_pass_from_an_older_image_keeps_the_leader_a_produce_just_set_up() {
        let dir = tempfile::tempdir().unwrap();
        let (cluster, logs, replication) = single_broker(dir.path()).await;
        let before = cluster.image();
        cluster.create_topic("fresh", 1, 1, BTreeMap::new(), None).await.unwrap();
        let image = cluster.image();
        let part = image.partition("fresh", 0).expect("created").clone();
        assert_eq!(part.leader, 0);

        // What the replica manager and then a Produce do for the new partition...
        let tp = TopicPartition::new("fresh", 0);
        let log = logs.get_or_create(&tp, LogConfig::default()).unwrap();
        let (appended, rep) = replication
            .append_as_leader(&tp, &part, &log, |log| log.log_end_offset())
            .expect("leader at the image's epoch");
        assert_eq!(appended, 0);

        // ...while a reconcile pass that started before the topic reached it finishes.
        let me = replication.clone();
        tokio::task::spawn_blocking(move || me.reconcile(&before)).await.unwrap();

        let kept = replication.replica(&tp).expect("the partition was swept away");
        assert!(Arc::ptr_eq(&kept, &rep), "the replica was replaced");
        assert!(
            matches!(&*kept.role.lock().unwrap(), Role::Leader { state, .. } if state.leader_epoch == part.leader_epoch),
            "the leader role was dropped"
        );

        // A partition the newest image does not place here still goes.
        cluster.propose(MetadataCommand::DeleteTopic { name: "fresh".into() }).await.unwrap();
        let me = replication.clone();
        let newest = cluster.image();
        tokio::task::spawn_blocking(move || me.reconcile(&newest)).await.unwrap();
        assert!(replication.replica(&tp).is_none(), "a deleted topic's replica was kept");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_topic_recreated_under_its_name_starts_from_a_fresh_high_watermark() {
        // Deleted and created again between two reconcile passes (the watch coalesces the
        // two changes), so no pass ever sees the topic gone.
        let dir = tempfile::tempdir().unwrap();
        let (cluster, logs, replication) = single_broker(dir.path()).await;
        cluster.create_topic("t", 1, 1, BTreeMap::new(), None).await.unwrap();
        let image = cluster.image();
        let tid = image.topics["t"].topic_id.clone();
        let part = image.partition("t", 0).unwrap().clone();
        let tp = TopicPartition::new("t", 0);
        let (log, _) = logs.get_or_create_for_topic(&tp, &tid, LogConfig::default()).unwrap();
        for _ in 0..5 {
            let mut b = build_batch(&[(None, Some(&b"x"[..]))], now_ms());
            replication.append_as_leader(&tp, &part, &log, |l| l.append(&mut b, 0, now_ms()).unwrap()).unwrap();
        }
        assert_eq!(replication.replica(&tp).unwrap().high_watermark(), 5);
        cluster.propose(MetadataCommand::DeleteTopic { name: "t".into() }).await.unwrap();
        cluster.create_topic("t", 1, 1, BTreeMap::new(), None).await.unwrap();
        let newest = cluster.image();
        let tid2 = newest.topics["t"].topic_id.clone();
        assert_ne!(tid, tid2);
        // What the replica manager does for the new topic id...
        let (log2, replaced) = logs.get_or_create_for_topic(&tp, &tid2, LogConfig::default()).unwrap();
        assert!(replaced);
        // ...then a Produce, before any reconcile pass: one record, so the HW must be 1.
        let part2 = newest.partition("t", 0).unwrap().clone();
        let mut b = build_batch(&[(None, Some(&b"y"[..]))], now_ms());
        replication.append_as_leader(&tp, &part2, &log2, |l| l.append(&mut b, 0, now_ms()).unwrap()).unwrap();
        assert_eq!(
            replication.replica(&tp).unwrap().high_watermark(),
            1,
            "the re-created topic's partition kept the old topic's high watermark"
        );
        let me = replication.clone();
        let n = newest.clone();
        tokio::task::spawn_blocking(move || me.reconcile(&n)).await.unwrap();
        assert_eq!(replication.replica(&tp).unwrap().high_watermark(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_produce_holding_a_log_deleted_since_leads_nothing_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (cluster, logs, replication) = single_broker(dir.path()).await;
        cluster.create_topic("gone", 1, 1, BTreeMap::new(), None).await.unwrap();
        let image = cluster.image();
        let part = image.partition("gone", 0).unwrap().clone();
        let tp = TopicPartition::new("gone", 0);
        // The handler looked the log up from its image...
        let log = logs.get_or_create(&tp, LogConfig::default()).unwrap();
        // ...then the topic went: the image's change, the replica manager's delete and the
        // replication's reconcile, all before the handler's append.
        cluster.propose(MetadataCommand::DeleteTopic { name: "gone".into() }).await.unwrap();
        assert!(logs.delete(&tp).unwrap());
        let me = replication.clone();
        let newest = cluster.image();
        tokio::task::spawn_blocking(move || me.reconcile(&newest)).await.unwrap();

        let mut b = build_batch(&[(None, Some(&b"late"[..]))], now_ms());
        let appended = replication.append_as_leader(&tp, &part, &log, |l| l.append(&mut b, 0, now_ms()));
        assert!(appended.is_none(), "a deleted log was appended to");
        assert!(replication.replica(&tp).is_none(), "a replica was set up again for the deleted log");
        assert!(!dir.path().join("logs").join("gone-0").exists());
        assert!(!logs.dir_failure().has_failed());
    }
}
