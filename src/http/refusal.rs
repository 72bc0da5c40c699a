//! Refused subscribes, and soft refusals for EventSource (docs/protocol.md §1).
//!
//! A browser's EventSource gives up for good on any answer but
//! `200 text/event-stream`, so a refusal that a later retry can cure
//! (`draining`, `node_full`, `bus_unavailable`, `too_many_connections`) is
//! answered to a request that accepts `text/event-stream` with a short
//! stream instead: a `retry:` no shorter than the `Retry-After` the JSON
//! answer would carry, the start position when the request had none, one
//! `event: unavailable`, then the end. The browser retries by itself.
//! Other clients keep the JSON 429/503. A soft refusal holds no slot.

use std::time::Duration;

use actix_web::http::header::{self, Accept, Header, Quality};
use actix_web::{HttpRequest, HttpResponse};
use bytes::BytesMut;

use super::ApiError;
use crate::bus::Bus;
use crate::event::EventId;
use crate::metrics::{metrics, RejectReason};
use crate::sse;
use crate::user_id::UserId;

/// Longest wait for the user's position; past it the refusal goes without
/// one (the browser then starts at the head once it gets in).
const POSITION_TIMEOUT: Duration = Duration::from_secs(2);

/// How to refuse one subscribe request.
pub(super) struct Refusal<'a> {
    /// The authenticated user.
    pub user: &'a UserId,
    /// The request carried a resume position (`Last-Event-ID`/`lastEventId`):
    /// the browser keeps its own cursor, so no `id:` is sent.
    pub resumes: bool,
    /// The request accepts `text/event-stream` (every EventSource request).
    pub soft: bool,
}

impl Refusal<'_> {
    /// Counts the refusal and answers it: softly where that helps, else
    /// with the JSON error.
    pub async fn answer(
        &self,
        bus: &dyn Bus,
        reason: RejectReason,
        error: ApiError,
    ) -> Result<HttpResponse, ApiError> {
        metrics().rejected(reason).increment(1);
        let Some(retry_after) = error.retry_after().filter(|_| self.soft) else {
            return Err(error);
        };
        let position = if self.resumes || !bus.is_connected() {
            None
        } else {
            position(bus, self.user).await
        };
        Ok(soft_response(error.code(), retry_after, position))
    }
}

/// Whether `Accept` lists `text/event-stream` (with a non-zero quality);
/// `*/*` does not count: API clients keep their JSON errors.
pub(super) fn accepts_event_stream(req: &HttpRequest) -> bool {
    Accept::parse(req).is_ok_and(|accept| {
        accept
            .iter()
            .any(|q| q.quality > Quality::ZERO && q.item.essence_str() == "text/event-stream")
    })
}

/// The user's position, or `None` when the bus cannot tell in time.
async fn position(bus: &dyn Bus, user: &UserId) -> Option<EventId> {
    match tokio::time::timeout(POSITION_TIMEOUT, bus.position(user.clone())).await {
        Ok(Ok(id)) => Some(id),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "no position for a soft refusal");
            None
        }
        Err(_) => {
            tracing::debug!("no position for a soft refusal: timed out");
            None
        }
    }
}

/// `retry:` jittered over `[Retry-After, 2 × Retry-After]` so that refused
/// browsers do not come back together, the optional start frame, and the
/// `unavailable` event.
fn soft_response(code: &str, retry_after: u32, position: Option<EventId>) -> HttpResponse {
    let floor = u64::from(retry_after) * 1000;
    let mut body = BytesMut::new();
    body.extend_from_slice(&sse::retry(fastrand::u64(floor..=2 * floor)));
    if let Some(id) = position {
        body.extend_from_slice(&sse::start(id));
    }
    body.extend_from_slice(&sse::unavailable(code, retry_after));
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .body(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;
    use actix_web::test::TestRequest;

    fn body(response: HttpResponse) -> String {
        let bytes = response.into_body().try_into_bytes().ok().unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn only_an_explicit_event_stream_accept_is_soft() {
        let with = |accept: &str| {
            accepts_event_stream(
                &TestRequest::default()
                    .insert_header((header::ACCEPT, accept))
                    .to_http_request(),
            )
        };
        assert!(with("text/event-stream"));
        assert!(with("application/json, Text/Event-Stream; q=0.5"));
        assert!(!with("*/*"));
        assert!(!with("text/*"));
        assert!(!with("text/event-stream;q=0"));
        assert!(!accepts_event_stream(
            &TestRequest::default().to_http_request()
        ));
    }

    #[test]
    fn the_soft_body_is_retry_then_position_then_the_event() {
        let text = body(soft_response("draining", 1, Some(EventId(42))));
        let (retry, rest) = text.split_once("\n\n").unwrap();
        let millis: u64 = retry.strip_prefix("retry: ").unwrap().parse().unwrap();
        assert!((1000..=2000).contains(&millis), "{millis}");
        assert_eq!(
            rest,
            "id: 42\n\nevent: unavailable\ndata: {\"error\":\"draining\",\"retryAfter\":1}\n\n"
        );
        let text = body(soft_response("node_full", 2, None));
        assert!(text.ends_with(
            "\n\nevent: unavailable\ndata: {\"error\":\"node_full\",\"retryAfter\":2}\n\n"
        ));
        assert!(!text.contains("id:"));
    }
}
