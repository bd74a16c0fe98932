//! The AMQP broker core: virtual hosts with their exchanges and queues, and the delivery
//! state of every open channel (consumers, prefetch, unacknowledged deliveries). Everything
//! sits behind one mutex so that routing, enqueueing, dispatching and acknowledging are
//! atomic with respect to each other; replies and deliveries are written to the owning
//! connection's outbound queue while the lock is held, which keeps their order (a
//! consume-ok always precedes the first deliver, a basic.return its basic.ack).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{basic, exchange, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;

use super::commit::{self, Confirm, FlushSignal, GroupCommit};
use super::outbox::Outbox;

use super::errors::{
    access_refused, not_allowed, not_found, not_implemented, precondition_failed, resource_locked, AmqpException,
    AmqpResult,
};
use super::frames;
use crate::queue::args::first_difference;
use crate::queue::classic::ConsumerKey;
use crate::queue::{Message, Overflow, Queue, QueueArgs, QueuedMessage};
use crate::routing::{headers, Binding, Destination, Exchange, ExchangeKind};

#[path = "durable.rs"]
mod durable;
pub use durable::{BindingInfo, ExchangeInfo, QueueInfo};

pub type ConnId = u64;

/// Wall clock in ms since the epoch, for TTLs and `x-expires`.
fn now() -> u64 {
    crate::log::now_ms().max(0) as u64
}

/// 64 random bits (std's randomly keyed hasher), for server-generated names.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now());
    h.finish()
}

/// Settings of the AMQP side.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// user → password.
    pub users: HashMap<String, String>,
    /// `guest` may only connect from a loopback address (RabbitMQ's default).
    pub guest_loopback_only: bool,
    pub frame_max: u32,
    pub channel_max: u16,
    pub heartbeat_secs: u16,
    /// Largest message body accepted (RabbitMQ's `max_message_size` default, 128 MiB).
    pub max_message_size: u64,
    /// Where durable queues keep their persistent messages (none: in memory only).
    pub data_dir: Option<std::path::PathBuf>,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            users: HashMap::from([("guest".to_string(), "guest".to_string())]),
            guest_loopback_only: true,
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat_secs: 60,
            max_message_size: 128 << 20,
            data_dir: None,
        }
    }
}

/// The exchanges every vhost has: the default exchange and the `amq.*` ones.
const STANDARD_EXCHANGES: &[(&str, ExchangeKind)] = &[
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

#[derive(Debug)]
pub struct Vhost {
    pub name: String,
    pub exchanges: BTreeMap<String, Exchange>,
    pub queues: BTreeMap<String, Queue>,
}

impl Vhost {
    pub fn new(name: &str) -> Self {
        let exchanges = STANDARD_EXCHANGES
            .iter()
            .map(|(n, k)| (n.to_string(), Exchange::new(*n, *k, true, false, false, FieldTable::default())))
            .collect();
        Self { name: name.to_string(), exchanges, queues: BTreeMap::new() }
    }
}

#[derive(Debug)]
struct Consumer {
    queue: String,
    no_ack: bool,
    /// Per-consumer prefetch (basic.qos global=false at consume time); 0 = unlimited.
    prefetch: u16,
    unacked: u32,
}

#[derive(Debug)]
struct Unacked {
    queue: String,
    consumer: Option<String>,
    message: QueuedMessage,
}

#[derive(Debug, Clone, Copy)]
enum AckOp {
    Ack { tag: u64, multiple: bool },
    Nack { tag: u64, multiple: bool, requeue: bool },
}

#[derive(Debug)]
struct PendingPublish {
    exchange: String,
    mandatory: bool,
    msg: Arc<Message>,
}

#[derive(Debug, Default)]
struct Tx {
    publishes: Vec<PendingPublish>,
    acks: Vec<AckOp>,
}

#[derive(Debug, Default)]
struct Channel {
    consumers: HashMap<String, Consumer>,
    unacked: BTreeMap<u64, Unacked>,
    next_tag: u64,
    /// Prefetch given to consumers created from now on (basic.qos global=false).
    prefetch_consumer: u16,
    /// Shared limit over all consumers of the channel (basic.qos global=true).
    prefetch_channel: u16,
    confirm: bool,
    next_publish_seq: u64,
    /// Acks of publishes confirmed at once but not sent yet: one `basic.ack multiple=true`
    /// up to here leaves at the end of the read (see `AmqpCore::end_of_read`), 0 if none.
    unsent_ack: u64,
    tx: Option<Tx>,
}

#[derive(Debug)]
struct ConnEntry {
    out: Arc<Outbox>,
    vhost: String,
    frame_max: u32,
    channels: HashMap<u16, Channel>,
}

#[derive(Debug)]
struct DeadLetter {
    vhost: String,
    exchange: String,
    msg: Arc<Message>,
}

#[derive(Debug, Default)]
struct CoreState {
    vhosts: BTreeMap<String, Vhost>,
    conns: HashMap<ConnId, ConnEntry>,
    dead_letters: Vec<DeadLetter>,
    /// (vhost, queue) with an exclusive consumer.
    exclusive_consumers: HashSet<(String, String)>,
    /// Deletions of durable queues the core decides itself, for the metadata quorum.
    durable_sink: Option<UnboundedSender<crate::cluster::amqp_image::AmqpCommand>>,
    /// Copied from the config: where durable queues keep their messages.
    data_dir: Option<std::path::PathBuf>,
    /// Confirms waiting for the fsync of the persistent messages they cover (group commit).
    commit: GroupCommit,
    /// Wakes the flusher that runs the group commit's rounds.
    flush: Arc<FlushSignal>,
    /// The published/delivered counters (handles shared with `AmqpCore::metrics`).
    metrics: super::metrics::AmqpMetrics,
}

/// Shared by every AMQP connection of the broker.
pub struct AmqpCore {
    state: Mutex<CoreState>,
    pub config: AmqpConfig,
    next_conn: AtomicU64,
    next_name: AtomicU64,
    /// The metadata quorum, where durable entities live (absent in unit tests).
    cluster: std::sync::OnceLock<Arc<crate::cluster::ClusterNode>>,
    /// The resource alarm in force (see `alarm`), as its reason.
    alarm: tokio::sync::watch::Sender<Option<String>>,
    /// Whether the group commit's flusher thread runs (else the tick runs its rounds).
    flusher: std::sync::atomic::AtomicBool,
    /// Published/delivered counters for `/metrics` (see `amqp::metrics`).
    pub metrics: super::metrics::AmqpMetrics,
}

impl std::fmt::Debug for AmqpCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpCore").field("config", &self.config).finish_non_exhaustive()
    }
}

/// What a queue declaration answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredQueue {
    pub name: String,
    pub message_count: u32,
    pub consumer_count: u32,
}

/// How long the flusher gathers writes before a round that follows another at once (under a
/// steady stream of persistent publishes): rounds back to back would each cover only the few
/// messages published during one fsync, and cost a lock hand-over and a wake-up each.
const GATHER: std::time::Duration = std::time::Duration::from_millis(1);

/// The group commit's thread: a round whenever one is asked for; stops with the core. A
/// round asked for while the flusher was idle starts at once (a lone confirm costs one fsync).
fn flusher(core: std::sync::Weak<AmqpCore>, signal: Arc<FlushSignal>) {
    let mut busy = false;
    loop {
        let asked = signal.wait(std::time::Duration::from_millis(500));
        let Some(core) = core.upgrade() else { return };
        if asked {
            if busy {
                std::thread::sleep(GATHER);
            }
            core.commit_round();
            busy = signal.requested();
        } else {
            busy = false;
        }
    }
}

