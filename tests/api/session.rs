//! The cookie session: `POST`/`DELETE /api/notifications/session` and
//! subscribing with only the cookie.

use serde_json::json;

use crate::helpers::*;

/// The parsed `Set-Cookie` header for the session cookie.
struct SetCookie {
    value: String,
    /// Attribute names lowercased, with their values.
    attrs: Vec<(String, String)>,
}

impl SetCookie {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }
}

fn session_cookie(headers: &reqwest::header::HeaderMap) -> SetCookie {
    let all: Vec<&str> = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let line = all
        .iter()
        .find(|l| l.trim_start().starts_with(&format!("{COOKIE}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie for {COOKIE}: {all:?}"));
    let mut parts = line.split(';');
    let value = parts.next().unwrap().trim()[COOKIE.len() + 1..].to_string();
    let attrs = parts
        .map(|p| {
            let p = p.trim();
            match p.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), v.trim().to_string()),
                None => (p.to_ascii_lowercase(), String::new()),
            }
        })
        .collect();
    SetCookie { value, attrs }
}

#[tokio::test]
async fn posting_a_session_sets_a_scoped_http_only_secure_cookie_that_expires_with_the_token() {
    let app = in_process_app().await;
    let exp = now_secs() + 600;
    let token = app.user_token_exp("u1", exp);

    let resp = app.post_session(&token).await;

    assert_eq!(resp.status().as_u16(), 204);
    let c = session_cookie(resp.headers());
    assert_eq!(c.value, token);
    assert_eq!(c.attr("path"), Some("/api/notifications"));
    assert_eq!(c.attr("httponly"), Some(""));
    assert_eq!(c.attr("secure"), Some(""));
    assert_eq!(
        c.attr("samesite").map(str::to_ascii_lowercase).as_deref(),
        Some("none")
    );
    let max_age: u64 = c
        .attr("max-age")
        .expect("Max-Age")
        .parse()
        .expect("numeric Max-Age");
    let left = exp - now_secs();
    assert!(
        max_age + 5 >= left && max_age <= left + 1,
        "Max-Age {max_age} but the token has {left} s left"
    );
}

#[tokio::test]
async fn a_stream_opened_with_only_the_session_cookie_receives_notifications() {
    let app = in_process_app().await;
    let token = app.user_token("u1");
    let resp = app.post_session(&token).await;
    let cookie = session_cookie(resp.headers()).value;

    let mut s = app
        .subscribe_with(
            app.client
                .get(app.url(SUBSCRIBE))
                .header("cookie", format!("other=1; {COOKIE}={cookie}")),
        )
        .await;
    app.publish_n_expecting(&mut s, "u1", 1).await;
}

#[tokio::test]
async fn a_token_in_the_request_takes_precedence_over_the_cookie() {
    let app = in_process_app().await;
    let cookie = format!("{COOKIE}={}", app.user_token("u1"));
    let bad = sign_hs256(
        &random_hex(48),
        &json!({"sub": "u1", "exp": now_secs() + 600}),
    );

    let resp = app
        .subscribe_request(&bad)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    let resp = app
        .bearer_subscribe_request(&bad)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;

    // A good query token for u2 with u1's cookie opens u2's stream.
    let mut s = app
        .subscribe_with(
            app.subscribe_request(&app.user_token("u2"))
                .header("cookie", &cookie),
        )
        .await;
    app.publish_n("u1", 1).await;
    app.publish_n_expecting(&mut s, "u2", 2).await;
}

#[tokio::test]
async fn deleting_the_session_clears_the_cookie() {
    let app = in_process_app().await;
    let cookie = format!("{COOKIE}={}", app.user_token("u1"));

    let resp = app
        .client
        .delete(app.url(SESSION))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status().as_u16(), 204);
    let c = session_cookie(resp.headers());
    assert_eq!(c.attr("max-age"), Some("0"));
    assert_eq!(c.attr("path"), Some("/api/notifications"));
}

#[tokio::test]
async fn creating_a_session_without_a_valid_token_is_refused_with_401_and_no_cookie() {
    let app = in_process_app_with(&[("NOTIFY_JWT_LEEWAY", "0s")]).await;
    let wrong = sign_hs256(
        &random_hex(48),
        &json!({"sub": "u1", "exp": now_secs() + 600}),
    );
    let expired = app.user_token_exp("u1", now_secs() - 2);
    let bad_sub = app.sign(&json!({"sub": "u1.*", "exp": now_secs() + 600}));

    let resp = app.client.post(app.url(SESSION)).send().await.unwrap();
    assert!(resp.headers().get("set-cookie").is_none());
    assert_error(resp, 401, "unauthorized").await;
    for token in [wrong, expired, bad_sub, "garbage".to_string()] {
        let resp = app.post_session(&token).await;
        assert!(
            resp.headers().get("set-cookie").is_none(),
            "cookie set for a bad token"
        );
        assert_error(resp, 401, "unauthorized").await;
    }
}

#[tokio::test]
async fn an_expired_or_garbage_session_cookie_is_refused_with_401() {
    let app = in_process_app_with(&[("NOTIFY_JWT_LEEWAY", "0s")]).await;
    let expired = app.user_token_exp("u1", now_secs() - 2);

    for value in [expired.as_str(), "garbage"] {
        let resp = app
            .client
            .get(app.url(SUBSCRIBE))
            .header("cookie", format!("{COOKIE}={value}"))
            .send()
            .await
            .unwrap();
        assert_error(resp, 401, "unauthorized").await;
    }
}
