//! Streams opened while notifications are flowing: everything stored after a
//! stream's start id reaches it, in order, and nothing else. The window that matters is
//! between a node's live subscription and its head read, where a message may
//! arrive before the subscribe has finished.

use std::sync::Arc;

use futures_util::future::join_all;

use crate::support::{two_nodes, Nats, NatsClient, PublishFlow, SseStream};

const USERS: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_opened_during_a_publish_flow_get_exactly_what_follows_their_start() {
    let nodes = two_nodes(Nats::cluster().await, &[]).await;
    let producer = Arc::new(NatsClient::connect(nodes.nats.servers[0].port).await);
    let users: Vec<String> = (0..USERS).map(|u| format!("open-{u}")).collect();

    let flow = PublishFlow::start(producer.clone(), users.clone(), "open");

    // Every user opens one stream on each node while the flow runs.
    let opened: Vec<(String, SseStream)> = join_all(users.iter().flat_map(|user| {
        [&nodes.a, &nodes.b].map(|node| async move { (user.clone(), node.subscribe(user).await) })
    }))
    .await;
    // Stop right after the last stream opened: a user's last notification
    // may be one that arrived while its stream was being set up, so a lost
    // one is not repaired by a later one.
    let acked = flow.stop().await;
    let expected_in_all: usize = opened
        .iter()
        .map(|(user, stream)| {
            let start = stream.start_id.expect("start frame read");
            acked
                .get(user)
                .map_or(0, |ids| ids.iter().filter(|&&id| id > start).count())
        })
        .sum();
    assert!(
        expected_in_all > 0,
        "no notification was published after any stream started"
    );

    for (user, mut stream) in opened {
        let start = stream.start_id.expect("start frame read");
        let expected: Vec<u64> = acked
            .get(&user)
            .map(|ids| ids.iter().copied().filter(|&id| id > start).collect())
            .unwrap_or_default();
        if expected.is_empty() {
            continue;
        }
        let got = stream.message_ids(expected.len()).await;
        assert_eq!(got, expected, "{user}'s stream started at {start}");
    }
}
