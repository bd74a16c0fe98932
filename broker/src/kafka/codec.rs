//! Kafka framing: a 4-byte big-endian size, then the request header (whose version depends
//! on the API key and version) and the body. Responses mirror it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;

use super::low_water::RecvLowWater;

use crate::log::LogSlice;

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
    read_frame_then(r, max, |_, _| Ok(())).await
}

/// `read_frame` from a socket, woken once the body has arrived rather than at every segment of
/// it (see `low_water`). `mark` is the socket's; it is back at 1 when this returns.
pub async fn read_socket_frame(
    r: &mut BufReader<OwnedReadHalf>,
    max: usize,
    mark: &mut RecvLowWater,
) -> Result<Option<Bytes>, CodecError> {
    let read = read_frame_then(r, max, |r, rest| {
        // What is already read ahead in the buffer is not in the socket any more.
        let in_socket = rest.saturating_sub(r.buffer().len());
        mark.set(r.get_ref(), in_socket)
    })
    .await;
    let reset = mark.set(r.get_ref(), 1);
    let frame = read?;
    reset?;
    Ok(frame)
}

/// `read_frame`, calling `before_read(r, bytes of the body still to read)` before each read of
/// the body.
async fn read_frame_then<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
    mut before_read: impl FnMut(&R, usize) -> std::io::Result<()>,
) -> Result<Option<Bytes>, CodecError> {
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
        before_read(frame.get_ref(), size - buf.len())?;
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
    let mut header = RequestHeader::decode(frame, header_version).map_err(|e| CodecError::Malformed(e.to_string()))?;
    // The client id is a slice of the frame; a copy of its few bytes lets the frame have one
    // holder again, so a produce can write its records in place (handlers/produce.rs).
    header.client_id = header.client_id.map(|c| StrBytes::from_string(c.as_str().to_string()));
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

/// One part of an encoded response frame, as it goes to the socket.
#[derive(Debug, Clone)]
pub enum FramePart {
    /// Bytes in memory.
    Bytes(Bytes),
    /// A range of a segment file (fetched records), sent from the page cache by `sendfile`
    /// without passing through user space.
    File(LogSlice),
}

impl FramePart {
    pub fn len(&self) -> usize {
        match self {
            FramePart::Bytes(b) => b.len(),
            FramePart::File(s) => s.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A large `Bytes` field of a response body that is not copied into the encoded bytes: when
/// the encoder writes `body` (recognised by address and length), `wire` becomes a part of the
/// frame instead. `wire` is `body` itself for records in memory, or the file range that the
/// placeholder `body` stands for (`kafka::file_records`).
#[derive(Debug, Clone)]
pub struct SharedPart {
    pub body: Bytes,
    pub wire: FramePart,
}

impl SharedPart {
    /// Records in memory, shared rather than copied.
    pub fn bytes(b: Bytes) -> Self {
        SharedPart { wire: FramePart::Bytes(b.clone()), body: b }
    }
}

/// An encoded response frame (size, header, body) as consecutive parts, written in order.
/// Large `Bytes` fields of the body (the records of a fetch) are parts of their own,
/// shared with the response rather than copied into the encoded bytes.
#[derive(Debug, Default)]
pub struct ResponseFrame {
    parts: Vec<FramePart>,
}

impl ResponseFrame {
    pub fn parts(&self) -> &[FramePart] {
        &self.parts
    }

    /// Bytes on the wire, size prefix included.
    pub fn len(&self) -> usize {
        self.parts.iter().map(FramePart::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The whole frame in one buffer, file parts read in (a copy; for tests and diagnostics).
    pub fn to_bytes(&self) -> std::io::Result<Bytes> {
        if let [FramePart::Bytes(one)] = self.parts.as_slice() {
            return Ok(one.clone());
        }
        let mut out = Vec::with_capacity(self.len());
        for part in &self.parts {
            match part {
                FramePart::Bytes(b) => out.extend_from_slice(b),
                FramePart::File(s) => s.read_into(&mut out)?,
            }
        }
        Ok(out.into())
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
    shared: &[SharedPart],
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
    let shared_len: usize = shared.iter().map(|s| s.body.len()).sum();
    let mut buf = GatherBuf {
        head: BytesMut::with_capacity(4 + size.saturating_sub(shared_len)),
        parts: Vec::new(),
        sealed: 0,
        shared,
        matched_files: 0,
    };
    buf.put_i32(size_i32);
    header.encode(&mut buf, header_version).map_err(malformed)?;
    body.encode(&mut buf, version).map_err(malformed)?;
    if buf.offset() != 4 + size {
        return Err(CodecError::Malformed(format!("encoded {} bytes, computed {}", buf.offset() - 4, size)));
    }
    // A file part's body is a placeholder: had the encoder copied it instead of handing it
    // to `put_slice` whole, the frame would carry its zeros instead of the records.
    let files = shared.iter().filter(|s| matches!(s.wire, FramePart::File(_))).count();
    if buf.matched_files != files {
        return Err(CodecError::Malformed(format!(
            "{} of {files} file-backed records were not written as parts",
            files - buf.matched_files
        )));
    }
    let GatherBuf { head, mut parts, .. } = buf;
    if !head.is_empty() {
        parts.push(FramePart::Bytes(head.freeze()));
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
    parts: Vec<FramePart>,
    /// Bytes in `parts`, i.e. the offset at which `head` starts.
    sealed: usize,
    shared: &'a [SharedPart],
    /// File parts found so far (each placeholder is written once).
    matched_files: usize,
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
            if let Some(s) = self.shared.iter().find(|s| s.body.as_ptr() == src.as_ptr() && s.body.len() == src.len()) {
                if !self.head.is_empty() {
                    self.sealed += self.head.len();
                    self.parts.push(FramePart::Bytes(self.head.split().freeze()));
                }
                self.sealed += s.body.len();
                if matches!(s.wire, FramePart::File(_)) {
                    self.matched_files += 1;
                }
                self.parts.push(s.wire.clone());
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
    use std::time::Duration;

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

    fn is_part(frame: &ResponseFrame, b: &Bytes) -> bool {
        frame.parts().iter().any(|p| matches!(p, FramePart::Bytes(p) if p.as_ptr() == b.as_ptr() && p.len() == b.len()))
    }

    #[test]
    fn shared_records_are_parts_of_their_own_and_the_bytes_match_a_plain_encode() {
        let big = Bytes::from((0..100_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let small = Bytes::from_static(b"small records stay in the encoded part");
        let other = Bytes::from(vec![7u8; 8192]);
        let records = [big.clone(), small.clone(), other.clone()];
        let shared: Vec<SharedPart> = records.iter().cloned().map(SharedPart::bytes).collect();
        for version in [4i16, 11, 12] {
            let resp = fetch_response(&records);
            let frame = encode_response_sharing(ApiKey::Fetch, version, 9, &resp, &shared).unwrap();
            assert_eq!(frame.to_bytes().unwrap().as_ref(), plain(version, 9, &resp).as_slice(), "v{version}");
            // The large records are shared, not copied; the small ones are below the threshold.
            assert!(is_part(&frame, &big));
            assert!(is_part(&frame, &other));
            assert!(!is_part(&frame, &small));
            // head, big, the middle (second partition and its small records), other, and from
            // v12 on a tail (the last partition's tagged fields).
            assert_eq!(frame.parts().len(), if version >= 12 { 5 } else { 4 }, "v{version}");
        }
    }

    /// A file part: the body holds a placeholder of the right length, the wire the file range;
    /// the frame read back equals a plain encode of the file's bytes.
    #[test]
    fn file_records_go_out_as_file_parts_with_the_right_framing() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.log");
        let content: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"0123456789").unwrap();
        f.write_all(&content).unwrap();
        drop(f);
        let file = std::sync::Arc::new(std::fs::File::open(&path).unwrap());
        let slice = LogSlice { file, position: 10, len: content.len(), first_batch_offset: 0 };
        let mut placeholders = crate::kafka::file_records::Placeholders::default();
        let placeholder = placeholders.take(content.len()).unwrap();
        let second = placeholders.take(content.len()).unwrap();
        assert_ne!(placeholder.as_ptr(), second.as_ptr(), "placeholders of one response never alias");
        let shared = vec![SharedPart { body: placeholder.clone(), wire: FramePart::File(slice) }];
        for version in [4i16, 12] {
            let resp = fetch_response(std::slice::from_ref(&placeholder));
            let frame = encode_response_sharing(ApiKey::Fetch, version, 3, &resp, &shared).unwrap();
            assert!(frame.parts().iter().any(|p| matches!(p, FramePart::File(_))));
            let expected = plain(version, 3, &fetch_response(&[Bytes::from(content.clone())]));
            assert_eq!(frame.to_bytes().unwrap().as_ref(), expected.as_slice(), "v{version}");
            assert_eq!(frame.len(), expected.len());
        }
        // A placeholder the body does not hold is an error, not a frame of zeros.
        let resp = fetch_response(&[Bytes::from(vec![0u8; content.len()])]);
        assert!(encode_response_sharing(ApiKey::Fetch, 12, 3, &resp, &shared).is_err());
    }

    #[test]
    fn a_response_without_shared_buffers_is_one_part() {
        let resp = fetch_response(&[Bytes::from(vec![1u8; 10_000])]);
        let frame = encode_response(ApiKey::Fetch, 12, 1, &resp).unwrap();
        assert_eq!(frame.parts().len(), 1);
        assert_eq!(frame.to_bytes().unwrap().as_ref(), plain(12, 1, &resp).as_slice());
    }

    /// A connected pair on loopback: the reading half as the server and fetcher hold it, and
    /// the peer's stream.
    async fn socket_pair() -> (BufReader<OwnedReadHalf>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        let (r, w) = ours.into_split();
        std::mem::forget(w); // keep our side open for writing: the peer must not see an end
        (BufReader::with_capacity(64 * 1024, r), peer)
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut wire = (payload.len() as i32).to_be_bytes().to_vec();
        wire.extend_from_slice(payload);
        wire
    }

    /// The low-water mark must never ask for more than the peer still has to send of the frame:
    /// here part of the body is already in the reader's buffer when the rest is awaited, and a
    /// small frame follows a large one with nothing after it, which a mark left high after the
    /// large frame would wait for forever.
    #[tokio::test]
    async fn a_socket_frame_never_waits_for_bytes_the_peer_will_not_send() {
        use tokio::io::AsyncWriteExt;
        let (mut r, mut peer) = socket_pair().await;
        let large: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let wire = framed(&large);
        let writer = tokio::spawn(async move {
            // The size and the first 10 KiB, which the reader's buffer takes in one read.
            peer.write_all(&wire[..4 + 10_240]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            peer.write_all(&wire[4 + 10_240..]).await.unwrap();
            peer.write_all(&framed(b"small")).await.unwrap();
            peer // not closed: a read waiting for more would hang
        });
        let mut mark = RecvLowWater::default();
        let limit = Duration::from_secs(5);
        let first = tokio::time::timeout(limit, read_socket_frame(&mut r, 1 << 20, &mut mark)).await;
        assert_eq!(first.expect("the large frame within 5 s").unwrap().unwrap().as_ref(), &large[..]);
        assert_eq!(mark.current(), 1, "the mark is back at 1 after a frame");
        let second = tokio::time::timeout(limit, read_socket_frame(&mut r, 1 << 20, &mut mark)).await;
        assert_eq!(second.expect("the small frame within 5 s").unwrap().unwrap().as_ref(), b"small");
        drop(writer.await.unwrap());
        assert_eq!(read_socket_frame(&mut r, 1 << 20, &mut mark).await.unwrap(), None, "a clean end between frames");
    }

    /// While a large body is awaited the mark is what the socket still has to deliver, so the
    /// reader is woken once for it rather than at every segment.
    #[tokio::test]
    async fn a_socket_frame_sets_the_mark_to_the_rest_of_its_body() {
        use std::os::fd::AsRawFd;
        use tokio::io::AsyncWriteExt;
        let (mut r, mut peer) = socket_pair().await;
        let fd = r.get_ref().as_ref().as_raw_fd();
        let body = vec![7u8; 200_000];
        let wire = framed(&body);
        peer.write_all(&wire[..4 + 1_000]).await.unwrap();
        let mut mark = RecvLowWater::default();
        let reading = read_socket_frame(&mut r, 1 << 20, &mut mark);
        tokio::pin!(reading);
        // Let the read take the size and the first bytes and then wait for the rest.
        assert!(tokio::time::timeout(Duration::from_millis(100), &mut reading).await.is_err());
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `value`.
        let rc = unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, (&mut value as *mut libc::c_int).cast(), &mut len)
        };
        assert_eq!(rc, 0);
        assert_eq!(value as usize, 200_000 - 1_000, "the mark is the rest of the body");
        peer.write_all(&wire[4 + 1_000..]).await.unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(5), reading).await.expect("the frame within 5 s");
        assert_eq!(frame.unwrap().unwrap().len(), 200_000);
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
