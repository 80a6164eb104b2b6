//! Exchanges, queues and messages over HTTP, with RabbitMQ's paths,
//! status codes and JSON.
//!
//! Listings join the catalog (shard 0's replica) with figures the owning
//! shards compute on request; changes are `MetaOp`s through the
//! coordinator, checked against the caller's permissions as AMQP would.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};

use super::access_api::{change, read_catalog};
use super::connections::connection_infos;
use super::messages::{decode_payload, encode_payload, encode_properties, properties_json};
use super::rates::{self, exchange_message_stats, message_stats, RateKey};
use super::routes::{body_json, flag, query_flag, text, Answer, Done};
use super::server::{Api, Caller, Need};
use super::views::{self, to_field_table, QueueFigures};
use super::ApiError;
use crate::catalog::access::Access;
use crate::catalog::{MetaOp, QueueDef};
use crate::ids::{QueueId, MANAGEMENT_CONNECTION};
use crate::protocol::ShortStr;
use crate::queue::{GetResult, MessageTotals};
use crate::shard::ConnectionInfo;

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
}

/// 401 unless the caller (a user, not the operator token) has `access` to
/// the named resource, as AMQP would check it.
pub(super) async fn check_permission(
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
    let mut book = rates::lock(&api.rates);
    let figures: HashMap<QueueId, QueueFigures> = per_shard
        .into_iter()
        .flatten()
        .map(|sample| {
            let figures = QueueFigures {
                messages_ready: u64::from(sample.ready),
                messages_unacknowledged: u64::from(sample.unacked),
                consumers: u64::from(sample.consumers),
                totals: sample.totals,
                rates: book.observe(RateKey::Queue(sample.id), sample.totals, now),
                depth_rates: book.observe_depth(
                    RateKey::QueueDepth(sample.id),
                    u64::from(sample.ready),
                    u64::from(sample.unacked),
                    now,
                ),
            };
            (sample.id, figures)
        })
        .collect();
    book.retain(|key| match key {
        RateKey::Queue(queue) | RateKey::QueueDepth(queue) => figures.contains_key(queue),
        _ => true,
    });
    Ok(figures)
}

/// Queue totals and object counts for the overview.
pub(super) async fn totals(api: &Api, caller: &Caller) -> Result<Value, ApiError> {
    let figures = queue_figures(api).await?;
    let connections = connection_infos(api).await?;
    let stats = overall_stats(api, caller, &connections).await?;
    let depth_key = RateKey::OverviewDepth(caller.name.clone());
    let caller = caller.clone();
    let (queues, exchanges, ready, unacked, consumers) = read_catalog(api, move |catalog| {
        let visible: Vec<&QueueDef> = catalog
            .queues()
            .filter(|q| caller.sees_vhost(&q.vhost.to_str_lossy()))
            .collect();
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
        )
    })
    .await?;
    let channels: usize = connections.iter().map(|c| c.channels).sum();
    let now = std::time::Instant::now();
    let depth_rates = rates::lock(&api.rates).observe_depth(depth_key, ready, unacked, now);
    Ok(json!({
        "queue_totals": rates::depth_json(ready, unacked, depth_rates),
        "object_totals": {"connections": connections.len(), "channels": channels, "exchanges": exchanges, "queues": queues, "consumers": consumers},
        "message_stats": stats,
    }))
}

/// The overview's `message_stats`, counted by channels as RabbitMQ counts
/// them (a message published once to three queues is one publish): the
/// open channels' and those of closed connections. A user who sees only
/// some vhosts sees the open channels in them.
async fn overall_stats(
    api: &Api,
    caller: &Caller,
    connections: &[ConnectionInfo],
) -> Result<Value, ApiError> {
    let mut totals = MessageTotals::default();
    if caller.vhosts.is_none() {
        let retired = api
            .bridge
            .on_every_shard(|shard| shard.retired_totals())
            .await?;
        retired.into_iter().for_each(|shard| totals += shard);
    }
    for info in connections.iter().filter(|c| caller.sees_vhost(&c.vhost)) {
        totals += info.closed_channels;
        info.channel_list.iter().for_each(|c| totals += c.totals);
    }
    let key = RateKey::Overview(caller.name.clone());
    let rates = rates::lock(&api.rates).observe(key, totals, std::time::Instant::now());
    Ok(message_stats(totals, rates))
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
    let caller = api.authorize_in(&headers, Need::Management, &vhost).await?;
    list_exchanges(&api, caller, Some(vhost)).await
}

