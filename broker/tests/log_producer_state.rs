//! Idempotent producers at the log: a retried batch is answered with its original offsets
//! and not written again, a sequence gap or an older epoch is refused, and the state comes
//! back after a restart (clean or not) and a truncation: from the newest usable snapshot and
//! the batch headers after it.

use weir_broker::log::batch::{build_batch, BatchMut, BASE_SEQUENCE, PRODUCER_EPOCH, PRODUCER_ID};
use weir_broker::log::producer_snapshot;
use weir_broker::log::{now_ms, Log, LogConfig, LogError, LogMetrics};

fn idempotent_batch(pid: i64, epoch: i16, seq: i32, records: usize) -> Vec<u8> {
    let recs: Vec<_> = (0..records).map(|_| (None, Some(&b"value"[..]))).collect();
    let mut b = build_batch(&recs, now_ms());
    b[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&pid.to_be_bytes());
    b[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_be_bytes());
    b[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
    BatchMut::new(&mut b).update_crc();
    b
}

fn open(dir: &std::path::Path, clean: bool) -> Log {
    Log::open(dir, LogConfig::default(), 0, 0, clean, LogMetrics::unregistered(), now_ms()).unwrap().0
}

#[test]
fn retries_are_deduplicated_and_gaps_refused_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), true);
    let first = log.append(&mut idempotent_batch(42, 0, 0, 3), 0, now_ms()).unwrap();
    assert_eq!((first.first_offset, first.last_offset, first.duplicate), (0, 2, false));
    let second = log.append(&mut idempotent_batch(42, 0, 3, 2), 0, now_ms()).unwrap();
    assert_eq!((second.first_offset, second.last_offset), (3, 4));

    // The retry of the first batch: same offsets, nothing written.
    let retry = log.append(&mut idempotent_batch(42, 0, 0, 3), 0, now_ms()).unwrap();
    assert!(retry.duplicate);
    assert_eq!((retry.first_offset, retry.last_offset), (0, 2));
    assert_eq!(log.log_end_offset(), 5);

    // A gap and an older epoch are refused and write nothing.
    assert!(matches!(
        log.append(&mut idempotent_batch(42, 0, 9, 1), 0, now_ms()),
        Err(LogError::OutOfOrderSequence { expected: 5, got: 9, .. })
    ));
    assert_eq!(log.log_end_offset(), 5);

    // After a crash (no clean close) the state is rebuilt from the headers.
    drop(log);
    let mut log = open(dir.path(), false);
    let retry = log.append(&mut idempotent_batch(42, 0, 3, 2), 0, now_ms()).unwrap();
    assert!(retry.duplicate, "the second batch must still be known after reopening");
    assert_eq!(retry.first_offset, 3);
    let next = log.append(&mut idempotent_batch(42, 0, 5, 1), 0, now_ms()).unwrap();
    assert_eq!(next.first_offset, 5);

    // A bumped epoch starts again at 0; the old epoch is then fenced.
    log.append(&mut idempotent_batch(42, 1, 0, 1), 0, now_ms()).unwrap();
    assert!(matches!(
        log.append(&mut idempotent_batch(42, 0, 6, 1), 0, now_ms()),
        Err(LogError::ProducerFenced { .. })
    ));
    // Non-idempotent batches are not tracked.
    let mut plain = build_batch(&[(None, Some(b"x"))], now_ms());
    log.append(&mut plain, 0, now_ms()).unwrap();
    let mut plain = build_batch(&[(None, Some(b"x"))], now_ms());
    assert!(!log.append(&mut plain, 0, now_ms()).unwrap().duplicate);
}

