//! Kafka's replication throttle configs, the ones `kafka-reassign-partitions --throttle` and
//! Cruise Control set (KIP-73):
//!
//! - dynamic broker configs `leader.replication.throttled.rate` and
//!   `follower.replication.throttled.rate` (bytes per second), per broker or as the cluster
//!   default (the broker resource named "");
//! - topic configs `leader.replication.throttled.replicas` and
//!   `follower.replication.throttled.replicas`: `*` or a list of `partition:broker`.
//!
//! A leader throttles what it serves to a follower that is not in the ISR, for the partitions
//! whose leader list names it; a follower throttles its own fetches of partitions whose
//! follower list names it, while it is not caught up. Both live in the metadata image, so
//! every broker sees the same values. Independent of Weir's own reassignment throttle
//! (`SetReplicationThrottle`), which covers every replica a reassignment adds.

use std::collections::BTreeMap;

use super::types::{MetadataError, NodeId};

pub const LEADER_THROTTLED_RATE: &str = "leader.replication.throttled.rate";
pub const FOLLOWER_THROTTLED_RATE: &str = "follower.replication.throttled.rate";
/// Kafka's throttle for moves between a broker's log directories. Weir has one log directory
/// per broker, so it cannot be set; deleting it is accepted because the Kafka tool clears it
/// together with the two rates.
pub const ALTER_LOG_DIRS_RATE: &str = "replica.alter.log.dirs.io.max.bytes.per.second";
pub const LEADER_THROTTLED_REPLICAS: &str = "leader.replication.throttled.replicas";
pub const FOLLOWER_THROTTLED_REPLICAS: &str = "follower.replication.throttled.replicas";

/// The dynamic broker configs that can be set.
pub const BROKER_RATE_KEYS: &[&str] = &[LEADER_THROTTLED_RATE, FOLLOWER_THROTTLED_RATE];
/// The topic configs, beyond the log's own, that this module owns.
pub const TOPIC_REPLICA_LIST_KEYS: &[&str] = &[LEADER_THROTTLED_REPLICAS, FOLLOWER_THROTTLED_REPLICAS];
/// Kafka's default for both rates: Long.MAX_VALUE, no throttle.
pub const UNTHROTTLED_RATE: &str = "9223372036854775807";

/// The resource name of a broker config: "" (every broker's default) or a broker id.
pub fn validate_broker_resource(resource: &str) -> Result<Option<NodeId>, MetadataError> {
    if resource.is_empty() {
        return Ok(None);
    }
    resource
        .parse::<NodeId>()
        .map(Some)
        .map_err(|_| MetadataError::InvalidConfig(format!("broker resource '{resource}' is not a broker id or ''")))
}

/// Check one change to a broker resource's configs and return the configs it leaves.
pub fn altered_broker_configs(
    current: Option<&BTreeMap<String, String>>,
    set: &BTreeMap<String, String>,
    delete: &[String],
) -> Result<BTreeMap<String, String>, MetadataError> {
    let mut configs = current.cloned().unwrap_or_default();
    for k in delete {
        if !BROKER_RATE_KEYS.contains(&k.as_str()) && k != ALTER_LOG_DIRS_RATE {
            return Err(not_dynamic(k));
        }
        configs.remove(k);
    }
    for (k, v) in set {
        if k == ALTER_LOG_DIRS_RATE {
            return Err(MetadataError::InvalidConfig(format!(
                "{k}: a Weir broker has one log directory, so there are no moves between log directories to throttle"
            )));
        }
        if !BROKER_RATE_KEYS.contains(&k.as_str()) {
            return Err(not_dynamic(k));
        }
        match v.trim().parse::<i64>() {
            Ok(n) if n >= 0 => {
                configs.insert(k.clone(), n.to_string());
            }
            _ => {
                return Err(MetadataError::InvalidConfig(format!(
                    "{k}={v}: must be an integer >= 0 (bytes per second)"
                )))
            }
        }
    }
    Ok(configs)
}

fn not_dynamic(key: &str) -> MetadataError {
    MetadataError::InvalidConfig(format!(
        "{key} is not a dynamic broker config of Weir (supported: {})",
        BROKER_RATE_KEYS.join(", ")
    ))
}

/// A rate as stored (validated by `altered_broker_configs`).
pub fn parse_rate(value: &str) -> Option<u64> {
    value.parse::<u64>().ok()
}

/// Which replicas a `*.replication.throttled.replicas` list names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThrottledReplicas {
    All,
    Listed(Vec<(u32, NodeId)>),
}

