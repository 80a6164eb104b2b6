//! Queue semantics, driven the way the shard code drives them.

use bytes::Bytes;

use super::*;
use crate::message::MessageContent;
use crate::protocol::reply_code;

const UNLIMITED_CREDIT: u32 = u32::MAX;

fn conn(local_id: u32) -> ConnectionId {
    ConnectionId {
        shard_id: 0,
        local_id,
    }
}

/// Channel 1 of connection 1, which most tests consume on.
const HOLDER: ChannelId = ChannelId {
    conn: ConnectionId {
        shard_id: 0,
        local_id: 1,
    },
    number: 1,
};

fn channel(local_id: u32, number: u16) -> ChannelId {
    ChannelId {
        conn: conn(local_id),
        number,
    }
}

fn key(local_id: u32, number: u16, tag: &str) -> ConsumerKey {
    ConsumerKey {
        channel: channel(local_id, number),
        tag: ShortStr::from(tag),
    }
}

fn spec(key: ConsumerKey, prefetch_count: u16, credit: u32) -> ConsumerSpec {
    ConsumerSpec {
        key,
        no_ack: false,
        exclusive: false,
        prefetch_count,
        credit,
        priority: 0,
    }
}

fn message(n: u64) -> Message {
    message_with_priority(n, 0)
}

fn body(message: &Message) -> String {
    String::from_utf8_lossy(&message.body).into_owned()
}

fn queue() -> Queue {
    Queue::new(
        QueueId(1),
        ShortStr::from("q"),
        ShortStr::from("/"),
        false,
        Settings::default(),
    )
}

fn auto_delete_queue() -> Queue {
    Queue::new(
        QueueId(2),
        ShortStr::from("q"),
        ShortStr::from("/"),
        true,
        Settings::default(),
    )
}

fn publish(queue: &mut Queue, range: std::ops::RangeInclusive<u64>) {
    for n in range {
        queue.publish(message(n), &0);
    }
}

fn dispatch(queue: &mut Queue) -> Vec<Delivery> {
    let mut deliveries = Vec::new();
    queue.dispatch(&0, &mut |delivery| deliveries.push(delivery));
    assert_eq!(
        queue.consumers.taker_count(),
        queue.consumers.recount_takers()
    );
    deliveries
}

/// (consumer tag, body) per delivery.
fn summary(deliveries: &[Delivery]) -> Vec<(String, String)> {
    deliveries
        .iter()
        .map(|d| (d.consumer.tag.to_string(), body(&d.message)))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(tag, body)| (tag.to_string(), body.to_string()))
        .collect()
}

fn bodies(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| body(&d.message)).collect()
}

#[test]
fn round_robin_two_consumers() {
    let mut q = queue();
    q.add_consumer(spec(key(1, 1, "a"), 0, UNLIMITED_CREDIT))
        .unwrap();
    q.add_consumer(spec(key(1, 1, "b"), 0, UNLIMITED_CREDIT))
        .unwrap();
    publish(&mut q, 1..=4);
    let got = dispatch(&mut q);
    assert_eq!(
        summary(&got),
        pairs(&[("a", "1"), ("b", "2"), ("a", "3"), ("b", "4")])
    );
    assert_eq!(q.unacked_count(), 4);
    assert_eq!(q.message_count(), 0);
}

#[test]
fn round_robin_three_consumers_resumes_across_dispatch_calls() {
    let mut q = queue();
    for tag in ["a", "b", "c"] {
        q.add_consumer(spec(key(1, 1, tag), 0, UNLIMITED_CREDIT))
            .unwrap();
    }
    publish(&mut q, 1..=4);
    let first = dispatch(&mut q);
    publish(&mut q, 5..=6);
    let second = dispatch(&mut q);
    assert_eq!(
        summary(&first),
        pairs(&[("a", "1"), ("b", "2"), ("c", "3"), ("a", "4")])
    );
    assert_eq!(summary(&second), pairs(&[("b", "5"), ("c", "6")]));
}

#[test]
fn higher_priority_consumers_take_messages_first_and_share_them_round_robin() {
    let mut q = queue();
    let prioritised = |tag, priority, prefetch_count| ConsumerSpec {
        priority,
        ..spec(key(1, 1, tag), prefetch_count, UNLIMITED_CREDIT)
    };
    q.add_consumer(prioritised("low", 0, 0)).unwrap();
    q.add_consumer(prioritised("high-1", 5, 2)).unwrap();
    q.add_consumer(prioritised("high-2", 5, 1)).unwrap();
    publish(&mut q, 1..=5);
    // The two high-priority consumers share what their prefetch allows;
    // only then does the low one get messages.
    assert_eq!(
        summary(&dispatch(&mut q)),
        pairs(&[
            ("high-1", "1"),
            ("high-2", "2"),
            ("high-1", "3"),
            ("low", "4"),
            ("low", "5")
        ])
    );
}

