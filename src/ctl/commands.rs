//! Each warrenctl command: its arguments, the API calls it makes and the
//! lines rabbitmqctl prints for it.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::Client;
use super::listing::Listing;
use super::{CtlError, Invocation};

/// Every command, for the usage message.
pub(crate) const NAMES: [&str; 32] = [
    "status",
    "stop",
    "list_queues",
    "list_exchanges",
    "list_bindings",
    "list_connections",
    "list_channels",
    "list_consumers",
    "list_users",
    "add_user",
    "delete_user",
    "change_password",
    "set_user_tags",
    "list_vhosts",
    "add_vhost",
    "delete_vhost",
    "set_permissions",
    "clear_permissions",
    "list_permissions",
    "list_user_permissions",
    "set_policy",
    "clear_policy",
    "list_policies",
    "set_operator_policy",
    "clear_operator_policy",
    "list_operator_policies",
    "purge_queue",
    "delete_queue",
    "close_connection",
    "export_definitions",
    "import_definitions",
    "help",
];

/// How long `stop` waits for the broker to go.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A path segment, percent-encoded (vhost "/" is "%2F").
fn segment(text: &str) -> String {
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

/// Exactly `N` positional arguments, or a usage error.
fn args<const N: usize>(invocation: &Invocation, usage: &str) -> Result<[String; N], CtlError> {
    <[String; N]>::try_from(invocation.args.clone())
        .map_err(|_| CtlError::usage(format!("usage: warrenctl {} {usage}", invocation.command)))
}

fn say(invocation: &Invocation, line: String) {
    if !invocation.quiet {
        println!("{line}");
    }
}

pub fn run(invocation: &Invocation, data_dir: &Path) -> Result<(), CtlError> {
    if invocation.command == "help" {
        println!("warrenctl commands: {}", NAMES.join(", "));
        return Ok(());
    }
    if !NAMES.contains(&invocation.command.as_str()) {
        return Err(CtlError::usage(format!(
            "unknown command '{}'; commands: {}",
            invocation.command,
            NAMES.join(", ")
        )));
    }
    let client = Client::from_data_dir(data_dir)?;
    if invocation.command.starts_with("list_") {
        return listing(invocation, &client)?.print(invocation);
    }
    match invocation.command.as_str() {
        "status" => status(invocation, &client),
        "stop" => stop(invocation, &client),
        "export_definitions" | "import_definitions" => definitions(invocation, &client),
        "purge_queue" | "delete_queue" | "close_connection" => {
            resource_command(invocation, &client)
        }
        _ => access_command(invocation, &client),
    }
}

/// Which rows of an API listing a command shows.
#[derive(Clone, Copy)]
enum Only {
    All,
    /// Rows whose `vhost` is `-p`'s.
    Vhost,
    /// Consumers of queues in `-p`'s vhost.
    QueueVhost,
    /// Rows whose `user` is the first argument.
    User,
}

/// A list command: the API path (`{v}`: the vhost), rabbitmqctl's banner
/// (`{vhost}`, `{user}`), its rows, default and known columns.
struct ListSpec {
    command: &'static str,
    path: &'static str,
    banner: &'static str,
    only: Only,
    default_columns: &'static [&'static str],
    known_columns: &'static [&'static str],
}

const QUEUE_COLUMNS: &[&str] = &[
    "name",
    "messages",
    "messages_ready",
    "messages_unacknowledged",
    "consumers",
    "durable",
    "auto_delete",
    "exclusive",
    "arguments",
    "type",
    "state",
    "policy",
    "vhost",
];
const BINDING_COLUMNS: &[&str] = &[
    "source_name",
    "source_kind",
    "destination_name",
    "destination_kind",
    "routing_key",
    "arguments",
];
const CONNECTION_COLUMNS: &[&str] = &[
    "user",
    "peer_host",
    "peer_port",
    "state",
    "name",
    "vhost",
    "channels",
    "protocol",
    "frame_max",
    "channel_max",
    "timeout",
    "auth_mechanism",
    "ssl",
    "recv_oct",
    "recv_cnt",
    "send_oct",
    "send_cnt",
    "send_pend",
];
const POLICY_COLUMNS: &[&str] = &[
    "vhost",
    "name",
    "pattern",
    "apply-to",
    "definition",
    "priority",
];

