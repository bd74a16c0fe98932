//! Prometheus metrics of AMQP: messages published and delivered (counters kept on the hot
//! path), and per queue the messages ready and unacknowledged and the consumers, plus open
//! connections, read from the broker core when `/metrics` is scraped (as RabbitMQ's
//! `rabbitmq_queue_messages_ready` and friends are), so the hot path keeps no per-queue gauges.

use std::sync::{Arc, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

use super::AmqpCore;

#[derive(Clone)]
pub struct AmqpMetrics {
    /// Messages accepted from publishers (basic.publish), routed or not.
    pub published: IntCounter,
    /// Messages handed to consumers (basic.deliver) and to basic.get, redeliveries included.
    pub delivered: IntCounter,
}

impl Default for AmqpMetrics {
    fn default() -> Self {
        Self::unregistered()
    }
}

impl std::fmt::Debug for AmqpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpMetrics").finish_non_exhaustive()
    }
}

impl AmqpMetrics {
    pub fn unregistered() -> Self {
        let counter = |name: &str, help: &str| IntCounter::with_opts(Opts::new(name, help)).expect("static metric");
        Self {
            published: counter("weir_amqp_published_total", "Messages accepted from AMQP publishers (basic.publish)"),
            delivered: counter(
                "weir_amqp_delivered_total",
                "Messages delivered to AMQP consumers or returned by basic.get, redeliveries included",
            ),
        }
    }
}

/// Reads the queues at scrape time.
struct QueueCollector {
    core: Weak<AmqpCore>,
    ready: IntGaugeVec,
    unacked: IntGaugeVec,
    consumers: IntGaugeVec,
    connections: IntGauge,
    descs: Vec<Desc>,
}

impl QueueCollector {
    fn new(core: &Arc<AmqpCore>) -> Self {
        let vec = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["vhost", "queue"]).expect("static metric")
        };
        let ready = vec("weir_amqp_queue_messages_ready", "Messages ready for delivery in an AMQP queue");
        let unacked =
            vec("weir_amqp_queue_messages_unacked", "Messages delivered from an AMQP queue and not yet acknowledged");
        let consumers = vec("weir_amqp_queue_consumers", "Consumers of an AMQP queue");
        let connections =
            IntGauge::with_opts(Opts::new("weir_amqp_connections", "Open AMQP connections")).expect("static metric");
        let descs = [ready.desc(), unacked.desc(), consumers.desc(), connections.desc()]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        Self { core: Arc::downgrade(core), ready, unacked, consumers, connections, descs }
    }
}

impl Collector for QueueCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Deleted queues must not linger as series: start from empty vectors every scrape.
        self.ready.reset();
        self.unacked.reset();
        self.consumers.reset();
        let Some(core) = self.core.upgrade() else { return Vec::new() };
        let (connections, queues) = core.metrics_view();
        self.connections.set(connections as i64);
        for q in queues {
            let labels = [q.vhost.as_str(), q.name.as_str()];
            self.ready.with_label_values(&labels).set(q.ready as i64);
            self.unacked.with_label_values(&labels).set(q.unacked as i64);
            self.consumers.with_label_values(&labels).set(q.consumers as i64);
        }
        let mut out = Vec::new();
        out.extend(self.ready.collect());
        out.extend(self.unacked.collect());
        out.extend(self.consumers.collect());
        out.extend(self.connections.collect());
        out
    }
}

/// One queue's counts as the scrape sees them.
pub struct QueueView {
    pub vhost: String,
    pub name: String,
    pub ready: u64,
    pub unacked: u64,
    pub consumers: u64,
}

pub fn register(core: &Arc<AmqpCore>, registry: &Registry) -> prometheus::Result<()> {
    registry.register(Box::new(core.metrics.published.clone()))?;
    registry.register(Box::new(core.metrics.delivered.clone()))?;
    registry.register(Box::new(QueueCollector::new(core)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::AmqpConfig;

    #[test]
    fn queues_appear_and_disappear_with_the_core() {
        let core = AmqpCore::new(AmqpConfig { data_dir: None, ..Default::default() });
        let registry = Registry::new();
        register(&core, &registry).unwrap();
        let text = |r: &Registry| {
            let mut buf = String::new();
            prometheus::TextEncoder::new().encode_utf8(&r.gather(), &mut buf).unwrap();
            buf
        };
        let scraped = text(&registry);
        assert!(scraped.contains("weir_amqp_connections 0"), "{scraped}");
        assert!(scraped.contains("weir_amqp_published_total 0"), "{scraped}");
        drop(core);
        // A core that is gone leaves no queue series (and no panic).
        assert!(!text(&registry).contains("weir_amqp_queue_messages_ready{"));
    }
}
