//! A write that fails under the data directory marks the directory failed (Kafka's log-dir
//! failure): the manager's logs refuse every later write, shutdown leaves no clean-shutdown
//! marker, and the next open recovers the logs to their last whole batch.
//!
//! The failure is a real one from the kernel: the file-size limit (RLIMIT_FSIZE) makes the
//! segment's write fail with EFBIG partway through, as a full disk fails it with ENOSPC.
//! nextest runs every test in its own process, so the limit touches nothing else.

use std::path::Path;

use weir_broker::log::batch::{build_batch, BatchView, KeyValue};
use weir_broker::log::checkpoint::CLEAN_SHUTDOWN_FILE;
use weir_broker::log::{now_ms, LogConfig, LogError, LogManager, LogMetrics, TopicPartition};

fn batch(records: usize, value_len: usize) -> Vec<u8> {
    let value = vec![b'v'; value_len];
    let recs: Vec<KeyValue> = (0..records).map(|_| (Some(&b"key"[..]), Some(&value[..]))).collect();
    build_batch(&recs, now_ms())
}

fn set_file_size_limit(bytes: u64) {
    // SAFETY: plain libc calls with valid arguments. Without SIG_IGN the kernel's SIGXFSZ would
    // kill the test process instead of failing the write with EFBIG.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit { rlim_cur: bytes, rlim_max: libc::RLIM_INFINITY };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0, "setrlimit");
    }
}

fn segment_size(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("events-0").join("00000000000000000000.log")).unwrap().len()
}

/// A manager over `dir` with the log of `tp` and of another partition, both empty.
fn manager_with_two_logs(dir: &Path, tp: &TopicPartition) -> (LogManager, SharedLog, SharedLog) {
    let (manager, _) = LogManager::open(dir, LogConfig::default(), LogMetrics::unregistered()).unwrap();
    let log = manager.get_or_create(tp, LogConfig::default()).unwrap();
    let other_log = manager.get_or_create(&TopicPartition::new("other", 0), LogConfig::default()).unwrap();
    (manager, log, other_log)
}

type SharedLog = std::sync::Arc<std::sync::Mutex<weir_broker::log::Log>>;

#[test]
fn a_failed_write_marks_the_directory_failed_and_every_later_write_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let tp = TopicPartition::new("events", 0);
    let (manager, log, other_log) = manager_with_two_logs(tmp.path(), &tp);
    let mut first = batch(10, 100);
    log.lock().unwrap().append(&mut first, 0, now_ms()).unwrap();
    assert!(!manager.dir_failure().has_failed());

    // Room for part of the next batch only: the write stops partway with EFBIG.
    let written = segment_size(tmp.path());
    set_file_size_limit(written + 500);
    let mut second = batch(10, 100);
    let err = log.lock().unwrap().append(&mut second, 0, now_ms()).unwrap_err();
    assert!(matches!(err, LogError::Io { .. }), "{err:?}");
    let reason = manager.dir_failure().reason().expect("the directory is marked failed");
    assert!(reason.contains("File too large"), "{reason}");

    // With room again, nothing is written any more: not to this log, not to another one, not
    // a flush or a roll.
    set_file_size_limit(libc::RLIM_INFINITY);
    let mut small = batch(1, 10);
    let refused = log.lock().unwrap().append(&mut small, 0, now_ms()).unwrap_err();
    assert!(refused.to_string().contains("the data directory failed earlier"), "{refused}");
    assert!(other_log.lock().unwrap().append(&mut batch(1, 10), 0, now_ms()).is_err());
    assert!(log.lock().unwrap().flush(now_ms()).is_err());
    assert!(log.lock().unwrap().roll(now_ms()).is_err());
    assert_eq!(log.lock().unwrap().log_end_offset(), 10);
    assert_eq!(other_log.lock().unwrap().log_end_offset(), 0);

    // Shutdown cannot close the logs and leaves no clean-shutdown marker, so the next open
    // scans the segment and cuts the half-written batch.
    assert!(manager.shutdown().is_err());
    assert!(!tmp.path().join(CLEAN_SHUTDOWN_FILE).exists());
    drop((log, other_log, manager));
    assert!(segment_size(tmp.path()) > written, "the failed write left part of its batch");
    let (manager, report) = LogManager::open(tmp.path(), LogConfig::default(), LogMetrics::unregistered()).unwrap();
    assert!(!report.clean_shutdown);
    assert!(report.truncated_bytes > 0);
    assert!(!manager.dir_failure().has_failed());
    let log = manager.get(&tp).unwrap();
    let mut log = log.lock().unwrap();
    assert_eq!(log.log_end_offset(), 10);
    let bytes = log.read(0, usize::MAX, i64::MAX, true).unwrap().unwrap().to_vec().unwrap();
    assert_eq!(BatchView::parse(&bytes).unwrap().bytes(), &first[..]);
    // And the recovered log takes appends again.
    assert_eq!(log.append(&mut batch(2, 10), 0, now_ms()).unwrap().first_offset, 10);
}

