//! The producer examples (`examples/node-producer`, `examples/python-producer`)
//! against a real NATS server with authorization and a real node: each
//! example publishes over JetStream as the shipped permission model's
//! producer user (which may only publish `<prefix>.user.>` and receive its
//! acks; `cluster/nats-auth.conf.tmpl`) and over HTTP with a
//! publisher token; the user's SSE stream must carry exactly those
//! notifications with the event ids the example printed, and a retried
//! publish of the same order transition must answer the same id and add
//! nothing. `scripts/install-producer-deps` installs the examples' packages.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use test_support::{new_secret, publisher_token, random_hex, users, Nats, SseStream, TestApp};

test_support::node_helpers!();

/// NATS, a node using it, and the environment an example needs for both paths.
struct Setup {
    /// One JetStream server with the shipped permission model: the node
    /// connects as its gateway user, the examples as its producer user.
    nats: Nats,
    app: TestApp,
}

impl Setup {
    async fn start() -> Setup {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let install = Command::new(root.join("scripts/install-producer-deps"))
            .status()
            .expect("run scripts/install-producer-deps");
        assert!(install.success(), "scripts/install-producer-deps failed");
        let nats = Nats::single().await;
        let app = start_node(&new_secret(), &nats.urls(), 1, &[]).await;
        Setup { nats, app }
    }

    /// Runs one example; returns what it printed as JSON.
    async fn run(&self, program: &[PathBuf], args: &[&str]) -> Value {
        let mut cmd = tokio::process::Command::new(&program[0]);
        cmd.args(&program[1..])
            .args(args)
            .env("NATS_URL", self.nats.urls())
            .env("NATS_USER", &users().producer.user)
            .env("NATS_PASSWORD", &users().producer.password)
            .env("NOTIFY_URL", &self.app.base)
            .env("NOTIFY_PUBLISHER_TOKEN", publisher_token(&self.app.secret))
            .env("PUBLISH_DEADLINE_MS", "20000")
            .env("PUBLISH_DEADLINE_S", "20")
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("{program:?} {args:?} did not finish"))
            .unwrap_or_else(|e| panic!("cannot run {program:?}: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{program:?} {args:?} failed ({}):\n{stdout}\n{stderr}",
            output.status
        );
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{program:?} printed no JSON line ({e}): {stdout:?}"))
    }
}

/// Publishes through `program` over NATS and HTTP and checks the stream.
async fn producer_example_delivers_exactly_what_it_printed(program: &[PathBuf]) {
    let setup = Setup::start().await;
    let user = format!("665f{}", random_hex(20));
    let mut stream: SseStream = setup.app.subscribe(&user).await;
    let order = random_hex(24);
    let mut expected = Vec::new();

    for (via, status) in [
        ("nats", "accepted"),
        ("http", "preparing"),
        ("nats", "ready"),
    ] {
        let printed = setup
            .run(
                program,
                &[via, &user, status, &order, "CB20240115001", "424242"],
            )
            .await;
        assert_eq!(printed["via"], via);
        let id: u64 = printed["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("decimal id");
        let notification = printed["notification"].clone();
        assert_eq!(notification["data"]["orderId"], order.as_str());
        assert_eq!(notification["data"]["status"], status);
        expected.push((id, notification));
    }
    assert_eq!(expected[2].1["data"]["otp"], "424242");
    assert_eq!(expected[2].1["title"], "Order Ready for Pickup 🛍");

    // A retry of a stored transition (the process crashed before it saw the
    // ack, say) answers the same id and stores nothing.
    for via in ["nats", "http"] {
        let status = if via == "nats" { "ready" } else { "preparing" };
        let printed = setup
            .run(
                program,
                &[via, &user, status, &order, "CB20240115001", "424242"],
            )
            .await;
        let original = if via == "nats" {
            &expected[2]
        } else {
            &expected[1]
        };
        assert_eq!(printed["id"], original.0.to_string(), "{via} retry");
        if via == "nats" {
            assert_eq!(printed["duplicate"], true);
        }
    }
    let last = setup
        .run(program, &["http", &user, "collected", &order])
        .await;
    let id: u64 = last["id"].as_str().unwrap().parse().unwrap();
    expected.push((id, last["notification"].clone()));

    for (id, notification) in &expected {
        let (got_id, data) = stream.next_message().await;
        assert_eq!(got_id, *id);
        let data: Value = serde_json::from_str(&data).expect("data is JSON");
        assert_eq!(&data, notification);
    }
}

#[tokio::test]
async fn the_node_producer_publishes_over_jetstream_and_http_exactly_once() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    producer_example_delivers_exactly_what_it_printed(&[
        PathBuf::from("node"),
        root.join("examples/node-producer/producer.mjs"),
    ])
    .await;
}

#[tokio::test]
async fn the_python_producer_publishes_over_jetstream_and_http_exactly_once() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    producer_example_delivers_exactly_what_it_printed(&[
        root.join(".venv-producers/bin/python"),
        root.join("examples/python-producer/producer.py"),
    ])
    .await;
}

#[tokio::test]
async fn the_cli_publishes_over_jetstream_as_the_producer_user() {
    let setup = Setup::start().await;
    let user = format!("665f{}", random_hex(20));
    let mut stream: SseStream = setup.app.subscribe(&user).await;
    let order = random_hex(24);

    let run = |status: &'static str| {
        let (url, password, user, order) = (
            setup.nats.urls(),
            users().producer.password.clone(),
            user.clone(),
            order.clone(),
        );
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_campusbite-notify"))
                .args([
                    "publish", "--nats", &url, "--user", &user, "--status", status,
                ])
                .args(["--order", &order, "--otp", "31337"])
                .env("NATS_USER", &users().producer.user)
                .env("NATS_PASSWORD", password)
                .env_remove("NATS_CREDS")
                .output()
                .expect("run the binary")
        })
    };
    let out = run("ready").await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_str(stdout.strip_prefix("202 ").expect("202")).unwrap();

    let (id, data) = stream.next_message().await;
    assert_eq!(answer["ids"][&user], id.to_string());
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["title"], "Order Ready for Pickup 🛍");
    assert_eq!(data["data"]["orderId"], order.as_str());
    assert_eq!(data["data"]["otp"], "31337");

    // The same transition again is recognised by its Nats-Msg-Id.
    let out = run("ready").await.unwrap();
    let again: Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .strip_prefix("202 ")
            .expect("202"),
    )
    .unwrap();
    assert_eq!(again, answer);
}