const LISTS: [ListSpec; 12] = [
    ListSpec {
        command: "list_queues",
        path: "/api/queues/{v}",
        banner: "Timeout: 60.0 seconds ...\nListing queues for vhost {vhost} ...",
        only: Only::All,
        default_columns: &["name", "messages"],
        known_columns: QUEUE_COLUMNS,
    },
    ListSpec {
        command: "list_exchanges",
        path: "/api/exchanges/{v}",
        banner: "Listing exchanges for vhost {vhost} ...",
        only: Only::All,
        default_columns: &["name", "type"],
        known_columns: &[
            "name",
            "type",
            "durable",
            "auto_delete",
            "internal",
            "arguments",
            "policy",
            "vhost",
        ],
    },
    ListSpec {
        command: "list_bindings",
        path: "/api/bindings/{v}",
        banner: "Listing bindings for vhost {vhost}...",
        only: Only::All,
        default_columns: BINDING_COLUMNS,
        known_columns: BINDING_COLUMNS,
    },
    ListSpec {
        command: "list_connections",
        path: "/api/connections",
        banner: "Listing connections ...",
        only: Only::All,
        default_columns: &["user", "peer_host", "peer_port", "state"],
        known_columns: CONNECTION_COLUMNS,
    },
    ListSpec {
        command: "list_channels",
        path: "/api/channels",
        banner: "Listing channels ...",
        only: Only::All,
        default_columns: &["pid", "user", "consumer_count", "messages_unacknowledged"],
        known_columns: &[
            "pid",
            "name",
            "number",
            "user",
            "vhost",
            "consumer_count",
            "messages_unacknowledged",
        ],
    },
    ListSpec {
        command: "list_consumers",
        path: "/api/consumers",
        banner: "Listing consumers in vhost {vhost} ...",
        only: Only::QueueVhost,
        default_columns: &["queue_name", "channel_pid", "consumer_tag"],
        known_columns: &["queue_name", "channel_pid", "consumer_tag"],
    },
    ListSpec {
        command: "list_users",
        path: "/api/users",
        banner: "Listing users ...",
        only: Only::All,
        default_columns: &["user", "tags"],
        known_columns: &["user", "tags"],
    },
    ListSpec {
        command: "list_vhosts",
        path: "/api/vhosts",
        banner: "Listing vhosts ...",
        only: Only::All,
        default_columns: &["name"],
        known_columns: &["name", "description", "tags", "tracing"],
    },
    ListSpec {
        command: "list_permissions",
        path: "/api/permissions",
        banner: "Listing permissions for vhost \"{vhost}\" ...",
        only: Only::Vhost,
        default_columns: &["user", "configure", "write", "read"],
        known_columns: &["user", "configure", "write", "read"],
    },
    ListSpec {
        command: "list_user_permissions",
        path: "/api/permissions",
        banner: "Listing permissions for user \"{user}\" ...",
        only: Only::User,
        default_columns: &["vhost", "configure", "write", "read"],
        known_columns: &["vhost", "configure", "write", "read"],
    },
    ListSpec {
        command: "list_policies",
        path: "/api/policies/{v}",
        banner: "Listing policies for vhost \"{vhost}\" ...",
        only: Only::All,
        default_columns: POLICY_COLUMNS,
        known_columns: POLICY_COLUMNS,
    },
    ListSpec {
        command: "list_operator_policies",
        path: "/api/operator-policies/{v}",
        banner: "Listing operator policy overrides for vhost \"{vhost}\" ...",
        only: Only::All,
        default_columns: POLICY_COLUMNS,
        known_columns: POLICY_COLUMNS,
    },
];

