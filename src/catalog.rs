//! The metadata catalog: vhosts, exchange and queue definitions, and each
//! vhost's [`RoutingTable`].
//!
//! Owns: the definitions and their validation, with RabbitMQ's rules and
//! reply texts (the detail part: the connection prefixes the code name).
//! Every shard holds an identical replica; a coordinator validates an
//! operation, broadcasts it, and every replica [`Catalog::apply`]s the same
//! operations in the same order.
//!
//! Invariants:
//! - `apply` is deterministic: no clocks, no randomness, and every outcome
//!   that depends on an order (queues removed by a closed connection,
//!   exchanges auto-deleted in a cascade) follows sorted structures
//!   (`BTreeMap`s, sorted name lists), never a hash map's iteration order.
//!   Two replicas that apply the same operations reach the same state and
//!   report the same outcomes.
//! - A failed operation changes nothing: every check runs before the first
//!   mutation.
//! - Queue ids come from a counter bumped once per created queue; a queue's
//!   shard is its declaring connection's shard when it is exclusive or
//!   server-named, otherwise a stable FNV-1a hash of (vhost, name), the same
//!   in every process and version.
//! - It does no I/O and knows nothing of messages or consumers: the queue's
//!   owning shard checks if-unused / if-empty before a delete is issued.
//!
//! Users, permissions and policies live in [`access`], and which policy
//! applies where in [`policy`]; vhosts here.

pub mod access;
pub(crate) mod policy;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::ids::{ConnectionId, QueueId, ShardId};
use crate::protocol::error::AmqpError;
use crate::protocol::types::{FieldTable, FieldValue, ShortStr};
use crate::queue::{QueueType, Settings};
use crate::routing::consistent_hash::{binding_weight, HashOn};
use crate::routing::headers::{format_value, type_name, validate_binding_arguments, values_equal};
use crate::routing::{Destination, ExchangeKind, ExchangeRouting, RoutingTable};
use access::{
    check_name_len, check_pattern_len, PasswordHash, PermissionDef, PolicyDef, PolicyKind, User,
    UserPermission,
};
use policy::{Policies, Subject};

/// The vhost every broker has.
pub(crate) const DEFAULT_VHOST: &str = "/";

/// An exchange's definition.
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeDef {
    pub vhost: ShortStr,
    pub name: ShortStr,
    /// How it routes: for x-delayed-message, its `x-delayed-type`.
    pub kind: ExchangeKind,
    /// An `x-delayed-message` exchange: a publish with a positive `x-delay`
    /// header waits that long before it is routed.
    pub delayed: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// The policy in effect.
    pub policy: Option<Arc<PolicyDef>>,
}

/// The type name of x-delayed-message exchanges (the community plugin's).
pub(crate) const DELAYED_TYPE: &str = "x-delayed-message";

impl ExchangeDef {
    /// The type as exchange.declare names it.
    pub(crate) fn type_name(&self) -> &'static str {
        if self.delayed {
            DELAYED_TYPE
        } else {
            self.kind.as_str()
        }
    }
}

/// A queue's definition.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueDef {
    pub id: QueueId,
    pub name: ShortStr,
    pub vhost: ShortStr,
    /// The shard that owns the queue's messages and consumers.
    pub shard_id: ShardId,
    pub durable: bool,
    /// The connection an exclusive queue belongs to.
    pub(crate) exclusive_owner: Option<ConnectionId>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    /// What the arguments and the policies in effect mean together
    /// (`Settings::resolve`).
    pub settings: Settings,
    /// The policy in effect.
    pub policy: Option<Arc<PolicyDef>>,
    /// The operator policy in effect.
    pub operator_policy: Option<Arc<PolicyDef>>,
}

/// A binding's destination by name, as queue.bind and exchange.bind name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DestinationName {
    Queue(ShortStr),
    Exchange(ShortStr),
}

/// A metadata change, as broadcast to every replica. Plain data.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaOp {
    ExchangeDeclare {
        vhost: ShortStr,
        name: ShortStr,
        /// The type as the client sent it.
        kind: ShortStr,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    },
    ExchangeDelete {
        vhost: ShortStr,
        name: ShortStr,
        if_unused: bool,
    },
    QueueDeclare {
        vhost: ShortStr,
        /// Never empty: the connection names server-named queues.
        name: ShortStr,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: FieldTable,
        owner: ConnectionId,
        owner_shard: ShardId,
        server_named: bool,
    },
    QueueDelete {
        vhost: ShortStr,
        name: ShortStr,
    },
    Bind(BindingOp),
    Unbind(BindingOp),
    /// Deletes the exclusive queues of a connection that went away.
    ConnectionClosed {
        conn: ConnectionId,
    },
    Access(AccessOp),
    /// Creates a vhost; one that exists is left as it is.
    VhostAdd {
        name: ShortStr,
    },
    /// Deletes a vhost with its exchanges, queues, permissions and policies.
    VhostDelete {
        name: ShortStr,
    },
}

/// A change to users, permissions or policies.
#[derive(Clone, Debug, PartialEq)]
pub enum AccessOp {
    /// Creates a user or replaces its password hash and tags.
    UserPut(User),
    UserDelete {
        name: String,
    },
    PermissionSet(PermissionDef),
    PermissionClear {
        vhost: String,
        user: String,
    },
    PolicySet(PolicyDef),
    PolicyClear {
        kind: PolicyKind,
        vhost: String,
        name: String,
    },
}

