//! Log compaction (`cleanup.policy=compact`) through the public log API: newest value per
//! key, unchanged offsets, tombstones and `delete.retention.ms`, compressed batches, producer
//! and transactional batches, empty segments, crash safety of the segment swap, and the
//! manager's reclaimed-bytes metric.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record as KRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use weir_broker::log::batch::{build_batch, BatchMut, BatchView, HEADER_SIZE};
use weir_broker::log::cleaner::{clean, CleanReport, STAGING_DIR};
use weir_broker::log::segment::{index_path, log_path, time_index_path};
use weir_broker::log::{Log, LogConfig, LogManager, LogMetrics, TopicPartition};

const NOW: i64 = 1_700_000_000_000;

fn compact_config() -> LogConfig {
    LogConfig {
        cleanup_compact: true,
        cleanup_delete: false,
        // Small, so that offset and time indexes have entries to get wrong.
        index_interval_bytes: 64,
        delete_retention_ms: 10_000,
        ..Default::default()
    }
}

fn open(dir: &Path, clean_shutdown: bool) -> Log {
    let (log, report) =
        Log::open(dir, compact_config(), 0, 0, clean_shutdown, LogMetrics::unregistered(), NOW).unwrap();
    assert_eq!(report.truncated_bytes, 0, "{:?}", report.repairs);
    log
}

type Kv<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);
type OwnedKv = (Option<Vec<u8>>, Option<Vec<u8>>);

fn append(log: &mut Log, records: &[Kv<'_>], base_ts: i64) -> i64 {
    let mut b = build_batch(records, base_ts);
    log.append(&mut b, 0, NOW).unwrap().first_offset
}

fn append_raw(log: &mut Log, mut batch: Vec<u8>) -> i64 {
    log.append(&mut batch, 0, NOW).unwrap().first_offset
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn rec(offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Rec {
    Rec { offset, key: key.map(<[u8]>::to_vec), value: value.map(<[u8]>::to_vec), headers: vec![] }
}

// ---- a small decoder of our own for uncompressed batches ----

fn varint(b: &[u8], p: &mut usize) -> i64 {
    let mut z = 0u64;
    let mut shift = 0;
    loop {
        let byte = b[*p];
        *p += 1;
        z |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return (z >> 1) as i64 ^ -((z & 1) as i64);
        }
        shift += 7;
    }
}

fn nullable(b: &[u8], p: &mut usize) -> Option<Vec<u8>> {
    let len = varint(b, p);
    if len < 0 {
        return None;
    }
    let v = b[*p..*p + len as usize].to_vec();
    *p += len as usize;
    Some(v)
}

/// Every record of an uncompressed batch, fully parsed (headers too); the record lengths
/// must add up to the batch exactly.
fn parse_uncompressed(v: &BatchView<'_>) -> Vec<Rec> {
    let body = &v.bytes()[HEADER_SIZE..];
    let mut p = 0;
    let mut out = Vec::new();
    for _ in 0..v.records_count() {
        let len = varint(body, &mut p) as usize;
        let end = p + len;
        let r = &body[p..end];
        let mut q = 1;
        let ts_delta = varint(r, &mut q);
        assert!(ts_delta >= 0 && v.base_timestamp() + ts_delta <= v.max_timestamp());
        let offset_delta = varint(r, &mut q);
        assert!((0..=v.last_offset_delta() as i64).contains(&offset_delta));
        let key = nullable(r, &mut q);
        let value = nullable(r, &mut q);
        let mut headers = Vec::new();
        for _ in 0..varint(r, &mut q) {
            let k = nullable(r, &mut q).expect("header keys are not null");
            headers.push((k, nullable(r, &mut q)));
        }
        assert_eq!(q, r.len(), "record length does not match its fields");
        out.push(Rec { offset: v.base_offset() + offset_delta, key, value, headers });
        p = end;
    }
    assert_eq!(p, body.len(), "records do not fill the batch");
    out
}

/// Records of one batch: our parser for uncompressed batches, kafka-protocol's for compressed ones.
fn batch_records(v: &BatchView<'_>) -> Vec<Rec> {
    if v.compression() == 0 {
        return parse_uncompressed(v);
    }
    let mut buf = Bytes::copy_from_slice(v.bytes());
    let set = RecordBatchDecoder::decode(&mut buf).unwrap();
    set.records
        .into_iter()
        .map(|r| Rec {
            offset: r.offset,
            key: r.key.map(|k| k.to_vec()),
            value: r.value.map(|v| v.to_vec()),
            headers: r.headers.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.to_vec()))).collect(),
        })
        .collect()
}

