//! Classic consumer groups: the coordinator's membership state machine (`coordinator.rs`)
//! and committed offsets (`offsets.rs`) and group metadata (`group_record.rs`) kept as
//! records in the compacted `__consumer_offsets` topic, and the lag of the groups coordinated
//! here for `/metrics` (`lag.rs`).

pub mod coordinator;
pub mod group_record;
pub mod lag;
pub mod offsets;

pub use coordinator::{GroupConfig, GroupCoordinator};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// `offsets.topic.num.partitions`.
pub const OFFSETS_TOPIC_PARTITIONS: u32 = 50;

/// The `__consumer_offsets` partition of a group: Java's `String.hashCode` masked positive,
/// modulo the partition count, exactly as Kafka places it.
pub fn partition_for(group: &str) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    (h & 0x7fff_ffff) % OFFSETS_TOPIC_PARTITIONS as i32
}

#[cfg(test)]
mod tests {
    #[test]
    fn partition_matches_java_hash_code() {
        // "my-group".hashCode() == -1906497762 in Java; & 0x7fffffff = 240985886; % 50 == 36.
        assert_eq!(super::partition_for("my-group"), 36);
        assert_eq!(super::partition_for(""), 0);
    }
}