#[test]
fn prefetch_one_with_two_consumers_alternates_as_acks_arrive() {
    let mut q = queue();
    q.add_consumer(spec(key(1, 1, "a"), 1, UNLIMITED_CREDIT))
        .unwrap();
    q.add_consumer(spec(key(1, 1, "b"), 1, UNLIMITED_CREDIT))
        .unwrap();
    publish(&mut q, 1..=6);
    let got = dispatch(&mut q);
    assert_eq!(summary(&got), pairs(&[("a", "1"), ("b", "2")]));
    assert!(!q.can_dispatch());

    // b acks first: b's slot frees, so b gets the next one.
    assert!(q.ack(got[1].seq));
    let got = dispatch(&mut q);
    assert_eq!(summary(&got), pairs(&[("b", "3")]));

    // Both ack: the turn is a's.
    assert!(q.ack(1));
    assert!(q.ack(got[0].seq));
    let got = dispatch(&mut q);
    assert_eq!(summary(&got), pairs(&[("a", "4"), ("b", "5")]));
}

#[test]
fn prefetch_and_credit_are_both_respected() {
    let mut q = queue();
    let a = key(1, 1, "a");
    q.add_consumer(spec(a.clone(), 3, 2)).unwrap();
    publish(&mut q, 1..=10);

    // Credit 2 limits before prefetch 3 does.
    assert_eq!(bodies(&dispatch(&mut q)), ["1", "2"]);
    assert!(!q.can_dispatch());

    // Enough credit: now prefetch 3 limits.
    assert!(q.add_credit(&a, 10));
    assert_eq!(bodies(&dispatch(&mut q)), ["3"]);
    assert!(!q.can_dispatch());

    assert_eq!(q.settle(HOLDER, &[1, 2], Settlement::Ack), 2);
    assert_eq!(bodies(&dispatch(&mut q)), ["4", "5"]);
    assert_eq!(q.unacked_count(), 3);
    assert_eq!(q.message_count(), 5);
    assert!(!q.add_credit(&key(1, 1, "nobody"), 1));
}

#[test]
fn no_ack_consumers_hold_no_unacked() {
    let mut q = queue();
    let mut no_ack = spec(key(1, 1, "a"), 1, UNLIMITED_CREDIT);
    no_ack.no_ack = true;
    q.add_consumer(no_ack).unwrap();
    publish(&mut q, 1..=3);
    let got = dispatch(&mut q);
    // Prefetch does not apply: nothing is ever unacked.
    assert_eq!(bodies(&got), ["1", "2", "3"]);
    assert!(got.iter().all(|d| d.no_ack));
    assert_eq!(q.unacked_count(), 0);
    assert!(!q.ack(got[0].seq));
}

#[test]
fn settle_acks_a_batch_and_ignores_unknown_seqs() {
    let mut q = queue();
    q.add_consumer(spec(key(1, 1, "a"), 0, UNLIMITED_CREDIT))
        .unwrap();
    publish(&mut q, 1..=5);
    dispatch(&mut q);
    assert_eq!(q.settle(HOLDER, &[1, 2, 3, 99], Settlement::Ack), 3);
    assert_eq!(q.unacked_count(), 2);
    assert_eq!(q.settle(HOLDER, &[3], Settlement::Ack), 0);
}

/// The trap: a closed channel's messages are requeued and may go to
/// another consumer before a late ack or requeue from the old channel
/// arrives; that settle must not touch the new holder's delivery.
#[test]
fn a_late_settle_from_a_closed_channel_leaves_the_new_holder_alone() {
    let mut q = queue();
    q.add_consumer(spec(key(1, 1, "old"), 0, UNLIMITED_CREDIT))
        .unwrap();
    publish(&mut q, 1..=1);
    let first = dispatch(&mut q);
    q.remove_channel(channel(1, 1));
    q.add_consumer(spec(key(2, 1, "new"), 0, UNLIMITED_CREDIT))
        .unwrap();
    let again = dispatch(&mut q);
    assert_eq!(again[0].seq, first[0].seq, "the same message, redelivered");
    assert_eq!(q.settle(HOLDER, &[first[0].seq], Settlement::Requeue), 0);
    assert_eq!(q.settle(HOLDER, &[first[0].seq], Settlement::Ack), 0);
    assert_eq!(q.unacked_count(), 1, "still held by the new channel");
    assert_eq!(q.settle(channel(2, 1), &[first[0].seq], Settlement::Ack), 1);
}

#[test]
fn reject_requeue_restores_original_order() {
    let mut q = queue();
    q.add_consumer(spec(key(1, 1, "a"), 0, UNLIMITED_CREDIT))
        .unwrap();
    publish(&mut q, 1..=5);
    let got = dispatch(&mut q);
    assert_eq!(bodies(&got), ["1", "2", "3", "4", "5"]);

    // Reject 4 before 2: order comes from the seq, not the reject order.
    assert_eq!(q.reject(&[4, 2], true), 2);
    assert_eq!(q.settle(HOLDER, &[1, 3], Settlement::Ack), 2);
    publish(&mut q, 6..=6);
    let again = dispatch(&mut q);
    assert_eq!(bodies(&again), ["2", "4", "6"]);
    let redelivered: Vec<bool> = again.iter().map(|d| d.redelivered).collect();
    assert_eq!(redelivered, [true, true, false]);
}

