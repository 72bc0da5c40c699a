//! Soft refusals on a NATS-backed node (docs/protocol.md §1): the start
//! position is the user's own last sequence (so a later resume loses
//! nothing), and while NATS is away `bus_unavailable` is answered softly
//! without any `id:` (the node cannot read the position).

use std::time::Duration;

use crate::helpers::*;
use crate::support::{new_secret, start_node, wait_status, Nats};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_position_is_the_users_last_sequence_and_bus_unavailable_is_soft_without_an_id() {
    let mut nats = Nats::single().await;
    let secret = new_secret();
    let node = start_node(
        &secret,
        &nats.servers[0].url(),
        1,
        &[("NOTIFY_MAX_CONNECTIONS", "1")],
    )
    .await;
    let holder = node.subscribe("holder").await;
    let mine = node.publish_n("u1", 1).await;
    let later_for_another = node.publish_n("u2", 2).await;
    assert!(later_for_another > mine);
    let token = node.user_token("u1");

    // node_full: the position is u1's own last sequence, not the stream's.
    let position = assert_soft_refusal(node.subscribe_request(&token), "node_full", 2).await;
    assert_eq!(position, Some(mine));
    // A user with nothing stored starts before everything: 0.
    let fresh = node.subscribe_request(&node.user_token("nobody-yet"));
    assert_eq!(assert_soft_refusal(fresh, "node_full", 2).await, Some(0));

    // Resuming from it gets exactly what came after, nothing before.
    let missed = node.publish_n("u1", 3).await;
    drop(holder);
    node.wait_metric("notify_connections_open", &[], |v| v == 0.0)
        .await;
    let req = node
        .subscribe_request(&token)
        .header("last-event-id", mine.to_string());
    let mut resumed = node.subscribe_with(as_event_source(req)).await;
    assert_eq!(resumed.next_message().await.0, missed);
    drop(resumed);
    node.wait_metric("notify_connections_open", &[], |v| v == 0.0)
        .await;

    // NATS away: JSON 503 for API clients, a soft refusal with no id for
    // EventSources, with or without a cursor.
    nats.servers[0].kill9();
    wait_status(&node.base, "/readyz", 503, Duration::from_secs(15))
        .await
        .expect("/readyz turns 503 while NATS is down");
    let resp = node.subscribe_request(&token).send().await.unwrap();
    let retry_after = assert_error_retry_after(resp, 503, "bus_unavailable").await;
    assert_eq!(
        assert_soft_refusal(
            node.subscribe_request(&token),
            "bus_unavailable",
            retry_after
        )
        .await,
        None
    );
    let with_cursor = node
        .subscribe_request(&token)
        .header("last-event-id", missed.to_string());
    assert_eq!(
        assert_soft_refusal(with_cursor, "bus_unavailable", retry_after).await,
        None
    );
    let m = node.metrics().await;
    let rejected =
        |reason| m.value_or_zero("notify_connections_rejected_total", &[("reason", reason)]);
    assert_eq!(rejected("bus_unavailable"), 3.0);
    assert_eq!(rejected("node_limit"), 2.0);
}