/// Send the acks a channel owes its publisher (see `Channel::unsent_ack`).
fn send_unsent_ack(out: &Arc<Outbox>, channel: u16, ch: &mut Channel) {
    if ch.unsent_ack == 0 {
        return;
    }
    let m = basic::AMQPMethod::Ack(basic::Ack { delivery_tag: ch.unsent_ack, multiple: true });
    out.frame(&amq_protocol::frame::AMQPFrame::Method(channel, AMQPClass::Basic(m)));
    ch.unsent_ack = 0;
}

/// Send a publisher confirm, unless its channel closed meanwhile (its publisher saw the close).
fn send_confirm(conns: &HashMap<ConnId, ConnEntry>, c: Confirm) {
    let Some(entry) = conns.get(&c.conn) else { return };
    if !entry.channels.contains_key(&c.channel) {
        return;
    }
    let m = if c.ack {
        basic::AMQPMethod::Ack(basic::Ack { delivery_tag: c.seq, multiple: c.multiple })
    } else {
        basic::AMQPMethod::Nack(basic::Nack { delivery_tag: c.seq, multiple: c.multiple, requeue: false })
    };
    entry.out.frame(&amq_protocol::frame::AMQPFrame::Method(c.channel, AMQPClass::Basic(m)));
}

fn send(conns: &HashMap<ConnId, ConnEntry>, conn: ConnId, bytes: Bytes) {
    if let Some(c) = conns.get(&conn) {
        // A closed receiver means the connection is going away; its state is cleaned up
        // by `connection_closed`.
        c.out.send(&bytes);
    }
}

fn no_queue(name: &str, vhost: &str) -> AmqpException {
    not_found(format!("no queue '{name}' in vhost '{vhost}'"))
}

fn no_exchange(name: &str, vhost: &str) -> AmqpException {
    not_found(format!("no exchange '{name}' in vhost '{vhost}'"))
}

fn locked(name: &str, vhost: &str) -> AmqpException {
    resource_locked(format!(
        "cannot obtain exclusive access to locked queue '{name}' in vhost '{vhost}'. It could be originally \
         declared on another connection or the exclusive property value does not match that of the original \
         declaration."
    ))
}

fn check_owner(q: &Queue, conn: ConnId, vhost: &str) -> AmqpResult<()> {
    match q.exclusive_owner {
        Some(owner) if owner != conn => Err(locked(&q.name, vhost)),
        _ => Ok(()),
    }
}

/// RabbitMQ's rule for names in declare methods.
fn check_name(kind: &str, name: &str) -> AmqpResult<()> {
    if name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
        Ok(())
    } else {
        Err(precondition_failed(format!(
            "{kind} name '{name}' contains characters other than letters, digits, '-', '_', '.' and ':'"
        )))
    }
}

