//! Behaviour of one partition log (`weir_broker::log::Log`) through its public API:
//! rolling, sparse indexes, reads, timestamp lookup, retention, append validation
//! (KIP-937, LogAppendTime, max.message.bytes, CRC), flushing, truncation and clean reopen.
//! The files on disk are checked directly where the format is the point (see docs/storage.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use weir_broker::log::batch::{build_batch, BatchView};
use weir_broker::log::{Log, LogConfig, LogError, LogMetrics, TimestampType};

/// A fixed "now" so that every timestamp below is reproducible (2023-11-14T22:13:20Z).
const NOW: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;

/// A record as `build_batch` takes it: (key, value).
type Rec<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);
/// Offset index entries (offset, position) and time index entries (timestamp, offset).
type IndexEntries = (Vec<(i64, u32)>, Vec<(i64, i64)>);

fn open_with(dir: &Path, cfg: LogConfig, recovery_point: i64, clean: bool, now: i64) -> Log {
    Log::open(dir, cfg, recovery_point, 0, clean, LogMetrics::unregistered(), now).expect("open log").0
}

fn open(dir: &Path, cfg: LogConfig) -> Log {
    open_with(dir, cfg, 0, true, NOW)
}

/// A config with everything that could interfere with a test switched off.
fn quiet_config() -> LogConfig {
    LogConfig { retention_ms: None, retention_bytes: None, segment_ms: i64::MAX / 4, ..LogConfig::default() }
}

/// A batch of `records` records whose values are `value_len` bytes each, timestamps `ts..`.
fn batch(records: usize, value_len: usize, ts: i64) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..records).map(|i| vec![b'a' + (i % 26) as u8; value_len]).collect();
    let recs: Vec<Rec> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (if i % 2 == 0 { Some(&b"key"[..]) } else { None }, Some(&v[..])))
        .collect();
    build_batch(&recs, ts)
}

/// One appended batch as the log holds it: offsets assigned, bytes as written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Acked {
    base: i64,
    last: i64,
    max_ts: i64,
    bytes: Vec<u8>,
}

impl Acked {
    fn of(bytes: &[u8]) -> Self {
        let v = BatchView::parse(bytes).expect("acked batch is valid");
        Acked { base: v.base_offset(), last: v.last_offset(), max_ts: v.max_timestamp(), bytes: bytes.to_vec() }
    }
}

/// Append one batch at `now` (leader epoch 3) and return it as written.
fn append(log: &mut Log, mut b: Vec<u8>, now: i64) -> Acked {
    let info = log.append(&mut b, 3, now).expect("append");
    let a = Acked::of(&b);
    assert_eq!((info.first_offset, info.last_offset), (a.base, a.last));
    a
}

/// Every batch of the log, from its start offset, read back through `Log::read`.
fn read_all(log: &Log) -> Vec<Acked> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let slice = log.read(offset, usize::MAX, i64::MAX, true).expect("read").expect("data below the log end");
        let bytes = slice.to_vec().expect("read slice");
        let mut at = 0;
        while at < bytes.len() {
            let v = BatchView::parse(&bytes[at..]).expect("valid batch read back");
            out.push(Acked::of(v.bytes()));
            at += v.size();
        }
        offset = out.last().expect("a slice holds a batch").last + 1;
    }
    out
}

/// The batch holding `offset`, read alone (max_bytes 1, min_one).
fn read_one(log: &Log, offset: i64) -> Acked {
    let slice = log.read(offset, 1, i64::MAX, true).expect("read").expect("a batch");
    let bytes = slice.to_vec().expect("read slice");
    let v = BatchView::parse(&bytes).expect("the slice is exactly one valid batch");
    assert_eq!(v.size(), bytes.len(), "min_one with max_bytes 1 returns exactly one batch");
    assert_eq!(slice.first_batch_offset, v.base_offset());
    Acked::of(&bytes)
}

fn stem(base: i64) -> String {
    format!("{base:020}")
}

fn file_len(path: PathBuf) -> u64 {
    std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len()
}

/// The segment files of a log directory (name → length); the leader-epoch checkpoint and the
/// producer-state snapshots are not segment files and are tested in `log_leader_epoch` and
/// `log_producer_state`.
fn files(dir: &Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != weir_broker::log::leader_epoch::LEADER_EPOCH_FILE)
        .filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".snapshot"))
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), e.metadata().unwrap().len())
        })
        .collect()
}

/// The `.index` entries of a segment: (absolute offset, position), only the first `n` (a
/// preallocated index is zero-filled after its entries).
fn index_entries(dir: &Path, base: i64, n: usize) -> Vec<(i64, u32)> {
    let raw = std::fs::read(dir.join(format!("{}.index", stem(base)))).unwrap();
    raw.chunks_exact(8)
        .take(n)
        .map(|e| {
            let rel = u32::from_be_bytes(e[0..4].try_into().unwrap());
            (base + rel as i64, u32::from_be_bytes(e[4..8].try_into().unwrap()))
        })
        .collect()
}

/// The `.timeindex` entries of a segment: (timestamp, absolute offset).
fn time_entries(dir: &Path, base: i64, n: usize) -> Vec<(i64, i64)> {
    let raw = std::fs::read(dir.join(format!("{}.timeindex", stem(base)))).unwrap();
    raw.chunks_exact(12)
        .take(n)
        .map(|e| {
            let ts = i64::from_be_bytes(e[0..8].try_into().unwrap());
            (ts, base + u32::from_be_bytes(e[8..12].try_into().unwrap()) as i64)
        })
        .collect()
}

