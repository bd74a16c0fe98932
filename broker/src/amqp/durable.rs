//! The durable side of the AMQP core: keeping the in-memory vhosts in line with the durable
//! entities of the metadata image (at start-up and after every image change), telling the
//! quorum about deletions the core decides itself (auto-delete queues, `x-expires`), and the
//! views and local operations the admin API uses.

use super::*;
use crate::amqp::json_args::{normalize, table_from_json, table_to_json};
use crate::cluster::amqp_image::{
    AmqpBindingRecord, AmqpCommand, AmqpExchangeRecord, AmqpImage, AmqpQueueRecord, AmqpVhostRecord,
};
use crate::queue::store::MessageStore;

/// An exchange as the admin API shows it.
#[derive(Debug, Clone)]
pub struct ExchangeInfo {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    pub bindings_as_source: usize,
}

/// A queue with its numbers.
#[derive(Debug, Clone)]
pub struct QueueInfo {
    pub name: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub exclusive: bool,
    pub arguments: FieldTable,
    pub ready: u64,
    pub unacked: u64,
    pub consumers: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BindingInfo {
    pub source: String,
    pub destination: Destination,
    pub routing_key: String,
    pub arguments: FieldTable,
}

pub fn exchange_record(
    name: &str,
    kind: ExchangeKind,
    auto_delete: bool,
    internal: bool,
    args: &FieldTable,
) -> AmqpExchangeRecord {
    AmqpExchangeRecord {
        name: name.to_string(),
        kind: kind.as_str().to_string(),
        auto_delete,
        internal,
        arguments: table_to_json(args),
    }
}

fn binding_from_record(r: &AmqpBindingRecord) -> BindingInfo {
    let destination = if r.destination_type == "exchange" {
        Destination::Exchange(r.destination.clone())
    } else {
        Destination::Queue(r.destination.clone())
    };
    BindingInfo {
        source: r.source.clone(),
        destination,
        routing_key: r.routing_key.clone(),
        arguments: table_from_json(&r.arguments),
    }
}

/// `<data-dir>/<vhost in hex>/<queue>`: vhost names may hold any character.
fn queue_dir(data_dir: &std::path::Path, vhost: &str, queue: &str) -> std::path::PathBuf {
    let hex: String = vhost.bytes().map(|b| format!("{b:02x}")).collect();
    data_dir.join(hex).join(queue)
}

fn is_standard(name: &str) -> bool {
    STANDARD_EXCHANGES.iter().any(|(n, _)| *n == name)
}

impl Vhost {
    fn exchange_durable(&self, name: &str) -> bool {
        is_standard(name) || self.exchanges.get(name).is_some_and(|e| e.durable)
    }
    fn queue_durable(&self, name: &str) -> bool {
        self.queues.get(name).is_some_and(|q| q.durable && q.exclusive_owner.is_none())
    }
    fn destination_durable(&self, d: &Destination) -> bool {
        match d {
            Destination::Queue(q) => self.queue_durable(q),
            Destination::Exchange(e) => self.exchange_durable(e),
        }
    }
}

impl CoreState {
    /// Tell the quorum that the core deleted a durable queue by itself.
    pub(super) fn note_durable_queue_deleted(&self, vhost: &str, name: &str) {
        let durable = self.vhosts.get(vhost).is_some_and(|v| v.queue_durable(name));
        if let (true, Some(sink)) = (durable, &self.durable_sink) {
            let _ = sink.send(AmqpCommand::DeleteQueue { vhost: vhost.to_string(), name: name.to_string() });
        }
    }

