//! Incremental fetch sessions (KIP-227), Fetch v7+.
//!
//! A client that fetches the same partitions over and over sends them once (a full fetch,
//! session epoch 0) and gets back a session id. Later fetches (epoch 1, 2, ...) name only the
//! partitions whose fetch position or limits changed, and the ones to drop; the response names
//! only the partitions that have something new: records, an error, a moved high watermark or
//! log start offset, or a preferred read replica. With many partitions and little traffic this
//! is the difference between sending every partition twice per round and sending none.
//!
//! Sessions live in a broker-wide cache (not per connection, as in Kafka) of at most
//! `max.incremental.fetch.session.cache.slots` sessions. When it is full, a new session takes
//! the slot of the least recently used one if that one has been idle for
//! `min.incremental.fetch.session.eviction.ms` (120 s), or, for a follower, of the least
//! recently used consumer session; otherwise the full fetch is answered without a session
//! (session id 0), which clients accept and simply fetch in full again.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::ResponseError;
use prometheus::{IntCounter, IntGauge, Opts, Registry};

/// Session id of "no session" in requests and responses.
pub const INVALID_SESSION_ID: i32 = 0;
/// A request's session epoch asking for a new session (closing the one it names).
const INITIAL_EPOCH: i32 = 0;
/// A request's session epoch asking for no session (closing the one it names).
const FINAL_EPOCH: i32 = -1;
/// Fetch versions before this have no session fields.
pub const MIN_SESSION_VERSION: i16 = 7;

/// Kafka's `max.incremental.fetch.session.cache.slots`.
pub const DEFAULT_MAX_SESSIONS: usize = 1000;
/// Kafka's `min.incremental.fetch.session.eviction.ms`.
pub const DEFAULT_EVICTION_AFTER: Duration = Duration::from_millis(120_000);

type PartitionKey = (TopicName, i32);

/// What the session knows of one partition: what the client last asked for it, and what the
/// last response that named it said, so an unchanged partition can be left out.
#[derive(Debug, Clone)]
struct CachedPartition {
    request: FetchPartition,
    high_watermark: i64,
    log_start_offset: i64,
}

type SessionPartitions = IndexMap<PartitionKey, CachedPartition, foldhash::fast::RandomState>;

#[derive(Debug)]
struct Session {
    /// The epoch the next request must carry.
    epoch: i32,
    /// In fetch order: partitions that returned records move to the end, so that under
    /// `max_bytes` every partition gets its turn.
    /// Hashed with foldhash: a follower's session is looked up for each of its partitions
    /// at every fetch.
    partitions: SessionPartitions,
    last_used: Instant,
    /// Sessions of followers (replica id >= 0) may take a consumer's slot.
    follower: bool,
}

/// How one fetch request is answered. One per request, moved once: not worth boxing the
/// incremental request to shrink the other variants.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum SessionContext {
    /// Before v7, or epoch -1: a full response with session id 0.
    Sessionless,
    /// Epoch 0: a full response, and a new session made from it when there is room.
    Full,
    /// Epoch > 0: the session's partitions are fetched (`request` names all of them), and only
    /// those with something new are answered.
    Incremental { id: i32, request: FetchRequest },
}

#[derive(Clone)]
pub struct FetchSessionMetrics {
    pub sessions: IntGauge,
    pub partitions: IntGauge,
    pub created: IntCounter,
    pub evictions: IntCounter,
}

impl FetchSessionMetrics {
    fn unregistered() -> Self {
        let gauge = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help)).expect("static metric");
        Self {
            sessions: gauge("weir_fetch_sessions", "Incremental fetch sessions (KIP-227) in this broker's cache"),
            partitions: gauge(
                "weir_fetch_session_partitions",
                "Partitions held by this broker's incremental fetch sessions",
            ),
            created: IntCounter::with_opts(Opts::new(
                "weir_fetch_sessions_created_total",
                "Incremental fetch sessions created by full fetches (a client in a session fetches incrementally)",
            ))
            .expect("static metric"),
            evictions: IntCounter::with_opts(Opts::new(
                "weir_fetch_session_evictions_total",
                "Incremental fetch sessions evicted to make room for a new one",
            ))
            .expect("static metric"),
        }
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.sessions.clone()))?;
        registry.register(Box::new(self.partitions.clone()))?;
        registry.register(Box::new(self.created.clone()))?;
        registry.register(Box::new(self.evictions.clone()))?;
        Ok(())
    }
}

