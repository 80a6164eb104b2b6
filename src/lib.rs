//! warren: an AMQP 0-9-1 message broker, wire-compatible with RabbitMQ, built
//! thread-per-core. See docs/ARCHITECTURE.md for the flows through these
//! modules.

pub mod catalog;
pub mod ids;
pub mod message;
pub mod protocol;
pub mod queue;
pub mod routing;
