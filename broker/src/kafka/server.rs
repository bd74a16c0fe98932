//! Accepts Kafka connections and answers their requests in order, one at a time per
//! connection (Kafka clients rely on responses arriving in request order).

use std::sync::Arc;

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

use super::codec::{self, CodecError, FramePart};
use super::context::KafkaContext;
use super::{file_records, handlers};

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
            match connection(stream, ctx).await {
                Ok(()) => {}
                // A client going away mid-request is ordinary; a bad request is worth a line.
                Err(CodecError::Io(e)) => tracing::debug!(%peer, error = %e, "Kafka connection ended"),
                Err(e) => tracing::info!(%peer, error = %e, "closing Kafka connection"),
            }
        });
    }
}

async fn connection(stream: TcpStream, ctx: Arc<KafkaContext>) -> Result<(), CodecError> {
    stream.set_nodelay(true)?;
    let (r, w) = stream.into_split();
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut w = BufWriter::with_capacity(64 * 1024, w);
    while let Some(mut frame) = codec::read_frame(&mut r, ctx.config.max_request_bytes).await? {
        let (api_key, header) = codec::decode_header(&mut frame)?;
        if let Some(response) = handlers::handle(&ctx, api_key, &header, frame).await? {
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
            w.flush().await?;
        }
    }
    Ok(())
}