/// Batch bytes from `from` to the log end, one fetch after another (as a consumer would).
fn read_batches(log: &Log, from: i64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut next = from;
    while let Some(slice) = log.read(next, 1 << 20, i64::MAX, true).unwrap() {
        let bytes = slice.to_vec().unwrap();
        // kafka-protocol must decode every fetch too (CRC, counts, compression).
        RecordBatchDecoder::decode_all(&mut Bytes::copy_from_slice(&bytes)).unwrap();
        let mut at = 0;
        while at < bytes.len() {
            let v = BatchView::parse(&bytes[at..]).unwrap();
            assert!(v.last_offset() >= next, "a fetch from {next} returned batch ending at {}", v.last_offset());
            next = v.last_offset() + 1;
            out.push(v.bytes().to_vec());
            at += v.size();
        }
    }
    out
}

/// Records at or after `from` (a fetch may start with a batch holding earlier ones).
fn read_records(log: &Log, from: i64) -> Vec<Rec> {
    let mut out = Vec::new();
    for b in read_batches(log, from) {
        out.extend(batch_records(&BatchView::parse(&b).unwrap()).into_iter().filter(|r| r.offset >= from));
    }
    out
}

/// Reads from every offset give exactly the expected records from there on.
fn assert_reads(log: &Log, expected: &[Rec]) {
    assert_eq!(read_records(log, log.log_start_offset()), expected);
    for from in log.log_start_offset()..log.log_end_offset() {
        let want: Vec<Rec> = expected.iter().filter(|r| r.offset >= from).cloned().collect();
        assert_eq!(read_records(log, from), want, "reading from offset {from}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A deterministic xorshift, so the workload is the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn only_the_newest_value_per_key_survives_with_offsets_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("topic-0");
    let mut log = open(&dir, true);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut all: Vec<Rec> = Vec::new();
    for batch_no in 0..60 {
        let n = 1 + rng.next(5) as usize;
        let mut owned: Vec<OwnedKv> = Vec::new();
        for i in 0..n {
            let key = match rng.next(10) {
                0 => None,
                k => Some(format!("key-{k}").into_bytes()),
            };
            // A few young tombstones: kept (delete.retention.ms has not passed).
            let value = (rng.next(12) != 0).then(|| format!("value-{batch_no}-{i}").into_bytes());
            owned.push((key, value));
        }
        let records: Vec<Kv<'_>> = owned.iter().map(|(k, v)| (k.as_deref(), v.as_deref())).collect();
        let first = append(&mut log, &records, NOW - 1000 + batch_no);
        for (i, (k, v)) in owned.iter().enumerate() {
            all.push(rec(first + i as i64, k.as_deref(), v.as_deref()));
        }
        if batch_no % 7 == 6 {
            log.roll(NOW).unwrap();
        }
    }
    let active_base = *log.segment_base_offsets().last().unwrap();
    assert!(log.segment_count() >= 8);
    let leo = log.log_end_offset();

    // The model: in sealed segments, a keyed record survives iff it is the newest for its key
    // there; keyless records and the active segment are untouched.
    let mut newest: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for r in all.iter().filter(|r| r.offset < active_base) {
        if let Some(k) = &r.key {
            newest.insert(k.clone(), r.offset);
        }
    }
    let expected: Vec<Rec> = all
        .iter()
        .filter(|r| r.offset >= active_base || r.key.as_ref().is_none_or(|k| newest[k] == r.offset))
        .cloned()
        .collect();
    assert!(expected.len() < all.len() / 2, "the workload must overwrite keys");
    assert!(expected.iter().any(|r| r.key.is_none() && r.offset < active_base));

    let size_before = log.size_bytes();
    let report = clean(&mut log, NOW).unwrap();
    assert_eq!(report.records_removed as usize, all.len() - expected.len());
    assert_eq!(report.bytes_reclaimed, size_before - log.size_bytes());
    assert_eq!(report.tombstones_removed, 0);
    assert!(report.segments_cleaned > 0);
    assert_eq!(log.log_end_offset(), leo);
    assert_reads(&log, &expected);

    // Nothing new sealed and no tombstone due: nothing to do.
    let again = clean(&mut log, NOW + 1).unwrap();
    assert_eq!((again.segments_cleaned, again.records_removed), (0, 0));

    // Appends still land after the cleaned segments.
    let next = append(&mut log, &[(Some(b"key-1"), Some(b"after"))], NOW);
    assert_eq!(next, leo);
    let mut expected = expected;
    expected.push(rec(leo, Some(b"key-1"), Some(b"after")));
    assert_reads(&log, &expected);

    // Reopen after a clean shutdown (indexes trusted), then after a crash (every batch
    // re-validated, CRCs included): the same contents.
    log.close(NOW).unwrap();
    drop(log);
    let log = open(&dir, true);
    assert_reads(&log, &expected);
    drop(log);
    let (log, report) = Log::open(&dir, compact_config(), 0, 0, false, LogMetrics::unregistered(), NOW).unwrap();
    assert_eq!(report.truncated_bytes, 0, "{:?}", report.repairs);
    assert_eq!(report.segments_deleted, 0);
    assert_reads(&log, &expected);
}

#[test]
fn tombstones_stay_until_delete_retention_then_go() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path(), true);
    let dr = compact_config().delete_retention_ms;
    append(&mut log, &[(Some(b"k"), Some(b"v1")), (Some(b"m"), None)], NOW - 5000); // 0, 1
    log.roll(NOW).unwrap();
    append(&mut log, &[(Some(b"k"), None), (Some(b"j"), Some(b"v"))], NOW - 1001); // 2 (ts NOW-1001), 3 (ts NOW-1000)
    append(&mut log, &[(Some(b"m"), Some(b"back"))], NOW - 900); // 4
    log.roll(NOW).unwrap();
    append(&mut log, &[(Some(b"j"), None)], NOW); // 5: a tombstone in the active segment

    let r = clean(&mut log, NOW).unwrap();
    // k=v1 superseded; the old tombstone of m is superseded by a value, whatever its age.
    assert_eq!((r.records_removed, r.tombstones_removed), (2, 0));
    let young = vec![
        rec(2, Some(b"k"), None),
        rec(3, Some(b"j"), Some(b"v")),
        rec(4, Some(b"m"), Some(b"back")),
        rec(5, Some(b"j"), None),
    ];
    assert_reads(&log, &young);

    // The batch holding the tombstone has max timestamp NOW-1000: it may go once
    // now - (NOW-1000) > delete.retention.ms, and no pass runs before that.
    let r = clean(&mut log, NOW - 1000 + dr).unwrap();
    assert_eq!((r.segments_cleaned, r.records_removed), (0, 0));
    assert_reads(&log, &young);
    let r = clean(&mut log, NOW - 1000 + dr + 1).unwrap();
    assert_eq!((r.records_removed, r.tombstones_removed), (1, 1));
    let expected = vec![rec(3, Some(b"j"), Some(b"v")), rec(4, Some(b"m"), Some(b"back")), rec(5, Some(b"j"), None)];
    assert_reads(&log, &expected);

    // A tombstone in the active segment is never touched, however old.
    let r = clean(&mut log, NOW + 100 * dr).unwrap();
    assert_eq!(r.records_removed, 0);
    assert_reads(&log, &expected);
    drop(log);
    assert_reads(&open(tmp.path(), false), &expected);
}

