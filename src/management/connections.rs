//! Connections, channels and consumers over HTTP: listed from every
//! shard's own connections and queues; DELETE closes a connection with
//! 320, as RabbitMQ does.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::access_api::read_catalog;
use super::rates::{self, message_stats, RateKey, TrafficRates};
use super::routes::{Answer, Done};
use super::server::{Api, Caller, Need};
use super::views::NODE_NAME;
use super::ApiError;
use crate::ids::{ChannelId, ConnectionId};
use crate::shard::ConnectionInfo;

pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/api/connections", get(connections))
        .route(
            "/api/connections/{name}",
            get(connection).delete(connection_close),
        )
        .route("/api/channels", get(channels))
        .route("/api/consumers", get(consumers))
}

pub(super) async fn connection_infos(api: &Api) -> Result<Vec<ConnectionInfo>, ApiError> {
    let per_shard = api
        .bridge
        .on_every_shard(|shard| shard.connection_infos())
        .await?;
    Ok(per_shard.into_iter().flatten().collect())
}

/// `message_stats` per open channel.
fn channel_stats(api: &Api, infos: &[ConnectionInfo]) -> HashMap<ChannelId, Value> {
    let now = std::time::Instant::now();
    let mut book = rates::lock(&api.rates);
    let mut stats = HashMap::new();
    for info in infos {
        for channel in &info.channel_list {
            let id = ChannelId {
                conn: info.id,
                number: channel.number,
            };
            let rates = book.observe(RateKey::Channel(id), channel.totals, now);
            stats.insert(id, message_stats(channel.totals, rates));
        }
    }
    book.retain(|key| match key {
        RateKey::Channel(id) => stats.contains_key(id),
        _ => true,
    });
    stats
}

/// Every connection's byte rates; forgets the closed ones'.
fn traffic_rates(api: &Api, infos: &[ConnectionInfo]) -> HashMap<ConnectionId, TrafficRates> {
    let now = std::time::Instant::now();
    let mut book = rates::lock(&api.rates);
    let rates: HashMap<_, _> = infos
        .iter()
        .map(|info| (info.id, book.observe_traffic(info.id, info.traffic, now)))
        .collect();
    book.retain(|key| match key {
        RateKey::Connection(conn) => rates.contains_key(conn),
        _ => true,
    });
    rates
}

fn connection_json(info: &ConnectionInfo, rates: TrafficRates) -> Value {
    let traffic = info.traffic;
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
        "recv_oct": traffic.recv_oct,
        "recv_oct_details": {"rate": rates.recv_oct},
        "recv_cnt": traffic.recv_cnt,
        "send_oct": traffic.send_oct,
        "send_oct_details": {"rate": rates.send_oct},
        "send_cnt": traffic.send_cnt,
        "send_pend": info.send_pend,
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
    let rates = traffic_rates(&api, &infos);
    let list = infos
        .iter()
        .filter(|info| visible(&caller, info))
        .map(|info| connection_json(info, rates[&info.id]))
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
    let rates = traffic_rates(&api, &infos);
    infos
        .iter()
        .find(|info| info.name == name && visible(&caller, info))
        .map(|info| Json(connection_json(info, rates[&info.id])))
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
    let stats = channel_stats(&api, &infos);
    let mut list = Vec::new();
    for info in infos.iter().filter(|info| visible(&caller, info)) {
        for channel in &info.channel_list {
            let number = channel.number;
            list.push(json!({
                "name": format!("{} ({number})", info.name),
                "number": number,
                "node": NODE_NAME,
                "vhost": info.vhost,
                "user": info.user,
                "state": "running",
                "consumer_count": channel.consumers,
                "messages_unacknowledged": channel.unacked,
                "message_stats": stats.get(&ChannelId { conn: info.id, number }),
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
