//! Soft refusals (docs/protocol.md §1): a refusal that a retry can cure is
//! answered to an EventSource (`Accept: text/event-stream`) with a short
//! `200 text/event-stream` — `retry:`, the start position for a request
//! without one, `event: unavailable` — so the browser keeps retrying by
//! itself; other clients keep the JSON 429/503; 401 stays a 401.
//! (`bus_unavailable` needs NATS: tests/cluster/soft_refusal.rs.)

use crate::helpers::*;

/// Closes `holder`, waits until the node has freed its slot, then
/// subscribes `user` as the browser comes back: with the soft refusal's id
/// as its `Last-Event-ID`.
async fn resume_after_release(
    app: &TestApp,
    holder: SseStream,
    user: &str,
    after: u64,
) -> SseStream {
    drop(holder);
    app.wait_metric("notify_connections_open", &[], |v| v == 0.0)
        .await;
    let req = app
        .subscribe_request(&app.user_token(user))
        .header("last-event-id", after.to_string());
    app.subscribe_with(as_event_source(req)).await
}

fn rejected(m: &Metrics, reason: &str) -> f64 {
    m.value_or_zero("notify_connections_rejected_total", &[("reason", reason)])
}

#[tokio::test]
async fn past_the_per_user_limit_an_event_source_gets_a_soft_refusal_and_resumes_from_its_position_without_loss(
) {
    let app = spawn_app_with(&[("NOTIFY_MAX_CONNECTIONS_PER_USER", "1")]).await;
    let mut holder = app.subscribe("u1").await;
    let before = app.publish_n("u1", 1).await;
    assert_eq!(holder.next_message().await.0, before);
    let token = app.user_token("u1");

    // Other clients: the JSON 429 as before.
    let resp = app.subscribe_request(&token).send().await.unwrap();
    let retry_after = assert_error_retry_after(resp, 429, "too_many_connections").await;
    // An EventSource that never connected: the user's current position.
    let position = assert_soft_refusal(
        app.subscribe_request(&token),
        "too_many_connections",
        retry_after,
    )
    .await;
    assert_eq!(
        position,
        Some(before),
        "the position is the newest notification"
    );
    // One with a cursor keeps it: no id line, by header or by query.
    let with_header = app
        .subscribe_request(&token)
        .header("last-event-id", before.to_string());
    assert_eq!(
        assert_soft_refusal(with_header, "too_many_connections", retry_after).await,
        None
    );
    let with_query = app
        .subscribe_request(&token)
        .query(&[("lastEventId", before.to_string())]);
    assert_eq!(
        assert_soft_refusal(with_query, "too_many_connections", retry_after).await,
        None
    );
    // A bad token is still a 401, EventSource or not.
    let bad = as_event_source(app.subscribe_request("not-a-jwt"));
    assert_error(bad.send().await.unwrap(), 401, "unauthorized").await;

    // Published while the page waits; then the other tab closes and the
    // browser comes back with the refusal's id as its Last-Event-ID.
    let missed = app.publish_n("u1", 2).await;
    let mut page = resume_after_release(&app, holder, "u1", position.unwrap()).await;
    assert_eq!(
        page.next_message().await.0,
        missed,
        "exactly what came after"
    );
    let live = app.publish_n("u1", 3).await;
    assert_eq!(page.next_message().await.0, live);

    assert_eq!(
        rejected(&app.metrics().await, "per_user_limit"),
        4.0,
        "JSON and soft refusals count"
    );
}

#[tokio::test]
async fn at_the_node_limit_an_event_source_gets_a_soft_refusal_that_holds_no_slot() {
    let app = spawn_app_with(&[("NOTIFY_MAX_CONNECTIONS", "1")]).await;
    let holder = app.subscribe("u1").await;
    app.wait_metric("notify_connections_open", &[], |v| v == 1.0)
        .await;
    let older = app.publish_n("u2", 1).await;
    let token = app.user_token("u2");

    let resp = app.subscribe_request(&token).send().await.unwrap();
    let retry_after = assert_error_retry_after(resp, 503, "node_full").await;
    let position = assert_soft_refusal(app.subscribe_request(&token), "node_full", retry_after)
        .await
        .expect("a request without a cursor gets the user's position");
    assert!(position >= older);
    let with_cursor = app
        .subscribe_request(&token)
        .header("last-event-id", older.to_string());
    assert_eq!(
        assert_soft_refusal(with_cursor, "node_full", retry_after).await,
        None
    );
    // Many soft refusals leave the node's count untouched.
    for _ in 0..5 {
        assert_soft_refusal(app.subscribe_request(&token), "node_full", retry_after).await;
    }
    let m = app.metrics().await;
    assert_eq!(m.value("notify_connections_open", &[]), Some(1.0));
    assert_eq!(rejected(&m, "node_limit"), 8.0);

    let missed = app.publish_n("u2", 2).await;
    let mut page = resume_after_release(&app, holder, "u2", position).await;
    assert_eq!(page.next_message().await.0, missed);
}

#[tokio::test]
async fn a_draining_node_answers_an_event_source_softly_and_still_refuses_bad_tokens_with_401() {
    // The node keeps listening (and refusing) for most of its grace period.
    let app = spawn_app_with(&[("NOTIFY_SHUTDOWN_GRACE", "30s")]).await;
    let newest = app.publish_n("u1", 1).await;
    let token = app.user_token("u1");
    app.sigterm();
    app.wait_readyz(503).await;

    let resp = app.subscribe_request(&token).send().await.unwrap();
    let retry_after = assert_error_retry_after(resp, 503, "draining").await;
    assert_eq!(
        assert_soft_refusal(app.subscribe_request(&token), "draining", retry_after).await,
        Some(newest),
        "the position on a node with an embedded bus is its newest id"
    );
    let with_cursor = app
        .subscribe_request(&token)
        .header("last-event-id", newest.to_string());
    assert_eq!(
        assert_soft_refusal(with_cursor, "draining", retry_after).await,
        None
    );
    let expired = app.user_token_exp("u1", now_secs() - 3600);
    let resp = as_event_source(app.subscribe_request(&expired))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    assert_eq!(rejected(&app.metrics().await, "draining"), 3.0);
}

#[tokio::test]
async fn a_wildcard_accept_keeps_the_json_answer() {
    let app = spawn_app_with(&[("NOTIFY_MAX_CONNECTIONS", "1")]).await;
    let _holder = app.subscribe("u1").await;
    let resp = app
        .subscribe_request(&app.user_token("u2"))
        .header("accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_error(resp, 503, "node_full").await;
}
