//! The command line, through the real binary: clap's errors whole with exit
//! status 2, help on a bare invocation, `check-config`, `check-token`, and
//! `publish` over http and https with each order status' title and message.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

use test_support::*;

test_support::node_helpers!();

const SECRET: &str = "cli-test-secret-0123456789abcdef";

/// Runs the binary with exactly `envs` as its NOTIFY_* / RUST_LOG settings.
fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_campusbite-notify"));
    for (k, _) in std::env::vars() {
        if k.starts_with("NOTIFY_") || k.starts_with("NATS_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(envs.iter().copied());
    cmd.output().expect("run the binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn no_arguments_print_the_help_on_stderr_and_exit_2() {
    let out = run(&[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    let help = text(&out.stderr);
    assert!(
        help.contains("Usage: campusbite-notify <COMMAND>"),
        "{help}"
    );
    for command in ["serve", "check-config", "check-token", "token", "publish"] {
        assert!(
            help.contains(&format!("\n  {command} ")),
            "{command}: {help}"
        );
    }
}

#[test]
fn help_and_version_go_to_stdout_with_exit_0() {
    let out = run(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("campusbite-notify {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = run(&["publish", "--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("--order <ORDER>"));
}

#[test]
fn a_missing_argument_is_named_in_clap_s_whole_error_with_exit_2() {
    let out = run(&["token"], &[("NOTIFY_JWT_SECRET", SECRET)]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: the following required arguments were not provided:\n  --user <USER>\n\n\
         Usage: campusbite-notify token --secret <SECRET> --user <USER>\n\n\
         For more information, try '--help'.\n"
    );
}

#[test]
fn an_invalid_serve_setting_names_its_variable_and_keeps_clap_s_context() {
    let out = run(
        &["serve"],
        &[
            ("NOTIFY_JWT_SECRET", SECRET),
            ("NOTIFY_HISTORY_DEPTH", "many"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: NOTIFY_HISTORY_DEPTH: invalid value 'many' for '--history-depth <HISTORY_DEPTH>': \
         invalid digit found in string\n\nFor more information, try '--help'.\n"
    );
}

#[test]
fn a_flag_without_a_variable_gets_no_invented_name() {
    let out = run(&["publish", "--user", "u1", "--order", "xyz"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: invalid value 'xyz' for '--order <ORDER>': expected a MongoDB ObjectId: \
         24 hexadecimal digits\n\nFor more information, try '--help'.\n"
    );
    let out = run(&["publish", "--user", "u1", "--status", "eaten"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: invalid value 'eaten' for '--status <STATUS>'"),
        "{err}"
    );
    assert!(
        err.contains("[possible values: accepted, preparing, ready, collected, cancelled]"),
        "{err}"
    );
    assert!(!err.contains("NOTIFY_"), "{err}");
}

#[test]
fn check_config_prints_the_effective_settings_with_secrets_hidden() {
    let out = run(
        &["check-config", "--history-depth", "7"],
        &[
            ("NOTIFY_JWT_SECRET", SECRET),
            ("NOTIFY_KEEPALIVE", "5s"),
            ("NOTIFY_LOG_FORMAT", "json"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "configuration is valid");
    for line in [
        "NOTIFY_LISTEN=0.0.0.0:8080 (default)",
        "NOTIFY_JWT_SECRET=<set> (environment)",
        "NOTIFY_JWT_ISSUER= (unset)",
        "NOTIFY_HISTORY_DEPTH=7 (flag)",
        "NOTIFY_KEEPALIVE=5s (environment)",
        "NOTIFY_TOKEN_EXPIRY_WARNING=60s (default)",
        "NOTIFY_LOG_FORMAT=json (environment)",
        "NOTIFY_NATS_URL= (unset)",
    ] {
        assert!(lines.contains(&line), "no line {line:?} in:\n{stdout}");
    }
    assert!(!stdout.contains(SECRET), "the secret was printed");
    // Every line past the first is one setting with its source.
    for line in &lines[1..] {
        assert!(
            line.starts_with("NOTIFY_")
                && [" (default)", " (environment)", " (flag)", " (unset)"]
                    .iter()
                    .any(|s| line.ends_with(s)),
            "{line}"
        );
    }
}

#[test]
fn check_config_refuses_a_bad_setting_in_one_line_with_exit_2() {
    let out = run(
        &["check-config"],
        &[("NOTIFY_JWT_SECRET", SECRET), ("NOTIFY_KEEPALIVE", "1ms")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        "error: NOTIFY_KEEPALIVE: must be at least 100ms\n"
    );
    let out = run(
        &["check-config"],
        &[("NOTIFY_JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: NOTIFY_JWT_PUBLIC_KEY_FILE: cannot read /nonexistent/key.pem"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// `check-token <token>` with the test secret plus `envs`.
fn check_token(token: &str, envs: &[(&str, &str)]) -> (Option<i32>, Vec<String>) {
    let mut all = vec![("NOTIFY_JWT_SECRET", SECRET)];
    all.extend_from_slice(envs);
    let out = run(&["check-token", token], &all);
    let lines = text(&out.stdout).lines().map(str::to_owned).collect();
    (out.status.code(), lines)
}

#[test]
fn check_token_prints_header_claims_and_the_user_id_of_a_good_token() {
    let exp = now_secs() + 3600;
    let token = sign_hs256(
        SECRET,
        &json!({"sub": "507f1f77bcf86cd799439011", "exp": exp}),
    );
    let (code, lines) = check_token(&token, &[]);
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(lines[0], r#"header: {"typ":"JWT","alg":"HS256"}"#);
    let claims: Value = serde_json::from_str(lines[1].strip_prefix("claims: ").unwrap()).unwrap();
    assert_eq!(
        claims,
        json!({"sub": "507f1f77bcf86cd799439011", "exp": exp})
    );
    assert!(lines[2].starts_with(&format!("exp: {exp} (")), "{lines:?}");
    assert!(
        lines[3].starts_with(&format!(
            "user token: accepted; user id \"507f1f77bcf86cd799439011\"; the stream ends at {exp} ("
        )),
        "{lines:?}"
    );
    assert_eq!(
        lines[4],
        "publisher token: refused by rule missing_scope: token lacks the notifications:publish scope"
    );
}

#[test]
fn check_token_names_the_rule_that_refuses_a_token() {
    let exp = now_secs() + 3600;
    // (token, extra settings, the line that names the rule)
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            sign_hs256(SECRET, &json!({"sub": "u1", "exp": now_secs() - 60})),
            vec![],
            "user token: refused by rule expired: token has expired",
        ),
        (
            sign_hs256("another-secret-0123456789abcdef", &json!({"sub": "u1", "exp": exp})),
            vec![],
            "user token: refused by rule bad_signature: token signature is invalid",
        ),
        (
            sign_hs256(SECRET, &json!({"sub": "u1", "exp": exp, "aud": "mobile"})),
            vec![("NOTIFY_JWT_AUDIENCE", "web")],
            "user token: refused by rule wrong_issuer_or_audience: token issuer or audience is not accepted",
        ),
        (
            sign_hs256(SECRET, &json!({"sub": "u1", "exp": exp})),
            vec![("NOTIFY_JWT_ISSUER", "campusbite")],
            "user token: refused by rule missing_claim: token lacks a required claim: iss",
        ),
        (
            sign_hs256(SECRET, &json!({"exp": exp})),
            vec![],
            "user token: refused by rule missing_claim: token lacks a required claim: sub",
        ),
        (
            sign_hs256(SECRET, &json!({"sub": "a.b", "exp": exp})),
            vec![],
            "user token: refused by rule invalid_subject: token subject is not a valid user id: ",
        ),
        (
            "not-a-jwt".to_owned(),
            vec![],
            "user token: refused by rule malformed: token is malformed",
        ),
    ];
    for (token, envs, expected) in cases {
        let (code, lines) = check_token(&token, &envs);
        assert_eq!(code, Some(1), "{expected}: {lines:?}");
        assert!(
            lines.iter().any(|l| l.starts_with(expected)),
            "expected {expected:?} in {lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("publisher token: refused by rule ")),
            "{lines:?}"
        );
    }
}

#[test]
fn check_token_accepts_a_publisher_token_as_a_publisher() {
    let token = sign_hs256(
        SECRET,
        &json!({"sub": "order-service", "exp": now_secs() + 600, "scope": PUBLISH_SCOPE}),
    );
    let (code, lines) = check_token(&token, &[]);
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(lines.last().unwrap(), "publisher token: accepted");
}

/// The CLI's `publish` for `user` with `args`, against `base`.
fn publish(base: &str, secret: &str, user: &str, args: &[&str]) -> Value {
    let mut all = vec!["publish", "--url", base, "--user", user];
    all.extend_from_slice(args);
    let out = run(&all, &[("NOTIFY_JWT_SECRET", secret)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let body = stdout
        .strip_prefix("202 ")
        .unwrap_or_else(|| panic!("not 202: {stdout}"));
    serde_json::from_str(body).unwrap()
}

/// [`publish`] to user `u1` on a blocking thread, so that the test's
/// runtime keeps reading the stream meanwhile.
async fn publish_off_thread(base: &str, secret: &str, args: &[&str]) -> Value {
    let (base, secret) = (base.to_string(), secret.to_string());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        publish(&base, &secret, "u1", &args)
    })
    .await
    .expect("the publish thread")
}

#[tokio::test]
async fn publish_sends_each_status_with_its_title_message_and_the_given_order() {
    let app = spawn_app().await;
    let mut stream = app.subscribe("u1").await;
    let order = "665f1f77bcf86cd799439012";
    let expected = [
        (
            "accepted",
            "Order Accepted ✅",
            "The kitchen has accepted order CB7.",
        ),
        (
            "preparing",
            "Order Being Prepared 👨‍🍳",
            "Order CB7 is being prepared.",
        ),
        (
            "ready",
            "Order Ready for Pickup 🛍",
            "Order CB7 is ready. Show OTP 4711 at the counter.",
        ),
        (
            "collected",
            "Order Collected 🎉",
            "Order CB7 has been collected. Enjoy your meal!",
        ),
        ("cancelled", "Order Cancelled", "Order CB7 was cancelled."),
    ];
    for (status, title, message) in expected {
        let answer = publish_off_thread(
            &app.base,
            &app.secret,
            &[
                "--status",
                status,
                "--order",
                order,
                "--order-number",
                "CB7",
                "--otp",
                "4711",
            ],
        )
        .await;
        let (id, data) = stream.next_message().await;
        assert_eq!(answer, json!({"id": id.to_string()}));
        let mut data_expected = json!({"orderId": order, "orderNumber": "CB7", "status": status});
        if status == "ready" {
            data_expected["otp"] = json!("4711");
        }
        assert_eq!(
            serde_json::from_str::<Value>(&data).unwrap(),
            json!({"type": "order_update", "title": title, "message": message, "data": data_expected})
        );
    }
}

#[tokio::test]
async fn publish_without_an_order_generates_an_object_id() {
    let app = spawn_app().await;
    let mut stream = app.subscribe("u1").await;
    let base = app.base.clone();
    let secret = app.secret.clone();
    tokio::task::spawn_blocking(move || publish(&base, &secret, "u1", &["--status", "accepted"]))
        .await
        .unwrap();
    let (_, data) = stream.next_message().await;
    let data: Value = serde_json::from_str(&data).unwrap();
    let order = data["data"]["orderId"].as_str().unwrap();
    assert_eq!(order.len(), 24, "{order}");
    assert!(order.bytes().all(|b| b.is_ascii_hexdigit()), "{order}");
}

/// A CA and a certificate for 127.0.0.1 signed by it (openssl).
fn tls_files(dir: &Path) {
    let sh = |script: &str| {
        let status = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl failed: {script}");
    };
    sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.pem -days 2 -subj /CN=cli-test-ca",
    );
    sh(
        "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout key.pem -out req.csr -subj /CN=127.0.0.1 && \
        printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && \
        openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out cert.pem -days 2 -extfile san.ext",
    );
}

#[tokio::test]
async fn publish_speaks_https_trusting_a_given_ca_and_refuses_an_unknown_one() {
    let dir = std::env::temp_dir().join(format!("cb-cli-tls-{}", random_hex(12)));
    std::fs::create_dir_all(&dir).unwrap();
    tls_files(&dir);
    let cert = dir.join("cert.pem").display().to_string();
    let key = dir.join("key.pem").display().to_string();
    let app = spawn_app_with(&[
        ("NOTIFY_TLS_CERT_FILE", &cert),
        ("NOTIFY_TLS_KEY_FILE", &key),
    ])
    .await;
    let https = app.base.replace("http://", "https://");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let req = client
        .get(format!("{https}{SUBSCRIBE}"))
        .query(&[("token", app.user_token("u1"))]);
    let mut stream = SseStream::open(req).await;
    stream.expect_start().await;

    let ca_file = dir.join("ca.pem");
    let answer = publish_off_thread(
        &https,
        &app.secret,
        &[
            "--status",
            "collected",
            "--ca-file",
            ca_file.to_str().unwrap(),
        ],
    )
    .await;
    let (id, data) = stream.next_message().await;
    assert_eq!(answer, json!({"id": id.to_string()}));
    assert!(data.contains("Order Collected"), "{data}");

    // Without the CA the certificate is refused: exit 2, one error line.
    let (base, secret) = (https.clone(), app.secret.clone());
    let out = tokio::task::spawn_blocking(move || {
        run(
            &["publish", "--url", &base, "--user", "u1", "--timeout", "1s"],
            &[("NOTIFY_JWT_SECRET", &secret)],
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.lines()
            .last()
            .unwrap()
            .starts_with("error: https://127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("certificate"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
