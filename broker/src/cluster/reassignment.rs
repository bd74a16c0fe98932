//! Proposing a partition reassignment (KIP-455) toward a given target: shared by the admin API
//! (`POST /api/v1/partitions/reassign`) and the Kafka AlterPartitionReassignments handler. What
//! a reassignment does once committed is the state machine's (`image.rs`).

use super::image::MetadataImage;
use super::node::{ClusterNode, ProposeError};
use super::types::{MetadataCommand, MetadataError, NodeId};

/// How often a proposal refused for a stale partition epoch (the leader changed the ISR
/// meanwhile) is made again from the newer image.
pub const STALE_RETRIES: usize = 5;

/// The command that moves `topic`-`partition` to `target` (`None`: cancel the running
/// reassignment), against the partition epoch `image` holds.
pub fn reassign_cmd(
    image: &MetadataImage,
    topic: &str,
    partition: u32,
    target: Option<Vec<NodeId>>,
) -> MetadataCommand {
    MetadataCommand::ReassignPartition {
        topic: topic.to_string(),
        partition,
        partition_epoch: image.partition(topic, partition).map(|p| p.partition_epoch).unwrap_or(-1),
        target,
    }
}

/// Propose a reassignment of one partition toward a caller-given target. The target does not
/// depend on the partition's state, so a stale partition epoch is retried with the new one.
pub async fn propose_reassignment(
    cluster: &ClusterNode,
    topic: &str,
    partition: u32,
    target: Option<Vec<NodeId>>,
) -> Result<(), ProposeError> {
    let mut last = None;
    for _ in 0..STALE_RETRIES {
        let cmd = reassign_cmd(&cluster.image(), topic, partition, target.clone());
        match cluster.propose(cmd).await {
            Err(ProposeError::Metadata(e @ MetadataError::StalePartitionEpoch { .. })) => last = Some(e),
            other => return other,
        }
    }
    Err(ProposeError::Metadata(last.expect("at least one attempt")))
}