    fn sync_vhost(&mut self, vname: &str, rec: &AmqpVhostRecord) {
        let now = now();
        let vh = self.vhosts.entry(vname.to_string()).or_insert_with(|| Vhost::new(vname));
        // Exchanges.
        for r in rec.exchanges.values() {
            let Some(kind) = ExchangeKind::parse(&r.kind) else { continue };
            let args = table_from_json(&r.arguments);
            match vh.exchanges.get_mut(&r.name) {
                Some(e) if e.kind == kind => {
                    e.durable = true;
                    e.auto_delete = r.auto_delete;
                    e.internal = r.internal;
                    e.arguments = args;
                }
                _ => {
                    vh.exchanges
                        .insert(r.name.clone(), Exchange::new(&r.name, kind, true, r.auto_delete, r.internal, args));
                }
            }
        }
        let gone: Vec<String> = vh
            .exchanges
            .values()
            .filter(|e| e.durable && !is_standard(&e.name) && !rec.exchanges.contains_key(&e.name))
            .map(|e| e.name.clone())
            .collect();
        // Queues.
        for r in rec.queues.values() {
            if vh.queues.contains_key(&r.name) {
                continue;
            }
            let arguments = table_from_json(&r.arguments);
            match QueueArgs::parse(&arguments, &r.name, vname) {
                Ok(args) => {
                    let mut q = Queue::new(r.name.clone(), true, r.auto_delete, None, arguments, args, now);
                    if let Some(dir) = &self.data_dir {
                        let dir = queue_dir(dir, vname, &r.name);
                        match MessageStore::open(&dir) {
                            Ok((store, recovered)) => q.attach_store(store, recovered),
                            Err(e) => tracing::error!(queue = %r.name, vhost = vname, error = %e,
                                "opening the message store failed; the queue keeps messages in memory only"),
                        }
                    }
                    vh.queues.insert(r.name.clone(), q);
                }
                Err(e) => {
                    tracing::warn!(queue = %r.name, vhost = vname, error = %e, "durable queue with bad arguments skipped")
                }
            }
        }
        let gone_queues: Vec<String> = vh
            .queues
            .values()
            .filter(|q| q.durable && q.exclusive_owner.is_none() && !rec.queues.contains_key(&q.name))
            .map(|q| q.name.clone())
            .collect();
        for e in gone {
            self.delete_exchange(vname, &e);
        }
        for q in gone_queues {
            self.delete_queue(vname, &q);
        }
        // Bindings between durable entities: exactly the image's.
        let desired: Vec<BindingInfo> = rec.bindings.iter().map(binding_from_record).collect();
        let vh = self.vhosts.get_mut(vname).expect("inserted above");
        let mut stale = Vec::new();
        for e in vh.exchanges.values() {
            if !vh.exchange_durable(&e.name) {
                continue;
            }
            for b in e.bindings() {
                if !vh.destination_durable(&b.destination) {
                    continue;
                }
                let info = BindingInfo {
                    source: e.name.clone(),
                    destination: b.destination.clone(),
                    routing_key: b.routing_key.clone(),
                    arguments: b.arguments.clone(),
                };
                if !desired.contains(&info) {
                    stale.push(info);
                }
            }
        }
        for s in stale {
            if let Some(e) = vh.exchanges.get_mut(&s.source) {
                e.unbind(&Binding { destination: s.destination, routing_key: s.routing_key, arguments: s.arguments });
            }
        }
        for d in desired {
            let dest_exists = match &d.destination {
                Destination::Queue(q) => vh.queues.contains_key(q),
                Destination::Exchange(x) => vh.exchanges.contains_key(x),
            };
            if let (true, Some(e)) = (dest_exists, vh.exchanges.get_mut(&d.source)) {
                e.bind(Binding { destination: d.destination, routing_key: d.routing_key, arguments: d.arguments });
            }
        }
    }
}

impl AmqpCore {
    /// Where the core sends the deletions it decides itself (auto-delete, `x-expires`).
    pub fn set_durable_sink(&self, sink: UnboundedSender<AmqpCommand>) {
        self.lock().durable_sink = Some(sink);
    }

    /// Bring the in-memory vhosts in line with the durable entities of the image: create
    /// what is missing, remove durable entities the image no longer has, set the bindings
    /// between durable entities to exactly the image's. Non-durable entities are untouched.
    pub fn sync_durable(&self, img: &AmqpImage) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let names = img.vhost_names();
        let removed: Vec<String> = st.vhosts.keys().filter(|v| !names.contains(v)).cloned().collect();
        for v in removed {
            if let Some(mut vh) = st.vhosts.remove(&v) {
                for q in vh.queues.values_mut() {
                    if let Some(store) = q.store.take() {
                        store.destroy();
                    }
                }
            }
            // Connections on a deleted vhost are closed (RabbitMQ: 320 CONNECTION_FORCED).
            let doomed: Vec<ConnId> = st.conns.iter().filter(|(_, c)| c.vhost == v).map(|(id, _)| *id).collect();
            for id in doomed {
                if let Some(c) = st.conns.remove(&id) {
                    let e = AmqpException::connection(
                        crate::amqp::errors::code::CONNECTION_FORCED,
                        format!("vhost '{v}' is deleted"),
                        None,
                    );
                    c.out.send(&frames::method_frame(
                        0,
                        AMQPClass::Connection(amq_protocol::protocol::connection::AMQPMethod::Close(
                            amq_protocol::protocol::connection::Close {
                                reply_code: e.code,
                                reply_text: e.reply_text().into(),
                                class_id: 0,
                                method_id: 0,
                            },
                        )),
                    ));
                }
            }
        }
        for v in &names {
            if let Some(rec) = img.vhost(v) {
                st.sync_vhost(v, rec);
            }
        }
        let touched: Vec<(String, String)> =
            st.vhosts.iter().flat_map(|(v, vh)| vh.queues.keys().map(move |q| (v.clone(), q.clone()))).collect();
        for (v, q) in touched {
            st.dispatch(&v, &q);
        }
    }

