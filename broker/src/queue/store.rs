//! Persistent messages of a durable queue, kept as LavinMQ keeps them: appended to a
//! segmented log (the same engine and files as Kafka partitions: one v2 record batch per
//! message, key = exchange, routing key and content header, value = body), plus an
//! append-only `acks` file of the offsets settled since. At open, the log is recovered (CRC
//! checks, torn tails cut) and every message whose offset is not in `acks` is ready again.
//!
//! Appends go to the page cache; the segment files they wrote are fsynced in groups, outside
//! the AMQP core's lock, by its flusher ([`MessageStore::written_file`] says which), and a
//! confirm is sent only after that. Settles are buffered and written to `acks` together
//! ([`MessageStore::write_acks`]); losing the last of them in a crash only redelivers.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use bytes::Bytes;

use super::Message;
use crate::log::batch::{build_batch, BatchView, HEADER_SIZE};
use crate::log::{now_ms, Log, LogConfig, LogMetrics};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("queue store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("queue store log: {0}")]
    Log(#[from] crate::log::LogError),
    #[error("queue store {0}: corrupt record")]
    Corrupt(PathBuf),
}

type Result<T> = std::result::Result<T, StoreError>;

/// Segment size of queue logs: small, so that settled messages free their disk soon.
const SEGMENT_BYTES: u64 = 16 << 20;

pub struct MessageStore {
    dir: PathBuf,
    log: Log,
    acks: File,
    /// Settled offsets not written to `acks` yet.
    acks_buf: Vec<u8>,
    /// Offsets appended and not settled yet; the smallest bounds what can be deleted.
    live: std::collections::BTreeSet<i64>,
    /// Settles since the last look at deletable segments.
    settled_since_compaction: u32,
}

impl std::fmt::Debug for MessageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStore").field("dir", &self.dir).finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// Key of a stored message: exchange and routing key (length-prefixed), then the
/// content-header payload as the wire carries it (class, weight, body size, properties).
fn encode_key(m: &Message) -> Vec<u8> {
    let frame = AMQPFrame::Header(
        0,
        AMQPContentHeader { class_id: 60, body_size: m.body.len() as u64, properties: m.properties.clone() },
    );
    let (buf, _) = gen_frame(&frame)(WriteContext::from(Vec::new())).expect("encoding into a Vec").into_inner();
    let header = &buf[7..buf.len() - 1]; // without type, channel, size and frame-end
    let mut key = Vec::with_capacity(4 + m.exchange.len() + m.routing_key.len() + header.len());
    for s in [&m.exchange, &m.routing_key] {
        key.extend_from_slice(&(s.len() as u16).to_be_bytes());
        key.extend_from_slice(s.as_bytes());
    }
    key.extend_from_slice(header);
    key
}

fn decode(key: &[u8], value: &[u8]) -> Option<Message> {
    let mut at = 0;
    let mut strings = Vec::new();
    for _ in 0..2 {
        let len = u16::from_be_bytes(key.get(at..at + 2)?.try_into().ok()?) as usize;
        strings.push(String::from_utf8(key.get(at + 2..at + 2 + len)?.to_vec()).ok()?);
        at += 2 + len;
    }
    let (_, header) = amq_protocol::frame::parsing::parse_content_header(&key[at..]).ok()?;
    let routing_key = strings.pop()?;
    let exchange = strings.pop()?;
    Some(Message { exchange, routing_key, properties: header.properties, body: Bytes::copy_from_slice(value) })
}

/// Read a zig-zag varint at `*at`.
fn varint(buf: &[u8], at: &mut usize) -> Option<i64> {
    let mut v: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *buf.get(*at)?;
        *at += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    Some(((v >> 1) as i64) ^ -((v & 1) as i64))
}

/// Key and value of the single record of an uncompressed batch.
fn only_record(batch: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut at = HEADER_SIZE;
    let _len = varint(batch, &mut at)?;
    at += 1; // attributes
    varint(batch, &mut at)?; // timestamp delta
    varint(batch, &mut at)?; // offset delta
    let klen = varint(batch, &mut at)?;
    let key = batch.get(at..at + klen.max(0) as usize)?;
    at += klen.max(0) as usize;
    let vlen = varint(batch, &mut at)?;
    let value = batch.get(at..at + vlen.max(0) as usize)?;
    Some((key, value))
}

impl MessageStore {
    /// Open (creating) the store in `dir`; returns it with the messages not settled yet, in
    /// offset order.
    pub fn open(dir: &Path) -> Result<(Self, Vec<(i64, Message)>)> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let metrics = LogMetrics::new(&prometheus::Registry::new()).expect("metrics of a fresh registry");
        let now = now_ms();
        // Always recover from the start: the acks file, not a checkpoint, says what is live.
        // AMQP bodies go up to 128 MiB (plus the key with the properties).
        let config = LogConfig {
            segment_bytes: SEGMENT_BYTES,
            max_message_bytes: (128 << 20) + (1 << 20),
            ..LogConfig::default()
        };
        let (log, _) = Log::open(&dir.join("log"), config, 0, 0, false, metrics, now)?;
        let acks_path = dir.join("acks");
        let mut acked = HashSet::new();
        if let Ok(mut f) = File::open(&acks_path) {
            let mut raw = Vec::new();
            f.read_to_end(&mut raw).map_err(io(&acks_path))?;
            // A torn last entry (crash mid-write) is ignored: that message comes back.
            for chunk in raw.chunks_exact(8) {
                acked.insert(i64::from_be_bytes(chunk.try_into().expect("8 bytes")));
            }
        }
        let acks = OpenOptions::new().create(true).append(true).open(&acks_path).map_err(io(&acks_path))?;
        let mut live = Vec::new();
        let mut offset = log.log_start_offset();
        let end = log.log_end_offset();
        while offset < end {
            let Some(slice) = log.read(offset, 4 << 20, end, true)? else { break };
            let buf = slice.to_vec().map_err(io(dir))?;
            let mut at = 0;
            let mut next = offset;
            while at < buf.len() {
                let Ok(view) = BatchView::parse(&buf[at..]) else { break };
                let base = view.base_offset();
                if base >= offset && !acked.contains(&base) {
                    let (k, v) = only_record(view.bytes()).ok_or_else(|| StoreError::Corrupt(dir.to_path_buf()))?;
                    live.push((base, decode(k, v).ok_or_else(|| StoreError::Corrupt(dir.to_path_buf()))?));
                }
                next = view.last_offset() + 1;
                at += view.size();
            }
            if next <= offset {
                break;
            }
            offset = next;
        }
        let live_offsets = live.iter().map(|(o, _)| *o).collect();
        let mut store = Self {
            dir: dir.to_path_buf(),
            log,
            acks,
            acks_buf: Vec::new(),
            live: live_offsets,
            settled_since_compaction: 0,
        };
        store.compact()?;
        Ok((store, live))
    }

    /// Append a message to the page cache; with `sync`, fdatasync it before returning (a
    /// transaction commits), otherwise the caller has [`Self::written_file`] fsynced before
    /// it confirms. Returns its offset.
    pub fn append(&mut self, m: &Message, sync: bool) -> Result<i64> {
        let key = encode_key(m);
        let mut batch = build_batch(&[(Some(&key), Some(&m.body))], now_ms());
        let info = self.log.append(&mut batch, 0, now_ms())?;
        if sync {
            let path = self.dir.join("log");
            self.log.active_file().sync_data().map_err(io(&path))?;
        }
        self.live.insert(info.first_offset);
        Ok(info.first_offset)
    }

    /// The segment file the last append wrote to: what must be fsynced for it to be durable.
    pub fn written_file(&self) -> Arc<File> {
        self.log.active_file().clone()
    }

    /// The message at `offset` is settled (acknowledged, dropped or dead-lettered). Buffered
    /// until [`Self::write_acks`].
    pub fn settle(&mut self, offset: i64) -> Result<()> {
        self.acks_buf.extend_from_slice(&offset.to_be_bytes());
        self.live.remove(&offset);
        self.settled_since_compaction += 1;
        if self.settled_since_compaction >= 1024 {
            self.compact()?;
        }
        Ok(())
    }

    /// Write the buffered settles to `acks` (one write; no fsync: a settle lost in a crash
    /// only brings its message back).
    pub fn write_acks(&mut self) -> Result<()> {
        if self.acks_buf.is_empty() {
            return Ok(());
        }
        let path = self.dir.join("acks");
        self.acks.write_all(&self.acks_buf).map_err(io(&path))?;
        self.acks_buf.clear();
        Ok(())
    }

    /// Delete the segments whose messages are all settled, and rewrite the acks file
    /// without the offsets they held.
    pub fn compact(&mut self) -> Result<()> {
        self.write_acks()?;
        self.settled_since_compaction = 0;
        let min_live = self.live.first().copied().unwrap_or_else(|| self.log.log_end_offset());
        if self.log.delete_segments_before(min_live)? == 0 {
            return Ok(());
        }
        let start = self.log.log_start_offset();
        let path = self.dir.join("acks");
        let mut raw = Vec::new();
        File::open(&path).and_then(|mut f| f.read_to_end(&mut raw)).map_err(io(&path))?;
        let kept: Vec<u8> = raw
            .chunks_exact(8)
            .filter(|c| i64::from_be_bytes((*c).try_into().expect("8 bytes")) >= start)
            .flatten()
            .copied()
            .collect();
        let tmp = self.dir.join("acks.tmp");
        std::fs::write(&tmp, &kept).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        self.acks = OpenOptions::new().append(true).open(&path).map_err(io(&path))?;
        Ok(())
    }

    /// Segment files of the log (for tests and metrics).
    pub fn segment_count(&self) -> usize {
        self.log.segment_count()
    }

    /// Remove the store (its queue was deleted).
    pub fn destroy(mut self) {
        self.acks_buf.clear();
        let dir = self.dir.clone();
        drop(self);
        let _ = std::fs::remove_dir_all(dir);
    }
}

