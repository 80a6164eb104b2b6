//! The management plane: RabbitMQ's HTTP API (port 15672) for
//! `rabbitmqadmin`, monitoring and `warrenctl`.
//!
//! It runs on its own OS thread with a current-thread tokio runtime
//! (axum), never on a shard's executor, so no request can delay AMQP work.
//! It holds no broker state: every request becomes commands on the shards'
//! inboxes (`shard::bridge`), and the shards answer from their own state.
//!
//! Authentication is HTTP basic against the catalog's users, with
//! RabbitMQ's tag rules, or the operator token that the broker writes to
//! its data directory (mode 0600) for `warrenctl`, which grants what an
//! administrator may do.

mod access_api;
mod bindings;
mod connections;
mod definitions;
mod listing;
mod messages;
mod rates;
mod resources;
mod routes;
mod server;
pub mod views;

pub use server::{new_token, start, write_token, TOKEN_FILE};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::protocol::{reply_code, AmqpError};
use crate::shard::bridge::BridgeError;

/// Largest request body accepted (definitions files can be large).
pub(crate) const BODY_SIZE_MAX: usize = 16 << 20;

/// An error answer as RabbitMQ shapes it: `{"error": ..., "reason": ...}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    error: &'static str,
    reason: String,
}

impl ApiError {
    pub fn not_found() -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: "Object Not Found",
            reason: "Not Found".to_owned(),
        }
    }

    pub fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError::new_bad_request("bad_request", reason)
    }

    /// A 400 with an `error` other than "bad_request".
    pub(crate) fn new_bad_request(error: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error,
            reason: reason.into(),
        }
    }

    /// Wrong credentials ("not_authorized") or too few tags
    /// ("not_authorised"): RabbitMQ spells the two differently.
    pub(crate) fn unauthorized(error: &'static str, reason: &str) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error,
            reason: reason.to_owned(),
        }
    }

    fn unavailable(reason: &str) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "service_unavailable",
            reason: reason.to_owned(),
        }
    }
}

impl From<AmqpError> for ApiError {
    /// RabbitMQ answers a refused change with 400 and the AMQP text, and a
    /// missing object with 404.
    fn from(err: AmqpError) -> ApiError {
        if err.code == reply_code::NOT_FOUND {
            return ApiError::not_found();
        }
        ApiError::bad_request(err.text.to_string())
    }
}

impl From<BridgeError> for ApiError {
    fn from(err: BridgeError) -> ApiError {
        match err {
            BridgeError::Busy => ApiError::unavailable("broker busy, try again"),
            BridgeError::Gone => ApiError::unavailable("broker shutting down"),
            BridgeError::Timeout => ApiError::unavailable("broker did not answer in time"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "reason": self.reason});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
            );
        }
        response
    }
}