fn long_str(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

impl AmqpCore {
    pub fn new(config: AmqpConfig) -> Arc<Self> {
        let mut state = CoreState { data_dir: config.data_dir.clone(), ..Default::default() };
        state.vhosts.insert("/".to_string(), Vhost::new("/"));
        let flush = state.flush.clone();
        let metrics = state.metrics.clone();
        let with_stores = config.data_dir.is_some();
        let core = Arc::new(Self {
            state: Mutex::new(state),
            config,
            next_conn: AtomicU64::new(1),
            next_name: AtomicU64::new(1),
            cluster: std::sync::OnceLock::new(),
            alarm: tokio::sync::watch::channel(None).0,
            flusher: std::sync::atomic::AtomicBool::new(false),
            metrics,
        });
        if with_stores {
            let weak = Arc::downgrade(&core);
            let spawned = std::thread::Builder::new().name("amqp-flusher".into()).spawn(move || flusher(weak, flush));
            match spawned {
                Ok(_) => core.flusher.store(true, Ordering::Release),
                Err(e) => tracing::error!(error = %e,
                    "starting the AMQP flusher thread failed; confirms of persistent messages wait for the tick"),
            }
        }
        core
    }

    /// One group-commit round: fsync the store files written since the last round without
    /// holding the lock, then send the confirms the round covers.
    fn commit_round(&self) {
        let (round, files) = {
            let mut st = self.lock();
            if !st.commit.has_work() {
                return;
            }
            st.commit.start_round()
        };
        let ok = commit::sync_files(&files);
        let mut guard = self.lock();
        let st = &mut *guard;
        for c in st.commit.finish_round(round, ok) {
            send_confirm(&st.conns, c);
        }
    }

    pub fn set_cluster(&self, cluster: Arc<crate::cluster::ClusterNode>) {
        let _ = self.cluster.set(cluster);
    }

    /// Raise (Some) or clear (None) the resource alarm; blocked publishers resume on clear.
    pub fn set_alarm(&self, reason: Option<String>) {
        self.alarm.send_if_modified(|cur| {
            if cur.is_some() == reason.is_some() {
                return false;
            }
            match &reason {
                Some(r) => tracing::warn!(reason = %r, "resource alarm: blocking AMQP publishers"),
                None => tracing::info!("resource alarm cleared: unblocking AMQP publishers"),
            }
            *cur = reason;
            true
        });
    }

    pub fn alarm(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.alarm.subscribe()
    }

    /// Bytes of message bodies held by every queue (ready and unacknowledged-ready).
    pub fn queued_bytes(&self) -> u64 {
        let st = self.lock();
        st.vhosts.values().flat_map(|v| v.queues.values()).map(|q| q.ready_bytes).sum()
    }

    pub fn cluster(&self) -> Option<&Arc<crate::cluster::ClusterNode>> {
        self.cluster.get()
    }

    fn lock(&self) -> MutexGuard<'_, CoreState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn unique(&self, prefix: &str) -> String {
        let n = self.next_name.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{:016x}{n:x}", random_u64())
    }

    // -----------------------------------------------------------------------------------
    // Connections, vhosts and channels
    // -----------------------------------------------------------------------------------

    pub fn vhost_exists(&self, vhost: &str) -> bool {
        self.lock().vhosts.contains_key(vhost)
    }

    pub fn vhost_names(&self) -> Vec<String> {
        self.lock().vhosts.keys().cloned().collect()
    }

    /// Create a vhost with the standard exchanges; false if it existed.
    pub fn add_vhost(&self, name: &str) -> bool {
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.vhosts.contains_key(name) {
            return false;
        }
        st.vhosts.insert(name.to_string(), Vhost::new(name));
        true
    }

    /// Register an opened connection on `vhost`; its outbound frames go to `out`.
    pub fn connection_opened(&self, vhost: &str, frame_max: u32, out: Arc<Outbox>) -> Option<ConnId> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if !st.vhosts.contains_key(vhost) {
            return None;
        }
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        st.conns.insert(id, ConnEntry { out, vhost: vhost.to_string(), frame_max, channels: HashMap::new() });
        Some(id)
    }

    /// The connection is gone: requeue its unacknowledged deliveries, drop its consumers,
    /// delete its exclusive queues.
    pub fn connection_closed(&self, conn: ConnId) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let channels: Vec<u16> = st.conns.get(&conn).map(|c| c.channels.keys().copied().collect()).unwrap_or_default();
        for ch in channels {
            st.close_channel(conn, ch);
        }
        if let Some(entry) = st.conns.remove(&conn) {
            let vhost = entry.vhost;
            let exclusive: Vec<String> = st
                .vhosts
                .get(&vhost)
                .map(|v| {
                    v.queues.values().filter(|q| q.exclusive_owner == Some(conn)).map(|q| q.name.clone()).collect()
                })
                .unwrap_or_default();
            for q in exclusive {
                st.delete_queue(&vhost, &q);
            }
        }
        st.flush_dead_letters();
    }

    /// Every frame of a connection's read is handled: send the acks its publishes earned
    /// (one `basic.ack multiple=true` per channel, as RabbitMQ sends them).
    pub fn end_of_read(&self, conn: ConnId) {
        let mut guard = self.lock();
        if let Some(entry) = guard.conns.get_mut(&conn) {
            let ConnEntry { out, channels, .. } = entry;
            for (id, ch) in channels.iter_mut() {
                send_unsent_ack(out, *id, ch);
            }
        }
    }

    pub fn channel_opened(&self, conn: ConnId, channel: u16) {
        if let Some(c) = self.lock().conns.get_mut(&conn) {
            c.channels.insert(channel, Channel::default());
        }
    }

    /// The channel closed (by either side): requeue its deliveries, cancel its consumers.
    pub fn channel_closed(&self, conn: ConnId, channel: u16) {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.close_channel(conn, channel);
        st.flush_dead_letters();
    }

    // -----------------------------------------------------------------------------------
    // Exchanges
    // -----------------------------------------------------------------------------------

    pub fn exchange_declare(&self, conn: ConnId, channel: u16, m: &exchange::Declare) -> AmqpResult<()> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let vhost = st.vhost_of(conn)?;
        let name = m.exchange.as_str();
        if name.is_empty() {
            return Err(access_refused("operation not permitted on the default exchange"));
        }
        let existing = st.vhosts.get(&vhost).and_then(|v| v.exchanges.get(name));
        if m.passive {
            if existing.is_none() {
                return Err(no_exchange(name, &vhost));
            }
        } else {
            let kind = ExchangeKind::parse(m.kind.as_str()).ok_or_else(|| {
                AmqpException::connection(
                    super::errors::code::COMMAND_INVALID,
                    format!("unknown exchange type '{}'", m.kind.as_str()),
                    None,
                )
            })?;
            match existing {
                Some(e) => {
                    let diff = if e.kind != kind && !(m.kind.as_str() == "match" && e.kind == ExchangeKind::Headers) {
                        Some(("type", m.kind.as_str().to_string(), e.kind.as_str().to_string()))
                    } else if e.durable != m.durable {
                        Some(("durable", m.durable.to_string(), e.durable.to_string()))
                    } else if e.auto_delete != m.auto_delete {
                        Some(("auto_delete", m.auto_delete.to_string(), e.auto_delete.to_string()))
                    } else if e.internal != m.internal {
                        Some(("internal", m.internal.to_string(), e.internal.to_string()))
                    } else {
                        None
                    };
                    if let Some((arg, got, cur)) = diff {
                        return Err(precondition_failed(format!(
                            "inequivalent arg '{arg}' for exchange '{name}' in vhost '{vhost}': received '{got}' but current is '{cur}'"
                        )));
                    }
                }
                None => {
                    if name.starts_with("amq.") {
                        return Err(access_refused(format!("exchange name '{name}' contains reserved prefix 'amq.*'")));
                    }
                    check_name("exchange", name)?;
                    let e = Exchange::new(name, kind, m.durable, m.auto_delete, m.internal, m.arguments.clone());
                    st.vhosts.get_mut(&vhost).expect("vhost of an open connection").exchanges.insert(name.into(), e);
                }
            }
        }
        if !m.nowait {
            send(
                &st.conns,
                conn,
                frames::method_frame(
                    channel,
                    AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
                ),
            );
        }
        Ok(())
    }

    pub fn exchange_delete(&self, conn: ConnId, channel: u16, m: &exchange::Delete) -> AmqpResult<()> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let vhost = st.vhost_of(conn)?;
        let name = m.exchange.as_str();
        if name.is_empty() || name.starts_with("amq.") && STANDARD_EXCHANGES.iter().any(|(n, _)| *n == name) {
            return Err(access_refused(format!("operation not permitted on the default exchange or '{name}'")));
        }
        let vh = st.vhosts.get(&vhost).expect("vhost of an open connection");
        if let Some(e) = vh.exchanges.get(name) {
            if m.if_unused && !e.bindings().is_empty() {
                return Err(precondition_failed(format!("exchange '{name}' in vhost '{vhost}' in use")));
            }
            st.delete_exchange(&vhost, name);
        }
        // Deleting an exchange that does not exist succeeds, as in RabbitMQ.
        if !m.nowait {
            send(
                &st.conns,
                conn,
                frames::method_frame(
                    channel,
                    AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                ),
            );
        }
        Ok(())
    }

    /// queue.bind / exchange.bind (and unbind with `bind == false`).
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &self,
        conn: ConnId,
        channel: u16,
        source: &str,
        destination: Destination,
        routing_key: &str,
        arguments: &FieldTable,
        bind: bool,
        reply: Option<AMQPClass>,
    ) -> AmqpResult<()> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let vhost = st.vhost_of(conn)?;
        if source.is_empty() || (matches!(destination, Destination::Exchange(ref d) if d.is_empty())) {
            return Err(access_refused("operation not permitted on the default exchange"));
        }
        let vh = st.vhosts.get_mut(&vhost).expect("vhost of an open connection");
        match &destination {
            Destination::Queue(q) => {
                let queue = vh.queues.get(q).ok_or_else(|| no_queue(q, &vhost))?;
                check_owner(queue, conn, &vhost)?;
            }
            Destination::Exchange(e) => {
                if !vh.exchanges.contains_key(e) {
                    return Err(no_exchange(e, &vhost));
                }
            }
        }
        let ex = vh.exchanges.get_mut(source).ok_or_else(|| no_exchange(source, &vhost))?;
        let b = Binding {
            destination,
            routing_key: routing_key.to_string(),
            arguments: super::json_args::normalize(arguments),
        };
        if bind {
            if ex.kind == ExchangeKind::Headers {
                headers::x_match(arguments).map_err(precondition_failed)?;
            }
            ex.bind(b);
        } else {
            // Unbinding what is not bound succeeds, as in RabbitMQ.
            if ex.unbind(&b) && ex.auto_delete && ex.bindings().is_empty() {
                st.delete_exchange(&vhost, source);
            }
        }
        if let Some(reply) = reply {
            send(&st.conns, conn, frames::method_frame(channel, reply));
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Queues
    // -----------------------------------------------------------------------------------

    pub fn queue_declare(&self, conn: ConnId, channel: u16, m: &queue::Declare) -> AmqpResult<DeclaredQueue> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let vhost = st.vhost_of(conn)?;
        let now = now();
        let mut name = m.queue.as_str().to_string();
        if name.is_empty() && !m.passive {
            name = self.unique("amq.gen-");
        }
        let declared = {
            let vh = st.vhosts.get_mut(&vhost).expect("vhost of an open connection");
            match vh.queues.get_mut(&name) {
                Some(q) => {
                    check_owner(q, conn, &vhost)?;
                    if !m.passive {
                        if q.exclusive_owner.is_some() != m.exclusive {
                            return Err(locked(&name, &vhost));
                        }
                        let diff = if q.durable != m.durable {
                            Some(("durable", m.durable.to_string(), q.durable.to_string()))
                        } else if q.auto_delete != m.auto_delete {
                            Some(("auto_delete", m.auto_delete.to_string(), q.auto_delete.to_string()))
                        } else {
                            first_difference(&q.arguments, &m.arguments).map(|k| {
                                let show = |t: &FieldTable| {
                                    t.inner().get(k).map_or_else(|| "none".to_string(), |v| format!("{v:?}"))
                                };
                                (k, show(&m.arguments), show(&q.arguments))
                            })
                        };
                        if let Some((arg, got, cur)) = diff {
                            return Err(precondition_failed(format!(
                                "inequivalent arg '{arg}' for queue '{name}' in vhost '{vhost}': received '{got}' but current is '{cur}'"
                            )));
                        }
                    }
                    if !m.passive {
                        q.last_used_ms = now;
                    }
                    DeclaredQueue {
                        name: name.clone(),
                        message_count: q.message_count() as u32,
                        consumer_count: q.consumers.len() as u32,
                    }
                }
                None => {
                    if m.passive {
                        return Err(no_queue(&name, &vhost));
                    }
                    if name.starts_with("amq.") && m.queue.as_str() == name {
                        return Err(access_refused(format!("queue name '{name}' contains reserved prefix 'amq.*'")));
                    }
                    check_name("queue", &name)?;
                    let args = QueueArgs::parse(&m.arguments, &name, &vhost).map_err(precondition_failed)?;
                    let owner = m.exclusive.then_some(conn);
                    let q = Queue::new(name.clone(), m.durable, m.auto_delete, owner, m.arguments.clone(), args, now);
                    vh.queues.insert(name.clone(), q);
                    DeclaredQueue { name: name.clone(), message_count: 0, consumer_count: 0 }
                }
            }
        };
        if !m.nowait {
            send(
                &st.conns,
                conn,
                frames::method_frame(
                    channel,
                    AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                        queue: declared.name.clone().into(),
                        message_count: declared.message_count,
                        consumer_count: declared.consumer_count,
                    })),
                ),
            );
        }
        Ok(declared)
    }

    pub fn queue_purge(&self, conn: ConnId, channel: u16, m: &queue::Purge) -> AmqpResult<()> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let vhost = st.vhost_of(conn)?;
        let vh = st.vhosts.get_mut(&vhost).expect("vhost of an open connection");
        let q = vh.queues.get_mut(m.queue.as_str()).ok_or_else(|| no_queue(m.queue.as_str(), &vhost))?;
        check_owner(q, conn, &vhost)?;
        let n = q.purge();
        q.write_acks();
        if !m.nowait {
            send(
                &st.conns,
                conn,
                frames::method_frame(
                    channel,
                    AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk { message_count: n as u32 })),
                ),
            );
        }
        Ok(())
    }

    pub fn queue_delete(&self, conn: ConnId, channel: u16, m: &queue::Delete) -> AmqpResult<()> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let vhost = st.vhost_of(conn)?;
        let name = m.queue.as_str();
        let vh = st.vhosts.get(&vhost).expect("vhost of an open connection");
        let mut count = 0;
        if let Some(q) = vh.queues.get(name) {
            check_owner(q, conn, &vhost)?;
            if m.if_unused && !q.consumers.is_empty() {
                return Err(precondition_failed(format!("queue '{name}' in vhost '{vhost}' in use")));
            }
            if m.if_empty && !q.ready.is_empty() {
                return Err(precondition_failed(format!("queue '{name}' in vhost '{vhost}' is not empty")));
            }
            count = q.message_count() as u32;
            st.delete_queue(&vhost, name);
        }
        if !m.nowait {
            send(
                &st.conns,
                conn,
                frames::method_frame(
                    channel,
                    AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk { message_count: count })),
                ),
            );
        }
        st.flush_dead_letters();
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Basic
    // -----------------------------------------------------------------------------------

    pub fn basic_qos(&self, conn: ConnId, channel: u16, m: &basic::Qos) -> AmqpResult<()> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let ch = st.channel_mut(conn, channel)?;
        if m.global {
            ch.prefetch_channel = m.prefetch_count;
        } else {
            ch.prefetch_consumer = m.prefetch_count;
        }
        send(
            &st.conns,
            conn,
            frames::method_frame(channel, AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {}))),
        );
        // A larger window may let waiting messages through.
        st.dispatch_channel_queues(conn, channel);
        st.flush_dead_letters();
        Ok(())
    }

    pub fn basic_consume(&self, conn: ConnId, channel: u16, m: &basic::Consume) -> AmqpResult<()> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let vhost = st.vhost_of(conn)?;
        let qname = m.queue.as_str().to_string();
        let tag = if m.consumer_tag.as_str().is_empty() {
            self.unique("amq.ctag-")
        } else {
            m.consumer_tag.as_str().to_string()
        };
        {
            let ch = st.channel_mut(conn, channel)?;
            if ch.consumers.contains_key(&tag) {
                return Err(not_allowed(format!("attempt to reuse consumer tag '{tag}'")));
            }
        }
        let vh = st.vhosts.get_mut(&vhost).expect("vhost of an open connection");
        let q = vh.queues.get_mut(&qname).ok_or_else(|| no_queue(&qname, &vhost))?;
        check_owner(q, conn, &vhost)?;
        if (m.exclusive && !q.consumers.is_empty()) || st.exclusive_consumers.contains(&(vhost.clone(), qname.clone()))
        {
            return Err(access_refused(format!("queue '{qname}' in vhost '{vhost}' in exclusive use")));
        }
        q.consumers.push(ConsumerKey { conn, channel, tag: tag.clone() });
        q.had_consumer = true;
        q.last_used_ms = now();
        let ch = st.channel_mut(conn, channel).expect("checked above");
        let prefetch = ch.prefetch_consumer;
        ch.consumers.insert(tag.clone(), Consumer { queue: qname.clone(), no_ack: m.no_ack, prefetch, unacked: 0 });
        if m.exclusive {
            st.exclusive_consumers.insert((vhost.clone(), qname.clone()));
        }
        if !m.nowait {
            send(
                &st.conns,
                conn,
                frames::method_frame(
                    channel,
                    AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk { consumer_tag: tag.into() })),
                ),
            );
        }
        st.dispatch(&vhost, &qname);
        st.flush_dead_letters();
        Ok(())
    }

    pub fn basic_cancel(&self, conn: ConnId, channel: u16, m: &basic::Cancel) -> AmqpResult<()> {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.channel_mut(conn, channel)?;
        st.cancel_consumer(conn, channel, m.consumer_tag.as_str());
        if !m.nowait {
            send(
                &st.conns,
                conn,
                frames::method_frame(
                    channel,
                    AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                        consumer_tag: m.consumer_tag.clone(),
                    })),
                ),
            );
        }
        st.flush_dead_letters();
        Ok(())
    }

    /// A complete message (method, header, body) arrived on `channel`.
    pub fn basic_publish(
        &self,
        conn: ConnId,
        channel: u16,
        m: &basic::Publish,
        properties: AMQPProperties,
        body: Bytes,
    ) -> AmqpResult<()> {
        if m.immediate {
            return Err(not_implemented("immediate=true"));
        }
        let mut guard = self.lock();
        let st = &mut *guard;
        let vhost = st.vhost_of(conn)?;
        let exchange_name = m.exchange.as_str();
        {
            let vh = st.vhosts.get(&vhost).expect("vhost of an open connection");
            let ex = vh.exchanges.get(exchange_name).ok_or_else(|| no_exchange(exchange_name, &vhost))?;
            if ex.internal {
                return Err(access_refused(format!(
                    "cannot publish to internal exchange '{exchange_name}' in vhost '{vhost}'"
                )));
            }
        }
        let msg = Arc::new(Message {
            exchange: exchange_name.to_string(),
            routing_key: m.routing_key.as_str().to_string(),
            properties,
            body,
        });
        msg.expiration_ms().map_err(precondition_failed)?;
        let pending = PendingPublish { exchange: exchange_name.to_string(), mandatory: m.mandatory, msg };
        let ch = st.channel_mut(conn, channel)?;
        if let Some(tx) = &mut ch.tx {
            tx.publishes.push(pending);
            return Ok(());
        }
        st.publish(conn, channel, &vhost, pending);
        st.flush_dead_letters();
        Ok(())
    }

    pub fn basic_get(&self, conn: ConnId, channel: u16, m: &basic::Get) -> AmqpResult<()> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let vhost = st.vhost_of(conn)?;
        st.channel_mut(conn, channel)?;
        let qname = m.queue.as_str();
        let now = now();
        let vh = st.vhosts.get_mut(&vhost).expect("vhost of an open connection");
        let q = vh.queues.get_mut(qname).ok_or_else(|| no_queue(qname, &vhost))?;
        check_owner(q, conn, &vhost)?;
        q.last_used_ms = now;
        let mut expired = Vec::new();
        while q.head_expired(now) {
            expired.extend(q.pop());
        }
        let got = q.pop();
        let remaining = q.message_count() as u32;
        if got.is_some() {
            st.metrics.delivered.inc();
        }
        match &got {
            Some(_) if !m.no_ack => q.unacked += 1,
            Some(qm) => q.settle(qm),
            None => {}
        }
        let dlx = dead_letter_target(q);
        for e in &expired {
            q.settle(e);
        }
        q.write_acks();
        for e in expired {
            st.dead_letters.extend(make_dead_letter(&vhost, qname, &dlx, e, "expired"));
        }
        let entry = st.conns.get_mut(&conn).expect("checked");
        let frame_max = entry.frame_max;
        let ch = entry.channels.get_mut(&channel).expect("checked");
        match got {
            Some(qm) => {
                ch.next_tag += 1;
                let tag = ch.next_tag;
                let frame = frames::content_frames(
                    channel,
                    AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                        delivery_tag: tag,
                        redelivered: qm.redelivered,
                        exchange: qm.msg.exchange.clone().into(),
                        routing_key: qm.msg.routing_key.clone().into(),
                        message_count: remaining,
                    })),
                    &qm.msg.properties,
                    &qm.msg.body,
                    frame_max,
                );
                if !m.no_ack {
                    ch.unacked.insert(tag, Unacked { queue: qname.to_string(), consumer: None, message: qm });
                }
                send(&st.conns, conn, frame);
            }
            None => send(
                &st.conns,
                conn,
                frames::method_frame(channel, AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {}))),
            ),
        }
        st.flush_dead_letters();
        Ok(())
    }

    pub fn basic_ack(&self, conn: ConnId, channel: u16, tag: u64, multiple: bool) -> AmqpResult<()> {
        self.settle(conn, channel, AckOp::Ack { tag, multiple })
    }

    pub fn basic_nack(&self, conn: ConnId, channel: u16, tag: u64, multiple: bool, requeue: bool) -> AmqpResult<()> {
        self.settle(conn, channel, AckOp::Nack { tag, multiple, requeue })
    }

    fn settle(&self, conn: ConnId, channel: u16, op: AckOp) -> AmqpResult<()> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let ch = st.channel_mut(conn, channel)?;
        let (tag, multiple) = match op {
            AckOp::Ack { tag, multiple } | AckOp::Nack { tag, multiple, .. } => (tag, multiple),
        };
        let known = (multiple && tag == 0)
            || ch.unacked.contains_key(&tag)
            || (multiple && ch.unacked.range(..=tag).next().is_some());
        if !known {
            return Err(precondition_failed(format!("unknown delivery tag {tag}")));
        }
        if let Some(tx) = &mut ch.tx {
            tx.acks.push(op);
            return Ok(());
        }
        st.apply_settle(conn, channel, op);
        st.flush_dead_letters();
        Ok(())
    }

    /// basic.recover: every unacknowledged delivery of the channel goes back to its queue.
    pub fn basic_recover(&self, conn: ConnId, channel: u16, reply: bool) -> AmqpResult<()> {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.channel_mut(conn, channel)?;
        st.apply_settle(conn, channel, AckOp::Nack { tag: 0, multiple: true, requeue: true });
        if reply {
            send(
                &st.conns,
                conn,
                frames::method_frame(channel, AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {}))),
            );
        }
        st.flush_dead_letters();
        Ok(())
    }

    pub fn confirm_select(&self, conn: ConnId, channel: u16, nowait: bool) -> AmqpResult<()> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let ch = st.channel_mut(conn, channel)?;
        if ch.tx.is_some() {
            return Err(precondition_failed("cannot switch from tx to confirm mode"));
        }
        ch.confirm = true;
        if !nowait {
            send(
                &st.conns,
                conn,
                frames::method_frame(
                    channel,
                    AMQPClass::Confirm(amq_protocol::protocol::confirm::AMQPMethod::SelectOk(
                        amq_protocol::protocol::confirm::SelectOk {},
                    )),
                ),
            );
        }
        Ok(())
    }

    pub fn tx_select(&self, conn: ConnId, channel: u16) -> AmqpResult<()> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let ch = st.channel_mut(conn, channel)?;
        if ch.confirm {
            return Err(precondition_failed("cannot switch from confirm to tx mode"));
        }
        if ch.tx.is_none() {
            ch.tx = Some(Tx::default());
        }
        send(
            &st.conns,
            conn,
            frames::method_frame(
                channel,
                AMQPClass::Tx(amq_protocol::protocol::tx::AMQPMethod::SelectOk(
                    amq_protocol::protocol::tx::SelectOk {},
                )),
            ),
        );
        Ok(())
    }

    /// tx.commit (`commit`) or tx.rollback: apply or drop what the transaction buffered.
    pub fn tx_end(&self, conn: ConnId, channel: u16, commit: bool) -> AmqpResult<()> {
        use amq_protocol::protocol::tx;
        let mut guard = self.lock();
        let st = &mut *guard;
        let vhost = st.vhost_of(conn)?;
        let ch = st.channel_mut(conn, channel)?;
        let Some(buffered) = ch.tx.as_mut().map(std::mem::take) else {
            return Err(precondition_failed("channel is not transactional"));
        };
        if commit {
            for p in buffered.publishes {
                st.publish(conn, channel, &vhost, p);
            }
            for op in buffered.acks {
                st.apply_settle(conn, channel, op);
            }
        }
        let reply = if commit {
            tx::AMQPMethod::CommitOk(tx::CommitOk {})
        } else {
            tx::AMQPMethod::RollbackOk(tx::RollbackOk {})
        };
        send(&st.conns, conn, frames::method_frame(channel, AMQPClass::Tx(reply)));
        st.flush_dead_letters();
        Ok(())
    }

    /// Periodic work: expire messages at queue heads (dead-lettering them) and delete
    /// queues unused for their `x-expires`.
    pub fn tick(&self) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let now = now();
        // Settles not written yet go to disk, persistent messages published without confirms
        // are fsynced by the next round, as RabbitMQ batches them.
        for q in st.vhosts.values_mut().flat_map(|v| v.queues.values_mut()) {
            q.write_acks();
        }
        if st.commit.has_work() {
            st.flush.request();
        }
        let mut idle = Vec::new();
        let mut with_ttl = Vec::new();
        for (vname, vh) in &st.vhosts {
            for q in vh.queues.values() {
                if q.head_expired(now) {
                    with_ttl.push((vname.clone(), q.name.clone()));
                }
                if let Some(exp) = q.args.expires {
                    if q.consumers.is_empty() && now.saturating_sub(q.last_used_ms) >= exp {
                        idle.push((vname.clone(), q.name.clone()));
                    }
                }
            }
        }
        for (v, q) in with_ttl {
            st.expire_heads(&v, &q, now);
            st.dispatch(&v, &q);
        }
        for (v, q) in idle {
            st.note_durable_queue_deleted(&v, &q);
            st.delete_queue(&v, &q);
        }
        st.flush_dead_letters();
        drop(guard);
        if !self.flusher.load(Ordering::Acquire) {
            self.commit_round();
        }
    }

    // -----------------------------------------------------------------------------------
    // Views for the admin API and tests
    // -----------------------------------------------------------------------------------

    /// Open connections, and every queue's counts, for a `/metrics` scrape.
    pub fn metrics_view(&self) -> (usize, Vec<super::metrics::QueueView>) {
        let st = self.lock();
        let queues = st
            .vhosts
            .iter()
            .flat_map(|(vhost, v)| {
                v.queues.values().map(move |q| super::metrics::QueueView {
                    vhost: vhost.clone(),
                    name: q.name.clone(),
                    ready: q.message_count(),
                    unacked: q.unacked,
                    consumers: q.consumers.len() as u64,
                })
            })
            .collect();
        (st.conns.len(), queues)
    }

    /// (ready, unacked, consumers) of a queue.
    pub fn queue_counts(&self, vhost: &str, name: &str) -> Option<(u64, u64, u64)> {
        let st = self.lock();
        let q = st.vhosts.get(vhost)?.queues.get(name)?;
        Some((q.message_count(), q.unacked, q.consumers.len() as u64))
    }
}

