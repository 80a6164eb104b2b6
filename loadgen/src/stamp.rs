//! The stamp loadgen writes at the start of every message body, and the
//! monotonic clock it reads.
//!
//! ```text
//!  0        4           8          16         24
//!  +--------+-----------+----------+----------+------------------+
//!  | run_id | producer  | sequence | sent_ns  | padding to size  |
//!  | u32 BE | u32 BE    | u64 BE   | u64 BE   |                  |
//!  +--------+-----------+----------+----------+------------------+
//! ```
//!
//! `run_id` tells this run's messages from leftovers of an earlier run in a
//! named queue; `sequence` counts from 0 per producer; `sent_ns` is
//! nanoseconds on this process's monotonic clock, so end-to-end latency is
//! only measured when the consumer runs in the same process as the producer,
//! which is always the case here.

use std::sync::OnceLock;
use std::time::Instant;

/// Octets of the stamp, and so the smallest message body.
pub const STAMP_SIZE: usize = 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub run_id: u32,
    pub producer: u32,
    pub sequence: u64,
    pub sent_ns: u64,
}

impl Stamp {
    pub fn write(&self, body: &mut [u8]) {
        body[0..4].copy_from_slice(&self.run_id.to_be_bytes());
        body[4..8].copy_from_slice(&self.producer.to_be_bytes());
        body[8..16].copy_from_slice(&self.sequence.to_be_bytes());
        body[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// Reads a stamp off the first octets of a body; `None` if too short.
    pub fn read(body: &[u8]) -> Option<Stamp> {
        let field = |range: std::ops::Range<usize>| body.get(range);
        Some(Stamp {
            run_id: u32::from_be_bytes(field(0..4)?.try_into().ok()?),
            producer: u32::from_be_bytes(field(4..8)?.try_into().ok()?),
            sequence: u64::from_be_bytes(field(8..16)?.try_into().ok()?),
            sent_ns: u64::from_be_bytes(field(16..24)?.try_into().ok()?),
        })
    }
}

/// Nanoseconds since the first call in this process, on the monotonic clock.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_round_trips_through_a_body() {
        let stamp = Stamp {
            run_id: 7,
            producer: 3,
            sequence: 1 << 40,
            sent_ns: 123_456_789,
        };
        let mut body = [0xAA; 32];
        stamp.write(&mut body);
        assert_eq!(Stamp::read(&body), Some(stamp));
        assert_eq!(Stamp::read(&body[..STAMP_SIZE - 1]), None);
    }
}
