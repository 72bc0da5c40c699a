//! `POST` / `DELETE /api/notifications/session`: set or clear the cookie,
//! for the node's own pages and the allowed origins only.

use actix_web::cookie::{time, Cookie};
use actix_web::{web, HttpRequest, HttpResponse};

use super::{bearer, origin, ApiError, AppState};
use crate::auth::now_unix;
use crate::metrics::metrics;
use crate::session::{COOKIE_NAME, COOKIE_PATH};

/// Sets the cookie from a valid `Authorization: Bearer` user token; it
/// expires with the token.
pub(super) async fn open(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    origin::check_cookie_origin(&req, &state.limits.cookie_origins)?;
    let token = bearer(&req).unwrap_or_default();
    let user_token = state
        .auth
        .user(token)
        .await
        .inspect_err(|e| metrics().auth_failure(e.reason()))?;
    let lifetime = user_token.expires_at.saturating_sub(now_unix());
    let cookie = cookie(&state, token.to_owned(), lifetime as i64);
    Ok(HttpResponse::NoContent().cookie(cookie).finish())
}

/// Clears the cookie. Streams already open run to their token's expiry.
pub(super) async fn close(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    origin::check_cookie_origin(&req, &state.limits.cookie_origins)?;
    Ok(HttpResponse::NoContent()
        .cookie(cookie(&state, String::new(), 0))
        .finish())
}

fn cookie(state: &AppState, value: String, max_age_seconds: i64) -> Cookie<'static> {
    Cookie::build(COOKIE_NAME, value)
        .path(COOKIE_PATH)
        .http_only(true)
        .secure(true)
        .same_site(state.limits.cookie_same_site)
        .max_age(time::Duration::seconds(max_age_seconds))
        .finish()
}