/// What the documented indexing rule (docs/storage.md, as Kafka) gives for the batches of one
/// segment: an offset index entry before each batch once more than `interval` bytes were
/// written since the last entry, and a time index entry at the same points when the max
/// timestamp so far grew, plus one at roll if it grew since.
fn expected_index(batches: &[Acked], interval: u64, sealed: bool) -> IndexEntries {
    let (mut idx, mut tidx) = (Vec::new(), Vec::<(i64, i64)>::new());
    let (mut since, mut pos) = (0u64, 0u32);
    let (mut max_ts, mut max_off) = (-1i64, 0i64);
    for b in batches {
        if b.max_ts > max_ts {
            max_ts = b.max_ts;
            max_off = b.base;
        }
        if since > interval {
            idx.push((b.base, pos));
            if tidx.last().is_none_or(|&(ts, _)| max_ts > ts) {
                tidx.push((max_ts, max_off));
            }
            since = 0;
        }
        since += b.bytes.len() as u64;
        pos += b.bytes.len() as u32;
    }
    if sealed && max_ts >= 0 && tidx.last().is_none_or(|&(ts, _)| max_ts > ts) {
        tidx.push((max_ts, max_off));
    }
    (idx, tidx)
}

/// The first batch whose max timestamp is >= `ts`, by a linear scan.
fn scan_by_timestamp(batches: &[Acked], ts: i64) -> Option<i64> {
    batches.iter().find(|b| b.max_ts >= ts).map(|b| b.base)
}

// ---------------------------------------------------------------------------------------------
// Rolling
// ---------------------------------------------------------------------------------------------

#[test]
fn rolls_when_the_next_batch_would_pass_segment_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let size = batch(2, 40, NOW).len() as u64;
    let cfg = LogConfig { segment_bytes: 3 * size, ..quiet_config() };
    let mut log = open(dir.path(), cfg);
    for i in 0..10 {
        append(&mut log, batch(2, 40, NOW + i), NOW);
    }
    // Three 2-record batches fit exactly in segment.bytes; the fourth starts a new segment.
    assert_eq!(log.segment_base_offsets(), vec![0, 6, 12, 18]);
    assert_eq!(log.log_end_offset(), 20);
    let names = files(dir.path());
    for base in log.segment_base_offsets() {
        for ext in ["log", "index", "timeindex"] {
            let name = format!("{}.{ext}", stem(base));
            assert!(names.contains_key(&name), "{name} missing: {names:?}");
        }
        assert!(names[&format!("{}.log", stem(base))] <= 3 * size);
    }
    assert_eq!(names["00000000000000000006.log"], 3 * size);
    assert_eq!(names["00000000000000000018.log"], size);
    assert_eq!(names.len(), 12, "nothing but segment files: {names:?}");

    // A batch larger than segment.bytes still goes in (alone in its segment).
    let big = batch(1, 4 * size as usize, NOW);
    let a = append(&mut log, big, NOW);
    assert_eq!(log.segment_base_offsets(), vec![0, 6, 12, 18, 20]);
    assert_eq!(read_one(&log, 20), a);
}

#[test]
fn rolls_on_segment_ms_counted_from_the_first_batch_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { segment_ms: 1000, ..quiet_config() };
    let mut log = open(dir.path(), cfg);
    // An empty active segment never rolls, however old.
    log.roll(NOW).unwrap();
    assert_eq!(log.segment_count(), 1);
    append(&mut log, batch(1, 10, NOW), NOW);
    append(&mut log, batch(1, 10, NOW + 500), NOW + 500);
    append(&mut log, batch(1, 10, NOW + 1000), NOW + 1000);
    assert_eq!(log.segment_base_offsets(), vec![0], "1000 ms is not more than segment.ms");
    append(&mut log, batch(1, 10, NOW + 1001), NOW + 1001);
    assert_eq!(log.segment_base_offsets(), vec![0, 3]);
    append(&mut log, batch(1, 10, NOW + 1500), NOW + 1500);
    append(&mut log, batch(1, 10, NOW + 2002), NOW + 2002);
    assert_eq!(log.segment_base_offsets(), vec![0, 3, 5]);
    // Rolling seals the old segment: its indexes are trimmed to their entries.
    assert_eq!(file_len(dir.path().join("00000000000000000000.index")), 0);
    assert_eq!(file_len(dir.path().join("00000000000000000000.timeindex")), 12, "one entry at roll");
    assert_eq!(time_entries(dir.path(), 0, 1), vec![(NOW + 1000, 2)]);
}

#[test]
fn segment_ms_falls_back_to_the_wall_clock_for_batches_without_timestamps() {
    // A producer may send no timestamp (-1, NO_TIMESTAMP). As in Kafka's `timeWaitedForRoll`,
    // a segment whose first batch has none is aged by the wall clock since it was created.
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig { segment_ms: 1000, ..quiet_config() });
    append(&mut log, batch(1, 10, -1), NOW);
    append(&mut log, batch(1, 10, -1), NOW + 500);
    assert_eq!(log.segment_base_offsets(), vec![0]);
    // A timestamped batch right after is not "a year later" than a missing timestamp.
    append(&mut log, batch(1, 10, NOW + 600), NOW + 600);
    assert_eq!(log.segment_base_offsets(), vec![0], "600 ms of wall clock is not more than segment.ms");
    append(&mut log, batch(1, 10, -1), NOW + 1001);
    assert_eq!(log.segment_base_offsets(), vec![0, 3], "1001 ms since the segment was created");
}

#[test]
fn rolls_when_the_offset_index_is_full() {
    let dir = tempfile::tempdir().unwrap();
    // 10 offset index entries; an entry before every batch but the first of a segment; the
    // same timestamp everywhere so that the time index holds a single entry.
    let cfg = LogConfig { segment_index_bytes: 80, index_interval_bytes: 0, ..quiet_config() };
    let mut log = open(dir.path(), cfg);
    for _ in 0..30 {
        append(&mut log, batch(1, 10, NOW), NOW);
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 11, 22]);
    // The sealed segments' indexes are full and trimmed (already their full size here).
    assert_eq!(file_len(dir.path().join("00000000000000000000.index")), 80);
    assert_eq!(file_len(dir.path().join("00000000000000000011.index")), 80);
    assert_eq!(file_len(dir.path().join("00000000000000000011.timeindex")), 12);
    // The active one is preallocated to segment.index.bytes (whole entries).
    assert_eq!(file_len(dir.path().join("00000000000000000022.index")), 80);
    assert_eq!(file_len(dir.path().join("00000000000000000022.timeindex")), 72);
}

