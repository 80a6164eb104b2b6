//! A channel's decisions, without a socket or a shard.

use bytes::Bytes;

use super::*;
use crate::ids::{ChannelId, ConnectionId};
use crate::message::{Message, MessageContent};

const QUEUE: QueueId = QueueId(7);
const SERIAL: u32 = 3;

fn tag(tag: u64) -> ConfirmTag {
    ConfirmTag {
        serial: SERIAL,
        tag,
    }
}

fn publish_method() -> BasicPublish {
    BasicPublish {
        ticket: 0,
        exchange: ShortStr::from(""),
        routing_key: ShortStr::from("q"),
        mandatory: false,
        immediate: false,
    }
}

fn header(body_size: u64) -> ContentHeader {
    ContentHeader {
        class_id: BasicPublish::CLASS_ID,
        weight: 0,
        body_size,
        properties: Bytes::from_static(&[0, 0]),
    }
}

fn deliver(seq: u64, tag: &str) -> Deliver {
    Deliver {
        owner: 0,
        channel: ChannelId {
            conn: ConnectionId {
                shard_id: 0,
                local_id: 1,
            },
            number: 1,
        },
        consumer_tag: ShortStr::from(tag),
        queue: QUEUE,
        seq,
        redelivered: false,
        no_ack: false,
        message: Message::new(MessageContent {
            expiration_ms: None,
            priority: 0,
            persistent: false,
            exchange: ShortStr::from(""),
            routing_key: ShortStr::from("q"),
            properties: Bytes::new(),
            body: Bytes::from_static(b"m"),
        }),
    }
}

/// A channel that delivered seqs 1..=n from QUEUE with ack required.
fn with_deliveries(n: u64) -> Channel {
    let mut channel = Channel::new(SERIAL);
    channel.consumer_started(ShortStr::from("c"), QUEUE);
    for seq in 1..=n {
        assert_eq!(
            channel.admit(deliver(seq, "c")).map(|(_, tag)| tag),
            Some(seq)
        );
    }
    channel
}

fn replies(channel: &mut Channel) -> Vec<Method> {
    let mut out = Vec::new();
    channel.answered(|method| out.push(method));
    out
}

#[test]
fn a_publish_is_assembled_from_header_and_body_frames() {
    let mut channel = Channel::new(SERIAL);
    channel.start_publish(publish_method()).unwrap();
    assert!(channel.is_assembling());
    assert_eq!(channel.content_header(header(5)).unwrap(), 5);
    assert!(!channel.content_body(Bytes::from_static(b"he")).unwrap());
    assert!(channel.content_body(Bytes::from_static(b"llo")).unwrap());
    let publish = channel.take_publish().unwrap();
    assert_eq!(&publish.body[..], b"hello");
    assert!(!channel.is_assembling());
}

#[test]
fn content_out_of_turn_is_a_hard_error() {
    let mut channel = Channel::new(SERIAL);
    let err = channel.content_header(header(1)).unwrap_err();
    assert_eq!(err.code, reply_code::UNEXPECTED_FRAME);
    channel.start_publish(publish_method()).unwrap();
    let err = channel.content_body(Bytes::from_static(b"x")).unwrap_err();
    assert_eq!(err.code, reply_code::UNEXPECTED_FRAME);
    channel.content_header(header(1)).unwrap();
    let err = channel.content_body(Bytes::from_static(b"xy")).unwrap_err();
    assert_eq!(err.code, reply_code::FRAME_ERROR);
    let immediate = BasicPublish {
        immediate: true,
        ..publish_method()
    };
    let err = Channel::new(SERIAL).start_publish(immediate).unwrap_err();
    assert_eq!(err.code, reply_code::NOT_IMPLEMENTED);
}

#[test]
fn acks_settle_known_tags_and_refuse_unknown_ones() {
    let mut channel = with_deliveries(3);
    let mut settled = Vec::new();
    channel
        .settle(2, true, Settlement::Ack, &mut settled)
        .unwrap();
    assert_eq!(settled, vec![(QUEUE, 1), (QUEUE, 2)]);
    let err = channel
        .settle(2, false, Settlement::Ack, &mut settled)
        .unwrap_err();
    assert_eq!(err.code, reply_code::PRECONDITION_FAILED);
    assert_eq!(channel.unacked_count(), 1);
    assert_eq!(channel.totals().acked, 2);
    settled.clear();
    channel.recover(&mut settled);
    assert_eq!(settled, vec![(QUEUE, 3)]);
    assert_eq!(channel.unacked_count(), 0);
}

#[test]
fn a_transaction_defers_publishes_and_acks_until_commit() {
    let mut channel = with_deliveries(1);
    channel.tx_select().unwrap();
    let err = channel.confirm_select().unwrap_err();
    assert_eq!(err.code, reply_code::PRECONDITION_FAILED);
    assert!(channel.defer_settle(1, false, Settlement::Ack));
    assert!(!Channel::new(SERIAL).defer_settle(1, false, Settlement::Ack));
    let publish = Publish {
        method: publish_method(),
        header: header(0),
        body: Bytes::new(),
    };
    assert!(channel.defer_publish(publish).is_none());
    let actions = channel.take_tx().unwrap();
    assert!(matches!(
        actions[..],
        [
            TxAction::Settle {
                delivery_tag: 1,
                ..
            },
            TxAction::Publish(_)
        ]
    ));
    assert!(channel.take_tx().unwrap().is_empty());
    channel.rollback().unwrap();
    let err = Channel::new(SERIAL).rollback().unwrap_err();
    assert_eq!(err.code, reply_code::PRECONDITION_FAILED);
}

