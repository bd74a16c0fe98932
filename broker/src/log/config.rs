//! Per-log configuration with Kafka's topic config names and defaults.

use std::collections::BTreeMap;

use super::error::{LogError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment when it would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a non-empty active segment older than this.
    pub segment_ms: i64,
    /// `segment.index.bytes`: preallocated size of each index; a full index rolls the segment.
    pub segment_index_bytes: u64,
    /// `index.interval.bytes`: bytes of log between two offset index entries.
    pub index_interval_bytes: u64,
    /// `retention.ms` (None = -1, unlimited).
    pub retention_ms: Option<i64>,
    /// `retention.bytes` (None = -1, unlimited).
    pub retention_bytes: Option<u64>,
    /// `cleanup.policy` contains `delete`.
    pub cleanup_delete: bool,
    /// `cleanup.policy` contains `compact`.
    pub cleanup_compact: bool,
    /// `delete.retention.ms`: how long the cleaner keeps tombstones.
    pub delete_retention_ms: i64,
    /// `flush.messages` (None = leave flushing to the OS).
    pub flush_messages: Option<u64>,
    /// `flush.ms` (None = leave flushing to the OS).
    pub flush_ms: Option<i64>,
    /// `max.message.bytes`: largest record batch accepted.
    pub max_message_bytes: usize,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `message.timestamp.after.max.ms` (KIP-937).
    pub timestamp_after_max_ms: i64,
    /// `message.timestamp.before.max.ms` (None = unlimited).
    pub timestamp_before_max_ms: Option<i64>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            cleanup_delete: true,
            cleanup_compact: false,
            delete_retention_ms: 24 * 3600 * 1000,
            flush_messages: None,
            flush_ms: None,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            timestamp_after_max_ms: 3_600_000,
            timestamp_before_max_ms: None,
        }
    }
}

/// The config keys this log understands, as Kafka names them.
pub const LOG_CONFIG_KEYS: &[&str] = &[
    "segment.bytes",
    "segment.ms",
    "segment.index.bytes",
    "index.interval.bytes",
    "retention.ms",
    "retention.bytes",
    "cleanup.policy",
    "delete.retention.ms",
    "flush.messages",
    "flush.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
];

