//! Durable definitions: what of the catalog survives a restart, as
//! RabbitMQ keeps it — durable exchanges and queues, bindings whose ends
//! are both durable, vhosts, users, permissions and policies.
//!
//! Owns: deciding which applied catalog changes are durable
//! ([`durable_changes`]), the live durable set those changes build
//! ([`Definitions`]), and the declares that rebuild it
//! ([`Definitions::ops`]), which are both a snapshot's records and the
//! start-up replay. The file is [`log`]'s, the record bytes [`codec`]'s.
//!
//! Invariants:
//! - Every record is a [`MetaOp`], replayed through `Catalog::apply` like
//!   any other change, so a queue comes back on whichever shard owns it
//!   under the current `--shards`.
//! - The set starts as a first start's catalog (vhost `/`, guest with full
//!   permissions there): an empty log means a first start, and deleting
//!   guest or `/` is a record like any other, so it sticks.
//! - Replay declares only (after clearing that first-start state): no
//!   unbind or delete runs at start-up, so nothing is auto-deleted then,
//!   as in RabbitMQ.
//! - No I/O here.

pub(crate) mod codec;
pub mod log;

use std::collections::{BTreeMap, BTreeSet};

use bytes::BytesMut;

use crate::catalog::access::{PermissionDef, PolicyDef, PolicyKind, User};
use crate::catalog::{
    queue_shard, AccessOp, BindingOp, Catalog, DestinationName, ExchangeDef, MetaOp, MetaOutcome,
    QueueDef, DEFAULT_VHOST, GUEST_USER,
};
use crate::protocol::types::ShortStr;

/// (vhost, name) of an exchange or queue.
type Key = (ShortStr, ShortStr);

/// A binding's identity: vhost, source, destination (exchange or not),
/// routing key and encoded arguments, the table the routing table compares
/// whole.
type BindingKey = (ShortStr, ShortStr, bool, ShortStr, ShortStr, Vec<u8>);

/// The live durable set. See the module doc.
#[derive(Clone, Debug, PartialEq)]
pub struct Definitions {
    vhosts: BTreeSet<ShortStr>,
    users: BTreeMap<String, User>,
    permissions: BTreeMap<(String, String), PermissionDef>,
    policies: BTreeMap<(PolicyKind, String, String), PolicyDef>,
    /// The declares that recreate them.
    exchanges: BTreeMap<Key, MetaOp>,
    queues: BTreeMap<Key, MetaOp>,
    bindings: BTreeMap<BindingKey, BindingOp>,
}

impl Default for Definitions {
    /// What a first start has: the catalog's vhost `/` and guest.
    fn default() -> Definitions {
        let fresh = Catalog::new(1);
        Definitions {
            vhosts: fresh.vhost_names().cloned().collect(),
            users: fresh
                .users()
                .map(|user| (user.name.clone(), user.clone()))
                .collect(),
            permissions: fresh
                .permissions()
                .map(|def| ((def.vhost.clone(), def.user.clone()), def.clone()))
                .collect(),
            policies: BTreeMap::new(),
            exchanges: BTreeMap::new(),
            queues: BTreeMap::new(),
            bindings: BTreeMap::new(),
        }
    }
}

fn binding_key(op: &BindingOp) -> BindingKey {
    let (to_exchange, destination) = match &op.destination {
        DestinationName::Queue(name) => (false, name.clone()),
        DestinationName::Exchange(name) => (true, name.clone()),
    };
    let mut arguments = BytesMut::new();
    op.arguments.encode(&mut arguments);
    (
        op.vhost.clone(),
        op.source.clone(),
        to_exchange,
        destination,
        op.routing_key.clone(),
        arguments.to_vec(),
    )
}

