//! AMQP frames: splitting the byte stream into frames, and writing frames.
//!
//! ```text
//!  0      1         3             7                  7+size      8+size
//!  +------+---------+-------------+------------------+-----------+
//!  | type | channel | size        | payload          | frame-end |
//!  | u8   | u16     | u32         | size octets      | 0xCE      |
//!  +------+---------+-------------+------------------+-----------+
//!  type: 1 method, 2 content header, 3 content body, 8 heartbeat
//! ```
//!
//! A connection opens with the 8-octet protocol header instead of a frame;
//! reading it is the handshake's job, not this module's.
//!
//! `frame_max`, as negotiated in connection.tune, bounds the whole frame,
//! header and end octet included, as RabbitMQ counts it; 0 means no limit.
//! An oversized frame is refused from its 7-octet header alone, before its
//! payload is buffered.
//!
//! Decoding is zero-copy: a frame's payload is a view into the read buffer,
//! and the methods and headers decoded from it slice it further. The price
//! is that any view kept alive (a queued body, say) pins the whole read
//! buffer it came from; whoever stores a message long-term decides whether
//! to copy it out. This module does not interpret payloads; `method` and
//! `properties` do.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::DecodeError;
use super::method::{DeliverArgs, Method};
use super::properties::ContentHeader;

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub(crate) const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// The smallest frame_max a peer may negotiate.
pub(crate) const FRAME_MIN_SIZE: u32 = 4096;
/// Octets before the payload: type, channel, size.
pub const FRAME_HEADER_SIZE: usize = 7;
/// What a client sends first: "AMQP", then 0, 0, 9, 1.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";

/// Octets a frame adds around its payload: the header and the end octet.
const FRAME_OVERHEAD: usize = FRAME_HEADER_SIZE + 1;

// warren runs on 64-bit Linux only (glommio needs io_uring); frame sizes are
// computed in usize on that assumption.
const _: () = assert!(usize::BITS >= 64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    Method,
    Header,
    Body,
    Heartbeat,
}

impl FrameType {
    pub(crate) fn from_octet(octet: u8) -> Option<FrameType> {
        match octet {
            FRAME_METHOD => Some(FrameType::Method),
            FRAME_HEADER => Some(FrameType::Header),
            FRAME_BODY => Some(FrameType::Body),
            FRAME_HEARTBEAT => Some(FrameType::Heartbeat),
            _ => None,
        }
    }

