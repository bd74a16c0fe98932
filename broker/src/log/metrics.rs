//! Prometheus metrics of the log engine. One instance per broker, registered once.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct LogMetrics {
    pub bytes_appended: IntCounter,
    pub batches_appended: IntCounter,
    pub segments: IntGauge,
    pub partitions: IntGauge,
    pub recovery_seconds: prometheus::Gauge,
    pub recovery_truncated_bytes: IntCounter,
    pub flush_seconds: Histogram,
    pub segments_deleted: IntCounter,
    pub cleaner_bytes_reclaimed: IntCounter,
    pub producer_ids: IntGauge,
}

impl LogMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self::unregistered();
        registry.register(Box::new(m.bytes_appended.clone()))?;
        registry.register(Box::new(m.batches_appended.clone()))?;
        registry.register(Box::new(m.segments.clone()))?;
        registry.register(Box::new(m.partitions.clone()))?;
        registry.register(Box::new(m.recovery_seconds.clone()))?;
        registry.register(Box::new(m.recovery_truncated_bytes.clone()))?;
        registry.register(Box::new(m.flush_seconds.clone()))?;
        registry.register(Box::new(m.segments_deleted.clone()))?;
        registry.register(Box::new(m.cleaner_bytes_reclaimed.clone()))?;
        registry.register(Box::new(m.producer_ids.clone()))?;
        Ok(m)
    }

    /// Metrics not attached to any registry: for tests and tools that do not export them.
    pub fn unregistered() -> Self {
        let flush_buckets = prometheus::exponential_buckets(0.000_05, 2.0, 16).expect("static buckets");
        Self {
            bytes_appended: IntCounter::with_opts(Opts::new(
                "weir_log_appended_bytes_total",
                "Bytes of record batches appended to partition logs",
            ))
            .expect("static opts"),
            batches_appended: IntCounter::with_opts(Opts::new(
                "weir_log_appended_batches_total",
                "Record batches appended to partition logs",
            ))
            .expect("static opts"),
            segments: IntGauge::with_opts(Opts::new("weir_log_segments", "Segments across all partition logs"))
                .expect("static opts"),
            partitions: IntGauge::with_opts(Opts::new("weir_log_partitions", "Partition logs open on this broker"))
                .expect("static opts"),
            recovery_seconds: prometheus::Gauge::with_opts(Opts::new(
                "weir_log_recovery_seconds",
                "Time the last start-up spent loading and recovering logs",
            ))
            .expect("static opts"),
            recovery_truncated_bytes: IntCounter::with_opts(Opts::new(
                "weir_log_recovery_truncated_bytes_total",
                "Bytes cut from segment tails by crash recovery",
            ))
            .expect("static opts"),
            flush_seconds: Histogram::with_opts(
                HistogramOpts::new("weir_log_flush_seconds", "Latency of fsync of a partition log")
                    .buckets(flush_buckets),
            )
            .expect("static opts"),
            segments_deleted: IntCounter::with_opts(Opts::new(
                "weir_log_segments_deleted_total",
                "Segments deleted by retention",
            ))
            .expect("static opts"),
            cleaner_bytes_reclaimed: IntCounter::with_opts(Opts::new(
                "weir_log_cleaner_reclaimed_bytes_total",
                "Bytes removed from compacted logs by the cleaner",
            ))
            .expect("static opts"),
            producer_ids: IntGauge::with_opts(Opts::new(
                "weir_log_producer_ids",
                "Idempotent producer ids held across partition logs (Kafka's ProducerIdCount), as of the last maintenance pass",
            ))
            .expect("static opts"),
        }
    }
}
