//! Prometheus metrics of partition replication. One instance per broker.

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct ReplicationMetrics {
    pub under_replicated: IntGauge,
    pub under_min_isr: IntGauge,
    pub isr_shrinks: IntCounter,
    pub isr_expands: IntCounter,
    pub purgatory_size: IntGauge,
    /// Sum over followed partitions of (leader HW - local log end), in messages (offsets).
    pub fetcher_lag_messages: IntGauge,
    /// Max over followed partitions of the time since a fetch response last showed the
    /// partition caught up with its leader's HW.
    pub fetcher_lag_seconds: Gauge,
    pub follower_truncations: IntCounter,
    /// Bytes served to replicas a reassignment is adding while a throttle is set, and the
    /// times their fetches found the budget spent.
    pub throttled_bytes: IntCounter,
    pub throttled_fetches: IntCounter,
    /// Bytes moved under Kafka's throttle configs, by side (`leader`: served to out-of-sync
    /// followers; `follower`: fetched while not caught up).
    pub quota_throttled_bytes: IntCounterVec,
    /// KIP-392: consumer fetches this leader sent to a replica in the consumer's rack, and
    /// bytes this broker served to consumers as a follower.
    pub preferred_read_replica: IntCounter,
    pub follower_consumer_bytes: IntCounter,
    /// Record bytes appended here as a follower, and served here to followers (Kafka's
    /// ReplicationBytesIn/Out).
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
}

impl ReplicationMetrics {
    pub fn unregistered() -> Self {
        let gauge = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help)).expect("static metric");
        let counter = |name: &str, help: &str| IntCounter::with_opts(Opts::new(name, help)).expect("static metric");
        Self {
            under_replicated: gauge(
                "weir_under_replicated_partitions",
                "Partitions led here whose ISR is smaller than their replica set",
            ),
            under_min_isr: gauge(
                "weir_under_min_isr_partitions",
                "Partitions led here whose ISR is smaller than min.insync.replicas",
            ),
            isr_shrinks: counter("weir_isr_shrinks_total", "Followers removed from an ISR by this leader"),
            isr_expands: counter("weir_isr_expands_total", "Followers added back to an ISR by this leader"),
            purgatory_size: gauge("weir_produce_purgatory_size", "acks=all produce partitions waiting for the ISR"),
            fetcher_lag_messages: gauge(
                "weir_replica_fetcher_lag_messages",
                "Offsets this broker's followed partitions are behind their leaders' high watermarks",
            ),
            fetcher_lag_seconds: Gauge::with_opts(Opts::new(
                "weir_replica_fetcher_lag_seconds",
                "Longest time one of this broker's followed partitions has not been caught up with its leader's \
                 high watermark (measured at fetch responses; up to one replica.fetch.wait.max.ms when idle)",
            ))
            .expect("static metric"),
            follower_truncations: counter(
                "weir_follower_truncations_total",
                "Times a follower truncated its log to its leader's (divergent suffix after a leader change)",
            ),
            throttled_bytes: counter(
                "weir_reassignment_throttled_bytes_total",
                "Bytes this leader served, within the reassignment throttle, to replicas being added",
            ),
            throttled_fetches: counter(
                "weir_reassignment_throttled_fetches_total",
                "Looks at a partition, by a fetch of a replica being added, that found the reassignment throttle's \
                 budget spent (a long-polling fetch may look several times)",
            ),
            quota_throttled_bytes: IntCounterVec::new(
                Opts::new(
                    "weir_replication_quota_throttled_bytes_total",
                    "Bytes replicated within Kafka's throttle configs (leader./follower.replication.throttled.rate), \
                     by the side that counted them",
                ),
                &["side"],
            )
            .expect("static metric"),
            preferred_read_replica: counter(
                "weir_fetch_preferred_read_replica_total",
                "Consumer fetch partitions this leader answered with a preferred read replica in the consumer's rack",
            ),
            follower_consumer_bytes: counter(
                "weir_follower_consumer_fetch_bytes_total",
                "Record bytes this broker served to consumers from partitions it follows (KIP-392)",
            ),
            bytes_in: counter("weir_replication_bytes_in_total", "Record bytes appended here as a follower"),
            bytes_out: counter("weir_replication_bytes_out_total", "Record bytes served here to followers"),
        }
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.under_replicated.clone()))?;
        registry.register(Box::new(self.under_min_isr.clone()))?;
        registry.register(Box::new(self.isr_shrinks.clone()))?;
        registry.register(Box::new(self.isr_expands.clone()))?;
        registry.register(Box::new(self.purgatory_size.clone()))?;
        registry.register(Box::new(self.fetcher_lag_messages.clone()))?;
        registry.register(Box::new(self.fetcher_lag_seconds.clone()))?;
        registry.register(Box::new(self.follower_truncations.clone()))?;
        registry.register(Box::new(self.throttled_bytes.clone()))?;
        registry.register(Box::new(self.throttled_fetches.clone()))?;
        registry.register(Box::new(self.quota_throttled_bytes.clone()))?;
        registry.register(Box::new(self.preferred_read_replica.clone()))?;
        registry.register(Box::new(self.follower_consumer_bytes.clone()))?;
        registry.register(Box::new(self.bytes_in.clone()))?;
        registry.register(Box::new(self.bytes_out.clone()))?;
        Ok(())
    }
}
