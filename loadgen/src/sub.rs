//! Subscribers: one task per SSE stream, counting what arrives.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::net::{self, Framing, ResponseHead, Target};
use super::order::UserOrder;
use super::wire::{ChunkedDecoder, SseEvent, SseParser};
use super::{unix_nanos, Flavor};

/// What every stream of this process shares: the run's shape.
#[derive(Debug)]
pub struct Plan {
    pub flavor: Flavor,
    /// Users of the whole run: notification `n` goes to user
    /// `order.user(n)`, once per round of `run_users` notifications.
    pub run_users: u64,
    pub order: UserOrder,
    pub batch: bool,
    pub targets: Vec<Target>,
    pub resume_targets: Vec<Target>,
    pub reconnect: bool,
    /// Overrides the server's `retry:` when reconnecting.
    pub reconnect_delay: Option<Duration>,
    /// Churn: close each stream after this long and reopen it at once.
    pub stream_lifetime: Option<Duration>,
    pub t0: Instant,
}

/// Counters every stream adds to as things happen.
#[derive(Debug, Default)]
pub struct Shared {
    pub opened: AtomicU64,
    pub failed: AtomicU64,
    /// Streams that ended (server closed) with reconnecting off.
    pub ended: AtomicU64,
    /// Streams open right now.
    pub up: AtomicI64,
    /// µs from connect start to the `200` head, first connections only.
    pub connect_us: Mutex<Vec<u32>>,
    /// ns since t0 of the last first-time open.
    pub last_open_ns: AtomicU64,
    pub fail_reasons: Mutex<BTreeMap<String, u64>>,
    /// Distinct notifications received (per stream).
    pub delivered: AtomicU64,
    pub duplicated: AtomicU64,
    pub out_of_order: AtomicU64,
    /// A notification for another user: must never happen.
    pub misrouted: AtomicU64,
    pub resets: AtomicU64,
    pub other_events: AtomicU64,
    /// Publish → receive, µs, one per distinct delivery.
    pub latencies_us: Mutex<Vec<u32>>,
    /// ns since t0 of the last distinct delivery.
    pub last_delivery_ns: AtomicU64,
    pub disconnects: AtomicU64,
    pub resumed: AtomicU64,
    pub first_disconnect_ns: AtomicU64,
    pub last_resume_ns: AtomicU64,
    /// Churn: streams closed by this side after their lifetime.
    pub churn_closed: AtomicU64,
    /// Churn: streams reopened after such a close.
    pub churn_reopened: AtomicU64,
    /// Churn: µs from connect start to the `200` head of a reopen.
    pub churn_reopen_us: Mutex<Vec<u32>>,
}

impl Shared {
    pub fn new() -> Self {
        Self {
            first_disconnect_ns: AtomicU64::new(u64::MAX),
            ..Self::default()
        }
    }

    fn fail(&self, reason: String) {
        *self.fail_reasons.lock().unwrap().entry(reason).or_default() += 1;
    }
}

/// One stream to open.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// This process' stream number.
    pub index: usize,
    /// The run-wide user index.
    pub user_index: u64,
    pub user: String,
    pub token: Option<String>,
    pub target: usize,
    pub source: Option<Ipv4Addr>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(rename = "type")]
    kind: Option<String>,
    data: Option<MessageData>,
}

#[derive(Deserialize)]
struct MessageData {
    seq: u64,
    #[serde(rename = "sentNs")]
    sent_ns: u64,
}

/// Which notifications one stream has seen.
struct Tracker {
    user_index: u64,
    /// Bit k set: the user's k-th notification arrived.
    seen: Vec<u64>,
    max_seq: Option<u64>,
}

impl Tracker {
    fn on_event(&mut self, event: SseEvent<'_>, plan: &Plan, shared: &Shared) {
        match event.event {
            "message" => self.on_message(event.data, plan, shared),
            "reset" => {
                shared.resets.fetch_add(1, Relaxed);
            }
            _ => {
                shared.other_events.fetch_add(1, Relaxed);
            }
        }
    }

