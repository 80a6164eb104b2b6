//! `warrenctl` against a real warren: rabbitmqctl's command names,
//! banners, header rows (recorded from rabbitmqctl 3.10 below), `-q`,
//! `--formatter json`, exit codes, the token in the data directory, and
//! `stop`.
//!
//! warrenctl talks to warren only (it reads the token warren writes), so
//! in differential mode these tests have nothing to run against.

mod common;

use std::time::Duration;

use common::command::{run, Output};
use common::http::Http;
use common::Broker;
use serde_json::{json, Value};

const WARRENCTL: &str = env!("CARGO_BIN_EXE_warrenctl");

fn ctl(broker: &Broker, args: &[&str]) -> Output {
    let dir = broker.data_dir().display().to_string();
    let mut all = vec!["--data-dir", dir.as_str()];
    all.extend_from_slice(args);
    run(WARRENCTL, &all, &[])
}

fn ok(broker: &Broker, args: &[&str]) -> Vec<String> {
    let output = ctl(broker, args);
    assert_eq!(output.code, 0, "warrenctl {args:?}: {output:?}");
    output.stdout.lines().map(str::to_owned).collect()
}

fn managed() -> Option<Broker> {
    let broker = Broker::start_managed(&[]);
    (!broker.is_external()).then_some(broker)
}

#[test]
fn list_commands_print_rabbitmqctls_banner_and_columns() {
    let Some(broker) = managed() else { return };
    let api = Http::new(&broker.management_url(), "guest", "guest");
    api.ok("PUT", "/api/queues/%2F/ctl-q", &json!({"durable": true}));
    api.ok(
        "POST",
        "/api/bindings/%2F/e/amq.direct/q/ctl-q",
        &json!({"routing_key": "k"}),
    );
    api.ok(
        "PUT",
        "/api/policies/%2F/cap",
        &json!({"pattern": "^ctl", "definition": {"max-length": 5}}),
    );
    let ceiling = json!({"pattern": "^ctl", "definition": {"max-length": 3}, "apply-to": "queues", "priority": 1});
    api.ok("PUT", "/api/operator-policies/%2F/ceiling", &ceiling);
    // The first lines rabbitmqctl 3.10 prints for each, banner then header.
    let expected: &[(&[&str], &[&str])] = &[
        (&["list_queues"], &["Timeout: 60.0 seconds ...", "Listing queues for vhost / ...", "name\tmessages"]),
        (&["list_exchanges"], &["Listing exchanges for vhost / ...", "name\ttype"]),
        (&["list_bindings"], &["Listing bindings for vhost /...", "source_name\tsource_kind\tdestination_name\tdestination_kind\trouting_key\targuments"]),
        (&["list_users"], &["Listing users ...", "user\ttags", "guest\t[administrator]"]),
        (&["list_vhosts"], &["Listing vhosts ...", "name", "/"]),
        (&["list_permissions"], &["Listing permissions for vhost \"/\" ...", "user\tconfigure\twrite\tread", "guest\t.*\t.*\t.*"]),
        (&["list_user_permissions", "guest"], &["Listing permissions for user \"guest\" ...", "vhost\tconfigure\twrite\tread", "/\t.*\t.*\t.*"]),
        (&["list_policies"], &["Listing policies for vhost \"/\" ...", "vhost\tname\tpattern\tapply-to\tdefinition\tpriority", "/\tcap\t^ctl\tall\t{\"max-length\":5}\t0"]),
        (&["list_operator_policies"], &["Listing operator policy overrides for vhost \"/\" ...", "vhost\tname\tpattern\tapply-to\tdefinition\tpriority", "/\tceiling\t^ctl\tqueues\t{\"max-length\":3}\t1"]),
        (&["list_queues", "name", "messages", "consumers", "durable"], &["Timeout: 60.0 seconds ...", "Listing queues for vhost / ...", "name\tmessages\tconsumers\tdurable", "ctl-q\t0\t0\ttrue"]),
    ];
    for (args, lines) in expected {
        let printed = ok(&broker, args);
        assert!(printed.len() >= lines.len(), "{args:?}: {printed:?}");
        assert_eq!(&printed[..lines.len()], *lines, "{args:?}");
    }
    let bindings = ok(&broker, &["-q", "list_bindings"]);
    assert!(
        bindings.contains(&"amq.direct\texchange\tctl-q\tqueue\tk\t[]".to_owned()),
        "{bindings:?}"
    );
    let quiet = ok(&broker, &["-q", "list_queues"]);
    assert_eq!(
        quiet,
        ["name\tmessages", "ctl-q\t0"],
        "-q drops the banner, not the header"
    );
    let json_lines = ok(
        &broker,
        &["--formatter", "json", "list_queues", "name", "durable"],
    );
    let parsed: Value = serde_json::from_str(&json_lines.join("\n")).expect("JSON");
    assert_eq!(parsed, json!([{"name": "ctl-q", "durable": true}]));
    let unknown = ctl(&broker, &["list_queues", "no_such_column"]);
    assert_eq!(unknown.code, 64, "{unknown:?}");
    let traffic = [
        "list_connections",
        "recv_oct",
        "recv_cnt",
        "send_oct",
        "send_cnt",
        "send_pend",
    ];
    assert_eq!(ok(&broker, &traffic), ["Listing connections ..."]);
}

