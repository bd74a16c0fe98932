//! The replica fetcher: one task per leader broker this broker follows partitions of. It
//! speaks the Kafka protocol to the leader's Kafka listener, as Kafka's replica fetchers do:
//!
//! 1. a partition handed over (new leader or new epoch) first asks OffsetForLeaderEpoch for
//!    its latest local epoch and truncates whatever diverges from the leader's log;
//! 2. then every partition of this leader goes in one Fetch (replica id = this broker,
//!    current leader epoch, fetch offset = local log end), long-polled by the leader;
//! 3. fetched batches are appended as they are (offsets and epochs kept), and the local high
//!    watermark follows the leader's.
//!
//! The fetches go through an incremental fetch session (KIP-227, `follower_session.rs`) when
//! the leader keeps one: a round then names only the partitions whose position changed, and
//! the leader answers only those with something new.
//!
//! Fetching at the log end is how the leader learns this follower's progress (its HW and
//! ISR decisions depend on it).
//!
//! Each fetcher runs on a thread of its own (with a single-threaded runtime for its socket),
//! as Kafka's replica fetcher threads do: its appends block that thread and nothing else, where
//! on the shared runtime every append had to hand a worker's core to another thread
//! (`block_in_place`) first.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::Notify;

use super::follower_session::FollowerSession;
use super::peer::{PeerConnection, PeerError};
use super::replication::Replication;
use crate::cluster::throttle_configs::{FOLLOWER_THROTTLED_RATE, FOLLOWER_THROTTLED_REPLICAS};
use crate::cluster::NodeId;
use crate::log::leader_epoch::UNDEFINED_EPOCH;
use crate::log::{now_ms, Log, LogError, TopicPartition};

const FETCH_VERSION: i16 = 12;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 3;

#[derive(Debug, thiserror::Error)]
pub enum FetcherError {
    #[error("with the leader: {0}")]
    Leader(#[from] PeerError),
    #[error(transparent)]
    Log(#[from] LogError),
}

#[derive(Debug, Clone, Copy)]
struct Followed {
    leader_epoch: i32,
    /// Set once the divergent suffix (if any) was truncated for this epoch.
    truncated: bool,
    /// The leader's HW minus the local log end at the last fetch.
    lag: i64,
    /// When (ms) a fetch response last showed this replica holding everything up to the
    /// leader's HW; the follower-side lag in time is measured from it.
    caught_up_ms: i64,
}

pub struct FetcherHandle {
    leader: NodeId,
    partitions: Mutex<BTreeMap<TopicPartition, Followed>>,
    wake: Notify,
}

impl FetcherHandle {
    pub fn start(replication: Arc<Replication>, leader: NodeId) -> Arc<Self> {
        let handle = Arc::new(Self { leader, partitions: Mutex::new(BTreeMap::new()), wake: Notify::new() });
        let h = handle.clone();
        let spawned = std::thread::Builder::new().name(format!("replica-fetcher-{leader}")).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(run(replication, h)),
                Err(e) => tracing::error!(leader, error = %e, "replica fetcher has no runtime; not replicating"),
            }
        });
        if let Err(e) = spawned {
            tracing::error!(leader, error = %e, "cannot start the replica fetcher thread; not replicating");
        }
        handle
    }

    /// Shutdown (`Replication::stop_fetchers`): an idle fetcher wakes to see it is stopped.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn add_partition(&self, tp: TopicPartition, leader_epoch: i32) {
        let followed = Followed { leader_epoch, truncated: false, lag: 0, caught_up_ms: now_ms() };
        self.partitions.lock().expect("fetcher lock").insert(tp, followed);
        self.wake.notify_one();
    }

    pub fn remove_partition(&self, tp: &TopicPartition) {
        self.partitions.lock().expect("fetcher lock").remove(tp);
    }

    /// Offsets behind the leader's HW, summed over this fetcher's partitions.
    pub fn lag(&self) -> i64 {
        self.partitions.lock().expect("fetcher lock").values().map(|f| f.lag.max(0)).sum()
    }

    /// The longest time (ms) one of this fetcher's partitions has gone without being caught
    /// up with its leader's HW.
    pub fn lag_ms(&self, now_ms: i64) -> i64 {
        self.partitions
            .lock()
            .expect("fetcher lock")
            .values()
            .map(|f| (now_ms - f.caught_up_ms).max(0))
            .max()
            .unwrap_or(0)
    }

    fn snapshot(&self) -> BTreeMap<TopicPartition, Followed> {
        self.partitions.lock().expect("fetcher lock").clone()
    }

    fn update(&self, tp: &TopicPartition, epoch: i32, f: impl FnOnce(&mut Followed)) {
        if let Some(p) = self.partitions.lock().expect("fetcher lock").get_mut(tp) {
            if p.leader_epoch == epoch {
                f(p);
            }
        }
    }
}

