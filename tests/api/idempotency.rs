//! Idempotency-Keys belong to their publisher (docs/protocol.md §2 "HTTP"):
//! two publishers never collide on a key, a retry with the same request
//! (whatever its JSON key order) answers the same ids and stores once, a
//! key reused for another request gets `422 idempotency_key_reused` and
//! stores nothing, and the remembered keys stay within their byte budget.

use serde_json::{json, Value};

use crate::helpers::*;

/// A publisher token whose `sub` is `name`.
fn publisher(app: &TestApp, name: &str) -> String {
    app.sign(&json!({"sub": name, "exp": now_secs() + 3600, "scope": PUBLISH_SCOPE}))
}

/// One publish of `body` by `token` with `key`: status and JSON answer.
async fn send(app: &TestApp, token: &str, key: &str, body: &str) -> (u16, Value) {
    let resp = app
        .publish_request_as(token, body.to_string())
        .header("Idempotency-Key", key)
        .send()
        .await
        .expect("publish request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON answer"))
}

/// The next event on `s` is a marker published now: nothing else arrived.
async fn assert_nothing_pending(app: &TestApp, s: &mut SseStream, user: &str) {
    let marker = app.publish(user, &json!({"type": "marker"})).await;
    assert_eq!(
        s.next_message().await.0,
        marker,
        "something else was stored"
    );
}

fn id_of(answer: &Value) -> u64 {
    parse_id(answer["id"].as_str().expect("an id"))
}

#[tokio::test]
async fn two_publishers_with_the_same_key_both_store() {
    let app = spawn_app().await;
    let mut s = app.subscribe("u1").await;
    let body = json!({"userId": "u1", "notification": note(1)}).to_string();

    let (status_a, a) = send(&app, &publisher(&app, "orders"), "k-1", &body).await;
    let (status_b, b) = send(&app, &publisher(&app, "payments"), "k-1", &body).await;

    assert_eq!((status_a, status_b), (202, 202));
    assert_ne!(id_of(&a), id_of(&b), "each publisher's key is its own");
    assert_eq!(s.message_ids(2).await, vec![id_of(&a), id_of(&b)]);
    assert_nothing_pending(&app, &mut s, "u1").await;
}

#[tokio::test]
async fn a_retry_with_the_same_body_in_another_key_order_answers_the_same_ids_and_stores_once() {
    let app = spawn_app().await;
    let mut u1 = app.subscribe("u1").await;
    let token = publisher(&app, "orders");
    let first = r#"{"userIds":["u1","u2"],"notification":{"type":"order_update","title":"Ready","data":{"orderId":"o1","status":"ready"}}}"#;
    let reordered = r#"{"notification":{"data":{"status":"ready","orderId":"o1"},"title":"Ready","type":"order_update"},"userIds":["u1","u2"]}"#;

    let (s1, a) = send(&app, &token, "batch-1", first).await;
    let (s2, b) = send(&app, &token, "batch-1", first).await;
    let (s3, c) = send(&app, &token, "batch-1", reordered).await;

    assert_eq!((s1, s2, s3), (202, 202, 202));
    assert_eq!(a, b, "a retry answers the same ids");
    assert_eq!(a, c, "key order does not make another request");
    let u1_id = parse_id(a["ids"]["u1"].as_str().unwrap());
    assert_eq!(u1.next_message().await.0, u1_id);
    assert_nothing_pending(&app, &mut u1, "u1").await;
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_refused_with_422_and_stores_nothing() {
    let app = spawn_app().await;
    let mut s = app.subscribe("u1").await;
    let token = publisher(&app, "orders");
    let body = |n| json!({"userId": "u1", "notification": note(n)}).to_string();

    let (status, first) = send(&app, &token, "order-42", &body(1)).await;
    assert_eq!(status, 202);
    assert_eq!(s.next_message().await.0, id_of(&first));

    let other_users = json!({"userIds": ["u1", "u2"], "notification": note(1)}).to_string();
    for reused in [body(2), other_users] {
        let resp = app
            .client
            .post(app.url(PUBLISH))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("Idempotency-Key", "order-42")
            .body(reused)
            .send()
            .await
            .unwrap();
        assert_error(resp, 422, "idempotency_key_reused").await;
    }
    assert_nothing_pending(&app, &mut s, "u1").await;
    // The key still answers its own request.
    assert_eq!(send(&app, &token, "order-42", &body(1)).await, (202, first));
}

#[tokio::test]
async fn remembered_keys_stay_within_their_byte_budget_and_a_flood_evicts_only_its_own() {
    const BUDGET: u64 = 65_536;
    let budget = BUDGET.to_string();
    let app = spawn_app_with(&[("NOTIFY_IDEMPOTENCY_MAX_BYTES", &budget)]).await;
    let (quiet, loud) = (publisher(&app, "quiet"), publisher(&app, "loud"));
    let quiet_body = json!({"userId": "q", "notification": note(0)}).to_string();
    let (_, quiet_first) = send(&app, &quiet, "mine", &quiet_body).await;

    // 40 batches of 500 users: ~4 KB of ids each, 160 KB in all.
    let users: Vec<String> = (0..500).map(|n| format!("user-{n}")).collect();
    let batch = json!({"userIds": users, "notification": note(1)}).to_string();
    let mut answers = Vec::new();
    for n in 0..40 {
        let (status, answer) = send(&app, &loud, &format!("flood-{n}"), &batch).await;
        assert_eq!(status, 202);
        answers.push(answer);
        let m = app.metrics().await;
        let bytes = m
            .value("notify_idempotency_bytes", &[])
            .expect("bytes gauge");
        assert!(bytes <= BUDGET as f64, "{bytes} bytes remembered");
    }
    let keys = app.metrics().await.value("notify_idempotency_keys", &[]);
    assert!(
        keys.is_some_and(|k| (2.0..=16.0).contains(&k)),
        "keys remembered: {keys:?}"
    );

    // The newest key is remembered, the oldest was forgotten (stored anew).
    assert_eq!(
        send(&app, &loud, "flood-39", &batch).await,
        (202, answers[39].clone())
    );
    let (_, again) = send(&app, &loud, "flood-0", &batch).await;
    assert_ne!(again, answers[0], "the oldest key was evicted");
    // The other publisher's key survived the flood.
    assert_eq!(
        send(&app, &quiet, "mine", &quiet_body).await,
        (202, quiet_first)
    );
}
