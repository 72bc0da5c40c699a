//! Live delivery: a core-NATS subscription to `<prefix>.live.<user>` while
//! the user is online on this node, so NATS sends each notification only to
//! the nodes that need it.
//!
//! Every subscription made on one thread delivers into one channel
//! (`Client::subscribe_with_sender`, vendor/README.md), read by one
//! [`Dispatcher`] task on that thread: it routes each message by subject to
//! the user's actor. An online user costs a NATS subscription and a map
//! entry, not a channel and a task of its own, and a busy node handles many
//! messages per wake-up. The actors live on the same thread (an actix
//! worker), so handing a message over wakes nothing across threads.
//!
//! A live message is delivered only if the user's stream stored it: its
//! `Nats-Stream` must be that stream (a producer may publish straight into
//! another partition's stream, which republishes with its own sequence) and
//! its sequence must not be above the stream's last ([`super::plausible`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

use actix::Recipient;
use async_nats::header::{NATS_LAST_SEQUENCE, NATS_SEQUENCE, NATS_STREAM};
use async_nats::jetstream;
use async_nats::{HeaderMap, Message, SharedSubscription};
use bytes::Bytes;
use dashmap::DashMap;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::{mpsc, OnceCell};

use super::plausible::{Gate, Settled};
use super::{node_connect_options, partition_of, NatsBus};
use crate::bus::{BoxFuture, BusError, BusMessage, Subscription};
use crate::event::{Event, EventId, Payload};
use crate::metrics::{metrics, DropReason};
use crate::sse;
use crate::user_id::UserId;

/// Longest wait for NATS to confirm a new subscription.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for one stream-info reply of the live-sequence check.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);
/// Live messages buffered per dispatcher before NATS drops some (a
/// dispatcher only hands messages on, so this is seconds of traffic; a
/// dropped one is repaired from history, see [`on_link_event`]).
const DISPATCH_CAPACITY: usize = 65_536;
/// Messages taken from the channel per turn.
const DISPATCH_BATCH: usize = 256;
/// When a new subscription's user position is read again, in ms, jittered
/// ([`Subscription::recheck_after`]). The flush in `subscribe_live` only
/// writes the `SUB` to the socket; the servers act on it, up to the stream
/// leader's server, later, and under load (a reconnect storm) that can be
/// after they answered the head read over the other connection. Seconds
/// are far above that; a notification repaired this way is late, not lost.
/// Starting after a storm's resumes (spread over the 0.5–2 s `retry:`)
/// and spread over 3 s, the re-reads do not slow the resumes down.
const HEAD_RECHECK_MILLIS: std::ops::Range<u64> = 3_000..6_000;

/// Who receives a user's live messages on this node.
pub(super) struct Route {
    /// Tells this subscription from a later one of the same user.
    pub(super) token: u64,
    pub(super) to: Recipient<BusMessage>,
    /// The NATS subscription id (a slow-consumer report names it).
    pub(super) sid: u64,
}

/// The online users of this node, by user id. Looked up twice per live
/// message (on arrival and on hand-over), so with foldhash's seeded hash
/// rather than SipHash, as the embedded bus's user map.
pub(super) type Routes = DashMap<UserId, Route, foldhash::fast::RandomState>;

/// The live connections of one bus, one per thread that subscribed;
/// closed with the bus.
#[derive(Default)]
pub(super) struct Links {
    by_thread: DashMap<ThreadId, Arc<OnceCell<Link>>>,
}

/// One thread's NATS connection for live messages, its online users, and
/// the task that routes their messages.
struct Link {
    client: async_nats::Client,
    into: mpsc::Sender<Message>,
    routes: Arc<Routes>,
    dispatcher: tokio::task::AbortHandle,
}

impl Drop for Links {
    fn drop(&mut self) {
        for entry in self.by_thread.iter() {
            if let Some(link) = entry.value().get() {
                link.dispatcher.abort();
            }
        }
    }
}

