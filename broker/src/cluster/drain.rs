//! Draining a broker: the reassignments that move every replica off it. A pure function of
//! the metadata image (state in, plan out), so the placement rules are unit-tested here and
//! the admin API only proposes what it returns.
//!
//! Each partition whose target replica list holds the drained broker gets that broker
//! replaced, in place (the replica list keeps its length, so the replication factor holds,
//! and a replaced preferred leader hands that role to its replacement), by the placeable
//! broker (live, not draining, not already a replica) in a rack none of the partition's
//! other replicas is in, if there is one (`--rack`), and among those the one that holds the
//! fewest replicas, counting the moves planned so far; ties go to the lowest id.

use std::collections::BTreeMap;

use super::image::MetadataImage;
use super::types::NodeId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMove {
    pub topic: String,
    pub partition: u32,
    /// The partition epoch the plan was made from (the proposal carries it).
    pub partition_epoch: i32,
    pub target: Vec<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub topic: String,
    pub partition: u32,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainPlan {
    pub moves: Vec<PlannedMove>,
    /// Partitions no broker can take: every placeable broker already holds a replica.
    pub blocked: Vec<Blocked>,
}

pub fn plan_drain(image: &MetadataImage, broker: NodeId) -> DrainPlan {
    let placeable: Vec<NodeId> = image.placeable_brokers().into_iter().filter(|b| *b != broker).collect();
    // Load = replicas each broker will hold once running reassignments complete.
    let mut load: BTreeMap<NodeId, usize> = placeable.iter().map(|b| (*b, 0)).collect();
    for t in image.topics.values() {
        for p in &t.partitions {
            for r in p.target_replicas() {
                if let Some(n) = load.get_mut(&r) {
                    *n += 1;
                }
            }
        }
    }
    let mut plan = DrainPlan::default();
    for t in image.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            let target = p.target_replicas();
            let Some(pos) = target.iter().position(|r| *r == broker) else { continue };
            // Racks the partition keeps without the drained replica: a replacement there
            // would put two replicas in one failure domain.
            let kept_racks: Vec<&str> =
                target.iter().filter(|r| **r != broker).filter_map(|r| rack(image, *r)).collect();
            let choice = load
                .iter()
                .filter(|(b, _)| !target.contains(*b))
                .min_by_key(|(b, n)| (rack(image, **b).is_some_and(|r| kept_racks.contains(&r)), **n, **b))
                .map(|(b, _)| *b);
            match choice {
                Some(b) => {
                    *load.get_mut(&b).expect("from load") += 1;
                    let mut new_target = target.clone();
                    new_target[pos] = b;
                    plan.moves.push(PlannedMove {
                        topic: t.name.clone(),
                        partition: i as u32,
                        partition_epoch: p.partition_epoch,
                        target: new_target,
                    });
                }
                None => plan.blocked.push(Blocked {
                    topic: t.name.clone(),
                    partition: i as u32,
                    reason: format!(
                        "no live, non-draining broker outside replicas {target:?} can take the replica \
                         (replication factor {} with {} other placeable brokers)",
                        target.len(),
                        placeable.len()
                    ),
                }),
            }
        }
    }
    plan
}

