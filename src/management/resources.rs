//! Exchanges, queues, bindings, messages, connections, channels and
//! consumers over HTTP, with RabbitMQ's paths, status codes and JSON.
//!
//! Listings join the catalog (shard 0's replica) with figures the owning
//! shards compute on request; changes are `MetaOp`s through the
//! coordinator, checked against the caller's permissions as AMQP would.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};

use super::access_api::{change, read_catalog};
use super::messages::{decode_payload, encode_payload, encode_properties, properties_json};
use super::rates::{message_stats, Rates};
use super::routes::{body_json, flag, query_flag, text, Answer, Done};
use super::server::{Api, Caller, Need};
use super::views::{self, to_field_table, QueueFigures, NODE_NAME};
use super::ApiError;
use crate::catalog::access::Access;
use crate::catalog::{BindingOp, Catalog, DestinationName, MetaOp, QueueDef};
use crate::connection::ConnectionInfo;
use crate::ids::{QueueId, MANAGEMENT_CONNECTION};
use crate::protocol::ShortStr;
use crate::queue::QueueTotals;

/// Most messages one get request takes.
const GET_COUNT_MAX: usize = 10_000;

pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/api/exchanges", get(exchanges))
        .route("/api/exchanges/{vhost}", get(exchanges_in))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(exchange).put(exchange_put).delete(exchange_delete),
        )
        .route("/api/exchanges/{vhost}/{name}/publish", post(publish))
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/{side}",
            get(exchange_bindings),
        )
        .route("/api/queues", get(queues))
        .route("/api/queues/{vhost}", get(queues_in))
        .route(
            "/api/queues/{vhost}/{name}",
            get(queue).put(queue_put).delete(queue_delete),
        )
        .route("/api/queues/{vhost}/{name}/get", post(queue_get))
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(queue_purge),
        )
        .route("/api/queues/{vhost}/{name}/bindings", get(queue_bindings))
        .route("/api/bindings", get(bindings))
        .route("/api/bindings/{vhost}", get(bindings_in))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(bindings_between).post(binding_create),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(binding).delete(binding_delete),
        )
        .route("/api/connections", get(connections))
        .route(
            "/api/connections/{name}",
            get(connection).delete(connection_close),
        )
        .route("/api/channels", get(channels))
        .route("/api/consumers", get(consumers))
}

/// 401 unless the caller (a user, not the operator token) has `access` to
/// the named resource, as AMQP would check it.
async fn check_permission(
    api: &Api,
    caller: &Caller,
    vhost: &str,
    access: Access,
    name: &str,
) -> Result<(), ApiError> {
    if caller.operator {
        return Ok(());
    }
    let (v, u, n) = (vhost.to_owned(), caller.name.clone(), name.to_owned());
    let allowed = read_catalog(api, move |catalog| {
        catalog
            .user_permission(&v, &u)
            .is_some_and(|p| p.allows(access, n.as_bytes()))
    })
    .await?;
    if allowed {
        return Ok(());
    }
    Err(ApiError::unauthorized("not_authorised", "Access refused."))
}

/// Every queue's figures, from the shards that own them.
async fn queue_figures(api: &Api) -> Result<HashMap<QueueId, QueueFigures>, ApiError> {
    let per_shard = api
        .bridge
        .on_every_shard(|shard| shard.queue_samples())
        .await?;
    let now = std::time::Instant::now();
    let mut book = api
        .rates
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    let figures: HashMap<QueueId, QueueFigures> = per_shard
        .into_iter()
        .flatten()
        .map(|sample| {
            let figures = QueueFigures {
                messages_ready: u64::from(sample.ready),
                messages_unacknowledged: u64::from(sample.unacked),
                consumers: u64::from(sample.consumers),
                totals: sample.totals,
                rates: book.observe(sample.id, sample.totals, now),
            };
            (sample.id, figures)
        })
        .collect();
    book.retain(|queue| figures.contains_key(queue));
    Ok(figures)
}

