//! AMQP 0-9-1 load generator on lapin, a client Weir did not write, so that Weir and
//! RabbitMQ are measured by the same outside code (`scripts/bench-amqp` runs both).
//!
//! Two modes, each one JSON line on stdout:
//! - `throughput`: one publisher and one consumer connection on one queue; `count`
//!   messages published as fast as the broker takes them (with publisher confirms: a
//!   window of outstanding confirms) and consumed with manual acks; msgs/s and MB/s from
//!   the first publish until the last message is delivered (and, with confirms, confirmed).
//! - `latency`: messages at a fixed rate, each carrying its send time; p50/p99/max of
//!   publish-to-delivery time.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use futures_util::stream::{FuturesUnordered, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Mode {
    Throughput,
    Latency,
}

#[derive(Parser, Debug)]
#[command(about = "AMQP publish-and-consume load on lapin")]
struct Args {
    /// Broker URI, e.g. amqp://guest:guest@127.0.0.1:5672/%2f
    #[arg(long)]
    url: String,
    #[arg(long, value_enum, default_value = "throughput")]
    mode: Mode,
    /// Payload bytes per message (at least 8 in latency mode: the send time).
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Messages to send (throughput mode).
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Publisher confirms (Confirm.Select), with this many outstanding at most.
    #[arg(long)]
    confirm: bool,
    #[arg(long, default_value_t = 1000)]
    confirm_window: usize,
    /// delivery-mode 2 to a durable queue; otherwise transient to a non-durable queue.
    #[arg(long)]
    persistent: bool,
    /// Consumer prefetch (basic.qos); the consumer acks with `multiple` every 100 deliveries.
    #[arg(long, default_value_t = 1000)]
    prefetch: u16,
    /// Messages per second (latency mode).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds to run (latency mode).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Free-form label copied into the output (e.g. weir, rabbitmq).
    #[arg(long, default_value = "")]
    label: String,
    /// Queue name (default: a fresh one per run).
    #[arg(long)]
    queue: Option<String>,
}

const ACK_EVERY: u64 = 100;

async fn connect(url: &str, name: &str) -> Result<(Connection, Channel)> {
    let conn = Connection::connect(url, ConnectionProperties::default().with_connection_name(name.into()))
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let channel = conn.create_channel().await?;
    Ok((conn, channel))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.mode == Mode::Latency && args.size < 8 {
        bail!("latency mode needs --size >= 8 to carry the send time");
    }
    let queue = args.queue.clone().unwrap_or_else(|| format!("weir-bench-{}-{}", std::process::id(), args.size));
    let (pub_conn, publisher) = connect(&args.url, "weir-bench-publisher").await?;
    let (sub_conn, consumer_ch) = connect(&args.url, "weir-bench-consumer").await?;
    let declare = QueueDeclareOptions { durable: args.persistent, ..QueueDeclareOptions::default() };
    publisher.queue_declare(queue.as_str().into(), declare, FieldTable::default()).await?;
    publisher.queue_purge(queue.as_str().into(), QueuePurgeOptions::default()).await?;
    if args.confirm {
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
    }
    consumer_ch.basic_qos(args.prefetch, BasicQosOptions::default()).await?;
    let mut deliveries = consumer_ch
        .basic_consume(
            queue.as_str().into(),
            "weir-bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let properties = if args.persistent {
        BasicProperties::default().with_delivery_mode(2)
    } else {
        BasicProperties::default().with_delivery_mode(1)
    };
    let expected = match args.mode {
        Mode::Throughput => args.count,
        Mode::Latency => args.rate * args.duration,
    };
    let origin = Instant::now();

    // The consumer: counts (and in latency mode times) every delivery, acks in groups.
    let consumer_task = {
        let channel = consumer_ch.clone();
        let latency = args.mode == Mode::Latency;
        tokio::spawn(async move {
            let mut got = 0u64;
            let mut samples = Vec::with_capacity(if latency { expected as usize } else { 0 });
            while got < expected {
                let Some(delivery) = deliveries.next().await else { bail!("consumer cancelled after {got}") };
                let delivery = delivery?;
                if latency {
                    let sent = u64::from_be_bytes(delivery.data[..8].try_into().expect("8 bytes"));
                    samples.push(origin.elapsed().as_nanos() as u64 - sent);
                }
                got += 1;
                if got % ACK_EVERY == 0 || got == expected {
                    channel.basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true }).await?;
                }
            }
            Ok::<_, anyhow::Error>((Instant::now(), samples))
        })
    };

    let mut payload = vec![b'x'; args.size];
    let mut pending = FuturesUnordered::new();
    let mut nacked = 0u64;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / args.rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..expected {
        if args.mode == Mode::Latency {
            tick.tick().await;
            payload[..8].copy_from_slice(&(origin.elapsed().as_nanos() as u64).to_be_bytes());
        }
        let confirm = publisher
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &payload,
                properties.clone(),
            )
            .await?;
        if args.confirm {
            pending.push(confirm);
            while pending.len() >= args.confirm_window {
                if let Some(c) = pending.next().await {
                    nacked += matches!(c?, Confirmation::Nack(_)) as u64;
                }
            }
        }
    }
    while let Some(c) = pending.next().await {
        nacked += matches!(c?, Confirmation::Nack(_)) as u64;
    }
    let published_at = Instant::now();
    let (consumed_at, mut samples) = consumer_task.await??;
    let end = consumed_at.max(published_at);
    let secs = end.duration_since(started).as_secs_f64();
    samples.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    let out = serde_json::json!({
        "label": args.label,
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "size": args.size,
        "messages": expected,
        "confirm": args.confirm,
        "persistent": args.persistent,
        "nacked": nacked,
        "secs": secs,
        "msgs_per_s": expected as f64 / secs,
        "mb_per_s": (expected as f64 * args.size as f64) / secs / 1e6,
        "publish_secs": published_at.duration_since(started).as_secs_f64(),
        "p50_us": (args.mode == Mode::Latency).then(|| us(percentile(&samples, 0.50))),
        "p99_us": (args.mode == Mode::Latency).then(|| us(percentile(&samples, 0.99))),
        "max_us": (args.mode == Mode::Latency).then(|| us(samples.last().copied().unwrap_or(0))),
    });
    println!("{out}");

    publisher.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
    let _ = pub_conn.close(200, "done".into()).await;
    let _ = sub_conn.close(200, "done".into()).await;
    if nacked > 0 {
        bail!("{nacked} messages were nacked by the broker");
    }
    Ok(())
}
