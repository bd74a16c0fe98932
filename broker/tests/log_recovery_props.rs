//! Crash recovery of one partition log, by property: random appends (batch sizes, record
//! counts, timestamps, several batches per append), explicit rolls and flushes on small
//! segments and indexes; then a crash (the `Log` is dropped without `close`) that cuts the
//! active segment's `.log` at a random byte, appends garbage to it, or both. Reopened without
//! the clean-shutdown flag, the log must hold exactly a prefix of the acknowledged batches,
//! byte for byte, and every lookup must agree with a linear scan of that prefix.
//!
//! `PROPTEST_CASES` overrides the number of cases (64 by default, a few seconds in debug).

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;
use weir_broker::log::batch::{build_batch, BatchView};
use weir_broker::log::{Log, LogConfig, LogMetrics};

const NOW: i64 = 1_700_000_000_000;

/// One acknowledged batch: where it was written and its bytes as the log holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Acked {
    segment: i64,
    position: u64,
    base: i64,
    last: i64,
    max_ts: i64,
    bytes: Vec<u8>,
}

type Record = (Option<Vec<u8>>, Option<Vec<u8>>);
/// A record as `build_batch` takes it: (key, value).
type Rec<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

#[derive(Debug, Clone)]
struct BatchSpec {
    records: Vec<Record>,
    ts_delta: i64,
}

#[derive(Debug, Clone)]
enum Op {
    /// One `Log::append` call with one to three batches.
    Append(Vec<BatchSpec>),
    Roll,
    Flush,
    /// `Log::truncate_to` an offset in `0..=log end` (a follower dropping a divergent suffix).
    TruncateTo(Index),
    /// A clean `close` and reopen in the middle of the run.
    CloseReopen,
}

#[derive(Debug, Clone)]
enum Garbage {
    Random(Vec<u8>),
    /// What a file extended by the OS but never written looks like.
    Zeros(usize),
    /// A valid batch written again: its CRC is right, but its offsets go backwards.
    Replay(Index),
}

#[derive(Debug, Clone)]
struct Crash {
    /// Cut the active `.log` to this fraction of its length (any byte, 0 and full length included).
    cut: Option<Index>,
    garbage: Option<Garbage>,
    /// Reopen with the recovery point the log had, rather than 0.
    keep_recovery_point: bool,
}

#[derive(Debug, Clone)]
struct Scenario {
    segment_bytes: u64,
    index_interval_bytes: u64,
    segment_index_bytes: u64,
    segment_ms: i64,
    ops: Vec<Op>,
    crash: Crash,
}

fn record() -> impl Strategy<Value = Record> {
    (
        proptest::option::weighted(0.7, proptest::collection::vec(any::<u8>(), 0..8)),
        proptest::option::weighted(0.9, proptest::collection::vec(any::<u8>(), 0..120)),
    )
}

fn batch_spec() -> impl Strategy<Value = BatchSpec> {
    (proptest::collection::vec(record(), 1..6), -20_000i64..20_000)
        .prop_map(|(records, ts_delta)| BatchSpec { records, ts_delta })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => proptest::collection::vec(batch_spec(), 1..=3).prop_map(Op::Append),
        1 => Just(Op::Roll),
        1 => Just(Op::Flush),
        1 => any::<Index>().prop_map(Op::TruncateTo),
        1 => Just(Op::CloseReopen),
    ]
}

fn garbage() -> impl Strategy<Value = Garbage> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..200).prop_map(Garbage::Random),
        (1usize..200).prop_map(Garbage::Zeros),
        any::<Index>().prop_map(Garbage::Replay),
    ]
}

