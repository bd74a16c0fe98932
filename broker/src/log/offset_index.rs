//! `.index`: sparse map from a batch's offset relative to the segment base (u32, big-endian)
//! to the batch's byte position in the `.log` (u32, big-endian), one entry every
//! `index.interval.bytes` of log.

use std::path::Path;

use super::error::Result;
use super::index_file::IndexFile;

pub const ENTRY_SIZE: usize = 8;

pub struct OffsetIndex {
    base_offset: i64,
    file: IndexFile<ENTRY_SIZE>,
}

impl OffsetIndex {
    pub fn open(path: &Path, base_offset: i64, max_bytes: u64, preallocate: bool) -> Result<Self> {
        Ok(Self { base_offset, file: IndexFile::open(path, max_bytes, preallocate)? })
    }

    fn decode(&self, e: &[u8]) -> (i64, u32) {
        let rel = u32::from_be_bytes(e[0..4].try_into().expect("4 bytes"));
        let pos = u32::from_be_bytes(e[4..8].try_into().expect("4 bytes"));
        (self.base_offset + rel as i64, pos)
    }

    /// The last entry at or before `offset`: (offset, position). (base, 0) when there is none.
    pub fn lookup(&self, offset: i64) -> (i64, u32) {
        let rel = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        match self.file.floor(rel, |e| u32::from_be_bytes(e[0..4].try_into().expect("4 bytes"))) {
            Some(i) => self.decode(self.file.entry(i)),
            None => (self.base_offset, 0),
        }
    }

    /// The position of the last entry at or before byte `position` (a batch start), 0 when
    /// there is none.
    pub fn floor_position(&self, position: u32) -> u32 {
        match self.file.floor(position, |e| u32::from_be_bytes(e[4..8].try_into().expect("4 bytes"))) {
            Some(i) => self.decode(self.file.entry(i)).1,
            None => 0,
        }
    }

    pub fn entry_at(&self, i: usize) -> (i64, u32) {
        self.decode(self.file.entry(i))
    }

    pub fn last_entry(&self) -> Option<(i64, u32)> {
        self.file.entries().checked_sub(1).map(|i| self.decode(self.file.entry(i)))
    }

    pub fn append(&mut self, offset: i64, position: u32) -> Result<()> {
        let rel = (offset - self.base_offset) as u32;
        let mut e = [0u8; ENTRY_SIZE];
        e[0..4].copy_from_slice(&rel.to_be_bytes());
        e[4..8].copy_from_slice(&position.to_be_bytes());
        self.file.push(&e)
    }

    /// Drop entries for batches at or after byte `position` (log truncation).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = match self.file.floor(position, |e| u32::from_be_bytes(e[4..8].try_into().expect("4 bytes"))) {
            // floor gives the last entry with pos <= position; an entry exactly at `position` goes too.
            Some(i) if self.decode(self.file.entry(i)).1 == position => i,
            Some(i) => i + 1,
            None => 0,
        };
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
    fn lookup_finds_floor_entry_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000100.index");
        let mut idx = OffsetIndex::open(&path, 100, 4096, true).unwrap();
        assert_eq!(idx.lookup(150), (100, 0));
        for (i, off) in [100i64, 110, 130, 170].iter().enumerate() {
            idx.append(*off, (i * 1000) as u32).unwrap();
        }
        assert_eq!(idx.lookup(99), (100, 0));
        assert_eq!(idx.lookup(100), (100, 0));
        assert_eq!(idx.lookup(129), (110, 1000));
        assert_eq!(idx.lookup(130), (130, 2000));
        assert_eq!(idx.lookup(10_000), (170, 3000));
        idx.trim().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * ENTRY_SIZE as u64);
        drop(idx);
        let idx = OffsetIndex::open(&path, 100, 4096, false).unwrap();
        assert_eq!(idx.entries(), 4);
        assert_eq!(idx.last_entry(), Some((170, 3000)));
    }

    #[test]
    fn full_index_reports_full_and_truncation_drops_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = OffsetIndex::open(&dir.path().join("x.index"), 0, 32, true).unwrap();
        for i in 0..4 {
            assert!(!idx.is_full());
            idx.append(i * 10, (i * 100) as u32).unwrap();
        }
        assert!(idx.is_full());
        idx.truncate_to_position(200);
        assert_eq!(idx.entries(), 2);
        idx.truncate_to_position(150);
        assert_eq!(idx.entries(), 2);
        assert_eq!(idx.last_entry(), Some((10, 100)));
    }
}