fn listing(invocation: &Invocation, client: &Client) -> Result<Listing, CtlError> {
    let spec = LISTS
        .iter()
        .find(|spec| spec.command == invocation.command)
        .ok_or_else(|| CtlError::usage(format!("unknown command '{}'", invocation.command)))?;
    let vhost = invocation.vhost.as_str();
    let user = match spec.only {
        Only::User => invocation.args.first().cloned().ok_or_else(|| {
            CtlError::usage("usage: warrenctl list_user_permissions USER [COLUMN ...]")
        })?,
        _ => String::new(),
    };
    let path = spec.path.replace("{v}", &segment(vhost));
    let rows = client.get(&path)?.as_array().cloned().unwrap_or_default();
    let rows = rows
        .into_iter()
        .filter(|row| match spec.only {
            Only::All => true,
            Only::Vhost => row["vhost"] == vhost,
            Only::QueueVhost => row["queue"]["vhost"] == vhost,
            Only::User => row["user"] == user.as_str(),
        })
        .collect();
    Ok(Listing {
        banner: spec
            .banner
            .replace("{vhost}", vhost)
            .replace("{user}", &user),
        rows,
        default_columns: spec.default_columns,
        known_columns: spec.known_columns,
        leading_args: usize::from(matches!(spec.only, Only::User)),
    })
}

fn status(invocation: &Invocation, client: &Client) -> Result<(), CtlError> {
    let overview = client.get("/api/overview")?;
    say(invocation, "Status of node warren@localhost ...".to_owned());
    if invocation.json {
        println!("{overview}");
        return Ok(());
    }
    println!(
        "Runtime\n\nProduct name: warren\nProduct version: {}",
        overview["product_version"].as_str().unwrap_or("")
    );
    println!("\nListeners\n");
    for listener in overview["listeners"].as_array().into_iter().flatten() {
        println!(
            "Interface: [::], port: {}, protocol: {}",
            listener["port"],
            listener["protocol"].as_str().unwrap_or("")
        );
    }
    let totals = &overview["object_totals"];
    println!(
        "\nTotals\n\nConnection count: {}\nQueue count: {}\nVirtual host count: {}",
        totals["connections"],
        totals["queues"],
        client.get("/api/vhosts")?.as_array().map_or(0, Vec::len)
    );
    Ok(())
}

