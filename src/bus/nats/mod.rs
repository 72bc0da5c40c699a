//! The clustered bus: NATS JetStream.
//!
//! `settings` names the streams and subjects, `provision` creates or
//! checks the streams (and the partition mapping), `history` reads a
//! user's retained notifications, `live` subscribes an online user,
//! `plausible` checks that a live message is one its stream stored,
//! `publish` stores notifications from the HTTP publish path.
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
//! - The node's replies arrive under `_NOTIFY_GW_INBOX` ([`INBOX_PREFIX`]).
//! - Live messages arrive on a connection of their own per worker thread
//!   ([`live`]); after it reconnects, every online user on it is told to
//!   catch up from history, because core messages sent while it was away
//!   are gone.
//! - The HTTP publish path uses JetStream publish with `Nats-Msg-Id`,
//!   retried until acked, so a stream-leader election loses nothing.
//! - Partitioned mode (N partitions > 1): N streams
//!   `<STREAM>_0..N-1`, stream `p` capturing `<prefix>.part.<p>.*`. The NATS
//!   servers' subject mapping `<prefix>.user.*` →
//!   `<prefix>.part.{{partition(N,1)}}.{{wildcard(1)}}` moves each producer
//!   publish there, so producers keep publishing to `<prefix>.user.<id>`.
//!   The gateway computes the same partition ([`partition_of`]) for history
//!   reads and checks at start-up that the servers' mapping agrees. A user's
//!   ids are that partition stream's sequence: still increasing per user.
//!   New partition streams start above the single stream's last sequence,
//!   so a move from one stream to N keeps every user's ids increasing.

mod history;
mod live;
mod plausible;
mod provision;
mod publish;
mod settings;

pub use settings::{partition_of, NatsAuth, NatsSettings, NatsTls};

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Recipient;
use async_nats::jetstream::{self, stream};
use tokio::sync::oneshot;

use super::{BoxFuture, Bus, BusError, BusMessage, History, Subscription};
use crate::event::{EventId, Payload};
use crate::idempotency::DedupeKey;
use crate::user_id::UserId;
use provision::EnsureError;

/// How long one JetStream publish waits for its ack before it is retried.
const PUBLISH_ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// The gateway's reply inbox prefix. The permission model lets only the
/// gateway user read `_NOTIFY_GW_INBOX.>`, so producers (who may read
/// `_INBOX.>`) never see the direct-get replies that carry notifications.
pub const INBOX_PREFIX: &str = "_NOTIFY_GW_INBOX";
/// Messages buffered per subscription that has its own channel (request
/// replies) before NATS drops some; live messages share the dispatchers'
/// channels ([`live`]).
const SUBSCRIPTION_CAPACITY: usize = 4096;

/// Why the NATS bus cannot work with its settings. [`NatsError::setting`]
/// says which setting is at fault, so the caller can name it.
#[derive(Debug)]
pub enum NatsError {
    /// The connection cannot be set up with these settings.
    Connect {
        /// The setting at fault.
        setting: NatsSetting,
        /// What is wrong.
        why: String,
    },
    /// A stream exists with another configuration.
    StreamMismatch {
        /// The stream's name.
        stream: String,
        /// What differs.
        diffs: Vec<StreamDiff>,
    },
    /// The servers' subject mapping is missing or disagrees with
    /// [`NatsSettings::partitions`].
    Mapping(String),
}

impl NatsError {
    /// The message, with `note(field)` after each differing stream field
    /// (the caller's name for the setting behind it; empty for none).
    pub fn describe(&self, note: impl Fn(StreamField) -> &'static str) -> String {
        match self {
            Self::Connect { why, .. } | Self::Mapping(why) => why.clone(),
            Self::StreamMismatch { stream, diffs } => {
                let diffs = diffs
                    .iter()
                    .map(|d| {
                        let name = match note(d.field) {
                            "" => d.field.name().to_owned(),
                            note => format!("{} ({note})", d.field.name()),
                        };
                        format!("{name} is {}, this node needs {}", d.found, d.wanted)
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                format!("JetStream stream {stream} exists with another configuration: {diffs}; update the stream (nats stream edit) or the settings")
            }
        }
    }
}

impl std::fmt::Display for NatsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe(|_| ""))
    }
}

impl std::error::Error for NatsError {}

/// The setting a [`NatsError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsSetting {
    /// [`NatsSettings::urls`].
    Urls,
    /// [`NatsSettings::partitions`].
    Partitions,
    /// [`NatsAuth::CredsFile`].
    CredsFile,
    /// The password of [`NatsAuth::UserPassword`].
    Password,
    /// [`NatsAuth::Token`].
    Token,
}

