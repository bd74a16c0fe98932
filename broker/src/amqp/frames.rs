//! Frame reading and writing. Method and content-header payloads are decoded and encoded
//! by `amq-protocol`; the framing around them (type, channel, size, frame-end), the
//! frame_max check and body frames are handled here so that body bytes stay in `Bytes`
//! (no copy into a `Vec` per frame) and bodies are split by the negotiated frame_max.

use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic::AMQPProperties, AMQPClass};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::errors::{code, AmqpException};

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// Frame header (type, channel, size) plus the frame-end octet.
pub const FRAME_OVERHEAD: usize = 8;
/// The protocol header a 0-9-1 client sends and the one we answer a wrong header with.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";

/// One frame from the client.
#[derive(Debug)]
pub enum InFrame {
    Method(u16, AMQPClass),
    Header(u16, AMQPContentHeader),
    Body(u16, Bytes),
    Heartbeat,
}

/// Why reading a frame failed: the socket, or a frame the spec calls a connection error.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(AmqpException),
}

/// Read one frame. `frame_max` bounds the payload (0 = the spec's unlimited, which we cap
/// at our own maximum before tune-ok).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, frame_max: u32) -> Result<InFrame, FrameError> {
    let mut head = [0u8; 7];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let kind = head[0];
    let channel = u16::from_be_bytes([head[1], head[2]]);
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]);
    let frame_error = |text: String| FrameError::Protocol(AmqpException::connection(code::FRAME_ERROR, text, None));
    if frame_max != 0 && size as u64 + FRAME_OVERHEAD as u64 > frame_max as u64 {
        return Err(frame_error(format!("frame size {size} larger than the negotiated frame_max {frame_max}")));
    }
    let mut payload = BytesMut::zeroed(size as usize + 1);
    r.read_exact(&mut payload).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            e.into()
        }
    })?;
    if payload[size as usize] != FRAME_END {
        return Err(frame_error(format!("frame end octet is {:#04x}, not 0xce", payload[size as usize])));
    }
    payload.truncate(size as usize);
    let payload = payload.freeze();
    match kind {
        FRAME_METHOD => match amq_protocol::protocol::parse_class(&payload[..]) {
            Ok((rest, class)) if rest.is_empty() => Ok(InFrame::Method(channel, class)),
            _ => Err(FrameError::Protocol(method_parse_error(&payload))),
        },
        FRAME_HEADER => match amq_protocol::frame::parsing::parse_content_header(&payload[..]) {
            Ok((rest, header)) if rest.is_empty() => Ok(InFrame::Header(channel, header)),
            _ => Err(frame_error("malformed content header frame".into())),
        },
        FRAME_BODY => Ok(InFrame::Body(channel, payload)),
        FRAME_HEARTBEAT => {
            if channel != 0 {
                return Err(frame_error(format!("heartbeat frame on channel {channel}")));
            }
            Ok(InFrame::Heartbeat)
        }
        other => Err(frame_error(format!("unknown frame type {other}"))),
    }
}

/// A method frame we could not decode: an unknown class or method is COMMAND_INVALID (as
/// RabbitMQ answers), a known one with bad arguments is a FRAME_ERROR.
fn method_parse_error(payload: &[u8]) -> AmqpException {
    let class_id = payload.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let method_id = payload.get(2..4).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let known_class = matches!(class_id, 10 | 20 | 30 | 40 | 50 | 60 | 85 | 90);
    let mut e = if known_class {
        AmqpException::connection(
            code::FRAME_ERROR,
            format!("cannot decode method frame (class {class_id}, method {method_id})"),
            None,
        )
    } else {
        AmqpException::connection(code::COMMAND_INVALID, format!("unknown class {class_id}"), None)
    };
    e.class_id = class_id;
    e.method_id = method_id;
    e
}

/// Encode a method frame.
pub fn method_frame(channel: u16, method: AMQPClass) -> Bytes {
    encode(&AMQPFrame::Method(channel, method))
}

/// Encode a heartbeat frame.
pub fn heartbeat_frame() -> Bytes {
    Bytes::from_static(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END])
}

fn encode(frame: &AMQPFrame) -> Bytes {
    let ctx = WriteContext::from(Vec::with_capacity(128));
    // Writing into a Vec cannot fail short of a frame larger than memory.
    let (buf, _) = gen_frame(frame)(ctx).expect("encoding a frame into a Vec").into_inner();
    Bytes::from(buf)
}

/// Encode a content (header frame and body frames split by `frame_max`) after `method`,
/// as one contiguous buffer so the three reach the socket together.
pub fn content_frames(
    channel: u16,
    method: AMQPClass,
    properties: &AMQPProperties,
    body: &Bytes,
    frame_max: u32,
) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 256);
    out.extend_from_slice(&encode(&AMQPFrame::Method(channel, method)));
    out.extend_from_slice(&encode(&AMQPFrame::Header(
        channel,
        AMQPContentHeader { class_id: 60, body_size: body.len() as u64, properties: properties.clone() },
    )));
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for part in body.chunks(chunk) {
        out.put_u8(FRAME_BODY);
        out.put_u16(channel);
        out.put_u32(part.len() as u32);
        out.extend_from_slice(part);
        out.put_u8(FRAME_END);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic;

    #[tokio::test]
    async fn content_is_split_by_frame_max_and_read_back() {
        let body = Bytes::from(vec![7u8; 10_000]);
        let method = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: "c".into(),
            delivery_tag: 1,
            redelivered: false,
            exchange: "".into(),
            routing_key: "q".into(),
        }));
        let bytes = content_frames(1, method.clone(), &AMQPProperties::default(), &body, 4096);
        let mut r = &bytes[..];
        assert!(matches!(read_frame(&mut r, 4096).await.unwrap(), InFrame::Method(1, m) if m == method));
        assert!(matches!(read_frame(&mut r, 4096).await.unwrap(), InFrame::Header(1, h) if h.body_size == 10_000));
        let mut got = Vec::new();
        while !r.is_empty() {
            match read_frame(&mut r, 4096).await.unwrap() {
                InFrame::Body(1, b) => {
                    assert!(b.len() <= 4096 - FRAME_OVERHEAD);
                    got.extend_from_slice(&b)
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, body);
    }

    #[tokio::test]
    async fn oversized_and_badly_terminated_frames_are_frame_errors() {
        let big = [FRAME_BODY, 0, 1, 0, 0, 0x20, 0, 0];
        match read_frame(&mut &big[..], 4096).await {
            Err(FrameError::Protocol(e)) => assert_eq!(e.code, code::FRAME_ERROR),
            other => panic!("{other:?}"),
        }
        let bad_end = [FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, 0];
        match read_frame(&mut &bad_end[..], 4096).await {
            Err(FrameError::Protocol(e)) => assert_eq!(e.code, code::FRAME_ERROR),
            other => panic!("{other:?}"),
        }
        assert!(matches!(read_frame(&mut &heartbeat_frame()[..], 4096).await.unwrap(), InFrame::Heartbeat));
    }
}
