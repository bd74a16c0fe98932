//! One AMQP connection: the protocol header, the handshake (start, tune, open), heartbeats
//! both ways, channel open/close, content assembly (method + header + body frames), and
//! the mapping of channel and connection exceptions to channel.close / connection.close.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::{access, basic, channel, confirm, connection, exchange, queue, tx, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::auth;
use super::broker::{AmqpCore, ConnId};
use super::errors::{self, code, not_implemented, AmqpException, AmqpResult};
use super::frames::{self, parse_frame, FrameError, InFrame, PROTOCOL_HEADER};
use super::json_args::table_to_json;
use super::outbox::{self, Outbox};
use crate::cluster::amqp_image::{AmqpBindingRecord, AmqpCommand};
use crate::cluster::{MetadataCommand, MetadataError, ProposeError};
use crate::routing::Destination;

/// How long a client has for each handshake step.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long we wait for close-ok after sending connection.close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Frame size accepted before tune-ok (the spec's minimum is 4096).
const PRE_TUNE_FRAME_MAX: u32 = 131_072;

/// A message being received on a channel: its publish method, then header, then body.
struct Content {
    publish: basic::Publish,
    header: Option<AMQPContentHeader>,
    body: Vec<Bytes>,
    received: u64,
}

// One per open channel, so the size of the content in progress costs nothing worth an
// allocation per message to save.
#[allow(clippy::large_enum_variant)]
enum ChannelLocal {
    Open {
        content: Option<Content>,
    },
    /// We sent channel.close; everything but close / close-ok is dropped until close-ok.
    Closing,
}

struct Conn {
    core: Arc<AmqpCore>,
    id: ConnId,
    out: Arc<Outbox>,
    channels: HashMap<u16, ChannelLocal>,
    channel_max: u16,
    /// A message was published since the last read (its confirm may be owed).
    published: bool,
}

/// A refusal of the metadata quorum as the AMQP exception RabbitMQ would raise.
fn propose_error(e: ProposeError) -> AmqpException {
    match e {
        ProposeError::Metadata(m) => {
            let text = m.to_string();
            match m {
                MetadataError::UnknownExchange(_)
                | MetadataError::UnknownQueue(_)
                | MetadataError::UnknownBinding(_) => super::errors::not_found(text),
                MetadataError::UnknownVhost(_) => super::errors::not_allowed(text),
                MetadataError::AccessRefused(_) => super::errors::access_refused(text),
                _ => super::errors::precondition_failed(text),
            }
        }
        ProposeError::Unavailable(e) => {
            AmqpException::connection(code::INTERNAL_ERROR, format!("metadata quorum unavailable: {e}"), None)
        }
    }
}

fn method(channel: u16, m: AMQPClass) -> Bytes {
    frames::method_frame(channel, m)
}

fn close_frame(e: &AmqpException) -> Bytes {
    method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: e.code,
            reply_text: e.reply_text().into(),
            class_id: e.class_id,
            method_id: e.method_id,
        })),
    )
}

fn server_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for c in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        caps.insert(c.into(), AMQPValue::Boolean(true));
    }
    let mut p = FieldTable::default();
    let s = |v: &str| AMQPValue::LongString(LongString::from(v.as_bytes().to_vec()));
    p.insert("product".into(), s("Weir"));
    p.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
    p.insert("platform".into(), s("Rust"));
    p.insert("information".into(), s("https://weir.dev"));
    p.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    p
}

/// Serve one client connection until it closes.
pub async fn serve_connection(core: Arc<AmqpCore>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (read_half, write_half) = stream.into_split();
    let mut reader = FrameReader { half: read_half, buf: BytesMut::with_capacity(READ_BUFFER), unflushed: 0 };
    let out = Outbox::new(Some(write_half));
    let (hb_tx, hb_rx) = tokio::sync::watch::channel(0u16);
    let writer = tokio::spawn(out.clone().write_loop(hb_rx));

    outbox::scope(async {
        let result = run(&core, &mut reader, &out, &hb_tx, peer).await;
        if let Some(id) = result {
            core.connection_closed(id);
        }
        // Deliveries to others that the close caused (requeued messages).
        outbox::flush_deferred();
    })
    .await;
    out.close();
    // The writer drains what is queued (a close frame, say) and then stops.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer).await;
}

