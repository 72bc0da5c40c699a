//! Hostile tokens not covered by `tests/api/auth.rs`: 100 KB long, truncated,
//! `nbf` in the future, no `sub`, a 10 KB `sub`. Each must be refused with a
//! 401 JSON error, counted under its own `notify_auth_failures_total`
//! reason (and under no other), and must never become a stream, even when a
//! notification for the user it names is published while it is answered.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use crate::raw;

const AUTH_FAILURES: &str = "notify_auth_failures_total";

/// Every `reason` label the server declares.
const REASONS: &[&str] = campusbite_notify::auth::AuthError::REASONS;

/// The auth-failure counter of every reason.
async fn failures_by_reason(app: &TestApp) -> Vec<(&'static str, f64)> {
    let m = app.metrics().await;
    REASONS
        .iter()
        .map(|r| {
            let v = m.value(AUTH_FAILURES, &[("reason", r)]).unwrap_or_else(|| {
                panic!("{AUTH_FAILURES}{{reason=\"{r}\"}} is not exported at all")
            });
            (*r, v)
        })
        .collect()
}

/// Sends `request` (a raw subscribe carrying a bad credential for
/// `victim`) on a new connection and checks: 401 with the JSON error;
/// meanwhile a notification published to `victim` does not reach this
/// response; exactly the `reason` counter moved, by one.
async fn assert_refused(app: &TestApp, request: Vec<u8>, victim: &str, reason: &str, why: &str) {
    assert!(REASONS.contains(&reason), "unknown reason {reason}");
    let before = failures_by_reason(app).await;

    let mut conn = raw::connect(app.port).await;
    conn.write_all(&request)
        .await
        .unwrap_or_else(|e| panic!("{why}: sending the request failed: {e}"));
    let head = raw::read_head(&mut conn, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{why}: {e}"));
    // Publish to the user the token names while its answer is still open: if
    // the answer were a stream, this notification would be in its body.
    let marker = format!("must-not-leak-{}", random_hex(12));
    app.publish(victim, &json!({"type": "probe", "message": marker}))
        .await;
    assert_eq!(head.status, 401, "{why}: expected 401, got {head:?}");
    assert_eq!(
        head.header("content-type"),
        Some("application/json"),
        "{why}: the answer is not a JSON error"
    );
    let body = raw::read_body(&mut conn, &head, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{why}: the 401 body is not a complete sized body: {e}"));
    let body = String::from_utf8(body).expect("UTF-8 error body");
    assert!(
        !body.contains(&marker),
        "{why}: a refused request received a notification: {body}"
    );
    let v: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{why}: error body is not JSON ({e}): {body:?}"));
    assert_eq!(v["error"], "unauthorized", "{why}: {v}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{why}: {v}"
    );
    // Nothing arrives on this connection afterwards either.
    let mut rest = [0u8; 256];
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), conn.read(&mut rest)).await
    {
        assert_eq!(
            n,
            0,
            "{why}: more bytes after the error: {:?}",
            String::from_utf8_lossy(&rest[..n])
        );
    }

    // The counter is updated before the answer is written; poll briefly anyway.
    let want: Vec<(&str, f64)> = before
        .iter()
        .map(|(r, v)| (*r, if *r == reason { v + 1.0 } else { *v }))
        .collect();
    let mut got = failures_by_reason(app).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while got != want && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
        got = failures_by_reason(app).await;
    }
    assert_eq!(
        got, want,
        "{why}: expected exactly {AUTH_FAILURES}{{reason=\"{reason}\"}} to move by one"
    );
}

/// No stream was ever opened on this node.
async fn assert_no_stream_was_opened(app: &TestApp) {
    let m = app.metrics().await;
    assert_eq!(m.value("notify_connections_total", &[]), Some(0.0));
    assert_eq!(m.value("notify_connections_open", &[]), Some(0.0));
    assert_eq!(m.value("notify_users_online", &[]), Some(0.0));
}

/// A raw subscribe with `?token=`.
fn by_query(app: &TestApp, token: &str) -> Vec<u8> {
    raw::subscribe_request(app.port, token)
}

