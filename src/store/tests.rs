//! Seeded simulations of the store on `sim::SimDisk`: power losses at
//! random points, torn tails, flipped bytes, a full disk. A failing seed
//! is printed; `WARREN_STORE_SEED=n` runs that one alone.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_lite::future::{block_on, zip};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::log::{segment_name, Commit, Location, Log};
use super::record::QueueName;
use super::recovery::{live_by_segment, plan, read_live, recover};
use super::sim::SimDisk;
use super::Store;
use crate::ids::QueueId;
use crate::message::{Message, MessageContent};
use crate::protocol::ShortStr;

const QUEUES: u64 = 3;

fn queue_name(queue: u64) -> QueueName {
    QueueName {
        vhost: ShortStr::from_static("/"),
        name: ShortStr::from_bytes(Bytes::from(format!("q{queue}"))),
    }
}

fn message(rng: &mut StdRng, id: u64) -> Message {
    let size = if rng.gen_bool(0.1) {
        9000
    } else {
        rng.gen_range(0..300)
    };
    let mut body = format!("{id}:").into_bytes();
    body.resize(size.max(body.len()), (id % 251) as u8);
    Message::new(MessageContent {
        expiration_ms: None,
        priority: 0,
        persistent: true,
        exchange: ShortStr::from_static("amq.direct"),
        routing_key: ShortStr::from_static("key"),
        // delivery_mode 2
        properties: Bytes::from_static(b"\x10\x00\x02"),
        body: Bytes::from(body),
    })
}

/// What the test knows: per queue, every message by seq, the shard that
/// logged it and the position that makes it durable there (`u64::MAX`
/// once it may be lost), and which are settled.
#[derive(Default)]
struct Model {
    messages: BTreeMap<(u64, u64), (Message, usize, u64)>,
    settled: BTreeMap<(u64, u64), ()>,
    next_seq: BTreeMap<u64, u64>,
}

fn seeds() -> Vec<u64> {
    match std::env::var("WARREN_STORE_SEED") {
        Ok(seed) => vec![seed.parse().expect("WARREN_STORE_SEED is a number")],
        Err(_) => (0..150).collect(),
    }
}

/// Every message the logs on `disk` hold, by queue and seq, read back.
fn recovered_messages(disk: &SimDisk) -> BTreeMap<QueueName, BTreeMap<u64, Message>> {
    let recovered = block_on(recover(disk)).expect("recovery reads the simulated disk");
    let mut queues: BTreeMap<QueueName, BTreeMap<u64, Message>> = BTreeMap::new();
    let indexed: usize = recovered.queues.values().map(Vec::len).sum();
    for (segment, messages) in live_by_segment(&recovered.queues) {
        let name = &recovered.segments[segment as usize].name;
        let read = block_on(read_live(disk, name, messages)).expect("the segment reads");
        for (queue, m, content) in read {
            assert_eq!(m.body_len as usize, content.body.len());
            queues
                .entry(queue.clone())
                .or_default()
                .insert(m.seq, content);
        }
    }
    let read: usize = queues.values().map(BTreeMap::len).sum();
    assert_eq!(read, indexed, "every indexed message reads back");
    queues
}

/// The stores of one run with `shards` shards on `disk`, each with its
/// part of the earlier runs taken over (`recovery::plan`, which writes
/// them again first when they do not split by shard), and every queue
/// tracked by its owner: `queue % shards`. Every recovered message reads
/// back from where its queue is told it is.
fn start(disk: &SimDisk, shards: usize, model: &Model) -> Vec<Store<SimDisk>> {
    let owner = |name: &QueueName| queue_of(name) as usize % shards;
    let plan = block_on(plan(disk, shards, 8192, owner)).expect("the plan reads");
    let epoch = plan.epoch;
    let stores: Vec<Store<SimDisk>> = plan
        .shares
        .into_iter()
        .enumerate()
        .map(|(shard, share)| {
            let store = Store::new(Log::new(disk.clone(), epoch, shard, 8192, true));
            store.take_over(share);
            store
        })
        .collect();
    for queue in 0..QUEUES {
        let store = &stores[queue as usize % shards];
        let recovered = store.track(QueueId(queue), queue_name(queue));
        let pages: Vec<(u64, _)> = recovered.iter().map(|m| (m.seq, m.at)).collect();
        for store in &stores {
            block_on(store.log().commit()).expect("what was taken over is written");
        }
        let read = block_on(store.read_back(&pages)).expect("read back");
        for ((seq, _), got) in pages.iter().zip(read) {
            let got = got.unwrap_or_else(|| panic!("q{queue} seq {seq} reads back"));
            let (sent, _, _) = &model.messages[&(queue, *seq)];
            assert_eq!(got.body, sent.body, "q{queue} seq {seq}");
        }
    }
    for store in &stores {
        store.drop_unclaimed();
        block_on(store.log().commit()).expect("commit");
    }
    stores
}

