//! Log compaction (`cleanup.policy=compact`, also with `delete`): keeps the newest record per
//! key, as Kafka's `LogCleaner` does, in a simplified form.
//!
//! # What a pass does
//!
//! Only sealed segments are cleaned, never the active (last) one. A pass runs when segments
//! were sealed since the last pass ([`CleanerState::cleaned_up_to`] is below the active
//! segment's base), when a tombstone kept by an earlier pass has become removable
//! ([`CleanerState::next_tombstone_expiry`]), or when `delete.retention.ms` changed.
//!
//! 1. Build a map `key -> greatest offset` over every record of every sealed segment.
//! 2. Rewrite each sealed segment keeping a record iff it has no key, or its offset is the
//!    greatest for its key; a tombstone (null value) that is the greatest for its key is kept
//!    until `now - batch max timestamp > delete.retention.ms`.
//!
//! Batches are rewritten as follows:
//! * a batch whose records all survive is copied byte for byte (so a segment in which nothing
//!   changes is not rewritten at all);
//! * an uncompressed batch that loses records keeps the surviving records' bytes verbatim
//!   (their offset and timestamp deltas stay relative to the unchanged base offset and base
//!   timestamp); `lastOffsetDelta`, `maxTimestamp`, producer id/epoch, base sequence and
//!   leader epoch are kept (as Kafka keeps the last offset, so the producer's last sequence
//!   survives); `recordsCount`, `batchLength` and the CRC-32C are fixed;
//! * a compressed batch that loses records is decompressed and recompressed with the same
//!   codec by `kafka_protocol::compression`, the surviving records again kept byte for byte
//!   and the header kept as above. (`RecordBatchEncoder` is not used: it recomputes the base
//!   offset, `lastOffsetDelta` and base sequence from the surviving records, which would
//!   move offsets and break idempotent producers' sequence checks.)
//! * a batch that loses every record is dropped, unless it has a producer id (>= 0): then it
//!   is kept as an empty, uncompressed, header-only batch (`recordsCount` 0, `batchLength` 49)
//!   so that producer state can still be rebuilt from the log, as Kafka does.
//!
//! # Simplifications (compared with Kafka)
//!
//! * The key map is an in-memory `HashMap` of whole keys over all sealed segments, rebuilt
//!   every pass; Kafka uses a bounded map of key hashes over the dirty section only.
//! * There is no `min.cleanable.dirty.ratio`: any newly sealed segment triggers a pass.
//! * Segments are cleaned one by one; small cleaned segments are not merged.
//! * Transactional and control batches are copied unchanged, and their records neither are
//!   removed nor supersede older records: aborted transactions are not tracked, so this is
//!   the choice that never loses a value a `read_committed` consumer could see. Kafka removes
//!   aborted records and, eventually, markers.
//! * Tombstone expiry is counted from the batch's max timestamp, not from a delete horizon
//!   stamped in the batch (KIP-534). Empty producer batches are never removed.
//! * Records are cleaned up to the end of the last sealed segment, not only below the high
//!   watermark / last stable offset.
//! * A batch that cannot be decoded (bad CRC, unknown codec, malformed records) is copied
//!   unchanged and its keys ignored. A segment that cannot even be walked batch by batch
//!   makes the log uncleanable until the broker restarts ([`CleanerState::uncleanable`]).
//! * The pass runs with the `Log`'s lock held (the manager locks the log around `clean`), so
//!   appends and fetches of that partition wait for it. Readers still holding a `LogSlice`
//!   of a replaced segment keep reading the old file, which stays open until they drop it.
//!
//! # Empty segments
//!
//! A sealed segment left with no batch at all is deleted, which leaves an offset gap:
//! `Log::read` then skips to the next segment, as it does for gaps inside a segment. The
//! log's first segment is never deleted (it would move the log start offset at the next
//! open): it is swapped for an empty segment instead. A swapped segment keeps the original
//! file's mtime, so `retention.ms` of an empty segment is not restarted by cleaning.
//!
//! # Crash-safe swap
//!
//! The cleaned segment is written with `LogSegment::create` in `<partition>/cleaner-tmp`,
//! sealed and flushed, then committed:
//! 1. fsync the staged `.log`, `.index`, `.timeindex` and the staging directory;
//! 2. rename the staged `<base>.log` to `<partition>/<base>.log.swap` and fsync the partition
//!    directory: **the commit point**;
//! 3. rename the staged `.index` and `.timeindex` over the final ones, fsync the directory;
//! 4. rename `<base>.log.swap` over `<base>.log`, fsync the directory;
//!
//! and the in-memory segment is replaced by the reopened one. At log open,
//! [`finish_interrupted_swaps`] runs steps 3 and 4 for every `*.log.swap` (the new contents
//! win), then deletes `cleaner-tmp` (an uncommitted pass leaves the old contents). The fsync
//! between steps guarantees that a final `.log` holding new contents never sits next to
//! the old indexes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use super::batch::{
    self, BatchMut, BatchView, ATTRIBUTES, ATTR_COMPRESSION_MASK, BATCH_LENGTH, HEADER_SIZE, LOG_OVERHEAD,
    RECORDS_COUNT,
};
use super::checkpoint::sync_dir;
use super::config::LogConfig;
use super::error::{IoContext, LogError, Result};
use super::segment::{self, LogSegment};
use super::segment_file_stem;
use super::segmented_log::Log;