/// A binding to add or remove: queue.bind / exchange.bind and their
/// unbinds.
#[derive(Clone, Debug, PartialEq)]
pub struct BindingOp {
    pub vhost: ShortStr,
    pub source: ShortStr,
    pub destination: DestinationName,
    pub routing_key: ShortStr,
    pub arguments: FieldTable,
    /// The requesting connection, for exclusive-queue checks.
    pub conn: ConnectionId,
}

/// What an applied operation changed.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaOutcome {
    ExchangeDeclared {
        def: ExchangeDef,
        created: bool,
    },
    /// Exchanges removed: the one named first (none when it did not exist),
    /// then any auto-deleted because they lost their last binding.
    ExchangeDeleted(Vec<ExchangeDef>),
    QueueDeclared {
        def: QueueDef,
        created: bool,
    },
    /// Queues removed (none when the queue did not exist), and exchanges
    /// auto-deleted because they lost their last binding with them.
    QueueDeleted {
        queues: Vec<QueueDef>,
        exchanges: Vec<ExchangeDef>,
    },
    Bound {
        created: bool,
    },
    Unbound {
        removed: bool,
        exchanges: Vec<ExchangeDef>,
    },
    /// A vhost went, with these queues; its connections must be closed.
    VhostDeleted {
        vhost: ShortStr,
        queues: Vec<QueueDef>,
    },
    /// A user went; its connections must be closed.
    UserDeleted {
        name: String,
    },
    /// A user, vhost or permission was created, changed or removed.
    AccessChanged,
    /// A policy was set or cleared; these queues' settings changed, and
    /// their owners apply them.
    PoliciesApplied {
        queues: Vec<QueueId>,
    },
}

/// One vhost's definitions.
#[derive(Debug)]
struct Vhost {
    exchanges: BTreeMap<ShortStr, ExchangeDef>,
    queues: BTreeMap<ShortStr, QueueId>,
    routing: RoutingTable,
}

/// The replicated metadata. See the module doc.
#[derive(Debug)]
pub struct Catalog {
    shard_count: usize,
    vhosts: BTreeMap<ShortStr, Vhost>,
    queues: BTreeMap<QueueId, QueueDef>,
    next_queue_id: u64,
    users: BTreeMap<String, User>,
    /// By (vhost, user), with the compiled patterns connections share.
    permissions: BTreeMap<(String, String), (PermissionDef, Arc<UserPermission>)>,
    policies: Policies,
}

/// RabbitMQ's default user, created at start.
pub(crate) const GUEST_USER: &str = "guest";
/// A fixed salt for guest's hash, so every replica builds the same one
/// (guest's password is no secret).
const GUEST_SALT: [u8; 4] = *b"warr";

/// RabbitMQ's resource description: "queue 'q' in vhost '/'".
fn resource(kind: &str, vhost: &ShortStr, name: &[u8]) -> String {
    format!(
        "{kind} '{}' in vhost '{vhost}'",
        String::from_utf8_lossy(name)
    )
}

fn default_exchange_refused() -> AmqpError {
    AmqpError::access_refused("operation not permitted on the default exchange")
}

fn no_exchange(vhost: &ShortStr, name: &[u8]) -> AmqpError {
    AmqpError::not_found(format!("no {}", resource("exchange", vhost, name)))
}

fn no_queue(vhost: &ShortStr, name: &[u8]) -> AmqpError {
    AmqpError::not_found(format!("no {}", resource("queue", vhost, name)))
}

/// Refuses to create names in the reserved `amq.` namespace.
fn check_name(kind: &str, name: &ShortStr) -> Result<(), AmqpError> {
    if name.as_bytes().starts_with(b"amq.") {
        return Err(AmqpError::access_refused(format!(
            "{kind} name '{name}' contains reserved prefix 'amq.*'"
        )));
    }
    Ok(())
}

/// RabbitMQ's check for one redeclared field (durable, auto_delete, ...).
fn assert_field_equivalence<T: PartialEq + std::fmt::Display>(
    current: T,
    received: T,
    resource: &str,
    field: &str,
) -> Result<(), AmqpError> {
    if current == received {
        return Ok(());
    }
    Err(AmqpError::precondition_failed(format!(
        "inequivalent arg '{field}' for {resource}: received '{received}' but current is '{current}'"
    )))
}

/// durable and auto_delete, which exchanges and queues both carry and
/// RabbitMQ checks in that order.
fn assert_lifetime_equivalence(
    (current_durable, current_auto_delete): (bool, bool),
    (durable, auto_delete): (bool, bool),
    resource: &str,
) -> Result<(), AmqpError> {
    assert_field_equivalence(current_durable, durable, resource, "durable")?;
    assert_field_equivalence(current_auto_delete, auto_delete, resource, "auto_delete")
}

/// RabbitMQ's `type_class`: integer widths are one class, floats another.
fn type_class(value: &FieldValue) -> &'static str {
    match value {
        FieldValue::I8(_)
        | FieldValue::U8(_)
        | FieldValue::I16(_)
        | FieldValue::U16(_)
        | FieldValue::I32(_)
        | FieldValue::U32(_)
        | FieldValue::I64(_)
        | FieldValue::Decimal(_) => "int",
        FieldValue::F32(_) | FieldValue::F64(_) => "float",
        other => type_name(other),
    }
}

fn describe_argument(value: Option<&FieldValue>) -> String {
    match value {
        None => "none".to_owned(),
        Some(value) => format!(
            "the value '{}' of type '{}'",
            format_value(value),
            type_name(value)
        ),
    }
}

