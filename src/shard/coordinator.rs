//! Metadata coordination, run by shard 0.
//!
//! Every metadata change is validated and applied first on shard 0's
//! catalog replica, then broadcast to the other shards, which apply the same
//! operation to theirs. Because one shard orders all changes and each ring
//! is FIFO, every replica sees the same sequence and `Catalog::apply` is
//! deterministic, so the replicas stay equal. The requester gets its reply
//! only when every shard has applied the change: a publish sent after the
//! -ok, on any connection, routes by the new table.
//!
//! A change to durable definitions is appended to the definitions log and
//! synced before it is broadcast, so nobody hears of a change a crash
//! could lose. If the log cannot be written the change still goes to every
//! replica (they must stay equal), its requester gets 541, and the broker
//! shuts down: it can no longer keep its promise of durability.

use std::sync::atomic::Ordering;

use hashbrown::HashMap;

use super::{MetaDone, MetaMsg, Reply, ReplyTo, Shard, ShardMsg};
use crate::catalog::{MetaOp, MetaOutcome};
use crate::definitions::durable_changes;
use crate::definitions::log::DefinitionsLog;
use crate::ids::ShardId;
use crate::protocol::{reply_code, AmqpError};

#[derive(Default)]
pub(super) struct Coordinator {
    next_id: u64,
    pending: HashMap<u64, Pending>,
    /// Shard 0's; None on the other shards.
    log: Option<DefinitionsLog>,
}

impl Coordinator {
    pub(super) fn new(log: Option<DefinitionsLog>) -> Coordinator {
        Coordinator {
            log,
            ..Coordinator::default()
        }
    }
}

/// Who waits for a change: a connection's channel (or nobody), or a
/// callback on this shard (the management API's command).
pub(crate) enum Requester {
    Connection(Option<ReplyTo>),
    Local(LocalDone),
}

/// Called on shard 0 with the change's outcome once every shard applied it.
pub(crate) type LocalDone = Box<dyn FnOnce(Result<MetaOutcome, AmqpError>)>;

/// A change applied here and broadcast, waiting for the other shards.
struct Pending {
    requester: Requester,
    outcome: MetaOutcome,
    /// Set when the change could not be logged: what the requester hears.
    failure: Option<AmqpError>,
    shards_left: usize,
    counts: (u32, u32),
}

impl Shard {
    pub(super) fn handle_meta(&self, msg: MetaMsg) {
        match msg {
            MetaMsg::Request {
                reply_to,
                op,
                message_count,
            } => self.coordinate(Requester::Connection(reply_to), op, message_count),
            MetaMsg::Apply { id, op } => {
                let result = self.catalog.borrow_mut().apply(&op);
                let counts = match result {
                    Ok(outcome) => self.apply_outcome(&outcome),
                    Err(err) => {
                        // Replicas apply what the coordinator already
                        // accepted; a refusal here means they diverged.
                        tracing::error!("catalog replica refused an accepted change: {err}");
                        None
                    }
                };
                self.send(0, ShardMsg::Meta(Box::new(MetaMsg::Applied { id, counts })));
            }
            MetaMsg::Applied { id, counts } => self.applied(id, counts),
        }
    }

    /// Applies `op` here, then on every other shard; `requester` hears
    /// when all have. Shard 0 only.
    pub(crate) fn coordinate(&self, requester: Requester, op: MetaOp, message_count: u32) {
        let result = self.catalog.borrow_mut().apply(&op);
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(err) => {
                match requester {
                    Requester::Connection(Some(to)) => self.reply(to, Reply::Meta(Err(err))),
                    Requester::Connection(None) => {}
                    Requester::Local(done) => done(Err(err)),
                }
                return;
            }
        };
        let failure = self.log_durable_changes(&op, &outcome).err();
        let counts = self.apply_outcome(&outcome).unwrap_or((message_count, 0));
        let others = self.mesh.shard_count() - 1;
        let pending = Pending {
            requester,
            outcome,
            failure,
            shards_left: others,
            counts,
        };
        if others == 0 {
            self.finish(pending);
            return;
        }
        let id = {
            let mut coordinator = self.coordinator.borrow_mut();
            coordinator.next_id += 1;
            let id = coordinator.next_id;
            coordinator.pending.insert(id, pending);
            id
        };
        for shard in (0..self.mesh.shard_count()).filter(|&shard| shard != self.id) {
            let apply = MetaMsg::Apply { id, op: op.clone() };
            self.send(shard, ShardMsg::Meta(Box::new(apply)));
        }
    }

    /// Appends what of the applied `op` is durable to the definitions log
    /// and syncs it. See the module doc for a failure.
    fn log_durable_changes(&self, op: &MetaOp, outcome: &MetaOutcome) -> Result<(), AmqpError> {
        let mut coordinator = self.coordinator.borrow_mut();
        let Some(log) = coordinator.log.as_mut() else {
            return Ok(());
        };
        let changes = durable_changes(op, outcome, &self.catalog.borrow());
        if changes.is_empty() {
            return Ok(());
        }
        log.record(&changes).map_err(|err| {
            tracing::error!("cannot write the definitions log, shutting down: {err}");
            self.shared.shutdown.store(true, Ordering::SeqCst);
            AmqpError::new(
                reply_code::INTERNAL_ERROR,
                format!("definitions could not be written to disk: {err}"),
            )
        })
    }

    fn applied(&self, id: u64, counts: Option<(u32, u32)>) {
        let done = {
            let mut coordinator = self.coordinator.borrow_mut();
            let Some(pending) = coordinator.pending.get_mut(&id) else {
                return;
            };
            if let Some(counts) = counts {
                pending.counts = counts;
            }
            pending.shards_left -= 1;
            if pending.shards_left > 0 {
                return;
            }
            coordinator.pending.remove(&id)
        };
        if let Some(pending) = done {
            self.finish(pending);
        }
    }

    fn finish(&self, pending: Pending) {
        let result = match pending.failure {
            Some(err) => Err(err),
            None => Ok(pending.outcome),
        };
        let to = match pending.requester {
            Requester::Connection(Some(to)) => to,
            Requester::Connection(None) => return,
            Requester::Local(done) => return done(result),
        };
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(err) => return self.reply(to, Reply::Meta(Err(err))),
        };
        let (message_count, consumer_count) = pending.counts;
        let done = MetaDone {
            outcome,
            message_count,
            consumer_count,
        };
        self.reply(to, Reply::Meta(Ok(Box::new(done))));
    }

    fn reply(&self, to: ReplyTo, reply: Reply) {
        self.send(to.conn.shard_id as ShardId, ShardMsg::Reply { to, reply });
    }
}
