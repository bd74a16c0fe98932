//! One segment: `<base>.log` of record batches plus its `.index` and `.timeindex`.
//! Only the active (last) segment of a log is appended to; sealed ones are read and deleted.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::batch::{self, BatchView, HEADER_SIZE, LOG_OVERHEAD};
use super::config::LogConfig;
use super::error::{IoContext, LogError, Result};
use super::offset_index::OffsetIndex;
use super::segment_file_stem;
use super::time_index::TimeIndex;

/// Batch lengths `last_batch_end_within` reads at most: the index has an entry every
/// `index.interval.bytes` (4 KiB), so this many reach the last whole batch when batches are
/// 512 B or more; smaller ones leave an earlier boundary, a few KiB short at most.
const MAX_BOUNDARY_HOPS: usize = 8;

/// Appends reach the page cache in writes of at most this many bytes (0: one write per
/// append). Recent kernels (6.18 here) give an ext4 file page-cache folios as large as the
/// write that fills them, so a 1 MiB write asks the page allocator for 1 MiB folios (our
/// reading of the cause; the cost is what was measured). On this
/// project's 2-core VM, which returns free memory to its host (free page reporting), writing
/// 2 GiB into a new file mostly cost 1.4–2.9 CPU s per GB in 1 MiB writes against about 0.2
/// in 256 KiB ones, and the replication benchmark's RF 3 phase moved 376–413 MB/s against
/// 314–359 with one write per batch (alternated runs; docs/benchmarks.md, 2026-12-04). Four
/// writes per MiB cost nothing measurable; 16 KiB pieces cost the RF 1 leader 0.2 CPU s per
/// GB in system calls. Set by `--log-write-piece-bytes`.
static WRITE_PIECE_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_WRITE_PIECE_BYTES);

pub const DEFAULT_WRITE_PIECE_BYTES: usize = 256 * 1024;

/// Sets the largest single write of an append, for every segment of this process.
pub fn set_write_piece_bytes(bytes: usize) {
    WRITE_PIECE_BYTES.store(bytes, Ordering::Relaxed);
}

/// `bytes` written at `position` in writes of at most `WRITE_PIECE_BYTES`.
fn write_in_pieces(file: &File, bytes: &[u8], position: u64) -> std::io::Result<()> {
    let piece = match WRITE_PIECE_BYTES.load(Ordering::Relaxed) {
        0 => bytes.len().max(1),
        n => n,
    };
    let mut at = 0;
    for chunk in bytes.chunks(piece) {
        file.write_all_at(chunk, position + at)?;
        at += chunk.len() as u64;
    }
    Ok(())
}

/// Where a batch sits in a segment, read from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPosition {
    pub position: u64,
    pub size: u32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// What a scan of a segment's bytes found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub batches: u64,
    pub valid_bytes: u64,
    pub truncated_bytes: u64,
    /// Why the scan stopped early, when it did.
    pub stopped_at: Option<String>,
}

pub struct LogSegment {
    base_offset: i64,
    log_path: PathBuf,
    file: Arc<File>,
    /// Bytes of valid batches; the file is never longer after a scan or an append.
    size: u64,
    index: OffsetIndex,
    time_index: TimeIndex,
    index_interval_bytes: u64,
    bytes_since_last_index_entry: u64,
    /// Largest batch max timestamp in the segment, -1 when empty.
    max_timestamp: i64,
    /// Base offset of the batch that first reached `max_timestamp`.
    offset_of_max_timestamp: i64,
    next_offset: i64,
    /// Max timestamp of the first batch: what `segment.ms` is counted from, as in Kafka.
    first_batch_timestamp: Option<i64>,
    /// Wall clock when this segment object was created or loaded (fallback for `segment.ms`).
    created_ms: i64,
}

pub fn log_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{}.log", segment_file_stem(base_offset)))
}
pub fn index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{}.index", segment_file_stem(base_offset)))
}
pub fn time_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{}.timeindex", segment_file_stem(base_offset)))
}

