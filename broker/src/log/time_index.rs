//! `.timeindex`: sparse map from a timestamp (i64, big-endian) to the relative offset (u32)
//! of the batch that first reached it. Timestamps only grow along the index.

use std::path::Path;

use super::error::Result;
use super::index_file::IndexFile;

pub const ENTRY_SIZE: usize = 12;

pub struct TimeIndex {
    base_offset: i64,
    file: IndexFile<ENTRY_SIZE>,
}

impl TimeIndex {
    pub fn open(path: &Path, base_offset: i64, max_bytes: u64, preallocate: bool) -> Result<Self> {
        Ok(Self { base_offset, file: IndexFile::open(path, max_bytes, preallocate)? })
    }

    fn decode(&self, e: &[u8]) -> (i64, i64) {
        let ts = i64::from_be_bytes(e[0..8].try_into().expect("8 bytes"));
        let rel = u32::from_be_bytes(e[8..12].try_into().expect("4 bytes"));
        (ts, self.base_offset + rel as i64)
    }

    /// The last entry with timestamp <= `timestamp`: (timestamp, offset); None when every
    /// entry is later (search then starts at the segment's first batch).
    pub fn lookup(&self, timestamp: i64) -> Option<(i64, i64)> {
        self.file
            .floor(timestamp, |e| i64::from_be_bytes(e[0..8].try_into().expect("8 bytes")))
            .map(|i| self.decode(self.file.entry(i)))
    }

    pub fn last_entry(&self) -> Option<(i64, i64)> {
        self.file.entries().checked_sub(1).map(|i| self.decode(self.file.entry(i)))
    }

    /// Add an entry if `timestamp` is greater than the last one's; the caller checks `is_full`.
    pub fn maybe_append(&mut self, timestamp: i64, offset: i64) -> Result<()> {
        if self.last_entry().is_some_and(|(ts, _)| ts >= timestamp) {
            return Ok(());
        }
        let mut e = [0u8; ENTRY_SIZE];
        e[0..8].copy_from_slice(&timestamp.to_be_bytes());
        e[8..12].copy_from_slice(&((offset - self.base_offset) as u32).to_be_bytes());
        self.file.push(&e)
    }

    /// Drop entries pointing at offsets >= `offset` (log truncation).
    pub fn truncate_to_offset(&mut self, offset: i64) {
        let rel = (offset - self.base_offset).max(0);
        let mut keep = self.file.entries();
        while keep > 0 && self.decode(self.file.entry(keep - 1)).1 - self.base_offset >= rel {
            keep -= 1;
        }
        self.file.truncate_entries(keep);
    }

    pub fn clear(&mut self) {
        self.file.truncate_entries(0);
    }
    pub fn entries(&self) -> usize {
        self.file.entries()
    }
    pub fn is_full(&self) -> bool {
        self.file.is_full()
    }
    pub fn trim(&mut self) -> Result<()> {
        self.file.trim()
    }
    pub fn preallocate(&mut self) -> Result<()> {
        self.file.preallocate()
    }
    pub fn flush(&self) -> Result<()> {
        self.file.flush()
    }
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_only_grow_and_lookup_takes_floor() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = TimeIndex::open(&dir.path().join("0.timeindex"), 50, 4096, true).unwrap();
        t.maybe_append(1000, 50).unwrap();
        t.maybe_append(1000, 60).unwrap(); // not greater: ignored
        t.maybe_append(900, 61).unwrap(); // older: ignored
        t.maybe_append(2000, 70).unwrap();
        assert_eq!(t.entries(), 2);
        assert_eq!(t.lookup(999), None);
        assert_eq!(t.lookup(1500), Some((1000, 50)));
        assert_eq!(t.lookup(5000), Some((2000, 70)));
        t.truncate_to_offset(70);
        assert_eq!(t.last_entry(), Some((1000, 50)));
    }
}
