//! Gateway nodes on NATS, a browser-like client that follows one user
//! across node failures, and the loss/duplicate audit.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::api::NodeApi;
use crate::nats::{probe_client, Nats};
use crate::node::{Node, TestApp};
use crate::sse::{SseItem, SseParser, SseStream};
use crate::{http_client, new_secret, note, tail, wait_for, PUBLISH, SUBSCRIBE};

// ---------------------------------------------------------------------------
// Gateway nodes
// ---------------------------------------------------------------------------

impl Node {
    /// A gateway node on the NATS servers `urls` with `replicas` stream
    /// replicas, connecting as the permission model's gateway user.
    pub fn on_nats(self, urls: &str, replicas: usize) -> Node {
        self.env("NOTIFY_NATS_URL", urls)
            .env("NOTIFY_STREAM_REPLICAS", &replicas.to_string())
            .envs(&crate::nats_auth::gateway_envs())
    }

    /// Starts the node and waits until `/readyz` is 200.
    pub async fn spawn_ready(self) -> TestApp {
        let app = self.spawn().await;
        let ready = wait_status(&app.base, "/readyz", 200, Duration::from_secs(20)).await;
        assert!(
            ready.is_some(),
            "node never became ready; stderr:\n{}",
            tail(&app.stderr(), 40)
        );
        app
    }
}

/// Starts a gateway node of `bin` on `nats_urls` with `secret` and `extra`
/// settings, and waits until `/readyz` is 200.
pub async fn start_node(
    bin: &str,
    secret: &str,
    nats_urls: &str,
    replicas: usize,
    extra: &[(&str, &str)],
) -> TestApp {
    Node::builder(bin)
        .secret(secret)
        .on_nats(nats_urls, replicas)
        .envs(extra)
        .spawn_ready()
        .await
}

/// Two gateway nodes sharing a secret on all servers of a NATS cluster.
pub struct TwoNodes {
    pub nats: Nats,
    pub secret: String,
    pub a: TestApp,
    pub b: TestApp,
}

/// Starts two nodes of `bin` on every server of `nats` (3 stream replicas)
/// with `extra` settings, side by side.
pub async fn two_nodes(bin: &str, nats: Nats, extra: &[(&str, &str)]) -> TwoNodes {
    let secret = new_secret();
    let urls = nats.urls();
    let (a, b) = tokio::join!(
        start_node(bin, &secret, &urls, 3, extra),
        start_node(bin, &secret, &urls, 3, extra)
    );
    TwoNodes { nats, secret, a, b }
}

