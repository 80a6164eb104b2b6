//! The codec's data-plane cost per message: decoding what a publisher sends
//! (publish, content header, one body frame) and encoding what a consumer
//! gets (deliver, content header, one body frame). Before timing, each
//! operation's allocations per message are counted and printed.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use warren::protocol::frame::{decode_frame, encode_content, encode_method, FrameType};
use warren::protocol::method::{BasicDeliver, BasicPublish, Method};
use warren::protocol::properties::{scan_properties, BasicProperties, ContentHeader};
use warren::protocol::{FieldTable, FieldValue, ShortStr};

mod common;

const FRAME_MAX: u32 = 131_072;
const BODY_SIZE: usize = 1024;

fn properties() -> Bytes {
    let mut headers = FieldTable::new();
    headers.insert("x-trace-id", FieldValue::LongStr("4bf92f3577b34da6".into()));
    let properties = BasicProperties {
        content_type: Some(ShortStr::from("application/json")),
        delivery_mode: Some(2),
        headers: Some(headers),
        ..BasicProperties::default()
    };
    let mut raw = BytesMut::new();
    properties.encode(&mut raw);
    raw.freeze()
}

/// The bytes a publisher sends for one message.
fn publish_wire() -> Bytes {
    let publish = Method::BasicPublish(BasicPublish {
        exchange: ShortStr::from("amq.topic"),
        routing_key: ShortStr::from("orders.eu.created"),
        ..BasicPublish::default()
    });
    let mut wire = BytesMut::new();
    encode_method(&mut wire, 1, &publish);
    encode_content(
        &mut wire,
        1,
        60,
        &properties(),
        &[b'x'; BODY_SIZE],
        FRAME_MAX,
    );
    wire.freeze()
}

/// Decodes one message the way a connection's read loop does, reusing its
/// read buffer.
fn decode_message(wire: &[u8], buf: &mut BytesMut) {
    buf.extend_from_slice(wire);
    while let Ok(Some(frame)) = decode_frame(buf, FRAME_MAX) {
        match frame.frame_type {
            FrameType::Method => {
                black_box(Method::decode(frame.payload).ok());
            }
            FrameType::Header => {
                let header = ContentHeader::decode(frame.payload).ok();
                black_box(header.map(|header| scan_properties(&header.properties)));
            }
            _ => {
                black_box(frame.payload);
            }
        }
    }
}

fn deliver() -> Method {
    Method::BasicDeliver(BasicDeliver {
        consumer_tag: ShortStr::from("amq.ctag-S7BkYVwoqRtKDMCGFDLtBw"),
        delivery_tag: 42,
        redelivered: false,
        exchange: ShortStr::from("amq.topic"),
        routing_key: ShortStr::from("orders.eu.created"),
    })
}

fn encode_message(deliver: &Method, properties: &[u8], body: &[u8], out: &mut BytesMut) {
    out.clear();
    encode_method(out, 1, deliver);
    encode_content(out, 1, 60, properties, body, FRAME_MAX);
}

/// Runs `operation` after a warm-up and prints its allocations per call.
fn report_allocations(name: &str, operation: impl FnMut()) {
    let allocations = common::allocations_per_call(1000, operation);
    println!("{name}: {allocations:.2} allocations per message");
}

fn codec(c: &mut Criterion) {
    let wire = publish_wire();
    let mut read_buf = BytesMut::with_capacity(64 * 1024);
    let (deliver, properties, body) = (deliver(), properties(), vec![b'x'; BODY_SIZE]);
    let mut out = BytesMut::with_capacity(64 * 1024);

    report_allocations("decode publish", || decode_message(&wire, &mut read_buf));
    report_allocations("encode deliver", || {
        encode_message(&deliver, &properties, &body, &mut out)
    });

    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode publish+header+body", |b| {
        b.iter(|| decode_message(&wire, &mut read_buf))
    });
    group.bench_function("encode deliver+header+body", |b| {
        b.iter(|| encode_message(&deliver, &properties, &body, &mut out))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