    fn on_message(&mut self, data: &str, plan: &Plan, shared: &Shared) {
        let now = unix_nanos();
        let Ok(message) = serde_json::from_str::<Message>(data) else {
            shared.other_events.fetch_add(1, Relaxed);
            return;
        };
        let (Some("loadgen"), Some(d)) = (message.kind.as_deref(), message.data) else {
            shared.other_events.fetch_add(1, Relaxed);
            return;
        };
        let k = if plan.batch {
            d.seq
        } else {
            if plan.order.user(d.seq) != self.user_index {
                shared.misrouted.fetch_add(1, Relaxed);
                return;
            }
            d.seq / plan.run_users
        };
        let (word, bit) = ((k / 64) as usize, k % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            shared.duplicated.fetch_add(1, Relaxed);
        } else {
            self.seen[word] |= 1 << bit;
            shared.delivered.fetch_add(1, Relaxed);
            let latency_us = now.saturating_sub(d.sent_ns) / 1000;
            shared
                .latencies_us
                .lock()
                .unwrap()
                .push(u32::try_from(latency_us).unwrap_or(u32::MAX));
            shared
                .last_delivery_ns
                .fetch_max(plan.t0.elapsed().as_nanos() as u64, Relaxed);
        }
        if self.max_seq.is_some_and(|m| d.seq < m) {
            shared.out_of_order.fetch_add(1, Relaxed);
        }
        self.max_seq = Some(self.max_seq.map_or(d.seq, |m| m.max(d.seq)));
    }
}

