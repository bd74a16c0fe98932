//! Resource alarms, as RabbitMQ raises them: when free disk space on the data directory
//! falls below `--amqp-disk-free-limit`, or the bytes of messages held in queues exceed
//! `--amqp-memory-limit`, publishing connections are blocked (connection.blocked, then no
//! more frames read from them) until the alarm clears (connection.unblocked). Consumers
//! keep working, so queues can drain.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::broker::AmqpCore;

/// How often the limits are checked.
const CHECK_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct AlarmLimits {
    pub data_dir: PathBuf,
    /// Block publishers when fewer bytes than this are free on the data directory's disk.
    pub disk_free_limit: u64,
    /// Block publishers when queues hold more message bytes than this (0: no limit).
    pub memory_limit: u64,
}

/// Bytes available to unprivileged users on the file system holding `path`.
pub fn disk_free(path: &Path) -> Option<u64> {
    crate::log::disk_space::of(path).map(|s| s.usable_bytes)
}

/// The alarm for the given readings, as the reason shown in connection.blocked.
pub fn alarm_reason(limits: &AlarmLimits, disk_free: Option<u64>, queued_bytes: u64) -> Option<String> {
    if let Some(free) = disk_free {
        if free < limits.disk_free_limit {
            return Some(format!("low on disk: {free} bytes free, limit {}", limits.disk_free_limit));
        }
    }
    if limits.memory_limit > 0 && queued_bytes > limits.memory_limit {
        return Some(format!("low on memory: queues hold {queued_bytes} bytes, limit {}", limits.memory_limit));
    }
    None
}

/// Check the limits periodically and publish the alarm state to the core.
pub fn watch(core: Arc<AmqpCore>, limits: AlarmLimits) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(CHECK_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let dir = limits.data_dir.clone();
            let free = tokio::task::spawn_blocking(move || disk_free(&dir)).await.ok().flatten();
            let reason = alarm_reason(&limits, free, core.queued_bytes());
            core.set_alarm(reason);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let l = AlarmLimits { data_dir: ".".into(), disk_free_limit: 100, memory_limit: 1000 };
        assert_eq!(alarm_reason(&l, Some(500), 10), None);
        assert!(alarm_reason(&l, Some(50), 10).unwrap().contains("disk"));
        assert!(alarm_reason(&l, Some(500), 1001).unwrap().contains("memory"));
        assert_eq!(alarm_reason(&AlarmLimits { memory_limit: 0, ..l }, None, u64::MAX), None);
        assert!(disk_free(Path::new("/")).is_some());
    }
}