#[test]
fn reject_requeue_goes_before_newer_ready_messages() {
    let mut q = queue();
    q.add_consumer(spec(key(1, 1, "a"), 2, UNLIMITED_CREDIT))
        .unwrap();
    publish(&mut q, 1..=5);
    assert_eq!(bodies(&dispatch(&mut q)), ["1", "2"]);
    assert_eq!(q.reject(&[2], true), 1);
    assert_eq!(bodies(&dispatch(&mut q)), ["2"]);
    assert_eq!(q.reject(&[1], true), 1);
    assert_eq!(q.reject(&[2], true), 1);
    assert_eq!(bodies(&dispatch(&mut q)), ["1", "2"]);
}

#[test]
fn reject_without_requeue_drops() {
    let mut q = queue();
    q.add_consumer(spec(key(1, 1, "a"), 1, UNLIMITED_CREDIT))
        .unwrap();
    publish(&mut q, 1..=2);
    let got = dispatch(&mut q);
    assert_eq!(q.reject(&[got[0].seq], false), 1);
    assert_eq!(q.unacked_count(), 0);
    // The prefetch slot is free again.
    assert_eq!(bodies(&dispatch(&mut q)), ["2"]);
    assert_eq!(q.reject(&[got[0].seq], false), 0);
}

#[test]
fn remove_channel_requeues_in_original_order_marked_redelivered() {
    let mut q = queue();
    q.add_consumer(spec(key(1, 1, "a"), 0, UNLIMITED_CREDIT))
        .unwrap();
    q.add_consumer(spec(key(1, 2, "b"), 0, UNLIMITED_CREDIT))
        .unwrap();
    publish(&mut q, 1..=6);
    dispatch(&mut q); // a: 1,3,5  b: 2,4,6
    assert!(q.ack(3));

    let removed = q.remove_channel(channel(1, 1));
    assert_eq!(
        removed,
        ConsumerRemoved {
            existed: true,
            auto_delete_now: false
        }
    );
    assert_eq!(q.consumer_count(), 1);
    assert_eq!(q.unacked_count(), 3);
    assert_eq!(q.message_count(), 2);

    q.add_consumer(spec(key(2, 1, "c"), 0, UNLIMITED_CREDIT))
        .unwrap();
    q.remove_consumer(&key(1, 2, "b"));
    let got = dispatch(&mut q);
    assert_eq!(summary(&got), pairs(&[("c", "1"), ("c", "5")]));
    assert!(got.iter().all(|d| d.redelivered));
}

#[test]
fn remove_connection_requeues_basic_get_messages_too() {
    let mut q = queue();
    publish(&mut q, 1..=3);
    let first = q.get(channel(1, 1), false, &0).unwrap();
    let _second = q.get(channel(1, 2), false, &0).unwrap();
    let _third = q.get(channel(2, 1), false, &0).unwrap();
    assert_eq!(first.message_count, 2);
    assert_eq!(q.unacked_count(), 3);

    let removed = q.remove_connection(conn(1));
    assert!(!removed.existed);
    assert_eq!(q.unacked_count(), 1);
    let again = q.get(channel(2, 1), true, &0).unwrap();
    assert_eq!(body(&again.message), "1");
    assert!(again.redelivered);
    assert_eq!(again.message_count, 1);
}

#[test]
fn exclusive_consumer_conflicts() {
    let mut q = queue();
    let mut exclusive = spec(key(1, 1, "x"), 0, 1);
    exclusive.exclusive = true;
    q.add_consumer(spec(key(1, 1, "a"), 0, 1)).unwrap();
    let err = q.add_consumer(exclusive.clone()).unwrap_err();
    assert_eq!(
        err.reply_text(),
        "ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use"
    );

    q.remove_consumer(&key(1, 1, "a"));
    q.add_consumer(exclusive).unwrap();
    let err = q.add_consumer(spec(key(2, 1, "b"), 0, 1)).unwrap_err();
    assert_eq!(err.code, 403);

    q.remove_consumer(&key(1, 1, "x"));
    q.add_consumer(spec(key(2, 1, "b"), 0, 1)).unwrap();
}

#[test]
fn reusing_a_consumer_key_is_refused() {
    let mut q = queue();
    q.add_consumer(spec(key(1, 1, "a"), 0, 1)).unwrap();
    let err = q.add_consumer(spec(key(1, 1, "a"), 0, 1)).unwrap_err();
    assert_eq!(err.code, 530);
    assert_eq!(q.consumer_count(), 1);
}

