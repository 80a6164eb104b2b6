//! RabbitMQ's own HTTP API client, `rabbitmqadmin` (shipped in Debian's
//! rabbitmq-server package; `.ci/run` installs it), drives warren
//! unchanged: declare, publish, get, list, delete, users, vhosts,
//! permissions, export and import.
//!
//! Differential mode runs it against RabbitMQ's management API
//! (`WARREN_TEST_MANAGEMENT_URL`); names carry a random suffix.

mod common;

use common::command::{run, Output};
use common::Broker;
use serde_json::Value;

const RABBITMQADMIN: &str = "/usr/bin/rabbitmqadmin";

fn unique(what: &str) -> String {
    format!("admintests-{what}-{:08x}", rand::random::<u32>())
}

/// rabbitmqadmin pointed at the broker's management API as guest.
struct Admin {
    host: String,
    port: String,
}

impl Admin {
    fn new(broker: &Broker) -> Admin {
        assert!(
            std::path::Path::new(RABBITMQADMIN).exists(),
            "{RABBITMQADMIN} is missing: install Debian's rabbitmq-server package (.ci/run does)"
        );
        let url = broker.management_url();
        let authority = url.trim_start_matches("http://");
        let (host, port) = authority.rsplit_once(':').expect("host:port");
        Admin {
            host: host.to_owned(),
            port: port.trim_end_matches('/').to_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec![
            "-H", &self.host, "-P", &self.port, "-u", "guest", "-p", "guest",
        ];
        all.extend_from_slice(args);
        run(RABBITMQADMIN, &all, &[])
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert_eq!(output.code, 0, "rabbitmqadmin {args:?}: {output:?}");
        output.stdout
    }

    /// `list ...` as JSON.
    fn list(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["-f", "raw_json", "list"];
        all.extend_from_slice(args);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    }

    fn names(&self, what: &str) -> Vec<String> {
        self.list(&[what, "name"])
            .iter()
            .filter_map(|item| item["name"].as_str().map(str::to_owned))
            .collect()
    }
}

#[test]
fn rabbitmqadmin_declares_publishes_gets_lists_and_deletes() {
    let broker = Broker::start_managed(&[]);
    let admin = Admin::new(&broker);
    let (queue, exchange) = (unique("q"), unique("x"));
    let name = |value: &str| format!("name={value}");
    admin.ok(&["declare", "queue", &name(&queue), "durable=false"]);
    admin.ok(&["declare", "exchange", &name(&exchange), "type=fanout"]);
    admin.ok(&[
        "declare",
        "binding",
        &format!("source={exchange}"),
        &format!("destination={queue}"),
    ]);
    assert!(admin.names("queues").contains(&queue));
    assert!(admin.names("exchanges").contains(&exchange));
    let bindings = admin.list(&["bindings"]);
    assert!(bindings
        .iter()
        .any(|b| b["source"] == exchange.as_str() && b["destination"] == queue.as_str()));
    let published = admin.ok(&[
        "publish",
        &format!("exchange={exchange}"),
        "routing_key=any",
        "payload=hello from rabbitmqadmin",
    ]);
    assert!(published.contains("Message published"), "{published}");
    let got = admin.ok(&[
        "-f",
        "raw_json",
        "get",
        &format!("queue={queue}"),
        "ackmode=ack_requeue_false",
    ]);
    let got: Value = serde_json::from_str(&got).expect("JSON");
    assert_eq!(got[0]["payload"], "hello from rabbitmqadmin");
    assert_eq!(got[0]["exchange"], exchange.as_str());
    assert_eq!(got[0]["message_count"], 0);
    admin.ok(&["purge", "queue", &name(&queue)]);
    admin.ok(&["delete", "queue", &name(&queue)]);
    admin.ok(&["delete", "exchange", &name(&exchange)]);
    assert!(!admin.names("queues").contains(&queue));
    let missing = admin.run(&["delete", "queue", &name(&queue)]);
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("Not found"), "{missing:?}");
}

