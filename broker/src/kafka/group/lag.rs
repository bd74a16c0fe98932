//! Consumer group lag on `/metrics`: for each group this broker coordinates, how far its
//! committed offsets trail the high watermarks of their partitions, summed over the partitions
//! and at most (the shape of Redpanda's `consumer_group_lag_sum`/`_max`; kafka-exporter and
//! Burrow compute the same from OffsetFetch and ListOffsets). Every group is exported by its
//! coordinator alone, so a sum over brokers counts each group once.
//!
//! Worked out every `interval`, not at the scrape: the high watermark of a partition led here
//! is read locally, the others are asked of their leaders with ListOffsets, one request per
//! leader. Partitions whose end is unknown this round (a leader that did not answer, a deleted
//! topic) are left out of that round's figures.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, ListOffsetsRequest, ListOffsetsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};

use super::GroupCoordinator;
use crate::cluster::NodeId;
use crate::kafka::handlers::list_offsets::LATEST;
use crate::log::TopicPartition;
use crate::partition::peer::PeerConnection;
use crate::partition::replication::Role;

/// ListOffsets v2: the first with the isolation level; answered below the high watermark.
const LIST_OFFSETS_VERSION: i16 = 2;

/// One group's lag in records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLag {
    pub group: String,
    pub sum: i64,
    pub max: i64,
}

/// A group and its committed offsets: (group, [(topic, partition, offset)]).
pub type GroupOffsets = (String, Vec<(String, i32, i64)>);

/// The figures of the last round, read at each scrape.
#[derive(Default)]
pub struct LagSnapshot(Mutex<Vec<GroupLag>>);

/// Each group's lag from its committed offsets and the partitions' ends; partitions without a
/// known end are left out, and so is a group none of whose partitions has one.
pub fn group_lags(committed: &[GroupOffsets], ends: &HashMap<(String, i32), i64>) -> Vec<GroupLag> {
    let mut out = Vec::new();
    for (group, offsets) in committed {
        let lags: Vec<i64> = offsets
            .iter()
            .filter_map(|(topic, partition, offset)| {
                ends.get(&(topic.clone(), *partition)).map(|end| (end - offset).max(0))
            })
            .collect();
        if let Some(max) = lags.iter().max() {
            out.push(GroupLag { group: group.clone(), sum: lags.iter().sum(), max: *max });
        }
    }
    out.sort_by(|a, b| a.group.cmp(&b.group));
    out
}

/// Recompute the snapshot every `interval` while the coordinator lives.
pub async fn run(coordinator: Weak<GroupCoordinator>, snapshot: Arc<LagSnapshot>, interval: std::time::Duration) {
    let mut connections: HashMap<NodeId, PeerConnection> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let Some(c) = coordinator.upgrade() else { return };
        let committed = c.committed_here();
        let wanted: HashSet<(String, i32)> =
            committed.iter().flat_map(|(_, o)| o.iter().map(|(t, p, _)| (t.clone(), *p))).collect();
        let ends = if wanted.is_empty() { HashMap::new() } else { ends_of(&c, wanted, &mut connections).await };
        *snapshot.0.lock().expect("lag snapshot lock") = group_lags(&committed, &ends);
    }
}

