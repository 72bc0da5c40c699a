//! Publishers: a fixed offered rate over HTTP keep-alive connections or NATS.

use crate::nats_access::NatsAccess;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::net::{self, Target};
use super::order::UserOrder;
use super::{unix_nanos, user_id, Flavor};

/// How notifications leave the load generator.
#[derive(Debug, Clone)]
pub enum Via {
    /// `POST /api/notifications/publish` (or nchan's `POST /pub/<user>`).
    Http { target: Target, token: String },
    /// JetStream publish with `Nats-Msg-Id`, waiting for the ack.
    NatsJetStream {
        urls: String,
        prefix: String,
        access: NatsAccess,
    },
    /// Core NATS publish (best effort).
    NatsCore {
        urls: String,
        prefix: String,
        access: NatsAccess,
    },
}

/// What to publish.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    pub flavor: Flavor,
    pub via: Via,
    pub run_id: String,
    pub run_users: u64,
    /// Notifications (unicast) or batches (`batch`).
    pub count: u64,
    /// Notifications (or batches) per second; 0 = as fast as possible.
    pub rate: f64,
    pub batch: bool,
    /// Users per HTTP batch request.
    pub batch_size: usize,
    /// Concurrent publish connections (HTTP) or in-flight acks (JetStream).
    pub conns: usize,
}

/// What the publishers did.
#[derive(Debug, Default)]
pub struct PublishStats {
    /// User-notifications sent (a batch to 10k users counts 10k).
    pub published: AtomicU64,
    /// User-notifications the server acknowledged.
    pub acked: AtomicU64,
    pub failed: AtomicU64,
    pub requests: AtomicU64,
    /// How late a send was against its schedule, worst case, µs.
    pub max_behind_us: AtomicU64,
    pub rtt_us: Mutex<Vec<u32>>,
    pub fail_reasons: Mutex<BTreeMap<String, u64>>,
    pub elapsed: Mutex<Duration>,
}

impl PublishStats {
    fn fail(&self, n: u64, reason: String) {
        self.failed.fetch_add(n, Relaxed);
        *self.fail_reasons.lock().unwrap().entry(reason).or_default() += 1;
    }
}

/// One unit of work: a notification for some users, sent as one request
/// (HTTP) or one message per user (NATS, nchan).
struct Item {
    seq: u64,
    users: std::ops::Range<u64>,
    due: Instant,
    sent_ns: Option<u64>,
}

struct Schedule {
    plan: PublishPlan,
    start: Instant,
    wall_start_ns: u64,
    items_per_batch: u64,
    total: u64,
    next: AtomicU64,
    order: UserOrder,
}

impl Schedule {
    fn new(plan: PublishPlan) -> Self {
        let per_request = match (&plan.via, plan.flavor) {
            (Via::Http { .. }, Flavor::Campusbite) => plan.batch_size.max(1) as u64,
            _ => 1,
        };
        let items_per_batch = if plan.batch {
            plan.run_users.div_ceil(per_request)
        } else {
            1
        };
        Self {
            total: plan.count * items_per_batch,
            items_per_batch,
            start: Instant::now(),
            wall_start_ns: unix_nanos(),
            next: AtomicU64::new(0),
            order: UserOrder::new(plan.run_users),
            plan,
        }
    }

    fn next(&self) -> Option<Item> {
        let i = self.next.fetch_add(1, Relaxed);
        if i >= self.total {
            return None;
        }
        let seq = i / self.items_per_batch;
        let offset = if self.plan.rate > 0.0 {
            Duration::from_secs_f64(seq as f64 / self.plan.rate)
        } else {
            Duration::ZERO
        };
        let (users, sent_ns) = if self.plan.batch {
            let per = self.plan.run_users.div_ceil(self.items_per_batch);
            let part = i % self.items_per_batch;
            let users = part * per..((part + 1) * per).min(self.plan.run_users);
            // Every part of a batch carries the batch's scheduled time.
            (users, Some(self.wall_start_ns + offset.as_nanos() as u64))
        } else {
            let u = self.order.user(seq);
            (u..u + 1, None)
        };
        Some(Item {
            seq,
            users,
            due: self.start + offset,
            sent_ns,
        })
    }
}

