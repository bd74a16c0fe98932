//! The log manager of a data directory: partition directories, the clean-shutdown marker,
//! the recovery-point and log-start-offset checkpoints, crash recovery at open, and the
//! maintenance pass (retention, checkpoints).

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use weir_broker::log::batch::{build_batch, BatchView};
use weir_broker::log::checkpoint::{CLEAN_SHUTDOWN_FILE, LOG_START_OFFSET_FILE, RECOVERY_POINT_FILE};
use weir_broker::log::manager::LoadReport;
use weir_broker::log::{now_ms, Log, LogConfig, LogManager, LogMetrics, TopicPartition};

/// A record as `build_batch` takes it: (key, value).
type Rec<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

fn open(dir: &Path) -> (LogManager, LoadReport) {
    LogManager::open(dir, LogConfig::default(), LogMetrics::unregistered()).expect("open manager")
}

/// Append `n` batches of `records` records stamped with the wall clock (the manager uses it).
/// Returns the batches as written.
fn append(log: &Arc<Mutex<Log>>, n: usize, records: usize) -> Vec<Vec<u8>> {
    let mut log = log.lock().unwrap();
    (0..n)
        .map(|i| {
            let value = format!("value {i}");
            let recs: Vec<Rec> = (0..records).map(|_| (Some(&b"key"[..]), Some(value.as_bytes()))).collect();
            let mut b = build_batch(&recs, now_ms());
            log.append(&mut b, 0, now_ms()).unwrap();
            b
        })
        .collect()
}

/// Every batch of a log, read back from its start.
fn read_all(log: &Arc<Mutex<Log>>) -> Vec<Vec<u8>> {
    let log = log.lock().unwrap();
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, usize::MAX, i64::MAX, true).unwrap().unwrap().to_vec().unwrap();
        let mut at = 0;
        while at < bytes.len() {
            let v = BatchView::parse(&bytes[at..]).unwrap();
            out.push(v.bytes().to_vec());
            offset = v.last_offset() + 1;
            at += v.size();
        }
    }
    out
}

fn leo(log: &Arc<Mutex<Log>>) -> i64 {
    log.lock().unwrap().log_end_offset()
}

fn checkpoint(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn active_segment(dir: &Path, tp: &TopicPartition, log: &Arc<Mutex<Log>>) -> std::path::PathBuf {
    let base = *log.lock().unwrap().segment_base_offsets().last().unwrap();
    dir.join(tp.dir_name()).join(format!("{base:020}.log"))
}

#[test]
fn shutdown_writes_the_marker_and_both_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (mgr, report) = open(dir.path());
    assert!(!report.clean_shutdown, "a new data directory has no marker");
    assert_eq!(report.partitions, 0);
    let (t0, t1) = (TopicPartition::new("orders", 0), TopicPartition::new("orders", 1));
    let l0 = mgr.get_or_create(&t0, LogConfig::default()).unwrap();
    let l1 = mgr.get_or_create(&t1, LogConfig::default()).unwrap();
    assert!(Arc::ptr_eq(&l0, &mgr.get_or_create(&t0, LogConfig::default()).unwrap()), "one log per partition");
    append(&l0, 4, 3);
    append(&l1, 1, 2);
    assert!(dir.path().join("orders-0").is_dir());
    assert!(dir.path().join("orders-1").join("00000000000000000000.log").is_file());
    assert!(!dir.path().join(CLEAN_SHUTDOWN_FILE).exists());

    mgr.shutdown().unwrap();
    assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).is_file());
    assert_eq!(std::fs::metadata(dir.path().join(CLEAN_SHUTDOWN_FILE)).unwrap().len(), 0);
    // Kafka's checkpoint format: version 0, the entry count, then `topic partition offset`.
    assert_eq!(checkpoint(dir.path(), RECOVERY_POINT_FILE), "0\n2\norders 0 12\norders 1 2\n");
    assert_eq!(checkpoint(dir.path(), LOG_START_OFFSET_FILE), "0\n2\norders 0 0\norders 1 0\n");
    // Closing trimmed the active segments' indexes (no entries at the default interval).
    assert_eq!(std::fs::metadata(dir.path().join("orders-0/00000000000000000000.index")).unwrap().len(), 0);
}