/// The high watermark of each wanted partition that this round can learn.
async fn ends_of(
    c: &GroupCoordinator,
    wanted: HashSet<(String, i32)>,
    connections: &mut HashMap<NodeId, PeerConnection>,
) -> HashMap<(String, i32), i64> {
    let image = c.cluster.image();
    let mut ends = HashMap::new();
    let mut by_leader: BTreeMap<NodeId, Vec<(String, i32)>> = BTreeMap::new();
    for (topic, partition) in wanted {
        let Some(part) = image.partition(&topic, partition as u32) else { continue };
        // Only a leader's high watermark is exact: a follower's trails it by its fetch
        // delay, and one out of the ISR by as far as it is behind.
        let local = c
            .replication
            .replica(&TopicPartition::new(&topic, partition))
            .filter(|r| matches!(r.role(), Role::Leader { .. }));
        if let Some(replica) = local {
            ends.insert((topic, partition), replica.high_watermark());
        } else if part.leader >= 0 {
            by_leader.entry(part.leader as NodeId).or_default().push((topic, partition));
        }
    }
    for (leader, partitions) in by_leader {
        let conn = match connections.entry(leader) {
            Entry::Occupied(open) => open.into_mut(),
            Entry::Vacant(slot) => {
                let client_id = format!("weir-consumer-lag-{}", c.node_id);
                match PeerConnection::open(&c.cluster, leader, client_id).await {
                    Ok(conn) => slot.insert(conn),
                    Err(e) => {
                        tracing::debug!(leader, error = %e, "consumer lag: cannot reach a partition leader");
                        continue;
                    }
                }
            }
        };
        let answer: Result<ListOffsetsResponse, _> =
            conn.call(ApiKey::ListOffsets, LIST_OFFSETS_VERSION, &latest_offsets_request(&partitions)).await;
        match answer {
            Ok(resp) => {
                for t in resp.topics {
                    for p in t.partitions.into_iter().filter(|p| p.error_code == 0 && p.offset >= 0) {
                        ends.insert((t.name.0.to_string(), p.partition_index), p.offset);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(leader, error = %e, "consumer lag: ListOffsets failed");
                connections.remove(&leader);
            }
        }
    }
    ends
}

/// A consumer's ListOffsets for the latest offset (the high watermark) of `partitions`.
fn latest_offsets_request(partitions: &[(String, i32)]) -> ListOffsetsRequest {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        by_topic.entry(topic).or_default().push(*partition);
    }
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.isolation_level = 0;
    req.topics = by_topic
        .into_iter()
        .map(|(topic, indexes)| {
            let mut t = ListOffsetsTopic::default();
            t.name = TopicName(StrBytes::from_string(topic.to_string()));
            t.partitions = indexes
                .into_iter()
                .map(|index| {
                    let mut p = ListOffsetsPartition::default();
                    p.partition_index = index;
                    p.timestamp = LATEST;
                    p
                })
                .collect();
            t
        })
        .collect();
    req
}

/// `weir_kafka_consumer_group_lag_sum{group}` and `_max{group}` from the last round; a group
/// gone since leaves at the next scrape.
pub struct LagCollector {
    snapshot: Arc<LagSnapshot>,
    sum: IntGaugeVec,
    max: IntGaugeVec,
    descs: Vec<Desc>,
}

impl LagCollector {
    pub fn new(snapshot: Arc<LagSnapshot>) -> Self {
        let gauge =
            |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["group"]).expect("static metric");
        let sum = gauge(
            "weir_kafka_consumer_group_lag_sum",
            "Records between a group's committed offsets and the high watermarks, summed over its partitions \
             (groups coordinated by this broker)",
        );
        let max = gauge(
            "weir_kafka_consumer_group_lag_max",
            "The largest lag of a group's partitions, in records (groups coordinated by this broker)",
        );
        let descs = sum.desc().into_iter().chain(max.desc()).cloned().collect();
        Self { snapshot, sum, max, descs }
    }
}

impl Collector for LagCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.sum.reset();
        self.max.reset();
        for g in self.snapshot.0.lock().expect("lag snapshot lock").iter() {
            self.sum.with_label_values(&[&g.group]).set(g.sum);
            self.max.with_label_values(&[&g.group]).set(g.max);
        }
        self.sum.collect().into_iter().chain(self.max.collect()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_summed_and_maximised_over_partitions_with_a_known_end() {
        let committed = vec![
            ("g1".to_string(), vec![("t".to_string(), 0, 10), ("t".to_string(), 1, 50), ("u".to_string(), 0, 3)]),
            ("g2".to_string(), vec![("gone".to_string(), 0, 5)]),
            // Committed past the end (an end read before the commit's records were): no lag.
            ("g3".to_string(), vec![("t".to_string(), 0, 120)]),
        ];
        let ends: HashMap<(String, i32), i64> =
            [(("t".to_string(), 0), 100), (("t".to_string(), 1), 50)].into_iter().collect();
        assert_eq!(
            group_lags(&committed, &ends),
            vec![GroupLag { group: "g1".into(), sum: 90, max: 90 }, GroupLag { group: "g3".into(), sum: 0, max: 0 },]
        );
    }

    #[test]
    fn the_collector_serves_the_last_round_only() {
        let snapshot = Arc::new(LagSnapshot::default());
        let collector = LagCollector::new(snapshot.clone());
        *snapshot.0.lock().unwrap() = vec![GroupLag { group: "a".into(), sum: 7, max: 4 }];
        let families = collector.collect();
        assert_eq!(families.len(), 2);
        assert_eq!(families[0].get_metric()[0].get_gauge().get_value(), 7.0);
        assert_eq!(families[1].get_metric()[0].get_gauge().get_value(), 4.0);
        *snapshot.0.lock().unwrap() = Vec::new();
        assert!(collector.collect().iter().all(|f| f.get_metric().is_empty()));
    }
}