/// The dead-letter exchange and routing key of a queue, if it has one.
fn dead_letter_target(q: &Queue) -> Option<(String, Option<String>)> {
    q.args.dead_letter_exchange.clone().map(|e| (e, q.args.dead_letter_routing_key.clone()))
}

/// The copy of `qm` that goes to the dead-letter exchange, with its `x-death` history.
fn make_dead_letter(
    vhost: &str,
    queue: &str,
    target: &Option<(String, Option<String>)>,
    qm: QueuedMessage,
    reason: &str,
) -> Option<DeadLetter> {
    let (dlx, dlrk) = target.as_ref()?;
    let msg = &qm.msg;
    let mut props = msg.properties.clone();
    let mut hdrs = props.headers().clone().unwrap_or_default();
    let mut deaths: Vec<AMQPValue> =
        hdrs.inner().get("x-death").and_then(|v| v.as_array()).map(|a| a.as_slice().to_vec()).unwrap_or_default();
    let same = |t: &FieldTable| {
        t.inner().get("queue").and_then(headers::value_str).as_deref() == Some(queue)
            && t.inner().get("reason").and_then(headers::value_str).as_deref() == Some(reason)
    };
    let previous = deaths.iter().position(|d| d.as_field_table().is_some_and(same));
    let count = previous
        .map(|i| {
            let d = deaths.remove(i);
            d.as_field_table().and_then(|t| t.inner().get("count").and_then(headers::value_i64)).unwrap_or(0)
        })
        .unwrap_or(0)
        + 1;
    let mut death = FieldTable::default();
    death.insert("count".into(), AMQPValue::LongLongInt(count));
    death.insert("reason".into(), long_str(reason));
    death.insert("queue".into(), long_str(queue));
    death.insert("time".into(), AMQPValue::Timestamp(now() / 1000));
    death.insert("exchange".into(), long_str(&msg.exchange));
    death.insert("routing-keys".into(), AMQPValue::FieldArray(FieldArray::from(vec![long_str(&msg.routing_key)])));
    if let Some(exp) = props.expiration() {
        death.insert("original-expiration".into(), long_str(exp.as_str()));
    }
    deaths.insert(0, AMQPValue::FieldTable(death));
    hdrs.insert("x-death".into(), AMQPValue::FieldArray(FieldArray::from(deaths)));
    for (k, v) in
        [("x-first-death-reason", reason), ("x-first-death-queue", queue), ("x-first-death-exchange", &msg.exchange)]
    {
        if !hdrs.contains_key(k) {
            hdrs.insert(k.into(), long_str(v));
        }
    }
    props = props.with_headers(hdrs);
    // The per-message TTL does not follow the message (RabbitMQ removes it).
    let props = strip_expiration(props);
    Some(DeadLetter {
        vhost: vhost.to_string(),
        exchange: dlx.clone(),
        msg: Arc::new(Message {
            exchange: dlx.clone(),
            routing_key: dlrk.clone().unwrap_or_else(|| msg.routing_key.clone()),
            properties: props,
            body: msg.body.clone(),
        }),
    })
}

