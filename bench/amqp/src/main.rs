//! AMQP 0-9-1 load generator on clients Weir did not write, so that Weir and RabbitMQ are
//! measured by the same outside code (`scripts/bench-amqp` runs both). Two client libraries
//! drive the same workload, chosen with `--client`:
//! - `lapin` (the default), in `lapin_driver.rs`;
//! - `amqprs`, in `amqprs_driver.rs`: a leaner client (one reader and one writer task per
//!   connection, confirms through a callback instead of a future per publish), so that on a
//!   small machine the client takes less of the CPU the broker shares with it.
//!
//! Two modes, each one JSON line on stdout:
//! - `throughput`: one publisher and one consumer connection on one queue; `count`
//!   messages published as fast as the broker takes them (with publisher confirms: a
//!   window of outstanding confirms) and consumed with manual acks; msgs/s and MB/s from
//!   the first publish until the last message is delivered (and, with confirms, confirmed).
//! - `latency`: messages at a fixed rate, each carrying its send time; p50/p99/max of
//!   publish-to-delivery time.
//!
//! This file holds what both drivers share: the arguments, the workload, the latency stamps,
//! and the JSON line; a driver only speaks its library's API.

mod amqprs_driver;
mod lapin_driver;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Mode {
    Throughput,
    Latency,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Client {
    Lapin,
    Amqprs,
}

#[derive(Parser, Debug)]
#[command(about = "AMQP publish-and-consume load on lapin or amqprs")]
struct Args {
    /// Broker URI, e.g. amqp://guest:guest@127.0.0.1:5672/%2f
    #[arg(long)]
    url: String,
    /// The AMQP client library that drives the load (the same workload with either).
    #[arg(long, value_enum, default_value = "lapin")]
    client: Client,
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

/// The consumer acks with `multiple` every this many deliveries (and at the last one).
const ACK_EVERY: u64 = 100;

/// What a driver runs, the same for every client: one publisher connection and one consumer
/// connection (each with one channel) on one queue, declared durable when `persistent` and
/// purged first; confirms with at most `confirm_window` outstanding; the consumer with
/// `prefetch` and manual acks with `multiple` (see [`Tally`]).
pub(crate) struct Workload {
    pub url: String,
    pub queue: String,
    pub size: usize,
    /// Messages to publish and to consume.
    pub expected: u64,
    pub latency: bool,
    pub confirm: bool,
    pub confirm_window: usize,
    pub persistent: bool,
    pub prefetch: u16,
    pub rate: u64,
    /// The clock the latency stamps are read against.
    pub origin: Instant,
}

impl Workload {
    /// AMQP delivery-mode: 2 (persistent) or 1 (transient).
    pub fn delivery_mode(&self) -> u8 {
        if self.persistent {
            2
        } else {
            1
        }
    }

    pub fn payload(&self) -> Vec<u8> {
        vec![b'x'; self.size]
    }

    /// The publisher's pace in latency mode: one tick per message.
    pub fn ticker(&self) -> tokio::time::Interval {
        let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / self.rate.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        tick
    }
}

/// Writes the send time (nanoseconds since `origin`) into the payload's first 8 bytes.
pub(crate) fn stamp(origin: Instant, payload: &mut [u8]) {
    payload[..8].copy_from_slice(&(origin.elapsed().as_nanos() as u64).to_be_bytes());
}

/// Nanoseconds from the send time a delivered payload carries until now.
fn since_stamp(origin: Instant, data: &[u8]) -> Result<u64> {
    let Some(sent) = data.get(..8) else { bail!("a delivery of {} bytes carries no send time", data.len()) };
    let sent = u64::from_be_bytes(sent.try_into().expect("8 bytes"));
    Ok((origin.elapsed().as_nanos() as u64).saturating_sub(sent))
}

/// The consumer's side of the workload, the same for every client: counts deliveries up to
/// `expected`, keeps a latency sample per delivery in latency mode, and says when to ack (with
/// `multiple`): every `ACK_EVERY` deliveries and at the last one.
pub(crate) struct Tally {
    expected: u64,
    latency: bool,
    origin: Instant,
    pub got: u64,
    samples: Vec<u64>,
}

impl Tally {
    pub fn new(work: &Workload) -> Self {
        let samples = Vec::with_capacity(if work.latency { work.expected as usize } else { 0 });
        Self { expected: work.expected, latency: work.latency, origin: work.origin, got: 0, samples }
    }

    pub fn done(&self) -> bool {
        self.got >= self.expected
    }

    /// Counts one delivery of `data`; true when the consumer should ack up to it.
    pub fn record(&mut self, data: &[u8]) -> Result<bool> {
        if self.latency {
            self.samples.push(since_stamp(self.origin, data)?);
        }
        self.got += 1;
        Ok(self.got.is_multiple_of(ACK_EVERY) || self.got == self.expected)
    }

    /// When the last message was delivered, and the latency samples.
    pub fn finish(self) -> (Instant, Vec<u64>) {
        (Instant::now(), self.samples)
    }
}

/// What a driver measured.
pub(crate) struct Outcome {
    /// Just before the first publish.
    pub started: Instant,
    /// When the last publish went out (and, with confirms, every confirm came back).
    pub published_at: Instant,
    /// When the last message was delivered.
    pub consumed_at: Instant,
    /// Publish-to-delivery nanoseconds, one per message (latency mode only).
    pub samples: Vec<u64>,
    /// Publishes the broker nacked.
    pub nacked: u64,
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
    let work = Workload {
        url: args.url.clone(),
        queue: args.queue.clone().unwrap_or_else(|| format!("weir-bench-{}-{}", std::process::id(), args.size)),
        size: args.size,
        expected: match args.mode {
            Mode::Throughput => args.count,
            Mode::Latency => args.rate * args.duration,
        },
        latency: args.mode == Mode::Latency,
        confirm: args.confirm,
        confirm_window: args.confirm_window.max(1),
        persistent: args.persistent,
        prefetch: args.prefetch,
        rate: args.rate,
        origin: Instant::now(),
    };
    let mut outcome = match args.client {
        Client::Lapin => lapin_driver::run(&work).await?,
        Client::Amqprs => amqprs_driver::run(&work).await?,
    };

    let expected = work.expected;
    let end = outcome.consumed_at.max(outcome.published_at);
    let secs = end.duration_since(outcome.started).as_secs_f64();
    outcome.samples.sort_unstable();
    let samples = &outcome.samples;
    let us = |ns: u64| ns as f64 / 1000.0;
    let out = serde_json::json!({
        "label": args.label,
        "client": format!("{:?}", args.client).to_lowercase(),
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "size": args.size,
        "messages": expected,
        "confirm": args.confirm,
        "persistent": args.persistent,
        "nacked": outcome.nacked,
        "secs": secs,
        "msgs_per_s": expected as f64 / secs,
        "mb_per_s": (expected as f64 * args.size as f64) / secs / 1e6,
        "publish_secs": outcome.published_at.duration_since(outcome.started).as_secs_f64(),
        "p50_us": work.latency.then(|| us(percentile(samples, 0.50))),
        "p99_us": work.latency.then(|| us(percentile(samples, 0.99))),
        "max_us": work.latency.then(|| us(samples.last().copied().unwrap_or(0))),
    });
    println!("{out}");
    if outcome.nacked > 0 {
        bail!("{} messages were nacked by the broker", outcome.nacked);
    }
    Ok(())
}