    // ---- what the connection handler asks before going to the quorum ----

    /// The record to propose when `m` would create a durable exchange (after the same checks
    /// the declaration makes); None when nothing durable is to be created.
    pub fn durable_exchange_to_create(
        &self,
        conn: ConnId,
        m: &exchange::Declare,
    ) -> AmqpResult<Option<AmqpExchangeRecord>> {
        let st = self.lock();
        let vhost = st.vhost_of(conn)?;
        let name = m.exchange.as_str();
        if m.passive || !m.durable || name.is_empty() {
            return Ok(None);
        }
        if st.vhosts.get(&vhost).is_some_and(|v| v.exchanges.contains_key(name)) {
            return Ok(None);
        }
        if name.starts_with("amq.") {
            return Err(access_refused(format!("exchange name '{name}' contains reserved prefix 'amq.*'")));
        }
        check_name("exchange", name)?;
        let kind = ExchangeKind::parse(m.kind.as_str()).ok_or_else(|| {
            AmqpException::connection(
                crate::amqp::errors::code::COMMAND_INVALID,
                format!("unknown exchange type '{}'", m.kind.as_str()),
                None,
            )
        })?;
        Ok(Some(exchange_record(name, kind, m.auto_delete, m.internal, &m.arguments)))
    }

    /// The name and record to propose when `m` would create a durable queue.
    pub fn durable_queue_to_create(&self, conn: ConnId, m: &queue::Declare) -> AmqpResult<Option<AmqpQueueRecord>> {
        let st = self.lock();
        let vhost = st.vhost_of(conn)?;
        if m.passive || !m.durable || m.exclusive {
            return Ok(None);
        }
        let mut name = m.queue.as_str().to_string();
        if st.vhosts.get(&vhost).is_some_and(|v| v.queues.contains_key(&name)) {
            return Ok(None);
        }
        if name.is_empty() {
            name = self.unique("amq.gen-");
        } else if name.starts_with("amq.") {
            return Err(access_refused(format!("queue name '{name}' contains reserved prefix 'amq.*'")));
        }
        check_name("queue", &name)?;
        QueueArgs::parse(&m.arguments, &name, &vhost).map_err(precondition_failed)?;
        Ok(Some(AmqpQueueRecord { name, auto_delete: m.auto_delete, arguments: table_to_json(&m.arguments), node: 0 }))
    }

    pub fn vhost_of_conn(&self, conn: ConnId) -> Option<String> {
        self.lock().conns.get(&conn).map(|c| c.vhost.clone())
    }

    pub fn exchange_is_durable(&self, conn: ConnId, name: &str) -> bool {
        let st = self.lock();
        let Some(c) = st.conns.get(&conn) else { return false };
        !is_standard(name) && st.vhosts.get(&c.vhost).is_some_and(|v| v.exchanges.get(name).is_some_and(|e| e.durable))
    }

    pub fn queue_is_durable(&self, conn: ConnId, name: &str) -> bool {
        let st = self.lock();
        let Some(c) = st.conns.get(&conn) else { return false };
        st.vhosts.get(&c.vhost).is_some_and(|v| v.queue_durable(name))
    }

    /// Whether a binding from `source` to `destination` is between durable entities (and so
    /// belongs in the quorum).
    pub fn binding_is_durable(&self, vhost: &str, source: &str, destination: &Destination) -> bool {
        let st = self.lock();
        st.vhosts.get(vhost).is_some_and(|v| {
            !source.is_empty()
                && v.exchanges.contains_key(source)
                && v.exchange_durable(source)
                && v.destination_durable(destination)
        })
    }

