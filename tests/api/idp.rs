//! Tokens from an identity provider (docs/protocol.md §1): a JWK set served
//! over HTTP by a stand-in IdP in this test process, `kid` selection with
//! the key's own algorithm, rotation without a restart, the refetch rate
//! limit, readiness while the IdP is down, the user claim, and publisher
//! tokens kept apart from user tokens.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::auth::{key_pair, temp_dir};
use crate::helpers::*;

const AUTH_FAILURES: &str = "notify_auth_failures_total";

// ---------------------------------------------------------------------------
// The stand-in identity provider
// ---------------------------------------------------------------------------

/// A signing key of the IdP and its public JWK.
struct IdpKey {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

impl IdpKey {
    /// A fresh key pair for `alg` (RS256, ES256 or EdDSA), made with openssl.
    fn generate(alg: Algorithm, kid: &str) -> Self {
        let dir = temp_dir();
        let genpkey: &[&str] = match alg {
            Algorithm::RS256 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            Algorithm::ES256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            Algorithm::EdDSA => &["-algorithm", "ED25519"],
            other => panic!("no test keys for {other:?}"),
        };
        let (pem, _) = key_pair(&dir, genpkey);
        let _ = std::fs::remove_dir_all(dir);
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        }
        .unwrap();
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        Self {
            kid: kid.to_owned(),
            alg,
            key,
            jwk,
        }
    }

    /// Signs `claims` with this key, naming it in the header's `kid`.
    fn sign(&self, claims: &Value) -> String {
        self.sign_as(claims, self.alg, Some(&self.kid))
    }

    /// Signs `claims` with this key under another header `alg`/`kid`.
    fn sign_as(&self, claims: &Value, alg: Algorithm, kid: Option<&str>) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }

    /// A user token for `sub`, valid for an hour.
    fn user_token(&self, sub: &str) -> String {
        self.sign(&json!({"sub": sub, "exp": now_secs() + 3600}))
    }

    /// A publisher token named `order-service`.
    fn publisher_token(&self) -> String {
        self.sign(
            &json!({"sub": "order-service", "exp": now_secs() + 3600, "scope": PUBLISH_SCOPE}),
        )
    }
}

