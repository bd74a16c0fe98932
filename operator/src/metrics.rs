//! Operator metrics, served as Prometheus text on `/metrics`.

use std::time::Duration;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    /// Reconciles by kind and result (`ok`, `error`).
    pub reconciles: IntCounterVec,
    /// Failed reconciles by kind and reason (the broker's error code or the Kubernetes error).
    pub errors: IntCounterVec,
    /// Reconcile wall time by kind.
    pub duration: HistogramVec,
    /// 1 while this replica holds the leader Lease (and runs the controllers).
    pub leader: IntGauge,
    /// Steps of the last rebalance plan that are waiting to be executed.
    pub rebalance_pending_steps: IntGauge,
    /// Rebalance steps carried out, by kind (`drain`, `reassign`, ...).
    pub rebalance_steps_executed: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("weir_operator_reconciles_total", "Reconciles by kind and result"),
            &["kind", "result"],
        )
        .unwrap();
        let errors = IntCounterVec::new(
            Opts::new("weir_operator_reconcile_errors_total", "Failed reconciles by kind and reason"),
            &["kind", "reason"],
        )
        .unwrap();
        let duration = HistogramVec::new(
            HistogramOpts::new("weir_operator_reconcile_duration_seconds", "Reconcile duration by kind")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["kind"],
        )
        .unwrap();
        let leader = IntGauge::new("weir_operator_leader", "1 while this replica holds the leader Lease").unwrap();
        let rebalance_pending_steps =
            IntGauge::new("weir_operator_rebalance_pending_steps", "Steps of the last rebalance plan not executed")
                .unwrap();
        let rebalance_steps_executed = IntCounterVec::new(
            Opts::new("weir_operator_rebalance_steps_executed_total", "Rebalance steps carried out, by kind"),
            &["step"],
        )
        .unwrap();
        registry.register(Box::new(reconciles.clone())).unwrap();
        registry.register(Box::new(errors.clone())).unwrap();
        registry.register(Box::new(duration.clone())).unwrap();
        registry.register(Box::new(leader.clone())).unwrap();
        registry.register(Box::new(rebalance_pending_steps.clone())).unwrap();
        registry.register(Box::new(rebalance_steps_executed.clone())).unwrap();
        Metrics { registry, reconciles, errors, duration, leader, rebalance_pending_steps, rebalance_steps_executed }
    }

    pub fn observe(&self, kind: &str, took: Duration, error_reason: Option<&str>) {
        self.duration.with_label_values(&[kind]).observe(took.as_secs_f64());
        match error_reason {
            None => self.reconciles.with_label_values(&[kind, "ok"]).inc(),
            Some(reason) => {
                self.reconciles.with_label_values(&[kind, "error"]).inc();
                self.errors.with_label_values(&[kind, reason]).inc();
            }
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
