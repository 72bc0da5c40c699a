//! Cookie requests from foreign pages (docs/protocol.md §1 "Cookie session").
//!
//! A browser attaches the session cookie to a request from any page its
//! `SameSite` lets through. A request that relies on the cookie is served
//! only when its `Origin` is absent (not sent by a browser for a
//! same-origin GET), the node's own, or an allowed origin
//! (`NOTIFY_CORS_ORIGINS`, where `*` counts for token requests only).
//!
//! "The node's own" compares the `Origin`'s host and port with the
//! request's `Host` (`:authority` over HTTP/2), scheme-insensitively: TLS
//! is often ended by a proxy in front, so the node cannot know the scheme
//! the browser used, and `X-Forwarded-*` / `Forwarded` are not consulted
//! (a client could set them). A proxy that rewrites `Host` needs its public
//! origin in `NOTIFY_CORS_ORIGINS`.

use actix_web::http::header;
use actix_web::{web, HttpRequest};

use super::{bearer, ApiError};
use crate::session::COOKIE_NAME;

/// For a subscribe request that relies on the cookie (no token in its
/// query or `Authorization`): `403 forbidden_origin` unless its `Origin`
/// may use the cookie. Called first, so a refused request takes no slot.
pub(super) fn check_cookie_subscribe(
    req: &HttpRequest,
    allowed: &[String],
) -> Result<(), ApiError> {
    let token_given = bearer(req).is_some()
        || web::Query::<TokenQuery>::from_query(req.query_string())
            .is_ok_and(|q| q.token.is_some());
    if token_given || req.cookie(COOKIE_NAME).is_none() {
        return Ok(());
    }
    check_cookie_origin(req, allowed)
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// `403 forbidden_origin` unless the request's `Origin` may use the cookie.
pub(super) fn check_cookie_origin(req: &HttpRequest, allowed: &[String]) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("null").trim();
    let own = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let same_host =
        own.is_some_and(|host| origin_authority(origin).is_some_and(|a| a == authority(host)));
    let listed = allowed.iter().any(|o| o.eq_ignore_ascii_case(origin));
    if same_host || listed {
        Ok(())
    } else {
        tracing::info!(origin, "cookie request from a foreign origin refused");
        Err(ApiError::ForbiddenOrigin(
            origin.chars().take(200).collect(),
        ))
    }
}

/// `host[:port]` of a serialized origin (`scheme://host[:port]`), lowercase,
/// without the scheme's default port; `None` for `null` and anything else.
fn origin_authority(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let rest = rest.to_ascii_lowercase();
    Some(rest.strip_suffix(default_port).unwrap_or(&rest).to_owned())
}

/// A `Host` value, lowercase, without a default port of either scheme.
fn authority(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    match host
        .strip_suffix(":443")
        .or_else(|| host.strip_suffix(":80"))
    {
        Some(bare) => bare.to_owned(),
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn check(origin: &str, host: &str, allowed: &[&str]) -> bool {
        let req = TestRequest::default()
            .insert_header((header::ORIGIN, origin))
            .insert_header((header::HOST, host))
            .to_http_request();
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        check_cookie_origin(&req, &allowed).is_ok()
    }

    #[test]
    fn the_nodes_own_origin_passes_whatever_the_scheme() {
        assert!(check(
            "https://api.campusbite.com",
            "api.campusbite.com",
            &[]
        ));
        assert!(check(
            "http://API.campusbite.com",
            "api.campusbite.com:80",
            &[]
        ));
        assert!(check(
            "https://api.campusbite.com",
            "api.campusbite.com:443",
            &[]
        ));
        assert!(check("http://127.0.0.1:8080", "127.0.0.1:8080", &[]));
    }

    #[test]
    fn foreign_and_opaque_origins_are_refused_unless_listed() {
        assert!(!check("https://evil.example", "api.campusbite.com", &[]));
        assert!(!check("null", "api.campusbite.com", &[]));
        assert!(!check("http://127.0.0.1:8081", "127.0.0.1:8080", &[]));
        assert!(!check(
            "https://api.campusbite.com.evil.example",
            "api.campusbite.com",
            &[]
        ));
        assert!(check(
            "https://www.campusbite.com",
            "api.campusbite.com",
            &["https://www.campusbite.com"]
        ));
    }
}
