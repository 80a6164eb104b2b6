//! The AMQP methods a client sends on a channel, handled by class, one
//! file per class: `connection` (channel 0: the handshake and close),
//! `channel` (and the deprecated access class), `exchange`, `queue`,
//! `basic`, `confirm` and `tx`. [`Connection::channel_method`] is the one
//! place that says which class handles a method.

mod basic;
mod channel;
mod confirm;
mod connection;
mod exchange;
mod queue;
mod tx;

use std::rc::Rc;

use super::{Connection, Next};
use crate::protocol::method::*;
use crate::protocol::{AmqpError, ShortStr};
pub(super) use connection::start_method;
pub(in crate::connection) use connection::Tune;

impl Connection {
    /// A method on an open channel, to its class's handler.
    pub(super) fn channel_method(
        self: &Rc<Self>,
        ch: u16,
        method: Method,
    ) -> Result<Next, AmqpError> {
        match method.class_id() {
            ChannelOpen::CLASS_ID => self.channel_class(ch, method),
            AccessRequest::CLASS_ID => self.access_class(ch, method),
            ExchangeDeclare::CLASS_ID => self.exchange_class(ch, method),
            QueueDeclare::CLASS_ID => self.queue_class(ch, method),
            BasicPublish::CLASS_ID => self.basic_class(ch, method),
            ConfirmSelect::CLASS_ID => self.confirm_class(ch, method),
            TxSelect::CLASS_ID => self.tx_class(ch, method),
            _ => Err(not_from_client(&method)),
        }
    }
}

/// A method only a server sends, or one of another class, arriving from the
/// client on a channel.
fn not_from_client(method: &Method) -> AmqpError {
    AmqpError::command_invalid(format!(
        "method {} is not valid from a client on a channel",
        method.name()
    ))
}

/// A server-generated name as RabbitMQ makes them: a prefix and 22
/// characters of URL-safe base64 over 128 random bits.
pub(super) fn generated_name(prefix: &str) -> ShortStr {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let random = |salt: u64| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(salt);
        hasher.finish()
    };
    let bits = (u128::from(random(1)) << 64) | u128::from(random(2));
    let mut name = String::with_capacity(prefix.len() + 22);
    name.push_str(prefix);
    for i in 0..22 {
        name.push(ALPHABET[((bits >> (i * 6)) & 63) as usize] as char);
    }
    ShortStr::from(name)
}