#[test]
fn rolls_when_the_time_index_is_full() {
    let dir = tempfile::tempdir().unwrap();
    // 80 bytes hold 10 offset entries but only 6 time entries; growing timestamps add a time
    // entry at every index point, so the time index fills first.
    let cfg = LogConfig { segment_index_bytes: 80, index_interval_bytes: 0, ..quiet_config() };
    let mut log = open(dir.path(), cfg);
    for i in 0..14 {
        append(&mut log, batch(1, 10, NOW + i), NOW + i);
    }
    // 7 batches per segment: 6 index points, then the time index is full.
    assert_eq!(log.segment_base_offsets(), vec![0, 7]);
    assert_eq!(file_len(dir.path().join("00000000000000000000.index")), 6 * 8);
    assert_eq!(file_len(dir.path().join("00000000000000000000.timeindex")), 6 * 12);
    assert_eq!(file_len(dir.path().join("00000000000000000007.timeindex")), 72);
}

// ---------------------------------------------------------------------------------------------
// Sparse indexes
// ---------------------------------------------------------------------------------------------

#[test]
fn sparse_index_entries_follow_index_interval_bytes_and_are_trimmed_on_roll() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { index_interval_bytes: 300, segment_index_bytes: 4096, ..quiet_config() };
    let mut log = open(dir.path(), cfg.clone());
    // Batches of varying sizes and record counts, timestamps going up and down, three
    // explicit rolls.
    let mut by_segment: Vec<Vec<Acked>> = vec![Vec::new()];
    for i in 0..60i64 {
        let records = 1 + (i % 4) as usize;
        let value_len = 20 + (i * 37 % 150) as usize;
        let ts = NOW + (i * 7919 % 1000) - 500;
        by_segment.last_mut().unwrap().push(append(&mut log, batch(records, value_len, ts), NOW));
        if i % 20 == 19 && i < 59 {
            log.roll(NOW).unwrap();
            by_segment.push(Vec::new());
        }
    }
    let bases = log.segment_base_offsets();
    assert_eq!(bases.len(), 3);
    assert_eq!(bases, by_segment.iter().map(|s| s[0].base).collect::<Vec<_>>());

    let check = |sealed_all: bool| {
        for (i, (base, batches)) in bases.iter().zip(&by_segment).enumerate() {
            let sealed = sealed_all || i + 1 < bases.len();
            let (idx, tidx) = expected_index(batches, cfg.index_interval_bytes, sealed);
            assert!(idx.len() >= 3, "the test wants several entries per segment, got {}", idx.len());
            assert_eq!(index_entries(dir.path(), *base, idx.len()), idx, "offset index of segment {base}");
            assert_eq!(time_entries(dir.path(), *base, tidx.len()), tidx, "time index of segment {base}");
            let (index_len, time_len) = (
                file_len(dir.path().join(format!("{}.index", stem(*base)))),
                file_len(dir.path().join(format!("{}.timeindex", stem(*base)))),
            );
            if sealed {
                assert_eq!(index_len, idx.len() as u64 * 8, "sealed .index is trimmed to its entries");
                assert_eq!(time_len, tidx.len() as u64 * 12, "sealed .timeindex is trimmed to its entries");
            } else {
                assert_eq!(index_len, 4096, "active .index is preallocated");
                assert_eq!(time_len, 4096 / 12 * 12, "active .timeindex is preallocated");
            }
            // Every entry points at the start of the batch it names.
            let log_bytes = std::fs::read(dir.path().join(format!("{}.log", stem(*base)))).unwrap();
            for (off, pos) in idx {
                let v = BatchView::parse(&log_bytes[pos as usize..]).unwrap();
                assert_eq!(v.base_offset(), off);
            }
        }
    };
    check(false);
    log.close(NOW).unwrap();
    check(true);
    drop(log);
    // Reopened cleanly, the trimmed indexes are trusted and reads still land right.
    let log = open(dir.path(), cfg);
    let all: Vec<Acked> = by_segment.concat();
    for b in &all {
        for o in b.base..=b.last {
            assert_eq!(&read_one(&log, o), b);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

/// A log of 40 batches of 1 to 5 records over several segments.
fn mixed_log(dir: &Path, index_interval_bytes: u64) -> (Log, Vec<Acked>) {
    let cfg = LogConfig { segment_bytes: 2000, index_interval_bytes, ..quiet_config() };
    let mut log = open(dir, cfg);
    let mut acked = Vec::new();
    for i in 0..40i64 {
        let records = 1 + (i * 3 % 5) as usize;
        let ts = NOW - 10_000 + (i * 6151 % 4000);
        acked.push(append(&mut log, batch(records, 10 + (i * 13 % 90) as usize, ts), NOW));
    }
    assert!(log.segment_count() >= 4, "spread over several segments");
    (log, acked)
}

#[test]
fn read_at_every_offset_returns_the_batch_holding_it() {
    for interval in [0, 100, 4096] {
        let dir = tempfile::tempdir().unwrap();
        let (log, acked) = mixed_log(dir.path(), interval);
        assert_eq!(log.log_end_offset(), acked.last().unwrap().last + 1);
        for b in &acked {
            for o in b.base..=b.last {
                assert_eq!(read_one(&log, o), *b, "offset {o}, index interval {interval}");
            }
        }
        assert_eq!(read_all(&log), acked);
    }
}

#[test]
fn read_honours_max_bytes_min_one_and_upper_offset() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { index_interval_bytes: 1, ..quiet_config() };
    let mut log = open(dir.path(), cfg);
    let acked: Vec<Acked> = (0..6).map(|i| append(&mut log, batch(3, 20, NOW + i), NOW)).collect();
    let s = acked[0].bytes.len();
    let concat = |from: usize, to: usize| acked[from..to].iter().flat_map(|a| a.bytes.clone()).collect::<Vec<u8>>();
    let get = |offset: i64, max: usize, upper: i64, min_one: bool| {
        log.read(offset, max, upper, min_one).unwrap().map(|sl| sl.to_vec().unwrap())
    };

    assert_eq!(get(0, usize::MAX, i64::MAX, false), Some(concat(0, 6)));
    // max_bytes ends the read at the last whole batch within it (Kafka's fetch would send
    // the next one cut, for the reader to drop and fetch again)...
    assert_eq!(get(0, s + 1, i64::MAX, false), Some(concat(0, 1)));
    assert_eq!(get(0, 3 * s - 1, i64::MAX, false), Some(concat(0, 2)));
    assert_eq!(get(3, 4 * s - 1, i64::MAX, true), Some(concat(1, 4)));
    // ...but a first batch larger than max_bytes comes cut without min_one, as Kafka's does.
    assert_eq!(get(0, 10, i64::MAX, false), Some(acked[0].bytes[..10].to_vec()));
    assert_eq!(get(0, 0, i64::MAX, false), None);
    // min_one returns the first batch whole when it is larger than max_bytes.
    assert_eq!(get(0, 10, i64::MAX, true), Some(concat(0, 1)));
    assert_eq!(get(0, 0, i64::MAX, true), Some(concat(0, 1)));
    assert_eq!(get(4, 2 * s, i64::MAX, true), Some(concat(1, 3)), "from the batch holding offset 4");
    // upper_offset (the high watermark): batches at or after it are not returned, nor a batch
    // that straddles it.
    assert_eq!(get(0, usize::MAX, 9, false), Some(concat(0, 3)));
    assert_eq!(get(0, usize::MAX, 10, false), Some(concat(0, 3)), "batch 9..=11 straddles 10");
    assert_eq!(get(0, usize::MAX, 12, false), Some(concat(0, 4)));
    assert_eq!(get(3, usize::MAX, 3, true), None, "nothing below the upper offset from here");
    assert_eq!(get(0, usize::MAX, 0, true), None);
    assert_eq!(get(7, usize::MAX, 8, true), None, "the batch 6..=8 straddles upper 8");
    // At the log end there is nothing yet, which is not an error.
    assert_eq!(get(18, usize::MAX, i64::MAX, true), None);

    // A read never crosses a segment boundary.
    log.roll(NOW).unwrap();
    let more: Vec<Acked> = (0..2).map(|i| append(&mut log, batch(3, 20, NOW + i), NOW)).collect();
    let get = |offset: i64, max: usize| log.read(offset, max, i64::MAX, true).unwrap().map(|sl| sl.to_vec().unwrap());
    assert_eq!(get(0, usize::MAX), Some(concat(0, 6)));
    assert_eq!(get(18, usize::MAX), Some([more[0].bytes.clone(), more[1].bytes.clone()].concat()));
}

/// With the default sparse index, a read cut by max_bytes walks at most a few batch lengths
/// from the nearest index entry: it still ends on a batch boundary, at most a few KiB early
/// when batches are small.
#[test]
fn a_read_cut_by_max_bytes_ends_on_a_batch_boundary_with_a_sparse_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), quiet_config());
    let acked: Vec<Acked> = (0..200).map(|i| append(&mut log, batch(1, 20, NOW + i), NOW)).collect();
    let s = acked[0].bytes.len();
    let all: Vec<u8> = acked.iter().flat_map(|a| a.bytes.clone()).collect();
    // Every cut position, the ones just past an index entry included.
    for max in (s..all.len()).step_by(7) {
        let got = log.read(0, max, i64::MAX, false).unwrap().unwrap().to_vec().unwrap();
        assert_eq!(got.len() % s, 0, "max {max}: whole batches only");
        assert!(got.len() <= max && got.len() + 4096 + 8 * s >= max, "max {max}: read {}", got.len());
        assert_eq!(got, all[..got.len()], "max {max}");
    }
}

