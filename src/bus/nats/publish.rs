//! The HTTP publish path: JetStream publish with `Nats-Msg-Id`, retried
//! until acked, so a stream-leader election loses nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::{HeaderMap, Subject};
use futures_util::stream::{FuturesOrdered, StreamExt};

use super::NatsBus;
use crate::bus::BusError;
use crate::event::{EventId, Payload};
use crate::idempotency::DedupeKey;
use crate::user_id::UserId;

/// How long the HTTP publish path keeps retrying an unacked publish.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(20);
/// Publishes of one batch in flight at once.
const PUBLISH_CONCURRENCY: usize = 256;

impl NatsBus {
    pub(super) async fn publish_all(
        self: Arc<Self>,
        users: Vec<UserId>,
        payload: Payload,
        dedupe: Option<DedupeKey>,
    ) -> Result<Vec<EventId>, BusError> {
        self.streams.get().ok_or(BusError::Unavailable)?;
        // Without a caller's key, a fresh one still makes our own retries idempotent.
        let key = dedupe.unwrap_or_else(DedupeKey::random);
        let deadline = Instant::now() + PUBLISH_DEADLINE;
        let mut ids = Vec::with_capacity(users.len());
        let mut pending = FuturesOrdered::new();
        let mut users = users.into_iter();
        loop {
            while pending.len() < PUBLISH_CONCURRENCY {
                let Some(user) = users.next() else { break };
                let subject = self.settings.user_subject(&user);
                let msg_id = key.msg_id(&user);
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
