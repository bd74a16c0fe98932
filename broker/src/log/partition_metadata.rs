//! `partition.metadata`: the id of the topic a partition directory belongs to, in Kafka's
//! text form (a `version: 0` line, then `topic_id: <id>`). A topic deleted and created again
//! under the same name has a new id, so a directory left from the old topic is recognised
//! even by a broker that never saw the deletion (its metadata store lost, or caught up from a
//! snapshot that already had the new topic).

use std::fs;
use std::path::Path;

use super::checkpoint::write_atomically;
use super::error::{LogError, Result};

pub const FILE: &str = "partition.metadata";

/// The topic id recorded in `dir`, or None when the directory has no such file (made before
/// the file existed).
pub fn read(dir: &Path) -> Result<Option<String>> {
    let path = dir.join(FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(&path, e)),
    };
    let bad = |why: &str| LogError::io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string()));
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("version: 0") {
        return Err(bad("unknown partition.metadata version"));
    }
    match lines.next().and_then(|l| l.strip_prefix("topic_id:")) {
        Some(id) if !id.trim().is_empty() => Ok(Some(id.trim().to_string())),
        _ => Err(bad("partition.metadata without a topic_id")),
    }
}

/// Record `topic_id` in `dir` (atomically: a crash leaves the old or the new file).
pub fn write(dir: &Path, topic_id: &str) -> Result<()> {
    write_atomically(&dir.join(FILE), format!("version: 0\ntopic_id: {topic_id}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_ids_read_back_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        write(dir.path(), "5f1b0a9e-0000-4000-8000-000000000001").unwrap();
        assert_eq!(read(dir.path()).unwrap().as_deref(), Some("5f1b0a9e-0000-4000-8000-000000000001"));
        assert_eq!(
            fs::read_to_string(dir.path().join(FILE)).unwrap(),
            "version: 0\ntopic_id: 5f1b0a9e-0000-4000-8000-000000000001\n"
        );
        write(dir.path(), "other").unwrap();
        assert_eq!(read(dir.path()).unwrap().as_deref(), Some("other"));
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_missing_id() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), "version: 7\ntopic_id: x\n").unwrap();
        assert!(read(dir.path()).is_err());
        fs::write(dir.path().join(FILE), "version: 0\n").unwrap();
        assert!(read(dir.path()).is_err());
    }
}
