//! Cookie requests from foreign pages (docs/protocol.md §1 "Cookie
//! session"): the cookie is `SameSite=Lax` by default, and a request that
//! relies on it from an `Origin` that is neither the node's own nor an
//! allowed one gets `403 forbidden_origin` before it takes any slot.
//! `NOTIFY_CORS_ORIGINS=*` admits token requests from anywhere, never
//! cookie requests. Token requests are not affected.

use crate::helpers::*;

const FOREIGN: &str = "https://evil.example";
const ALLOWED: &str = "https://www.campusbite.example";

/// A subscribe request carrying only the session cookie of `user`, as an
/// EventSource sends it (`Accept: text/event-stream`), from `origin`.
fn cookie_subscribe(app: &TestApp, user: &str, origin: &str) -> reqwest::RequestBuilder {
    app.client
        .get(app.url(SUBSCRIBE))
        .header("accept", "text/event-stream")
        .header("origin", origin)
        .header("cookie", format!("{COOKIE}={}", app.user_token(user)))
}

/// The node's own origin as a browser would send it.
fn own(app: &TestApp) -> String {
    format!("http://127.0.0.1:{}", app.port)
}

#[tokio::test]
async fn a_cookie_stream_from_a_foreign_origin_is_refused_with_403_and_takes_no_slot() {
    let app = spawn_app_with(&[("NOTIFY_MAX_CONNECTIONS_PER_USER", "1")]).await;

    for _ in 0..3 {
        let resp = cookie_subscribe(&app, "u1", FOREIGN).send().await.unwrap();
        assert_error(resp, 403, "forbidden_origin").await;
    }
    let resp = cookie_subscribe(&app, "u1", "null").send().await.unwrap();
    assert_error(resp, 403, "forbidden_origin").await;
    let m = app.metrics().await;
    assert_eq!(m.value("notify_connections_open", &[]), Some(0.0));
    assert_eq!(m.value("notify_connections_total", &[]), Some(0.0));

    // The user's one slot is still free for the student's own page.
    let mut s = app
        .subscribe_with(cookie_subscribe(&app, "u1", &own(&app)))
        .await;
    let id = app.publish_n("u1", 1).await;
    assert_eq!(s.next_message().await.0, id);
}

#[tokio::test]
async fn cookie_streams_from_the_nodes_own_and_an_allowed_origin_are_served() {
    let app = spawn_app_with(&[("NOTIFY_CORS_ORIGINS", ALLOWED)]).await;
    let _own = app
        .subscribe_with(cookie_subscribe(&app, "u1", &own(&app)))
        .await;
    let _allowed = app
        .subscribe_with(cookie_subscribe(&app, "u1", ALLOWED))
        .await;
    // No Origin at all: not a cross-origin browser request.
    let _none = app
        .subscribe_with(
            app.client
                .get(app.url(SUBSCRIBE))
                .header("cookie", format!("{COOKIE}={}", app.user_token("u1"))),
        )
        .await;
    app.wait_metric("notify_connections_open", &[], |v| v == 3.0)
        .await;
}

#[tokio::test]
async fn a_wildcard_cors_setting_admits_foreign_token_requests_but_never_cookie_requests() {
    let app = spawn_app_with(&[("NOTIFY_CORS_ORIGINS", "*")]).await;

    let resp = cookie_subscribe(&app, "u1", FOREIGN).send().await.unwrap();
    assert_error(resp, 403, "forbidden_origin").await;

    // A token in the request is the page's own credential: served.
    let token = app.user_token("u1");
    let _by_query = app
        .subscribe_with(app.subscribe_request(&token).header("origin", FOREIGN))
        .await;
    let _by_header = app
        .subscribe_with(
            app.client
                .get(app.url(SUBSCRIBE))
                .bearer_auth(&token)
                .header("origin", FOREIGN)
                .header("cookie", format!("{COOKIE}={token}")),
        )
        .await;
}

#[tokio::test]
async fn the_session_cannot_be_set_or_cleared_from_a_foreign_origin() {
    let app = spawn_app_with(&[("NOTIFY_CORS_ORIGINS", &format!("*,{ALLOWED}"))]).await;
    let token = app.user_token("u1");
    let post = |origin: &str| {
        app.client
            .post(app.url(SESSION))
            .bearer_auth(&token)
            .header("origin", origin)
    };
    let delete = |origin: &str| {
        app.client
            .delete(app.url(SESSION))
            .header("cookie", format!("{COOKIE}={token}"))
            .header("origin", origin)
    };

    for req in [post(FOREIGN), delete(FOREIGN)] {
        let resp = req.send().await.unwrap();
        assert!(resp.headers().get("set-cookie").is_none());
        assert_error(resp, 403, "forbidden_origin").await;
    }
    let own = own(&app);
    for req in [post(&own), delete(&own), post(ALLOWED), delete(ALLOWED)] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 204);
        assert!(resp.headers().get("set-cookie").is_some());
    }
}

#[tokio::test]
async fn the_cookies_same_site_follows_its_setting() {
    for (setting, expected) in [
        (None, "Lax"),
        (Some("strict"), "Strict"),
        (Some("none"), "None"),
    ] {
        let envs: Vec<(&str, &str)> = setting
            .map(|s| vec![("NOTIFY_COOKIE_SAME_SITE", s)])
            .unwrap_or_default();
        let app = spawn_app_with(&envs).await;
        let resp = app.post_session(&app.user_token("u1")).await;
        assert_eq!(resp.status().as_u16(), 204);
        let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
        let attrs: Vec<&str> = set_cookie.split(';').map(str::trim).collect();
        for want in [
            format!("SameSite={expected}"),
            "HttpOnly".into(),
            "Secure".into(),
            "Path=/api/notifications".into(),
        ] {
            assert!(
                attrs.contains(&want.as_str()),
                "{want} missing: {set_cookie}"
            );
        }
    }
}
