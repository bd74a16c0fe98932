//! Typed errors of the log engine. The Kafka layer maps each to a protocol error code.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A batch failed validation (length, magic, CRC-32C, record count). Kafka: CORRUPT_MESSAGE (2).
    #[error("corrupt record batch: {0}")]
    CorruptRecord(String),
    /// Kafka: OFFSET_OUT_OF_RANGE (1).
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange { offset: i64, log_start_offset: i64, log_end_offset: i64 },
    /// Kafka: MESSAGE_TOO_LARGE (10).
    #[error("record batch of {size} bytes is larger than max.message.bytes {max}")]
    RecordTooLarge { size: usize, max: usize },
    /// KIP-937. Kafka: INVALID_TIMESTAMP (32).
    #[error("batch timestamp {timestamp} is outside the accepted range [{min}, {max}]")]
    InvalidTimestamp { timestamp: i64, min: i64, max: i64 },
    /// A topic config key or value that is not valid. Kafka: INVALID_CONFIG (40).
    #[error("invalid config {key}={value}: {reason}")]
    InvalidConfig { key: String, value: String, reason: String },
    /// Idempotent producer: the sequence does not follow the last one. Kafka: OUT_OF_ORDER_SEQUENCE_NUMBER (45).
    #[error("producer {producer_id}: sequence {got}, expected {expected}")]
    OutOfOrderSequence { producer_id: i64, expected: i32, got: i32 },
    /// Idempotent producer: an older epoch than the log has seen. Kafka: INVALID_PRODUCER_EPOCH (47).
    #[error("producer {producer_id}: epoch {epoch} is older than {current}")]
    ProducerFenced { producer_id: i64, epoch: i16, current: i16 },
    /// A write to a log deleted while its caller held it (`LogManager::delete`). Kafka:
    /// NOT_LEADER_OR_FOLLOWER (6): this broker no longer holds the replica.
    #[error("the log in {path} was deleted")]
    Deleted { path: PathBuf },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LogError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LogError::Io { path: path.into(), source }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// Attach the file path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| LogError::io(path, e))
    }
}
