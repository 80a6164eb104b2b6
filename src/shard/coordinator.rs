//! Metadata coordination, run by shard 0.
//!
//! Every metadata change is validated and applied first on shard 0's
//! catalog replica, then broadcast to the other shards, which apply the same
//! operation to theirs. Because one shard orders all changes and each ring
//! is FIFO, every replica sees the same sequence and `Catalog::apply` is
//! deterministic, so the replicas stay equal. The requester gets its reply
//! only when every shard has applied the change: a publish sent after the
//! -ok, on any connection, routes by the new table.

use hashbrown::HashMap;

use super::{MetaDone, MetaMsg, Reply, ReplyTo, Shard, ShardMsg};
use crate::catalog::{MetaOp, MetaOutcome};
use crate::ids::ShardId;

#[derive(Default)]
pub(super) struct Coordinator {
    next_id: u64,
    pending: HashMap<u64, Pending>,
}

/// A change applied here and broadcast, waiting for the other shards.
struct Pending {
    reply_to: Option<ReplyTo>,
    outcome: MetaOutcome,
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
            } => self.coordinate(reply_to, op, message_count),
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

    fn coordinate(&self, reply_to: Option<ReplyTo>, op: MetaOp, message_count: u32) {
        let result = self.catalog.borrow_mut().apply(&op);
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(err) => {
                if let Some(to) = reply_to {
                    self.reply(to, Reply::Meta(Err(err)));
                }
                return;
            }
        };
        let counts = self.apply_outcome(&outcome).unwrap_or((message_count, 0));
        let others = self.mesh.shard_count() - 1;
        let pending = Pending {
            reply_to,
            outcome,
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
        let Some(to) = pending.reply_to else { return };
        let (message_count, consumer_count) = pending.counts;
        let done = MetaDone {
            outcome: pending.outcome,
            message_count,
            consumer_count,
        };
        self.reply(to, Reply::Meta(Ok(Box::new(done))));
    }

    fn reply(&self, to: ReplyTo, reply: Reply) {
        self.send(to.conn.shard_id as ShardId, ShardMsg::Reply { to, reply });
    }
}
