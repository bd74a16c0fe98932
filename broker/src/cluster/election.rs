//! Preferred-leader election (Kafka's `kafka-leader-election --election-type preferred`): each
//! chosen partition whose first replica is live, not draining and in the ISR, but does not
//! lead, gets it as leader through one `ChangePartition` carrying the partition epoch the
//! decision was made from. Never unclean. Shared by the admin API
//! (`POST /api/v1/partitions/elect-preferred`) and the Kafka ElectLeaders handler.

use super::node::{ClusterNode, ProposeError};
use super::types::{MetadataCommand, NodeId};

/// What became of one partition.
#[derive(Debug)]
pub enum Outcome {
    Elected,
    AlreadyLeader,
    /// The preferred replica's broker is fenced (down).
    Fenced,
    /// The preferred replica's broker is being drained.
    Draining,
    /// The preferred replica is catching up.
    NotInIsr,
    /// The quorum refused the change (a stale partition epoch, no quorum, ...).
    Refused(ProposeError),
}

#[derive(Debug)]
pub struct Election {
    pub topic: String,
    pub partition: u32,
    pub preferred: NodeId,
    pub outcome: Outcome,
}

/// Elects the preferred replica of every partition `chosen(topic, partition)` accepts, in
/// topic and partition order.
pub async fn elect_preferred(cluster: &ClusterNode, chosen: impl Fn(&str, u32) -> bool) -> Vec<Election> {
    let image = cluster.image();
    let mut results = Vec::new();
    for t in image.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            let partition = i as u32;
            if !chosen(&t.name, partition) {
                continue;
            }
            let Some(&preferred) = p.replicas.first() else { continue };
            let outcome = if p.leader == preferred as i64 {
                Outcome::AlreadyLeader
            } else if !image.is_live(preferred) {
                Outcome::Fenced
            } else if image.brokers.get(&preferred).is_some_and(|b| b.draining) {
                Outcome::Draining
            } else if !p.isr.contains(&preferred) {
                Outcome::NotInIsr
            } else {
                let cmd = MetadataCommand::ChangePartition {
                    topic: t.name.clone(),
                    partition,
                    partition_epoch: p.partition_epoch,
                    leader: Some(preferred as i64),
                    isr: None,
                };
                match cluster.propose(cmd).await {
                    Ok(()) => Outcome::Elected,
                    Err(e) => Outcome::Refused(e),
                }
            };
            results.push(Election { topic: t.name.clone(), partition, preferred, outcome });
        }
    }
    results
}
