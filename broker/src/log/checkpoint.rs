//! Checkpoint files of a data directory, in Kafka's text format:
//! a version line (0), a count line, then `topic partition offset` per line.
//! Written to a temporary file, fsynced and renamed, so a crash leaves the old or the new one.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::error::{IoContext, LogError, Result};
use super::manager::TopicPartition;

pub const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";
pub const LOG_START_OFFSET_FILE: &str = "log-start-offset-checkpoint";
/// Present only between a clean shutdown and the next start.
pub const CLEAN_SHUTDOWN_FILE: &str = ".weir-clean-shutdown";

pub fn write(path: &Path, offsets: &BTreeMap<TopicPartition, i64>) -> Result<()> {
    let mut text = format!("0\n{}\n", offsets.len());
    for (tp, off) in offsets {
        text.push_str(&format!("{} {} {}\n", tp.topic, tp.partition, off));
    }
    write_atomically(path, text.as_bytes())
}

/// Replace the file at `path` with `contents` so that a crash leaves the old or the new file:
/// written to `<path>.tmp`, fsynced, renamed over `path`, and the directory fsynced.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    replace(path, contents, true)
}

/// `write_atomically` without the fsyncs: a process crash leaves the old or the new file, a
/// power loss may leave either damaged (for files checked when read, such as snapshots).
pub fn write_renamed(path: &Path, contents: &[u8]) -> Result<()> {
    replace(path, contents, false)
}

fn replace(path: &Path, contents: &[u8], sync: bool) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = File::create(&tmp).at(&tmp)?;
    f.write_all(contents).at(&tmp)?;
    if sync {
        f.sync_all().at(&tmp)?;
    }
    fs::rename(&tmp, path).at(path)?;
    if sync {
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// Read a checkpoint; a missing file is an empty one.
pub fn read(path: &Path) -> Result<BTreeMap<TopicPartition, i64>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(LogError::io(path, e)),
    };
    let bad = |why: &str| LogError::io(path, std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string()));
    let mut lines = text.lines();
    if lines.next() != Some("0") {
        return Err(bad("unknown checkpoint version"));
    }
    let count: usize = lines.next().and_then(|l| l.parse().ok()).ok_or_else(|| bad("bad entry count"))?;
    let mut out = BTreeMap::new();
    for line in lines {
        // Topic names cannot contain spaces, so the last two fields are the numbers.
        let mut parts = line.rsplitn(3, ' ');
        let (Some(off), Some(part), Some(topic)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("bad entry line"));
        };
        let partition = part.parse().map_err(|_| bad("bad partition"))?;
        let offset = off.parse().map_err(|_| bad("bad offset"))?;
        out.insert(TopicPartition::new(topic, partition), offset);
    }
    if out.len() != count {
        return Err(bad("entry count does not match"));
    }
    Ok(out)
}

/// fsync a directory so that renames and file creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECOVERY_POINT_FILE);
        assert!(read(&path).unwrap().is_empty());
        let mut m = BTreeMap::new();
        m.insert(TopicPartition::new("orders", 0), 42);
        m.insert(TopicPartition::new("a.b-c_d", 11), 7);
        write(&path, &m).unwrap();
        assert_eq!(read(&path).unwrap(), m);
        fs::write(&path, "0\n3\norders 0 1\n").unwrap();
        assert!(read(&path).is_err());
    }
}
