//! Partitions on this broker: the local replicas the metadata assigns here, and their
//! replication — leader state and high watermark, ISR upkeep, acks=all waits, and the
//! replica fetchers that copy leaders' logs to followers.

pub mod changes;
pub mod fetcher;
pub mod follower_session;
pub mod hw_checkpoint;
pub mod leader;
pub mod metrics;
pub mod peer;
pub mod replica_manager;
pub mod replication;
pub mod throttle;

pub use replica_manager::ReplicaManager;
pub use replication::{Replication, ReplicationConfig};