fn crash() -> impl Strategy<Value = Crash> {
    let what = prop_oneof![
        any::<Index>().prop_map(|i| (Some(i), None)),
        garbage().prop_map(|g| (None, Some(g))),
        (any::<Index>(), garbage()).prop_map(|(i, g)| (Some(i), Some(g))),
    ];
    (what, any::<bool>()).prop_map(|((cut, garbage), keep_recovery_point)| Crash { cut, garbage, keep_recovery_point })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        150u64..1500,
        0u64..400,
        prop_oneof![Just(64u64), Just(128), Just(4096)],
        prop_oneof![Just(10_000i64), Just(7 * 24 * 3_600_000)],
        proptest::collection::vec(op(), 1..40),
        crash(),
    )
        .prop_map(|(segment_bytes, index_interval_bytes, segment_index_bytes, segment_ms, ops, crash)| Scenario {
            segment_bytes,
            index_interval_bytes,
            segment_index_bytes,
            segment_ms,
            ops,
            crash,
        })
}

fn config(s: &Scenario) -> LogConfig {
    LogConfig {
        segment_bytes: s.segment_bytes,
        index_interval_bytes: s.index_interval_bytes,
        segment_index_bytes: s.segment_index_bytes,
        segment_ms: s.segment_ms,
        retention_ms: None,
        retention_bytes: None,
        ..LogConfig::default()
    }
}

fn build(spec: &BatchSpec) -> Vec<u8> {
    let recs: Vec<Rec> = spec.records.iter().map(|(k, v)| (k.as_deref(), v.as_deref())).collect();
    build_batch(&recs, NOW + spec.ts_delta)
}

fn segment_log_path(dir: &Path, base: i64) -> std::path::PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// Every batch of the log from its start, read back with `Log::read` (whole slices).
fn read_all(log: &Log) -> Result<Vec<(i64, Vec<u8>)>, TestCaseError> {
    let mut out: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let slice = log.read(offset, usize::MAX, i64::MAX, true).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let Some(slice) = slice else {
            return Err(TestCaseError::fail(format!("nothing at {offset} below the log end {}", log.log_end_offset())));
        };
        let bytes = slice.to_vec().unwrap();
        let mut at = 0;
        while at < bytes.len() {
            let v = BatchView::parse(&bytes[at..]).map_err(|e| TestCaseError::fail(format!("read back: {e}")))?;
            out.push((v.base_offset(), v.bytes().to_vec()));
            at += v.size();
        }
        offset = BatchView::parse(&out.last().unwrap().1).unwrap().last_offset() + 1;
    }
    Ok(out)
}

/// Check that `log` holds exactly `expected` and that reads by offset and by timestamp agree
/// with a linear scan of it.
fn check_log(log: &Log, expected: &[Acked]) -> Result<(), TestCaseError> {
    let end = expected.last().map(|a| a.last + 1).unwrap_or(0);
    prop_assert_eq!(log.log_end_offset(), end);
    let back = read_all(log)?;
    let want: Vec<(i64, Vec<u8>)> = expected.iter().map(|a| (a.base, a.bytes.clone())).collect();
    prop_assert!(back == want, "read back {} batches, expected {}", back.len(), want.len());
    for a in expected {
        for o in a.base..=a.last {
            let slice = log.read(o, 1, i64::MAX, true).unwrap().expect("a batch below the log end");
            prop_assert_eq!(slice.first_batch_offset, a.base, "offset {}", o);
            prop_assert_eq!(slice.to_vec().unwrap(), a.bytes.clone(), "offset {}", o);
        }
    }
    prop_assert!(log.read(end, 1, i64::MAX, true).unwrap().is_none());
    prop_assert!(log.read(end + 1, 1, i64::MAX, true).is_err());
    let mut probes: Vec<i64> = expected.iter().flat_map(|a| [a.max_ts - 1, a.max_ts, a.max_ts + 1]).collect();
    probes.extend([i64::MIN, 0, NOW - 30_000, NOW + 30_000]);
    for ts in probes {
        let found = log.find_batch_by_timestamp(ts).unwrap().map(|b| (b.base_offset, b.position));
        let scan = expected.iter().find(|a| a.max_ts >= ts).map(|a| (a.base, a.position));
        prop_assert_eq!(found, scan, "timestamp {}", ts);
    }
    Ok(())
}

