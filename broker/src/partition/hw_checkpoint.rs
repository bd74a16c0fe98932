//! The high-watermark checkpoint: `<data-dir>/replication-offset-checkpoint`, as Kafka keeps
//! it, so a restarted broker knows how far each local replica was committed instead of
//! starting from its log start. Text, Kafka's layout: a version line (`0`), a count line,
//! then one `topic partition offset` line per partition. Written every few seconds and at
//! clean shutdown, atomically (temp file, fsync, rename, fsync of the directory); a lower
//! value than the truth is safe (the high watermark only grows from it), so a checkpoint
//! a few seconds old is fine.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::log::TopicPartition;

pub const FILE_NAME: &str = "replication-offset-checkpoint";
const VERSION: &str = "0";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: malformed line {line}: {text:?}")]
    Malformed { path: PathBuf, line: usize, text: String },
}

/// Read the checkpoint; a missing file is an empty one.
pub fn read(dir: &Path) -> Result<HashMap<TopicPartition, i64>, CheckpointError> {
    let path = dir.join(FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(source) => return Err(CheckpointError::Io { path, source }),
    };
    let bad = |line: usize, text: &str| CheckpointError::Malformed { path: path.clone(), line, text: text.into() };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, v)) if v.trim() == VERSION => {}
        Some((i, v)) => return Err(bad(i + 1, v)),
        None => return Ok(HashMap::new()),
    }
    let (i, count) = lines.next().ok_or_else(|| bad(2, ""))?;
    let count: usize = count.trim().parse().map_err(|_| bad(i + 1, count))?;
    let mut out = HashMap::with_capacity(count);
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        // Topic names cannot contain spaces, so the last two fields are partition and offset.
        let mut fields = line.rsplitn(3, ' ');
        let (Some(offset), Some(partition), Some(topic)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad(i + 1, line));
        };
        let partition: i32 = partition.parse().map_err(|_| bad(i + 1, line))?;
        let offset: i64 = offset.parse().map_err(|_| bad(i + 1, line))?;
        out.insert(TopicPartition::new(topic, partition), offset);
    }
    if out.len() != count {
        return Err(bad(2, &format!("count {count} but {} entries", out.len())));
    }
    Ok(out)
}

/// Replace the checkpoint with `entries`, durably.
pub fn write(dir: &Path, entries: &HashMap<TopicPartition, i64>) -> Result<(), CheckpointError> {
    let path = dir.join(FILE_NAME);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| CheckpointError::Io { path: p, source }
    };
    let mut sorted: Vec<_> = entries.iter().collect();
    sorted.sort();
    let mut text = format!("{VERSION}\n{}\n", sorted.len());
    for (tp, hw) in sorted {
        text.push_str(&format!("{} {} {hw}\n", tp.topic, tp.partition));
    }
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
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
            assert!(matches!(read(dir.path()), Err(CheckpointError::Malformed { .. })), "{bad:?}");
        }
    }
}
