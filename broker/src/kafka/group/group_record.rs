//! Group metadata as records of `__consumer_offsets`, in Kafka's formats: key version 2
//! (the group id) and value version 3 (protocol type, generation, protocol, leader, state
//! timestamp, and every member with its subscription and assignment). The coordinator
//! writes one when a rebalance completes and when the group becomes empty, and a tombstone
//! when the group is deleted; replaying the partition gives back the last stable state, so
//! members keep their ids and assignments across a coordinator restart.

use bytes::{Buf, BufMut, Bytes};

use super::offsets::{get_str, put_str};

pub const KEY_VERSION: i16 = 2;
const VALUE_VERSION: i16 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<StoredMember>,
}

fn put_nullable_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.put_i16(-1),
    }
}

fn get_nullable_str(b: &mut Bytes) -> Option<Option<String>> {
    if b.remaining() < 2 {
        return None;
    }
    if i16::from_be_bytes([b[0], b[1]]) < 0 {
        b.advance(2);
        return Some(None);
    }
    get_str(b).map(Some)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.put_i32(b.len() as i32);
    out.extend_from_slice(b);
}

fn get_bytes(b: &mut Bytes) -> Option<Bytes> {
    if b.remaining() < 4 {
        return None;
    }
    let len = b.get_i32();
    if len < 0 {
        return Some(Bytes::new());
    }
    (b.remaining() >= len as usize).then(|| b.split_to(len as usize))
}

pub fn encode_key(group: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + group.len());
    k.put_i16(KEY_VERSION);
    put_str(&mut k, group);
    k
}

pub fn encode_value(g: &StoredGroup) -> Vec<u8> {
    let members_len: usize =
        g.members.iter().map(|m| 64 + m.member_id.len() + m.subscription.len() + m.assignment.len()).sum();
    let mut v = Vec::with_capacity(64 + members_len);
    v.put_i16(VALUE_VERSION);
    put_str(&mut v, &g.protocol_type);
    v.put_i32(g.generation);
    put_nullable_str(&mut v, g.protocol.as_deref());
    put_nullable_str(&mut v, g.leader.as_deref());
    v.put_i64(g.state_timestamp);
    v.put_i32(g.members.len() as i32);
    for m in &g.members {
        put_str(&mut v, &m.member_id);
        put_nullable_str(&mut v, m.instance_id.as_deref());
        put_str(&mut v, &m.client_id);
        put_str(&mut v, &m.client_host);
        v.put_i32(m.rebalance_timeout_ms);
        v.put_i32(m.session_timeout_ms);
        put_bytes(&mut v, &m.subscription);
        put_bytes(&mut v, &m.assignment);
    }
    v
}

/// Decode value versions 0–3 (the fields each version added are defaulted when absent).
/// None for garbage and for the flexible versions (4+) that Weir does not write.
pub fn decode_value(mut v: Bytes) -> Option<StoredGroup> {
    if v.remaining() < 2 {
        return None;
    }
    let version = v.get_i16();
    if !(0..=3).contains(&version) {
        return None;
    }
    let protocol_type = get_str(&mut v)?;
    if v.remaining() < 4 {
        return None;
    }
    let generation = v.get_i32();
    let protocol = get_nullable_str(&mut v)?;
    let leader = get_nullable_str(&mut v)?;
    let state_timestamp = if version >= 2 {
        if v.remaining() < 8 {
            return None;
        }
        v.get_i64()
    } else {
        -1
    };
    if v.remaining() < 4 {
        return None;
    }
    let count = v.get_i32().max(0) as usize;
    let mut members = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let member_id = get_str(&mut v)?;
        let instance_id = if version >= 3 { get_nullable_str(&mut v)? } else { None };
        let client_id = get_str(&mut v)?;
        let client_host = get_str(&mut v)?;
        let need = if version >= 1 { 8 } else { 4 };
        if v.remaining() < need {
            return None;
        }
        let rebalance_timeout_ms = if version >= 1 { v.get_i32() } else { -1 };
        let session_timeout_ms = v.get_i32();
        let rebalance_timeout_ms = if rebalance_timeout_ms < 0 { session_timeout_ms } else { rebalance_timeout_ms };
        let subscription = get_bytes(&mut v)?;
        let assignment = get_bytes(&mut v)?;
        members.push(StoredMember {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Some(StoredGroup { protocol_type, generation, protocol, leader, state_timestamp, members })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredGroup {
        StoredGroup {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: Some("c1-1".into()),
            state_timestamp: 1_700_000_000_000,
            members: vec![
                StoredMember {
                    member_id: "c1-1".into(),
                    instance_id: None,
                    client_id: "c1".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 45_000,
                    subscription: Bytes::from_static(b"\x00\x01sub"),
                    assignment: Bytes::from_static(b"\x00\x01asg"),
                },
                StoredMember {
                    member_id: "c2-2".into(),
                    instance_id: Some("pod-2".into()),
                    client_id: "c2".into(),
                    client_host: String::new(),
                    rebalance_timeout_ms: 60_000,
                    session_timeout_ms: 10_000,
                    subscription: Bytes::new(),
                    assignment: Bytes::new(),
                },
            ],
        }
    }

    #[test]
    fn value_round_trips() {
        let g = sample();
        assert_eq!(decode_value(Bytes::from(encode_value(&g))), Some(g));
        let empty = StoredGroup { members: Vec::new(), protocol: None, leader: None, ..sample() };
        assert_eq!(decode_value(Bytes::from(encode_value(&empty))), Some(empty));
    }

    #[test]
    fn truncated_value_is_refused_not_misread() {
        let bytes = encode_value(&sample());
        for cut in 0..bytes.len() {
            assert_eq!(decode_value(Bytes::copy_from_slice(&bytes[..cut])), None, "cut at {cut}");
        }
    }

    #[test]
    fn version_1_value_without_timestamp_or_instance_ids_decodes() {
        // Kafka 0.11-era layout: no state timestamp (v2) and no group instance id (v3).
        let mut v = Vec::new();
        v.put_i16(1);
        put_str(&mut v, "consumer");
        v.put_i32(3);
        put_str(&mut v, "range");
        put_str(&mut v, "m1");
        v.put_i32(1);
        put_str(&mut v, "m1");
        put_str(&mut v, "cid");
        put_str(&mut v, "/10.0.0.1");
        v.put_i32(5000);
        v.put_i32(3000);
        put_bytes(&mut v, b"s");
        put_bytes(&mut v, b"a");
        let g = decode_value(Bytes::from(v)).expect("v1 decodes");
        assert_eq!(g.generation, 3);
        assert_eq!(g.state_timestamp, -1);
        assert_eq!(g.members[0].instance_id, None);
        assert_eq!(g.members[0].rebalance_timeout_ms, 5000);
        assert_eq!(g.members[0].assignment, Bytes::from_static(b"a"));
    }
}
