//! The shard's compaction task: now and then, compacts its log's front
//! segment when it is mostly dead (`store::compaction`), telling each queue
//! where its moved records are now.

use std::rc::Rc;
use std::time::Duration;

use ahash::RandomState;
use hashbrown::HashMap;

use super::Shard;
use crate::ids::QueueId;
use crate::store::compaction::{LiveRecord, Moved};
use crate::store::record::QueueName;

/// How often the front segment is looked at: a check is a few map
/// lookups; a compaction reads one segment.
const COMPACTION_PERIOD: Duration = Duration::from_secs(1);

impl Shard {
    pub(super) async fn compaction_loop(self: Rc<Self>) {
        while !self
            .shared
            .shutdown
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            crate::runtime::sleep(COMPACTION_PERIOD).await;
            let store = &self.store().store;
            // Built when compaction asks about its first record, after its
            // read, and used through the synchronous rest.
            let ids = std::cell::OnceCell::new();
            let moved = store
                .compact_front(|record| {
                    self.holds_record(record, ids.get_or_init(|| self.queue_ids()))
                })
                .await;
            match moved {
                Ok(moved) if !moved.is_empty() => {
                    self.relocate(&moved, ids.get_or_init(|| self.queue_ids()));
                    self.store().commit_now();
                }
                Ok(_) => {}
                Err(err) => tracing::warn!("log compaction on shard {}: {err}", self.id),
            }
        }
    }

    fn holds_record(&self, record: &LiveRecord, ids: &QueueIds) -> bool {
        let queues = self.queues.borrow();
        match *record {
            LiveRecord::Enqueue { queue, seq } => queues.get(&queue).is_some_and(|q| q.holds(seq)),
            LiveRecord::Page { queue, seq, at } => ids
                .get(queue)
                .and_then(|id| queues.get(id))
                .is_some_and(|q| q.holds_page(seq, at)),
            LiveRecord::Delay { id, at } => self.delayed.borrow().holds(id, at),
        }
    }

    /// Points the queues' records at their copies.
    fn relocate(&self, moved: &[Moved], ids: &QueueIds) {
        let mut queues = self.queues.borrow_mut();
        for record in moved {
            if record.delayed {
                let mut delayed = self.delayed.borrow_mut();
                delayed.relocate(record.seq, record.from, record.to);
                continue;
            }
            if let Some(q) = ids.get(&record.queue).and_then(|id| queues.get_mut(id)) {
                q.relocate(record.seq, record.from, record.to);
            }
        }
    }

    /// This shard's queues by name (page records name their queue).
    fn queue_ids(&self) -> QueueIds {
        self.queues
            .borrow()
            .iter()
            .map(|(&id, q)| (queue_name_of(q), id))
            .collect()
    }
}

type QueueIds = HashMap<QueueName, QueueId, RandomState>;

fn queue_name_of(q: &crate::queue::Queue) -> QueueName {
    QueueName {
        vhost: q.vhost().clone(),
        name: q.name().clone(),
    }
}
