//! What shards say to each other over the ring mesh.
//!
//! Data-plane messages (publish, deliver, settle, credit) are small and carry
//! the message handle, never its bytes. Metadata travels boxed: it is rare,
//! and keeping it out of line keeps every ring slot small.

use super::PublishCredit;
use crate::catalog::{MetaOp, MetaOutcome};
use crate::ids::{ChannelId, ConnectionId, QueueId, ShardId};
use crate::message::Message;
use crate::protocol::{AmqpError, ShortStr};
pub use crate::queue::Settlement;
use crate::queue::{ConsumerKey, ConsumerSpec};
use crate::runtime::mesh::Urgency;

pub enum ShardMsg {
    /// Connection -> queue owner: enqueue a routed message. The owner pays
    /// the publisher's connection credit for it (`PublishCredit`).
    Publish {
        queue: QueueId,
        message: Message,
        publisher: ChannelId,
        /// The answer the publisher wants; `ConfirmTag::NONE` when it does
        /// not confirm (the owner then answers nothing).
        confirm: ConfirmTag,
    },
    /// Queue owner -> owner of a dead-letter target: enqueue a dead letter;
    /// also a delayed message that came due (`shard::delayed`). No
    /// connection is waiting on it, so no credit is owed for it.
    DeadLetter {
        queue: QueueId,
        message: Message,
    },
    /// Queue owner -> publishing connection: `from` has processed this much
    /// of what the connection sent it.
    PublishCredit {
        conn: ConnectionId,
        from: ShardId,
        credit: PublishCredit,
    },
    /// Queue owner -> publishing connection: publishes it is done with.
    Confirms {
        conn: ConnectionId,
        answers: Vec<ConfirmAnswer>,
    },
    /// Connection -> queue owner: settle one message the channel holds.
    Settle {
        queue: QueueId,
        holder: ChannelId,
        seq: u64,
        action: Settlement,
    },
    /// Connection -> queue owner: settle several (multiple acks, commits).
    SettleMany {
        queue: QueueId,
        holder: ChannelId,
        seqs: Vec<u64>,
        action: Settlement,
    },
    /// Connection -> queue owner: deliveries written to the socket, so the
    /// consumer may be sent that many more.
    Credit {
        queue: QueueId,
        consumer: ConsumerKey,
        credit: u32,
    },
    /// Queue owner -> connection.
    Deliver(Deliver),
    /// Queue owner -> connection: the queue went away under this consumer.
    ConsumerGone {
        channel: ChannelId,
        consumer_tag: ShortStr,
    },
    /// Connection -> queue owners: the channel (or, with `channel: None`,
    /// the whole connection) closed; drop its consumers and requeue what it
    /// held unacked.
    HolderClosed {
        conn: ConnectionId,
        channel: Option<u16>,
        queues: Vec<QueueId>,
    },
    /// Connection -> queue owner: a request answered with a `Reply`.
    QueueRequest {
        queue: QueueId,
        reply_to: ChannelId,
        request: QueueRequest,
    },
    /// Answer to a `QueueRequest` or a metadata request.
    Reply {
        to: ChannelId,
        reply: Reply,
    },
    Meta(Box<MetaMsg>),
}

/// The urgent lane carries what keeps consumers and publishers moving
/// (acks, deliveries, credit, replies), so none of it waits behind a backlog
/// of publishes. Publishes stay on the bulk lane, in order with the requests
/// and closes that must see them (a get, purge or delete after a publish
/// from the same connection; a channel's close after its publishes).
/// Crossing lanes is safe for the urgent ones: an ack or a credit refers to
/// deliveries already made, and a reply and the deliveries after it travel
/// together on the urgent lane.
impl Urgency for ShardMsg {
    fn is_urgent(&self) -> bool {
        match self {
            ShardMsg::Publish { .. }
            | ShardMsg::DeadLetter { .. }
            | ShardMsg::HolderClosed { .. }
            | ShardMsg::QueueRequest { .. }
            | ShardMsg::Meta(_) => false,
            ShardMsg::PublishCredit { .. }
            | ShardMsg::Confirms { .. }
            | ShardMsg::Settle { .. }
            | ShardMsg::SettleMany { .. }
            | ShardMsg::Credit { .. }
            | ShardMsg::Deliver(_)
            | ShardMsg::ConsumerGone { .. }
            | ShardMsg::Reply { .. } => true,
        }
    }
}

// Every ring slot is as large as the largest message: keep them small.
const _: () = assert!(std::mem::size_of::<ShardMsg>() <= 96);

/// Which publish a queue's shard answers: the publishing channel's
/// incarnation and its confirm number there. A client may close a channel
/// and open another under the same number while answers for the first are
/// on their way; the serial keeps them from counting for the second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConfirmTag {
    pub(crate) serial: u32,
    /// From 1; 0 wants no answer.
    pub tag: u64,
}

impl ConfirmTag {
    pub const NONE: ConfirmTag = ConfirmTag { serial: 0, tag: 0 };
}

/// A queue's shard is done with one publish of a confirming channel:
/// stored (on disk if it had to be), or rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfirmAnswer {
    pub channel: u16,
    pub confirm: ConfirmTag,
    pub(crate) stored: bool,
}

#[derive(Debug)]
pub struct Deliver {
    /// The queue's shard, where credit goes back to.
    pub owner: ShardId,
    pub channel: ChannelId,
    pub consumer_tag: ShortStr,
    pub queue: QueueId,
    pub seq: u64,
    pub redelivered: bool,
    pub no_ack: bool,
    pub message: Message,
}

pub enum QueueRequest {
    Consume(ConsumerSpec),
    /// Answered once the consumer is gone (and, for the last consumer of an
    /// auto-delete queue, once the queue is gone everywhere), so nothing is
    /// delivered to it after cancel-ok and the queue's fate is settled.
    Cancel(ConsumerKey),
    Get {
        no_ack: bool,
    },
    Purge,
    Delete {
        if_unused: bool,
        if_empty: bool,
    },
}

pub enum Reply {
    /// Boxed: the outcome carries whole definitions, and ring slots are
    /// sized by the largest message.
    Meta(Result<Box<MetaDone>, AmqpError>),
    ConsumeOk,
    CancelOk,
    Got(Option<Got>),
    Purged {
        message_count: u32,
    },
    Error(AmqpError),
}

/// A metadata change applied on every shard.
pub struct MetaDone {
    pub outcome: MetaOutcome,
    /// For queue.declare-ok: the queue's ready messages and consumers.
    pub message_count: u32,
    pub consumer_count: u32,
}

pub struct Got {
    pub queue: QueueId,
    pub seq: u64,
    pub redelivered: bool,
    pub message_count: u32,
    pub message: Message,
}

pub enum MetaMsg {
    /// To the coordinator: validate, apply and broadcast `op`. A queue
    /// owner that checked a delete's conditions passes the queue's message
    /// count along for delete-ok.
    Request {
        reply_to: Option<ChannelId>,
        op: MetaOp,
        message_count: u32,
    },
    /// Coordinator -> every other shard: apply `op` to your replica.
    Apply { id: u64, op: MetaOp },
    /// Shard -> coordinator: applied; the queue owner adds its counts.
    Applied { id: u64, counts: Option<(u32, u32)> },
}
