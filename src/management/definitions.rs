//! `/api/definitions`: export and import in RabbitMQ's format, so a file
//! exported from RabbitMQ imports into warren (users keep their password
//! hashes and log in) and the other way round.
//!
//! Import applies users, vhosts, permissions, policies, exchanges, queues,
//! then bindings, each as an ordinary `MetaOp`; the first refusal stops it
//! with 400 and RabbitMQ's reason text.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

use super::access_api::{permission_from_json, policy_from_json, read_catalog, user_from_json};
use super::resources::arguments as item_arguments;
use super::routes::{body_json, flag, text, Answer, Done};
use super::server::{Api, Need};
use super::views;
use super::ApiError;
use crate::catalog::access::PolicyKind;
use crate::catalog::{AccessOp, BindingOp, Catalog, DestinationName, MetaOp};
use crate::ids::MANAGEMENT_CONNECTION;
use crate::protocol::ShortStr;

pub(super) async fn export(State(api): State<Api>, headers: HeaderMap) -> Answer {
    api.authorize(&headers, Need::Administrator).await?;
    read_catalog(&api, export_catalog).await.map(Json)
}

fn export_catalog(catalog: &Catalog) -> Value {
    let queues: Vec<Value> = catalog
        .queues()
        .filter(|q| q.exclusive_owner.is_none())
        .map(|q| {
            json!({
                "name": q.name.to_str_lossy(), "vhost": q.vhost.to_str_lossy(),
                "durable": q.durable, "auto_delete": q.auto_delete,
                "arguments": views::field_table(&q.arguments),
            })
        })
        .collect();
    let exchanges: Vec<Value> = catalog
        .exchanges()
        .filter(|x| !x.name.is_empty() && !x.name.as_bytes().starts_with(b"amq."))
        .map(|x| {
            let mut shown = views::exchange(x);
            if let Value::Object(map) = &mut shown {
                map.remove("user_who_performed_action");
                map.remove("policy");
            }
            shown
        })
        .collect();
    let mut bindings = Vec::new();
    for vhost in catalog.vhost_names() {
        let v = vhost.to_str_lossy();
        let Some(table) = catalog.routing(vhost.as_bytes()) else {
            continue;
        };
        for binding in table.bindings() {
            if let Some(Value::Object(mut map)) = views::binding(catalog, &v, &binding) {
                map.remove("properties_key");
                bindings.push(Value::Object(map));
            }
        }
    }
    json!({
        "rabbit_version": "3.10.8",
        "rabbitmq_version": "3.10.8",
        "product_name": "warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "users": catalog.users().map(views::user).collect::<Vec<_>>(),
        "vhosts": catalog.vhost_names().map(|v| json!({"name": v.to_str_lossy()})).collect::<Vec<_>>(),
        "permissions": catalog.permissions().map(views::permission).collect::<Vec<_>>(),
        "topic_permissions": [],
        "parameters": catalog.policies(PolicyKind::Operator).map(views::operator_policy_parameter).collect::<Vec<_>>(),
        "global_parameters": [],
        "policies": catalog.policies(PolicyKind::User).map(views::policy).collect::<Vec<_>>(),
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })
}

/// The sections a vhost's definitions file has; RabbitMQ drops the vhost
/// from its queues, exchanges and bindings, but not from its parameters
/// and policies.
const VHOST_SECTIONS: [&str; 5] = ["parameters", "policies", "queues", "exchanges", "bindings"];

/// Whether a vhost's definitions file names the vhost in `section`'s items.
fn keeps_vhost(section: &str) -> bool {
    matches!(section, "parameters" | "policies")
}

/// `GET /api/definitions/{vhost}`: one vhost's objects, without users,
/// vhosts or permissions, as RabbitMQ exports them.
pub(super) async fn export_vhost(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> Answer {
    api.authorize(&headers, Need::Administrator).await?;
    let key = vhost.clone();
    let all = read_catalog(&api, move |catalog| {
        catalog
            .has_vhost(key.as_bytes())
            .then(|| export_catalog(catalog))
    })
    .await?
    .ok_or_else(|| ApiError::bad_request("vhost_not_found"))?;
    let mut answer = json!({"rabbit_version": all["rabbit_version"]});
    for section in VHOST_SECTIONS {
        let items: Vec<Value> = all[section]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|item| item["vhost"] == vhost.as_str())
            .map(|item| {
                let mut item = item.clone();
                if let (Value::Object(map), false) = (&mut item, keeps_vhost(section)) {
                    map.remove("vhost");
                }
                item
            })
            .collect();
        answer[section] = Value::Array(items);
    }
    Ok(Json(answer))
}

