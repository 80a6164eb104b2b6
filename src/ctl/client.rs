//! warrenctl's way to the broker: the management API on 127.0.0.1, with
//! the operator token the broker wrote into its data directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::CtlError;
use crate::management::TOKEN_FILE;

/// Upper bound for one request to the broker.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// An API answer: status and JSON body (Null when empty).
pub(crate) struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Client {
    /// Reads `data_dir/warrenctl.token` (port, then token).
    pub(crate) fn from_data_dir(data_dir: &Path) -> Result<Client, CtlError> {
        let path: PathBuf = data_dir.join(TOKEN_FILE);
        let text = std::fs::read_to_string(&path).map_err(|err| {
            CtlError::unavailable(format!(
                "warren does not seem to be running: cannot read {} ({err}); start it, or point --data-dir / WARREN_DATA_DIR at its data directory",
                path.display()
            ))
        })?;
        let mut lines = text.lines();
        let port = lines
            .next()
            .and_then(|line| line.trim().parse::<u16>().ok());
        let token = lines.next().map(str::trim).filter(|t| !t.is_empty());
        let (Some(port), Some(token)) = (port, token) else {
            return Err(CtlError::unavailable(format!(
                "{} is not a token file warren wrote",
                path.display()
            )));
        };
        Ok(Client {
            base: format!("http://127.0.0.1:{port}"),
            token: token.to_owned(),
            agent: ureq::AgentBuilder::new().timeout(REQUEST_TIMEOUT).build(),
        })
    }

    /// `method path` with an optional body and extra headers.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, CtlError> {
        let mut request = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token));
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let result = match body {
            Some(body) => request
                .set("Content-Type", "application/json")
                .send_string(&body.to_string()),
            None => request.call(),
        };
        let response = match result {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(err) => {
                return Err(CtlError::unavailable(format!(
                    "cannot reach warren at {}: {err}; is it running?",
                    self.base
                )))
            }
        };
        let status = response.status();
        let text = response
            .into_string()
            .map_err(|err| CtlError::unavailable(format!("reading the answer: {err}")))?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Answer { status, body })
    }

    /// A GET that must succeed.
    pub fn get(&self, path: &str) -> Result<Value, CtlError> {
        let answer = self.call("GET", path, None, &[])?;
        answer.ok(path)?;
        Ok(answer.body)
    }

    /// Whether the API still answers (for `stop`, which waits until not).
    pub fn answers(&self) -> bool {
        self.call("GET", "/api/whoami", None, &[]).is_ok()
    }
}

impl Answer {
    /// 2xx, else the API's reason as an error.
    pub fn ok(&self, what: &str) -> Result<(), CtlError> {
        if (200..300).contains(&self.status) {
            return Ok(());
        }
        Err(self.error(what))
    }

    pub fn error(&self, what: &str) -> CtlError {
        let reason = self.body["reason"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| self.body.to_string());
        CtlError::software(format!("{what}: {reason} (HTTP {})", self.status))
    }
}
