//! Live delivery: a core-NATS subscription to `<prefix>.live.<user>` while
//! the user is online on this node. A live message is delivered only if the
//! user's stream stored it: its `Nats-Stream` must be that stream (a
//! producer may publish straight into another partition's stream, which
//! republishes with its own sequence) and its sequence must not be above
//! the stream's last ([`super::plausible`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use async_nats::header::{NATS_LAST_SEQUENCE, NATS_SEQUENCE, NATS_STREAM};
use async_nats::jetstream;
use async_nats::HeaderMap;
use dashmap::DashMap;
use futures_util::StreamExt;

use super::plausible::Verdict;
use super::NatsBus;
use crate::bus::{BusError, BusMessage, Subscription};
use crate::event::{Event, EventId, Payload};
use crate::metrics::{metrics, DropReason};
use crate::sse;
use crate::user_id::UserId;

/// Longest wait for NATS to confirm a new subscription.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

impl NatsBus {
    pub(super) async fn subscribe_live(
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
        let watermark = self.watermark_for(&user);
        let head = match stream
            .direct_get_last_for_subject(self.settings.stored_subject(&user))
            .await
        {
            Ok(message) => {
                watermark.saw(message.sequence);
                EventId(message.sequence)
            }
            Err(e) if matches!(e.kind(), jetstream::stream::DirectGetErrorKind::NotFound) => {
                EventId(0)
            }
            Err(e) => return Err(BusError::Other(e.to_string())),
        };
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.subscribers.insert(user.clone(), (token, to.clone()));
        let stream = stream.clone();
        let stream_name = stream.cached_info().config.name.clone();
        let forward = tokio::spawn(async move {
            // One message at a time: a held message holds back the later
            // ones (order kept); they wait in the bounded subscription.
            while let Some(message) = live.next().await {
                let event = match live_event(&message.headers, &message.payload, &stream_name) {
                    Ok(event) => event,
                    Err(reason) => {
                        metrics().dropped(reason).increment(1);
                        continue;
                    }
                };
                match watermark.check(&stream, event.id.0).await {
                    Verdict::Stored => to.do_send(BusMessage::Event(event)),
                    Verdict::Forged => {
                        tracing::warn!(
                            stream = %stream_name,
                            sequence = event.id.0,
                            "live message above the stream's last sequence dropped"
                        );
                        metrics().dropped(DropReason::Forged).increment(1);
                    }
                    // Unverifiable now: catch up from history, which holds
                    // only stored messages (this one too, if it is real).
                    Verdict::Unknown => to.do_send(BusMessage::Resync),
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
