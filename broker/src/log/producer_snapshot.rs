//! Producer-state snapshot files: `<offset>.snapshot` in a partition's directory holds the
//! idempotent producers' state after every batch below `offset` (Kafka's
//! `<offset>.snapshot`, in our own format: `ProducerState::encode_snapshot`). Opening or
//! truncating a log then reads the newest snapshot at or below its log end and only the
//! batch headers after it, instead of every header in the log.
//!
//! Written when a segment rolls (at the new segment's base, not fsynced: a damaged or missing
//! file only means reading more headers) and at a clean close (at the log end, fsynced).
//! A file's CRC decides whether it is used; one that fails is deleted.

use std::path::{Path, PathBuf};

use super::checkpoint::{write_atomically, write_renamed};
use super::error::{IoContext, Result};
use super::producer_state::ProducerState;
use super::{parse_offset_file_name, segment_file_stem};

pub fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{}.snapshot", segment_file_stem(offset)))
}

/// The offsets of the snapshot files in `dir`, ascending. Leftover temporary files of an
/// interrupted write are removed.
pub fn list(dir: &Path) -> Result<Vec<i64>> {
    let mut offsets = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let Some((offset, ext)) = name.to_str().and_then(parse_offset_file_name) else { continue };
        match ext {
            "snapshot" => offsets.push(offset),
            "snapshot.tmp" => std::fs::remove_file(entry.path()).at(&entry.path())?,
            _ => {}
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// Write `state` as the snapshot at `offset` (temporary file, then rename). With `sync`, the
/// file and the directory are fsynced (a clean close); otherwise the page cache has it.
pub fn write(dir: &Path, offset: i64, state: &ProducerState, sync: bool) -> Result<()> {
    let path = snapshot_path(dir, offset);
    let bytes = state.encode_snapshot();
    if sync {
        write_atomically(&path, &bytes)
    } else {
        write_renamed(&path, &bytes)
    }
}

/// The snapshot at `offset`, or `None` if the file is missing or fails its check.
pub fn read(dir: &Path, offset: i64) -> Result<Option<ProducerState>> {
    let path = snapshot_path(dir, offset);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(ProducerState::decode_snapshot(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(super::error::LogError::io(&path, e)),
    }
}

pub fn delete(dir: &Path, offset: i64) -> Result<()> {
    let path = snapshot_path(dir, offset);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(super::error::LogError::io(&path, e)),
    }
}

/// Delete the snapshots above `offset` (the log was truncated there: they describe batches
/// that are gone). Returns whether any went.
pub fn delete_above(dir: &Path, offset: i64) -> Result<bool> {
    let doomed: Vec<i64> = list(dir)?.into_iter().filter(|&o| o > offset).collect();
    for &o in &doomed {
        delete(dir, o)?;
    }
    Ok(!doomed.is_empty())
}

/// Delete the snapshots below `offset` (the first segment's base: the segments they were
/// taken at are gone).
pub fn delete_below(dir: &Path, offset: i64) -> Result<()> {
    for o in list(dir)?.into_iter().filter(|&o| o < offset) {
        delete(dir, o)?;
    }
    Ok(())
}
