//! Committed offsets as records of `__consumer_offsets`, in Kafka's formats: key version 1
//! (group, topic, partition), value version 3 (offset, leader epoch, metadata, commit
//! time). A null value (tombstone) deletes a commit. The compacted topic keeps the newest
//! record per key, so replaying a partition rebuilds every group's offsets (and, through the
//! group metadata records of `group_record.rs`, every group's last stable membership).

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes};
use kafka_protocol::records::RecordBatchDecoder;

use super::group_record::{self, StoredGroup};
use crate::log::{Log, LogError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// Offsets of every group of one `__consumer_offsets` partition.
pub type PartitionOffsets = HashMap<String, HashMap<(String, i32), CommittedOffset>>;

/// What replaying one `__consumer_offsets` partition gives back.
#[derive(Debug, Default)]
pub struct LoadedPartition {
    pub offsets: PartitionOffsets,
    /// The newest group metadata record of each group not deleted since.
    pub groups: HashMap<String, StoredGroup>,
}

/// The two kinds of record key in `__consumer_offsets`.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordKey {
    /// Key versions 0 and 1: a committed offset.
    Offset { group: String, topic: String, partition: i32 },
    /// Key version 2: group metadata.
    Group(String),
}

pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.put_i16(s.len() as i16);
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn get_str(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let len = b.get_i16();
    if len < 0 {
        return Some(String::new());
    }
    if b.remaining() < len as usize {
        return None;
    }
    String::from_utf8(b.split_to(len as usize).to_vec()).ok()
}

pub fn encode_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + group.len() + topic.len());
    k.put_i16(1);
    put_str(&mut k, group);
    put_str(&mut k, topic);
    k.put_i32(partition);
    k
}

pub fn encode_value(o: &CommittedOffset) -> Vec<u8> {
    let mut v = Vec::with_capacity(32 + o.metadata.len());
    v.put_i16(3);
    v.put_i64(o.offset);
    v.put_i32(o.leader_epoch);
    put_str(&mut v, &o.metadata);
    v.put_i64(o.commit_timestamp);
    v
}

/// The key of a record; None for unknown key versions and garbage.
pub fn decode_key(mut k: Bytes) -> Option<RecordKey> {
    if k.remaining() < 2 {
        return None;
    }
    match k.get_i16() {
        0 | 1 => {
            let group = get_str(&mut k)?;
            let topic = get_str(&mut k)?;
            (k.remaining() >= 4).then(|| RecordKey::Offset { group, topic, partition: k.get_i32() })
        }
        group_record::KEY_VERSION => Some(RecordKey::Group(get_str(&mut k)?)),
        _ => None,
    }
}

pub fn decode_value(mut v: Bytes) -> Option<CommittedOffset> {
    if v.remaining() < 2 {
        return None;
    }
    let version = v.get_i16();
    if v.remaining() < 8 {
        return None;
    }
    let offset = v.get_i64();
    let leader_epoch = if version >= 3 && v.remaining() >= 4 { v.get_i32() } else { -1 };
    let metadata = get_str(&mut v)?;
    let commit_timestamp = if v.remaining() >= 8 { v.get_i64() } else { -1 };
    Some(CommittedOffset { offset, leader_epoch, metadata, commit_timestamp })
}

/// Replay a whole `__consumer_offsets` partition.
pub fn load(log: &Log) -> Result<LoadedPartition, LogError> {
    let mut out = LoadedPartition::default();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let Some(slice) = log.read(offset, 1 << 20, end, true)? else { break };
        let mut bytes = Bytes::from(slice.to_vec().map_err(|e| LogError::io(log.dir(), e))?);
        let mut next = offset;
        while bytes.remaining() > 0 {
            let Some(size) = crate::log::batch::batch_size(&bytes) else { break };
            if size > bytes.remaining() {
                break; // cut by the read size; the next read starts at this batch
            }
            let mut one = bytes.split_to(size);
            let last = crate::log::batch::BatchView::header_unchecked(&one).last_offset();
            let set = RecordBatchDecoder::decode(&mut one)
                .map_err(|e| LogError::CorruptRecord(format!("__consumer_offsets batch: {e}")))?;
            for r in set.records {
                match r.key.and_then(decode_key) {
                    Some(RecordKey::Offset { group, topic, partition }) => match r.value.and_then(decode_value) {
                        Some(v) => {
                            out.offsets.entry(group).or_default().insert((topic, partition), v);
                        }
                        None => {
                            if let Some(g) = out.offsets.get_mut(&group) {
                                g.remove(&(topic, partition));
                            }
                        }
                    },
                    Some(RecordKey::Group(group)) => match r.value.and_then(group_record::decode_value) {
                        Some(g) => {
                            out.groups.insert(group, g);
                        }
                        None => {
                            out.groups.remove(&group);
                        }
                    },
                    None => {}
                }
            }
            next = last + 1;
        }
        if next == offset {
            break;
        }
        offset = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_round_trip() {
        let k = encode_key("g", "orders", 7);
        assert_eq!(
            decode_key(Bytes::from(k)),
            Some(RecordKey::Offset { group: "g".into(), topic: "orders".into(), partition: 7 })
        );
        let v = CommittedOffset { offset: 42, leader_epoch: 3, metadata: "m".into(), commit_timestamp: 1000 };
        assert_eq!(decode_value(Bytes::from(encode_value(&v))), Some(v));
        let mut group_metadata_key = Vec::new();
        group_metadata_key.put_i16(2);
        put_str(&mut group_metadata_key, "g");
        assert_eq!(decode_key(Bytes::from(group_metadata_key)), Some(RecordKey::Group("g".into())));
        assert_eq!(decode_key(Bytes::from_static(b"\x00\x07junk")), None);
    }
}
