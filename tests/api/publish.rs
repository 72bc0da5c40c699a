//! HTTP publishing: single and batch, exact payload delivery, idempotency,
//! and every refusal (400/401/403/413) publishing nothing.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::helpers::*;

/// Checks that nothing reached `s` by publishing a marker and expecting it
/// to be the very next event.
async fn assert_nothing_pending(app: &NodeApi, s: &mut SseStream, user: &str) {
    let marker = app.publish(user, &json!({"type": "marker"})).await;
    let e = s.next_event().await;
    assert_eq!(
        (e.event.as_str(), e.id_num()),
        ("message", marker),
        "something was published before the marker: {e:?}"
    );
    assert_eq!(e.json(), json!({"type": "marker"}));
}

#[tokio::test]
async fn a_publish_is_answered_202_with_the_event_id_as_a_decimal_string() {
    let app = in_process_app().await;

    let resp = app
        .publish_request(json!({"userId": "u1", "notification": note(1)}).to_string())
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status().as_u16(), 202);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "Content-Type {ct:?}");
    let body: Value = resp.json().await.unwrap();
    let obj = body.as_object().expect("JSON object");
    assert_eq!(obj.len(), 1, "only `id`: {body}");
    parse_id(body["id"].as_str().expect("id is a string"));
}

#[tokio::test]
async fn a_text_with_escaped_newlines_and_data_prefixes_arrives_as_one_intact_event() {
    let app = in_process_app().await;
    let mut s = app.subscribe("u1").await;
    let notification = r#"{"type":"chat","title":"two\nlines","message":"first\ndata: {\"type\":\"forged\"}\n\nid: 1\r\nevent: reset\rdata: end","data":{"note":"data:\n\n"}}"#;

    let id = app
        .publish_text(
            "u1",
            &format!(r#"{{"userId":"u1","notification":{notification}}}"#),
        )
        .await;

    let e = s.next_event().await;
    assert_eq!((e.event.as_str(), e.id_num()), ("message", id));
    assert_eq!(e.data, notification);
    assert_eq!(
        e.json()["message"],
        json!("first\ndata: {\"type\":\"forged\"}\n\nid: 1\r\nevent: reset\rdata: end")
    );
    assert_nothing_pending(&app, &mut s, "u1").await;
}

#[tokio::test]
async fn pretty_printed_json_arrives_compacted_onto_one_line() {
    let app = in_process_app().await;
    let mut s = app.subscribe("u1").await;
    let notification = json!({
        "type": "order_update",
        "title": "Ready",
        "message": "multi\nline",
        "data": {"orderId": "o-1", "items": [1, 2, {"x": null}], "status": "ready"}
    });
    let body = serde_json::to_string_pretty(&json!({"userId": "u1", "notification": notification}))
        .unwrap()
        .replace('\n', "\r\n");

    let id = app.publish_text("u1", &body).await;

    let e = s.next_event().await;
    assert_eq!(e.id_num(), id);
    assert!(
        !e.data.contains(['\n', '\r']),
        "data spans lines: {:?}",
        e.data
    );
    assert_eq!(e.json(), notification);
    assert_nothing_pending(&app, &mut s, "u1").await;
}

#[tokio::test]
async fn a_batch_publish_delivers_once_to_each_listed_user_and_answers_every_id() {
    let app = in_process_app().await;
    let mut u1 = app.subscribe("u1").await;
    let mut u2 = app.subscribe("u2").await;
    let mut u3 = app.subscribe("u3").await;

    let resp = app
        .publish_request(
            json!({"userIds": ["u1", "u2", "u1"], "notification": note(1)}).to_string(),
        )
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status().as_u16(), 202);
    let body: Value = resp.json().await.unwrap();
    let ids: BTreeMap<String, String> =
        serde_json::from_value(body["ids"].clone()).expect("ids is an object of strings");
    assert_eq!(ids.keys().collect::<Vec<_>>(), vec!["u1", "u2"]);
    let (id1, data1) = u1.next_message().await;
    assert_eq!(id1, parse_id(&ids["u1"]));
    assert_eq!(serde_json::from_str::<Value>(&data1).unwrap(), note(1));
    let (id2, _) = u2.next_message().await;
    assert_eq!(id2, parse_id(&ids["u2"]));
    assert_nothing_pending(&app, &mut u1, "u1").await;
    assert_nothing_pending(&app, &mut u2, "u2").await;
    assert_nothing_pending(&app, &mut u3, "u3").await;
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retried_publish_store_the_notification_once() {
    let app = in_process_app().await;
    let mut s = app.subscribe("u1").await;
    let body = json!({"userId": "u1", "notification": note(1)}).to_string();
    let send = |key: &'static str| {
        app.publish_request(body.clone())
            .header("Idempotency-Key", key)
            .send()
    };

    let first: Value = send("order-42-ready").await.unwrap().json().await.unwrap();
    let retry = send("order-42-ready").await.unwrap();
    assert_eq!(retry.status().as_u16(), 202);
    let retry: Value = retry.json().await.unwrap();
    let other: Value = send("order-43-ready").await.unwrap().json().await.unwrap();

    assert_eq!(first, retry, "a retried publish answers the same id");
    assert_ne!(
        first["id"], other["id"],
        "another key is another notification"
    );
    let ids = s.message_ids(2).await;
    assert_eq!(
        ids,
        vec![
            parse_id(first["id"].as_str().unwrap()),
            parse_id(other["id"].as_str().unwrap())
        ]
    );
    assert_nothing_pending(&app, &mut s, "u1").await;
}

