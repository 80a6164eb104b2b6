//! basic.ack, basic.reject, basic.nack and basic.recover: the channel
//! settles its delivery tags, and the messages go back to their queues'
//! shards.

use crate::connection::channel::Settled;
use crate::connection::{Connection, Next};
use crate::protocol::AmqpError;
use crate::queue::Settlement;
use crate::shard::ShardMsg;

impl Connection {
    /// An ack, reject or nack from the client: deferred by a transaction,
    /// settled now otherwise.
    pub(super) fn client_settle(
        &self,
        ch: u16,
        delivery_tag: u64,
        multiple: bool,
        action: Settlement,
    ) -> Result<Next, AmqpError> {
        let deferred = self.with_channel(ch, |channel| {
            channel.defer_settle(delivery_tag, multiple, action)
        })?;
        if !deferred {
            self.settle(ch, delivery_tag, multiple, action)?;
        }
        Ok(Next::Continue)
    }

    /// Settles delivery tags now (and a transaction's at tx.commit).
    pub(in crate::connection::methods) fn settle(
        &self,
        ch: u16,
        delivery_tag: u64,
        multiple: bool,
        action: Settlement,
    ) -> Result<(), AmqpError> {
        let mut settled = self.settled.borrow_mut();
        settled.clear();
        self.with_channel(ch, |channel| {
            channel.settle(delivery_tag, multiple, action, &mut settled)
        })??;
        self.send_settles(ch, &mut settled, action);
        drop(settled);
        self.release_held(ch);
        Ok(())
    }

    /// Sends settled messages to their queues' shards: one message for a
    /// single one, one per queue for several.
    pub(super) fn send_settles(&self, ch: u16, settled: &mut [Settled], action: Settlement) {
        let holder = self.channel_id(ch);
        if let [(queue, seq)] = settled[..] {
            if let Ok(owner) = self.owner(queue) {
                let settle = ShardMsg::Settle {
                    queue,
                    holder,
                    seq,
                    action,
                };
                self.shard.send(owner, settle);
            }
            return;
        }
        settled.sort_by_key(|&(queue, seq)| (queue, seq));
        for group in settled.chunk_by(|a, b| a.0 == b.0) {
            let queue = group[0].0;
            let Ok(owner) = self.owner(queue) else {
                continue;
            };
            let seqs = group.iter().map(|&(_, seq)| seq).collect();
            let settle = ShardMsg::SettleMany {
                queue,
                holder,
                seqs,
                action,
            };
            self.shard.send(owner, settle);
        }
    }

    /// basic.recover: everything unacked on the channel goes back to its
    /// queue (RabbitMQ requeues whatever `requeue` says).
    pub(super) fn recover(&self, ch: u16) {
        let mut settled = self.settled.borrow_mut();
        settled.clear();
        if self
            .with_channel(ch, |channel| channel.recover(&mut settled))
            .is_err()
        {
            return;
        }
        if !settled.is_empty() {
            self.send_settles(ch, &mut settled, Settlement::Requeue);
        }
        drop(settled);
        self.release_held(ch);
    }
}