/// Queue totals and object counts for the overview.
pub(super) async fn totals(api: &Api, caller: &Caller) -> Result<Value, ApiError> {
    let figures = queue_figures(api).await?;
    let connections = connection_infos(api).await?;
    let caller = caller.clone();
    let (queues, exchanges, ready, unacked, consumers, stats) = read_catalog(api, move |catalog| {
        let visible: Vec<&QueueDef> = catalog
            .queues()
            .filter(|q| caller.sees_vhost(&q.vhost.to_str_lossy()))
            .collect();
        let shown: Vec<&QueueFigures> = visible.iter().filter_map(|q| figures.get(&q.id)).collect();
        let stats = overall_stats(&shown);
        let sum = |f: fn(&QueueFigures) -> u64| -> u64 {
            visible
                .iter()
                .filter_map(|q| figures.get(&q.id))
                .map(f)
                .sum()
        };
        (
            visible.len(),
            catalog
                .exchanges()
                .filter(|x| caller.sees_vhost(&x.vhost.to_str_lossy()))
                .count(),
            sum(|f| f.messages_ready),
            sum(|f| f.messages_unacknowledged),
            sum(|f| f.consumers),
            stats,
        )
    })
    .await?;
    let channels: usize = connections.iter().map(|c| c.channels).sum();
    Ok(json!({
        "queue_totals": {"messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked},
        "object_totals": {"connections": connections.len(), "channels": channels, "exchanges": exchanges, "queues": queues, "consumers": consumers},
        "message_stats": stats,
    }))
}

/// The overview's `message_stats`: the sums over the queues shown.
fn overall_stats(queues: &[&QueueFigures]) -> Value {
    let mut totals = QueueTotals::default();
    let mut rates = Rates::default();
    for figures in queues {
        totals.published += figures.totals.published;
        totals.delivered += figures.totals.delivered;
        totals.acked += figures.totals.acked;
        rates.publish += figures.rates.publish;
        rates.deliver_get += figures.rates.deliver_get;
        rates.ack += figures.rates.ack;
    }
    message_stats(totals, rates)
}

async fn exchanges(State(api): State<Api>, headers: HeaderMap) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    list_exchanges(&api, caller, None).await
}

async fn exchanges_in(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&vhost)?;
    list_exchanges(&api, caller, Some(vhost)).await
}

async fn list_exchanges(api: &Api, caller: Caller, vhost: Option<String>) -> Answer {
    let list = read_catalog(api, move |catalog| {
        if vhost
            .as_ref()
            .is_some_and(|v| !catalog.has_vhost(v.as_bytes()))
        {
            return None;
        }
        Some(
            catalog
                .exchanges()
                .filter(|x| in_scope(&caller, vhost.as_deref(), &x.vhost))
                .map(views::exchange)
                .collect::<Vec<_>>(),
        )
    })
    .await?
    .ok_or_else(ApiError::not_found)?;
    Ok(Json(Value::Array(list)))
}

fn in_scope(caller: &Caller, vhost: Option<&str>, of: &ShortStr) -> bool {
    let of = of.to_str_lossy();
    caller.sees_vhost(&of) && vhost.is_none_or(|v| v == of)
}

/// "amq.default" names the default exchange in the API's paths.
fn exchange_name(name: &str) -> ShortStr {
    ShortStr::from(if name == "amq.default" { "" } else { name })
}

async fn exchange(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&vhost)?;
    let name = exchange_name(&name);
    read_catalog(&api, move |catalog| {
        catalog
            .exchange(vhost.as_bytes(), name.as_bytes())
            .map(views::exchange)
    })
    .await?
    .map(Json)
    .ok_or_else(ApiError::not_found)
}

async fn exchange_put(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Done {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&vhost)?;
    check_permission(&api, &caller, &vhost, Access::Configure, &name).await?;
    let body = body_json(&body)?;
    let op = MetaOp::ExchangeDeclare {
        vhost: ShortStr::from(vhost),
        name: ShortStr::from(name),
        kind: ShortStr::from(text(&body, "type", "")),
        passive: false,
        durable: flag(&body, "durable", true)?,
        auto_delete: flag(&body, "auto_delete", false)?,
        internal: flag(&body, "internal", false)?,
        arguments: arguments(&body)?,
    };
    declare(&api, op).await
}

/// The `arguments` field as a field table.
pub(super) fn arguments(body: &Value) -> Result<crate::protocol::FieldTable, ApiError> {
    to_field_table(body.get("arguments").unwrap_or(&Value::Null))
        .ok_or_else(|| ApiError::bad_request("arguments must be an object"))
}