fn queue_of(name: &QueueName) -> u64 {
    std::str::from_utf8(&name.name.as_bytes()[1..])
        .expect("utf-8")
        .parse()
        .expect("queues are named qN")
}

/// One run of the broker on `disk` until a power cut: recovers (with one
/// shard or two), then appends, settles and commits at random.
fn run_until_power_cut(disk: &SimDisk, rng: &mut StdRng, model: &mut Model, next_id: &mut u64) {
    check(&recovered_messages(disk), model);
    let shards = rng.gen_range(1..=2);
    let stores = start(disk, shards, model);
    let mut durable: Vec<u64> = stores.iter().map(|s| s.log().durable()).collect();
    disk.cut_power_after(rng.gen_range(0..40));
    for _ in 0..rng.gen_range(1..120) {
        let queue = rng.gen_range(0..QUEUES);
        let shard = queue as usize % shards;
        let store = &stores[shard];
        match rng.gen_range(0..10) {
            0..=4 => enqueue(store, queue, shard, rng, model, next_id),
            5..=6 => {
                let live: Vec<u64> = model
                    .messages
                    .keys()
                    .filter(|key| key.0 == queue && !model.settled.contains_key(key))
                    .map(|key| key.1)
                    .collect();
                if let Some(&seq) = live.get(rng.gen_range(0..live.len().max(1))) {
                    store.settle(QueueId(queue), &[seq]);
                    model.settled.insert((queue, seq), ());
                }
            }
            7 => {
                // The next segment made ahead, as the shard's spare task does.
                if let Some(index) = store.log().spare_wanted() {
                    block_on(store.log().prepare_spare(index, async || {}));
                }
            }
            8 => {
                // Three commits in flight, as the shard runs them: each
                // begins after another append, and the disk lets them
                // finish in any order.
                let first = store.log().begin_commit();
                enqueue(store, queue, shard, rng, model, next_id);
                let second = store.log().begin_commit();
                enqueue(store, queue, shard, rng, model, next_id);
                let third = store.log().begin_commit();
                let finish = |commit: Option<Commit>| async {
                    match commit {
                        Some(commit) => store.log().finish_commit(commit).await,
                        None => Ok(store.log().durable()),
                    }
                };
                let all = zip(finish(first), zip(finish(second), finish(third)));
                match block_on(all) {
                    (Ok(a), (Ok(b), Ok(c))) => durable[shard] = a.max(b).max(c),
                    _ => break,
                }
            }
            _ => match block_on(store.log().commit()) {
                Ok(lsn) => durable[shard] = lsn,
                Err(_) => break,
            },
        }
    }
    disk.crash(rng);
    // Confirmed messages are those at or below their shard's durable
    // position; others may or may not come back.
    for (_, shard, lsn) in model.messages.values_mut() {
        if *lsn > durable[*shard] {
            *lsn = u64::MAX;
        }
    }
}

/// Appends a new message to `queue` on its shard's `store`, in the model.
fn enqueue(
    store: &Store<SimDisk>,
    queue: u64,
    shard: usize,
    rng: &mut StdRng,
    model: &mut Model,
    next_id: &mut u64,
) {
    let seq = model.next_seq.entry(queue).or_insert(1);
    let m = message(rng, *next_id);
    *next_id += 1;
    if let Some(appended) = store.enqueue(QueueId(queue), *seq, &m) {
        model
            .messages
            .insert((queue, *seq), (m, shard, appended.lsn));
        *seq += 1;
    }
}

