//! A Kafka client connection from this broker to another broker's Kafka listener, as Kafka's
//! inter-broker clients have: one request at a time, each answer read before the next
//! request. The replica fetchers use it, and so does the consumer-lag collector to ask
//! partition leaders for their high watermarks.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::cluster::{ClusterNode, NodeId};
use crate::kafka::low_water::RecvLowWater;

/// A response later than this (peer stopped, network gone) drops the connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("broker {0} is not in the metadata image")]
    UnknownBroker(NodeId),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// One connection to a broker's Kafka listener: request/response in order on one socket.
pub struct PeerConnection {
    r: BufReader<OwnedReadHalf>,
    /// The socket's receive low-water mark: a large response (a fetch) wakes the reader once
    /// it is all there, not at every loopback segment of it.
    low_water: RecvLowWater,
    w: OwnedWriteHalf,
    correlation_id: i32,
    client_id: StrBytes,
}

impl PeerConnection {
    pub async fn open(cluster: &ClusterNode, broker: NodeId, client_id: String) -> Result<Self, PeerError> {
        let addr = {
            let image = cluster.image();
            image.brokers.get(&broker).map(|b| b.kafka_addr.clone()).ok_or(PeerError::UnknownBroker(broker))?
        };
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(&addr))
            .await
            .map_err(|_| PeerError::Timeout(REQUEST_TIMEOUT))??;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        tracing::info!(broker, %addr, client_id, "connected to a broker's Kafka listener");
        Ok(Self {
            // Small: a fetched range larger than the buffer is read straight into its frame,
            // so only the first few KiB of each response are copied twice.
            r: BufReader::with_capacity(16 * 1024, r),
            low_water: RecvLowWater::default(),
            w,
            correlation_id: 0,
            client_id: StrBytes::from_string(client_id),
        })
    }

    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Result<Resp, PeerError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let mut header = RequestHeader::default();
        header.request_api_key = api_key as i16;
        header.request_api_version = version;
        header.correlation_id = self.correlation_id;
        header.client_id = Some(self.client_id.clone());
        let mut buf = BytesMut::with_capacity(512);
        buf.put_i32(0);
        let proto = |e: anyhow::Error| PeerError::Protocol(e.to_string());
        header.encode(&mut buf, api_key.request_header_version(version)).map_err(proto)?;
        req.encode(&mut buf, version).map_err(proto)?;
        let size = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        let exchange = async {
            self.w.write_all(&buf).await?;
            let frame = crate::kafka::codec::read_socket_frame(&mut self.r, MAX_RESPONSE_BYTES, &mut self.low_water)
                .await
                .map_err(|e| PeerError::Protocol(e.to_string()))?;
            frame.ok_or_else(|| PeerError::Protocol("the broker closed the connection".into()))
        };
        let mut frame: Bytes = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| PeerError::Timeout(REQUEST_TIMEOUT))??;
        let rh = ResponseHeader::decode(&mut frame, api_key.response_header_version(version)).map_err(proto)?;
        if rh.correlation_id != self.correlation_id {
            return Err(PeerError::Protocol(format!(
                "correlation id {} does not match {}",
                rh.correlation_id, self.correlation_id
            )));
        }
        Resp::decode(&mut frame, version).map_err(proto)
    }
}
