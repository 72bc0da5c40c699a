//! Resume: `Last-Event-ID` / `lastEventId` replay from the per-user history,
//! the start frame, the `reset` event and the history limits.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

/// Opens a resumed stream for `user` with the cursor in the header.
async fn resume_header(app: &NodeApi, user: &str, cursor: &str) -> SseStream {
    let req = app
        .subscribe_request(&app.user_token(user))
        .header("Last-Event-ID", cursor);
    app.subscribe_with(req).await
}

#[tokio::test]
async fn reconnecting_with_last_event_id_replays_what_was_missed_in_order_then_continues_live() {
    let app = in_process_app().await;
    let mut s = app.subscribe("u1").await;
    let a = app.publish_n("u1", 0).await;
    let b = app.publish_n("u1", 1).await;
    let c = app.publish_n("u1", 2).await;
    assert_eq!(s.next_message().await.0, a);
    drop(s);
    let d = app.publish_n("u1", 3).await;
    let e = app.publish_n("u1", 4).await;

    let mut s = resume_header(&app, "u1", &a.to_string()).await;
    let replayed = s.message_ids(4).await;
    let f = app.publish_n("u1", 5).await;

    assert_eq!(replayed, vec![b, c, d, e]);
    assert_eq!(
        s.next_message().await.0,
        f,
        "live continues after the replay, no dup, no gap"
    );
    assert!(
        s.start_id.unwrap() < b,
        "start frame must not skip past the replay"
    );
}

#[tokio::test]
async fn replayed_notifications_carry_the_same_data_as_when_they_were_published() {
    let app = in_process_app().await;
    let s = app.subscribe("u1").await;
    let cursor = s.start_id.unwrap();
    drop(s);
    let a = app.publish_n("u1", 7).await;

    let mut s = resume_header(&app, "u1", &cursor.to_string()).await;

    let (id, data) = s.next_message().await;
    assert_eq!(id, a);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&data).unwrap(),
        note(7)
    );
}

#[tokio::test]
async fn the_last_event_id_query_parameter_resumes_like_the_header() {
    let app = in_process_app().await;
    let a = app.publish_n("u1", 0).await;
    let b = app.publish_n("u1", 1).await;
    let c = app.publish_n("u1", 2).await;

    let req = app
        .subscribe_request(&app.user_token("u1"))
        .query(&[("lastEventId", a.to_string())]);
    let mut s = app.subscribe_with(req).await;

    assert_eq!(s.message_ids(2).await, vec![b, c]);
    app.publish_n_expecting(&mut s, "u1", 3).await;
}

#[tokio::test]
async fn the_last_event_id_header_wins_over_the_query_parameter() {
    let app = in_process_app().await;
    let a = app.publish_n("u1", 0).await;
    app.publish_n("u1", 1).await;
    let c = app.publish_n("u1", 2).await;
    let d = app.publish_n("u1", 3).await;

    // The page was opened with lastEventId=a; the browser has since seen c.
    let req = app
        .subscribe_request(&app.user_token("u1"))
        .query(&[("lastEventId", a.to_string())])
        .header("Last-Event-ID", c.to_string());
    let mut s = app.subscribe_with(req).await;

    assert_eq!(
        s.next_message().await.0,
        d,
        "replay starts after the header's id"
    );
    app.publish_n_expecting(&mut s, "u1", 4).await;
}

#[tokio::test]
async fn a_connection_that_received_nothing_resumes_losslessly_from_its_start_frame() {
    let app = in_process_app().await;
    let s = app.subscribe("u1").await;
    let cursor = s.last_event_id().to_string();
    assert_eq!(cursor, s.start_id.unwrap().to_string());
    drop(s);

    let missed = app.publish_n("u1", 0).await;
    let mut s = resume_header(&app, "u1", &cursor).await;

    assert_eq!(s.next_message().await.0, missed);
    app.publish_n_expecting(&mut s, "u1", 1).await;
}

#[tokio::test]
async fn resuming_from_the_latest_id_replays_nothing_and_continues_live() {
    let app = in_process_app().await;
    app.publish_n("u1", 0).await;
    let latest = app.publish_n("u1", 1).await;

    let mut s = resume_header(&app, "u1", &latest.to_string()).await;
    app.publish_n_expecting(&mut s, "u1", 2).await;
}

#[tokio::test]
async fn a_full_default_history_of_100_is_replayed_in_order_without_reset() {
    let app = in_process_app().await;
    let s = app.subscribe("u1").await;
    let cursor = s.start_id.unwrap();
    drop(s);
    let mut published = Vec::new();
    for n in 0..100 {
        published.push(app.publish_n("u1", n).await);
    }

    let mut s = resume_header(&app, "u1", &cursor.to_string()).await;

    // message_ids panics on any non-message event, so a reset would fail here.
    assert_eq!(s.message_ids(100).await, published);
}

#[tokio::test]
async fn a_non_decimal_last_event_id_is_refused_with_400() {
    let app = in_process_app().await;
    let token = app.user_token("u1");

    for bad in ["abc", "-1", "1.5", "0x10", "12abc", "18446744073709551616"] {
        let resp = app
            .subscribe_request(&token)
            .header("Last-Event-ID", bad)
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "invalid_last_event_id").await;

        let resp = app
            .subscribe_request(&token)
            .query(&[("lastEventId", bad)])
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "invalid_last_event_id").await;
    }
}

#[tokio::test]
async fn a_cursor_older_than_the_history_gets_a_reset_event_then_what_is_retained() {
    let app = in_process_app_with(&[("NOTIFY_HISTORY_DEPTH", "3")]).await;
    let s = app.subscribe("u1").await;
    let cursor = s.start_id.unwrap();
    drop(s);
    let mut published = Vec::new();
    for n in 0..5 {
        published.push(app.publish_n("u1", n).await);
    }

    let mut s = resume_header(&app, "u1", &cursor.to_string()).await;

    let reset = s.next_event().await;
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.json(), json!({"reason": "history_truncated"}));
    assert_eq!(s.message_ids(3).await, published[2..].to_vec());
    app.publish_n_expecting(&mut s, "u1", 5).await;
}

#[tokio::test]
async fn resuming_from_just_before_the_oldest_retained_notification_needs_no_reset() {
    let app = in_process_app_with(&[("NOTIFY_HISTORY_DEPTH", "3")]).await;
    let mut published = Vec::new();
    for n in 0..5 {
        published.push(app.publish_n("u1", n).await);
    }

    // The client saw published[1]; published[2..] are all retained.
    let mut s = resume_header(&app, "u1", &published[1].to_string()).await;

    assert_eq!(s.message_ids(3).await, published[2..].to_vec());
}

#[tokio::test]
async fn notifications_older_than_the_history_max_age_are_not_replayed() {
    let app = in_process_app_with(&[("NOTIFY_HISTORY_MAX_AGE", "1s")]).await;
    let s = app.subscribe("u1").await;
    let cursor = s.start_id.unwrap();
    drop(s);
    app.publish_n("u1", 0).await;
    // Age is the point of this test: let the first notification expire.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let fresh = app.publish_n("u1", 1).await;

    let mut s = resume_header(&app, "u1", &cursor.to_string()).await;

    let reset = s.next_event().await;
    assert_eq!(
        reset.event, "reset",
        "an expired notification was lost: {reset:?}"
    );
    assert_eq!(reset.json(), json!({"reason": "history_truncated"}));
    assert_eq!(s.next_message().await.0, fresh);
}
