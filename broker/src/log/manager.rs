//! All partition logs of one data directory: loading and recovery at start, background
//! flush, retention and cleaning, checkpoints, and the clean-shutdown marker.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt};

use super::config::LogConfig;
use super::dir_failure::LogDirFailure;
use super::error::{IoContext, Result};
use super::metrics::LogMetrics;
use super::segmented_log::Log;
use super::{checkpoint, cleaner, now_ms, partition_metadata};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self { topic: topic.into(), partition }
    }
    /// Directory name `<topic>-<partition>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
    /// Parse a directory name; the partition is after the last '-'.
    pub fn from_dir_name(name: &str) -> Option<Self> {
        let (topic, part) = name.rsplit_once('-')?;
        if topic.is_empty() {
            return None;
        }
        Some(Self::new(topic, part.parse().ok()?))
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// What `LogManager::open` found.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub clean_shutdown: bool,
    pub partitions: usize,
    pub truncated_bytes: u64,
    /// Logs whose producer state came from a snapshot (the others read every batch header).
    pub from_producer_snapshots: usize,
    pub elapsed: Duration,
}

pub struct LogManager {
    data_dir: PathBuf,
    default_config: LogConfig,
    metrics: LogMetrics,
    /// Hashed, not ordered: every fetch looks partitions up here, and an ordered map compares
    /// the (often long, shared-prefix) topic names at each of its ~log2(n) steps.
    logs: RwLock<HashMap<TopicPartition, Arc<Mutex<Log>>>>,
    /// The topic id in each log's `partition.metadata` (absent for logs made before it).
    topic_ids: Mutex<BTreeMap<TopicPartition, String>>,
    last_checkpoint_ms: AtomicI64,
    /// `producer.id.expiration.ms` (KIP-854), and when maintenance last applied it.
    producer_id_expiration_ms: AtomicI64,
    last_producer_expiration_ms: AtomicI64,
    /// Held while a checkpoint file is written: maintenance and DeleteRecords both write
    /// them, through the same temporary file.
    checkpoint_write: Mutex<()>,
    /// Marked by the first failed write under `data_dir`; every log here refuses writes then.
    dir_failure: LogDirFailure,
    /// Threads that open the logs at start and close them at shutdown
    /// (`num.recovery.threads.per.data.dir`).
    recovery_threads: usize,
}

/// Kafka's `num.recovery.threads.per.data.dir` default since 4.0 (KIP-1030).
pub const DEFAULT_RECOVERY_THREADS: usize = 2;

