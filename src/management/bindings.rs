//! Bindings over HTTP: listing (with the default exchange's implicit
//! bindings, as RabbitMQ lists them), creating and deleting by RabbitMQ's
//! paths and properties keys.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};

use super::access_api::{change, read_catalog};
use super::resources::{arguments, check_permission, exchange_name, find_queue, in_scope};
use super::routes::{body_json, text, Answer, Done};
use super::server::{Api, Caller, Need};
use super::views::{self, to_field_table};
use super::ApiError;
use crate::catalog::access::Access;
use crate::catalog::{BindingOp, Catalog, DestinationName, MetaOp};
use crate::ids::MANAGEMENT_CONNECTION;
use crate::protocol::ShortStr;

pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/{side}",
            get(exchange_bindings),
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
    let caller = api.authorize_in(&headers, Need::Management, &vhost).await?;
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
    let caller = api.authorize_in(&headers, Need::Management, &vhost).await?;
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
    let caller = api.authorize_in(&headers, Need::Management, &vhost).await?;
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
    let caller = api.authorize_in(&headers, Need::Management, &vhost).await?;
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
    let caller = api.authorize_in(&headers, Need::Management, &vhost).await?;
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