fn is_classic_type(value: Option<&FieldValue>) -> bool {
    matches!(value, Some(FieldValue::LongStr(text)) if text.as_bytes() == b"classic")
}

/// RabbitMQ's `assert_args_equivalence`: only `keys` are compared.
fn assert_args_equivalence(
    current: &FieldTable,
    received: &FieldTable,
    resource: &str,
    keys: &[&str],
) -> Result<(), AmqpError> {
    for &key in keys {
        let (old, new) = (current.get(key), received.get(key));
        let equivalent = match (old, new) {
            (None, None) => true,
            (Some(a), Some(b)) => type_class(a) == type_class(b) && values_equal(a, b),
            // A classic queue need not carry x-queue-type at all.
            (None, other) | (other, None) => key == "x-queue-type" && is_classic_type(other),
        };
        if equivalent {
            continue;
        }
        let (received, current) = match (old, new) {
            // RabbitMQ's assert_field_equivalence: the bare values.
            (Some(a), Some(b)) => (
                format!("'{}'", format_value(b)),
                format!("'{}'", format_value(a)),
            ),
            _ => (describe_argument(new), describe_argument(old)),
        };
        return Err(AmqpError::precondition_failed(format!(
            "inequivalent arg '{key}' for {resource}: received {received} but current is {current}"
        )));
    }
    Ok(())
}

/// Checks that an exchange-name argument (`alternate-exchange`,
/// `x-dead-letter-exchange`) is a long string, as RabbitMQ's `r_arg` does.
fn check_exchange_name_argument(
    arguments: &FieldTable,
    key: &str,
    resource: &str,
) -> Result<(), AmqpError> {
    match arguments.get(key) {
        None | Some(FieldValue::LongStr(_)) => Ok(()),
        Some(other) => Err(AmqpError::precondition_failed(format!(
            "invalid type '{}' for arg '{key}' in {resource}",
            type_name(other)
        ))),
    }
}

fn resource_locked(vhost: &ShortStr, name: &[u8]) -> AmqpError {
    AmqpError::resource_locked(format!(
        "cannot obtain exclusive access to locked {}. It could be originally declared on another \
         connection or the exclusive property value does not match that of the original declaration.",
        resource("queue", vhost, name)
    ))
}

/// RabbitMQ's lax exclusivity check: a non-exclusive queue is open to all.
fn check_exclusive_access(def: &QueueDef, conn: ConnectionId) -> Result<(), AmqpError> {
    match def.exclusive_owner {
        Some(owner) if owner != conn => Err(resource_locked(&def.vhost, def.name.as_bytes())),
        _ => Ok(()),
    }
}

/// FNV-1a, 64 bit: a hash that is the same in every process and version,
/// unlike the randomly seeded map hashers.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for part in parts {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        for &byte in (part.len() as u64).to_le_bytes().iter().chain(part.iter()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    hash
}

/// The shard a named, shared queue lives on.
pub fn queue_shard(vhost: &[u8], name: &[u8], shard_count: usize) -> ShardId {
    let shard_count = shard_count.max(1) as u64;
    (fnv1a(&[vhost, name]) % shard_count) as ShardId
}

/// The routing kind of an exchange.declare's type, and whether it is an
/// x-delayed-message exchange (which routes as its `x-delayed-type`, with
/// the plugin's 406 when that is missing).
fn exchange_type(
    kind: &ShortStr,
    arguments: &FieldTable,
) -> Result<(ExchangeKind, bool), AmqpError> {
    let unknown = |kind: &dyn std::fmt::Display| {
        AmqpError::command_invalid(format!("unknown exchange type '{kind}'"))
    };
    if kind.as_bytes() != DELAYED_TYPE.as_bytes() {
        let routing = ExchangeKind::parse(kind.as_bytes()).ok_or_else(|| unknown(kind))?;
        return Ok((routing, false));
    }
    match arguments.get("x-delayed-type") {
        Some(FieldValue::LongStr(inner)) if inner.as_bytes() != DELAYED_TYPE.as_bytes() => {
            let routing = ExchangeKind::parse(inner.as_bytes())
                .ok_or_else(|| unknown(&String::from_utf8_lossy(inner.as_bytes())))?;
            Ok((routing, true))
        }
        // The plugin's text, typos included.
        _ => Err(AmqpError::precondition_failed(
            "Invalid argument, 'x-delayed-type' must bean existing exchnage type",
        )),
    }
}

impl Vhost {
    fn new(vhost: &ShortStr) -> Vhost {
        let mut this = Vhost {
            exchanges: BTreeMap::new(),
            queues: BTreeMap::new(),
            routing: RoutingTable::new(),
        };
        let predeclared = [
            ("", ExchangeKind::Direct),
            ("amq.direct", ExchangeKind::Direct),
            ("amq.fanout", ExchangeKind::Fanout),
            ("amq.topic", ExchangeKind::Topic),
            ("amq.headers", ExchangeKind::Headers),
            ("amq.match", ExchangeKind::Headers),
        ];
        for (name, kind) in predeclared {
            this.insert_exchange(
                ExchangeDef {
                    vhost: vhost.clone(),
                    name: ShortStr::from(name),
                    kind,
                    delayed: false,
                    durable: true,
                    auto_delete: false,
                    internal: false,
                    arguments: FieldTable::new(),
                    policy: None,
                },
                None,
            );
        }
        this
    }

