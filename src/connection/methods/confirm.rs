//! The confirm class: confirm.select, and the basic.ack / basic.nack a
//! confirming channel gets once the queues' shards have answered its
//! publishes (`shard::confirms`: after the fdatasync for a persistent
//! message in a durable queue). Transactions' commit-oks are answered the
//! same way.

use super::not_from_client;
use crate::connection::channel::Channel;
use crate::connection::{Connection, Next};
use crate::protocol::method::*;
use crate::protocol::AmqpError;
use crate::shard::ConfirmAnswer;

impl Connection {
    pub(super) fn confirm_class(&self, ch: u16, method: Method) -> Result<Next, AmqpError> {
        let Method::ConfirmSelect(m) = method else {
            return Err(not_from_client(&method));
        };
        self.with_channel(ch, Channel::confirm_select)??;
        if !m.no_wait {
            self.out
                .method(ch, &Method::ConfirmSelectOk(ConfirmSelectOk {}));
        }
        Ok(Next::Continue)
    }

    /// Answers every publish whose shards have all answered, in order, on
    /// every confirming channel (unroutable publishes need no answer).
    pub(in crate::connection) fn flush_confirms(&self) {
        let mut state = self.state.borrow_mut();
        for (&ch, channel) in state.channels.iter_mut() {
            channel.answered(|method| self.out.method(ch, &method));
        }
    }

    /// Answers from queues' shards about this connection's publishes.
    pub(in crate::connection) fn confirmed(&self, answers: &[ConfirmAnswer]) {
        let mut state = self.state.borrow_mut();
        for answer in answers {
            if let Some(channel) = state.channels.get_mut(&answer.channel) {
                channel.answer(answer.confirm, answer.stored);
            }
        }
        // Answers for one channel usually come in one batch.
        let mut last = None;
        for answer in answers {
            if last == Some(answer.channel) {
                continue;
            }
            last = Some(answer.channel);
            if let Some(channel) = state.channels.get_mut(&answer.channel) {
                channel.answered(|method| self.out.method(answer.channel, &method));
            }
        }
    }
}
