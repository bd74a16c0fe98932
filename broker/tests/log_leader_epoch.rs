//! The leader-epoch cache of a partition log (`leader-epoch-checkpoint`) through the log's
//! public API: fed by appends with a new epoch, cut by truncation and retention, and made
//! consistent with the log at reopen (after a crash, or with a damaged or missing file).

use std::path::Path;

use weir_broker::log::batch::build_batch;
use weir_broker::log::leader_epoch::LEADER_EPOCH_FILE;
use weir_broker::log::{Log, LogConfig, LogMetrics};

const NOW: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
    LogConfig { retention_ms: None, retention_bytes: None, segment_ms: i64::MAX / 4, ..LogConfig::default() }
}

fn open(dir: &Path, clean: bool) -> Log {
    Log::open(dir, config(), 0, 0, clean, LogMetrics::unregistered(), NOW).expect("open log").0
}

/// Append `n` one-record batches with `epoch`.
fn append(log: &mut Log, n: usize, epoch: i32) {
    for _ in 0..n {
        let mut b = build_batch(&[(None, Some(&b"value"[..]))], NOW);
        log.append(&mut b, epoch, NOW).unwrap();
    }
}

fn entries(log: &Log) -> Vec<(i32, i64)> {
    log.leader_epochs().entries().iter().map(|e| (e.epoch, e.start_offset)).collect()
}

fn file(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(LEADER_EPOCH_FILE)).unwrap()
}

#[test]
fn appends_with_new_epochs_are_recorded_and_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), true);
    append(&mut log, 3, 0);
    append(&mut log, 2, 2);
    append(&mut log, 1, 5);
    assert_eq!(entries(&log), vec![(0, 0), (2, 3), (5, 5)]);
    assert_eq!(file(dir.path()), "0\n3\n0 0\n2 3\n5 5\n");
    assert_eq!(log.end_offset_for_epoch(0), (0, 3));
    assert_eq!(log.end_offset_for_epoch(3), (2, 5));
    assert_eq!(log.end_offset_for_epoch(5), (5, 6));
    assert_eq!(log.end_offset_for_epoch(6), (-1, -1));
    log.close(NOW).unwrap();
    let log = open(dir.path(), true);
    assert_eq!(entries(&log), vec![(0, 0), (2, 3), (5, 5)]);
}

#[test]
fn truncation_cuts_the_cache_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), true);
    append(&mut log, 3, 0);
    append(&mut log, 3, 1);
    append(&mut log, 3, 2);
    log.truncate_to(4, NOW).unwrap();
    assert_eq!(entries(&log), vec![(0, 0), (1, 3)]);
    assert_eq!(file(dir.path()), "0\n2\n0 0\n1 3\n");
    // A follower copying a newer leader's history from the truncation point.
    append(&mut log, 2, 4);
    assert_eq!(entries(&log), vec![(0, 0), (1, 3), (4, 4)]);
    log.truncate_to(0, NOW).unwrap();
    assert!(entries(&log).is_empty());
}

#[test]
fn reopen_after_a_crash_drops_entries_past_the_log_end() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), true);
        append(&mut log, 2, 0);
        append(&mut log, 2, 1);
        log.flush(NOW).unwrap();
    }
    // The checkpoint got an epoch whose data never reached the disk.
    std::fs::write(dir.path().join(LEADER_EPOCH_FILE), "0\n3\n0 0\n1 2\n7 4\n").unwrap();
    let log = open(dir.path(), false);
    assert_eq!(entries(&log), vec![(0, 0), (1, 2)]);
    assert_eq!(file(dir.path()), "0\n2\n0 0\n1 2\n");
}

#[test]
fn an_epoch_that_wrote_nothing_is_dropped_at_reopen_without_a_repair() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), true);
        log.assign_leader_epoch(3).unwrap();
        log.close(NOW).unwrap();
    }
    assert_eq!(file(dir.path()), "0\n1\n3 0\n");
    let (log, report) = Log::open(dir.path(), config(), 0, 0, true, LogMetrics::unregistered(), NOW).unwrap();
    assert!(entries(&log).is_empty());
    assert!(report.repairs.is_empty(), "{:?}", report.repairs);
    drop(log);

    // The same at the end of a log with records, next to an entry that is real damage.
    {
        let mut log = open(dir.path(), true);
        append(&mut log, 2, 4);
        log.assign_leader_epoch(5).unwrap();
        log.close(NOW).unwrap();
    }
    let (log, report) = Log::open(dir.path(), config(), 0, 0, true, LogMetrics::unregistered(), NOW).unwrap();
    assert_eq!(entries(&log), vec![(4, 0)]);
    assert!(report.repairs.is_empty(), "{:?}", report.repairs);
    drop(log);
    std::fs::write(dir.path().join(LEADER_EPOCH_FILE), "0\n3\n4 0\n5 2\n6 9\n").unwrap();
    let (log, report) = Log::open(dir.path(), config(), 0, 0, false, LogMetrics::unregistered(), NOW).unwrap();
    assert_eq!(entries(&log), vec![(4, 0)]);
    assert_eq!(report.repairs.len(), 1, "{:?}", report.repairs);
}

#[test]
fn missing_or_damaged_checkpoint_is_rebuilt_from_the_batches() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), true);
        append(&mut log, 2, 0);
        append(&mut log, 2, 3);
        log.close(NOW).unwrap();
    }
    std::fs::remove_file(dir.path().join(LEADER_EPOCH_FILE)).unwrap();
    let log = open(dir.path(), true);
    assert_eq!(entries(&log), vec![(0, 0), (3, 2)]);
    drop(log);
    std::fs::write(dir.path().join(LEADER_EPOCH_FILE), "0\n9\ngarbage\n").unwrap();
    let log = open(dir.path(), true);
    assert_eq!(entries(&log), vec![(0, 0), (3, 2)]);
    assert_eq!(file(dir.path()), "0\n2\n0 0\n3 2\n");
}

#[test]
fn retention_moves_the_first_entry_to_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { segment_bytes: 1, retention_bytes: Some(1), ..config() };
    let mut log = Log::open(dir.path(), cfg, 0, 0, true, LogMetrics::unregistered(), NOW).unwrap().0;
    append(&mut log, 2, 0);
    append(&mut log, 2, 1);
    append(&mut log, 1, 2);
    let deleted = log.delete_retained_segments(NOW).unwrap();
    assert!(deleted > 0);
    let start = log.log_start_offset();
    assert_eq!(start, 4);
    assert_eq!(entries(&log), vec![(2, 4)]);
}