impl LogConfig {
    /// Every key of `LOG_CONFIG_KEYS` with this config's value, written as Kafka writes it
    /// (unlimited = -1 for sizes and times, Long.MAX_VALUE for the flush and timestamp ones).
    pub fn to_props(&self) -> BTreeMap<String, String> {
        let unlimited_long = i64::MAX.to_string();
        let mut policy = Vec::new();
        if self.cleanup_delete {
            policy.push("delete");
        }
        if self.cleanup_compact {
            policy.push("compact");
        }
        let pairs: [(&str, String); 14] = [
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
            ("segment.index.bytes", self.segment_index_bytes.to_string()),
            ("index.interval.bytes", self.index_interval_bytes.to_string()),
            ("retention.ms", self.retention_ms.map_or("-1".to_string(), |v| v.to_string())),
            ("retention.bytes", self.retention_bytes.map_or("-1".to_string(), |v| v.to_string())),
            ("cleanup.policy", policy.join(",")),
            ("delete.retention.ms", self.delete_retention_ms.to_string()),
            ("flush.messages", self.flush_messages.map_or(unlimited_long.clone(), |v| v.to_string())),
            ("flush.ms", self.flush_ms.map_or(unlimited_long.clone(), |v| v.to_string())),
            ("max.message.bytes", self.max_message_bytes.to_string()),
            (
                "message.timestamp.type",
                match self.timestamp_type {
                    TimestampType::CreateTime => "CreateTime".to_string(),
                    TimestampType::LogAppendTime => "LogAppendTime".to_string(),
                },
            ),
            ("message.timestamp.after.max.ms", self.timestamp_after_max_ms.to_string()),
            ("message.timestamp.before.max.ms", self.timestamp_before_max_ms.map_or(unlimited_long, |v| v.to_string())),
        ];
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// Apply topic-level overrides on top of `self`. Unknown keys and bad values are refused.
    pub fn with_overrides(&self, props: &BTreeMap<String, String>) -> Result<Self> {
        let mut c = self.clone();
        for (key, value) in props {
            c.set(key, value)?;
        }
        Ok(c)
    }

    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let bad = |reason: &str| LogError::InvalidConfig {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let int = || value.trim().parse::<i64>().map_err(|_| bad("not an integer"));
        // Kafka uses -1 and Long.MAX_VALUE for "unlimited".
        let unlimited = |v: i64| v < 0 || v == i64::MAX;
        match key {
            "segment.bytes" => {
                let v = int()?;
                if !(14..=i32::MAX as i64).contains(&v) {
                    return Err(bad("must be between 14 and 2147483647"));
                }
                self.segment_bytes = v as u64;
            }
            "segment.ms" => {
                let v = int()?;
                if v < 1 {
                    return Err(bad("must be at least 1"));
                }
                self.segment_ms = v;
            }
            "segment.index.bytes" => {
                let v = int()?;
                if !(4096..=i32::MAX as i64).contains(&v) {
                    return Err(bad("must be between 4096 and 2147483647"));
                }
                self.segment_index_bytes = v as u64;
            }
            "index.interval.bytes" => {
                let v = int()?;
                if v < 0 {
                    return Err(bad("must be at least 0"));
                }
                self.index_interval_bytes = v as u64;
            }
            "retention.ms" => {
                let v = int()?;
                if v < -1 {
                    return Err(bad("must be -1 or at least 0"));
                }
                self.retention_ms = (!unlimited(v)).then_some(v);
            }
            "retention.bytes" => {
                let v = int()?;
                self.retention_bytes = (!unlimited(v)).then_some(v as u64);
            }
            "cleanup.policy" => {
                let (mut delete, mut compact) = (false, false);
                for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    match p {
                        "delete" => delete = true,
                        "compact" => compact = true,
                        _ => return Err(bad("must be a list of delete and compact")),
                    }
                }
                self.cleanup_delete = delete;
                self.cleanup_compact = compact;
            }
            "delete.retention.ms" => {
                let v = int()?;
                if v < 0 {
                    return Err(bad("must be at least 0"));
                }
                self.delete_retention_ms = v;
            }
            "flush.messages" => {
                let v = int()?;
                if v < 1 {
                    return Err(bad("must be at least 1"));
                }
                self.flush_messages = (v != i64::MAX).then_some(v as u64);
            }
            "flush.ms" => {
                let v = int()?;
                if v < 0 {
                    return Err(bad("must be at least 0"));
                }
                self.flush_ms = (v != i64::MAX).then_some(v);
            }
            "max.message.bytes" => {
                let v = int()?;
                if !(0..=i32::MAX as i64).contains(&v) {
                    return Err(bad("must be between 0 and 2147483647"));
                }
                self.max_message_bytes = v as usize;
            }
            "message.timestamp.type" => {
                self.timestamp_type = match value {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(bad("must be CreateTime or LogAppendTime")),
                }
            }
            "message.timestamp.after.max.ms" => {
                let v = int()?;
                if v < 0 {
                    return Err(bad("must be at least 0"));
                }
                self.timestamp_after_max_ms = v;
            }
            "message.timestamp.before.max.ms" => {
                let v = int()?;
                if v < 0 {
                    return Err(bad("must be at least 0"));
                }
                self.timestamp_before_max_ms = (v != i64::MAX).then_some(v);
            }
            _ => return Err(bad("unknown config key")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn props_cover_every_key_and_round_trip() {
        let props = LogConfig::default().to_props();
        assert_eq!(props.len(), LOG_CONFIG_KEYS.len());
        assert!(LOG_CONFIG_KEYS.iter().all(|k| props.contains_key(*k)));
        assert_eq!(LogConfig::default().with_overrides(&props).unwrap(), LogConfig::default());
        let mut c = LogConfig::default();
        c.set("cleanup.policy", "compact,delete").unwrap();
        c.set("retention.bytes", "1000").unwrap();
        assert_eq!(LogConfig::default().with_overrides(&c.to_props()).unwrap(), c);
    }

    #[test]
    fn overrides_parse_kafka_names_and_refuse_bad_values() {
        let mut props = BTreeMap::new();
        props.insert("cleanup.policy".to_string(), "compact,delete".to_string());
        props.insert("retention.ms".to_string(), "-1".to_string());
        props.insert("message.timestamp.type".to_string(), "LogAppendTime".to_string());
        let c = LogConfig::default().with_overrides(&props).unwrap();
        assert!(c.cleanup_compact && c.cleanup_delete);
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.timestamp_type, TimestampType::LogAppendTime);

        let mut bad = BTreeMap::new();
        bad.insert("segment.bytes".to_string(), "ten".to_string());
        assert!(matches!(LogConfig::default().with_overrides(&bad), Err(LogError::InvalidConfig { .. })));
        let mut unknown = BTreeMap::new();
        unknown.insert("no.such.key".to_string(), "1".to_string());
        assert!(LogConfig::default().with_overrides(&unknown).is_err());
    }
}
