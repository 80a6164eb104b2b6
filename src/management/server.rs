//! The HTTP server's thread, its shared state, the operator token and
//! authentication with RabbitMQ's tag rules.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::rates::RateBook;
use super::{routes, ApiError};
use crate::catalog::access::may_log_in_from;
use crate::shard::bridge::Bridge;

/// The token file's name in the data directory: one line, the token.
pub const TOKEN_FILE: &str = "warrenctl.token";

/// What every request handler shares.
#[derive(Clone)]
pub(super) struct Api {
    pub(crate) bridge: Bridge,
    pub token: Arc<str>,
    pub shutdown: Arc<AtomicBool>,
    pub started: Instant,
    pub(crate) amqp_port: u16,
    pub management_port: u16,
    /// Only this thread touches it; the shards never wait on it.
    pub rates: Arc<std::sync::Mutex<RateBook>>,
}

/// A fresh random token for this run of the broker.
pub fn new_token() -> Result<String, String> {
    let mut raw = [0u8; 24];
    getrandom::getrandom(&mut raw).map_err(|err| format!("no randomness for a token: {err}"))?;
    Ok(raw.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Writes `data_dir/warrenctl.token`, readable by this user only: the
/// management port on the first line, the token on the second.
pub fn write_token(data_dir: &Path, management_port: u16, token: &str) -> Result<(), String> {
    let path = data_dir.join(TOKEN_FILE);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        writeln!(file, "{management_port}\n{token}")
    };
    write().map_err(|err| format!("cannot write {}: {err}", path.display()))
}

/// Binds `addr` now (so a busy port is a start-up error) and serves the
/// API on a thread of its own; returns the bound address.
pub fn start(
    addr: SocketAddr,
    bridge: Bridge,
    token: String,
    shutdown: Arc<AtomicBool>,
    amqp_port: u16,
) -> Result<SocketAddr, String> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|err| format!("management API cannot listen on {addr}: {err}"))?;
    let local = listener
        .local_addr()
        .map_err(|err| format!("management listener: {err}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|err| format!("management listener: {err}"))?;
    let api = Api {
        bridge,
        token: token.into(),
        shutdown,
        started: Instant::now(),
        amqp_port,
        management_port: local.port(),
        rates: Arc::default(),
    };
    std::thread::Builder::new()
        .name("management".to_owned())
        .spawn(move || serve(listener, api))
        .map_err(|err| format!("cannot start the management thread: {err}"))?;
    Ok(local)
}

fn serve(listener: std::net::TcpListener, api: Api) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return tracing::error!("management runtime: {err}"),
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => return tracing::error!("management listener: {err}"),
        };
        let app = routes::router(api).into_make_service_with_connect_info::<SocketAddr>();
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!("management API stopped: {err}");
        }
    });
}

/// The tags that grant each level of the API, as RabbitMQ has them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    Management,
    Monitoring,
    Policymaker,
    Administrator,
}

impl Need {
    fn granted_by(self, tags: &[String]) -> bool {
        let has = |tag: &str| tags.iter().any(|t| t == tag);
        match self {
            Need::Management => {
                has("management") || has("policymaker") || has("monitoring") || has("administrator")
            }
            Need::Monitoring => has("monitoring") || has("administrator"),
            Need::Policymaker => has("policymaker") || has("administrator"),
            Need::Administrator => has("administrator"),
        }
    }

    fn refusal(self) -> &'static str {
        match self {
            Need::Management => "Not management user",
            Need::Monitoring => "Not monitor user",
            Need::Policymaker => "Not policymaker user",
            Need::Administrator => "Not administrator user",
        }
    }
}

/// Who is asking: a user, or the local operator with the token.
#[derive(Clone, Debug)]
pub(super) struct Caller {
    pub name: String,
    pub tags: Vec<String>,
    /// The vhosts the caller may see; None: all (monitoring and up).
    pub vhosts: Option<Vec<String>>,
    /// The local operator (token): no per-resource permission checks.
    pub operator: bool,
}

impl Caller {
    pub(crate) fn sees_vhost(&self, vhost: &str) -> bool {
        self.vhosts
            .as_ref()
            .is_none_or(|vhosts| vhosts.iter().any(|v| v == vhost))
    }

    /// 401 unless the caller may see `vhost` (404 if it does not exist is
    /// the handler's business).
    pub(crate) fn check_vhost(&self, vhost: &str) -> Result<(), ApiError> {
        if self.sees_vhost(vhost) {
            return Ok(());
        }
        Err(ApiError::unauthorized("not_authorised", "Access refused."))
    }
}

/// Middleware: a loopback-only user (guest) is refused from elsewhere,
/// as RabbitMQ's `loopback_users` also applies to the management API.
pub(super) async fn loopback_users(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let user = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(basic_credentials)
        .map(|(user, _)| user);
    match user {
        Some(user) if !may_log_in_from(&user, peer.ip().is_loopback()) => {
            ApiError::unauthorized("not_authorized", "Login failed").into_response()
        }
        _ => next.run(request).await,
    }
}

/// (user, password) of an `Authorization: Basic ...` header value.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ")?;
    let text = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

impl Api {
    /// Checks the request's credentials and that the caller has `need`.
    /// `authorize`, for a request about one vhost the caller must see.
    pub(crate) async fn authorize_in(
        &self,
        headers: &HeaderMap,
        need: Need,
        vhost: &str,
    ) -> Result<Caller, ApiError> {
        let caller = self.authorize(headers, need).await?;
        caller.check_vhost(vhost)?;
        Ok(caller)
    }

    pub(crate) async fn authorize(
        &self,
        headers: &HeaderMap,
        need: Need,
    ) -> Result<Caller, ApiError> {
        let login_failed = || ApiError::unauthorized("not_authorized", "Login failed");
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(login_failed)?;
        if let Some(token) = header.strip_prefix("Bearer ") {
            if token.as_bytes() != self.token.as_bytes() {
                return Err(login_failed());
            }
            return Ok(Caller {
                name: "warrenctl".to_owned(),
                tags: vec!["administrator".to_owned()],
                vhosts: None,
                operator: true,
            });
        }
        let (user, password) = basic_credentials(header).ok_or_else(login_failed)?;
        let caller = self
            .bridge
            .on_shard(0, move |shard| {
                let catalog = shard.catalog.borrow();
                let known = catalog.user(&user)?;
                if !known.password_hash.matches(&password) {
                    return None;
                }
                let all = known.has_tag("administrator") || known.has_tag("monitoring");
                let vhosts = (!all).then(|| {
                    catalog
                        .permissions()
                        .filter(|p| p.user == user)
                        .map(|p| p.vhost.clone())
                        .collect()
                });
                Some(Caller {
                    name: user,
                    tags: known.tags.clone(),
                    vhosts,
                    operator: false,
                })
            })
            .await?
            .ok_or_else(login_failed)?;
        if !need.granted_by(&caller.tags) {
            return Err(ApiError::unauthorized("not_authorised", need.refusal()));
        }
        Ok(caller)
    }
}