fn krecord(offset: i64, key: Option<&[u8]>, value: Option<&[u8]>, ts: i64) -> KRecord {
    KRecord {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        // kafka-protocol keeps records in one batch while offset - sequence is constant;
        // this makes the base sequence -1 (no producer).
        sequence: offset as i32 - 1,
        timestamp: ts,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers: Default::default(),
    }
}

fn encode(records: &[KRecord], compression: Compression) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, records, &RecordEncodeOptions { version: 2, compression }).unwrap();
    let v = BatchView::parse(&buf).unwrap();
    assert_eq!(v.size(), buf.len(), "one batch");
    buf.to_vec()
}

#[test]
fn compressed_batches_are_recompressed_with_the_same_codec_and_offsets() {
    for (compression, codec) in
        [(Compression::Gzip, 1), (Compression::Snappy, 2), (Compression::Lz4, 3), (Compression::Zstd, 4)]
    {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = open(tmp.path(), true);
        let mut records: Vec<KRecord> = [
            (Some("k0"), "a"),
            (Some("k1"), "a"),
            (Some("k2"), "a"),
            (Some("k0"), "b"),
            (Some("k1"), "b"),
            (None, "keyless"),
            (Some("k3"), "a"),
        ]
        .iter()
        .enumerate()
        .map(|(i, (k, v))| krecord(i as i64, k.map(str::as_bytes), Some(v.as_bytes()), NOW + 10 * i as i64))
        .collect();
        records[3].headers.insert(StrBytes::from_static_str("h"), Some(Bytes::from_static(b"hv")));
        records[3].headers.insert(StrBytes::from_static_str("null"), None);
        let batch = encode(&records, compression);
        assert_eq!(BatchView::parse(&batch).unwrap().compression(), codec);
        append_raw(&mut log, batch.clone()); // offsets 0..=6
        append(&mut log, &[(Some(b"k1"), Some(b"c")), (Some(b"k3"), Some(b"c"))], NOW); // 7, 8
        log.roll(NOW).unwrap();
        append(&mut log, &[(Some(b"k2"), Some(b"active"))], NOW); // 9

        let r = clean(&mut log, NOW).unwrap();
        assert_eq!(r.records_removed, 4, "{compression:?}: k0@0, k1@1, k1@4, k3@6");
        let batches = read_batches(&log, 0);
        let v = BatchView::parse(&batches[0]).unwrap();
        let orig = BatchView::parse(&batch).unwrap();
        assert_eq!(v.compression(), codec, "{compression:?}");
        assert_eq!((v.base_offset(), v.last_offset(), v.records_count()), (0, 6, 3));
        assert_eq!(
            (v.base_timestamp(), v.max_timestamp(), v.producer_id(), v.producer_epoch(), v.base_sequence()),
            (orig.base_timestamp(), orig.max_timestamp(), -1, -1, -1)
        );
        let mut k0 = rec(3, Some(b"k0"), Some(b"b"));
        k0.headers = vec![(b"h".to_vec(), Some(b"hv".to_vec())), (b"null".to_vec(), None)];
        assert_eq!(
            batch_records(&v),
            vec![rec(2, Some(b"k2"), Some(b"a")), k0.clone(), rec(5, None, Some(b"keyless"))],
            "{compression:?}"
        );
        // Record timestamps survive too.
        let decoded = RecordBatchDecoder::decode(&mut Bytes::from(batches[0].clone())).unwrap();
        assert_eq!(decoded.records.iter().map(|r| r.timestamp).collect::<Vec<_>>(), vec![NOW + 20, NOW + 30, NOW + 50]);
        let expected = vec![
            rec(2, Some(b"k2"), Some(b"a")),
            k0,
            rec(5, None, Some(b"keyless")),
            rec(7, Some(b"k1"), Some(b"c")),
            rec(8, Some(b"k3"), Some(b"c")),
            rec(9, Some(b"k2"), Some(b"active")),
        ];
        assert_reads(&log, &expected);
        drop(log);
        assert_reads(&open(tmp.path(), false), &expected);
    }
}