/// A declare: 201 when it created the object, 204 when it existed.
async fn declare(api: &Api, op: MetaOp) -> Done {
    use crate::catalog::MetaOutcome;
    let outcome = api.bridge.meta(op).await??;
    let created = matches!(
        outcome,
        MetaOutcome::ExchangeDeclared { created: true, .. }
            | MetaOutcome::QueueDeclared { created: true, .. }
    );
    Ok(if created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    })
}

async fn exchange_delete(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Done {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&vhost)?;
    check_permission(&api, &caller, &vhost, Access::Configure, &name).await?;
    let (v, n) = (vhost.clone(), name.clone());
    let exists = read_catalog(&api, move |c| {
        c.exchange(v.as_bytes(), n.as_bytes()).is_some()
    });
    if !exists.await? {
        return Err(ApiError::not_found());
    }
    let op = MetaOp::ExchangeDelete {
        vhost: ShortStr::from(vhost),
        name: ShortStr::from(name),
        if_unused: query_flag(&query, "if-unused"),
    };
    change(&api, op, false).await
}

async fn publish(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&vhost)?;
    let exchange = exchange_name(&name);
    check_permission(
        &api,
        &caller,
        &vhost,
        Access::Write,
        &exchange.to_str_lossy(),
    )
    .await?;
    let body = body_json(&body)?;
    let payload = decode_payload(&body)?;
    let (properties, message_headers) =
        encode_properties(body.get("properties").unwrap_or(&Value::Null))?;
    let routing_key = ShortStr::from(text(&body, "routing_key", ""));
    let routed = api
        .bridge
        .on_shard(0, move |shard| {
            shard.publish_message(
                vhost.as_bytes(),
                exchange,
                routing_key,
                properties,
                message_headers.as_ref(),
                payload,
            )
        })
        .await??;
    Ok(Json(json!({ "routed": routed })))
}

async fn queues(State(api): State<Api>, headers: HeaderMap) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    list_queues(&api, caller, None).await
}

async fn queues_in(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&vhost)?;
    list_queues(&api, caller, Some(vhost)).await
}

async fn list_queues(api: &Api, caller: Caller, vhost: Option<String>) -> Answer {
    let figures = queue_figures(api).await?;
    let list = read_catalog(api, move |catalog| {
        if vhost
            .as_ref()
            .is_some_and(|v| !catalog.has_vhost(v.as_bytes()))
        {
            return None;
        }
        let mut list: Vec<&QueueDef> = catalog
            .queues()
            .filter(|q| in_scope(&caller, vhost.as_deref(), &q.vhost))
            .collect();
        list.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        Some(
            list.into_iter()
                .map(|q| views::queue(q, figures.get(&q.id).copied().unwrap_or_default()))
                .collect::<Vec<_>>(),
        )
    })
    .await?
    .ok_or_else(ApiError::not_found)?;
    Ok(Json(Value::Array(list)))
}

/// The queue's definition, or 404.
async fn find_queue(api: &Api, vhost: &str, name: &str) -> Result<QueueDef, ApiError> {
    let (v, n) = (vhost.to_owned(), name.to_owned());
    read_catalog(api, move |c| c.queue(v.as_bytes(), n.as_bytes()).cloned())
        .await?
        .ok_or_else(ApiError::not_found)
}

async fn queue(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&vhost)?;
    let def = find_queue(&api, &vhost, &name).await?;
    let figures = queue_figures(&api).await?;
    let shown = figures.get(&def.id).copied().unwrap_or_default();
    Ok(Json(views::queue(&def, shown)))
}

async fn queue_put(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Done {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&vhost)?;
    check_permission(&api, &caller, &vhost, Access::Configure, &name).await?;
    let body = body_json(&body)?;
    let op = MetaOp::QueueDeclare {
        vhost: ShortStr::from(vhost),
        name: ShortStr::from(name),
        passive: false,
        durable: flag(&body, "durable", true)?,
        exclusive: false,
        auto_delete: flag(&body, "auto_delete", false)?,
        arguments: arguments(&body)?,
        owner: MANAGEMENT_CONNECTION,
        owner_shard: 0,
        server_named: false,
    };
    declare(&api, op).await
}