impl NatsBus {
    pub(super) async fn subscribe_live(
        self: Arc<Self>,
        user: UserId,
        to: Recipient<BusMessage>,
    ) -> Result<Subscription, BusError> {
        let stream = self.stream_for(&user)?.clone();
        let link = self.link_here().await?;
        // The route goes in before the subscription: a message stored after
        // the head read may reach the dispatcher before this future runs
        // again, and must find the actor (whose mailbox holds it until the
        // subscription is in place). Removed again if anything below fails.
        let token = self
            .next_token
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        link.routes
            .insert(user.clone(), Route { token, to, sid: 0 });
        let route = RouteGuard {
            routes: link.routes.clone(),
            user: user.clone(),
            token,
        };
        let live = link
            .client
            .subscribe_with_sender(self.settings.live_subject(&user), link.into.clone())
            .await
            .map_err(|e| BusError::Other(e.to_string()))?;
        if let Some(mut entry) = link.routes.get_mut(&user) {
            if entry.token == token {
                entry.sid = live.sid();
            }
        }
        // The `SUB` is on the wire once the flush returns, so nearly
        // everything stored after the head read below arrives live. Not
        // all: the servers may act on the `SUB` after they answered the head
        // read (another connection) and republished a newer notification;
        // the head is read again later for that (`HEAD_RECHECK_MILLIS`).
        // Bounded: while NATS is away a flush waits for the reconnect, and a
        // browser must get a 503 rather than a hung request.
        tokio::time::timeout(FLUSH_TIMEOUT, link.client.flush())
            .await
            .map_err(|_| BusError::Unavailable)?
            .map_err(|e| BusError::Other(e.to_string()))?;
        let head = match stream
            .direct_get_last_for_subject(self.settings.stored_subject(&user))
            .await
        {
            Ok(message) => {
                self.watermark_for(&user).saw(message.sequence);
                EventId(message.sequence)
            }
            Err(e) if matches!(e.kind(), jetstream::stream::DirectGetErrorKind::NotFound) => {
                EventId(0)
            }
            Err(e) => return Err(BusError::Other(e.to_string())),
        };
        Ok(Subscription {
            head,
            guard: Box::new(LiveGuard {
                _live: live,
                _route: route,
            }),
            recheck_after: Some(Duration::from_millis(fastrand::u64(HEAD_RECHECK_MILLIS))),
        })
    }

    /// This thread's live connection, made on first use. The connection
    /// and its dispatcher run on this thread's runtime, where the
    /// subscribing actors run: a live message goes from the socket to the
    /// actor's mailbox without waking another thread.
    async fn link_here(&self) -> Result<LinkHandle, BusError> {
        // Cloned out: the map's shard lock is not held across the await.
        let cell = self
            .links
            .by_thread
            .entry(std::thread::current().id())
            .or_default()
            .clone();
        let link = cell.get_or_try_init(|| self.connect_link()).await?;
        Ok(LinkHandle {
            client: link.client.clone(),
            into: link.into.clone(),
            routes: link.routes.clone(),
        })
    }

    /// Connects a live connection and starts its dispatcher on this thread.
    async fn connect_link(&self) -> Result<Link, BusError> {
        let streams = self.streams.get().ok_or(BusError::Unavailable)?;
        let routes: Arc<Routes> = Arc::default();
        let on_event = {
            let routes = routes.clone();
            move |event: async_nats::Event| {
                let routes = routes.clone();
                async move { on_link_event(event, &routes) }
            }
        };
        let client = node_connect_options(&self.settings, "campusbite-notify-live")
            .await
            .map_err(|e| BusError::Other(e.to_string()))?
            .event_callback(on_event)
            .connect(self.settings.urls.clone())
            .await
            .map_err(|e| BusError::Other(e.to_string()))?;
        // The live-sequence check asks the streams over this connection too,
        // so its replies also arrive on this thread.
        let gates = streams
            .iter()
            .zip(&self.watermarks)
            .map(|(stream, watermark)| {
                let name = stream.cached_info().config.name.clone();
                StreamGate {
                    info_subject: format!("$JS.API.STREAM.INFO.{name}"),
                    name,
                    client: client.clone(),
                    gate: Gate::new(watermark.clone()),
                }
            })
            .collect();
        let (into, receiver) = mpsc::channel(DISPATCH_CAPACITY);
        let dispatcher = Dispatcher {
            live_prefix: format!("{}.live.", self.settings.prefix),
            partitions: self.settings.partitions,
            routes: routes.clone(),
            streams: gates,
            requests: FuturesUnordered::new(),
        };
        let dispatcher = tokio::spawn(dispatcher.run(receiver)).abort_handle();
        Ok(Link {
            client,
            into,
            routes,
            dispatcher,
        })
    }
}