#[test]
fn auto_delete_signal_only_after_having_had_a_consumer() {
    let mut q = auto_delete_queue();
    let nobody = q.remove_consumer(&key(1, 1, "a"));
    assert_eq!(
        nobody,
        ConsumerRemoved {
            existed: false,
            auto_delete_now: false
        }
    );
    assert!(!q.remove_channel(channel(1, 1)).auto_delete_now);

    q.add_consumer(spec(key(1, 1, "a"), 0, 1)).unwrap();
    q.add_consumer(spec(key(1, 2, "b"), 0, 1)).unwrap();
    let first = q.remove_consumer(&key(1, 1, "a"));
    assert!(first.existed && !first.auto_delete_now);
    let last = q.remove_connection(conn(1));
    assert!(last.existed && last.auto_delete_now);

    // Not auto-delete: never signalled.
    let mut plain = queue();
    plain.add_consumer(spec(key(1, 1, "a"), 0, 1)).unwrap();
    assert!(!plain.remove_consumer(&key(1, 1, "a")).auto_delete_now);
}

#[test]
fn get_reports_remaining_message_count() {
    let mut q = queue();
    assert!(q.get(channel(1, 1), false, &0).is_none());
    publish(&mut q, 1..=3);
    let got = q.get(channel(1, 1), true, &0).unwrap();
    assert_eq!((body(&got.message), got.message_count), ("1".into(), 2));
    assert_eq!(q.unacked_count(), 0);
    let got = q.get(channel(1, 1), false, &0).unwrap();
    assert_eq!((body(&got.message), got.message_count), ("2".into(), 1));
    assert_eq!(q.unacked_count(), 1);
    assert!(q.ack(got.seq));
}

#[test]
fn basic_get_does_not_count_against_consumer_prefetch() {
    let mut q = queue();
    q.add_consumer(spec(key(1, 1, "a"), 1, 0)).unwrap();
    publish(&mut q, 1..=2);
    let got = q.get(channel(1, 1), false, &0).unwrap();
    q.add_credit(&key(1, 1, "a"), 5);
    assert_eq!(bodies(&dispatch(&mut q)), ["2"]);
    assert!(q.ack(got.seq));
    assert!(!q.can_dispatch());
}

#[test]
fn purge_leaves_unacked() {
    let mut q = queue();
    q.add_consumer(spec(key(1, 1, "a"), 2, UNLIMITED_CREDIT))
        .unwrap();
    publish(&mut q, 1..=5);
    dispatch(&mut q);
    assert_eq!(q.purge(), 3);
    assert_eq!(q.message_count(), 0);
    assert_eq!(q.unacked_count(), 2);
    assert!(q.ack(1));
    assert_eq!(q.purge(), 0);
}

#[test]
fn cancel_keeps_unacked_ackable_and_frees_no_one_elses_prefetch() {
    let mut q = queue();
    let a = key(1, 1, "a");
    q.add_consumer(spec(a.clone(), 1, UNLIMITED_CREDIT))
        .unwrap();
    publish(&mut q, 1..=3);
    assert_eq!(bodies(&dispatch(&mut q)), ["1"]);

    assert!(q.remove_consumer(&a).existed);
    assert_eq!(q.unacked_count(), 1);

    // A new consumer may reuse a's slot; a's old message must not count
    // against it, neither when held nor when acked.
    q.add_consumer(spec(key(1, 1, "b"), 1, UNLIMITED_CREDIT))
        .unwrap();
    assert_eq!(bodies(&dispatch(&mut q)), ["2"]);
    assert!(q.ack(1));
    assert!(!q.can_dispatch());
    assert_eq!(bodies(&dispatch(&mut q)), Vec::<String>::new());
    assert!(q.ack(2));
    assert_eq!(bodies(&dispatch(&mut q)), ["3"]);
}

#[test]
fn removing_a_consumer_keeps_round_robin_position() {
    let mut q = queue();
    for tag in ["a", "b", "c"] {
        q.add_consumer(spec(key(1, 1, tag), 0, UNLIMITED_CREDIT))
            .unwrap();
    }
    publish(&mut q, 1..=1);
    assert_eq!(summary(&dispatch(&mut q)), pairs(&[("a", "1")]));
    q.remove_consumer(&key(1, 1, "a"));
    publish(&mut q, 2..=3);
    assert_eq!(summary(&dispatch(&mut q)), pairs(&[("b", "2"), ("c", "3")]));
}

#[test]
fn delete_conditions_refuse_a_queue_in_use_or_not_empty() {
    let mut q = queue();
    assert_eq!(q.check_delete(true, true), Ok(0));
    publish(&mut q, 1..=2);
    let not_empty = q.check_delete(false, true).unwrap_err();
    assert_eq!(not_empty.code, reply_code::PRECONDITION_FAILED);
    assert!(
        not_empty.text.ends_with("is not empty"),
        "{}",
        not_empty.text
    );
    assert_eq!(q.check_delete(false, false), Ok(2));
    q.add_consumer(spec(key(1, 1, "a"), 0, 0)).unwrap();
    let in_use = q.check_delete(true, false).unwrap_err();
    assert!(in_use.text.ends_with("in use"), "{}", in_use.text);
}

fn queue_with(settings: Settings) -> Queue {
    Queue::new(
        QueueId(4),
        ShortStr::from("args"),
        ShortStr::from("/"),
        false,
        settings,
    )
}

fn dead_letter_settings() -> Settings {
    Settings {
        dead_letter_exchange: Some(ShortStr::from("")),
        ..Settings::default()
    }
}

