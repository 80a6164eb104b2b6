//! The one way from the management API's thread to the shards: a bounded
//! inbox of commands per shard, each a closure the shard runs on its own
//! thread, answering over a oneshot.
//!
//! Why closures in an inbox and not locks: the shards' state is touched
//! only by their threads (no `Mutex` on the data path). A shard drains its
//! inbox from a timer task (`Shard::serve_management`), between its other
//! work, so the management API costs the data path a queue pop every few
//! milliseconds and nothing per message. Reads (listings, counts) are
//! computed on demand by the shards that own the data; changes go through
//! the coordinator on shard 0 like any declare.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use tokio::sync::oneshot;

use super::{Requester, Shard};
use crate::catalog::{MetaOp, MetaOutcome};
use crate::protocol::AmqpError;

/// A command for one shard, run on that shard's thread.
pub type Command = Box<dyn FnOnce(&Rc<Shard>) + Send>;

/// One shard's inbox.
pub(crate) type Inbox = Arc<ArrayQueue<Command>>;

/// Commands a shard may have waiting; past it the API answers 503.
pub(crate) const INBOX_CAPACITY: usize = 1024;

/// How long a command may wait for its answer (a metadata change waits
/// for every shard) before the API answers 503.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a command got no answer.
#[derive(Debug)]
pub(crate) enum BridgeError {
    /// The inbox is full: the shards are not keeping up.
    Busy,
    /// The shard stopped (shutdown) before answering.
    Gone,
    /// No answer within [`ANSWER_TIMEOUT`].
    Timeout,
}

/// The management thread's handle on every shard's inbox.
#[derive(Clone)]
pub(crate) struct Bridge {
    inboxes: Arc<[Inbox]>,
}

impl Bridge {
    /// One inbox per shard; the shards get theirs from [`Bridge::inbox`].
    pub fn new(shard_count: usize) -> Bridge {
        let inboxes: Vec<Inbox> = (0..shard_count)
            .map(|_| Arc::new(ArrayQueue::new(INBOX_CAPACITY)))
            .collect();
        Bridge {
            inboxes: inboxes.into(),
        }
    }

    pub(crate) fn inbox(&self, shard: usize) -> Inbox {
        self.inboxes[shard].clone()
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.inboxes.len()
    }

    /// Runs `f` on `shard` and returns what it returns.
    pub(crate) async fn on_shard<R: Send + 'static>(
        &self,
        shard: usize,
        f: impl FnOnce(&Rc<Shard>) -> R + Send + 'static,
    ) -> Result<R, BridgeError> {
        self.on_shard_later(shard, move |shard, answer| {
            let _ = answer.send(f(shard));
        })
        .await
    }

    /// Runs `f` on `shard`; it answers through the sender, now or later.
    pub(crate) async fn on_shard_later<R: Send + 'static>(
        &self,
        shard: usize,
        f: impl FnOnce(&Rc<Shard>, oneshot::Sender<R>) + Send + 'static,
    ) -> Result<R, BridgeError> {
        let (answer, reply) = oneshot::channel();
        let command: Command = Box::new(move |shard| f(shard, answer));
        self.inboxes[shard]
            .push(command)
            .map_err(|_| BridgeError::Busy)?;
        match tokio::time::timeout(ANSWER_TIMEOUT, reply).await {
            Ok(answer) => answer.map_err(|_| BridgeError::Gone),
            Err(_) => Err(BridgeError::Timeout),
        }
    }

    /// Runs `f` on every shard, in shard order.
    pub(crate) async fn on_every_shard<R: Send + 'static>(
        &self,
        f: impl Fn(&Rc<Shard>) -> R + Send + Sync + Clone + 'static,
    ) -> Result<Vec<R>, BridgeError> {
        let mut results = Vec::with_capacity(self.shard_count());
        for shard in 0..self.shard_count() {
            results.push(self.on_shard(shard, f.clone()).await?);
        }
        Ok(results)
    }

    /// A metadata change through the coordinator, answered once every
    /// shard applied it.
    pub(crate) async fn meta(
        &self,
        op: MetaOp,
    ) -> Result<Result<MetaOutcome, AmqpError>, BridgeError> {
        self.on_shard_later(0, move |shard, answer| {
            let done = Box::new(move |result| {
                let _ = answer.send(result);
            });
            shard.coordinate(Requester::Local(done), op, 0);
        })
        .await
    }
}

/// Runs every command waiting in `inbox` (called by the shard's timer).
pub fn drain(inbox: &Inbox, shard: &Rc<Shard>) {
    while let Some(command) = inbox.pop() {
        command(shard);
    }
}