impl Definitions {
    /// Applies one durable change (as [`durable_changes`] makes them, or a
    /// record read back). Deleting something takes what depends on it,
    /// as the catalog does: bindings with a deleted end, a vhost's
    /// contents, a user's permissions.
    pub fn apply(&mut self, op: &MetaOp) {
        match op {
            MetaOp::ExchangeDeclare { vhost, name, .. } => {
                self.exchanges
                    .insert((vhost.clone(), name.clone()), op.clone());
            }
            MetaOp::ExchangeDelete { vhost, name, .. } => {
                self.exchanges.remove(&(vhost.clone(), name.clone()));
                self.bindings.retain(|(v, source, to_exchange, to, ..), _| {
                    !(v == vhost && (source == name || (*to_exchange && to == name)))
                });
            }
            MetaOp::QueueDeclare { vhost, name, .. } => {
                self.queues
                    .insert((vhost.clone(), name.clone()), op.clone());
            }
            MetaOp::QueueDelete { vhost, name } => {
                self.queues.remove(&(vhost.clone(), name.clone()));
                self.bindings.retain(|(v, _, to_exchange, to, ..), _| {
                    !(v == vhost && !*to_exchange && to == name)
                });
            }
            MetaOp::Bind(binding) => {
                self.bindings.insert(binding_key(binding), binding.clone());
            }
            MetaOp::Unbind(binding) => {
                self.bindings.remove(&binding_key(binding));
            }
            MetaOp::VhostAdd { name } => {
                self.vhosts.insert(name.clone());
            }
            MetaOp::VhostDelete { name } => self.remove_vhost(name),
            MetaOp::Access(access) => self.apply_access(access),
            MetaOp::ConnectionClosed { .. } => {}
        }
    }

    fn remove_vhost(&mut self, name: &ShortStr) {
        self.vhosts.remove(name);
        self.exchanges.retain(|(vhost, _), _| vhost != name);
        self.queues.retain(|(vhost, _), _| vhost != name);
        self.bindings.retain(|(vhost, ..), _| vhost != name);
        let text = name.to_str_lossy();
        self.permissions.retain(|(vhost, _), _| *vhost != text);
        self.policies.retain(|(_, vhost, _), _| *vhost != text);
    }

    fn apply_access(&mut self, op: &AccessOp) {
        match op {
            AccessOp::UserPut(user) => {
                self.users.insert(user.name.clone(), user.clone());
            }
            AccessOp::UserDelete { name } => {
                self.users.remove(name);
                self.permissions.retain(|(_, user), _| user != name);
            }
            AccessOp::PermissionSet(def) => {
                let key = (def.vhost.clone(), def.user.clone());
                self.permissions.insert(key, def.clone());
            }
            AccessOp::PermissionClear { vhost, user } => {
                self.permissions.remove(&(vhost.clone(), user.clone()));
            }
            AccessOp::PolicySet(def) => {
                let key = (def.kind, def.vhost.clone(), def.name.clone());
                self.policies.insert(key, def.clone());
            }
            AccessOp::PolicyClear { kind, vhost, name } => {
                self.policies.remove(&(*kind, vhost.clone(), name.clone()));
            }
        }
    }

    /// The changes that take a first start's catalog to this set: clear
    /// vhost `/` and guest, then declare vhosts, users, permissions,
    /// policies, exchanges, queues and bindings, in that (dependency)
    /// order. Server-named queues go where `shard_count` hashes them.
    pub(crate) fn ops(&self, shard_count: usize) -> Vec<MetaOp> {
        let mut ops = vec![
            MetaOp::VhostDelete {
                name: ShortStr::from(DEFAULT_VHOST),
            },
            MetaOp::Access(AccessOp::UserDelete {
                name: GUEST_USER.to_owned(),
            }),
        ];
        ops.extend(
            self.vhosts
                .iter()
                .map(|name| MetaOp::VhostAdd { name: name.clone() }),
        );
        let access = (self.users.values().cloned().map(AccessOp::UserPut))
            .chain(
                self.permissions
                    .values()
                    .cloned()
                    .map(AccessOp::PermissionSet),
            )
            .chain(self.policies.values().cloned().map(AccessOp::PolicySet));
        ops.extend(access.map(MetaOp::Access));
        ops.extend(self.exchanges.values().cloned());
        ops.extend(self.queues.values().map(|op| placed(op, shard_count)));
        ops.extend(self.bindings.values().cloned().map(MetaOp::Bind));
        ops
    }
}