/// The status of `GET base+path`, `None` if the request failed.
pub async fn status_of(base: &str, path: &str) -> Option<u16> {
    let resp = probe_client()
        .get(format!("{base}{path}"))
        .send()
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

/// Polls until `GET base+path` answers `status`; returns the time it took.
pub async fn wait_status(base: &str, path: &str, status: u16, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if status_of(base, path).await == Some(status) {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// SIGKILLs a node and reaps it.
pub async fn kill9_node(app: &mut TestApp) {
    app.signal("KILL");
    assert!(
        app.wait_exit(Duration::from_secs(5)).await.is_some(),
        "node survived SIGKILL"
    );
}

/// One HTTP publish of `note(n)` to `user` via `base`: `Ok(id)` on 202,
/// `Err` with the status/body or the transport error otherwise.
pub async fn try_publish(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    user: &str,
    n: usize,
    idempotency_key: Option<&str>,
) -> Result<u64, String> {
    let body = json!({"userId": user, "notification": note(n)}).to_string();
    let mut req = client
        .post(format!("{base}{PUBLISH}"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(30))
        .body(body);
    if let Some(key) = idempotency_key {
        req = req.header("idempotency-key", key);
    }
    let resp = req.send().await.map_err(|e| format!("transport: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| format!("body: {e}"))?;
    if status != StatusCode::ACCEPTED {
        return Err(format!("{status}: {text}"));
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no id in {text}"))
}

/// The `n` of a `note(n)` payload.
pub fn note_n(data: &str) -> Option<usize> {
    let v: Value = serde_json::from_str(data).ok()?;
    v["data"]["n"].as_u64().map(|n| n as usize)
}

/// Opens `user`'s stream resuming after `last_event_id` (`?lastEventId=`).
pub async fn resume(app: &NodeApi, user: &str, last_event_id: u64) -> SseStream {
    app.subscribe_from(user, last_event_id).await
}

/// Reads `n` messages of `note(n)` payloads; returns (id, n) pairs.
pub async fn messages(stream: &mut SseStream, n: usize) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (id, data) = stream.next_message().await;
        out.push((
            id,
            note_n(&data).unwrap_or_else(|| panic!("unexpected payload {data}")),
        ));
    }
    out
}

// ---------------------------------------------------------------------------
// A browser-like client that follows one user across node failures
// ---------------------------------------------------------------------------

/// The base URLs a reconnecting client may pick (the "load balancer").
pub type Live = Arc<Mutex<Vec<String>>>;

pub fn live(bases: &[&str]) -> Live {
    Arc::new(Mutex::new(bases.iter().map(|b| b.to_string()).collect()))
}

/// One notification a follower received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub id: u64,
    pub event: String,
    pub data: String,
    /// Which connection (0-based) delivered it.
    pub conn: usize,
}

/// One (re)connection of a follower.
#[derive(Debug, Clone)]
pub struct Connect {
    pub base: String,
    /// The `Last-Event-ID` it sent.
    pub last_event_id: Option<String>,
    /// The start frame's id.
    pub start_id: Option<u64>,
    pub at: Instant,
}

/// What a follower saw.
#[derive(Debug, Default, Clone)]
pub struct FollowLog {
    pub seen: Vec<Seen>,
    pub connects: Vec<Connect>,
    /// Streams that ended or broke (time, why).
    pub breaks: Vec<(Instant, String)>,
    /// Refused or failed connection attempts.
    pub refusals: Vec<String>,
}

/// A client that keeps one user subscribed: on a break it reconnects to a
/// live node with the browser's `Last-Event-ID`, like `EventSource`.
pub struct Follower {
    log: Arc<Mutex<FollowLog>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    /// Starts following `user` on `first`, reconnecting among `live`.
    pub fn start(live: Live, first: &str, token: String) -> Follower {
        let log = Arc::new(Mutex::new(FollowLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(follow(
            live,
            first.to_string(),
            token,
            log.clone(),
            stop.clone(),
        ));
        Follower { log, stop, task }
    }

    /// Waits until the first connection's start frame arrived.
    pub async fn wait_connected(&self, limit: Duration) {
        wait_for("the follower's first stream", limit, || async {
            self.log
                .lock()
                .unwrap()
                .connects
                .iter()
                .any(|c| c.start_id.is_some())
                .then_some(())
        })
        .await;
    }

    /// Notifications received so far.
    pub fn count(&self) -> usize {
        self.log.lock().unwrap().seen.len()
    }

    /// Waits until it has received `n` notifications.
    pub async fn wait_count(&self, n: usize, limit: Duration) {
        wait_for(
            &format!("{n} notifications at the follower"),
            limit,
            || async { (self.count() >= n).then_some(()) },
        )
        .await;
    }

    /// Waits (at most `limit`) until every id in `ids` has arrived; returns
    /// whether they all did.
    pub async fn wait_ids(&self, ids: &[u64], limit: Duration) -> bool {
        let want: HashSet<u64> = ids.iter().copied().collect();
        let deadline = Instant::now() + limit;
        loop {
            let have: HashSet<u64> = self.log.lock().unwrap().seen.iter().map(|s| s.id).collect();
            if want.is_subset(&have) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits (at most `limit`) for every id in `acked`, stops following and
    /// audits what arrived: (whether all arrived, the log, the audit).
    pub async fn finish(
        self,
        acked: &BTreeMap<u64, usize>,
        limit: Duration,
    ) -> (bool, FollowLog, Audit) {
        let ids: Vec<u64> = acked.keys().copied().collect();
        let arrived = self.wait_ids(&ids, limit).await;
        let log = self.stop().await;
        let audit = Audit::of(&log.seen, acked);
        (arrived, log, audit)
    }

    /// Stops following and returns the log.
    pub async fn stop(self) -> FollowLog {
        self.stop.store(true, Ordering::Release);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        let log = self.log.lock().unwrap().clone();
        log
    }
}

async fn follow(
    live: Live,
    first: String,
    token: String,
    log: Arc<Mutex<FollowLog>>,
    stop: Arc<AtomicBool>,
) {
    let client = http_client();
    let mut base = first;
    let mut last: Option<String> = None;
    let mut attempt = 0usize;
    let mut conn = 0usize;
    while !stop.load(Ordering::Acquire) {
        let mut req = client
            .get(format!("{base}{SUBSCRIBE}"))
            .query(&[("token", &token)]);
        if let Some(l) = &last {
            req = req.header("Last-Event-ID", l.as_str());
        }
        let resp = match tokio::time::timeout(Duration::from_secs(5), req.send()).await {
            Ok(Ok(resp)) if resp.status() == StatusCode::OK => Some(resp),
            Ok(Ok(resp)) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                log.lock()
                    .unwrap()
                    .refusals
                    .push(format!("{base}: {status} {body}"));
                None
            }
            Ok(Err(e)) => {
                log.lock().unwrap().refusals.push(format!("{base}: {e}"));
                None
            }
            Err(_) => {
                log.lock()
                    .unwrap()
                    .refusals
                    .push(format!("{base}: no response headers within 5s"));
                None
            }
        };
        if let Some(mut resp) = resp {
            attempt = 0;
            log.lock().unwrap().connects.push(Connect {
                base: base.clone(),
                last_event_id: last.clone(),
                start_id: None,
                at: Instant::now(),
            });
            let mut parser = SseParser::default();
            let mut queue: VecDeque<SseItem> = VecDeque::new();
            let why = loop {
                if let Some(item) = queue.pop_front() {
                    match item {
                        SseItem::IdOnly(id) => {
                            let mut l = log.lock().unwrap();
                            if let Some(c) = l.connects.last_mut().filter(|c| c.start_id.is_none())
                            {
                                c.start_id = id.parse().ok();
                            }
                            last = Some(id);
                        }
                        SseItem::Event(e) => {
                            if e.had_id {
                                last = Some(e.id.clone());
                            }
                            log.lock().unwrap().seen.push(Seen {
                                id: e.id.parse().unwrap_or(0),
                                event: e.event,
                                data: e.data,
                                conn,
                            });
                        }
                        SseItem::Retry(_) | SseItem::Comment { .. } => {}
                    }
                    continue;
                }
                if stop.load(Ordering::Acquire) {
                    break "stopped".to_string();
                }
                match tokio::time::timeout(Duration::from_millis(200), resp.chunk()).await {
                    Err(_) => {}
                    Ok(Ok(Some(chunk))) => queue.extend(parser.feed(&chunk)),
                    Ok(Ok(None)) => break "end of stream".to_string(),
                    Ok(Err(e)) => break format!("broken: {e}"),
                }
            };
            conn += 1;
            log.lock().unwrap().breaks.push((Instant::now(), why));
        } else {
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if stop.load(Ordering::Acquire) {
            break;
        }
        // The "load balancer": the next live node after the current one.
        let nodes = live.lock().unwrap().clone();
        if !nodes.is_empty() {
            let at = nodes.iter().position(|n| *n == base);
            base = match at {
                Some(i) => nodes[(i + 1 + attempt) % nodes.len()].clone(),
                None => nodes[attempt % nodes.len()].clone(),
            };
        }
    }
}

// ---------------------------------------------------------------------------
// The audit
// ---------------------------------------------------------------------------

/// Loss, duplicates and order of what one client received, against what was
/// acknowledged to the producers.
#[derive(Debug, Default)]
pub struct Audit {
    pub acked: usize,
    pub received: usize,
    pub lost: Vec<u64>,
    pub duplicated: Vec<u64>,
    /// Places where an id was not larger than the one before.
    pub out_of_order: Vec<(u64, u64)>,
    /// Received ids nobody got an ack for (a producer's failed publish that
    /// was stored anyway; legal under at-least-once, reported).
    pub unacked: Vec<u64>,
    /// Events whose payload is not the one acked with that id.
    pub wrong_payload: Vec<u64>,
    /// Non-`message` events (e.g. `reset`).
    pub other_events: Vec<String>,
}

impl Audit {
    /// Fails the test unless everything acked arrived exactly once, in
    /// order, and nothing unacked arrived; `context` (logs) is appended.
    pub fn assert_delivered_once(&self, arrived: bool, log: &FollowLog, context: &str) {
        assert!(
            arrived && self.clean() && self.unacked.is_empty(),
            "{}\nlost {:?}\nduplicated {:?}\nout of order {:?}\nother {:?}\nconnects {:?}\nbreaks {:?}\nrefusals {:?}\n{context}",
            self.summary(),
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.other_events,
            log.connects,
            log.breaks,
            log.refusals,
        );
    }

    /// `acked`: id → the `n` of the notification acked with it.
    pub fn of(seen: &[Seen], acked: &BTreeMap<u64, usize>) -> Audit {
        let mut audit = Audit {
            acked: acked.len(),
            ..Audit::default()
        };
        let mut counts: HashMap<u64, usize> = HashMap::new();
        let mut prev = 0u64;
        for s in seen {
            if s.event != "message" {
                audit.other_events.push(format!("{} {}", s.event, s.data));
                continue;
            }
            audit.received += 1;
            *counts.entry(s.id).or_default() += 1;
            if s.id <= prev {
                audit.out_of_order.push((prev, s.id));
            }
            prev = prev.max(s.id);
            match acked.get(&s.id) {
                Some(&n) if note_n(&s.data) == Some(n) => {}
                Some(_) => audit.wrong_payload.push(s.id),
                None => audit.unacked.push(s.id),
            }
        }
        audit.lost = acked
            .keys()
            .filter(|id| !counts.contains_key(id))
            .copied()
            .collect();
        audit.duplicated = counts
            .iter()
            .filter(|(_, &c)| c > 1)
            .map(|(&id, _)| id)
            .collect();
        audit.duplicated.sort_unstable();
        audit
    }

    /// Whether nothing acked was lost, duplicated, reordered or altered.
    pub fn clean(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.out_of_order.is_empty()
            && self.wrong_payload.is_empty()
            && self.other_events.is_empty()
    }

    pub fn summary(&self) -> String {
        format!(
            "acked {}, received {}, lost {}, duplicated {}, out of order {}, unacked-but-delivered {}, wrong payload {}, other events {}",
            self.acked,
            self.received,
            self.lost.len(),
            self.duplicated.len(),
            self.out_of_order.len(),
            self.unacked.len(),
            self.wrong_payload.len(),
            self.other_events.len()
        )
    }
}

/// Prints a measurement line on stderr (shown with `--no-capture`, and with
/// the output of a failing test).
pub fn report(test: &str, line: &str) {
    eprintln!("[{test}] {line}");
}