/// (body, reason) of each dead letter, drained.
fn dead_letters(q: &mut Queue) -> Vec<(String, DeathReason)> {
    let mut letters = Vec::new();
    q.drain_dead_letters(|_, _, _, letter| letters.push((body(&letter.message), letter.reason)));
    letters
}

/// The bodies basic.get (no-ack) takes until the queue is empty.
fn got_bodies(q: &mut Queue, now_ms: u64) -> Vec<String> {
    std::iter::from_fn(|| q.get(HOLDER, true, &now_ms))
        .map(|got| body(&got.message))
        .collect()
}

#[test]
fn message_ttl_expires_at_the_head_once_the_clock_passes_it() {
    let mut q = queue_with(Settings {
        message_ttl_ms: Some(100),
        ..dead_letter_settings()
    });
    q.publish(message(1), &1_000);
    q.publish(message(2), &1_050);
    assert_eq!(q.next_deadline(), Some(1_101));
    q.expire(&1_100);
    assert_eq!(q.message_count(), 2, "a TTL is reached, not yet passed");
    q.expire(&1_101);
    assert_eq!(q.message_count(), 1);
    assert_eq!(
        dead_letters(&mut q),
        [("1".to_owned(), DeathReason::Expired)]
    );
    assert_eq!(q.next_deadline(), Some(1_151));
    assert!(
        q.get(HOLDER, true, &1_151).is_none(),
        "expired messages are never got"
    );
}

#[test]
fn a_plain_queue_has_no_deadline_and_no_dead_letters() {
    let mut q = queue();
    publish(&mut q, 1..=3);
    q.settle(HOLDER, &[1], Settlement::Discard);
    assert_eq!(q.next_deadline(), None);
    assert_eq!(q.deadline_change(), None);
    assert!(dead_letters(&mut q).is_empty());
}

#[test]
fn drop_head_dead_letters_the_oldest_over_the_limits() {
    let mut q = queue_with(Settings {
        max_length: Some(2),
        ..dead_letter_settings()
    });
    publish(&mut q, 1..=4);
    assert_eq!(
        dead_letters(&mut q),
        [
            ("1".to_owned(), DeathReason::Maxlen),
            ("2".to_owned(), DeathReason::Maxlen)
        ]
    );
    assert_eq!(got_bodies(&mut q, 0), ["3", "4"]);
}

#[test]
fn reject_publish_refuses_and_reject_publish_dlx_dead_letters() {
    for (overflow, dead) in [
        (Overflow::RejectPublish, 0),
        (Overflow::RejectPublishDlx, 1),
    ] {
        let mut q = queue_with(Settings {
            max_length: Some(1),
            overflow,
            ..dead_letter_settings()
        });
        assert_eq!(q.publish(message(1), &0), Published::Accepted { seq: 1 });
        assert_eq!(q.publish(message(2), &0), Published::Rejected);
        assert_eq!(dead_letters(&mut q).len(), dead);
        assert_eq!(got_bodies(&mut q, 0), ["1"]);
    }
}

fn message_with_priority(n: u64, priority: u8) -> Message {
    Message::new(MessageContent {
        exchange: ShortStr::from(""),
        routing_key: ShortStr::from("q"),
        properties: Bytes::new(),
        body: Bytes::from(n.to_string()),
        priority,
        persistent: false,
        expiration_ms: None,
    })
}

#[test]
fn priorities_deliver_highest_first_and_requeue_keeps_place() {
    let mut q = queue_with(Settings {
        max_priority: Some(3),
        ..Settings::default()
    });
    for (n, priority) in [(1, 0), (2, 3), (3, 1), (4, 200), (5, 3)] {
        q.publish(message_with_priority(n, priority), &0);
    }
    let first = q.get(HOLDER, false, &0).unwrap();
    assert_eq!(body(&first.message), "2");
    q.settle(HOLDER, &[first.seq], Settlement::Requeue);
    // 200 counts as the maximum, 3, after the earlier 3s.
    assert_eq!(got_bodies(&mut q, 0), ["2", "4", "5", "3", "1"]);
}

#[test]
fn delivery_limit_dead_letters_after_too_many_returns() {
    let mut q = queue_with(Settings {
        queue_type: QueueType::Quorum,
        delivery_limit: Some(1),
        ..dead_letter_settings()
    });
    publish(&mut q, 1..=1);
    for _ in 0..2 {
        let got = q.get(HOLDER, false, &0).unwrap();
        q.settle(HOLDER, &[got.seq], Settlement::Requeue);
    }
    assert_eq!(q.message_count(), 0);
    assert_eq!(
        dead_letters(&mut q),
        [("1".to_owned(), DeathReason::DeliveryLimit)]
    );
}