/// `POST /api/definitions/{vhost}`: a vhost's definitions, applied there.
pub(super) async fn import_vhost(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(vhost): Path<String>,
    body: Bytes,
) -> Done {
    api.authorize(&headers, Need::Administrator).await?;
    let definitions = body_json(&body)?;
    let key = vhost.clone();
    if !read_catalog(&api, move |c| c.has_vhost(key.as_bytes())).await? {
        return Err(ApiError::bad_request("vhost_not_found"));
    }
    let mut scoped = json!({});
    for section in VHOST_SECTIONS {
        let items: Vec<Value> = definitions[section]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| {
                let mut item = item.clone();
                item["vhost"] = Value::from(vhost.as_str());
                item
            })
            .collect();
        scoped[section] = Value::Array(items);
    }
    for op in import_ops(&scoped)? {
        api.bridge.meta(op).await??;
    }
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn import(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Done {
    api.authorize(&headers, Need::Administrator).await?;
    let definitions = body_json(&body)?;
    for op in import_ops(&definitions)? {
        api.bridge.meta(op).await??;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The changes a definitions file asks for, in dependency order.
fn import_ops(definitions: &Value) -> Result<Vec<MetaOp>, ApiError> {
    let section = |name: &str| -> Vec<Value> {
        definitions
            .get(name)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let field = |item: &Value, key: &str| text(item, key, "").to_owned();
    let mut ops = Vec::new();
    for user in section("users") {
        let user = user_from_json(&field(&user, "name"), &user)?;
        ops.push(MetaOp::Access(AccessOp::UserPut(user)));
    }
    for vhost in section("vhosts") {
        let name = ShortStr::from(field(&vhost, "name"));
        ops.push(MetaOp::VhostAdd { name });
    }
    for p in section("permissions") {
        let def = permission_from_json(field(&p, "vhost"), field(&p, "user"), &p);
        ops.push(MetaOp::Access(AccessOp::PermissionSet(def)));
    }
    for p in section("policies") {
        let def = policy_from_json(PolicyKind::User, field(&p, "vhost"), field(&p, "name"), &p)?;
        ops.push(MetaOp::Access(AccessOp::PolicySet(def)));
    }
    // Of RabbitMQ's runtime parameters warren knows operator policies.
    for p in section("parameters") {
        if p["component"] != "operator_policy" {
            continue;
        }
        let (vhost, name) = (field(&p, "vhost"), field(&p, "name"));
        let def = policy_from_json(PolicyKind::Operator, vhost, name, &p["value"])?;
        ops.push(MetaOp::Access(AccessOp::PolicySet(def)));
    }
    for x in section("exchanges") {
        ops.push(MetaOp::ExchangeDeclare {
            vhost: ShortStr::from(field(&x, "vhost")),
            name: ShortStr::from(field(&x, "name")),
            kind: ShortStr::from(field(&x, "type")),
            passive: false,
            durable: flag(&x, "durable", true)?,
            auto_delete: flag(&x, "auto_delete", false)?,
            internal: flag(&x, "internal", false)?,
            arguments: item_arguments(&x)?,
        });
    }
    for q in section("queues") {
        ops.push(MetaOp::QueueDeclare {
            vhost: ShortStr::from(field(&q, "vhost")),
            name: ShortStr::from(field(&q, "name")),
            passive: false,
            durable: flag(&q, "durable", true)?,
            exclusive: false,
            auto_delete: flag(&q, "auto_delete", false)?,
            arguments: item_arguments(&q)?,
            owner: MANAGEMENT_CONNECTION,
            owner_shard: 0,
            server_named: false,
        });
    }
    for b in section("bindings") {
        let name = ShortStr::from(field(&b, "destination"));
        let destination = match text(&b, "destination_type", "queue") {
            "exchange" => DestinationName::Exchange(name),
            _ => DestinationName::Queue(name),
        };
        ops.push(MetaOp::Bind(BindingOp {
            vhost: ShortStr::from(field(&b, "vhost")),
            source: ShortStr::from(field(&b, "source")),
            destination,
            routing_key: ShortStr::from(field(&b, "routing_key")),
            arguments: item_arguments(&b)?,
            conn: MANAGEMENT_CONNECTION,
        }));
    }
    Ok(ops)
}
