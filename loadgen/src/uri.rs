//! Parsing `amqp://user:password@host:port/vhost` URIs, as RabbitMQ's
//! clients read them.
//!
//! The user, password and vhost are percent-decoded. An empty or missing
//! path is the default vhost `/`, which a URI spells `%2f`. Omitted parts
//! take RabbitMQ's defaults: guest, guest, localhost, 5672. TLS (`amqps`)
//! and query parameters are refused rather than silently ignored, so that a
//! run never measures something other than what was asked for.

use std::fmt;

/// Where and as whom to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpUri {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub vhost: String,
}

/// Why a URI was refused, in a sentence for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UriError(pub String);

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AmqpUri {
    pub const DEFAULT: &'static str = "amqp://guest:guest@localhost:5672/%2f";
    const DEFAULT_PORT: u16 = 5672;

    pub fn parse(uri: &str) -> Result<AmqpUri, UriError> {
        let fail = |why: &str| Err(UriError(format!("bad URI '{uri}': {why}")));
        let Some((scheme, rest)) = uri.split_once("://") else {
            return fail("expected amqp://user:password@host:port/vhost");
        };
        match scheme.to_ascii_lowercase().as_str() {
            "amqp" => {}
            "amqps" => return fail("TLS (amqps) is not supported"),
            _ => return fail("the scheme must be amqp"),
        }
        if rest.contains(['?', '#']) {
            return fail("query parameters and fragments are not supported");
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(info) => {
                let (user, password) = info.split_once(':').unwrap_or((info, ""));
                (decode(user, uri)?, decode(password, uri)?)
            }
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| {
            UriError(format!(
                "bad URI '{uri}': the port must be a number from 1 to 65535"
            ))
        })?;
        if path.contains('/') {
            return fail("a vhost containing '/' must be written with %2f");
        }
        let vhost = match path {
            "" => "/".to_owned(),
            path => decode(path, uri)?,
        };
        Ok(AmqpUri {
            host: if host.is_empty() {
                "localhost".to_owned()
            } else {
                host
            },
            port: port.unwrap_or(Self::DEFAULT_PORT),
            user,
            password,
            vhost,
        })
    }

    /// `host:port`, for connecting and for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`; `None` for a bad port.
fn split_host_port(hostport: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = match hostport.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        },
    };
    let port = match port {
        None | Some("") => None,
        Some(port) => Some(port.parse::<u16>().ok().filter(|&p| p != 0)?),
    };
    Some((host.to_owned(), port))
}

fn decode(text: &str, uri: &str) -> Result<String, UriError> {
    let bad = || UriError(format!("bad URI '{uri}': bad percent-encoding in '{text}'"));
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let high = bytes.next().and_then(hex).ok_or_else(bad)?;
            let low = bytes.next().and_then(hex).ok_or_else(bad)?;
            out.push(high << 4 | low);
        } else {
            out.push(byte);
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(host: &str, port: u16, user: &str, password: &str, vhost: &str) -> AmqpUri {
        AmqpUri {
            host: host.into(),
            port,
            user: user.into(),
            password: password.into(),
            vhost: vhost.into(),
        }
    }

    #[test]
    fn the_default_uri_is_guest_on_localhost_and_the_default_vhost() {
        assert_eq!(
            AmqpUri::parse(AmqpUri::DEFAULT),
            Ok(uri("localhost", 5672, "guest", "guest", "/"))
        );
    }

    #[test]
    fn omitted_parts_take_rabbitmq_defaults() {
        assert_eq!(
            AmqpUri::parse("amqp://"),
            Ok(uri("localhost", 5672, "guest", "guest", "/"))
        );
        assert_eq!(
            AmqpUri::parse("amqp://127.0.0.1"),
            Ok(uri("127.0.0.1", 5672, "guest", "guest", "/"))
        );
        assert_eq!(
            AmqpUri::parse("AMQP://host:1234/"),
            Ok(uri("host", 1234, "guest", "guest", "/"))
        );
    }

    #[test]
    fn user_password_and_vhost_are_percent_decoded() {
        assert_eq!(
            AmqpUri::parse("amqp://us%40er:p%3Ass@h:5673/my%2fvhost"),
            Ok(uri("h", 5673, "us@er", "p:ss", "my/vhost"))
        );
        assert_eq!(
            AmqpUri::parse("amqp://a:b:c@h/v"),
            Ok(uri("h", 5672, "a", "b:c", "v"))
        );
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let parsed = AmqpUri::parse("amqp://[::1]:5680/%2F").unwrap();
        assert_eq!(parsed, uri("::1", 5680, "guest", "guest", "/"));
        assert_eq!(parsed.address(), "[::1]:5680");
    }

    #[test]
    fn bad_uris_are_refused_with_a_reason() {
        for (bad, why) in [
            ("localhost:5672", "expected amqp://"),
            ("http://localhost", "scheme must be amqp"),
            ("amqps://localhost", "TLS"),
            ("amqp://h:port", "port must be a number"),
            ("amqp://h:0", "port must be a number"),
            ("amqp://h:70000", "port must be a number"),
            ("amqp://h/a/b", "%2f"),
            ("amqp://h/%zz", "percent-encoding"),
            ("amqp://h/?heartbeat=5", "query"),
        ] {
            let error = AmqpUri::parse(bad).unwrap_err().0;
            assert!(error.contains(why), "{bad}: {error}");
            assert!(error.starts_with("bad URI"), "{error}");
        }
    }
}
