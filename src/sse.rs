//! The Server-Sent Events wire format: the few frames this server writes.
//!
//! Every frame is built once and shared (`Bytes`), so a notification for a
//! user with five tabs is encoded once, not five times.

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::{Event, EventId, Payload};

/// The keep-alive comment; proxies see traffic, dead peers fail a write.
pub const KEEPALIVE: Bytes = Bytes::from_static(b": keep-alive\n\n");

/// `retry: <ms>`: the browser's reconnect delay.
pub fn retry(millis: u64) -> Bytes {
    Bytes::from(format!("retry: {millis}\n\n"))
}

/// The id-only start frame: browsers record `id` as their last event id
/// without firing an event.
pub fn start(id: EventId) -> Bytes {
    Bytes::from(format!("id: {id}\n\n"))
}

/// One notification: `id: <id>` and its one-line JSON as `data:`.
pub fn notification(id: EventId, payload: &Payload) -> Bytes {
    let mut id_text = itoa::Buffer::new();
    let id_text = id_text.format(id.0);
    let json = payload.as_bytes();
    let mut frame = BytesMut::with_capacity(4 + id_text.len() + 7 + json.len() + 2);
    frame.put_slice(b"id: ");
    frame.put_slice(id_text.as_bytes());
    frame.put_slice(b"\ndata: ");
    frame.put_slice(json);
    frame.put_slice(b"\n\n");
    frame.freeze()
}

/// Notification `id` as an [`Event`], its frame encoded once here.
pub fn event(id: EventId, previous: Option<EventId>, payload: &Payload) -> Event {
    Event::with_frame(id, previous, notification(id, payload))
}

/// A named event with one-line JSON data (`reset`, `token-expiring`).
/// It has data because browsers drop events without it.
pub fn named(event: &str, json: &str) -> Bytes {
    debug_assert!(!json.contains(['\n', '\r']) && !event.contains(['\n', '\r']));
    Bytes::from(format!("event: {event}\ndata: {json}\n\n"))
}

/// The `reset` event: the client's last event is older than the history.
pub fn reset_history_truncated() -> Bytes {
    named("reset", r#"{"reason":"history_truncated"}"#)
}

/// The `unavailable` event of a soft refusal: the refusal's code and the
/// seconds its JSON answer would have put in `Retry-After`.
pub fn unavailable(code: &str, retry_after: u32) -> Bytes {
    named(
        "unavailable",
        &format!(r#"{{"error":"{code}","retryAfter":{retry_after}}}"#),
    )
}

/// The `token-expiring` event, sent before the stream ends at `expires_at`.
pub fn token_expiring(expires_at: u64) -> Bytes {
    named(
        "token-expiring",
        &format!(r#"{{"expiresAt":{expires_at}}}"#),
    )
}
