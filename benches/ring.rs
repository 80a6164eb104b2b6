//! The shard-to-shard ring, measured through the broker's own mesh: two
//! shards started by `warren::runtime::run_shards` (pinned to two CPUs when
//! the process may use two), shard 0 sending `ShardMsg::Publish` (a queue id
//! and a clone of one refcounted message, as a connection does after
//! routing) to shard 1 with `Mesh::send`, shard 1 counting them in the
//! handler given to `Mesh::start_receivers`. What is timed is the real path:
//! outbox, ring, eventfd wake-ups and the receiving task.
//!
//! Shard 0 sends like a publishing connection: it stops when the outbox to
//! shard 1 is congested and waits until it drains (`wait_uncongested`).
//! When shard 1 has counted a run's messages it sends one message back,
//! which ends the run's clock on shard 0.
//!
//! Prints messages per second, nanoseconds per message and allocations per
//! message (process-wide, both shards) for a few runs after a warm-up run.
//! A plain main rather than criterion: a run is a whole exchange between two
//! threads, not a closure criterion can repeat. `-- --test` (as
//! `cargo bench --bench ring -- --test`) does one short run.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use warren::ids::{ChannelId, ConnectionId, QueueId};
use warren::message::{Message, MessageContent};
use warren::protocol::ShortStr;
use warren::runtime::mesh::Mesh;
use warren::runtime::notify::Notify;
use warren::shard::message::{ConfirmTag, ShardMsg};

mod common;

/// The broker's default `--ring-capacity`.
const RING_CAPACITY: usize = 4096;
const SENDER: usize = 0;
const RECEIVER: usize = 1;
const PUBLISHER: ChannelId = ChannelId {
    conn: ConnectionId {
        shard_id: 0,
        local_id: 0,
    },
    number: 1,
};

#[derive(Clone, Copy)]
struct Plan {
    runs: usize,
    messages_per_run: u64,
}

fn message() -> Message {
    Message::new(MessageContent {
        exchange: ShortStr::from(""),
        routing_key: ShortStr::from("bench"),
        properties: Bytes::new(),
        body: Bytes::from_static(&[0u8; 16]),
        priority: 0,
        persistent: false,
        expiration_ms: None,
    })
}

/// Shard 0: sends each run's messages and waits for shard 1's answer.
/// Run 0 is the warm-up and is not reported.
async fn send_runs(mesh: Rc<Mesh<ShardMsg>>, plan: Plan) {
    let run_done = Rc::new(Notify::new());
    let notify = run_done.clone();
    mesh.start_receivers(Rc::new(move |_| notify.notify()));
    let message = message();
    for run in 0..=plan.runs {
        let allocations_before = common::allocation_count();
        let start = Instant::now();
        for _ in 0..plan.messages_per_run {
            if mesh.is_congested(RECEIVER) {
                mesh.wait_uncongested(RECEIVER).await;
            }
            let publish = ShardMsg::Publish {
                queue: QueueId(1),
                message: message.clone(),
                publisher: PUBLISHER,
                confirm: ConfirmTag::NONE,
            };
            mesh.send(RECEIVER, publish);
        }
        run_done.wait().await;
        let elapsed = start.elapsed();
        let allocations = common::allocation_count() - allocations_before;
        if run > 0 {
            let messages = plan.messages_per_run as f64;
            println!(
                "ring/run {run}: {:>12.0} msgs/s {:>7.1} ns/msg {:.4} allocations/msg",
                messages / elapsed.as_secs_f64(),
                elapsed.as_nanos() as f64 / messages,
                allocations as f64 / messages,
            );
        }
    }
}

/// Shard 1: counts messages and answers shard 0 at the end of every run;
/// returns after the last.
async fn receive_runs(mesh: Rc<Mesh<ShardMsg>>, plan: Plan) {
    let all_done = Rc::new(Notify::new());
    let received = Rc::new(Cell::new(0u64));
    let total = plan.messages_per_run * (plan.runs as u64 + 1);
    let (answer_mesh, done) = (mesh.clone(), all_done.clone());
    let answer = message();
    mesh.start_receivers(Rc::new(move |msg| {
        if !matches!(msg, ShardMsg::Publish { .. }) {
            return;
        }
        let count = received.get() + 1;
        received.set(count);
        if count % plan.messages_per_run == 0 {
            let publish = ShardMsg::Publish {
                queue: QueueId(0),
                message: answer.clone(),
                publisher: PUBLISHER,
                confirm: ConfirmTag::NONE,
            };
            answer_mesh.send(SENDER, publish);
        }
        if count == total {
            done.notify();
        }
    }));
    all_done.wait().await;
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--test");
    let plan = if quick {
        Plan {
            runs: 1,
            messages_per_run: 10_000,
        }
    } else {
        Plan {
            runs: 5,
            messages_per_run: 2_000_000,
        }
    };
    let pinned = warren::runtime::allowed_cpus().len() >= 2;
    println!(
        "ring: 2 shards ({}), ring capacity {RING_CAPACITY}, {} bytes per ShardMsg, \
         {} messages per run",
        if pinned {
            "pinned to 2 CPUs"
        } else {
            "unpinned"
        },
        std::mem::size_of::<ShardMsg>(),
        plan.messages_per_run,
    );
    let result =
        warren::runtime::run_shards(2, RING_CAPACITY, 1, move |shard_id, mesh| async move {
            match shard_id {
                SENDER => send_runs(mesh, plan).await,
                _ => receive_runs(mesh, plan).await,
            }
        });
    if let Err(err) = result {
        panic!("ring bench: {err}");
    }
}