fn notification(seq: u64, sent_ns: u64) -> String {
    format!(
        r#"{{"type":"loadgen","title":"t","message":"m","data":{{"seq":{seq},"sentNs":{sent_ns}}}}}"#
    )
}

async fn wait_due(item: &Item, stats: &PublishStats) -> u64 {
    let now = Instant::now();
    if now < item.due {
        tokio::time::sleep_until(item.due.into()).await;
    } else {
        let behind = (now - item.due).as_micros() as u64;
        stats.max_behind_us.fetch_max(behind, Relaxed);
    }
    item.sent_ns.unwrap_or_else(unix_nanos)
}

/// Publishes the whole plan; returns when every publish was answered.
pub async fn run(plan: PublishPlan) -> Result<Arc<PublishStats>, String> {
    let stats = Arc::new(PublishStats::default());
    let conns = plan.conns.max(1);
    let nats = match &plan.via {
        Via::NatsJetStream { urls, access, .. } | Via::NatsCore { urls, access, .. } => {
            let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_owned()).collect();
            Some(
                access
                    .options()
                    .await?
                    .connect(urls)
                    .await
                    .map_err(|e| format!("NATS: {e}"))?,
            )
        }
        Via::Http { .. } => None,
    };
    let schedule = Arc::new(Schedule::new(plan));
    let mut workers = Vec::new();
    for _ in 0..conns {
        let schedule = schedule.clone();
        let stats = stats.clone();
        let nats = nats.clone();
        workers.push(tokio::spawn(async move {
            match (&schedule.plan.via, nats) {
                (Via::Http { target, token }, _) => {
                    http_worker(&schedule, target, token, &stats).await
                }
                (Via::NatsJetStream { prefix, .. }, Some(client)) => {
                    let js = async_nats::jetstream::new(client);
                    nats_worker(&schedule, prefix, &stats, |subject, msg_id, payload| {
                        let js = js.clone();
                        async move {
                            let mut headers = async_nats::HeaderMap::new();
                            headers.insert("Nats-Msg-Id", msg_id.as_str());
                            js.publish_with_headers(subject, headers, payload.into())
                                .await
                                .map_err(|e| e.to_string())?
                                .await
                                .map(|_| true)
                                .map_err(|e| e.to_string())
                        }
                    })
                    .await
                }
                (Via::NatsCore { prefix, .. }, Some(client)) => {
                    nats_worker(&schedule, prefix, &stats, |subject, _, payload| {
                        let client = client.clone();
                        async move {
                            client
                                .publish(subject, payload.into())
                                .await
                                .map(|_| false)
                                .map_err(|e| e.to_string())
                        }
                    })
                    .await
                }
                _ => unreachable!("NATS client exists for NATS publishing"),
            }
        }));
    }
    for w in workers {
        w.await.map_err(|e| e.to_string())?;
    }
    if let Some(client) = nats {
        client
            .flush()
            .await
            .map_err(|e| format!("NATS flush: {e}"))?;
        if let Via::NatsCore { .. } = schedule.plan.via {
            // Core publishes have no ack: count what was flushed.
            stats.acked.store(
                stats.published.load(Relaxed) - stats.failed.load(Relaxed),
                Relaxed,
            );
        }
    }
    *stats.elapsed.lock().unwrap() = schedule.start.elapsed();
    Ok(stats)
}