    /// Adds an exchange, with the alternate exchange in effect (its own
    /// argument, else its policy's).
    fn insert_exchange(&mut self, def: ExchangeDef, alternate_exchange: Option<ShortStr>) {
        let hash_on = match def.kind {
            // Validated on declare.
            ExchangeKind::ConsistentHash => {
                HashOn::from_arguments(&def.arguments).unwrap_or_default()
            }
            _ => HashOn::RoutingKey,
        };
        let routing = ExchangeRouting {
            kind: def.kind,
            alternate_exchange,
            hash_on,
        };
        self.routing.add_exchange(def.name.clone(), routing);
        self.exchanges.insert(def.name.clone(), def);
    }

    fn set_exchange_policy(
        &mut self,
        name: &ShortStr,
        policy: Option<Arc<PolicyDef>>,
        alternate_exchange: Option<ShortStr>,
    ) {
        if let Some(def) = self.exchanges.get_mut(name.as_bytes()) {
            def.policy = policy;
            self.routing
                .set_alternate_exchange(name.as_bytes(), alternate_exchange);
        }
    }

    /// Removes an exchange and its bindings; returns it, then any exchange
    /// auto-deleted in consequence.
    fn remove_exchange(&mut self, name: &[u8]) -> Vec<ExchangeDef> {
        let Some(def) = self.exchanges.remove(name) else {
            return Vec::new();
        };
        let emptied = self.routing.remove_exchange(name);
        let mut removed = vec![def];
        removed.extend(self.auto_delete(emptied));
        removed
    }

    /// Deletes the auto-delete exchanges among `candidates` (sorted names of
    /// exchanges that just lost bindings) that are now unused, and so on
    /// transitively. Processing order is the candidates' order, so the
    /// result is the same on every replica.
    fn auto_delete(&mut self, candidates: Vec<ShortStr>) -> Vec<ExchangeDef> {
        let mut pending = std::collections::VecDeque::from(candidates);
        let mut removed = Vec::new();
        while let Some(name) = pending.pop_front() {
            let unused = self.exchanges.get(name.as_bytes()).is_some_and(|def| {
                def.auto_delete && !self.routing.has_bindings_from(name.as_bytes())
            });
            if !unused {
                continue;
            }
            if let Some(def) = self.exchanges.remove(name.as_bytes()) {
                removed.push(def);
            }
            pending.extend(self.routing.remove_exchange(name.as_bytes()));
        }
        removed
    }
}

impl Catalog {
    /// A catalog with vhost "/" and its predeclared exchanges: "" (the
    /// default exchange), amq.direct, amq.fanout, amq.topic, amq.headers
    /// and amq.match, all durable.
    pub fn new(shard_count: usize) -> Catalog {
        let vhost = ShortStr::from(DEFAULT_VHOST);
        let mut vhosts = BTreeMap::new();
        vhosts.insert(vhost.clone(), Vhost::new(&vhost));
        let mut catalog = Catalog {
            shard_count: shard_count.max(1),
            vhosts,
            queues: BTreeMap::new(),
            next_queue_id: 1,
            users: BTreeMap::new(),
            permissions: BTreeMap::new(),
            policies: Policies::default(),
        };
        catalog.add_guest();
        catalog
    }

    /// guest/guest, administrator, with full permissions on `/`, as
    /// RabbitMQ creates it on first start.
    fn add_guest(&mut self) {
        let guest = User {
            name: GUEST_USER.to_owned(),
            password_hash: PasswordHash::new(GUEST_USER, GUEST_SALT),
            tags: vec!["administrator".to_owned()],
        };
        let full = PermissionDef {
            user: GUEST_USER.to_owned(),
            vhost: DEFAULT_VHOST.to_owned(),
            configure: ".*".to_owned(),
            write: ".*".to_owned(),
            read: ".*".to_owned(),
        };
        let ops = [AccessOp::UserPut(guest), AccessOp::PermissionSet(full)];
        for op in &ops {
            let applied = self.apply_access(op);
            debug_assert!(applied.is_ok(), "guest's definitions are valid");
        }
    }

    fn vhost(&self, vhost: &[u8]) -> Result<&Vhost, AmqpError> {
        self.vhosts.get(vhost).ok_or_else(|| {
            AmqpError::not_found(format!("no vhost '{}'", String::from_utf8_lossy(vhost)))
        })
    }

    fn vhost_mut(&mut self, vhost: &[u8]) -> Result<&mut Vhost, AmqpError> {
        self.vhosts.get_mut(vhost).ok_or_else(|| {
            AmqpError::not_found(format!("no vhost '{}'", String::from_utf8_lossy(vhost)))
        })
    }

    pub fn exchange(&self, vhost: &[u8], name: &[u8]) -> Option<&ExchangeDef> {
        self.vhosts.get(vhost)?.exchanges.get(name)
    }

    pub fn queue(&self, vhost: &[u8], name: &[u8]) -> Option<&QueueDef> {
        let id = self.vhosts.get(vhost)?.queues.get(name)?;
        self.queues.get(id)
    }

    pub(crate) fn queue_by_id(&self, id: QueueId) -> Option<&QueueDef> {
        self.queues.get(&id)
    }

    pub fn routing(&self, vhost: &[u8]) -> Option<&RoutingTable> {
        self.vhosts.get(vhost).map(|v| &v.routing)
    }

    /// Every queue, in id order.
    pub fn queues(&self) -> impl Iterator<Item = &QueueDef> {
        self.queues.values()
    }

    /// Every exchange, by vhost then name.
    pub fn exchanges(&self) -> impl Iterator<Item = &ExchangeDef> {
        self.vhosts.values().flat_map(|v| v.exchanges.values())
    }

