//! Access control, as RabbitMQ's internal auth backend has it: users with
//! salted password hashes and tags, per-(vhost, user) permissions as three
//! regular expressions, and policies.
//!
//! Owns: the definitions and their checks. Like the rest of the catalog it
//! is sans-I/O and deterministic: a password is hashed (with its random
//! salt) by whoever builds the `MetaOp`, never in `apply`, so every replica
//! stores the same hash.
//!
//! Permission regexes are compiled once, when a permission is set, into a
//! shared [`UserPermission`] that connections keep for their lifetime;
//! a check is then a flag test for the usual `.*` and `""`, and a regex
//! search only for other patterns.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use regex::bytes::Regex;
use sha2::{Digest, Sha256, Sha512};

use crate::protocol::error::AmqpError;

/// Longest user name, vhost name, tag list or pattern accepted (RabbitMQ
/// stores names as AMQP short strings).
pub(crate) const NAME_LEN_MAX: usize = 255;
/// Longest permission or policy pattern accepted.
pub(crate) const PATTERN_LEN_MAX: usize = 4096;

/// RabbitMQ's password hashing modules; sha256 is its default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HashingAlgorithm {
    Sha256,
    Sha512,
}

impl HashingAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            HashingAlgorithm::Sha256 => "rabbit_password_hashing_sha256",
            HashingAlgorithm::Sha512 => "rabbit_password_hashing_sha512",
        }
    }

    pub fn parse(name: &str) -> Option<HashingAlgorithm> {
        match name {
            "rabbit_password_hashing_sha256" => Some(HashingAlgorithm::Sha256),
            "rabbit_password_hashing_sha512" => Some(HashingAlgorithm::Sha512),
            _ => None,
        }
    }

    fn digest(self, salt: &[u8], password: &[u8]) -> Vec<u8> {
        match self {
            HashingAlgorithm::Sha256 => Sha256::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize()
                .to_vec(),
            HashingAlgorithm::Sha512 => Sha512::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize()
                .to_vec(),
        }
    }
}

/// RabbitMQ's salted hash: 4 salt bytes, then digest(salt ++ password).
/// Empty means "no password": nobody logs in with one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordHash {
    pub(crate) algorithm: HashingAlgorithm,
    salted_digest: Vec<u8>,
}

const SALT_LEN: usize = 4;

impl PasswordHash {
    pub fn new(password: &str, salt: [u8; SALT_LEN]) -> PasswordHash {
        let algorithm = HashingAlgorithm::Sha256;
        let mut salted_digest = salt.to_vec();
        salted_digest.extend(algorithm.digest(&salt, password.as_bytes()));
        PasswordHash {
            algorithm,
            salted_digest,
        }
    }

    /// A hash as definitions files carry it (base64); None when malformed.
    pub(crate) fn from_base64(text: &str, algorithm: HashingAlgorithm) -> Option<PasswordHash> {
        let salted_digest = BASE64.decode(text).ok()?;
        let digest_len = algorithm.digest(&[], &[]).len();
        if !salted_digest.is_empty() && salted_digest.len() != SALT_LEN + digest_len {
            return None;
        }
        Some(PasswordHash {
            algorithm,
            salted_digest,
        })
    }

    pub(crate) fn to_base64(&self) -> String {
        BASE64.encode(&self.salted_digest)
    }

    pub fn matches(&self, password: &str) -> bool {
        if self.salted_digest.len() < SALT_LEN {
            return false;
        }
        let (salt, digest) = self.salted_digest.split_at(SALT_LEN);
        self.algorithm.digest(salt, password.as_bytes()) == digest
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password_hash: PasswordHash,
    /// As given, in order (RabbitMQ keeps unknown tags too).
    pub tags: Vec<String>,
}

impl User {
    pub(crate) fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// RabbitMQ's `loopback_users` default: these log in from loopback only,
/// over AMQP and over the management API.
pub(crate) const LOOPBACK_USERS: [&str; 1] = [super::GUEST_USER];

/// Whether `user` may log in from a peer that is (or is not) loopback.
pub(crate) fn may_log_in_from(user: &str, peer_is_loopback: bool) -> bool {
    peer_is_loopback || !LOOPBACK_USERS.contains(&user)
}

/// What an operation needs on a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Configure,
    Write,
    Read,
}

/// One compiled permission pattern.
#[derive(Clone, Debug)]
enum Pattern {
    /// `.*` and friends: every name.
    All,
    /// `""`, which RabbitMQ reads as `^$`: no resource has an empty name
    /// (the default exchange is checked as `amq.default`), so nothing.
    Nothing,
    /// Anything else, searched unanchored as Erlang's `re:run` does.
    Regex(Regex),
}

impl Pattern {
    fn compile(text: &str) -> Result<Pattern, AmqpError> {
        match text {
            "" => Ok(Pattern::Nothing),
            ".*" | "^.*" | "^.*$" | ".*$" => Ok(Pattern::All),
            _ => Regex::new(text).map(Pattern::Regex).map_err(|err| {
                AmqpError::precondition_failed(format!("invalid regex '{text}': {err}"))
            }),
        }
    }

