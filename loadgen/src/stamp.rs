//! The stamp loadgen writes at the start of every message body, and the
//! monotonic clock it reads.
//!
//! ```text
//!  0        1          3            8          16
//!  +--------+----------+------------+----------+------------------+
//!  | run    | producer | sequence   | sent_ns  | padding to size  |
//!  | u8     | u16 BE   | u40 BE     | u64 BE   |                  |
//!  +--------+----------+------------+----------+------------------+
//! ```
//!
//! Sixteen octets, so that loadgen can send the 16-octet bodies of the
//! smallest-message benchmarks. `run` is the low octet of the run id: it
//! tells this run's messages from leftovers of an earlier run in a named
//! queue, with one chance in 256 of taking a leftover for one of ours (the
//! tracker then counts it as a duplicate or ignores it as out of range).
//! `sequence` counts from 0 per producer and needs 40 bits at most
//! (`SEQUENCE_LIMIT`, far above the tracker's own limit); `sent_ns` is
//! nanoseconds on this process's monotonic clock, so end-to-end latency is
//! only measured when the consumer runs in the same process as the
//! producer, which is always the case here.

use std::sync::OnceLock;
use std::time::Instant;

/// Octets of the stamp, and so the smallest message body.
pub const STAMP_SIZE: usize = 16;

/// Sequence numbers must be below this to fit the stamp's 40 bits.
pub const SEQUENCE_LIMIT: u64 = 1 << 40;

/// Producers in one run: the stamp's producer field is a u16.
pub const PRODUCER_COUNT_MAX: usize = 1 << 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub run: u8,
    pub producer: u16,
    pub sequence: u64,
    pub sent_ns: u64,
}

impl Stamp {
    /// The stamp's `run` octet for a run id.
    pub fn run_of(run_id: u32) -> u8 {
        run_id as u8
    }

    pub fn write(&self, body: &mut [u8]) {
        debug_assert!(self.sequence < SEQUENCE_LIMIT);
        body[0] = self.run;
        body[1..3].copy_from_slice(&self.producer.to_be_bytes());
        body[3..8].copy_from_slice(&self.sequence.to_be_bytes()[3..]);
        body[8..16].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// Reads a stamp off the first octets of a body; `None` if too short.
    pub fn read(body: &[u8]) -> Option<Stamp> {
        let body: &[u8; STAMP_SIZE] = body.get(..STAMP_SIZE)?.try_into().ok()?;
        let mut sequence = [0; 8];
        sequence[3..].copy_from_slice(&body[3..8]);
        Some(Stamp {
            run: body[0],
            producer: u16::from_be_bytes([body[1], body[2]]),
            sequence: u64::from_be_bytes(sequence),
            sent_ns: u64::from_be_bytes(body[8..16].try_into().ok()?),
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
            run: 7,
            producer: 3,
            sequence: 1 << 36,
            sent_ns: 123_456_789,
        };
        let mut body = [0xAA; 32];
        stamp.write(&mut body);
        assert_eq!(Stamp::read(&body), Some(stamp));
        assert_eq!(Stamp::read(&body[..STAMP_SIZE - 1]), None);
    }

    #[test]
    fn every_field_at_its_widest_round_trips_in_sixteen_octets() {
        let stamp = Stamp {
            run: u8::MAX,
            producer: u16::MAX,
            sequence: SEQUENCE_LIMIT - 1,
            sent_ns: u64::MAX,
        };
        let mut body = [0; STAMP_SIZE];
        stamp.write(&mut body);
        assert_eq!(Stamp::read(&body), Some(stamp));
    }

    #[test]
    fn the_run_octet_is_the_low_octet_of_the_run_id() {
        assert_eq!(Stamp::run_of(0x1234_56AB), 0xAB);
    }
}
