//! Kafka framing: a 4-byte big-endian size, then the request header (whose version depends
//! on the API key and version) and the body. Responses mirror it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::buf::ByteBufMut;
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
    // Read into the spare capacity (no zero-filling of up to 100 MiB first), and never past
    // this frame: the next one stays in the reader.
    let mut buf = BytesMut::with_capacity(size);
    let mut frame = r.take(size as u64);
    while buf.len() < size {
        if frame.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
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

/// An encoded response frame (size, header, body) as consecutive parts, written in order.
/// Large `Bytes` fields of the body (the records of a fetch) are parts of their own,
/// shared with the response rather than copied into the encoded bytes.
#[derive(Debug, Default)]
pub struct ResponseFrame {
    parts: Vec<Bytes>,
}

impl ResponseFrame {
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// Bytes on the wire, size prefix included.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The whole frame in one buffer (a copy; for tests and diagnostics).
    pub fn to_bytes(&self) -> Bytes {
        match self.parts.as_slice() {
            [one] => one.clone(),
            parts => parts
                .iter()
                .fold(BytesMut::with_capacity(self.len()), |mut b, p| {
                    b.extend_from_slice(p);
                    b
                })
                .freeze(),
        }
    }
}

/// Encode a complete response frame (size, header, body).
pub fn encode_response<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<ResponseFrame, CodecError> {
    encode_response_sharing(api_key, version, correlation_id, body, &[])
}

/// Encode a complete response frame whose body holds the `shared` buffers (e.g. fetched
/// records) somewhere in its fields: those become parts of the frame without being copied.
pub fn encode_response_sharing<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
    shared: &[Bytes],
) -> Result<ResponseFrame, CodecError> {
    // ApiVersions answers always use header v0, so a client can read an error about the version.
    let header_version = if api_key == ApiKey::ApiVersions { 0 } else { api_key.response_header_version(version) };
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let malformed = |e: anyhow::Error| CodecError::Malformed(e.to_string());
    // Sizes first: one allocation of the right size, and the frame size known up front.
    let size =
        header.compute_size(header_version).map_err(malformed)? + body.compute_size(version).map_err(malformed)?;
    let size_i32 = i32::try_from(size).map_err(|_| CodecError::Malformed(format!("response of {size} bytes")))?;
    let shared_len: usize = shared.iter().map(Bytes::len).sum();
    let mut buf = GatherBuf {
        head: BytesMut::with_capacity(4 + size.saturating_sub(shared_len)),
        parts: Vec::new(),
        sealed: 0,
        shared,
    };
    buf.put_i32(size_i32);
    header.encode(&mut buf, header_version).map_err(malformed)?;
    body.encode(&mut buf, version).map_err(malformed)?;
    if buf.offset() != 4 + size {
        return Err(CodecError::Malformed(format!("encoded {} bytes, computed {}", buf.offset() - 4, size)));
    }
    let GatherBuf { head, mut parts, .. } = buf;
    if !head.is_empty() {
        parts.push(head.freeze());
    }
    Ok(ResponseFrame { parts })
}

/// A `put_slice` of at least this many bytes is looked up among the shared buffers.
const SHARE_MIN_BYTES: usize = 4096;

/// The encoder's output buffer: encoded bytes accumulate in `head`; a `put_slice` of one of the
/// `shared` buffers (recognised by address and length) seals `head` as a part and adds the
/// shared buffer as the next part, with no copy.
struct GatherBuf<'a> {
    head: BytesMut,
    parts: Vec<Bytes>,
    /// Bytes in `parts`, i.e. the offset at which `head` starts.
    sealed: usize,
    shared: &'a [Bytes],
}

// SAFETY: every method that hands out or advances writable memory delegates to `head`, a
// `BytesMut`, whose `BufMut` implementation upholds the contract.
unsafe impl BufMut for GatherBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.head.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: forwarded; the caller initialised `cnt` bytes of `head.chunk_mut()`.
        unsafe { self.head.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        self.head.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= SHARE_MIN_BYTES {
            if let Some(b) = self.shared.iter().find(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len()) {
                if !self.head.is_empty() {
                    self.sealed += self.head.len();
                    self.parts.push(self.head.split().freeze());
                }
                self.sealed += b.len();
                self.parts.push(b.clone());
                return;
            }
        }
        self.head.extend_from_slice(src);
    }
}

