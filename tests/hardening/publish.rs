//! Hostile publish bodies not covered by `tests/api/publish.rs`: invalid
//! UTF-8, 10 000-level nesting, every wrong JSON type at every field, and a
//! batch spoiled by one entry. Each gets 400/413 with the JSON error, and
//! nothing is published: the counters do not move, subscribers receive
//! nothing, and the next valid publish is their next event.

use serde_json::{json, Value};

use crate::helpers::*;

/// Counters that any stored notification would move.
async fn stored_counters(app: &TestApp) -> [f64; 3] {
    let m = app.metrics().await;
    [
        m.value_or_zero("notify_notifications_published_total", &[]),
        m.value_or_zero("notify_notifications_received_total", &[]),
        m.value_or_zero("notify_notifications_delivered_total", &[]),
    ]
}

/// Publishes a marker to each user and checks it is their very next event:
/// nothing was queued before it.
async fn assert_next_event_is_the_next_valid_publish(
    app: &TestApp,
    streams: &mut [(&str, &mut SseStream)],
) {
    for (user, s) in streams.iter_mut() {
        let marker = json!({"type": "marker", "message": random_hex(16)});
        let id = app.publish(user, &marker).await;
        let (got, data) = s.next_message().await;
        assert_eq!(
            (got, serde_json::from_str::<Value>(&data).unwrap()),
            (id, marker),
            "{user}: something arrived before the next valid publish"
        );
    }
}

/// Posts `body` (raw bytes) and checks the status and error code.
async fn assert_refused(app: &TestApp, body: Vec<u8>, status: u16, codes: &[&str], why: &str) {
    let resp = app
        .publish_request_as(&app.publisher_token(), body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{why}: request failed: {e}"));
    assert_error_why(resp, status, codes, why).await;
}

#[tokio::test]
async fn bodies_that_are_not_utf8_are_refused_with_400_and_publish_nothing() {
    let app = spawn_app().await;
    let mut s = app.subscribe("u1").await;
    let before = stored_counters(&app).await;
    let with = |inner: &[u8], at: &str| -> Vec<u8> {
        let template = json!({"userId": "u1", "notification": {"type": "order_update", "title": "T", "data": {"k": "V"}}}).to_string();
        let (a, b) = template.split_once(at).unwrap();
        [a.as_bytes(), inner, b.as_bytes()].concat()
    };

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (with(b"\xff", "T"), "0xFF in the title"),
        (
            with(b"\xc3\x28", "T"),
            "invalid 2-byte sequence in the title",
        ),
        (
            with(b"\xe2\x82", "T"),
            "truncated 3-byte sequence in the title",
        ),
        (
            with(b"\xed\xa0\x80", "T"),
            "UTF-8-encoded surrogate in the title",
        ),
        (with(b"\xc0\xaf", "T"), "overlong encoding in the title"),
        (
            with(b"\xf4\x90\x80\x80", "T"),
            "code point above U+10FFFF in the title",
        ),
        (with(b"\xfe", "V"), "0xFE in a data value"),
        (with(b"\x80", "k"), "lone continuation byte in a data key"),
        (
            [&b"{\"userId\":\"u\xff1\",\"notification\":{\"type\":\"x\"}}"[..]].concat(),
            "0xFF in the user id",
        ),
        (
            b"\xef\xbb\xbf{\"userId\":\"u1\",\"notification\":{\"type\":\"x\"}}".to_vec(),
            "UTF-8 byte-order mark before the JSON",
        ),
        (b"\xff\xfe{\0\"\0u\0".to_vec(), "UTF-16LE"),
        (
            [
                &b"{\"userId\":\"u1\",\"notification\":{\"type\":\"x\"}}"[..],
                b"\xff",
            ]
            .concat(),
            "garbage byte after the JSON",
        ),
        (
            b"{\"userId\":\"u1\",\xff\"notification\":{\"type\":\"x\"}}".to_vec(),
            "0xFF between members",
        ),
    ];
    for (body, why) in cases {
        assert_refused(&app, body, 400, &["bad_request"], why).await;
    }

    assert_eq!(
        stored_counters(&app).await,
        before,
        "a refused body was stored"
    );
    assert_next_event_is_the_next_valid_publish(&app, &mut [("u1", &mut s)]).await;
}

/// `depth` nested arrays around `inner`.
fn nested(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
}

