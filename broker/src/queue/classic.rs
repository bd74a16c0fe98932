//! A classic queue: ready messages in order, the count of delivered-but-unacknowledged ones,
//! and its consumers (keys into the channels that own them).

use std::collections::VecDeque;
use std::sync::Arc;

use amq_protocol::types::FieldTable;

use super::store::MessageStore;
use super::{Message, QueueArgs};

/// A consumer as the queue sees it: which connection, channel and tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConsumerKey {
    pub conn: u64,
    pub channel: u16,
    pub tag: String,
}

#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// Position in the queue: requeued messages go back to their original place.
    pub seq: u64,
    pub msg: Arc<Message>,
    pub redelivered: bool,
    /// Absolute expiry in ms since the epoch (queue TTL or message expiration).
    pub expires_at: Option<u64>,
    /// Offset in the queue's message store, for a persistent message of a durable queue.
    pub offset: Option<i64>,
}

#[derive(Debug)]
pub struct Queue {
    pub name: String,
    pub durable: bool,
    pub auto_delete: bool,
    /// The connection owning an exclusive queue.
    pub exclusive_owner: Option<u64>,
    pub arguments: FieldTable,
    pub args: QueueArgs,
    pub ready: VecDeque<QueuedMessage>,
    pub ready_bytes: u64,
    pub unacked: u64,
    pub consumers: Vec<ConsumerKey>,
    /// Round-robin position among consumers.
    pub next_consumer: usize,
    /// An auto-delete queue is deleted when its last consumer goes, once it has had one.
    pub had_consumer: bool,
    /// Last use (declare, get, consume) for `x-expires`.
    pub last_used_ms: u64,
    /// Where persistent messages of a durable queue are kept.
    pub store: Option<MessageStore>,
    next_seq: u64,
}

impl Queue {
    pub fn new(
        name: String,
        durable: bool,
        auto_delete: bool,
        exclusive_owner: Option<u64>,
        arguments: FieldTable,
        args: QueueArgs,
        now_ms: u64,
    ) -> Self {
        Self {
            name,
            durable,
            auto_delete,
            exclusive_owner,
            arguments,
            args,
            ready: VecDeque::new(),
            ready_bytes: 0,
            unacked: 0,
            consumers: Vec::new(),
            next_consumer: 0,
            had_consumer: false,
            last_used_ms: now_ms,
            store: None,
            next_seq: 0,
        }
    }

    /// Attach the message store of a durable queue with the messages it recovered, which
    /// are ready again (marked redelivered: they may have been delivered before).
    pub fn attach_store(&mut self, store: MessageStore, recovered: Vec<(i64, Message)>) {
        for (offset, msg) in recovered {
            let msg = Arc::new(msg);
            self.ready_bytes += msg.size();
            let seq = self.next_seq;
            self.next_seq += 1;
            let ttl = self.args.message_ttl;
            self.ready.push_back(QueuedMessage {
                seq,
                msg,
                redelivered: true,
                expires_at: ttl.map(|t| self.last_used_ms + t),
                offset: Some(offset),
            });
        }
        self.store = Some(store);
    }

    /// Write the settles buffered by the message store (see [`MessageStore::write_acks`]).
    pub fn write_acks(&mut self) {
        if let Some(store) = self.store.as_mut() {
            if let Err(e) = store.write_acks() {
                tracing::error!(queue = %self.name, error = %e, "recording settled messages failed");
            }
        }
    }

    /// The file to fsync for the persistent messages appended to the store (if any).
    pub fn written_file(&self) -> Option<std::sync::Arc<std::fs::File>> {
        self.store.as_ref().map(|s| s.written_file())
    }

    /// The message left the queue for good (acknowledged, dropped, dead-lettered): forget it
    /// on disk too.
    pub fn settle(&mut self, m: &QueuedMessage) {
        if let (Some(offset), Some(store)) = (m.offset, self.store.as_mut()) {
            if let Err(e) = store.settle(offset) {
                tracing::error!(queue = %self.name, offset, error = %e, "recording a settled message failed");
            }
        }
    }

    pub fn message_count(&self) -> u64 {
        self.ready.len() as u64
    }