#[test]
fn users_vhosts_permissions_and_policies_change_through_warrenctl() {
    let Some(broker) = managed() else { return };
    assert_eq!(
        ok(&broker, &["add_user", "zed", "pw"])[0],
        "Adding user \"zed\" ..."
    );
    ok(
        &broker,
        &["set_user_tags", "zed", "management", "policymaker"],
    );
    ok(&broker, &["add_vhost", "vz"]);
    ok(
        &broker,
        &["set_permissions", "-p", "vz", "zed", "^z", ".*", ".*"],
    );
    let users = ok(&broker, &["-q", "list_users"]);
    assert!(
        users.contains(&"zed\t[management, policymaker]".to_owned()),
        "{users:?}"
    );
    let permissions = ok(&broker, &["-q", "list_permissions", "-p", "vz"]);
    assert_eq!(
        permissions,
        ["user\tconfigure\twrite\tread", "zed\t^z\t.*\t.*"]
    );
    let api = Http::new(&broker.management_url(), "zed", "pw");
    assert_eq!(
        api.get("/api/whoami").0,
        200,
        "zed logs in with the password warrenctl set"
    );
    ok(&broker, &["change_password", "zed", "new"]);
    assert_eq!(
        api.get("/api/whoami").0,
        401,
        "the old password no longer works"
    );
    ok(
        &broker,
        &[
            "set_policy",
            "-p",
            "vz",
            "--priority",
            "3",
            "--apply-to",
            "queues",
            "cap",
            "^z",
            "{\"max-length\":7}",
        ],
    );
    let policies = ok(&broker, &["-q", "list_policies", "-p", "vz"]);
    assert_eq!(policies[1], "vz\tcap\t^z\tqueues\t{\"max-length\":7}\t3");
    let json_lines = ok(
        &broker,
        &["--formatter", "json", "list_policies", "-p", "vz"],
    );
    let parsed: Value = serde_json::from_str(&json_lines.join("\n")).expect("JSON");
    assert_eq!(
        parsed[0]["definition"], "{\"max-length\":7}",
        "JSON text, as rabbitmqctl"
    );
    ok(&broker, &["clear_policy", "-p", "vz", "cap"]);
    let set = ok(
        &broker,
        &[
            "set_operator_policy",
            "-p",
            "vz",
            "--apply-to",
            "queues",
            "ceiling",
            "^z",
            "{\"max-length\":2}",
        ],
    );
    assert_eq!(
        set[0],
        "Setting operator policy override \"ceiling\" for pattern \"^z\" to \"{\"max-length\":2}\" with priority \"0\" for vhost \"vz\" ..."
    );
    let bad = ctl(
        &broker,
        &[
            "set_operator_policy",
            "-p",
            "vz",
            "x",
            "^z",
            "{\"overflow\":\"drop-head\"}",
        ],
    );
    assert_ne!(bad.code, 0, "{bad:?}");
    let operator = ok(&broker, &["-q", "list_operator_policies", "-p", "vz"]);
    assert_eq!(
        operator[1],
        "vz\tceiling\t^z\tqueues\t{\"max-length\":2}\t0"
    );
    let cleared = ok(&broker, &["clear_operator_policy", "-p", "vz", "ceiling"]);
    assert_eq!(
        cleared[0],
        "Clearing operator policy \"ceiling\" on vhost \"vz\" ..."
    );
    let gone = ctl(&broker, &["clear_operator_policy", "-p", "vz", "ceiling"]);
    assert_eq!(gone.stderr.trim(), "Error: Parameter does not exist");
    ok(&broker, &["clear_permissions", "-p", "vz", "zed"]);
    ok(&broker, &["delete_vhost", "vz"]);
    ok(&broker, &["delete_user", "zed"]);
    let gone = ctl(&broker, &["delete_user", "zed"]);
    assert_eq!(gone.code, 67, "rabbitmqctl's EX_NOUSER: {gone:?}");
    assert_eq!(gone.stderr.trim(), "Error: User \"zed\" does not exist");
}

#[test]
fn warrenctl_says_in_one_line_when_no_broker_runs() {
    let dir = std::env::temp_dir().join(format!("warrenctl-none-{}", std::process::id()));
    let path = dir.display().to_string();
    let output = run(WARRENCTL, &["--data-dir", &path, "list_queues"], &[]);
    assert_eq!(output.code, 69, "{output:?}");
    assert_eq!(output.stderr.lines().count(), 1, "{output:?}");
    assert!(
        output.stderr.contains("not seem to be running"),
        "{output:?}"
    );
}

#[test]
fn the_token_is_private_and_stop_stops_the_broker_as_sigterm_does() {
    let Some(mut broker) = managed() else { return };
    use std::os::unix::fs::PermissionsExt;
    let token = broker.data_dir().join("warrenctl.token");
    let mode = std::fs::metadata(&token)
        .expect("token file")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "only the broker's user may read the token"
    );
    let stopped = ok(&broker, &["stop"]);
    assert_eq!(stopped, ["Stopping and halting node warren@localhost ..."]);
    let status = broker.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "warren exited with {status}");
    assert!(
        !token.exists(),
        "the broker removes its token when it stops"
    );
}