#[test]
fn reads_outside_the_log_are_offset_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { retention_bytes: Some(0), ..quiet_config() };
    let mut log = open(dir.path(), cfg);
    let out_of_range = |log: &Log, offset: i64| {
        matches!(
            log.read(offset, 100, i64::MAX, true),
            Err(LogError::OffsetOutOfRange { offset: o, log_start_offset, log_end_offset })
                if o == offset && log_start_offset == log.log_start_offset() && log_end_offset == log.log_end_offset()
        )
    };
    assert!(out_of_range(&log, -1));
    assert!(out_of_range(&log, 1));
    assert!(log.read(0, 100, i64::MAX, true).unwrap().is_none(), "an empty log reads nothing at 0");
    for i in 0..3 {
        append(&mut log, batch(2, 10, NOW + i), NOW);
        log.roll(NOW).unwrap();
    }
    append(&mut log, batch(2, 10, NOW), NOW);
    assert!(out_of_range(&log, 9));
    assert!(out_of_range(&log, 100));
    assert!(log.read(8, 100, i64::MAX, true).unwrap().is_none());
    // Retention moves the start: reads below it are out of range.
    assert_eq!(log.delete_retained_segments(NOW).unwrap(), 3);
    assert_eq!(log.log_start_offset(), 6);
    assert!(out_of_range(&log, 5));
    assert!(out_of_range(&log, 0));
    assert_eq!(read_one(&log, 6).base, 6);
}

// ---------------------------------------------------------------------------------------------
// Timestamp lookup
// ---------------------------------------------------------------------------------------------

#[test]
fn lookup_by_timestamp_agrees_with_a_linear_scan() {
    for interval in [0, 150, 4096] {
        let dir = tempfile::tempdir().unwrap();
        let (log, acked) = mixed_log(dir.path(), interval);
        let mut probes: Vec<i64> = acked.iter().flat_map(|b| [b.max_ts - 1, b.max_ts, b.max_ts + 1]).collect();
        probes.extend([i64::MIN, -1, 0, NOW - 20_000, NOW + 1]);
        for ts in probes {
            let found = log.find_batch_by_timestamp(ts).unwrap();
            assert_eq!(
                found.map(|b| b.base_offset),
                scan_by_timestamp(&acked, ts),
                "timestamp {ts}, interval {interval}"
            );
            if let Some(b) = found {
                let a = acked.iter().find(|a| a.base == b.base_offset).unwrap();
                assert_eq!((b.last_offset, b.max_timestamp, b.size as usize), (a.last, a.max_ts, a.bytes.len()));
            }
        }
    }
}

