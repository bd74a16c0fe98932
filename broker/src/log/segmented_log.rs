//! The log of one partition: an ordered set of segments, the last one active.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::batch::{BatchMut, BatchView};
use super::config::{LogConfig, TimestampType};
use super::dir_failure::LogDirFailure;
use super::error::{IoContext, LogError, Result};
use super::leader_epoch::{EpochEntry, LeaderEpochCache};
use super::metrics::LogMetrics;
use super::producer_snapshot;
use super::producer_state::{ProducerState, SequenceCheck};
use super::segment::{BatchPosition, LogSegment};

/// What one append wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// Set when `message.timestamp.type=LogAppendTime` stamped the batches.
    pub log_append_time: Option<i64>,
    pub batches: usize,
    pub records: u64,
    pub bytes: usize,
    /// An idempotent producer's retry of a batch already in the log: nothing was written and
    /// the offsets are the original ones.
    pub duplicate: bool,
}

/// A byte range of a segment file holding whole batches (only a first batch larger than
/// `max_bytes`, read without `min_one`, comes cut, as Kafka's fetch allows). Read it with
/// `read_into`, or send it with sendfile.
#[derive(Debug, Clone)]
pub struct LogSlice {
    pub file: Arc<File>,
    pub position: u64,
    pub len: usize,
    /// Base offset of the first batch in the slice (may be below the offset asked for).
    pub first_batch_offset: i64,
}

impl LogSlice {
    /// Append the slice's bytes to `buf`. They are read straight into the vector's spare
    /// capacity: zero-filling it first would cost as much as a second copy (fetch reads up to
    /// `max.partition.fetch.bytes` per partition on every request).
    pub fn read_into(&self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        buf.reserve(self.len);
        let start = buf.len();
        let mut done = 0usize;
        while done < self.len {
            let spare = &mut buf.spare_capacity_mut()[done..self.len];
            // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by `buf`; pread
            // writes at most that many bytes and the file descriptor stays open (`self.file`).
            let n = unsafe {
                libc::pread(
                    self.file.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                    (self.position + done as u64) as libc::off_t,
                )
            };
            match n {
                n if n > 0 => done += n as usize,
                0 => {
                    // The file is shorter than the slice (truncated since it was located).
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "segment ended before the end of the slice",
                    ));
                }
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        // SAFETY: pread initialised exactly `self.len` bytes after `start`.
        unsafe { buf.set_len(start + self.len) };
        Ok(())
    }

    pub fn to_vec(&self) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(self.len);
        self.read_into(&mut v)?;
        Ok(v)
    }
}

/// What opening a log had to repair.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub segments_recovered: usize,
    pub truncated_bytes: u64,
    pub segments_deleted: usize,
    /// The producer state came from the snapshot at this offset (and the batches after it)
    /// rather than from every batch header.
    pub producer_snapshot: Option<i64>,
    /// Human-readable lines, one per repair, for the broker log.
    pub repairs: Vec<String>,
}

pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<i64, LogSegment>,
    log_start_offset: i64,
    /// Everything below this offset is known to be on disk (fsynced).
    recovery_point: i64,
    unflushed_records: u64,
    last_flush_ms: i64,
    metrics: LogMetrics,
    /// The cleaner's progress on this log (in memory: after a restart it cleans once more).
    pub(crate) cleaner_state: super::cleaner::CleanerState,
    /// Idempotent producers' sequences, restored at open from the newest snapshot and the
    /// batch headers after it.
    producers: ProducerState,
    /// First offset of every leader epoch (`leader-epoch-checkpoint`).
    epochs: LeaderEpochCache,
    /// The data directory this log reports write failures to, if its owner watches one
    /// (the `LogManager`'s logs do; AMQP queue stores handle their errors themselves).
    dir_failure: Option<LogDirFailure>,
    /// Set by `LogManager::delete`, under the log's lock, before it removes the directory: a
    /// holder of this log (a request handler that looked it up before the delete) must not
    /// write into a directory that is gone, and such an attempt says nothing about the disk.
    deleted: bool,
    /// Unique among the logs this process opened. A partition's log deleted and made again
    /// (a topic deleted and created under the same name) is another instance, so state kept
    /// beside a log (the replication's high watermark) can tell it belongs to an older one.
    instance: u64,
}