/// A raw subscribe with `Authorization: Bearer`.
fn by_header(app: &TestApp, token: &str) -> Vec<u8> {
    format!(
        "GET {SUBSCRIBE} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {token}\r\n\r\n",
        app.port
    )
    .into_bytes()
}

/// A raw subscribe with the session cookie.
fn by_cookie(app: &TestApp, token: &str) -> Vec<u8> {
    format!(
        "GET {SUBSCRIBE} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nCookie: {COOKIE}={token}\r\n\r\n",
        app.port
    )
    .into_bytes()
}

#[tokio::test]
async fn a_correctly_signed_100_kb_token_is_refused_as_malformed_in_the_query_and_the_header() {
    let app = spawn_app().await;
    // Everything about it is valid except its size.
    let token = app.sign(&json!({
        "sub": "u1",
        "exp": now_secs() + 600,
        "pad": "p".repeat(75 * 1024),
    }));
    assert!(
        (100 * 1024..110 * 1024).contains(&token.len()),
        "token is {} bytes",
        token.len()
    );

    // In the query string the request never reaches the application: the
    // request target is longer than the `http` crate's 65 534-byte URI
    // limit, so actix-http answers a bare 400 (no JSON body, connection
    // closed) and the token is never looked at, hence not counted.
    let before = failures_by_reason(&app).await;
    let mut conn = raw::connect(app.port).await;
    conn.write_all(&by_query(&app, &token)).await.unwrap();
    let head = raw::read_head(&mut conn, DEADLINE).await.unwrap();
    let body = raw::read_body(&mut conn, &head, DEADLINE).await.unwrap();
    eprintln!(
        "hardening: a 100 KB ?token= is refused by actix-http before the application: {} {:?}, body {} bytes",
        head.status, head.headers, body.len()
    );
    assert_eq!(
        (head.status, head.header("connection"), body.len()),
        (400, Some("close"), 0),
        "100 KB ?token=: {head:?}"
    );
    let mut rest = [0u8; 64];
    let n = tokio::time::timeout(DEADLINE, conn.read(&mut rest))
        .await
        .expect("the connection is closed after the 400")
        .unwrap_or(0);
    assert_eq!(n, 0, "bytes after the 400");
    assert_eq!(
        failures_by_reason(&app).await,
        before,
        "an unread token was counted"
    );
    assert_refused(
        &app,
        by_header(&app, &token),
        "u1",
        "malformed",
        "100 KB Bearer",
    )
    .await;
    assert_refused(
        &app,
        by_cookie(&app, &token),
        "u1",
        "malformed",
        "100 KB session cookie",
    )
    .await;

    // The same size as a publisher credential.
    let publisher = app.sign(&json!({
        "sub": "svc",
        "exp": now_secs() + 600,
        "scope": PUBLISH_SCOPE,
        "pad": "p".repeat(75 * 1024),
    }));
    let before = app.metrics().await;
    let resp = app.publish_note_as(&publisher, "u1", 1).await;
    assert_error(resp, 401, "unauthorized").await;
    let after = app.metrics().await;
    assert_eq!(
        after.value_or_zero(AUTH_FAILURES, &[("reason", "malformed")]),
        before.value_or_zero(AUTH_FAILURES, &[("reason", "malformed")]) + 1.0
    );
    assert_eq!(
        after.value("notify_notifications_published_total", &[]),
        before.value("notify_notifications_published_total", &[]),
        "a refused publisher published"
    );

    assert_no_stream_was_opened(&app).await;
}

#[tokio::test]
async fn truncated_tokens_are_refused_with_401_and_their_reason() {
    let app = spawn_app().await;
    let good = app.user_token("u1");
    let dots: Vec<usize> = good.match_indices('.').map(|(i, _)| i).collect();
    let (first_dot, second_dot) = (dots[0], dots[1]);

    let cases = [
        // header only, cut inside it: not three segments
        (&good[..first_dot / 2], "malformed", "cut inside the header"),
        (&good[..first_dot + 1], "malformed", "header and a dot"),
        (
            &good[..(first_dot + second_dot) / 2],
            "malformed",
            "cut inside the claims",
        ),
        // three segments with an empty signature: a signature that does not match
        (
            &good[..second_dot + 1],
            "bad_signature",
            "signature cut off",
        ),
    ];
    for (token, reason, why) in cases {
        assert_refused(&app, by_query(&app, token), "u1", reason, why).await;
        assert_refused(&app, by_header(&app, token), "u1", reason, why).await;
    }

    assert_no_stream_was_opened(&app).await;
}

