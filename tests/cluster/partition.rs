//! A node cut off from NATS while the rest of the cluster keeps working:
//! producers publish through another node meanwhile. The cut node turns
//! unready, and when the link heals it catches every online user up from
//! the stream: its clients get everything once, without reconnecting.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::http_client;
use crate::support::{
    live, new_secret, publisher_token, report, start_node, tail, try_publish, user_token,
    wait_status, Follower, NatsServer, TempDir,
};

const TEST: &str = "partition";

/// A TCP forwarder to NATS that can be cut (every connection dropped, new
/// ones closed at once) and healed.
struct Link {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Link {
    async fn to(upstream: u16) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (cut, conns) = (cut.clone(), conns.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: the node sees the connection close
                    }
                    let pump = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                            let _ = copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    conns.lock().unwrap().push(pump);
                }
            }
        });
        Link {
            port,
            cut,
            conns,
            accept,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for pump in self.conns.lock().unwrap().drain(..) {
            pump.abort();
        }
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_nats_catches_its_clients_up_when_the_link_heals() {
    let dir = TempDir::new("partition");
    let server = NatsServer::single("s1", dir.path());
    server.wait_js_ready(false, Duration::from_secs(20)).await;
    let nats_port: u16 = server
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("NATS port");
    let link = Link::to(nats_port).await;
    let secret = new_secret();
    let cut_node = start_node(&secret, &format!("nats://127.0.0.1:{}", link.port), 1, &[]).await;
    let other = start_node(&secret, &server.url(), 1, &[]).await;
    let client = http_client();
    let publisher = publisher_token(&secret);
    let mut acked = BTreeMap::new();
    let publish = |n: usize| {
        let (client, base, publisher) = (client.clone(), other.base.clone(), publisher.clone());
        async move {
            (
                n,
                try_publish(&client, &base, &publisher, "u1", n, None).await,
            )
        }
    };

    // The client stays on the node that will be cut off.
    let follower = Follower::start(
        live(&[&cut_node.base]),
        &cut_node.base,
        user_token(&secret, "u1"),
    );
    follower.wait_connected(Duration::from_secs(10)).await;
    for n in 1..=5 {
        let (n, id) = publish(n).await;
        acked.insert(id.unwrap(), n);
    }
    let before: Vec<u64> = acked.keys().copied().collect();
    assert!(
        follower.wait_ids(&before, Duration::from_secs(10)).await,
        "before the cut"
    );

    // Cut: the node notices, turns unready; producers carry on elsewhere.
    link.cut();
    let to_503 = wait_status(&cut_node.base, "/readyz", 503, Duration::from_secs(15))
        .await
        .expect("/readyz turns 503 on the cut-off node");
    for n in 6..=15 {
        let (n, id) = publish(n).await;
        acked.insert(id.unwrap(), n);
    }

    // Heal: ready again by itself, then the missed ten arrive.
    link.heal();
    let healed = wait_status(&cut_node.base, "/readyz", 200, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| {
            panic!(
                "/readyz never returned to 200 after the link healed; stderr:\n{}",
                tail(&cut_node.stderr(), 30)
            )
        });
    for n in 16..=20 {
        let (n, id) = publish(n).await;
        acked.insert(id.unwrap(), n);
    }
    assert_eq!(acked.len(), 20);
    let (arrived, log, audit) = follower.finish(&acked, Duration::from_secs(20)).await;
    report(
        TEST,
        &format!(
            "readyz 503 {to_503:?} after the cut; ready {healed:?} after the heal; {}; SSE reconnects {}",
            audit.summary(),
            log.connects.len() - 1
        ),
    );
    audit.assert_delivered_once(
        arrived,
        &log,
        &format!("node stderr:\n{}", tail(&cut_node.stderr(), 40)),
    );
    assert_eq!(
        log.connects.len(),
        1,
        "the client's stream stayed open through the cut: the node caught it up itself"
    );
}
