//! The subscribe endpoint: response headers, the start of the stream, event
//! framing and ids, fan-out to tabs, isolation between users, keep-alive.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn a_subscription_answers_an_event_stream_with_the_required_headers() {
    let app = in_process_app().await;

    let s = app.subscribe("u1").await;

    let ct = s.header("content-type").expect("Content-Type");
    assert!(ct.starts_with("text/event-stream"), "Content-Type {ct:?}");
    let cc = s.header("cache-control").expect("Cache-Control");
    assert!(
        cc.to_ascii_lowercase().contains("no-cache"),
        "Cache-Control {cc:?}"
    );
    assert_eq!(s.header("x-accel-buffering").as_deref(), Some("no"));
}

#[tokio::test]
async fn the_stream_opens_with_a_retry_line_then_an_id_only_start_frame() {
    let app = in_process_app().await;

    let s = app.subscribe("u1").await;

    let raw = String::from_utf8(s.raw.clone()).expect("UTF-8 body");
    let rest = raw
        .strip_prefix("retry: ")
        .unwrap_or_else(|| panic!("body starts {raw:?}"));
    let (ms, rest) = rest
        .split_once("\n\n")
        .expect("retry line ends the first block");
    let ms: u64 = ms.parse().unwrap_or_else(|_| panic!("retry value {ms:?}"));
    assert!(
        (500..2000).contains(&ms),
        "retry {ms} ms outside [500, 2000)"
    );
    let rest = rest
        .strip_prefix("id: ")
        .unwrap_or_else(|| panic!("second block {rest:?}"));
    let (id, rest) = rest.split_once("\n\n").expect("start frame is one id line");
    assert_eq!(parse_id(id), s.start_id.unwrap());
    assert_eq!(rest, "", "nothing follows the start frame yet");
    assert_eq!(
        s.last_event_id(),
        id,
        "the start frame sets the last event id"
    );
}

#[tokio::test]
async fn the_retry_delay_is_jittered_per_connection() {
    let app = in_process_app().await;

    let mut seen = Vec::new();
    for _ in 0..8 {
        let s = app.subscribe("u1").await;
        let ms: u64 = s.retry().unwrap().parse().unwrap();
        assert!(
            (500..2000).contains(&ms),
            "retry {ms} ms outside [500, 2000)"
        );
        seen.push(ms);
    }

    seen.sort_unstable();
    seen.dedup();
    assert!(seen.len() >= 2, "8 connections all got retry {seen:?}");
}

#[tokio::test]
async fn a_notification_arrives_as_one_message_event_with_its_id_and_the_exact_json() {
    let app = in_process_app().await;
    let mut s = app.subscribe("507f1f77bcf86cd799439011").await;
    let notification = r#"{"type":"order_update","title":"Order Ready for Pickup 🛍","message":"Your order CB20240115001 is ready — show the code at the counter","data":{"orderId":"507f1f77bcf86cd799439011","orderNumber":"CB20240115001","status":"ready","otp":"123456"}}"#;

    let id = app
        .publish_text(
            "507f1f77bcf86cd799439011",
            &format!(r#"{{"userId":"507f1f77bcf86cd799439011","notification":{notification}}}"#),
        )
        .await;

    let e = s.next_event().await;
    assert_eq!(e.event, "message");
    assert_eq!(e.id_num(), id);
    assert_eq!(
        e.data, notification,
        "data must be byte-identical to what was sent"
    );
    let frame = format!("id: {id}\ndata: {notification}\n\n");
    assert!(
        String::from_utf8_lossy(&s.raw).ends_with(&frame),
        "wire frame is not exactly `id:` + `data:`: {:?}",
        String::from_utf8_lossy(&s.raw)
    );
}

#[tokio::test]
async fn event_ids_increase_strictly_and_match_the_publish_answers_in_order() {
    let app = in_process_app().await;
    let mut s = app.subscribe("u1").await;

    let mut published = Vec::new();
    for n in 0..10 {
        published.push(app.publish_n("u1", n).await);
    }

    assert!(
        published.windows(2).all(|w| w[0] < w[1]),
        "publish ids {published:?}"
    );
    let received = s.message_ids(10).await;
    assert_eq!(received, published);
    assert!(
        s.start_id.unwrap() < received[0],
        "start frame id must precede every event id"
    );
}

#[tokio::test]
async fn two_tabs_of_one_user_both_receive_every_notification_with_identical_ids() {
    let app = in_process_app().await;
    let mut tab1 = app.subscribe("u1").await;
    let mut tab2 = app.subscribe("u1").await;

    let mut published = Vec::new();
    for n in 0..5 {
        published.push(app.publish_n("u1", n).await);
    }

    let mut got1 = Vec::new();
    let mut got2 = Vec::new();
    for n in 0..5 {
        let (id1, data1) = tab1.next_message().await;
        let (id2, data2) = tab2.next_message().await;
        assert_eq!(data1, data2);
        assert_eq!(serde_json::from_str::<Value>(&data1).unwrap(), note(n));
        got1.push(id1);
        got2.push(id2);
    }
    assert_eq!(got1, published);
    assert_eq!(got2, published);
}

#[tokio::test]
async fn a_user_never_receives_another_users_notifications() {
    let app = in_process_app().await;
    let mut alice = app.subscribe("alice").await;
    let mut bob = app.subscribe("bob").await;

    let mut for_alice = Vec::new();
    for n in 0..5 {
        for_alice.push(app.publish_n("alice", n).await);
    }
    let for_bob = app.publish_n("bob", 100).await;
    let alice_last = app.publish_n("alice", 5).await;
    for_alice.push(alice_last);

    let (bob_first, bob_data) = bob.next_message().await;
    assert_eq!(bob_first, for_bob, "bob's first event must be his own");
    assert_eq!(serde_json::from_str::<Value>(&bob_data).unwrap(), note(100));
    assert_eq!(
        alice.message_ids(6).await,
        for_alice,
        "alice gets exactly her own six"
    );
    // Nothing else is pending for bob: his next own notification is next.
    app.publish_n_expecting(&mut bob, "bob", 101).await;
}

#[tokio::test]
async fn a_bearer_token_in_the_authorization_header_opens_a_stream() {
    let app = in_process_app().await;
    let token = app.user_token("u1");

    let mut s = app
        .subscribe_with(app.bearer_subscribe_request(&token))
        .await;
    app.publish_n_expecting(&mut s, "u1", 1).await;
}

#[tokio::test]
async fn a_new_connection_without_a_cursor_starts_at_the_live_position() {
    let app = in_process_app().await;
    let before = app.publish_n("u1", 0).await;

    let mut s = app.subscribe("u1").await;
    let after = app.publish_n("u1", 1).await;

    assert!(
        s.start_id.unwrap() >= before,
        "start frame lies before an old notification"
    );
    assert_eq!(
        s.next_message().await.0,
        after,
        "old history is not replayed without a cursor"
    );
}

#[tokio::test]
async fn keep_alive_comments_arrive_at_the_configured_interval() {
    let app = in_process_app_with(&[("NOTIFY_KEEPALIVE", "1s")]).await;
    let mut s = app.subscribe("u1").await;

    let mut times = Vec::new();
    while times.len() < 4 {
        match s.try_next_item(Duration::from_secs(3)).await {
            Ok(Some(SseItem::Comment { text, at })) => {
                assert_eq!(text, " keep-alive");
                times.push(at);
            }
            other => panic!("expected only keep-alive comments, got {other:?}"),
        }
    }

    for w in times.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(500) && gap <= Duration::from_secs(2),
            "keep-alive gap {gap:?} with a 1 s interval"
        );
    }
}

