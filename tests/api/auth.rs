//! Token checks at subscribe: signature, algorithm pinning, `exp`, leeway,
//! issuer/audience, the `sub` as a user id, and RS256/ES256 public keys.

use std::path::PathBuf;
use std::process::Command;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::*;

/// Subscribes with `?token=` and expects a 401 `unauthorized` error.
async fn assert_refused(app: &NodeApi, token: &str, why: &str) {
    let resp = app.subscribe_request(token).send().await.unwrap();
    assert_eq!(
        resp.status().as_u16(),
        401,
        "{why}: token should be refused"
    );
    assert_error(resp, 401, "unauthorized").await;
}

/// Subscribes with `?token=` and expects a stream.
async fn assert_accepted(app: &NodeApi, token: &str, why: &str) {
    let s = SseStream::open(app.subscribe_request(token)).await;
    assert_eq!(s.status.as_u16(), 200, "{why}: token should be accepted");
}

#[tokio::test]
async fn a_subscribe_without_any_token_is_refused_with_401() {
    let app = in_process_app().await;

    let resp = app.client.get(app.url(SUBSCRIBE)).send().await.unwrap();

    assert_error(resp, 401, "unauthorized").await;
}

#[tokio::test]
async fn malformed_and_wrongly_signed_tokens_are_refused_with_401() {
    let app = in_process_app().await;
    let claims = json!({"sub": "u1", "exp": now_secs() + 600});
    let good = app.sign(&claims);
    let other_secret = sign_hs256(&random_hex(48), &claims);
    // The signature of u1's token on a payload naming u2.
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = b64url(
        json!({"sub": "u2", "exp": now_secs() + 600})
            .to_string()
            .as_bytes(),
    );
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    let truncated_sig = &good[..good.len() - 3];

    for (token, why) in [
        ("", "empty"),
        ("not-a-jwt", "not a JWT"),
        ("a.b.c", "garbage segments"),
        (other_secret.as_str(), "signed with another secret"),
        (tampered.as_str(), "payload swapped under a valid signature"),
        (truncated_sig, "truncated signature"),
    ] {
        assert_refused(&app, token, why).await;
    }
    let resp = app
        .bearer_subscribe_request(&other_secret)
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
}

#[tokio::test]
async fn unsigned_and_other_algorithm_tokens_are_refused() {
    let app = in_process_app().await;
    let claims = json!({"sub": "u1", "exp": now_secs() + 600});
    let payload = b64url(claims.to_string().as_bytes());
    let none = |alg: &str| {
        format!(
            "{}.{}.",
            b64url(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes()),
            payload
        )
    };
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &claims,
        &EncodingKey::from_secret(app.secret.as_bytes()),
    )
    .unwrap();
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims,
        &EncodingKey::from_secret(app.secret.as_bytes()),
    )
    .unwrap();

    assert_accepted(&app, &app.sign(&claims), "HS256 control").await;
    for (token, why) in [
        (none("none"), "alg none"),
        (none("None"), "alg None"),
        (none("NONE"), "alg NONE"),
        (hs384, "HS384 with the right secret"),
        (hs512, "HS512 with the right secret"),
    ] {
        assert_refused(&app, &token, why).await;
    }
}

#[tokio::test]
async fn an_expired_token_is_refused_with_401() {
    let app = in_process_app_with(&[("NOTIFY_JWT_LEEWAY", "0s")]).await;

    let expired = app.user_token_exp("u1", now_secs() - 2);

    assert_refused(&app, &expired, "expired two seconds ago").await;
}

#[tokio::test]
async fn a_token_expired_within_the_default_leeway_is_accepted_at_connect() {
    let app = in_process_app().await;

    let just_expired = app.user_token_exp("u1", now_secs() - 1);
    let long_expired = app.user_token_exp("u1", now_secs() - 30);

    assert_accepted(&app, &just_expired, "within the 5 s leeway").await;
    assert_refused(&app, &long_expired, "beyond the 5 s leeway").await;
}

#[tokio::test]
async fn a_token_without_exp_or_with_a_non_numeric_exp_is_refused() {
    let app = in_process_app().await;

    assert_refused(&app, &app.sign(&json!({"sub": "u1"})), "no exp").await;
    assert_refused(
        &app,
        &app.sign(&json!({"sub": "u1", "exp": "tomorrow"})),
        "string exp",
    )
    .await;
}