/// A JWK set document of `keys`.
fn jwk_set(keys: &[&IdpKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

struct IdpState {
    body: Mutex<String>,
    up: AtomicBool,
    requests: AtomicUsize,
    stop: AtomicBool,
}

/// Serves a JWK set on `127.0.0.1:0`, counts every request, and can be taken
/// down (connections are closed unanswered) and brought back.
struct Idp {
    addr: SocketAddr,
    state: Arc<IdpState>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Idp {
    fn start(keys: &[&IdpKey]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(IdpState {
            body: Mutex::new(jwk_set(keys)),
            up: AtomicBool::new(true),
            requests: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                shared.requests.fetch_add(1, Ordering::SeqCst);
                if shared.up.load(Ordering::SeqCst) {
                    let body = shared.body.lock().unwrap().clone();
                    answer(conn, &body);
                }
            }
        });
        Self {
            addr,
            state,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// Serves `keys` from now on.
    fn serve(&self, keys: &[&IdpKey]) {
        *self.state.body.lock().unwrap() = jwk_set(keys);
    }

    fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::SeqCst);
    }

    /// Requests received so far, answered or not.
    fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request head and answers it with `body` as JSON.
fn answer(mut conn: TcpStream, body: &str) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(response.as_bytes());
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Starts the server with its user keys from `jwks` (a URL or a path).
async fn spawn_with_jwks(jwks: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut envs = vec![("NOTIFY_JWT_JWKS_URL", jwks), ("NO_PROXY", "127.0.0.1")];
    envs.extend_from_slice(extra);
    spawn_app_raw(&envs).await
}

/// The status and `notify_auth_failures_total` reason a subscribe gets with `token`.
async fn subscribe_status(app: &TestApp, token: &str) -> u16 {
    let mut s = SseStream::open(app.subscribe_request(token)).await;
    let status = s.status.as_u16();
    if status != 200 {
        let _ = s.body_text().await;
    }
    status
}

/// Subscribes with `token` and expects a 401 counted under `reason`.
async fn assert_refused(app: &TestApp, token: &str, reason: &str, why: &str) {
    let before = app
        .metrics()
        .await
        .value_or_zero(AUTH_FAILURES, &[("reason", reason)]);
    let resp = app.subscribe_request(token).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401, "{why}: should be refused");
    assert_error(resp, 401, "unauthorized").await;
    let after = app
        .metrics()
        .await
        .value_or_zero(AUTH_FAILURES, &[("reason", reason)]);
    assert_eq!(after, before + 1.0, "{why}: not counted as {reason}");
}

/// Publishes note `n` to `user` with `token`.
async fn publish_as(app: &TestApp, token: &str, user: &str, n: usize) -> reqwest::Response {
    app.client
        .post(app.url(PUBLISH))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(json!({"userId": user, "notification": note(n)}).to_string())
        .send()
        .await
        .unwrap()
}

/// Publishes with `token`, expects 202, returns the event id.
async fn publish_ok(app: &TestApp, token: &str, user: &str, n: usize) -> u64 {
    let resp = publish_as(app, token, user, n).await;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or_default();
    assert_eq!(status, 202, "publish refused: {body}");
    parse_id(body["id"].as_str().unwrap())
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let resp = app.client.get(app.url("/readyz")).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

// ---------------------------------------------------------------------------
// JWK sets
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tokens_signed_with_any_key_of_the_set_work_end_to_end() {
    let rsa = IdpKey::generate(Algorithm::RS256, "rsa-1");
    let ec = IdpKey::generate(Algorithm::ES256, "ec-1");
    let ed = IdpKey::generate(Algorithm::EdDSA, "ed-1");
    let idp = Idp::start(&[&rsa, &ec, &ed]);
    let app = spawn_with_jwks(&idp.url(), &[]).await;

    for (key, user) in [(&rsa, "u-rsa"), (&ec, "u-ec"), (&ed, "u-ed")] {
        let mut s = app
            .subscribe_with(app.subscribe_request(&key.user_token(user)))
            .await;
        // Publisher tokens come from the same IdP when no publisher key is set.
        let id = publish_ok(&app, &key.publisher_token(), user, 1).await;
        assert_eq!(s.next_message().await.0, id, "{:?}", key.alg);
    }
    let m = app.metrics().await;
    assert_eq!(m.value("notify_jwks_keys", &[]), Some(3.0));
    assert_eq!(m.value("notify_jwks_refreshes_total", &[]), Some(1.0));
    assert_eq!(
        m.value("notify_jwks_refresh_failures_total", &[]),
        Some(0.0)
    );
    assert_eq!(idp.requests(), 1, "known kids refetched the set");
}

#[tokio::test]
async fn a_token_whose_header_does_not_match_its_key_is_refused() {
    let rsa = IdpKey::generate(Algorithm::RS256, "rsa-1");
    let ec = IdpKey::generate(Algorithm::ES256, "ec-1");
    let idp = Idp::start(&[&rsa, &ec]);
    let app = spawn_with_jwks(&idp.url(), &[]).await;
    let claims = json!({"sub": "u1", "exp": now_secs() + 600});

    // An RS256 signature presented under the ES256 key's kid.
    let rs_on_ec = rsa.sign_as(&claims, Algorithm::RS256, Some("ec-1"));
    assert_refused(&app, &rs_on_ec, "wrong_algorithm", "RS256 token, ES256 kid").await;
    // The right algorithm and kid, signed by another key.
    let genuine = rsa.sign_as(&claims, Algorithm::RS256, Some("rsa-1"));
    let other = IdpKey::generate(Algorithm::RS256, "x");
    let forged_by_other = other.sign_as(&claims, Algorithm::RS256, Some("rsa-1"));
    assert_eq!(subscribe_status(&app, &genuine).await, 200, "control");
    assert_refused(
        &app,
        &forged_by_other,
        "bad_signature",
        "another key's signature",
    )
    .await;
    // No kid at all.
    let no_kid = rsa.sign_as(&claims, Algorithm::RS256, None);
    assert_refused(&app, &no_kid, "missing_kid", "no kid").await;
    // HS256 with the published JWK as the secret.
    let hs = sign_hs256(&rsa.jwk.to_string(), &claims);
    assert_refused(&app, &hs, "missing_kid", "HS256 without kid").await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let hs_kid = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(rsa.jwk["n"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    assert_refused(&app, &hs_kid, "wrong_algorithm", "HS256 under an RSA kid").await;
}

#[tokio::test]
async fn a_key_rotated_in_at_the_idp_works_and_a_rotated_out_one_stops_without_a_restart() {
    let old = IdpKey::generate(Algorithm::RS256, "2024-old");
    let new = IdpKey::generate(Algorithm::ES256, "2025-new");
    let idp = Idp::start(&[&old]);
    let app = spawn_with_jwks(&idp.url(), &[("NOTIFY_JWT_JWKS_REFRESH", "1s")]).await;
    assert_eq!(subscribe_status(&app, &old.user_token("u1")).await, 200);

    // The IdP publishes the new key beside the old one and signs with it.
    idp.serve(&[&old, &new]);
    assert_eq!(subscribe_status(&app, &new.user_token("u1")).await, 200);
    assert_eq!(subscribe_status(&app, &old.user_token("u1")).await, 200);

    // Then it retires the old key.
    idp.serve(&[&new]);
    wait_until("the retired key to be refused", || async {
        (subscribe_status(&app, &old.user_token("u1")).await == 401).then_some(())
    })
    .await;
    assert_eq!(subscribe_status(&app, &new.user_token("u1")).await, 200);
    assert_eq!(
        app.metrics().await.value("notify_jwks_keys", &[]),
        Some(1.0)
    );
}

#[tokio::test]
async fn an_unknown_kid_is_refused_after_exactly_one_shared_refetch_and_not_refetched_within_30s() {
    let known = IdpKey::generate(Algorithm::ES256, "known");
    let stranger = IdpKey::generate(Algorithm::ES256, "stranger");
    let idp = Idp::start(&[&known]);
    let app = spawn_with_jwks(&idp.url(), &[]).await;
    assert_eq!(idp.requests(), 1, "the first load");

    // Concurrent tokens with unknown kids share one refetch.
    let tokens: Vec<String> = (0..6)
        .map(|i| {
            stranger.sign_as(
                &json!({"sub": "u1", "exp": now_secs() + 600}),
                Algorithm::ES256,
                Some(&format!("unknown-{i}")),
            )
        })
        .collect();
    let statuses =
        futures_util::future::join_all(tokens.iter().map(|t| subscribe_status(&app, t))).await;
    assert_eq!(statuses, vec![401; 6]);
    assert_eq!(idp.requests(), 2, "unknown kids refetched the set once");

    // Within 30 s no unknown kid refetches again, even one the IdP now has.
    idp.serve(&[&known, &stranger]);
    assert_refused(
        &app,
        &stranger.user_token("u1"),
        "unknown_kid",
        "rate-limited refetch",
    )
    .await;
    assert_refused(&app, &tokens[0], "unknown_kid", "same unknown kid again").await;
    assert_eq!(idp.requests(), 2, "refetched within 30 s");
    assert_eq!(subscribe_status(&app, &known.user_token("u1")).await, 200);
    let m = app.metrics().await;
    assert_eq!(m.value("notify_jwks_refreshes_total", &[]), Some(2.0));
    assert_eq!(
        m.value(AUTH_FAILURES, &[("reason", "unknown_kid")]),
        Some(8.0)
    );
}

#[tokio::test]
async fn a_node_whose_idp_is_down_at_start_is_not_ready_until_the_set_loads() {
    let key = IdpKey::generate(Algorithm::EdDSA, "ed-1");
    let idp = Idp::start(&[&key]);
    idp.set_up(false);
    let app = spawn_with_jwks(&idp.url(), &[]).await;

    let (status, body) = readyz(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["keysLoaded"], json!(false));
    // The token is fine; the node cannot check it yet.
    let resp = app
        .subscribe_request(&key.user_token("u1"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 503, "auth_unavailable").await;

    idp.set_up(true);
    wait_for(
        "the node to load the set and become ready",
        2 * DEADLINE,
        || async { (readyz(&app).await.0 == 200).then_some(()) },
    )
    .await;
    assert_eq!(subscribe_status(&app, &key.user_token("u1")).await, 200);
    let m = app.metrics().await;
    assert!(m.value_or_zero("notify_jwks_refresh_failures_total", &[]) >= 1.0);
    assert_eq!(m.value("notify_ready", &[]), Some(1.0));
}

#[tokio::test]
async fn the_last_good_set_keeps_working_while_the_idp_is_down() {
    let key = IdpKey::generate(Algorithm::RS256, "rsa-1");
    let idp = Idp::start(&[&key]);
    let app = spawn_with_jwks(&idp.url(), &[("NOTIFY_JWT_JWKS_REFRESH", "1s")]).await;
    assert_eq!(subscribe_status(&app, &key.user_token("u1")).await, 200);

    idp.set_up(false);
    app.wait_metric("notify_jwks_refresh_failures_total", &[], |v| v >= 2.0)
        .await;

    assert_eq!(subscribe_status(&app, &key.user_token("u1")).await, 200);
    assert_eq!(readyz(&app).await.0, 200);
    assert_eq!(
        app.metrics().await.value("notify_jwks_keys", &[]),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_jwk_set_can_come_from_a_file() {
    let key = IdpKey::generate(Algorithm::ES256, "file-key");
    let dir = temp_dir();
    let path = dir.join("jwks.json");
    std::fs::write(&path, jwk_set(&[&key])).unwrap();

    let app = spawn_with_jwks(path.to_str().unwrap(), &[]).await;

    let mut s = app
        .subscribe_with(app.subscribe_request(&key.user_token("u1")))
        .await;
    let id = publish_ok(&app, &key.publisher_token(), "u1", 1).await;
    assert_eq!(s.next_message().await.0, id);
    drop(app);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn jwk_settings_that_cannot_work_stop_start_up_with_one_line_naming_them() {
    let dir = temp_dir();
    let missing = dir.join("missing.json");
    let not_a_set = dir.join("not-a-set.json");
    std::fs::write(
        &not_a_set,
        "{\"keys\": [{\"kty\": \"oct\", \"kid\": \"h\", \"k\": \"c2VjcmV0\"}]}",
    )
    .unwrap();
    let secret = random_hex(32);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![
                ("NOTIFY_JWT_JWKS_URL", "http://127.0.0.1:9/jwks"),
                ("NOTIFY_JWT_SECRET", &secret),
            ],
            "NOTIFY_JWT_JWKS_URL",
        ),
        (
            vec![("NOTIFY_JWT_JWKS_URL", "ftp://idp.example/jwks")],
            "NOTIFY_JWT_JWKS_URL",
        ),
        (
            vec![("NOTIFY_JWT_JWKS_URL", missing.to_str().unwrap())],
            "NOTIFY_JWT_JWKS_URL",
        ),
        (
            vec![("NOTIFY_JWT_JWKS_URL", not_a_set.to_str().unwrap())],
            "NOTIFY_JWT_JWKS_URL",
        ),
        (
            vec![
                ("NOTIFY_JWT_SECRET", &secret),
                ("NOTIFY_PUBLISHER_JWT_SECRET", "short"),
            ],
            "NOTIFY_PUBLISHER_JWT_SECRET",
        ),
        (
            vec![
                ("NOTIFY_JWT_SECRET", &secret),
                ("NOTIFY_JWT_JWKS_REFRESH", "soon"),
            ],
            "NOTIFY_JWT_JWKS_REFRESH",
        ),
    ];
    for (envs, name) in cases {
        let mut p = spawn_process(&envs);
        let status = p
            .wait_exit(DEADLINE)
            .await
            .unwrap_or_else(|| panic!("{envs:?}: the server started"));
        assert!(!status.success(), "{envs:?}");
        let stderr = p.stderr();
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            lines.iter().any(|l| l.contains(name)),
            "{envs:?}: no line names {name}: {stderr}"
        );
        assert!(
            lines.iter().all(|l| !l.contains("listening")),
            "{envs:?}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------
// The user claim
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_user_id_can_come_from_a_custom_claim_as_a_string_or_an_integer() {
    let app = spawn_app_with(&[("NOTIFY_JWT_USER_CLAIM", "https://campusbite.com/uid")]).await;
    let exp = now_secs() + 600;
    let claim = "https://campusbite.com/uid";
    let token = |uid: Value| {
        let mut claims = json!({"sub": "auth0|abc", "exp": exp});
        claims[claim] = uid;
        app.sign(&claims)
    };

    for (uid, user) in [(json!("stu-7"), "stu-7"), (json!(20241234), "20241234")] {
        let mut s = app.subscribe_with(app.subscribe_request(&token(uid))).await;
        let id = app.publish_n(user, 1).await;
        assert_eq!(s.next_message().await.0, id, "user {user}");
    }
    // `sub` is not where the user id is read from any more.
    assert_refused(
        &app,
        &app.user_token("stu-7"),
        "missing_claim",
        "no custom claim",
    )
    .await;
    assert_refused(&app, &token(json!("a.b")), "invalid_subject", "wildcard id").await;
    assert_refused(&app, &token(json!(1.5)), "invalid_subject", "fractional id").await;
    assert_refused(&app, &token(json!(["x"])), "invalid_subject", "list id").await;
}

// ---------------------------------------------------------------------------
// Publisher tokens
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_publisher_token_opens_no_stream_and_no_session() {
    let app = spawn_app().await;
    let publisher = app.publisher_token();
    let as_list =
        app.sign(&json!({"sub": "svc", "exp": now_secs() + 600, "scope": ["x", PUBLISH_SCOPE]}));

    assert_refused(
        &app,
        &publisher,
        "publisher_token",
        "publisher token on subscribe",
    )
    .await;
    assert_refused(&app, &as_list, "publisher_token", "scope as a list").await;
    let resp = app
        .client
        .post(app.url(SESSION))
        .bearer_auth(&publisher)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("set-cookie").is_none());
    assert_error(resp, 401, "unauthorized").await;
    // It still publishes.
    publish_ok(&app, &publisher, "u1", 1).await;
}

#[tokio::test]
async fn with_a_publisher_key_neither_kind_of_key_signs_for_the_other() {
    let publisher_secret = random_hex(40);
    let app = spawn_app_with(&[("NOTIFY_PUBLISHER_JWT_SECRET", &publisher_secret)]).await;
    let exp = now_secs() + 600;
    let by_publisher_key = sign_hs256(
        &publisher_secret,
        &json!({"sub": "order-service", "exp": exp, "scope": PUBLISH_SCOPE}),
    );
    let mut s = app.subscribe("u1").await;

    // The user key's publisher token (the old way) no longer publishes.
    let resp = publish_as(&app, &app.publisher_token(), "u1", 1).await;
    assert_error(resp, 401, "unauthorized").await;
    let id = publish_ok(&app, &by_publisher_key, "u1", 2).await;
    assert_eq!(s.next_message().await.0, id);

    // The publisher key mints no user tokens, with or without the scope.
    let user_by_publisher_key = sign_hs256(&publisher_secret, &json!({"sub": "u1", "exp": exp}));
    assert_refused(
        &app,
        &user_by_publisher_key,
        "bad_signature",
        "user token, publisher key",
    )
    .await;
    assert_refused(
        &app,
        &by_publisher_key,
        "bad_signature",
        "publisher token on subscribe",
    )
    .await;
    // A publisher token must name its publisher.
    let anonymous = sign_hs256(
        &publisher_secret,
        &json!({"exp": exp, "scope": PUBLISH_SCOPE}),
    );
    let resp = publish_as(&app, &anonymous, "u1", 3).await;
    assert_error(resp, 401, "unauthorized").await;
    // A publisher-key token without the scope is a 403, as before.
    let no_scope = sign_hs256(&publisher_secret, &json!({"sub": "svc", "exp": exp}));
    let resp = publish_as(&app, &no_scope, "u1", 4).await;
    assert_error(resp, 403, "forbidden").await;
}