impl LogSegment {
    /// Create a new, empty segment (replacing any files of the same base offset).
    pub fn create(dir: &Path, base_offset: i64, config: &LogConfig, now_ms: i64) -> Result<Self> {
        for p in [index_path(dir, base_offset), time_index_path(dir, base_offset)] {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(LogError::io(&p, e)),
                _ => {}
            }
        }
        let log_path = log_path(dir, base_offset);
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&log_path).at(&log_path)?;
        Self::with_file(dir, base_offset, log_path, file, 0, config, true, now_ms)
    }

    #[allow(clippy::too_many_arguments)]
    fn with_file(
        dir: &Path,
        base_offset: i64,
        log_path: PathBuf,
        file: File,
        size: u64,
        config: &LogConfig,
        active: bool,
        now_ms: i64,
    ) -> Result<Self> {
        let index = OffsetIndex::open(&index_path(dir, base_offset), base_offset, config.segment_index_bytes, active)?;
        let time_index =
            TimeIndex::open(&time_index_path(dir, base_offset), base_offset, config.segment_index_bytes, active)?;
        Ok(Self {
            base_offset,
            log_path,
            file: Arc::new(file),
            size,
            index,
            time_index,
            index_interval_bytes: config.index_interval_bytes,
            bytes_since_last_index_entry: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            next_offset: base_offset,
            first_batch_timestamp: None,
            created_ms: now_ms,
        })
    }

    /// Open an existing segment whose indexes are trusted (after a clean shutdown). Its tail
    /// after the last index entry is read to restore the next offset and max timestamp; an
    /// inconsistency is an error, and the caller then recovers the segment with `recover`.
    pub fn open(dir: &Path, base_offset: i64, config: &LogConfig, active: bool, now_ms: i64) -> Result<Self> {
        let log_path = log_path(dir, base_offset);
        let file = OpenOptions::new().read(true).write(true).open(&log_path).at(&log_path)?;
        let size = file.metadata().at(&log_path)?.len();
        let mut seg = Self::with_file(dir, base_offset, log_path, file, size, config, active, now_ms)?;
        seg.load_tail()?;
        Ok(seg)
    }

    /// Open an existing segment without trusting anything but its `.log`; call `recover` next.
    pub fn open_for_recovery(
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
        active: bool,
        now_ms: i64,
    ) -> Result<Self> {
        let log_path = log_path(dir, base_offset);
        let file = OpenOptions::new().read(true).write(true).open(&log_path).at(&log_path)?;
        let size = file.metadata().at(&log_path)?.len();
        Self::with_file(dir, base_offset, log_path, file, size, config, active, now_ms)
    }

    fn load_tail(&mut self) -> Result<()> {
        if !self.index_tail_consistent() || self.size > u32::MAX as u64 {
            return Err(LogError::CorruptRecord(format!("{}: index points past the log", self.log_path.display())));
        }
        if let Some((ts, off)) = self.time_index.last_entry() {
            if off < self.base_offset {
                return Err(LogError::CorruptRecord(format!("{}: bad time index", self.log_path.display())));
            }
            self.max_timestamp = ts;
            self.offset_of_max_timestamp = off;
        }
        if self.size > 0 {
            self.first_batch_timestamp = Some(self.read_header(0)?.max_timestamp);
        }
        let start = self.index.last_entry().map(|(_, pos)| pos as u64).unwrap_or(0);
        let mut pos = start;
        while pos < self.size {
            if pos + HEADER_SIZE as u64 > self.size {
                return Err(LogError::CorruptRecord(format!(
                    "{}: {} trailing bytes at {pos}",
                    self.log_path.display(),
                    self.size - pos
                )));
            }
            let b = self.read_header(pos)?;
            if pos + b.size as u64 > self.size || b.base_offset < self.base_offset {
                return Err(LogError::CorruptRecord(format!(
                    "{}: batch at {pos} is cut off or misplaced",
                    self.log_path.display()
                )));
            }
            if b.max_timestamp > self.max_timestamp {
                self.max_timestamp = b.max_timestamp;
                self.offset_of_max_timestamp = b.base_offset;
            }
            self.next_offset = b.last_offset + 1;
            self.bytes_since_last_index_entry += b.size as u64;
            pos += b.size as u64;
        }
        Ok(())
    }

    /// The last index entries must point inside the log and grow: a preallocated index whose
    /// trim never reached the disk ends in zero entries, which this catches.
    fn index_tail_consistent(&self) -> bool {
        let n = self.index.entries();
        let Some((off, pos)) = self.index.last_entry() else { return true };
        if (pos as u64) >= self.size || off < self.base_offset {
            return false;
        }
        if n >= 2 {
            let (prev_off, prev_pos) = self.index.entry_at(n - 2);
            return prev_off < off && prev_pos < pos;
        }
        true
    }

    /// Validate every batch from the start (length, magic, CRC-32C, offsets increasing),
    /// cut the file at the first invalid byte, and rebuild both indexes.
    pub fn recover(&mut self, max_batch_bytes: usize) -> Result<ScanReport> {
        let file_len = self.file.metadata().at(&self.log_path)?.len();
        self.index.clear();
        self.time_index.clear();
        self.reset_tail_state();
        let mut report = ScanReport::default();
        let mut buf = Vec::new();
        let mut pos = 0u64;
        while pos < file_len {
            match self.read_valid_batch(pos, file_len, max_batch_bytes, &mut buf) {
                Ok(b) => {
                    self.index_batch(b)?;
                    report.batches += 1;
                    pos += b.size as u64;
                }
                Err(why) => {
                    report.stopped_at = Some(format!("byte {pos}: {why}"));
                    break;
                }
            }
        }
        report.valid_bytes = pos;
        report.truncated_bytes = file_len - pos;
        if report.truncated_bytes > 0 {
            self.file.set_len(pos).at(&self.log_path)?;
            self.file.sync_data().at(&self.log_path)?;
        }
        self.size = pos;
        Ok(report)
    }

    fn read_valid_batch(
        &self,
        pos: u64,
        file_len: u64,
        max_batch_bytes: usize,
        buf: &mut Vec<u8>,
    ) -> std::result::Result<BatchPosition, String> {
        if file_len - pos < HEADER_SIZE as u64 {
            return Err(format!("{} trailing bytes are shorter than a batch header", file_len - pos));
        }
        let mut len_field = [0u8; LOG_OVERHEAD];
        self.file.read_exact_at(&mut len_field, pos).map_err(|e| e.to_string())?;
        let size = batch::batch_size(&len_field).ok_or("negative batch length")?;
        // A corrupt length must not make us read (or trust) gigabytes.
        if size < HEADER_SIZE || size as u64 > file_len - pos || size > max_batch_bytes.max(HEADER_SIZE) {
            return Err(format!("batch length {size} is impossible here"));
        }
        buf.resize(size, 0);
        self.file.read_exact_at(buf, pos).map_err(|e| e.to_string())?;
        let v = BatchView::parse(buf).map_err(|e| e.to_string())?;
        if v.base_offset() < self.next_offset.max(self.base_offset) {
            return Err(format!("offset {} goes backwards (expected >= {})", v.base_offset(), self.next_offset));
        }
        if v.last_offset() - self.base_offset > u32::MAX as i64 {
            return Err("offset does not fit the segment".into());
        }
        Ok(position_of(&v, pos))
    }

    fn reset_tail_state(&mut self) {
        self.bytes_since_last_index_entry = 0;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = self.base_offset;
        self.next_offset = self.base_offset;
        self.first_batch_timestamp = None;
    }

    /// Account one batch just placed at `b.position`: indexes and tail state.
    fn index_batch(&mut self, b: BatchPosition) -> Result<()> {
        if b.max_timestamp > self.max_timestamp {
            self.max_timestamp = b.max_timestamp;
            self.offset_of_max_timestamp = b.base_offset;
        }
        if self.first_batch_timestamp.is_none() {
            self.first_batch_timestamp = Some(b.max_timestamp);
        }
        // As Kafka: an entry before the batch that crosses the interval, so a lookup lands on
        // a batch start and scans at most `index.interval.bytes` of headers.
        if self.bytes_since_last_index_entry > self.index_interval_bytes {
            self.index.append(b.base_offset, b.position as u32)?;
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)?;
            self.bytes_since_last_index_entry = 0;
        }
        self.bytes_since_last_index_entry += b.size as u64;
        self.next_offset = b.last_offset + 1;
        Ok(())
    }

    /// Append validated batches whose offsets the log has assigned, in writes of at most
    /// `WRITE_PIECE_BYTES` (a failed write leaves the log's size where it was: the next
    /// append or a recovery overwrites or truncates whatever part of it reached the file).
    pub fn append(&mut self, batches: &[u8]) -> Result<()> {
        write_in_pieces(&self.file, batches, self.size).at(&self.log_path)?;
        let mut at = 0usize;
        while at < batches.len() {
            let v = BatchView::header_unchecked(&batches[at..]);
            self.index_batch(position_of(&v, self.size + at as u64))?;
            at += v.size();
        }
        self.size += batches.len() as u64;
        Ok(())
    }

    /// True when the indexes cannot take another entry, so the log must roll.
    pub fn indexes_full(&self) -> bool {
        self.index.is_full() || self.time_index.is_full()
    }

    /// Would appending a batch ending at `last_offset` overflow the 32-bit relative offsets?
    pub fn offset_fits(&self, last_offset: i64) -> bool {
        last_offset - self.base_offset <= u32::MAX as i64
    }

    /// How long this segment has been collecting, for `segment.ms` rolls. As in Kafka, this is
    /// the incoming batch's timestamp minus the first batch's, so producer clocks far in the
    /// past do not roll on every append; the wall clock is used for a segment with no batch.
    pub fn age_ms(&self, incoming_timestamp: i64, now_ms: i64) -> i64 {
        match self.first_batch_timestamp {
            // A first batch without a timestamp (-1) ages by the wall clock, as in Kafka.
            Some(first) if first >= 0 => incoming_timestamp - first,
            _ => now_ms - self.created_ms,
        }
    }

    pub fn read_header(&self, position: u64) -> Result<BatchPosition> {
        let h = self.header_bytes(position)?;
        Ok(position_of(&BatchView::header_unchecked(&h), position))
    }

    /// The raw header of the batch at `position` (for producer state and other header fields).
    pub fn header_bytes(&self, position: u64) -> Result<[u8; HEADER_SIZE]> {
        let mut h = [0u8; HEADER_SIZE];
        self.file.read_exact_at(&mut h, position).at(&self.log_path)?;
        Ok(h)
    }

    /// The first batch whose last offset is >= `offset`, searching from the index floor.
    pub fn find_batch(&self, offset: i64) -> Result<Option<BatchPosition>> {
        let mut pos = self.index.lookup(offset).1 as u64;
        while pos < self.size {
            let b = self.read_header(pos)?;
            if b.last_offset >= offset {
                return Ok(Some(b));
            }
            pos += b.size as u64;
        }
        Ok(None)
    }

    /// The end of a whole batch that starts at or after `from` (a batch start) and ends at
    /// or before `limit`: the last one, found by walking batch lengths from the index entry
    /// nearest below `limit`, or an earlier one if `MAX_BOUNDARY_HOPS` lengths were not enough
    /// to reach it. `None` when no batch from `from` ends within `limit`.
    pub fn last_batch_end_within(&self, from: u64, limit: u64) -> Result<Option<u64>> {
        let limit = limit.min(self.size);
        let mut pos = u64::from(self.index.floor_position(limit.min(u32::MAX as u64) as u32)).max(from);
        // An index entry is a batch start, so the batches before it are whole.
        let mut end = (pos > from).then_some(pos);
        for _ in 0..MAX_BOUNDARY_HOPS {
            if pos + LOG_OVERHEAD as u64 > limit {
                break;
            }
            let mut len_field = [0u8; LOG_OVERHEAD];
            self.file.read_exact_at(&mut len_field, pos).at(&self.log_path)?;
            let size = batch::batch_size(&len_field)
                .ok_or_else(|| LogError::CorruptRecord(format!("negative batch length at {pos}")))?;
            if pos + size as u64 > limit {
                break;
            }
            pos += size as u64;
            end = Some(pos);
        }
        Ok(end)
    }

    /// The first batch whose max timestamp is >= `timestamp`.
    pub fn find_batch_by_timestamp(&self, timestamp: i64) -> Result<Option<BatchPosition>> {
        if self.max_timestamp < timestamp {
            return Ok(None);
        }
        let start_offset = self.time_index.lookup(timestamp).map(|(_, off)| off).unwrap_or(self.base_offset);
        let mut pos = self.index.lookup(start_offset).1 as u64;
        while pos < self.size {
            let b = self.read_header(pos)?;
            if b.max_timestamp >= timestamp {
                return Ok(Some(b));
            }
            pos += b.size as u64;
        }
        Ok(None)
    }

    /// Remove every batch at or after `offset` (whole batches: the batch holding `offset`
    /// goes too). Returns the bytes removed.
    pub fn truncate_to(&mut self, offset: i64) -> Result<u64> {
        let Some(b) = self.find_batch(offset)? else { return Ok(0) };
        let removed = self.size - b.position;
        self.file.set_len(b.position).at(&self.log_path)?;
        self.size = b.position;
        self.index.truncate_to_position(b.position as u32);
        self.time_index.truncate_to_offset(b.base_offset);
        // Rebuild the tail state from the headers that remain after the last index entry.
        self.reset_tail_state();
        if let Some((ts, off)) = self.time_index.last_entry() {
            self.max_timestamp = ts;
            self.offset_of_max_timestamp = off;
        }
        if self.size > 0 {
            self.first_batch_timestamp = Some(self.read_header(0)?.max_timestamp);
        }
        let mut pos = self.index.last_entry().map(|(_, p)| p as u64).unwrap_or(0);
        while pos < self.size {
            let h = self.read_header(pos)?;
            if h.max_timestamp > self.max_timestamp {
                self.max_timestamp = h.max_timestamp;
                self.offset_of_max_timestamp = h.base_offset;
            }
            self.next_offset = h.last_offset + 1;
            self.bytes_since_last_index_entry += h.size as u64;
            pos += h.size as u64;
        }
        Ok(removed)
    }

    /// The segment stops being active: record its final max timestamp and trim the indexes.
    pub fn seal(&mut self) -> Result<()> {
        if self.max_timestamp >= 0 && !self.time_index.is_full() {
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)?;
        }
        self.index.trim()?;
        self.time_index.trim()
    }

    /// A sealed segment becomes active again (after truncation removed the ones after it).
    pub fn unseal(&mut self) -> Result<()> {
        self.index.preallocate()?;
        self.time_index.preallocate()
    }

    pub fn flush(&self) -> Result<()> {
        self.file.sync_data().at(&self.log_path)?;
        self.index.flush()?;
        self.time_index.flush()
    }

    pub fn delete(self) -> Result<()> {
        for p in [self.log_path.clone(), self.index.path().to_path_buf(), self.time_index.path().to_path_buf()] {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(LogError::io(&p, e)),
                _ => {}
            }
        }
        Ok(())
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    /// What retention.ms compares against: the largest timestamp, or the file's mtime when
    /// the segment holds no timestamps.
    pub fn retention_timestamp(&self) -> i64 {
        if self.max_timestamp >= 0 {
            return self.max_timestamp;
        }
        self.file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(self.created_ms)
    }
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    pub fn index_entries(&self) -> (usize, usize) {
        (self.index.entries(), self.time_index.entries())
    }
}

fn position_of(v: &BatchView<'_>, position: u64) -> BatchPosition {
    BatchPosition {
        position,
        size: v.size() as u32,
        base_offset: v.base_offset(),
        last_offset: v.last_offset(),
        max_timestamp: v.max_timestamp(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_in_pieces_land_where_one_write_would() {
        let dir = tempfile::tempdir().unwrap();
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(dir.path().join("f")).unwrap();
        // Longer than several pieces and not a multiple of the piece size.
        let bytes: Vec<u8> = (0..3 * DEFAULT_WRITE_PIECE_BYTES + 123).map(|i| (i * 7 % 251) as u8).collect();
        file.write_all_at(b"head", 0).unwrap();
        write_in_pieces(&file, &bytes, 4).unwrap();
        let mut back = vec![0u8; 4 + bytes.len()];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back[..4], b"head");
        assert!(back[4..] == bytes[..], "the pieces do not add up to the bytes written");
        assert_eq!(file.metadata().unwrap().len(), 4 + bytes.len() as u64);
    }
}
