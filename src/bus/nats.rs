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
//! - Partitioned mode (`NOTIFY_STREAM_PARTITIONS` = N > 1): N streams
//!   `<STREAM>_0..N-1`, stream `p` capturing `<prefix>.part.<p>.*`. The NATS
//!   servers' subject mapping `<prefix>.user.*` →
//!   `<prefix>.part.{{partition(N,1)}}.{{wildcard(1)}}` moves each producer
//!   publish there, so producers keep publishing to `<prefix>.user.<id>`.
//!   The gateway computes the same partition ([`partition_of`]) for history
//!   reads and checks at start-up that the servers' mapping agrees. A user's
//!   ids are that partition stream's sequence: still increasing per user.
//!   New partition streams start above the single stream's last sequence,
//!   so a move from one stream to N keeps every user's ids increasing.

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
/// How long partitioned mode's start-up probe may find no stream for a
/// user subject (new streams still electing leaders) before it concludes
/// that the servers lack the subject mapping.
const MAPPING_CHECK_PATIENCE: Duration = Duration::from_secs(10);
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
    /// Streams the users are partitioned over (1 = one stream, no mapping).
    pub partitions: u32,
}

/// The partition of `user` among `partitions`, exactly as nats-server's
/// `partition(N, 1)` mapping function computes it: FNV-1a (32 bit) of the
/// token's bytes, modulo N (`getHashPartition` in
/// nats-server/server/subject_transform.go).
pub fn partition_of(user: &str, partitions: u32) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let hash = user
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u32::from(b)).wrapping_mul(PRIME));
    hash % partitions.max(1)
}

impl NatsSettings {
    /// The stream's name: the prefix in capitals, `.` as `_`; in partitioned
    /// mode the base of `<name>_<partition>`.
    pub fn stream_name(&self) -> String {
        self.prefix.replace('.', "_").to_uppercase()
    }

    fn partitioned(&self) -> bool {
        self.partitions > 1
    }

    /// The name of stream `partition` (the single stream's name when not partitioned).
    pub fn partition_stream_name(&self, partition: u32) -> String {
        if self.partitioned() {
            format!("{}_{partition}", self.stream_name())
        } else {
            self.stream_name()
        }
    }

    /// The NATS server subject mapping partitioned mode needs (source,
    /// destination); `None` with one stream. Every server of the cluster must
    /// have it, with the same N as `NOTIFY_STREAM_PARTITIONS`.
    pub fn subject_mapping(&self) -> Option<(String, String)> {
        self.partitioned().then(|| {
            (
                format!("{}.user.*", self.prefix),
                format!(
                    "{}.part.{{{{partition({},1)}}}}.{{{{wildcard(1)}}}}",
                    self.prefix, self.partitions
                ),
            )
        })
    }

    fn partition(&self, user: &UserId) -> u32 {
        partition_of(user.as_str(), self.partitions)
    }

    /// Where producers publish: `<prefix>.user.<id>`, in either mode.
    fn user_subject(&self, user: &UserId) -> String {
        format!("{}.user.{}", self.prefix, user.as_str())
    }

    /// Where the stream keeps `user`'s messages (direct-get subject).
    fn stored_subject(&self, user: &UserId) -> String {
        if self.partitioned() {
            format!(
                "{}.part.{}.{}",
                self.prefix,
                self.partition(user),
                user.as_str()
            )
        } else {
            self.user_subject(user)
        }
    }

    fn live_subject(&self, user: &UserId) -> String {
        format!("{}.live.{}", self.prefix, user.as_str())
    }

    /// The stream configuration this node needs (the first partition's in
    /// partitioned mode).
    pub fn stream_config(&self) -> stream::Config {
        self.partition_stream_config(0)
    }