/// Every confirmed, unsettled message is back, byte for byte; nothing
/// comes back that was never enqueued.
fn check(recovered: &BTreeMap<QueueName, BTreeMap<u64, Message>>, model: &mut Model) {
    let mut found = BTreeMap::new();
    for queue in 0..QUEUES {
        if let Some(messages) = recovered.get(&queue_name(queue)) {
            for (&seq, m) in messages {
                let (expected, _, _) = model
                    .messages
                    .get(&(queue, seq))
                    .unwrap_or_else(|| panic!("q{queue} seq {seq} was never enqueued"));
                assert_eq!(m.body, expected.body, "q{queue} seq {seq}");
                assert_eq!(m.properties, expected.properties);
                assert_eq!(m.routing_key, expected.routing_key);
                found.insert((queue, seq), ());
            }
        }
    }
    for (key, (_, _, lsn)) in &model.messages {
        if *lsn != u64::MAX && !model.settled.contains_key(key) {
            assert!(found.contains_key(key), "confirmed {key:?} is lost");
        }
    }
    // What came back is what the next run holds: forget the rest, and
    // settled ones that came back are live again.
    model.messages.retain(|key, _| found.contains_key(key));
    model.settled.retain(|key, _| !found.contains_key(key));
    for (_, shard, lsn) in model.messages.values_mut() {
        (*shard, *lsn) = (0, 0);
    }
}

#[test]
fn a_power_loss_at_any_point_loses_nothing_confirmed() {
    for seed in seeds() {
        let result = std::panic::catch_unwind(|| {
            let mut rng = StdRng::seed_from_u64(seed);
            let disk = SimDisk::default();
            disk.interleave(seed);
            let mut model = Model::default();
            let mut next_id = 0;
            for _ in 0..4 {
                run_until_power_cut(&disk, &mut rng, &mut model, &mut next_id);
            }
            check(&recovered_messages(&disk), &mut model);
        });
        assert!(result.is_ok(), "failed with WARREN_STORE_SEED={seed}");
    }
}

/// A restart with more shards splits the one shard's stream: its live
/// messages are written again, by owner, before the old segments go. A
/// power loss at any point of that loses nothing, and the next start
/// finishes the job: every unsettled message is back once, intact.
#[test]
fn a_power_loss_while_the_log_is_written_again_by_shard_loses_nothing() {
    for seed in seeds().into_iter().take(60) {
        let result = std::panic::catch_unwind(|| {
            let mut rng = StdRng::seed_from_u64(seed);
            let disk = SimDisk::default();
            let mut model = Model::default();
            let mut next_id = 0;
            let stores = start(&disk, 1, &model);
            for _ in 0..rng.gen_range(20..80) {
                let queue = rng.gen_range(0..QUEUES);
                enqueue(&stores[0], queue, 0, &mut rng, &mut model, &mut next_id);
                if rng.gen_bool(0.2) {
                    let seq = model.next_seq[&queue] - 1;
                    stores[0].settle(QueueId(queue), &[seq]);
                    model.settled.insert((queue, seq), ());
                }
            }
            block_on(stores[0].log().commit()).expect("all of it is durable");
            drop(stores);
            disk.cut_power_after(rng.gen_range(0..40));
            let owner = |name: &QueueName| queue_of(name) as usize % 2;
            let _ = block_on(plan(&disk, 2, 8192, owner));
            disk.crash(&mut rng);
            check(&recovered_messages(&disk), &mut model);
            start(&disk, 2, &model);
            check(&recovered_messages(&disk), &mut model);
            let old = segment_name(1, 0, 1);
            assert_eq!(disk.file_len(&old), 0, "the old stream is gone");
        });
        assert!(result.is_ok(), "failed with WARREN_STORE_SEED={seed}");
    }
}

/// A store on `disk` (epoch 1, shard 0, 8 KiB segments) tracking queue 0.
fn one_queue_store(disk: &SimDisk) -> Store<SimDisk> {
    let store = Store::new(Log::new(disk.clone(), 1, 0, 8192, true));
    store.track(QueueId(0), queue_name(0));
    store
}

fn filled_store(disk: &SimDisk, messages: u64) -> Vec<Message> {
    let mut rng = StdRng::seed_from_u64(7);
    let store = one_queue_store(disk);
    let mut sent = Vec::new();
    for seq in 1..=messages {
        let m = message(&mut rng, seq);
        store
            .enqueue(QueueId(0), seq, &m)
            .expect("the log takes it");
        sent.push(m);
        if seq % 5 == 0 {
            block_on(store.log().commit()).expect("commit");
        }
    }
    block_on(store.log().commit()).expect("commit");
    sent
}

