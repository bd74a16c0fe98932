//! The HTTP admin surface: health and readiness probes and Prometheus metrics (the JSON
//! admin API for the operator lands here too).

pub mod http;

pub use http::{register_process_metrics, router, serve, AdminState};
