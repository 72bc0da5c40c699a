//! kill -9 of NATS servers of a 3-server R3 cluster under traffic: (a) a
//! non-leader server the node is connected to, (b) the stream leader while
//! publishing through the HTTP API. Nothing acknowledged is lost or
//! duplicated.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::http_client;
use crate::support::{
    live, new_secret, publisher_token, report, start_node, status_of, tail, try_publish, two_nodes,
    user_token, wait_for, Audit, FollowLog, Follower, Nats, NatsClient, TwoNodes,
};

/// What the publishers got back.
#[derive(Default)]
struct Published {
    acked: BTreeMap<u64, usize>,
    failed: Vec<(usize, String)>,
    /// Slowest acked publish (spans the fail-over).
    slowest: Duration,
}

/// Shared by the test and its producers.
#[derive(Default)]
struct Traffic {
    stop: AtomicBool,
    acked: AtomicUsize,
}

/// `workers` producers, each publishing to `user` over `base` one after the
/// other (every `pace`) until `stop`; numbered `w, w+workers, …`.
fn start_publishers(
    base: &str,
    token: &str,
    user: &str,
    workers: usize,
    pace: Duration,
    limit: Option<usize>,
    traffic: Arc<Traffic>,
) -> Vec<tokio::task::JoinHandle<Published>> {
    (0..workers)
        .map(|w| {
            let (base, token, user) = (base.to_string(), token.to_string(), user.to_string());
            let traffic = traffic.clone();
            tokio::spawn(async move {
                let client = http_client();
                let mut out = Published::default();
                let mut tick = tokio::time::interval(pace);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = w + 1;
                while !traffic.stop.load(Ordering::Acquire) && limit.is_none_or(|l| n <= l) {
                    tick.tick().await;
                    let t0 = Instant::now();
                    match try_publish(&client, &base, &token, &user, n, None).await {
                        Ok(id) => {
                            out.slowest = out.slowest.max(t0.elapsed());
                            out.acked.insert(id, n);
                            traffic.acked.fetch_add(1, Ordering::AcqRel);
                        }
                        Err(e) => out.failed.push((n, e)),
                    }
                    n += workers;
                }
                out
            })
        })
        .collect()
}

async fn collect(publishers: Vec<tokio::task::JoinHandle<Published>>) -> Published {
    let mut all = Published::default();
    for p in publishers {
        let p = p.await.expect("publisher task");
        all.acked.extend(p.acked);
        all.failed.extend(p.failed);
        all.slowest = all.slowest.max(p.slowest);
    }
    all
}

