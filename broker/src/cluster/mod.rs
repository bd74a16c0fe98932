//! Cluster metadata: one replicated state machine (openraft + RocksDB) that every change
//! to what exists in Weir goes through, and the broker membership built on it.

pub mod amqp_image;
pub mod assignment;
pub mod drain;
pub mod election;
pub mod image;
pub mod network;
pub mod node;
pub mod reassignment;
pub mod store;
pub mod throttle_configs;
pub mod types;

pub use image::MetadataImage;
pub use node::{ClusterConfig, ClusterNode, ProposeError};
pub use types::{MetadataCommand, MetadataError, NodeId, TypeConfig};