async fn queue_delete(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Done {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&vhost)?;
    check_permission(&api, &caller, &vhost, Access::Configure, &name).await?;
    let def = find_queue(&api, &vhost, &name).await?;
    let (if_empty, if_unused) = (
        query_flag(&query, "if-empty"),
        query_flag(&query, "if-unused"),
    );
    if if_empty || if_unused {
        let figures = queue_figures(&api).await?;
        let shown = figures.get(&def.id).copied().unwrap_or_default();
        if if_empty && shown.messages_ready + shown.messages_unacknowledged > 0 {
            return Err(ApiError::bad_request(format!(
                "queue '{name}' in vhost '{vhost}' not empty"
            )));
        }
        if if_unused && shown.consumers > 0 {
            return Err(ApiError::bad_request(format!(
                "queue '{name}' in vhost '{vhost}' in use"
            )));
        }
    }
    let op = MetaOp::QueueDelete {
        vhost: def.vhost,
        name: def.name,
    };
    change(&api, op, false).await
}

async fn queue_purge(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> Done {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&vhost)?;
    check_permission(&api, &caller, &vhost, Access::Read, &name).await?;
    let def = find_queue(&api, &vhost, &name).await?;
    let id = def.id;
    api.bridge
        .on_shard(def.shard_id, move |shard| shard.queue_purge(id))
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn queue_get(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&vhost)?;
    check_permission(&api, &caller, &vhost, Access::Read, &name).await?;
    let body = body_json(&body)?;
    let count = match body.get("count") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ApiError::bad_request("count must be a number"))?;
    let count = usize::try_from(count)
        .unwrap_or(GET_COUNT_MAX)
        .min(GET_COUNT_MAX);
    let requeue = match text(&body, "ackmode", "") {
        "ack_requeue_true" | "reject_requeue_true" => true,
        "ack_requeue_false" | "reject_requeue_false" => false,
        other => return Err(ApiError::bad_request(format!("unknown ackmode '{other}'"))),
    };
    let encoding = text(&body, "encoding", "auto").to_owned();
    let truncate = body
        .get("truncate")
        .and_then(Value::as_u64)
        .map(|n| n as usize);
    let def = find_queue(&api, &vhost, &name).await?;
    let id = def.id;
    let taken = api
        .bridge
        .on_shard(def.shard_id, move |shard| {
            shard
                .queue_take(id, count, requeue)
                .into_iter()
                .map(|got| {
                    let (payload, payload_encoding) =
                        encode_payload(&got.message.body, &encoding, truncate);
                    json!({
                        "payload_bytes": got.message.body_size(),
                        "redelivered": got.redelivered,
                        "exchange": got.message.exchange.to_str_lossy(),
                        "routing_key": got.message.routing_key.to_str_lossy(),
                        "message_count": got.message_count,
                        "properties": properties_json(&got.message.properties),
                        "payload": payload,
                        "payload_encoding": payload_encoding,
                    })
                })
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(Json(Value::Array(taken)))
}

/// Bindings in `vhost` (all vhosts when None), with the default
/// exchange's implicit ones as RabbitMQ lists them, filtered by `keep`.
fn binding_list(
    catalog: &Catalog,
    caller: &Caller,
    vhost: Option<&str>,
    keep: &dyn Fn(&Value) -> bool,
) -> Vec<Value> {
    let mut list = Vec::new();
    for name in catalog.vhost_names() {
        let v = name.to_str_lossy();
        if !in_scope(caller, vhost, name) {
            continue;
        }
        for q in catalog.queues().filter(|q| q.vhost == *name) {
            let implicit = json!({
                "source": "", "vhost": v, "destination": q.name.to_str_lossy(),
                "destination_type": "queue", "routing_key": q.name.to_str_lossy(),
                "arguments": {}, "properties_key": views::properties_key(&q.name.to_str_lossy(), &Default::default()),
            });
            list.push(implicit);
        }
        if let Some(table) = catalog.routing(name.as_bytes()) {
            list.extend(
                table
                    .bindings()
                    .filter_map(|b| views::binding(catalog, &v, &b)),
            );
        }
    }
    list.retain(|b| keep(b));
    list
}

async fn bindings(State(api): State<Api>, headers: HeaderMap) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    let list = read_catalog(&api, move |c| binding_list(c, &caller, None, &|_| true)).await?;
    Ok(Json(Value::Array(list)))
}

async fn bindings_in(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&vhost)?;
    filtered_bindings(&api, caller, vhost, |_| true).await
}

async fn filtered_bindings(
    api: &Api,
    caller: Caller,
    vhost: String,
    keep: impl Fn(&Value) -> bool + Send + 'static,
) -> Answer {
    let list = read_catalog(api, move |c| {
        c.has_vhost(vhost.as_bytes())
            .then(|| binding_list(c, &caller, Some(&vhost), &keep))
    })
    .await?
    .ok_or_else(ApiError::not_found)?;
    Ok(Json(Value::Array(list)))
}

