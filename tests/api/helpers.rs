//! Test harness: starts the real `campusbite-notify serve` binary on a free
//! port, mints tokens, speaks HTTP and Server-Sent Events to it, and reads
//! its metrics. Nothing here knows the server's internals.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

/// How long a test waits for anything it expects the server to do.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The subscribe path, relative to the base URL.
pub const SUBSCRIBE: &str = "/api/notifications/subscribe";
/// The publish path.
pub const PUBLISH: &str = "/api/notifications/publish";
/// The cookie-session path.
pub const SESSION: &str = "/api/notifications/session";
/// The session cookie's name.
pub const COOKIE: &str = "campusbite_notify";
/// The scope that lets a token publish.
pub const PUBLISH_SCOPE: &str = "notifications:publish";

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A random lowercase hex string of `len` characters (std only: the
/// randomly keyed SipHash of `RandomState`, fed time and a counter).
pub fn random_hex(len: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(len);
    out
}

/// Base64url without padding (for hand-made JWTs such as `alg: none`).
pub fn b64url(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Polls `check` until it returns `Some`, or panics with `what` after `DEADLINE`.
pub async fn wait_until<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_for(what, DEADLINE, check).await
}

/// Polls `check` every 25 ms until it returns `Some`, or panics after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An HTTP client that never uses a proxy and never reuses connections, so
/// that every request is a fresh connection the server sees open and close.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("reqwest client")
}

/// Parses a decimal event id, panicking with context.
pub fn parse_id(s: &str) -> u64 {
    s.parse::<u64>()
        .unwrap_or_else(|_| panic!("event id {s:?} is not a decimal u64"))
}

/// Checks an error response: status, JSON body `{"error": code, "message": text}`.
/// Returns the body.
pub async fn assert_error(resp: Response, status: u16, code: &str) -> Value {
    assert_error_in(resp, status, &[code]).await
}

/// Like `assert_error`, accepting any of `codes`.
pub async fn assert_error_in(resp: Response, status: u16, codes: &[&str]) -> Value {
    let code = codes.join(" or ");
    let got = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(
        got, status,
        "expected status {status} ({code}), body: {text}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text:?}"));
    assert!(
        codes.iter().any(|c| body["error"] == json!(c)),
        "error code is not {code}: {body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error body lacks a human message: {body}"
    );
    if status == 429 || status == 503 {
        let ra = headers
            .get("retry-after")
            .unwrap_or_else(|| panic!("{status} without Retry-After"))
            .to_str()
            .unwrap();
        assert!(
            ra.trim().parse::<u64>().is_ok(),
            "Retry-After is not delay-seconds: {ra:?}"
        );
    }
    body
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/// A running server. Dropping it kills the process.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The port it listens on.
    pub port: u16,
    /// The HS256 secret it was started with (empty when none).
    pub secret: String,
    /// A client for plain requests.
    pub client: reqwest::Client,
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
}

/// A server process that was started but not necessarily listening.
pub struct RawProcess {
    pub child: Child,
    pub stderr: Arc<Mutex<Vec<u8>>>,
    pub stdout: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl RawProcess {
    /// Waits (at most `limit`) for the process to exit; `None` if it did not.
    /// Once it has exited, everything it wrote is in `stdout`/`stderr`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let status = wait_exit(&mut self.child, limit).await?;
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Some(status)
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

impl Drop for RawProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn capture(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    })
}

fn base_command(envs: &[(&str, &str)]) -> Command {
    base_command_under(&[], envs)
}

