//! `GET /api/notifications/subscribe`: authenticate, then hand the new
//! stream to the user's actor and return a body that reads its queue.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix::Addr;
use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;

use super::refusal::{accepts_event_stream, Refusal};
use super::{bearer, origin, socket, ApiError, AppState};
use crate::event::EventId;
use crate::frame_queue::{self, FrameReceiver};
use crate::metrics::{metrics, RejectReason};
use crate::session::COOKIE_NAME;
use crate::sse;
use crate::user::{Join, JoinError, Leave, UserActor};

/// Reconnect delays handed out by `retry:`; jittered per connection so a
/// node restart does not make every browser come back in the same instant.
/// 1.5 s of spread brings 10k streams back at ~6.7k connects/s, which one
/// core accepts (`bench/idle`), and keeps full recovery under 3 s
/// (`bench/reconnect-storm`).
const RETRY_MILLIS: std::ops::Range<u64> = 500..2000;

#[derive(Deserialize)]
struct SubscribeQuery {
    token: Option<String>,
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
}

pub(super) async fn subscribe(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    origin::check_cookie_subscribe(&req, &state.limits.cookie_origins)?;
    let query = web::Query::<SubscribeQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("bad query string: {e}")))?
        .into_inner();

    // A token in the request beats the cookie: it is the page's own choice.
    let cookie = req.cookie(COOKIE_NAME);
    let token = query
        .token
        .as_deref()
        .or_else(|| bearer(&req))
        .or_else(|| cookie.as_ref().map(|c| c.value()))
        .unwrap_or_default();
    let user_token = state
        .auth
        .user(token)
        .await
        .inspect_err(|e| metrics().auth_failure(e.reason()))?;

    // The header is the browser's own, newer cursor; both are checked, so a
    // bad query value is refused even when the header wins. Empty = none.
    let cursor = |raw: Option<&str>| {
        raw.filter(|raw| !raw.trim().is_empty())
            .map(EventId::parse)
            .transpose()
            .map_err(|_| ApiError::InvalidLastEventId)
    };
    let header = match req.headers().get("last-event-id") {
        Some(value) => Some(value.to_str().map_err(|_| ApiError::InvalidLastEventId)?),
        None => None,
    };
    let from_query = cursor(query.last_event_id.as_deref())?;
    let resume_after = cursor(header)?.or(from_query);

    // Only now the refusals that a retry can cure: a bad token or request
    // must still get its 401/400 from a draining or cut-off node (a soft
    // refusal would have the browser retry a hopeless request forever), and
    // a soft refusal carries the user's position, so it needs the user.
    let refusal = Refusal {
        user: &user_token.user,
        resumes: resume_after.is_some(),
        soft: accepts_event_stream(&req),
    };
    let refuse = |reason, error| refusal.answer(state.bus.as_ref(), reason, error);
    if state.lifecycle.is_draining() {
        return refuse(RejectReason::Draining, ApiError::Draining).await;
    }
    if !state.bus.is_connected() {
        return refuse(RejectReason::BusUnavailable, ApiError::BusUnavailable).await;
    }
    let Some(slot) = state.slots.acquire() else {
        return refuse(RejectReason::NodeLimit, ApiError::NodeFull).await;
    };
    let (tx, rx) = frame_queue::channel(state.limits.sink_queue);
    let sink_id = state.registry.next_sink_id();
    let join = Join {
        sink_id,
        tx,
        resume_after,
        expires_at: user_token.expires_at,
        connection: socket::stream_cut_off(&req),
        slot: Arc::new(slot),
    };
    let actor = match state.registry.join(&user_token.user, join).await {
        Ok(actor) => actor,
        Err(error) => {
            // The refused join (and the slot in it) is gone: a refusal holds
            // no slot while it is answered.
            return match error {
                JoinError::TooManyForUser => {
                    refuse(RejectReason::PerUserLimit, ApiError::TooManyConnections).await
                }
                JoinError::BusUnavailable => {
                    refuse(RejectReason::BusUnavailable, ApiError::BusUnavailable).await
                }
            };
        }
    };

    let retry = fastrand::u64(RETRY_MILLIS);
    let body = SseBody {
        head: Some(sse::retry(retry)),
        rx,
        leave: Some((actor, sink_id)),
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .body(body))
}

/// The body of one stream: the `retry:` line, then whatever the user's
/// actor queues, until the actor drops its sender or cuts the stream off
/// (the connection's cut-off then ends the stream itself). It holds no slot: the
/// actor's sink does, so a body the HTTP layer never polls again holds
/// nothing but itself.
struct SseBody {
    head: Option<Bytes>,
    rx: FrameReceiver,
    leave: Option<(Addr<UserActor>, u64)>,
}

impl MessageBody for SseBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        if let Some(head) = self.head.take() {
            return Poll::Ready(Some(Ok(head)));
        }
        self.rx.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        // Frees the sink at once, even on a stream that has been silent.
        if let Some((actor, sink_id)) = self.leave.take() {
            actor.do_send(Leave { sink_id });
        }
    }
}
