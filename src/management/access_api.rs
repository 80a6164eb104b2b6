//! Vhosts, users, permissions, policies and operator policies over HTTP:
//! RabbitMQ's paths, status codes (201 created, 204 changed or deleted, 404
//! missing) and bodies. Every change is a `MetaOp` through the coordinator.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::Value;

use super::routes::{body_json, text, Answer, Done};
use super::server::{Api, Caller, Need};
use super::{views, ApiError};
use crate::catalog::access::{
    ApplyTo, HashingAlgorithm, PasswordHash, PermissionDef, PolicyDef, PolicyKind, User,
};
use crate::catalog::{AccessOp, Catalog, MetaOp};
use crate::protocol::ShortStr;

pub(super) fn routes() -> Router<Api> {
    let router = Router::new()
        .route("/api/vhosts", get(vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(vhost).put(vhost_put).delete(vhost_delete),
        )
        .route("/api/users", get(users))
        .route(
            "/api/users/{user}",
            get(user).put(user_put).delete(user_delete),
        )
        .route("/api/permissions", get(permissions))
        .route("/api/vhosts/{vhost}/permissions", get(vhost_permissions))
        .route("/api/users/{user}/permissions", get(user_permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(permission)
                .put(permission_put)
                .delete(permission_delete),
        );
    let router = policy_routes(router, "/api/policies", PolicyKind::User);
    policy_routes(router, "/api/operator-policies", PolicyKind::Operator)
}

/// Runs `f` on shard 0's catalog replica.
pub(super) async fn read_catalog<R: Send + 'static>(
    api: &Api,
    f: impl FnOnce(&Catalog) -> R + Send + 'static,
) -> Result<R, ApiError> {
    Ok(api
        .bridge
        .on_shard(0, move |shard| f(&shard.catalog.borrow()))
        .await?)
}

/// Applies a change everywhere; 201 when `created`, else 204.
pub(super) async fn change(api: &Api, op: MetaOp, created: bool) -> Done {
    api.bridge.meta(op).await??;
    Ok(if created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    })
}

async fn vhosts(State(api): State<Api>, headers: HeaderMap) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    let names = read_catalog(&api, |catalog| {
        catalog
            .vhost_names()
            .map(|name| name.to_str_lossy().into_owned())
            .collect::<Vec<_>>()
    })
    .await?;
    let list = names
        .iter()
        .filter(|name| caller.sees_vhost(name))
        .map(|name| views::vhost(name))
        .collect();
    Ok(Json(Value::Array(list)))
}

async fn vhost(State(api): State<Api>, headers: HeaderMap, Path(name): Path<String>) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&name)?;
    let key = name.clone();
    let exists = read_catalog(&api, move |catalog| catalog.has_vhost(key.as_bytes())).await?;
    if !exists {
        return Err(ApiError::not_found());
    }
    Ok(Json(views::vhost(&name)))
}

/// Creates a vhost; as RabbitMQ's management plugin does, the user who
/// created it gets full permissions there.
async fn vhost_put(State(api): State<Api>, headers: HeaderMap, Path(name): Path<String>) -> Done {
    let caller = api.authorize(&headers, Need::Administrator).await?;
    let key = name.clone();
    let exists = read_catalog(&api, move |catalog| catalog.has_vhost(key.as_bytes())).await?;
    let op = MetaOp::VhostAdd {
        name: ShortStr::from(name.as_str()),
    };
    let done = change(&api, op, !exists).await?;
    if !exists && !caller.operator {
        let full = PermissionDef {
            user: caller.name,
            vhost: name,
            configure: ".*".to_owned(),
            write: ".*".to_owned(),
            read: ".*".to_owned(),
        };
        change(&api, MetaOp::Access(AccessOp::PermissionSet(full)), false).await?;
    }
    Ok(done)
}

