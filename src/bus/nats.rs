//! The clustered bus: NATS JetStream.
//!
//! - One stream captures `<prefix>.user.*` with a per-user depth
//!   (`max_msgs_per_subject`), `max_age`, replicas, direct get, and RePublish
//!   to `<prefix>.live.<user>`. Its sequence is the SSE event id, identical
//!   on every node.
//! - A node subscribes (core NATS) to `<prefix>.live.<user>` only while that
//!   user has a stream open on it, so NATS routes each notification only to
//!   the nodes that need it.
//! - History is read per user with direct get "next by subject".
//! - The republished `Nats-Last-Sequence` is the user's previous sequence:
//!   the actor uses it to see a missed live message and repair the gap.
//! - After a reconnect, every online user is told to catch up from history,
//!   because core messages sent while the node was away are gone.
//! - The HTTP publish path uses JetStream publish with `Nats-Msg-Id`,
//!   retried until acked, so a stream-leader election loses nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Recipient;
use async_nats::header::{NATS_LAST_SEQUENCE, NATS_MESSAGE_ID, NATS_SEQUENCE};
use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, Subject};
use dashmap::DashMap;
use futures_util::stream::{FuturesOrdered, StreamExt};

use super::{BoxFuture, Bus, BusError, BusMessage, History, Subscription};
use crate::config::ConfigError;
use crate::event::{Event, EventId, Payload};
use crate::metrics::{metrics, DropReason};
use crate::user_id::UserId;

/// How long JetStream remembers a `Nats-Msg-Id` (publish retries must fit).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long the HTTP publish path keeps retrying an unacked publish.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(20);
/// How long one JetStream publish waits for its ack before it is retried.
const PUBLISH_ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Publishes of one batch in flight at once.
const PUBLISH_CONCURRENCY: usize = 256;
/// Longest wait for NATS to confirm a new subscription.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Live messages buffered per user subscription before NATS drops some
/// (a drop is a gap, which the actor repairs from history).
const SUBSCRIPTION_CAPACITY: usize = 4096;

/// NATS settings of the node.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// Server URLs.
    pub urls: Vec<String>,
    /// Subject prefix, e.g. `campusbite.notify`.
    pub prefix: String,
    /// Stream replicas.
    pub replicas: usize,
    /// Notifications kept per user.
    pub depth: i64,
    /// How long they are kept.
    pub max_age: Duration,
}

impl NatsSettings {
    /// The stream's name: the prefix in capitals, `.` as `_`.
    pub fn stream_name(&self) -> String {
        self.prefix.replace('.', "_").to_uppercase()
    }

    fn user_subject(&self, user: &UserId) -> String {
        format!("{}.user.{}", self.prefix, user.as_str())
    }

    fn live_subject(&self, user: &UserId) -> String {
        format!("{}.live.{}", self.prefix, user.as_str())
    }

    /// The stream configuration this node needs.
    pub fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream_name(),
            description: Some("campusbite-notify: per-user notification history".into()),
            subjects: vec![format!("{}.user.*", self.prefix)],
            max_messages_per_subject: self.depth,
            max_age: self.max_age,
            num_replicas: self.replicas,
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            duplicate_window: DUPLICATE_WINDOW.min(self.max_age),
            allow_direct: true,
            republish: Some(stream::Republish {
                source: format!("{}.user.*", self.prefix),
                destination: format!("{}.live.{{{{wildcard(1)}}}}", self.prefix),
                headers_only: false,
            }),
            ..Default::default()
        }
    }
}

/// The NATS bus. Cheap to share (`Arc`).
pub struct NatsBus {
    settings: NatsSettings,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    stream: tokio::sync::OnceCell<stream::Stream>,
    connected: Arc<AtomicBool>,
    subscribers: Arc<DashMap<UserId, (u64, Recipient<BusMessage>)>>,
    next_token: AtomicU64,
}

