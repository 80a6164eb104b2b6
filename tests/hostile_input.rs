//! Hostile input: valid traffic with random bytes flipped, cut or spliced
//! in, sent after a proper handshake. Whatever arrives, the broker must
//! answer with a close or keep serving, never panic, never hang (the socket
//! closes once we stop sending), and other connections keep working.
//!
//! The mutations are seeded; a failure prints the seed, and
//! `WARREN_HOSTILE_SEED=<seed>` replays it.

mod common;
mod raw;

use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use common::Broker;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use raw::RawClient;
use warren::protocol::frame::{encode_content, encode_heartbeat, encode_method};
use warren::protocol::method::*;
use warren::protocol::types::{FieldTable, FieldValue, LongStr};

const ROUNDS: usize = 500;

#[test]
fn mutated_traffic_never_crashes_or_stalls_the_broker() {
    let seed = std::env::var("WARREN_HOSTILE_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("hostile input seed {seed} (replay with WARREN_HOSTILE_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let broker = Broker::start();
    let mut bystander = RawClient::open_with_channel(&broker.addr());
    let traffic = valid_traffic();
    for round in 0..ROUNDS {
        let mut client = RawClient::open(&broker.addr());
        client.send_bytes(&mutate(&traffic, &mut rng));
        // We are done sending: the broker must finish with whatever it got
        // and close, rather than wait on a frame that will never complete.
        client
            .stream
            .shutdown(Shutdown::Write)
            .unwrap_or_else(|err| panic!("round {round}, seed {seed}: shutdown: {err}"));
        client.read_until_closed();
    }
    bystander.open_channel(2);
    bystander.close();
    RawClient::open_with_channel(&broker.addr()).close();
}

/// Clients that drop their connection without connection.close, each
/// declaring the same exclusive queue as soon as the one before is gone,
/// while another connection keeps the definitions log busy with durable
/// exchanges: every shard's catalog must take the same changes in the
/// same order. A change applied while the log was writing a batch was
/// broadcast before that batch (the drop of the previous owner's queue),
/// a replica refused it, and the broker aborted.
#[test]
fn exclusive_queues_change_hands_while_definitions_are_written() {
    const ROUNDS: usize = 300;
    let broker = Broker::start();
    if broker.is_external() {
        // It would leave hundreds of durable exchanges behind.
        return;
    }
    let addr = broker.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let durable_writer = std::thread::spawn({
        let (addr, stop) = (addr.clone(), stop.clone());
        move || {
            let mut client = RawClient::open_with_channel(&addr);
            let mut declared = 0;
            while !stop.load(Ordering::Relaxed) {
                let declare = ExchangeDeclare {
                    exchange: format!("durable-{declared}").into(),
                    exchange_type: "fanout".into(),
                    durable: true,
                    ..Default::default()
                };
                client.send_method(1, declare);
                let Method::ExchangeDeclareOk(_) = client.expect_method(1) else {
                    panic!("expected exchange.declare-ok");
                };
                declared += 1;
            }
            client.close();
            declared
        }
    });
    for _ in 0..ROUNDS {
        let mut claimant = RawClient::open_with_channel(&addr);
        let declare = QueueDeclare {
            queue: "claimed".into(),
            exclusive: true,
            ..Default::default()
        };
        claimant.send_method(1, declare);
        // Ours, or still the last claimant's (405 closes the channel):
        // either way the broker answers.
        match claimant.expect_method(1) {
            Method::QueueDeclareOk(_) | Method::ChannelClose(_) => {}
            other => panic!("expected queue.declare-ok or channel.close, got {other:?}"),
        }
        let _ = claimant.stream.shutdown(Shutdown::Both);
    }
    stop.store(true, Ordering::Relaxed);
    let declared = durable_writer.join().expect("the durable writer ran");
    assert!(declared > 0, "durable exchanges were declared meanwhile");
    RawClient::open_with_channel(&addr).close();
}

/// A session's worth of frames: open a channel, declare and bind a queue,
/// publish with properties, consume, ack, qos, close.
fn valid_traffic() -> BytesMut {
    let mut out = BytesMut::new();
    let mut method = |method: Method| encode_method(&mut out, 1, &method);
    method(ChannelOpen::default().into());
    method(
        QueueDeclare {
            queue: "hostile".into(),
            exclusive: true,
            ..Default::default()
        }
        .into(),
    );
    let mut arguments = FieldTable::new();
    arguments.insert("x-match", FieldValue::LongStr(LongStr::from("any")));
    method(
        QueueBind {
            queue: "hostile".into(),
            exchange: "amq.headers".into(),
            arguments,
            ..Default::default()
        }
        .into(),
    );
    method(
        BasicQos {
            prefetch_count: 10,
            ..Default::default()
        }
        .into(),
    );
    method(
        BasicConsume {
            queue: "hostile".into(),
            ..Default::default()
        }
        .into(),
    );
    method(ConfirmSelect::default().into());
    method(
        BasicPublish {
            routing_key: "hostile".into(),
            mandatory: true,
            ..Default::default()
        }
        .into(),
    );
    // Properties: content-type and headers { "k": "v" }.
    let mut properties = BytesMut::from(&[0xA0u8, 0x00, 4, b't', b'e', b'x', b't'][..]);
    let mut headers = FieldTable::new();
    headers.insert("k", FieldValue::LongStr(LongStr::from("v")));
    headers.encode(&mut properties);
    encode_content(&mut out, 1, 60, &properties, &[b'x'; 300], 4096);
    encode_method(
        &mut out,
        1,
        &BasicAck {
            delivery_tag: 1,
            multiple: true,
        }
        .into(),
    );
    encode_heartbeat(&mut out);
    encode_method(&mut out, 1, &ChannelClose::default().into());
    out
}

/// Flips, cuts, duplicates or splices random bytes into `traffic`.
fn mutate(traffic: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut bytes = traffic.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let at = rng.gen_range(0..bytes.len());
        match rng.gen_range(0..4) {
            0 => bytes[at] ^= 1 << rng.gen_range(0..8),
            1 => bytes[at] = rng.gen(),
            2 => bytes.truncate(at.max(1)),
            _ => {
                let junk: Vec<u8> = (0..rng.gen_range(1..16)).map(|_| rng.gen()).collect();
                bytes.splice(at..at, junk);
            }
        }
    }
    bytes
}
