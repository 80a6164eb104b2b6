//! The channel class (open, close, flow) and the deprecated access class.

use std::rc::Rc;

use super::not_from_client;
use crate::connection::channel::Channel;
use crate::connection::{Connection, Next};
use crate::protocol::method::*;
use crate::protocol::{reply_code, AmqpError};

impl Connection {
    /// channel.open: channel_max limits how many channels are open at once
    /// (closing ones included), not their numbers, as in RabbitMQ.
    pub(in crate::connection) fn open_channel(self: &Rc<Self>, channel_id: u16) -> Next {
        let (channel_max, open) = {
            let state = self.state.borrow();
            (state.tune.channel_max, state.channels.len())
        };
        if channel_max != 0 && open >= usize::from(channel_max) {
            let err = AmqpError::not_allowed(format!(
                "number of channels opened ({open}) has reached the negotiated channel_max \
                 ({channel_max})"
            ));
            self.close_connection(err, 0, 0);
            return Next::Continue;
        }
        let mut state = self.state.borrow_mut();
        state.channels_opened = state.channels_opened.wrapping_add(1);
        let serial = state.channels_opened;
        state.channels.insert(channel_id, Channel::new(serial));
        drop(state);
        self.out
            .method(channel_id, &Method::ChannelOpenOk(ChannelOpenOk::default()));
        Next::Continue
    }

    pub(super) fn channel_class(&self, ch: u16, method: Method) -> Result<Next, AmqpError> {
        match method {
            Method::ChannelOpen(_) => Err(AmqpError::new(
                reply_code::CHANNEL_ERROR,
                "second 'channel.open' seen",
            )),
            Method::ChannelClose(_) => {
                let mut state = self.state.borrow_mut();
                if let Some(mut channel) = state.remove_channel(ch) {
                    self.release_channel(ch, &mut channel);
                }
                drop(state);
                self.out
                    .method(ch, &Method::ChannelCloseOk(ChannelCloseOk {}));
                Ok(Next::Continue)
            }
            Method::ChannelCloseOk(_) | Method::ChannelFlowOk(_) => Ok(Next::Continue),
            Method::ChannelFlow(flow) if flow.active => {
                self.out
                    .method(ch, &Method::ChannelFlowOk(ChannelFlowOk { active: true }));
                Ok(Next::Continue)
            }
            Method::ChannelFlow(_) => Err(AmqpError::not_implemented("active=false")),
            other => Err(not_from_client(&other)),
        }
    }

    /// access.request, long deprecated: granted, as RabbitMQ does.
    pub(super) fn access_class(&self, ch: u16, method: Method) -> Result<Next, AmqpError> {
        match method {
            Method::AccessRequest(_) => {
                self.out
                    .method(ch, &Method::AccessRequestOk(AccessRequestOk { ticket: 1 }));
                Ok(Next::Continue)
            }
            other => Err(not_from_client(&other)),
        }
    }
}