#[test]
fn a_flipped_byte_quarantines_its_segment_and_the_rest_recovers() {
    let disk = SimDisk::default();
    let sent = filled_store(&disk, 60);
    let first = segment_name(1, 0, 1);
    assert!(
        disk.file_len(&segment_name(1, 0, 3)) > 0,
        "several segments"
    );
    disk.flip(&first, 100);
    let recovered = recovered_messages(&disk);
    let messages = &recovered[&queue_name(0)];
    assert!(
        !messages.contains_key(&1),
        "the damaged record is not trusted"
    );
    let last = sent.len() as u64;
    assert_eq!(messages[&last].body, sent[last as usize - 1].body);
    assert!(disk.file_len(&first) > 0, "renamed only by the rewrite");
}

/// A log of one queue over three segments whose segment 1 is damaged at
/// its third record: the messages sent, by seq, and the seqs a recovery
/// must find (the two readable records of segment 1 and every later one).
fn damaged_log(disk: &SimDisk) -> (BTreeMap<u64, Message>, Vec<u64>) {
    let store = one_queue_store(disk);
    let mut rng = StdRng::seed_from_u64(9);
    let mut sent = BTreeMap::new();
    let mut at: Vec<Location> = Vec::new();
    while at.last().is_none_or(|a| a.segment < 3) {
        let seq = at.len() as u64 + 1;
        let mut m = message(&mut rng, seq);
        while m.body.len() > 300 {
            m = message(&mut rng, seq);
        }
        let appended = store
            .enqueue(QueueId(0), seq, &m)
            .expect("the log takes it");
        at.push(appended.at);
        sent.insert(seq, m);
        if seq % 4 == 0 {
            block_on(store.log().commit()).expect("commit");
        }
    }
    block_on(store.log().commit()).expect("commit");
    let damaged = at[2];
    assert_eq!(
        damaged.segment, 1,
        "four records to a commit, two commits to a segment"
    );
    disk.flip(&segment_name(1, 0, 1), damaged.offset as usize + 8);
    let expected = (1..=at.len() as u64)
        .filter(|&seq| at[seq as usize - 1].segment != 1 || seq < 3)
        .collect();
    (sent, expected)
}

/// The start that finds a damaged segment writes what was live again, the
/// readable part of the damaged segment included, before it renames the
/// segment `*.quarantined` and deletes the rest of the old stream; a power
/// loss at any point of that leaves the damaged segment to be read again.
#[test]
fn the_start_that_quarantines_a_segment_writes_the_live_messages_again() {
    for ops in 0..40 {
        let disk = SimDisk::default();
        let (sent, expected) = damaged_log(&disk);
        disk.cut_power_after(ops);
        let cut = block_on(plan(&disk, 1, 8192, |_| 0)).is_err();
        disk.crash(&mut StdRng::seed_from_u64(ops as u64));
        let plan = block_on(plan(&disk, 1, 8192, |_| 0)).expect("the plan rewrites");
        // After a cut past the rename, the next start finds no damage and
        // takes the old and new streams over as they are.
        if !cut {
            assert_eq!(plan.epoch, 3, "the rewrite took epoch 2");
            let old = segment_name(1, 0, 2);
            assert_eq!(disk.file_len(&old), 0, "the old stream is gone");
        }
        let first = segment_name(1, 0, 1);
        assert_eq!(disk.file_len(&first), 0, "ops {ops}: renamed away");
        assert!(disk.file_len(&format!("{first}.quarantined")) > 0, "kept");
        let back = recovered_messages(&disk);
        let seqs: Vec<u64> = back[&queue_name(0)].keys().copied().collect();
        assert_eq!(seqs, expected, "ops {ops}");
        for (seq, m) in &back[&queue_name(0)] {
            assert_eq!(m.body, sent[seq].body, "ops {ops}: message {seq}");
        }
    }
}

#[test]
fn a_full_disk_fails_the_commit_and_the_log_takes_nothing_more() {
    let disk = SimDisk::default();
    let store = one_queue_store(&disk);
    let mut rng = StdRng::seed_from_u64(1);
    assert!(store
        .enqueue(QueueId(0), 1, &message(&mut rng, 1))
        .is_some());
    disk.fail_writes(true);
    assert!(block_on(store.log().commit()).is_err());
    assert_eq!(store.log().durable(), 0, "nothing was confirmed");
    assert!(store.log().failed().is_some());
    assert!(store
        .enqueue(QueueId(0), 2, &message(&mut rng, 2))
        .is_none());
}