/// Bytes read from the client at a time (at most): every frame they hold is handled before
/// the next read, and the replies they cause leave together.
const READ_BUFFER: usize = 64 * 1024;

/// Frames from the client, parsed in place from one read buffer over the socket.
struct FrameReader {
    half: OwnedReadHalf,
    buf: BytesMut,
    /// Bytes read since the outboxes were last written.
    unflushed: usize,
}

/// Input already waiting is read before the output of the previous read is written, up to
/// this many bytes: under a stream of publishes the deliveries and confirms of several reads
/// then leave in one write, while a lone message is answered at once.
const FLUSH_EVERY: usize = 64 * 1024;

impl FrameReader {
    /// Read more bytes from the socket (at least one), within `timeout`. What the frames
    /// handled so far made us write leaves first.
    async fn fill(&mut self, timeout: Duration) -> Result<(), FrameError> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(READ_BUFFER);
        }
        if self.unflushed < FLUSH_EVERY {
            match self.half.try_read_buf(&mut self.buf) {
                Ok(0) => return Err(FrameError::Closed),
                Ok(n) => {
                    self.unflushed += n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        outbox::flush_deferred();
        self.unflushed = 0;
        match tokio::time::timeout(timeout, self.half.read_buf(&mut self.buf)).await {
            Ok(Ok(0)) => Err(FrameError::Closed),
            Ok(Ok(n)) => {
                self.unflushed = n;
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(FrameError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))),
        }
    }

    /// The next frame, reading as needed.
    async fn next(&mut self, frame_max: u32, timeout: Duration) -> Result<InFrame, FrameError> {
        loop {
            if let Some(f) = parse_frame(&mut self.buf, frame_max)? {
                return Ok(f);
            }
            self.fill(timeout).await?;
        }
    }

    /// The 8-byte protocol header.
    async fn protocol_header(&mut self, timeout: Duration) -> Result<[u8; 8], FrameError> {
        while self.buf.len() < 8 {
            self.fill(timeout).await?;
        }
        let mut h = [0u8; 8];
        self.buf.copy_to_slice(&mut h);
        Ok(h)
    }
}

/// Send connection.close for `e` and wait (bounded) for close-ok.
async fn close_with(r: &mut FrameReader, out: &Arc<Outbox>, e: &AmqpException) {
    out.send(&close_frame(e));
    let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match r.next(PRE_TUNE_FRAME_MAX, left).await {
            Ok(InFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)))) => return,
            Ok(InFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(_)))) => {
                out.send(&method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {}))));
                return;
            }
            Ok(_) => continue,
            Err(_) => return,
        }
    }
}