#[test]
fn producer_batches_keep_an_empty_header_and_transactions_are_copied() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path(), true);
    // An idempotent producer's batch (id 7, epoch 3, sequences 0..1).
    let idem: Vec<KRecord> = ["k", "j"]
        .iter()
        .enumerate()
        .map(|(i, k)| KRecord {
            producer_id: 7,
            producer_epoch: 3,
            sequence: i as i32,
            ..krecord(i as i64, Some(k.as_bytes()), Some(b"1"), NOW)
        })
        .collect();
    let idem = encode(&idem, Compression::None);
    append_raw(&mut log, idem.clone()); // 0, 1
                                        // A transaction of producer 8 writing t, and its commit marker.
    let txn = KRecord {
        transactional: true,
        producer_id: 8,
        producer_epoch: 0,
        sequence: 0,
        ..krecord(0, Some(b"t"), Some(b"1"), NOW)
    };
    let txn = encode(&[txn], Compression::None);
    append_raw(&mut log, txn.clone()); // 2
    let marker = KRecord {
        transactional: true,
        control: true,
        producer_id: 8,
        producer_epoch: 0,
        sequence: -1,
        ..krecord(0, Some(&[0, 0, 0, 1]), Some(&[0, 0, 0, 0, 0, 0]), NOW)
    };
    let marker = encode(&[marker], Compression::None);
    append_raw(&mut log, marker.clone()); // 3
    append(&mut log, &[(Some(b"k"), Some(b"2")), (Some(b"j"), Some(b"2")), (Some(b"t"), Some(b"2"))], NOW); // 4..6
    log.roll(NOW).unwrap();
    append(&mut log, &[(None, Some(b"x"))], NOW); // 7

    let r = clean(&mut log, NOW).unwrap();
    assert_eq!(r.records_removed, 2);
    let batches = read_batches(&log, 0);
    assert_eq!(batches.len(), 5);
    let empty = BatchView::parse(&batches[0]).unwrap();
    assert_eq!(empty.size(), HEADER_SIZE);
    assert_eq!(
        (
            empty.base_offset(),
            empty.last_offset(),
            empty.records_count(),
            empty.producer_id(),
            empty.producer_epoch(),
            empty.base_sequence()
        ),
        (0, 1, 0, 7, 3, 0)
    );
    // Transactional data and control batches are copied byte for byte (base offset aside).
    assert_eq!(batches[1][12..], txn[12..]);
    assert_eq!(batches[2][12..], marker[12..]);
    assert!(BatchView::parse(&batches[2]).unwrap().is_control());
    let expected = vec![
        rec(2, Some(b"t"), Some(b"1")),
        rec(3, Some(&[0, 0, 0, 1]), Some(&[0, 0, 0, 0, 0, 0])),
        rec(4, Some(b"k"), Some(b"2")),
        rec(5, Some(b"j"), Some(b"2")),
        rec(6, Some(b"t"), Some(b"2")),
        rec(7, None, Some(b"x")),
    ];
    assert_reads(&log, &expected);
    // A second pass keeps the empty batch.
    log.roll(NOW).unwrap();
    clean(&mut log, NOW).unwrap();
    assert_eq!(read_batches(&log, 0)[0], batches[0]);
    drop(log);
    let log = open(tmp.path(), false);
    assert_eq!(read_batches(&log, 0)[0], batches[0]);
    assert_reads(&log, &expected);
}