    /// Append a new message. Its expiry is the earlier of the queue TTL and its own. False
    /// when a persistent message could not be written to the queue's store (it is kept in
    /// memory, but must not be confirmed).
    /// With `sync`, a persistent message is fsynced before this returns (a transaction
    /// commits); otherwise the caller fsyncs [`Queue::written_file`] before confirming it.
    pub fn push(&mut self, msg: Arc<Message>, message_ttl: Option<u64>, now_ms: u64, sync: bool) -> bool {
        let ttl = match (self.args.message_ttl, message_ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.ready_bytes += msg.size();
        let seq = self.next_seq;
        self.next_seq += 1;
        // Persistent messages of durable queues are on disk before the publish is confirmed.
        let mut stored = true;
        let offset = match (self.store.as_mut(), msg.persistent()) {
            (Some(store), true) => match store.append(&msg, sync) {
                Ok(o) => Some(o),
                Err(e) => {
                    tracing::error!(queue = %self.name, error = %e, "storing a persistent message failed");
                    stored = false;
                    None
                }
            },
            _ => None,
        };
        self.ready.push_back(QueuedMessage {
            seq,
            msg,
            redelivered: false,
            expires_at: ttl.map(|t| now_ms + t),
            offset,
        });
        stored
    }

    /// Put a delivered message back at its original position, marked redelivered.
    pub fn requeue(&mut self, mut m: QueuedMessage) {
        m.redelivered = true;
        self.ready_bytes += m.msg.size();
        let at = self.ready.partition_point(|x| x.seq < m.seq);
        self.ready.insert(at, m);
    }

    pub fn pop(&mut self) -> Option<QueuedMessage> {
        let m = self.ready.pop_front()?;
        self.ready_bytes -= m.msg.size();
        Some(m)
    }

    /// Whether the head has expired at `now_ms`.
    pub fn head_expired(&self, now_ms: u64) -> bool {
        self.ready.front().is_some_and(|m| m.expires_at.is_some_and(|e| e <= now_ms))
    }

    /// Whether the limits are exceeded (then drop-head removes from the head).
    pub fn over_limits(&self) -> bool {
        self.args.max_length.is_some_and(|l| self.ready.len() as u64 > l)
            || self.args.max_length_bytes.is_some_and(|l| self.ready_bytes > l)
    }

    /// Whether one more message of `size` bytes would exceed the limits (reject-publish).
    pub fn would_overflow(&self, size: u64) -> bool {
        self.args.max_length.is_some_and(|l| self.ready.len() as u64 >= l)
            || self.args.max_length_bytes.is_some_and(|l| self.ready_bytes + size > l)
    }

    pub fn purge(&mut self) -> u64 {
        let n = self.ready.len() as u64;
        for m in std::mem::take(&mut self.ready) {
            self.settle(&m);
        }
        self.ready_bytes = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(body: &str) -> Arc<Message> {
        Arc::new(Message {
            exchange: String::new(),
            routing_key: "q".into(),
            properties: Default::default(),
            body: Bytes::from(body.to_string()),
        })
    }

    #[test]
    fn requeue_restores_order_and_ttl_takes_the_minimum() {
        let mut q = Queue::new("q".into(), false, false, None, Default::default(), QueueArgs::default(), 0);
        q.args.message_ttl = Some(100);
        assert!(q.push(msg("a"), Some(50), 1000, false));
        assert!(q.push(msg("b"), None, 1000, false));
        assert!(q.push(msg("c"), Some(500), 1000, false));
        assert_eq!(q.ready[0].expires_at, Some(1050));
        assert_eq!(q.ready[1].expires_at, Some(1100));
        assert_eq!(q.ready[2].expires_at, Some(1100));
        let a = q.pop().unwrap();
        let b = q.pop().unwrap();
        q.requeue(b);
        q.requeue(a);
        let order: Vec<_> = q.ready.iter().map(|m| (m.msg.body.clone(), m.redelivered)).collect();
        assert_eq!(order[0], (Bytes::from("a"), true));
        assert_eq!(order[1], (Bytes::from("b"), true));
        assert_eq!(order[2], (Bytes::from("c"), false));
        assert_eq!(q.ready_bytes, 3);
        assert!(q.head_expired(1050) && !q.head_expired(1049));
    }
}
