//! Kafka record batch (magic v2) header: reading, validating and the few in-place edits
//! the log makes (base offset, leader epoch, LogAppendTime). Records stay as bytes.

use super::error::{LogError, Result};

pub const BASE_OFFSET: usize = 0;
pub const BATCH_LENGTH: usize = 8;
pub const PARTITION_LEADER_EPOCH: usize = 12;
pub const MAGIC: usize = 16;
pub const CRC: usize = 17;
pub const ATTRIBUTES: usize = 21;
pub const LAST_OFFSET_DELTA: usize = 23;
pub const BASE_TIMESTAMP: usize = 27;
pub const MAX_TIMESTAMP: usize = 35;
pub const PRODUCER_ID: usize = 43;
pub const PRODUCER_EPOCH: usize = 51;
pub const BASE_SEQUENCE: usize = 53;
pub const RECORDS_COUNT: usize = 57;
/// Size of the v2 batch header; records follow it.
pub const HEADER_SIZE: usize = 61;
/// Bytes before `batchLength` counts: base offset and the length field itself.
pub const LOG_OVERHEAD: usize = 12;

pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
pub const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
pub const ATTR_CONTROL: i16 = 0x20;

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The total size of the batch starting at `buf[0]`, read from its `batchLength`, if the
/// header is long enough to tell. Says nothing about whether the batch is valid.
pub fn batch_size(buf: &[u8]) -> Option<usize> {
    if buf.len() < LOG_OVERHEAD {
        return None;
    }
    let len = i32_at(buf, BATCH_LENGTH);
    if len < 0 {
        return None;
    }
    Some(LOG_OVERHEAD + len as usize)
}

/// A read-only view of one complete record batch.
#[derive(Clone, Copy)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Validate the batch at the start of `buf` (length, magic, CRC-32C, counts) and return a
    /// view of exactly its bytes. `buf` may hold more bytes after it.
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        if buf.len() < HEADER_SIZE {
            return Err(LogError::CorruptRecord(format!(
                "{} bytes is shorter than a batch header ({HEADER_SIZE})",
                buf.len()
            )));
        }
        let length = i32_at(buf, BATCH_LENGTH);
        if length < (HEADER_SIZE - LOG_OVERHEAD) as i32 {
            return Err(LogError::CorruptRecord(format!("batch length {length} is too small")));
        }
        let size = LOG_OVERHEAD + length as usize;
        if size > buf.len() {
            return Err(LogError::CorruptRecord(format!(
                "batch length {size} runs past the {} bytes available",
                buf.len()
            )));
        }
        let bytes = &buf[..size];
        if bytes[MAGIC] != 2 {
            return Err(LogError::CorruptRecord(format!("magic {} is not 2", bytes[MAGIC] as i8)));
        }
        let stored = i32_at(bytes, CRC) as u32;
        let computed = crc32c::crc32c(&bytes[ATTRIBUTES..]);
        if stored != computed {
            return Err(LogError::CorruptRecord(format!(
                "CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}"
            )));
        }
        let view = BatchView { bytes };
        if view.last_offset_delta() < 0 {
            return Err(LogError::CorruptRecord("negative last offset delta".into()));
        }
        let count = view.records_count();
        if count < 0 || (count as i64) > view.last_offset_delta() as i64 + 1 {
            return Err(LogError::CorruptRecord(format!(
                "{count} records do not fit offset delta {}",
                view.last_offset_delta()
            )));
        }
        // An empty batch is legal only when compaction removed every record.
        if count == 0 && size != HEADER_SIZE {
            return Err(LogError::CorruptRecord("records present but count is 0".into()));
        }
        Ok(view)
    }

    /// A view of a header read from disk, not validated: only the header accessors and
    /// `size` may be used. `buf` must hold at least `HEADER_SIZE` bytes.
    pub fn header_unchecked(buf: &'a [u8]) -> Self {
        assert!(buf.len() >= HEADER_SIZE, "a batch header is {HEADER_SIZE} bytes");
        BatchView { bytes: buf }
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Total bytes of the batch, from its length field.
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + i32_at(self.bytes, BATCH_LENGTH).max(0) as usize
    }
    pub fn base_offset(&self) -> i64 {
        i64_at(self.bytes, BASE_OFFSET)
    }
    pub fn last_offset_delta(&self) -> i32 {
        i32_at(self.bytes, LAST_OFFSET_DELTA)
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + self.last_offset_delta() as i64
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        i32_at(self.bytes, PARTITION_LEADER_EPOCH)
    }
    pub fn attributes(&self) -> i16 {
        i16_at(self.bytes, ATTRIBUTES)
    }
    pub fn compression(&self) -> i16 {
        self.attributes() & ATTR_COMPRESSION_MASK
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & ATTR_TIMESTAMP_TYPE != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & ATTR_CONTROL != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & ATTR_TRANSACTIONAL != 0
    }
    pub fn base_timestamp(&self) -> i64 {
        i64_at(self.bytes, BASE_TIMESTAMP)
    }
    pub fn max_timestamp(&self) -> i64 {
        i64_at(self.bytes, MAX_TIMESTAMP)
    }
    pub fn producer_id(&self) -> i64 {
        i64_at(self.bytes, PRODUCER_ID)
    }
    pub fn producer_epoch(&self) -> i16 {
        i16_at(self.bytes, PRODUCER_EPOCH)
    }
    pub fn base_sequence(&self) -> i32 {
        i32_at(self.bytes, BASE_SEQUENCE)
    }
    pub fn records_count(&self) -> i32 {
        i32_at(self.bytes, RECORDS_COUNT)
    }
    /// Offsets this batch covers (last - base + 1), which may exceed the record count after compaction.
    pub fn offset_count(&self) -> i64 {
        self.last_offset_delta() as i64 + 1
    }
}

