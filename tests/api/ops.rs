//! Operations endpoints: `/healthz`, `/readyz`, and `/metrics` series that
//! exist, move with traffic, and never carry a user id or a token. The
//! metric tests start the binary: the recorder is global to a process, so
//! in-process nodes' counts would mix.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn health_and_readiness_answer_200_on_a_running_node() {
    let app = in_process_app().await;

    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();

    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(ready.status().as_u16(), 200);
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_every_contract_series_prefixed_notify() {
    let app = spawn_app().await;
    // Traffic so that every lazily created series exists.
    let s = app.subscribe("u1").await;
    let cursor = s.start_id.unwrap();
    drop(s);
    app.publish_n("u1", 0).await;
    let mut s = app
        .subscribe_with(
            app.subscribe_request(&app.user_token("u1"))
                .header("Last-Event-ID", cursor.to_string()),
        )
        .await;
    s.next_message().await;
    app.subscribe_request("bad").send().await.unwrap();

    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain"), "Content-Type {ct:?}");
    let m = Metrics::parse(&resp.text().await.unwrap());

    for name in [
        "notify_connections_open",
        "notify_connections_max",
        "notify_users_online",
        "notify_connections_total",
        "notify_notifications_received_total",
        "notify_notifications_published_total",
        "notify_notifications_delivered_total",
        "notify_notifications_replayed_total",
        "notify_head_recheck_repairs_total",
        "notify_delivery_latency_seconds_bucket",
        "notify_delivery_latency_seconds_sum",
        "notify_delivery_latency_seconds_count",
        "notify_auth_failures_total",
        "notify_bus_connected",
        "notify_ready",
        "notify_draining",
    ] {
        assert!(m.has(name), "no series {name} in:\n{}", m.text);
    }
    for s in &m.samples {
        assert!(
            s.name.starts_with("notify_") || s.name.starts_with("process_"),
            "series {} lacks the notify_ (or the standard process_) prefix",
            s.name
        );
    }
    assert!(
        m.samples
            .iter()
            .any(|s| s.name == "notify_auth_failures_total"
                && s.labels.iter().any(|(k, _)| k == "reason")),
        "auth failures carry a reason label"
    );
    assert!(
        m.samples
            .iter()
            .any(|s| s.name == "notify_delivery_latency_seconds_bucket"
                && s.labels.iter().any(|(k, v)| k == "le" && v == "+Inf")),
        "latency histogram has a +Inf bucket"
    );
}

#[tokio::test]
async fn a_running_node_reports_ready_not_draining_bus_connected_and_its_limit() {
    let app = spawn_app_with(&[("NOTIFY_MAX_CONNECTIONS", "1234")]).await;

    let m = app.metrics().await;

    assert_eq!(m.value("notify_ready", &[]), Some(1.0));
    assert_eq!(m.value("notify_draining", &[]), Some(0.0));
    assert_eq!(m.value("notify_bus_connected", &[]), Some(1.0));
    assert_eq!(m.value("notify_connections_max", &[]), Some(1234.0));
}

#[tokio::test]
async fn connection_and_delivery_metrics_move_with_traffic() {
    let app = spawn_app().await;
    let before = app.metrics().await;
    let opened = before.value_or_zero("notify_connections_total", &[]);
    let delivered = before.value_or_zero("notify_notifications_delivered_total", &[]);
    let received = before.value_or_zero("notify_notifications_received_total", &[]);
    let published = before.value_or_zero("notify_notifications_published_total", &[]);
    let latencies = before.value_or_zero("notify_delivery_latency_seconds_count", &[]);

    let mut tab1 = app.subscribe("u1").await;
    let mut tab2 = app.subscribe("u1").await;
    app.wait_metric("notify_connections_open", &[], |v| v == 2.0)
        .await;
    app.wait_metric("notify_users_online", &[], |v| v == 1.0)
        .await;
    app.wait_metric("notify_connections_total", &[], |v| v == opened + 2.0)
        .await;

    app.publish_n("u1", 1).await;
    tab1.next_message().await;
    tab2.next_message().await;

    app.wait_metric("notify_notifications_delivered_total", &[], |v| {
        v == delivered + 2.0
    })
    .await;
    app.wait_metric("notify_notifications_received_total", &[], |v| {
        v == received + 1.0
    })
    .await;
    app.wait_metric("notify_notifications_published_total", &[], |v| {
        v == published + 1.0
    })
    .await;
    app.wait_metric("notify_delivery_latency_seconds_count", &[], |v| {
        v > latencies
    })
    .await;
    let u2 = app.subscribe("u2").await;
    app.wait_metric("notify_users_online", &[], |v| v == 2.0)
        .await;
    drop(u2);
    app.wait_metric("notify_users_online", &[], |v| v == 1.0)
        .await;
    app.wait_metric("notify_connections_open", &[], |v| v == 2.0)
        .await;
}