#[test]
fn emptied_segments_are_deleted_except_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path(), true);
    append(&mut log, &[(Some(b"a"), Some(b"1"))], NOW); // segment 0
    log.roll(NOW).unwrap();
    append(&mut log, &[(Some(b"b"), Some(b"1"))], NOW); // segment 1
    log.roll(NOW).unwrap();
    append(&mut log, &[(Some(b"a"), Some(b"2")), (Some(b"b"), Some(b"2"))], NOW); // segment 2
    log.roll(NOW).unwrap();
    append(&mut log, &[(Some(b"c"), Some(b"1"))], NOW); // segment 4, active
    assert_eq!(log.segment_base_offsets(), vec![0, 1, 2, 4]);
    let old_mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    fs::File::options().write(true).open(log_path(tmp.path(), 0)).unwrap().set_modified(old_mtime).unwrap();

    let r: CleanReport = clean(&mut log, NOW).unwrap();
    assert_eq!((r.segments_cleaned, r.segments_deleted, r.records_removed), (2, 1, 2));
    // Segment 0 stays, empty, so the log start offset does not move; 1 is gone.
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4]);
    assert_eq!(fs::metadata(log_path(tmp.path(), 0)).unwrap().len(), 0);
    assert!(!log_path(tmp.path(), 1).exists() && !index_path(tmp.path(), 1).exists());
    assert!(!time_index_path(tmp.path(), 1).exists());
    // Its mtime is kept, so retention.ms does not restart for it.
    assert_eq!(fs::metadata(log_path(tmp.path(), 0)).unwrap().modified().unwrap(), old_mtime);
    assert!(!tmp.path().join(STAGING_DIR).exists());
    let expected = vec![rec(2, Some(b"a"), Some(b"2")), rec(3, Some(b"b"), Some(b"2")), rec(4, Some(b"c"), Some(b"1"))];
    assert_eq!(log.log_start_offset(), 0);
    assert_reads(&log, &expected);
    log.close(NOW).unwrap();
    drop(log);
    for clean_shutdown in [true, false] {
        let log = open(tmp.path(), clean_shutdown);
        assert_eq!(log.log_start_offset(), 0);
        assert_eq!(log.segment_base_offsets(), vec![0, 2, 4]);
        assert_reads(&log, &expected);
    }
}

