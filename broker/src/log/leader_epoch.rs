//! The leader-epoch cache of one partition: for every leader epoch that wrote to the log, the
//! first offset it wrote. Followers and consumers use it (through OffsetForLeaderEpoch) to
//! find where their log diverges from the leader's after a leader change.
//!
//! Stored beside the segments as `leader-epoch-checkpoint` in Kafka's text format: a version
//! line (0), a count line, then `epoch startOffset` per line. Rewritten (temporary file,
//! fsync, rename) whenever it changes, which happens only at a leader change, a truncation
//! or a log start offset move — never per append.

use std::fs;
use std::path::{Path, PathBuf};

use super::checkpoint::write_atomically;
use super::error::{LogError, Result};

pub const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";

/// Kafka's "no epoch" / "no offset" answers of OffsetForLeaderEpoch.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

#[derive(Debug)]
pub struct LeaderEpochCache {
    path: PathBuf,
    /// Strictly increasing in both epoch and start offset.
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Load the checkpoint in `dir`; a missing file is an empty cache. A damaged file is
    /// reported as `Ok(None)` so the caller rebuilds the cache from the batch headers.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(LEADER_EPOCH_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(Self { path, entries: Vec::new() })),
            Err(e) => return Err(LogError::io(&path, e)),
        };
        Ok(parse(&text).map(|entries| Self { path, entries }))
    }

    /// An empty cache for `dir` (its file is written at the first change).
    pub fn empty(dir: &Path) -> Self {
        Self { path: dir.join(LEADER_EPOCH_FILE), entries: Vec::new() }
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// The epoch that wrote `offset`: the last entry starting at or before it.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.entries.iter().rev().find(|e| e.start_offset <= offset).map(|e| e.epoch)
    }

    /// Record that `epoch` starts writing at `start_offset`, without persisting. Returns
    /// whether anything changed. An epoch not newer than the latest, or an offset below the
    /// latest entry's start, replaces the entries it conflicts with (a follower that
    /// truncated and now copies a different history).
    pub fn assign_in_memory(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        if let Some(last) = self.entries.last() {
            if last.epoch == epoch && last.start_offset <= start_offset {
                return false;
            }
        }
        self.entries.retain(|e| e.epoch < epoch && e.start_offset < start_offset);
        self.entries.push(EpochEntry { epoch, start_offset });
        true
    }

    /// `assign_in_memory`, then persist if it changed anything.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<()> {
        if self.assign_in_memory(epoch, start_offset) {
            self.flush()?;
        }
        Ok(())
    }

    /// The log was truncated to `end_offset` (everything at or after it removed): entries
    /// starting there or later are gone.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> Result<()> {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        if self.entries.len() != before {
            self.flush()?;
        }
        Ok(())
    }

    /// The log start moved to `start_offset`: entries wholly below it go; the one covering it
    /// now starts there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> Result<()> {
        let covering = self.entries.iter().rposition(|e| e.start_offset <= start_offset);
        let Some(i) = covering else { return Ok(()) };
        if i == 0 && self.entries[0].start_offset == start_offset {
            return Ok(());
        }
        self.entries.drain(..i);
        self.entries[0].start_offset = start_offset;
        self.flush()
    }

    /// OffsetForLeaderEpoch on this log: `(epoch, end offset)` where the end offset is the
    /// first offset after the last one written by `requested` or earlier epochs, and the
    /// epoch is the largest known epoch not above `requested`. For the latest epoch the end
    /// is the log end offset. Unknown answers are `(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)`.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        let undefined = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested < 0 {
            return undefined;
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end_offset);
        }
        let Some(higher) = self.entries.iter().find(|e| e.epoch > requested) else { return undefined };
        match self.entries.iter().rev().find(|e| e.epoch <= requested) {
            Some(floor) => (floor.epoch, higher.start_offset),
            // Older than anything known (removed by retention): the best answer is where the
            // first newer epoch starts, as Kafka gives.
            None => (requested, higher.start_offset),
        }
    }

    /// Replace the whole content (a rebuild from the batch headers), without persisting.
    pub fn set_entries(&mut self, entries: Vec<EpochEntry>) {
        self.entries = entries;
    }

    /// Write the checkpoint file atomically (temporary file, fsync, rename, fsync the dir).
    pub fn flush(&self) -> Result<()> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        write_atomically(&self.path, text.as_bytes())
    }
}