#[test]
fn segments_whose_messages_all_left_are_deleted_from_the_front() {
    let disk = SimDisk::default();
    let store = one_queue_store(&disk);
    let mut rng = StdRng::seed_from_u64(3);
    for seq in 1..=40 {
        store.enqueue(QueueId(0), seq, &message(&mut rng, seq));
        block_on(store.log().commit()).expect("commit");
    }
    assert!(disk.file_len(&segment_name(1, 0, 1)) > 0);
    store.settle(QueueId(0), &(1..=30).collect::<Vec<_>>());
    block_on(store.log().commit()).expect("commit");
    assert_eq!(
        disk.file_len(&segment_name(1, 0, 1)),
        0,
        "the first segment is gone"
    );
    let recovered = recovered_messages(&disk);
    let seqs: Vec<u64> = recovered[&queue_name(0)].keys().copied().collect();
    assert_eq!(seqs, (31..=40).collect::<Vec<_>>());
}

/// Paging: records read back as the messages that were written, enqueue
/// and page records alike, in one read or several; recovery ignores page
/// records.
#[test]
fn paged_messages_read_back_byte_identical_and_recovery_skips_page_records() {
    let disk = SimDisk::default();
    let store = one_queue_store(&disk);
    let mut rng = StdRng::seed_from_u64(11);
    let mut written = Vec::new();
    for seq in 1..=60 {
        let m = message(&mut rng, seq);
        let appended = match seq % 3 {
            0 => store.page(&queue_name(1), seq, &m),
            _ => store.enqueue(QueueId(0), seq, &m),
        }
        .expect("the log takes it");
        assert!(!store.log().is_durable(appended.at), "not written yet");
        written.push((seq, appended.at, m));
        if seq % 7 == 0 {
            block_on(store.log().commit()).expect("commit");
        }
    }
    block_on(store.log().commit()).expect("commit");
    let mut pages: Vec<(u64, _)> = written.iter().map(|(seq, at, _)| (*seq, *at)).collect();
    pages.reverse();
    // And one asked for under the wrong seq: not that message.
    pages.push((999, written[0].1));
    let read = block_on(store.read_back(&pages)).expect("read back");
    for ((seq, at), got) in pages.iter().zip(&read) {
        if *seq == 999 {
            assert!(got.is_none(), "a record read back under another seq");
            continue;
        }
        assert!(store.log().is_durable(*at));
        let sent = &written[*seq as usize - 1].2;
        let got = got.as_ref().expect("read back");
        assert_eq!(got.properties, sent.properties, "properties of {seq}");
        assert_eq!(got.body, sent.body, "body of {seq}");
        assert_eq!(got.exchange, sent.exchange);
        assert_eq!(got.routing_key, sent.routing_key);
    }
    let recovered = recovered_messages(&disk);
    assert!(!recovered.contains_key(&queue_name(1)), "pages are void");
    let seqs: Vec<u64> = recovered[&queue_name(0)].keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=60).filter(|seq| seq % 3 != 0).collect::<Vec<_>>()
    );
}

#[test]
fn a_page_record_keeps_its_segment_until_it_is_released() {
    let disk = SimDisk::default();
    let store = one_queue_store(&disk);
    let mut rng = StdRng::seed_from_u64(5);
    let page = store
        .page(&queue_name(1), 1, &message(&mut rng, 1))
        .expect("the log takes it");
    for seq in 1..=40 {
        store.enqueue(QueueId(0), seq, &message(&mut rng, seq));
        block_on(store.log().commit()).expect("commit");
    }
    store.settle(QueueId(0), &(1..=40).collect::<Vec<_>>());
    block_on(store.log().commit()).expect("commit");
    let first = segment_name(1, 0, 1);
    assert!(disk.file_len(&first) > 0, "the page record keeps it");
    assert!(block_on(store.read_back(&[(1, page.at)])).expect("read")[0].is_some());
    store.unpage(page.at);
    block_on(store.log().commit()).expect("commit");
    assert_eq!(disk.file_len(&first), 0, "deleted once released");
}

