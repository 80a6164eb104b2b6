//! The API's paths (RabbitMQ's), and the small endpoints: overview,
//! whoami, nodes, health checks, and stop for warrenctl.
//!
//! Handlers share a shape: authorize with the tag the endpoint needs, run
//! commands on the shards through the bridge, answer JSON or
//! [`ApiError`]. Shared request helpers live here too.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};

use super::server::{Api, Need};
use super::views::NODE_NAME;
use super::{
    access_api, bindings, connections, definitions, listing, resources, server, ApiError,
    BODY_SIZE_MAX,
};

pub(super) type Answer = Result<Json<Value>, ApiError>;
pub(super) type Done = Result<StatusCode, ApiError>;

/// The RabbitMQ release whose API warren follows, for clients that check.
const RABBITMQ_API_VERSION: &str = "3.10.8";

pub(super) fn router(api: Api) -> Router {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/whoami", get(whoami))
        .route("/api/nodes", get(nodes))
        .route("/api/health/checks/alarms", get(health))
        .route("/api/aliveness-test/{vhost}", get(aliveness))
        .route("/api/warren/stop", post(stop))
        .merge(access_api::routes())
        .merge(resources::routes())
        .merge(bindings::routes())
        .merge(connections::routes())
        .route(
            "/api/definitions",
            get(definitions::export).post(definitions::import),
        )
        .route(
            "/api/definitions/{vhost}",
            get(definitions::export_vhost).post(definitions::import_vhost),
        )
        .fallback(|| async { ApiError::not_found() })
        .layer(axum::middleware::from_fn(listing::shape_lists))
        .layer(axum::middleware::from_fn(server::loopback_users))
        .layer(DefaultBodyLimit::max(BODY_SIZE_MAX))
        .with_state(api)
}

/// A request body as JSON: empty is `{}`, anything unparsable RabbitMQ's
/// `not_json`.
pub(super) fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|_| ApiError::bad_request("not_json"))
}

/// A boolean field as RabbitMQ reads it: a JSON bool or "true"/"false"
/// (rabbitmqadmin sends strings).
pub(super) fn flag(body: &Value, key: &str, default: bool) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!(
            "{key}: {other} is not a boolean"
        ))),
    }
}

/// A text field, or `default`.
pub(super) fn text<'a>(body: &'a Value, key: &str, default: &'a str) -> &'a str {
    body.get(key).and_then(Value::as_str).unwrap_or(default)
}

/// A query parameter that is "true".
pub(super) fn query_flag(query: &HashMap<String, String>, key: &str) -> bool {
    query.get(key).is_some_and(|value| value == "true")
}

async fn overview(State(api): State<Api>, headers: HeaderMap) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    let totals = resources::totals(&api, &caller).await?;
    let exchange_types: Vec<Value> = [
        "direct",
        "fanout",
        "headers",
        "topic",
        "x-consistent-hash",
        "x-delayed-message",
    ]
    .iter()
    .map(|name| json!({"name": name, "description": "", "enabled": true}))
    .collect();
    Ok(Json(json!({
        "management_version": RABBITMQ_API_VERSION,
        "rabbitmq_version": RABBITMQ_API_VERSION,
        "product_name": "warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "rates_mode": "none",
        "cluster_name": NODE_NAME,
        "node": NODE_NAME,
        "disable_stats": false,
        "enable_queue_totals": true,
        "exchange_types": exchange_types,
        "listeners": [
            {"node": NODE_NAME, "protocol": "amqp", "ip_address": "::", "port": api.amqp_port},
            {"node": NODE_NAME, "protocol": "http", "ip_address": "::", "port": api.management_port},
        ],
        "contexts": [{"node": NODE_NAME, "description": "RabbitMQ Management", "path": "/", "port": api.management_port.to_string()}],
    "message_stats": totals["message_stats"],
        "churn_rates": {},
        "queue_totals": totals["queue_totals"],
        "object_totals": totals["object_totals"],
        "statistics_db_event_queue": 0,
    })))
}

async fn whoami(State(api): State<Api>, headers: HeaderMap) -> Answer {
    let caller = api.authorize(&headers, Need::Management).await?;
    Ok(Json(json!({"name": caller.name, "tags": caller.tags})))
}

async fn nodes(State(api): State<Api>, headers: HeaderMap) -> Answer {
    api.authorize(&headers, Need::Monitoring).await?;
    let resources = api
        .bridge
        .on_shard(0, |shard| shard.node_resources())
        .await?;
    Ok(Json(json!([{
        "name": NODE_NAME,
        "type": "disc",
        "running": true,
        "uptime": api.started.elapsed().as_millis() as u64,
        "processors": api.bridge.shard_count(),
        "mem_used": resources.mem_used,
        "mem_limit": resources.mem_limit,
        "mem_alarm": resources.mem_alarm,
        "disk_free": resources.disk_free,
        "disk_free_limit": resources.disk_free_limit,
        "disk_free_alarm": resources.disk_free_alarm,
        "partitions": [],
    }])))
}

/// RabbitMQ's alarms health check: 200 and "ok", or 503 and the alarms
/// in effect.
async fn health(State(api): State<Api>, headers: HeaderMap) -> Response {
    // RabbitMQ asks only for management here, unlike /api/nodes.
    if let Err(err) = api.authorize(&headers, Need::Management).await {
        return err.into_response();
    }
    let resources = match api.bridge.on_shard(0, |shard| shard.node_resources()).await {
        Ok(resources) => resources,
        Err(err) => return ApiError::from(err).into_response(),
    };
    let alarms: Vec<Value> = [
        (resources.mem_alarm, "memory"),
        (resources.disk_free_alarm, "disk"),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, resource)| json!({"node": NODE_NAME, "resource": resource}))
    .collect();
    if alarms.is_empty() {
        return Json(json!({"status": "ok"})).into_response();
    }
    let failed = json!({
        "status": "failed",
        "reason": "There are alarms in effect in the cluster",
        "alarms": alarms,
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(failed)).into_response()
}

/// RabbitMQ declares a queue, publishes and gets a message; warren checks
/// that the vhost exists and every shard answers.
async fn aliveness(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> Answer {
    api.authorize_in(&headers, Need::Management, &vhost).await?;
    let exists = api
        .bridge
        .on_shard(0, move |shard| {
            shard.catalog.borrow().has_vhost(vhost.as_bytes())
        })
        .await?;
    if !exists {
        return Err(ApiError::not_found());
    }
    api.bridge.on_every_shard(|_| ()).await?;
    Ok(Json(json!({"status": "ok"})))
}

/// warrenctl stop: the same as SIGTERM.
async fn stop(State(api): State<Api>, headers: HeaderMap) -> Done {
    api.authorize(&headers, Need::Administrator).await?;
    tracing::info!("stop requested through the management API");
    api.shutdown.store(true, Ordering::SeqCst);
    Ok(StatusCode::NO_CONTENT)
}
