//! AMQP 0-9-1: frames (decoded and encoded by `amq-protocol`), the connection and channel
//! state machines, and the broker core that routes through `crate::routing` into
//! `crate::queue`. See `docs/amqp.md`.

pub mod alarm;
pub mod auth;
pub mod broker;
pub mod commit;
pub mod connection;
pub mod errors;
pub mod frames;
pub mod json_args;
pub mod metrics;
pub mod outbox;
pub mod server;

pub use broker::{AmqpConfig, AmqpCore};
