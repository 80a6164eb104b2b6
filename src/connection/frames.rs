//! Frames on a channel other than 0, by the channel's state: method frames
//! go to `methods`, content header and body frames build the publish they
//! belong to, and a closing or unopened channel takes only what the spec
//! allows.

use std::rc::Rc;

use super::channel::{unexpected_content, Channel, ChannelState};
use super::{Connection, Next};
use crate::protocol::frame::{Frame, FrameType};
use crate::protocol::method::{BasicPublish, ChannelCloseOk, Method};
use crate::protocol::properties::ContentHeader;
use crate::protocol::{reply_code, AmqpError};

impl Connection {
    pub(super) fn channel_frame(self: &Rc<Self>, frame: Frame) -> Next {
        let channel_id = frame.channel;
        let channel_state = self
            .state
            .borrow()
            .channels
            .get(&channel_id)
            .map(|c| c.state);
        match channel_state {
            None => self.unopened_channel_frame(frame),
            Some(ChannelState::Closing) => self.closing_channel_frame(frame),
            Some(ChannelState::Open) => match frame.frame_type {
                FrameType::Method => self.channel_method_frame(frame),
                FrameType::Header => self.content_header(channel_id, frame),
                FrameType::Body => self.content_body(channel_id, frame),
                FrameType::Heartbeat => Next::Continue,
            },
        }
    }

    fn unopened_channel_frame(self: &Rc<Self>, frame: Frame) -> Next {
        let method = match frame.frame_type {
            FrameType::Method => Method::decode(frame.payload),
            _ => return self.hard_error(unexpected_content()),
        };
        match method {
            Ok(Method::ChannelOpen(_)) => self.open_channel(frame.channel),
            Ok(other) => {
                let err = AmqpError::new(reply_code::CHANNEL_ERROR, "expected 'channel.open'");
                self.close_connection(err, other.class_id(), other.method_id());
                Next::Continue
            }
            Err(err) => self.hard_error(err.into()),
        }
    }

    /// After we closed a channel: only close-ok (or a crossing close) counts.
    /// The channel number stays taken until close-ok arrives.
    fn closing_channel_frame(&self, frame: Frame) -> Next {
        if frame.frame_type != FrameType::Method {
            return Next::Continue;
        }
        match Method::decode(frame.payload) {
            Ok(Method::ChannelCloseOk(_)) => {
                self.state.borrow_mut().remove_channel(frame.channel);
            }
            // A crossing close: answer it, and keep waiting for the close-ok
            // to our own close (RabbitMQ's reader does the same).
            Ok(Method::ChannelClose(_)) => {
                self.out
                    .method(frame.channel, &Method::ChannelCloseOk(ChannelCloseOk {}));
            }
            _ => {}
        }
        Next::Continue
    }

    fn channel_method_frame(self: &Rc<Self>, frame: Frame) -> Next {
        let channel_id = frame.channel;
        let method = match Method::decode(frame.payload) {
            Ok(method) => method,
            Err(err) => return self.hard_error(err.into()),
        };
        let ids = (method.class_id(), method.method_id());
        let assembling = self
            .state
            .borrow()
            .channels
            .get(&channel_id)
            .is_some_and(Channel::is_assembling);
        if assembling {
            let err = AmqpError::new(
                reply_code::UNEXPECTED_FRAME,
                "expected content header for class 60, got non content header frame instead",
            );
            self.close_connection(err, ids.0, ids.1);
            return Next::Continue;
        }
        match self.channel_method(channel_id, method) {
            Ok(next) => next,
            Err(err) => self.method_error(channel_id, err, ids),
        }
    }

    /// A soft error closes the channel; a hard one the connection.
    pub(super) fn method_error(
        self: &Rc<Self>,
        channel_id: u16,
        err: AmqpError,
        ids: (u16, u16),
    ) -> Next {
        if err.is_hard() {
            self.close_connection(err, ids.0, ids.1);
        } else {
            self.channel_error(channel_id, err, ids.0, ids.1);
        }
        Next::Continue
    }

    fn content_header(self: &Rc<Self>, ch: u16, frame: Frame) -> Next {
        let message_size_max = self.shard.shared.config.message_size_max;
        // decode validates the property list; route reads what it needs.
        let header = ContentHeader::decode(frame.payload).map_err(AmqpError::from);
        let body_size = header.and_then(|header| {
            let mut state = self.state.borrow_mut();
            match state.channels.get_mut(&ch) {
                Some(channel) => channel.content_header(header),
                None => Err(unexpected_content()),
            }
        });
        let body_size = match body_size {
            Ok(body_size) => body_size,
            Err(err) => return self.hard_error(err),
        };
        let held = if body_size > message_size_max {
            Err(AmqpError::precondition_failed(format!(
                "message size {body_size} is larger than configured max size {message_size_max}"
            )))
        } else {
            self.hold_content(ch, body_size)
        };
        if let Err(err) = held {
            self.channel_error(ch, err, BasicPublish::CLASS_ID, BasicPublish::METHOD_ID);
            return Next::Continue;
        }
        if body_size == 0 {
            return self.publish_complete(ch);
        }
        Next::Continue
    }

    fn content_body(self: &Rc<Self>, ch: u16, frame: Frame) -> Next {
        let complete = match self.state.borrow_mut().channels.get_mut(&ch) {
            Some(channel) => channel.content_body(frame.payload),
            None => Err(unexpected_content()),
        };
        match complete {
            Ok(true) => self.publish_complete(ch),
            Ok(false) => Next::Continue,
            Err(err) => self.hard_error(err),
        }
    }

    fn publish_complete(self: &Rc<Self>, ch: u16) -> Next {
        let publish = self
            .state
            .borrow_mut()
            .channels
            .get_mut(&ch)
            .and_then(Channel::take_publish);
        let Some(publish) = publish else {
            return Next::Continue;
        };
        match self.publish(ch, publish) {
            Ok(next) => next,
            Err(err) => {
                self.method_error(ch, err, (BasicPublish::CLASS_ID, BasicPublish::METHOD_ID))
            }
        }
    }
}