/// The handshake, then the frame loop. Returns the connection id once registered.
async fn run(
    core: &Arc<AmqpCore>,
    r: &mut FrameReader,
    out: &Arc<Outbox>,
    hb: &tokio::sync::watch::Sender<u16>,
    peer: SocketAddr,
) -> Option<ConnId> {
    // Protocol header: anything but AMQP 0-9-1 gets ours back and the socket closed.
    let Ok(header) = r.protocol_header(HANDSHAKE_TIMEOUT).await else { return None };
    if header != PROTOCOL_HEADER {
        debug!(%peer, ?header, "wrong AMQP protocol header");
        out.send(&PROTOCOL_HEADER);
        return None;
    }
    let cfg = &core.config;
    out.send(&method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: server_properties(),
            mechanisms: auth::MECHANISMS.into(),
            locales: "en_US".into(),
        })),
    ));
    let start_ok = match r.next(PRE_TUNE_FRAME_MAX, HANDSHAKE_TIMEOUT).await {
        Ok(InFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::StartOk(s)))) => s,
        Ok(InFrame::Method(_, m)) => {
            let e = AmqpException::connection(code::COMMAND_INVALID, "expected 'connection.start_ok'", Some(&m));
            close_with(r, out, &e).await;
            return None;
        }
        _ => return None,
    };
    // connection.blocked is only sent to clients that announce they understand it.
    let blocked_capable = start_ok
        .client_properties
        .inner()
        .get("capabilities")
        .and_then(|c| c.as_field_table())
        .and_then(|c| c.inner().get("connection.blocked"))
        .and_then(|b| b.as_bool())
        .unwrap_or(false);
    let user = match auth::authenticate(cfg, start_ok.mechanism.as_str(), start_ok.response.as_bytes(), peer.ip()) {
        Ok(u) => u,
        Err(e) => {
            info!(%peer, error = %e, "AMQP authentication failed");
            let m = AMQPClass::Connection(connection::AMQPMethod::StartOk(start_ok));
            close_with(r, out, &AmqpException::connection(code::ACCESS_REFUSED, e.to_string(), Some(&m))).await;
            return None;
        }
    };
    out.send(&method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
            channel_max: cfg.channel_max,
            frame_max: cfg.frame_max,
            heartbeat: cfg.heartbeat_secs,
        })),
    ));
    let tune_ok = match r.next(PRE_TUNE_FRAME_MAX, HANDSHAKE_TIMEOUT).await {
        Ok(InFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::TuneOk(t)))) => t,
        Ok(InFrame::Method(_, m)) => {
            let e = AmqpException::connection(code::COMMAND_INVALID, "expected 'connection.tune_ok'", Some(&m));
            close_with(r, out, &e).await;
            return None;
        }
        _ => return None,
    };
    let tune_ok_method = AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune_ok.clone()));
    let frame_max = if tune_ok.frame_max == 0 { cfg.frame_max } else { tune_ok.frame_max };
    if frame_max < 4096 || frame_max > cfg.frame_max {
        let e = AmqpException::connection(
            code::NOT_ALLOWED,
            format!("frame_max={frame_max} outside the allowed range 4096..={}", cfg.frame_max),
            Some(&tune_ok_method),
        );
        close_with(r, out, &e).await;
        return None;
    }
    let channel_max = if tune_ok.channel_max == 0 { cfg.channel_max } else { tune_ok.channel_max.min(cfg.channel_max) };
    let heartbeat = tune_ok.heartbeat;
    let _ = hb.send(heartbeat);
    // Missed heartbeats: nothing from the client for two intervals closes the connection.
    let read_timeout =
        if heartbeat == 0 { Duration::from_secs(u64::MAX / 4) } else { Duration::from_secs(heartbeat as u64 * 2) };

    let open = match r.next(frame_max, HANDSHAKE_TIMEOUT).await {
        Ok(InFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Open(o)))) => o,
        Ok(InFrame::Method(_, m)) => {
            let e = AmqpException::connection(code::COMMAND_INVALID, "expected 'connection.open'", Some(&m));
            close_with(r, out, &e).await;
            return None;
        }
        _ => return None,
    };
    let vhost = open.virtual_host.as_str().to_string();
    let open_method = AMQPClass::Connection(connection::AMQPMethod::Open(open));
    let Some(id) = core.connection_opened(&vhost, frame_max, out.clone()) else {
        let e = AmqpException::connection(
            code::NOT_ALLOWED,
            format!("vhost '{vhost}' not found or access refused for user '{user}'"),
            Some(&open_method),
        );
        close_with(r, out, &e).await;
        return None;
    };
    out.send(&method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {}))));
    debug!(%peer, user, vhost, frame_max, channel_max, heartbeat, "AMQP connection open");

    let mut conn =
        Conn { core: core.clone(), id, out: out.clone(), channels: HashMap::new(), channel_max, published: false };
    let mut alarm = core.alarm();
    loop {
        let frame = match parse_frame(&mut r.buf, frame_max) {
            Ok(Some(f)) => f,
            Ok(None) => {
                if std::mem::take(&mut conn.published) {
                    core.end_of_read(id);
                }
                match r.fill(read_timeout).await {
                    Ok(()) => continue,
                    Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                        warn!(%peer, timeout_secs = heartbeat, "missed heartbeats from client; closing the connection");
                        break;
                    }
                    Err(_) => break,
                }
            }
            Err(FrameError::Protocol(e)) => {
                warn!(%peer, error = %e, "AMQP frame error");
                close_with(r, out, &e).await;
                break;
            }
            Err(_) => break,
        };
        // Under a resource alarm a publisher is blocked before its publish is processed, and
        // nothing more is read from it until the alarm clears (RabbitMQ's flow control).
        if matches!(&frame, InFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Publish(_))))
            && alarm.borrow().is_some()
        {
            let reason = alarm.borrow().clone().unwrap_or_default();
            if blocked_capable {
                let blocked = connection::Blocked { reason: errors::truncate_utf8(reason, 255).into() };
                out.send(&method(0, AMQPClass::Connection(connection::AMQPMethod::Blocked(blocked))));
            }
            debug!(%peer, "publisher blocked by a resource alarm");
            if std::mem::take(&mut conn.published) {
                core.end_of_read(id);
            }
            outbox::flush_deferred();
            if alarm.wait_for(|a| a.is_none()).await.is_err() {
                break;
            }
            if blocked_capable {
                let unblocked = connection::Unblocked {};
                out.send(&method(0, AMQPClass::Connection(connection::AMQPMethod::Unblocked(unblocked))));
            }
        }
        match conn.handle(frame).await {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop) => break,
            Err(e) if e.connection => {
                info!(%peer, error = %e, "AMQP connection exception");
                close_with(r, out, &e).await;
                break;
            }
            Err(e) => unreachable!("channel exceptions are handled per channel: {e}"),
        }
    }
    Some(id)
}