#[test]
fn lookup_by_timestamp_respects_a_log_start_offset_inside_a_segment() {
    // The log start offset comes from the checkpoint and may fall inside a segment (Kafka:
    // DeleteRecords). A lookup must answer the first batch at or after it, as Kafka's
    // `fetchOffsetByTimestamp` searches the segment from the log start offset.
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), quiet_config());
    for ts in [NOW, NOW, NOW + 5] {
        append(&mut log, batch(1, 10, ts), NOW);
    }
    log.close(NOW).unwrap();
    drop(log);
    let (log, _) = Log::open(dir.path(), quiet_config(), 0, 1, true, LogMetrics::unregistered(), NOW).unwrap();
    assert_eq!(log.log_start_offset(), 1);
    let found = |ts: i64| log.find_batch_by_timestamp(ts).unwrap().map(|b| b.base_offset);
    assert_eq!(found(NOW + 5), Some(2));
    // Batch 0 is the first with timestamp >= NOW, but it is below the log start: batch 1 is
    // the answer, not "no such batch".
    assert_eq!(found(NOW), Some(1));
    assert_eq!(found(NOW - 1000), Some(1));
}

// ---------------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------------

#[test]
fn retention_ms_deletes_whole_oldest_segments_but_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { retention_ms: Some(10_000), ..quiet_config() };
    let mut log = open(dir.path(), cfg);
    // Segment max timestamps: -20 s, -15 s, -5 s, -30 s, and the active one at -40 s.
    for ts in [NOW - 20_000, NOW - 15_000, NOW - 5_000, NOW - 30_000, NOW - 40_000] {
        append(&mut log, batch(2, 10, ts - 1), NOW);
        append(&mut log, batch(2, 10, ts - 1), NOW); // max timestamp ts
        log.roll(NOW).unwrap();
    }
    // The last roll left an empty active segment; give it an expired batch.
    append(&mut log, batch(1, 10, NOW - 40_000), NOW);
    assert_eq!(log.segment_base_offsets(), vec![0, 4, 8, 12, 16, 20]);
    assert_eq!(log.delete_retained_segments(NOW - 5_000).unwrap(), 1, "only the first one is past retention");
    assert_eq!(log.log_start_offset(), 4);
    assert!(!dir.path().join("00000000000000000000.log").exists());
    assert!(!dir.path().join("00000000000000000000.index").exists());
    assert!(!dir.path().join("00000000000000000000.timeindex").exists());
    // Now segment 4 expired too; segment 8 is not, so 12 and 16 stay although they expired.
    assert_eq!(log.delete_retained_segments(NOW).unwrap(), 1);
    assert_eq!(log.segment_base_offsets(), vec![8, 12, 16, 20]);
    assert_eq!(log.log_start_offset(), 8);
    // Much later everything sealed goes, the expired active segment stays.
    assert_eq!(log.delete_retained_segments(NOW + HOUR).unwrap(), 3);
    assert_eq!(log.segment_base_offsets(), vec![20]);
    assert_eq!(log.log_start_offset(), 20);
    assert_eq!(log.log_end_offset(), 21);
    assert_eq!(read_one(&log, 20).base, 20);
    assert_eq!(files(dir.path()).len(), 3);
    // The recovery point never lags the start offset.
    assert!(log.recovery_point() >= log.log_start_offset());
}

#[test]
fn advancing_the_log_start_hides_the_records_below_and_deletes_segments_wholly_below() {
    // DeleteRecords (KIP-107): the start may land inside a segment.
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), quiet_config());
    for _ in 0..2 {
        for _ in 0..3 {
            append(&mut log, batch(1, 10, NOW), NOW);
        }
        log.roll(NOW).unwrap();
    }
    append(&mut log, batch(1, 10, NOW), NOW);
    append(&mut log, batch(1, 10, NOW), NOW);
    assert_eq!(log.segment_base_offsets(), vec![0, 3, 6]);

    assert!(log.advance_log_start_offset(4).unwrap());
    assert_eq!(log.log_start_offset(), 4);
    // Segment 0 held only offsets below 4; segment 3 still holds 4 and 5.
    assert_eq!(log.segment_base_offsets(), vec![3, 6]);
    assert!(!dir.path().join(format!("{}.log", stem(0))).exists());
    assert!(matches!(log.read(3, 1, i64::MAX, true), Err(LogError::OffsetOutOfRange { log_start_offset: 4, .. })));
    assert_eq!(read_all(&log).iter().map(|a| a.base).collect::<Vec<_>>(), vec![4, 5, 6, 7]);
    assert_eq!(log.leader_epochs().entries()[0].start_offset, 4);
    assert!(log.recovery_point() >= 4);

    // Never down; never past the log end, and appends go on at the end.
    assert!(!log.advance_log_start_offset(2).unwrap());
    assert_eq!(log.log_start_offset(), 4);
    assert!(log.advance_log_start_offset(100).unwrap());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (8, 8));
    assert_eq!(log.segment_base_offsets(), vec![6], "the active segment stays");
    assert_eq!(append(&mut log, batch(1, 10, NOW), NOW).base, 8);
    assert_eq!(read_all(&log).iter().map(|a| a.base).collect::<Vec<_>>(), vec![8]);

    // Reopened with the start its owner checkpointed, the log starts there again.
    log.close(NOW).unwrap();
    drop(log);
    let (log, _) = Log::open(dir.path(), quiet_config(), 0, 8, true, LogMetrics::unregistered(), NOW).unwrap();
    assert_eq!(log.log_start_offset(), 8);
    assert!(log.read(7, 1, i64::MAX, true).is_err());
}