fn run(s: Scenario) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&s);
    let (mut log, _) = Log::open(dir.path(), cfg.clone(), 0, 0, true, LogMetrics::unregistered(), NOW).unwrap();
    let mut acked: Vec<Acked> = Vec::new();
    let mut now = NOW;
    for op in &s.ops {
        now += 1;
        match op {
            Op::Append(specs) => {
                let mut bytes: Vec<u8> = specs.iter().flat_map(build).collect();
                let info = log.append(&mut bytes, 1, now).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(info.first_offset, acked.last().map(|a| a.last + 1).unwrap_or(0));
                let segment = *log.segment_base_offsets().last().unwrap();
                let mut position =
                    acked.iter().filter(|a| a.segment == segment).map(|a| a.bytes.len() as u64).sum::<u64>();
                let mut at = 0;
                while at < bytes.len() {
                    let v = BatchView::parse(&bytes[at..]).unwrap();
                    acked.push(Acked {
                        segment,
                        position,
                        base: v.base_offset(),
                        last: v.last_offset(),
                        max_ts: v.max_timestamp(),
                        bytes: v.bytes().to_vec(),
                    });
                    position += v.size() as u64;
                    at += v.size();
                }
                prop_assert_eq!(info.last_offset, acked.last().unwrap().last);
            }
            Op::Roll => log.roll(now).unwrap(),
            Op::Flush => log.flush(now).unwrap(),
            Op::TruncateTo(i) => {
                let offset = i.index(log.log_end_offset() as usize + 1) as i64;
                log.truncate_to(offset, now).unwrap();
                // The batch holding `offset` goes whole, and everything after it.
                acked.retain(|a| a.last < offset);
                prop_assert_eq!(log.log_end_offset(), acked.last().map(|a| a.last + 1).unwrap_or(0));
            }
            Op::CloseReopen => {
                log.close(now).unwrap();
                drop(log);
                let (reopened, report) =
                    Log::open(dir.path(), cfg.clone(), 0, 0, true, LogMetrics::unregistered(), now).unwrap();
                prop_assert_eq!(report.truncated_bytes, 0);
                log = reopened;
            }
        }
    }
    // Before the crash everything is there.
    check_log(&log, &acked)?;

    let active = *log.segment_base_offsets().last().unwrap();
    let segments_before = log.segment_base_offsets();
    let recovery_point = if s.crash.keep_recovery_point { log.recovery_point() } else { 0 };
    drop(log); // the crash: no close, no flush

    let path = segment_log_path(dir.path(), active);
    let mut file = std::fs::read(&path).unwrap();
    let active_len: u64 = acked.iter().filter(|a| a.segment == active).map(|a| a.bytes.len() as u64).sum();
    prop_assert_eq!(file.len() as u64, active_len);
    let kept_len = match &s.crash.cut {
        Some(i) => i.index(file.len() + 1),
        None => file.len(),
    };
    file.truncate(kept_len);
    // Batches wholly before the cut (the only ones a replay may repeat: a crash cannot leave a
    // later batch at an earlier position).
    let before_cut: Vec<&Acked> =
        acked.iter().filter(|a| a.segment != active || a.position + a.bytes.len() as u64 <= kept_len as u64).collect();
    match &s.crash.garbage {
        Some(Garbage::Random(g)) => file.extend_from_slice(g),
        Some(Garbage::Zeros(n)) => file.extend(std::iter::repeat_n(0u8, *n)),
        Some(Garbage::Replay(i)) if !before_cut.is_empty() => {
            file.extend_from_slice(&before_cut[i.index(before_cut.len())].bytes)
        }
        Some(Garbage::Replay(_)) => file.extend_from_slice(&[0; 61]),
        None => {}
    }
    std::fs::write(&path, &file).unwrap();

    // What must survive: every batch of the sealed segments, then the batches of the active
    // segment as long as their bytes are intact. (Garbage may restore what the cut removed,
    // e.g. zeros after a cut inside a run of zero bytes: such a batch is whole and valid.)
    let intact = |a: &Acked| {
        let (from, to) = (a.position as usize, a.position as usize + a.bytes.len());
        file.get(from..to) == Some(&a.bytes[..])
    };
    let expected: Vec<Acked> = acked.iter().take_while(|a| a.segment != active || intact(a)).cloned().collect();
    let surviving_active: u64 = expected.iter().filter(|a| a.segment == active).map(|a| a.bytes.len() as u64).sum();

    let (mut log, report) =
        Log::open(dir.path(), cfg.clone(), recovery_point, 0, false, LogMetrics::unregistered(), now).unwrap();
    prop_assert_eq!(report.truncated_bytes, file.len() as u64 - surviving_active, "{:?}", report.repairs);
    prop_assert_eq!(report.segments_deleted, 0);
    prop_assert_eq!(log.segment_base_offsets(), segments_before);
    prop_assert_eq!(std::fs::metadata(&path).unwrap().len(), surviving_active);
    prop_assert_eq!(log.recovery_point(), log.log_end_offset());
    check_log(&log, &expected)?;

    // Appends continue right after the surviving prefix.
    let mut expected = expected;
    let end = log.log_end_offset();
    let mut next = build_batch(&[(Some(b"after"), Some(b"recovery")), (None, Some(b"x"))], now);
    let info = log.append(&mut next, 2, now).unwrap();
    prop_assert_eq!((info.first_offset, info.last_offset), (end, end + 1));
    let segment = *log.segment_base_offsets().last().unwrap();
    let position = expected.iter().filter(|a| a.segment == segment).map(|a| a.bytes.len() as u64).sum();
    expected.push(Acked { segment, position, base: end, last: end + 1, max_ts: now + 1, bytes: next });
    check_log(&log, &expected)?;

    // And the repaired log survives a clean close and reopen unchanged.
    log.close(now).unwrap();
    drop(log);
    let (log, report) = Log::open(dir.path(), cfg, 0, 0, true, LogMetrics::unregistered(), now).unwrap();
    prop_assert_eq!(report.truncated_bytes, 0);
    check_log(&log, &expected)?;
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

