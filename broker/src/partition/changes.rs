//! Which partitions changed lately: appends (producers, the group coordinator) and high
//! watermark moves, in order, each with a sequence number. Long-polling fetches wait on the
//! sequence and, when it moves, look only at the entries since they last looked: a fetch is
//! collected again only if one of its own partitions changed. Before, every append on the
//! broker woke every waiting fetch into a full pass over all its partitions, so with a
//! thousand partitions per follower a light load kept a CPU busy (docs/benchmarks.md,
//! "many partitions"). Kafka's delayed-fetch purgatory is keyed by partition for the same reason.
//!
//! The ring keeps the last `CAPACITY` changes; a fetch that slept through more than that simply
//! collects again.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use tokio::sync::watch;

use crate::log::TopicPartition;

const CAPACITY: usize = 4096;

pub struct PartitionChanges {
    ring: Mutex<VecDeque<(u64, TopicPartition)>>,
    seq: watch::Sender<u64>,
}

impl Default for PartitionChanges {
    fn default() -> Self {
        Self { ring: Mutex::new(VecDeque::with_capacity(CAPACITY)), seq: watch::channel(0).0 }
    }
}

impl PartitionChanges {
    /// `tp` got an append or its high watermark moved.
    pub fn record(&self, tp: &TopicPartition) {
        self.record_all(std::iter::once(tp));
    }

    pub fn record_all<'a>(&self, tps: impl IntoIterator<Item = &'a TopicPartition>) {
        let mut ring = self.ring.lock().expect("changes lock");
        let mut seq = *self.seq.borrow();
        for tp in tps {
            seq += 1;
            if ring.len() == CAPACITY {
                ring.pop_front();
            }
            ring.push_back((seq, tp.clone()));
        }
        // Sent under the ring's lock, so a reader that sees the new number finds its entries.
        self.seq.send_replace(seq);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.seq.subscribe()
    }

    /// Whether a change after sequence `since` touches one of `wanted` (or cannot be told
    /// apart: entries already dropped from the ring).
    pub fn concerns(&self, since: u64, wanted: &HashSet<(&str, i32)>) -> bool {
        let ring = self.ring.lock().expect("changes lock");
        match ring.front() {
            Some((oldest, _)) if *oldest > since + 1 => return true,
            None => return *self.seq.borrow() > since,
            _ => {}
        }
        ring.iter()
            .rev()
            .take_while(|(seq, _)| *seq > since)
            .any(|(_, tp)| wanted.contains(&(tp.topic.as_str(), tp.partition)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_of_wanted_partitions_after_the_mark_concern_a_fetch() {
        let changes = PartitionChanges::default();
        let a0 = TopicPartition::new("a", 0);
        let b0 = TopicPartition::new("b", 0);
        let wanted: HashSet<(&str, i32)> = [("a", 0)].into_iter().collect();
        assert!(!changes.concerns(0, &wanted));
        changes.record(&b0);
        assert!(!changes.concerns(0, &wanted), "another partition");
        changes.record(&a0);
        assert!(changes.concerns(1, &wanted));
        assert!(!changes.concerns(2, &wanted), "already seen");
        changes.record_all([&b0, &a0]);
        assert!(changes.concerns(2, &wanted), "among several changes");
        assert!(!changes.concerns(4, &wanted));
        assert_eq!(*changes.subscribe().borrow(), 4);
    }

    #[test]
    fn a_fetch_that_slept_past_the_ring_collects_again() {
        let changes = PartitionChanges::default();
        let b0 = TopicPartition::new("b", 0);
        let wanted: HashSet<(&str, i32)> = [("a", 0)].into_iter().collect();
        changes.record_all((0..CAPACITY + 10).map(|_| &b0));
        assert!(changes.concerns(0, &wanted), "entries 1..=10 are gone");
        assert!(!changes.concerns(20, &wanted));
    }
}
