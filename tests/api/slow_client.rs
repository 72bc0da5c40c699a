//! A client that stops reading is disconnected instead of buffered without
//! limit; other clients are unaffected and memory stays bounded.

use std::time::Instant;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::helpers::*;

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_while_others_get_everything_and_memory_stays_bounded(
) {
    let app = spawn_app_with(&[("NOTIFY_SINK_QUEUE", "4")]).await;
    let mut fast = app.subscribe("fast").await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket
        .connect(format!("127.0.0.1:{}", app.port).parse().unwrap())
        .await
        .unwrap();
    let request = format!(
        "GET {SUBSCRIBE}?token={} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: text/event-stream\r\n\r\n",
        app.user_token("slow"),
        app.port
    );
    slow.write_all(request.as_bytes()).await.unwrap();
    app.wait_metric("notify_connections_open", &[], |v| v == 2.0)
        .await;
    let rss_before = proc_status_kib(app.pid(), "VmRSS");

    let big = "x".repeat(32 * 1024);
    let mut fast_ids = Vec::new();
    for i in 0..300 {
        app.publish(
            "slow",
            &json!({"type": "bulk", "message": big, "data": {"i": i}}),
        )
        .await;
        if i % 10 == 0 {
            fast_ids.push(app.publish_n("fast", i).await);
        }
    }

    assert_eq!(
        fast.message_ids(fast_ids.len()).await,
        fast_ids,
        "the fast client lost nothing"
    );
    app.wait_metric(
        "notify_notifications_dropped_total",
        &[("reason", "slow_consumer")],
        |v| v >= 1.0,
    )
    .await;
    app.wait_metric("notify_connections_open", &[], |v| v == 1.0)
        .await;
    let peak = proc_status_kib(app.pid(), "VmHWM");
    assert!(
        peak.saturating_sub(rss_before) < 64 * 1024,
        "RSS grew from {rss_before} KiB to a peak of {peak} KiB"
    );

    // Reading now shows the server ended the slow stream instead of holding
    // the whole 9.6 MB for it.
    let deadline = Instant::now() + DEADLINE;
    let mut received = 0usize;
    let mut tail = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, slow.read(&mut buf)).await {
            Err(_) => panic!("slow stream still open after reading {received} bytes"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                received += n;
                tail.extend_from_slice(&buf[..n]);
                let keep = tail.len().saturating_sub(16);
                tail.drain(..keep);
                // The final chunk of a chunked body: the response is over.
                if tail.ends_with(b"\r\n0\r\n\r\n") {
                    break;
                }
            }
        }
    }
    assert!(
        received < 300 * 32 * 1024,
        "all {received} bytes were buffered for the slow client"
    );
}