#[tokio::test]
async fn issuer_and_audience_are_required_when_configured() {
    let app = in_process_app_with(&[
        ("NOTIFY_JWT_ISSUER", "campusbite-auth"),
        ("NOTIFY_JWT_AUDIENCE", "campusbite-notify"),
    ])
    .await;
    let exp = now_secs() + 600;
    let token = |extra: Value| {
        let mut claims = json!({"sub": "u1", "exp": exp});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        app.sign(&claims)
    };

    assert_accepted(
        &app,
        &token(json!({"iss": "campusbite-auth", "aud": "campusbite-notify"})),
        "both match",
    )
    .await;
    assert_accepted(
        &app,
        &token(json!({"iss": "campusbite-auth", "aud": ["other", "campusbite-notify"]})),
        "audience list holding ours",
    )
    .await;
    for (extra, why) in [
        (json!({"aud": "campusbite-notify"}), "no iss"),
        (json!({"iss": "campusbite-auth"}), "no aud"),
        (
            json!({"iss": "evil", "aud": "campusbite-notify"}),
            "wrong iss",
        ),
        (
            json!({"iss": "campusbite-auth", "aud": "other"}),
            "wrong aud",
        ),
    ] {
        assert_refused(&app, &token(extra), why).await;
    }
}

#[tokio::test]
async fn a_token_whose_subject_is_not_a_valid_user_id_is_refused_with_401() {
    let app = in_process_app().await;
    let exp = now_secs() + 600;
    let long = "x".repeat(257);

    for sub in [
        json!(""),
        json!("u1.orders"),
        json!("*"),
        json!(">"),
        json!("u1 u2"),
        json!("u1\n"),
        json!("$SYS"),
        json!("u\u{1}1"),
        json!(long),
        json!(42),
        json!(null),
    ] {
        assert_refused(
            &app,
            &app.sign(&json!({"sub": sub, "exp": exp})),
            &format!("sub {sub}"),
        )
        .await;
    }
    assert_refused(&app, &app.sign(&json!({"exp": exp})), "no sub").await;
    assert_accepted(&app, &app.user_token(&"x".repeat(256)), "256-byte sub").await;
}

/// A fresh temporary directory.
fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("campusbite-notify-test-{}", random_hex(12)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs openssl, panicking with its stderr on failure.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Generates a key pair with `genpkey_args`; returns (private PEM, public key path).
fn key_pair(dir: &std::path::Path, genpkey_args: &[&str]) -> (Vec<u8>, PathBuf) {
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey_args);
    args.extend_from_slice(&["-out", private.to_str().unwrap()]);
    openssl(&args);
    openssl(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (std::fs::read(&private).unwrap(), public)
}

/// Starts a server checking tokens with `public` and no secret, then checks
/// that `key` tokens work end to end and that HS256 tokens, including one
/// signed with the public key as the HMAC secret, are refused.
async fn public_key_server_accepts_only_its_algorithm(
    alg: Algorithm,
    key: EncodingKey,
    public: PathBuf,
) {
    let app = in_process_app_raw(&[("NOTIFY_JWT_PUBLIC_KEY_FILE", public.to_str().unwrap())]).await;
    let exp = now_secs() + 600;
    let sign = |claims: Value| jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap();
    let user = sign(json!({"sub": "u1", "exp": exp}));
    let publisher = sign(json!({"sub": "svc", "exp": exp, "scope": PUBLISH_SCOPE}));

    let mut s = app.subscribe_with(app.subscribe_request(&user)).await;
    let resp = app.publish_note_as(&publisher, "u1", 1).await;
    assert_eq!(resp.status().as_u16(), 202);
    let id: Value = resp.json().await.unwrap();
    assert_eq!(
        s.next_message().await.0,
        parse_id(id["id"].as_str().unwrap())
    );

    let pem = std::fs::read_to_string(&public).unwrap();
    let switched = sign_hs256(&pem, &json!({"sub": "u1", "exp": exp}));
    assert_refused(
        &app,
        &switched,
        "HS256 signed with the public key as secret",
    )
    .await;
    let random_hs = sign_hs256(&random_hex(48), &json!({"sub": "u1", "exp": exp}));
    assert_refused(&app, &random_hs, "HS256 with some secret").await;
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(json!({"sub": "u1", "exp": exp}).to_string().as_bytes())
    );
    assert_refused(&app, &none, "alg none").await;
}

#[tokio::test]
async fn an_rsa_public_key_switches_token_checking_to_rs256() {
    let dir = temp_dir();
    let (private, public) = key_pair(
        &dir,
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let key = EncodingKey::from_rsa_pem(&private).expect("RSA private key");

    public_key_server_accepts_only_its_algorithm(Algorithm::RS256, key, public).await;

    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_ec_public_key_switches_token_checking_to_es256() {
    let dir = temp_dir();
    let (private, public) = key_pair(
        &dir,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let key = EncodingKey::from_ec_pem(&private).expect("EC private key");

    public_key_server_accepts_only_its_algorithm(Algorithm::ES256, key, public).await;

    let _ = std::fs::remove_dir_all(dir);
}