impl Drop for MessageStore {
    fn drop(&mut self) {
        if let Err(e) = self.write_acks() {
            tracing::warn!(error = %e, "writing the last settles of a queue store failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic::AMQPProperties;

    fn msg(body: &str) -> Message {
        Message {
            exchange: "ex".into(),
            routing_key: "rk".into(),
            properties: AMQPProperties::default().with_delivery_mode(2).with_content_type("text/plain".into()),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn settled_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = MessageStore::open(dir.path()).unwrap();
        let big = "x".repeat(1 << 20);
        let offsets: Vec<i64> = (0..40).map(|_| s.append(&msg(&big), false).unwrap()).collect();
        assert!(s.segment_count() >= 3, "{} segments", s.segment_count());
        for o in &offsets[..39] {
            s.settle(*o).unwrap();
        }
        s.compact().unwrap();
        assert_eq!(s.segment_count(), 1, "only the segment holding the live message remains");
        drop(s);
        let (s, live) = MessageStore::open(dir.path()).unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].0, offsets[39]);
        assert_eq!(s.segment_count(), 1);
    }

    #[test]
    fn settled_messages_do_not_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, live) = MessageStore::open(dir.path()).unwrap();
        assert!(live.is_empty());
        let a = s.append(&msg("a"), true).unwrap();
        let b = s.append(&msg("b"), true).unwrap();
        let c = s.append(&msg("c"), true).unwrap();
        s.settle(b).unwrap();
        drop(s);
        let (_, live) = MessageStore::open(dir.path()).unwrap();
        let got: Vec<(i64, String, String)> =
            live.into_iter().map(|(o, m)| (o, String::from_utf8(m.body.to_vec()).unwrap(), m.routing_key)).collect();
        assert_eq!(got, vec![(a, "a".into(), "rk".into()), (c, "c".into(), "rk".into())]);
        let (_, live) = MessageStore::open(dir.path()).unwrap();
        assert_eq!(live[0].1.properties.content_type().as_ref().map(|s| s.as_str()), Some("text/plain"));
        assert_eq!(live[0].1.exchange, "ex");
    }
}