/// What a subscription needs of its thread's [`Link`].
struct LinkHandle {
    client: async_nats::Client,
    into: mpsc::Sender<Message>,
    routes: Arc<Routes>,
}

/// A live connection's events: after a reconnect every online user of it
/// catches up from history (core messages sent while it was away are gone);
/// a dropped message's user catches up at once.
fn on_link_event(event: async_nats::Event, routes: &Routes) {
    match event {
        async_nats::Event::Connected => {
            tracing::info!(users = routes.len(), "NATS live connection up");
            for route in routes.iter() {
                route.to.do_send(BusMessage::Resync);
            }
        }
        async_nats::Event::Disconnected => tracing::warn!("NATS live connection lost"),
        async_nats::Event::SlowConsumer(sid) => {
            tracing::warn!(
                sid,
                "live messages fell behind; the gap is repaired from history"
            );
            if let Some(route) = routes.iter().find(|route| route.sid == sid) {
                route.to.do_send(BusMessage::Resync);
            }
        }
        other => tracing::info!(event = %other, "NATS live connection event"),
    }
}

/// One stream's gate and what it needs to ask the stream.
struct StreamGate {
    name: String,
    /// `$JS.API.STREAM.INFO.<name>`, asked over `client`.
    info_subject: String,
    client: async_nats::Client,
    gate: Gate,
}

/// A stream-info request of the live-sequence check: (partition, request
/// number, the stream's last sequence or `None` on failure).
type Request = BoxFuture<(usize, u64, Option<u64>)>;

/// Routes the live messages of one thread's subscriptions to the actors.
struct Dispatcher {
    /// `<prefix>.live.`: a live subject is this followed by the user id.
    live_prefix: String,
    partitions: u32,
    routes: Arc<Routes>,
    /// Per partition (one when not partitioned).
    streams: Vec<StreamGate>,
    requests: FuturesUnordered<Request>,
}

impl Dispatcher {
    async fn run(mut self, mut receiver: mpsc::Receiver<Message>) {
        let mut batch = Vec::with_capacity(DISPATCH_BATCH);
        let mut settled = Vec::with_capacity(DISPATCH_BATCH);
        loop {
            tokio::select! {
                Some((partition, number, last)) = self.requests.next(), if !self.requests.is_empty() => {
                    let stream = &mut self.streams[partition];
                    if stream.gate.answered(number, last, &mut settled) {
                        self.requests.push(request(partition, stream));
                    }
                }
                received = receiver.recv_many(&mut batch, DISPATCH_BATCH) => {
                    if received == 0 {
                        return;
                    }
                    for message in batch.drain(..) {
                        self.arrive(message, &mut settled);
                    }
                }
            }
            self.hand_over(&mut settled);
        }
    }

    /// Checks one live message and offers it to its stream's gate.
    fn arrive(&mut self, message: Message, settled: &mut Vec<Settled>) {
        let Some(user) = message.subject.strip_prefix(self.live_prefix.as_str()) else {
            return;
        };
        // Not online here any more (unsubscribed while it was on its way).
        let Some(user) = self.routes.get(user).map(|route| route.key().clone()) else {
            return;
        };
        let partition =
            (partition_of(user.as_str(), self.partitions) as usize).min(self.streams.len() - 1);
        let stream = &mut self.streams[partition];
        let event = match live_event(&message.headers, &message.payload, &stream.name) {
            Ok(event) => event,
            Err(reason) => {
                metrics().dropped(reason).increment(1);
                return;
            }
        };
        if stream.gate.arrive(user, event, settled) {
            self.requests.push(request(partition, stream));
        }
    }