#[test]
fn rabbitmqadmin_manages_users_vhosts_permissions_and_definitions() {
    let broker = Broker::start_managed(&[]);
    let admin = Admin::new(&broker);
    let (user, vhost, queue) = (unique("user"), unique("vhost"), unique("q"));
    admin.ok(&[
        "declare",
        "user",
        &format!("name={user}"),
        "password=pw",
        "tags=monitoring",
    ]);
    admin.ok(&["declare", "vhost", &format!("name={vhost}")]);
    admin.ok(&[
        "declare",
        "permission",
        &format!("vhost={vhost}"),
        &format!("user={user}"),
        "configure=.*",
        "write=^w",
        "read=^r",
    ]);
    admin.ok(&["-V", &vhost, "declare", "queue", &format!("name={queue}")]);
    let ceiling = unique("ceiling");
    admin.ok(&[
        "-V",
        &vhost,
        "declare",
        "operator_policy",
        &format!("name={ceiling}"),
        "pattern=^q",
        "definition={\"max-length\": 10}",
        "apply-to=queues",
    ]);
    let operator = admin.list(&["operator_policies"]);
    let listed = operator
        .iter()
        .find(|p| p["name"] == ceiling.as_str())
        .expect("operator policy listed");
    assert_eq!(listed["definition"], serde_json::json!({"max-length": 10}));
    let users = admin.list(&["users"]);
    let listed = users
        .iter()
        .find(|u| u["name"] == user.as_str())
        .expect("user listed");
    assert_eq!(listed["tags"], serde_json::json!(["monitoring"]));
    assert!(admin.names("vhosts").contains(&vhost));
    let permissions = admin.list(&["permissions"]);
    assert!(permissions
        .iter()
        .any(|p| p["user"] == user.as_str() && p["vhost"] == vhost.as_str() && p["write"] == "^w"));

    let file = std::env::temp_dir().join(format!("{}.json", unique("definitions")));
    let path = file.display().to_string();
    admin.ok(&["export", &path]);
    admin.ok(&["delete", "vhost", &format!("name={vhost}")]);
    admin.ok(&["delete", "user", &format!("name={user}")]);
    assert!(!admin.names("vhosts").contains(&vhost));
    admin.ok(&["import", &path]);
    let _ = std::fs::remove_file(&file);
    assert!(
        admin.names("vhosts").contains(&vhost),
        "the import brings the vhost back"
    );
    assert!(admin.names("users").contains(&user));
    let queues = admin.list(&["queues", "name", "vhost"]);
    assert!(queues
        .iter()
        .any(|q| q["name"] == queue.as_str() && q["vhost"] == vhost.as_str()));
    // One vhost's definitions: its objects without a vhost field.
    let vhost_file = std::env::temp_dir().join(format!("{}.json", unique("vhost-definitions")));
    let vhost_path = vhost_file.display().to_string();
    admin.ok(&["-V", &vhost, "export", &vhost_path]);
    let exported: Value =
        serde_json::from_str(&std::fs::read_to_string(&vhost_file).expect("exported"))
            .expect("JSON");
    assert_eq!(exported["queues"][0]["name"], queue.as_str(), "{exported}");
    assert!(exported["queues"][0].get("vhost").is_none(), "{exported}");
    admin.ok(&["-V", &vhost, "delete", "queue", &format!("name={queue}")]);
    admin.ok(&["-V", &vhost, "import", &vhost_path]);
    let _ = std::fs::remove_file(&vhost_file);
    let queues = admin.list(&["queues", "name", "vhost"]);
    assert!(queues
        .iter()
        .any(|q| q["name"] == queue.as_str() && q["vhost"] == vhost.as_str()));
    let operator = admin.list(&["operator_policies"]);
    assert!(
        operator.iter().any(|p| p["name"] == ceiling.as_str()),
        "exported and imported: {operator:?}"
    );
    admin.ok(&[
        "-V",
        &vhost,
        "delete",
        "operator_policy",
        &format!("name={ceiling}"),
    ]);
    assert!(admin
        .list(&["operator_policies"])
        .iter()
        .all(|p| p["name"] != ceiling.as_str()));
    admin.ok(&["delete", "vhost", &format!("name={vhost}")]);
    admin.ok(&["delete", "user", &format!("name={user}")]);
}
