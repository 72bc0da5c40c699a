//! The HTTP edge: routes, shared state, CORS and the access log.
//!
//! Handlers are thin: authenticate, validate, hand over to the registry or
//! the bus, and map typed errors to the contract's JSON errors.

mod error;
mod json_shape;
mod ops;
mod origin;
mod publish;
mod refusal;
mod session;
mod socket;
mod subscribe;

use std::sync::Arc;
use std::time::Instant;

use actix_cors::Cors;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::{http::header, web, HttpRequest, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;

pub use error::ApiError;
pub use publish::PublishRequest;
pub use socket::SocketHandle;

use crate::auth::Authenticator;
use crate::bus::Bus;
use crate::idempotency::IdempotencyCache;
use crate::registry::Registry;
use crate::shutdown::Lifecycle;
use crate::slots::ConnectionSlots;

/// Limits of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Largest notification JSON, in bytes.
    pub max_notification_bytes: usize,
    /// Most users in one batch publish.
    pub max_batch_users: usize,
    /// Frames queued per stream.
    pub sink_queue: usize,
    /// `SameSite` of the session cookie.
    pub cookie_same_site: actix_web::cookie::SameSite,
    /// Origins besides the node's own whose pages may use the cookie
    /// (`NOTIFY_CORS_ORIGINS` without `*`).
    pub cookie_origins: Vec<String>,
}

/// What every handler can reach.
pub struct AppState {
    pub auth: Authenticator,
    pub bus: Arc<dyn Bus>,
    pub registry: Arc<Registry>,
    pub lifecycle: Arc<Lifecycle>,
    pub slots: Arc<ConnectionSlots>,
    pub limits: ApiLimits,
    pub prometheus: PrometheusHandle,
    pub idempotency: IdempotencyCache,
}

impl AppState {
    /// Ready to deliver: the bus is connected, the node is not draining, and
    /// it can check tokens (a configured JWK set has been loaded).
    pub fn is_ready(&self) -> bool {
        self.bus.is_connected() && !self.lifecycle.is_draining() && self.auth.is_ready()
    }
}

/// Registers every route; shared by the server and anything embedding it.
///
/// `cors` wraps every route a browser may call. Publishing is for backends
/// (a bearer publisher token, never a page), so its route has no CORS layer
/// and its preflight is refused (docs/protocol.md §1.6); it is the busiest
/// route, and the layer cost it a boxed future and a `Vary` header per call.
pub fn configure(cfg: &mut web::ServiceConfig, cors: Cors) {
    // Registered before the catch-all scope below, which would match it.
    cfg.service(only(PUBLISH_PATH, "POST").route(web::post().to(publish::publish)))
        .service(
            web::scope("")
                .wrap(cors)
                .service(
                    web::scope("/api/notifications")
                        .service(
                            only("/subscribe", "GET").route(web::get().to(subscribe::subscribe)),
                        )
                        .service(
                            only("/session", "POST, DELETE")
                                .route(web::post().to(session::open))
                                .route(web::delete().to(session::close)),
                        ),
                )
                .service(only("/healthz", "GET").route(web::get().to(ops::healthz)))
                .service(only("/readyz", "GET").route(web::get().to(ops::readyz)))
                .service(only("/metrics", "GET").route(web::get().to(ops::metrics_text)))
                .service(only("/", "GET").route(web::get().to(ops::demo_page)))
                .service(only("/leader-tab.js", "GET").route(web::get().to(ops::leader_tab_js)))
                .service(
                    only("/notify-client.js", "GET").route(web::get().to(ops::notify_client_js)),
                )
                .default_service(web::to(|| async {
                    Err::<HttpResponse, _>(ApiError::NotFound)
                })),
        );
}

/// Where producers publish.
const PUBLISH_PATH: &str = "/api/notifications/publish";

/// A resource that answers any method it has no route for with `405` and
/// `Allow: <allow>` (RFC 9110 §15.5.6), not with `404`: the path exists.
fn only(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allow))
    }))
}

/// CORS for the configured origins; `*` allows any origin without credentials.
pub fn cors(origins: Option<&[String]>) -> Cors {
    let Some(origins) = origins else {
        // Same-origin only: no CORS headers at all.
        return Cors::default();
    };
    let cors = Cors::default()
        .allowed_methods(["GET", "POST", "DELETE"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::CACHE_CONTROL,
            header::HeaderName::from_static("last-event-id"),
            header::HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([header::RETRY_AFTER])
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        cors.allow_any_origin().send_wildcard()
    } else {
        origins
            .iter()
            .fold(cors, |cors, origin| cors.allowed_origin(origin))
            .supports_credentials()
    }
}

/// Logs one line per request with method, path and status — never the query
/// string, which may hold a token.
pub fn access_log<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let started = Instant::now();
    let response = srv.call(req);
    async move {
        let response = response.await?;
        let status = response.status().as_u16();
        let micros = started.elapsed().as_micros() as u64;
        // Read from the answered request: nothing is copied for a request
        // whose line is not written.
        let (method, path) = (response.request().method(), response.request().path());
        if status >= 400 {
            tracing::info!(target: "access", %method, %path, status, micros, "request");
        } else {
            tracing::debug!(target: "access", %method, %path, status, micros, "request");
        }
        Ok(response)
    }
}

/// The bearer token of an `Authorization` header, if any.
fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
