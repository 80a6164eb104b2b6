//! The shard's view of a connection: the `shard::Client` interface, by
//! which ring handlers hand it deliveries, replies, confirms and credit.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use super::Connection;
use crate::ids::ShardId;
use crate::protocol::ShortStr;
use crate::shard::{Client, ConfirmAnswer, ConnectionInfo, Deliver, PublishCredit, Reply};

impl Client for Connection {
    fn deliver(&self, deliver: Deliver) -> bool {
        Connection::deliver(self, deliver)
    }

    fn reply(self: Rc<Self>, channel: u16, reply: Reply) {
        self.on_reply(channel, reply);
    }

    fn confirmed(&self, answers: &[ConfirmAnswer]) {
        Connection::confirmed(self, answers);
    }

    fn publish_credit(&self, from: ShardId, credit: PublishCredit) {
        Connection::publish_credit(self, from, credit);
    }

    fn consumer_gone(&self, channel: u16, tag: &ShortStr) {
        Connection::consumer_gone(self, channel, tag);
    }

    fn force_close(self: Rc<Self>, text: &str) {
        Connection::force_close(&self, text);
    }

    fn wait_closed(&self, limit: Duration) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(Connection::wait_closed(self, limit))
    }

    fn vhost(&self) -> ShortStr {
        Connection::vhost(self)
    }

    fn user(&self) -> String {
        Connection::user(self)
    }

    fn info(&self) -> ConnectionInfo {
        self.snapshot()
    }
}
