//! Replica placement at topic creation, as Kafka's assignment: leaders round-robin over the
//! brokers from a random start, followers shifted so that replicas of consecutive partitions
//! spread over different brokers. With racks (`--rack`), Kafka's rack-aware variant: the
//! brokers are listed alternating racks, and a follower never goes to a rack that already
//! holds a replica of the partition until every rack holds one.

use std::collections::{BTreeMap, BTreeSet};

use super::types::NodeId;

/// Replica lists for partitions `first_partition..first_partition + partitions` over
/// `(broker, rack)` pairs: Kafka's rack-aware assignment (`assignReplicasToBrokersRackAware`).
/// With every broker in one rack (brokers without racks: pass "") it is Kafka's rack-unaware
/// assignment over the brokers in id order. Kafka refuses brokers without a rack among
/// brokers with one; here such brokers count as one more rack, as KRaft's placer does.
/// `start` and `shift` are the random choices (any values; reduced modulo the broker count).
/// Callers check `replication_factor <= brokers.len()` first.
pub fn assign_replicas(
    brokers: &[(NodeId, &str)],
    first_partition: u32,
    partitions: u32,
    replication_factor: usize,
    start: usize,
    shift: usize,
) -> Vec<Vec<NodeId>> {
    let rack_of: BTreeMap<NodeId, &str> = brokers.iter().copied().collect();
    let arranged = rack_alternated(brokers);
    let n = arranged.len();
    assert!(n > 0 && replication_factor >= 1 && replication_factor <= n, "checked by the caller");
    let num_racks = rack_of.values().collect::<BTreeSet<_>>().len();
    let start = start % n;
    let mut next_shift = shift % n;
    let mut out = Vec::with_capacity(partitions as usize);
    for p in first_partition..first_partition + partitions {
        let p = p as usize;
        if p > 0 && p.is_multiple_of(n) {
            next_shift += 1;
        }
        let first = (p + start) % n;
        let leader = arranged[first];
        let mut replicas = vec![leader];
        let mut racks: BTreeSet<&str> = BTreeSet::from([rack_of[&leader]]);
        let mut k = 0;
        for _ in 0..replication_factor - 1 {
            // Walks every other broker within n - 1 steps, so it ends: a rack without a
            // replica always has a broker without one.
            loop {
                let step = 1 + (next_shift * num_racks + k) % (n - 1);
                let b = arranged[(first + step) % n];
                k += 1;
                let rack = rack_of[&b];
                if (!racks.contains(rack) || racks.len() == num_racks) && !replicas.contains(&b) {
                    replicas.push(b);
                    racks.insert(rack);
                    break;
                }
            }
        }
        out.push(replicas);
    }
    out
}

/// Kafka's `getRackAlternatedBrokerList`: one broker of each rack in turn (racks and the
/// brokers within each in ascending order), until every broker is listed.
fn rack_alternated(brokers: &[(NodeId, &str)]) -> Vec<NodeId> {
    let mut by_rack: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
    for (b, rack) in brokers {
        by_rack.entry(rack).or_default().push(*b);
    }
    let mut queues: Vec<std::vec::IntoIter<NodeId>> = by_rack
        .into_values()
        .map(|mut v| {
            v.sort_unstable();
            v.into_iter()
        })
        .collect();
    let mut out = Vec::with_capacity(brokers.len());
    while out.len() < brokers.len() {
        for q in queues.iter_mut() {
            out.extend(q.next());
        }
    }
    out
}