fn strip_expiration(p: AMQPProperties) -> AMQPProperties {
    let mut out = AMQPProperties::default();
    macro_rules! copy {
        ($get:ident, $set:ident) => {
            if let Some(v) = p.$get().clone() {
                out = out.$set(v);
            }
        };
    }
    copy!(content_type, with_content_type);
    copy!(content_encoding, with_content_encoding);
    copy!(headers, with_headers);
    copy!(delivery_mode, with_delivery_mode);
    copy!(priority, with_priority);
    copy!(correlation_id, with_correlation_id);
    copy!(reply_to, with_reply_to);
    copy!(message_id, with_message_id);
    copy!(timestamp, with_timestamp);
    copy!(kind, with_type);
    copy!(user_id, with_user_id);
    copy!(app_id, with_app_id);
    copy!(cluster_id, with_cluster_id);
    out
}

impl CoreState {
    fn vhost_of(&self, conn: ConnId) -> AmqpResult<String> {
        self.conns
            .get(&conn)
            .map(|c| c.vhost.clone())
            .ok_or_else(|| AmqpException::connection(super::errors::code::CONNECTION_FORCED, "connection closed", None))
    }

    fn channel_mut(&mut self, conn: ConnId, channel: u16) -> AmqpResult<&mut Channel> {
        self.conns.get_mut(&conn).and_then(|c| c.channels.get_mut(&channel)).ok_or_else(|| {
            AmqpException::connection(
                super::errors::code::CHANNEL_ERROR,
                format!("channel {channel} is not open"),
                None,
            )
        })
    }

