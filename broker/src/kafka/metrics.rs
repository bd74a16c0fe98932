//! Prometheus metrics of the Kafka listener: requests by API with their latency, client
//! traffic in and out, open connections. Replication traffic is counted apart, in
//! `partition/metrics.rs`, as Kafka counts ReplicationBytesIn/Out apart from BytesIn/Out.

use std::sync::Arc;

use kafka_protocol::messages::ApiKey;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntGauge, Opts, Registry};

use super::handlers::SUPPORTED;
use super::topic_metrics::{TopicCollector, TopicMetrics};

/// Request latency buckets (seconds): sub-millisecond answers up to long-polled fetches and
/// acks=all produces waiting on a slow ISR.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone)]
pub struct KafkaMetrics {
    requests: HistogramVec,
    /// One handle per served API key, so the hot path does no label lookup.
    by_key: Vec<Option<Histogram>>,
    /// Record bytes and records appended from producers (not replication).
    pub bytes_in: IntCounter,
    pub messages_in: IntCounter,
    /// Record bytes served to consumers (not to followers).
    pub bytes_out: IntCounter,
    pub connections: IntGauge,
    /// The same traffic by topic, and failed partitions of produce and fetch requests.
    pub topics: Arc<TopicMetrics>,
}

impl KafkaMetrics {
    pub fn unregistered() -> Self {
        let requests = HistogramVec::new(
            HistogramOpts::new(
                "weir_kafka_request_duration_seconds",
                "Kafka requests by API: time from the request read to its response written (a fetch's long poll \
                 and an acks=all produce's wait for the ISR included)",
            )
            .buckets(BUCKETS.to_vec()),
            &["api"],
        )
        .expect("static metric");
        let mut by_key = Vec::new();
        for (key, _, _) in SUPPORTED.iter().chain([(ApiKey::ApiVersions, 0, 0)].iter()) {
            let index = *key as i16 as usize;
            if by_key.len() <= index {
                by_key.resize(index + 1, None);
            }
            by_key[index] = Some(requests.with_label_values(&[&format!("{key:?}")]));
        }
        let counter = |name: &str, help: &str| IntCounter::with_opts(Opts::new(name, help)).expect("static metric");
        Self {
            requests,
            by_key,
            bytes_in: counter("weir_kafka_bytes_in_total", "Record bytes appended from producers (leader appends)"),
            messages_in: counter("weir_kafka_messages_in_total", "Records appended from producers (leader appends)"),
            bytes_out: counter(
                "weir_kafka_bytes_out_total",
                "Record bytes sent to consumers (follower fetches not included)",
            ),
            connections: IntGauge::with_opts(Opts::new("weir_kafka_connections", "Open Kafka client connections"))
                .expect("static metric"),
            topics: Arc::new(TopicMetrics::new()),
        }
    }

    /// `topic_exists` tells the per-topic series of deleted topics apart at each scrape.
    pub fn register(
        &self,
        registry: &Registry,
        topic_exists: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> prometheus::Result<()> {
        registry.register(Box::new(TopicCollector::new(self.topics.clone(), topic_exists)))?;
        registry.register(Box::new(self.requests.clone()))?;
        registry.register(Box::new(self.bytes_in.clone()))?;
        registry.register(Box::new(self.messages_in.clone()))?;
        registry.register(Box::new(self.bytes_out.clone()))?;
        registry.register(Box::new(self.connections.clone()))?;
        Ok(())
    }

    /// A request of `key` answered after `seconds`.
    pub fn observe(&self, key: ApiKey, seconds: f64) {
        if let Some(Some(h)) = self.by_key.get(key as i16 as usize) {
            h.observe(seconds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_api_has_a_series_and_others_are_ignored() {
        let m = KafkaMetrics::unregistered();
        m.observe(ApiKey::Produce, 0.002);
        m.observe(ApiKey::ApiVersions, 0.0001);
        m.observe(ApiKey::SaslHandshake, 1.0); // not served: no series
        let produce = m.requests.with_label_values(&["Produce"]);
        assert_eq!(produce.get_sample_count(), 1);
        assert_eq!(m.requests.with_label_values(&["ApiVersions"]).get_sample_count(), 1);
        assert_eq!(m.requests.with_label_values(&["Fetch"]).get_sample_count(), 0);
    }
}
