//! Keeps the local logs in line with the metadata image: a log for every partition assigned
//! to this broker, with its topic's configs; logs of deleted topics (or replicas moved away)
//! removed. Deletions are driven by differences between two images this broker has seen,
//! never by a log's mere absence from the image, so an image that is still catching up
//! cannot wipe data.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::cluster::image::{MetadataImage, TopicRecord};
use crate::cluster::{ClusterNode, NodeId};
use crate::log::{LogConfig, LogError, LogManager, TopicPartition};

pub struct ReplicaManager {
    node_id: NodeId,
    logs: Arc<LogManager>,
}

/// The log config of a topic: the broker defaults with the topic's log-level overrides.
pub fn log_config_for(topic: &TopicRecord, defaults: &LogConfig) -> LogConfig {
    let log_keys: std::collections::BTreeMap<String, String> = topic
        .configs
        .iter()
        .filter(|(k, _)| crate::log::config::LOG_CONFIG_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // The state machine validated these configs; a failure here means a newer broker wrote
    // a key this one does not know, and the defaults are the safe answer.
    defaults.with_overrides(&log_keys).unwrap_or_else(|e| {
        tracing::warn!(topic = %topic.name, error = %e, "topic config not understood; using defaults");
        defaults.clone()
    })
}

impl ReplicaManager {
    pub fn new(node_id: NodeId, logs: Arc<LogManager>) -> Self {
        Self { node_id, logs }
    }

    fn local_partitions(&self, image: &MetadataImage) -> BTreeSet<(String, String, i32)> {
        let mut out = BTreeSet::new();
        for t in image.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                if p.replicas.contains(&self.node_id) {
                    out.insert((t.name.clone(), t.topic_id.clone(), i as i32));
                }
            }
        }
        out
    }

    /// Apply the difference between `previous` (what this broker saw before, if anything)
    /// and `image`.
    pub fn reconcile(&self, previous: Option<&MetadataImage>, image: &MetadataImage) -> Result<(), LogError> {
        let wanted = self.local_partitions(image);
        for t in image.topics.values() {
            let config = log_config_for(t, self.logs.default_config());
            for (i, p) in t.partitions.iter().enumerate() {
                if !p.replicas.contains(&self.node_id) {
                    continue;
                }
                let tp = TopicPartition::new(&t.name, i as i32);
                let log = self.logs.get_or_create(&tp, config.clone())?;
                let mut log = log.lock().expect("log lock");
                if *log.config() != config {
                    log.set_config(config.clone());
                }
            }
        }
        if let Some(prev) = previous {
            for (topic, topic_id, partition) in self.local_partitions(prev) {
                let still_here = wanted.contains(&(topic.clone(), topic_id.clone(), partition));
                if !still_here {
                    let tp = TopicPartition::new(&topic, partition);
                    // A topic deleted and recreated under the same name has a new id: the
                    // old data goes, the new (empty) log is created again below.
                    if self.logs.delete(&tp)? {
                        tracing::info!(partition = %tp, "deleted local log: topic deleted or replica moved away");
                    }
                    if let Some(t) = image.topics.get(&topic) {
                        if t.partitions.get(partition as usize).is_some_and(|p| p.replicas.contains(&self.node_id)) {
                            self.logs.get_or_create(&tp, log_config_for(t, self.logs.default_config()))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Reconcile at start and after every image change until the cluster node stops.
    pub async fn run(self: Arc<Self>, cluster: Arc<ClusterNode>) {
        let mut rx = cluster.subscribe();
        let mut previous: Option<Arc<MetadataImage>> = None;
        let wanted_at_start = self.local_partitions(&cluster.image());
        for tp in self.logs.partitions() {
            if !wanted_at_start.iter().any(|(t, _, p)| *t == tp.topic && *p == tp.partition) {
                tracing::warn!(partition = %tp, "local log not in the metadata image; kept untouched");
            }
        }
        loop {
            let image = cluster.image();
            let me = self.clone();
            let prev = previous.clone();
            let img = image.clone();
            match tokio::task::spawn_blocking(move || me.reconcile(prev.as_deref(), &img)).await {
                // On failure the old image stays the baseline, so the next pass retries the
                // same differences.
                Ok(Ok(())) => previous = Some(image),
                Ok(Err(e)) => tracing::error!(error = %e, "reconciling local logs with metadata failed"),
                Err(e) => tracing::error!(error = %e, "log reconcile task failed"),
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}
