//! What a test does with a running node, whatever started it: mint its
//! tokens, open streams, publish, read `/metrics`.

use std::time::{Duration, Instant};

use reqwest::{RequestBuilder, StatusCode};
use serde_json::{json, Value};

use crate::metrics::Metrics;
use crate::sse::SseStream;
use crate::tokens::sign_hs256;
use crate::{
    http_client, note, now_secs, parse_id, DEADLINE, PUBLISH, PUBLISH_SCOPE, SESSION, SUBSCRIBE,
};

/// A node's address and HS256 secret, with a client for plain requests.
#[derive(Debug, Clone)]
pub struct NodeApi {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The port it listens on.
    pub port: u16,
    /// The HS256 secret it was started with (empty when none).
    pub secret: String,
    /// A client for plain requests.
    pub client: reqwest::Client,
}

impl NodeApi {
    /// The node on `127.0.0.1:port` that verifies tokens with `secret`.
    pub fn new(port: u16, secret: String) -> NodeApi {
        NodeApi {
            base: format!("http://127.0.0.1:{port}"),
            port,
            secret,
            client: http_client(),
        }
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
        self.user_token_exp(sub, now_secs() + 3600)
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

    /// Sends a subscribe request for `user` with a fresh token; returns the
    /// response whatever its status (for refusals).
    pub async fn subscribe_response(&self, user: &str) -> reqwest::Response {
        self.subscribe_request(&self.user_token(user))
            .send()
            .await
            .expect("subscribe request")
    }

    /// A subscribe request carrying `Authorization: Bearer`.
    pub fn bearer_subscribe_request(&self, token: &str) -> RequestBuilder {
        self.client.get(self.url(SUBSCRIBE)).bearer_auth(token)
    }

    /// `POST` the session endpoint with `token` as the bearer; returns the
    /// response whatever its status.
    pub async fn post_session(&self, token: &str) -> reqwest::Response {
        self.client
            .post(self.url(SESSION))
            .bearer_auth(token)
            .send()
            .await
            .expect("session request")
    }

    /// Opens a stream for `user` with a fresh token, checks the 200 and
    /// reads up to the start frame.
    pub async fn subscribe(&self, user: &str) -> SseStream {
        let token = self.user_token(user);
        self.subscribe_with(self.subscribe_request(&token)).await
    }

    /// Opens `user`'s stream resuming after `last_event_id` (`?lastEventId=`).
    pub async fn subscribe_from(&self, user: &str, last_event_id: u64) -> SseStream {
        let req = self
            .subscribe_request(&self.user_token(user))
            .query(&[("lastEventId", last_event_id.to_string())]);
        self.subscribe_with(req).await
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
        self.publish_request_as(&self.publisher_token(), body.into())
    }

    /// A publish request with `token` as the bearer and `body` as JSON text.
    pub fn publish_request_as(
        &self,
        token: &str,
        body: impl Into<reqwest::Body>,
    ) -> RequestBuilder {
        self.client
            .post(self.url(PUBLISH))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
    }

    /// Sends `note(n)` for `user` with `token` as the bearer; returns the
    /// response whatever its status.
    pub async fn publish_note_as(&self, token: &str, user: &str, n: usize) -> reqwest::Response {
        let body = json!({"userId": user, "notification": note(n)}).to_string();
        self.publish_request_as(token, body)
            .send()
            .await
            .expect("publish request")
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
        let text = resp.text().await.expect("publish answer body");
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

    /// Publishes `note(n)` to `user` and asserts that it is the next
    /// message on `stream`; returns its id.
    pub async fn publish_n_expecting(&self, stream: &mut SseStream, user: &str, n: usize) -> u64 {
        let id = self.publish_n(user, n).await;
        assert_eq!(
            stream.next_message().await.0,
            id,
            "the notification just published"
        );
        id
    }

    /// Publishes a small numbered notification to `user`; returns its id.
    pub async fn publish_n(&self, user: &str, n: usize) -> u64 {
        self.publish(user, &note(n)).await
    }

    // -- ops --------------------------------------------------------------

    /// The `/metrics` page.
    pub async fn metrics(&self) -> Metrics {
        let resp = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status(), StatusCode::OK);
        Metrics::parse(&resp.text().await.expect("/metrics body"))
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