async fn vhost_delete(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Done {
    api.authorize(&headers, Need::Administrator).await?;
    let op = MetaOp::VhostDelete {
        name: ShortStr::from(name),
    };
    change(&api, op, false).await
}

async fn users(State(api): State<Api>, headers: HeaderMap) -> Answer {
    api.authorize(&headers, Need::Administrator).await?;
    let list = read_catalog(&api, |catalog| {
        catalog.users().map(views::user).collect::<Vec<_>>()
    })
    .await?;
    Ok(Json(Value::Array(list)))
}

async fn user(State(api): State<Api>, headers: HeaderMap, Path(name): Path<String>) -> Answer {
    api.authorize(&headers, Need::Administrator).await?;
    read_catalog(&api, move |catalog| catalog.user(&name).map(views::user))
        .await?
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

async fn user_put(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Done {
    api.authorize(&headers, Need::Administrator).await?;
    let user = user_from_json(&name, &body_json(&body)?)?;
    let key = name.clone();
    let exists = read_catalog(&api, move |catalog| catalog.user(&key).is_some()).await?;
    change(&api, MetaOp::Access(AccessOp::UserPut(user)), !exists).await
}

/// A user from RabbitMQ's JSON: `password` (hashed here, with a random
/// salt) or `password_hash` with `hashing_algorithm`; `tags` as a
/// comma-separated string or a list.
pub(super) fn user_from_json(name: &str, body: &Value) -> Result<User, ApiError> {
    let password_hash = match (body.get("password"), body.get("password_hash")) {
        (Some(Value::String(password)), _) => PasswordHash::new(password, random_salt()?),
        (_, Some(Value::String(hash))) => {
            let algorithm_name = text(body, "hashing_algorithm", HashingAlgorithm::Sha256.name());
            let algorithm = HashingAlgorithm::parse(algorithm_name).ok_or_else(|| {
                ApiError::bad_request(format!("unknown hashing algorithm {algorithm_name}"))
            })?;
            PasswordHash::from_base64(hash, algorithm)
                .ok_or_else(|| ApiError::bad_request("invalid password_hash"))?
        }
        _ => {
            return Err(ApiError::bad_request(
                "key_missing: password or password_hash",
            ))
        }
    };
    let tags = match body.get("tags") {
        Some(Value::String(tags)) => tags
            .split(',')
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(tags)) => tags
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    Ok(User {
        name: name.to_owned(),
        password_hash,
        tags,
    })
}

fn random_salt() -> Result<[u8; 4], ApiError> {
    let mut salt = [0u8; 4];
    getrandom::getrandom(&mut salt).map_err(|_| ApiError::bad_request("no randomness"))?;
    Ok(salt)
}

async fn user_delete(State(api): State<Api>, headers: HeaderMap, Path(name): Path<String>) -> Done {
    api.authorize(&headers, Need::Administrator).await?;
    change(&api, MetaOp::Access(AccessOp::UserDelete { name }), false).await
}

async fn permissions(State(api): State<Api>, headers: HeaderMap) -> Answer {
    api.authorize(&headers, Need::Administrator).await?;
    let list = read_catalog(&api, |catalog| {
        catalog
            .permissions()
            .map(views::permission)
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(Json(Value::Array(list)))
}

/// `/api/vhosts/{v}/permissions`: 404 for a missing vhost.
async fn vhost_permissions(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> Answer {
    api.authorize(&headers, Need::Administrator).await?;
    read_catalog(&api, move |catalog| {
        catalog.has_vhost(vhost.as_bytes()).then(|| {
            let list = catalog.permissions().filter(|p| p.vhost == vhost);
            Value::Array(list.map(views::permission).collect())
        })
    })
    .await?
    .map(Json)
    .ok_or_else(ApiError::not_found)
}

/// `/api/users/{u}/permissions`: 404 for a missing user.
async fn user_permissions(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Answer {
    api.authorize(&headers, Need::Administrator).await?;
    read_catalog(&api, move |catalog| {
        catalog.user(&user).is_some().then(|| {
            let list = catalog.permissions().filter(|p| p.user == user);
            Value::Array(list.map(views::permission).collect())
        })
    })
    .await?
    .map(Json)
    .ok_or_else(ApiError::not_found)
}

async fn permission(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, user)): Path<(String, String)>,
) -> Answer {
    api.authorize(&headers, Need::Administrator).await?;
    read_catalog(&api, move |catalog| {
        catalog
            .permissions()
            .find(|p| p.vhost == vhost && p.user == user)
            .map(views::permission)
    })
    .await?
    .map(Json)
    .ok_or_else(ApiError::not_found)
}

async fn permission_put(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> Done {
    api.authorize(&headers, Need::Administrator).await?;
    let body = body_json(&body)?;
    let def = permission_from_json(vhost, user, &body);
    let (v, u) = (def.vhost.clone(), def.user.clone());
    let state = read_catalog(&api, move |catalog| {
        let known = catalog.user(&u).is_some() && catalog.has_vhost(v.as_bytes());
        (known, catalog.user_permission(&v, &u).is_some())
    })
    .await?;
    if !state.0 {
        return Err(ApiError::bad_request("vhost_or_user_not_found"));
    }
    change(&api, MetaOp::Access(AccessOp::PermissionSet(def)), !state.1).await
}

pub(super) fn permission_from_json(vhost: String, user: String, body: &Value) -> PermissionDef {
    PermissionDef {
        user,
        vhost,
        configure: text(body, "configure", "").to_owned(),
        write: text(body, "write", "").to_owned(),
        read: text(body, "read", "").to_owned(),
    }
}

async fn permission_delete(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, user)): Path<(String, String)>,
) -> Done {
    api.authorize(&headers, Need::Administrator).await?;
    let (v, u) = (vhost.clone(), user.clone());
    let exists = read_catalog(&api, move |catalog| {
        catalog.user_permission(&v, &u).is_some()
    })
    .await?;
    if !exists {
        return Err(ApiError::not_found());
    }
    change(
        &api,
        MetaOp::Access(AccessOp::PermissionClear { vhost, user }),
        false,
    )
    .await
}

/// The paths of policies of `kind` under `base` (`/api/policies` or
/// `/api/operator-policies`).
fn policy_routes(router: Router<Api>, base: &str, kind: PolicyKind) -> Router<Api> {
    router
        .route(
            base,
            get(move |State(api): State<Api>, headers: HeaderMap| async move {
                let caller = api.authorize(&headers, Need::Management).await?;
                list_policies(&api, caller, kind, None).await
            }),
        )
        .route(
            &format!("{base}/{{vhost}}"),
            get(
                move |State(api): State<Api>, headers: HeaderMap, Path(vhost): Path<String>| async move {
                    let caller = api.authorize_in(&headers, Need::Management, &vhost).await?;
                    list_policies(&api, caller, kind, Some(vhost)).await
                },
            ),
        )
        .route(
            &format!("{base}/{{vhost}}/{{name}}"),
            get(move |state, headers, path| policy(state, headers, path, kind))
                .put(move |state, headers, path, body| policy_put(state, headers, path, body, kind))
                .delete(move |state, headers, path| policy_delete(state, headers, path, kind)),
        )
}

/// Who may read one policy, and set or clear one: RabbitMQ lets a
/// policymaker change user policies, and only an administrator touch an
/// operator policy (listing them needs only management).
fn policy_need(kind: PolicyKind, change: bool) -> Need {
    match (kind, change) {
        (PolicyKind::Operator, _) => Need::Administrator,
        (PolicyKind::User, true) => Need::Policymaker,
        (PolicyKind::User, false) => Need::Management,
    }
}

async fn list_policies(
    api: &Api,
    caller: Caller,
    kind: PolicyKind,
    vhost: Option<String>,
) -> Answer {
    let list = read_catalog(api, move |catalog| {
        catalog
            .policies(kind)
            .filter(|p| vhost.as_ref().is_none_or(|v| *v == p.vhost))
            .filter(|p| caller.sees_vhost(&p.vhost))
            .map(views::policy)
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(Json(Value::Array(list)))
}

async fn policy(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    kind: PolicyKind,
) -> Answer {
    api.authorize_in(&headers, policy_need(kind, false), &vhost)
        .await?;
    read_catalog(&api, move |catalog| {
        catalog
            .policies(kind)
            .find(|p| p.vhost == vhost && p.name == name)
            .map(views::policy)
    })
    .await?
    .map(Json)
    .ok_or_else(ApiError::not_found)
}

async fn policy_put(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
    kind: PolicyKind,
) -> Done {
    api.authorize_in(&headers, policy_need(kind, true), &vhost)
        .await?;
    let def = policy_from_json(kind, vhost, name, &body_json(&body)?)?;
    let (v, n) = (def.vhost.clone(), def.name.clone());
    let exists = read_catalog(&api, move |catalog| {
        catalog.policies(kind).any(|p| p.vhost == v && p.name == n)
    })
    .await?;
    change(&api, MetaOp::Access(AccessOp::PolicySet(def)), !exists).await
}

/// A policy from RabbitMQ's JSON; `priority` may be a number or a string
/// (rabbitmqadmin sends either).
pub(super) fn policy_from_json(
    kind: PolicyKind,
    vhost: String,
    name: String,
    body: &Value,
) -> Result<PolicyDef, ApiError> {
    let apply_to = text(body, "apply-to", "all");
    let apply_to = ApplyTo::parse(apply_to)
        .ok_or_else(|| ApiError::bad_request(format!("unknown apply-to '{apply_to}'")))?;
    let priority = match body.get("priority") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| ApiError::bad_request("priority must be an integer"))?,
        Some(_) => return Err(ApiError::bad_request("priority must be an integer")),
    };
    let definition = match body.get("definition") {
        Some(Value::Object(map)) => map.clone(),
        _ => return Err(ApiError::bad_request("key_missing: definition")),
    };
    Ok(PolicyDef {
        kind,
        vhost,
        name,
        pattern: text(body, "pattern", "").to_owned(),
        apply_to,
        priority,
        definition,
    })
}

async fn policy_delete(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    kind: PolicyKind,
) -> Done {
    api.authorize_in(&headers, policy_need(kind, true), &vhost)
        .await?;
    change(
        &api,
        MetaOp::Access(AccessOp::PolicyClear { kind, vhost, name }),
        false,
    )
    .await
}