impl NatsBus {
    /// Connects (retrying in the background if no server answers yet) and
    /// ensures the stream. A stream that exists with another configuration
    /// is an error, not a silent change.
    pub async fn start(settings: NatsSettings) -> Result<Arc<Self>, ConfigError> {
        let connected = Arc::new(AtomicBool::new(false));
        let subscribers: Arc<DashMap<UserId, (u64, Recipient<BusMessage>)>> = Arc::default();
        let on_event = {
            let connected = connected.clone();
            let subscribers = subscribers.clone();
            move |event: async_nats::Event| {
                let connected = connected.clone();
                let subscribers = subscribers.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            let was = connected.swap(true, Ordering::AcqRel);
                            tracing::info!("NATS connected");
                            if !was {
                                // Live messages sent while away are gone from the
                                // core path: every online user catches up.
                                for entry in subscribers.iter() {
                                    entry.value().1.do_send(BusMessage::Resync);
                                }
                            }
                        }
                        async_nats::Event::Disconnected => {
                            connected.store(false, Ordering::Release);
                            tracing::warn!("NATS disconnected");
                        }
                        async_nats::Event::SlowConsumer(sid) => {
                            tracing::warn!(sid, "NATS subscription fell behind; the gap will be repaired from history")
                        }
                        other => tracing::info!(event = %other, "NATS event"),
                    }
                }
            }
        };
        let client = async_nats::ConnectOptions::new()
            .name("campusbite-notify")
            .connection_timeout(Duration::from_secs(2))
            .ping_interval(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(5)))
            .max_reconnects(None)
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .retry_on_initial_connect()
            .event_callback(on_event)
            .connect(settings.urls.clone())
            .await
            .map_err(|e| ConfigError::new("NOTIFY_NATS_URL", e.to_string()))?;
        // A short ack timeout: an ack lost with a failed server is retried
        // (deduplicated by Nats-Msg-Id) instead of waited for.
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(PUBLISH_ACK_TIMEOUT)
            .build(client.clone());
        let bus = Arc::new(Self {
            settings,
            client,
            jetstream,
            stream: tokio::sync::OnceCell::new(),
            connected,
            subscribers,
            next_token: AtomicU64::new(0),
        });
        // Wait a little for the stream so that a wrong configuration stops
        // start-up; if NATS is not reachable yet, keep trying in the background
        // (the node is not ready meanwhile).
        match tokio::time::timeout(Duration::from_secs(5), bus.ensure_stream()).await {
            Ok(Ok(())) => {}
            Ok(Err(EnsureError::Incompatible(why))) => {
                return Err(ConfigError::new("NOTIFY_NATS_URL", why))
            }
            Ok(Err(EnsureError::Transient(why))) => bus.keep_ensuring_stream(why),
            Err(_) => bus.keep_ensuring_stream("timed out".into()),
        }
        Ok(bus)
    }

    /// Retries [`Self::ensure_stream`] until it works; a stream found
    /// incompatible later still stops the process with a clear error.
    fn keep_ensuring_stream(self: &Arc<Self>, why: String) {
        tracing::warn!(error = %why, "JetStream stream not ready yet; retrying in the background");
        let bus = self.clone();
        tokio::spawn(async move {
            loop {
                match bus.ensure_stream().await {
                    Ok(()) => break,
                    Err(EnsureError::Incompatible(why)) => {
                        eprintln!("error: NOTIFY_NATS_URL: {why}");
                        std::process::exit(2);
                    }
                    Err(EnsureError::Transient(why)) => {
                        tracing::debug!(error = %why, "JetStream stream not ready yet");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }

    async fn ensure_stream(&self) -> Result<(), EnsureError> {
        if self.stream.initialized() {
            return Ok(());
        }
        let wanted = self.settings.stream_config();
        let stream = match self.jetstream.get_stream(&wanted.name).await {
            Ok(stream) => {
                compatible(&wanted, &stream.cached_info().config)
                    .map_err(EnsureError::Incompatible)?;
                stream
            }
            Err(e) if is_not_found(&e) => self
                .jetstream
                .create_stream(wanted.clone())
                .await
                .map_err(|e| EnsureError::Transient(e.to_string()))?,
            Err(e) => return Err(EnsureError::Transient(e.to_string())),
        };
        tracing::info!(stream = %wanted.name, replicas = wanted.num_replicas, "JetStream stream ready");
        let _ = self.stream.set(stream);
        Ok(())
    }

    fn stream(&self) -> Result<&stream::Stream, BusError> {
        self.stream.get().ok_or(BusError::Unavailable)
    }

    /// Reads `user`'s retained messages after `after`, one direct get each.
    async fn read_history(
        self: Arc<Self>,
        user: UserId,
        after: EventId,
    ) -> Result<History, BusError> {
        let stream = self.stream()?;
        let subject = self.settings.user_subject(&user);
        let mut history = History::default();
        // Inclusive: if `after` itself is still retained for this user,
        // nothing newer can have been evicted (eviction takes the oldest).
        let mut next = after.0.max(1);
        let mut first = true;
        loop {
            let message = match stream
                .direct_get_next_for_subject(subject.as_str(), Some(next))
                .await
            {
                Ok(message) => message,
                Err(e) if matches!(e.kind(), jetstream::stream::DirectGetErrorKind::NotFound) => {
                    if first && after.0 > 0 {
                        history.truncated = true;
                    }
                    break;
                }
                Err(e) => return Err(BusError::Other(e.to_string())),
            };
            if first {
                first = false;
                if after.0 > 0 && message.sequence != after.0 {
                    history.truncated = true;
                }
            }
            next = message.sequence + 1;
            if message.sequence <= after.0 {
                continue;
            }
            match Payload::from_json(&message.payload) {
                Ok(payload) => {
                    history
                        .events
                        .push(Event::new(EventId(message.sequence), None, &payload))
                }
                Err(_) => metrics().dropped(DropReason::InvalidPayload).increment(1),
            }
        }
        Ok(history)
    }

    async fn subscribe_live(
        self: Arc<Self>,
        user: UserId,
        to: Recipient<BusMessage>,
    ) -> Result<Subscription, BusError> {
        let stream = self.stream()?;
        let mut live = self
            .client
            .subscribe(self.settings.live_subject(&user))
            .await
            .map_err(|e| BusError::Other(e.to_string()))?;
        // The server has the subscription once the flush returns; anything
        // stored after the head read below arrives live.
        // Bounded: while NATS is away a flush waits for the reconnect, and a
        // browser must get a 503 rather than a hung request.
        tokio::time::timeout(FLUSH_TIMEOUT, self.client.flush())
            .await
            .map_err(|_| BusError::Unavailable)?
            .map_err(|e| BusError::Other(e.to_string()))?;
        let head = match stream
            .direct_get_last_for_subject(self.settings.user_subject(&user))
            .await
        {
            Ok(message) => EventId(message.sequence),
            Err(e) if matches!(e.kind(), jetstream::stream::DirectGetErrorKind::NotFound) => {
                EventId(0)
            }
            Err(e) => return Err(BusError::Other(e.to_string())),
        };
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.subscribers.insert(user.clone(), (token, to.clone()));
        let forward = tokio::spawn(async move {
            while let Some(message) = live.next().await {
                match live_event(&message.headers, &message.payload) {
                    Some(event) => to.do_send(BusMessage::Event(event)),
                    None => metrics().dropped(DropReason::InvalidPayload).increment(1),
                }
            }
        });
        Ok(Subscription {
            head,
            guard: Box::new(LiveGuard {
                forward,
                subscribers: self.subscribers.clone(),
                user,
                token,
            }),
        })
    }

    async fn publish_all(
        self: Arc<Self>,
        users: Vec<UserId>,
        payload: Payload,
        dedupe_key: Option<String>,
    ) -> Result<Vec<EventId>, BusError> {
        self.stream()?;
        // Without a caller's key, a fresh one still makes our own retries idempotent.
        let key = dedupe_key
            .unwrap_or_else(|| format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)));
        let deadline = Instant::now() + PUBLISH_DEADLINE;
        let mut ids = Vec::with_capacity(users.len());
        let mut pending = FuturesOrdered::new();
        let mut users = users.into_iter();
        loop {
            while pending.len() < PUBLISH_CONCURRENCY {
                let Some(user) = users.next() else { break };
                let subject = self.settings.user_subject(&user);
                let msg_id = format!("{key}:{}", user.as_str());
                pending.push_back(self.publish_acked(subject, msg_id, payload.bytes(), deadline));
            }
            match pending.next().await {
                Some(result) => ids.push(result?),
                None => break,
            }
        }
        Ok(ids)
    }

    /// One JetStream publish, retried until acked or `deadline`.
    async fn publish_acked(
        &self,
        subject: String,
        msg_id: String,
        payload: bytes::Bytes,
        deadline: Instant,
    ) -> Result<EventId, BusError> {
        let subject = Subject::from(subject);
        let mut backoff = Duration::from_millis(50);
        loop {
            let mut headers = HeaderMap::new();
            headers.insert(NATS_MESSAGE_ID, msg_id.as_str());
            let attempt = async {
                let ack = self
                    .jetstream
                    .publish_with_headers(subject.clone(), headers, payload.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                ack.await.map_err(|e| e.to_string())
            };
            match attempt.await {
                Ok(ack) => return Ok(EventId(ack.sequence)),
                Err(e) if Instant::now() + backoff < deadline => {
                    tracing::debug!(error = %e, "JetStream publish not acked; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "JetStream publish failed");
                    return Err(BusError::Unavailable);
                }
            }
        }
    }
}

enum EnsureError {
    Incompatible(String),
    Transient(String),
}

impl std::fmt::Display for EnsureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Incompatible(e) | Self::Transient(e) => f.write_str(e),
        }
    }
}

fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Compares what matters for correctness and for the promised history.
fn compatible(wanted: &stream::Config, found: &stream::Config) -> Result<(), String> {
    let mut diffs = Vec::new();
    let mut check = |what: &str, want: String, got: String| {
        if want != got {
            diffs.push(format!("{what} is {got}, this node needs {want}"));
        }
    };
    check(
        "subjects",
        format!("{:?}", wanted.subjects),
        format!("{:?}", found.subjects),
    );
    check(
        "republish",
        format!(
            "{:?}",
            wanted
                .republish
                .as_ref()
                .map(|r| (&r.source, &r.destination, r.headers_only))
        ),
        format!(
            "{:?}",
            found
                .republish
                .as_ref()
                .map(|r| (&r.source, &r.destination, r.headers_only))
        ),
    );
    check(
        "allow_direct",
        wanted.allow_direct.to_string(),
        found.allow_direct.to_string(),
    );
    check(
        "max_msgs_per_subject (NOTIFY_HISTORY_DEPTH)",
        wanted.max_messages_per_subject.to_string(),
        found.max_messages_per_subject.to_string(),
    );
    check(
        "max_age (NOTIFY_HISTORY_MAX_AGE)",
        format!("{:?}", wanted.max_age),
        format!("{:?}", found.max_age),
    );
    check(
        "replicas (NOTIFY_STREAM_REPLICAS)",
        wanted.num_replicas.to_string(),
        found.num_replicas.to_string(),
    );
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "JetStream stream {} exists with another configuration: {}; update the stream (nats stream edit) or the settings",
            wanted.name,
            diffs.join("; ")
        ))
    }
}