#[test]
fn retention_bytes_deletes_oldest_segments_until_the_log_fits() {
    let dir = tempfile::tempdir().unwrap();
    let size = batch(1, 100, NOW).len() as u64;
    let cfg = LogConfig { retention_bytes: Some(5 * size / 2), ..quiet_config() };
    let mut log = open(dir.path(), cfg.clone());
    for _ in 0..5 {
        append(&mut log, batch(1, 100, NOW), NOW);
        log.roll(NOW).unwrap();
    }
    append(&mut log, batch(1, 100, NOW), NOW);
    // 6 segments of `size` bytes, 2.5 segments allowed: the 3 oldest go, 2.5 < 3 remain.
    assert_eq!(log.delete_retained_segments(NOW).unwrap(), 3);
    assert_eq!(log.segment_base_offsets(), vec![3, 4, 5]);
    assert_eq!(log.log_start_offset(), 3);
    assert_eq!(log.delete_retained_segments(NOW).unwrap(), 0);

    // retention.bytes = 0 deletes every sealed segment, never the active one.
    log.set_config(LogConfig { retention_bytes: Some(0), ..cfg.clone() });
    assert_eq!(log.delete_retained_segments(NOW).unwrap(), 2);
    assert_eq!(log.segment_base_offsets(), vec![5]);
    assert_eq!(log.log_start_offset(), 5);
    let next = append(&mut log, batch(1, 100, NOW), NOW);
    assert_eq!(next.base, 6);

    // cleanup.policy without delete: nothing is deleted.
    log.roll(NOW).unwrap();
    append(&mut log, batch(1, 100, NOW), NOW);
    log.set_config(LogConfig { retention_bytes: Some(0), cleanup_delete: false, cleanup_compact: true, ..cfg });
    assert_eq!(log.delete_retained_segments(NOW).unwrap(), 0);
    assert_eq!(log.segment_count(), 2);
}

// ---------------------------------------------------------------------------------------------
// Append validation
// ---------------------------------------------------------------------------------------------

#[test]
fn kip_937_refuses_timestamps_too_far_in_the_future_or_past() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), quiet_config());
    let before = files(dir.path());
    let mut future = batch(1, 10, NOW + 2 * HOUR);
    match log.append(&mut future, 0, NOW) {
        Err(LogError::InvalidTimestamp { timestamp, min, max }) => {
            assert_eq!((timestamp, min, max), (NOW + 2 * HOUR, i64::MIN, NOW + HOUR));
        }
        other => panic!("expected InvalidTimestamp, got {other:?}"),
    }
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(files(dir.path()), before, "nothing written");
    // Exactly after.max.ms ahead is accepted; the bound is on the batch's max timestamp.
    append(&mut log, batch(1, 10, NOW + HOUR), NOW);
    let mut straddling = batch(3, 10, NOW + HOUR - 1); // max timestamp NOW + HOUR + 1
    assert!(matches!(log.append(&mut straddling, 0, NOW), Err(LogError::InvalidTimestamp { .. })));
    // Without before.max.ms, any age is fine.
    append(&mut log, batch(1, 10, 0), NOW);
    assert_eq!(log.log_end_offset(), 2);

    let cfg = LogConfig { timestamp_before_max_ms: Some(HOUR), timestamp_after_max_ms: 1000, ..quiet_config() };
    log.set_config(cfg);
    let mut old = batch(1, 10, NOW - 2 * HOUR);
    match log.append(&mut old, 0, NOW) {
        Err(LogError::InvalidTimestamp { timestamp, min, max }) => {
            assert_eq!((timestamp, min, max), (NOW - 2 * HOUR, NOW - HOUR, NOW + 1000));
        }
        other => panic!("expected InvalidTimestamp, got {other:?}"),
    }
    let mut soon = batch(1, 10, NOW + 1001);
    assert!(matches!(log.append(&mut soon, 0, NOW), Err(LogError::InvalidTimestamp { .. })));
    append(&mut log, batch(1, 10, NOW - HOUR), NOW);
    append(&mut log, batch(1, 10, NOW + 1000), NOW);
    assert_eq!(log.log_end_offset(), 4);

    // One bad batch among several: none of them is written.
    let mut two = [batch(1, 10, NOW), batch(1, 10, NOW - 3 * HOUR)].concat();
    assert!(matches!(log.append(&mut two, 0, NOW), Err(LogError::InvalidTimestamp { .. })));
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(read_all(&log).len(), 4);
}

#[test]
fn kip_937_does_not_apply_to_records_without_a_timestamp() {
    // Kafka's LogValidator checks only records whose timestamp is not NO_TIMESTAMP (-1).
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { timestamp_before_max_ms: Some(HOUR), ..quiet_config() };
    let mut log = open(dir.path(), cfg);
    let mut none = batch(1, 10, -1);
    let info = log.append(&mut none, 0, NOW).expect("a batch without timestamps is accepted");
    assert_eq!((info.first_offset, info.max_timestamp), (0, -1));
}

#[test]
fn log_append_time_stamps_batches_and_keeps_the_crc_valid() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { timestamp_type: TimestampType::LogAppendTime, ..quiet_config() };
    let mut log = open(dir.path(), cfg);
    // Producer timestamps are ignored, even ones KIP-937 would refuse under CreateTime.
    let mut b = [batch(2, 10, 5), batch(3, 10, NOW + 10 * HOUR)].concat();
    let info = log.append(&mut b, 9, NOW + 123).unwrap();
    assert_eq!(info.log_append_time, Some(NOW + 123));
    assert_eq!(info.max_timestamp, NOW + 123);
    assert_eq!((info.first_offset, info.last_offset, info.batches, info.records), (0, 4, 2, 5));
    let back = read_all(&log);
    assert_eq!(back.len(), 2);
    for (a, base) in back.iter().zip([0, 2]) {
        let v = BatchView::parse(&a.bytes).expect("CRC recomputed after stamping");
        assert!(v.is_log_append_time());
        assert_eq!(v.max_timestamp(), NOW + 123);
        assert_eq!(v.base_offset(), base);
        assert_eq!(v.partition_leader_epoch(), 9);
    }
    let written: Vec<u8> = back.iter().flat_map(|a| a.bytes.iter().copied()).collect();
    assert_eq!(written, b, "the caller's buffer holds what was written");
    assert_eq!(log.find_batch_by_timestamp(NOW + 123).unwrap().map(|p| p.base_offset), Some(0));
    assert_eq!(log.find_batch_by_timestamp(NOW + 124).unwrap(), None);
}