#[test]
fn a_producer_whose_batches_are_gone_or_expired_goes_on_at_its_sequence() {
    // Kafka's rule: a producer the log knows nothing of is accepted at any sequence. Its
    // batches may all be below the log start (DeleteRecords, retention) after a restart, or
    // its state expired (`producer.id.expiration.ms`); refusing it would fail a producer that
    // did nothing wrong.
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), true);
    log.append(&mut idempotent_batch(7, 0, 0, 3), 0, now_ms()).unwrap();
    log.append(&mut idempotent_batch(8, 0, 0, 2), 0, now_ms()).unwrap();
    assert!(log.advance_log_start_offset(log.log_end_offset()).unwrap());
    log.close(now_ms()).unwrap();
    drop(log);
    let (mut log, _) =
        Log::open(dir.path(), LogConfig::default(), 0, 5, true, LogMetrics::unregistered(), now_ms()).unwrap();
    let next = log.append(&mut idempotent_batch(7, 0, 3, 1), 0, now_ms()).unwrap();
    assert_eq!((next.first_offset, next.duplicate), (5, false));
    // Known again, it is held to its sequence.
    assert!(matches!(
        log.append(&mut idempotent_batch(7, 0, 9, 1), 0, now_ms()),
        Err(LogError::OutOfOrderSequence { expected: 4, got: 9, .. })
    ));

    // Expiration forgets a producer silent that long, and only such a one.
    assert_eq!(log.remove_expired_producers(now_ms(), 60_000), 0);
    assert_eq!(log.remove_expired_producers(now_ms() + 60_000, 60_000), 1);
    let after = log.append(&mut idempotent_batch(7, 0, 9, 1), 0, now_ms()).unwrap();
    assert_eq!((after.first_offset, after.duplicate), (6, false));
}

/// Segments of about two one-record batches, so every few appends roll (and snapshot).
fn small_segments() -> LogConfig {
    LogConfig { segment_bytes: 200, ..LogConfig::default() }
}

fn open_small(dir: &std::path::Path, clean: bool) -> (Log, weir_broker::log::RecoveryReport) {
    Log::open(dir, small_segments(), 0, 0, clean, LogMetrics::unregistered(), now_ms()).unwrap()
}

/// Producer `pid` appends one-record batches with sequences `seqs`.
fn produce(log: &mut Log, pid: i64, seqs: std::ops::Range<i32>) {
    for seq in seqs {
        let a = log.append(&mut idempotent_batch(pid, 0, seq, 1), 0, now_ms()).unwrap();
        assert!(!a.duplicate);
    }
}

/// What the log expects of producer `pid` next: its retry of `last` is a duplicate, and its
/// next sequence after `last` is accepted while one further on is refused. Leaves the log as
/// it was but for the accepted batch.
fn assert_expects(log: &mut Log, pid: i64, last: i32) {
    let retry = log.append(&mut idempotent_batch(pid, 0, last, 1), 0, now_ms()).unwrap();
    assert!(retry.duplicate, "producer {pid}: a retry of sequence {last} must be a duplicate");
    assert!(
        matches!(
            log.append(&mut idempotent_batch(pid, 0, last + 2, 1), 0, now_ms()),
            Err(LogError::OutOfOrderSequence { expected, .. }) if expected == last + 1
        ),
        "producer {pid}: sequence {} must be refused",
        last + 2
    );
    assert!(!log.append(&mut idempotent_batch(pid, 0, last + 1, 1), 0, now_ms()).unwrap().duplicate);
}

/// Point every batch header of the segment at `base` to producer `pid` (CRC left stale: a
/// trusted open does not check it). Whoever reads these headers learns a wrong producer.
fn poison_segment(dir: &std::path::Path, base: i64, pid: i64) {
    use weir_broker::log::batch::{batch_size, PRODUCER_ID};
    let path = weir_broker::log::segment::log_path(dir, base);
    let mut bytes = std::fs::read(&path).unwrap();
    let mut at = 0;
    while at < bytes.len() {
        let size = batch_size(&bytes[at..]).unwrap();
        bytes[at + PRODUCER_ID..at + PRODUCER_ID + 8].copy_from_slice(&pid.to_be_bytes());
        at += size;
    }
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn a_clean_reopen_restores_the_state_from_the_snapshot_without_reading_the_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_small(dir.path(), true);
    produce(&mut log, 1, 0..6);
    produce(&mut log, 2, 0..3);
    let leo = log.log_end_offset();
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 4, "the small segments rolled: {bases:?}");
    log.close(now_ms()).unwrap();
    drop(log);
    // A snapshot at every roll and one at the log end.
    let mut expected: Vec<i64> = bases[1..].to_vec();
    expected.push(leo);
    assert_eq!(producer_snapshot::list(dir.path()).unwrap(), expected);

    // Were the headers read, producer 99 would appear and 1 and 2 would lose batches.
    for &base in &bases {
        poison_segment(dir.path(), base, 99);
    }
    let (mut log, report) = open_small(dir.path(), true);
    assert_eq!(report.producer_snapshot, Some(leo));
    assert_eq!(log.active_producers().iter().map(|p| p.producer_id).collect::<Vec<_>>(), vec![1, 2]);
    assert_expects(&mut log, 1, 5);
    assert_expects(&mut log, 2, 2);
}