    /// The queue, if `conn` may use it (consume, get, purge, delete, bind):
    /// 404 when missing, 405 when exclusive to another connection.
    pub(crate) fn check_queue_access(
        &self,
        vhost: &[u8],
        name: &[u8],
        conn: ConnectionId,
    ) -> Result<&QueueDef, AmqpError> {
        let vhost_name = ShortStr::from_bytes(bytes::Bytes::copy_from_slice(vhost));
        let def = self
            .queue(vhost, name)
            .ok_or_else(|| no_queue(&vhost_name, name))?;
        check_exclusive_access(def, conn)?;
        Ok(def)
    }

    /// The exchange, if a message may be published to it: 404 when missing,
    /// 403 when internal.
    pub(crate) fn exchange_accepts_publish(
        &self,
        vhost: &[u8],
        name: &[u8],
    ) -> Result<&ExchangeDef, AmqpError> {
        // Called on every publish: the error's vhost name is built only
        // when there is an error.
        let def = self.exchange(vhost, name).ok_or_else(|| {
            no_exchange(
                &ShortStr::from_bytes(bytes::Bytes::copy_from_slice(vhost)),
                name,
            )
        })?;
        if def.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal {}",
                resource("exchange", &def.vhost, name)
            )));
        }
        Ok(def)
    }

    /// Applies one operation; on error nothing changed.
    pub fn apply(&mut self, op: &MetaOp) -> Result<MetaOutcome, AmqpError> {
        match op {
            MetaOp::ExchangeDeclare {
                vhost,
                name,
                kind,
                passive,
                durable,
                auto_delete,
                internal,
                arguments,
            } => {
                if *passive {
                    return self.exchange_declare_passive(vhost, name);
                }
                let (kind, delayed) = exchange_type(kind, arguments)?;
                let def = ExchangeDef {
                    vhost: vhost.clone(),
                    name: name.clone(),
                    kind,
                    delayed,
                    durable: *durable,
                    auto_delete: *auto_delete,
                    internal: *internal,
                    arguments: arguments.clone(),
                    policy: None,
                };
                self.exchange_declare(def)
            }
            MetaOp::ExchangeDelete {
                vhost,
                name,
                if_unused,
            } => self.exchange_delete(vhost, name, *if_unused),
            MetaOp::QueueDeclare {
                vhost,
                name,
                passive,
                durable,
                exclusive,
                auto_delete,
                arguments,
                owner,
                owner_shard,
                server_named,
            } => {
                if *passive {
                    return self.queue_declare_passive(vhost, name, *owner);
                }
                if !server_named {
                    check_name("queue", name)?;
                }
                // Exclusive and server-named queues live with their user.
                let shard_id = if *exclusive || *server_named {
                    *owner_shard
                } else {
                    queue_shard(vhost.as_bytes(), name.as_bytes(), self.shard_count)
                };
                let def = QueueDef {
                    id: QueueId(self.next_queue_id),
                    name: name.clone(),
                    vhost: vhost.clone(),
                    shard_id,
                    // RabbitMQ never makes an exclusive queue durable.
                    durable: *durable && !*exclusive,
                    exclusive_owner: exclusive.then_some(*owner),
                    auto_delete: *auto_delete,
                    arguments: arguments.clone(),
                    settings: Settings::default(),
                    policy: None,
                    operator_policy: None,
                };
                self.queue_declare(def)
            }
            MetaOp::QueueDelete { vhost, name } => self.queue_delete(vhost, name),
            MetaOp::Bind(binding) => self.bind(binding),
            MetaOp::Unbind(binding) => self.unbind(binding),
            MetaOp::ConnectionClosed { conn } => Ok(self.connection_closed(*conn)),
            MetaOp::VhostAdd { name } => self.vhost_add(name),
            MetaOp::VhostDelete { name } => self.vhost_delete(name),
            MetaOp::Access(op) => self.apply_access(op),
        }
    }

    fn queue_declare_passive(
        &self,
        vhost: &ShortStr,
        name: &ShortStr,
        owner: ConnectionId,
    ) -> Result<MetaOutcome, AmqpError> {
        let def = self.check_queue_access(vhost.as_bytes(), name.as_bytes(), owner)?;
        Ok(MetaOutcome::QueueDeclared {
            def: def.clone(),
            created: false,
        })
    }

    fn exchange_declare_passive(
        &self,
        vhost: &ShortStr,
        name: &ShortStr,
    ) -> Result<MetaOutcome, AmqpError> {
        if name.is_empty() {
            return Err(default_exchange_refused());
        }
        let def = self
            .vhost(vhost.as_bytes())?
            .exchanges
            .get(name.as_bytes())
            .ok_or_else(|| no_exchange(vhost, name.as_bytes()))?;
        Ok(MetaOutcome::ExchangeDeclared {
            def: def.clone(),
            created: false,
        })
    }

    fn exchange_declare(&mut self, def: ExchangeDef) -> Result<MetaOutcome, AmqpError> {
        if def.name.is_empty() {
            return Err(default_exchange_refused());
        }
        let vhost = self.vhost_mut(def.vhost.as_bytes())?;
        let resource = resource("exchange", &def.vhost, def.name.as_bytes());
        if let Some(current) = vhost.exchanges.get(def.name.as_bytes()) {
            assert_field_equivalence(current.type_name(), def.type_name(), &resource, "type")?;
            assert_lifetime_equivalence(
                (current.durable, current.auto_delete),
                (def.durable, def.auto_delete),
                &resource,
            )?;
            assert_field_equivalence(current.internal, def.internal, &resource, "internal")?;
            assert_args_equivalence(
                &current.arguments,
                &def.arguments,
                &resource,
                &["alternate-exchange"],
            )?;
            return Ok(MetaOutcome::ExchangeDeclared {
                def: current.clone(),
                created: false,
            });
        }
        check_name("exchange", &def.name)?;
        check_exchange_name_argument(&def.arguments, "alternate-exchange", &resource)?;
        if def.kind == ExchangeKind::ConsistentHash {
            HashOn::from_arguments(&def.arguments).map_err(AmqpError::precondition_failed)?;
        }
        let (policy, alternate) = self.exchange_policy(&def);
        let def = ExchangeDef { policy, ..def };
        self.vhost_mut(def.vhost.as_bytes())?
            .insert_exchange(def.clone(), alternate);
        Ok(MetaOutcome::ExchangeDeclared { def, created: true })
    }

    /// The policy in effect for an exchange, and the alternate exchange in
    /// effect: the exchange's own argument, else the policy's.
    fn exchange_policy(&self, def: &ExchangeDef) -> (Option<Arc<PolicyDef>>, Option<ShortStr>) {
        let (vhost, name) = (def.vhost.as_bytes(), def.name.as_bytes());
        let policy = self
            .policies
            .matching(PolicyKind::User, vhost, name, Subject::Exchange);
        let alternate = match def.arguments.get("alternate-exchange") {
            Some(FieldValue::LongStr(own)) => Some(ShortStr::from_bytes(own.bytes().clone())),
            _ => policy.and_then(|p| policy::alternate_exchange(p)),
        };
        (policy.cloned(), alternate)
    }

    /// The policies in effect for a queue: its definition with the user
    /// and operator policy set, and the settings they and its arguments
    /// make together.
    fn with_policies(&self, def: &QueueDef) -> QueueDef {
        let (vhost, name) = (def.vhost.as_bytes(), def.name.as_bytes());
        let matching = |kind| {
            self.policies
                .matching(kind, vhost, name, Subject::Queue)
                .cloned()
        };
        let (policy, operator_policy) =
            (matching(PolicyKind::User), matching(PolicyKind::Operator));
        let effective = policy::effective_definition(policy.as_deref(), operator_policy.as_deref());
        let from_policies = policy::queue_arguments(&effective);
        let resource = resource("queue", &def.vhost, name);
        // The arguments were validated on declare and the policies when
        // set; should they together still fail, the arguments alone decide.
        let settings = Settings::resolve(&def.arguments, Some(&from_policies), &resource)
            .or_else(|_| Settings::from_arguments(&def.arguments, &resource))
            .unwrap_or_else(|_| def.settings.clone());
        QueueDef {
            settings,
            policy,
            operator_policy,
            ..def.clone()
        }
    }

    /// Reapplies a vhost's policies to its queues and exchanges after one
    /// was set or cleared.
    fn reapply_policies(&mut self, vhost: &str) -> MetaOutcome {
        let vhost = vhost.as_bytes();
        let ids: Vec<QueueId> = self
            .queues
            .values()
            .filter(|def| def.vhost.as_bytes() == vhost)
            .map(|def| def.id)
            .collect();
        let mut queues = Vec::new();
        for id in ids {
            let Some(def) = self.queues.get(&id) else {
                continue;
            };
            let updated = self.with_policies(def);
            if updated.settings != def.settings {
                queues.push(id);
            }
            self.queues.insert(id, updated);
        }
        let exchanges: Vec<(ShortStr, Option<Arc<PolicyDef>>, Option<ShortStr>)> = self
            .vhosts
            .get(vhost)
            .into_iter()
            .flat_map(|v| v.exchanges.values())
            .map(|def| {
                let (policy, alternate) = self.exchange_policy(def);
                (def.name.clone(), policy, alternate)
            })
            .collect();
        if let Some(v) = self.vhosts.get_mut(vhost) {
            for (name, policy, alternate) in exchanges {
                v.set_exchange_policy(&name, policy, alternate);
            }
        }
        MetaOutcome::PoliciesApplied { queues }
    }

    fn exchange_delete(
        &mut self,
        vhost_name: &ShortStr,
        name: &ShortStr,
        if_unused: bool,
    ) -> Result<MetaOutcome, AmqpError> {
        if name.is_empty() {
            return Err(default_exchange_refused());
        }
        if name.as_bytes().starts_with(b"amq.") {
            return Err(AmqpError::access_refused(format!(
                "deletion of system {} not allowed",
                resource("exchange", vhost_name, name.as_bytes())
            )));
        }
        let vhost = self.vhost_mut(vhost_name.as_bytes())?;
        if !vhost.exchanges.contains_key(name.as_bytes()) {
            // RabbitMQ 3.x answers delete-ok for a missing exchange.
            return Ok(MetaOutcome::ExchangeDeleted(Vec::new()));
        }
        if if_unused && vhost.routing.has_bindings_from(name.as_bytes()) {
            return Err(AmqpError::precondition_failed(format!(
                "{} in use",
                resource("exchange", vhost_name, name.as_bytes())
            )));
        }
        Ok(MetaOutcome::ExchangeDeleted(
            vhost.remove_exchange(name.as_bytes()),
        ))
    }

    fn queue_declare(&mut self, def: QueueDef) -> Result<MetaOutcome, AmqpError> {
        let vhost = self
            .vhosts
            .get_mut(def.vhost.as_bytes())
            .ok_or_else(|| AmqpError::not_found(format!("no vhost '{}'", def.vhost)))?;
        let resource = resource("queue", &def.vhost, def.name.as_bytes());
        if let Some(current) = vhost
            .queues
            .get(def.name.as_bytes())
            .and_then(|id| self.queues.get(id))
        {
            // Strict: exclusivity itself must match, not just the owner.
            if current.exclusive_owner != def.exclusive_owner {
                return Err(resource_locked(&def.vhost, def.name.as_bytes()));
            }
            assert_lifetime_equivalence(
                (current.durable, current.auto_delete),
                (def.durable, def.auto_delete),
                &resource,
            )?;
            let keys = current.settings.queue_type.equivalence_arguments();
            assert_args_equivalence(&current.arguments, &def.arguments, &resource, keys)?;
            return Ok(MetaOutcome::QueueDeclared {
                def: current.clone(),
                created: false,
            });
        }
        check_exchange_name_argument(&def.arguments, "x-dead-letter-exchange", &resource)?;
        let settings = Settings::from_arguments(&def.arguments, &resource)?;
        if settings.queue_type == QueueType::Quorum {
            let invalid = if def.auto_delete {
                Some("auto-delete")
            } else if def.exclusive_owner.is_some() {
                Some("exclusive-owner")
            } else if !def.durable {
                Some("non-durable")
            } else {
                None
            };
            if let Some(property) = invalid {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid property '{property}' for {resource}"
                )));
            }
        }
        let def = self.with_policies(&QueueDef { settings, ..def });
        let vhost = self.vhost_mut(def.vhost.as_bytes())?;
        vhost.queues.insert(def.name.clone(), def.id);
        vhost.routing.add_queue(def.name.clone(), def.id);
        self.queues.insert(def.id, def.clone());
        self.next_queue_id += 1;
        Ok(MetaOutcome::QueueDeclared { def, created: true })
    }

    fn queue_delete(
        &mut self,
        vhost: &ShortStr,
        name: &ShortStr,
    ) -> Result<MetaOutcome, AmqpError> {
        self.vhost(vhost.as_bytes())?;
        let id = self
            .queue(vhost.as_bytes(), name.as_bytes())
            .map(|def| def.id);
        let (queues, exchanges) = match id {
            Some(id) => self.remove_queues(&[id]),
            None => (Vec::new(), Vec::new()),
        };
        Ok(MetaOutcome::QueueDeleted { queues, exchanges })
    }

    /// Removes queues (in the order given) with their bindings, then the
    /// auto-delete exchanges that lost their last binding.
    fn remove_queues(&mut self, ids: &[QueueId]) -> (Vec<QueueDef>, Vec<ExchangeDef>) {
        let mut queues = Vec::new();
        let mut exchanges = Vec::new();
        for id in ids {
            let Some(def) = self.queues.remove(id) else {
                continue;
            };
            if let Some(vhost) = self.vhosts.get_mut(def.vhost.as_bytes()) {
                vhost.queues.remove(def.name.as_bytes());
                let emptied = vhost.routing.remove_queue(def.name.as_bytes(), def.id);
                exchanges.extend(vhost.auto_delete(emptied));
            }
            queues.push(def);
        }
        (queues, exchanges)
    }

    fn connection_closed(&mut self, conn: ConnectionId) -> MetaOutcome {
        let owned: Vec<QueueId> = self
            .queues
            .values()
            .filter(|def| def.exclusive_owner == Some(conn))
            .map(|def| def.id)
            .collect();
        let (queues, exchanges) = self.remove_queues(&owned);
        MetaOutcome::QueueDeleted { queues, exchanges }
    }

    /// The checks bind and unbind share: not the default exchange, source
    /// and destination exist, an exclusive queue belongs to the requester.
    fn binding_destination(&self, op: &BindingOp) -> Result<Destination, AmqpError> {
        let BindingOp {
            vhost,
            source,
            destination,
            conn,
            ..
        } = op;
        if source.is_empty()
            || matches!(destination, DestinationName::Exchange(name) if name.is_empty())
        {
            return Err(default_exchange_refused());
        }
        let v = self.vhost(vhost.as_bytes())?;
        if !v.exchanges.contains_key(source.as_bytes()) {
            return Err(no_exchange(vhost, source.as_bytes()));
        }
        match destination {
            DestinationName::Queue(name) => {
                let def = self.check_queue_access(vhost.as_bytes(), name.as_bytes(), *conn)?;
                Ok(Destination::Queue(def.id))
            }
            DestinationName::Exchange(name) => {
                if !v.exchanges.contains_key(name.as_bytes()) {
                    return Err(no_exchange(vhost, name.as_bytes()));
                }
                Ok(Destination::Exchange(name.clone()))
            }
        }
    }

    fn bind(&mut self, op: &BindingOp) -> Result<MetaOutcome, AmqpError> {
        let destination = self.binding_destination(op)?;
        let v = self.vhost_mut(op.vhost.as_bytes())?;
        match v.exchanges.get(op.source.as_bytes()).map(|x| x.kind) {
            Some(ExchangeKind::Headers) => {
                validate_binding_arguments(&op.arguments).map_err(AmqpError::precondition_failed)?
            }
            Some(ExchangeKind::ConsistentHash) => {
                binding_weight(op.routing_key.as_bytes())
                    .map_err(AmqpError::precondition_failed)?;
            }
            _ => {}
        }
        let created = v.routing.bind(
            op.source.as_bytes(),
            destination,
            op.routing_key.clone(),
            op.arguments.clone(),
        );
        Ok(MetaOutcome::Bound { created })
    }

    fn vhost_add(&mut self, name: &ShortStr) -> Result<MetaOutcome, AmqpError> {
        check_name_len("vhost", &name.to_str_lossy())?;
        if std::str::from_utf8(name.as_bytes()).is_err() {
            return Err(AmqpError::precondition_failed("vhost name must be UTF-8"));
        }
        self.vhosts
            .entry(name.clone())
            .or_insert_with(|| Vhost::new(name));
        Ok(MetaOutcome::AccessChanged)
    }

    /// Removes the vhost, its queues (the owners drop their messages), its
    /// permissions and its policies.
    fn vhost_delete(&mut self, name: &ShortStr) -> Result<MetaOutcome, AmqpError> {
        let vhost = self.vhost(name.as_bytes())?;
        let ids: Vec<QueueId> = vhost.queues.values().copied().collect();
        let (queues, _) = self.remove_queues(&ids);
        self.vhosts.remove(name.as_bytes());
        let text = name.to_str_lossy();
        self.permissions.retain(|(vhost, _), _| *vhost != text);
        self.policies.remove_vhost(&text);
        Ok(MetaOutcome::VhostDeleted {
            vhost: name.clone(),
            queues,
        })
    }

    /// Every vhost's name, sorted.
    pub(crate) fn vhost_names(&self) -> impl Iterator<Item = &ShortStr> {
        self.vhosts.keys()
    }

    pub(crate) fn has_vhost(&self, name: &[u8]) -> bool {
        self.vhosts.contains_key(name)
    }

    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Every permission, by vhost then user.
    pub fn permissions(&self) -> impl Iterator<Item = &PermissionDef> {
        self.permissions.values().map(|(def, _)| def)
    }

    /// The compiled permission of `user` in `vhost`, which a connection
    /// keeps: None when the user has none there.
    pub(crate) fn user_permission(&self, vhost: &str, user: &str) -> Option<Arc<UserPermission>> {
        let key = (vhost.to_owned(), user.to_owned());
        self.permissions
            .get(&key)
            .map(|(_, compiled)| compiled.clone())
    }

    /// Every policy of `kind`, by vhost then name.
    pub fn policies(&self, kind: PolicyKind) -> impl Iterator<Item = &PolicyDef> {
        self.policies.defs().filter(move |def| def.kind == kind)
    }

    /// Users, permissions and policies; vhosts are [`Catalog::apply`]'s.
    fn apply_access(&mut self, op: &AccessOp) -> Result<MetaOutcome, AmqpError> {
        match op {
            AccessOp::UserPut(user) => {
                check_name_len("user", &user.name)?;
                self.users.insert(user.name.clone(), user.clone());
            }
            AccessOp::UserDelete { name } => {
                if self.users.remove(name).is_none() {
                    return Err(AmqpError::not_found(format!("no user '{name}'")));
                }
                self.permissions.retain(|(_, user), _| user != name);
                return Ok(MetaOutcome::UserDeleted { name: name.clone() });
            }
            AccessOp::PermissionSet(def) => {
                self.check_user_and_vhost(&def.user, &def.vhost)?;
                for pattern in [&def.configure, &def.write, &def.read] {
                    check_pattern_len(pattern)?;
                }
                let compiled = UserPermission::compile(def)?;
                let key = (def.vhost.clone(), def.user.clone());
                self.permissions.insert(key, (def.clone(), compiled));
            }
            AccessOp::PermissionClear { vhost, user } => {
                self.check_user_and_vhost(user, vhost)?;
                self.permissions.remove(&(vhost.clone(), user.clone()));
            }
            AccessOp::PolicySet(def) => {
                check_name_len("policy", &def.name)?;
                check_pattern_len(&def.pattern)?;
                self.vhost(def.vhost.as_bytes())?;
                self.policies.set(def)?;
                return Ok(self.reapply_policies(&def.vhost));
            }
            AccessOp::PolicyClear { kind, vhost, name } => {
                if !self.policies.clear(*kind, vhost, name) {
                    return Err(AmqpError::not_found(format!(
                        "no policy '{name}' in vhost '{vhost}'"
                    )));
                }
                return Ok(self.reapply_policies(vhost));
            }
        }
        Ok(MetaOutcome::AccessChanged)
    }

    fn check_user_and_vhost(&self, user: &str, vhost: &str) -> Result<(), AmqpError> {
        if !self.users.contains_key(user) {
            return Err(AmqpError::not_found(format!("no user '{user}'")));
        }
        self.vhost(vhost.as_bytes()).map(|_| ())
    }

    fn unbind(&mut self, op: &BindingOp) -> Result<MetaOutcome, AmqpError> {
        let destination = match self.binding_destination(op) {
            Ok(destination) => destination,
            // RabbitMQ 3.x: unbinding from or to something that does not
            // exist is unbind-ok, so clients may tear down in any order.
            Err(err) if err.code == crate::protocol::reply_code::NOT_FOUND => {
                return Ok(MetaOutcome::Unbound {
                    removed: false,
                    exchanges: Vec::new(),
                })
            }
            Err(err) => return Err(err),
        };
        let v = self.vhost_mut(op.vhost.as_bytes())?;
        let removed = v.routing.unbind(
            op.source.as_bytes(),
            &destination,
            op.routing_key.as_bytes(),
            &op.arguments,
        );
        let exchanges = if removed {
            v.auto_delete(vec![op.source.clone()])
        } else {
            Vec::new()
        };
        Ok(MetaOutcome::Unbound { removed, exchanges })
    }
}

#[cfg(test)]
mod tests;