async fn run(rep: Arc<Replication>, handle: Arc<FetcherHandle>) {
    let mut conn: Option<PeerConnection> = None;
    let mut session = FollowerSession::default();
    let backoff = Duration::from_millis(rep.config.fetch_backoff_ms);
    loop {
        if rep.fetchers_stopped() {
            return;
        }
        let parts = handle.snapshot();
        if parts.is_empty() {
            conn = None;
            handle.wake.notified().await;
            continue;
        }
        if conn.is_none() {
            let client_id = format!("weir-replica-fetcher-{}", rep.node_id);
            match PeerConnection::open(&rep.cluster, handle.leader, client_id).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::debug!(leader = handle.leader, error = %e, "replica fetcher cannot reach the leader");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        if let Err(e) = round(&rep, &handle, c, &mut session, parts).await {
            tracing::info!(leader = handle.leader, error = %e, "replica fetch failed; reconnecting");
            conn = None;
            session.failed();
            tokio::time::sleep(backoff).await;
        }
    }
}

/// One round: truncate the partitions that need it, then one Fetch for all ready ones.
async fn round(
    rep: &Arc<Replication>,
    handle: &FetcherHandle,
    conn: &mut PeerConnection,
    session: &mut FollowerSession,
    parts: BTreeMap<TopicPartition, Followed>,
) -> Result<(), FetcherError> {
    let untruncated: Vec<(TopicPartition, i32)> =
        parts.iter().filter(|(_, f)| !f.truncated).map(|(tp, f)| (tp.clone(), f.leader_epoch)).collect();
    let mut backoff = false;
    // Truncation changes the partitions' state: look again after it (not otherwise: the
    // snapshot is a copy of every followed partition).
    let parts = if untruncated.is_empty() {
        parts
    } else {
        backoff |= truncate(rep, handle, conn, &untruncated).await?;
        handle.snapshot()
    };
    let ready: Vec<(TopicPartition, i32)> =
        parts.into_iter().filter(|(_, f)| f.truncated).map(|(tp, f)| (tp, f.leader_epoch)).collect();
    if ready.is_empty() {
        tokio::time::sleep(Duration::from_millis(rep.config.fetch_backoff_ms)).await;
        return Ok(());
    }
    backoff |= fetch(rep, handle, conn, session, &ready).await?;
    if backoff {
        tokio::time::sleep(Duration::from_millis(rep.config.fetch_backoff_ms)).await;
    }
    Ok(())
}

/// Ask the leader where each partition's latest local epoch ends and cut the local log
/// there. Returns whether some partition got an error (the caller backs off).
async fn truncate(
    rep: &Arc<Replication>,
    handle: &FetcherHandle,
    conn: &mut PeerConnection,
    parts: &[(TopicPartition, i32)],
) -> Result<bool, FetcherError> {
    let mut asking: Vec<(&str, OffsetForLeaderPartition)> = Vec::new();
    let mut asked = BTreeMap::new();
    for (tp, epoch) in parts {
        let Some(log) = rep.logs.get(tp) else { continue };
        let latest = log.lock().expect("log lock").latest_epoch();
        let Some(latest) = latest else {
            // An empty history has nothing to diverge.
            handle.update(tp, *epoch, |f| f.truncated = true);
            continue;
        };
        asked.insert(tp.clone(), latest);
        let mut p = OffsetForLeaderPartition::default();
        p.partition = tp.partition;
        p.current_leader_epoch = *epoch;
        p.leader_epoch = latest;
        asking.push((tp.topic.as_str(), p));
    }
    if asking.is_empty() {
        return Ok(false);
    }
    let mut req = OffsetForLeaderEpochRequest::default();
    req.replica_id = BrokerId(rep.node_id as i32);
    req.topics = by_topic(asking)
        .into_iter()
        .map(|(topic, partitions)| OffsetForLeaderTopic::default().with_topic(topic).with_partitions(partitions))
        .collect();
    let resp: OffsetForLeaderEpochResponse =
        conn.call(ApiKey::OffsetForLeaderEpoch, OFFSET_FOR_LEADER_EPOCH_VERSION, &req).await?;
    let epochs: BTreeMap<&TopicPartition, i32> = parts.iter().map(|(tp, e)| (tp, *e)).collect();
    let mut errors = false;
    for t in resp.topics {
        for p in t.partitions {
            let tp = TopicPartition::new(t.topic.0.as_str(), p.partition);
            let Some(epoch) = epochs.get(&tp).copied() else { continue };
            if p.error_code != 0 {
                tracing::debug!(partition = %tp, error = p.error_code, "OffsetForLeaderEpoch refused; retrying");
                errors = true;
                continue;
            }
            let requested = asked.get(&tp).copied().unwrap_or(UNDEFINED_EPOCH);
            let Some(replica) = rep.is_following(&tp, handle.leader, epoch) else { continue };
            let Some(log) = rep.logs.get(&tp) else { continue };
            // The role lock is held across the log change so a concurrent leadership change
            // cannot interleave with it.
            let Some(role) = replica.lock_if_following(handle.leader, epoch) else { continue };
            let mut log = log.lock().expect("log lock");
            let leo = log.log_end_offset();
            let target = if p.leader_epoch < 0 || p.end_offset < 0 {
                // The leader knows no epoch at or below ours: keep only what was committed.
                replica.high_watermark().min(leo)
            } else if p.leader_epoch == requested {
                p.end_offset.min(leo)
            } else {
                // The leader's history has a smaller epoch there: cut at the end of that epoch
                // in our own log, or the leader's end offset, whichever is first.
                let (_, own_end) = log.end_offset_for_epoch(p.leader_epoch);
                let own_end = if own_end < 0 { replica.high_watermark() } else { own_end };
                p.end_offset.min(own_end).min(leo)
            };
            if target < leo {
                tracing::warn!(partition = %tp, from = leo, to = target, leader = handle.leader, leader_epoch = epoch,
                    "truncating divergent records");
                if rep.fetchers_stopped() {
                    return Ok(true);
                }
                log.truncate_to(target, now_ms())?;
                rep.metrics.follower_truncations.inc();
            }
            let leo = log.log_end_offset();
            drop(log);
            drop(role);
            if replica.high_watermark() > leo {
                let _ = replica.set_follower_hw(leo);
            }
            handle.update(&tp, epoch, |f| f.truncated = true);
        }
    }
    Ok(errors)
}

/// One Fetch for `parts` at their log ends; appends what comes back. Returns whether some
/// partition got an error.
async fn fetch(
    rep: &Arc<Replication>,
    handle: &FetcherHandle,
    conn: &mut PeerConnection,
    session: &mut FollowerSession,
    parts: &[(TopicPartition, i32)],
) -> Result<bool, FetcherError> {
    // Every partition this fetch covers, as the request would name it.
    let mut current: BTreeMap<TopicPartition, FetchPartition> = BTreeMap::new();
    // What each partition was asked at: its leader epoch, the log and its end offset then. A
    // response is only appended to that same log still ending there (see `asked_still_holds`).
    let mut asked: foldhash::HashMap<&TopicPartition, (i32, Arc<Mutex<Log>>, i64)> = foldhash::HashMap::default();
    // Kafka's follower-side throttle: partitions whose follower list names this broker, while
    // it is out of their ISR, are fetched within follower.replication.throttled.rate; with the
    // budget spent they are left out of this fetch.
    let image = rep.cluster.image();
    let quota_rate = image.throttled_rate(rep.node_id, FOLLOWER_THROTTLED_RATE);
    let quota_spent = quota_rate.is_some_and(|rate| !rep.follower_quota.allows(rate));
    let mut quota_limited: Vec<TopicPartition> = Vec::new();
    for (tp, epoch) in parts {
        let partition = tp.partition as u32;
        if quota_rate.is_some()
            && image.partition(&tp.topic, partition).is_some_and(|p| !p.isr.contains(&rep.node_id))
            && image.replica_throttled(&tp.topic, partition, rep.node_id, FOLLOWER_THROTTLED_REPLICAS)
        {
            if quota_spent {
                continue;
            }
            quota_limited.push(tp.clone());
        }
        let Some(log) = rep.logs.get(tp) else { continue };
        let (leo, start) = {
            let log = log.lock().expect("log lock");
            (log.log_end_offset(), log.log_start_offset())
        };
        asked.insert(tp, (*epoch, log.clone(), leo));
        let mut p = FetchPartition::default();
        p.partition = tp.partition;
        p.current_leader_epoch = *epoch;
        p.fetch_offset = leo;
        p.last_fetched_epoch = -1;
        p.log_start_offset = start;
        p.partition_max_bytes = rep.config.fetch_partition_max_bytes;
        current.insert(tp.clone(), p);
    }
    drop(image);
    if current.is_empty() {
        // Everything is held back by the throttle: back off, as Kafka's fetcher does.
        return Ok(true);
    }
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(rep.node_id as i32);
    req.max_wait_ms = rep.config.fetch_wait_max_ms;
    req.min_bytes = 1;
    req.max_bytes = rep.config.fetch_response_max_bytes;
    req.isolation_level = 0;
    let next = session.next(&current);
    req.session_id = next.session_id;
    req.session_epoch = next.session_epoch;
    req.topics = by_topic(next.send.iter().map(|tp| (tp.topic.as_str(), current[tp].clone())))
        .into_iter()
        .map(|(topic, partitions)| FetchTopic::default().with_topic(topic).with_partitions(partitions))
        .collect();
    req.forgotten_topics_data = by_topic(next.forget.iter().map(|tp| (tp.topic.as_str(), tp.partition)))
        .into_iter()
        .map(|(topic, partitions)| ForgottenTopic::default().with_topic(topic).with_partitions(partitions))
        .collect();
    let resp: FetchResponse = conn.call(ApiKey::Fetch, FETCH_VERSION, &req).await?;
    session.answered(&next, &current, resp.error_code, resp.session_id);
    if resp.error_code != 0 {
        tracing::debug!(leader = handle.leader, error = resp.error_code, "fetch session refused; fetching in full");
        return Ok(false);
    }
    let mut errors = false;
    let mut answered: foldhash::HashSet<TopicPartition> = foldhash::HashSet::default();
    for t in resp.responses {
        for p in t.partitions {
            let tp = TopicPartition::new(t.topic.0.as_str(), p.partition_index);
            let Some((epoch, asked_log, fetch_offset)) = asked.get(&tp) else { continue };
            let epoch = *epoch;
            answered.insert(tp.clone());
            let Some(replica) = rep.is_following(&tp, handle.leader, epoch) else { continue };
            let Some(log) = rep.logs.get(&tp) else { continue };
            match ResponseError::try_from_code(p.error_code) {
                None => {
                    let records = p.records.unwrap_or_default();
                    if quota_limited.contains(&tp) {
                        rep.follower_quota.served(records.len());
                        let counter = &rep.metrics.quota_throttled_bytes;
                        counter.with_label_values(&["follower"]).inc_by(records.len() as u64);
                    }
                    let Some(role) = replica.lock_if_following(handle.leader, epoch) else { continue };
                    let log_guard = log.lock().expect("log lock");
                    if rep.fetchers_stopped() {
                        return Ok(true);
                    }
                    if !asked_still_holds(&tp, asked_log, *fetch_offset, &log, &log_guard) {
                        continue;
                    }
                    let mut log = log_guard;
                    if !records.is_empty() {
                        restart_below_a_mid_batch_start(&tp, &mut log, &records)?;
                        let appended = log.append_as_follower(&records, now_ms());
                        if let Err(e) = appended {
                            // Overlap or a bad batch: find the divergence point again.
                            tracing::warn!(partition = %tp, error = %e, "replicated batch refused; re-truncating");
                            drop(log);
                            drop(role);
                            handle.update(&tp, epoch, |f| f.truncated = false);
                            errors = true;
                            continue;
                        }
                        rep.metrics.bytes_in.inc_by(records.len() as u64);
                    }
                    // The leader's log start (moved by DeleteRecords or retention) moves this
                    // replica's too, as a Kafka follower's, never past what it holds.
                    let start_moved = p.log_start_offset > log.log_start_offset()
                        && log.advance_log_start_offset(p.log_start_offset)?;
                    let leo = log.log_end_offset();
                    drop(log);
                    drop(role);
                    if start_moved {
                        if let Err(e) = rep.logs.checkpoint_log_start_offsets() {
                            tracing::warn!(partition = %tp, error = %e, "writing the log start checkpoint failed");
                        }
                    }
                    // Consumers reading from this follower (KIP-392) wait on HW moves.
                    if replica.set_follower_hw(p.high_watermark.min(leo).max(0)) {
                        rep.notify_progress(&tp);
                    }
                    let lag = (p.high_watermark - leo).max(0);
                    let now = now_ms();
                    handle.update(&tp, epoch, |f| {
                        f.lag = lag;
                        if lag == 0 {
                            f.caught_up_ms = now;
                        }
                    });
                }
                Some(ResponseError::OffsetOutOfRange) => {
                    let Some(role) = replica.lock_if_following(handle.leader, epoch) else { continue };
                    let log_guard = log.lock().expect("log lock");
                    if rep.fetchers_stopped() {
                        return Ok(true);
                    }
                    if !asked_still_holds(&tp, asked_log, *fetch_offset, &log, &log_guard) {
                        continue;
                    }
                    let mut log = log_guard;
                    if log.log_end_offset() < p.log_start_offset {
                        tracing::warn!(partition = %tp, leader_log_start = p.log_start_offset,
                            "follower is behind the leader's log start; restarting the log there");
                        log.truncate_fully_and_start_at(p.log_start_offset, now_ms())?;
                    } else {
                        drop(log);
                        drop(role);
                        handle.update(&tp, epoch, |f| f.truncated = false);
                    }
                    errors = true;
                }
                Some(e) => {
                    tracing::debug!(partition = %tp, error = ?e, "replica fetch refused");
                    if matches!(e, ResponseError::FencedLeaderEpoch) {
                        handle.update(&tp, epoch, |f| f.truncated = false);
                    }
                    errors = true;
                }
            }
        }
    }
    // Partitions an incremental response leaves out have nothing new: the same leader HW,
    // and no records, so a caught-up one is still caught up.
    let now = now_ms();
    for (tp, f) in handle.partitions.lock().expect("fetcher lock").iter_mut() {
        let asked_now = asked.get(tp).is_some_and(|(epoch, ..)| *epoch == f.leader_epoch);
        if asked_now && f.lag == 0 && !answered.contains(tp) {
            f.caught_up_ms = now;
        }
    }
    rep.update_fetcher_gauges();
    Ok(errors)
}

/// A replica with nothing in its log (just restarted at the leader's log start, or new to
/// the partition) whose first batch from the leader begins below that start: the start fell
/// inside a batch (DeleteRecords moves it anywhere), and a fetch from it returns the batch
/// holding it. As Kafka's follower (`appendRecordsToFollowerOrFutureReplica`), the log
/// restarts at the batch's base offset so the batch can be appended; the log start then moves
/// back up to the leader's with the rest of the response. Without this the append was refused
/// as overlapping the log end, again at every fetch, and the replica never caught up.
fn restart_below_a_mid_batch_start(tp: &TopicPartition, log: &mut Log, records: &[u8]) -> Result<(), LogError> {
    let end = log.log_end_offset();
    if end != log.log_start_offset() {
        return Ok(());
    }
    let Ok(first) = crate::log::batch::BatchView::parse(records) else { return Ok(()) };
    if first.base_offset() < end && first.last_offset() >= end {
        tracing::info!(partition = %tp, log_start = end, batch_base = first.base_offset(),
            "the leader's log start is inside a batch; restarting the empty log at the batch's base offset");
        log.truncate_fully_and_start_at(first.base_offset(), now_ms())?;
    }
    Ok(())
}

/// `items` grouped by topic, topics in name order, as a request lists them.
fn by_topic<'a, T>(items: impl IntoIterator<Item = (&'a str, T)>) -> Vec<(TopicName, Vec<T>)> {
    let mut grouped: BTreeMap<&str, Vec<T>> = BTreeMap::new();
    for (topic, item) in items {
        grouped.entry(topic).or_default().push(item);
    }
    grouped.into_iter().map(|(topic, items)| (TopicName(StrBytes::from_string(topic.to_string())), items)).collect()
}

/// Whether a fetch response still fits the log it was asked for: the same log (not one the
/// replica manager deleted and made again meanwhile, as when a reassignment is cancelled and
/// started again) ending at the same offset (nothing truncated or appended since). Batches
/// may legitimately start past the fetch offset (a compacted leader log has gaps), so an
/// out-of-date response would otherwise be appended with a hole in front of it: records the
/// new replica silently lacks. Kafka's fetcher drops such responses the same way.
fn asked_still_holds(
    tp: &TopicPartition,
    asked_log: &Arc<Mutex<Log>>,
    fetch_offset: i64,
    log: &Arc<Mutex<Log>>,
    locked: &Log,
) -> bool {
    let holds = Arc::ptr_eq(asked_log, log) && locked.log_end_offset() == fetch_offset;
    if !holds {
        tracing::info!(partition = %tp, fetch_offset, log_end_offset = locked.log_end_offset(),
            "dropping a fetch response made for an earlier state of the local log");
    }
    holds
}