async fn http_worker(schedule: &Schedule, target: &Target, token: &str, stats: &PublishStats) {
    let plan = &schedule.plan;
    let mut conn: Option<TcpStream> = None;
    while let Some(item) = schedule.next() {
        let sent_ns = wait_due(&item, stats).await;
        let body_notification = notification(item.seq, sent_ns);
        let users = item.users.end - item.users.start;
        let (path, body) = match plan.flavor {
            Flavor::Campusbite if !plan.batch => (
                "/api/notifications/publish".to_owned(),
                format!(
                    r#"{{"userId":"{}","notification":{body_notification}}}"#,
                    user_id(&plan.run_id, item.users.start)
                ),
            ),
            Flavor::Campusbite => {
                let mut ids = String::with_capacity(users as usize * 24);
                for u in item.users.clone() {
                    if !ids.is_empty() {
                        ids.push(',');
                    }
                    ids.push('"');
                    ids.push_str(&user_id(&plan.run_id, u));
                    ids.push('"');
                }
                (
                    "/api/notifications/publish".to_owned(),
                    format!(r#"{{"userIds":[{ids}],"notification":{body_notification}}}"#),
                )
            }
            Flavor::Nchan => (
                format!("/pub/{}", user_id(&plan.run_id, item.users.start)),
                body_notification,
            ),
        };
        let auth = match plan.flavor {
            Flavor::Campusbite => format!("Authorization: Bearer {token}\r\n"),
            Flavor::Nchan => String::new(),
        };
        let request = format!(
            "POST {}{path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            target.prefix,
            target.authority,
            body.len()
        );
        stats.published.fetch_add(users, Relaxed);
        stats.requests.fetch_add(1, Relaxed);
        let started = Instant::now();
        let mut result = Err(String::new());
        // A kept-alive connection the server closed while idle fails before
        // any answer: nothing was processed, so send once more on a new one.
        for _ in 0..2 {
            let reused = conn.is_some();
            let stream = match conn.as_mut() {
                Some(s) => s,
                None => match net::connect(target.addr, None).await {
                    Ok(s) => conn.insert(s),
                    Err(e) => {
                        result = Err(format!("connect: {}", e.kind()));
                        break;
                    }
                },
            };
            result = net::exchange(stream, request.as_bytes(), Duration::from_secs(30)).await;
            match &result {
                Err(e) if reused && e.as_str() == net::CLOSED_BEFORE_HEAD => conn = None,
                _ => break,
            }
        }
        match result {
            Ok(answer) => {
                if (200..300).contains(&answer.status) {
                    stats.acked.fetch_add(users, Relaxed);
                    let rtt = started.elapsed().as_micros();
                    stats
                        .rtt_us
                        .lock()
                        .unwrap()
                        .push(u32::try_from(rtt).unwrap_or(u32::MAX));
                } else {
                    let text = String::from_utf8_lossy(&answer.body);
                    let text: String = text.chars().take(80).collect();
                    stats.fail(users, format!("status {}: {text}", answer.status));
                }
                if answer.close {
                    // e.g. nginx after `keepalive_requests`: open a new one.
                    conn = None;
                }
            }
            Err(e) => {
                stats.fail(users, e);
                conn = None;
            }
        }
    }
}

async fn nats_worker<F, Fut>(schedule: &Schedule, prefix: &str, stats: &PublishStats, send: F)
where
    F: Fn(String, String, String) -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let plan = &schedule.plan;
    while let Some(item) = schedule.next() {
        let sent_ns = wait_due(&item, stats).await;
        let payload = notification(item.seq, sent_ns);
        for u in item.users.clone() {
            let user = user_id(&plan.run_id, u);
            let subject = format!("{prefix}.user.{user}");
            let msg_id = format!("{user}-{}", item.seq);
            stats.published.fetch_add(1, Relaxed);
            stats.requests.fetch_add(1, Relaxed);
            let started = Instant::now();
            match send(subject, msg_id, payload.clone()).await {
                Ok(true) => {
                    stats.acked.fetch_add(1, Relaxed);
                    let rtt = started.elapsed().as_micros();
                    stats
                        .rtt_us
                        .lock()
                        .unwrap()
                        .push(u32::try_from(rtt).unwrap_or(u32::MAX));
                }
                Ok(false) => {}
                Err(e) => stats.fail(1, e),
            }
        }
    }
}