    fn close_channel(&mut self, conn: ConnId, channel: u16) {
        let Some(entry) = self.conns.get_mut(&conn) else { return };
        let vhost = entry.vhost.clone();
        let Some(mut ch) = entry.channels.remove(&channel) else { return };
        send_unsent_ack(&entry.out, channel, &mut ch);
        self.commit.forget_channel(conn, channel);
        let mut touched = BTreeSet::new();
        for (_, u) in std::mem::take(&mut ch.unacked) {
            if let Some(q) = self.vhosts.get_mut(&vhost).and_then(|v| v.queues.get_mut(&u.queue)) {
                q.unacked = q.unacked.saturating_sub(1);
                q.requeue(u.message);
                touched.insert(u.queue);
            }
        }
        for (tag, c) in ch.consumers {
            self.remove_consumer_from_queue(&vhost, &c.queue, conn, channel, &tag);
            touched.insert(c.queue);
        }
        for q in touched {
            self.dispatch(&vhost, &q);
        }
    }

    fn cancel_consumer(&mut self, conn: ConnId, channel: u16, tag: &str) {
        let Some(entry) = self.conns.get_mut(&conn) else { return };
        let vhost = entry.vhost.clone();
        let Some(c) = entry.channels.get_mut(&channel).and_then(|ch| ch.consumers.remove(tag)) else { return };
        // Its unacknowledged deliveries stay with the channel until acked or the channel closes.
        self.remove_consumer_from_queue(&vhost, &c.queue, conn, channel, tag);
        self.dispatch(&vhost, &c.queue);
    }