impl NatsError {
    /// The setting at fault: a stream mismatch is about the servers the node
    /// was pointed at (or the history settings its diffs name).
    pub fn setting(&self) -> NatsSetting {
        match self {
            Self::Connect { setting, .. } => *setting,
            Self::StreamMismatch { .. } => NatsSetting::Urls,
            Self::Mapping(_) => NatsSetting::Partitions,
        }
    }
}

/// A stream field whose configuration differs from what the node needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamField {
    /// The captured subjects.
    Subjects,
    /// The RePublish to the live subjects.
    Republish,
    /// Direct get.
    AllowDirect,
    /// [`NatsSettings::depth`].
    MaxMessagesPerSubject,
    /// [`NatsSettings::max_age`].
    MaxAge,
    /// [`NatsSettings::replicas`].
    Replicas,
}

impl StreamField {
    /// The field's name in the JetStream stream configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Subjects => "subjects",
            Self::Republish => "republish",
            Self::AllowDirect => "allow_direct",
            Self::MaxMessagesPerSubject => "max_msgs_per_subject",
            Self::MaxAge => "max_age",
            Self::Replicas => "replicas",
        }
    }
}

/// One differing field: what the stream has, what the node needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDiff {
    /// The field.
    pub field: StreamField,
    /// Its value in the existing stream.
    pub found: String,
    /// The value the node needs.
    pub wanted: String,
}

/// Turns the servers' refusal of the node's credentials into a start-up
/// failure, as long as the node has never been connected (later, a refusal
/// is retried like any other connection failure).
#[derive(Clone)]
struct Refusal {
    ever_connected: Arc<AtomicBool>,
    setting: NatsSetting,
    failure: Arc<Mutex<Option<oneshot::Sender<NatsError>>>>,
}

impl Refusal {
    /// Called with the reason of a failed connection attempt.
    fn check(&self, why: &str) {
        let refused = [
            async_nats::ConnectErrorKind::AuthorizationViolation,
            async_nats::ConnectErrorKind::Authentication,
        ]
        .iter()
        .any(|kind| kind.to_string() == why);
        if !refused || self.ever_connected.load(Ordering::Acquire) {
            return;
        }
        let failure = self.failure.lock().ok().and_then(|mut f| f.take());
        if let Some(failure) = failure {
            let _ = failure.send(NatsError::Connect {
                setting: self.setting,
                why: format!("the NATS servers refused the connection: {why}"),
            });
        }
    }
}

/// The NATS bus. Cheap to share (`Arc`).
pub struct NatsBus {
    settings: NatsSettings,
    jetstream: jetstream::Context,
    /// One stream per partition (one in all when not partitioned).
    streams: tokio::sync::OnceCell<Vec<stream::Stream>>,
    /// Per stream (same order): the highest sequence known to exist.
    watermarks: Vec<Arc<plausible::Watermark>>,
    connected: Arc<AtomicBool>,
    /// The live connections, one per thread that has online users.
    links: live::Links,
    next_token: AtomicU64,
    /// Set when the stream(s) turn out incompatible after start-up.
    failure: Arc<Mutex<Option<oneshot::Sender<NatsError>>>>,
    failed: Mutex<Option<oneshot::Receiver<NatsError>>>,
}

