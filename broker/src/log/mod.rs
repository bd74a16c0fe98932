//! The segmented log: Kafka record batches in `.log` files with sparse `.index` and
//! `.timeindex` files, rolled, retained, compacted and recovered after a crash.
//! See docs/storage.md for the on-disk format.

pub mod batch;
pub mod checkpoint;
pub mod cleaner;
pub mod config;
pub mod dir_failure;
pub mod disk_space;
pub mod error;
mod index_file;
pub mod leader_epoch;
pub mod manager;
pub mod metrics;
pub mod offset_index;
pub mod partition_metadata;
pub mod producer_snapshot;
pub mod producer_state;
pub mod segment;
pub mod segmented_log;
pub mod time_index;

pub use config::{LogConfig, TimestampType};
pub use dir_failure::LogDirFailure;
pub use error::LogError;
pub use manager::{LogManager, TopicPartition};
pub use metrics::LogMetrics;
pub use segmented_log::{AppendInfo, Log, LogSlice, RecoveryReport};

/// Milliseconds since the Unix epoch, the clock Kafka timestamps use.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// File name stem of a segment: its base offset, 20 digits zero-padded.
pub fn segment_file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// Parse the names `segment_file_stem` makes, `<20 digits>.<ext>` (segments, their indexes,
/// producer-state snapshots): the offset and everything after the first dot.
pub fn parse_offset_file_name(name: &str) -> Option<(i64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}
