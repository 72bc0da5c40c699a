//! `POST /api/notifications/publish`: a producer stores a notification for one
//! user or a batch. Everything is validated before anything is published.

use actix_web::{http::header::ContentType, web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, value::RawValue, Map, Value};

use super::json_shape::{AString, AnObject};
use super::{bearer, ApiError, AppState};
use crate::auth::AuthError;
use crate::bus::BusError;
use crate::event::{EventId, Payload};
use crate::idempotency::{request_digest, Begin, DedupeKey};
use crate::metrics::metrics;
use crate::user_id::UserId;

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody<'a> {
    #[serde(rename = "userId")]
    user_id: Option<String>,
    #[serde(rename = "userIds")]
    user_ids: Option<Vec<String>>,
    #[serde(borrow)]
    notification: &'a RawValue,
}

/// The fields a browser client relies on; others pass through untouched.
/// Each may be absent, but `null` is refused: a page reading
/// `notification.data.orderId` must not meet `null` where an object was promised.
#[derive(Deserialize)]
#[allow(dead_code)] // parsed only to check the types
struct NotificationShape {
    #[serde(rename = "type")]
    kind: AString,
    #[serde(default, deserialize_with = "present")]
    title: Option<AString>,
    #[serde(default, deserialize_with = "present")]
    message: Option<AString>,
    #[serde(default, deserialize_with = "present")]
    data: Option<AnObject>,
}

/// An optional field that, when given, must have its type (`null` is not one).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

pub(super) async fn publish(
    req: HttpRequest,
    mut body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let checked = match bearer(&req) {
        Some(token) => state.auth.publisher(token).await,
        None => Err(AuthError::Missing),
    };
    let publisher = match checked {
        Ok(publisher) => publisher,
        Err(e) => {
            metrics().auth_failure(e.reason());
            return Err(match e {
                AuthError::MissingScope => ApiError::Forbidden,
                e => ApiError::Unauthorized(e),
            });
        }
    };
    let key = idempotency_key(&req)?;

    let limits = &state.limits;
    let max_body = limits.max_notification_bytes + limits.max_batch_users * 260 + 1024;
    let mut raw = web::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("cannot read body: {e}")))?;
        if raw.len() + chunk.len() > max_body {
            return Err(ApiError::PayloadTooLarge(format!(
                "body is larger than {max_body} bytes"
            )));
        }
        raw.extend_from_slice(&chunk);
    }

    let request =
        PublishRequest::parse(&raw, limits.max_notification_bytes, limits.max_batch_users)?;

    let ids = match key {
        None => store(&state, &request, None).await?,
        Some(key) => {
            let dedupe = DedupeKey::new(&publisher.name, &key);
            match state
                .idempotency
                .begin(&publisher.name, dedupe, request.digest())
                .await?
            {
                Begin::Done(ids) => ids.to_vec(),
                Begin::Fresh(reservation) => {
                    let ids = store(&state, &request, Some(dedupe)).await?;
                    reservation.complete(&ids);
                    ids
                }
            }
        }
    };
    tracing::debug!(publisher = %publisher.name, users = ids.len(), "published");

    let PublishRequest { users, batch, .. } = request;
    let mut answer = HttpResponse::Accepted();
    answer.content_type(ContentType::json());
    if batch {
        let ids: Map<String, Value> = users
            .iter()
            .zip(&ids)
            .map(|(user, id)| (user.to_string(), Value::String(id.to_string())))
            .collect();
        Ok(answer.body(json!({ "ids": ids }).to_string()))
    } else {
        // An id is digits only: the answer needs no JSON encoder.
        Ok(answer.body(format!(r#"{{"id":"{}"}}"#, ids[0])))
    }
}

/// Stores the notification for every user of `request`.
async fn store(
    state: &AppState,
    request: &PublishRequest,
    dedupe: Option<DedupeKey>,
) -> Result<Vec<EventId>, ApiError> {
    let ids = state
        .bus
        .publish(request.users.clone(), request.payload.clone(), dedupe)
        .await
        .map_err(|e| match e {
            BusError::Unavailable => ApiError::BusUnavailable,
            BusError::Other(e) => {
                tracing::warn!(error = %e, "publish failed");
                ApiError::BusUnavailable
            }
        })?;
    metrics().published.increment(ids.len() as u64);
    Ok(ids)
}

/// A publish body, fully validated: nothing is published unless all of it is.
#[derive(Debug)]
pub struct PublishRequest {
    /// The target users, valid and without repeats, in the order given.
    pub users: Vec<UserId>,
    /// Whether the body used `userIds` (answered with `ids`).
    pub batch: bool,
    /// The notification, as one line of JSON.
    pub payload: Payload,
}

impl PublishRequest {
    /// Parses and checks a publish body (the fuzzing target of this edge).
    pub fn parse(
        raw: &[u8],
        max_notification_bytes: usize,
        max_batch_users: usize,
    ) -> Result<Self, ApiError> {
        let parsed: PublishBody<'_> = serde_json::from_slice(raw)
            .map_err(|e| ApiError::BadRequest(format!("invalid publish body: {e}")))?;
        let (users, batch) = users(&parsed, max_batch_users)?;
        let notification = parsed.notification.get();
        if notification.len() > max_notification_bytes {
            return Err(ApiError::PayloadTooLarge(format!(
                "notification is larger than {max_notification_bytes} bytes"
            )));
        }
        // serde reads a struct from an array too (`["order_update"]`): only
        // an object is a notification.
        if !notification.starts_with('{') {
            return Err(ApiError::BadRequest(
                "invalid notification: expected an object".into(),
            ));
        }
        serde_json::from_str::<NotificationShape>(notification)
            .map_err(|e| ApiError::BadRequest(format!("invalid notification: {e}")))?;
        Ok(Self {
            users,
            batch,
            payload: Payload::from_raw(parsed.notification)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?,
        })
    }

    /// What this request asks for, whatever the key order of its JSON: a
    /// retry under the same Idempotency-Key must have the same digest.
    pub fn digest(&self) -> [u8; 32] {
        // The payload parsed once already; it cannot fail to parse again.
        let notification: Value = serde_json::from_slice(&self.payload.bytes()).unwrap_or_default();
        request_digest(&self.users, self.batch, &notification)
    }
}

/// The target users, valid and without repeats; whether it is a batch.
fn users(body: &PublishBody<'_>, max_batch: usize) -> Result<(Vec<UserId>, bool), ApiError> {
    match (&body.user_id, &body.user_ids) {
        (Some(one), None) => Ok((vec![UserId::parse(one)?], false)),
        (None, Some(many)) => {
            if many.is_empty() {
                return Err(ApiError::BadRequest("userIds is empty".into()));
            }
            if many.len() > max_batch {
                return Err(ApiError::PayloadTooLarge(format!(
                    "userIds has more than {max_batch} users"
                )));
            }
            let mut seen = std::collections::HashSet::with_capacity(many.len());
            let mut users = Vec::with_capacity(many.len());
            for raw in many {
                let user = UserId::parse(raw)?;
                if seen.insert(user.clone()) {
                    users.push(user);
                }
            }
            Ok((users, true))
        }
        _ => Err(ApiError::BadRequest(
            "give exactly one of userId and userIds".into(),
        )),
    }
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"
            ))
        })?;
    Ok(Some(key.to_owned()))
}
