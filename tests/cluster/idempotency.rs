//! Idempotency-Keys over NATS (docs/protocol.md §2 "HTTP"): `Nats-Msg-Id`
//! is a digest of the publisher, its key and the user, so two publishers'
//! keys never collide, nor do key/user pairs that concatenate alike (`k` +
//! `a:b` and `k:a` + `b`); a retry through another node is still stored once.

use serde_json::{json, Value};

use crate::helpers::{note, now_secs, parse_id, sign_hs256, TestApp, PUBLISH_SCOPE};
use crate::support::{new_secret, start_node, Nats};

/// Publishes `note(n)` to `user` through `node` as `publisher` with `key`; the id.
async fn publish(node: &TestApp, publisher: &str, key: &str, user: &str, n: usize) -> u64 {
    let token = sign_hs256(
        &node.secret,
        &json!({"sub": publisher, "exp": now_secs() + 600, "scope": PUBLISH_SCOPE}),
    );
    let resp = node
        .publish_request_as(
            &token,
            json!({"userId": user, "notification": note(n)}).to_string(),
        )
        .header("Idempotency-Key", key)
        .send()
        .await
        .expect("publish request");
    assert_eq!(resp.status().as_u16(), 202);
    let answer: Value = resp.json().await.expect("a JSON answer");
    parse_id(answer["id"].as_str().expect("an id"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_two_publishers_and_concatenation_alike_pairs_are_all_delivered() {
    let nats = Nats::single().await;
    let secret = new_secret();
    let urls = nats.urls();
    let (a, b) = tokio::join!(
        start_node(&secret, &urls, 1, &[]),
        start_node(&secret, &urls, 1, &[])
    );
    let mut ab = a.subscribe("a:b").await;
    let mut plain_b = a.subscribe("b").await;

    // `k` + `a:b` and `k:a` + `b` were one Nats-Msg-Id ("k:a:b").
    let first = publish(&a, "orders", "k", "a:b", 1).await;
    let second = publish(&a, "orders", "k:a", "b", 2).await;
    assert_eq!(ab.next_message().await, (first, note(1).to_string()));
    assert_eq!(plain_b.next_message().await, (second, note(2).to_string()));

    // Another publisher's same key is its own notification.
    let other = publish(&b, "payments", "k", "a:b", 3).await;
    assert_eq!(ab.next_message().await, (other, note(3).to_string()));

    // The same publisher's retry through the other node is stored once.
    assert_eq!(publish(&b, "orders", "k", "a:b", 1).await, first);
    let marker = publish(&a, "orders", "marker", "a:b", 4).await;
    assert_eq!(ab.next_message().await, (marker, note(4).to_string()));
}
