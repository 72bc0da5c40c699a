//! Token lifetime on an open stream: the `token-expiring` warning, the clean
//! end at `exp`, and the refused reconnect with the same token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::helpers::*;

fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn a_stream_warns_at_once_and_ends_cleanly_when_its_token_expires() {
    let app = in_process_app_with(&[("NOTIFY_JWT_LEEWAY", "0s")]).await;
    let exp = now_secs() + 3;
    let token = app.user_token_exp("u1", exp);
    let mut s = app.subscribe_with(app.subscribe_request(&token)).await;

    let warning = s.next_event_within(Duration::from_secs(1)).await;
    assert_eq!(warning.event, "token-expiring");
    assert_eq!(warning.json(), json!({"expiresAt": exp}));
    let id = app.publish_n("u1", 1).await;
    assert_eq!(
        s.next_message().await.0,
        id,
        "notifications still flow until exp"
    );
    s.expect_eof(Duration::from_secs(6)).await;
    let ended = unix_now_f64();

    assert!(
        ended >= exp as f64 - 0.2,
        "ended {:.2} s before exp",
        exp as f64 - ended
    );
    assert!(
        ended <= exp as f64 + 2.0,
        "ended {:.2} s after exp",
        ended - exp as f64
    );
    // Reconnect strictly after exp (the stream may end a moment before it).
    let wait = exp as f64 + 0.05 - unix_now_f64();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
    let resp = app.subscribe_request(&token).send().await.unwrap();
    assert_eq!(
        resp.status().as_u16(),
        401,
        "the token was accepted again at exp{:+.3} s (leeway 0 s)",
        unix_now_f64() - exp as f64
    );
    assert_error(resp, 401, "unauthorized").await;
}

#[tokio::test]
async fn the_token_expiring_event_comes_the_configured_time_before_expiry() {
    let app = in_process_app_with(&[
        ("NOTIFY_JWT_LEEWAY", "0s"),
        ("NOTIFY_TOKEN_EXPIRY_WARNING", "2s"),
    ])
    .await;
    let exp = now_secs() + 5;
    let mut s = app
        .subscribe_with(app.subscribe_request(&app.user_token_exp("u1", exp)))
        .await;

    let warning = s.next_event_within(Duration::from_secs(6)).await;
    let warned = unix_now_f64();
    s.expect_eof(Duration::from_secs(6)).await;
    let ended = unix_now_f64();

    assert_eq!(warning.event, "token-expiring");
    assert_eq!(warning.json(), json!({"expiresAt": exp}));
    let lead = exp as f64 - warned;
    assert!(
        (1.5..=2.5).contains(&lead),
        "warned {lead:.2} s before exp, configured 2 s"
    );
    assert!(
        ended >= exp as f64 - 0.2 && ended <= exp as f64 + 2.0,
        "ended at exp{:+.2} s",
        ended - exp as f64
    );
}

#[tokio::test]
async fn a_cookie_stream_still_ends_at_its_own_expiry_after_the_session_is_renewed() {
    let app = in_process_app_with(&[("NOTIFY_JWT_LEEWAY", "0s")]).await;
    let exp = now_secs() + 3;
    let old = app.user_token_exp("u1", exp);
    let mut s = app
        .subscribe_with(
            app.client
                .get(app.url(SUBSCRIBE))
                .header("cookie", format!("{COOKIE}={old}")),
        )
        .await;

    let renewed = app.post_session(&app.user_token("u1")).await;
    assert_eq!(renewed.status().as_u16(), 204);
    assert_eq!(s.next_event().await.event, "token-expiring");
    s.expect_eof(Duration::from_secs(6)).await;

    assert!(
        unix_now_f64() >= exp as f64 - 0.2,
        "the stream ended before its own exp"
    );
}
