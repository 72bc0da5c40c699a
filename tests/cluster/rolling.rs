//! Rolling restart of every node under traffic: each node is replaced by a
//! fresh one and then SIGTERM'd; its clients reconnect to a live node and
//! resume with `Last-Event-ID`. Nothing lost, nothing duplicated.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::{http_client, TestApp};
use crate::support::{
    live, new_secret, publisher_token, report, start_node, tail, try_publish, user_token, wait_for,
    Follower, Live, Nats,
};

const TEST: &str = "rolling_restart";
const USERS: [&str; 3] = ["r0", "r1", "r2"];
const GRACE: (&str, &str) = ("NOTIFY_SHUTDOWN_GRACE", "2s");

/// Per user: event id → the `n` of the notification acked with it.
type PerUser = Vec<BTreeMap<u64, usize>>;

/// Publishes round-robin to `USERS` over any live node until `stop`; a
/// publish that fails is retried on the next node with the same
/// Idempotency-Key. Returns per-user (id → n) and the retries made.
fn start_publisher(
    nodes: Live,
    token: String,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<(PerUser, Vec<String>)> {
    tokio::spawn(async move {
        let client = http_client();
        let mut acked = vec![BTreeMap::new(); USERS.len()];
        let mut retries = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0usize;
        let mut pick = 0usize;
        while !stop.load(Ordering::Acquire) {
            tick.tick().await;
            n += 1;
            let user = n % USERS.len();
            let key = format!("rolling-{n}");
            let t0 = Instant::now();
            loop {
                let base = {
                    let nodes = nodes.lock().unwrap();
                    pick += 1;
                    nodes[pick % nodes.len()].clone()
                };
                match try_publish(&client, &base, &token, USERS[user], n, Some(&key)).await {
                    Ok(id) => {
                        acked[user].insert(id, n);
                        count.fetch_add(1, Ordering::AcqRel);
                        break;
                    }
                    Err(e) => {
                        retries.push(format!("#{n} via {base}: {e}"));
                        assert!(
                            t0.elapsed() < Duration::from_secs(30),
                            "publish #{n} never accepted: {retries:?}"
                        );
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
        (acked, retries)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_all_nodes_loses_and_duplicates_nothing() {
    let nats = Nats::cluster().await;
    let secret = new_secret();
    let urls = nats.urls();
    let (n1, n2, n3) = tokio::join!(
        start_node(&secret, &urls, 3, &[GRACE]),
        start_node(&secret, &urls, 3, &[GRACE]),
        start_node(&secret, &urls, 3, &[GRACE])
    );
    let mut old: Vec<TestApp> = vec![n1, n2, n3];
    let nodes = live(&[&old[0].base, &old[1].base, &old[2].base]);

    let followers: Vec<Follower> = USERS
        .iter()
        .enumerate()
        .map(|(i, u)| Follower::start(nodes.clone(), &old[i].base, user_token(&secret, u)))
        .collect();
    for f in &followers {
        f.wait_connected(Duration::from_secs(10)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let publisher = start_publisher(
        nodes.clone(),
        publisher_token(&secret),
        stop.clone(),
        count.clone(),
    );
    let more = |k: usize| {
        let count = count.clone();
        async move {
            let from = count.load(Ordering::Acquire);
            wait_for(
                &format!("{k} more acked publishes"),
                Duration::from_secs(20),
                || async { (count.load(Ordering::Acquire) >= from + k).then_some(()) },
            )
            .await;
        }
    };
    more(20).await;

    let mut fresh = Vec::new();
    let mut drains = Vec::new();
    for mut node in old.drain(..) {
        let new = start_node(&secret, &urls, 3, &[GRACE]).await;
        {
            let mut nodes = nodes.lock().unwrap();
            nodes.push(new.base.clone());
            nodes.retain(|b| *b != node.base);
        }
        fresh.push(new);
        let t0 = Instant::now();
        node.sigterm();
        let status = node.wait_exit(Duration::from_secs(6)).await;
        let drain = t0.elapsed();
        assert!(
            status.is_some_and(|s| s.success()),
            "a SIGTERM'd node must exit cleanly within its grace (2s): {status:?} after {drain:?}; stderr:\n{}",
            tail(&node.stderr(), 20)
        );
        drains.push(drain);
        more(20).await;
    }
    more(20).await;
    stop.store(true, Ordering::Release);
    let (acked, retries) = publisher.await.expect("publisher task");

    let mut failures = Vec::new();
    let mut lines = Vec::new();
    for ((user, follower), acked) in USERS.iter().zip(followers).zip(&acked) {
        let (arrived, log, audit) = follower.finish(acked, Duration::from_secs(20)).await;
        lines.push(format!(
            "{user}: {}; streams {}, refused attempts {}",
            audit.summary(),
            log.connects.len(),
            log.refusals.len()
        ));
        if !(arrived && audit.clean() && audit.unacked.is_empty()) || log.connects.len() < 2 {
            failures.push(format!(
                "{user}: {}\nlost {:?}\ndup {:?}\norder {:?}\nother {:?}\nconnects {:?}\nbreaks {:?}\nrefusals {:?}",
                audit.summary(),
                audit.lost,
                audit.duplicated,
                audit.out_of_order,
                audit.other_events,
                log.connects,
                log.breaks,
                log.refusals
            ));
        }
    }
    report(
        TEST,
        &format!(
            "published {} ({} retried on another node); drains {drains:?}; {}",
            count.load(Ordering::Acquire),
            retries.len(),
            lines.join("; ")
        ),
    );
    assert!(
        failures.is_empty(),
        "{}\npublish retries {retries:?}\nnew node stderr:\n{}",
        failures.join("\n"),
        fresh
            .iter()
            .map(|n| tail(&n.stderr(), 15))
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
}
