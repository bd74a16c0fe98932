//! A fixed-entry-size index file, memory-mapped. The active segment's index is preallocated
//! to `segment.index.bytes`; on roll or clean close it is trimmed to its entries, so a
//! file's length tells how many entries it holds when it is opened again.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use super::error::{IoContext, Result};

pub(crate) struct IndexFile<const ENTRY: usize> {
    path: PathBuf,
    file: File,
    /// None while the file is empty (a zero-length file cannot be mapped).
    mmap: Option<MmapMut>,
    entries: usize,
    max_entries: usize,
}

impl<const ENTRY: usize> IndexFile<ENTRY> {
    /// Open or create the index at `path`. Its current length (rounded down to whole entries)
    /// is taken as its entries; when `preallocate` the file is grown to `max_bytes`.
    pub fn open(path: &Path, max_bytes: u64, preallocate: bool) -> Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).at(path)?;
        let len = file.metadata().at(path)?.len() as usize;
        let entries = len / ENTRY;
        let max_entries = ((max_bytes as usize) / ENTRY).max(entries).max(1);
        let mut index = Self { path: path.to_path_buf(), file, mmap: None, entries, max_entries };
        if preallocate {
            index.resize((max_entries * ENTRY) as u64)?;
        } else {
            index.resize((entries * ENTRY) as u64)?;
        }
        Ok(index)
    }

    fn resize(&mut self, bytes: u64) -> Result<()> {
        // Drop the map before changing the file length under it. No msync here: unmapping
        // leaves the dirty pages in the page cache, and `flush` makes them durable; a
        // synchronous msync of the whole preallocated map cost ~0.5 ms on every roll.
        drop(self.mmap.take());
        self.file.set_len(bytes).at(&self.path)?;
        if bytes > 0 {
            // SAFETY: the file is owned by this index and only changed through this map or
            // `set_len` above, with the map dropped first.
            let map = unsafe { MmapMut::map_mut(&self.file) }.at(&self.path)?;
            // Lookups and appends touch single entries: without this, the first write into a
            // fresh sparse index read megabytes of holes ahead (3-8 ms after each roll).
            map.advise(memmap2::Advice::Random).at(&self.path)?;
            self.mmap = Some(map);
        }
        Ok(())
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    pub fn is_full(&self) -> bool {
        self.entries >= self.max_entries
    }

    pub fn entry(&self, i: usize) -> &[u8] {
        debug_assert!(i < self.entries);
        let m = self.mmap.as_ref().expect("an index with entries is mapped");
        &m[i * ENTRY..(i + 1) * ENTRY]
    }

    /// Append one entry; the caller checks `is_full` first.
    pub fn push(&mut self, entry: &[u8; ENTRY]) -> Result<()> {
        if self.mmap.as_ref().map(|m| m.len()).unwrap_or(0) < (self.entries + 1) * ENTRY {
            // A trimmed index that is written again (truncation of a sealed segment) grows back.
            self.resize((self.max_entries.max(self.entries + 1) * ENTRY) as u64)?;
        }
        let at = self.entries * ENTRY;
        let m = self.mmap.as_mut().expect("mapped after resize");
        m[at..at + ENTRY].copy_from_slice(entry);
        self.entries += 1;
        Ok(())
    }

    /// Forget entries from `n` on.
    pub fn truncate_entries(&mut self, n: usize) {
        self.entries = self.entries.min(n);
    }

    /// Index of the last entry whose key (given by `key`) is <= `target`, by binary search.
    pub fn floor<K: Ord>(&self, target: K, key: impl Fn(&[u8]) -> K) -> Option<usize> {
        let (mut lo, mut hi) = (0usize, self.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if key(self.entry(mid)) <= target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }

    /// Shrink the file to its entries (on roll and clean close).
    pub fn trim(&mut self) -> Result<()> {
        self.resize((self.entries * ENTRY) as u64)
    }

    /// Grow the file back to its preallocated size (when a sealed segment becomes active again).
    pub fn preallocate(&mut self) -> Result<()> {
        self.resize((self.max_entries * ENTRY) as u64)
    }

    /// msync the entries and fdatasync the file, so a trimmed length is durable too.
    pub fn flush(&self) -> Result<()> {
        if let Some(m) = &self.mmap {
            m.flush().at(&self.path)?;
        }
        self.file.sync_data().at(&self.path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