#[test]
fn batches_larger_than_max_message_bytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let size = batch(2, 50, NOW).len();
    let mut log = open(dir.path(), LogConfig { max_message_bytes: size - 1, ..quiet_config() });
    let mut b = batch(2, 50, NOW);
    match log.append(&mut b, 0, NOW) {
        Err(LogError::RecordTooLarge { size: s, max }) => assert_eq!((s, max), (size, size - 1)),
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(file_len(dir.path().join("00000000000000000000.log")), 0);
    // The limit is per batch, not per append.
    log.set_config(LogConfig { max_message_bytes: size, ..quiet_config() });
    let mut two = [batch(2, 50, NOW), batch(2, 50, NOW)].concat();
    let info = log.append(&mut two, 0, NOW).unwrap();
    assert_eq!((info.first_offset, info.last_offset, info.bytes), (0, 3, 2 * size));
}

#[test]
fn a_corrupt_batch_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), quiet_config());
    append(&mut log, batch(1, 10, NOW), NOW);
    let log_file = dir.path().join("00000000000000000000.log");
    let len_before = file_len(log_file.clone());
    let good = batch(3, 30, NOW);
    let corrupt = |b: &[u8], at: usize| {
        let mut c = b.to_vec();
        c[at] ^= 0x10;
        c
    };
    // A flipped byte in the CRC-covered part (attributes to the end), the magic byte, a
    // truncated batch, trailing bytes, and an empty request.
    let mut cases: Vec<Vec<u8>> = vec![
        corrupt(&good, 21),
        corrupt(&good, 40),
        corrupt(&good, good.len() - 1),
        corrupt(&good, 16),
        good[..good.len() - 1].to_vec(),
        [good.clone(), vec![0; 5]].concat(),
        Vec::new(),
        // The second of two batches is bad: the first is not written either.
        [good.clone(), corrupt(&good, 70)].concat(),
    ];
    for (i, c) in cases.iter_mut().enumerate() {
        match log.append(c, 0, NOW) {
            Err(LogError::CorruptRecord(_)) => {}
            other => panic!("case {i}: expected CorruptRecord, got {other:?}"),
        }
        assert_eq!(log.log_end_offset(), 1, "case {i}");
        assert_eq!(file_len(log_file.clone()), len_before, "case {i}: nothing written");
    }
    let a = append(&mut log, good, NOW);
    assert_eq!((a.base, a.last), (1, 3));
}

// ---------------------------------------------------------------------------------------------
// Flushing, truncation, close and reopen
// ---------------------------------------------------------------------------------------------

#[test]
fn flush_messages_advances_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig { flush_messages: Some(5), ..quiet_config() });
    assert_eq!(log.recovery_point(), 0);
    append(&mut log, batch(2, 10, NOW), NOW);
    append(&mut log, batch(2, 10, NOW), NOW);
    assert_eq!(log.recovery_point(), 0, "4 unflushed records < flush.messages");
    append(&mut log, batch(2, 10, NOW), NOW);
    assert_eq!(log.recovery_point(), 6, "6 >= 5: flushed up to the log end");
    append(&mut log, batch(4, 10, NOW), NOW);
    assert_eq!(log.recovery_point(), 6);
    append(&mut log, batch(1, 10, NOW), NOW);
    assert_eq!(log.recovery_point(), 11);

    // Without flush.messages the recovery point moves only on flush (or flush.ms).
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig { flush_ms: Some(1000), ..quiet_config() });
    for _ in 0..10 {
        append(&mut log, batch(3, 10, NOW), NOW);
    }
    assert_eq!(log.recovery_point(), 0);
    assert!(!log.flush_if_due(NOW + 999).unwrap());
    assert!(log.flush_if_due(NOW + 1000).unwrap());
    assert_eq!(log.recovery_point(), 30);
    append(&mut log, batch(3, 10, NOW), NOW);
    log.flush(NOW).unwrap();
    assert_eq!(log.recovery_point(), 33);
}

#[test]
fn truncate_to_drops_a_suffix_and_appends_continue_at_the_new_end() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { segment_bytes: 600, index_interval_bytes: 50, ..quiet_config() };
    let mut log = open(dir.path(), cfg.clone());
    let mut acked: Vec<Acked> =
        (0..30i64).map(|i| append(&mut log, batch(1 + (i % 3) as usize, 40, NOW + i), NOW)).collect();
    log.flush(NOW).unwrap();
    let bases = log.segment_base_offsets();
    assert!(bases.len() >= 4);

    // Into the middle of a batch of an older segment: that batch and all after it go.
    let victim = acked.iter().position(|a| a.base > bases[1] && a.last > a.base).unwrap();
    let cut = acked[victim].base + 1;
    log.truncate_to(cut, NOW).unwrap();
    acked.truncate(victim);
    assert_eq!(log.log_end_offset(), acked[victim - 1].last + 1);
    assert!(log.recovery_point() <= log.log_end_offset());
    assert_eq!(log.segment_base_offsets(), bases.iter().copied().filter(|&b| b <= cut).collect::<Vec<_>>());
    for b in &bases {
        let present = dir.path().join(format!("{}.log", stem(*b))).exists();
        assert_eq!(present, *b <= cut, "segment {b}");
    }
    assert_eq!(read_all(&log), acked);
    // Truncating at or beyond the end does nothing.
    log.truncate_to(log.log_end_offset(), NOW).unwrap();
    assert_eq!(read_all(&log), acked);

    // Appends continue at the new end, in the segment that was cut, and the indexes of
    // that segment keep working.
    for i in 0..10 {
        acked.push(append(&mut log, batch(2, 40, NOW + 100 + i), NOW));
    }
    assert_eq!(acked[victim].base, cut - 1);
    assert_eq!(read_all(&log), acked);
    for b in &acked {
        for o in b.base..=b.last {
            assert_eq!(&read_one(&log, o), b);
        }
    }
    for b in &acked {
        assert_eq!(
            log.find_batch_by_timestamp(b.max_ts).unwrap().map(|p| p.base_offset),
            scan_by_timestamp(&acked, b.max_ts)
        );
    }

    // Close and reopen after a truncation: nothing is lost or repaired.
    log.close(NOW).unwrap();
    drop(log);
    let (mut log, report) = Log::open(dir.path(), cfg.clone(), 0, 0, false, LogMetrics::unregistered(), NOW).unwrap();
    assert_eq!(report.truncated_bytes, 0, "{:?}", report.repairs);
    assert_eq!(read_all(&log), acked);

    // Truncating to 0 leaves an empty log starting at 0.
    log.truncate_to(0, NOW).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.segment_count()), (0, 0, 1));
    assert_eq!(files(dir.path()).len(), 3);
    assert_eq!(append(&mut log, batch(1, 1, NOW), NOW).base, 0);
}

