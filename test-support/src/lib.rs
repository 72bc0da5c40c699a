//! What the integration tests of campusbite-notify share. Nothing here knows
//! the server's internals: it speaks HTTP, Server-Sent Events and NATS to
//! real processes on free loopback ports.
//!
//! - [`node`]: starting the `campusbite-notify serve` binary ([`Node`],
//!   [`TestApp`], [`RawProcess`]); the test binary passes the path in
//!   ([`bin!`]), since only it knows `CARGO_BIN_EXE_campusbite-notify`.
//! - [`in_process`]: a node inside the test process ([`InProcessNode`]),
//!   for the tests that need no process boundary.
//! - [`api`]: what a test does with a running node ([`NodeApi`]: tokens,
//!   subscribe, publish, metrics), shared by every kind of node.
//! - [`tokens`]: minting JWTs ([`sign_hs256`]).
//! - [`sse`]: an SSE client over `reqwest` ([`SseStream`]) on the
//!   `sse-stream` decoder.
//! - [`metrics`]: the `/metrics` page ([`Metrics`]) via `prometheus-parse`.
//! - [`nats`]: `nats-server` processes and 3-server clusters ([`Nats`],
//!   [`NatsServer`]) and a producer client on `async-nats` ([`NatsClient`]).
//! - [`cluster`]: gateway nodes on NATS, a browser-like client that follows
//!   a user across node failures ([`Follower`]) and the loss audit ([`Audit`]).

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use reqwest::{RequestBuilder, Response};
use serde_json::{json, Value};

pub mod api;
pub mod cluster;
pub mod in_process;
pub mod metrics;
pub mod nats;
pub mod nats_auth;
pub mod node;
pub mod sse;
pub mod tokens;

pub use api::NodeApi;
pub use cluster::{
    kill9_node, live, messages, note_n, report, resume, status_of, try_publish, wait_status, Audit,
    Connect, FollowLog, Follower, Live, Seen, TwoNodes,
};
pub use in_process::{in_process_app, in_process_app_raw, in_process_app_with, InProcessNode};
pub use metrics::{Metrics, Sample};
pub use nats::{
    free_ports, nats_bin, next_msg, partition_mapping, Nats, NatsClient, NatsServer, TempDir,
    STREAM, USER_SUBJECT,
};
pub use nats_auth::{gateway_envs, users, NatsUser, NatsUsers};
pub use node::{Node, RawProcess, TestApp};
pub use sse::{SseEvent, SseItem, SseParser, SseStream};
pub use tokens::{publisher_token, sign_hs256, user_token};

/// The path of the `campusbite-notify` binary, for [`Node::builder`]. Cargo
/// sets `CARGO_BIN_EXE_*` only while it compiles an integration test, so this
/// expands in the test binary that calls it.
#[macro_export]
macro_rules! bin {
    () => {
        env!("CARGO_BIN_EXE_campusbite-notify")
    };
}

/// Defines, in the calling test binary, the start-up helpers bound to its
/// `campusbite-notify` binary: `spawn_app()`, `spawn_app_with(envs)`,
/// `spawn_app_raw(envs)` (no secret added), `spawn_process(envs)` (not
/// waiting for the listening line), and for clusters
/// `start_node(secret, nats_urls, replicas, extra)` and
/// `two_nodes(nats, extra)`. Each test binary uses a different subset.
#[macro_export]
macro_rules! node_helpers {
    () => {
        /// Starts the server with a fresh random HS256 secret.
        #[allow(dead_code)]
        pub async fn spawn_app() -> $crate::TestApp {
            $crate::Node::builder($crate::bin!()).spawn().await
        }

        /// Starts the server with a fresh random HS256 secret and extra settings.
        #[allow(dead_code)]
        pub async fn spawn_app_with(envs: &[(&str, &str)]) -> $crate::TestApp {
            $crate::Node::builder($crate::bin!())
                .envs(envs)
                .spawn()
                .await
        }

        /// Starts the server with exactly these settings (no secret added).
        #[allow(dead_code)]
        pub async fn spawn_app_raw(envs: &[(&str, &str)]) -> $crate::TestApp {
            $crate::Node::builder($crate::bin!())
                .no_secret()
                .envs(envs)
                .spawn()
                .await
        }

        /// Like `spawn_app_raw`, the binary started through `wrapper` (a
        /// command that ends by running its arguments, e.g. `prlimit … --`).
        #[allow(dead_code)]
        pub async fn spawn_app_under(wrapper: &[&str], envs: &[(&str, &str)]) -> $crate::TestApp {
            $crate::Node::builder($crate::bin!())
                .no_secret()
                .under(wrapper)
                .envs(envs)
                .spawn()
                .await
        }

        /// Starts the binary with exactly these settings, without waiting
        /// for it to listen.
        #[allow(dead_code)]
        pub fn spawn_process(envs: &[(&str, &str)]) -> $crate::RawProcess {
            $crate::Node::builder($crate::bin!())
                .no_secret()
                .envs(envs)
                .spawn_process()
        }

        /// Starts a gateway node on NATS and waits until it is ready.
        #[allow(dead_code)]
        pub async fn start_node(
            secret: &str,
            nats_urls: &str,
            replicas: usize,
            extra: &[(&str, &str)],
        ) -> $crate::TestApp {
            $crate::cluster::start_node($crate::bin!(), secret, nats_urls, replicas, extra).await
        }

        /// Starts two ready gateway nodes on every server of `nats`.
        #[allow(dead_code)]
        pub async fn two_nodes(
            nats: $crate::Nats,
            extra: &[(&str, &str)],
        ) -> $crate::cluster::TwoNodes {
            $crate::cluster::two_nodes($crate::bin!(), nats, extra).await
        }
    };
}

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

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A random lowercase hex string of `len` characters.
pub fn random_hex(len: usize) -> String {
    std::iter::repeat_with(|| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
        .take(len)
        .collect()
}

/// Base64url without padding (for hand-made JWTs such as `alg: none`).
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh HS256 secret.
pub fn new_secret() -> String {
    random_hex(48)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `DEADLINE`.
pub async fn wait_until<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_for(what, DEADLINE, check).await
}

/// Polls `check` every 25 ms until it returns `Some`, or panics after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_for(limit, check)
        .await
        .unwrap_or_else(|| panic!("timed out after {limit:?} waiting for: {what}"))
}

