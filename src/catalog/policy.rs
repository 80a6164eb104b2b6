//! Policies in effect: which policy applies to a queue or an exchange, and
//! what it supplies.
//!
//! Owns: the set policies of every vhost with their compiled patterns, and
//! RabbitMQ's rules for applying them (`rabbit_policy:match`): a policy
//! applies to the queues and exchanges of its vhost whose name its pattern
//! finds (an unanchored search, as Erlang's `re:run`) and its `apply-to`
//! covers; of several, the highest priority wins, and among equal
//! priorities the first by name. User and operator policies are matched
//! apart: a queue may have one of each, and its effective definition merges
//! them as `rabbit_policy` does (for the limits the smaller value wins).
//!
//! The effective definition's queue keys are handed to `queue::Settings`
//! in their `x-` spelling (`Settings::resolve` decides which of argument
//! and policy wins); `alternate-exchange` is read by the catalog for
//! exchanges.
//!
//! Plain data; the catalog reapplies the policies of a vhost whenever one is
//! set or cleared.

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::bytes::Regex;
use serde_json::{Map, Value};

use super::access::{validate_policy, ApplyTo, PolicyDef, PolicyKind};
use crate::protocol::error::AmqpError;
use crate::protocol::types::{FieldTable, FieldValue, LongStr, ShortStr};

/// What a policy is applied to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Subject {
    Queue,
    Exchange,
}

impl Subject {
    fn applies(self, apply_to: ApplyTo) -> bool {
        matches!(
            (self, apply_to),
            (_, ApplyTo::All)
                | (Subject::Queue, ApplyTo::Queues)
                | (Subject::Exchange, ApplyTo::Exchanges)
        )
    }
}

#[derive(Debug)]
struct Policy {
    /// Shared with the queues and exchanges it applies to.
    def: Arc<PolicyDef>,
    /// Unlike a permission's, an empty pattern finds every name.
    pattern: Regex,
}

/// Every vhost's policies of both kinds, by (kind, vhost, name).
#[derive(Debug, Default)]
pub(crate) struct Policies {
    by_key: BTreeMap<(PolicyKind, String, String), Policy>,
}

impl Policies {
    /// Sets (or replaces) a policy after RabbitMQ's validation.
    pub(crate) fn set(&mut self, def: &PolicyDef) -> Result<(), AmqpError> {
        validate_policy(def)?;
        let pattern = Regex::new(&def.pattern).map_err(|err| {
            AmqpError::precondition_failed(format!("invalid regex '{}': {err}", def.pattern))
        })?;
        let key = (def.kind, def.vhost.clone(), def.name.clone());
        let def = Arc::new(def.clone());
        self.by_key.insert(key, Policy { def, pattern });
        Ok(())
    }

    /// Clears a policy; false when there was none.
    pub(crate) fn clear(&mut self, kind: PolicyKind, vhost: &str, name: &str) -> bool {
        self.by_key
            .remove(&(kind, vhost.to_owned(), name.to_owned()))
            .is_some()
    }

    pub(crate) fn remove_vhost(&mut self, vhost: &str) {
        self.by_key.retain(|(_, v, _), _| v != vhost);
    }

    /// Every policy, user policies first, each kind by vhost then name.
    pub(crate) fn defs(&self) -> impl Iterator<Item = &PolicyDef> {
        self.by_key.values().map(|policy| &*policy.def)
    }

    /// The policy of `kind` in effect for the queue or exchange `name` of
    /// `vhost`.
    pub(crate) fn matching(
        &self,
        kind: PolicyKind,
        vhost: &[u8],
        name: &[u8],
        subject: Subject,
    ) -> Option<&Arc<PolicyDef>> {
        let mut best: Option<&Arc<PolicyDef>> = None;
        for policy in self.by_key.values() {
            let def = &policy.def;
            if def.kind != kind
                || def.vhost.as_bytes() != vhost
                || !subject.applies(def.apply_to)
                || !policy.pattern.is_match(name)
            {
                continue;
            }
            // Strictly higher: among equals the first by name stays.
            if best.is_none_or(|b| def.priority > b.priority) {
                best = Some(def);
            }
        }
        best
    }
}

/// The policy keys that are queue settings, with their argument names.
const QUEUE_KEYS: [(&str, &str); 8] = [
    ("message-ttl", "x-message-ttl"),
    ("expires", "x-expires"),
    ("max-length", "x-max-length"),
    ("max-length-bytes", "x-max-length-bytes"),
    ("overflow", "x-overflow"),
    ("dead-letter-exchange", "x-dead-letter-exchange"),
    ("dead-letter-routing-key", "x-dead-letter-routing-key"),
    ("delivery-limit", "x-delivery-limit"),
];

/// The keys for which an operator policy's value caps the user policy's
/// (`merge_policy_value` in rabbit_policies: the smaller wins).
const SMALLER_WINS: [&str; 5] = [
    "expires",
    "message-ttl",
    "max-length",
    "max-length-bytes",
    "delivery-limit",
];

/// What the user policy and the operator policy in effect define together,
/// as RabbitMQ shows it in `effective_policy_definition`: each key of
/// either, and for a key both set, the smaller value of a limit (every
/// operator policy key is one).
pub(crate) fn effective_definition(
    policy: Option<&PolicyDef>,
    operator: Option<&PolicyDef>,
) -> Map<String, Value> {
    let mut merged = policy.map(|p| p.definition.clone()).unwrap_or_default();
    for (key, cap) in operator.into_iter().flat_map(|op| &op.definition) {
        let value = match (merged.get(key).and_then(Value::as_u64), cap.as_u64()) {
            (Some(own), Some(cap)) if SMALLER_WINS.contains(&key.as_str()) => {
                Value::from(own.min(cap))
            }
            _ => cap.clone(),
        };
        merged.insert(key.clone(), value);
    }
    merged
}