fn rack(image: &MetadataImage, broker: NodeId) -> Option<&str> {
    image.brokers.get(&broker).and_then(|b| b.rack.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::types::MetadataCommand;

    fn image(brokers: u64, topics: &[(&str, Vec<Vec<NodeId>>)]) -> MetadataImage {
        let mut img = MetadataImage::default();
        for id in 0..brokers {
            img.apply(&MetadataCommand::RegisterBroker {
                broker_id: id,
                raft_addr: String::new(),
                kafka_addr: String::new(),
                http_addr: String::new(),
                rack: None,
                metadata_version: crate::cluster::types::METADATA_VERSION,
            })
            .unwrap();
        }
        for (name, assignment) in topics {
            img.apply(&MetadataCommand::CreateTopic {
                name: name.to_string(),
                topic_id: "id".into(),
                assignment: assignment.clone(),
                configs: Default::default(),
            })
            .unwrap();
        }
        img
    }

    #[test]
    fn replicas_move_in_place_to_the_least_loaded_brokers() {
        // Broker 3 holds one replica of each of 4 partitions; 4 and 5 hold nothing.
        let img = image(6, &[("t", vec![vec![3, 0, 1], vec![0, 3, 1], vec![1, 2, 3], vec![2, 3, 0]])]);
        let plan = plan_drain(&img, 3);
        assert!(plan.blocked.is_empty());
        let targets: Vec<Vec<NodeId>> = plan.moves.iter().map(|m| m.target.clone()).collect();
        assert_eq!(targets, vec![vec![4, 0, 1], vec![0, 5, 1], vec![1, 2, 4], vec![2, 5, 0]]);
        for m in &plan.moves {
            assert_eq!(m.target.len(), 3);
            assert!(!m.target.contains(&3));
        }
    }

    #[test]
    fn draining_fenced_and_existing_replicas_are_never_chosen_and_full_sets_block() {
        let mut img = image(4, &[("a", vec![vec![0, 1]]), ("b", vec![vec![0, 1, 2, 3]])]);
        img.apply(&MetadataCommand::SetBrokerDraining { broker_id: 2, draining: true, owner: None }).unwrap();
        img.apply(&MetadataCommand::FenceBroker { broker_id: 3 }).unwrap();
        let plan = plan_drain(&img, 0);
        // a: 1 is a replica already, 2 drains, 3 is fenced: nothing can take it.
        assert_eq!(plan.moves, vec![]);
        assert_eq!(plan.blocked.iter().map(|b| b.topic.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
        img.apply(&MetadataCommand::UnfenceBroker { broker_id: 3 }).unwrap();
        let plan = plan_drain(&img, 0);
        assert_eq!(plan.moves.len(), 1);
        assert_eq!((plan.moves[0].topic.as_str(), plan.moves[0].target.clone()), ("a", vec![3, 1]));
    }

    #[test]
    fn a_replacement_goes_to_a_rack_the_partition_is_not_in_before_a_less_loaded_one() {
        // Racks a: 0, 1; b: 2, 3, 4. Broker 1 is the least loaded, but in the rack of the
        // replica that stays.
        let mut img = image(5, &[("t", vec![vec![0, 2]]), ("u", vec![vec![3, 4], vec![4, 3]])]);
        for (id, rack) in [(0, "a"), (1, "a"), (2, "b"), (3, "b"), (4, "b")] {
            img.apply(&MetadataCommand::RegisterBroker {
                broker_id: id,
                raft_addr: String::new(),
                kafka_addr: String::new(),
                http_addr: String::new(),
                rack: Some(rack.into()),
                metadata_version: crate::cluster::types::METADATA_VERSION,
            })
            .unwrap();
        }
        let plan = plan_drain(&img, 0);
        assert_eq!(plan.moves[0].target, vec![1, 2], "rack a goes to the other broker of rack a");
        let plan = plan_drain(&img, 2);
        assert_eq!(plan.moves[0].target, vec![0, 3], "rack b keeps a replica, on the least loaded of 3 and 4");
        // Only rack-a brokers left to take it: better one more replica in rack a than none.
        img.apply(&MetadataCommand::SetBrokerDraining { broker_id: 3, draining: true, owner: None }).unwrap();
        img.apply(&MetadataCommand::SetBrokerDraining { broker_id: 4, draining: true, owner: None }).unwrap();
        assert_eq!(plan_drain(&img, 2).moves[0].target, vec![0, 1]);
    }

    #[test]
    fn partitions_already_moving_off_the_broker_are_left_alone() {
        let mut img = image(3, &[("t", vec![vec![0, 1]])]);
        img.apply(&MetadataCommand::ReassignPartition {
            topic: "t".into(),
            partition: 0,
            partition_epoch: 0,
            target: Some(vec![2, 1]),
        })
        .unwrap();
        assert_eq!(plan_drain(&img, 0), DrainPlan::default());
        // Draining 2 (an adding replica) replaces it in the running reassignment's target.
        let plan = plan_drain(&img, 2);
        assert_eq!(plan.moves[0].target, vec![0, 1]);
    }
}
