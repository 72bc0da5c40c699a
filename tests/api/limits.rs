//! Connection limits: per user (429) and per node (503 `node_full`).

use crate::helpers::*;

/// Retries a subscribe for `user` until it is accepted (closing a stream is
/// asynchronous on the server side).
async fn subscribe_eventually(app: &TestApp, user: &str) -> SseStream {
    wait_until("a freed slot to accept a new stream", || async move {
        let mut s = SseStream::open(app.subscribe_request(&app.user_token(user))).await;
        if s.status.as_u16() == 200 {
            s.expect_start().await;
            Some(s)
        } else {
            None
        }
    })
    .await
}

#[tokio::test]
async fn a_users_third_stream_is_refused_with_429_when_the_per_user_limit_is_two() {
    let app = spawn_app_with(&[("NOTIFY_MAX_CONNECTIONS_PER_USER", "2")]).await;
    let first = app.subscribe("u1").await;
    let _second = app.subscribe("u1").await;

    let resp = app.subscribe_response("u1").await;
    assert_error(resp, 429, "too_many_connections").await;
    let _other_user = app.subscribe("u2").await;
    assert!(
        app.metrics()
            .await
            .value_or_zero("notify_connections_rejected_total", &[])
            >= 1.0
    );

    drop(first);
    let mut again = subscribe_eventually(&app, "u1").await;
    app.publish_n_expecting(&mut again, "u1", 1).await;
}

#[tokio::test]
async fn any_stream_beyond_the_node_limit_is_refused_with_503_node_full() {
    let app = spawn_app_with(&[("NOTIFY_MAX_CONNECTIONS", "2")]).await;
    let first = app.subscribe("u1").await;
    let _second = app.subscribe("u2").await;

    let resp = app.subscribe_response("u3").await;
    assert_error(resp, 503, "node_full").await;
    let resp = app.subscribe_response("u1").await;
    assert_error(resp, 503, "node_full").await;
    assert!(
        app.metrics()
            .await
            .value_or_zero("notify_connections_rejected_total", &[])
            >= 2.0
    );

    drop(first);
    let mut again = subscribe_eventually(&app, "u3").await;
    app.publish_n_expecting(&mut again, "u3", 1).await;
}