/// Polls `check` every 25 ms until it returns `Some`; `None` after `limit`.
pub async fn poll_for<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
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

/// A small valid notification numbered `n`.
pub fn note(n: usize) -> Value {
    json!({
        "type": "order_update",
        "title": format!("Order {n}"),
        "message": format!("Notification number {n}"),
        "data": {"n": n, "status": "preparing"},
    })
}

/// Checks an error response: status, JSON body `{"error": code, "message": text}`.
/// Returns the body.
pub async fn assert_error(resp: Response, status: u16, code: &str) -> Value {
    assert_error_in(resp, status, &[code]).await
}

/// Like `assert_error`, accepting any of `codes`.
pub async fn assert_error_in(resp: Response, status: u16, codes: &[&str]) -> Value {
    assert_error_why(resp, status, codes, "").await
}

/// Like `assert_error_in`, with `why` (the case) leading every failure message.
pub async fn assert_error_why(resp: Response, status: u16, codes: &[&str], why: &str) -> Value {
    let code = codes.join(" or ");
    let got = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(
        got, status,
        "{why}: expected status {status} ({code}), body: {text}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{why}: error body is not JSON ({e}): {text:?}"));
    assert!(
        codes.iter().any(|c| body["error"] == json!(c)),
        "{why}: error code is not {code}: {body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{why}: error body lacks a human message: {body}"
    );
    if status == 429 || status == 503 {
        let ra = headers
            .get("retry-after")
            .unwrap_or_else(|| panic!("{why}: {status} without Retry-After"))
            .to_str()
            .expect("ASCII Retry-After");
        assert!(
            ra.trim().parse::<u64>().is_ok(),
            "{why}: Retry-After is not delay-seconds: {ra:?}"
        );
    }
    body
}

/// A process's `/proc/<pid>/status` field (e.g. `VmRSS`, `VmHWM`) in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The `Retry-After` seconds of a JSON 429/503 refusal (status and code checked).
pub async fn assert_error_retry_after(resp: Response, status: u16, code: &str) -> u64 {
    let seconds = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    assert_error(resp, status, code).await;
    seconds.expect("Retry-After is delay-seconds")
}

/// `req` as a browser's EventSource sends it: with `Accept: text/event-stream`.
pub fn as_event_source(req: RequestBuilder) -> RequestBuilder {
    req.header("accept", "text/event-stream")
        .header("cache-control", "no-cache")
}

/// Sends `req` as an EventSource and checks a soft refusal byte for byte:
/// `200 text/event-stream` with `Cache-Control: no-cache` and
/// `X-Accel-Buffering: no`; a body of `retry: <ms>` (at least
/// `retry_after` s, at most twice that), an optional id-only frame, one
/// `event: unavailable` with `{"error":code,"retryAfter":retry_after}`, and
/// the end. Returns the id-only frame's id, if there was one.
pub async fn assert_soft_refusal(req: RequestBuilder, code: &str, retry_after: u64) -> Option<u64> {
    let resp = tokio::time::timeout(DEADLINE, as_event_source(req).send())
        .await
        .expect("a soft refusal within the deadline")
        .expect("subscribe request");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(resp.status().as_u16(), 200, "a soft refusal is a 200");
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(header("x-accel-buffering").as_deref(), Some("no"));
    let body = tokio::time::timeout(DEADLINE, resp.text())
        .await
        .expect("a soft refusal ends by itself")
        .expect("soft refusal body");
    let (retry, rest) = body
        .strip_prefix("retry: ")
        .and_then(|r| r.split_once("\n\n"))
        .unwrap_or_else(|| panic!("no retry: line first in {body:?}"));
    let millis: u64 = retry.parse().expect("retry: is decimal");
    assert!(
        (retry_after * 1000..=2 * retry_after * 1000).contains(&millis),
        "retry: {millis} ms is not within [Retry-After, 2 × Retry-After] of {retry_after} s"
    );
    let (id, rest) = match rest.strip_prefix("id: ") {
        Some(r) => {
            let (id, r) = r
                .split_once("\n\n")
                .unwrap_or_else(|| panic!("unterminated id frame in {body:?}"));
            (Some(parse_id(id)), r)
        }
        None => (None, rest),
    };
    assert_eq!(
        rest,
        format!(
            "event: unavailable\ndata: {{\"error\":\"{code}\",\"retryAfter\":{retry_after}}}\n\n"
        ),
        "the soft refusal's event, in {body:?}"
    );
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_known_vectors() {
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(b64url(b"fo"), "Zm8");
        assert_eq!(b64url(b"foo"), "Zm9v");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn random_hex_has_the_asked_length_and_only_hex_digits() {
        let h = random_hex(48);
        assert_eq!(h.len(), 48);
        assert!(h
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(h, random_hex(48));
    }
}
