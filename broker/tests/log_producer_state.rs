//! Idempotent producers at the log: a retried batch is answered with its original offsets
//! and not written again, a sequence gap or an older epoch is refused, and the state comes
//! back from the batch headers after a restart (clean or not).

use weir_broker::log::batch::{build_batch, BatchMut, BASE_SEQUENCE, PRODUCER_EPOCH, PRODUCER_ID};
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