    /// The configuration of stream `partition`.
    pub fn partition_stream_config(&self, partition: u32) -> stream::Config {
        let captured = if self.partitioned() {
            format!("{}.part.{partition}.*", self.prefix)
        } else {
            format!("{}.user.*", self.prefix)
        };
        stream::Config {
            name: self.partition_stream_name(partition),
            description: Some("campusbite-notify: per-user notification history".into()),
            subjects: vec![captured.clone()],
            max_messages_per_subject: self.depth,
            max_age: self.max_age,
            num_replicas: self.replicas,
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            duplicate_window: DUPLICATE_WINDOW.min(self.max_age),
            allow_direct: true,
            republish: Some(stream::Republish {
                source: captured,
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
    /// One stream per partition (one in all when not partitioned).
    streams: tokio::sync::OnceCell<Vec<stream::Stream>>,
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
            streams: tokio::sync::OnceCell::new(),
            connected,
            subscribers,
            next_token: AtomicU64::new(0),
        });
        // Wait a little for the stream so that a wrong configuration stops
        // start-up; if NATS is not reachable yet, keep trying in the background
        // (the node is not ready meanwhile).
        match tokio::time::timeout(Duration::from_secs(5), bus.ensure_stream()).await {
            Ok(Ok(())) => {}
            Ok(Err(EnsureError::Incompatible(name, why))) => {
                return Err(ConfigError::new(name, why))
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
                    Err(EnsureError::Incompatible(name, why)) => {
                        eprintln!("error: {name}: {why}");
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
        if self.streams.initialized() {
            return Ok(());
        }
        let mut streams = Vec::with_capacity(self.settings.partitions as usize);
        for partition in 0..self.settings.partitions.max(1) {
            streams.push(self.ensure_one(partition).await?);
        }
        if self.settings.partitioned() {
            self.check_mapping(&streams).await?;
        }
        tracing::info!(
            streams = streams.len(),
            replicas = self.settings.replicas,
            "JetStream stream(s) ready"
        );
        let _ = self.streams.set(streams);
        Ok(())
    }

    async fn ensure_one(&self, partition: u32) -> Result<stream::Stream, EnsureError> {
        let wanted = self.settings.partition_stream_config(partition);
        match self.jetstream.get_stream(&wanted.name).await {
            Ok(stream) => {
                compatible(&wanted, &stream.cached_info().config)
                    .map_err(|why| EnsureError::Incompatible("NOTIFY_NATS_URL", why))?;
                Ok(stream)
            }
            Err(e) if is_not_found(&e) => {
                let mut wanted = wanted;
                if self.settings.partitioned() {
                    // Users moving here from the single stream keep
                    // increasing ids: start above its last sequence.
                    let floor = self.single_stream_last_sequence().await?;
                    if floor > 0 {
                        wanted.first_sequence = Some(floor + 1);
                    }
                }
                self.jetstream
                    .create_stream(wanted)
                    .await
                    .map_err(|e| EnsureError::Transient(e.to_string()))
            }
            Err(e) => Err(EnsureError::Transient(e.to_string())),
        }
    }

    /// The last sequence of the unpartitioned stream, 0 if there is none.
    async fn single_stream_last_sequence(&self) -> Result<u64, EnsureError> {
        match self.jetstream.get_stream(self.settings.stream_name()).await {
            Ok(stream) => Ok(stream.cached_info().state.last_sequence),
            Err(e) if is_not_found(&e) => Ok(0),
            Err(e) => Err(EnsureError::Transient(e.to_string())),
        }
    }

    /// Partitioned mode only works if the servers map each user to the
    /// stream this node reads that user's history from. Probes: publishes
    /// for a few reserved ids (a leading `$` is never a valid user id), reads
    /// which stream stored each (the ack names it), then purges them.
    async fn check_mapping(&self, streams: &[stream::Stream]) -> Result<(), EnsureError> {
        const PROBES: u32 = 16;
        let run = fastrand::u64(..);
        let (source, destination) = self.settings.subject_mapping().unwrap_or_default();
        for i in 0..PROBES {
            let probe = format!("$probe-{run:016x}-{i}");
            let subject = format!("{}.user.{probe}", self.settings.prefix);
            let expected = partition_of(&probe, self.settings.partitions);
            // "No stream" is normal for a moment after the streams were
            // created (no leader yet); only a lasting one means no mapping.
            let deadline = Instant::now() + MAPPING_CHECK_PATIENCE;
            let stored = loop {
                let stored = match self.jetstream.publish(subject.clone(), "{}".into()).await {
                    Ok(ack) => ack.await,
                    Err(e) => return Err(EnsureError::Transient(e.to_string())),
                };
                match stored {
                    Err(e)
                        if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound
                            && Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(250)).await
                    }
                    other => break other,
                }
            };
            let ack = match stored {
                Ok(ack) => ack,
                Err(e) if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound => {
                    return Err(EnsureError::Incompatible(
                        "NOTIFY_STREAM_PARTITIONS",
                        format!(
                            "no stream stores {}.user.<id>: the NATS servers need the subject mapping \"{source}\": \"{destination}\"",
                            self.settings.prefix,
                        ),
                    ))
                }
                Err(e) => return Err(EnsureError::Transient(e.to_string())),
            };
            let wanted = self.settings.partition_stream_name(expected);
            if let Some(stream) = streams
                .iter()
                .find(|s| s.cached_info().config.name == ack.stream)
            {
                // Best effort: a leftover probe is one message nobody reads.
                let purged = format!("{}.part.*.{probe}", self.settings.prefix);
                let _ = stream.purge().filter(purged).await;
            }
            if ack.stream != wanted {
                return Err(EnsureError::Incompatible(
                    "NOTIFY_STREAM_PARTITIONS",
                    format!(
                        "the NATS servers stored a probe in stream {} where this node ({} partitions) reads {wanted}; every server needs the mapping \"{source}\": \"{destination}\" with the same N",
                        ack.stream, self.settings.partitions
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The stream that holds `user`'s notifications.
    fn stream_for(&self, user: &UserId) -> Result<&stream::Stream, BusError> {
        let streams = self.streams.get().ok_or(BusError::Unavailable)?;
        streams
            .get(self.settings.partition(user) as usize)
            .ok_or(BusError::Unavailable)
    }

    /// Reads `user`'s retained messages after `after`, one direct get each.
    async fn read_history(
        self: Arc<Self>,
        user: UserId,
        after: EventId,
    ) -> Result<History, BusError> {
        let stream = self.stream_for(&user)?;
        let subject = self.settings.stored_subject(&user);
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

    /// `user`'s last sequence (0 when nothing is retained): a soft refusal
    /// hands it to a page that never connected, as its start position.
    async fn user_position(self: Arc<Self>, user: UserId) -> Result<EventId, BusError> {
        let stream = self.stream_for(&user)?;
        match stream
            .direct_get_last_for_subject(self.settings.stored_subject(&user))
            .await
        {
            Ok(message) => Ok(EventId(message.sequence)),
            Err(e) if matches!(e.kind(), jetstream::stream::DirectGetErrorKind::NotFound) => {
                Ok(EventId(0))
            }
            Err(e) => Err(BusError::Other(e.to_string())),
        }
    }

    async fn subscribe_live(
        self: Arc<Self>,
        user: UserId,
        to: Recipient<BusMessage>,
    ) -> Result<Subscription, BusError> {
        let stream = self.stream_for(&user)?;
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
            .direct_get_last_for_subject(self.settings.stored_subject(&user))
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
        self.streams.get().ok_or(BusError::Unavailable)?;
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

/// Why the stream(s) are not usable yet.
#[derive(Debug, thiserror::Error)]
enum EnsureError {
    /// Wrong configuration (of the named setting): start-up stops.
    #[error("{1}")]
    Incompatible(&'static str, String),
    /// NATS not reachable or not ready yet: retried.
    #[error("{0}")]
    Transient(String),
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

    fn position(&self, user: UserId) -> BoxFuture<Result<EventId, BusError>> {
        Box::pin(self.0.clone().user_position(user))
    }

    fn is_connected(&self) -> bool {
        self.0.connected.load(Ordering::Acquire) && self.0.streams.initialized()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(partitions: u32) -> NatsSettings {
        NatsSettings {
            urls: vec![],
            prefix: "campusbite.notify".into(),
            replicas: 3,
            depth: 100,
            max_age: Duration::from_secs(3600),
            partitions,
        }
    }

    #[test]
    fn partition_is_fnv1a_32_mod_n() {
        // FNV-1a 32-bit reference values.
        assert_eq!(partition_of("", u32::MAX), 0x811c_9dc5);
        assert_eq!(partition_of("a", u32::MAX), 0xe40c_292c);
        assert_eq!(partition_of("foobar", u32::MAX), 0xbf9c_f968);
        assert_eq!(partition_of("foobar", 7), 0xbf9c_f968 % 7);
        assert_eq!(partition_of("anything", 1), 0);
    }

    #[test]
    fn one_partition_is_the_single_stream_of_before() {
        let s = settings(1);
        let c = s.partition_stream_config(0);
        assert_eq!(c.name, "CAMPUSBITE_NOTIFY");
        assert_eq!(c.subjects, vec!["campusbite.notify.user.*".to_string()]);
        let r = c.republish.unwrap();
        assert_eq!(r.source, "campusbite.notify.user.*");
        assert_eq!(r.destination, "campusbite.notify.live.{{wildcard(1)}}");
        assert!(s.subject_mapping().is_none());
        let u = UserId::parse("u1").unwrap();
        assert_eq!(s.stored_subject(&u), "campusbite.notify.user.u1");
    }

    #[test]
    fn partitioned_streams_capture_their_partition_and_republish_to_live() {
        let s = settings(4);
        let c = s.partition_stream_config(3);
        assert_eq!(c.name, "CAMPUSBITE_NOTIFY_3");
        assert_eq!(c.subjects, vec!["campusbite.notify.part.3.*".to_string()]);
        let r = c.republish.unwrap();
        assert_eq!(r.source, "campusbite.notify.part.3.*");
        assert_eq!(r.destination, "campusbite.notify.live.{{wildcard(1)}}");
        assert_eq!(
            s.subject_mapping(),
            Some((
                "campusbite.notify.user.*".to_string(),
                "campusbite.notify.part.{{partition(4,1)}}.{{wildcard(1)}}".to_string()
            ))
        );
        let u = UserId::parse("foobar").unwrap();
        assert_eq!(
            s.stored_subject(&u),
            format!("campusbite.notify.part.{}.foobar", 0xbf9c_f968_u32 % 4)
        );
        assert_eq!(s.user_subject(&u), "campusbite.notify.user.foobar");
    }
}
