//! Replica placement at topic creation, as Kafka's rack-unaware assignment: leaders
//! round-robin over the brokers from a random start, followers shifted so that replicas
//! of consecutive partitions spread over different brokers.

use super::types::NodeId;

/// Replica lists for partitions `first_partition..first_partition + partitions`.
/// `start` and `shift` are the random choices (any values; reduced modulo the broker count).
/// Callers check `replication_factor <= brokers.len()` first.
pub fn assign_replicas(
    brokers: &[NodeId],
    first_partition: u32,
    partitions: u32,
    replication_factor: usize,
    start: usize,
    shift: usize,
) -> Vec<Vec<NodeId>> {
    let n = brokers.len();
    assert!(n > 0 && replication_factor >= 1 && replication_factor <= n, "checked by the caller");
    let start = start % n;
    let mut next_shift = shift % n;
    let mut out = Vec::with_capacity(partitions as usize);
    for p in first_partition..first_partition + partitions {
        let p = p as usize;
        if p > 0 && p.is_multiple_of(n) {
            next_shift += 1;
        }
        let first = (p + start) % n;
        let mut replicas = vec![brokers[first]];
        for j in 0..replication_factor - 1 {
            // Kafka's replicaIndex: never lands on `first` because the shift is in 1..n.
            let idx = (first + 1 + (next_shift + j) % (n - 1)) % n;
            replicas.push(brokers[idx]);
        }
        out.push(replicas);
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
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn replicas_are_distinct_and_leaders_spread_evenly() {
        let brokers = [0, 1, 2, 3, 4];
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
        assert_eq!(assign_replicas(&[7], 0, 3, 1, 5, 9), vec![vec![7], vec![7], vec![7]]);
        let a = assign_replicas(&[1, 2, 3], 3, 2, 2, 0, 0);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0][0], 1); // partition 3 starts over the brokers again
    }
}