#[test]
fn close_and_clean_reopen_keep_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (log, acked) = mixed_log(dir.path(), 100);
    let cfg = log.config().clone();
    let mut log = log;
    let bases = log.segment_base_offsets();
    let leo = log.log_end_offset();
    log.close(NOW).unwrap();
    assert_eq!(log.recovery_point(), leo);
    // Closing trims the active segment's indexes too.
    let active = *bases.last().unwrap();
    let idx_len = file_len(dir.path().join(format!("{}.index", stem(active))));
    assert_eq!(idx_len % 8, 0);
    assert!(idx_len < cfg.segment_index_bytes);
    drop(log);
    let before = files(dir.path());

    for (clean, rp) in [(true, 0), (false, leo)] {
        let (mut log, report) =
            Log::open(dir.path(), cfg.clone(), rp, 0, clean, LogMetrics::unregistered(), NOW + 1).unwrap();
        assert_eq!(report.truncated_bytes, 0);
        assert_eq!(report.segments_deleted, 0);
        assert_eq!(log.segment_base_offsets(), bases);
        assert_eq!(log.log_end_offset(), leo);
        assert_eq!(log.recovery_point(), leo);
        assert_eq!(read_all(&log), acked);
        for b in &acked {
            assert_eq!(&read_one(&log, b.last), b);
            assert_eq!(
                log.find_batch_by_timestamp(b.max_ts).unwrap().map(|p| p.base_offset),
                scan_by_timestamp(&acked, b.max_ts)
            );
        }
        log.close(NOW + 1).unwrap();
        drop(log);
        assert_eq!(files(dir.path()), before, "a clean reopen and close changes no file");
    }

    let mut log = open(dir.path(), cfg);
    let next = append(&mut log, batch(2, 5, NOW), NOW);
    assert_eq!(next.base, leo);
    assert_eq!(read_one(&log, leo + 1), next);
}

// ---------------------------------------------------------------------------------------------
// The example segment of docs/storage.md
// ---------------------------------------------------------------------------------------------

/// Writes the segment shown in docs/storage.md. With `WEIR_DOC_SEGMENT_DIR` set, the partition
/// directory is that directory (its segment files are replaced), so the files can be dumped:
///
/// ```text
/// WEIR_DOC_SEGMENT_DIR=/tmp/weir-doc/example-0 CARGO_TARGET_DIR=/var/cache/weir-target \
///   cargo nextest run -p weir-broker --test log_engine writes_documented_example_segment
/// xxd /tmp/weir-doc/example-0/00000000000000000000.log
/// ```
#[test]
fn writes_documented_example_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = match std::env::var_os("WEIR_DOC_SEGMENT_DIR") {
        Some(d) => PathBuf::from(d),
        None => tmp.path().join("example-0"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    for (name, _) in files(&dir) {
        let stem_ok = name.split_once('.').is_some_and(|(s, ext)| {
            s.len() == 20 && s.bytes().all(|c| c.is_ascii_digit()) && ["log", "index", "timeindex"].contains(&ext)
        });
        if stem_ok {
            std::fs::remove_file(dir.join(name)).unwrap();
        }
    }
    const T0: i64 = 1_700_000_000_000; // 0x0000018bcfe56800
    let cfg = LogConfig { index_interval_bytes: 64, segment_index_bytes: 4096, ..quiet_config() };
    let mut log = open_with(&dir, cfg, 0, true, T0 + 1000);
    let mut first = build_batch(&[(Some(b"k1"), Some(b"hello")), (None, Some(b"world"))], T0);
    let mut second = build_batch(&[(Some(b"k2"), Some(b"!"))], T0 + 500);
    let a = log.append(&mut first, 5, T0 + 1000).unwrap();
    let b = log.append(&mut second, 5, T0 + 1000).unwrap();
    assert_eq!((a.first_offset, a.last_offset, b.first_offset, b.last_offset), (0, 1, 2, 2));
    assert_eq!((first.len(), second.len()), (87, 71));
    log.close(T0 + 1000).unwrap();
    drop(log);

    let names = files(&dir);
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(names["00000000000000000000.log"], 87 + 71);
    // 87 bytes > index.interval.bytes: one entry before the second batch, in each index.
    assert_eq!(names["00000000000000000000.index"], 8);
    assert_eq!(names["00000000000000000000.timeindex"], 12);
    assert_eq!(index_entries(&dir, 0, 1), vec![(2, 87)]);
    assert_eq!(time_entries(&dir, 0, 1), vec![(T0 + 500, 2)]);
    let on_disk = std::fs::read(dir.join("00000000000000000000.log")).unwrap();
    assert_eq!(on_disk, [first, second].concat());
}

#[test]
fn log_slice_read_into_appends_the_range_and_reports_a_short_file() {
    use std::io::Write;
    use weir_broker::log::LogSlice;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::File::create(&path).unwrap().write_all(&content).unwrap();
    let file = std::sync::Arc::new(std::fs::File::open(&path).unwrap());
    let slice = |position: u64, len: usize| LogSlice { file: file.clone(), position, len, first_batch_offset: 0 };

    let mut buf = vec![1, 2, 3];
    slice(17, 5000).read_into(&mut buf).unwrap();
    assert_eq!(buf[..3], [1, 2, 3]);
    assert_eq!(buf[3..], content[17..5017]);
    assert_eq!(slice(0, 10_000).to_vec().unwrap(), content);

    // Past the end of the file (truncated since the slice was located): an error, and the
    // buffer keeps only what it had.
    let err = slice(9_000, 2_000).read_into(&mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    assert_eq!(buf.len(), 5003);
}
