//! Rebalance planning: from the broker pods the StatefulSet wants and has ready, and the
//! partitions' replicas, leaders and ISR, the steps that keep the cluster balanced as pods come
//! and go. [`plan`] is a pure function (state in, plan out); the watcher in
//! [`crate::rebalance_watch`] feeds it from the StatefulSet's pods and the admin API.
//!
//! [`crate::rebalance_exec`] carries the steps out through the broker's admin API.

use std::collections::{BTreeMap, BTreeSet};

/// The brokers as Kubernetes sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brokers {
    /// `spec.replicas` of the StatefulSet: brokers `0..desired` are meant to exist.
    pub desired: i32,
    /// Ids of broker pods that are Ready.
    pub ready: BTreeSet<i32>,
    /// Ids the broker's metadata marks draining (`POST /api/v1/brokers/{id}/drain`): no
    /// replica can be placed on them until the mark is cleared.
    pub draining: BTreeSet<i32>,
    /// The draining marks the operator set itself (for a scale-down; the broker's metadata
    /// names it as their owner): the only ones it clears. A mark a person set (to drain
    /// before scaling down) is left alone.
    pub drained_here: BTreeSet<i32>,
    /// Each broker's rack (`--rack`), for those that have one: a move never puts a second
    /// replica of a partition in a rack while it can go to a rack without one.
    pub racks: BTreeMap<i32, String>,
}

/// One partition as the admin API shows it (`GET /api/v1/partitions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub leader: Option<i32>,
    pub isr: Vec<i32>,
}

/// One step of a plan, in the order they should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A broker the StatefulSet wants again (scaled back up) is still marked draining by this
    /// operator: clear the mark so that it can take replicas.
    Undrain { broker: i32 },
    /// A broker the StatefulSet wants carries a draining mark this operator did not set (a
    /// person draining it ahead of a scale-down, or a mark from before the operator
    /// restarted): it takes no replicas until someone clears it. Surfaced, never executed.
    DrainedByOthers { broker: i32 },
    /// Move every replica and leadership off `broker` before its pod is removed (scale-down).
    Drain { broker: i32 },
    /// Give the partition this replica list (first = preferred leader).
    Reassign { topic: String, partition: i32, replicas: Vec<i32> },
    /// Make the preferred replica (first in the list) leader again.
    ElectPreferred { topic: String, partition: i32, leader: i32 },
    /// The topic's `min.insync.replicas` is above the number of replicas that are live for some
    /// partition: acks=all produces to it fail until brokers return. Surfaced, never lowered
    /// automatically (that would silently weaken durability).
    MinIsrUnsatisfiable { topic: String, min_insync_replicas: i32, live_replicas: i32 },
}

impl Step {
    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Undrain { .. } => "undrain",
            Step::DrainedByOthers { .. } => "drained_by_others",
            Step::Drain { .. } => "drain",
            Step::Reassign { .. } => "reassign",
            Step::ElectPreferred { .. } => "elect_preferred",
            Step::MinIsrUnsatisfiable { .. } => "min_isr_unsatisfiable",
        }
    }
}

/// The broker of `load` outside `replicas` where a replica moved off a departing broker
/// (`leaving`), or added to a partition, goes: one in a rack none of the replicas that stay
/// is in, if there is one, and among those the one that holds the fewest replicas, ties to
/// the lowest id.
pub fn least_loaded(
    load: &BTreeMap<i32, usize>,
    replicas: &[i32],
    racks: &BTreeMap<i32, String>,
    leaving: Option<i32>,
) -> Option<i32> {
    let kept: Vec<&String> = replicas.iter().filter(|r| Some(**r) != leaving).filter_map(|r| racks.get(r)).collect();
    load.iter()
        .filter(|(b, _)| !replicas.contains(b))
        .min_by_key(|(b, n)| (racks.get(*b).is_some_and(|r| kept.contains(&r)), **n, **b))
        .map(|(b, _)| *b)
}

/// Whether moving `replicas`' replica on `from` to `to` keeps the partition spread over
/// racks: `to` is in no rack, in `from`'s, or in one no other replica is in.
fn keeps_racks(racks: &BTreeMap<i32, String>, replicas: &[i32], from: i32, to: i32) -> bool {
    match racks.get(&to) {
        None => true,
        Some(r) => racks.get(&from) == Some(r) || !replicas.iter().any(|b| *b != from && racks.get(b) == Some(r)),
    }
}

