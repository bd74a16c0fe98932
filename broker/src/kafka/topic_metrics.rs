//! Client traffic per topic, as Kafka's `BrokerTopicMetrics` with its `topic` tag: bytes and
//! records in from producers, bytes out to consumers, partitions of a produce or fetch
//! answered with an error. Counted by the broker that serves the request (the leader, or the
//! replica a consumer fetches from); replication traffic is not counted here. A topic's series
//! appear with its first request here and are dropped at the first scrape after the topic is
//! deleted, so the series follow the topics, not every name a client ever asked for.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, Opts};

/// One topic's counters.
pub struct TopicCounters {
    pub bytes_in: IntCounter,
    pub messages_in: IntCounter,
    pub bytes_out: IntCounter,
    pub failed_produce: IntCounter,
    pub failed_fetch: IntCounter,
}

pub struct TopicMetrics {
    bytes_in: IntCounterVec,
    messages_in: IntCounterVec,
    bytes_out: IntCounterVec,
    failed_produce: IntCounterVec,
    failed_fetch: IntCounterVec,
    /// Each topic's counters, looked up once per topic of a request rather than hashing the
    /// label for every counter.
    by_topic: RwLock<HashMap<String, Arc<TopicCounters>>>,
}

impl TopicMetrics {
    pub fn new() -> Self {
        let vec =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["topic"]).expect("static metric");
        Self {
            bytes_in: vec("weir_kafka_topic_bytes_in_total", "Record bytes appended from producers, by topic"),
            messages_in: vec("weir_kafka_topic_messages_in_total", "Records appended from producers, by topic"),
            bytes_out: vec(
                "weir_kafka_topic_bytes_out_total",
                "Record bytes sent to consumers, by topic (follower fetches not included)",
            ),
            failed_produce: vec(
                "weir_kafka_topic_failed_produce_total",
                "Partitions of produce requests answered with an error, by topic",
            ),
            failed_fetch: vec(
                "weir_kafka_topic_failed_fetch_total",
                "Partitions of consumer fetch requests answered with an error, by topic",
            ),
            by_topic: RwLock::new(HashMap::new()),
        }
    }

    /// The counters of `topic`, created at its first use. Callers pass only topics that exist
    /// in the metadata, so a client cannot add series by naming topics.
    pub fn topic(&self, topic: &str) -> Arc<TopicCounters> {
        if let Some(c) = self.by_topic.read().expect("topic metrics lock").get(topic) {
            return c.clone();
        }
        let mut by_topic = self.by_topic.write().expect("topic metrics lock");
        by_topic
            .entry(topic.to_string())
            .or_insert_with(|| {
                let labels = [topic];
                Arc::new(TopicCounters {
                    bytes_in: self.bytes_in.with_label_values(&labels),
                    messages_in: self.messages_in.with_label_values(&labels),
                    bytes_out: self.bytes_out.with_label_values(&labels),
                    failed_produce: self.failed_produce.with_label_values(&labels),
                    failed_fetch: self.failed_fetch.with_label_values(&labels),
                })
            })
            .clone()
    }

    /// Drop the series of every topic `exists` says is gone.
    pub fn retain(&self, exists: impl Fn(&str) -> bool) {
        let mut by_topic = self.by_topic.write().expect("topic metrics lock");
        by_topic.retain(|topic, _| {
            if exists(topic) {
                return true;
            }
            for vec in self.vecs() {
                let _ = vec.remove_label_values(&[topic]);
            }
            false
        });
    }

    fn vecs(&self) -> [&IntCounterVec; 5] {
        [&self.bytes_in, &self.messages_in, &self.bytes_out, &self.failed_produce, &self.failed_fetch]
    }
}

impl Default for TopicMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `TopicMetrics` at a scrape, first dropping the topics deleted since the last one.
pub struct TopicCollector<F> {
    metrics: Arc<TopicMetrics>,
    exists: F,
    descs: Vec<Desc>,
}

impl<F: Fn(&str) -> bool + Send + Sync> TopicCollector<F> {
    pub fn new(metrics: Arc<TopicMetrics>, exists: F) -> Self {
        let descs = metrics.vecs().iter().flat_map(|v| v.desc().into_iter().cloned()).collect();
        Self { metrics, exists, descs }
    }
}

impl<F: Fn(&str) -> bool + Send + Sync> Collector for TopicCollector<F> {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.metrics.retain(&self.exists);
        self.metrics.vecs().iter().flat_map(|v| v.collect()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Registry;
    use std::collections::HashSet;
    use std::sync::Mutex;

    fn series(registry: &Registry, name: &str) -> Vec<(String, f64)> {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .map(|m| (m.get_label()[0].value().to_string(), m.get_counter().get_value()))
            .collect()
    }

    #[test]
    fn counts_by_topic_and_drops_a_deleted_topics_series_at_the_next_scrape() {
        let metrics = Arc::new(TopicMetrics::new());
        let topics = Arc::new(Mutex::new(HashSet::from(["a".to_string(), "b".to_string()])));
        let registry = Registry::new();
        let known = topics.clone();
        registry
            .register(Box::new(TopicCollector::new(metrics.clone(), move |t: &str| known.lock().unwrap().contains(t))))
            .unwrap();

        metrics.topic("a").bytes_in.inc_by(100);
        metrics.topic("a").bytes_in.inc_by(20);
        metrics.topic("b").messages_in.inc_by(3);
        metrics.topic("b").failed_fetch.inc();
        let mut bytes_in = series(&registry, "weir_kafka_topic_bytes_in_total");
        bytes_in.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(bytes_in, vec![("a".to_string(), 120.0), ("b".to_string(), 0.0)]);
        assert_eq!(series(&registry, "weir_kafka_topic_failed_fetch_total").len(), 2);

        topics.lock().unwrap().remove("b");
        for name in [
            "weir_kafka_topic_bytes_in_total",
            "weir_kafka_topic_messages_in_total",
            "weir_kafka_topic_bytes_out_total",
            "weir_kafka_topic_failed_produce_total",
            "weir_kafka_topic_failed_fetch_total",
        ] {
            let left: Vec<String> = series(&registry, name).into_iter().map(|(t, _)| t).collect();
            assert_eq!(left, vec!["a".to_string()], "{name}");
        }
        // A topic created again under the same name counts from zero.
        topics.lock().unwrap().insert("b".to_string());
        metrics.topic("b").messages_in.inc();
        let b: Vec<f64> = series(&registry, "weir_kafka_topic_messages_in_total")
            .into_iter()
            .filter(|(t, _)| t == "b")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(b, vec![1.0]);
    }
}
