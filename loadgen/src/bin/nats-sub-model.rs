//! The live path's subscription unit, modelled with plain async-nats
//! clients (no gateway): which costs the NATS cluster less at scale, one
//! core subscription per online user per node (what src/bus/nats/live.rs does)
//! or one wildcard subscription per node that the node filters locally?
//!
//! `bench/nats-sub-model` runs it (build: `cargo build --release -p
//! campusbite-loadgen --bin nats-sub-model`). One process plays NODES gateway nodes (one NATS
//! connection each, spread over the servers) and a publisher that plays the
//! stream leader's RePublish: core publishes to `<prefix>.live.<user>`.
//! User `u`'s tab `t` is on node `(u·TABS + t) mod NODES`.
//!
//! Modes:
//! - `per-user`: each node subscribes `<prefix>.live.<user>` for each of its
//!   users (one subscription and one draining task per user, as the gateway).
//! - `per-node`: each node subscribes `<prefix>.live.*` once and drops the
//!   messages of users it does not host (a set lookup per message).
//! - `per-partition`: user-affine routing. The live subject carries a
//!   partition, `<prefix>.live.<p>.<user>` with `p = u mod PARTITIONS`; node
//!   `n` owns the partitions `p mod NODES = n`, holds one subscription
//!   `<prefix>.live.<p>.*` per owned partition, and all of a user's tabs are
//!   on the owner of the user's partition (what an ingress hashing on the
//!   user id would do), so each notification goes to exactly one node.
//!
//! Phases, each announced by writing `<dir>/<phase>` and then waiting for
//! `<dir>/<phase>.go` (so a script can snapshot the servers in between):
//! `subscribed` (all subscriptions made and flushed), `published` (RATE/s
//! for SECONDS), `churned` (per-user only: CHURN unsubscribe + subscribe
//! pairs per second for SECONDS). Then one JSON line on stdout.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    #[value(name = "per-user")]
    User,
    #[value(name = "per-node")]
    Node,
    #[value(name = "per-partition")]
    Partition,
}

#[derive(Debug, Parser)]
struct Args {
    /// NATS server URLs, comma-separated; node n connects to server n mod count.
    #[arg(long)]
    nats: String,
    /// NATS credentials: a user that may subscribe to and publish on the
    /// live subjects (the shipped model grants the latter to no one, so
    /// this model needs a NATS without it or a user of its own).
    #[command(flatten)]
    access: campusbite_loadgen::nats_access::NatsAccess,
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    #[arg(long, default_value_t = 6)]
    nodes: u64,
    #[arg(long, default_value_t = 2)]
    tabs: u64,
    /// Notifications per second in the publish phase (one per user, round-robin).
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Length of the publish and churn phases.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Unsubscribe + subscribe pairs per second in the churn phase (per-user).
    #[arg(long, default_value_t = 1000.0)]
    churn: f64,
    /// Notification payload size in bytes.
    #[arg(long, default_value_t = 200)]
    payload: usize,
    #[arg(long, default_value = "campusbite.model")]
    prefix: String,
    /// Live-subject partitions (`per-partition`).
    #[arg(long, default_value_t = 1024)]
    partitions: u64,
    /// Phase marker directory.
    #[arg(long)]
    dir: PathBuf,
}

fn cpu_us() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime + stime, in clock ticks (100 Hz on Linux).
    (ticks(11) + ticks(12)) * 10_000
}