async fn exchange_bindings(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, name, side)): Path<(String, String, String)>,
) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&vhost)?;
    let field = match side.as_str() {
        "source" => "source",
        "destination" => "destination",
        _ => return Err(ApiError::not_found()),
    };
    let name = exchange_name(&name).to_str_lossy().into_owned();
    filtered_bindings(&api, caller, vhost, move |b| {
        b[field] == name.as_str() && (field == "source" || b["destination_type"] == "exchange")
    })
    .await
}

async fn queue_bindings(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&vhost)?;
    find_queue(&api, &vhost, &name).await?;
    filtered_bindings(&api, caller, vhost, move |b| {
        b["destination"] == name.as_str() && b["destination_type"] == "queue"
    })
    .await
}

/// The destination a binding path names: `q` or `e`.
fn destination(kind: &str, name: &str) -> Result<DestinationName, ApiError> {
    match kind {
        "q" => Ok(DestinationName::Queue(ShortStr::from(name))),
        "e" => Ok(DestinationName::Exchange(exchange_name(name))),
        _ => Err(ApiError::not_found()),
    }
}

fn destination_matches(binding: &Value, source: &str, kind: &str, name: &str) -> bool {
    let kind = if kind == "q" { "queue" } else { "exchange" };
    binding["source"] == source
        && binding["destination"] == name
        && binding["destination_type"] == kind
}

async fn bindings_between(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, source, kind, name)): Path<(String, String, String, String)>,
) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&vhost)?;
    destination(&kind, &name)?;
    let source = exchange_name(&source).to_str_lossy().into_owned();
    filtered_bindings(&api, caller, vhost, move |b| {
        destination_matches(b, &source, &kind, &name)
    })
    .await
}

async fn binding_create(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, source, kind, name)): Path<(String, String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&vhost)?;
    let destination = destination(&kind, &name)?;
    check_permission(&api, &caller, &vhost, Access::Write, &name).await?;
    check_permission(&api, &caller, &vhost, Access::Read, &source).await?;
    let body = body_json(&body)?;
    let routing_key = text(&body, "routing_key", "").to_owned();
    let arguments = arguments(&body)?;
    let location = format!(
        "/api/bindings/{}/e/{source}/{kind}/{name}/{}",
        url_segment(&vhost),
        views::properties_key(&routing_key, &arguments)
    );
    let op = MetaOp::Bind(BindingOp {
        vhost: ShortStr::from(vhost),
        source: exchange_name(&source),
        destination,
        routing_key: ShortStr::from(routing_key),
        arguments,
        conn: MANAGEMENT_CONNECTION,
    });
    change(&api, op, true).await?;
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

fn url_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The binding a path's properties key names, if it exists.
async fn find_binding(
    api: &Api,
    caller: Caller,
    (vhost, source, kind, name, props): (String, String, String, String, String),
) -> Result<Value, ApiError> {
    let source = exchange_name(&source).to_str_lossy().into_owned();
    let found = read_catalog(api, move |c| {
        binding_list(c, &caller, Some(&vhost), &|b| {
            destination_matches(b, &source, &kind, &name) && b["properties_key"] == props.as_str()
        })
        .into_iter()
        .next()
    })
    .await?;
    found.ok_or_else(ApiError::not_found)
}

async fn binding(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(path): Path<(String, String, String, String, String)>,
) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&path.0)?;
    find_binding(&api, caller, path).await.map(Json)
}

async fn binding_delete(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(path): Path<(String, String, String, String, String)>,
) -> Done {
    let caller = api.authorize(&headers, Need::Management).await?;
    caller.check_vhost(&path.0)?;
    let (vhost, source, kind, name) = (
        path.0.clone(),
        path.1.clone(),
        path.2.clone(),
        path.3.clone(),
    );
    check_permission(&api, &caller, &vhost, Access::Write, &name).await?;
    check_permission(&api, &caller, &vhost, Access::Read, &source).await?;
    let found = find_binding(&api, caller, path).await?;
    let op = MetaOp::Unbind(BindingOp {
        vhost: ShortStr::from(vhost),
        source: exchange_name(&source),
        destination: destination(&kind, &name)?,
        routing_key: ShortStr::from(found["routing_key"].as_str().unwrap_or("")),
        arguments: to_field_table(&found["arguments"]).unwrap_or_default(),
        conn: MANAGEMENT_CONNECTION,
    });
    change(&api, op, false).await
}