#[test]
fn a_clean_restart_consumes_the_marker_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let tp = TopicPartition::new("my-topic-with-dashes", 7);
    let written = {
        let (mgr, _) = open(dir.path());
        let log = mgr.get_or_create(&tp, LogConfig::default()).unwrap();
        let w = append(&log, 5, 2);
        mgr.shutdown().unwrap();
        w
    };
    // Directories that are not partitions are left alone.
    std::fs::create_dir(dir.path().join("lost+found")).unwrap();
    std::fs::create_dir(dir.path().join("not-a-partition")).unwrap();

    let (mgr, report) = open(dir.path());
    assert!(report.clean_shutdown);
    assert_eq!(report.partitions, 1);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(mgr.partitions(), vec![tp.clone()]);
    assert!(!dir.path().join(CLEAN_SHUTDOWN_FILE).exists(), "the marker is consumed at open");
    let log = mgr.get(&tp).unwrap();
    assert_eq!(read_all(&log), written);
    assert_eq!(log.lock().unwrap().recovery_point(), 10);
    let more = append(&log, 1, 1);
    assert_eq!(read_all(&log).last(), more.last());
    assert_eq!(leo(&log), 11);
    drop(log);
    drop(mgr);

    // The marker was consumed: the next open, after that crash, is not clean.
    let (_mgr, report) = open(dir.path());
    assert!(!report.clean_shutdown);
}

#[test]
fn a_crash_is_recovered_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let tp = TopicPartition::new("events", 0);
    let garbage = b"\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x01\x00torn write of a batch that never completed";
    let written = {
        let (mgr, _) = open(dir.path());
        let log = mgr.get_or_create(&tp, LogConfig::default()).unwrap();
        let w = append(&log, 6, 3);
        // The crash: no shutdown, and a torn write at the end of the active segment.
        let path = active_segment(dir.path(), &tp, &log);
        std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(garbage).unwrap();
        w
    };
    assert!(!dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
    assert!(!dir.path().join(RECOVERY_POINT_FILE).exists(), "no checkpoint was ever written");

    let (mgr, report) = open(dir.path());
    assert!(!report.clean_shutdown);
    assert_eq!(report.partitions, 1);
    assert!(report.truncated_bytes > 0);
    assert_eq!(report.truncated_bytes, garbage.len() as u64);
    let log = mgr.get(&tp).unwrap();
    assert_eq!(read_all(&log), written);
    assert_eq!(leo(&log), 18);
    let more = append(&log, 1, 1);
    assert_eq!(read_all(&log), [written, more].concat());
    mgr.shutdown().unwrap();
    assert_eq!(checkpoint(dir.path(), RECOVERY_POINT_FILE), "0\n1\nevents 0 19\n");
}

#[test]
fn a_crash_after_a_clean_restart_is_recovered_from_the_checkpointed_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let tp = TopicPartition::new("events", 3);
    // Small segments, so that the crash leaves several and only the unflushed ones are scanned.
    let default = LogConfig { segment_bytes: 400, ..LogConfig::default() };
    let before = {
        let (mgr, _) = LogManager::open(dir.path(), default.clone(), LogMetrics::unregistered()).unwrap();
        let log = mgr.get_or_create(&tp, default.clone()).unwrap();
        let w = append(&log, 8, 2);
        mgr.shutdown().unwrap();
        w
    };
    let rp: i64 = checkpoint(dir.path(), RECOVERY_POINT_FILE)
        .lines()
        .nth(2)
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(rp, 16);

    let (mgr, report) = LogManager::open(dir.path(), default.clone(), LogMetrics::unregistered()).unwrap();
    assert!(report.clean_shutdown);
    let log = mgr.get(&tp).unwrap();
    let after = append(&log, 8, 2);
    let segments = log.lock().unwrap().segment_base_offsets();
    assert!(segments.len() >= 3, "{segments:?}");
    let path = active_segment(dir.path(), &tp, &log);
    drop(log);
    drop(mgr); // crash
    std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&[0xAB; 100]).unwrap();

    let (mgr, report) = LogManager::open(dir.path(), default, LogMetrics::unregistered()).unwrap();
    assert!(!report.clean_shutdown);
    assert_eq!(report.truncated_bytes, 100);
    let log = mgr.get(&tp).unwrap();
    assert_eq!(log.lock().unwrap().segment_base_offsets(), segments);
    assert_eq!(read_all(&log), [before, after].concat());
    assert_eq!(leo(&log), 32);
}