static NEXT_LOG_INSTANCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Log {
    /// This log's instance number (see the field).
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// Open (or create) the log in `dir`. Without `clean_shutdown`, every segment holding
    /// offsets at or after `recovery_point` is scanned and cut at its first invalid byte, and
    /// the segments after a cut are deleted (they would leave a hole).
    pub fn open(
        dir: &Path,
        config: LogConfig,
        recovery_point: i64,
        log_start_offset: i64,
        clean_shutdown: bool,
        metrics: LogMetrics,
        now_ms: i64,
    ) -> Result<(Self, RecoveryReport)> {
        std::fs::create_dir_all(dir).at(dir)?;
        let mut report = RecoveryReport::default();
        super::cleaner::finish_interrupted_swaps(dir, &mut report.repairs)?;

        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).at(dir)? {
            let entry = entry.at(dir)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            match super::parse_offset_file_name(name) {
                Some((base, "log")) => bases.push(base),
                Some((base, "index" | "timeindex")) if !super::segment::log_path(dir, base).exists() => {
                    // An index without its log (a crash during deletion) is dropped.
                    std::fs::remove_file(entry.path()).at(&entry.path())?;
                }
                _ => {}
            }
        }
        bases.sort_unstable();

        let mut segments = BTreeMap::new();
        let mut cut = false;
        for (i, &base) in bases.iter().enumerate() {
            let path = super::segment::log_path(dir, base);
            if cut {
                std::fs::remove_file(&path).at(&path)?;
                let _ = std::fs::remove_file(super::segment::index_path(dir, base));
                let _ = std::fs::remove_file(super::segment::time_index_path(dir, base));
                report.segments_deleted += 1;
                report.repairs.push(format!("deleted segment {base} after a truncated one"));
                continue;
            }
            let active = i + 1 == bases.len();
            let next_base = bases.get(i + 1).copied().unwrap_or(i64::MAX);
            let must_scan = !clean_shutdown && next_base > recovery_point;
            let opened = if must_scan {
                Err(LogError::CorruptRecord("not shut down cleanly".into()))
            } else {
                LogSegment::open(dir, base, &config, active, now_ms)
            };
            let mut seg = match opened {
                Ok(seg) => seg,
                Err(LogError::CorruptRecord(why)) => {
                    let mut seg = LogSegment::open_for_recovery(dir, base, &config, active, now_ms)?;
                    let scan = seg.recover(usize::MAX)?;
                    report.segments_recovered += 1;
                    if let Some(stop) = &scan.stopped_at {
                        report.truncated_bytes += scan.truncated_bytes;
                        report.repairs.push(format!(
                            "segment {base}: truncated {} bytes at {stop} ({why}); kept {} batches",
                            scan.truncated_bytes, scan.batches
                        ));
                        cut = true;
                    }
                    if !active && !cut {
                        seg.seal()?;
                    }
                    seg
                }
                Err(e) => return Err(e),
            };
            if cut && !active {
                // This segment becomes the last one: it is appended to again.
                seg.unseal()?;
            }
            segments.insert(base, seg);
        }
        if segments.is_empty() {
            let base = log_start_offset.max(0);
            segments.insert(base, LogSegment::create(dir, base, &config, now_ms)?);
        }
        let first_base = *segments.keys().next().expect("at least one segment");
        let mut log = Self {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset: log_start_offset.max(first_base),
            recovery_point: 0,
            unflushed_records: 0,
            last_flush_ms: now_ms,
            metrics,
            cleaner_state: Default::default(),
            producers: ProducerState::default(),
            epochs: LeaderEpochCache::empty(dir),
            dir_failure: None,
            deleted: false,
            instance: NEXT_LOG_INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        if log.log_start_offset > log.log_end_offset() {
            log.log_start_offset = log.log_end_offset();
        }
        // Without a usable leader-epoch checkpoint (damaged, or missing beside batches)
        // every header is read, to rebuild it.
        let checkpoint = LeaderEpochCache::load(dir)?;
        let has_batches = log.segments.values().any(|s| !s.is_empty());
        let every_header = checkpoint.as_ref().is_none_or(|c| c.entries().is_empty() && has_batches);
        let (scanned_epochs, snapshot) = log.load_producer_state(every_header)?;
        report.producer_snapshot = snapshot;
        log.prune_producer_snapshots()?;
        log.recovery_point = log.log_end_offset();
        log.load_leader_epochs(checkpoint, scanned_epochs, &mut report)?;
        log.metrics.segments.add(log.segments.len() as i64);
        log.metrics.recovery_truncated_bytes.inc_by(report.truncated_bytes);
        Ok((log, report))
    }

    /// Restore the idempotent producers' sequences: from the newest valid snapshot at or
    /// below the log end (snapshots above it describe batches that are gone, and are
    /// deleted), then the batch headers from there on; with `every_header`, or without a
    /// snapshot, from the first batch. Returns where each leader epoch first appears in the
    /// headers read (for the leader-epoch cache), and the snapshot used.
    fn load_producer_state(&mut self, every_header: bool) -> Result<(Vec<EpochEntry>, Option<i64>)> {
        let leo = self.log_end_offset();
        let first_base = *self.segments.keys().next().expect("a log always has a segment");
        if producer_snapshot::delete_above(&self.dir, leo)? {
            // Durably gone before anything is appended past them again.
            super::checkpoint::sync_dir(&self.dir)?;
        }
        self.producers.clear();
        let mut from = first_base;
        let mut snapshot = None;
        if !every_header {
            for offset in producer_snapshot::list(&self.dir)?.into_iter().rev() {
                match producer_snapshot::read(&self.dir, offset)? {
                    Some(state) => {
                        self.producers = state;
                        from = offset.max(first_base);
                        snapshot = Some(offset);
                        break;
                    }
                    None => producer_snapshot::delete(&self.dir, offset)?,
                }
            }
        }
        self.producers.remove_below(self.log_start_offset);
        let mut epochs: Vec<EpochEntry> = Vec::new();
        for seg in self.segments.values() {
            if seg.next_offset() <= from {
                continue;
            }
            // Snapshots are taken at batch boundaries: the batch starting at `from` is the
            // first one the snapshot does not hold.
            let mut pos =
                if seg.base_offset() < from { seg.find_batch(from)?.map_or(seg.size(), |b| b.position) } else { 0 };
            while pos < seg.size() {
                let h = seg.header_bytes(pos)?;
                let v = BatchView::header_unchecked(&h);
                if ProducerState::is_idempotent(&v) && v.last_offset() >= self.log_start_offset {
                    self.producers.record(&v);
                }
                let epoch = v.partition_leader_epoch();
                if epoch >= 0 && epochs.last().is_none_or(|e| epoch > e.epoch) {
                    epochs.push(EpochEntry { epoch, start_offset: v.base_offset().max(self.log_start_offset) });
                }
                pos += v.size() as u64;
            }
        }
        Ok((epochs, snapshot))
    }

    /// Keep the snapshots at segment bases and the newest one; others (the log end at an
    /// earlier clean close, bases of segments the cleaner emptied) are no longer needed.
    fn prune_producer_snapshots(&self) -> Result<()> {
        let offsets = producer_snapshot::list(&self.dir)?;
        let newest = offsets.last().copied();
        for o in offsets {
            if Some(o) != newest && !self.segments.contains_key(&o) {
                producer_snapshot::delete(&self.dir, o)?;
            }
        }
        Ok(())
    }

    /// After segments below the new first one were deleted: their snapshots go, and so do
    /// the producers whose every batch is below the log start.
    fn forget_below_log_start(&mut self) -> Result<()> {
        let first_base = *self.segments.keys().next().expect("a log always has a segment");
        producer_snapshot::delete_below(&self.dir, first_base)?;
        self.producers.remove_below(self.log_start_offset);
        Ok(())
    }

    /// Load `leader-epoch-checkpoint` and make it agree with the log as recovered: entries
    /// past the log end (a crash between the checkpoint and the data reaching disk) or
    /// below the log start go; epochs newer than the checkpoint's latest, seen in the batch
    /// headers, are added. A missing or damaged file is rebuilt from the headers alone.
    fn load_leader_epochs(
        &mut self,
        checkpoint: Option<LeaderEpochCache>,
        scanned: Vec<EpochEntry>,
        report: &mut RecoveryReport,
    ) -> Result<()> {
        match checkpoint {
            Some(mut cache) => {
                let before = cache.entries().to_vec();
                let mut changed = false;
                for e in scanned {
                    if cache.latest_epoch().is_none_or(|latest| e.epoch > latest) {
                        changed |= cache.assign_in_memory(e.epoch, e.start_offset);
                    }
                }
                if changed {
                    cache.flush()?;
                }
                let end = self.log_end_offset();
                cache.truncate_from_end(end)?;
                cache.truncate_from_start(self.log_start_offset)?;
                // An epoch that began at the log end and wrote nothing goes too, as Kafka drops
                // it on load; that is the ordinary state of an idle partition, not damage.
                let not_at_the_end = |e: &&EpochEntry| e.start_offset != end;
                if !cache.entries().iter().eq(before.iter().filter(not_at_the_end)) {
                    report.repairs.push(format!("leader-epoch cache {before:?} -> {:?}", cache.entries()));
                }
                self.epochs = cache;
            }
            None => {
                report.repairs.push("leader-epoch checkpoint damaged; rebuilt from the batch headers".into());
                self.epochs.set_entries(scanned);
                self.epochs.flush()?;
            }
        }
        Ok(())
    }

    /// Report this log's write failures to `failure`, and refuse writes once it has failed.
    pub(crate) fn attach_dir_failure(&mut self, failure: LogDirFailure) {
        self.dir_failure = Some(failure);
    }

    /// Called with the log locked, before its directory is removed: every later write is
    /// refused with `LogError::Deleted`.
    pub(crate) fn mark_deleted(&mut self) {
        self.deleted = true;
    }

    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// Run a write: refused once the log was deleted or the data directory has failed, and
    /// an I/O error from it marks the directory failed.
    fn guarded<T>(&mut self, write: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.deleted {
            return Err(LogError::Deleted { path: self.dir.clone() });
        }
        if let Some(reason) = self.dir_failure.as_ref().and_then(LogDirFailure::reason) {
            let refused = std::io::Error::other(format!("the data directory failed earlier ({reason})"));
            return Err(LogError::io(&self.dir, refused));
        }
        let result = write(self);
        if let (Err(e), Some(failure)) = (&result, &self.dir_failure) {
            failure.record(e);
        }
        result
    }

    /// The active segment's file, for owners that fsync appends outside their own lock
    /// (the group commit of AMQP queue stores).
    pub fn active_file(&self) -> &Arc<File> {
        self.active().file()
    }
    fn active(&self) -> &LogSegment {
        self.segments.values().next_back().expect("a log always has an active segment")
    }
    fn active_mut(&mut self) -> &mut LogSegment {
        self.segments.values_mut().next_back().expect("a log always has an active segment")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    /// The next offset to be assigned (LEO).
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size()).sum()
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }
    pub fn leader_epochs(&self) -> &LeaderEpochCache {
        &self.epochs
    }
    /// The latest leader epoch that wrote to this log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }
    /// OffsetForLeaderEpoch against this log: `(epoch, end offset)`, see
    /// `LeaderEpochCache::end_offset_for`.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }
    pub(crate) fn metrics(&self) -> &LogMetrics {
        &self.metrics
    }
    pub(crate) fn segments(&self) -> &BTreeMap<i64, LogSegment> {
        &self.segments
    }
    pub(crate) fn segments_mut(&mut self) -> &mut BTreeMap<i64, LogSegment> {
        &mut self.segments
    }

    /// Validate `batches` (one or more v2 batches, as a producer sends them), assign offsets
    /// from the log end and the leader epoch, stamp LogAppendTime if configured, and write
    /// them with one write. Nothing is written unless every batch is valid.
    pub fn append(&mut self, batches: &mut [u8], leader_epoch: i32, now_ms: i64) -> Result<AppendInfo> {
        self.guarded(|log| log.append_unguarded(batches, leader_epoch, now_ms))
    }

    fn append_unguarded(&mut self, batches: &mut [u8], leader_epoch: i32, now_ms: i64) -> Result<AppendInfo> {
        let mut offsets = 0i64;
        let mut records = 0u64;
        let mut count = 0usize;
        let mut max_timestamp = -1i64;
        let mut at = 0usize;
        while at < batches.len() {
            let v = BatchView::parse(&batches[at..])?;
            if v.size() > self.config.max_message_bytes {
                return Err(LogError::RecordTooLarge { size: v.size(), max: self.config.max_message_bytes });
            }
            if v.records_count() == 0 {
                return Err(LogError::CorruptRecord("a produced batch holds no records".into()));
            }
            if self.config.timestamp_type == TimestampType::CreateTime {
                self.check_timestamp(v.max_timestamp(), now_ms)?;
            }
            max_timestamp = max_timestamp.max(v.max_timestamp());
            offsets += v.offset_count();
            records += v.records_count() as u64;
            count += 1;
            at += v.size();
        }
        if count == 0 {
            return Err(LogError::CorruptRecord("no record batch".into()));
        }
        // Idempotent producers send one batch per partition per request (as Kafka requires),
        // so its sequence is checked alone; a retry of a batch already here writes nothing.
        let first = BatchView::header_unchecked(batches);
        let idempotent = ProducerState::is_idempotent(&first);
        if idempotent {
            if count > 1 {
                return Err(LogError::CorruptRecord("an idempotent produce carries one batch per partition".into()));
            }
            if let SequenceCheck::Duplicate(b) = self.producers.check(&first)? {
                return Ok(AppendInfo {
                    first_offset: b.first_offset,
                    last_offset: b.last_offset,
                    max_timestamp: first.max_timestamp(),
                    log_append_time: None,
                    batches: 0,
                    records: 0,
                    bytes: 0,
                    duplicate: true,
                });
            }
        }
        let first_offset = self.log_end_offset();
        let last_offset = first_offset + offsets - 1;
        // A new leader epoch starts here (Kafka records it before the data, so a crash leaves
        // an entry past the log end at worst, which the next open drops).
        self.epochs.assign(leader_epoch, first_offset)?;
        let incoming_ts =
            if self.config.timestamp_type == TimestampType::LogAppendTime { now_ms } else { max_timestamp };
        self.maybe_roll(batches.len() as u64, last_offset, incoming_ts, now_ms)?;

        let stamp = (self.config.timestamp_type == TimestampType::LogAppendTime).then_some(now_ms);
        let mut next = first_offset;
        let mut at = 0usize;
        while at < batches.len() {
            let v = BatchView::header_unchecked(&batches[at..]);
            let (size, span) = (v.size(), v.offset_count());
            let mut m = BatchMut::new(&mut batches[at..at + size]);
            m.set_base_offset(next);
            m.set_partition_leader_epoch(leader_epoch);
            if let Some(ts) = stamp {
                m.set_log_append_time(ts);
            }
            next += span;
            at += size;
        }
        self.active_mut().append(batches)?;
        if idempotent {
            self.producers.record(&BatchView::header_unchecked(batches));
        }

        self.metrics.bytes_appended.inc_by(batches.len() as u64);
        self.metrics.batches_appended.inc_by(count as u64);
        self.unflushed_records += records;
        if self.config.flush_messages.is_some_and(|n| self.unflushed_records >= n) {
            self.flush(now_ms)?;
        }
        Ok(AppendInfo {
            first_offset,
            last_offset,
            max_timestamp: stamp.unwrap_or(max_timestamp),
            log_append_time: stamp,
            batches: count,
            records,
            bytes: batches.len(),
            duplicate: false,
        })
    }

    /// Append batches copied from the partition leader (replication): offsets, leader
    /// epochs and timestamps are kept as the leader wrote them. Whole valid batches only: a
    /// trailing partial batch (a fetch cut by its byte limit) is left for the next fetch, and
    /// batches wholly below the log end are skipped. Offsets may jump forward (the leader's
    /// log may be compacted), never back. Returns the bytes and last offset appended.
    pub fn append_as_follower(&mut self, data: &[u8], now_ms: i64) -> Result<Option<(usize, i64)>> {
        self.guarded(|log| log.append_as_follower_unguarded(data, now_ms))
    }

    fn append_as_follower_unguarded(&mut self, data: &[u8], now_ms: i64) -> Result<Option<(usize, i64)>> {
        let mut next = self.log_end_offset();
        let mut start = None;
        let mut at = 0usize;
        let mut max_timestamp = -1i64;
        let mut last_offset = next - 1;
        while let Some(size) = super::batch::batch_size(&data[at..]) {
            if at + size > data.len() {
                break;
            }
            let v = BatchView::parse(&data[at..at + size])?;
            if v.last_offset() < next && start.is_none() {
                at += size;
                continue;
            }
            if v.base_offset() < next {
                return Err(LogError::CorruptRecord(format!(
                    "replicated batch at {} overlaps the log end {next}",
                    v.base_offset()
                )));
            }
            start.get_or_insert(at);
            max_timestamp = max_timestamp.max(v.max_timestamp());
            last_offset = v.last_offset();
            next = last_offset + 1;
            at += size;
        }
        let Some(start) = start else { return Ok(None) };
        let chunk = &data[start..at];
        self.maybe_roll(chunk.len() as u64, last_offset, max_timestamp, now_ms)?;
        let mut pos = 0usize;
        let mut records = 0u64;
        while pos < chunk.len() {
            let v = BatchView::header_unchecked(&chunk[pos..]);
            records += v.records_count().max(0) as u64;
            self.epochs.assign(v.partition_leader_epoch(), v.base_offset())?;
            if ProducerState::is_idempotent(&v) {
                self.producers.record(&v);
            }
            pos += v.size();
        }
        self.active_mut().append(chunk)?;
        self.metrics.bytes_appended.inc_by(chunk.len() as u64);
        self.unflushed_records += records;
        if self.config.flush_messages.is_some_and(|n| self.unflushed_records >= n) {
            self.flush(now_ms)?;
        }
        Ok(Some((chunk.len(), last_offset)))
    }

    /// A leader starts epoch `epoch` at the current log end (Kafka records it when it
    /// becomes leader, before any append, so OffsetForLeaderEpoch answers right away).
    pub fn assign_leader_epoch(&mut self, epoch: i32) -> Result<()> {
        self.guarded(|log| log.assign_leader_epoch_unguarded(epoch))
    }

    fn assign_leader_epoch_unguarded(&mut self, epoch: i32) -> Result<()> {
        let leo = self.log_end_offset();
        if self.epochs.latest_epoch().is_some_and(|latest| latest >= epoch) {
            return Ok(());
        }
        self.epochs.assign(epoch, leo)
    }

    /// Drop everything and restart empty at `offset` (a follower whose log end is below the
    /// leader's log start: what it is missing no longer exists).
    pub fn truncate_fully_and_start_at(&mut self, offset: i64, now_ms: i64) -> Result<()> {
        self.guarded(|log| log.truncate_fully_and_start_at_unguarded(offset, now_ms))
    }

    fn truncate_fully_and_start_at_unguarded(&mut self, offset: i64, now_ms: i64) -> Result<()> {
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        for base in bases {
            self.segments.remove(&base).expect("listed").delete()?;
            self.metrics.segments.dec();
        }
        let base = offset.max(0);
        self.segments.insert(base, LogSegment::create(&self.dir, base, &self.config, now_ms)?);
        self.metrics.segments.inc();
        self.log_start_offset = base;
        self.recovery_point = base;
        self.epochs.truncate_from_end(0)?;
        // Every snapshot goes: none describes the log now.
        producer_snapshot::delete_above(&self.dir, i64::MIN)?;
        super::checkpoint::sync_dir(&self.dir)?;
        self.producers.clear();
        Ok(())
    }

    /// KIP-937: CreateTime must be within [now - before.max, now + after.max].
    fn check_timestamp(&self, ts: i64, now_ms: i64) -> Result<()> {
        // As Kafka's LogValidator, records without a timestamp (NO_TIMESTAMP, -1) are not checked.
        if ts == -1 {
            return Ok(());
        }
        let max = now_ms.saturating_add(self.config.timestamp_after_max_ms);
        let min = self.config.timestamp_before_max_ms.map(|b| now_ms.saturating_sub(b)).unwrap_or(i64::MIN);
        if ts > max || ts < min {
            return Err(LogError::InvalidTimestamp { timestamp: ts, min, max });
        }
        Ok(())
    }

    fn maybe_roll(&mut self, incoming_bytes: u64, last_offset: i64, incoming_ts: i64, now_ms: i64) -> Result<()> {
        let cfg = &self.config;
        let seg = self.active();
        let should = !seg.is_empty()
            && (seg.size() + incoming_bytes > cfg.segment_bytes
                || seg.indexes_full()
                || !seg.offset_fits(last_offset)
                || seg.age_ms(incoming_ts, now_ms) > cfg.segment_ms);
        if should {
            self.roll(now_ms)?;
        }
        Ok(())
    }

    /// Seal the active segment and start a new one at the log end offset.
    pub fn roll(&mut self, now_ms: i64) -> Result<()> {
        self.guarded(|log| log.roll_unguarded(now_ms))
    }

    fn roll_unguarded(&mut self, now_ms: i64) -> Result<()> {
        let next = self.log_end_offset();
        if self.active().is_empty() {
            return Ok(());
        }
        self.active_mut().seal()?;
        producer_snapshot::write(&self.dir, next, &self.producers, false)?;
        let seg = LogSegment::create(&self.dir, next, &self.config, now_ms)?;
        self.segments.insert(next, seg);
        self.metrics.segments.inc();
        Ok(())
    }

    /// Up to `max_bytes` of whole batches starting with the one holding `offset`, and none
    /// at or after `upper_offset` (the high watermark). With `min_one`, the first batch is
    /// returned whole even if larger than `max_bytes`, as Kafka does so consumers progress;
    /// without, such a batch comes cut at `max_bytes` (as Kafka's does).
    /// `Ok(None)` when nothing is there yet.
    pub fn read(&self, offset: i64, max_bytes: usize, upper_offset: i64, min_one: bool) -> Result<Option<LogSlice>> {
        let leo = self.log_end_offset();
        if offset < self.log_start_offset || offset > leo {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: leo,
            });
        }
        let upper = upper_offset.min(leo);
        if offset >= upper {
            return Ok(None);
        }
        let floor = self.segments.range(..=offset).next_back().map(|(b, _)| *b).unwrap_or(self.log_start_offset);
        for seg in self.segments.range(floor..).map(|(_, s)| s) {
            let Some(first) = seg.find_batch(offset)? else { continue };
            if first.base_offset >= upper {
                return Ok(None);
            }
            let mut end = seg.size();
            if upper < seg.next_offset() {
                if let Some(stop) = seg.find_batch(upper)? {
                    // The batch holding `upper` is excluded unless it starts before it... a
                    // batch is never split, and one straddling the high watermark is not ready.
                    end = stop.position;
                }
            }
            let available = (end - first.position) as usize;
            let wanted = if min_one { max_bytes.max(first.size as usize) } else { max_bytes };
            let mut len = available.min(wanted);
            // Cut by the size limit after at least one whole batch: end at the last whole
            // one. Kafka sends the partial batch too, and every reader drops and fetches it
            // again; with librdkafka's 1 MB batches and a 1 MiB replica fetch that was 4-6%
            // of every follower's bytes (docs/benchmarks.md, 2026-12-05).
            if len < available && len >= first.size as usize {
                if let Some(whole) = seg.last_batch_end_within(first.position, first.position + len as u64)? {
                    len = (whole - first.position) as usize;
                }
            }
            if len == 0 {
                return Ok(None);
            }
            return Ok(Some(LogSlice {
                file: seg.file().clone(),
                position: first.position,
                len,
                first_batch_offset: first.base_offset,
            }));
        }
        Ok(None)
    }

    /// The largest record timestamp in the log (-1 when it holds none): ListOffsets -3.
    pub fn max_timestamp(&self) -> i64 {
        self.segments.values().map(|s| s.max_timestamp()).max().unwrap_or(-1).max(-1)
    }

    /// The first batch whose max timestamp is >= `timestamp` (ListOffsets by time).
    pub fn find_batch_by_timestamp(&self, timestamp: i64) -> Result<Option<BatchPosition>> {
        for seg in self.segments.values() {
            if seg.max_timestamp() < timestamp {
                continue;
            }
            let Some(mut b) = seg.find_batch_by_timestamp(timestamp)? else { continue };
            if b.last_offset < self.log_start_offset {
                // The first match is below a log start offset inside this segment: search on
                // from the batch holding the log start offset, as Kafka does.
                let mut next = seg.find_batch(self.log_start_offset)?;
                while let Some(c) = next.filter(|c| c.max_timestamp < timestamp) {
                    let pos = c.position + c.size as u64;
                    next = if pos < seg.size() { Some(seg.read_header(pos)?) } else { None };
                }
                match next {
                    Some(c) => b = c,
                    None => continue,
                }
            }
            return Ok(Some(b));
        }
        Ok(None)
    }

    /// fsync every segment holding offsets at or after the recovery point, then advance it.
    pub fn flush(&mut self, now_ms: i64) -> Result<()> {
        self.guarded(|log| log.flush_unguarded(now_ms))
    }

    fn flush_unguarded(&mut self, now_ms: i64) -> Result<()> {
        let started = Instant::now();
        let rp = self.recovery_point;
        let from = self.segments.range(..=rp).next_back().map(|(b, _)| *b).unwrap_or(i64::MIN);
        for seg in self.segments.range(from..).map(|(_, s)| s) {
            seg.flush()?;
        }
        self.recovery_point = self.log_end_offset();
        self.unflushed_records = 0;
        self.last_flush_ms = now_ms;
        self.metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// fsync sealed segments not yet known to be on disk and move the recovery point to the
    /// active segment's base, as Kafka does after a roll, so that crash recovery only has to
    /// scan the active segment even when flushing is left to the OS.
    pub fn flush_sealed_segments(&mut self) -> Result<()> {
        self.guarded(|log| log.flush_sealed_segments_unguarded())
    }

    fn flush_sealed_segments_unguarded(&mut self) -> Result<()> {
        let active_base = self.active().base_offset();
        if self.recovery_point >= active_base {
            return Ok(());
        }
        let started = Instant::now();
        let rp = self.recovery_point;
        let from = self.segments.range(..=rp).next_back().map(|(b, _)| *b).unwrap_or(i64::MIN);
        for seg in self.segments.range(from..active_base).map(|(_, s)| s) {
            seg.flush()?;
        }
        self.recovery_point = active_base;
        self.metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Flush if `flush.ms` has passed since the last flush and something is unflushed.
    pub fn flush_if_due(&mut self, now_ms: i64) -> Result<bool> {
        self.guarded(|log| log.flush_if_due_unguarded(now_ms))
    }

    fn flush_if_due_unguarded(&mut self, now_ms: i64) -> Result<bool> {
        match self.config.flush_ms {
            Some(ms) if self.unflushed_records > 0 && now_ms - self.last_flush_ms >= ms => {
                self.flush(now_ms)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Delete the oldest sealed segments past `retention.ms` or beyond `retention.bytes`
    /// (whole segments, never the active one) and advance the log start offset.
    /// Delete the whole segments holding only offsets below `offset` (never the active one)
    /// and move the log start up. For logs whose records are settled from the front, like the
    /// messages of an AMQP queue.
    pub fn delete_segments_before(&mut self, offset: i64) -> Result<usize> {
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        let doomed: Vec<i64> = bases.windows(2).take_while(|w| w[1] <= offset).map(|w| w[0]).collect();
        for base in &doomed {
            let seg = self.segments.remove(base).expect("listed above");
            seg.delete()?;
        }
        if !doomed.is_empty() {
            let first = *self.segments.keys().next().expect("the active segment remains");
            self.log_start_offset = self.log_start_offset.max(first);
            self.recovery_point = self.recovery_point.max(self.log_start_offset);
            self.epochs.truncate_from_start(self.log_start_offset)?;
            self.forget_below_log_start()?;
            self.metrics.segments.sub(doomed.len() as i64);
            self.metrics.segments_deleted.inc_by(doomed.len() as u64);
        }
        Ok(doomed.len())
    }

    /// The idempotent producers this log holds state for (DescribeProducers).
    pub fn active_producers(&self) -> Vec<super::producer_state::ActiveProducer> {
        self.producers.active()
    }

    /// How many idempotent producers this log holds state for.
    pub fn producer_count(&self) -> usize {
        self.producers.producer_count()
    }

    /// Forget the idempotent producers silent for `expiration_ms` (`producer.id.expiration.ms`).
    pub fn remove_expired_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.remove_expired(now_ms, expiration_ms)
    }

    /// DeleteRecords (KIP-107), and a follower taking its leader's log start: records below
    /// `offset` are gone for readers at once (a fetch below it is out of range, ListOffsets
    /// earliest names it), and the segments holding only such records are deleted. Never
    /// moves the start down, nor past the log end. Returns whether it moved. The owner
    /// checkpoints it (`LogManager::checkpoint_log_start_offsets`).
    pub fn advance_log_start_offset(&mut self, offset: i64) -> Result<bool> {
        self.guarded(|log| {
            let offset = offset.min(log.log_end_offset());
            if offset <= log.log_start_offset {
                return Ok(false);
            }
            log.log_start_offset = offset;
            log.recovery_point = log.recovery_point.max(offset);
            log.epochs.truncate_from_start(offset)?;
            log.delete_segments_before(offset)?;
            log.producers.remove_below(offset);
            Ok(true)
        })
    }

    pub fn delete_retained_segments(&mut self, now_ms: i64) -> Result<usize> {
        if !self.config.cleanup_delete {
            return Ok(0);
        }
        let mut excess = self.config.retention_bytes.map(|limit| self.size_bytes() as i64 - limit as i64);
        let mut doomed = Vec::new();
        let active_base = self.active().base_offset();
        for (base, seg) in &self.segments {
            if *base == active_base {
                break;
            }
            let by_time = self.config.retention_ms.is_some_and(|ms| now_ms - seg.retention_timestamp() > ms);
            let by_size = excess.is_some_and(|e| e >= seg.size() as i64);
            if !(by_time || by_size) {
                break;
            }
            if let Some(e) = excess.as_mut() {
                *e -= seg.size() as i64;
            }
            doomed.push(*base);
        }
        for base in &doomed {
            let seg = self.segments.remove(base).expect("listed above");
            seg.delete()?;
        }
        if !doomed.is_empty() {
            let first = *self.segments.keys().next().expect("the active segment remains");
            self.log_start_offset = self.log_start_offset.max(first);
            self.recovery_point = self.recovery_point.max(self.log_start_offset);
            self.epochs.truncate_from_start(self.log_start_offset)?;
            self.forget_below_log_start()?;
            self.metrics.segments.sub(doomed.len() as i64);
            self.metrics.segments_deleted.inc_by(doomed.len() as u64);
        }
        Ok(doomed.len())
    }

    /// Remove every record at or after `offset` (replication: a follower dropping a divergent
    /// suffix). The batch holding `offset` goes whole.
    pub fn truncate_to(&mut self, offset: i64, now_ms: i64) -> Result<()> {
        self.guarded(|log| log.truncate_to_unguarded(offset, now_ms))
    }

    fn truncate_to_unguarded(&mut self, offset: i64, now_ms: i64) -> Result<()> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        let doomed: Vec<i64> = self.segments.range(offset.max(0)..).map(|(b, _)| *b).collect();
        let first = *self.segments.keys().next().expect("non-empty");
        for base in doomed {
            if base == first {
                continue;
            }
            self.segments.remove(&base).expect("listed").delete()?;
            self.metrics.segments.dec();
        }
        if offset <= first {
            // Nothing survives: start again empty at `offset`.
            let old = self.segments.remove(&first).expect("non-empty");
            old.delete()?;
            let base = offset.max(0);
            self.segments.insert(base, LogSegment::create(&self.dir, base, &self.config, now_ms)?);
            self.log_start_offset = base;
        } else {
            let last = self.active_mut();
            last.truncate_to(offset)?;
            last.unseal()?;
        }
        self.recovery_point = self.recovery_point.min(self.log_end_offset());
        self.epochs.truncate_from_end(self.log_end_offset())?;
        self.load_producer_state(false).map(|_| ())
    }

    /// Clean close: flush and trim the active segment's indexes so their length is their
    /// content when reopened.
    pub fn close(&mut self, now_ms: i64) -> Result<()> {
        self.guarded(|log| log.close_unguarded(now_ms))
    }

    fn close_unguarded(&mut self, now_ms: i64) -> Result<()> {
        self.flush(now_ms)?;
        self.active_mut().seal()?;
        self.active().flush()?;
        producer_snapshot::write(&self.dir, self.log_end_offset(), &self.producers, true)?;
        self.metrics.segments.sub(self.segments.len() as i64);
        Ok(())
    }
}