#[tokio::test]
async fn an_idempotency_key_on_a_batch_answers_the_same_ids_and_delivers_once() {
    let app = in_process_app().await;
    let mut u1 = app.subscribe("u1").await;
    let mut u2 = app.subscribe("u2").await;
    let body = json!({"userIds": ["u1", "u2"], "notification": note(1)}).to_string();

    let mut answers = Vec::new();
    for _ in 0..2 {
        let resp = app
            .publish_request(body.clone())
            .header("Idempotency-Key", "batch-7")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        answers.push(resp.json::<Value>().await.unwrap());
    }

    assert_eq!(answers[0], answers[1]);
    assert_eq!(
        u1.next_message().await.0,
        parse_id(answers[0]["ids"]["u1"].as_str().unwrap())
    );
    assert_eq!(
        u2.next_message().await.0,
        parse_id(answers[0]["ids"]["u2"].as_str().unwrap())
    );
    assert_nothing_pending(&app, &mut u1, "u1").await;
    assert_nothing_pending(&app, &mut u2, "u2").await;
}

#[tokio::test]
async fn malformed_publish_bodies_are_refused_with_400_and_publish_nothing() {
    let app = in_process_app().await;
    let mut s = app.subscribe("u1").await;
    let bad_request = [
        r#"not json"#,
        r#"{"userId":"u1","notification":{"type":"x"}"#,
        r#"{"userId":"u1"}"#,
        r#"{"notification":{"type":"x"}}"#,
        r#"{"userId":"u1","notification":"text"}"#,
        r#"{"userId":"u1","notification":[{"type":"x"}]}"#,
        r#"{"userId":"u1","notification":null}"#,
        r#"{"userId":"u1","notification":{}}"#,
        r#"{"userId":"u1","notification":{"type":5}}"#,
        r#"{"userId":"u1","notification":{"type":null}}"#,
        r#"{"userId":"u1","notification":{"type":"x","title":5}}"#,
        r#"{"userId":"u1","notification":{"type":"x","message":{"a":1}}}"#,
        r#"{"userId":"u1","notification":{"type":"x","data":"text"}}"#,
        r#"{"userId":"u1","notification":{"type":"x","data":[1]}}"#,
        r#"{"userIds":"u1","notification":{"type":"x"}}"#,
        r#"[{"userId":"u1","notification":{"type":"x"}}]"#,
    ];
    let bad_request_or_user = [
        r#"{"userId":5,"notification":{"type":"x"}}"#,
        r#"{"userIds":["u1",5],"notification":{"type":"x"}}"#,
        r#"{"userIds":["u1",null],"notification":{"type":"x"}}"#,
    ];

    for body in bad_request {
        let resp = app.publish_request(body).send().await.unwrap();
        assert_error(resp, 400, "bad_request").await;
    }
    for body in bad_request_or_user {
        let resp = app.publish_request(body).send().await.unwrap();
        assert_error_in(resp, 400, &["bad_request", "invalid_user_id"]).await;
    }

    assert_nothing_pending(&app, &mut s, "u1").await;
}