    /// Names are matched as bytes: AMQP names need not be UTF-8, and a
    /// publish should not pay for validating one.
    fn allows(&self, name: &[u8]) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Nothing => false,
            Pattern::Regex(regex) => regex.is_match(name),
        }
    }
}

/// A user's permission in one vhost, as set: the three patterns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermissionDef {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// A permission's compiled patterns, shared by the connections that use it.
#[derive(Debug)]
pub(crate) struct UserPermission {
    configure: Pattern,
    write: Pattern,
    read: Pattern,
}

impl UserPermission {
    pub(crate) fn compile(def: &PermissionDef) -> Result<Arc<UserPermission>, AmqpError> {
        Ok(Arc::new(UserPermission {
            configure: Pattern::compile(&def.configure)?,
            write: Pattern::compile(&def.write)?,
            read: Pattern::compile(&def.read)?,
        }))
    }

    /// Whether `access` to a resource named `name` is allowed.
    pub fn allows(&self, access: Access, name: &[u8]) -> bool {
        let pattern = match access {
            Access::Configure => &self.configure,
            Access::Write => &self.write,
            Access::Read => &self.read,
        };
        // The default exchange is the resource 'amq.default' to RabbitMQ.
        let name = if name.is_empty() {
            b"amq.default"
        } else {
            name
        };
        pattern.allows(name)
    }
}

/// RabbitMQ 3.10's refusal, which does not say which access was missing:
/// "access to exchange 'x' in vhost '/' refused for user 'u'".
pub(crate) fn access_refused(kind: &str, name: &[u8], vhost: &str, user: &str) -> AmqpError {
    let name = if name.is_empty() {
        "amq.default".into()
    } else {
        String::from_utf8_lossy(name)
    };
    AmqpError::access_refused(format!(
        "access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'"
    ))
}

/// What a policy applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyTo {
    All,
    Queues,
    Exchanges,
}

impl ApplyTo {
    pub fn name(self) -> &'static str {
        match self {
            ApplyTo::All => "all",
            ApplyTo::Queues => "queues",
            ApplyTo::Exchanges => "exchanges",
        }
    }

    pub fn parse(text: &str) -> Option<ApplyTo> {
        match text {
            "all" => Some(ApplyTo::All),
            "queues" => Some(ApplyTo::Queues),
            "exchanges" => Some(ApplyTo::Exchanges),
            _ => None,
        }
    }
}

/// RabbitMQ's two kinds of policy: a user's (`policy`) and an operator's
/// (`operator_policy`, which caps the limits whatever the user's policy
/// says).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKind {
    User,
    Operator,
}

impl PolicyKind {
    /// The keys a policy of this kind may set, with their values' checks
    /// and the words RabbitMQ's complaint uses for them.
    fn keys(self) -> &'static [(&'static str, PolicyValue, &'static str)] {
        match self {
            PolicyKind::User => &POLICY_KEYS,
            PolicyKind::Operator => &POLICY_KEYS[..OPERATOR_KEY_COUNT],
        }
    }
}

/// A policy as set; `catalog::policy` applies it.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyDef {
    pub kind: PolicyKind,
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    pub apply_to: ApplyTo,
    pub priority: i64,
    /// The definition object, keys validated by [`validate_policy`].
    pub definition: serde_json::Map<String, serde_json::Value>,
}

/// Policy keys warren knows, with the JSON value each needs and how
/// RabbitMQ's complaint names it. The first [`OPERATOR_KEY_COUNT`] are
/// the limits an operator policy may set too (of RabbitMQ 3.10's operator
/// keys, warren lacks max-in-memory-length and -bytes).
const POLICY_KEYS: [(&str, PolicyValue, &str); 10] = [
    ("message-ttl", PolicyValue::NonNegativeInt, "message TTL"),
    ("expires", PolicyValue::PositiveInt, "queue expiry"),
    ("max-length", PolicyValue::NonNegativeInt, "maximum length"),
    (
        "max-length-bytes",
        PolicyValue::NonNegativeInt,
        "maximum length in bytes",
    ),
    (
        "delivery-limit",
        PolicyValue::NonNegativeInt,
        "delivery limit",
    ),
    (
        "overflow",
        PolicyValue::OneOf(&["drop-head", "reject-publish", "reject-publish-dlx"]),
        "overflow value",
    ),
    (
        "dead-letter-exchange",
        PolicyValue::Text,
        "dead letter exchange name",
    ),
    (
        "dead-letter-routing-key",
        PolicyValue::Text,
        "dead letter routing key",
    ),
    (
        "alternate-exchange",
        PolicyValue::Text,
        "alternate exchange name",
    ),
    // Accepted and shown, as RabbitMQ 3.10 does; warren has one queue
    // mode, and keeps bodies as it would anyway.
    (
        "queue-mode",
        PolicyValue::OneOf(&["default", "lazy"]),
        "queue-mode value",
    ),
];

const OPERATOR_KEY_COUNT: usize = 5;

#[derive(Clone, Copy)]
enum PolicyValue {
    NonNegativeInt,
    PositiveInt,
    Text,
    /// One of these strings.
    OneOf(&'static [&'static str]),
}