/// Cheap random numbers for placement (no cryptographic need): the clock's nanoseconds
/// mixed with a counter.
pub fn random_usize() -> usize {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let mut x = nanos ^ COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    // splitmix64 finalizer
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unracked(ids: &[NodeId]) -> Vec<(NodeId, &'static str)> {
        ids.iter().map(|b| (*b, "")).collect()
    }

    #[test]
    fn rack_aware_placement_puts_each_partitions_replicas_in_different_racks() {
        // Six brokers in three racks of unequal order, and a broker without a rack.
        let brokers = [(0, "a"), (1, "a"), (2, "b"), (3, "c"), (4, "b"), (5, "c")];
        assert_eq!(rack_alternated(&brokers), vec![0, 2, 3, 1, 4, 5]);
        let rack: BTreeMap<NodeId, &str> = brokers.iter().copied().collect();
        for start in 0..6 {
            for shift in 0..6 {
                for rf in 1..=3 {
                    let a = assign_replicas(&brokers, 0, 12, rf, start, shift);
                    let mut leaders: BTreeMap<NodeId, usize> = BTreeMap::new();
                    for r in &a {
                        let racks: BTreeSet<&str> = r.iter().map(|b| rack[b]).collect();
                        assert_eq!(racks.len(), rf, "rf {rf}: {r:?} shares a rack");
                        *leaders.entry(r[0]).or_default() += 1;
                    }
                    assert!(leaders.values().all(|&c| c == 2), "leaders {leaders:?}");
                }
                // More replicas than racks: every rack first, then any broker, never twice.
                for r in assign_replicas(&brokers, 3, 6, 5, start, shift) {
                    assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 5, "{r:?}");
                    assert_eq!(r[..3].iter().map(|b| rack[b]).collect::<BTreeSet<_>>().len(), 3, "{r:?}");
                }
            }
        }
        // One rack: Kafka's rack-unaware lists, follower j of a partition led by the broker at
        // `first` being (first + 1 + (shift + j) % (n - 1)) % n, the shift growing every lap.
        let one = unracked(&[0, 1, 2, 3, 4]);
        for (start, shift) in [(0, 0), (3, 1), (4, 4)] {
            for (i, r) in assign_replicas(&one, 2, 9, 3, start, shift).iter().enumerate() {
                let p = 2 + i;
                let (first, lap_shift) = ((p + start) % 5, shift + p / 5);
                let want: Vec<NodeId> = std::iter::once(first)
                    .chain((0..2).map(|j| (first + 1 + (lap_shift + j) % 4) % 5))
                    .map(|b| b as NodeId)
                    .collect();
                assert_eq!(*r, want, "partition {p}, start {start}, shift {shift}");
            }
        }
        // Brokers without a rack count as one more rack.
        let mixed = [(0, "a"), (1, ""), (2, "a"), (3, "")];
        for r in assign_replicas(&mixed, 0, 8, 2, 1, 2) {
            assert_ne!(r[0] % 2 == 1, r[1] % 2 == 1, "{r:?}");
        }
    }

    #[test]
    fn replicas_are_distinct_and_leaders_spread_evenly() {
        let brokers = unracked(&[0, 1, 2, 3, 4]);
        for start in 0..5 {
            for shift in 0..5 {
                let a = assign_replicas(&brokers, 0, 10, 3, start, shift);
                assert_eq!(a.len(), 10);
                let mut leaders = BTreeMap::new();
                let mut replica_count = BTreeMap::new();
                for r in &a {
                    assert_eq!(r.len(), 3);
                    assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 3, "{r:?} repeats a broker");
                    *leaders.entry(r[0]).or_insert(0) += 1;
                    for b in r {
                        *replica_count.entry(*b).or_insert(0) += 1;
                    }
                }
                assert!(leaders.values().all(|&c| c == 2), "leaders {leaders:?}");
                assert!(replica_count.values().all(|&c| c == 6), "replicas {replica_count:?}");
            }
        }
    }

    #[test]
    fn single_broker_and_added_partitions() {
        assert_eq!(assign_replicas(&unracked(&[7]), 0, 3, 1, 5, 9), vec![vec![7], vec![7], vec![7]]);
        let a = assign_replicas(&unracked(&[1, 2, 3]), 3, 2, 2, 0, 0);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0][0], 1); // partition 3 starts over the brokers again
    }
}