    pub fn octet(self) -> u8 {
        match self {
            FrameType::Method => FRAME_METHOD,
            FrameType::Header => FRAME_HEADER,
            FrameType::Body => FRAME_BODY,
            FrameType::Heartbeat => FRAME_HEARTBEAT,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub frame_type: FrameType,
    pub channel: u16,
    pub payload: Bytes,
}

/// Splits the first frame off `buf` if it holds a whole one.
///
/// Returns `Ok(None)` and leaves `buf` untouched while the frame is
/// incomplete. Errors are all fatal to the connection (FRAME_ERROR), so `buf`
/// is left as it is then too.
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, DecodeError> {
    let Some(mut header) = buf.get(..FRAME_HEADER_SIZE) else {
        return Ok(None);
    };
    let type_octet = header.get_u8();
    let channel = header.get_u16();
    let size = header.get_u32() as usize;
    let frame_type =
        FrameType::from_octet(type_octet).ok_or(DecodeError::BadFrameType(type_octet))?;
    // Cannot overflow: size < 2^32, and usize is 64 bits (asserted below).
    let frame_size = size + FRAME_OVERHEAD;
    // RabbitMQ lets a frame run FRAME_OVERHEAD octets past frame_max (its
    // FRAME_SIZE_FUDGE), for clients that take frame_max as the payload
    // size; refusing what RabbitMQ accepts would break those clients.
    if frame_max != 0 && size > frame_max as usize {
        return Err(DecodeError::FrameTooLarge {
            size: u32::try_from(frame_size).unwrap_or(u32::MAX),
            frame_max,
        });
    }
    let Some(&end) = buf.get(frame_size - 1) else {
        return Ok(None);
    };
    if end != FRAME_END {
        return Err(DecodeError::BadFrameEnd(end));
    }
    let mut payload = buf.split_to(frame_size).freeze();
    payload.advance(FRAME_HEADER_SIZE);
    payload.truncate(size);
    Ok(Some(Frame {
        frame_type,
        channel,
        payload,
    }))
}

/// Appends a frame whose payload `write` writes, patching in its size.
fn encode_frame(
    out: &mut BytesMut,
    frame_type: FrameType,
    channel: u16,
    write: impl FnOnce(&mut BytesMut),
) {
    out.put_u8(frame_type.octet());
    out.put_u16(channel);
    let size_at = out.len();
    out.put_u32(0);
    write(out);
    let size = (out.len() - size_at - 4) as u32;
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    out.put_u8(FRAME_END);
}

pub fn encode_method(out: &mut BytesMut, channel: u16, method: &Method) {
    encode_frame(out, FrameType::Method, channel, |out| method.encode(out));
}

/// Appends a basic.deliver method frame from borrowed parts.
pub(crate) fn encode_deliver(out: &mut BytesMut, channel: u16, deliver: &DeliverArgs<'_>) {
    encode_frame(out, FrameType::Method, channel, |out| deliver.encode(out));
}

pub fn encode_heartbeat(out: &mut BytesMut) {
    encode_frame(out, FrameType::Heartbeat, 0, |_| {});
}

/// Appends a content header frame, then the body in frames of at most
/// `frame_max` octets each (0: one frame); an empty body takes no frame.
///
/// `properties` is the raw flags and property list, as `ContentHeader`
/// keeps them. A `frame_max` below `FRAME_MIN_SIZE` is treated as the
/// minimum, which every peer must accept, rather than looping on tiny frames.
pub fn encode_content(
    out: &mut BytesMut,
    channel: u16,
    class_id: u16,
    properties: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    let body_frame_max = match frame_max {
        0 => body.len().max(1),
        limit => limit.max(FRAME_MIN_SIZE) as usize - FRAME_OVERHEAD,
    };
    let body_frames = body.len().div_ceil(body_frame_max);
    out.reserve(
        FRAME_OVERHEAD * (1 + body_frames)
            + ContentHeader::FIXED_SIZE
            + properties.len()
            + body.len(),
    );
    encode_frame(out, FrameType::Header, channel, |out| {
        ContentHeader::encode_parts(out, class_id, body.len() as u64, properties)
    });
    for chunk in body.chunks(body_frame_max) {
        encode_frame(out, FrameType::Body, channel, |out| out.put_slice(chunk));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::method::{sample_methods, BasicPublish, ConnectionTune};
    use crate::protocol::properties::BasicProperties;
    use crate::protocol::types::ShortStr;

    /// Decodes every frame in `wire`, which must hold whole frames only.
    fn decode_all(wire: &[u8], frame_max: u32) -> Vec<Frame> {
        let mut buf = BytesMut::from(wire);
        let mut frames = Vec::new();
        while let Some(frame) = decode_frame(&mut buf, frame_max).expect("valid frames") {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "a partial frame was left over");
        frames
    }

    #[test]
    fn connection_tune_matches_hand_written_bytes() {
        let tune = Method::ConnectionTune(ConnectionTune {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        });
        let wire: &[u8] = &[
            1, 0, 0, 0, 0, 0, 12, // method frame, channel 0, 12 octets
            0, 10, 0, 30, // connection.tune
            0x07, 0xff, 0, 2, 0, 0, 0, 60, // 2047, 131072, 60
            0xce,
        ];
        let mut out = BytesMut::new();
        encode_method(&mut out, 0, &tune);
        assert_eq!(&out[..], wire);
        let frames = decode_all(wire, 0);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].frame_type, FrameType::Method);
        assert_eq!(Method::decode(frames[0].payload.clone()), Ok(tune));
    }

    #[test]
    fn every_method_survives_framing() {
        let mut out = BytesMut::new();
        let methods = sample_methods(&mut 7);
        for (channel, method) in methods.iter().enumerate() {
            encode_method(&mut out, channel as u16, method);
        }
        let frames = decode_all(&out, FRAME_MIN_SIZE);
        assert_eq!(frames.len(), methods.len());
        for (channel, (frame, method)) in frames.into_iter().zip(methods).enumerate() {
            assert_eq!(frame.channel, channel as u16);
            assert_eq!(Method::decode(frame.payload), Ok(method));
        }
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut wire = BytesMut::new();
        encode_method(&mut wire, 3, &Method::BasicPublish(BasicPublish::default()));
        for len in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..len]);
            assert_eq!(decode_frame(&mut buf, 0), Ok(None), "cut at {len}");
            assert_eq!(buf.len(), len, "a partial frame must stay buffered");
        }
    }

    #[test]
    fn a_frame_is_split_off_and_the_next_one_stays() {
        let mut buf = BytesMut::new();
        encode_heartbeat(&mut buf);
        encode_heartbeat(&mut buf);
        buf.put_u8(FRAME_HEARTBEAT);
        let frame = decode_frame(&mut buf, 0).expect("valid").expect("whole");
        assert_eq!(frame.frame_type, FrameType::Heartbeat);
        assert!(frame.payload.is_empty());
        assert_eq!(buf.len(), 9);
        assert!(decode_frame(&mut buf, 0).expect("valid").is_some());
        assert_eq!(decode_frame(&mut buf, 0), Ok(None));
    }

    #[test]
    fn heartbeat_is_eight_octets() {
        let mut out = BytesMut::new();
        encode_heartbeat(&mut out);
        assert_eq!(&out[..], [8, 0, 0, 0, 0, 0, 0, 0xce]);
    }

    #[test]
    fn payload_is_a_view_into_the_read_buffer() {
        let mut buf = BytesMut::new();
        encode_method(&mut buf, 1, &Method::BasicPublish(BasicPublish::default()));
        let start = buf.as_ptr();
        let frame = decode_frame(&mut buf, 0).expect("valid").expect("whole");
        assert_eq!(
            frame.payload.as_ptr(),
            start.wrapping_add(FRAME_HEADER_SIZE)
        );
    }

    #[test]
    fn bad_frame_end_is_rejected() {
        let mut buf = BytesMut::new();
        encode_heartbeat(&mut buf);
        let last = buf.len() - 1;
        buf[last] = 0xcd;
        assert_eq!(
            decode_frame(&mut buf, 0),
            Err(DecodeError::BadFrameEnd(0xcd))
        );
    }

    #[test]
    fn unknown_frame_type_is_rejected() {
        let mut buf = BytesMut::from(&[4u8, 0, 0, 0, 0, 0, 0, 0xce][..]);
        assert_eq!(decode_frame(&mut buf, 0), Err(DecodeError::BadFrameType(4)));
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header_alone() {
        // 4097 payload octets: one over 4096 even with RabbitMQ's slack.
        let mut buf = BytesMut::from(&[3u8, 0, 1, 0, 0, 0x10, 0x01][..]);
        assert_eq!(
            decode_frame(&mut buf, 4096),
            Err(DecodeError::FrameTooLarge {
                size: 4105,
                frame_max: 4096
            })
        );
        // One octet less fits exactly, so it waits for its payload.
        let mut buf = BytesMut::from(&[3u8, 0, 1, 0, 0, 0x0f, 0xf8][..]);
        assert_eq!(decode_frame(&mut buf, 4096), Ok(None));
        // frame_max 0 is no limit at all.
        let mut buf = BytesMut::from(&[3u8, 0, 1, 0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(decode_frame(&mut buf, 0), Ok(None));
    }

    fn sample_properties() -> Bytes {
        let properties = BasicProperties {
            content_type: Some(ShortStr::from("application/octet-stream")),
            delivery_mode: Some(2),
            ..BasicProperties::default()
        };
        let mut raw = BytesMut::new();
        properties.encode(&mut raw);
        raw.freeze()
    }

    /// Encodes content, decodes its frames, checks each against frame_max,
    /// and returns the header and the body frames' payloads.
    fn content_round_trip(body: &[u8], frame_max: u32) -> (ContentHeader, Vec<Bytes>) {
        let properties = sample_properties();
        let mut out = BytesMut::new();
        encode_content(&mut out, 5, 60, &properties, body, frame_max);
        let mut frames = decode_all(&out, frame_max).into_iter();
        let header = frames.next().expect("a header frame");
        assert_eq!(header.frame_type, FrameType::Header);
        let header = ContentHeader::decode(header.payload).expect("a valid header");
        assert_eq!(header.properties, properties);
        assert_eq!(header.body_size, body.len() as u64);
        let bodies: Vec<Bytes> = frames
            .inspect(|frame| {
                assert_eq!((frame.frame_type, frame.channel), (FrameType::Body, 5));
                let frame_size = frame.payload.len() + FRAME_OVERHEAD;
                assert!(frame_max == 0 || frame_size <= frame_max as usize);
            })
            .map(|frame| frame.payload)
            .collect();
        assert_eq!(bodies.concat(), body);
        (header, bodies)
    }

    #[test]
    fn bodies_split_at_frame_max_and_reassemble() {
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let (_, bodies) = content_round_trip(&body, 4096);
        let sizes: Vec<usize> = bodies.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [4088, 4088, 1824]);
        let (_, bodies) = content_round_trip(&body[..4088], 4096);
        assert_eq!(bodies.len(), 1, "a body that fits exactly takes one frame");
    }

    #[test]
    fn frame_max_zero_sends_the_body_in_one_frame() {
        let body = vec![7u8; 100_000];
        let (_, bodies) = content_round_trip(&body, 0);
        assert_eq!(bodies.len(), 1);
    }

    #[test]
    fn an_empty_body_takes_no_body_frame() {
        let (header, bodies) = content_round_trip(&[], 4096);
        assert_eq!(header.body_size, 0);
        assert!(bodies.is_empty());
    }

    #[test]
    fn frame_max_below_the_minimum_is_the_minimum() {
        let body = vec![1u8; 5000];
        let mut out = BytesMut::new();
        encode_content(&mut out, 1, 60, &sample_properties(), &body, 10);
        let frames = decode_all(&out, FRAME_MIN_SIZE);
        assert_eq!(frames.len(), 3);
    }
}