#[tokio::test]
async fn invalid_user_ids_are_refused_with_400_invalid_user_id_and_publish_nothing() {
    let app = in_process_app().await;
    let mut s = app.subscribe("u1").await;
    let long = "x".repeat(257);
    let bad_ids = [
        "",
        "u1.orders",
        "u1.*",
        "*",
        ">",
        "u1>",
        "u 1",
        "u1\t",
        "u1\n",
        "\u{a0}u1",
        "$SYS",
        "$u1",
        "u\u{7}1",
        "u\u{7f}1",
        &long,
    ];

    for bad in bad_ids {
        let resp = app
            .publish_request(json!({"userId": bad, "notification": note(0)}).to_string())
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "invalid_user_id").await;
    }
    let resp = app
        .publish_request(json!({"userIds": ["u1", "u1.*"], "notification": note(0)}).to_string())
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid_user_id").await;

    assert_nothing_pending(&app, &mut s, "u1").await;
}

#[tokio::test]
async fn the_longest_and_non_ascii_user_ids_are_accepted_end_to_end() {
    let app = in_process_app().await;
    let longest = "é".repeat(128); // 256 bytes of UTF-8
    for user in [longest.as_str(), "ユーザー-42", "a$b", "user@campus", "u"] {
        let mut s = app.subscribe(user).await;
        let id = app.publish_n(user, 1).await;
        assert_eq!(s.next_message().await.0, id, "user {user:?}");
    }
}

#[tokio::test]
async fn publishing_without_a_valid_token_is_refused_with_401_and_publishes_nothing() {
    let app = in_process_app_with(&[("NOTIFY_JWT_LEEWAY", "0s")]).await;
    let mut s = app.subscribe("u1").await;
    let body = json!({"userId": "u1", "notification": note(0)}).to_string();
    let scope = PUBLISH_SCOPE;
    let expired = app.sign(&json!({"sub": "svc", "exp": now_secs() - 10, "scope": scope}));
    let wrong_key = sign_hs256(
        &random_hex(48),
        &json!({"sub": "svc", "exp": now_secs() + 600, "scope": scope}),
    );
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(
            json!({"sub": "svc", "exp": now_secs() + 600, "scope": scope})
                .to_string()
                .as_bytes()
        )
    );
    let post = || {
        app.client
            .post(app.url(PUBLISH))
            .header("content-type", "application/json")
            .body(body.clone())
    };

    assert_error(post().send().await.unwrap(), 401, "unauthorized").await;
    for token in [
        expired.as_str(),
        wrong_key.as_str(),
        none.as_str(),
        "not-a-jwt",
    ] {
        let resp = post().bearer_auth(token).send().await.unwrap();
        assert_error(resp, 401, "unauthorized").await;
    }
    let resp = post()
        .header("authorization", format!("Basic {}", b64url(b"a:b")))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;

    assert_nothing_pending(&app, &mut s, "u1").await;
}

