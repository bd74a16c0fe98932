//! The workload on lapin: confirms are one future per publish, kept in a `FuturesUnordered`
//! no longer than the confirm window; deliveries come from the consumer stream.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use futures_util::stream::{FuturesUnordered, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use crate::{stamp, Outcome, Tally, Workload};

async fn connect(url: &str, name: &str) -> Result<(Connection, Channel)> {
    let conn = Connection::connect(url, ConnectionProperties::default().with_connection_name(name.into()))
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let channel = conn.create_channel().await?;
    Ok((conn, channel))
}

pub(crate) async fn run(work: &Workload) -> Result<Outcome> {
    let queue = work.queue.as_str();
    let expected = work.expected;
    let (pub_conn, publisher) = connect(&work.url, "weir-bench-publisher").await?;
    let (sub_conn, consumer_ch) = connect(&work.url, "weir-bench-consumer").await?;
    let declare = QueueDeclareOptions { durable: work.persistent, ..QueueDeclareOptions::default() };
    publisher.queue_declare(queue.into(), declare, FieldTable::default()).await?;
    publisher.queue_purge(queue.into(), QueuePurgeOptions::default()).await?;
    if work.confirm {
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
    }
    consumer_ch.basic_qos(work.prefetch, BasicQosOptions::default()).await?;
    let mut deliveries = consumer_ch
        .basic_consume(queue.into(), "weir-bench".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;

    let properties = BasicProperties::default().with_delivery_mode(work.delivery_mode());

    // The consumer: counts (and in latency mode times) every delivery, acks in groups.
    let consumer_task = {
        let channel = consumer_ch.clone();
        let mut tally = Tally::new(work);
        tokio::spawn(async move {
            while !tally.done() {
                let Some(delivery) = deliveries.next().await else { bail!("consumer cancelled after {}", tally.got) };
                let delivery = delivery?;
                if tally.record(&delivery.data)? {
                    channel.basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true }).await?;
                }
            }
            Ok::<_, anyhow::Error>(tally.finish())
        })
    };

    let mut payload = work.payload();
    let mut pending = FuturesUnordered::new();
    let mut nacked = 0u64;
    let started = Instant::now();
    let mut tick = work.ticker();
    for _ in 0..expected {
        if work.latency {
            tick.tick().await;
            stamp(work.origin, &mut payload);
        }
        let confirm = publisher
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &payload, properties.clone())
            .await?;
        if work.confirm {
            pending.push(confirm);
            while pending.len() >= work.confirm_window {
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
    let (consumed_at, samples) = consumer_task.await??;

    publisher.queue_delete(queue.into(), QueueDeleteOptions::default()).await?;
    let _ = pub_conn.close(200, "done".into()).await;
    let _ = sub_conn.close(200, "done".into()).await;
    Ok(Outcome { started, published_at, consumed_at, samples, nacked })
}
