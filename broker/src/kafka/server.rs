//! Accepts Kafka connections and answers their requests in request order (Kafka clients rely
//! on it). A connection reads and handles its requests one after another, but it does not
//! wait for an acks=all produce's ISR before reading the next request: the responses queue in
//! order and each goes out when it is complete. Kafka itself reads nothing more from a
//! connection until it has answered; pipelining lets a producer's in-flight requests share
//! the replication round trip instead of paying it one by one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::messages::ApiKey;

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::codec::{self, CodecError, FramePart};
use super::context::KafkaContext;
use super::file_records;
use super::handlers::{self, Reply};
use super::low_water::RecvLowWater;

pub async fn serve(listener: TcpListener, ctx: Arc<KafkaContext>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "kafka accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            match connection(stream, peer, ctx).await {
                Ok(()) => {}
                // A client going away mid-request is ordinary; a bad request is worth a line.
                Err(CodecError::Io(e)) => tracing::debug!(%peer, error = %e, "Kafka connection ended"),
                Err(e) => tracing::info!(%peer, error = %e, "closing Kafka connection"),
            }
        });
    }
}

/// How many answered-or-waiting requests a connection holds before it stops reading: enough
/// for librdkafka's five in-flight idempotent produce requests and then some.
const PIPELINE_DEPTH: usize = 16;

async fn connection(stream: TcpStream, peer: SocketAddr, ctx: Arc<KafkaContext>) -> Result<(), CodecError> {
    stream.set_nodelay(true)?;
    // As Kafka reports a group member's host (its InetAddress's toString): "/" and the address.
    let client_host = format!("/{}", peer.ip());
    let (r, w) = stream.into_split();
    let (replies, queued) = mpsc::channel(PIPELINE_DEPTH);
    ctx.metrics.connections.inc();
    // Both halves run in this task: the reader handles requests in order (appends included),
    // the writer sends their responses in the same order, waiting for a produce's ISR where
    // needed. An error on either side ends both.
    let served = tokio::try_join!(read_requests(r, &ctx, &client_host, replies), write_responses(w, &ctx, queued));
    ctx.metrics.connections.dec();
    served?;
    Ok(())
}

async fn read_requests(
    r: OwnedReadHalf,
    ctx: &Arc<KafkaContext>,
    client_host: &str,
    replies: mpsc::Sender<Queued>,
) -> Result<(), CodecError> {
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut mark = RecvLowWater::default();
    while let Some(mut frame) = codec::read_socket_frame(&mut r, ctx.config.max_request_bytes, &mut mark).await? {
        let read_at = Instant::now();
        let (api_key, header) = codec::decode_header(&mut frame)?;
        let reply = handlers::handle(ctx, api_key, &header, client_host, frame).await?;
        if replies.send(Queued { reply, api_key, read_at }).await.is_err() {
            // The writer failed; its error is the one reported.
            break;
        }
    }
    Ok(())
}

/// A handled request on its way to the writer, with what its latency is measured by.
struct Queued {
    reply: Reply,
    api_key: ApiKey,
    read_at: Instant,
}

async fn write_responses(
    w: OwnedWriteHalf,
    ctx: &KafkaContext,
    mut queued: mpsc::Receiver<Queued>,
) -> Result<(), CodecError> {
    let mut w = BufWriter::with_capacity(64 * 1024, w);
    while let Some(Queued { reply, api_key, read_at }) = queued.recv().await {
        let response = match reply {
            Reply::None => None,
            Reply::Now(frame) => Some(frame),
            Reply::Later(waiting) => waiting.await?,
        };
        if let Some(response) = response {
            // Small parts gather in the 64 KiB buffer; a part as large as the buffer (fetched
            // records) goes from its own memory to the socket, and a file range (fetched
            // records too) from the page cache with sendfile, after what precedes it.
            for part in response.parts() {
                match part {
                    FramePart::Bytes(b) => w.write_all(b).await?,
                    FramePart::File(slice) => {
                        w.flush().await?;
                        file_records::send_file(w.get_ref().as_ref(), slice).await?;
                    }
                }
            }
            // Responses already queued behind this one share its flush.
            if queued.is_empty() {
                w.flush().await?;
            }
        }
        ctx.metrics.observe(api_key, read_at.elapsed().as_secs_f64());
    }
    w.flush().await?;
    Ok(())
}
