//! Partitions on this broker: the local replicas the metadata assigns here. Leader and
//! follower replication (ISR, high watermark, acks) will live here too.

pub mod replica_manager;

pub use replica_manager::ReplicaManager;