#[test]
fn after_a_crash_the_newest_snapshot_below_the_log_end_and_the_batches_after_it_restore_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_small(dir.path(), true);
    produce(&mut log, 1, 0..5);
    let last_roll = *log.segment_base_offsets().last().unwrap();
    // Appended after the last roll: only in the batches, in no snapshot.
    produce(&mut log, 2, 0..1);
    assert_eq!(log.segment_base_offsets().last(), Some(&last_roll));
    drop(log); // no close: a crash

    let (mut log, report) = open_small(dir.path(), false);
    assert_eq!(report.producer_snapshot, Some(last_roll));
    assert_expects(&mut log, 1, 4);
    assert_expects(&mut log, 2, 0);
}

#[test]
fn a_damaged_snapshot_is_deleted_and_an_older_one_used() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_small(dir.path(), true);
    produce(&mut log, 1, 0..6);
    let leo = log.log_end_offset();
    log.close(now_ms()).unwrap();
    drop(log);
    let snapshots = producer_snapshot::list(dir.path()).unwrap();
    let older = snapshots[snapshots.len() - 2];
    // A torn write: the newest file lost its last byte.
    let newest = producer_snapshot::snapshot_path(dir.path(), leo);
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() - 1]).unwrap();

    let (mut log, report) = open_small(dir.path(), true);
    assert_eq!(report.producer_snapshot, Some(older));
    assert!(!newest.exists(), "the damaged snapshot is deleted");
    assert_expects(&mut log, 1, 5);
}

#[test]
fn a_snapshot_past_a_log_end_cut_by_recovery_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_small(dir.path(), true);
    produce(&mut log, 1, 0..6);
    let leo = log.log_end_offset();
    let last_base = *log.segment_base_offsets().last().unwrap();
    log.close(now_ms()).unwrap();
    drop(log);
    // The last segment's tail never reached the disk: recovery cuts its last batch, so
    // the snapshot at the old log end describes a batch that is gone.
    let path = weir_broker::log::segment::log_path(dir.path(), last_base);
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 1).unwrap();
    drop(f);

    let (mut log, report) =
        Log::open(dir.path(), small_segments(), last_base, 0, false, LogMetrics::unregistered(), now_ms()).unwrap();
    assert_eq!(log.log_end_offset(), leo - 1);
    assert!(report.producer_snapshot.is_some_and(|s| s < leo), "{:?}", report.producer_snapshot);
    assert!(!producer_snapshot::snapshot_path(dir.path(), leo).exists());
    // Sequence 5 is gone with its batch: it may be sent again, and is new.
    assert!(!log.append(&mut idempotent_batch(1, 0, 5, 1), 0, now_ms()).unwrap().duplicate);
}

#[test]
fn truncation_drops_the_snapshots_past_the_new_end_and_reloads_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_small(dir.path(), true);
    produce(&mut log, 1, 0..8);
    let bases = log.segment_base_offsets();
    // Cut inside the log: sequences 0-2 remain (offsets 0-2).
    log.truncate_to(3, now_ms()).unwrap();
    assert_eq!(log.log_end_offset(), 3);
    assert!(producer_snapshot::list(dir.path()).unwrap().iter().all(|&o| o <= 3), "{bases:?}");
    assert_expects(&mut log, 1, 2);
    // A follower restarting empty forgets everything, snapshots too.
    log.truncate_fully_and_start_at(100, now_ms()).unwrap();
    assert!(producer_snapshot::list(dir.path()).unwrap().is_empty());
    assert!(log.active_producers().is_empty());
}

#[test]
fn segments_deleted_from_the_front_take_their_snapshots_and_their_producers_along() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_small(dir.path(), true);
    produce(&mut log, 1, 0..2);
    produce(&mut log, 2, 0..6);
    let bases = log.segment_base_offsets();
    let cut = bases[2];
    assert!(cut > 2, "producer 1's batches are below {cut}");
    log.delete_segments_before(cut).unwrap();
    assert_eq!(log.log_start_offset(), cut);
    assert!(producer_snapshot::list(dir.path()).unwrap().iter().all(|&o| o >= cut));
    assert_eq!(log.active_producers().iter().map(|p| p.producer_id).collect::<Vec<_>>(), vec![2]);
    // DeleteRecords inside a segment forgets producer 2 once all its batches are below.
    let leo = log.log_end_offset();
    assert!(log.advance_log_start_offset(leo).unwrap());
    assert!(log.active_producers().is_empty());
}