/// Compaction: the front segment's live records are copied to the head
/// and the segment goes; a power cut at any point of the commits that
/// follow loses no live message and brings back no settled one.
#[test]
fn compacting_the_front_segment_survives_a_power_loss_at_any_point() {
    use super::compaction::LiveRecord;
    for seed in seeds() {
        let result = std::panic::catch_unwind(|| {
            let mut rng = StdRng::seed_from_u64(seed);
            let disk = SimDisk::default();
            let store = Store::new(Log::new(disk.clone(), 1, 0, 32768, true));
            store.track(QueueId(0), queue_name(0));
            let mut live = BTreeMap::new();
            for seq in 1..=60 {
                let mut m = message(&mut rng, seq);
                // The first shares its segment with others.
                while seq == 1 && m.body.len() > 1000 {
                    m = message(&mut rng, seq);
                }
                store
                    .enqueue(QueueId(0), seq, &m)
                    .expect("the log takes it");
                live.insert(seq, m);
                if seq % 5 == 0 {
                    block_on(store.log().commit()).expect("commit");
                }
            }
            let page = store
                .page(&queue_name(1), 1, &message(&mut rng, 1000))
                .expect("the log takes it");
            block_on(store.log().commit()).expect("commit");
            // The first message and every sixteenth stay; the settles are
            // durable.
            let settled: Vec<u64> = (2..=60).filter(|seq| seq % 16 != 0).collect();
            store.settle(QueueId(0), &settled);
            settled.iter().for_each(|seq| {
                live.remove(seq);
            });
            block_on(store.log().commit()).expect("commit");
            let front = segment_name(1, 0, 1);
            assert!(disk.file_len(&front) > 0, "seed {seed}: message 1 keeps it");
            // A commit in flight while compaction copies: it must not
            // delete the front, whose copies it does not hold.
            store
                .page(&queue_name(2), 1, &message(&mut rng, 2000))
                .expect("the log takes it");
            let in_flight = store.log().begin_commit().expect("a commit");
            let moved = block_on(store.compact_front(|record| match record {
                LiveRecord::Enqueue { seq, .. } => live.contains_key(seq),
                LiveRecord::Page { at, .. } => *at == page.at,
                LiveRecord::Delay { .. } => false,
            }))
            .expect("compaction reads the segment");
            assert!(
                moved.iter().any(|m| m.queue == queue_name(0) && m.seq == 1),
                "seed {seed}: message 1 is copied"
            );
            disk.cut_power_after(rng.gen_range(0..8));
            let _ = block_on(store.log().finish_commit(in_flight));
            for _ in 0..3 {
                let _ = block_on(store.log().commit());
            }
            // The last sync may have gone through just as the power went,
            // before the deletion.
            let finished = store.log().failed().is_none() && disk.has_power();
            disk.crash(&mut rng);
            let recovered = recovered_messages(&disk);
            let got = &recovered[&queue_name(0)];
            let seqs: Vec<u64> = got.keys().copied().collect();
            assert_eq!(
                seqs,
                live.keys().copied().collect::<Vec<_>>(),
                "seed {seed}"
            );
            for (seq, m) in &live {
                assert_eq!(got[seq].body, m.body, "seed {seed}: message {seq}");
                assert_eq!(got[seq].properties, m.properties);
            }
            if finished {
                assert_eq!(disk.file_len(&front), 0, "seed {seed}: compacted away");
            }
        });
        assert!(result.is_ok(), "failed with WARREN_STORE_SEED={seed}");
    }
}

#[test]
fn a_compacted_page_record_reads_back_from_its_copy() {
    use super::compaction::LiveRecord;
    let disk = SimDisk::default();
    let store = Store::new(Log::new(disk.clone(), 1, 0, 32768, true));
    store.track(QueueId(0), queue_name(0));
    let mut rng = StdRng::seed_from_u64(9);
    let paged = message(&mut rng, 1);
    let page = store.page(&queue_name(1), 7, &paged).expect("taken");
    for seq in 1..=40 {
        store.enqueue(QueueId(0), seq, &message(&mut rng, seq));
        if seq % 5 == 0 {
            block_on(store.log().commit()).expect("commit");
        }
    }
    store.settle(QueueId(0), &(1..=40).collect::<Vec<_>>());
    block_on(store.log().commit()).expect("commit");
    let moved =
        block_on(store.compact_front(
            |record| matches!(record, LiveRecord::Page { at, .. } if *at == page.at),
        ))
        .expect("compaction");
    assert_eq!(moved.len(), 1);
    assert_eq!((moved[0].seq, moved[0].from), (7, page.at));
    block_on(store.log().commit()).expect("commit");
    assert_eq!(disk.file_len(&segment_name(1, 0, 1)), 0, "compacted away");
    let read = block_on(store.read_back(&[(7, moved[0].to)])).expect("read");
    let back = read[0].as_ref().expect("the copy reads back");
    assert_eq!(
        (&back.properties, &back.body),
        (&paged.properties, &paged.body)
    );
}

