//! The contract's JSON errors: `{"error":"<code>","message":"<text>"}`.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::auth::AuthError;
use crate::idempotency::KeyReused;
use crate::user_id::InvalidUserId;

/// Everything an HTTP handler can answer with instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("token lacks the notifications:publish scope")]
    Forbidden,
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid user id: {0}")]
    InvalidUserId(#[from] InvalidUserId),
    #[error("Last-Event-ID / lastEventId must be a decimal event id")]
    InvalidLastEventId,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("this user has too many open streams on this node")]
    TooManyConnections,
    #[error("this node is at its connection limit")]
    NodeFull,
    #[error("this node is shutting down; reconnect")]
    Draining,
    #[error("the notification bus is unavailable")]
    BusUnavailable,
    #[error("no such endpoint")]
    NotFound,
    #[error("this endpoint does not answer this method (allowed: {0})")]
    MethodNotAllowed(&'static str),
    #[error("{0}")]
    IdempotencyKeyReused(#[from] KeyReused),
    #[error("a cookie request from origin {0:?} is not allowed; send the token instead")]
    ForbiddenOrigin(String),
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: String,
}

impl ApiError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            // Not the client's fault: the node cannot check tokens yet.
            Self::Unauthorized(AuthError::KeysUnavailable) => "auth_unavailable",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::BadRequest(_) => "bad_request",
            Self::InvalidUserId(_) => "invalid_user_id",
            Self::InvalidLastEventId => "invalid_last_event_id",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::TooManyConnections => "too_many_connections",
            Self::NodeFull => "node_full",
            Self::Draining => "draining",
            Self::BusUnavailable => "bus_unavailable",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::IdempotencyKeyReused(_) => "idempotency_key_reused",
            Self::ForbiddenOrigin(_) => "forbidden_origin",
        }
    }

    /// Seconds a client should wait before retrying, where that helps: set
    /// exactly for the refusals that a later retry can cure.
    pub(super) fn retry_after(&self) -> Option<u32> {
        match self {
            Self::TooManyConnections => Some(10),
            Self::NodeFull
            | Self::BusUnavailable
            | Self::Unauthorized(AuthError::KeysUnavailable) => Some(2),
            Self::Draining => Some(1),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(AuthError::KeysUnavailable) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::ForbiddenOrigin(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) | Self::InvalidUserId(_) | Self::InvalidLastEventId => {
                StatusCode::BAD_REQUEST
            }
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            Self::NodeFull | Self::Draining | Self::BusUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::IdempotencyKeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(seconds) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(seconds)));
        }
        if let Self::MethodNotAllowed(allow) = self {
            response.insert_header((header::ALLOW, *allow));
        }
        if self.status_code() == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(Body {
            error: self.code(),
            message: self.to_string(),
        })
    }
}