#[tokio::test]
async fn a_stream_that_carries_notifications_gets_a_keep_alive_only_after_a_quiet_interval() {
    let app = in_process_app_with(&[("NOTIFY_KEEPALIVE", "2s")]).await;
    let mut s = app.subscribe("u1").await;

    // Every item with its arrival time: 15 notifications 200 ms apart, then
    // quiet until the first keep-alive.
    let mut items = Vec::new();
    let mut published = Vec::new();
    for n in 0..15 {
        published.push(app.publish_n("u1", n).await);
        loop {
            match s.try_next_item(Duration::from_secs(5)).await {
                Ok(Some(SseItem::Event(e))) => {
                    items.push((Some(e.id.parse::<u64>().unwrap()), Instant::now()));
                    break;
                }
                Ok(Some(SseItem::Comment { at, .. })) => items.push((None, at)),
                other => panic!("expected a notification, got {other:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match s.try_next_item(Duration::from_secs(6)).await {
        Ok(Some(SseItem::Comment { text, at })) => {
            assert_eq!(text, " keep-alive");
            items.push((None, at));
        }
        other => panic!("expected a keep-alive once quiet, got {other:?}"),
    }

    let ids: Vec<u64> = items.iter().filter_map(|(id, _)| *id).collect();
    assert_eq!(ids, published);
    // Every keep-alive follows a silence of about the interval (the one
    // before this change came every 2 s whatever the traffic, so within
    // 200 ms of a notification).
    for pair in items.windows(2) {
        if pair[1].0.is_none() {
            let silence = pair[1].1 - pair[0].1;
            assert!(
                silence >= Duration::from_secs(1),
                "a keep-alive {silence:?} after the previous frame, with a 2 s interval"
            );
        }
    }
}

#[tokio::test]
async fn every_tab_of_a_user_gets_its_own_keep_alives() {
    let app = in_process_app_with(&[("NOTIFY_KEEPALIVE", "1s")]).await;
    let mut first = app.subscribe("u1").await;
    let mut second = app.subscribe("u1").await;

    for (tab, s) in [("first", &mut first), ("second", &mut second)] {
        for _ in 0..2 {
            match s.try_next_item(Duration::from_secs(3)).await {
                Ok(Some(SseItem::Comment { text, .. })) => assert_eq!(text, " keep-alive"),
                other => panic!("{tab} tab: expected a keep-alive comment, got {other:?}"),
            }
        }
    }
}

// Asserts metric values: a process of its own (the recorder is process-global).
#[tokio::test]
async fn closing_a_stream_frees_its_connection_without_any_traffic() {
    let app = spawn_app_with(&[("NOTIFY_KEEPALIVE", "600s")]).await;
    let s = app.subscribe("u1").await;
    app.wait_metric("notify_connections_open", &[], |v| v == 1.0)
        .await;
    app.wait_metric("notify_users_online", &[], |v| v == 1.0)
        .await;

    drop(s);

    app.wait_metric("notify_connections_open", &[], |v| v == 0.0)
        .await;
    app.wait_metric("notify_users_online", &[], |v| v == 0.0)
        .await;
}