/// A restart takes the earlier run's segments over: a mostly dead one at
/// the front is compacted like any, and recovered messages of a queue no
/// definition claims are dropped for good.
#[test]
fn taken_over_segments_compact_and_unclaimed_queues_are_dropped() {
    use super::compaction::LiveRecord;
    let disk = SimDisk::default();
    let sent = filled_store(&disk, 60);
    {
        // A second run, which took nothing over (the test needs only its
        // records).
        let store = Store::new(Log::new(disk.clone(), 2, 0, 8192, true));
        store.track(QueueId(0), queue_name(0));
        let mut rng = StdRng::seed_from_u64(2);
        store.track(QueueId(1), queue_name(1));
        store.enqueue(QueueId(1), 1, &message(&mut rng, 1));
        store.settle(QueueId(0), &(2..=60).collect::<Vec<_>>());
        block_on(store.log().commit()).expect("commit");
    }
    let stores = start_one(&disk);
    let store = &stores[0];
    let kept = store.track(QueueId(0), queue_name(0));
    assert_eq!(kept.iter().map(|m| m.seq).collect::<Vec<_>>(), [1]);
    assert_eq!(store.drop_unclaimed(), [(queue_name(1), 1)]);
    let front = segment_name(1, 0, 1);
    let moved = block_on(
        store.compact_front(|record| matches!(record, LiveRecord::Enqueue { seq: 1, .. })),
    )
    .expect("compaction reads the taken-over segment");
    assert_eq!(moved.len(), 1, "message 1 is copied");
    block_on(store.log().commit()).expect("commit");
    assert_eq!(disk.file_len(&front), 0, "the old front segment is gone");
    let read = block_on(store.read_back(&[(1, moved[0].to)])).expect("read");
    assert_eq!(read[0].as_ref().expect("the copy").body, sent[0].body);
    let recovered = recovered_messages(&disk);
    assert_eq!(recovered.keys().collect::<Vec<_>>(), [&queue_name(0)]);
    assert_eq!(recovered[&queue_name(0)].keys().collect::<Vec<_>>(), [&1]);
}

/// One shard's store over what `disk` holds, nothing claimed yet.
fn start_one(disk: &SimDisk) -> Vec<Store<SimDisk>> {
    let plan = block_on(plan(disk, 1, 8192, |_| 0)).expect("plan");
    let epoch = plan.epoch;
    plan.shares
        .into_iter()
        .map(|share| {
            let store = Store::new(Log::new(disk.clone(), epoch, 0, 8192, true));
            store.take_over(share);
            store
        })
        .collect()
}