async fn phase(dir: &Path, name: &str) {
    let _ = std::fs::write(dir.join(name), b"");
    let go = dir.join(format!("{name}.go"));
    while !go.exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn user(u: u64) -> String {
    format!("m{u}")
}

#[derive(Default)]
struct Counts {
    received: AtomicU64,
    discarded: AtomicU64,
}

/// One subscription drained by its own task (what the gateway's per-user
/// forwarder does); aborting the task drops the subscriber, i.e. UNSUB.
async fn per_user_sub(
    client: &async_nats::Client,
    subject: String,
    counts: Arc<Counts>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let mut sub = client.subscribe(subject).await.map_err(|e| e.to_string())?;
    Ok(tokio::spawn(async move {
        while sub.next().await.is_some() {
            counts.received.fetch_add(1, Relaxed);
        }
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let urls: Vec<String> = args.nats.split(',').map(str::to_owned).collect();
    let counts = Arc::new(Counts::default());
    let mut nodes = Vec::new();
    for n in 0..args.nodes {
        let url = &urls[(n as usize) % urls.len()];
        let client = args
            .access
            .options()
            .await?
            .subscription_capacity(4096)
            .connect(url.as_str())
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        nodes.push(client);
    }
    // hosted[n]: the users with a tab on node n.
    let mut hosted: Vec<Vec<u64>> = vec![Vec::new(); args.nodes as usize];
    let partitions = args.partitions.max(1);
    for u in 0..args.users {
        let mut on = HashSet::new();
        if args.mode == Mode::Partition {
            // Every tab on the owner of the user's partition.
            on.insert((u % partitions) % args.nodes);
        } else {
            for t in 0..args.tabs {
                on.insert((u * args.tabs + t) % args.nodes);
            }
        }
        for n in on {
            hosted[n as usize].push(u);
        }
    }
    let live = |u: u64| {
        if args.mode == Mode::Partition {
            format!("{}.live.{}.{}", args.prefix, u % partitions, user(u))
        } else {
            format!("{}.live.{}", args.prefix, user(u))
        }
    };

    // 1. Subscribe.
    let (cpu0, t0) = (cpu_us(), Instant::now());
    let mut handles: Vec<Vec<tokio::task::JoinHandle<()>>> = Vec::new();
    match args.mode {
        Mode::User => {
            for (n, users) in hosted.iter().enumerate() {
                let mut hs = Vec::with_capacity(users.len());
                for &u in users {
                    hs.push(per_user_sub(&nodes[n], live(u), counts.clone()).await?);
                }
                handles.push(hs);
            }
        }
        Mode::Partition => {
            for (n, users) in hosted.iter().enumerate() {
                let set: Arc<HashSet<String>> = Arc::new(users.iter().map(|&u| user(u)).collect());
                let mut hs = Vec::new();
                for p in (0..partitions).filter(|p| p % args.nodes == n as u64) {
                    let mut sub = nodes[n]
                        .subscribe(format!("{}.live.{p}.*", args.prefix))
                        .await
                        .map_err(|e| e.to_string())?;
                    let counts = counts.clone();
                    let set = set.clone();
                    hs.push(tokio::spawn(async move {
                        while let Some(m) = sub.next().await {
                            let id = m.subject.rsplit('.').next().unwrap_or_default();
                            if set.contains(id) {
                                counts.received.fetch_add(1, Relaxed);
                            } else {
                                counts.discarded.fetch_add(1, Relaxed);
                            }
                        }
                    }));
                }
                handles.push(hs);
            }
        }
        Mode::Node => {
            for (n, users) in hosted.iter().enumerate() {
                let set: HashSet<String> = users.iter().map(|&u| user(u)).collect();
                let mut sub = nodes[n]
                    .subscribe(format!("{}.live.*", args.prefix))
                    .await
                    .map_err(|e| e.to_string())?;
                let counts = counts.clone();
                let prefix_len = args.prefix.len() + ".live.".len();
                handles.push(vec![tokio::spawn(async move {
                    while let Some(m) = sub.next().await {
                        let id = m.subject.get(prefix_len..).unwrap_or_default();
                        if set.contains(id) {
                            counts.received.fetch_add(1, Relaxed);
                        } else {
                            counts.discarded.fetch_add(1, Relaxed);
                        }
                    }
                })]);
            }
        }
    }
    for c in &nodes {
        c.flush().await.map_err(|e| e.to_string())?;
    }
    let subscribe_s = t0.elapsed().as_secs_f64();
    let subscribe_cpu_us = cpu_us() - cpu0;
    let subscriptions: usize = handles.iter().map(Vec::len).sum();
    eprintln!("{subscriptions} subscriptions in {subscribe_s:.2}s");
    phase(&args.dir, "subscribed").await;

    // 2. Publish (the stream leader's RePublish, as core publishes).
    let publisher = args
        .access
        .options()
        .await?
        .connect(urls[0].as_str())
        .await
        .map_err(|e| e.to_string())?;
    let payload = bytes::Bytes::from(vec![b'x'; args.payload]);
    let total = (args.rate * args.seconds) as u64;
    let (cpu1, t1) = (cpu_us(), Instant::now());
    for i in 0..total {
        let due = t1 + Duration::from_secs_f64(i as f64 / args.rate);
        if due > Instant::now() + Duration::from_millis(1) {
            tokio::time::sleep_until(due.into()).await;
        }
        publisher
            .publish(live(i % args.users), payload.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    publisher.flush().await.map_err(|e| e.to_string())?;
    let publish_s = t1.elapsed().as_secs_f64();
    // Deliveries due: every hosted (node, user) pair gets its user's messages.
    let expected: u64 = hosted
        .iter()
        .flatten()
        .map(|&u| total / args.users + u64::from(u < total % args.users))
        .sum();
    let wait = Instant::now();
    while counts.received.load(Relaxed) < expected && wait.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let publish_cpu_us = cpu_us() - cpu1;
    let received = counts.received.load(Relaxed);
    let discarded = counts.discarded.load(Relaxed);
    phase(&args.dir, "published").await;

    // 3. Churn (per-user): unsubscribe a hosted user and subscribe it again.
    let mut churned = 0u64;
    let mut churn_us = Vec::new();
    let (cpu2, t2) = (cpu_us(), Instant::now());
    if args.mode == Mode::User && args.churn > 0.0 {
        let pairs = (args.churn * args.seconds) as u64;
        for i in 0..pairs {
            let due = t2 + Duration::from_secs_f64(i as f64 / args.churn);
            if due > Instant::now() + Duration::from_millis(1) {
                tokio::time::sleep_until(due.into()).await;
            }
            let n = (i % args.nodes) as usize;
            let k = fastrand::usize(..hosted[n].len().max(1));
            let Some(&u) = hosted[n].get(k) else { continue };
            let start = Instant::now();
            handles[n][k].abort();
            // Let the aborted task drop its subscriber (UNSUB) first.
            tokio::task::yield_now().await;
            handles[n][k] = per_user_sub(&nodes[n], live(u), counts.clone()).await?;
            nodes[n].flush().await.map_err(|e| e.to_string())?;
            churn_us.push(start.elapsed().as_micros() as u64);
            churned += 1;
        }
    }
    let churn_s = t2.elapsed().as_secs_f64();
    let churn_cpu_us = cpu_us() - cpu2;
    churn_us.sort_unstable();
    let pct = |p: f64| {
        churn_us
            .get(((churn_us.len() as f64 - 1.0) * p).round() as usize)
            .map(|&v| v as f64 / 1000.0)
    };
    phase(&args.dir, "churned").await;
    println!(
        "{}",
        json!({
            "mode": format!("{:?}", args.mode),
            "users": args.users, "nodes": args.nodes, "tabs": args.tabs,
            "subscriptions": subscriptions,
            "subscribe": {"seconds": subscribe_s, "cpu_us": subscribe_cpu_us},
            "publish": {"rate": args.rate, "published": total, "seconds": publish_s,
                        "expected": expected, "received": received, "discarded": discarded,
                        "receivers_cpu_us": publish_cpu_us,
                        "receivers_cpu_us_per_published": publish_cpu_us as f64 / total.max(1) as f64},
            "churn": {"pairs": churned, "seconds": churn_s, "cpu_us": churn_cpu_us,
                      "sub_flush_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)}},
        })
    );
    Ok(())
}