async fn list_exchanges(api: &Api, caller: Caller, vhost: Option<String>) -> Answer {
    let stats = exchange_stats(api).await?;
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
                .map(|x| with_stats(views::exchange(x), &stats, &x.vhost, &x.name))
                .collect::<Vec<_>>(),
        )
    })
    .await?
    .ok_or_else(ApiError::not_found)?;
    Ok(Json(Value::Array(list)))
}

type ExchangeStats = HashMap<(ShortStr, ShortStr), Value>;

/// Every exchange's `message_stats`, from the counts of every shard's
/// routing table (a publish is counted where it was routed).
async fn exchange_stats(api: &Api) -> Result<ExchangeStats, ApiError> {
    let per_shard = api
        .bridge
        .on_every_shard(|shard| shard.exchange_counts())
        .await?;
    let mut sums: HashMap<(ShortStr, ShortStr), MessageTotals> = HashMap::new();
    for (vhost, name, published_in, published_out) in per_shard.into_iter().flatten() {
        let sum = sums.entry((vhost, name)).or_default();
        sum.published += published_in;
        sum.delivered += published_out;
    }
    let now = std::time::Instant::now();
    let mut book = rates::lock(&api.rates);
    let key = |(vhost, name): &(ShortStr, ShortStr)| {
        RateKey::Exchange(
            vhost.to_str_lossy().into_owned(),
            name.to_str_lossy().into_owned(),
        )
    };
    let live: std::collections::HashSet<RateKey> = sums.keys().map(key).collect();
    book.retain(|k| !matches!(k, RateKey::Exchange(..)) || live.contains(k));
    Ok(sums
        .into_iter()
        .map(|(id, totals)| {
            let rates = book.observe(key(&id), totals, now);
            (id, exchange_message_stats(totals, rates))
        })
        .collect())
}

/// An exchange's view with its `message_stats`, which RabbitMQ shows only
/// once something was published to it.
fn with_stats(mut view: Value, stats: &ExchangeStats, vhost: &ShortStr, name: &ShortStr) -> Value {
    let found = stats.get(&(vhost.clone(), name.clone()));
    if let (Some(found), Some(fields)) = (found, view.as_object_mut()) {
        fields.insert("message_stats".to_owned(), found.clone());
    }
    view
}

pub(super) fn in_scope(caller: &Caller, vhost: Option<&str>, of: &ShortStr) -> bool {
    let of = of.to_str_lossy();
    caller.sees_vhost(&of) && vhost.is_none_or(|v| v == of)
}

/// "amq.default" names the default exchange in the API's paths.
pub(super) fn exchange_name(name: &str) -> ShortStr {
    ShortStr::from(if name == "amq.default" { "" } else { name })
}

async fn exchange(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> Answer {
    api.authorize_in(&headers, Need::Management, &vhost).await?;
    let name = exchange_name(&name);
    let stats = exchange_stats(&api).await?;
    read_catalog(&api, move |catalog| {
        catalog
            .exchange(vhost.as_bytes(), name.as_bytes())
            .map(|x| with_stats(views::exchange(x), &stats, &x.vhost, &x.name))
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
    let caller = api.authorize_in(&headers, Need::Management, &vhost).await?;
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
    let caller = api.authorize_in(&headers, Need::Management, &vhost).await?;
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
    let caller = api.authorize_in(&headers, Need::Management, &vhost).await?;
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
    let caller = api.authorize_in(&headers, Need::Management, &vhost).await?;
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
pub(super) async fn find_queue(api: &Api, vhost: &str, name: &str) -> Result<QueueDef, ApiError> {
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
    api.authorize_in(&headers, Need::Management, &vhost).await?;
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
    let caller = api.authorize_in(&headers, Need::Management, &vhost).await?;
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
    let caller = api.authorize_in(&headers, Need::Management, &vhost).await?;
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
    let caller = api.authorize_in(&headers, Need::Management, &vhost).await?;
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
    let caller = api.authorize_in(&headers, Need::Management, &vhost).await?;
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
        .on_shard_later(def.shard_id, move |shard, answer| {
            let shard = shard.clone();
            crate::runtime::spawn(async move {
                let _ = answer.send(shard.queue_take(id, count, requeue).await);
            });
        })
        .await?;
    let taken = taken
        .iter()
        .map(|got| got_json(got, &encoding, truncate))
        .collect();
    Ok(Json(Value::Array(taken)))
}

/// A message the API's get took, as RabbitMQ's API shows it.
fn got_json(got: &GetResult, encoding: &str, truncate: Option<usize>) -> Value {
    let (payload, payload_encoding) = encode_payload(&got.message.body, encoding, truncate);
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
}