impl PolicyValue {
    fn accepts(self, value: &serde_json::Value) -> bool {
        match self {
            PolicyValue::NonNegativeInt => value.as_u64().is_some(),
            PolicyValue::PositiveInt => value.as_u64().is_some_and(|n| n > 0),
            PolicyValue::Text => value.is_string(),
            PolicyValue::OneOf(names) => value.as_str().is_some_and(|v| names.contains(&v)),
        }
    }
}

/// A JSON value as RabbitMQ's texts print the Erlang term it became.
fn erlang_term(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => format!("<<\"{text}\">>"),
        other => other.to_string(),
    }
}

/// RabbitMQ's policy validation, with its texts for unknown keys and bad
/// values.
pub(crate) fn validate_policy(def: &PolicyDef) -> Result<(), AmqpError> {
    let failed =
        |detail: String| AmqpError::precondition_failed(format!("Validation failed\n\n{detail}\n"));
    Pattern::compile(&def.pattern)?;
    if def.definition.is_empty() {
        return Err(failed("no policy provided".to_owned()));
    }
    for (key, value) in &def.definition {
        let Some((_, kind, words)) = def.kind.keys().iter().find(|(name, ..)| name == key) else {
            return Err(failed(format!(
                "[{{<<\"{key}\">>,{}}}] are not recognised policy settings",
                erlang_term(value)
            )));
        };
        if !kind.accepts(value) {
            return Err(failed(format!(
                "{} is not a valid {words}",
                erlang_term(value)
            )));
        }
    }
    Ok(())
}

/// Checks a user or vhost name's length.
pub(crate) fn check_name_len(kind: &str, name: &str) -> Result<(), AmqpError> {
    if name.is_empty() || name.len() > NAME_LEN_MAX {
        return Err(AmqpError::precondition_failed(format!(
            "{kind} name must be 1 to {NAME_LEN_MAX} bytes"
        )));
    }
    Ok(())
}

/// Checks a pattern's length.
pub(crate) fn check_pattern_len(pattern: &str) -> Result<(), AmqpError> {
    if pattern.len() > PATTERN_LEN_MAX {
        return Err(AmqpError::precondition_failed(format!(
            "pattern longer than {PATTERN_LEN_MAX} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_exported_by_rabbitmq_verifies() {
        // From `rabbitmqctl export_definitions` on RabbitMQ 3.10, user
        // guest with password guest.
        let hash = PasswordHash::from_base64(
            "ErZCxtR1kbtya9Ns9Wdp4a1ehfyWldERK2StE+QzGNfczYGC",
            HashingAlgorithm::Sha256,
        );
        let hash = hash.expect("well-formed");
        assert!(hash.matches("guest"));
        assert!(!hash.matches("guesT"));
    }

    #[test]
    fn a_new_hash_round_trips_through_base64() {
        let hash = PasswordHash::new("s3cret", [1, 2, 3, 4]);
        let back = PasswordHash::from_base64(&hash.to_base64(), HashingAlgorithm::Sha256);
        assert_eq!(back.as_ref(), Some(&hash));
        assert!(hash.matches("s3cret"));
        assert!(!hash.matches(""));
    }

    #[test]
    fn an_empty_hash_lets_nobody_in() {
        let hash = PasswordHash::from_base64("", HashingAlgorithm::Sha256).expect("empty is valid");
        assert!(!hash.matches(""));
    }

    #[test]
    fn permission_patterns_search_unanchored_and_empty_means_none() {
        let def = PermissionDef {
            user: "u".into(),
            vhost: "/".into(),
            configure: "".into(),
            write: "^amq\\.default$|^x".into(),
            read: "q".into(),
        };
        let permission = UserPermission::compile(&def).expect("valid");
        assert!(!permission.allows(Access::Configure, b"anything"));
        assert!(permission.allows(Access::Write, b""));
        assert!(permission.allows(Access::Write, b"xyz"));
        assert!(!permission.allows(Access::Write, b"yx"));
        assert!(permission.allows(Access::Read, b"aqb"));
    }

    #[test]
    fn guest_logs_in_from_loopback_only_and_others_from_anywhere() {
        assert!(may_log_in_from("guest", true));
        assert!(!may_log_in_from("guest", false));
        assert!(may_log_in_from("ann", false));
    }

    #[test]
    fn names_that_are_not_utf8_are_matched_as_bytes() {
        let def = PermissionDef {
            user: "u".into(),
            vhost: "/".into(),
            configure: "".into(),
            write: "^x".into(),
            read: ".*".into(),
        };
        let permission = UserPermission::compile(&def).expect("valid");
        assert!(!permission.allows(Access::Configure, b"\xff"));
        assert!(permission.allows(Access::Write, b"x\xff"));
        assert!(!permission.allows(Access::Write, b"\xffx"));
    }

    #[test]
    fn a_bad_regex_is_refused() {
        let def = PermissionDef {
            user: "u".into(),
            vhost: "/".into(),
            configure: "(".into(),
            write: ".*".into(),
            read: ".*".into(),
        };
        assert!(UserPermission::compile(&def).is_err());
    }
}