    // ---- views for the admin API ----

    pub fn exchanges(&self, vhost: &str) -> Option<Vec<ExchangeInfo>> {
        let st = self.lock();
        let v = st.vhosts.get(vhost)?;
        Some(
            v.exchanges
                .values()
                .map(|e| ExchangeInfo {
                    name: e.name.clone(),
                    kind: e.kind,
                    durable: e.durable,
                    auto_delete: e.auto_delete,
                    internal: e.internal,
                    arguments: e.arguments.clone(),
                    bindings_as_source: e.bindings().len(),
                })
                .collect(),
        )
    }

    pub fn queues(&self, vhost: &str) -> Option<Vec<QueueInfo>> {
        let st = self.lock();
        let v = st.vhosts.get(vhost)?;
        Some(
            v.queues
                .values()
                .map(|q| QueueInfo {
                    name: q.name.clone(),
                    durable: q.durable,
                    auto_delete: q.auto_delete,
                    exclusive: q.exclusive_owner.is_some(),
                    arguments: q.arguments.clone(),
                    ready: q.message_count(),
                    unacked: q.unacked,
                    consumers: q.consumers.len() as u64,
                })
                .collect(),
        )
    }

    /// Every binding of the vhost, including the default exchange's implicit ones.
    pub fn bindings(&self, vhost: &str) -> Option<Vec<BindingInfo>> {
        let st = self.lock();
        let v = st.vhosts.get(vhost)?;
        let mut out: Vec<BindingInfo> = v
            .queues
            .keys()
            .map(|q| BindingInfo {
                source: String::new(),
                destination: Destination::Queue(q.clone()),
                routing_key: q.clone(),
                arguments: FieldTable::default(),
            })
            .collect();
        for e in v.exchanges.values() {
            for b in e.bindings() {
                out.push(BindingInfo {
                    source: e.name.clone(),
                    destination: b.destination.clone(),
                    routing_key: b.routing_key.clone(),
                    arguments: b.arguments.clone(),
                });
            }
        }
        Some(out)
    }

    // ---- non-durable changes made through the admin API ----

    pub fn declare_exchange_local(&self, vhost: &str, info: &ExchangeInfo) -> bool {
        let mut st = self.lock();
        let Some(v) = st.vhosts.get_mut(vhost) else { return false };
        if v.exchanges.contains_key(&info.name) {
            return false;
        }
        v.exchanges.insert(
            info.name.clone(),
            Exchange::new(&info.name, info.kind, false, info.auto_delete, info.internal, info.arguments.clone()),
        );
        true
    }

    pub fn delete_exchange_local(&self, vhost: &str, name: &str) {
        self.lock().delete_exchange(vhost, name);
    }

    pub fn declare_queue_local(
        &self,
        vhost: &str,
        name: &str,
        auto_delete: bool,
        arguments: &FieldTable,
    ) -> Result<bool, String> {
        let mut st = self.lock();
        let Some(v) = st.vhosts.get_mut(vhost) else { return Ok(false) };
        if v.queues.contains_key(name) {
            return Ok(false);
        }
        let args = QueueArgs::parse(arguments, name, vhost)?;
        v.queues.insert(
            name.to_string(),
            Queue::new(name.to_string(), false, auto_delete, None, arguments.clone(), args, now()),
        );
        Ok(true)
    }

    pub fn delete_queue_local(&self, vhost: &str, name: &str) {
        let mut guard = self.lock();
        guard.delete_queue(vhost, name);
        guard.flush_dead_letters();
    }

    /// Add (or remove) a binding in memory; false when nothing changed.
    pub fn bind_local(&self, vhost: &str, b: &BindingInfo, bind: bool) -> bool {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(v) = st.vhosts.get_mut(vhost) else { return false };
        let Some(e) = v.exchanges.get_mut(&b.source) else { return false };
        let binding = Binding {
            destination: b.destination.clone(),
            routing_key: b.routing_key.clone(),
            arguments: normalize(&b.arguments),
        };
        if bind {
            e.bind(binding)
        } else {
            let changed = e.unbind(&binding);
            if changed && e.auto_delete && e.bindings().is_empty() {
                let name = e.name.clone();
                st.delete_exchange(vhost, &name);
            }
            changed
        }
    }
}