#[test]
fn single_active_consumer_serves_the_first_until_it_goes() {
    let mut q = queue_with(Settings {
        single_active_consumer: true,
        ..Settings::default()
    });
    q.add_consumer(spec(key(1, 1, "a"), 0, UNLIMITED_CREDIT))
        .unwrap();
    q.add_consumer(spec(key(1, 2, "b"), 0, UNLIMITED_CREDIT))
        .unwrap();
    publish(&mut q, 1..=2);
    assert_eq!(summary(&dispatch(&mut q)), pairs(&[("a", "1"), ("a", "2")]));
    q.remove_consumer(&key(1, 1, "a"));
    publish(&mut q, 3..=3);
    assert_eq!(summary(&dispatch(&mut q)), pairs(&[("b", "3")]));
}

#[test]
fn unused_queue_expires_only_without_consumers() {
    let mut q = queue_with(Settings {
        expires_ms: Some(500),
        ..Settings::default()
    });
    q.touch(&1_000);
    assert_eq!(q.next_deadline(), Some(1_500));
    assert!(!q.is_unused_too_long(&1_499));
    q.add_consumer(spec(key(1, 1, "a"), 0, 1)).unwrap();
    assert!(!q.is_unused_too_long(&9_999));
    q.remove_consumer(&key(1, 1, "a"));
    q.touch(&2_000);
    assert!(q.is_unused_too_long(&2_500));
}
#[test]
fn totals_count_publishes_deliveries_with_redeliveries_and_acks() {
    let mut q = queue();
    for n in 1..=3 {
        q.publish(message(n), &0);
    }
    let first = q.get(channel(1, 1), false, &0).expect("a message");
    assert_eq!(
        q.settle(channel(1, 1), &[first.seq], Settlement::Requeue),
        1
    );
    let again = q
        .get(channel(1, 1), false, &0)
        .expect("the requeued message");
    assert_eq!(q.settle(channel(1, 1), &[again.seq], Settlement::Ack), 1);
    let totals = q.totals();
    let expected = MessageTotals {
        published: 3,
        delivered: 2,
        acked: 1,
    };
    assert_eq!(
        totals, expected,
        "a requeue is no publish; a redelivery is a delivery"
    );
}

fn location(offset: u32) -> crate::store::log::Location {
    crate::store::log::Location {
        segment: 1,
        offset,
        len: 100,
    }
}

/// Paging as the shard drives it: the head stays, the rest goes to disk,
/// delivery stops at a paged head and resumes in order once it is back.
#[test]
fn a_paged_out_head_waits_for_its_content_and_delivers_in_order() {
    let mut q = queue();
    publish(&mut q, 1..=10);
    let head = paging::Head {
        messages: 3,
        bytes: u64::MAX,
    };
    let chosen = q.page_out_candidates(head, u64::MAX, false);
    let seqs: Vec<u64> = chosen.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (4..=10).rev().collect::<Vec<_>>(), "behind the head");
    for c in &chosen {
        assert!(q.page_out(c.seq, location(c.seq as u32 * 100), true));
    }
    assert_eq!(q.paged_count(), 7);
    assert_eq!(
        q.resident_bytes(),
        3 + 3 * crate::message::MESSAGE_OVERHEAD_BYTES,
        "1, 2 and 3: their bodies and what each costs beyond"
    );
    assert_eq!(q.message_count(), 10, "paged messages are still ready");
    q.add_consumer(spec(key(1, 1, "a"), 0, UNLIMITED_CREDIT))
        .expect("consume");
    assert_eq!(bodies(&dispatch(&mut q)), ["1", "2", "3"]);
    assert!(q.head_is_paged());
    assert!(q.get(channel(2, 1), true, &0).is_none(), "get waits too");
    let wanted = q.page_in_candidates(head);
    assert_eq!(wanted.iter().map(|w| w.0).collect::<Vec<_>>(), [4, 5, 6]);
    for (seq, at) in wanted {
        let back = chosen.iter().find(|c| c.seq == seq).expect("chosen");
        assert_eq!(q.page_in(seq, at, back.message.clone()), Some(Some(at)));
        assert_eq!(q.page_in(seq, at, back.message.clone()), None, "once");
    }
    assert_eq!(bodies(&dispatch(&mut q)), ["4", "5", "6"]);
    // Purging releases the page records of what is still on disk.
    q.purge();
    let mut released = Vec::new();
    q.take_unpaged(|records| released.extend_from_slice(records));
    assert_eq!(released.len(), 4);
    assert_eq!(q.paged_count(), 0);
}

#[test]
fn a_message_that_left_is_not_paged_and_logged_ones_keep_their_record() {
    let mut q = queue();
    q.set_durable();
    let persistent = Message::new(MessageContent {
        exchange: ShortStr::from(""),
        routing_key: ShortStr::from("q"),
        properties: Bytes::new(),
        body: Bytes::from("1"),
        priority: 0,
        persistent: true,
        expiration_ms: None,
    });
    let Published::Accepted { seq } = q.publish(persistent, &0) else {
        panic!("accepted");
    };
    q.logged_at(seq, location(0));
    publish(&mut q, 2..=2);
    let no_head = paging::Head {
        messages: 0,
        bytes: 0,
    };
    let chosen = q.page_out_candidates(no_head, u64::MAX, false);
    assert_eq!(
        chosen.iter().map(|c| c.logged).collect::<Vec<_>>(),
        [None, Some(location(0))]
    );
    let logged = q.page_out_candidates(no_head, u64::MAX, true);
    assert!(
        logged.is_empty(),
        "the newest is not logged: taking the one before it would leave \
         a message in memory among paged ones"
    );
    assert_eq!(q.logged_bytes(), 1 + crate::message::MESSAGE_OVERHEAD_BYTES);
    q.get(channel(1, 1), true, &0).expect("a message");
    assert!(!q.page_out(seq, location(0), false), "no longer ready");
    assert!(q.page_out(2, location(500), true));
    assert_eq!(q.paged_count(), 1);
}