/// Turns a republished message into an event; `None` if it is unusable.
fn live_event(headers: &Option<HeaderMap>, payload: &[u8]) -> Option<Event> {
    let headers = headers.as_ref()?;
    let number = |name| -> Option<u64> { headers.get(name)?.as_str().parse().ok() };
    let id = number(NATS_SEQUENCE)?;
    let previous = number(NATS_LAST_SEQUENCE).filter(|&p| p > 0).map(EventId);
    let payload = Payload::from_json(payload).ok()?;
    Some(Event::new(EventId(id), previous, &payload))
}

/// Ends a live subscription: stops the forwarder (dropping the NATS
/// subscriber unsubscribes) and forgets the recipient.
struct LiveGuard {
    forward: tokio::task::JoinHandle<()>,
    subscribers: Arc<DashMap<UserId, (u64, Recipient<BusMessage>)>>,
    user: UserId,
    token: u64,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.forward.abort();
        self.subscribers
            .remove_if(&self.user, |_, (token, _)| *token == self.token);
    }
}

/// `Bus` for an `Arc<NatsBus>`: each call moves a clone into its future.
#[derive(Clone)]
pub struct SharedNatsBus(pub Arc<NatsBus>);

impl Bus for SharedNatsBus {
    fn subscribe(
        &self,
        user: UserId,
        to: Recipient<BusMessage>,
    ) -> BoxFuture<Result<Subscription, BusError>> {
        Box::pin(self.0.clone().subscribe_live(user, to))
    }

    fn history(&self, user: UserId, after: EventId) -> BoxFuture<Result<History, BusError>> {
        Box::pin(self.0.clone().read_history(user, after))
    }

    fn publish(
        &self,
        users: Vec<UserId>,
        payload: Payload,
        dedupe_key: Option<String>,
    ) -> BoxFuture<Result<Vec<EventId>, BusError>> {
        Box::pin(self.0.clone().publish_all(users, payload, dedupe_key))
    }

    fn is_connected(&self) -> bool {
        self.0.connected.load(Ordering::Acquire) && self.0.stream.initialized()
    }
}
