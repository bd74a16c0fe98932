//! Producer ids for idempotent producers: this broker takes blocks of ids from the metadata
//! quorum (so ids are unique across brokers and restarts) and hands them out one by one.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::cluster::{ClusterNode, MetadataCommand, NodeId, ProposeError};

const BLOCK: u32 = 1000;

pub struct ProducerIdManager {
    node_id: NodeId,
    cluster: Arc<ClusterNode>,
    /// `[next, end)` of the current block.
    block: Mutex<(i64, i64)>,
}

impl ProducerIdManager {
    pub fn new(node_id: NodeId, cluster: Arc<ClusterNode>) -> Self {
        Self { node_id, cluster, block: Mutex::new((0, 0)) }
    }

    pub async fn next_id(&self) -> Result<i64, ProposeError> {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            self.cluster
                .propose(MetadataCommand::AllocateProducerIds { broker_id: self.node_id, count: BLOCK })
                .await?;
            // propose returns once the command is applied here, so the image holds our block.
            let (start, end) = self
                .cluster
                .image()
                .producer_id_blocks
                .get(&self.node_id)
                .copied()
                .ok_or_else(|| ProposeError::Unavailable("producer id block missing after allocation".into()))?;
            *block = (start, end);
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}