/// A closed log whose cleaning rewrites segment 0 only, its cleaned copy, and both contents.
struct CrashSetup {
    _tmp: tempfile::TempDir,
    original: std::path::PathBuf,
    cleaned: std::path::PathBuf,
    old: Vec<Rec>,
    new: Vec<Rec>,
}

fn crash_setup() -> CrashSetup {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original");
    let cleaned = tmp.path().join("cleaned");
    let mut log = open(&original, true);
    for i in 0..30 {
        let v = format!("old-{i}");
        append(
            &mut log,
            &[(Some(format!("k{i}").as_bytes()), Some(v.as_bytes())), (Some(b"hot"), Some(v.as_bytes()))],
            NOW,
        );
    }
    log.roll(NOW).unwrap(); // segment 0: offsets 0..59
    append(&mut log, &[(Some(b"hot"), Some(b"new")), (Some(b"k0"), Some(b"new"))], NOW); // 60, 61
    log.roll(NOW).unwrap();
    append(&mut log, &[(None, Some(b"tail"))], NOW); // 62
    let old = read_records(&log, 0);
    log.close(NOW).unwrap();
    drop(log);
    copy_dir(&original, &cleaned);
    let mut log = open(&cleaned, true);
    let r = clean(&mut log, NOW).unwrap();
    assert_eq!((r.segments_cleaned, r.records_removed), (1, 31));
    let new = read_records(&log, 0);
    assert_eq!(new.len(), old.len() - 31);
    log.close(NOW).unwrap();
    drop(log);
    for base in [60, 62] {
        assert_eq!(fs::read(log_path(&original, base)).unwrap(), fs::read(log_path(&cleaned, base)).unwrap());
    }
    assert_ne!(fs::read(index_path(&original, 0)).unwrap(), fs::read(index_path(&cleaned, 0)).unwrap());
    CrashSetup { _tmp: tmp, original, cleaned, old, new }
}

/// Reopen `dir` both ways; it must hold `expected` with no swap or staging file left.
fn assert_recovers_to(dir: &Path, expected: &[Rec], repaired: bool) {
    for (i, clean_shutdown) in [true, false].into_iter().enumerate() {
        let (log, report) =
            Log::open(dir, compact_config(), 0, 0, clean_shutdown, LogMetrics::unregistered(), NOW).unwrap();
        assert_eq!(report.truncated_bytes, 0, "{:?}", report.repairs);
        if i == 0 {
            assert_eq!(!report.repairs.is_empty(), repaired, "{:?}", report.repairs);
        }
        assert_eq!(log.segment_base_offsets(), vec![0, 60, 62]);
        assert_eq!(log.log_end_offset(), 63);
        assert_reads(&log, expected);
        let names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(!names.iter().any(|n| n.ends_with(".swap") || n == STAGING_DIR), "{names:?}");
    }
}

#[test]
fn crash_before_the_commit_point_keeps_the_old_segment() {
    let s = crash_setup();
    let staging = s.original.join(STAGING_DIR);
    fs::create_dir_all(&staging).unwrap();
    // A partly written staged segment: half its log, a full index.
    let staged = fs::read(log_path(&s.cleaned, 0)).unwrap();
    fs::write(log_path(&staging, 0), &staged[..staged.len() / 2]).unwrap();
    fs::copy(index_path(&s.cleaned, 0), index_path(&staging, 0)).unwrap();
    assert_recovers_to(&s.original, &s.old, true);
}

#[test]
fn crash_after_the_commit_point_completes_the_swap() {
    // Three crash points after the commit: nothing moved yet; the offset index moved; both
    // indexes and the log moved but the staging directory not removed.
    for moved in 0..3 {
        let s = crash_setup();
        let dir = &s.original;
        let staging = dir.join(STAGING_DIR);
        fs::create_dir_all(&staging).unwrap();
        // Leftovers of another, uncommitted segment in the staging directory.
        fs::write(log_path(&staging, 60), b"partial").unwrap();
        match moved {
            0 => {
                fs::copy(log_path(&s.cleaned, 0), dir.join("00000000000000000000.log.swap")).unwrap();
                fs::copy(index_path(&s.cleaned, 0), index_path(&staging, 0)).unwrap();
                fs::copy(time_index_path(&s.cleaned, 0), time_index_path(&staging, 0)).unwrap();
            }
            1 => {
                fs::copy(log_path(&s.cleaned, 0), dir.join("00000000000000000000.log.swap")).unwrap();
                fs::copy(index_path(&s.cleaned, 0), index_path(dir, 0)).unwrap();
                fs::copy(time_index_path(&s.cleaned, 0), time_index_path(&staging, 0)).unwrap();
            }
            _ => {
                for p in [log_path, index_path, time_index_path] {
                    fs::copy(p(&s.cleaned, 0), p(dir, 0)).unwrap();
                }
            }
        }
        assert_recovers_to(dir, &s.new, true);
    }
}