/// `depth` nested objects `{"a":…}` around `inner`.
fn nested_objects(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

#[tokio::test]
async fn json_nested_10_000_levels_deep_is_refused_with_400_and_the_node_keeps_serving() {
    let app = spawn_app().await;
    let mut s = app.subscribe("u1").await;
    let before = stored_counters(&app).await;
    const DEEP: usize = 10_000;

    let cases = [
        (
            format!(
                r#"{{"userId":"u1","notification":{{"type":"x","data":{}}}}}"#,
                nested_objects(DEEP, "1")
            ),
            "10 000 nested objects in data",
        ),
        (
            format!(
                r#"{{"userId":"u1","notification":{{"type":"x","data":{{"a":{}}}}}}}"#,
                nested(DEEP, "1")
            ),
            "10 000 nested arrays in a data value",
        ),
        (
            format!(
                r#"{{"userId":"u1","notification":{{"type":"x","data":{}}}}}"#,
                nested_objects(DEEP, "")
            ),
            "10 000 unclosed objects in data",
        ),
        (
            format!(
                r#"{{"userIds":{},"notification":{{"type":"x"}}}}"#,
                nested(DEEP, "\"u1\"")
            ),
            "10 000 nested arrays as userIds",
        ),
        (
            format!(r#"{{"userId":"u1","notification":{}}}"#, nested(DEEP, "{}")),
            "10 000 nested arrays as the notification",
        ),
        (nested(DEEP, "{}"), "10 000 nested arrays as the body"),
        ("[".repeat(100_000), "100 000 unclosed arrays as the body"),
    ];
    // Every case is tried before anything is asserted, so that a failure
    // names all the cases that misbehave.
    let mut wrong = Vec::new();
    for (body, why) in cases {
        let resp = app.publish_request(body).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let code = serde_json::from_str::<Value>(&text)
            .ok()
            .map(|v| v["error"].clone());
        if status != 400 || code != Some(json!("bad_request")) {
            wrong.push(format!("{why}: {status} {}", &text[..text.len().min(120)]));
        }
        let health = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(
            health.status().as_u16(),
            200,
            "the node is unhealthy after {why}"
        );
    }
    assert!(
        wrong.is_empty(),
        "deeply nested bodies not refused with 400 bad_request:\n{}",
        wrong.join("\n")
    );

    assert_eq!(
        stored_counters(&app).await,
        before,
        "a refused body was stored"
    );
    assert_next_event_is_the_next_valid_publish(&app, &mut [("u1", &mut s)]).await;

    // Control: reasonable nesting (100 levels in data) is accepted and
    // arrives intact.
    let notification: Value = serde_json::from_str(&format!(
        r#"{{"type":"x","data":{}}}"#,
        nested_objects(100, "\"leaf\"")
    ))
    .unwrap();
    let id = app.publish("u1", &notification).await;
    let e = s.next_event().await;
    assert_eq!((e.id_num(), e.json()), (id, notification));
}

/// Every JSON kind, as text.
const KINDS: &[(&str, &str)] = &[
    ("null", "null"),
    ("bool", "true"),
    ("integer", "7"),
    ("float", "1.5"),
    ("string", "\"s\""),
    ("array", "[]"),
    ("object", "{}"),
];

/// Sets `path` (dot-separated, `0` indexes an array) in `v` to `value`.
fn set(v: &mut Value, path: &str, value: Value) {
    let mut cur = v;
    let parts: Vec<&str> = path.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        cur = match part.parse::<usize>() {
            Ok(i) => &mut cur[i],
            Err(_) => &mut cur[*part],
        };
    }
    let last = parts[parts.len() - 1];
    match last.parse::<usize>() {
        Ok(i) => cur[i] = value,
        Err(_) => cur[last] = value,
    }
}

#[tokio::test]
async fn every_wrong_json_type_at_every_field_is_refused_with_400_and_publishes_nothing() {
    let app = spawn_app().await;
    let mut u1 = app.subscribe("u1").await;
    let mut u2 = app.subscribe("u2").await;
    let single = json!({"userId": "u1", "notification": {"type": "order_update", "title": "t", "message": "m", "data": {"k": 1}}});
    let batch = json!({"userIds": ["u1", "u2"], "notification": {"type": "order_update", "title": "t", "message": "m", "data": {"k": 1}}});
    // field, its template, the kinds it accepts. `title`, `message` and `data`
    // are optional, and an explicit `null` counts as absent (serde's
    // `Option`): that is accepted, so it is not a wrong type here.
    let fields: &[(&Value, &str, &[&str])] = &[
        (&single, "userId", &["string"]),
        (&batch, "userIds", &["array"]),
        (&batch, "userIds.0", &["string"]),
        (&batch, "userIds.1", &["string"]),
        (&single, "notification", &["object"]),
        (&single, "notification.type", &["string"]),
        (&single, "notification.title", &["string", "null"]),
        (&single, "notification.message", &["string", "null"]),
        (&single, "notification.data", &["object", "null"]),
        (&batch, "notification.type", &["string"]),
        (&batch, "notification.data", &["object", "null"]),
    ];
    let before = stored_counters(&app).await;
    let mut tried = 0;
    for (template, path, ok_kinds) in fields {
        for (kind, text) in KINDS {
            if ok_kinds.contains(kind) {
                continue;
            }
            let mut body = (*template).clone();
            set(&mut body, path, serde_json::from_str(text).unwrap());
            let why = format!("{path} = {text}");
            // A user-id field holding a non-string may be named either way.
            let codes: &[&str] = if path.starts_with("userId") {
                &["bad_request", "invalid_user_id"]
            } else {
                &["bad_request"]
            };
            assert_refused(&app, body.to_string().into_bytes(), 400, codes, &why).await;
            tried += 1;
        }
    }
    // The body itself of every wrong kind.
    for (kind, text) in KINDS.iter().filter(|(k, _)| *k != "object") {
        assert_refused(
            &app,
            text.as_bytes().to_vec(),
            400,
            &["bad_request"],
            &format!("body = {kind}"),
        )
        .await;
        tried += 1;
    }
    assert_eq!(tried, 68);

    assert_eq!(
        stored_counters(&app).await,
        before,
        "a refused body was stored"
    );
    assert_next_event_is_the_next_valid_publish(&app, &mut [("u1", &mut u1), ("u2", &mut u2)])
        .await;
}

#[tokio::test]
async fn a_batch_spoiled_by_one_entry_publishes_to_nobody_and_the_next_valid_publish_is_the_next_event(
) {
    let app = spawn_app().await;
    let mut first = app.subscribe("b0").await;
    let mut middle = app.subscribe("b50").await;
    let mut last = app.subscribe("b99").await;
    let valid: Vec<Value> = (0..100).map(|i| json!(format!("b{i}"))).collect();
    let spoil = |at: usize, bad: Value| {
        let mut ids = valid.clone();
        ids.insert(at, bad);
        json!({"userIds": ids, "notification": note(1)}).to_string()
    };
    let long = "x".repeat(257);
    let before = stored_counters(&app).await;

    let cases: Vec<(String, &[&str], &str)> = vec![
        (
            spoil(100, json!("b1.*")),
            &["invalid_user_id"],
            "wildcard id last",
        ),
        (spoil(0, json!(">")), &["invalid_user_id"], "'>' first"),
        (
            spoil(50, json!("b 5")),
            &["invalid_user_id"],
            "space in the middle",
        ),
        (spoil(100, json!("")), &["invalid_user_id"], "empty id last"),
        (
            spoil(100, json!(long)),
            &["invalid_user_id"],
            "257-byte id last",
        ),
        (
            spoil(100, json!("$SYS")),
            &["invalid_user_id"],
            "leading $ last",
        ),
        (
            spoil(100, json!("b\u{0}1")),
            &["invalid_user_id"],
            "NUL last",
        ),
        (
            spoil(100, json!(7)),
            &["bad_request", "invalid_user_id"],
            "number last",
        ),
        (
            spoil(100, json!(null)),
            &["bad_request", "invalid_user_id"],
            "null last",
        ),
        (
            spoil(100, json!(["b1"])),
            &["bad_request", "invalid_user_id"],
            "array last",
        ),
        (
            spoil(100, json!({"id": "b1"})),
            &["bad_request", "invalid_user_id"],
            "object last",
        ),
        (
            json!({"userIds": valid, "notification": {"type": "x", "data": "not an object"}})
                .to_string(),
            &["bad_request"],
            "valid ids, bad notification",
        ),
        (
            json!({"userIds": valid, "userId": "b0", "notification": note(1)}).to_string(),
            &["bad_request"],
            "both userIds and userId",
        ),
    ];
    for (body, codes, why) in cases {
        assert_refused(&app, body.into_bytes(), 400, codes, why).await;
    }
    // Over the batch limit by one (with NOTIFY_MAX_BATCH_USERS at its
    // default 10 000): 413, nothing stored.
    let too_many: Vec<String> = (0..10_001).map(|i| format!("b{i}")).collect();
    assert_refused(
        &app,
        json!({"userIds": too_many, "notification": note(1)})
            .to_string()
            .into_bytes(),
        413,
        &["payload_too_large"],
        "10 001 users",
    )
    .await;

    assert_eq!(
        stored_counters(&app).await,
        before,
        "a refused batch was stored"
    );
    assert_next_event_is_the_next_valid_publish(
        &app,
        &mut [("b0", &mut first), ("b50", &mut middle), ("b99", &mut last)],
    )
    .await;
}

#[tokio::test]
async fn a_notification_field_the_server_passes_through_unread_is_depth_checked_too() {
    // Fields other than type/title/message/data are passed through as raw
    // JSON; a 10 000-level value there must be refused like one in `data`,
    // or every subscriber's JSON parser receives it.
    let app = spawn_app().await;
    let mut s = app.subscribe("u1").await;
    let before = stored_counters(&app).await;

    for (field, inner) in [
        ("extra", nested(10_000, "")),
        ("meta", nested_objects(10_000, "1")),
    ] {
        let body = format!(r#"{{"userId":"u1","notification":{{"type":"x","{field}":{inner}}}}}"#);
        let resp = app.publish_request(body).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(
            status, 400,
            "a notification with 10 000 nested levels in the pass-through field {field:?} was \
             answered {status} {text} instead of 400 bad_request"
        );
    }

    assert_eq!(
        stored_counters(&app).await,
        before,
        "a refused body was stored"
    );
    assert_next_event_is_the_next_valid_publish(&app, &mut [("u1", &mut s)]).await;
}
