//! Weir broker library: the storage core and, as they land, the protocol front ends.

pub mod admin;
pub mod cli;
pub mod cluster;
pub mod kafka;
pub mod log;
pub mod partition;
pub mod server;