    fn remove_consumer_from_queue(&mut self, vhost: &str, queue: &str, conn: ConnId, channel: u16, tag: &str) {
        let Some(q) = self.vhosts.get_mut(vhost).and_then(|v| v.queues.get_mut(queue)) else { return };
        q.consumers.retain(|k| !(k.conn == conn && k.channel == channel && k.tag == tag));
        q.last_used_ms = now();
        self.exclusive_consumers.remove(&(vhost.to_string(), queue.to_string()));
        if q.auto_delete && q.had_consumer && q.consumers.is_empty() {
            self.note_durable_queue_deleted(vhost, queue);
            self.delete_queue(vhost, queue);
        }
    }

    /// Remove a queue, its bindings, and tell its consumers (basic.cancel from the server).
    fn delete_queue(&mut self, vhost: &str, name: &str) {
        let Some(vh) = self.vhosts.get_mut(vhost) else { return };
        let Some(mut q) = vh.queues.remove(name) else { return };
        if let Some(store) = q.store.take() {
            store.destroy();
        }
        let dest = Destination::Queue(name.to_string());
        let mut emptied = Vec::new();
        for e in vh.exchanges.values_mut() {
            if e.unbind_destination(&dest) > 0 && e.auto_delete && e.bindings().is_empty() {
                emptied.push(e.name.clone());
            }
        }
        for c in q.consumers {
            if let Some(entry) = self.conns.get_mut(&c.conn) {
                if let Some(ch) = entry.channels.get_mut(&c.channel) {
                    ch.consumers.remove(&c.tag);
                }
                entry.out.send(&frames::method_frame(
                    c.channel,
                    AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                        consumer_tag: c.tag.into(),
                        nowait: true,
                    })),
                ));
            }
        }
        for e in emptied {
            self.delete_exchange(vhost, &e);
        }
    }

    fn delete_exchange(&mut self, vhost: &str, name: &str) {
        let Some(vh) = self.vhosts.get_mut(vhost) else { return };
        if vh.exchanges.remove(name).is_none() {
            return;
        }
        let dest = Destination::Exchange(name.to_string());
        let mut emptied = Vec::new();
        for e in vh.exchanges.values_mut() {
            if e.unbind_destination(&dest) > 0 && e.auto_delete && e.bindings().is_empty() {
                emptied.push(e.name.clone());
            }
        }
        for e in emptied {
            self.delete_exchange(vhost, &e);
        }
    }

    /// The queues a message reaches from `exchange`, following exchange-to-exchange
    /// bindings and alternate exchanges, each queue once.
    fn route(&self, vhost: &str, exchange: &str, msg: &Message) -> Vec<String> {
        let Some(vh) = self.vhosts.get(vhost) else { return Vec::new() };
        // The default exchange (the common case) binds every queue under its own name and
        // has no alternate exchange.
        if exchange.is_empty() {
            return match vh.queues.contains_key(&msg.routing_key) {
                true => vec![msg.routing_key.clone()],
                false => Vec::new(),
            };
        }
        let mut queues = BTreeSet::new();
        let mut visited = HashSet::new();
        route_from(vh, exchange, msg, &mut visited, &mut queues);
        queues.into_iter().collect()
    }

    /// Route and enqueue one published message; answer the publisher (basic.return for an
    /// unroutable mandatory message, then the confirm) and dispatch.
    fn publish(&mut self, conn: ConnId, channel: u16, vhost: &str, p: PendingPublish) {
        // Counted here, where a transaction's publishes land only at its commit.
        self.metrics.published.inc();
        let now = now();
        let queues = self.route(vhost, &p.exchange, &p.msg);
        let ttl = p.msg.expiration_ms().ok().flatten();
        let mut rejected = false;
        // A publisher waiting for a commit gets it once the message is on disk; a confirm
        // waits for the next group-commit round (`commit`); others' persistent messages are
        // fsynced by a round the tick asks for, as RabbitMQ batches them.
        let sync = self.conns.get(&conn).and_then(|c| c.channels.get(&channel)).is_some_and(|ch| ch.tx.is_some());
        let mut written = false;
        for qname in &queues {
            let vh = self.vhosts.get_mut(vhost).expect("routed in this vhost");
            let q = vh.queues.get_mut(qname).expect("routed to an existing queue");
            if q.args.overflow == Overflow::RejectPublish && q.would_overflow(p.msg.size()) {
                rejected = true;
                continue;
            }
            if !q.push(p.msg.clone(), ttl, now, sync) {
                rejected = true;
            } else if !sync && p.msg.persistent() {
                if let Some(file) = q.written_file() {
                    self.commit.written(file);
                    written = true;
                }
            }
            let target = dead_letter_target(q);
            let mut dropped = Vec::new();
            while q.over_limits() {
                dropped.extend(q.pop());
            }
            for d in &dropped {
                q.settle(d);
            }
            for d in dropped {
                self.dead_letters.extend(make_dead_letter(vhost, qname, &target, d, "maxlen"));
            }
        }
        let frame_max = self.conns.get(&conn).map_or(131_072, |c| c.frame_max);
        if queues.is_empty() && p.mandatory {
            if let Some(entry) = self.conns.get_mut(&conn) {
                if let Some(ch) = entry.channels.get_mut(&channel) {
                    send_unsent_ack(&entry.out, channel, ch);
                }
            }
            send(
                &self.conns,
                conn,
                frames::content_frames(
                    channel,
                    AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                        reply_code: super::errors::code::NO_ROUTE,
                        reply_text: "NO_ROUTE".into(),
                        exchange: p.msg.exchange.clone().into(),
                        routing_key: p.msg.routing_key.clone().into(),
                    })),
                    &p.msg.properties,
                    &p.msg.body,
                    frame_max,
                ),
            );
        }
        if let Some(entry) = self.conns.get_mut(&conn) {
            let ConnEntry { out, channels, .. } = entry;
            if let Some(ch) = channels.get_mut(&channel).filter(|ch| ch.confirm) {
                ch.next_publish_seq += 1;
                let seq = ch.next_publish_seq;
                // Confirms of a channel leave in order: behind a pending one, a confirm waits
                // too, and a nack or a pending confirm first sends the acks owed before it.
                match self.commit.confirm(conn, channel, seq, !rejected, written) {
                    Some(c) if c.ack => ch.unsent_ack = seq,
                    Some(c) => {
                        send_unsent_ack(out, channel, ch);
                        send_confirm(&self.conns, c);
                    }
                    None => {
                        send_unsent_ack(out, channel, ch);
                        self.flush.request();
                    }
                }
            }
        }
        for q in &queues {
            self.dispatch(vhost, q);
        }
    }

    /// Route the dead letters produced so far (which may produce more: bounded).
    fn flush_dead_letters(&mut self) {
        for _ in 0..16 {
            if self.dead_letters.is_empty() {
                return;
            }
            let now = now();
            for d in std::mem::take(&mut self.dead_letters) {
                let queues = self.route(&d.vhost, &d.exchange, &d.msg);
                for qname in &queues {
                    // A message that already died in this queue for a reason other than a
                    // rejection would cycle forever: drop it there, as RabbitMQ does.
                    if cycles(&d.msg, qname) {
                        continue;
                    }
                    if let Some(q) = self.vhosts.get_mut(&d.vhost).and_then(|v| v.queues.get_mut(qname)) {
                        if q.args.overflow == Overflow::RejectPublish && q.would_overflow(d.msg.size()) {
                            continue;
                        }
                        if q.push(d.msg.clone(), None, now, false) && d.msg.persistent() {
                            if let Some(file) = q.written_file() {
                                self.commit.written(file);
                            }
                        }
                    }
                    self.dispatch(&d.vhost, qname);
                }
            }
        }
        self.dead_letters.clear();
    }

    fn expire_heads(&mut self, vhost: &str, qname: &str, now: u64) {
        let Some(q) = self.vhosts.get_mut(vhost).and_then(|v| v.queues.get_mut(qname)) else { return };
        let target = dead_letter_target(q);
        let mut expired = Vec::new();
        while q.head_expired(now) {
            expired.extend(q.pop());
        }
        for e in &expired {
            q.settle(e);
        }
        for e in expired {
            self.dead_letters.extend(make_dead_letter(vhost, qname, &target, e, "expired"));
        }
    }

    fn dispatch_channel_queues(&mut self, conn: ConnId, channel: u16) {
        let Some(entry) = self.conns.get(&conn) else { return };
        let vhost = entry.vhost.clone();
        let queues: BTreeSet<String> = entry
            .channels
            .get(&channel)
            .map(|ch| ch.consumers.values().map(|c| c.queue.clone()).collect())
            .unwrap_or_default();
        for q in queues {
            self.dispatch(&vhost, &q);
        }
    }

    /// Deliver ready messages of a queue to consumers with room in their prefetch window,
    /// round-robin (or to the single active consumer).
    fn dispatch(&mut self, vhost: &str, qname: &str) {
        let now = now();
        self.expire_heads(vhost, qname, now);
        let CoreState { vhosts, conns, metrics, .. } = self;
        let Some(q) = vhosts.get_mut(vhost).and_then(|v| v.queues.get_mut(qname)) else { return };
        while !q.ready.is_empty() && !q.consumers.is_empty() {
            let n = q.consumers.len();
            let tries = if q.args.single_active_consumer { 1 } else { n };
            let start = if q.args.single_active_consumer { 0 } else { q.next_consumer };
            let chosen = (0..tries).map(|i| (start + i) % n).find(|&i| {
                let k = &q.consumers[i];
                conns.get(&k.conn).and_then(|c| c.channels.get(&k.channel)).is_some_and(|ch| {
                    ch.consumers.get(&k.tag).is_some_and(|c| {
                        c.no_ack
                            || ((c.prefetch == 0 || c.unacked < c.prefetch as u32)
                                && (ch.prefetch_channel == 0 || ch.unacked.len() < ch.prefetch_channel as usize))
                    })
                })
            });
            let Some(i) = chosen else { break };
            if q.head_expired(now) {
                // Expired while waiting: leave it for expire_heads on the next pass.
                break;
            }
            let qm = q.pop().expect("not empty");
            q.next_consumer = (i + 1) % n;
            let key = q.consumers[i].clone();
            let entry = conns.get_mut(&key.conn).expect("checked");
            let frame_max = entry.frame_max;
            let ch = entry.channels.get_mut(&key.channel).expect("checked");
            let consumer = ch.consumers.get_mut(&key.tag).expect("checked");
            ch.next_tag += 1;
            let tag = ch.next_tag;
            let deliver = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: key.tag.clone().into(),
                delivery_tag: tag,
                redelivered: qm.redelivered,
                exchange: qm.msg.exchange.clone().into(),
                routing_key: qm.msg.routing_key.clone().into(),
            }));
            entry.out.with(|out| {
                frames::content_into(out, key.channel, &deliver, &qm.msg.properties, &qm.msg.body, frame_max)
            });
            metrics.delivered.inc();
            if !consumer.no_ack {
                consumer.unacked += 1;
                q.unacked += 1;
                ch.unacked
                    .insert(tag, Unacked { queue: qname.to_string(), consumer: Some(key.tag.clone()), message: qm });
            } else {
                q.settle(&qm);
            }
        }
        // Settles of this queue so far (acks, no-ack deliveries, expiry) go to disk together.
        q.write_acks();
    }

    fn apply_settle(&mut self, conn: ConnId, channel: u16, op: AckOp) {
        let Some(entry) = self.conns.get_mut(&conn) else { return };
        let vhost = entry.vhost.clone();
        let Some(ch) = entry.channels.get_mut(&channel) else { return };
        let (tag, multiple, requeue) = match op {
            AckOp::Ack { tag, multiple } => (tag, multiple, None),
            AckOp::Nack { tag, multiple, requeue } => (tag, multiple, Some(requeue)),
        };
        let settled: Vec<Unacked> = if multiple {
            let tags: Vec<u64> = if tag == 0 {
                ch.unacked.keys().copied().collect()
            } else {
                ch.unacked.range(..=tag).map(|(t, _)| *t).collect()
            };
            tags.into_iter().filter_map(|t| ch.unacked.remove(&t)).collect()
        } else {
            ch.unacked.remove(&tag).into_iter().collect()
        };
        let mut touched = BTreeSet::new();
        for u in &settled {
            if let Some(c) = u.consumer.as_ref().and_then(|t| ch.consumers.get_mut(t)) {
                c.unacked = c.unacked.saturating_sub(1);
            }
        }
        // A global prefetch window frees room for every queue consumed on the channel.
        touched.extend(ch.consumers.values().map(|c| c.queue.clone()));
        // Requeued messages go back in their original order.
        for u in settled.into_iter().rev() {
            let Some(q) = self.vhosts.get_mut(&vhost).and_then(|v| v.queues.get_mut(&u.queue)) else { continue };
            q.unacked = q.unacked.saturating_sub(1);
            match requeue {
                None => q.settle(&u.message),
                Some(true) => q.requeue(u.message),
                Some(false) => {
                    q.settle(&u.message);
                    let target = dead_letter_target(q);
                    self.dead_letters.extend(make_dead_letter(&vhost, &u.queue, &target, u.message, "rejected"));
                }
            }
            touched.insert(u.queue);
        }
        for q in touched {
            self.dispatch(&vhost, &q);
        }
    }
}

