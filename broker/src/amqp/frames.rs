//! Frame reading and writing. Method and content-header payloads are decoded and encoded
//! by `amq-protocol`; the framing around them (type, channel, size, frame-end), the
//! frame_max check and body frames are handled here so that body bytes stay in `Bytes`
//! (no copy into a `Vec` per frame) and bodies are split by the negotiated frame_max.

use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic::AMQPProperties, AMQPClass};
use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::errors::{code, AmqpException};

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// Frame header (type, channel, size) plus the frame-end octet.
pub const FRAME_OVERHEAD: usize = 8;
/// Bodies up to this size are copied out of the read buffer (see [`parse_frame`]).
const COPY_BODY_BELOW: usize = 512;
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

/// Take one whole frame off the front of `buf`, or None when `buf` does not hold one yet.
/// `frame_max` bounds the payload (0 = the spec's unlimited, which we cap at our own maximum
/// before tune-ok). Body payloads are slices of the read buffer (no copy) unless small:
/// those are copied so that a long-queued small message does not pin a whole read buffer.
pub fn parse_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<InFrame>, FrameError> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let kind = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    let frame_error = |text: String| FrameError::Protocol(AmqpException::connection(code::FRAME_ERROR, text, None));
    if frame_max != 0 && size as u64 + FRAME_OVERHEAD as u64 > frame_max as u64 {
        return Err(frame_error(format!("frame size {size} larger than the negotiated frame_max {frame_max}")));
    }
    if buf.len() < 7 + size + 1 {
        buf.reserve(7 + size + 1 - buf.len());
        return Ok(None);
    }
    if buf[7 + size] != FRAME_END {
        return Err(frame_error(format!("frame end octet is {:#04x}, not 0xce", buf[7 + size])));
    }
    let frame = match kind {
        FRAME_METHOD => match amq_protocol::protocol::parse_class(&buf[7..7 + size]) {
            Ok(([], class)) => InFrame::Method(channel, class),
            _ => return Err(FrameError::Protocol(method_parse_error(&buf[7..7 + size]))),
        },
        FRAME_HEADER => match amq_protocol::frame::parsing::parse_content_header(&buf[7..7 + size]) {
            Ok(([], header)) => InFrame::Header(channel, header),
            _ => return Err(frame_error("malformed content header frame".into())),
        },
        FRAME_BODY => {
            if size <= COPY_BODY_BELOW {
                let body = Bytes::copy_from_slice(&buf[7..7 + size]);
                buf.advance(7 + size + 1);
                return Ok(Some(InFrame::Body(channel, body)));
            }
            buf.advance(7);
            let body = buf.split_to(size).freeze();
            buf.advance(1);
            return Ok(Some(InFrame::Body(channel, body)));
        }
        FRAME_HEARTBEAT => {
            if channel != 0 {
                return Err(frame_error(format!("heartbeat frame on channel {channel}")));
            }
            InFrame::Heartbeat
        }
        other => return Err(frame_error(format!("unknown frame type {other}"))),
    };
    buf.advance(7 + size + 1);
    Ok(Some(frame))
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
    let mut buf = BytesMut::with_capacity(64);
    encode_into(&mut buf, &AMQPFrame::Method(channel, method));
    buf.freeze()
}

/// Encode a heartbeat frame.
pub fn heartbeat_frame() -> Bytes {
    Bytes::from_static(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END])
}

