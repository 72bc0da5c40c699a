//! Any node delivers to any user: what is published through one node's HTTP
//! API or straight to NATS reaches the user's streams on other nodes, once
//! per stream, with the same id everywhere.

use crate::helpers::{note, SseStream};
use crate::support::{note_n, two_nodes, Nats, NatsClient, TwoNodes, USER_SUBJECT};

/// Reads messages up to and including `last`; returns (id, n) pairs.
async fn read_through(stream: &mut SseStream, last: u64) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    loop {
        let (id, data) = stream.next_message().await;
        assert!(
            id <= last,
            "got id {id} beyond the last expected {last}; so far {out:?}"
        );
        out.push((
            id,
            note_n(&data).unwrap_or_else(|| panic!("unexpected payload {data}")),
        ));
        if id == last {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_receives_on_any_node_what_is_published_anywhere_once_per_stream() {
    let TwoNodes { nats, a, b, .. } = two_nodes(Nats::cluster().await, &[]).await;
    let raw = NatsClient::connect(nats.servers[2].port).await;

    // u1 is connected to node B only.
    let mut u1 = b.subscribe("u1").await;
    let via_a = a.publish_n("u1", 1).await;
    let (id, data) = u1.next_message().await;
    assert_eq!(
        (id, note_n(&data)),
        (via_a, Some(1)),
        "HTTP publish on A → stream on B"
    );
    assert_eq!(
        data,
        note(1).to_string(),
        "the payload arrives exactly as published"
    );

    // A producer's plain core publish, then a JetStream one on the same
    // connection (its ack proves the core one was stored before it).
    raw.publish(
        &format!("{USER_SUBJECT}.u1"),
        note(2).to_string().as_bytes(),
    )
    .await;
    let acked = raw
        .js_publish_acked(
            &format!("{USER_SUBJECT}.u1"),
            "cross-u1-3",
            note(3).to_string().as_bytes(),
        )
        .await;
    let (core_id, data) = u1.next_message().await;
    assert_eq!(
        note_n(&data),
        Some(2),
        "core NATS publish → stream on B: {data}"
    );
    assert!(
        via_a < core_id && core_id < acked,
        "ids {via_a} < {core_id} < {acked}"
    );
    let (id, data) = u1.next_message().await;
    assert_eq!(
        (id, note_n(&data)),
        (acked, Some(3)),
        "JetStream publish → stream on B"
    );

    // u2 has one stream on each node.
    let mut on_a = a.subscribe("u2").await;
    let mut on_b = b.subscribe("u2").await;
    let subject = format!("{USER_SUBJECT}.u2");
    let mut expected: Vec<(Option<u64>, usize)> = Vec::new();
    for n in 10..13 {
        expected.push((Some(a.publish_n("u2", n).await), n));
    }
    expected.push((Some(b.publish_n("u2", 13).await), 13));
    raw.publish(&subject, note(14).to_string().as_bytes()).await;
    expected.push((None, 14));
    let j = raw
        .js_publish_acked(&subject, "cross-u2-15", note(15).to_string().as_bytes())
        .await;
    expected.push((Some(j), 15));
    // The same Nats-Msg-Id again is a duplicate: stored once, same sequence.
    let again = raw
        .js_publish_acked(&subject, "cross-u2-15", note(15).to_string().as_bytes())
        .await;
    assert_eq!(again, j, "a repeated Nats-Msg-Id is deduplicated");
    // Anything duplicated would arrive before this last one.
    let last = a.publish_n("u2", 16).await;
    expected.push((Some(last), 16));

    let got_a = read_through(&mut on_a, last).await;
    let got_b = read_through(&mut on_b, last).await;
    assert_eq!(
        got_a, got_b,
        "both streams carry the same notifications with the same ids"
    );
    assert_eq!(
        got_a.len(),
        expected.len(),
        "each notification once per stream: {got_a:?}"
    );
    for (i, ((want_id, want_n), (id, n))) in expected.iter().zip(&got_a).enumerate() {
        assert_eq!(n, want_n, "notification {i} out of order: {got_a:?}");
        if let Some(want_id) = want_id {
            assert_eq!(id, want_id, "notification {n} has another id than its ack");
        }
        if i > 0 {
            assert!(*id > got_a[i - 1].0, "ids increase: {got_a:?}");
        }
    }
}
