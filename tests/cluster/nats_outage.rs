//! NATS fully down, then back on the same port and store: readiness flips
//! to 503 and back by itself, new subscribers are refused meanwhile, and
//! clients resume with nothing lost from before, during or after.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use crate::helpers::{assert_error, http_client, SseStream, TestApp};
use crate::support::{
    live, new_secret, note_n, publisher_token, report, start_node, tail, try_publish, user_token,
    wait_status, Follower, NatsServer, TempDir,
};

const TEST: &str = "nats_outage";

/// One JetStream server with a node on it.
struct Outage {
    _dir: TempDir,
    server: NatsServer,
    node: TestApp,
    client: reqwest::Client,
    publisher: String,
    /// Event id -> `n` of every notification acknowledged so far.
    acked: BTreeMap<u64, usize>,
}

impl Outage {
    /// Starts the server and the node, and a client of `u1` that stays
    /// connected to the node (returned once connected).
    async fn start(tag: &str, extra: &[(&str, &str)]) -> (Outage, Follower) {
        let dir = TempDir::new(tag);
        let server = NatsServer::single("s1", dir.path());
        server.wait_js_ready(false, Duration::from_secs(20)).await;
        let secret = new_secret();
        let node = start_node(&secret, &server.url(), 1, extra).await;
        let steady = Follower::start(live(&[&node.base]), &node.base, user_token(&secret, "u1"));
        steady.wait_connected(Duration::from_secs(10)).await;
        let outage = Outage {
            _dir: dir,
            server,
            client: http_client(),
            publisher: publisher_token(&secret),
            node,
            acked: BTreeMap::new(),
        };
        (outage, steady)
    }

    /// Publishes `note(n)` to u1 for every `n`, each acknowledged.
    async fn publish(&mut self, ns: RangeInclusive<usize>) {
        for n in ns {
            let id = try_publish(
                &self.client,
                &self.node.base,
                &self.publisher,
                "u1",
                n,
                None,
            )
            .await
            .unwrap();
            self.acked.insert(id, n);
        }
    }

