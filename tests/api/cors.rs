//! CORS: the allowlist, preflight, and credentials for `withCredentials`.

use reqwest::Method;

use crate::helpers::*;

const ORIGIN: &str = "https://app.example";

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// A subscribe preflight from `origin` (asking for `headers` when given).
async fn preflight(app: &NodeApi, origin: &str, headers: Option<&str>) -> reqwest::Response {
    let mut req = app
        .client
        .request(Method::OPTIONS, app.url(SUBSCRIBE))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "GET");
    if let Some(headers) = headers {
        req = req.header("Access-Control-Request-Headers", headers);
    }
    req.send().await.expect("preflight request")
}

/// Like `preflight`, asserting a 2xx answer.
async fn preflight_ok(app: &NodeApi, origin: &str, headers: Option<&str>) -> reqwest::Response {
    let resp = preflight(app, origin, headers).await;
    assert!(
        resp.status().is_success(),
        "preflight status {}",
        resp.status()
    );
    resp
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_with_credentials_allowed() {
    let app = in_process_app_with(&[(
        "NOTIFY_CORS_ORIGINS",
        "https://other.example,https://app.example",
    )])
    .await;

    let resp = preflight_ok(&app, ORIGIN, Some("last-event-id")).await;

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
    let app = in_process_app_with(&[("NOTIFY_CORS_ORIGINS", ORIGIN)]).await;

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
    app.publish_n_expecting(&mut s, "u1", 1).await;
}

#[tokio::test]
async fn an_origin_outside_the_allowlist_gets_no_cors_headers() {
    let app = in_process_app_with(&[("NOTIFY_CORS_ORIGINS", ORIGIN)]).await;

    let preflight = preflight(&app, "https://evil.example", None).await;
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
    let app = in_process_app_with(&[("NOTIFY_CORS_ORIGINS", "*")]).await;

    let resp = preflight_ok(&app, "https://anything.example", None).await;

    let acao = header(&resp, "access-control-allow-origin");
    assert!(
        acao.as_deref() == Some("https://anything.example") || acao.as_deref() == Some("*"),
        "ACAO {acao:?}"
    );
}

#[tokio::test]
async fn publishing_is_for_backends_its_preflight_is_refused_and_it_carries_no_cors_headers() {
    let app = in_process_app_with(&[("NOTIFY_CORS_ORIGINS", ORIGIN)]).await;
    let mut s = app.subscribe("u1").await;

    let preflight = app
        .client
        .request(Method::OPTIONS, app.url(PUBLISH))
        .header("Origin", ORIGIN)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(header(&preflight, "access-control-allow-origin"), None);
    assert_error(preflight, 405, "method_not_allowed").await;

    // A request that names an allowed origin is still served, without CORS headers.
    let body = serde_json::json!({"userId": "u1", "notification": note(0)}).to_string();
    let published = app
        .publish_request(body)
        .header("Origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 202);
    assert_eq!(header(&published, "access-control-allow-origin"), None);
    assert_eq!(header(&published, "vary"), None);
    let id: u64 = published.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(s.next_message().await.0, id);
}