/// The queue settings a policy definition supplies, as the arguments that
/// would supply them (values were checked when the policy was set).
pub(crate) fn queue_arguments(definition: &Map<String, Value>) -> FieldTable {
    let mut arguments = FieldTable::new();
    for (key, argument) in QUEUE_KEYS {
        let value = match definition.get(key) {
            Some(Value::Number(n)) => n.as_i64().map(FieldValue::I64),
            Some(Value::String(text)) => Some(FieldValue::LongStr(LongStr::from(text.as_str()))),
            _ => None,
        };
        if let Some(value) = value {
            arguments.insert(argument, value);
        }
    }
    arguments
}

/// The alternate exchange a policy names.
pub(crate) fn alternate_exchange(def: &PolicyDef) -> Option<ShortStr> {
    def.definition
        .get("alternate-exchange")
        .and_then(Value::as_str)
        .filter(|name| name.len() <= ShortStr::MAX_LEN)
        .map(ShortStr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    fn policy(name: &str, pattern: &str, apply_to: ApplyTo, priority: i64) -> PolicyDef {
        PolicyDef {
            kind: PolicyKind::User,
            vhost: "/".to_owned(),
            name: name.to_owned(),
            pattern: pattern.to_owned(),
            apply_to,
            priority,
            definition: definition(serde_json::json!({"max-length": priority.max(0)})),
        }
    }

    fn matching(policies: &Policies, name: &str, subject: Subject) -> Option<String> {
        policies
            .matching(PolicyKind::User, b"/", name.as_bytes(), subject)
            .map(|def| def.name.clone())
    }

    #[test]
    fn the_highest_priority_among_matching_policies_wins() {
        let mut policies = Policies::default();
        for def in [
            policy("b-low", "^orders", ApplyTo::All, 1),
            policy("a-high", "orders", ApplyTo::Queues, 5),
            policy("c-tie", "s$", ApplyTo::Queues, 5),
            policy("exchanges", "", ApplyTo::Exchanges, 9),
        ] {
            policies.set(&def).expect("valid policy");
        }
        let queue = |name| matching(&policies, name, Subject::Queue);
        assert_eq!(queue("orders").as_deref(), Some("a-high"));
        assert_eq!(queue("my-orders-x").as_deref(), Some("a-high"));
        assert_eq!(queue("items").as_deref(), Some("c-tie"));
        assert_eq!(queue("other"), None);
        let exchange = |policies: &Policies, name| matching(policies, name, Subject::Exchange);
        assert_eq!(
            exchange(&policies, "anything").as_deref(),
            Some("exchanges")
        );
        assert!(policies.clear(PolicyKind::User, "/", "exchanges"));
        assert_eq!(exchange(&policies, "orders").as_deref(), Some("b-low"));
        assert!(policies
            .matching(PolicyKind::User, b"other", b"orders", Subject::Queue)
            .is_none());
    }

    #[test]
    fn user_and_operator_policies_match_apart() {
        let mut policies = Policies::default();
        let mut operator = policy("same-name", "orders", ApplyTo::Queues, 0);
        operator.kind = PolicyKind::Operator;
        policies.set(&operator).expect("valid operator policy");
        assert_eq!(matching(&policies, "orders", Subject::Queue), None);
        let found = policies.matching(PolicyKind::Operator, b"/", b"orders", Subject::Queue);
        assert_eq!(found.map(|def| def.kind), Some(PolicyKind::Operator));
        assert!(!policies.clear(PolicyKind::User, "/", "same-name"));
        assert!(policies.clear(PolicyKind::Operator, "/", "same-name"));
    }

    #[test]
    fn an_operator_policy_caps_the_limits_and_adds_its_keys() {
        let mut user = policy("u", ".*", ApplyTo::All, 0);
        user.definition = definition(serde_json::json!({
            "max-length": 50, "expires": 100000, "message-ttl": 10, "queue-mode": "lazy"
        }));
        let mut operator = policy("o", ".*", ApplyTo::Queues, 0);
        operator.kind = PolicyKind::Operator;
        operator.definition = definition(serde_json::json!({
            "max-length": 5, "message-ttl": 1000, "max-length-bytes": 99
        }));
        // As RabbitMQ 3.10 showed for the same two policies.
        assert_eq!(
            Value::Object(effective_definition(Some(&user), Some(&operator))),
            serde_json::json!({
                "max-length": 5, "expires": 100000, "message-ttl": 10,
                "queue-mode": "lazy", "max-length-bytes": 99
            })
        );
        assert_eq!(
            effective_definition(None, Some(&operator)),
            operator.definition
        );
        assert_eq!(effective_definition(Some(&user), None), user.definition);
    }

    #[test]
    fn queue_keys_become_arguments() {
        let mut def = policy("p", ".*", ApplyTo::All, 0);
        def.definition = definition(serde_json::json!({
            "message-ttl": 5, "overflow": "reject-publish", "alternate-exchange": "ae",
            "queue-mode": "lazy"
        }));
        let arguments = queue_arguments(&def.definition);
        assert_eq!(arguments.get("x-message-ttl"), Some(&FieldValue::I64(5)));
        assert_eq!(
            arguments.get("x-overflow"),
            Some(&FieldValue::LongStr(LongStr::from("reject-publish")))
        );
        assert_eq!(arguments.get("alternate-exchange"), None);
        assert_eq!(arguments.get("x-queue-mode"), None, "warren ignores it");
        assert_eq!(alternate_exchange(&def), Some(ShortStr::from("ae")));
    }
}
