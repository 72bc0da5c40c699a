//! kill -9 of the node a client is on, under continuous publishing: the
//! client resumes on another node with `Last-Event-ID`: nothing lost,
//! nothing duplicated, in order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::helpers::http_client;
use crate::support::{
    kill9_node, live, new_secret, publisher_token, report, start_node, try_publish, user_token,
    Follower, Nats,
};

const TEST: &str = "node_kill";
const N: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_node_is_killed_resumes_on_another_without_loss_or_duplicate() {
    let nats = Nats::cluster().await;
    let secret = new_secret();
    let urls = nats.urls();
    let (a, mut b, c) = tokio::join!(
        start_node(&secret, &urls, 3, &[]),
        start_node(&secret, &urls, 3, &[]),
        start_node(&secret, &urls, 3, &[])
    );

    let nodes = live(&[&b.base, &c.base]);
    let follower = Follower::start(nodes.clone(), &b.base, user_token(&secret, "u1"));
    follower.wait_connected(Duration::from_secs(10)).await;

    // A producer publishing N numbered notifications over A at a steady pace.
    let (base_a, token) = (a.base.clone(), publisher_token(&secret));
    let publisher = tokio::spawn(async move {
        let client = http_client();
        let mut acked = BTreeMap::new();
        let mut failed = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(15));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 1..=N {
            tick.tick().await;
            match try_publish(&client, &base_a, &token, "u1", n, None).await {
                Ok(id) => {
                    acked.insert(id, n);
                }
                Err(e) => failed.push((n, e)),
            }
        }
        (acked, failed)
    });

    follower.wait_count(50, Duration::from_secs(20)).await;
    nodes.lock().unwrap().retain(|n| *n != b.base);
    let killed_at = Instant::now();
    kill9_node(&mut b).await;

    let (acked, failed) = publisher.await.expect("publisher task");
    assert!(
        failed.is_empty(),
        "publishes over node A failed: {failed:?}"
    );
    let (all_arrived, log, audit) = follower.finish(&acked, Duration::from_secs(20)).await;

    let before = log.seen.iter().filter(|s| s.conn == 0).count();
    let last_before = log.seen.iter().filter(|s| s.conn == 0).map(|s| s.id).max();
    let resumed = log.connects.get(1).cloned();
    report(
        TEST,
        &format!(
            "{}; received on B before the kill {before}, on C after {}; reconnect {:?} after the kill; connects {}, refused attempts {}",
            audit.summary(),
            audit.received - before,
            resumed.as_ref().map(|r| r.at.saturating_duration_since(killed_at)),
            log.connects.len(),
            log.refusals.len(),
        ),
    );
    audit.assert_delivered_once(
        all_arrived,
        &log,
        &format!("node C stderr:\n{}", crate::support::tail(&c.stderr(), 30)),
    );
    assert_eq!(audit.received, N);
    // It resumed on C, sending the id of the last event it had seen on B.
    let resumed = resumed.expect("the client reconnected");
    assert_eq!(resumed.base, c.base, "the client resumed on node C");
    assert_eq!(
        resumed.last_event_id,
        last_before.map(|id| id.to_string()),
        "Last-Event-ID is the last id seen before the kill"
    );
    assert_eq!(log.connects.len(), 2, "one reconnect: {:?}", log.connects);
}
