//! The high-watermark checkpoint: `<data-dir>/replication-offset-checkpoint`, as Kafka keeps
//! it, so a restarted broker knows how far each local replica was committed instead of
//! starting from its log start. Same text format and atomic write as the log's own
//! checkpoints (`log::checkpoint`). Written every few seconds and at clean shutdown; a lower
//! value than the truth is safe (the high watermark only grows from it), so a checkpoint a
//! few seconds old is fine.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::log::checkpoint;
use crate::log::{LogError, TopicPartition};

pub const FILE_NAME: &str = "replication-offset-checkpoint";

/// Read the checkpoint; a missing file is an empty one.
pub fn read(dir: &Path) -> Result<HashMap<TopicPartition, i64>, LogError> {
    Ok(checkpoint::read(&dir.join(FILE_NAME))?.into_iter().collect())
}

/// Replace the checkpoint with `entries`, durably.
pub fn write(dir: &Path, entries: &HashMap<TopicPartition, i64>) -> Result<(), LogError> {
    let sorted: BTreeMap<TopicPartition, i64> = entries.iter().map(|(tp, hw)| (tp.clone(), *hw)).collect();
    checkpoint::write(&dir.join(FILE_NAME), &sorted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_kafka_layout() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty(), "missing file = empty");
        let mut m = HashMap::new();
        m.insert(TopicPartition::new("orders", 2), 1742);
        m.insert(TopicPartition::new("a.b_c-d", 0), 0);
        write(dir.path(), &m).unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text, "0\n2\na.b_c-d 0 0\norders 2 1742\n");
        assert_eq!(read(dir.path()).unwrap(), m);
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists());
    }

    #[test]
    fn malformed_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["1\n0\n", "0\nx\n", "0\n1\norders 0\n", "0\n1\norders x 5\n", "0\n2\norders 0 5\n"] {
            std::fs::write(dir.path().join(FILE_NAME), bad).unwrap();
            assert!(read(dir.path()).is_err(), "{bad:?}");
        }
    }
}