pub struct FetchSessionCache {
    sessions: Mutex<HashMap<i32, Session>>,
    max_sessions: usize,
    eviction_after: Duration,
    /// Session ids: a counter hashed with a per-process random key, so ids neither repeat
    /// nor can be guessed from one another.
    ids: RandomState,
    next_id: AtomicU64,
    pub metrics: FetchSessionMetrics,
}

impl FetchSessionCache {
    pub fn new(max_sessions: usize, eviction_after: Duration) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            max_sessions,
            eviction_after,
            ids: RandomState::new(),
            next_id: AtomicU64::new(0),
            metrics: FetchSessionMetrics::unregistered(),
        }
    }

    /// Reads the request's session fields, and for an incremental fetch updates the session
    /// with the partitions it names and drops the ones it forgets. Errors are the top-level
    /// error of the response: FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH.
    pub fn begin(&self, req: &FetchRequest, version: i16, now: Instant) -> Result<SessionContext, ResponseError> {
        if version < MIN_SESSION_VERSION {
            return Ok(SessionContext::Sessionless);
        }
        let mut sessions = self.sessions.lock().expect("fetch sessions lock");
        match req.session_epoch {
            FINAL_EPOCH | INITIAL_EPOCH => {
                if req.session_id != INVALID_SESSION_ID && sessions.remove(&req.session_id).is_some() {
                    self.update_gauges(&sessions);
                }
                Ok(if req.session_epoch == FINAL_EPOCH || self.max_sessions == 0 {
                    SessionContext::Sessionless
                } else {
                    SessionContext::Full
                })
            }
            epoch => {
                let session = sessions.get_mut(&req.session_id).ok_or(ResponseError::FetchSessionIdNotFound)?;
                if epoch != session.epoch {
                    return Err(ResponseError::InvalidFetchSessionEpoch);
                }
                let before = session.partitions.len() as i64;
                for forgotten in &req.forgotten_topics_data {
                    for p in &forgotten.partitions {
                        session.partitions.shift_remove(&(forgotten.topic.clone(), *p));
                    }
                }
                for topic in &req.topics {
                    for p in &topic.partitions {
                        match session.partitions.get_mut(&(topic.topic.clone(), p.partition)) {
                            Some(cached) => cached.request = p.clone(),
                            None => {
                                // New here: its high watermark is unknown, so it is answered.
                                let cached =
                                    CachedPartition { request: p.clone(), high_watermark: -1, log_start_offset: -1 };
                                session.partitions.insert((topic.topic.clone(), p.partition), cached);
                            }
                        }
                    }
                }
                session.epoch = next_epoch(session.epoch);
                session.last_used = now;
                let mut request = req.clone();
                request.topics = as_topics(&session.partitions);
                request.forgotten_topics_data.clear();
                let id = req.session_id;
                // By the difference: this runs for every fetch, summing every session would not.
                self.metrics.partitions.add(session.partitions.len() as i64 - before);
                Ok(SessionContext::Incremental { id, request })
            }
        }
    }

    /// Completes the response: sets its session id, makes the new session of a full fetch, and
    /// for an incremental one leaves out the partitions with nothing new. `req` is the request
    /// as received. An error means the session went away while the request waited; the
    /// response is then that error alone.
    pub fn finish(
        &self,
        context: SessionContext,
        req: &FetchRequest,
        response: &mut FetchResponse,
        now: Instant,
    ) -> Result<(), ResponseError> {
        match context {
            SessionContext::Sessionless => {
                response.session_id = INVALID_SESSION_ID;
                Ok(())
            }
            SessionContext::Full => {
                let mut partitions = SessionPartitions::default();
                let mut answered = HashMap::new();
                for topic in &response.responses {
                    for p in &topic.partitions {
                        answered.insert((topic.topic.clone(), p.partition_index), p);
                    }
                }
                for topic in &req.topics {
                    for p in &topic.partitions {
                        let key = (topic.topic.clone(), p.partition);
                        let (hw, start) = answered
                            .get(&key)
                            .filter(|r| r.error_code == 0)
                            .map_or((-1, -1), |r| (r.high_watermark, r.log_start_offset));
                        let cached =
                            CachedPartition { request: p.clone(), high_watermark: hw, log_start_offset: start };
                        partitions.insert(key, cached);
                    }
                }
                let follower = req.replica_id.0 >= 0;
                let session = Session { epoch: next_epoch(INITIAL_EPOCH), partitions, last_used: now, follower };
                response.session_id = self.insert(session, now);
                Ok(())
            }
            SessionContext::Incremental { id, .. } => {
                let mut sessions = self.sessions.lock().expect("fetch sessions lock");
                let Some(session) = sessions.get_mut(&id) else {
                    return Err(ResponseError::FetchSessionIdNotFound);
                };
                let mut to_the_end = Vec::new();
                for topic in &mut response.responses {
                    let name = topic.topic.clone();
                    topic.partitions.retain(|p| {
                        let key = (name.clone(), p.partition_index);
                        let Some(cached) = session.partitions.get_mut(&key) else {
                            // Forgotten by a later request while this one waited.
                            return false;
                        };
                        let has_records = p.records.as_ref().is_some_and(|r| !r.is_empty());
                        let must_respond = has_records
                            || p.error_code != 0
                            || p.high_watermark != cached.high_watermark
                            || p.log_start_offset != cached.log_start_offset
                            || p.preferred_read_replica.0 >= 0;
                        if p.error_code != 0 {
                            // Answered again once the error is gone.
                            cached.high_watermark = -1;
                            cached.log_start_offset = -1;
                        } else {
                            cached.high_watermark = p.high_watermark;
                            cached.log_start_offset = p.log_start_offset;
                        }
                        if has_records {
                            to_the_end.push(key);
                        }
                        must_respond
                    });
                }
                response.responses.retain(|t| !t.partitions.is_empty());
                for key in to_the_end {
                    if let Some(cached) = session.partitions.shift_remove(&key) {
                        session.partitions.insert(key, cached);
                    }
                }
                session.last_used = now;
                response.session_id = id;
                Ok(())
            }
        }
    }

    /// Puts a new session in the cache, evicting one if the rules allow; its id, or
    /// `INVALID_SESSION_ID` if there is no room.
    fn insert(&self, session: Session, now: Instant) -> i32 {
        let mut sessions = self.sessions.lock().expect("fetch sessions lock");
        if self.max_sessions == 0 {
            return INVALID_SESSION_ID;
        }
        if sessions.len() >= self.max_sessions {
            let victim = evictable(&sessions, session.follower, now, self.eviction_after);
            match victim {
                Some(id) => {
                    sessions.remove(&id);
                    self.metrics.evictions.inc();
                }
                None => return INVALID_SESSION_ID,
            }
        }
        let id = loop {
            let counter = self.next_id.fetch_add(1, Ordering::Relaxed);
            let id = (self.ids.hash_one(counter) as i32) & i32::MAX;
            if id != INVALID_SESSION_ID && !sessions.contains_key(&id) {
                break id;
            }
        };
        sessions.insert(id, session);
        self.metrics.created.inc();
        self.update_gauges(&sessions);
        id
    }

    fn update_gauges(&self, sessions: &HashMap<i32, Session>) {
        self.metrics.sessions.set(sessions.len() as i64);
        self.metrics.partitions.set(sessions.values().map(|s| s.partitions.len() as i64).sum());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }
}