/// Asks the broker to stop (as SIGTERM does) and waits until it is gone.
fn stop(invocation: &Invocation, client: &Client) -> Result<(), CtlError> {
    say(
        invocation,
        "Stopping and halting node warren@localhost ...".to_owned(),
    );
    client
        .call("POST", "/api/warren/stop", None, &[])?
        .ok("stop")?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while client.answers() {
        if Instant::now() > deadline {
            return Err(CtlError::software(format!(
                "warren is still running {STOP_TIMEOUT:?} after stop"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn definitions(invocation: &Invocation, client: &Client) -> Result<(), CtlError> {
    let [path] = args::<1>(invocation, "PATH (or - for stdout/stdin)")?;
    if invocation.command == "export_definitions" {
        say(
            invocation,
            format!("Exporting definitions in JSON to a file at \"{path}\" ..."),
        );
        let definitions = client.get("/api/definitions")?;
        let text = serde_json::to_string_pretty(&definitions).unwrap_or_default();
        if path == "-" {
            println!("{text}");
            return Ok(());
        }
        return std::fs::write(&path, text)
            .map_err(|err| CtlError::software(format!("cannot write {path}: {err}")));
    }
    say(
        invocation,
        format!("Importing definitions in JSON from a file at \"{path}\" ..."),
    );
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(&path)
    }
    .map_err(|err| CtlError::data(format!("cannot read {path}: {err}")))?;
    let definitions: Value = serde_json::from_str(&text)
        .map_err(|err| CtlError::data(format!("{path} is not JSON: {err}")))?;
    client
        .call("POST", "/api/definitions", Some(&definitions), &[])?
        .ok("import")?;
    say(invocation, "Successfully started definition import. This process is asynchronous and can take some time.".to_owned());
    Ok(())
}

fn resource_command(invocation: &Invocation, client: &Client) -> Result<(), CtlError> {
    let v = segment(&invocation.vhost);
    let vhost = &invocation.vhost;
    match invocation.command.as_str() {
        "purge_queue" => {
            let [queue] = args::<1>(invocation, "[-p VHOST] QUEUE")?;
            say(
                invocation,
                format!("Purging queue '{queue}' in vhost '{vhost}' ..."),
            );
            let answer = client.call(
                "DELETE",
                &format!("/api/queues/{v}/{}/contents", segment(&queue)),
                None,
                &[],
            )?;
            if answer.status == 404 {
                return Err(CtlError::unavailable("not_found"));
            }
            answer.ok("purge_queue")
        }
        "delete_queue" => {
            let [queue] = args::<1>(invocation, "[-p VHOST] QUEUE")?;
            say(
                invocation,
                format!("Deleting queue '{queue}' on vhost '{vhost}' ..."),
            );
            let answer = client.call(
                "DELETE",
                &format!("/api/queues/{v}/{}", segment(&queue)),
                None,
                &[],
            )?;
            if answer.status == 404 {
                return Err(CtlError::usage("Queue not found"));
            }
            answer.ok("delete_queue")
        }
        _ => {
            let [name, reason] = args::<2>(invocation, "CONNECTION_NAME REASON")?;
            say(
                invocation,
                format!("Closing connection {name}, reason: {reason}..."),
            );
            let path = format!("/api/connections/{}", segment(&name));
            let answer = client.call("DELETE", &path, None, &[("X-Reason", &reason)])?;
            if answer.status == 404 {
                return Err(CtlError::data(format!("no connection named '{name}'")));
            }
            answer.ok("close_connection")
        }
    }
}

/// The user's current definition, or rabbitmqctl's "does not exist".
fn existing_user(client: &Client, user: &str) -> Result<Value, CtlError> {
    let answer = client.call("GET", &format!("/api/users/{}", segment(user)), None, &[])?;
    if answer.status == 404 {
        return Err(CtlError::no_user(format!("User \"{user}\" does not exist")));
    }
    answer.ok("user")?;
    Ok(answer.body)
}

fn put(client: &Client, path: &str, body: &Value, what: &str) -> Result<(), CtlError> {
    client.call("PUT", path, Some(body), &[])?.ok(what)
}

fn access_command(invocation: &Invocation, client: &Client) -> Result<(), CtlError> {
    match invocation.command.as_str() {
        "add_user" | "delete_user" | "change_password" | "set_user_tags" => {
            user_command(invocation, client)
        }
        "add_vhost" | "delete_vhost" => {
            let [name] = args::<1>(invocation, "VHOST")?;
            let path = format!("/api/vhosts/{}", segment(&name));
            if invocation.command == "add_vhost" {
                say(invocation, format!("Adding vhost \"{name}\" ..."));
                return put(client, &path, &json!({}), "add_vhost");
            }
            say(invocation, format!("Deleting vhost \"{name}\" ..."));
            let answer = client.call("DELETE", &path, None, &[])?;
            if answer.status == 404 {
                return Err(CtlError::software(format!(
                    "Virtual host '{name}' does not exist"
                )));
            }
            answer.ok("delete_vhost")
        }
        "set_permissions" | "clear_permissions" => permission_command(invocation, client),
        _ => policy_command(invocation, client),
    }
}

fn user_command(invocation: &Invocation, client: &Client) -> Result<(), CtlError> {
    let user = invocation.args.first().cloned().unwrap_or_default();
    let path = format!("/api/users/{}", segment(&user));
    match invocation.command.as_str() {
        "add_user" => {
            let [user, password] = args::<2>(invocation, "USER PASSWORD")?;
            say(invocation, format!("Adding user \"{user}\" ..."));
            if client.call("GET", &path, None, &[])?.status == 200 {
                return Err(CtlError::software(format!(
                    "User \"{user}\" already exists"
                )));
            }
            put(
                client,
                &path,
                &json!({"password": password, "tags": ""}),
                "add_user",
            )?;
            say(invocation, "Done. Don't forget to grant the user permissions to some virtual hosts! See 'warrenctl help set_permissions' to learn more.".to_owned());
            Ok(())
        }
        "delete_user" => {
            let [user] = args::<1>(invocation, "USER")?;
            say(invocation, format!("Deleting user \"{user}\" ..."));
            let answer = client.call("DELETE", &path, None, &[])?;
            if answer.status == 404 {
                return Err(CtlError::no_user(format!("User \"{user}\" does not exist")));
            }
            answer.ok("delete_user")
        }
        "change_password" => {
            let [user, password] = args::<2>(invocation, "USER PASSWORD")?;
            say(
                invocation,
                format!("Changing password for user \"{user}\" ..."),
            );
            let current = existing_user(client, &user)?;
            put(
                client,
                &path,
                &json!({"password": password, "tags": current["tags"]}),
                "change_password",
            )
        }
        _ => {
            let tags: Vec<String> = invocation.args.iter().skip(1).cloned().collect();
            if user.is_empty() {
                return Err(CtlError::usage(
                    "usage: warrenctl set_user_tags USER [TAG ...]",
                ));
            }
            say(
                invocation,
                format!(
                    "Setting tags for user \"{user}\" to [{}] ...",
                    tags.join(", ")
                ),
            );
            let current = existing_user(client, &user)?;
            let body = json!({
                "password_hash": current["password_hash"],
                "hashing_algorithm": current["hashing_algorithm"],
                "tags": tags,
            });
            put(client, &path, &body, "set_user_tags")
        }
    }
}

fn permission_command(invocation: &Invocation, client: &Client) -> Result<(), CtlError> {
    let vhost = &invocation.vhost;
    if invocation.command == "set_permissions" {
        let [user, configure, write, read] =
            args::<4>(invocation, "[-p VHOST] USER CONF WRITE READ")?;
        say(
            invocation,
            format!("Setting permissions for user \"{user}\" in vhost \"{vhost}\" ..."),
        );
        let path = format!("/api/permissions/{}/{}", segment(vhost), segment(&user));
        let answer = client.call(
            "PUT",
            &path,
            Some(&json!({"configure": configure, "write": write, "read": read})),
            &[],
        )?;
        if answer.status == 400 && answer.body["reason"] == "vhost_or_user_not_found" {
            existing_user(client, &user)?;
            return Err(CtlError::software(format!(
                "Virtual host '{vhost}' does not exist"
            )));
        }
        return answer.ok("set_permissions");
    }
    let [user] = args::<1>(invocation, "[-p VHOST] USER")?;
    say(
        invocation,
        format!("Clearing permissions for user \"{user}\" in vhost \"{vhost}\" ..."),
    );
    let path = format!("/api/permissions/{}/{}", segment(vhost), segment(&user));
    let answer = client.call("DELETE", &path, None, &[])?;
    if answer.status == 404 {
        existing_user(client, &user)?;
        return Ok(());
    }
    answer.ok("clear_permissions")
}

/// set_policy / clear_policy and their operator-policy twins: the same
/// arguments and API, under another path and with other words.
fn policy_command(invocation: &Invocation, client: &Client) -> Result<(), CtlError> {
    let vhost = &invocation.vhost;
    let command = invocation.command.as_str();
    // rabbitmqctl calls an operator policy an override when it sets one.
    let (base, what, set_what) = if command.ends_with("operator_policy") {
        (
            "/api/operator-policies",
            "operator policy",
            "operator policy override",
        )
    } else {
        ("/api/policies", "policy", "policy")
    };
    if command.starts_with("set_") {
        let [name, pattern, definition] = args::<3>(
            invocation,
            "[-p VHOST] [--priority N] [--apply-to all|queues|exchanges] NAME PATTERN DEFINITION",
        )?;
        let priority = invocation
            .priority
            .clone()
            .unwrap_or_else(|| "0".to_owned());
        say(invocation, format!("Setting {set_what} \"{name}\" for pattern \"{pattern}\" to \"{definition}\" with priority \"{priority}\" for vhost \"{vhost}\" ..."));
        let definition: Value = serde_json::from_str(&definition)
            .map_err(|err| CtlError::data(format!("the definition is not JSON: {err}")))?;
        let body = json!({
            "pattern": pattern,
            "definition": definition,
            "priority": priority,
            "apply-to": invocation.apply_to.as_deref().unwrap_or("all"),
        });
        let path = format!("{base}/{}/{}", segment(vhost), segment(&name));
        return put(client, &path, &body, command);
    }
    let [name] = args::<1>(invocation, "[-p VHOST] NAME")?;
    say(
        invocation,
        format!("Clearing {what} \"{name}\" on vhost \"{vhost}\" ..."),
    );
    let path = format!("{base}/{}/{}", segment(vhost), segment(&name));
    let answer = client.call("DELETE", &path, None, &[])?;
    if answer.status == 404 {
        return Err(CtlError::software("Parameter does not exist"));
    }
    answer.ok(command)
}
