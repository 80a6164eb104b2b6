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
//! could lose. The write runs on the shard's blocking thread
//! (`write_definitions`), so shard 0 keeps serving meanwhile, and the
//! changes that arrive during one write go to disk together in the next
//! (group commit). Broadcasts keep the order changes were applied in
//! here: while any change waits for the disk, later ones (durable or not)
//! queue behind it. If the log cannot be written the change still goes to
//! every replica (they must stay equal), its requester gets 541, and the
//! broker shuts down: it can no longer keep its promise of durability.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use hashbrown::HashMap;

use super::{MetaDone, MetaMsg, Reply, Shard, ShardMsg};
use crate::catalog::{MetaOp, MetaOutcome};
use crate::definitions::durable_changes;
use crate::definitions::log::DefinitionsLog;
use crate::ids::{ChannelId, ShardId};
use crate::protocol::{reply_code, AmqpError};
use crate::runtime;

#[derive(Default)]
pub(super) struct Coordinator {
    next_id: u64,
    pending: HashMap<u64, Pending>,
    /// Whether changes are logged: shard 0 with a definitions log.
    logged: bool,
    /// The log, when no write has it.
    log: Option<DefinitionsLog>,
    /// Changes applied here, in order, whose broadcast waits for the log.
    unsynced: VecDeque<Unsynced>,
}

impl Coordinator {
    pub(super) fn new(log: Option<DefinitionsLog>) -> Coordinator {
        Coordinator {
            logged: log.is_some(),
            log,
            ..Coordinator::default()
        }
    }

    pub(super) fn is_logged(&self) -> bool {
        self.logged
    }

    /// Whether changes wait for the disk: queued, or in a write now (its
    /// batch has left `unsynced` but is not broadcast yet). A change
    /// applied meanwhile must queue behind them, or it would reach the
    /// replicas first.
    fn holds_back(&self) -> bool {
        !self.unsynced.is_empty() || (self.logged && self.log.is_none())
    }
}

/// A change waiting for the disk: its own durable `changes`, or an
/// earlier change's.
struct Unsynced {
    op: MetaOp,
    pending: Pending,
    changes: Vec<MetaOp>,
}

/// Who waits for a change: a connection's channel (or nobody), or a
/// callback on this shard (the management API's command).
pub(crate) enum Requester {
    Connection(Option<ChannelId>),
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
                    Err(err) => self.replicas_diverged(&op, &err),
                };
                self.send(0, ShardMsg::Meta(Box::new(MetaMsg::Applied { id, counts })));
            }
            MetaMsg::Applied { id, counts } => self.applied(id, counts),
        }
    }

    /// Replicas apply, in the coordinator's order, only what the
    /// coordinator's replica accepted; one that refuses has diverged, and
    /// every later change and route on this shard would be wrong. That is a
    /// bug, not a condition to carry on from: say so and stop the process
    /// (what is durable is recovered at the next start, as after a crash).
    fn replicas_diverged(&self, op: &MetaOp, err: &AmqpError) -> ! {
        tracing::error!(
            "invariant violated: the catalog replica of shard {} refused a change the \
             coordinator applied ({err}); the replicas have diverged, aborting. Change: {op:?}",
            self.id
        );
        std::process::abort()
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
        let changes = self.durable_changes_of(&op, &outcome);
        let counts = self.apply_outcome(&outcome).unwrap_or((message_count, 0));
        let pending = Pending {
            requester,
            outcome,
            failure: None,
            shards_left: self.mesh.shard_count() - 1,
            counts,
        };
        let mut coordinator = self.coordinator.borrow_mut();
        if !changes.is_empty() || coordinator.holds_back() {
            coordinator.unsynced.push_back(Unsynced {
                op,
                pending,
                changes,
            });
            drop(coordinator);
            self.definitions_due.notify();
            return;
        }
        drop(coordinator);
        self.broadcast(op, pending);
    }

    /// What of the applied `op` must be on disk before it is broadcast;
    /// nothing when this shard keeps no log.
    fn durable_changes_of(&self, op: &MetaOp, outcome: &MetaOutcome) -> Vec<MetaOp> {
        if !self.coordinator.borrow().logged {
            return Vec::new();
        }
        durable_changes(op, outcome, &self.catalog.borrow())
    }

    /// Sends an applied change to every other shard; the requester hears
    /// when all have applied it.
    fn broadcast(&self, op: MetaOp, pending: Pending) {
        if pending.shards_left == 0 {
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

    /// Shard 0's log writer: appends and syncs the waiting changes on the
    /// blocking thread, all that queued meanwhile at once, then broadcasts
    /// them in order. See the module doc.
    pub(super) async fn write_definitions(self: Rc<Self>) {
        loop {
            self.definitions_due.wait().await;
            while let Some((batch, mut log)) = self.take_unsynced() {
                let changes: Vec<MetaOp> = batch
                    .iter()
                    .flat_map(|unsynced| unsynced.changes.iter().cloned())
                    .collect();
                let (log, written) = if changes.is_empty() {
                    (log, Ok(()))
                } else {
                    runtime::blocking(move || {
                        let written = log.record(&changes);
                        (log, written)
                    })
                    .await
                };
                self.coordinator.borrow_mut().log = Some(log);
                let failure = written.err().map(|err| self.log_failed(err));
                for Unsynced {
                    op, mut pending, ..
                } in batch
                {
                    pending.failure = failure.clone();
                    self.broadcast(op, pending);
                }
            }
        }
    }

    /// Every change waiting for the disk, with the log to write them to.
    fn take_unsynced(&self) -> Option<(Vec<Unsynced>, DefinitionsLog)> {
        let mut coordinator = self.coordinator.borrow_mut();
        if coordinator.unsynced.is_empty() {
            return None;
        }
        let log = coordinator.log.take()?;
        Some((coordinator.unsynced.drain(..).collect(), log))
    }

    fn log_failed(&self, err: std::io::Error) -> AmqpError {
        tracing::error!("cannot write the definitions log, shutting down: {err}");
        self.shared.shutdown.store(true, Ordering::SeqCst);
        AmqpError::new(
            reply_code::INTERNAL_ERROR,
            format!("definitions could not be written to disk: {err}"),
        )
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

    fn reply(&self, to: ChannelId, reply: Reply) {
        self.send(to.conn.shard_id as ShardId, ShardMsg::Reply { to, reply });
    }
}
