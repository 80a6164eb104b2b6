//! Random bytes through every decoder: each must return a value or an
//! error, never panic, whatever it is fed. A cheap stand-in for a fuzzer
//! (cargo-fuzz needs a nightly toolchain this project does not use): seeded,
//! the seed printed, `WARREN_DECODE_SEED=<seed>` replays a failure.

use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::frame::decode_frame;
use super::method::Method;
use super::properties::{scan_properties, BasicProperties, ContentHeader};
use super::types::FieldTable;

const CASES: usize = 20_000;

fn rng() -> StdRng {
    let seed = std::env::var("WARREN_DECODE_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("decoder seed {seed} (replay with WARREN_DECODE_SEED={seed})");
    StdRng::seed_from_u64(seed)
}

/// Random bytes, biased towards what decoders branch on: small lengths,
/// valid class and method ids, frame ends and type tags.
fn input(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.gen_range(0..64);
    (0..len)
        .map(|_| match rng.gen_range(0..6) {
            0 => 0,
            1 => rng.gen_range(0..12),
            2 => *[10u8, 20, 40, 50, 60, 85, 90, 0xCE]
                .get(rng.gen_range(0..8))
                .unwrap_or(&0),
            3 => *b"tbBsuIilfdDSxATFV"
                .get(rng.gen_range(0..17))
                .unwrap_or(&b'S'),
            _ => rng.gen(),
        })
        .collect()
}

#[test]
fn decoders_never_panic_on_random_input() {
    let mut rng = rng();
    for _ in 0..CASES {
        let bytes = input(&mut rng);
        let payload = Bytes::from(bytes.clone());
        let _ = Method::decode(payload.clone());
        let _ = ContentHeader::decode(payload.clone());
        let _ = scan_properties(&payload);
        let _ = BasicProperties::decode(&mut payload.clone());
        let _ = FieldTable::decode(&mut payload.clone());
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode_frame(&mut buf, 4096) {}
    }
}

/// Valid methods with one byte changed: the decoder meets real structure
/// with a fault somewhere inside it.
#[test]
fn decoding_a_corrupted_method_never_panics() {
    let mut rng = rng();
    let samples = super::method::tests::samples();
    for _ in 0..CASES {
        let Some(method) = samples.get(rng.gen_range(0..samples.len())) else {
            continue;
        };
        let mut encoded = BytesMut::new();
        method.encode(&mut encoded);
        if encoded.is_empty() {
            continue;
        }
        let at = rng.gen_range(0..encoded.len());
        encoded[at] = rng.gen();
        let _ = Method::decode(encoded.freeze());
    }
}
