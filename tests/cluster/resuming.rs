//! Streams resumed with a last event id while notifications are flowing, as
//! in a reconnect storm after a node is lost: each gets exactly what was
//! stored after its last id (history first, then live), in order, once. A
//! notification stored while a node's new live subscription is still
//! reaching the NATS servers may come neither live nor in the head read;
//! the node reads the user's position again later and catches up, and that
//! must not send anything twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use crate::support::{publish_note, two_nodes, Nats, NatsClient, PublishFlow, SseStream};

const USERS: usize = 120;
/// Longer than a node waits before it reads a new subscriber's position
/// again (`HEAD_RECHECK_MILLIS`, 3–6 s), so that the last check below comes
/// after every re-read.
const PAST_THE_RECHECK: Duration = Duration::from_secs(7);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_resumed_during_a_publish_flow_get_exactly_what_follows_their_last_id() {
    let nodes = two_nodes(Nats::cluster().await, &[]).await;
    let producer = Arc::new(NatsClient::connect(nodes.nats.servers[0].port).await);
    let users: Vec<String> = (0..USERS).map(|u| format!("resume-{u}")).collect();

    // Each user's last notification before the flow: where its streams resume.
    let last_seen = publish_one_each(&producer, &users, "before").await;

    let flow = PublishFlow::start(producer.clone(), users.clone(), "flow");

    // Every user resumes on each node while the flow runs: some of what it
    // missed is replayed, some arrives live, some while its node subscribes.
    let resumed: Vec<(String, SseStream)> = join_all(users.iter().flat_map(|user| {
        let from = last_seen[user];
        [&nodes.a, &nodes.b]
            .map(|node| async move { (user.clone(), node.subscribe_from(user, from).await) })
    }))
    .await;
    // Stop right after the last stream resumed: a user's last notification
    // may be one stored while its node was subscribing, so a lost one is not
    // revealed by a later one.
    let acked = flow.stop().await;

    let mut expected_in_all = 0;
    let mut streams = Vec::with_capacity(resumed.len());
    for (user, mut stream) in resumed {
        let from = last_seen[&user];
        assert_eq!(stream.start_id, Some(from), "{user}'s stream resumed");
        let expected: Vec<u64> = acked
            .get(&user)
            .map(|ids| ids.iter().copied().filter(|&id| id > from).collect())
            .unwrap_or_default();
        expected_in_all += expected.len();
        let got = stream.message_ids(expected.len()).await;
        assert_eq!(got, expected, "{user}'s stream resumed after {from}");
        streams.push((user, stream));
    }
    assert!(
        expected_in_all > 0,
        "nothing was published while the streams resumed"
    );

    // After the nodes have read every position again, one more notification
    // per user is the next thing each stream gets: nothing came twice.
    tokio::time::sleep(PAST_THE_RECHECK).await;
    let after = publish_one_each(&producer, &users, "after").await;
    for (user, mut stream) in streams {
        let (id, _) = stream.next_message().await;
        assert_eq!(id, after[&user], "{user}'s next notification");
    }
}

/// One acknowledged notification per user, in order; each user's id.
async fn publish_one_each(
    producer: &NatsClient,
    users: &[String],
    msg_id_prefix: &str,
) -> BTreeMap<String, u64> {
    let mut ids = BTreeMap::new();
    for (n, user) in users.iter().enumerate() {
        let id = publish_note(producer, user, n, &format!("{msg_id_prefix}-{n}")).await;
        ids.insert(user.clone(), id);
    }
    ids
}