#[tokio::test]
async fn auth_failures_are_counted() {
    let app = spawn_app().await;
    let before = app
        .metrics()
        .await
        .value_or_zero("notify_auth_failures_total", &[]);

    app.subscribe_request("not-a-jwt").send().await.unwrap();
    app.client.get(app.url(SUBSCRIBE)).send().await.unwrap();

    app.wait_metric("notify_auth_failures_total", &[], |v| v >= before + 2.0)
        .await;
}

#[tokio::test]
async fn replayed_notifications_are_counted() {
    let app = spawn_app().await;
    let before = app
        .metrics()
        .await
        .value_or_zero("notify_notifications_replayed_total", &[]);
    let s = app.subscribe("u1").await;
    let cursor = s.start_id.unwrap();
    drop(s);
    for n in 0..3 {
        app.publish_n("u1", n).await;
    }

    let mut s = app
        .subscribe_with(
            app.subscribe_request(&app.user_token("u1"))
                .header("Last-Event-ID", cursor.to_string()),
        )
        .await;
    s.message_ids(3).await;

    app.wait_metric("notify_notifications_replayed_total", &[], |v| {
        v == before + 3.0
    })
    .await;
}

#[tokio::test]
async fn no_metric_label_carries_a_user_id_or_a_token() {
    let app = spawn_app_with(&[("NOTIFY_MAX_CONNECTIONS_PER_USER", "1")]).await;
    let user = "student-8c1f2e9a";
    let token = app.user_token(user);
    let mut s = app.subscribe_with(app.subscribe_request(&token)).await;
    app.publish_n(user, 1).await;
    s.next_message().await;
    // A rejection, an auth failure and a bad publish, each with the user in it.
    app.subscribe_request(&token).send().await.unwrap();
    let wrong = sign_hs256(
        &random_hex(48),
        &json!({"sub": user, "exp": now_secs() + 60}),
    );
    app.subscribe_request(&wrong).send().await.unwrap();
    app.publish_request(json!({"userId": user, "notification": {"type": 1}}).to_string())
        .send()
        .await
        .unwrap();

    let m = app.metrics().await;

    for s in &m.samples {
        for (k, v) in &s.labels {
            assert!(
                v != user && v != &token && v != &wrong,
                "label {k}={v:?} on {}",
                s.name
            );
        }
    }
    assert!(!m.text.contains(user), "the user id appears in /metrics");
    assert!(
        !m.text.contains(&token) && !m.text.contains(&wrong),
        "a token appears in /metrics"
    );
}