/// A server-named queue's declare names its shard: the hash's, on replay.
fn placed(op: &MetaOp, shard_count: usize) -> MetaOp {
    let mut op = op.clone();
    if let MetaOp::QueueDeclare {
        vhost,
        name,
        owner_shard,
        ..
    } = &mut op
    {
        *owner_shard = queue_shard(vhost.as_bytes(), name.as_bytes(), shard_count);
    }
    op
}

/// The durable changes in `op`, which `catalog` (the coordinator's
/// replica, `op` already applied) answered with `outcome`: what must be
/// on disk before anyone hears of it. Empty for a change to transient
/// things only.
pub(crate) fn durable_changes(
    op: &MetaOp,
    outcome: &MetaOutcome,
    catalog: &Catalog,
) -> Vec<MetaOp> {
    match (op, outcome) {
        (_, MetaOutcome::ExchangeDeclared { def, created: true }) if def.durable => {
            vec![exchange_declare(def)]
        }
        (
            MetaOp::QueueDeclare { server_named, .. },
            MetaOutcome::QueueDeclared { def, created: true },
        ) if def.durable => {
            vec![queue_declare(def, *server_named)]
        }
        (MetaOp::Bind(binding), MetaOutcome::Bound { created: true })
            if binding_is_durable(binding, catalog) =>
        {
            vec![op.clone()]
        }
        (MetaOp::Unbind(binding), MetaOutcome::Unbound { removed, exchanges }) => {
            let unbind = removed.then(|| MetaOp::Unbind(binding.clone()));
            unbind.into_iter().chain(deleted(&[], exchanges)).collect()
        }
        (_, MetaOutcome::ExchangeDeleted(exchanges)) => deleted(&[], exchanges),
        (_, MetaOutcome::QueueDeleted { queues, exchanges }) => deleted(queues, exchanges),
        (MetaOp::VhostAdd { .. } | MetaOp::VhostDelete { .. } | MetaOp::Access(_), _) => {
            vec![op.clone()]
        }
        _ => Vec::new(),
    }
}

fn exchange_declare(def: &ExchangeDef) -> MetaOp {
    MetaOp::ExchangeDeclare {
        vhost: def.vhost.clone(),
        name: def.name.clone(),
        kind: ShortStr::from(def.type_name()),
        passive: false,
        durable: true,
        auto_delete: def.auto_delete,
        internal: def.internal,
        arguments: def.arguments.clone(),
    }
}

fn queue_declare(def: &QueueDef, server_named: bool) -> MetaOp {
    codec::durable_queue_declare(
        def.vhost.clone(),
        def.name.clone(),
        def.auto_delete,
        def.arguments.clone(),
        server_named,
    )
}

/// RabbitMQ keeps a binding when both its ends are durable.
fn binding_is_durable(binding: &BindingOp, catalog: &Catalog) -> bool {
    let vhost = binding.vhost.as_bytes();
    let durable_exchange = |name: &ShortStr| {
        catalog
            .exchange(vhost, name.as_bytes())
            .is_some_and(|x| x.durable)
    };
    let destination_durable = match &binding.destination {
        DestinationName::Queue(name) => catalog
            .queue(vhost, name.as_bytes())
            .is_some_and(|q| q.durable),
        DestinationName::Exchange(name) => durable_exchange(name),
    };
    durable_exchange(&binding.source) && destination_durable
}

/// Deletes for the durable ones among removed queues and exchanges.
fn deleted(queues: &[QueueDef], exchanges: &[ExchangeDef]) -> Vec<MetaOp> {
    let queues = queues
        .iter()
        .filter(|q| q.durable)
        .map(|q| MetaOp::QueueDelete {
            vhost: q.vhost.clone(),
            name: q.name.clone(),
        });
    let exchanges = exchanges
        .iter()
        .filter(|x| x.durable)
        .map(|x| MetaOp::ExchangeDelete {
            vhost: x.vhost.clone(),
            name: x.name.clone(),
            if_unused: false,
        });
    queues.chain(exchanges).collect()
}

#[cfg(test)]
mod tests;
