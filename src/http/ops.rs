//! Health, readiness, metrics and the demo page.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::metrics::metrics;

/// The process is alive.
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 only while the node can deliver: bus connected, not draining, and
/// its token keys loaded ([`AppState::is_ready`]).
pub(super) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let bus = state.bus.is_connected();
    let draining = state.lifecycle.is_draining();
    let keys = state.auth.is_ready();
    let ready = state.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status).json(
        json!({"ready": ready, "busConnected": bus, "draining": draining, "keysLoaded": keys}),
    )
}

/// Prometheus text format.
pub(super) async fn metrics_text(state: web::Data<AppState>) -> HttpResponse {
    let m = metrics();
    m.bus_connected
        .set(f64::from(u8::from(state.bus.is_connected())));
    m.ready.set(f64::from(u8::from(state.is_ready())));
    m.draining
        .set(f64::from(u8::from(state.lifecycle.is_draining())));
    crate::metrics::refresh_process();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.prometheus.render())
}

/// The demo page: a CampusBite order-status client using only EventSource.
pub(super) async fn demo_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(include_str!("../../static/index.html"))
}

/// The earlier leader-tab module: re-exports `subscribeShared` from the client library.
pub(super) async fn leader_tab_js() -> HttpResponse {
    script(include_str!("../../static/leader-tab.js"))
}

/// The browser client library (built from `clients/js`), which the demo page uses.
pub(super) async fn notify_client_js() -> HttpResponse {
    script(include_str!("../../static/notify-client.js"))
}

/// A public ES module: any origin may import it (it carries no user data,
/// and module scripts from another origin need CORS).
fn script(body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("Access-Control-Allow-Origin", "*"))
        .body(body)
}