fn cycles(msg: &Message, queue: &str) -> bool {
    let Some(deaths) =
        msg.properties.headers().as_ref().and_then(|h| h.inner().get("x-death").and_then(|v| v.as_array()).cloned())
    else {
        return false;
    };
    let mut in_queue = false;
    for d in deaths.as_slice() {
        let Some(t) = d.as_field_table() else { continue };
        if t.inner().get("reason").and_then(headers::value_str).as_deref() == Some("rejected") {
            return false;
        }
        in_queue |= t.inner().get("queue").and_then(headers::value_str).as_deref() == Some(queue);
    }
    in_queue
}

fn route_from(vh: &Vhost, exchange: &str, msg: &Message, visited: &mut HashSet<String>, out: &mut BTreeSet<String>) {
    if !visited.insert(exchange.to_string()) {
        return;
    }
    let Some(ex) = vh.exchanges.get(exchange) else { return };
    let before = out.len();
    if exchange.is_empty() {
        // The default exchange binds every queue under its own name.
        if vh.queues.contains_key(&msg.routing_key) {
            out.insert(msg.routing_key.clone());
        }
    } else {
        let mut dests = Vec::new();
        ex.route(&msg.routing_key, msg.properties.headers().as_ref(), &mut dests);
        dests.sort();
        dests.dedup();
        for d in dests {
            match d {
                Destination::Queue(q) => {
                    if vh.queues.contains_key(&q) {
                        out.insert(q);
                    }
                }
                Destination::Exchange(e) => route_from(vh, &e, msg, visited, out),
            }
        }
    }
    if out.len() == before {
        if let Some(ae) = ex.alternate_exchange() {
            route_from(vh, &ae, msg, visited, out);
        }
    }
}
