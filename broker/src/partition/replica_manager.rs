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
        // Logs replaced in this pass because they recorded an earlier topic's id.
        let mut replaced = std::collections::HashSet::new();
        for t in image.topics.values() {
            let config = log_config_for(t, self.logs.default_config());
            for (i, p) in t.partitions.iter().enumerate() {
                if !p.replicas.contains(&self.node_id) {
                    continue;
                }
                let tp = TopicPartition::new(&t.name, i as i32);
                let (log, was_replaced) = self.logs.get_or_create_for_topic(&tp, &t.topic_id, config.clone())?;
                if was_replaced {
                    replaced.insert(tp.clone());
                }
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
                    // loop above already replaced a log that recorded the old id; one that
                    // recorded none goes here, and is made again, empty.
                    if replaced.contains(&tp) {
                        continue;
                    }
                    let current = image.topics.get(&topic).filter(|t| {
                        t.partitions.get(partition as usize).is_some_and(|p| p.replicas.contains(&self.node_id))
                    });
                    if self.logs.delete(&tp)? {
                        tracing::info!(partition = %tp, "deleted local log: topic deleted or replica moved away");
                    }
                    if let Some(t) = current {
                        let config = log_config_for(t, self.logs.default_config());
                        self.logs.get_or_create_for_topic(&tp, &t.topic_id, config)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::image::PartitionRecord;
    use crate::log::batch::build_batch;
    use crate::log::{now_ms, LogMetrics};

    fn image_with(topic: &str, topic_id: &str) -> MetadataImage {
        let mut img = MetadataImage::default();
        let partition = PartitionRecord {
            replicas: vec![0],
            isr: vec![0],
            leader: 0,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        };
        let record = TopicRecord {
            name: topic.to_string(),
            topic_id: topic_id.to_string(),
            configs: Default::default(),
            partitions: vec![partition],
        };
        img.topics.insert(topic.to_string(), record);
        img
    }

    fn open(dir: &std::path::Path) -> Arc<LogManager> {
        Arc::new(LogManager::open(dir, LogConfig::default(), LogMetrics::unregistered()).unwrap().0)
    }

    fn write_one(logs: &LogManager, tp: &TopicPartition) {
        let log = logs.get(tp).unwrap();
        let mut batch = build_batch(&[(None, Some(&b"old"[..]))], now_ms());
        log.lock().unwrap().append(&mut batch, 0, now_ms()).unwrap();
    }

    /// The topic id in the partition directory's `partition.metadata`.
    fn recorded_topic_id(data_dir: &std::path::Path, tp: &TopicPartition) -> Option<String> {
        crate::log::partition_metadata::read(&data_dir.join(tp.dir_name())).unwrap()
    }

    fn end_offset(logs: &LogManager, tp: &TopicPartition) -> i64 {
        logs.get(tp).unwrap().lock().unwrap().log_end_offset()
    }

    #[test]
    fn at_start_a_log_of_an_earlier_topic_with_the_same_name_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let tp = TopicPartition::new("t", 0);
        {
            let logs = open(dir.path());
            ReplicaManager::new(0, logs.clone()).reconcile(None, &image_with("t", "id-1")).unwrap();
            write_one(&logs, &tp);
            logs.shutdown().unwrap();
        }
        // Restarted with the same topic: the data stays.
        let logs = open(dir.path());
        ReplicaManager::new(0, logs.clone()).reconcile(None, &image_with("t", "id-1")).unwrap();
        assert_eq!(end_offset(&logs, &tp), 1);
        logs.shutdown().unwrap();

        // Restarted when the first image it sees already has the topic recreated (no image
        // with the deletion ever seen here): the old data goes.
        let logs = open(dir.path());
        ReplicaManager::new(0, logs.clone()).reconcile(None, &image_with("t", "id-2")).unwrap();
        assert_eq!(end_offset(&logs, &tp), 0);
        assert_eq!(recorded_topic_id(dir.path(), &tp).as_deref(), Some("id-2"));
        let on_disk = std::fs::read_to_string(dir.path().join("t-0").join("partition.metadata")).unwrap();
        assert_eq!(on_disk, "version: 0\ntopic_id: id-2\n");
    }

    #[test]
    fn a_log_without_partition_metadata_is_adopted_unless_the_image_diff_says_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let tp = TopicPartition::new("t", 0);
        let logs = open(dir.path());
        logs.get_or_create(&tp, LogConfig::default()).unwrap(); // as made before the file existed
        write_one(&logs, &tp);
        let replicas = ReplicaManager::new(0, logs.clone());
        let first = image_with("t", "id-1");
        replicas.reconcile(None, &first).unwrap();
        assert_eq!(end_offset(&logs, &tp), 1, "adopted, data kept");
        assert_eq!(recorded_topic_id(dir.path(), &tp).as_deref(), Some("id-1"));

        // Seen deleted and recreated while running: replaced once, the new log empty.
        write_one(&logs, &tp);
        let recreated = image_with("t", "id-2");
        replicas.reconcile(Some(&first), &recreated).unwrap();
        assert_eq!(end_offset(&logs, &tp), 0);
        write_one(&logs, &tp);
        replicas.reconcile(Some(&recreated), &recreated).unwrap();
        assert_eq!(end_offset(&logs, &tp), 1, "a later pass keeps the new topic's data");
    }
}