/// Requeues go back into the middle of long priority levels (each over
/// several of the blocks a level keeps its messages in): messages still
/// leave by priority, then in publish order, the returned ones marked.
#[test]
fn requeues_into_long_priority_levels_keep_priority_then_publish_order() {
    let mut q = queue_with(Settings {
        max_priority: Some(1),
        ..Settings::default()
    });
    let count = 6 * level::BLOCK_LEN as u64;
    for n in 1..=count {
        q.publish(message_with_priority(n, (n % 2) as u8), &0);
    }
    // The first 2.5 blocks' worth of the high level (odd n) out; every
    // third back, in seq order, so each lands between earlier ones and
    // the rest of the level.
    let taken: Vec<GetResult> = (0..5 * level::BLOCK_LEN / 2)
        .map(|_| q.get(HOLDER, false, &0).expect("a message"))
        .collect();
    let mut requeued = Vec::new();
    for (index, got) in taken.iter().enumerate() {
        let settlement = match index % 3 {
            0 => Settlement::Requeue,
            _ => Settlement::Ack,
        };
        if settlement == Settlement::Requeue {
            requeued.push(body(&got.message).parse::<u64>().expect("a number"));
        }
        assert_eq!(q.settle(HOLDER, &[got.seq], settlement), 1);
    }
    let drained: Vec<(u64, bool)> = std::iter::from_fn(|| q.get(HOLDER, true, &0))
        .map(|got| {
            (
                body(&got.message).parse().expect("a number"),
                got.redelivered,
            )
        })
        .collect();
    let high_left = (2 * taken.len() as u64 + 1..=count).step_by(2);
    let expected: Vec<(u64, bool)> = requeued
        .iter()
        .map(|&n| (n, true))
        .chain(high_left.map(|n| (n, false)))
        .chain((2..=count).step_by(2).map(|n| (n, false)))
        .collect();
    assert_eq!(drained.len(), expected.len());
    assert_eq!(drained, expected);
}

/// A priority queue pages out what leaves last (the newest of the lowest
/// level first) and reads back what leaves next, level by level.
#[test]
fn a_priority_queue_pages_what_leaves_last_and_delivers_by_priority() {
    let mut q = queue_with(Settings {
        max_priority: Some(2),
        ..Settings::default()
    });
    for n in 1..=9 {
        q.publish(message_with_priority(n, (n % 3) as u8), &0);
    }
    let head = paging::Head {
        messages: 4,
        bytes: u64::MAX,
    };
    let chosen = q.page_out_candidates(head, u64::MAX, false);
    let seqs: Vec<u64> = chosen.iter().map(|c| c.seq).collect();
    // Leaving order: 2 5 8 | 1 4 7 | 3 6 9; the head is 2 5 8 1.
    assert_eq!(seqs, [9, 6, 3, 7, 4], "the last to leave first");
    for c in &chosen {
        assert!(q.page_out(c.seq, location(c.seq as u32 * 100), true));
    }
    assert_eq!(q.paged_count(), 5);
    q.add_consumer(spec(key(1, 1, "a"), 0, UNLIMITED_CREDIT))
        .expect("consume");
    assert_eq!(bodies(&dispatch(&mut q)), ["2", "5", "8", "1"]);
    assert!(q.head_is_paged());
    let wanted = q.page_in_candidates(head);
    assert_eq!(wanted.iter().map(|w| w.0).collect::<Vec<_>>(), [4, 7, 3, 6]);
    for (seq, at) in wanted {
        let back = chosen.iter().find(|c| c.seq == seq).expect("chosen");
        assert!(q.page_in(seq, at, back.message.clone()).is_some());
    }
    assert_eq!(bodies(&dispatch(&mut q)), ["4", "7", "3", "6"]);
}

/// A logged message of 1 MiB with `n` in its first byte, published to a
/// durable `q` and logged at offset `n` MiB.
fn publish_logged_mib(q: &mut Queue, n: u8) {
    let mut body = vec![0; 1 << 20];
    body[0] = n;
    let message = Message::new(MessageContent {
        exchange: ShortStr::from(""),
        routing_key: ShortStr::from("q"),
        properties: Bytes::new(),
        body: Bytes::from(body),
        priority: 0,
        persistent: true,
        expiration_ms: None,
    });
    let Published::Accepted { seq } = q.publish(message, &0) else {
        panic!("accepted");
    };
    q.logged_at(seq, location(u32::from(n) << 20));
}