/// Directory, inside a partition directory, where cleaned segments are staged.
pub const STAGING_DIR: &str = "cleaner-tmp";
/// Suffix of a committed cleaned `.log` not yet renamed over the original.
pub const SWAP_SUFFIX: &str = ".log.swap";

/// Bytes read from a segment at a time, and buffered before a write to a staged one.
const IO_CHUNK: usize = 1 << 20;

pub fn swap_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{}{SWAP_SUFFIX}", segment_file_stem(base_offset)))
}

/// Complete a cleaner swap that a crash interrupted: for every `<base>.log.swap`, move the
/// staged index files of that base over the final ones and the swap over `<base>.log` (the
/// swap was committed); then delete the staging directory (anything else in it belongs to an
/// uncommitted pass, whose segments kept their old contents). One line per repair.
pub(crate) fn finish_interrupted_swaps(dir: &Path, repairs: &mut Vec<String>) -> Result<()> {
    let staging = dir.join(STAGING_DIR);
    let mut swaps = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SWAP_SUFFIX)) else { continue };
        if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(base) = stem.parse::<i64>() {
                swaps.push(base);
            }
        }
    }
    swaps.sort_unstable();
    for base in swaps {
        complete_swap(dir, &staging, base)?;
        repairs.push(format!("segment {base}: completed an interrupted cleaner swap"));
    }
    match fs::symlink_metadata(&staging) {
        Ok(meta) => {
            let leftovers = if meta.is_dir() {
                let n = fs::read_dir(&staging).at(&staging)?.count();
                fs::remove_dir_all(&staging).at(&staging)?;
                n
            } else {
                fs::remove_file(&staging).at(&staging)?;
                1
            };
            sync_dir(dir)?;
            repairs.push(format!(
                "removed the cleaner staging directory ({leftovers} files of an uncommitted cleaning pass)"
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(LogError::io(&staging, e)),
    }
    Ok(())
}

/// Per-log cleaner progress, kept in the `Log`.
#[derive(Debug, Clone, Default)]
pub struct CleanerState {
    /// Base offset of the active segment at the last pass: segments below it are clean.
    pub cleaned_up_to: i64,
    /// Earliest time (ms) at which a tombstone kept by the last pass may be removed.
    pub next_tombstone_expiry: Option<i64>,
    /// `delete.retention.ms` the last pass used (a change triggers a pass).
    pub delete_retention_ms: Option<i64>,
    /// Why this log is not cleaned any more (a segment could not be read), until restart.
    pub uncleanable: Option<String>,
}

/// What one cleaning pass did.
#[derive(Debug, Clone, Default)]
pub struct CleanReport {
    /// Segments rewritten or deleted.
    pub segments_cleaned: usize,
    /// Segments deleted because nothing was left in them.
    pub segments_deleted: usize,
    /// Records removed, tombstones included.
    pub records_removed: u64,
    /// Tombstones removed after `delete.retention.ms`.
    pub tombstones_removed: u64,
    /// Bytes by which the cleaned segments shrank. The manager adds it to
    /// `LogMetrics::cleaner_bytes_reclaimed`; `clean` does not.
    pub bytes_reclaimed: u64,
    /// Batches copied unchanged because they could not be decoded.
    pub unreadable_batches: u64,
}

/// Compact the sealed segments of `log` if a pass is due (see the module doc). A no-op for
/// a log without `cleanup.policy=compact`.
pub fn clean(log: &mut Log, now_ms: i64) -> Result<CleanReport> {
    let mut report = CleanReport::default();
    if !log.config().cleanup_compact || log.cleaner_state.uncleanable.is_some() {
        return Ok(report);
    }
    let config = log.config().clone();
    let active_base = *log.segments().keys().next_back().expect("a log always has an active segment");
    let state = &log.cleaner_state;
    let due = state.cleaned_up_to < active_base
        || state.next_tombstone_expiry.is_some_and(|t| now_ms >= t)
        || state.delete_retention_ms != Some(config.delete_retention_ms);
    if !due {
        return Ok(report);
    }
    let staging = log.dir().join(STAGING_DIR);
    let outcome = run_pass(log, &config, active_base, &staging, now_ms, &mut report);
    if report.unreadable_batches > 0 {
        tracing::warn!(
            dir = %log.dir().display(),
            batches = report.unreadable_batches,
            "log cleaner copied batches it could not decode unchanged"
        );
    }
    match outcome {
        Ok(next_tombstone_expiry) => {
            remove_staging(log.dir(), &staging)?;
            log.cleaner_state = CleanerState {
                cleaned_up_to: active_base,
                next_tombstone_expiry,
                delete_retention_ms: Some(config.delete_retention_ms),
                uncleanable: None,
            };
            Ok(report)
        }
        Err(LogError::CorruptRecord(why)) => {
            tracing::warn!(dir = %log.dir().display(), "log cleaner: {why}; not cleaning this log until restart");
            log.cleaner_state.uncleanable = Some(why);
            remove_staging(log.dir(), &staging)?;
            Ok(report)
        }
        // The staging directory is left as is: it may hold the indexes of a committed swap,
        // which the next open completes.
        Err(e) => Err(e),
    }
}

/// One pass over the sealed segments below `active_base`. Returns the earliest expiry of
/// the tombstones it kept.
fn run_pass(
    log: &mut Log,
    config: &LogConfig,
    active_base: i64,
    staging: &Path,
    now_ms: i64,
    report: &mut CleanReport,
) -> Result<Option<i64>> {
    let sealed: Vec<i64> = log.segments().range(..active_base).map(|(b, _)| *b).collect();
    let Some(&first_base) = sealed.first() else { return Ok(None) };
    let latest = build_offset_map(log, &sealed)?;
    let mut filter = Filter {
        latest: &latest,
        now_ms,
        delete_retention_ms: config.delete_retention_ms,
        next_tombstone_expiry: None,
        records_removed: 0,
        tombstones_removed: 0,
        unreadable_batches: 0,
    };
    for &base in &sealed {
        let seg = &log.segments()[&base];
        let old_size = seg.size();
        let rewritten = rewrite_segment(seg, staging, config, &mut filter, now_ms)?;
        report.records_removed = filter.records_removed;
        report.tombstones_removed = filter.tombstones_removed;
        report.unreadable_batches = filter.unreadable_batches;
        let Some(new_size) = rewritten else { continue };
        let mtime = seg.file().metadata().and_then(|m| m.modified()).ok();
        report.segments_cleaned += 1;
        report.bytes_reclaimed += old_size.saturating_sub(new_size);
        if new_size == 0 && base != first_base {
            let seg = log.segments_mut().remove(&base).expect("listed above");
            seg.delete()?;
            log.metrics().segments.dec();
            report.segments_deleted += 1;
        } else {
            let dir = log.dir().to_path_buf();
            commit_swap(&dir, staging, base, mtime)?;
            let seg = reopen(&dir, base, config, now_ms)?;
            log.segments_mut().insert(base, seg);
        }
    }
    Ok(filter.next_tombstone_expiry)
}

/// key -> greatest offset over the records of the sealed segments that may be cleaned.
fn build_offset_map(log: &Log, sealed: &[i64]) -> Result<HashMap<Vec<u8>, i64>> {
    let mut latest: HashMap<Vec<u8>, i64> = HashMap::new();
    for base in sealed {
        let seg = &log.segments()[base];
        let mut reader = BatchReader::new(seg, seg.size());
        while let Some((_, bytes)) = reader.next()? {
            let Ok(v) = BatchView::parse(bytes) else { continue };
            if v.is_control() || v.is_transactional() {
                continue;
            }
            let Some(body) = records_body(&v) else { continue };
            let Some(records) = parse_records(&body, v.records_count(), v.last_offset_delta()) else { continue };
            for r in &records {
                let Some(key) = r.key else { continue };
                let offset = v.base_offset() + r.offset_delta;
                match latest.get_mut(key) {
                    Some(o) => *o = (*o).max(offset),
                    None => {
                        latest.insert(key.to_vec(), offset);
                    }
                }
            }
        }
    }
    Ok(latest)
}

/// Stage the cleaned copy of `seg`. `None` when nothing in it changes (nothing is staged);
/// otherwise the staged segment's size, its files sealed and flushed in `staging`.
fn rewrite_segment(
    seg: &LogSegment,
    staging: &Path,
    config: &LogConfig,
    filter: &mut Filter<'_>,
    now_ms: i64,
) -> Result<Option<u64>> {
    let mut reader = BatchReader::new(seg, seg.size());
    let mut staged: Option<StagedSegment> = None;
    while let Some((position, bytes)) = reader.next()? {
        let outcome = filter.filter_batch(bytes);
        if let (Outcome::Keep, None) = (&outcome, &staged) {
            continue;
        }
        let out = match &mut staged {
            Some(s) => s,
            None => {
                // First change in this segment: start the copy with the unchanged batches before it.
                let mut s = StagedSegment::create(staging, seg.base_offset(), config, now_ms)?;
                let mut prefix = BatchReader::new(seg, position);
                while let Some((_, b)) = prefix.next()? {
                    s.push(b)?;
                }
                staged.insert(s)
            }
        };
        match outcome {
            Outcome::Keep => out.push(bytes)?,
            Outcome::Drop => {}
            Outcome::Rewrite(b) => out.push(&b)?,
        }
    }
    staged.map(StagedSegment::finish).transpose()
}

enum Outcome {
    Keep,
    Drop,
    Rewrite(Vec<u8>),
}

struct Filter<'a> {
    latest: &'a HashMap<Vec<u8>, i64>,
    now_ms: i64,
    delete_retention_ms: i64,
    next_tombstone_expiry: Option<i64>,
    records_removed: u64,
    tombstones_removed: u64,
    unreadable_batches: u64,
}

impl Filter<'_> {
    fn filter_batch(&mut self, bytes: &[u8]) -> Outcome {
        let Ok(v) = BatchView::parse(bytes) else {
            self.unreadable_batches += 1;
            return Outcome::Keep;
        };
        if v.is_control() || v.is_transactional() {
            return Outcome::Keep;
        }
        let Some(body) = records_body(&v) else {
            self.unreadable_batches += 1;
            return Outcome::Keep;
        };
        let Some(records) = parse_records(&body, v.records_count(), v.last_offset_delta()) else {
            self.unreadable_batches += 1;
            return Outcome::Keep;
        };
        let Some((kept, tombstones)) = self.select(&v, &records) else { return Outcome::Keep };
        let outcome = if kept.is_empty() && v.producer_id() < 0 {
            Outcome::Drop
        } else {
            match rebuild(&v, &kept) {
                Some(b) => Outcome::Rewrite(b),
                // Recompression failed: keep the batch as it is.
                None => return Outcome::Keep,
            }
        };
        self.records_removed += (records.len() - kept.len()) as u64;
        self.tombstones_removed += tombstones;
        outcome
    }

    /// The raw bytes of the records of `v` to keep and the number of tombstones removed, or
    /// `None` when every record stays.
    fn select<'r>(&mut self, v: &BatchView<'_>, records: &[Record<'r>]) -> Option<(Vec<&'r [u8]>, u64)> {
        let expired = self.now_ms.saturating_sub(v.max_timestamp()) > self.delete_retention_ms;
        let expiry = v.max_timestamp().saturating_add(self.delete_retention_ms).saturating_add(1);
        let mut kept = Vec::with_capacity(records.len());
        let mut tombstones_removed = 0;
        for r in records {
            let keep = match r.key {
                None => true,
                Some(key) => {
                    let offset = v.base_offset() + r.offset_delta;
                    let newest = self.latest.get(key).is_none_or(|&o| o <= offset);
                    if newest && r.tombstone && expired {
                        tombstones_removed += 1;
                        false
                    } else {
                        if newest && r.tombstone {
                            self.next_tombstone_expiry =
                                Some(self.next_tombstone_expiry.map_or(expiry, |t| t.min(expiry)));
                        }
                        newest
                    }
                }
            };
            if keep {
                kept.push(r.raw);
            }
        }
        (kept.len() < records.len()).then_some((kept, tombstones_removed))
    }
}