#[test]
fn maintenance_applies_retention_and_checkpoints_every_minute() {
    let dir = tempfile::tempdir().unwrap();
    let (mgr, _) = open(dir.path());
    let tp = TopicPartition::new("short-lived", 0);
    let cfg = LogConfig { retention_ms: Some(60_000), ..LogConfig::default() };
    let log = mgr.get_or_create(&tp, cfg).unwrap();
    let start = now_ms();
    {
        let mut l = log.lock().unwrap();
        for i in 0..3i64 {
            let mut b = build_batch(&[(None, Some(b"old"))], start - 3_600_000 + i);
            l.append(&mut b, 0, start).unwrap();
            l.roll(start).unwrap();
        }
        let mut b = build_batch(&[(None, Some(b"new"))], start);
        l.append(&mut b, 0, start).unwrap();
        assert_eq!(l.segment_base_offsets(), vec![0, 1, 2, 3]);
    }
    mgr.run_maintenance(start).unwrap();
    {
        let l = log.lock().unwrap();
        assert_eq!(l.segment_base_offsets(), vec![3], "the three expired sealed segments are deleted");
        assert_eq!(l.log_start_offset(), 3);
        assert_eq!(l.recovery_point(), 3, "sealed segments are flushed by maintenance");
    }
    assert!(!dir.path().join(RECOVERY_POINT_FILE).exists(), "not a minute yet");
    mgr.run_maintenance(start + 61_000).unwrap();
    assert_eq!(checkpoint(dir.path(), RECOVERY_POINT_FILE), "0\n1\nshort-lived 0 3\n");
    assert_eq!(checkpoint(dir.path(), LOG_START_OFFSET_FILE), "0\n1\nshort-lived 0 3\n");

    // The checkpointed log start offset is used at the next open.
    mgr.shutdown().unwrap();
    drop(log);
    drop(mgr);
    let (mgr, _) = open(dir.path());
    let log = mgr.get(&tp).unwrap();
    assert_eq!(log.lock().unwrap().log_start_offset(), 3);
    assert_eq!(leo(&log), 4);

    // Deleting a partition removes its directory.
    drop(log);
    assert!(mgr.delete(&tp).unwrap());
    assert!(!dir.path().join("short-lived-0").exists());
    assert!(mgr.partitions().is_empty());
}

#[test]
fn recovery_threads_open_and_close_every_partition_and_report_the_first_failure() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = b"\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x01\x00torn write";
    let tps: Vec<TopicPartition> = (0..40).map(|p| TopicPartition::new("many", p)).collect();
    let written: Vec<Vec<Vec<u8>>> = {
        let (mgr, _) = open(dir.path());
        let w = tps
            .iter()
            .enumerate()
            .map(|(i, tp)| {
                let log = mgr.get_or_create(tp, LogConfig::default()).unwrap();
                let w = append(&log, 1 + i % 5, 2);
                // A crash that tore every partition's last write.
                let path = active_segment(dir.path(), tp, &log);
                std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(garbage).unwrap();
                w
            })
            .collect();
        drop(mgr);
        w
    };
    for threads in [4, 1] {
        let (mgr, report) =
            LogManager::open_with_threads(dir.path(), LogConfig::default(), LogMetrics::unregistered(), threads)
                .unwrap();
        if threads == 4 {
            // The first open recovers every partition's torn tail.
            assert!(!report.clean_shutdown);
            assert_eq!(report.truncated_bytes, 40 * garbage.len() as u64);
        } else {
            // The second follows the 4-thread shutdown: clean, producer state from snapshots.
            assert!(report.clean_shutdown);
            assert_eq!(report.from_producer_snapshots, 40);
        }
        assert_eq!(report.partitions, 40);
        for (tp, w) in tps.iter().zip(&written) {
            assert_eq!(&read_all(&mgr.get(tp).unwrap()), w, "{tp}");
        }
        mgr.shutdown().unwrap();
        assert_eq!(checkpoint(dir.path(), RECOVERY_POINT_FILE).lines().count(), 42);
    }
    // A partition that cannot be opened (its segment file is a directory, which even root
    // cannot open for writing) fails the whole open, whatever thread met it.
    std::fs::create_dir_all(dir.path().join("broken-0").join("00000000000000000000.log")).unwrap();
    for threads in [4, 1] {
        let result =
            LogManager::open_with_threads(dir.path(), LogConfig::default(), LogMetrics::unregistered(), threads);
        let err = result.err().expect("a broken partition fails the open").to_string();
        assert!(err.contains("broken-0"), "{err}");
    }
}
