//! Reading a user's retained notifications: one direct get per message.

use std::sync::Arc;

use async_nats::jetstream;

use super::NatsBus;
use crate::bus::{BusError, History};
use crate::event::{EventId, Payload};
use crate::metrics::{metrics, DropReason};
use crate::sse;
use crate::user_id::UserId;

impl NatsBus {
    /// `user`'s last sequence (0 when nothing is retained): a soft refusal
    /// hands it to a page that never connected, as its start position.
    pub(super) async fn user_position(self: Arc<Self>, user: UserId) -> Result<EventId, BusError> {
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

    /// Reads `user`'s retained messages after `after`, one direct get each.
    pub(super) async fn read_history(
        self: Arc<Self>,
        user: UserId,
        after: EventId,
    ) -> Result<History, BusError> {
        let stream = self.stream_for(&user)?;
        let subject = self.settings.stored_subject(&user);
        let watermark = self.watermark_for(&user);
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
            watermark.saw(message.sequence);
            next = message.sequence + 1;
            if message.sequence <= after.0 {
                continue;
            }
            match Payload::from_json(&message.payload) {
                Ok(payload) => {
                    history
                        .events
                        .push(sse::event(EventId(message.sequence), None, &payload))
                }
                Err(_) => metrics().dropped(DropReason::InvalidPayload).increment(1),
            }
        }
        Ok(history)
    }
}