proptest! {
    // No regression files: this test directory holds only the test sources.
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn recovery_keeps_exactly_a_prefix_of_acknowledged_batches(s in scenario()) {
        run(s)?;
    }
}

// ---------------------------------------------------------------------------------------------
// One flipped byte
// ---------------------------------------------------------------------------------------------

/// A log of 3 sealed segments of 4 batches and an active one of 7 batches (2-3 records each,
/// an index entry every ~2 batches). Returns the acknowledged batches, per segment.
fn four_segments(dir: &Path, cfg: &LogConfig) -> Vec<Vec<Acked>> {
    let (mut log, _) = Log::open(dir, cfg.clone(), 0, 0, true, LogMetrics::unregistered(), NOW).unwrap();
    let mut segments = Vec::new();
    for (s, n) in [4, 4, 4, 7].into_iter().enumerate() {
        if s > 0 {
            log.roll(NOW).unwrap();
        }
        let mut batches: Vec<Acked> = Vec::new();
        let mut position = 0;
        for i in 0..n {
            let value = vec![b'v'; 30 + 10 * i];
            let recs: [Rec; 3] = [(Some(b"k"), Some(&value)), (None, Some(b"w")), (Some(b"z"), None)];
            let mut b = build_batch(&recs[..2 + i % 2], NOW + (s * 10 + i) as i64);
            log.append(&mut b, 0, NOW).unwrap();
            let v = BatchView::parse(&b).unwrap();
            let segment = *log.segment_base_offsets().last().unwrap();
            batches.push(Acked {
                segment,
                position,
                base: v.base_offset(),
                last: v.last_offset(),
                max_ts: v.max_timestamp(),
                bytes: b.clone(),
            });
            position += b.len() as u64;
        }
        segments.push(batches);
    }
    assert_eq!(log.segment_count(), 4);
    log.flush(NOW).unwrap();
    drop(log);
    segments
}

