//! Dead letters leave their queue's shard like any routed publish: the
//! message is rebuilt with its x-death header (`queue::dead_letter::make`),
//! routed on this shard's catalog replica from the dead-letter exchange,
//! and sent as `ShardMsg::DeadLetter` (a publish that owes no connection
//! credit) to each target queue's owner, this shard included (through the
//! mesh's local outbox, so no handler re-enters).

use std::time::{SystemTime, UNIX_EPOCH};

use super::{Shard, ShardMsg};
use crate::protocol::ShortStr;
use crate::queue::dead_letter::{self, Death};
use crate::queue::{DeadLetter, Queue, Settings};
use crate::routing::MessageFields;

impl Shard {
    /// Routes what `q` dead-lettered since the last call.
    pub(super) fn publish_dead_letters(&self, q: &mut Queue) {
        q.drain_dead_letters(|vhost, name, settings, letter| {
            self.publish_dead_letter(vhost, name, settings, letter);
        });
    }

    fn publish_dead_letter(
        &self,
        vhost: &ShortStr,
        queue: &ShortStr,
        settings: &Settings,
        letter: DeadLetter,
    ) {
        let time_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let death = Death {
            queue,
            reason: letter.reason,
            time_s,
        };
        let dead = dead_letter::make(&letter.message, &death, settings);
        let catalog = self.catalog.borrow();
        let exchange = dead.message.exchange.as_bytes();
        // A dead-letter exchange that does not exist drops the message.
        let (Some(_), Some(table)) = (catalog.exchange(vhost, exchange), catalog.routing(vhost))
        else {
            return;
        };
        let mut routes = Vec::new();
        for key in &dead.routing_keys {
            let fields = MessageFields {
                headers: Some(&dead.headers),
                properties: Some(&dead.message.properties),
                first_routing_key: dead.routing_keys.first().map(|k| k.as_bytes()),
            };
            table.route(exchange, key, fields, &mut routes);
        }
        routes.sort_unstable();
        routes.dedup();
        for target in routes {
            let Some(def) = catalog.queue_by_id(target) else {
                continue;
            };
            if dead_letter::is_cycle(letter.reason, &dead.headers, def.name.as_bytes()) {
                continue;
            }
            let message = dead.message.clone();
            self.send(
                def.shard_id,
                ShardMsg::DeadLetter {
                    queue: target,
                    message,
                },
            );
        }
    }
}