enum Flow {
    Continue,
    Stop,
}

impl Conn {
    fn send(&self, channel: u16, m: AMQPClass) {
        self.out.frame(&amq_protocol::frame::AMQPFrame::Method(channel, m));
    }

    /// Handle one frame. Channel exceptions are turned into channel.close here; connection
    /// exceptions are returned.
    async fn handle(&mut self, frame: InFrame) -> AmqpResult<Flow> {
        match frame {
            InFrame::Heartbeat => Ok(Flow::Continue),
            InFrame::Method(0, m) => self.connection_method(m),
            InFrame::Method(ch, m) => {
                if ch > self.channel_max {
                    return Err(AmqpException::connection(
                        code::CHANNEL_ERROR,
                        format!("channel {ch} is above channel_max {}", self.channel_max),
                        Some(&m),
                    ));
                }
                self.channel_method(ch, m).await
            }
            InFrame::Header(ch, h) => self.content_header(ch, h),
            InFrame::Body(ch, b) => self.content_body(ch, b),
        }
    }

    fn connection_method(&mut self, m: AMQPClass) -> AmqpResult<Flow> {
        match m {
            AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                self.send(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})));
                Ok(Flow::Stop)
            }
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => Ok(Flow::Stop),
            // Clients may tell us they are blocked; nothing to do.
            AMQPClass::Connection(connection::AMQPMethod::Blocked(_) | connection::AMQPMethod::Unblocked(_)) => {
                Ok(Flow::Continue)
            }
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(_)) => {
                Err(not_implemented("connection.update-secret").with_method(&m))
            }
            other => {
                Err(AmqpException::connection(code::COMMAND_INVALID, "unexpected method on channel 0", Some(&other)))
            }
        }
    }

    async fn channel_method(&mut self, ch: u16, m: AMQPClass) -> AmqpResult<Flow> {
        match self.channels.get(&ch) {
            None => {
                if let AMQPClass::Channel(channel::AMQPMethod::Open(_)) = m {
                    self.channels.insert(ch, ChannelLocal::Open { content: None });
                    self.core.channel_opened(self.id, ch);
                    self.send(ch, AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})));
                    return Ok(Flow::Continue);
                }
                return Err(AmqpException::connection(
                    code::CHANNEL_ERROR,
                    format!("expected 'channel.open' on channel {ch}"),
                    Some(&m),
                ));
            }
            Some(ChannelLocal::Closing) => {
                match m {
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                        self.channels.remove(&ch);
                    }
                    AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                        self.send(ch, AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})));
                        self.channels.remove(&ch);
                    }
                    _ => {}
                }
                return Ok(Flow::Continue);
            }
            Some(ChannelLocal::Open { content: Some(_) }) => {
                return Err(AmqpException::connection(
                    code::UNEXPECTED_FRAME,
                    format!("expected content header for class 60, got a method frame on channel {ch}"),
                    Some(&m),
                ));
            }
            Some(ChannelLocal::Open { content: None }) => {}
        }
        match self.channel_open_method(ch, &m).await {
            Ok(()) => Ok(Flow::Continue),
            Err(e) => {
                let e = e.with_method(&m);
                if e.connection {
                    return Err(e);
                }
                self.channel_exception(ch, &e);
                Ok(Flow::Continue)
            }
        }
    }

    /// Close `ch` for a channel exception: channel.close to the client, the channel's
    /// deliveries requeued, and frames ignored until close-ok.
    fn channel_exception(&mut self, ch: u16, e: &AmqpException) {
        debug!(channel = ch, error = %e, "AMQP channel exception");
        self.send(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: e.code,
                reply_text: e.reply_text().into(),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
        self.channels.insert(ch, ChannelLocal::Closing);
        self.core.channel_closed(self.id, ch);
    }

    async fn channel_open_method(&mut self, ch: u16, m: &AMQPClass) -> AmqpResult<()> {
        let core = self.core.clone();
        let id = self.id;
        match m {
            AMQPClass::Channel(cm) => match cm {
                channel::AMQPMethod::Open(_) => Err(AmqpException::connection(
                    code::CHANNEL_ERROR,
                    format!("second 'channel.open' seen on channel {ch}"),
                    None,
                )),
                channel::AMQPMethod::Close(_) => {
                    core.channel_closed(id, ch);
                    self.channels.remove(&ch);
                    self.send(ch, AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})));
                    Ok(())
                }
                channel::AMQPMethod::CloseOk(_) => Ok(()),
                channel::AMQPMethod::Flow(f) => {
                    if !f.active {
                        return Err(not_implemented("active=false"));
                    }
                    self.send(ch, AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk { active: true })));
                    Ok(())
                }
                channel::AMQPMethod::FlowOk(_) => Ok(()),
                _ => Err(AmqpException::connection(code::COMMAND_INVALID, "unexpected channel method", None)),
            },
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                self.send(ch, AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})));
                Ok(())
            }
            AMQPClass::Exchange(em) => match em {
                exchange::AMQPMethod::Declare(d) => {
                    if let Some(record) = core.durable_exchange_to_create(id, d)? {
                        let vhost = self.vhost();
                        self.propose(AmqpCommand::DeclareExchange { vhost, exchange: record }).await?;
                    }
                    core.exchange_declare(id, ch, d)
                }
                exchange::AMQPMethod::Delete(d) => {
                    let durable = core.exchange_is_durable(id, d.exchange.as_str());
                    core.exchange_delete(id, ch, d)?;
                    if durable {
                        let (vhost, name) = (self.vhost(), d.exchange.as_str().to_string());
                        self.propose_deletion(AmqpCommand::DeleteExchange { vhost, name }).await?;
                    }
                    Ok(())
                }
                exchange::AMQPMethod::Bind(b) => {
                    let dest = Destination::Exchange(b.destination.as_str().to_string());
                    let reply = AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {}));
                    self.bind(
                        ch,
                        b.source.as_str(),
                        dest,
                        b.routing_key.as_str(),
                        &b.arguments,
                        true,
                        (!b.nowait).then_some(reply),
                    )
                    .await
                }
                exchange::AMQPMethod::Unbind(b) => {
                    let dest = Destination::Exchange(b.destination.as_str().to_string());
                    let reply = AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {}));
                    self.bind(
                        ch,
                        b.source.as_str(),
                        dest,
                        b.routing_key.as_str(),
                        &b.arguments,
                        false,
                        (!b.nowait).then_some(reply),
                    )
                    .await
                }
                _ => Err(AmqpException::connection(code::COMMAND_INVALID, "unexpected exchange method", None)),
            },
            AMQPClass::Queue(qm) => match qm {
                queue::AMQPMethod::Declare(d) => {
                    if let Some(mut record) = core.durable_queue_to_create(id, d)? {
                        record.node = core.cluster().map_or(0, |c| c.node_id());
                        let vhost = self.vhost();
                        let name = record.name.clone();
                        self.propose(AmqpCommand::DeclareQueue { vhost, queue: record }).await?;
                        let mut named = d.clone();
                        named.queue = name.into();
                        return core.queue_declare(id, ch, &named).map(|_| ());
                    }
                    core.queue_declare(id, ch, d).map(|_| ())
                }
                queue::AMQPMethod::Bind(b) => {
                    let dest = Destination::Queue(b.queue.as_str().to_string());
                    let reply = AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {}));
                    self.bind(
                        ch,
                        b.exchange.as_str(),
                        dest,
                        b.routing_key.as_str(),
                        &b.arguments,
                        true,
                        (!b.nowait).then_some(reply),
                    )
                    .await
                }
                queue::AMQPMethod::Unbind(b) => {
                    let dest = Destination::Queue(b.queue.as_str().to_string());
                    let reply = AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {}));
                    self.bind(ch, b.exchange.as_str(), dest, b.routing_key.as_str(), &b.arguments, false, Some(reply))
                        .await
                }
                queue::AMQPMethod::Purge(p) => core.queue_purge(id, ch, p),
                queue::AMQPMethod::Delete(d) => {
                    let durable = core.queue_is_durable(id, d.queue.as_str());
                    core.queue_delete(id, ch, d)?;
                    if durable {
                        let (vhost, name) = (self.vhost(), d.queue.as_str().to_string());
                        self.propose_deletion(AmqpCommand::DeleteQueue { vhost, name }).await?;
                    }
                    Ok(())
                }
                _ => Err(AmqpException::connection(code::COMMAND_INVALID, "unexpected queue method", None)),
            },
            AMQPClass::Basic(bm) => match bm {
                basic::AMQPMethod::Qos(q) => core.basic_qos(id, ch, q),
                basic::AMQPMethod::Consume(c) => core.basic_consume(id, ch, c),
                basic::AMQPMethod::Cancel(c) => core.basic_cancel(id, ch, c),
                basic::AMQPMethod::Publish(p) => {
                    self.channels.insert(
                        ch,
                        ChannelLocal::Open {
                            content: Some(Content { publish: p.clone(), header: None, body: Vec::new(), received: 0 }),
                        },
                    );
                    Ok(())
                }
                basic::AMQPMethod::Get(g) => core.basic_get(id, ch, g),
                basic::AMQPMethod::Ack(a) => core.basic_ack(id, ch, a.delivery_tag, a.multiple),
                basic::AMQPMethod::Nack(n) => core.basic_nack(id, ch, n.delivery_tag, n.multiple, n.requeue),
                basic::AMQPMethod::Reject(rj) => core.basic_nack(id, ch, rj.delivery_tag, false, rj.requeue),
                basic::AMQPMethod::Recover(_) => core.basic_recover(id, ch, true),
                basic::AMQPMethod::RecoverAsync(_) => core.basic_recover(id, ch, false),
                _ => Err(AmqpException::connection(code::COMMAND_INVALID, "unexpected basic method", None)),
            },
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => core.confirm_select(id, ch, s.nowait),
            AMQPClass::Tx(t) => match t {
                tx::AMQPMethod::Select(_) => core.tx_select(id, ch),
                tx::AMQPMethod::Commit(_) => core.tx_end(id, ch, true),
                tx::AMQPMethod::Rollback(_) => core.tx_end(id, ch, false),
                _ => Err(AmqpException::connection(code::COMMAND_INVALID, "unexpected tx method", None)),
            },
            _ => Err(AmqpException::connection(code::COMMAND_INVALID, "unexpected method", None)),
        }
    }

    fn vhost(&self) -> String {
        self.core.vhost_of_conn(self.id).unwrap_or_default()
    }

    /// Commit a change of durable entities through the metadata quorum, then bring the core
    /// in line with the image (which includes the change once `propose` returns).
    async fn propose(&self, cmd: AmqpCommand) -> AmqpResult<()> {
        let Some(cluster) = self.core.cluster().cloned() else { return Ok(()) };
        outbox::flush_deferred();
        cluster.propose(MetadataCommand::Amqp(cmd)).await.map_err(propose_error)?;
        self.core.sync_durable(&cluster.image().amqp);
        Ok(())
    }

    /// As `propose`, for deletions already done in memory: "already gone" is success.
    async fn propose_deletion(&self, cmd: AmqpCommand) -> AmqpResult<()> {
        match self.propose(cmd).await {
            Err(e) if e.code == code::NOT_FOUND => Ok(()),
            other => other,
        }
    }

    /// queue.bind / exchange.bind and their unbinds; bindings between durable entities go
    /// through the quorum (before the bind-ok, after the in-memory unbind).
    #[allow(clippy::too_many_arguments)]
    async fn bind(
        &self,
        ch: u16,
        source: &str,
        dest: Destination,
        routing_key: &str,
        arguments: &FieldTable,
        bind: bool,
        reply: Option<AMQPClass>,
    ) -> AmqpResult<()> {
        let vhost = self.vhost();
        let durable = self.core.binding_is_durable(&vhost, source, &dest);
        let record = AmqpBindingRecord {
            source: source.to_string(),
            destination_type: dest.kind().to_string(),
            destination: dest.name().to_string(),
            routing_key: routing_key.to_string(),
            arguments: table_to_json(arguments),
        };
        if bind {
            if durable {
                self.propose(AmqpCommand::Bind { vhost, binding: record }).await?;
            }
            self.core.bind(self.id, ch, source, dest, routing_key, arguments, true, reply)
        } else {
            self.core.bind(self.id, ch, source, dest, routing_key, arguments, false, reply)?;
            if durable {
                self.propose_deletion(AmqpCommand::Unbind { vhost, binding: record }).await?;
            }
            Ok(())
        }
    }

    fn unexpected(ch: u16, what: &str) -> AmqpException {
        AmqpException::connection(code::UNEXPECTED_FRAME, format!("unexpected {what} frame on channel {ch}"), None)
    }

    fn content_header(&mut self, ch: u16, h: AMQPContentHeader) -> AmqpResult<Flow> {
        match self.channels.get_mut(&ch) {
            Some(ChannelLocal::Closing) => Ok(Flow::Continue),
            Some(ChannelLocal::Open { content: Some(c) }) if c.header.is_none() => {
                if h.class_id != 60 {
                    return Err(Self::unexpected(ch, "content header (class not basic)"));
                }
                let size = h.body_size;
                c.header = Some(h);
                if size > self.core.config.max_message_size {
                    let publish = AMQPClass::Basic(basic::AMQPMethod::Publish(c.publish.clone()));
                    let e = AmqpException::channel(
                        code::PRECONDITION_FAILED,
                        format!(
                            "message size {size} is larger than configured max size {}",
                            self.core.config.max_message_size
                        ),
                        Some(&publish),
                    );
                    self.channel_exception(ch, &e);
                    return Ok(Flow::Continue);
                }
                if size == 0 {
                    self.complete(ch)?;
                }
                Ok(Flow::Continue)
            }
            _ => Err(Self::unexpected(ch, "content header")),
        }
    }

    fn content_body(&mut self, ch: u16, b: Bytes) -> AmqpResult<Flow> {
        match self.channels.get_mut(&ch) {
            Some(ChannelLocal::Closing) => Ok(Flow::Continue),
            Some(ChannelLocal::Open { content: Some(c) }) if c.header.is_some() => {
                let size = c.header.as_ref().map_or(0, |h| h.body_size);
                c.received += b.len() as u64;
                c.body.push(b);
                if c.received > size {
                    return Err(Self::unexpected(ch, "content body (longer than its header said)"));
                }
                if c.received == size {
                    self.complete(ch)?;
                }
                Ok(Flow::Continue)
            }
            _ => Err(Self::unexpected(ch, "content body")),
        }
    }

    /// A whole message arrived: publish it.
    fn complete(&mut self, ch: u16) -> AmqpResult<()> {
        let Some(ChannelLocal::Open { content }) = self.channels.get_mut(&ch) else { return Ok(()) };
        let Some(c) = content.take() else { return Ok(()) };
        let header = c.header.expect("complete after the header");
        let body = if c.body.len() == 1 {
            c.body.into_iter().next().expect("one")
        } else {
            let mut joined = BytesMut::with_capacity(c.received as usize);
            for part in c.body {
                joined.extend_from_slice(&part);
            }
            joined.freeze()
        };
        self.published = true;
        if let Err(e) = self.core.basic_publish(self.id, ch, &c.publish, header.properties, body) {
            let e = e.with_method(&AMQPClass::Basic(basic::AMQPMethod::Publish(c.publish)));
            if e.connection {
                return Err(e);
            }
            self.channel_exception(ch, &e);
        }
        Ok(())
    }
}