impl NatsBus {
    /// Connects (retrying in the background if no server answers yet) and
    /// ensures the stream. A stream that exists with another configuration
    /// is an error, not a silent change.
    pub async fn start(settings: NatsSettings) -> Result<Arc<Self>, NatsError> {
        let connected = Arc::new(AtomicBool::new(false));
        let (failure, failed) = oneshot::channel();
        let failure = Arc::new(Mutex::new(Some(failure)));
        let refused = Refusal {
            ever_connected: Arc::default(),
            setting: settings.auth.setting(),
            failure: failure.clone(),
        };
        let on_event = {
            let connected = connected.clone();
            move |event: async_nats::Event| {
                let connected = connected.clone();
                let refused = refused.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            refused.ever_connected.store(true, Ordering::Release);
                            connected.store(true, Ordering::Release);
                            tracing::info!("NATS connected");
                        }
                        async_nats::Event::Disconnected => {
                            connected.store(false, Ordering::Release);
                            tracing::warn!("NATS disconnected");
                        }
                        async_nats::Event::ClientError(async_nats::ClientError::Other(why)) => {
                            refused.check(&why);
                            tracing::warn!(error = %why, "NATS connection attempt failed");
                        }
                        other => tracing::info!(event = %other, "NATS event"),
                    }
                }
            }
        };
        let client = node_connect_options(&settings, "campusbite-notify")
            .await?
            .request_timeout(Some(Duration::from_secs(5)))
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .event_callback(on_event)
            .connect(settings.urls.clone())
            .await
            .map_err(|e| NatsError::Connect {
                setting: NatsSetting::Urls,
                why: e.to_string(),
            })?;
        // A short ack timeout: an ack lost with a failed server is retried
        // (deduplicated by Nats-Msg-Id) instead of waited for.
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(PUBLISH_ACK_TIMEOUT)
            .build(client);
        let watermarks = (0..settings.partitions.max(1))
            .map(|_| Arc::default())
            .collect();
        let bus = Arc::new(Self {
            settings,
            jetstream,
            streams: tokio::sync::OnceCell::new(),
            watermarks,
            connected,
            links: live::Links::default(),
            next_token: AtomicU64::new(0),
            failure,
            failed: Mutex::new(Some(failed)),
        });
        // Wait a little for the stream so that a wrong configuration stops
        // start-up; if NATS is not reachable yet, keep trying in the background
        // (the node is not ready meanwhile). Refused credentials stop it too.
        let wait = tokio::time::timeout(Duration::from_secs(5), bus.ensure_stream());
        let ensured = match bus.failed.lock().ok().and_then(|mut f| f.take()) {
            Some(mut failed) => {
                let ensured = tokio::select! {
                    ensured = wait => ensured,
                    Ok(error) = &mut failed => return Err(error),
                };
                if let Ok(mut slot) = bus.failed.lock() {
                    *slot = Some(failed);
                }
                ensured
            }
            None => wait.await,
        };
        match ensured {
            Ok(Ok(())) => {}
            Ok(Err(EnsureError::Incompatible(error))) => return Err(error),
            Ok(Err(EnsureError::Transient(why))) => bus.keep_ensuring_stream(why),
            Err(_) => bus.keep_ensuring_stream("timed out".into()),
        }
        Ok(bus)
    }

    /// Resolves with the reason if the stream(s) turn out unusable after
    /// start-up (the node must then stop); never resolves otherwise, nor
    /// for a second caller.
    pub fn failed(&self) -> impl Future<Output = NatsError> + 'static {
        let failed = self.failed.lock().ok().and_then(|mut f| f.take());
        async move {
            match failed {
                Some(failed) => match failed.await {
                    Ok(error) => error,
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        }
    }

    /// Retries [`Self::ensure_stream`] until it works; a stream found
    /// incompatible later is reported through [`Self::failed`].
    fn keep_ensuring_stream(self: &Arc<Self>, why: String) {
        tracing::warn!(error = %why, "JetStream stream not ready yet; retrying in the background");
        let bus = self.clone();
        tokio::spawn(async move {
            loop {
                match bus.ensure_stream().await {
                    Ok(()) => break,
                    Err(EnsureError::Incompatible(error)) => {
                        let failure = bus.failure.lock().ok().and_then(|mut f| f.take());
                        if let Some(failure) = failure {
                            let _ = failure.send(error);
                        }
                        break;
                    }
                    Err(EnsureError::Transient(why)) => {
                        tracing::debug!(error = %why, "JetStream stream not ready yet");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }

    /// The watermark of the stream that holds `user`'s notifications.
    fn watermark_for(&self, user: &UserId) -> Arc<plausible::Watermark> {
        let partition = self.settings.partition(user) as usize;
        self.watermarks[partition.min(self.watermarks.len() - 1)].clone()
    }

    /// The stream that holds `user`'s notifications.
    fn stream_for(&self, user: &UserId) -> Result<&stream::Stream, BusError> {
        let streams = self.streams.get().ok_or(BusError::Unavailable)?;
        streams
            .get(self.settings.partition(user) as usize)
            .ok_or(BusError::Unavailable)
    }
}

/// What every NATS connection of a node shares: the settings' credentials
/// and TLS, the gateway inbox ([`INBOX_PREFIX`]), and reconnecting forever,
/// from the start, so a node outlives any NATS outage.
async fn node_connect_options(
    settings: &NatsSettings,
    name: &str,
) -> Result<async_nats::ConnectOptions, NatsError> {
    Ok(settings
        .connect_options()
        .await?
        .name(name)
        .custom_inbox_prefix(INBOX_PREFIX)
        .connection_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_secs(5))
        .max_reconnects(None)
        .retry_on_initial_connect())
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
        dedupe: Option<DedupeKey>,
    ) -> BoxFuture<Result<Vec<EventId>, BusError>> {
        Box::pin(self.0.clone().publish_all(users, payload, dedupe))
    }

    fn position(&self, user: UserId) -> BoxFuture<Result<EventId, BusError>> {
        Box::pin(self.0.clone().user_position(user))
    }

    fn is_connected(&self) -> bool {
        self.0.connected.load(Ordering::Acquire) && self.0.streams.initialized()
    }
}