    /// Hands settled messages to their users' actors.
    fn hand_over(&self, settled: &mut Vec<Settled>) {
        let mut resynced = HashSet::new();
        for outcome in settled.drain(..) {
            match outcome {
                Settled::Stored(user, event) => {
                    if let Some(route) = self.routes.get(&user) {
                        route.to.do_send(BusMessage::Event(event));
                    }
                }
                Settled::Forged(user, event) => {
                    tracing::warn!(
                        user = user.as_str(),
                        sequence = event.id.0,
                        "live message above the stream's last sequence dropped"
                    );
                    metrics().dropped(DropReason::Forged).increment(1);
                }
                Settled::Unknown(user) => {
                    if let Some(route) = self.routes.get(&user) {
                        if resynced.insert(user.clone()) {
                            route.to.do_send(BusMessage::Resync);
                        }
                    }
                }
            }
        }
    }
}

/// Starts a stream-info request for `stream`'s gate.
fn request(partition: usize, stream: &mut StreamGate) -> Request {
    let number = stream.gate.started();
    let client = stream.client.clone();
    let subject = stream.info_subject.clone();
    metrics().live_sequence_checks.increment(1);
    Box::pin(async move {
        let reply = tokio::time::timeout(REFRESH_TIMEOUT, client.request(subject, Bytes::new()));
        let last = match reply.await {
            Ok(Ok(reply)) => last_sequence(&reply.payload),
            _ => None,
        };
        (partition, number, last)
    })
}

/// The stream's last sequence from a `$JS.API.STREAM.INFO` reply (`None`
/// for an error reply). Only that field is read: the whole stream info
/// (configuration, cluster, sources) costs a node more to decode than the
/// rest of a check.
fn last_sequence(reply: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Reply {
        state: Option<State>,
    }
    #[derive(serde::Deserialize)]
    struct State {
        last_seq: u64,
    }
    let reply: Reply = serde_json::from_slice(reply).ok()?;
    Some(reply.state?.last_seq)
}

/// Turns a message republished by `stream` into an event, or says why it
/// is dropped: not from `stream` (forged), or unusable.
fn live_event(
    headers: &Option<HeaderMap>,
    payload: &[u8],
    stream: &str,
) -> Result<Event, DropReason> {
    let headers = headers.as_ref().ok_or(DropReason::InvalidPayload)?;
    if headers.get(NATS_STREAM).map(|s| s.as_str()) != Some(stream) {
        return Err(DropReason::Forged);
    }
    let number = |name| -> Option<u64> { headers.get(name)?.as_str().parse().ok() };
    let id = number(NATS_SEQUENCE).ok_or(DropReason::InvalidPayload)?;
    let previous = number(NATS_LAST_SEQUENCE).filter(|&p| p > 0).map(EventId);
    let payload = Payload::from_json(payload).map_err(|_| DropReason::InvalidPayload)?;
    Ok(sse::event(EventId(id), previous, &payload))
}

/// Ends a live subscription: unsubscribes (dropping the NATS subscription),
/// then forgets the route.
struct LiveGuard {
    _live: SharedSubscription,
    _route: RouteGuard,
}

/// Forgets a user's route unless a later subscription replaced it.
struct RouteGuard {
    routes: Arc<Routes>,
    user: UserId,
    token: u64,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.routes
            .remove_if(&self.user, |_, route| route.token == self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::last_sequence;

    #[test]
    fn the_last_sequence_is_read_from_a_stream_info_reply_and_not_from_an_error() {
        let info = br#"{"type":"io.nats.jetstream.api.v1.stream_info_response","config":{"name":"S","subjects":["a.>"]},"created":"2026-01-01T00:00:00Z","state":{"messages":3,"bytes":90,"first_seq":5,"last_seq":7,"consumer_count":0},"cluster":{"leader":"n1"}}"#;
        assert_eq!(last_sequence(info), Some(7));
        let error = br#"{"type":"io.nats.jetstream.api.v1.stream_info_response","error":{"code":404,"err_code":10059,"description":"stream not found"}}"#;
        assert_eq!(last_sequence(error), None);
        assert_eq!(last_sequence(b"not json"), None);
    }
}
