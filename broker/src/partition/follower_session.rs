//! The follower's side of an incremental fetch session (KIP-227) with one leader, as Kafka's
//! replica fetchers keep one: after a full fetch that opens the session, a fetch names only the
//! partitions whose fetch position, epoch or limits changed since the leader last heard them,
//! and the ones no longer fetched. A partition missing from a response has nothing new: no
//! records, and the same high watermark as before.
//!
//! Any failure starts over with a full fetch: an unknown session (the leader restarted or
//! evicted it) with no session id, anything else (a lost connection, an out-of-step epoch) by
//! closing the old session in the same request.

use std::collections::BTreeMap;

use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::ResponseError;

use crate::log::TopicPartition;

/// What the leader's session holds of one partition: the fields of its last request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    fetch_offset: i64,
    current_leader_epoch: i32,
    log_start_offset: i64,
    partition_max_bytes: i32,
}

impl From<&FetchPartition> for Sent {
    fn from(p: &FetchPartition) -> Self {
        Self {
            fetch_offset: p.fetch_offset,
            current_leader_epoch: p.current_leader_epoch,
            log_start_offset: p.log_start_offset,
            partition_max_bytes: p.partition_max_bytes,
        }
    }
}

/// One fetch request's session part.
#[derive(Debug, PartialEq, Eq)]
pub struct NextFetch {
    pub session_id: i32,
    pub session_epoch: i32,
    /// The partitions to name in the request (all of them in a full fetch).
    pub send: Vec<TopicPartition>,
    pub forget: Vec<TopicPartition>,
}

impl NextFetch {
    pub fn is_full(&self) -> bool {
        self.session_epoch == 0
    }
}

#[derive(Debug, Default)]
pub struct FollowerSession {
    /// 0: no session.
    id: i32,
    /// The epoch of the next request; 0 asks for a new session.
    epoch: i32,
    /// The leader's view of the session's partitions, once a response confirmed it. Every
    /// round looks up each followed partition here: hashed, not ordered.
    sent: foldhash::HashMap<TopicPartition, Sent>,
}