thread_local! {
    /// Encoding scratch space (the encoder writes into a `Vec`), reused per thread.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Append the encoding of `frame` to `buf`.
pub fn encode_into(buf: &mut BytesMut, frame: &AMQPFrame) {
    SCRATCH.with(|scratch| {
        let mut v = std::mem::take(&mut *scratch.borrow_mut());
        v.clear();
        // Writing into a Vec cannot fail short of a frame larger than memory.
        let (v, _) = gen_frame(frame)(WriteContext::from(v)).expect("encoding a frame into a Vec").into_inner();
        buf.extend_from_slice(&v);
        if v.capacity() <= 64 * 1024 {
            *scratch.borrow_mut() = v;
        }
    });
}

/// Append a content (header frame and body frames split by `frame_max`) after `method`,
/// so that the three reach the socket together.
pub fn content_into(
    out: &mut BytesMut,
    channel: u16,
    method: &AMQPClass,
    properties: &AMQPProperties,
    body: &Bytes,
    frame_max: u32,
) {
    encode_into(out, &AMQPFrame::Method(channel, method.clone()));
    encode_into(
        out,
        &AMQPFrame::Header(
            channel,
            AMQPContentHeader { class_id: 60, body_size: body.len() as u64, properties: properties.clone() },
        ),
    );
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    out.reserve(body.len() + body.len().div_ceil(chunk) * FRAME_OVERHEAD);
    for part in body.chunks(chunk) {
        out.put_u8(FRAME_BODY);
        out.put_u16(channel);
        out.put_u32(part.len() as u32);
        out.extend_from_slice(part);
        out.put_u8(FRAME_END);
    }
}

/// A content as one buffer (see [`content_into`]).
pub fn content_frames(
    channel: u16,
    method: AMQPClass,
    properties: &AMQPProperties,
    body: &Bytes,
    frame_max: u32,
) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 256);
    content_into(&mut out, channel, &method, properties, body, frame_max);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic;

    fn next(buf: &mut BytesMut) -> Result<Option<InFrame>, FrameError> {
        parse_frame(buf, 4096)
    }

    #[test]
    fn content_is_split_by_frame_max_and_read_back() {
        for size in [10_000usize, 100] {
            let body = Bytes::from(vec![7u8; size]);
            let method = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: "c".into(),
                delivery_tag: 1,
                redelivered: false,
                exchange: "".into(),
                routing_key: "q".into(),
            }));
            let bytes = content_frames(1, method.clone(), &AMQPProperties::default(), &body, 4096);
            let mut r = BytesMut::from(&bytes[..]);
            assert!(matches!(next(&mut r).unwrap(), Some(InFrame::Method(1, m)) if m == method));
            assert!(matches!(next(&mut r).unwrap(), Some(InFrame::Header(1, h)) if h.body_size == size as u64));
            let mut got = Vec::new();
            while !r.is_empty() {
                match next(&mut r).unwrap() {
                    Some(InFrame::Body(1, b)) => {
                        assert!(b.len() <= 4096 - FRAME_OVERHEAD);
                        got.extend_from_slice(&b)
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(got, body);
        }
    }

    #[test]
    fn a_partial_frame_waits_for_the_rest() {
        let bytes = content_frames(
            2,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: 5, multiple: true })),
            &AMQPProperties::default(),
            &Bytes::from_static(b"hello"),
            4096,
        );
        let mut r = BytesMut::new();
        let mut frames = Vec::new();
        // Fed one byte at a time, every frame comes out whole, once.
        for b in bytes.iter() {
            r.put_u8(*b);
            while let Some(f) = next(&mut r).unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 3);
        assert!(matches!(&frames[2], InFrame::Body(2, b) if &b[..] == b"hello"));
        assert!(r.is_empty());
    }

    #[test]
    fn oversized_and_badly_terminated_frames_are_frame_errors() {
        let big = [FRAME_BODY, 0, 1, 0, 0, 0x20, 0, 0];
        match next(&mut BytesMut::from(&big[..])) {
            Err(FrameError::Protocol(e)) => assert_eq!(e.code, code::FRAME_ERROR),
            other => panic!("{other:?}"),
        }
        let bad_end = [FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, 0];
        match next(&mut BytesMut::from(&bad_end[..])) {
            Err(FrameError::Protocol(e)) => assert_eq!(e.code, code::FRAME_ERROR),
            other => panic!("{other:?}"),
        }
        assert!(matches!(next(&mut BytesMut::from(&heartbeat_frame()[..])).unwrap(), Some(InFrame::Heartbeat)));
    }
}