#[tokio::test]
async fn no_token_ever_appears_in_the_logs() {
    let app = spawn_app_with(&[("NOTIFY_JWT_LEEWAY", "0s"), ("RUST_LOG", "debug")]).await;
    let good = app.user_token("u1");
    let expired = app.user_token_exp("u1", now_secs() - 5);
    let wrong = sign_hs256(
        &random_hex(48),
        &json!({"sub": "u1", "exp": now_secs() + 60}),
    );
    let publisher = app.publisher_token();

    let mut s = app.subscribe_with(app.subscribe_request(&good)).await;
    app.publish_note_as(&publisher, "u1", 1).await;
    s.next_message().await;
    for bad in [&expired, &wrong] {
        let resp = app.subscribe_request(bad).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
    }
    app.post_session(&good).await;
    let cookie = SseStream::open(
        app.client
            .get(app.url(SUBSCRIBE))
            .header("cookie", format!("{COOKIE}={good}")),
    )
    .await;
    drop(cookie);
    drop(s);
    // Let the server log the closed streams and the finished requests.
    app.wait_metric("notify_connections_open", &[], |v| v == 0.0)
        .await;

    let logs = app.stderr();
    for token in [&good, &expired, &wrong, &publisher] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !logs.contains(signature),
            "a token's signature is in the logs:\n{logs}"
        );
        let payload = token.split('.').nth(1).unwrap();
        assert!(
            !logs.contains(payload),
            "a token's payload is in the logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn a_method_an_endpoint_does_not_answer_gets_405_with_allow_and_an_unknown_path_404() {
    let app = spawn_app().await;
    let cases = [
        (reqwest::Method::GET, PUBLISH, "POST"),
        (reqwest::Method::PUT, SESSION, "POST, DELETE"),
        (reqwest::Method::POST, SUBSCRIBE, "GET"),
        (reqwest::Method::TRACE, "/healthz", "GET"),
        (reqwest::Method::DELETE, "/metrics", "GET"),
    ];
    for (method, path, allow) in cases {
        let resp = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers().get("allow").map(|v| v.to_str().unwrap()),
            Some(allow),
            "{method} {path}"
        );
        assert_error(resp, 405, "method_not_allowed").await;
    }
    let resp = app.client.get(app.url("/nowhere")).send().await.unwrap();
    assert_error(resp, 404, "not_found").await;
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_standard_fields_and_never_the_token() {
    let app = spawn_app_with(&[("NOTIFY_LOG_FORMAT", "json"), ("RUST_LOG", "info")]).await;
    let refused = format!("{}x", app.user_token("u1"));
    let resp = app
        .client
        .get(app.url(SUBSCRIBE))
        .query(&[("token", refused.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let s = app.subscribe("u1").await;
    drop(s);

    let access = wait_until("the access line of the refused subscribe", || {
        let text = app.stderr();
        async move {
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["target"] == "access" && v["status"] == 401)
        }
    })
    .await;
    assert_eq!(access["level"], "INFO");
    assert_eq!(access["message"], "request");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["path"], SUBSCRIBE);
    assert!(access["micros"].is_u64(), "{access}");

    let text = app.stderr();
    let mut serving = false;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        let ts = v["timestamp"].as_str().unwrap_or_default();
        assert!(
            ts.len() >= 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "timestamp {ts:?} is not RFC 3339 UTC: {line}"
        );
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .contains(&v["level"].as_str().unwrap_or("")),
            "level: {line}"
        );
        assert!(v["target"].is_string(), "target: {line}");
        assert!(v["message"].is_string(), "message: {line}");
        serving |= v["message"] == "serving" && v["bus"] == "embedded";
    }
    assert!(serving, "the start-up line carries its fields:\n{text}");
    assert!(!text.contains(&refused), "a token was logged:\n{text}");
    assert!(
        !text.contains("token="),
        "a query string was logged:\n{text}"
    );
}

#[tokio::test]
async fn metrics_carry_build_info_and_plausible_process_series() {
    let app = spawn_app().await;
    let m = app.metrics().await;

    assert_eq!(
        m.value(
            "notify_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{}",
        m.text
    );
    let get = |name: &str| {
        m.value(name, &[])
            .unwrap_or_else(|| panic!("no {name} in:\n{}", m.text))
    };
    assert!(
        get("process_open_fds") >= 3.0,
        "stdin, stdout, stderr at least"
    );
    assert!(get("process_open_fds") < get("process_max_fds"));
    assert!(get("process_resident_memory_bytes") > 1e6);
    assert!(get("process_cpu_seconds_total") >= 0.0);
    assert!(get("process_threads") >= 2.0);
    let start = get("process_start_time_seconds");
    assert!(
        (start - now_secs() as f64).abs() < 3600.0,
        "start time {start} is not about now"
    );

    // The node's own soft limit, as the kernel reports it.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", app.pid())).unwrap();
    let soft: f64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .expect("Max open files in /proc/<pid>/limits");
    assert_eq!(get("process_max_fds"), soft);
}