#[test]
fn a_log_outside_the_manager_keeps_its_own_error_handling() {
    // AMQP queue stores open logs directly; a failed write there is their error to handle,
    // and once there is room the same log writes again.
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) =
        weir_broker::log::Log::open(tmp.path(), LogConfig::default(), 0, 0, true, LogMetrics::unregistered(), now_ms())
            .unwrap();
    log.append(&mut batch(1, 10), 0, now_ms()).unwrap();
    let size = std::fs::metadata(tmp.path().join("00000000000000000000.log")).unwrap().len();
    set_file_size_limit(size + 10);
    assert!(log.append(&mut batch(10, 100), 0, now_ms()).is_err());
    set_file_size_limit(libc::RLIM_INFINITY);
    log.append(&mut batch(1, 10), 0, now_ms()).unwrap();
}

#[test]
fn writes_to_a_log_deleted_under_its_holder_are_refused_and_the_directory_stays_healthy() {
    // A produce handler or a coordinator may hold a log while the replica manager deletes it
    // (the topic deleted, the replica moved away). Its next write is then a write into a
    // directory that is gone: refused, and no reason to fail the whole data directory.
    let tmp = tempfile::tempdir().unwrap();
    let tp = TopicPartition::new("events", 0);
    let (manager, log, other_log) = manager_with_two_logs(tmp.path(), &tp);
    log.lock().unwrap().append(&mut batch(10, 100), 0, now_ms()).unwrap();

    let held = log.clone();
    assert!(manager.delete(&tp).unwrap());
    assert!(!tmp.path().join("events-0").exists());

    // A roll makes a segment's files in the directory; a new leader epoch rewrites its
    // checkpoint there; an append, a flush and a truncation touch the segment.
    let mut held = held.lock().unwrap();
    let refusals = [
        held.roll(now_ms()).unwrap_err(),
        held.append(&mut batch(1, 10), 1, now_ms()).unwrap_err(),
        held.assign_leader_epoch(2).unwrap_err(),
        held.flush(now_ms()).unwrap_err(),
        held.truncate_to(5, now_ms()).unwrap_err(),
    ];
    for err in &refusals {
        assert!(matches!(err, LogError::Deleted { .. }), "{err:?}");
    }
    assert_eq!(held.log_end_offset(), 10, "nothing was written");
    drop(held);
    assert!(!tmp.path().join("events-0").exists(), "nothing made the directory again");
    assert!(!manager.dir_failure().has_failed(), "{:?}", manager.dir_failure().reason());

    // Every other log goes on, and the partition can be made again.
    other_log.lock().unwrap().append(&mut batch(1, 10), 0, now_ms()).unwrap();
    let again = manager.get_or_create(&tp, LogConfig::default()).unwrap();
    assert_eq!(again.lock().unwrap().append(&mut batch(1, 10), 0, now_ms()).unwrap().first_offset, 0);
    manager.shutdown().unwrap();
}