impl ThrottledReplicas {
    /// Kafka's syntax: empty, `*`, or `partition:broker` entries separated by commas
    /// (whitespace around them ignored).
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value == "*" {
            return Ok(Self::All);
        }
        let mut listed = Vec::new();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = entry
                .split_once(':')
                .and_then(|(p, b)| Some((p.trim().parse::<u32>().ok()?, b.trim().parse::<NodeId>().ok()?)));
            match parsed {
                Some(pb) => listed.push(pb),
                None => return Err(format!("'{entry}' is not partition:broker (or the whole list '*')")),
            }
        }
        Ok(Self::Listed(listed))
    }

    pub fn names(&self, partition: u32, broker: NodeId) -> bool {
        match self {
            Self::All => true,
            Self::Listed(l) => l.contains(&(partition, broker)),
        }
    }
}

pub fn validate_replica_list(key: &str, value: &str) -> Result<(), MetadataError> {
    ThrottledReplicas::parse(value).map(|_| ()).map_err(|e| MetadataError::InvalidConfig(format!("{key}={value}: {e}")))
}

/// Whether a topic's configs name `(partition, broker)` in the list `key`.
pub fn topic_names_replica(configs: &BTreeMap<String, String>, key: &str, partition: u32, broker: NodeId) -> bool {
    configs.get(key).and_then(|v| ThrottledReplicas::parse(v).ok()).is_some_and(|list| list.names(partition, broker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_lists_parse_as_kafka_writes_them() {
        assert_eq!(ThrottledReplicas::parse("*"), Ok(ThrottledReplicas::All));
        assert_eq!(ThrottledReplicas::parse(""), Ok(ThrottledReplicas::Listed(vec![])));
        let l = ThrottledReplicas::parse("0:1, 0:2,1:0 ").unwrap();
        assert_eq!(l, ThrottledReplicas::Listed(vec![(0, 1), (0, 2), (1, 0)]));
        assert!(l.names(0, 2) && l.names(1, 0));
        assert!(!l.names(1, 1) && !l.names(2, 0));
        for bad in ["0", "0:x", "a:1", "0:1,*", "-1:0", "0:1:2"] {
            assert!(ThrottledReplicas::parse(bad).is_err(), "{bad}");
        }
        let mut configs = BTreeMap::new();
        assert!(!topic_names_replica(&configs, LEADER_THROTTLED_REPLICAS, 0, 0), "no list names nothing");
        configs.insert(LEADER_THROTTLED_REPLICAS.to_string(), "*".to_string());
        assert!(topic_names_replica(&configs, LEADER_THROTTLED_REPLICAS, 7, 3));
        assert!(!topic_names_replica(&configs, FOLLOWER_THROTTLED_REPLICAS, 7, 3));
    }

    #[test]
    fn broker_configs_take_the_two_rates_and_clear_the_log_dirs_one() {
        let set = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        let c = altered_broker_configs(None, &set(LEADER_THROTTLED_RATE, " 1000 "), &[]).unwrap();
        assert_eq!(c, set(LEADER_THROTTLED_RATE, "1000"));
        let c = altered_broker_configs(Some(&c), &set(FOLLOWER_THROTTLED_RATE, "0"), &[]).unwrap();
        assert_eq!(c.len(), 2);
        // What `kafka-reassign-partitions --verify` sends once the moves are done.
        let cleared = altered_broker_configs(
            Some(&c),
            &BTreeMap::new(),
            &[LEADER_THROTTLED_RATE.into(), FOLLOWER_THROTTLED_RATE.into(), ALTER_LOG_DIRS_RATE.into()],
        )
        .unwrap();
        assert!(cleared.is_empty());
        for (k, v) in [
            (LEADER_THROTTLED_RATE, "-1"),
            (LEADER_THROTTLED_RATE, "fast"),
            (ALTER_LOG_DIRS_RATE, "1"),
            ("num.io.threads", "8"),
        ] {
            assert!(
                matches!(altered_broker_configs(None, &set(k, v), &[]), Err(MetadataError::InvalidConfig(_))),
                "{k}={v}"
            );
        }
        assert!(altered_broker_configs(None, &BTreeMap::new(), &["log.retention.ms".into()]).is_err());
        assert_eq!(validate_broker_resource(""), Ok(None));
        assert_eq!(validate_broker_resource("2"), Ok(Some(2)));
        assert!(validate_broker_resource("broker-2").is_err());
    }
}
