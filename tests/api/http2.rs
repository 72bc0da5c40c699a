//! HTTP/2 (TLS, ALPN `h2`): the per-connection limits, token expiry of
//! streams whose clients stopped reading, and empty DATA frames flooded at
//! open request streams (RUSTSEC-2026-0258, h2 < 0.4.16: the handlers never
//! keep a request body they do not read, so h2 drops such frames).

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use crate::helpers::*;
use crate::slow_client::{h2_stream_end, read_to_end_of_response};
use crate::tls;

#[tokio::test]
async fn a_connection_carries_at_most_128_concurrent_streams() {
    let app = tls::spawn_tls_app(&[("NOTIFY_MAX_CONNECTIONS_PER_USER", "200")]).await;
    let mut conn = app.h2(65_535).await;
    assert_eq!(
        conn.max_streams.load(Ordering::Relaxed),
        128,
        "SETTINGS_MAX_CONCURRENT_STREAMS"
    );
    let token = app.user_token("many");
    let mut open = Vec::new();
    for _ in 0..128 {
        let response = app.h2_subscribe(&mut conn, &token).await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        open.push(response);
    }
    app.wait_metric_tls("notify_connections_open", |v| v == 128.0)
        .await;
    // The client honours the setting: a 129th stream waits for a free one,
    // and is served as soon as one of the 128 ends.
    drop(open.pop());
    app.wait_metric_tls("notify_connections_open", |v| v == 127.0)
        .await;
    let response = app.h2_subscribe(&mut conn, &token).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    app.wait_metric_tls("notify_connections_open", |v| v == 128.0)
        .await;
}

#[tokio::test]
async fn a_header_list_over_16_kib_is_refused() {
    let app = tls::spawn_tls_app(&[]).await;
    let mut conn = app.h2(65_535).await;
    let small = "a".repeat(8 * 1024);
    let (status, _) = tls::https_on(&mut conn, "GET", "/healthz", &[("x-pad", &small)], None).await;
    assert_eq!(status, 200, "an 8 KiB header list is fine");

    let big = "a".repeat(17 * 1024);
    let (response, _stream) = conn
        .request("GET", "/healthz", &[("x-pad", big.as_str())], false)
        .await;
    match response.await {
        Ok(response) => assert_eq!(response.status().as_u16(), 431),
        Err(e) => assert_eq!(e.reason(), Some(h2::Reason::REFUSED_STREAM), "{e}"),
    }
    // The connection itself is still fine.
    let (status, _) = tls::https_on(&mut conn, "GET", "/healthz", &[], None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn token_expiry_ends_streams_of_clients_that_stopped_reading_over_http2_and_tls() {
    let app = tls::spawn_tls_app(&[("NOTIFY_JWT_LEEWAY", "0s")]).await;
    let token = app.user_token_exp("u1", now_secs() + 3);
    let mut stopped = app.h2(0).await;
    let h2_stream = app.h2_subscribe(&mut stopped, &token).await.unwrap();
    assert_eq!(h2_stream.status().as_u16(), 200);
    let mut h1_stream = app.stopped_h1_reader_with(&token).await;
    app.wait_metric_tls("notify_connections_open", |v| v == 2.0)
        .await;
    app.wait_metric_tls("notify_users_online", |v| v == 1.0)
        .await;

    // At exp both end and free everything they held.
    app.wait_metric_tls("notify_connections_open", |v| v == 0.0)
        .await;
    app.wait_metric_tls("notify_users_online", |v| v == 0.0)
        .await;
    let mut body = h2_stream.into_body();
    assert_eq!(h2_stream_end(&mut body).await, Some(h2::Reason::CANCEL));
    read_to_end_of_response(&mut h1_stream).await;
    // The HTTP/2 connection carries on (a response head needs no window).
    let (head, _stream) = stopped.request("GET", "/healthz", &[], false).await;
    assert_eq!(head.await.expect("response head").status().as_u16(), 200);
}

/// Empty DATA frames sent per open stream (2 million in all).
const FLOOD: usize = 1_000_000;
/// h2 0.3 queues each DATA frame of a stream whose request body is still
/// held (~250 bytes a frame: holding the subscribe payload in a trial made
/// RSS grow by 242 MiB under this test); it drops them once the body is
/// gone. Measured without queuing: ~4.4 MiB of growth with glibc's malloc,
/// ~23 MiB with jemalloc, the binary's allocator (the TLS and h2 read
/// buffers of a busy connection, and the allocator's dirty pages, which it
/// returns to the system over seconds, not at once).
const FLOOD_RSS_BOUND_KIB: u64 = 64 * 1024;

/// Sends `FLOOD` empty DATA frames on `stream`, in batches the server has
/// read (a ping round trip) before the next one.
async fn flood(conn: &mut tls::H2, stream: &mut h2::SendStream<Bytes>) {
    const BATCH: usize = 20_000;
    for _ in 0..FLOOD / BATCH {
        for _ in 0..BATCH {
            stream.send_data(Bytes::new(), false).expect("send DATA");
        }
        conn.sync().await;
    }
}

#[tokio::test]
async fn empty_data_frames_on_open_subscribe_and_publish_streams_are_not_queued() {
    let app = tls::spawn_tls_app(&[]).await;
    let mut conn = app.h2(65_535).await;
    let rss_before = proc_status_kib(app.pid(), "VmRSS");

    // A subscribe stream whose request side stays open.
    let path = format!("{SUBSCRIBE}?token={}", app.user_token("flood"));
    let (response, mut request) = conn.request("GET", &path, &[], true).await;
    let response = response.await.expect("response head");
    assert_eq!(response.status().as_u16(), 200);
    flood(&mut conn, &mut request).await;

    // A publish whose body trickles in as empty frames before the real one.
    let auth = format!("Bearer {}", app.publisher_token());
    let (publish, mut body) = conn
        .request(
            "POST",
            PUBLISH,
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            true,
        )
        .await;
    flood(&mut conn, &mut body).await;
    let note = json!({"userId": "flood", "notification": note(1)}).to_string();
    body.send_data(Bytes::from(note), true).unwrap();
    assert_eq!(
        publish.await.expect("publish answered").status().as_u16(),
        202
    );

    let grown = proc_status_kib(app.pid(), "VmHWM").saturating_sub(rss_before);
    assert!(
        grown < FLOOD_RSS_BOUND_KIB,
        "RSS grew by {grown} KiB under {FLOOD} empty DATA frames per stream"
    );
    // The subscriber still gets its notification.
    let mut events = response.into_body();
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("Notification number 1") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let chunk = tokio::time::timeout(left.max(Duration::from_millis(1)), events.data())
            .await
            .expect("the notification never came")
            .expect("stream open")
            .expect("stream data");
        let _ = events.flow_control().release_capacity(chunk.len());
        seen.extend_from_slice(&chunk);
    }
}
