//! AMQP 0-9-1 as RabbitMQ speaks it: frames, methods, content headers and
//! field tables. Pure encode/decode with no I/O and no runtime imports.

pub mod error;
pub mod frame;
pub mod method;
pub mod properties;
pub mod types;

pub use error::{reply_code, AmqpError, DecodeError};

#[cfg(test)]
mod fuzz_tests;
pub use types::{FieldTable, FieldValue, LongStr, ShortStr};