/// The batch `v` holding only `kept` (raw records of it); header-only, uncompressed (an
/// empty payload is not a valid compressed stream) when `kept` is empty. `None` if it could
/// not be recompressed.
fn rebuild(v: &BatchView<'_>, kept: &[&[u8]]) -> Option<Vec<u8>> {
    let header = &v.bytes()[..HEADER_SIZE];
    if kept.is_empty() {
        let mut out = header.to_vec();
        let attributes = v.attributes() & !ATTR_COMPRESSION_MASK;
        out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        finish_header(&mut out, 0);
        return Some(out);
    }
    let raw_len: usize = kept.iter().map(|r| r.len()).sum();
    let mut out = Vec::with_capacity(HEADER_SIZE + raw_len);
    out.extend_from_slice(header);
    if v.compression() == 0 {
        kept.iter().for_each(|r| out.extend_from_slice(r));
    } else {
        let mut raw = Vec::with_capacity(raw_len);
        kept.iter().for_each(|r| raw.extend_from_slice(r));
        compress(v.compression(), &raw, &mut out).ok()?;
    }
    finish_header(&mut out, kept.len() as i32);
    Some(out)
}

/// Set `batchLength` and `recordsCount` of the batch in `out` and recompute its CRC-32C.
fn finish_header(out: &mut [u8], records: i32) {
    let length = (out.len() - LOG_OVERHEAD) as i32;
    out[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    out[RECORDS_COUNT..RECORDS_COUNT + 4].copy_from_slice(&records.to_be_bytes());
    BatchMut::new(out).update_crc();
    debug_assert!(BatchView::parse(out).is_ok());
}

/// The records of a batch, decompressed if need be. `None` if they cannot be.
fn records_body<'a>(v: &BatchView<'a>) -> Option<Cow<'a, [u8]>> {
    let payload = &v.bytes()[HEADER_SIZE..];
    match v.compression() {
        0 => Some(Cow::Borrowed(payload)),
        codec => decompress(codec, payload).ok().map(|b| Cow::Owned(Vec::from(b))),
    }
}