#[tokio::test]
async fn a_token_whose_nbf_is_in_the_future_is_refused_as_not_yet_valid() {
    let app = spawn_app().await;
    let now = now_secs();
    // Beyond the default 5 s leeway.
    let future = app.sign(&json!({"sub": "u1", "exp": now + 3600, "nbf": now + 60}));
    let far_future = app.sign(&json!({"sub": "u1", "exp": now + 3600, "nbf": now + 86_400}));

    let cases = [
        (by_query(&app, &future), "nbf in 60 s"),
        (by_header(&app, &future), "nbf in 60 s"),
        (by_query(&app, &far_future), "nbf in a day"),
    ];
    for (request, why) in cases {
        assert_refused(&app, request, "u1", "not_yet_valid", why).await;
    }
    assert_no_stream_was_opened(&app).await;

    // Control: the same token with `nbf` in the past opens a stream.
    let past = app.sign(&json!({"sub": "u1", "exp": now + 3600, "nbf": now - 60}));
    let mut s = app.subscribe_with(app.subscribe_request(&past)).await;
    app.publish_n_expecting(&mut s, "u1", 1).await;
}

#[tokio::test]
async fn a_token_without_sub_is_refused_as_a_missing_claim() {
    let app = spawn_app().await;
    let exp = now_secs() + 600;
    let no_sub = app.sign(&json!({"exp": exp}));
    let other_claims = app.sign(&json!({"exp": exp, "user": "u1", "uid": "u1", "name": "u1"}));

    let cases = [
        (by_query(&app, &no_sub), "no sub"),
        (by_header(&app, &no_sub), "no sub"),
        (
            by_query(&app, &other_claims),
            "user id in other claims, no sub",
        ),
    ];
    for (request, why) in cases {
        assert_refused(&app, request, "u1", "missing_claim", why).await;
    }
    assert_no_stream_was_opened(&app).await;
}

#[tokio::test]
async fn long_subjects_are_refused_a_10_kb_one_by_the_token_size_cap() {
    let app = spawn_app().await;
    let exp = now_secs() + 600;
    // A 10 KB `sub` makes a 13.7 KB token: over the server's 8 KiB token cap,
    // so it is refused before any claim is read.
    let sub_10k = "x".repeat(10 * 1024);
    let huge = app.sign(&json!({"sub": sub_10k, "exp": exp}));
    assert!(huge.len() > 8 * 1024);
    // A 5000-byte `sub` fits the cap and is refused as a subject.
    let sub_5k = "x".repeat(5000);
    let long = app.sign(&json!({"sub": sub_5k, "exp": exp}));
    assert!(long.len() < 8 * 1024);
    // 257 bytes: one over the user-id limit.
    let sub_257 = "é".repeat(128) + "x";
    assert_eq!(sub_257.len(), 257);
    let just_over = app.sign(&json!({"sub": sub_257, "exp": exp}));

    // The victim is the 256-byte prefix: the id a careless truncation would make.
    let victim = "x".repeat(256);
    assert_refused(
        &app,
        by_query(&app, &huge),
        &victim,
        "malformed",
        "10 KB sub, query",
    )
    .await;
    assert_refused(
        &app,
        by_header(&app, &huge),
        &victim,
        "malformed",
        "10 KB sub, header",
    )
    .await;
    assert_refused(
        &app,
        by_query(&app, &long),
        &victim,
        "invalid_subject",
        "5000-byte sub",
    )
    .await;
    assert_refused(
        &app,
        by_query(&app, &just_over),
        &"é".repeat(128),
        "invalid_subject",
        "257-byte multibyte sub",
    )
    .await;
    assert_no_stream_was_opened(&app).await;
}