async fn connection_infos(api: &Api) -> Result<Vec<ConnectionInfo>, ApiError> {
    let per_shard = api
        .bridge
        .on_every_shard(|shard| shard.connection_infos())
        .await?;
    Ok(per_shard.into_iter().flatten().collect())
}

fn connection_json(info: &ConnectionInfo) -> Value {
    json!({
        "name": info.name,
        "node": NODE_NAME,
        "vhost": info.vhost,
        "user": info.user,
        "state": info.state,
        "channels": info.channels,
        "peer_host": info.peer_host,
        "peer_port": info.peer_port,
        "protocol": "AMQP 0-9-1",
        "type": "network",
        "ssl": false,
        "auth_mechanism": "PLAIN",
        "frame_max": info.frame_max,
        "channel_max": info.channel_max,
        "timeout": info.heartbeat_s,
        "client_properties": {},
    })
}

/// Connections the caller may see: its own, or all for monitoring and up.
fn visible(caller: &Caller, info: &ConnectionInfo) -> bool {
    caller.vhosts.is_none() || info.user == caller.name
}

async fn connections(State(api): State<Api>, headers: HeaderMap) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    let mut infos = connection_infos(&api).await?;
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    let list = infos
        .iter()
        .filter(|info| visible(&caller, info))
        .map(connection_json)
        .collect();
    Ok(Json(Value::Array(list)))
}

async fn connection(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    let infos = connection_infos(&api).await?;
    infos
        .iter()
        .find(|info| info.name == name && visible(&caller, info))
        .map(|info| Json(connection_json(info)))
        .ok_or_else(ApiError::not_found)
}

/// Closes a connection with 320 and RabbitMQ's text (or the `X-Reason`
/// header, as RabbitMQ allows).
async fn connection_close(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Done {
    let caller = api.authorize(&headers, Need::Management).await?;
    let infos = connection_infos(&api).await?;
    if !infos
        .iter()
        .any(|info| info.name == name && visible(&caller, info))
    {
        return Err(ApiError::not_found());
    }
    let reason = headers
        .get("x-reason")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("Closed via management plugin")
        .to_owned();
    let closed = api
        .bridge
        .on_every_shard(move |shard| shard.close_connection_named(&name, &reason))
        .await?;
    if !closed.contains(&true) {
        return Err(ApiError::not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn channels(State(api): State<Api>, headers: HeaderMap) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    let infos = connection_infos(&api).await?;
    let mut list = Vec::new();
    for info in infos.iter().filter(|info| visible(&caller, info)) {
        for &(number, consumers, unacked) in &info.channel_list {
            list.push(json!({
                "name": format!("{} ({number})", info.name),
                "number": number,
                "node": NODE_NAME,
                "vhost": info.vhost,
                "user": info.user,
                "state": "running",
                "consumer_count": consumers,
                "messages_unacknowledged": unacked,
                "connection_details": {"name": info.name, "peer_host": info.peer_host, "peer_port": info.peer_port},
            }));
        }
    }
    Ok(Json(Value::Array(list)))
}

async fn consumers(State(api): State<Api>, headers: HeaderMap) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    let per_shard = api
        .bridge
        .on_every_shard(|shard| shard.consumer_list())
        .await?;
    let names: HashMap<_, _> = connection_infos(&api)
        .await?
        .into_iter()
        .map(|info| (info.id, (info.name, info.user)))
        .collect();
    let list = read_catalog(&api, move |catalog| {
        per_shard
            .into_iter()
            .flatten()
            .filter_map(|(queue, conn, channel, tag)| {
                let def = catalog.queue_by_id(queue)?;
                let (connection_name, user) = names.get(&conn)?;
                let shown = caller.vhosts.is_none() || *user == caller.name;
                shown.then(|| {
                    json!({
                        "consumer_tag": tag.to_str_lossy(),
                        "queue": {"name": def.name.to_str_lossy(), "vhost": def.vhost.to_str_lossy()},
                        "channel_details": {
                            "name": format!("{connection_name} ({channel})"),
                            "number": channel,
                            "connection_name": connection_name,
                            "user": user,
                        },
                    })
                })
            })
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(Json(Value::Array(list)))
}