impl FollowerSession {
    /// The session fields and the partitions to name, for a fetch of `current`.
    pub fn next(&self, current: &BTreeMap<TopicPartition, FetchPartition>) -> NextFetch {
        if self.epoch == 0 {
            return NextFetch {
                session_id: self.id,
                session_epoch: 0,
                send: current.keys().cloned().collect(),
                forget: Vec::new(),
            };
        }
        let mut known = 0;
        let send = current
            .iter()
            .filter(|(tp, p)| match self.sent.get(*tp) {
                Some(sent) => {
                    known += 1;
                    *sent != Sent::from(*p)
                }
                None => true,
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        // Only when some partition of the session is no longer fetched.
        let mut forget: Vec<TopicPartition> = Vec::new();
        if known < self.sent.len() {
            forget = self.sent.keys().filter(|tp| !current.contains_key(*tp)).cloned().collect();
            forget.sort_unstable();
        }
        NextFetch { session_id: self.id, session_epoch: self.epoch, send, forget }
    }

    /// After a response to `next` (built from `current`): `error` is its top-level error code,
    /// `session_id` the id it carried.
    pub fn answered(
        &mut self,
        next: &NextFetch,
        current: &BTreeMap<TopicPartition, FetchPartition>,
        error: i16,
        session_id: i32,
    ) {
        if error != 0 {
            if error == ResponseError::FetchSessionIdNotFound.code() {
                *self = Self::default();
            } else {
                self.failed();
            }
            return;
        }
        if session_id == 0 {
            // No session (the leader keeps none, or has no room): full fetches from now on.
            *self = Self::default();
            return;
        }
        if next.is_full() || session_id != self.id {
            self.id = session_id;
            self.sent = current.iter().map(|(tp, p)| (tp.clone(), Sent::from(p))).collect();
        } else {
            // The leader applied exactly what the request named.
            for tp in &next.forget {
                self.sent.remove(tp);
            }
            for tp in &next.send {
                if let Some(p) = current.get(tp) {
                    self.sent.insert(tp.clone(), Sent::from(p));
                }
            }
        }
        self.epoch = if self.epoch == i32::MAX { 1 } else { self.epoch + 1 };
    }

    /// The request or its response was lost: the next fetch is full and closes this session.
    pub fn failed(&mut self) {
        self.epoch = 0;
        self.sent.clear();
    }

    pub fn id(&self) -> i32 {
        self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(offset: i64) -> FetchPartition {
        let mut p = FetchPartition::default();
        p.fetch_offset = offset;
        p.current_leader_epoch = 3;
        p.log_start_offset = 0;
        p.partition_max_bytes = 1 << 20;
        p
    }

    fn set(offsets: &[(i32, i64)]) -> BTreeMap<TopicPartition, FetchPartition> {
        offsets.iter().map(|(p, o)| (TopicPartition::new("t", *p), part(*o))).collect()
    }

    fn tps(ps: &[i32]) -> Vec<TopicPartition> {
        ps.iter().map(|p| TopicPartition::new("t", *p)).collect()
    }

    #[test]
    fn after_a_full_fetch_only_changes_are_sent() {
        let mut s = FollowerSession::default();
        let current = set(&[(0, 10), (1, 20), (2, 30)]);
        let next = s.next(&current);
        assert_eq!((next.session_id, next.session_epoch, next.send.clone()), (0, 0, tps(&[0, 1, 2])));
        s.answered(&next, &current, 0, 77);

        // Partition 1 appended, partition 2 left this leader, partition 3 is new.
        let current = set(&[(0, 10), (1, 25), (3, 0)]);
        let next = s.next(&current);
        assert_eq!(next, NextFetch { session_id: 77, session_epoch: 1, send: tps(&[1, 3]), forget: tps(&[2]) });
        s.answered(&next, &current, 0, 77);

        let next = s.next(&current);
        assert_eq!(next, NextFetch { session_id: 77, session_epoch: 2, send: vec![], forget: vec![] });
        // A new leader epoch is a change too.
        let mut changed = current.clone();
        changed.get_mut(&TopicPartition::new("t", 0)).unwrap().current_leader_epoch = 4;
        assert_eq!(s.next(&changed).send, tps(&[0]));

        // A partition forgotten and then followed again is named again, once.
        let current = set(&[(0, 10), (1, 25)]);
        let next = s.next(&current);
        assert_eq!((next.send.clone(), next.forget.clone()), (vec![], tps(&[3])));
        s.answered(&next, &current, 0, 77);
        let current = set(&[(0, 10), (1, 25), (3, 5)]);
        let next = s.next(&current);
        assert_eq!((next.send.clone(), next.forget.clone()), (tps(&[3]), vec![]));
        s.answered(&next, &current, 0, 77);
        assert_eq!(s.next(&current), NextFetch { session_id: 77, session_epoch: 4, send: vec![], forget: vec![] });
    }

    #[test]
    fn failures_start_over_with_a_full_fetch() {
        let mut s = FollowerSession::default();
        let current = set(&[(0, 10)]);
        let next = s.next(&current);
        s.answered(&next, &current, 0, 77);

        // A lost connection: a full fetch that closes session 77 (and opens a new one).
        s.failed();
        let next = s.next(&current);
        assert_eq!((next.session_id, next.session_epoch, next.send.clone()), (77, 0, tps(&[0])));
        s.answered(&next, &current, 0, 78);
        assert_eq!((s.next(&current).session_id, s.next(&current).session_epoch), (78, 1));

        // Out of step: the same.
        let next = s.next(&current);
        s.answered(&next, &current, ResponseError::InvalidFetchSessionEpoch.code(), 0);
        assert_eq!((s.next(&current).session_id, s.next(&current).session_epoch), (78, 0));

        // Unknown to the leader: a full fetch without an id.
        let next = s.next(&current);
        s.answered(&next, &current, 0, 78);
        let next = s.next(&current);
        s.answered(&next, &current, ResponseError::FetchSessionIdNotFound.code(), 0);
        assert_eq!((s.next(&current).session_id, s.next(&current).session_epoch), (0, 0));

        // A leader without sessions: full fetches throughout.
        let next = s.next(&current);
        s.answered(&next, &current, 0, 0);
        assert_eq!(s.next(&current), NextFetch { session_id: 0, session_epoch: 0, send: tps(&[0]), forget: vec![] });
    }
}