    /// Starts the server again (same port and store); returns how long the
    /// node took to be ready once the server was.
    async fn restart(&mut self) -> Duration {
        self.server.start();
        self.server
            .wait_js_ready(false, Duration::from_secs(20))
            .await;
        wait_status(&self.node.base, "/readyz", 200, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "/readyz never returned to 200 by itself; stderr:\n{}",
                    tail(&self.node.stderr(), 30)
                )
            })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_and_back_flips_readiness_and_loses_nothing() {
    // One client stays connected throughout; another leaves early.
    let (mut outage, steady) = Outage::start("outage", &[]).await;
    let node = &outage.node;
    let mut early = node.subscribe("u1").await;
    outage.publish(1..=5).await;
    let node = &outage.node;
    let first: Vec<u64> = outage.acked.keys().copied().collect();
    assert_eq!(early.message_ids(2).await, first[..2].to_vec());
    let cursor = first[1];
    drop(early);
    assert!(
        steady.wait_ids(&first, Duration::from_secs(10)).await,
        "before the outage"
    );

    // Down.
    let down_at = Instant::now();
    outage.server.kill9();
    let to_503 = wait_status(&node.base, "/readyz", 503, Duration::from_secs(15))
        .await
        .expect("/readyz turns 503 while NATS is down");
    let refused = node.subscribe_response("u2").await;
    assert_error(refused, 503, "bus_unavailable").await;

    // A producer publishing during the outage retries with one
    // Idempotency-Key until it gets 202.
    let (base, token) = (node.base.clone(), outage.publisher.clone());
    let during = tokio::spawn(async move {
        let client = http_client();
        let t0 = Instant::now();
        let mut answers = Vec::new();
        loop {
            match try_publish(&client, &base, &token, "u1", 6, Some("outage-publish-6")).await {
                Ok(id) => return (id, answers, t0.elapsed()),
                Err(e) => answers.push(e),
            }
            assert!(
                t0.elapsed() < Duration::from_secs(40),
                "publish never accepted: {answers:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // Still down while that publish is in flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        crate::support::status_of(&node.base, "/readyz").await,
        Some(503)
    );
    let down_for = down_at.elapsed();

    // Back, same port and store.
    let up_at = Instant::now();
    outage.restart().await;
    let back_after_kill = down_at.elapsed();
    let ready_after_restart = up_at.elapsed();
    let (id6, answers, took) = during.await.expect("outage publisher");
    outage.acked.insert(id6, 6);
    outage.publish(7..=10).await;
    assert_eq!(outage.acked.len(), 10);

    // The client that stayed connected has everything, once.
    let (arrived, log, audit) = steady.finish(&outage.acked, Duration::from_secs(20)).await;
    let (node, acked) = (&outage.node, &outage.acked);
    report(
        TEST,
        &format!(
            "readyz 503 {to_503:?} after the kill; outage {down_for:?}; readyz 200 {ready_after_restart:?} after the restart ({back_after_kill:?} after the kill); \
             publish during the outage accepted after {took:?} with {} earlier answers {answers:?}; steady client: {}, SSE reconnects {}",
            answers.len(),
            audit.summary(),
            log.connects.len() - 1
        ),
    );
    audit.assert_delivered_once(
        arrived,
        &log,
        &format!(
            "node stderr:\n{}\nNATS:\n{}",
            tail(&node.stderr(), 40),
            tail(&outage.server.log(), 20)
        ),
    );

    // The client that left before the outage resumes from its cursor.
    let req = node
        .subscribe_request(&node.user_token("u1"))
        .header("Last-Event-ID", cursor.to_string());
    let mut resumed = node.subscribe_with(req).await;
    let after: Vec<(u64, usize)> = acked.range(cursor + 1..).map(|(&id, &n)| (id, n)).collect();
    assert_eq!(
        read(&mut resumed, after.len()).await,
        after,
        "resume after the outage"
    );

    // The file store kept everything across the restart.
    let req = node
        .subscribe_request(&node.user_token("u1"))
        .query(&[("lastEventId", "0")]);
    let mut replay = node.subscribe_with(req).await;
    let everything: Vec<(u64, usize)> = acked.iter().map(|(&id, &n)| (id, n)).collect();
    assert_eq!(
        read(&mut replay, 10).await,
        everything,
        "full history after the restart"
    );
}

async fn read(stream: &mut SseStream, n: usize) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (id, data) = stream.next_message().await;
        out.push((id, note_n(&data).unwrap_or(0)));
    }
    out
}

/// The long outage: NATS stopped for 30 s. Open streams stay open
/// (keep-alives continue), the node is unready and refuses new streams the
/// whole time, a producer's publish is refused with 503 (and, retried with
/// its Idempotency-Key after the outage, stored once), and after the restart
/// the open stream gets everything acked, once, without reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thirty_second_nats_outage_loses_nothing_acknowledged() {
    const OUTAGE: Duration = Duration::from_secs(30);
    let (mut outage, steady) = Outage::start("outage30", &[("NOTIFY_KEEPALIVE", "2s")]).await;
    outage.publish(1..=5).await;
    let first: Vec<u64> = outage.acked.keys().copied().collect();
    assert!(steady.wait_ids(&first, Duration::from_secs(10)).await);
    let (node, client, publisher) = (&outage.node, &outage.client, &outage.publisher);

    let down_at = Instant::now();
    outage.server.kill9();
    wait_status(&node.base, "/readyz", 503, Duration::from_secs(15))
        .await
        .expect("/readyz turns 503 while NATS is down");
    // A publish during the outage is refused after its retries; the client
    // library may still hold it and send it on reconnect, so the producer
    // retries later with the same Idempotency-Key: stored and delivered once.
    let key = Some("outage-6");
    let refused = try_publish(client, &node.base, publisher, "u1", 6, key).await;
    assert!(
        refused.is_err(),
        "a publish with NATS down must not be acknowledged: {refused:?}"
    );
    let refused_stream = node.subscribe_response("u2").await;
    assert_error(refused_stream, 503, "bus_unavailable").await;
    if let Some(rest) = OUTAGE.checked_sub(down_at.elapsed()) {
        tokio::time::sleep(rest).await; // the outage itself, not a synchronisation
    }
    assert_eq!(
        crate::support::status_of(&node.base, "/readyz").await,
        Some(503),
        "still unready at the end of the outage"
    );

    let ready_after = outage.restart().await;
    let (node, client, publisher) = (&outage.node, &outage.client, &outage.publisher);
    let retried = try_publish(client, &node.base, publisher, "u1", 6, key)
        .await
        .expect("the retried publish is acknowledged after the outage");
    outage.acked.insert(retried, 6);
    outage.publish(7..=10).await;
    let (arrived, log, audit) = steady.finish(&outage.acked, Duration::from_secs(20)).await;
    let node = &outage.node;
    report(
        TEST,
        &format!(
            "30 s outage: readyz 200 {ready_after:?} after the restart; {}; SSE reconnects {}",
            audit.summary(),
            log.connects.len() - 1
        ),
    );
    audit.assert_delivered_once(
        arrived,
        &log,
        &format!("node stderr:\n{}", tail(&node.stderr(), 40)),
    );
    assert_eq!(
        log.connects.len(),
        1,
        "the stream stayed open through the outage"
    );
}
