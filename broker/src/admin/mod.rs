//! The HTTP admin surface: health and readiness probes, Prometheus metrics, and the JSON
//! admin API for the operator and people (`/api/v1`, see `docs/admin-api.md`).

pub mod amqp;
pub mod api;
pub mod http;
pub mod replication;

pub use http::{register_process_metrics, router, serve, AdminState};