/// Run `f` over `items` on up to `threads` threads, each taking the next item when done
/// with one; the results in no particular order. After the first error the items not yet
/// taken are skipped and that error is returned.
fn in_parallel<T: Send, R: Send>(threads: usize, items: Vec<T>, f: impl Fn(T) -> Result<R> + Sync) -> Result<Vec<R>> {
    let threads = threads.clamp(1, items.len().max(1));
    let queue = Mutex::new(items.into_iter());
    let failed = std::sync::atomic::AtomicBool::new(false);
    let work = || -> Result<Vec<R>> {
        let mut out = Vec::new();
        while !failed.load(Ordering::Relaxed) {
            let Some(item) = queue.lock().expect("work queue lock").next() else { break };
            match f(item) {
                Ok(r) => out.push(r),
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Ok(out)
    };
    if threads == 1 {
        return work();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
        let mut all = Vec::new();
        let mut first_error = None;
        for h in handles {
            match h.join().expect("a log open or close thread panicked") {
                Ok(part) => all.extend(part),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(all), Err)
    })
}

/// How often maintenance rewrites the recovery-point and log-start checkpoints.
const CHECKPOINT_INTERVAL_MS: i64 = 60_000;

/// Kafka's `producer.id.expiration.ms` default: a day.
pub const DEFAULT_PRODUCER_ID_EXPIRATION_MS: i64 = 86_400_000;
/// Kafka's `producer.id.expiration.check.interval.ms` (10 min), or the expiration itself if
/// that is shorter.
const PRODUCER_EXPIRATION_CHECK_MS: i64 = 600_000;

impl LogManager {
    /// `open_with_threads` with Kafka's default number of recovery threads.
    pub fn open(data_dir: &Path, default_config: LogConfig, metrics: LogMetrics) -> Result<(Self, LoadReport)> {
        Self::open_with_threads(data_dir, default_config, metrics, DEFAULT_RECOVERY_THREADS)
    }

    /// Load every `<topic>-<partition>` directory under `data_dir` (created if missing),
    /// recovering unflushed segments unless the clean-shutdown marker is present, on
    /// `recovery_threads` threads (`num.recovery.threads.per.data.dir`; shutdown closes the
    /// logs on as many). The marker is removed before this returns, so a crash from now on is
    /// detected at the next start.
    pub fn open_with_threads(
        data_dir: &Path,
        default_config: LogConfig,
        metrics: LogMetrics,
        recovery_threads: usize,
    ) -> Result<(Self, LoadReport)> {
        let started = Instant::now();
        std::fs::create_dir_all(data_dir).at(data_dir)?;
        let marker = data_dir.join(checkpoint::CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        let recovery_points = checkpoint::read(&data_dir.join(checkpoint::RECOVERY_POINT_FILE))?;
        let start_offsets = checkpoint::read(&data_dir.join(checkpoint::LOG_START_OFFSET_FILE))?;
        let now = now_ms();
        let mut report = LoadReport { clean_shutdown: clean, ..Default::default() };
        let dir_failure = LogDirFailure::default();
        let mut dirs = Vec::new();
        for entry in std::fs::read_dir(data_dir).at(data_dir)? {
            let entry = entry.at(data_dir)?;
            if !entry.file_type().at(&entry.path())?.is_dir() {
                continue;
            }
            let Some(tp) = entry.file_name().to_str().and_then(TopicPartition::from_dir_name) else {
                continue;
            };
            dirs.push((tp, entry.path()));
        }
        let opened = in_parallel(recovery_threads, dirs, |(tp, path)| {
            let rp = recovery_points.get(&tp).copied().unwrap_or(0);
            let lso = start_offsets.get(&tp).copied().unwrap_or(0);
            let (log, rec) = Log::open(&path, default_config.clone(), rp, lso, clean, metrics.clone(), now)?;
            let topic_id = partition_metadata::read(&path)?;
            Ok((tp, log, rec, topic_id))
        })?;
        let mut logs = HashMap::with_capacity(opened.len());
        let mut topic_ids = BTreeMap::new();
        for (tp, mut log, rec, topic_id) in opened {
            log.attach_dir_failure(dir_failure.clone());
            for line in &rec.repairs {
                tracing::warn!(partition = %tp, "recovery: {line}");
            }
            if rec.segments_recovered > 0 {
                tracing::info!(partition = %tp, segments = rec.segments_recovered, truncated_bytes = rec.truncated_bytes, "recovered log");
            }
            report.truncated_bytes += rec.truncated_bytes;
            report.from_producer_snapshots += rec.producer_snapshot.is_some() as usize;
            if let Some(id) = topic_id {
                topic_ids.insert(tp.clone(), id);
            }
            logs.insert(tp, Arc::new(Mutex::new(log)));
        }
        report.partitions = logs.len();
        if clean {
            std::fs::remove_file(&marker).at(&marker)?;
            checkpoint::sync_dir(data_dir)?;
        }
        report.elapsed = started.elapsed();
        metrics.partitions.set(logs.len() as i64);
        metrics.recovery_seconds.set(report.elapsed.as_secs_f64());
        let manager = Self {
            data_dir: data_dir.to_path_buf(),
            default_config,
            metrics,
            logs: RwLock::new(logs),
            topic_ids: Mutex::new(topic_ids),
            last_checkpoint_ms: AtomicI64::new(now),
            checkpoint_write: Mutex::new(()),
            producer_id_expiration_ms: AtomicI64::new(DEFAULT_PRODUCER_ID_EXPIRATION_MS),
            last_producer_expiration_ms: AtomicI64::new(now),
            dir_failure,
            recovery_threads,
        };
        Ok((manager, report))
    }

    /// Set `producer.id.expiration.ms`: idempotent producers silent that long are forgotten
    /// by every log at the next check.
    pub fn set_producer_id_expiration_ms(&self, ms: i64) {
        self.producer_id_expiration_ms.store(ms, Ordering::Relaxed);
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    pub fn default_config(&self) -> &LogConfig {
        &self.default_config
    }
    pub fn metrics(&self) -> &LogMetrics {
        &self.metrics
    }
    /// Marked once a write under the data directory has failed (the broker then halts).
    pub fn dir_failure(&self) -> &LogDirFailure {
        &self.dir_failure
    }

    /// Pass `result` on, marking the directory failed if it is an I/O error.
    fn note_io_failure<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.dir_failure.record(e);
        }
        result
    }

    pub fn get(&self, tp: &TopicPartition) -> Option<Arc<Mutex<Log>>> {
        self.logs.read().expect("log map lock").get(tp).cloned()
    }

    /// Every partition with a log here, in order.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        let mut all: Vec<TopicPartition> = self.logs.read().expect("log map lock").keys().cloned().collect();
        all.sort_unstable();
        all
    }

    /// The log of `tp`, created empty with `config` if it does not exist yet.
    pub fn get_or_create(&self, tp: &TopicPartition, config: LogConfig) -> Result<Arc<Mutex<Log>>> {
        let mut logs = self.logs.write().expect("log map lock");
        if let Some(log) = logs.get(tp) {
            return Ok(log.clone());
        }
        let dir = self.data_dir.join(tp.dir_name());
        let (mut log, _) = self.note_io_failure(Log::open(&dir, config, 0, 0, true, self.metrics.clone(), now_ms()))?;
        log.attach_dir_failure(self.dir_failure.clone());
        self.note_io_failure(checkpoint::sync_dir(&self.data_dir))?;
        let log = Arc::new(Mutex::new(log));
        logs.insert(tp.clone(), log.clone());
        self.metrics.partitions.set(logs.len() as i64);
        Ok(log)
    }

    /// The log of `tp` for the topic whose id is `topic_id`, created if missing. A log left
    /// by an earlier topic of the same name (another id in its `partition.metadata`) is
    /// deleted and replaced by an empty one; a log without the file (made before it existed)
    /// is taken as this topic's and the file written. `Ok((log, true))` when a log was
    /// replaced.
    pub fn get_or_create_for_topic(
        &self,
        tp: &TopicPartition,
        topic_id: &str,
        config: LogConfig,
    ) -> Result<(Arc<Mutex<Log>>, bool)> {
        let recorded = self.topic_ids.lock().expect("topic ids lock").get(tp).cloned();
        if recorded.as_deref() == Some(topic_id) {
            if let Some(log) = self.get(tp) {
                return Ok((log, false));
            }
        }
        let replaced = match &recorded {
            Some(old) if old != topic_id => {
                tracing::warn!(partition = %tp, old_topic_id = %old, topic_id, "local log belongs to an earlier topic of this name; deleting it");
                self.delete(tp)?
            }
            _ => false,
        };
        let log = self.get_or_create(tp, config)?;
        if !topic_id.is_empty() {
            let dir = log.lock().expect("log lock").dir().to_path_buf();
            self.note_io_failure(partition_metadata::write(&dir, topic_id))?;
            self.topic_ids.lock().expect("topic ids lock").insert(tp.clone(), topic_id.to_string());
        }
        Ok((log, replaced))
    }

    /// Delete the log of `tp` and its directory.
    pub fn delete(&self, tp: &TopicPartition) -> Result<bool> {
        self.topic_ids.lock().expect("topic ids lock").remove(tp);
        let Some(log) = self.logs.write().expect("log map lock").remove(tp) else { return Ok(false) };
        let mut log = log.lock().expect("log lock");
        log.mark_deleted();
        self.metrics.segments.sub(log.segment_count() as i64);
        std::fs::remove_dir_all(log.dir()).at(log.dir())?;
        self.metrics.partitions.set(self.logs.read().expect("log map lock").len() as i64);
        Ok(true)
    }

    /// One pass of background work: flush logs past `flush.ms` and sealed segments not yet
    /// on disk, delete segments past retention, compact logs with `cleanup.policy=compact`,
    /// and rewrite the checkpoints every minute. The broker calls it every second.
    pub fn run_maintenance(&self, now_ms: i64) -> Result<()> {
        // One failing log must not stop maintenance of the others: the first error is
        // returned after every log had its turn.
        let mut first_error = None;
        let all: Vec<(TopicPartition, Arc<Mutex<Log>>)> =
            self.logs.read().expect("log map lock").iter().map(|(tp, log)| (tp.clone(), log.clone())).collect();
        let expiration_ms = self.producer_id_expiration_ms.load(Ordering::Relaxed);
        let expire_producers = now_ms - self.last_producer_expiration_ms.load(Ordering::Relaxed)
            >= expiration_ms.min(PRODUCER_EXPIRATION_CHECK_MS);
        if expire_producers {
            self.last_producer_expiration_ms.store(now_ms, Ordering::Relaxed);
        }
        let mut producer_ids = 0;
        for (tp, log) in all {
            let mut log = log.lock().expect("log lock");
            if log.is_deleted() {
                // Deleted since the list was taken.
                continue;
            }
            if expire_producers {
                let expired = log.remove_expired_producers(now_ms, expiration_ms);
                if expired > 0 {
                    tracing::debug!(partition = %tp, producers = expired, "expired idle producer ids");
                }
            }
            producer_ids += log.producer_count();
            if let Err(e) = self.maintain(&tp, &mut log, now_ms) {
                tracing::error!(partition = %tp, error = %e, "log maintenance failed");
                first_error.get_or_insert(e);
            }
        }
        self.metrics.producer_ids.set(producer_ids as i64);
        if now_ms - self.last_checkpoint_ms.load(Ordering::Relaxed) >= CHECKPOINT_INTERVAL_MS {
            self.note_io_failure(self.write_checkpoints())?;
            self.last_checkpoint_ms.store(now_ms, Ordering::Relaxed);
        }
        first_error.map_or(Ok(()), Err)
    }

    fn maintain(&self, tp: &TopicPartition, log: &mut Log, now_ms: i64) -> Result<()> {
        log.flush_if_due(now_ms)?;
        log.flush_sealed_segments()?;
        let deleted = log.delete_retained_segments(now_ms)?;
        if deleted > 0 {
            tracing::info!(partition = %tp, segments = deleted, log_start_offset = log.log_start_offset(), "retention deleted segments");
        }
        if log.config().cleanup_compact {
            let cleaned = cleaner::clean(log, now_ms)?;
            if cleaned.bytes_reclaimed > 0 {
                self.metrics.cleaner_bytes_reclaimed.inc_by(cleaned.bytes_reclaimed);
                tracing::info!(partition = %tp, bytes = cleaned.bytes_reclaimed, "compacted log");
            }
        }
        Ok(())
    }

    fn write_checkpoints(&self) -> Result<()> {
        let _writing = self.checkpoint_write.lock().expect("checkpoint lock");
        let mut recovery_points = BTreeMap::new();
        let mut start_offsets = BTreeMap::new();
        for (tp, log) in self.logs.read().expect("log map lock").iter() {
            let log = log.lock().expect("log lock");
            recovery_points.insert(tp.clone(), log.recovery_point());
            start_offsets.insert(tp.clone(), log.log_start_offset());
        }
        checkpoint::write(&self.data_dir.join(checkpoint::RECOVERY_POINT_FILE), &recovery_points)?;
        checkpoint::write(&self.data_dir.join(checkpoint::LOG_START_OFFSET_FILE), &start_offsets)
    }

    /// Write `log-start-offset-checkpoint` now, after a log start moved by DeleteRecords (or a
    /// follower following its leader's), so that a restart does not bring the deleted records
    /// back. Takes every log's lock in turn: call it without holding one.
    pub fn checkpoint_log_start_offsets(&self) -> Result<()> {
        let _writing = self.checkpoint_write.lock().expect("checkpoint lock");
        let mut start_offsets = BTreeMap::new();
        for (tp, log) in self.logs.read().expect("log map lock").iter() {
            start_offsets.insert(tp.clone(), log.lock().expect("log lock").log_start_offset());
        }
        self.note_io_failure(checkpoint::write(&self.data_dir.join(checkpoint::LOG_START_OFFSET_FILE), &start_offsets))
    }

    /// Flush every log, write the checkpoints and the clean-shutdown marker. Called once at
    /// clean shutdown, after the listeners stopped accepting; no append may follow.
    pub fn shutdown(&self) -> Result<()> {
        let now = now_ms();
        let logs: Vec<Arc<Mutex<Log>>> = self.logs.read().expect("log map lock").values().cloned().collect();
        in_parallel(self.recovery_threads, logs, |log| log.lock().expect("log lock").close(now))?;
        self.write_checkpoints()?;
        let marker = self.data_dir.join(checkpoint::CLEAN_SHUTDOWN_FILE);
        std::fs::File::create(&marker).and_then(|f| f.sync_all()).at(&marker)?;
        checkpoint::sync_dir(&self.data_dir)
    }
}