fn decompress(codec: i16, mut data: &[u8]) -> anyhow::Result<Bytes> {
    fn take(b: &mut Bytes) -> anyhow::Result<Bytes> {
        Ok(std::mem::take(b))
    }
    match codec {
        1 => Gzip::decompress(&mut data, take),
        2 => Snappy::decompress(&mut data, take),
        3 => Lz4::decompress(&mut data, take),
        4 => Zstd::decompress(&mut data, take),
        c => anyhow::bail!("unknown compression codec {c}"),
    }
}

fn compress(codec: i16, raw: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
    let fill = |tmp: &mut BytesMut| {
        tmp.extend_from_slice(raw);
        Ok(())
    };
    match codec {
        1 => Gzip::compress(out, fill),
        2 => Snappy::compress(out, fill),
        3 => Lz4::compress(out, fill),
        4 => Zstd::compress(out, fill),
        c => anyhow::bail!("unknown compression codec {c}"),
    }
}

/// One record of a batch, as far as the cleaner looks into it.
struct Record<'a> {
    /// The whole record, its length prefix included.
    raw: &'a [u8],
    offset_delta: i64,
    key: Option<&'a [u8]>,
    tombstone: bool,
}

/// Zig-zag varint (up to 64 bits) at `*pos`.
fn read_varint(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z = 0u64;
    for i in 0..10 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        z |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Some((z >> 1) as i64 ^ -((z & 1) as i64));
        }
    }
    None
}