/// Plans the steps for `partitions` on `brokers`; `min_isr` holds each topic's
/// `min.insync.replicas` (topics absent use the broker default, 1).
pub fn plan(brokers: &Brokers, partitions: &[Partition], min_isr: &BTreeMap<String, i32>) -> Vec<Step> {
    let mut parts: Vec<Partition> = partitions.to_vec();
    parts.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let target = |b: i32| b >= 0 && b < brokers.desired;
    // Brokers that may receive replicas: wanted by the StatefulSet, ready, and not marked
    // draining (the broker refuses to place a replica there; the mark is cleared first).
    let receivers: Vec<i32> =
        (0..brokers.desired).filter(|b| brokers.ready.contains(b) && !brokers.draining.contains(b)).collect();

    let mut steps: Vec<Step> = (0..brokers.desired)
        .filter(|b| brokers.draining.contains(b))
        .map(|broker| {
            if brokers.drained_here.contains(&broker) {
                Step::Undrain { broker }
            } else {
                Step::DrainedByOthers { broker }
            }
        })
        .collect();
    let departing: BTreeSet<i32> =
        parts.iter().flat_map(|p| p.replicas.iter().copied()).filter(|b| !target(*b)).collect();
    steps.extend(departing.iter().map(|&broker| Step::Drain { broker }));

    let mut load: BTreeMap<i32, usize> = receivers.iter().map(|&b| (b, 0)).collect();
    for p in &parts {
        for b in &p.replicas {
            if let Some(n) = load.get_mut(b) {
                *n += 1;
            }
        }
    }
    let mut planned: Vec<Vec<i32>> = parts.iter().map(|p| p.replicas.clone()).collect();

    // Replicas on departing brokers go to the least-loaded receiver not already in the list.
    for replicas in planned.iter_mut() {
        for slot in 0..replicas.len() {
            if target(replicas[slot]) {
                continue;
            }
            let candidate = least_loaded(&load, replicas, &brokers.racks, Some(replicas[slot]));
            if let Some(b) = candidate {
                replicas[slot] = b;
                *load.get_mut(&b).unwrap() += 1;
            }
        }
    }

    // Even out replica counts over the receivers (scale-up brings empty brokers): move one
    // replica at a time from the most to the least loaded broker until they differ by at most 1.
    let total: usize = planned.iter().map(Vec::len).sum();
    for _ in 0..total {
        // The most loaded broker first (ties to the lowest id) towards the least loaded;
        // with racks, the first pair that has a partition to move without putting two of
        // its replicas in one rack.
        let mut most: Vec<(i32, usize)> = load.iter().map(|(b, n)| (*b, *n)).collect();
        most.sort_by_key(|(b, n)| (std::cmp::Reverse(*n), *b));
        let mut least = most.clone();
        least.sort_by_key(|(b, n)| (*n, *b));
        let mut chosen = None;
        'pairs: for &(max_b, max_n) in &most {
            for &(min_b, min_n) in &least {
                if max_n <= min_n + 1 {
                    break;
                }
                // Prefer moving a follower (not the preferred leader) to keep leadership where it is.
                let pick = planned
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.contains(&max_b) && !r.contains(&min_b))
                    .filter(|(_, r)| keeps_racks(&brokers.racks, r, max_b, min_b))
                    .min_by_key(|(i, r)| (r.first() == Some(&max_b), *i))
                    .map(|(i, _)| i);
                if let Some(i) = pick {
                    chosen = Some((i, max_b, min_b));
                    break 'pairs;
                }
            }
        }
        let Some((i, max_b, min_b)) = chosen else { break };
        let slot = planned[i].iter().position(|b| *b == max_b).unwrap();
        planned[i][slot] = min_b;
        *load.get_mut(&max_b).unwrap() -= 1;
        *load.get_mut(&min_b).unwrap() += 1;
    }

    let mut elections = Vec::new();
    for (p, replicas) in parts.iter().zip(&planned) {
        if *replicas != p.replicas {
            steps.push(Step::Reassign { topic: p.topic.clone(), partition: p.partition, replicas: replicas.clone() });
        } else if let Some(&preferred) = p.replicas.first() {
            if p.leader != Some(preferred) && brokers.ready.contains(&preferred) && p.isr.contains(&preferred) {
                elections.push(Step::ElectPreferred {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    leader: preferred,
                });
            }
        }
    }
    steps.extend(elections);

    // min.insync.replicas against the replicas live after the plan.
    let mut live_per_topic: BTreeMap<&str, i32> = BTreeMap::new();
    for (p, replicas) in parts.iter().zip(&planned) {
        let live = replicas.iter().filter(|b| brokers.ready.contains(b)).count() as i32;
        let e = live_per_topic.entry(p.topic.as_str()).or_insert(live);
        *e = (*e).min(live);
    }
    for (topic, live) in live_per_topic {
        let min = min_isr.get(topic).copied().unwrap_or(1);
        if min > live {
            steps.push(Step::MinIsrUnsatisfiable {
                topic: topic.to_string(),
                min_insync_replicas: min,
                live_replicas: live,
            });
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(topic: &str, partition: i32, replicas: &[i32], leader: Option<i32>) -> Partition {
        Partition { topic: topic.into(), partition, replicas: replicas.to_vec(), leader, isr: replicas.to_vec() }
    }

    fn brokers(desired: i32, ready: &[i32]) -> Brokers {
        Brokers {
            desired,
            ready: ready.iter().copied().collect(),
            draining: BTreeSet::new(),
            drained_here: BTreeSet::new(),
            racks: BTreeMap::new(),
        }
    }

    fn loads(steps: &[Step], parts: &[Partition]) -> BTreeMap<i32, usize> {
        let mut replicas: BTreeMap<(String, i32), Vec<i32>> =
            parts.iter().map(|p| ((p.topic.clone(), p.partition), p.replicas.clone())).collect();
        for s in steps {
            if let Step::Reassign { topic, partition, replicas: r } = s {
                replicas.insert((topic.clone(), *partition), r.clone());
            }
        }
        let mut load = BTreeMap::new();
        for r in replicas.values() {
            for b in r {
                *load.entry(*b).or_insert(0) += 1;
            }
        }
        load
    }

    #[test]
    fn a_balanced_healthy_cluster_needs_nothing() {
        let parts = vec![p("t", 0, &[0, 1], Some(0)), p("t", 1, &[1, 2], Some(1)), p("t", 2, &[2, 0], Some(2))];
        assert_eq!(plan(&brokers(3, &[0, 1, 2]), &parts, &BTreeMap::new()), vec![]);
    }

    #[test]
    fn scale_up_moves_replicas_onto_the_new_brokers() {
        let parts: Vec<_> = (0..6).map(|i| p("t", i, &[i % 2, (i + 1) % 2], Some(i % 2))).collect();
        let steps = plan(&brokers(3, &[0, 1, 2]), &parts, &BTreeMap::new());
        let load = loads(&steps, &parts);
        assert_eq!(load.values().sum::<usize>(), 12);
        assert!(load.values().all(|n| *n == 4), "{load:?} from {steps:?}");
        for s in &steps {
            if let Step::Reassign { replicas, .. } = s {
                let distinct: BTreeSet<_> = replicas.iter().collect();
                assert_eq!(distinct.len(), replicas.len(), "a broker twice in {replicas:?}");
            }
        }
    }

    #[test]
    fn scale_up_with_racks_keeps_every_partition_in_three_racks() {
        // Racks a, b, c on 0, 1, 2; the new broker 3 is in rack b. Every partition holds one
        // replica per rack, so only broker 1's replicas may go to broker 3.
        let parts: Vec<_> = (0..6).map(|i| p("t", i, &[i % 3, (i + 1) % 3, (i + 2) % 3], Some(i % 3))).collect();
        let mut b = brokers(4, &[0, 1, 2, 3]);
        b.racks = [(0, "a"), (1, "b"), (2, "c"), (3, "b")].into_iter().map(|(id, r)| (id, r.to_string())).collect();
        let steps = plan(&b, &parts, &BTreeMap::new());
        let load = loads(&steps, &parts);
        assert_eq!(load.get(&3), Some(&3), "{load:?} from {steps:?}");
        assert_eq!(load.get(&1), Some(&3), "{load:?} from {steps:?}");
        for s in &steps {
            if let Step::Reassign { replicas, .. } = s {
                let racks: BTreeSet<&String> = replicas.iter().map(|r| &b.racks[r]).collect();
                assert_eq!(racks.len(), 3, "two replicas in one rack: {replicas:?}");
            }
        }
        // Without racks the same cluster takes its replicas from the first brokers.
        let unaware = loads(&plan(&brokers(4, &[0, 1, 2, 3]), &parts, &BTreeMap::new()), &parts);
        assert_ne!(unaware.get(&1), Some(&3), "{unaware:?}");
    }

    #[test]
    fn a_new_broker_gets_nothing_until_its_pod_is_ready() {
        let parts: Vec<_> = (0..4).map(|i| p("t", i, &[i % 2], Some(i % 2))).collect();
        assert_eq!(plan(&brokers(3, &[0, 1]), &parts, &BTreeMap::new()), vec![]);
    }

    #[test]
    fn scale_down_drains_the_departing_broker_first() {
        let parts = vec![p("t", 0, &[0, 3], Some(3)), p("t", 1, &[3, 1], Some(3)), p("t", 2, &[1, 2], Some(1))];
        let steps = plan(&brokers(3, &[0, 1, 2, 3]), &parts, &BTreeMap::new());
        assert_eq!(steps[0], Step::Drain { broker: 3 });
        let load = loads(&steps, &parts);
        assert!(!load.contains_key(&3), "{steps:?}");
        assert_eq!(load.values().sum::<usize>(), 6);
    }

    #[test]
    fn leadership_returns_to_the_preferred_replica_when_it_is_back() {
        let mut part = p("t", 0, &[0, 1, 2], Some(1));
        let steps = plan(&brokers(3, &[0, 1, 2]), std::slice::from_ref(&part), &BTreeMap::new());
        assert_eq!(steps, vec![Step::ElectPreferred { topic: "t".into(), partition: 0, leader: 0 }]);
        // Not while the preferred replica is out of the ISR (it would lose records) or not ready.
        part.isr = vec![1, 2];
        assert_eq!(plan(&brokers(3, &[0, 1, 2]), std::slice::from_ref(&part), &BTreeMap::new()), vec![]);
        part.isr = vec![0, 1, 2];
        assert_eq!(plan(&brokers(3, &[1, 2]), std::slice::from_ref(&part), &BTreeMap::new()), vec![]);
    }

    #[test]
    fn min_isr_above_the_live_replicas_is_surfaced() {
        let parts = vec![p("orders", 0, &[0, 1, 2], Some(0)), p("orders", 1, &[1, 2, 0], Some(1))];
        let min_isr: BTreeMap<String, i32> = [("orders".to_string(), 2)].into();
        assert_eq!(plan(&brokers(3, &[0, 1, 2]), &parts, &min_isr), vec![]);
        let steps = plan(&brokers(3, &[0]), &parts, &min_isr);
        assert!(
            steps.contains(&Step::MinIsrUnsatisfiable {
                topic: "orders".into(),
                min_insync_replicas: 2,
                live_replicas: 1
            }),
            "{steps:?}"
        );
    }

    #[test]
    fn a_broker_wanted_again_is_undrained_before_it_takes_replicas() {
        // Broker 2 was drained for a scale-down, then the StatefulSet grew back to 3.
        let parts: Vec<_> = (0..6).map(|i| p("t", i, &[i % 2], Some(i % 2))).collect();
        let mut b = brokers(3, &[0, 1, 2]);
        b.draining.insert(2);
        b.drained_here.insert(2);
        let steps = plan(&b, &parts, &BTreeMap::new());
        assert_eq!(steps, vec![Step::Undrain { broker: 2 }], "nothing may be placed on it yet");
        // A mark someone else set (draining ahead of a scale-down) is surfaced, not cleared,
        // and nothing is placed on the broker either.
        b.drained_here.clear();
        let steps = plan(&b, &parts, &BTreeMap::new());
        assert_eq!(steps, vec![Step::DrainedByOthers { broker: 2 }]);
        b.draining.clear();
        let steps = plan(&b, &parts, &BTreeMap::new());
        assert!(loads(&steps, &parts).get(&2).is_some_and(|n| *n == 2), "{steps:?}");
        // A departing broker stays marked: only brokers the StatefulSet wants are undrained.
        let mut b = brokers(2, &[0, 1, 2]);
        b.draining.insert(2);
        b.drained_here.insert(2);
        assert!(!plan(&b, &parts, &BTreeMap::new()).iter().any(|s| matches!(s, Step::Undrain { .. })));
    }

    #[test]
    fn plans_are_deterministic() {
        let parts: Vec<_> = (0..10).map(|i| p(&format!("t{}", i % 3), i, &[i % 2], Some(i % 2))).collect();
        let b = brokers(4, &[0, 1, 2, 3]);
        assert_eq!(plan(&b, &parts, &BTreeMap::new()), plan(&b, &parts, &BTreeMap::new()));
    }
}