/// Delayed messages: a logged one comes back with its content until its
/// undelay record, and its record is compacted like a message's.
#[test]
fn delayed_messages_come_back_until_undelayed_and_move_with_compaction() {
    use super::compaction::LiveRecord;
    use super::record::Delayed;
    let disk = SimDisk::default();
    let mut rng = StdRng::seed_from_u64(4);
    let delayed = |id: u64, rng: &mut StdRng| Delayed {
        exchange: queue_name(9),
        id,
        due_ms: 1000 + id,
        delay_ms: 500,
        routing_keys: vec![ShortStr::from_static("key")],
        message: message(rng, id),
    };
    let sent: Vec<Delayed> = (1..=3).map(|id| delayed(id, &mut rng)).collect();
    {
        let store = one_queue_store(&disk);
        let mut at = Vec::new();
        for d in &sent {
            at.push(store.delay(d).expect("the log takes it").at);
        }
        // Small messages, so the delayed ones share their segment with
        // many that leave.
        for seq in 1..=30 {
            let mut m = message(&mut rng, seq);
            while m.body.len() > 100 {
                m = message(&mut rng, seq);
            }
            store.enqueue(QueueId(0), seq, &m);
        }
        store.undelay(&queue_name(9), 2, at[1]);
        store.settle(QueueId(0), &(1..=30).collect::<Vec<_>>());
        block_on(store.log().commit()).expect("commit");
    }
    let stores = start_one(&disk);
    let store = &stores[0];
    let back = store.take_recovered_delays();
    let ids: Vec<u64> = back.iter().map(|(d, _)| d.id).collect();
    assert_eq!(ids, [1, 3], "the undelayed one is gone");
    for (d, _) in &back {
        let original = &sent[d.id as usize - 1];
        assert_eq!(
            (d.due_ms, d.delay_ms, &d.routing_keys),
            (original.due_ms, original.delay_ms, &original.routing_keys)
        );
        assert_eq!(d.message.body, original.message.body);
    }
    let moved = block_on(store.compact_front(|record| match record {
        LiveRecord::Delay { id, at } => back.iter().any(|(d, a)| d.id == *id && a == at),
        _ => false,
    }))
    .expect("compaction");
    let moved_ids: Vec<u64> = moved.iter().filter(|m| m.delayed).map(|m| m.seq).collect();
    assert_eq!(moved_ids, [1, 3]);
    block_on(store.log().commit()).expect("commit");
    assert_eq!(disk.file_len(&segment_name(1, 0, 1)), 0, "compacted away");
    drop(stores);
    // The next recovery finds the copies, once each.
    let plan = block_on(plan(&disk, 2, 8192, |_| 1)).expect("plan");
    let counts: Vec<(usize, usize)> = plan.shares.iter().map(|s| s.message_counts()).collect();
    assert_eq!(counts.iter().map(|c| c.1).sum::<usize>(), 2);
}

/// A spare is made only for the segment after the one commits write to:
/// once appends have rolled past it, the commit makes the next segment
/// itself, and a spare made meanwhile under that name would write its
/// zeros over the commit's records.
#[test]
fn no_spare_is_made_for_a_segment_the_appends_already_reached() {
    let disk = SimDisk::default();
    let store = one_queue_store(&disk);
    let mut rng = StdRng::seed_from_u64(5);
    store.enqueue(QueueId(0), 1, &message(&mut rng, 1));
    block_on(store.log().commit()).expect("commit");
    assert_eq!(store.log().spare_wanted(), Some(2), "segment 1 is written");
    let mut seq = 2;
    while store
        .enqueue(QueueId(0), seq, &message(&mut rng, seq))
        .map(|a| a.segment)
        == Some(1)
    {
        seq += 1;
    }
    assert_eq!(
        store.log().spare_wanted(),
        None,
        "appends reached segment 2"
    );
    block_on(store.log().commit()).expect("commit");
    assert_eq!(store.log().spare_wanted(), Some(3));
    let recovered = recovered_messages(&disk);
    assert_eq!(
        recovered[&queue_name(0)].len() as u64,
        seq,
        "every record is there"
    );
}

/// The spare's zeros go in small pieces with a pause after each while it
/// is well ahead of the appends (from its first piece on), and in large
/// ones with no pause once the appends have reached it.
#[test]
fn the_spare_fills_slowly_only_while_ahead_of_the_appends() {
    let disk = SimDisk::default();
    let store = Store::new(Log::new(disk.clone(), 1, 0, 1 << 20, true));
    store.track(QueueId(0), queue_name(0));
    let mut rng = StdRng::seed_from_u64(9);
    store.enqueue(QueueId(0), 1, &message(&mut rng, 1));
    block_on(store.log().commit()).expect("commit");
    let pauses = std::cell::Cell::new(0);
    let pause = async || pauses.set(pauses.get() + 1);
    block_on(store.log().prepare_spare(2, pause));
    assert_eq!(
        pauses.get(),
        16,
        "1 MiB in 64 KiB pieces, each paused after"
    );
    // Appends fill segment 2 and reach 3 before its spare is made.
    let mut seq = 2;
    while store
        .enqueue(QueueId(0), seq, &message(&mut rng, seq))
        .map(|a| a.segment)
        != Some(3)
    {
        seq += 1;
    }
    pauses.set(0);
    block_on(store.log().prepare_spare(3, pause));
    assert_eq!(pauses.get(), 0, "behind: no pause");
}