// Gaps (seek back and fill) only ever reach into `head`: the encoders use them for record
// batches they build themselves, never around a shared buffer.
impl ByteBufMut for GatherBuf<'_> {
    fn offset(&self) -> usize {
        self.sealed + self.head.len()
    }

    fn seek(&mut self, offset: usize) {
        self.head.resize(offset.checked_sub(self.sealed).expect("seek before a shared part"), 0);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        let start = r.start.checked_sub(self.sealed).expect("range before a shared part");
        &mut self.head[start..r.end - self.sealed]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn fetch_response(records: &[Bytes]) -> FetchResponse {
        let mut topic = FetchableTopicResponse::default();
        topic.topic = TopicName(StrBytes::from_static_str("t"));
        topic.partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut p = PartitionData::default();
                p.partition_index = i as i32;
                p.high_watermark = 42;
                p.records = Some(r.clone());
                p
            })
            .collect();
        let mut resp = FetchResponse::default();
        resp.responses = vec![topic];
        resp
    }

    /// The frame as the encoder alone writes it into one buffer.
    fn plain(version: i16, corr: i32, body: &FetchResponse) -> Vec<u8> {
        let mut out = BytesMut::new();
        let mut header = ResponseHeader::default();
        header.correlation_id = corr;
        header.encode(&mut out, ApiKey::Fetch.response_header_version(version)).unwrap();
        body.encode(&mut out, version).unwrap();
        let mut framed = (out.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&out);
        framed
    }

    #[test]
    fn shared_records_are_parts_of_their_own_and_the_bytes_match_a_plain_encode() {
        let big = Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let small = Bytes::from_static(b"small records stay in the encoded part");
        let other = Bytes::from(vec![7u8; 8192]);
        let records = [big.clone(), small.clone(), other.clone()];
        for version in [4i16, 11, 12] {
            let resp = fetch_response(&records);
            let frame = encode_response_sharing(ApiKey::Fetch, version, 9, &resp, &records).unwrap();
            assert_eq!(frame.to_bytes().as_ref(), plain(version, 9, &resp).as_slice(), "v{version}");
            // The large records are shared, not copied; the small ones are below the threshold.
            assert!(frame.parts().iter().any(|p| p.as_ptr() == big.as_ptr() && p.len() == big.len()));
            assert!(frame.parts().iter().any(|p| p.as_ptr() == other.as_ptr()));
            assert!(!frame.parts().iter().any(|p| p.as_ptr() == small.as_ptr()));
            // head, big, the middle (second partition and its small records), other, and from
            // v12 on a tail (the last partition's tagged fields).
            assert_eq!(frame.parts().len(), if version >= 12 { 5 } else { 4 }, "v{version}");
        }
    }

    #[test]
    fn a_response_without_shared_buffers_is_one_part() {
        let resp = fetch_response(&[Bytes::from(vec![1u8; 10_000])]);
        let frame = encode_response(ApiKey::Fetch, 12, 1, &resp).unwrap();
        assert_eq!(frame.parts().len(), 1);
        assert_eq!(frame.to_bytes().as_ref(), plain(12, 1, &resp).as_slice());
    }

    #[tokio::test]
    async fn read_frame_reads_one_frame_and_leaves_the_next() {
        let mut wire = Vec::new();
        for payload in [&b"first frame"[..], &[5u8; 70_000][..], b""] {
            wire.extend_from_slice(&(payload.len() as i32).to_be_bytes());
            wire.extend_from_slice(payload);
        }
        wire.extend_from_slice(&[0, 0, 0, 9, 1, 2]); // a frame cut short
        let mut r = std::io::Cursor::new(wire);
        assert_eq!(read_frame(&mut r, 1 << 20).await.unwrap().unwrap().as_ref(), b"first frame");
        assert_eq!(read_frame(&mut r, 1 << 20).await.unwrap().unwrap().as_ref(), &[5u8; 70_000][..]);
        assert_eq!(read_frame(&mut r, 1 << 20).await.unwrap().unwrap().len(), 0);
        assert!(matches!(read_frame(&mut r, 1 << 20).await, Err(CodecError::Io(_))));
    }
}