/// The server's command line, run through `wrapper` (e.g. `prlimit …`) when
/// it is not empty.
fn base_command_under(wrapper: &[&str], envs: &[(&str, &str)]) -> Command {
    let bin = env!("CARGO_BIN_EXE_campusbite-notify");
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(bin);
            cmd
        }
        None => Command::new(bin),
    };
    cmd.arg("serve");
    // Only the settings a test chooses: nothing inherited from the runner.
    for (k, _) in std::env::vars() {
        if k.starts_with("NOTIFY_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("NOTIFY_LISTEN", "127.0.0.1:0");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Starts the binary with exactly these extra settings (plus
/// `NOTIFY_LISTEN=127.0.0.1:0`), without waiting for it to listen.
pub fn spawn_process(envs: &[(&str, &str)]) -> RawProcess {
    let mut child = base_command(envs).spawn().expect("start the server binary");
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let readers = vec![
        capture(child.stderr.take().unwrap(), stderr.clone()),
        capture(child.stdout.take().unwrap(), stdout.clone()),
    ];
    RawProcess {
        child,
        stderr,
        stdout,
        readers,
    }
}

/// Starts the server with a fresh random HS256 secret.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the server with a fresh random HS256 secret and extra settings.
pub async fn spawn_app_with(envs: &[(&str, &str)]) -> TestApp {
    let secret = random_hex(48);
    let mut all: Vec<(&str, &str)> = vec![("NOTIFY_JWT_SECRET", secret.as_str())];
    all.extend_from_slice(envs);
    let mut app = spawn_app_raw(&all).await;
    app.secret = secret;
    app
}

/// Starts the server with exactly these settings (no secret added) and
/// waits for its `listening on 127.0.0.1:<port>` line.
pub async fn spawn_app_raw(envs: &[(&str, &str)]) -> TestApp {
    spawn_app_under(&[], envs).await
}

/// Like [`spawn_app_raw`], the binary started through `wrapper` (a command
/// that ends by running its arguments, e.g. `prlimit --nofile=1024:2000 --`).
pub async fn spawn_app_under(wrapper: &[&str], envs: &[(&str, &str)]) -> TestApp {
    let mut child = base_command_under(wrapper, envs)
        .spawn()
        .expect("start the server binary");
    let stderr = Arc::new(Mutex::new(Vec::new()));
    capture(child.stderr.take().unwrap(), stderr.clone());
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<Option<String>>();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut first = String::new();
        let ok = reader.read_line(&mut first).map(|n| n > 0).unwrap_or(false);
        let _ = tx.send(ok.then_some(first));
        // Keep draining so the server never blocks on a full pipe.
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    let first = match tokio::time::timeout(DEADLINE, rx).await {
        Ok(Ok(Some(line))) => line,
        other => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "server did not print its listening line ({other:?}); stderr:\n{}",
                String::from_utf8_lossy(&stderr.lock().unwrap())
            );
        }
    };
    let line = first.trim_end_matches(['\r', '\n']);
    let port = line
        .strip_prefix("listening on 127.0.0.1:")
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("first stdout line is not `listening on 127.0.0.1:<port>`: {line:?}")
        });
    assert_ne!(port, 0, "server reported port 0");
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        port,
        secret: String::new(),
        client: http_client(),
        child,
        stderr,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestApp {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Sends SIGTERM to the server.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits (at most `limit`) for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, limit).await
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    // -- tokens -----------------------------------------------------------

    /// Signs `claims` with this server's HS256 secret.
    pub fn sign(&self, claims: &Value) -> String {
        sign_hs256(&self.secret, claims)
    }

    /// A user token for `sub`, valid for an hour.
    pub fn user_token(&self, sub: &str) -> String {
        self.sign(&json!({"sub": sub, "exp": now_secs() + 3600}))
    }

    /// A user token for `sub` expiring at `exp`.
    pub fn user_token_exp(&self, sub: &str, exp: u64) -> String {
        self.sign(&json!({"sub": sub, "exp": exp}))
    }

    /// A publisher token (scope holds `notifications:publish`).
    pub fn publisher_token(&self) -> String {
        self.sign(&json!({
            "sub": "order-service",
            "exp": now_secs() + 3600,
            "scope": format!("orders:read {PUBLISH_SCOPE}"),
        }))
    }

    // -- subscribe --------------------------------------------------------

    /// A subscribe request carrying `?token=`.
    pub fn subscribe_request(&self, token: &str) -> RequestBuilder {
        self.client
            .get(self.url(SUBSCRIBE))
            .query(&[("token", token)])
    }

    /// Opens a stream for `user` with a fresh token, checks the 200 and
    /// reads up to the start frame.
    pub async fn subscribe(&self, user: &str) -> SseStream {
        let token = self.user_token(user);
        self.subscribe_with(self.subscribe_request(&token)).await
    }

    /// Opens a stream from `req`, checks the 200 and reads up to the start frame.
    pub async fn subscribe_with(&self, req: RequestBuilder) -> SseStream {
        let mut s = SseStream::open(req).await;
        if s.status != StatusCode::OK {
            let status = s.status;
            panic!("subscribe refused with {status}: {}", s.body_text().await);
        }
        s.expect_start().await;
        s
    }

    // -- publish ----------------------------------------------------------

    /// A publish request with a publisher token and `body` as JSON text.
    pub fn publish_request(&self, body: impl Into<String>) -> RequestBuilder {
        self.client
            .post(self.url(PUBLISH))
            .bearer_auth(self.publisher_token())
            .header("content-type", "application/json")
            .body(body.into())
    }

    /// Publishes `notification` to `user`, asserting 202; returns the event id.
    pub async fn publish(&self, user: &str, notification: &Value) -> u64 {
        let body = json!({"userId": user, "notification": notification}).to_string();
        self.publish_text(user, &body).await
    }

    /// Publishes a raw single-user body (already JSON text); returns the id.
    pub async fn publish_text(&self, user: &str, body: &str) -> u64 {
        let resp = self
            .publish_request(body.to_string())
            .send()
            .await
            .expect("publish request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "publish to {user} failed: {text}"
        );
        let v: Value = serde_json::from_str(&text).expect("publish answer is JSON");
        parse_id(
            v["id"]
                .as_str()
                .unwrap_or_else(|| panic!("no string id in {v}")),
        )
    }

    /// Publishes a small numbered notification to `user`; returns its id.
    pub async fn publish_n(&self, user: &str, n: usize) -> u64 {
        self.publish(user, &note(n)).await
    }

    // -- ops --------------------------------------------------------------

    /// The `/metrics` text.
    pub async fn metrics(&self) -> Metrics {
        let resp = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status(), StatusCode::OK);
        Metrics::parse(&resp.text().await.unwrap())
    }

    /// Polls `/metrics` until `pred` holds for the summed value of the
    /// series `name` with these labels; returns that value.
    pub async fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        pred: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let last = self.metrics().await.value(name, labels);
            if let Some(v) = last {
                if pred(v) {
                    return v;
                }
            }
            if Instant::now() > deadline {
                panic!("metric {name}{labels:?} never matched; last value {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Signs `claims` with HS256 and `secret`.
pub fn sign_hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign token")
}

/// A small valid notification numbered `n`.
pub fn note(n: usize) -> Value {
    json!({
        "type": "order_update",
        "title": format!("Order {n}"),
        "message": format!("Notification number {n}"),
        "data": {"n": n, "status": "preparing"},
    })
}

// ---------------------------------------------------------------------------
// Server-Sent Events
// ---------------------------------------------------------------------------

/// One event dispatched by the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type (`message` when the block had no `event:` field).
    pub event: String,
    /// The last event id at dispatch (carried over from earlier blocks).
    pub id: String,
    /// Whether this block itself had an `id:` field.
    pub had_id: bool,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// The id as a number; panics unless this block carried a decimal id.
    pub fn id_num(&self) -> u64 {
        assert!(self.had_id, "event carries no id field: {self:?}");
        parse_id(&self.id)
    }

    /// The data parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.data))
    }
}

