//! DescribeLogDirs (key 35), versions 0–4: this broker's data directory (one per broker), with
//! the size on disk of each partition replica it holds and its offset lag, and (v4) the file
//! system's total and usable bytes. `kafka-log-dirs`, Cruise Control and cluster UIs read disk
//! use this way. As Kafka: a null topic list means every partition; partitions asked for that
//! are not held here are left out; the offset lag is how far the replica's log end is behind
//! its high watermark (0 for a leader), -1 while the replica is not set up yet.

use std::collections::{BTreeMap, HashMap, HashSet};

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use super::str_bytes;
use crate::kafka::context::KafkaContext;
use crate::log::disk_space;

pub fn handle(ctx: &KafkaContext, req: DescribeLogDirsRequest, version: i16) -> DescribeLogDirsResponse {
    let wanted: Option<HashMap<&str, HashSet<i32>>> = req
        .topics
        .as_ref()
        .map(|topics| topics.iter().map(|t| (t.topic.0.as_str(), t.partitions.iter().copied().collect())).collect());
    let mut by_topic: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for tp in ctx.logs.partitions() {
        if wanted.as_ref().is_some_and(|w| !w.get(tp.topic.as_str()).is_some_and(|ps| ps.contains(&tp.partition))) {
            continue;
        }
        let Some(log) = ctx.logs.get(&tp) else { continue };
        let (size, log_end) = {
            let log = log.lock().expect("log lock");
            if log.is_deleted() {
                continue;
            }
            (log.size_bytes(), log.log_end_offset())
        };
        let mut p = DescribeLogDirsPartition::default();
        p.partition_index = tp.partition;
        p.partition_size = size as i64;
        p.offset_lag = ctx.replication.replica(&tp).map_or(-1, |r| (r.high_watermark() - log_end).max(0));
        p.is_future_key = false;
        by_topic.entry(tp.topic.clone()).or_default().push(p);
    }

    let dir = ctx.logs.data_dir();
    let mut result = DescribeLogDirsResult::default();
    result.log_dir = str_bytes(&std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()).to_string_lossy());
    result.topics = by_topic
        .into_iter()
        .map(|(name, partitions)| {
            let mut t = DescribeLogDirsTopic::default();
            t.name = TopicName(str_bytes(&name));
            t.partitions = partitions;
            t
        })
        .collect();
    if version >= 4 {
        let space = disk_space::of(dir);
        result.total_bytes = space.map_or(-1, |s| s.total_bytes as i64);
        result.usable_bytes = space.map_or(-1, |s| s.usable_bytes as i64);
    }
    let mut resp = DescribeLogDirsResponse::default();
    resp.results = vec![result];
    resp
}