/// The session a new one may replace in a full cache: the least recently used one idle for
/// `eviction_after`, else, for a follower's new session, the least recently used consumer
/// session.
fn evictable(sessions: &HashMap<i32, Session>, follower: bool, now: Instant, eviction_after: Duration) -> Option<i32> {
    let lru = |consumers_only: bool| {
        sessions
            .iter()
            .filter(|(_, s)| !consumers_only || !s.follower)
            .min_by_key(|(_, s)| s.last_used)
            .map(|(id, s)| (*id, s.last_used))
    };
    match lru(false) {
        Some((id, used)) if now.saturating_duration_since(used) >= eviction_after => Some(id),
        _ if follower => lru(true).map(|(id, _)| id),
        _ => None,
    }
}

fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// The session's partitions as request topics, in fetch order; a topic whose partitions are
/// not next to each other appears more than once, as in Kafka's responses.
fn as_topics(partitions: &SessionPartitions) -> Vec<FetchTopic> {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for ((topic, _), cached) in partitions {
        match topics.last_mut() {
            Some(last) if &last.topic == topic => last.partitions.push(cached.request.clone()),
            _ => {
                let mut t = FetchTopic::default();
                t.topic = topic.clone();
                t.partitions = vec![cached.request.clone()];
                topics.push(t);
            }
        }
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_request::ForgottenTopic;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::BrokerId;
    use kafka_protocol::protocol::StrBytes;

    fn name(t: &str) -> TopicName {
        TopicName(StrBytes::from_string(t.to_string()))
    }

    fn request(id: i32, epoch: i32, parts: &[(&str, i32, i64)], forget: &[(&str, i32)]) -> FetchRequest {
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.session_id = id;
        req.session_epoch = epoch;
        for (t, p, offset) in parts {
            let mut fp = FetchPartition::default();
            fp.partition = *p;
            fp.fetch_offset = *offset;
            fp.partition_max_bytes = 1 << 20;
            match req.topics.iter_mut().find(|x| x.topic == name(t)) {
                Some(x) => x.partitions.push(fp),
                None => {
                    let mut ft = FetchTopic::default();
                    ft.topic = name(t);
                    ft.partitions = vec![fp];
                    req.topics.push(ft);
                }
            }
        }
        for (t, p) in forget {
            let mut f = ForgottenTopic::default();
            f.topic = name(t);
            f.partitions = vec![*p];
            req.forgotten_topics_data.push(f);
        }
        req
    }

    /// A response to `req` as the handler makes it: every partition, with (hw, records, error).
    fn response(req: &FetchRequest, answer: impl Fn(&str, i32) -> (i64, usize, i16)) -> FetchResponse {
        let mut resp = FetchResponse::default();
        for t in &req.topics {
            let mut topic = FetchableTopicResponse::default();
            topic.topic = t.topic.clone();
            for p in &t.partitions {
                let (hw, records, error) = answer(t.topic.0.as_str(), p.partition);
                let mut d = PartitionData::default();
                d.partition_index = p.partition;
                d.high_watermark = hw;
                d.log_start_offset = 0;
                d.error_code = error;
                d.preferred_read_replica = BrokerId(-1);
                d.records = Some(Bytes::from(vec![0u8; records]));
                topic.partitions.push(d);
            }
            resp.responses.push(topic);
        }
        resp
    }

    fn answered(resp: &FetchResponse) -> Vec<(String, i32)> {
        resp.responses
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.topic.0.to_string(), p.partition_index)))
            .collect()
    }

    /// The partitions an incremental context fetches, in order.
    fn fetched(ctx: &SessionContext) -> Vec<(String, i32, i64)> {
        let SessionContext::Incremental { request, .. } = ctx else { panic!("not incremental: {ctx:?}") };
        request
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.topic.0.to_string(), p.partition, p.fetch_offset)))
            .collect()
    }

    #[test]
    fn a_session_answers_only_partitions_with_something_new() {
        let cache = FetchSessionCache::new(10, DEFAULT_EVICTION_AFTER);
        let now = Instant::now();
        let full = request(0, 0, &[("a", 0, 0), ("a", 1, 0), ("b", 0, 0)], &[]);
        let ctx = cache.begin(&full, 12, now).unwrap();
        assert!(matches!(ctx, SessionContext::Full));
        let mut resp = response(&full, |_, _| (5, 0, 0));
        cache.finish(ctx, &full, &mut resp, now).unwrap();
        let id = resp.session_id;
        assert!(id > 0);
        assert_eq!(answered(&resp).len(), 3, "a full fetch answers every partition");

        // Nothing changed: the incremental fetch covers all three, answers none.
        let inc = request(id, 1, &[], &[]);
        let ctx = cache.begin(&inc, 12, now).unwrap();
        assert_eq!(fetched(&ctx).len(), 3);
        let SessionContext::Incremental { request: ref eff, .. } = ctx else { unreachable!() };
        let mut resp = response(eff, |_, _| (5, 0, 0));
        cache.finish(ctx, &inc, &mut resp, now).unwrap();
        assert_eq!(resp.session_id, id);
        assert!(answered(&resp).is_empty());

        // a-1 has records, b-0's HW moved, a-0 errs; a-1's new offset is sent, the rest cached.
        let inc = request(id, 2, &[("a", 1, 7)], &[]);
        let ctx = cache.begin(&inc, 12, now).unwrap();
        assert!(fetched(&ctx).contains(&("a".to_string(), 1, 7)));
        let SessionContext::Incremental { request: ref eff, .. } = ctx else { unreachable!() };
        let mut resp = response(eff, |t, p| match (t, p) {
            ("a", 0) => (-1, 0, 6),
            ("a", 1) => (9, 100, 0),
            _ => (6, 0, 0),
        });
        cache.finish(ctx, &inc, &mut resp, now).unwrap();
        assert_eq!(answered(&resp), vec![("a".into(), 0), ("a".into(), 1), ("b".into(), 0)]);

        // The partition that returned records is fetched last now; the erring one is
        // answered again once its error is gone, even with the old HW.
        let inc = request(id, 3, &[], &[]);
        let ctx = cache.begin(&inc, 12, now).unwrap();
        let order: Vec<_> = fetched(&ctx).into_iter().map(|(t, p, _)| (t, p)).collect();
        assert_eq!(order, vec![("a".into(), 0), ("b".into(), 0), ("a".into(), 1)]);
        let SessionContext::Incremental { request: ref eff, .. } = ctx else { unreachable!() };
        let mut resp =
            response(eff, |t, p| if (t, p) == ("a", 1) { (9, 0, 0) } else { (if t == "b" { 6 } else { 5 }, 0, 0) });
        cache.finish(ctx, &inc, &mut resp, now).unwrap();
        assert_eq!(answered(&resp), vec![("a".into(), 0)]);
    }

    #[test]
    fn forgotten_partitions_leave_and_new_ones_are_answered() {
        let cache = FetchSessionCache::new(10, DEFAULT_EVICTION_AFTER);
        let now = Instant::now();
        let full = request(0, 0, &[("a", 0, 0), ("a", 1, 0)], &[]);
        let ctx = cache.begin(&full, 12, now).unwrap();
        let mut resp = response(&full, |_, _| (0, 0, 0));
        cache.finish(ctx, &full, &mut resp, now).unwrap();
        let id = resp.session_id;

        let inc = request(id, 1, &[("c", 0, 3)], &[("a", 0)]);
        let ctx = cache.begin(&inc, 12, now).unwrap();
        let parts: Vec<_> = fetched(&ctx).into_iter().map(|(t, p, _)| (t, p)).collect();
        assert_eq!(parts, vec![("a".into(), 1), ("c".into(), 0)]);
        let SessionContext::Incremental { request: ref eff, .. } = ctx else { unreachable!() };
        let mut resp = response(eff, |_, _| (0, 0, 0));
        cache.finish(ctx, &inc, &mut resp, now).unwrap();
        assert_eq!(answered(&resp), vec![("c".into(), 0)], "only the new partition, whose HW the client lacks");
        assert_eq!(cache.metrics.partitions.get(), 2, "a-1 and c-0; a-0 forgotten");
    }

    #[test]
    fn wrong_ids_and_epochs_are_refused_and_epoch_minus_one_closes() {
        let cache = FetchSessionCache::new(10, DEFAULT_EVICTION_AFTER);
        let now = Instant::now();
        assert_eq!(
            cache.begin(&request(12345, 1, &[], &[]), 12, now).unwrap_err(),
            ResponseError::FetchSessionIdNotFound
        );
        let full = request(0, 0, &[("a", 0, 0)], &[]);
        let ctx = cache.begin(&full, 12, now).unwrap();
        let mut resp = response(&full, |_, _| (0, 0, 0));
        cache.finish(ctx, &full, &mut resp, now).unwrap();
        let id = resp.session_id;
        assert_eq!(
            cache.begin(&request(id, 2, &[], &[]), 12, now).unwrap_err(),
            ResponseError::InvalidFetchSessionEpoch
        );
        // The refused request did not move the epoch.
        assert!(cache.begin(&request(id, 1, &[], &[]), 12, now).is_ok());
        assert_eq!(cache.len(), 1);
        let close = request(id, -1, &[("a", 0, 0)], &[]);
        assert!(matches!(cache.begin(&close, 12, now).unwrap(), SessionContext::Sessionless));
        assert_eq!(cache.len(), 0);
        // Before v7 there are no sessions.
        assert!(matches!(cache.begin(&full, 6, now).unwrap(), SessionContext::Sessionless));
    }

    #[test]
    fn a_full_cache_evicts_only_idle_sessions_or_consumers_for_followers() {
        let cache = FetchSessionCache::new(1, Duration::from_secs(120));
        let t0 = Instant::now();
        let open = |req: &FetchRequest, at: Instant| {
            let ctx = cache.begin(req, 12, at).unwrap();
            let mut resp = response(req, |_, _| (0, 0, 0));
            cache.finish(ctx, req, &mut resp, at).unwrap();
            resp.session_id
        };
        let consumer = request(0, 0, &[("a", 0, 0)], &[]);
        let first = open(&consumer, t0);
        assert!(first > 0);
        assert_eq!(open(&consumer, t0 + Duration::from_secs(1)), INVALID_SESSION_ID, "no room, nothing idle");
        let mut follower = consumer.clone();
        follower.replica_id = BrokerId(2);
        let second = open(&follower, t0 + Duration::from_secs(2));
        assert!(second > 0, "a follower takes a consumer's slot");
        assert_eq!(
            cache.begin(&request(first, 1, &[], &[]), 12, t0).unwrap_err(),
            ResponseError::FetchSessionIdNotFound
        );
        assert_eq!(
            open(&consumer, t0 + Duration::from_secs(3)),
            INVALID_SESSION_ID,
            "a consumer does not take a follower's"
        );
        assert!(open(&consumer, t0 + Duration::from_secs(200)) > 0, "an idle session is evicted");
        assert_eq!(cache.metrics.evictions.get(), 2);
    }

    #[test]
    fn epochs_wrap_to_one() {
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(0), 1);
    }
}