fn details(audit: &Audit, log: &FollowLog) -> String {
    format!(
        "{}\nlost {:?}\nduplicated {:?}\nout of order {:?}\nwrong payload {:?}\nother {:?}\nconnects {:?}\nbreaks {:?}\nrefusals {:?}",
        audit.summary(),
        audit.lost,
        audit.duplicated,
        audit.out_of_order,
        audit.wrong_payload,
        audit.other_events,
        log.connects,
        log.breaks,
        log.refusals
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_non_leader_nats_server_a_node_uses_loses_nothing() {
    const TEST: &str = "nats_kill_non_leader";
    let mut nats = Nats::cluster().await;
    let secret = new_secret();
    let node = start_node(&secret, &nats.urls(), 3, &[]).await;

    // The server the node is connected to must not lead the stream: if it
    // does, ask the leader to step down until another server leads.
    let with_node = nats
        .wait_gateway_server(
            "the node's NATS connection in /connz",
            Duration::from_secs(10),
        )
        .await;
    // Fault injection: the test-only admin user may ask for a step-down.
    let raw = NatsClient::connect_admin(nats.servers[(with_node + 1) % 3].port).await;
    let mut stepdowns = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        match nats.current_leader().await {
            Some(l) if l != with_node => break l,
            Some(_) => {
                // A step-down right after creation may elect the same server
                // again (replicas not current yet): ask again.
                stepdowns += 1;
                let _ = raw.stream_leader_stepdown().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            None => tokio::time::sleep(Duration::from_millis(25)).await,
        }
        assert!(
            Instant::now() < deadline,
            "could not move the stream leader away from the node's server ({stepdowns} step-downs)\n{}",
            nats.logs()
        );
    };

    let follower = Follower::start(live(&[&node.base]), &node.base, user_token(&secret, "u1"));
    follower.wait_connected(Duration::from_secs(10)).await;
    let traffic = Arc::new(Traffic::default());
    let publishers = start_publishers(
        &node.base,
        &publisher_token(&secret),
        "u1",
        1,
        Duration::from_millis(20),
        Some(150),
        traffic.clone(),
    );

    follower.wait_count(40, Duration::from_secs(20)).await;
    let killed_at = Instant::now();
    nats.servers[with_node].kill9();
    let moved_to = nats
        .wait_gateway_server(
            "the node's reconnection to another server",
            Duration::from_secs(15),
        )
        .await;
    let reconnect = killed_at.elapsed();

    let published = collect(publishers).await;
    let (all_arrived, log, audit) = follower
        .finish(&published.acked, Duration::from_secs(20))
        .await;
    report(
        TEST,
        &format!(
            "killed {} (non-leader, the node's server; leader {} after {stepdowns} step-downs); node on {} within {reconnect:?}; {}; failed publishes {}; slowest publish {:?}; SSE reconnects {}",
            nats.servers[with_node].name,
            nats.servers[leader].name,
            nats.servers[moved_to].name,
            audit.summary(),
            published.failed.len(),
            published.slowest,
            log.connects.len() - 1
        ),
    );
    assert!(
        all_arrived && audit.clean() && published.failed.is_empty(),
        "{}\nfailed publishes {:?}\nnode stderr:\n{}\n{}",
        details(&audit, &log),
        published.failed,
        tail(&node.stderr(), 30),
        nats.logs()
    );
    assert_eq!(audit.acked, 150);
    assert_eq!(status_of(&node.base, "/readyz").await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_loses_no_acknowledged_publish() {
    const TEST: &str = "nats_kill_leader";
    let TwoNodes {
        mut nats,
        secret,
        a,
        b,
    } = two_nodes(Nats::cluster().await, &[]).await;
    let leader = nats.stream_leader(Duration::from_secs(10)).await;
    let before = nats.names(&nats.servers_with_gateway().await);

    let nodes = live(&[&b.base]);
    let follower = Follower::start(nodes.clone(), &b.base, user_token(&secret, "u1"));
    follower.wait_connected(Duration::from_secs(10)).await;
    let traffic = Arc::new(Traffic::default());
    let publishers = start_publishers(
        &a.base,
        &publisher_token(&secret),
        "u1",
        4,
        Duration::from_millis(25),
        None,
        traffic.clone(),
    );

    wait_for("40 acked publishes", Duration::from_secs(20), || async {
        (traffic.acked.load(Ordering::Acquire) >= 40).then_some(())
    })
    .await;
    let killed_at = Instant::now();
    let acked_at_kill = traffic.acked.load(Ordering::Acquire);
    nats.servers[leader].kill9();
    let new_leader = nats
        .wait_leader(Duration::from_secs(30), Some(leader))
        .await;
    let election = killed_at.elapsed();
    // Keep publishing for a while after the election, then stop.
    let resumed_from = traffic.acked.load(Ordering::Acquire);
    wait_for(
        "40 more acked publishes after the election",
        Duration::from_secs(25),
        || async { (traffic.acked.load(Ordering::Acquire) >= resumed_from + 40).then_some(()) },
    )
    .await;
    traffic.stop.store(true, Ordering::Release);
    let published = collect(publishers).await;

    let (all_arrived, log, audit) = follower
        .finish(&published.acked, Duration::from_secs(20))
        .await;
    let after = nats.names(&nats.servers_with_gateway().await);
    report(
        TEST,
        &format!(
            "killed stream leader {} with {acked_at_kill} acked; new leader {} after {election:?}; {}; failed publishes {}; slowest acked publish {:?}; SSE reconnects {} (streams ended: {:?}); gateway nodes on {before:?} before, {after:?} after",
            nats.servers[leader].name,
            nats.servers[new_leader].name,
            audit.summary(),
            published.failed.len(),
            published.slowest,
            log.connects.len() - 1,
            log.breaks.iter().map(|(at, why)| format!("{why} {:?} after the kill", at.saturating_duration_since(killed_at))).collect::<Vec<_>>(),
        ),
    );
    assert!(
        all_arrived && audit.clean(),
        "{}\nnode A stderr:\n{}\nnode B stderr:\n{}\n{}",
        details(&audit, &log),
        tail(&a.stderr(), 30),
        tail(&b.stderr(), 30),
        nats.logs()
    );
    assert!(
        published.failed.is_empty(),
        "publishes failed although the cluster kept a quorum: {:?}\nnode A stderr:\n{}",
        published.failed,
        tail(&a.stderr(), 30)
    );
}