fn request(plan: &Plan, target: &Target, spec: &StreamSpec, last_event_id: &str) -> Vec<u8> {
    let path = match plan.flavor {
        Flavor::Campusbite => format!(
            "{}/api/notifications/subscribe?token={}",
            target.prefix,
            spec.token.as_deref().unwrap_or_default()
        ),
        Flavor::Nchan => format!("{}/sub/{}", target.prefix, spec.user),
    };
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n",
        target.authority
    );
    if !last_event_id.is_empty() {
        req.push_str("Last-Event-ID: ");
        req.push_str(last_event_id);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

async fn open(
    target: &Target,
    source: Option<Ipv4Addr>,
    request: &[u8],
) -> Result<(TcpStream, ResponseHead, Vec<u8>), String> {
    let mut stream = net::connect(target.addr, source)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write: {}", e.kind()))?;
    let mut buf = Vec::new();
    let head = net::read_head(&mut stream, &mut buf).await?;
    let rest = buf.split_off(head.len);
    Ok((stream, head, rest))
}

/// Opens one stream and keeps it (and, with reconnecting on, its
/// successors) until the task is aborted.
pub async fn run_stream(
    spec: StreamSpec,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    mut permit: Option<OwnedSemaphorePermit>,
) {
    let mut tracker = Tracker {
        user_index: spec.user_index,
        seen: Vec::new(),
        max_seq: None,
    };
    let mut parser = SseParser::new();
    let mut target = &plan.targets[spec.target];
    let mut ever_up = false;
    let mut counted_failed = false;
    let mut attempt = 0usize;
    let mut churning = false;
    let mut first_life = true;
    loop {
        let started = Instant::now();
        let req = request(&plan, target, &spec, &parser.last_event_id);
        let opened =
            match tokio::time::timeout(Duration::from_secs(30), open(target, spec.source, &req))
                .await
            {
                Ok(r) => r,
                Err(_) => Err("connect: timeout".into()),
            };
        match opened {
            // A soft refusal (a short 200 with `event: unavailable`) has a
            // length; a stream is open-ended. Read it as a browser does —
            // its `retry:` and any start id — and count it as a refusal.
            Ok((stream, head, rest))
                if head.status == 200 && matches!(head.framing, Framing::Length(_)) =>
            {
                read_body(
                    stream,
                    &head,
                    &rest,
                    &mut parser,
                    &mut tracker,
                    &plan,
                    &shared,
                )
                .await;
                shared.fail("soft refusal".into());
            }
            Ok((stream, head, rest)) if head.status == 200 => {
                let now_ns = plan.t0.elapsed().as_nanos() as u64;
                let us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
                if churning {
                    churning = false;
                    shared.churn_reopened.fetch_add(1, Relaxed);
                    shared.churn_reopen_us.lock().unwrap().push(us);
                } else if ever_up {
                    shared.resumed.fetch_add(1, Relaxed);
                    shared.last_resume_ns.fetch_max(now_ns, Relaxed);
                } else {
                    ever_up = true;
                    shared.connect_us.lock().unwrap().push(us);
                    shared.last_open_ns.fetch_max(now_ns, Relaxed);
                    shared.opened.fetch_add(1, Relaxed);
                    permit.take();
                }
                shared.up.fetch_add(1, Relaxed);
                let body = read_body(
                    stream,
                    &head,
                    &rest,
                    &mut parser,
                    &mut tracker,
                    &plan,
                    &shared,
                );
                let end = match plan.stream_lifetime {
                    Some(life) => {
                        // The first lifetime is a random part of it, so that
                        // streams opened together do not close together.
                        let life = if std::mem::take(&mut first_life) {
                            life.mul_f64(fastrand::f64())
                        } else {
                            life
                        };
                        tokio::time::timeout(life, body).await.ok()
                    }
                    None => Some(body.await),
                };
                shared.up.fetch_sub(1, Relaxed);
                let Some(end) = end else {
                    // Lifetime over: the stream (dropped above) is closed;
                    // reopen at once where it was, as a returning user.
                    shared.churn_closed.fetch_add(1, Relaxed);
                    churning = true;
                    parser = SseParser::resume(&parser);
                    continue;
                };
                if !plan.reconnect {
                    shared.ended.fetch_add(1, Relaxed);
                    shared.fail(format!("ended: {end}"));
                    return;
                }
                shared.disconnects.fetch_add(1, Relaxed);
                shared
                    .first_disconnect_ns
                    .fetch_min(plan.t0.elapsed().as_nanos() as u64, Relaxed);
            }
            Ok((_, head, _)) => shared.fail(format!("status {}", head.status)),
            Err(e) => shared.fail(e),
        }
        if !ever_up && !counted_failed {
            counted_failed = true;
            shared.failed.fetch_add(1, Relaxed);
            permit.take();
        }
        if churning {
            // A failed churn reopen: try again on the same node shortly.
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        if !plan.reconnect {
            return;
        }
        // The EventSource reconnects after its reconnection time.
        let delay = plan
            .reconnect_delay
            .unwrap_or_else(|| Duration::from_millis(parser.retry.unwrap_or(3000)));
        tokio::time::sleep(delay).await;
        attempt += 1;
        target = &plan.resume_targets[(spec.index + attempt) % plan.resume_targets.len()];
        parser = SseParser::resume(&parser);
    }
}

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
}

enum Step {
    More,
    End(String),
}

/// Decodes the body framing and feeds the event-stream parser.
struct Body {
    chunked: Option<ChunkedDecoder>,
    remaining: Option<usize>,
    decoded: Vec<u8>,
}

impl Body {
    fn process(
        &mut self,
        mut bytes: &[u8],
        parser: &mut SseParser,
        tracker: &mut Tracker,
        plan: &Plan,
        shared: &Shared,
    ) -> Step {
        let mut on_event = |e: SseEvent<'_>| tracker.on_event(e, plan, shared);
        if let Some(decoder) = &mut self.chunked {
            self.decoded.clear();
            if let Err(e) = decoder.feed(bytes, &mut self.decoded) {
                return Step::End(format!("bad chunked body: {e:?}"));
            }
            parser.feed(&self.decoded, &mut on_event);
            if decoder.is_done() {
                return Step::End("end of body".into());
            }
            return Step::More;
        }
        if let Some(left) = &mut self.remaining {
            bytes = &bytes[..bytes.len().min(*left)];
            *left -= bytes.len();
            parser.feed(bytes, &mut on_event);
            if *left == 0 {
                return Step::End("end of body".into());
            }
            return Step::More;
        }
        parser.feed(bytes, &mut on_event);
        Step::More
    }
}

async fn read_body(
    stream: TcpStream,
    head: &ResponseHead,
    rest: &[u8],
    parser: &mut SseParser,
    tracker: &mut Tracker,
    plan: &Plan,
    shared: &Shared,
) -> String {
    let mut body = Body {
        chunked: (head.framing == Framing::Chunked).then(ChunkedDecoder::new),
        remaining: match head.framing {
            Framing::Length(n) => Some(n),
            _ => None,
        },
        decoded: Vec::new(),
    };
    if let Step::End(reason) = body.process(rest, parser, tracker, plan, shared) {
        return reason;
    }
    loop {
        if let Err(e) = stream.readable().await {
            return format!("read: {}", e.kind());
        }
        let step = READ_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            match stream.try_read(&mut buf) {
                Ok(0) => Step::End("closed".into()),
                Ok(n) => body.process(&buf[..n], parser, tracker, plan, shared),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Step::More,
                Err(e) => Step::End(format!("read: {}", e.kind())),
            }
        });
        if let Step::End(reason) = step {
            return reason;
        }
        // Keep the decode buffer small on an idle stream.
        if body.decoded.capacity() > 16 * 1024 {
            body.decoded = Vec::new();
        }
    }
}