/// Flip one byte of batch `victim` of segment `seg` at `at` (from the batch start), reopen after
/// a crash with `recovery_point`, and check that recovery cut the log right before that batch.
fn flip_and_recover(seg: usize, victim: usize, at: usize, recovery_point: i64) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { index_interval_bytes: 150, retention_ms: None, ..LogConfig::default() };
    let segments = four_segments(dir.path(), &cfg);
    let b = &segments[seg][victim];
    let path = segment_log_path(dir.path(), b.segment);
    let mut bytes = std::fs::read(&path).unwrap();
    let len_before = bytes.len() as u64;
    bytes[(b.position as usize) + at] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();

    let (log, report) = Log::open(dir.path(), cfg, recovery_point, 0, false, LogMetrics::unregistered(), NOW).unwrap();
    let what = format!("segment {seg} batch {victim} byte {at}: {:?}", report.repairs);
    assert_eq!(report.truncated_bytes, len_before - b.position, "{what}");
    assert_eq!(report.segments_deleted, segments.len() - 1 - seg, "{what}");
    assert_eq!(log.log_end_offset(), b.base, "{what}");
    assert_eq!(log.segment_count(), seg + 1, "{what}");
    let expected: Vec<Acked> = segments.concat().into_iter().filter(|a| a.base < b.base).collect();
    check_log(&log, &expected).unwrap_or_else(|e| panic!("{what}: {e}"));
}

#[test]
fn a_flipped_byte_in_the_active_segment_cuts_the_log_at_that_batch() {
    // Every batch of the active segment but the first and last, and bytes in the length,
    // magic, CRC, attributes, offset delta, timestamps, producer fields, count and records.
    for victim in 1..6 {
        for at in [9, 16, 18, 22, 25, 30, 40, 45, 52, 55, 58, 61, 70] {
            for recovery_point in [0, 26] {
                flip_and_recover(3, victim, at, recovery_point);
            }
        }
    }
}

#[test]
fn a_flipped_byte_in_an_unflushed_sealed_segment_cuts_there_and_drops_later_segments() {
    // With recovery point 0 every segment is scanned: a corrupt batch in segment 1 ends the
    // log there, and segments 2 and 3 would leave a hole, so they are deleted.
    for at in [10, 20, 64] {
        flip_and_recover(1, 2, at, 0);
    }
}

#[test]
fn a_base_offset_going_backwards_is_cut_like_a_crc_error() {
    // The base offset is outside the CRC; recovery still refuses offsets that go backwards.
    // Byte 7 is the low byte of the big-endian base offset; batch 3 of the active segment
    // starts at an odd offset here, so clearing bit 0 moves it back by one.
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { index_interval_bytes: 150, retention_ms: None, ..LogConfig::default() };
    let segments = four_segments(dir.path(), &cfg);
    let b = segments[3].iter().find(|a| a.base % 2 == 1 && a.position > 0).unwrap().clone();
    let path = segment_log_path(dir.path(), b.segment);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[b.position as usize + 7] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let (log, report) = Log::open(dir.path(), cfg, 0, 0, false, LogMetrics::unregistered(), NOW).unwrap();
    assert!(report.truncated_bytes > 0, "{:?}", report.repairs);
    assert_eq!(log.log_end_offset(), b.base);
    let expected: Vec<Acked> = segments.concat().into_iter().filter(|a| a.base < b.base).collect();
    check_log(&log, &expected).unwrap();
}
