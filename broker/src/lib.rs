//! Weir broker library: the storage core and, as they land, the protocol front ends.

pub mod admin;
pub mod amqp;
pub mod cli;
pub mod cluster;
pub mod kafka;
pub mod log;
pub mod partition;
pub mod queue;
pub mod routing;
pub mod server;