#[tokio::test]
async fn a_token_without_the_publish_scope_is_refused_with_403_and_publishes_nothing() {
    let app = in_process_app().await;
    let mut s = app.subscribe("u1").await;
    let body = json!({"userId": "u1", "notification": note(0)}).to_string();
    let exp = now_secs() + 600;
    let tokens = [
        app.user_token("u1"),
        app.sign(&json!({"sub": "svc", "exp": exp, "scope": "notifications:read"})),
        app.sign(&json!({"sub": "svc", "exp": exp, "scope": "notifications:publisher"})),
        app.sign(&json!({"sub": "svc", "exp": exp, "scope": "xnotifications:publish"})),
        app.sign(&json!({"sub": "svc", "exp": exp, "scope": "notifications:publish:all"})),
        app.sign(&json!({"sub": "svc", "exp": exp, "scope": ""})),
    ];

    for token in &tokens {
        let resp = app
            .publish_request_as(token, body.clone())
            .send()
            .await
            .unwrap();
        assert_error(resp, 403, "forbidden").await;
    }

    assert_nothing_pending(&app, &mut s, "u1").await;
}

#[tokio::test]
async fn the_publish_scope_is_found_anywhere_in_a_space_separated_list() {
    let app = in_process_app().await;
    let mut s = app.subscribe("u1").await;
    let exp = now_secs() + 600;
    let body = json!({"userId": "u1", "notification": note(3)}).to_string();

    for scope in [
        "notifications:publish",
        "a b notifications:publish",
        "notifications:publish c",
    ] {
        let token = app.sign(&json!({"sub": "svc", "exp": exp, "scope": scope}));
        let resp = app
            .publish_request_as(&token, body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "scope {scope:?}");
        let id: Value = resp.json().await.unwrap();
        assert_eq!(
            s.next_message().await.0,
            parse_id(id["id"].as_str().unwrap())
        );
    }
}

#[tokio::test]
async fn a_notification_over_the_default_size_limit_is_refused_with_413() {
    let app = in_process_app().await;
    let mut s = app.subscribe("u1").await;
    let big = json!({"type": "x", "message": "m".repeat(70_000)});

    let resp = app
        .publish_request(json!({"userId": "u1", "notification": big}).to_string())
        .send()
        .await
        .unwrap();
    assert_error(resp, 413, "payload_too_large").await;

    let fits = json!({"type": "x", "message": "m".repeat(60_000)});
    let id = app.publish("u1", &fits).await;
    assert_eq!(
        s.next_message().await.0,
        id,
        "only the notification that fits is published"
    );
}

#[tokio::test]
async fn the_notification_size_limit_follows_its_setting() {
    let app = in_process_app_with(&[("NOTIFY_MAX_NOTIFICATION_BYTES", "1024")]).await;
    let mut s = app.subscribe("u1").await;

    let resp = app
        .publish_request(
            json!({"userId": "u1", "notification": {"type": "x", "message": "m".repeat(2000)}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_error(resp, 413, "payload_too_large").await;
    let resp = app
        .publish_request(
            json!({"userIds": ["u1", "u2"], "notification": {"type": "x", "message": "m".repeat(2000)}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_error(resp, 413, "payload_too_large").await;

    let id = app
        .publish("u1", &json!({"type": "x", "message": "m".repeat(500)}))
        .await;
    assert_eq!(s.next_message().await.0, id);
}

#[tokio::test]
async fn a_batch_with_more_users_than_allowed_is_refused_and_publishes_nothing() {
    let app = in_process_app_with(&[("NOTIFY_MAX_BATCH_USERS", "3")]).await;
    let mut s = app.subscribe("u1").await;

    let resp = app
        .publish_request(
            json!({"userIds": ["u1", "u2", "u3", "u4"], "notification": note(0)}).to_string(),
        )
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert!(status == 400 || status == 413, "status {status}");
    assert_error_in(resp, status, &["bad_request", "payload_too_large"]).await;

    let resp = app
        .publish_request(
            json!({"userIds": ["u1", "u2", "u3"], "notification": note(1)}).to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        s.next_message().await.0,
        parse_id(body["ids"]["u1"].as_str().unwrap())
    );
}
