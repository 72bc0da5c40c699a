//! CORS: the allowlist, preflight, and credentials for `withCredentials`.

use reqwest::Method;

use crate::helpers::*;

const ORIGIN: &str = "https://app.example";

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_with_credentials_allowed() {
    let app = spawn_app_with(&[(
        "NOTIFY_CORS_ORIGINS",
        "https://other.example,https://app.example",
    )])
    .await;

    let resp = app
        .client
        .request(Method::OPTIONS, app.url(SUBSCRIBE))
        .header("Origin", ORIGIN)
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "last-event-id")
        .send()
        .await
        .unwrap();

    assert!(
        resp.status().is_success(),
        "preflight status {}",
        resp.status()
    );
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );
    assert_eq!(
        header(&resp, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let methods = header(&resp, "access-control-allow-methods").unwrap_or_default();
    assert!(
        methods.to_ascii_uppercase().contains("GET"),
        "Allow-Methods {methods:?}"
    );
    let headers = header(&resp, "access-control-allow-headers").unwrap_or_default();
    assert!(
        headers.to_ascii_lowercase().contains("last-event-id"),
        "Allow-Headers {headers:?}"
    );
}

#[tokio::test]
async fn a_stream_requested_from_an_allowed_origin_carries_its_cors_headers() {
    let app = spawn_app_with(&[("NOTIFY_CORS_ORIGINS", ORIGIN)]).await;

    let mut s = app
        .subscribe_with(
            app.subscribe_request(&app.user_token("u1"))
                .header("Origin", ORIGIN),
        )
        .await;

    assert_eq!(
        s.header("access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );
    assert_eq!(
        s.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let id = app.publish_n("u1", 1).await;
    assert_eq!(s.next_message().await.0, id);
}

#[tokio::test]
async fn an_origin_outside_the_allowlist_gets_no_cors_headers() {
    let app = spawn_app_with(&[("NOTIFY_CORS_ORIGINS", ORIGIN)]).await;

    let preflight = app
        .client
        .request(Method::OPTIONS, app.url(SUBSCRIBE))
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    let get = app
        .subscribe_request(&app.user_token("u1"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();

    assert_eq!(header(&preflight, "access-control-allow-origin"), None);
    assert_eq!(header(&get, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn a_wildcard_allowlist_admits_any_origin() {
    let app = spawn_app_with(&[("NOTIFY_CORS_ORIGINS", "*")]).await;

    let resp = app
        .client
        .request(Method::OPTIONS, app.url(SUBSCRIBE))
        .header("Origin", "https://anything.example")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();

    assert!(
        resp.status().is_success(),
        "preflight status {}",
        resp.status()
    );
    let acao = header(&resp, "access-control-allow-origin");
    assert!(
        acao.as_deref() == Some("https://anything.example") || acao.as_deref() == Some("*"),
        "ACAO {acao:?}"
    );
}