/// What a stream yields, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A `retry:` field, raw value.
    Retry(String),
    /// A block with an `id:` field and no data: updates the last event id
    /// without dispatching an event.
    IdOnly(String),
    /// A dispatched event.
    Event(SseEvent),
    /// A comment line; `text` is everything after the `:`.
    Comment { text: String, at: Instant },
}

/// An incremental WHATWG `text/event-stream` parser.
#[derive(Default)]
pub struct SseParser {
    line: Vec<u8>,
    after_cr: bool,
    started: bool,
    data: String,
    event: String,
    id_in_block: Option<String>,
    /// The last event id buffer.
    pub last_event_id: String,
    /// The last `retry:` value as sent.
    pub retry: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns what they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseItem> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(&mut out),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut out);
                }
                _ => self.line.push(b),
            }
        }
        out
    }

    fn end_line(&mut self, out: &mut Vec<SseItem>) {
        let mut raw = std::mem::take(&mut self.line);
        if !self.started {
            self.started = true;
            if raw.starts_with("\u{feff}".as_bytes()) {
                raw.drain(..3);
            }
        }
        let line = String::from_utf8_lossy(&raw).into_owned();
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if let Some(text) = line.strip_prefix(':') {
            out.push(SseItem::Comment {
                text: text.to_string(),
                at: Instant::now(),
            });
            return;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            // An id containing NUL is ignored (WHATWG).
            "id" if !value.contains('\0') => {
                self.last_event_id = value.to_string();
                self.id_in_block = Some(value.to_string());
            }
            "retry" => {
                self.retry = Some(value.to_string());
                out.push(SseItem::Retry(value.to_string()));
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseItem>) {
        let id_in_block = self.id_in_block.take();
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            if let Some(id) = id_in_block {
                out.push(SseItem::IdOnly(id));
            }
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        out.push(SseItem::Event(SseEvent {
            event: if event.is_empty() {
                "message".to_string()
            } else {
                event
            },
            id: self.last_event_id.clone(),
            had_id: id_in_block.is_some(),
            data,
        }));
    }
}

/// A live Server-Sent Events response. Dropping it disconnects.
pub struct SseStream {
    /// The response status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The first bytes of the body exactly as received (up to 64 KiB).
    pub raw: Vec<u8>,
    /// The start frame's id, once `expect_start` has read it.
    pub start_id: Option<u64>,
    resp: Option<Response>,
    parser: SseParser,
    queue: VecDeque<SseItem>,
    eof: bool,
}

impl SseStream {
    /// Sends `req` and wraps the response, whatever its status.
    pub async fn open(req: RequestBuilder) -> SseStream {
        let resp = tokio::time::timeout(DEADLINE, req.send())
            .await
            .expect("subscribe response headers within the deadline")
            .expect("subscribe request");
        SseStream {
            status: resp.status(),
            headers: resp.headers().clone(),
            raw: Vec::new(),
            start_id: None,
            resp: Some(resp),
            parser: SseParser::default(),
            queue: VecDeque::new(),
            eof: false,
        }
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_string())
    }

    /// The raw `retry:` value, if one was read.
    pub fn retry(&self) -> Option<&str> {
        self.parser.retry.as_deref()
    }

    /// The last event id as the browser would record it.
    pub fn last_event_id(&self) -> &str {
        &self.parser.last_event_id
    }

    /// Reads the rest of a (non-stream) body as text.
    pub async fn body_text(&mut self) -> String {
        match self.resp.take() {
            Some(r) => r.text().await.unwrap_or_default(),
            None => String::new(),
        }
    }

    /// The next item within `limit`: `Ok(None)` at a clean end of stream,
    /// `Err` on a timeout or a broken body.
    pub async fn try_next_item(&mut self, limit: Duration) -> Result<Option<SseItem>, String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Ok(Some(item));
            }
            if self.eof {
                return Ok(None);
            }
            let resp = self.resp.as_mut().expect("stream body already consumed");
            match tokio::time::timeout_at(deadline, resp.chunk()).await {
                Err(_) => return Err(format!("no SSE item within {limit:?}")),
                Ok(Err(e)) => return Err(format!("stream broke: {e:?}")),
                Ok(Ok(None)) => self.eof = true,
                Ok(Ok(Some(chunk))) => {
                    let room = (64 * 1024usize).saturating_sub(self.raw.len());
                    self.raw.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    let items = self.parser.feed(&chunk);
                    self.queue.extend(items);
                }
            }
        }
    }

    /// The next item (`None` at a clean end of stream); panics on a
    /// timeout or a broken stream.
    pub async fn next_item(&mut self) -> Option<SseItem> {
        self.try_next_item(DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads the `retry:` field and the id-only start frame (comments may
    /// come first); returns the start id.
    pub async fn expect_start(&mut self) -> u64 {
        let mut saw_retry = false;
        loop {
            match self.next_item().await {
                Some(SseItem::Retry(_)) => saw_retry = true,
                Some(SseItem::Comment { .. }) => {}
                Some(SseItem::IdOnly(id)) => {
                    assert!(saw_retry, "start frame came before any retry: field");
                    let n = parse_id(&id);
                    self.start_id = Some(n);
                    return n;
                }
                other => panic!("expected the id-only start frame, got {other:?}"),
            }
        }
    }

    /// The next dispatched event, skipping comments and `retry:`; panics at
    /// EOF, on an id-only frame, or after the deadline.
    pub async fn next_event(&mut self) -> SseEvent {
        self.next_event_within(DEADLINE).await
    }

    /// Like `next_event` with an explicit limit.
    pub async fn next_event_within(&mut self, limit: Duration) -> SseEvent {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_next_item(left).await {
                Ok(Some(SseItem::Event(e))) => return e,
                Ok(Some(SseItem::Comment { .. })) | Ok(Some(SseItem::Retry(_))) => {}
                Ok(Some(SseItem::IdOnly(id))) => panic!("unexpected id-only frame {id:?}"),
                Ok(None) => panic!("stream ended while waiting for an event"),
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// The next `message` event; returns (id, data).
    pub async fn next_message(&mut self) -> (u64, String) {
        let e = self.next_event().await;
        assert_eq!(e.event, "message", "expected a message event, got {e:?}");
        (e.id_num(), e.data)
    }

    /// Reads `n` message events; returns their ids.
    pub async fn message_ids(&mut self, n: usize) -> Vec<u64> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.next_message().await.0);
        }
        ids
    }

    /// Expects a clean end of stream within `limit`, skipping comments;
    /// panics on an event, a broken body or a timeout.
    pub async fn expect_eof(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_next_item(left).await {
                Ok(None) => return,
                Ok(Some(SseItem::Comment { .. })) => {}
                Ok(Some(other)) => panic!("expected end of stream, got {other:?}"),
                Err(e) => panic!("expected a clean end of stream: {e}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------

/// One sample of the Prometheus text format.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the Prometheus text exposition format.
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, labels, rest) = match line.find('{') {
                Some(i) => {
                    let name = &line[..i];
                    let (labels, rest) = parse_labels(&line[i + 1..]);
                    (name.to_string(), labels, rest)
                }
                None => {
                    let mut it = line.splitn(2, ' ');
                    let name = it.next().unwrap().to_string();
                    (name, Vec::new(), it.next().unwrap_or("").to_string())
                }
            };
            let value_text = rest.split_whitespace().next().unwrap_or("");
            let value = match value_text {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("bad sample value in line {line:?}")),
            };
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        Metrics {
            text: text.to_string(),
            samples,
        }
    }

    /// The sum of all samples named `name` whose labels include `labels`;
    /// `None` when there is no such sample.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for s in &self.samples {
            if s.name != name {
                continue;
            }
            let all = labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v));
            if all {
                *found.get_or_insert(0.0) += s.value;
            }
        }
        found
    }

    /// Like `value`, treating a missing series as 0.
    pub fn value_or_zero(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// Whether any sample has this name.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

fn parse_labels(s: &str) -> (Vec<(String, String)>, String) {
    let mut labels = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    loop {
        while i < chars.len() && (chars[i] == ',' || chars[i] == ' ') {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        if chars[i] == '}' {
            i += 1;
            break;
        }
        let mut key = String::new();
        while i < chars.len() && chars[i] != '=' {
            key.push(chars[i]);
            i += 1;
        }
        i += 2; // `="`
        let mut value = String::new();
        while i < chars.len() && chars[i] != '"' {
            if chars[i] == '\\' && i + 1 < chars.len() {
                i += 1;
                value.push(match chars[i] {
                    'n' => '\n',
                    c => c,
                });
            } else {
                value.push(chars[i]);
            }
            i += 1;
        }
        i += 1; // closing quote
        labels.push((key.trim().to_string(), value));
    }
    (labels, chars[i.min(chars.len())..].iter().collect())
}

/// The resident set size of a process in KiB, from `/proc/<pid>/status`.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

// ---------------------------------------------------------------------------
// The harness's own checks
// ---------------------------------------------------------------------------

#[cfg(test)]
mod parser_tests {
    use super::*;

    fn events(items: &[SseItem]) -> Vec<SseEvent> {
        items
            .iter()
            .filter_map(|i| match i {
                SseItem::Event(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_parser_accepts_every_line_ending_and_joins_data_lines() {
        let mut p = SseParser::default();
        let items =
            p.feed(b"retry: 1500\r\n\r\nid: 7\rdata: a\ndata:b\r\n\nevent: reset\ndata: x\n\n");
        assert_eq!(items[0], SseItem::Retry("1500".into()));
        let ev = events(&items);
        assert_eq!(ev.len(), 2);
        assert_eq!(
            (ev[0].id.as_str(), ev[0].data.as_str(), ev[0].event.as_str()),
            ("7", "a\nb", "message")
        );
        assert!(ev[0].had_id);
        assert_eq!(
            (ev[1].id.as_str(), ev[1].event.as_str(), ev[1].had_id),
            ("7", "reset", false)
        );
    }

    #[test]
    fn the_parser_reports_id_only_frames_and_comments_without_dispatching() {
        let mut p = SseParser::default();
        let items = p.feed(b": keep-alive\n\nid: 42\n\nevent: x\n\n");
        assert!(matches!(&items[0], SseItem::Comment { text, .. } if text == " keep-alive"));
        assert_eq!(items[1], SseItem::IdOnly("42".into()));
        assert_eq!(items.len(), 2);
        assert_eq!(p.last_event_id, "42");
    }

    #[test]
    fn the_parser_handles_a_crlf_split_across_chunks_and_ignores_ids_with_nul() {
        let mut p = SseParser::default();
        let mut items = p.feed(b"id: 1\r");
        items.extend(p.feed(b"\ndata: one\r"));
        items.extend(p.feed(b"\n\r\nid: 2\0\ndata: two\n\n"));
        let ev = events(&items);
        assert_eq!(ev.len(), 2, "{items:?}");
        assert_eq!((ev[0].id.as_str(), ev[0].data.as_str()), ("1", "one"));
        assert_eq!(
            (ev[1].id.as_str(), ev[1].data.as_str(), ev[1].had_id),
            ("1", "two", false)
        );
    }

    #[test]
    fn the_metrics_parser_reads_labels_and_sums_matching_series() {
        let m = Metrics::parse(
            "# TYPE a counter\na{reason=\"x\",k=\"q\\\"\"} 2\na{reason=\"y\"} 3\nb 1.5\nh_bucket{le=\"+Inf\"} 4\n",
        );
        assert_eq!(m.value("a", &[]), Some(5.0));
        assert_eq!(m.value("a", &[("reason", "x")]), Some(2.0));
        assert_eq!(m.value("a", &[("k", "q\"")]), Some(2.0));
        assert_eq!(m.value("b", &[]), Some(1.5));
        assert_eq!(m.value("h_bucket", &[("le", "+Inf")]), Some(4.0));
        assert_eq!(m.value("c", &[]), None);
    }

    #[test]
    fn base64url_matches_known_vectors() {
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(b64url(b"fo"), "Zm8");
        assert_eq!(b64url(b"foo"), "Zm9v");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }
}