#[test]
fn commit_ok_waits_for_every_committed_publish() {
    let mut channel = Channel::new(SERIAL);
    channel.tx_select().unwrap();
    let first = channel.next_publish_tag(true);
    channel.routed(first, 2);
    channel.commit();
    assert!(replies(&mut channel).is_empty());
    channel.answer(first, true);
    assert!(
        replies(&mut channel).is_empty(),
        "one of two shards answered"
    );
    channel.answer(first, true);
    assert!(matches!(replies(&mut channel)[..], [Method::TxCommitOk(_)]));
}

#[test]
fn confirms_answer_in_order_as_ack_and_nack_runs() {
    let mut channel = Channel::new(SERIAL);
    channel.confirm_select().unwrap();
    let tags: Vec<ConfirmTag> = (0..4)
        .map(|_| {
            let tag = channel.next_publish_tag(false);
            channel.routed(tag, 1);
            tag
        })
        .collect();
    assert_eq!(tags, vec![tag(1), tag(2), tag(3), tag(4)]);
    channel.answer(tag(2), true);
    assert!(replies(&mut channel).is_empty(), "1 is not answered yet");
    channel.answer(tag(1), true);
    channel.answer(tag(3), false);
    channel.answer(tag(4), false);
    let out = replies(&mut channel);
    assert!(
        matches!(
            out[..],
            [
                Method::BasicAck(BasicAck {
                    delivery_tag: 2,
                    multiple: true
                }),
                Method::BasicNack(BasicNack {
                    delivery_tag: 4,
                    multiple: true,
                    ..
                })
            ]
        ),
        "{out:?}"
    );
}

#[test]
fn an_unconfirmed_publish_wants_no_answer() {
    let mut channel = Channel::new(SERIAL);
    assert_eq!(channel.next_publish_tag(false), ConfirmTag::NONE);
    channel.routed(ConfirmTag::NONE, 3);
    assert!(replies(&mut channel).is_empty());
    assert_eq!(channel.totals().published, 1);
}

#[test]
fn the_global_prefetch_holds_deliveries_until_acks_make_room() {
    let mut channel = Channel::new(SERIAL);
    let qos = BasicQos {
        prefetch_size: 0,
        prefetch_count: 1,
        global: true,
    };
    channel.qos(&qos).unwrap();
    channel.consumer_started(ShortStr::from("c"), QUEUE);
    assert!(channel.admit(deliver(1, "c")).is_some());
    assert!(channel.admit(deliver(2, "c")).is_none(), "held");
    assert!(channel.release_held().is_none(), "still full");
    let mut settled = Vec::new();
    channel
        .settle(1, false, Settlement::Ack, &mut settled)
        .unwrap();
    let released = channel.release_held().unwrap().unwrap();
    assert_eq!((released.0.seq, released.1), (2, 2));
    assert!(channel.admit(deliver(3, "c")).is_none(), "held again");
    channel.remove_consumer(&ShortStr::from("c"));
    channel
        .settle(2, false, Settlement::Ack, &mut settled)
        .unwrap();
    let orphan = channel.release_held().unwrap().unwrap_err();
    assert_eq!(orphan.seq, 3, "its consumer is gone: requeued");
}

#[test]
fn qos_and_consumer_tags_are_checked() {
    let mut channel = Channel::new(SERIAL);
    let qos = BasicQos {
        prefetch_size: 10,
        prefetch_count: 0,
        global: false,
    };
    assert_eq!(
        channel.qos(&qos).unwrap_err().code,
        reply_code::NOT_IMPLEMENTED
    );
    let qos = BasicQos {
        prefetch_size: 0,
        prefetch_count: 50,
        global: false,
    };
    channel.qos(&qos).unwrap();
    let tag = ShortStr::from("c");
    assert_eq!(channel.check_new_consumer(&tag).unwrap(), 50);
    channel.consumer_started(tag.clone(), QUEUE);
    let err = channel.check_new_consumer(&tag).unwrap_err();
    assert_eq!(err.code, reply_code::NOT_ALLOWED);
    assert!(channel.accepts(&tag));
    assert_eq!(channel.release(), vec![QUEUE]);
    assert!(!channel.accepts(&tag));
}

#[test]
fn answers_for_an_earlier_channel_with_the_same_number_are_dropped() {
    let mut channel = Channel::new(SERIAL);
    channel.confirm_select().unwrap();
    let first = channel.next_publish_tag(false);
    channel.routed(first, 1);
    let stale = ConfirmTag {
        serial: SERIAL - 1,
        ..first
    };
    channel.answer(stale, true);
    assert!(
        replies(&mut channel).is_empty(),
        "not this channel's publish"
    );
    channel.answer(first, true);
    assert_eq!(replies(&mut channel).len(), 1);
}