/// What a queue's unacked messages hold in memory: every transient one,
/// logged ones up to `UNACKED_LOGGED_MAX`, the rest only by their record.
#[test]
fn unacked_logged_messages_past_the_cap_keep_only_their_record_and_come_back_paged() {
    let mut q = queue_with(dead_letter_settings());
    q.set_durable();
    for n in 1..=7 {
        publish_logged_mib(&mut q, n);
    }
    q.add_consumer(spec(key(1, 1, "a"), 0, UNLIMITED_CREDIT))
        .expect("consume");
    let first = |d: &Delivery| d.message.body[0];
    let delivered: Vec<u8> = dispatch(&mut q).iter().map(first).collect();
    assert_eq!(delivered, [1, 2, 3, 4, 5, 6, 7], "all go out from memory");
    let in_memory = |q: &Queue| {
        let mut seqs: Vec<u64> = (q.unacked.iter())
            .filter(|(_, u)| !matches!(u.body, Body::Paged(_)))
            .map(|(&seq, _)| seq)
            .collect();
        seqs.sort();
        seqs
    };
    assert_eq!(in_memory(&q), [1, 2, 3, 4], "up to 4 MiB and a bit");
    // Compaction moves the record of an unacked message on disk.
    q.relocate(6, location(6 << 20), location(60 << 20));
    // Rejected without requeue, one on disk waits to be read back before
    // it is dead-lettered, and the next dead letter waits behind it.
    assert_eq!(q.settle(HOLDER, &[5, 1], Settlement::Discard), 2);
    assert_eq!(q.letters_to_read(), [(5, location(5 << 20))]);
    assert!(dead_letters(&mut q).is_empty(), "1 waits behind 5");
    // Requeued, the rest go back as they were held: 2 to 4 in memory, 6
    // and 7 paged, which delivery then waits for.
    q.remove_channel(HOLDER);
    assert_eq!(q.unacked_logged, 0);
    assert_eq!(q.paged_count(), 2);
    q.add_consumer(spec(key(2, 1, "b"), 0, UNLIMITED_CREDIT))
        .expect("consume again");
    let again: Vec<u8> = dispatch(&mut q).iter().map(first).collect();
    assert_eq!(again, [2, 3, 4]);
    assert!(q.head_is_paged());
    let head = paging::Head {
        messages: 2,
        bytes: u64::MAX,
    };
    assert_eq!(
        q.page_in_candidates(head),
        [(6, location(60 << 20)), (7, location(7 << 20))],
        "6 where compaction put it"
    );
}

/// Unacked messages in memory past the head's bytes go to disk when the
/// pager asks (transient ones as page records): an ack releases the
/// record, a requeue brings them back in order, read back first.
#[test]
fn unacked_messages_past_the_head_page_out_and_come_back_in_order() {
    let mut q = queue();
    publish(&mut q, 1..=6);
    q.add_consumer(spec(key(1, 1, "a"), 0, UNLIMITED_CREDIT))
        .expect("consume");
    assert_eq!(bodies(&dispatch(&mut q)), ["1", "2", "3", "4", "5", "6"]);
    let held = 1 + crate::message::MESSAGE_OVERHEAD_BYTES;
    let head = paging::Head {
        messages: 1024,
        bytes: 2 * held,
    };
    assert!(q.may_page_out(head), "nothing ready, six unacked");
    let chosen = q.page_out_candidates(head, u64::MAX, false);
    let mut seqs: Vec<u64> = chosen.iter().map(|c| c.seq).collect();
    seqs.sort();
    assert_eq!(
        seqs,
        [3, 4, 5, 6],
        "all but the head's bytes' worth, newest"
    );
    for c in &chosen {
        assert!(q.page_out(c.seq, location(c.seq as u32 * 100), true));
    }
    assert_eq!(q.resident_bytes(), 2 * held);
    assert!(!q.may_page_out(head));
    let acked = chosen[0].seq;
    assert_eq!(q.settle(HOLDER, &[acked], Settlement::Ack), 1);
    let mut released = Vec::new();
    q.take_unpaged(|records| released.extend_from_slice(records));
    assert_eq!(released, [location(acked as u32 * 100)]);
    q.remove_channel(HOLDER);
    assert_eq!(q.paged_count(), 3);
    q.add_consumer(spec(key(2, 1, "b"), 0, UNLIMITED_CREDIT))
        .expect("consume again");
    let mut delivered = Vec::new();
    loop {
        delivered.extend(bodies(&dispatch(&mut q)));
        let wanted = q.page_in_candidates(head);
        if wanted.is_empty() {
            break;
        }
        for (seq, at) in wanted {
            let back = chosen.iter().find(|c| c.seq == seq).expect("chosen");
            assert_eq!(q.page_in(seq, at, back.message.clone()), Some(Some(at)));
        }
    }
    let expected: Vec<String> = (1..=6)
        .filter(|&n| n != acked)
        .map(|n| n.to_string())
        .collect();
    assert_eq!(delivered, expected);
}
