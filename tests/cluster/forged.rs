//! A live message the user's stream did not store is never delivered and
//! moves no cursor (docs/protocol.md §2): one whose sequence is above the
//! stream's last, one whose `Nats-Stream` is another stream, and, in
//! partitioned mode, one a producer published straight into another
//! partition's stream (the model lets producers publish to
//! `<prefix>.part.>`, because nats-server checks the mapped subject). The
//! next real notification is delivered with its real id, and a resume from
//! it works.

use async_nats::HeaderMap;
use campusbite_notify::bus::nats::partition_of;

use crate::helpers::note;
use crate::support::{
    new_secret, start_node, Nats, NatsClient, NodeApi, SseStream, STREAM, USER_SUBJECT,
};

const FORGED: (&str, &[(&str, &str)]) = (
    "notify_notifications_dropped_total",
    &[("reason", "forged")],
);

/// The next notification `producer` publishes is the next message on
/// `stream` with its real id; then a resume from that id gets the one after.
async fn real_notifications_still_flow(
    node: &NodeApi,
    producer: &NatsClient,
    mut stream: SseStream,
    user: &str,
) {
    let subject = format!("{USER_SUBJECT}.{user}");
    let id = producer
        .js_publish_acked(&subject, "real-2", note(2).to_string().as_bytes())
        .await;
    let (got, data) = stream.next_message().await;
    assert_eq!(got, id, "the real notification with its real id");
    assert_eq!(data, note(2).to_string());
    drop(stream);
    let next = node.publish_n(user, 3).await;
    let mut back = node.subscribe_from(user, id).await;
    assert_eq!(
        back.next_message().await.0,
        next,
        "resume from the client's last id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_live_messages_are_not_delivered_and_move_no_cursor() {
    let nats = Nats::single().await;
    let node = start_node(&new_secret(), &nats.urls(), 1, &[]).await;
    let mut stream = node.subscribe("u1").await;
    let id1 = node.publish_n_expecting(&mut stream, "u1", 1).await;

    // Only the test-only admin user can publish to a live subject (the
    // shipped model refuses it to everyone else; tests/nats_permissions.rs).
    let admin = NatsClient::connect_admin(nats.servers[0].port).await;
    let forged = [
        // The right stream, a sequence far above its last.
        (STREAM, id1 + 1_000_000),
        // Another stream, the very next sequence: accepted, it would make
        // the real next notification look like a duplicate.
        ("OTHER_STREAM", id1 + 1),
    ];
    for (name, sequence) in forged {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Stream", name);
        headers.insert("Nats-Sequence", sequence.to_string().as_str());
        headers.insert("Nats-Last-Sequence", id1.to_string().as_str());
        admin
            .client()
            .publish_with_headers(
                "campusbite.notify.live.u1",
                headers,
                note(666).to_string().into(),
            )
            .await
            .expect("publish the forged message");
    }
    admin.round_trip().await;
    node.wait_metric(FORGED.0, FORGED.1, |v| v == 2.0).await;
    // The one above the last sequence was checked against the stream.
    let checks = node
        .metrics()
        .await
        .value_or_zero("notify_live_sequence_checks_total", &[]);
    assert!(checks >= 1.0, "stream-info checks: {checks}");

    let producer = NatsClient::connect(nats.servers[0].port).await;
    real_notifications_still_flow(&node, &producer, stream, "u1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_publishing_into_another_partitions_stream_reaches_nobody() {
    const PARTITIONS: u32 = 4;
    let nats = Nats::cluster_partitioned(PARTITIONS).await;
    let parts = PARTITIONS.to_string();
    let node = start_node(
        &new_secret(),
        &nats.urls(),
        3,
        &[("NOTIFY_STREAM_PARTITIONS", parts.as_str())],
    )
    .await;
    let stream = node.subscribe("u1").await;
    let wrong = (partition_of("u1", PARTITIONS) + 1) % PARTITIONS;

    // The producer user may publish to <prefix>.part.>: the wrong stream
    // stores these and republishes them to live.u1 with its own sequences
    // (above u1's, which has none yet).
    let producer = NatsClient::connect(nats.servers[0].port).await;
    let subject = format!("campusbite.notify.part.{wrong}.u1");
    for i in 0..3 {
        let (stored_in, _) = producer
            .js_publish_to(
                &subject,
                &format!("wrong-{i}"),
                note(666).to_string().as_bytes(),
            )
            .await
            .expect("the wrong partition's stream stores it");
        assert_eq!(stored_in, format!("{STREAM}_{wrong}"));
    }
    node.wait_metric(FORGED.0, FORGED.1, |v| v == 3.0).await;

    real_notifications_still_flow(&node, &producer, stream, "u1").await;
}
