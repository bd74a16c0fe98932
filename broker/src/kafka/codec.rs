//! Kafka framing: a 4-byte big-endian size, then the request header (whose version depends
//! on the API key and version) and the body. Responses mirror it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("request of {size} bytes is larger than socket.request.max.bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("negative frame size {0}")]
    NegativeSize(i32),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Read one frame. `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Option<Bytes>, CodecError> {
    let size = match r.read_i32().await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if size < 0 {
        return Err(CodecError::NegativeSize(size));
    }
    let size = size as usize;
    if size > max {
        return Err(CodecError::TooLarge { size, max });
    }
    let mut buf = BytesMut::zeroed(size);
    r.read_exact(&mut buf).await?;
    Ok(Some(buf.freeze()))
}

/// Decode the request header at the front of `frame`, leaving the body in it.
pub fn decode_header(frame: &mut Bytes) -> Result<(ApiKey, RequestHeader), CodecError> {
    if frame.len() < 4 {
        return Err(CodecError::Malformed(format!("{} bytes is too short for a request header", frame.len())));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(key).map_err(|_| CodecError::UnknownApiKey(key))?;
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(frame, header_version).map_err(|e| CodecError::Malformed(e.to_string()))?;
    Ok((api_key, header))
}

/// Decode a request body of `version`. Trailing bytes are ignored, as Kafka's own parser
/// ignores them: librdkafka's flexible-version Metadata request for all topics carries
/// three bytes after the fields (its reserved array-count space), and Kafka accepts it.
pub fn decode_body<T: Decodable>(body: &mut Bytes, version: i16) -> Result<T, CodecError> {
    let value = T::decode(body, version).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if body.has_remaining() {
        tracing::trace!(bytes = body.remaining(), "ignoring bytes after the request body");
    }
    Ok(value)
}

/// Encode a complete response frame (size, header, body).
pub fn encode_response<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<BytesMut, CodecError> {
    // ApiVersions answers always use header v0, so a client can read an error about the version.
    let header_version = if api_key == ApiKey::ApiVersions { 0 } else { api_key.response_header_version(version) };
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header.encode(&mut buf, header_version).map_err(|e| CodecError::Malformed(e.to_string()))?;
    body.encode(&mut buf, version).map_err(|e| CodecError::Malformed(e.to_string()))?;
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf)
}
