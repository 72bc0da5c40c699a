//! Start-up configuration: the listening line, and refusal of invalid or
//! missing settings with an error naming the variable.

use std::time::Duration;

use crate::helpers::*;

/// Starts the server with `envs` and expects a non-zero exit whose stderr
/// names `variable`.
async fn assert_refuses_to_start(envs: &[(&str, &str)], variable: &str) {
    let mut p = spawn_process(envs);
    p.expect_failure(Duration::from_secs(5), &format!("bad {variable}"))
        .await;
    // The pipe reader may lag the exit by a moment.
    let stderr = wait_until("stderr to name the variable", || {
        let text = p.stderr();
        async move { text.contains(variable).then_some(text) }
    })
    .await;
    assert!(!stderr.trim().is_empty());
    let stdout = String::from_utf8_lossy(&p.stdout.lock().unwrap()).into_owned();
    assert!(
        !stdout.contains("listening on"),
        "it listened anyway: {stdout:?}"
    );
}

#[tokio::test]
async fn the_first_stdout_line_names_the_bound_address() {
    // spawn_app itself checks the line is exactly `listening on 127.0.0.1:<port>`.
    let app = spawn_app().await;

    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();

    assert_eq!(
        resp.status().as_u16(),
        200,
        "the reported port is the live one"
    );
}

/// With a valid secret, `variable=value` alone stops start-up naming it.
async fn assert_setting_refused(variable: &str, value: &str) {
    let secret = random_hex(48);
    assert_refuses_to_start(
        &[("NOTIFY_JWT_SECRET", &secret), (variable, value)],
        variable,
    )
    .await;
}

#[tokio::test]
async fn a_missing_jwt_secret_stops_start_up_naming_it() {
    assert_refuses_to_start(&[], "NOTIFY_JWT_SECRET").await;
}

#[tokio::test]
async fn an_unparsable_keepalive_stops_start_up_naming_it() {
    assert_setting_refused("NOTIFY_KEEPALIVE", "banana").await;
}

#[tokio::test]
async fn a_negative_connection_limit_stops_start_up_naming_it() {
    assert_setting_refused("NOTIFY_MAX_CONNECTIONS", "-1").await;
}

#[tokio::test]
async fn other_invalid_settings_stop_start_up_naming_them() {
    for (var, value) in [
        ("NOTIFY_LISTEN", "not-an-address"),
        ("NOTIFY_HISTORY_DEPTH", "many"),
        ("NOTIFY_HISTORY_MAX_AGE", "forever"),
        ("NOTIFY_JWT_LEEWAY", "5 parsecs"),
        ("NOTIFY_SHUTDOWN_GRACE", "-3s"),
        ("NOTIFY_MAX_CONNECTIONS_PER_USER", "two"),
    ] {
        assert_setting_refused(var, value).await;
    }
    assert_refuses_to_start(
        &[("NOTIFY_JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem")],
        "NOTIFY_JWT_PUBLIC_KEY_FILE",
    )
    .await;
}