#[test]
fn manager_counts_reclaimed_bytes_once() {
    let tmp = tempfile::tempdir().unwrap();
    let metrics = LogMetrics::unregistered();
    let (manager, _) = LogManager::open(tmp.path(), LogConfig::default(), metrics.clone()).unwrap();
    let now = weir_broker::log::now_ms();
    let log = manager.get_or_create(&TopicPartition::new("compacted", 0), compact_config()).unwrap();
    let before = {
        let mut log = log.lock().unwrap();
        for i in 0..20 {
            let mut b = build_batch(&[(Some(b"same"), Some(format!("v{i}").as_bytes()))], now);
            log.append(&mut b, 0, now).unwrap();
        }
        log.roll(now).unwrap();
        log.size_bytes()
    };
    manager.run_maintenance(now).unwrap();
    let after = log.lock().unwrap().size_bytes();
    assert!(after < before);
    assert_eq!(metrics.cleaner_bytes_reclaimed.get(), before - after);
    manager.run_maintenance(now + 1).unwrap();
    assert_eq!(metrics.cleaner_bytes_reclaimed.get(), before - after);
    let log = log.lock().unwrap();
    let records = read_records(&log, log.log_start_offset());
    assert_eq!(records, vec![rec(19, Some(b"same"), Some(b"v19"))]);
}

/// Base offsets of the batches a fetch from `from` returns, validated only as batches.
fn batch_offsets(log: &Log, from: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut next = from;
    while let Some(slice) = log.read(next, 1 << 20, i64::MAX, true).unwrap() {
        let bytes = slice.to_vec().unwrap();
        let mut at = 0;
        while at < bytes.len() {
            let v = BatchView::parse(&bytes[at..]).unwrap();
            out.push(v.base_offset());
            next = v.last_offset() + 1;
            at += v.size();
        }
    }
    out
}

#[test]
fn undecodable_batches_are_kept_and_a_broken_segment_stops_only_its_log() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path(), true);
    append(&mut log, &[(Some(b"a"), Some(b"1"))], NOW); // 0
                                                        // A batch with a valid CRC whose record claims more bytes than the batch holds.
    let mut garbage = build_batch(&[(Some(b"a"), Some(b"x"))], NOW);
    garbage[HEADER_SIZE] = 0x7e;
    BatchMut::new(&mut garbage).update_crc();
    append_raw(&mut log, garbage); // 1
    append(&mut log, &[(Some(b"a"), Some(b"2"))], NOW); // 2
    log.roll(NOW).unwrap();
    append(&mut log, &[(None, Some(b"x"))], NOW); // 3
    let r = clean(&mut log, NOW).unwrap();
    assert_eq!((r.records_removed, r.unreadable_batches), (1, 1));
    assert_eq!(batch_offsets(&log, 0), vec![1, 2, 3]);

    // Break the length field of a sealed segment's first batch: that log is left alone
    // (clean still succeeds, so maintenance of other logs goes on), even with new work.
    let f = fs::File::options().write(true).open(log_path(tmp.path(), 0)).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &0x7fff_ffffi32.to_be_bytes(), 8).unwrap();
    append(&mut log, &[(Some(b"b"), Some(b"1"))], NOW); // 4
    log.roll(NOW).unwrap();
    append(&mut log, &[(Some(b"b"), Some(b"2"))], NOW); // 5
    log.roll(NOW).unwrap();
    let r = clean(&mut log, NOW).unwrap();
    assert_eq!((r.segments_cleaned, r.records_removed), (0, 0));
    assert!(!tmp.path().join(STAGING_DIR).exists());
    let r = clean(&mut log, NOW + 1).unwrap();
    assert_eq!((r.segments_cleaned, r.records_removed), (0, 0));
    assert_eq!(batch_offsets(&log, 3), vec![3, 4, 5]);
}
