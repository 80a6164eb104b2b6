//! The tx class: select, commit (the deferred publishes and acks carried
//! out in order; commit-ok once the committed persistent messages are on
//! disk) and rollback.

use std::rc::Rc;

use super::not_from_client;
use crate::connection::channel::{Channel, TxAction};
use crate::connection::{Connection, Next};
use crate::protocol::method::*;
use crate::protocol::AmqpError;

impl Connection {
    pub(super) fn tx_class(self: &Rc<Self>, ch: u16, method: Method) -> Result<Next, AmqpError> {
        match method {
            Method::TxSelect(_) => {
                self.with_channel(ch, Channel::tx_select)??;
                self.out.method(ch, &Method::TxSelectOk(TxSelectOk {}));
                Ok(Next::Continue)
            }
            Method::TxCommit(_) => self.tx_commit(ch),
            Method::TxRollback(_) => {
                self.with_channel(ch, Channel::rollback)??;
                self.release_all_content(ch);
                self.out.method(ch, &Method::TxRollbackOk(TxRollbackOk {}));
                Ok(Next::Continue)
            }
            other => Err(not_from_client(&other)),
        }
    }

    /// Carries out what the transaction deferred, in order.
    fn tx_commit(self: &Rc<Self>, ch: u16) -> Result<Next, AmqpError> {
        let actions = self.with_channel(ch, Channel::take_tx)??;
        self.release_all_content(ch);
        let mut congested = None;
        for action in actions {
            match action {
                TxAction::Publish(publish) => {
                    let tag = self.with_channel(ch, |channel| channel.next_publish_tag(true))?;
                    let routed = self.route(ch, publish, tag)?;
                    self.with_channel(ch, |channel| channel.routed(tag, routed.shards))?;
                    congested = routed.congested.or(congested);
                }
                TxAction::Settle {
                    delivery_tag,
                    multiple,
                    action,
                } => self.settle(ch, delivery_tag, multiple, action)?,
            }
        }
        // commit-ok goes out once every committed publish is stored: on
        // disk, for a persistent message in a durable queue.
        self.with_channel(ch, |channel| {
            channel.commit();
            channel.answered(|method| self.out.method(ch, &method));
        })?;
        Ok(Next::Published { congested })
    }
}
