//! A small HTTP client for the management API (ureq, blocking), with
//! basic auth, answering (status, JSON) whatever the status.

use std::time::Duration;

use serde_json::Value;

/// Upper bound for one HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Http {
    base: String,
    authorization: String,
}

impl Http {
    pub fn new(base: &str, user: &str, password: &str) -> Http {
        use base64::Engine;
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Http {
            base: base.trim_end_matches('/').to_owned(),
            authorization: format!("Basic {credentials}"),
        }
    }

    /// `method path` with an optional JSON body; (status, body as JSON,
    /// or Null when empty).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let request = ureq::AgentBuilder::new()
            .timeout(HTTP_TIMEOUT)
            .build()
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &self.authorization);
        let result = match body {
            Some(body) => request
                .set("Content-Type", "application/json")
                .send_string(&body.to_string()),
            None => request.call(),
        };
        let response = match result {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(err) => panic!("{method} {path}: {err}"),
        };
        let status = response.status();
        let text = response.into_string().expect("read the body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"))
        };
        (status, json)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None)
    }

    pub fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("PUT", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        self.call("DELETE", path, None)
    }

    /// PUT or POST that must succeed (2xx).
    pub fn ok(&self, method: &str, path: &str, body: &Value) {
        let (status, answer) = self.call(method, path, Some(body));
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
    }
}
