//! The workload on amqprs. amqprs gives no future per publish: the broker's basic.ack and
//! basic.nack reach a [`ChannelCallback`], which keeps the count of settled publishes (tags
//! settled one by one or with `multiple`) and wakes the publisher, who waits while the confirm
//! window is full. Deliveries come from the consumer's channel receiver.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ConfirmSelectArguments, QueueDeclareArguments, QueueDeleteArguments, QueuePurgeArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use anyhow::{bail, Context, Result};
use tokio::sync::Notify;

use crate::{stamp, Outcome, Tally, Workload};

/// amqp://user:password@host:port/vhost (vhost percent-decoded; `%2f` is `/`), the form
/// `scripts/bench-amqp` passes. amqprs parses URIs only behind an extra feature.
fn open_args(url: &str, name: &str) -> Result<OpenConnectionArguments> {
    let rest = url.strip_prefix("amqp://").with_context(|| format!("{url}: not an amqp:// URI"))?;
    let (authority, vhost) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = authority.rsplit_once('@').unwrap_or(("guest:guest", authority));
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().with_context(|| format!("{url}: bad port"))?),
        None => (hostport, 5672),
    };
    let vhost = if vhost.is_empty() { "/".to_string() } else { percent_decode(vhost)? };
    Ok(OpenConnectionArguments::new(host, port, &percent_decode(user)?, &percent_decode(password)?)
        .virtual_host(&vhost)
        .connection_name(name)
        .finish())
}

fn percent_decode(s: &str) -> Result<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex: String = bytes.by_ref().take(2).map(char::from).collect();
            out.push(u8::from_str_radix(&hex, 16).with_context(|| format!("bad escape %{hex} in {s}"))?);
        } else {
            out.push(b);
        }
    }
    Ok(String::from_utf8(out)?)
}

async fn connect(url: &str, name: &str) -> Result<(Connection, Channel)> {
    let conn = Connection::open(&open_args(url, name)?).await.with_context(|| format!("connecting to {url}"))?;
    let channel = conn.open_channel(None).await?;
    Ok((conn, channel))
}

/// What the publisher reads of the confirms, written by [`Confirms`].
#[derive(Default)]
struct Settled {
    /// Publishes acked or nacked so far.
    count: AtomicU64,
    nacked: AtomicU64,
    /// Set when the broker closed the publisher's channel, with its reason.
    closed: AtomicBool,
    reason: Mutex<String>,
    wake: Notify,
}

/// The publisher channel's callback: settles delivery tags. Every tag up to `low` is settled,
/// and so is every tag in `above` (settled one by one, out of order).
struct Confirms {
    low: u64,
    above: BTreeSet<u64>,
    shared: Arc<Settled>,
}

impl Confirms {
    /// Settles `tag` (and with `multiple` every tag below it); returns how many publishes this
    /// settled that were not settled before.
    fn settle(&mut self, tag: u64, multiple: bool) -> u64 {
        let before = self.low + self.above.len() as u64;
        if multiple {
            if tag > self.low {
                self.above = self.above.split_off(&(tag + 1));
                self.low = tag;
            }
        } else if tag > self.low {
            self.above.insert(tag);
        }
        while self.above.first() == Some(&(self.low + 1)) {
            self.above.pop_first();
            self.low += 1;
        }
        let after = self.low + self.above.len() as u64;
        self.shared.count.store(after, Ordering::Release);
        self.shared.wake.notify_one();
        after - before
    }
}