/// A varint length (-1 = null) followed by that many bytes.
fn read_nullable_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = read_varint(buf, pos)?;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let end = pos.checked_add(len).filter(|&e| e <= buf.len())?;
    let bytes = &buf[*pos..end];
    *pos = end;
    Some(Some(bytes))
}

/// Exactly `count` records filling `body`, with offset deltas in `0..=last_offset_delta`;
/// `None` if the bytes are not that.
fn parse_records(body: &[u8], count: i32, last_offset_delta: i32) -> Option<Vec<Record<'_>>> {
    let mut records = Vec::with_capacity(count.clamp(0, 1 << 16) as usize);
    let mut pos = 0usize;
    for _ in 0..count {
        let start = pos;
        let len = usize::try_from(read_varint(body, &mut pos)?).ok()?;
        let end = pos.checked_add(len).filter(|&e| e <= body.len())?;
        let rec = &body[pos..end];
        let mut p = 1; // attributes (i8)
        if rec.is_empty() {
            return None;
        }
        read_varint(rec, &mut p)?; // timestampDelta
        let offset_delta = read_varint(rec, &mut p)?;
        if !(0..=last_offset_delta as i64).contains(&offset_delta) {
            return None;
        }
        let key = read_nullable_bytes(rec, &mut p)?;
        let value = read_nullable_bytes(rec, &mut p)?;
        records.push(Record { raw: &body[start..end], offset_delta, key, tombstone: value.is_none() });
        pos = end;
    }
    (pos == body.len()).then_some(records)
}

