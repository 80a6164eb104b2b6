//! warren: an AMQP 0-9-1 message broker, wire-compatible with RabbitMQ, built
//! thread-per-core. See docs/ARCHITECTURE.md for the flows through these
//! modules.

pub mod broker;
pub mod catalog;
pub mod config;
pub(crate) mod connection;
pub mod ctl;
pub(crate) mod data_dir;
pub(crate) mod definitions;
pub mod ids;
pub(crate) mod management;
pub(crate) mod memory;
pub mod message;
pub mod protocol;
pub mod queue;
pub mod routing;
pub mod runtime;
pub mod shard;
pub(crate) mod store;