#[async_trait::async_trait]
impl ChannelCallback for Confirms {
    async fn close(&mut self, _channel: &Channel, close: CloseChannel) -> Result<(), amqprs::error::Error> {
        *self.shared.reason.lock().expect("reason") = close.to_string();
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        Ok(())
    }
    async fn cancel(&mut self, _channel: &Channel, _cancel: Cancel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn flow(&mut self, _channel: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _channel: &Channel, ack: Ack) {
        self.settle(ack.delivery_tag(), ack.mutiple());
    }
    async fn publish_nack(&mut self, _channel: &Channel, nack: Nack) {
        let n = self.settle(nack.delivery_tag(), nack.multiple());
        self.shared.nacked.fetch_add(n, Ordering::Relaxed);
    }
    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {}
}

impl Settled {
    /// Waits until at most `outstanding` of `published` publishes are unsettled.
    async fn wait(&self, published: u64, outstanding: u64) -> Result<()> {
        loop {
            // A settle between the check and the await is not lost: notify_one leaves a permit.
            let woken = self.wake.notified();
            if published - self.count.load(Ordering::Acquire) <= outstanding {
                return Ok(());
            }
            if self.closed.load(Ordering::Acquire) {
                bail!("the broker closed the publisher's channel: {}", self.reason.lock().expect("reason"));
            }
            woken.await;
        }
    }
}

pub(crate) async fn run(work: &Workload) -> Result<Outcome> {
    let queue = work.queue.as_str();
    let expected = work.expected;
    let (pub_conn, publisher) = connect(&work.url, "weir-bench-publisher").await?;
    let (sub_conn, consumer_ch) = connect(&work.url, "weir-bench-consumer").await?;
    let settled = Arc::new(Settled::default());
    publisher.register_callback(Confirms { low: 0, above: BTreeSet::new(), shared: settled.clone() }).await?;
    publisher.queue_declare(QueueDeclareArguments::new(queue).durable(work.persistent).finish()).await?;
    publisher.queue_purge(QueuePurgeArguments::new(queue)).await?;
    if work.confirm {
        publisher.confirm_select(ConfirmSelectArguments::new(false)).await?;
    }
    consumer_ch.basic_qos(BasicQosArguments::new(0, work.prefetch, false)).await?;
    let (_tag, mut deliveries) =
        consumer_ch.basic_consume_rx(BasicConsumeArguments::new(queue, "weir-bench").manual_ack(true).finish()).await?;

    let properties = BasicProperties::default().with_delivery_mode(work.delivery_mode()).finish();
    let route = BasicPublishArguments::new("", queue);

    // The consumer: counts (and in latency mode times) every delivery, acks in groups.
    let consumer_task = {
        let channel = consumer_ch.clone();
        let mut tally = Tally::new(work);
        tokio::spawn(async move {
            while !tally.done() {
                let Some(delivery) = deliveries.recv().await else { bail!("consumer cancelled after {}", tally.got) };
                let tag =
                    delivery.deliver.as_ref().map(|d| d.delivery_tag()).context("a delivery without basic.deliver")?;
                if tally.record(delivery.content.as_deref().unwrap_or_default())? {
                    channel.basic_ack(BasicAckArguments::new(tag, true)).await?;
                }
            }
            Ok::<_, anyhow::Error>(tally.finish())
        })
    };

    let mut payload = work.payload();
    let window = work.confirm_window as u64;
    let started = Instant::now();
    let mut tick = work.ticker();
    for published in 0..expected {
        if work.latency {
            tick.tick().await;
            stamp(work.origin, &mut payload);
        }
        if work.confirm {
            // Room for this publish: fewer than `window` outstanding.
            settled.wait(published, window - 1).await?;
        }
        publisher.basic_publish(properties.clone(), payload.clone(), route.clone()).await?;
    }
    if work.confirm {
        settled.wait(expected, 0).await?;
    }
    let published_at = Instant::now();
    let (consumed_at, samples) = consumer_task.await??;

    publisher.queue_delete(QueueDeleteArguments::new(queue)).await?;
    let _ = publisher.close().await;
    let _ = consumer_ch.close().await;
    let _ = pub_conn.close().await;
    let _ = sub_conn.close().await;
    Ok(Outcome { started, published_at, consumed_at, samples, nacked: settled.nacked.load(Ordering::Relaxed) })
}