/// Parse Kafka's format; `None` when anything is off (wrong version, count, ordering).
fn parse(text: &str) -> Option<Vec<EpochEntry>> {
    let mut lines = text.lines();
    if lines.next()? != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut entries = Vec::with_capacity(count);
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let (epoch, offset) = line.trim().split_once(' ')?;
        let e = EpochEntry { epoch: epoch.parse().ok()?, start_offset: offset.trim().parse().ok()? };
        if let Some(prev) = entries.last() {
            let prev: &EpochEntry = prev;
            if e.epoch <= prev.epoch || e.start_offset <= prev.start_offset {
                return None;
            }
        }
        entries.push(e);
    }
    (entries.len() == count).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> (tempfile::TempDir, LeaderEpochCache) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::empty(dir.path());
        for (e, o) in entries {
            c.assign(*e, *o).unwrap();
        }
        (dir, c)
    }

    fn pairs(c: &LeaderEpochCache) -> Vec<(i32, i64)> {
        c.entries().iter().map(|e| (e.epoch, e.start_offset)).collect()
    }

    #[test]
    fn file_is_kafkas_format_and_round_trips() {
        let (dir, c) = cache(&[(0, 0), (2, 10), (5, 17)]);
        let text = fs::read_to_string(dir.path().join(LEADER_EPOCH_FILE)).unwrap();
        assert_eq!(text, "0\n3\n0 0\n2 10\n5 17\n");
        let loaded = LeaderEpochCache::load(dir.path()).unwrap().unwrap();
        assert_eq!(pairs(&loaded), pairs(&c));
        // Damaged files are reported, not trusted.
        for bad in ["1\n0\n", "0\n2\n0 0\n", "0\n2\n3 5\n1 9\n", "0\n1\nx 1\n"] {
            fs::write(dir.path().join(LEADER_EPOCH_FILE), bad).unwrap();
            assert!(LeaderEpochCache::load(dir.path()).unwrap().is_none(), "{bad:?}");
        }
        let empty = tempfile::tempdir().unwrap();
        assert!(LeaderEpochCache::load(empty.path()).unwrap().unwrap().entries().is_empty());
    }

    #[test]
    fn assign_ignores_repeats_and_replaces_conflicts() {
        let (_d, mut c) = cache(&[(0, 0), (0, 5), (1, 7)]);
        assert_eq!(pairs(&c), vec![(0, 0), (1, 7)]);
        // A follower that truncated to 6 and copies epoch 3 from offset 6.
        c.assign(3, 6).unwrap();
        assert_eq!(pairs(&c), vec![(0, 0), (3, 6)]);
        assert!(!c.assign_in_memory(-1, 9));
        assert_eq!(c.epoch_for_offset(5), Some(0));
        assert_eq!(c.epoch_for_offset(6), Some(3));
    }

    #[test]
    fn end_offset_for_follows_kafkas_rules() {
        let (_d, c) = cache(&[(1, 0), (3, 10), (6, 25)]);
        assert_eq!(c.end_offset_for(6, 40), (6, 40)); // latest: the log end
        assert_eq!(c.end_offset_for(3, 40), (3, 25));
        assert_eq!(c.end_offset_for(4, 40), (3, 25)); // gap: the floor epoch, next start
        assert_eq!(c.end_offset_for(0, 40), (0, 0)); // older than all known
        assert_eq!(c.end_offset_for(7, 40), (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET));
        assert_eq!(c.end_offset_for(-1, 40), (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET));
        let (_d, empty) = cache(&[]);
        assert_eq!(empty.end_offset_for(0, 0), (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET));
    }

    #[test]
    fn truncation_from_both_ends() {
        let (dir, mut c) = cache(&[(1, 0), (3, 10), (6, 25)]);
        c.truncate_from_end(25).unwrap();
        assert_eq!(pairs(&c), vec![(1, 0), (3, 10)]);
        c.truncate_from_start(12).unwrap();
        assert_eq!(pairs(&c), vec![(3, 12)]);
        c.truncate_from_start(12).unwrap();
        assert_eq!(pairs(&c), vec![(3, 12)]);
        assert_eq!(pairs(&LeaderEpochCache::load(dir.path()).unwrap().unwrap()), vec![(3, 12)]);
        c.truncate_from_end(0).unwrap();
        assert!(c.entries().is_empty());
    }
}