/// Walks the batches of a segment's first `end` bytes, reading the file in large chunks.
struct BatchReader<'a> {
    seg: &'a LogSegment,
    end: u64,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> BatchReader<'a> {
    fn new(seg: &'a LogSegment, end: u64) -> Self {
        Self { seg, end, pos: 0, buf: Vec::new(), buf_start: 0 }
    }

    /// The next batch (position, bytes), not validated beyond its length.
    fn next(&mut self) -> Result<Option<(u64, &[u8])>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let left = self.end - self.pos;
        let (seg, pos) = (self.seg, self.pos);
        let corrupt =
            |what: String| LogError::CorruptRecord(format!("{}: byte {pos}: {what}", seg.log_path().display()));
        if left < HEADER_SIZE as u64 {
            return Err(corrupt(format!("{left} trailing bytes are shorter than a batch header")));
        }
        self.fill(LOG_OVERHEAD)?;
        let at = (self.pos - self.buf_start) as usize;
        let size = batch::batch_size(&self.buf[at..])
            .filter(|&s| s >= HEADER_SIZE && s as u64 <= left)
            .ok_or_else(|| corrupt("impossible batch length".into()))?;
        self.fill(size)?;
        let at = (self.pos - self.buf_start) as usize;
        let position = self.pos;
        self.pos += size as u64;
        Ok(Some((position, &self.buf[at..at + size])))
    }

    /// Make `buf` hold the `n` bytes at `pos` (`n <= end - pos`).
    fn fill(&mut self, n: usize) -> Result<()> {
        let buf_end = self.buf_start + self.buf.len() as u64;
        if self.pos >= self.buf_start && self.pos + n as u64 <= buf_end {
            return Ok(());
        }
        let len = (n.max(IO_CHUNK) as u64).min(self.end - self.pos) as usize;
        self.buf.resize(len, 0);
        self.seg.file().read_exact_at(&mut self.buf, self.pos).at(self.seg.log_path())?;
        self.buf_start = self.pos;
        Ok(())
    }
}

/// A cleaned segment being written in the staging directory.
struct StagedSegment {
    seg: LogSegment,
    pending: Vec<u8>,
}

impl StagedSegment {
    fn create(staging: &Path, base_offset: i64, config: &LogConfig, now_ms: i64) -> Result<Self> {
        fs::create_dir_all(staging).at(staging)?;
        Ok(Self { seg: LogSegment::create(staging, base_offset, config, now_ms)?, pending: Vec::new() })
    }