/// In-place edits of a validated batch, done by the log at append time.
pub struct BatchMut<'a> {
    bytes: &'a mut [u8],
}

impl<'a> BatchMut<'a> {
    /// `bytes` must be exactly one batch that `BatchView::parse` accepted.
    pub fn new(bytes: &'a mut [u8]) -> Self {
        debug_assert!(bytes.len() >= HEADER_SIZE);
        Self { bytes }
    }
    /// Base offset and leader epoch are outside the CRC, so no checksum update is needed.
    pub fn set_base_offset(&mut self, offset: i64) {
        self.bytes[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&offset.to_be_bytes());
    }
    pub fn set_partition_leader_epoch(&mut self, epoch: i32) {
        self.bytes[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
    }
    /// Stamp the batch with the broker's clock (`message.timestamp.type=LogAppendTime`):
    /// the timestamp-type bit and max timestamp change, so the CRC is recomputed.
    pub fn set_log_append_time(&mut self, now_ms: i64) {
        let attrs = i16_at(self.bytes, ATTRIBUTES) | ATTR_TIMESTAMP_TYPE;
        self.bytes[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
        self.bytes[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
        self.update_crc();
    }
    pub fn update_crc(&mut self) {
        let crc = crc32c::crc32c(&self.bytes[ATTRIBUTES..]);
        self.bytes[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Iterate over the complete batches at the start of `buf`, stopping (with an error item) at the
/// first invalid one.
pub fn batches(buf: &[u8]) -> impl Iterator<Item = Result<BatchView<'_>>> {
    let mut pos = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || pos >= buf.len() {
            return None;
        }
        match BatchView::parse(&buf[pos..]) {
            Ok(v) => {
                pos += v.size();
                Some(Ok(v))
            }
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    })
}

/// Append a zig-zag varint (the record format's signed varint/varlong).
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
}

/// A record as `build_batch` takes it: key and value, either may be null.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Build an uncompressed v2 batch of `records` (key, value) with timestamps `base_ts + i`.
/// Used by tests and the benchmark; producers' batches come from clients.
pub fn build_batch(records: &[KeyValue<'_>], base_ts: i64) -> Vec<u8> {
    let mut body = Vec::new();
    let mut rec = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        rec.clear();
        rec.push(0); // record attributes
        put_varint(&mut rec, i as i64); // timestamp delta
        put_varint(&mut rec, i as i64); // offset delta
        match key {
            Some(k) => {
                put_varint(&mut rec, k.len() as i64);
                rec.extend_from_slice(k);
            }
            None => put_varint(&mut rec, -1),
        }
        match value {
            Some(v) => {
                put_varint(&mut rec, v.len() as i64);
                rec.extend_from_slice(v);
            }
            None => put_varint(&mut rec, -1),
        }
        put_varint(&mut rec, 0); // headers
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let n = records.len() as i32;
    let mut b = Vec::with_capacity(HEADER_SIZE + body.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_SIZE - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, set below
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(n - 1).max(0).to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&(base_ts + (n - 1).max(0) as i64).to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(&body);
    BatchMut::new(&mut b).update_crc();
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_batch_parses_and_reports_its_fields() {
        let b = build_batch(&[(Some(b"k"), Some(b"v1")), (None, Some(b"v2"))], 1000);
        let v = BatchView::parse(&b).unwrap();
        assert_eq!(v.size(), b.len());
        assert_eq!(v.records_count(), 2);
        assert_eq!(v.last_offset_delta(), 1);
        assert_eq!(v.max_timestamp(), 1001);
    }

    #[test]
    fn any_flipped_byte_in_crc_range_is_caught() {
        let b = build_batch(&[(Some(b"key"), Some(b"value"))], 5);
        for i in ATTRIBUTES..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(BatchView::parse(&c).is_err(), "flip at {i} not detected");
        }
    }

    #[test]
    fn wrong_magic_and_short_length_are_refused() {
        let mut b = build_batch(&[(None, Some(b"x"))], 0);
        b[MAGIC] = 1;
        assert!(matches!(BatchView::parse(&b), Err(LogError::CorruptRecord(_))));
        let b = build_batch(&[(None, Some(b"x"))], 0);
        assert!(BatchView::parse(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn log_append_time_rewrites_timestamp_and_keeps_crc_valid() {
        let mut b = build_batch(&[(None, Some(b"x"))], 10);
        let mut m = BatchMut::new(&mut b);
        m.set_base_offset(42);
        m.set_partition_leader_epoch(7);
        m.set_log_append_time(99_999);
        let v = BatchView::parse(&b).unwrap();
        assert_eq!((v.base_offset(), v.partition_leader_epoch(), v.max_timestamp()), (42, 7, 99_999));
        assert!(v.is_log_append_time());
    }
}
