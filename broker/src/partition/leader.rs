//! What a partition leader knows about its followers: each one's log end offset and when it
//! was last caught up, and the decisions that follow from it — the high watermark, which
//! followers fell out of sync, which may rejoin the ISR. Pure state, no I/O, so the rules
//! are unit-tested here; `replication.rs` feeds it and acts on the answers.

use std::collections::BTreeMap;

use crate::cluster::NodeId;

/// One follower as the leader sees it through its fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower's log end offset (its last fetch offset); -1 until it fetched once in
    /// this leader epoch.
    pub log_end_offset: i64,
    /// The last time (ms) the follower was known to have everything the leader had.
    pub last_caught_up_ms: i64,
    /// The follower's log start offset, as its fetches report it; -1 until one did.
    pub log_start_offset: i64,
    /// The leader's log end offset and the time of the follower's previous fetch: a follower
    /// that now fetches at or past that offset was caught up at that time (Kafka's rule).
    last_fetch_leader_leo: i64,
    last_fetch_ms: i64,
}

impl FollowerProgress {
    fn new(now_ms: i64) -> Self {
        // A new leader gives every follower a full lag window before judging it.
        Self {
            log_end_offset: -1,
            last_caught_up_ms: now_ms,
            log_start_offset: -1,
            last_fetch_leader_leo: -1,
            last_fetch_ms: now_ms,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LeaderState {
    pub leader_epoch: i32,
    /// The first offset of this leader's epoch: a follower must have reached it to rejoin.
    pub epoch_start_offset: i64,
    pub followers: BTreeMap<NodeId, FollowerProgress>,
}

impl LeaderState {
    pub fn new(
        leader_epoch: i32,
        epoch_start_offset: i64,
        followers: impl IntoIterator<Item = NodeId>,
        now_ms: i64,
    ) -> Self {
        Self {
            leader_epoch,
            epoch_start_offset,
            followers: followers.into_iter().map(|f| (f, FollowerProgress::new(now_ms))).collect(),
        }
    }

    /// Keep the follower set equal to the assignment's other replicas (reassignment).
    pub fn set_followers(&mut self, followers: &[NodeId], now_ms: i64) {
        self.followers.retain(|f, _| followers.contains(f));
        for f in followers {
            self.followers.entry(*f).or_insert_with(|| FollowerProgress::new(now_ms));
        }
    }

    /// A fetch from `follower` at `fetch_offset` while the leader's log ends at `leader_leo`.
    /// Returns whether the follower's log end offset changed (only then can the HW move);
    /// false also for a broker that is not a replica, and for a fetch past the leader's log
    /// end: that follower holds records the leader does not (a divergent tail it has yet to
    /// truncate), and counting them would let the HW pass offsets whose records it lacks, as
    /// Kafka's leader only records a fetch whose read succeeded.
    pub fn record_fetch(&mut self, follower: NodeId, fetch_offset: i64, leader_leo: i64, now_ms: i64) -> bool {
        if fetch_offset > leader_leo {
            return false;
        }
        let Some(p) = self.followers.get_mut(&follower) else { return false };
        let moved = p.log_end_offset != fetch_offset;
        p.log_end_offset = fetch_offset;
        if fetch_offset >= leader_leo {
            p.last_caught_up_ms = now_ms;
        } else if fetch_offset >= p.last_fetch_leader_leo && p.last_fetch_leader_leo >= 0 {
            p.last_caught_up_ms = p.last_caught_up_ms.max(p.last_fetch_ms);
        }
        p.last_fetch_leader_leo = leader_leo;
        p.last_fetch_ms = now_ms;
        moved
    }

    /// The log start offset `follower`'s fetch reported (DeleteRecords waits on it).
    pub fn record_log_start(&mut self, follower: NodeId, log_start_offset: i64) {
        if let Some(p) = self.followers.get_mut(&follower) {
            p.log_start_offset = log_start_offset;
        }
    }

    /// Kafka's low watermark: the smallest log start offset among the leader and the
    /// followers on live brokers (a follower that has not fetched yet counts as -1).
    /// DeleteRecords answers once it reaches the requested offset.
    pub fn low_watermark(&self, leader_log_start: i64, live: impl Fn(NodeId) -> bool) -> i64 {
        self.followers
            .iter()
            .filter(|(f, _)| live(**f))
            .map(|(_, p)| p.log_start_offset)
            .fold(leader_log_start, i64::min)
    }

    /// The high watermark the ISR allows: the smallest log end offset among the ISR (the
    /// leader's own included). `None` while an ISR follower has not fetched in this epoch.
    pub fn isr_high_watermark(&self, leader: NodeId, leader_leo: i64, isr: &[NodeId]) -> Option<i64> {
        let mut hw = leader_leo;
        for r in isr.iter().filter(|r| **r != leader) {
            match self.followers.get(r) {
                Some(p) if p.log_end_offset >= 0 => hw = hw.min(p.log_end_offset),
                _ => return None,
            }
        }
        Some(hw)
    }

    /// Of `candidates`, the follower that holds the most: the highest log end offset, then the
    /// latest caught-up time, then the lowest id (Kafka's `MostCaughtUpReplicaSelector`, which
    /// the rack-aware selector uses among a rack's replicas). Followers this leader has not
    /// seen fetch in its epoch are not chosen.
    pub fn most_caught_up(&self, candidates: impl IntoIterator<Item = NodeId>) -> Option<NodeId> {
        candidates
            .into_iter()
            .filter_map(|id| self.followers.get(&id).filter(|p| p.log_end_offset >= 0).map(|p| (id, p)))
            .max_by(|(a, pa), (b, pb)| {
                (pa.log_end_offset, pa.last_caught_up_ms).cmp(&(pb.log_end_offset, pb.last_caught_up_ms)).then(b.cmp(a))
            })
            .map(|(id, _)| id)
    }

    /// ISR followers not caught up for longer than `lag_max_ms`.
    pub fn out_of_sync(&self, leader: NodeId, isr: &[NodeId], now_ms: i64, lag_max_ms: i64) -> Vec<NodeId> {
        isr.iter()
            .filter(|r| **r != leader)
            .filter(|r| self.followers.get(r).is_none_or(|p| now_ms - p.last_caught_up_ms > lag_max_ms))
            .copied()
            .collect()
    }

    /// Followers outside the ISR that hold everything up to the high watermark and at least
    /// the start of this leader's epoch, and fetched within `lag_max_ms` (a broker that
    /// died after catching up must not be added back): they may rejoin.
    pub fn caught_up_outside_isr(
        &self,
        isr: &[NodeId],
        high_watermark: i64,
        now_ms: i64,
        lag_max_ms: i64,
    ) -> Vec<NodeId> {
        self.followers
            .iter()
            .filter(|(id, p)| {
                !isr.contains(id)
                    && p.log_end_offset >= high_watermark
                    && p.log_end_offset >= self.epoch_start_offset
                    && now_ms - p.last_fetch_ms <= lag_max_ms
            })
            .map(|(id, _)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_watermark_is_the_smallest_isr_log_end() {
        let mut s = LeaderState::new(3, 10, [1, 2], 0);
        assert_eq!(s.isr_high_watermark(0, 20, &[0]), Some(20));
        assert_eq!(s.isr_high_watermark(0, 20, &[0, 1]), None, "follower 1 never fetched");
        assert!(s.record_fetch(1, 15, 20, 5), "first fetch moves the follower's log end");
        s.record_fetch(2, 12, 20, 5);
        assert!(!s.record_fetch(1, 15, 25, 6), "the same fetch offset again moves nothing");
        assert_eq!(s.isr_high_watermark(0, 20, &[0, 1]), Some(15));
        assert_eq!(s.isr_high_watermark(0, 20, &[0, 1, 2]), Some(12));
        assert!(!s.record_fetch(7, 20, 20, 5), "not a replica");
    }

    #[test]
    fn a_fetch_past_the_leaders_log_end_does_not_count() {
        let mut s = LeaderState::new(3, 10, [1, 2], 0);
        s.record_fetch(1, 20, 20, 1);
        s.record_fetch(2, 20, 20, 1);
        // Follower 2 still holds a divergent tail up to 30 and fetches there.
        assert!(!s.record_fetch(2, 30, 20, 2), "an out-of-range fetch moves nothing");
        assert_eq!(s.followers[&2].log_end_offset, 20);
        assert_eq!(s.followers[&2].last_fetch_ms, 1, "nor counts as a fetch for the lag rules");
        // The leader appends up to 30: the HW stays where follower 2 is known to be.
        assert_eq!(s.isr_high_watermark(0, 30, &[0, 1, 2]), Some(20));
    }

    #[test]
    fn lagging_followers_leave_and_caught_up_ones_rejoin() {
        let mut s = LeaderState::new(1, 10, [1, 2], 0);
        // 1 keeps up; 2 fetches once, far behind, then stops.
        s.record_fetch(1, 20, 20, 1_000);
        s.record_fetch(2, 3, 20, 1_000);
        assert_eq!(s.out_of_sync(0, &[0, 1, 2], 20_000, 30_000), Vec::<NodeId>::new());
        s.record_fetch(1, 20, 20, 29_000);
        assert_eq!(s.out_of_sync(0, &[0, 1, 2], 30_001, 30_000), vec![2]);
        // 2 catches up to the high watermark but not to the epoch start: not yet.
        s.record_fetch(2, 9, 9, 31_000);
        assert_eq!(s.caught_up_outside_isr(&[0, 1], 9, 31_000, 30_000), Vec::<NodeId>::new());
        s.record_fetch(2, 20, 20, 32_000);
        assert_eq!(s.caught_up_outside_isr(&[0, 1], 20, 32_000, 30_000), vec![2]);
        // Silent since: not added back.
        assert_eq!(s.caught_up_outside_isr(&[0, 1], 20, 62_001, 30_000), Vec::<NodeId>::new());
    }

    #[test]
    fn a_follower_reaching_the_previous_fetch_end_was_caught_up_then() {
        let mut s = LeaderState::new(0, 0, [1], 0);
        s.record_fetch(1, 0, 100, 1_000); // leader had 100 at t=1000
        s.record_fetch(1, 100, 150, 2_000); // got them; the leader has moved on
        assert_eq!(s.followers[&1].last_caught_up_ms, 1_000);
        s.record_fetch(1, 150, 150, 3_000);
        assert_eq!(s.followers[&1].last_caught_up_ms, 3_000);
    }

    #[test]
    fn the_most_caught_up_candidate_is_chosen() {
        let mut s = LeaderState::new(0, 0, [1, 2, 3, 4], 0);
        assert_eq!(s.most_caught_up([1, 2]), None, "nobody fetched in this epoch");
        s.record_fetch(1, 10, 20, 5);
        s.record_fetch(2, 20, 20, 5);
        s.record_fetch(3, 20, 20, 4);
        assert_eq!(s.most_caught_up([1, 2, 3]), Some(2), "highest log end, then latest caught up");
        assert_eq!(s.most_caught_up([1, 3]), Some(3));
        s.record_fetch(3, 20, 20, 5);
        assert_eq!(s.most_caught_up([3, 2]), Some(2), "a tie goes to the lowest id");
        assert_eq!(s.most_caught_up([1, 4]), Some(1), "4 never fetched");
        assert_eq!(s.most_caught_up([7]), None, "not a follower");
    }

    #[test]
    fn reassignment_updates_the_follower_set() {
        let mut s = LeaderState::new(0, 0, [1, 2], 0);
        s.record_fetch(1, 5, 5, 1);
        s.set_followers(&[1, 3], 10);
        assert_eq!(s.followers.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(s.followers[&1].log_end_offset, 5);
        assert_eq!(s.followers[&3].log_end_offset, -1);
    }

    #[test]
    fn the_low_watermark_is_the_smallest_log_start_among_live_replicas() {
        let mut s = LeaderState::new(0, 0, [1, 2], 0);
        let all = |_| true;
        assert_eq!(s.low_watermark(10, all), -1, "followers that never fetched hold it at -1");
        s.record_log_start(1, 10);
        s.record_log_start(2, 4);
        assert_eq!(s.low_watermark(10, all), 4);
        assert_eq!(s.low_watermark(3, all), 3, "the leader's own start counts");
        assert_eq!(s.low_watermark(10, |f| f != 2), 10, "a follower on a dead broker does not");
        s.record_log_start(7, 0);
        assert_eq!(s.low_watermark(10, |f| f != 2), 10, "nor a broker that is not a replica");
    }
}