    fn push(&mut self, batch: &[u8]) -> Result<()> {
        self.pending.extend_from_slice(batch);
        if self.pending.len() >= IO_CHUNK {
            self.seg.append(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Write what is buffered, seal and flush; the size of the staged `.log`.
    fn finish(mut self) -> Result<u64> {
        if !self.pending.is_empty() {
            self.seg.append(&self.pending)?;
        }
        self.seg.seal()?;
        self.seg.flush()?;
        Ok(self.seg.size())
    }
}

/// Commit the staged segment `base` and install it over the original (module doc, steps 1-4).
fn commit_swap(dir: &Path, staging: &Path, base: i64, mtime: Option<SystemTime>) -> Result<()> {
    let staged_log = segment::log_path(staging, base);
    let f = OpenOptions::new().write(true).open(&staged_log).at(&staged_log)?;
    if let Some(t) = mtime {
        f.set_modified(t).at(&staged_log)?;
    }
    f.sync_all().at(&staged_log)?;
    drop(f);
    for p in [segment::index_path(staging, base), segment::time_index_path(staging, base)] {
        File::open(&p).and_then(|f| f.sync_all()).at(&p)?;
    }
    sync_dir(staging)?;
    let swap = swap_path(dir, base);
    fs::rename(&staged_log, &swap).at(&swap)?;
    sync_dir(dir)?;
    complete_swap(dir, staging, base)
}

/// Steps 3 and 4 of the swap of `base`, after its commit point. Idempotent.
fn complete_swap(dir: &Path, staging: &Path, base: i64) -> Result<()> {
    let moves = [
        (segment::index_path(staging, base), segment::index_path(dir, base)),
        (segment::time_index_path(staging, base), segment::time_index_path(dir, base)),
    ];
    for (staged, last) in moves {
        match fs::rename(&staged, &last) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(LogError::io(&last, e)),
            _ => {}
        }
    }
    sync_dir(dir)?;
    let final_log = segment::log_path(dir, base);
    fs::rename(swap_path(dir, base), &final_log).at(&final_log)?;
    sync_dir(dir)
}

/// Open a segment just swapped in; its indexes are fresh, but rebuild them rather than fail.
fn reopen(dir: &Path, base: i64, config: &LogConfig, now_ms: i64) -> Result<LogSegment> {
    match LogSegment::open(dir, base, config, false, now_ms) {
        Err(LogError::CorruptRecord(_)) => {
            let mut seg = LogSegment::open_for_recovery(dir, base, config, false, now_ms)?;
            seg.recover(usize::MAX)?;
            seg.seal()?;
            Ok(seg)
        }
        other => other,
    }
}

/// Remove the staging directory, unless a committed swap still needs the files in it.
fn remove_staging(dir: &Path, staging: &Path) -> Result<()> {
    let swap_pending = fs::read_dir(dir)
        .at(dir)?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(SWAP_SUFFIX)));
    if swap_pending {
        return Ok(());
    }
    match fs::remove_dir_all(staging) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(LogError::io(staging, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{build_batch, put_varint};

    #[test]
    fn varints_round_trip() {
        for v in [0i64, 1, -1, 63, -64, 64, 300, -300, i32::MAX as i64, i64::MIN, i64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut p = 0;
            assert_eq!(read_varint(&b, &mut p), Some(v));
            assert_eq!(p, b.len());
        }
        assert_eq!(read_varint(&[0x80, 0x80], &mut 0), None);
    }

    #[test]
    fn records_of_a_built_batch_parse() {
        let b = build_batch(&[(Some(b"k1"), Some(b"v")), (None, Some(b"x")), (Some(b"k2"), None)], 7);
        let v = BatchView::parse(&b).unwrap();
        let body = records_body(&v).unwrap();
        let r = parse_records(&body, 3, 2).unwrap();
        assert_eq!(r.iter().map(|r| r.offset_delta).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(r[0].key, Some(&b"k1"[..]));
        assert_eq!(r[1].key, None);
        assert!(!r[0].tombstone && r[2].tombstone);
        assert_eq!(r.iter().map(|r| r.raw.len()).sum::<usize>(), body.len());
        // Wrong count or a delta beyond lastOffsetDelta: not trusted.
        assert!(parse_records(&body, 2, 2).is_none());
        assert!(parse_records(&body, 3, 1).is_none());
    }

    #[test]
    fn rebuilt_batch_keeps_offsets_and_validates() {
        let mut b = build_batch(&[(Some(b"a"), Some(b"1")), (Some(b"b"), Some(b"2")), (Some(b"a"), Some(b"3"))], 50);
        BatchMut::new(&mut b).set_base_offset(100);
        let v = BatchView::parse(&b).unwrap();
        let body = records_body(&v).unwrap();
        let r = parse_records(&body, 3, 2).unwrap();
        let out = rebuild(&v, &[r[1].raw, r[2].raw]).unwrap();
        let n = BatchView::parse(&out).unwrap();
        assert_eq!((n.base_offset(), n.last_offset(), n.records_count()), (100, 102, 2));
        assert_eq!((n.base_timestamp(), n.max_timestamp()), (50, 52));
        let body = records_body(&n).unwrap();
        let r = parse_records(&body, 2, 2).unwrap();
        assert_eq!(r.iter().map(|r| r.offset_delta).collect::<Vec<_>>(), vec![1, 2]);
        let empty = rebuild(&v, &[]).unwrap();
        let e = BatchView::parse(&empty).unwrap();
        assert_eq!((e.size(), e.records_count(), e.last_offset(), e.compression()), (HEADER_SIZE, 0, 102, 0));
    }
}
