//! A client that stops reading is disconnected instead of buffered without
//! limit; other clients are unaffected and memory stays bounded.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpSocket;

use crate::helpers::*;
use crate::tls;

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
    let (received, _) = read_to_end_of_response(&mut slow).await;
    assert!(
        received < 300 * 32 * 1024,
        "all {received} bytes were buffered for the slow client"
    );
}

/// Reads `stream` until the server ends it (EOF, an error, or the final
/// chunk of a chunked body); returns the bytes read and whether the body
/// ended cleanly (its final chunk) rather than with the connection.
pub async fn read_to_end_of_response(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
) -> (usize, bool) {
    let deadline = Instant::now() + DEADLINE;
    let mut received = 0usize;
    let mut tail = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!("stream still open after reading {received} bytes"),
            Ok(Ok(0)) | Ok(Err(_)) => return (received, false),
            Ok(Ok(n)) => {
                received += n;
                tail.extend_from_slice(&buf[..n]);
                let keep = tail.len().saturating_sub(16);
                tail.drain(..keep);
                if tail.ends_with(b"\r\n0\r\n\r\n") {
                    return (received, true);
                }
            }
        }
    }
}

/// The server's memory may grow by this much while it serves clients that
/// stopped reading: the queues are 4 frames per stream, everything else
/// is cut off; buffering what was published (~10 MB) would exceed it.
const RSS_BOUND_KIB: u64 = 64 * 1024;

/// Publishes 32 KiB notifications for `user` until the node has cut off
/// every stream it had (at most 300), then waits for both gauges to be 0.
async fn flood_until_cut_off(app: &tls::TlsApp, publisher: &mut tls::H2, user: &str) {
    let big = "x".repeat(32 * 1024);
    for i in 0..300 {
        let open = app
            .metrics_tls()
            .await
            .value_or_zero("notify_connections_open", &[]);
        if open == 0.0 {
            break;
        }
        let note = json!({"type": "bulk", "message": big, "data": {"i": i}});
        app.publish_on(publisher, user, &note).await;
    }
    app.wait_metric_tls("notify_connections_open", |v| v == 0.0)
        .await;
    app.wait_metric_tls("notify_users_online", |v| v == 0.0)
        .await;
}

#[tokio::test]
async fn over_tls_a_client_that_stops_reading_is_cut_off_and_every_slot_it_held_is_freed() {
    let app = tls::spawn_tls_app(&[
        ("NOTIFY_SINK_QUEUE", "4"),
        ("NOTIFY_MAX_CONNECTIONS_PER_USER", "1"),
    ])
    .await;
    let mut publisher = app.h2(65_535).await;
    let mut slow = app.stopped_h1_reader("slow").await;
    app.wait_metric_tls("notify_connections_open", |v| v == 1.0)
        .await;
    // The stopped reader holds the user's only slot: another stream waits.
    let mut tab = app.h2(65_535).await;
    let refused = app.h2_subscribe(&mut tab, &app.user_token("slow")).await;
    assert_eq!(refused.unwrap().status().as_u16(), 429);
    let rss_before = proc_status_kib(app.pid(), "VmRSS");

    flood_until_cut_off(&app, &mut publisher, "slow").await;
    let peak = proc_status_kib(app.pid(), "VmHWM");
    assert!(
        peak.saturating_sub(rss_before) < RSS_BOUND_KIB,
        "RSS grew from {rss_before} KiB to a peak of {peak} KiB"
    );
    // The slot is free: the same user is admitted again.
    // (Kept until the end: dropping it would cancel the stream.)
    let admitted = app.h2_subscribe(&mut tab, &app.user_token("slow")).await;
    let admitted = admitted.unwrap();
    assert_eq!(admitted.status().as_u16(), 200);
    app.wait_metric_tls("notify_connections_open", |v| v == 1.0)
        .await;
    // And the cut-off connection is over: its socket was shut down (the
    // body did not end cleanly), after far less than was published.
    let (received, clean) = read_to_end_of_response(&mut slow).await;
    assert!(!clean, "the TLS connection was not cut off");
    assert!(received < 300 * 32 * 1024, "{received} bytes were buffered");
}

/// The error an HTTP/2 stream's body ends with, if it was reset.
pub async fn h2_stream_end(body: &mut h2::RecvStream) -> Option<h2::Reason> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.data()).await {
            Err(_) => panic!("the HTTP/2 stream did not end"),
            Ok(None) => return None,
            Ok(Some(Err(e))) => return Some(e.reason().expect("a stream reset")),
            Ok(Some(Ok(chunk))) => {
                let _ = body.flow_control().release_capacity(chunk.len());
            }
        }
    }
}

#[tokio::test]
async fn over_http2_a_stream_with_no_window_is_reset_and_frees_every_slot_the_connection_lives_on()
{
    let app = tls::spawn_tls_app(&[
        ("NOTIFY_SINK_QUEUE", "4"),
        ("NOTIFY_MAX_CONNECTIONS_PER_USER", "2"),
    ])
    .await;
    let mut publisher = app.h2(65_535).await;
    // A connection whose streams never get a byte of window.
    let mut stopped = app.h2(0).await;
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let response = app
            .h2_subscribe(&mut stopped, &app.user_token("slow"))
            .await;
        let response = response.expect("response head");
        assert_eq!(response.status().as_u16(), 200);
        bodies.push(response.into_body());
    }
    app.wait_metric_tls("notify_connections_open", |v| v == 2.0)
        .await;
    // Stopped readers hold both of the user's slots: a third stream waits.
    let refused = app
        .h2_subscribe(&mut stopped, &app.user_token("slow"))
        .await;
    assert_eq!(refused.unwrap().status().as_u16(), 429);
    let rss_before = proc_status_kib(app.pid(), "VmRSS");

    flood_until_cut_off(&app, &mut publisher, "slow").await;
    for body in &mut bodies {
        assert_eq!(h2_stream_end(body).await, Some(h2::Reason::CANCEL));
    }
    let peak = proc_status_kib(app.pid(), "VmHWM");
    assert!(
        peak.saturating_sub(rss_before) < RSS_BOUND_KIB,
        "RSS grew from {rss_before} KiB to a peak of {peak} KiB"
    );
    // Only the streams were ended: the connection takes a new one, and the
    // user's slots are free again.
    // (Kept until the end: dropping it would cancel the stream.)
    let admitted = app
        .h2_subscribe(&mut stopped, &app.user_token("slow"))
        .await;
    let admitted = admitted.unwrap();
    assert_eq!(admitted.status().as_u16(), 200);
    app.wait_metric_tls("notify_connections_open", |v| v == 1.0)
        .await;
    drop(admitted);
}

/// Whether the client reads its socket: once stopped, reads stay pending
/// (their waker kept) until resumed.
#[derive(Default)]
struct ReadGate {
    stopped: AtomicBool,
    parked: Mutex<Option<Waker>>,
}

impl ReadGate {
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    fn resume(&self) {
        self.stopped.store(false, Ordering::SeqCst);
        if let Some(waker) = self.parked.lock().unwrap().take() {
            waker.wake();
        }
    }
}

/// `io` read through a `ReadGate`; writes pass.
struct Gated<T> {
    io: T,
    gate: Arc<ReadGate>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Gated<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        {
            // Checked under the lock: `resume` clears the flag before it
            // takes the waker, so no wake-up is lost.
            let mut parked = self.gate.parked.lock().unwrap();
            if self.gate.stopped.load(Ordering::SeqCst) {
                *parked = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Gated<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn over_http2_a_connection_that_stops_reading_is_shut_down_and_frees_every_slot_it_held() {
    let app = tls::spawn_tls_app(&[
        ("NOTIFY_SINK_QUEUE", "4"),
        ("NOTIFY_MAX_CONNECTIONS_PER_USER", "2"),
    ])
    .await;
    let mut publisher = app.h2(65_535).await;
    // A browser's windows (Chromium: 6 MiB a stream, 15 MiB the connection):
    // flow control never stops the server, the full TCP buffers do.
    let gate = Arc::new(ReadGate::default());
    let io = Gated {
        io: app.tls_connect(b"h2", Some(4096)).await,
        gate: gate.clone(),
    };
    let mut stopped = tls::h2_handshake(io, 6 << 20, Some(15 << 20)).await;
    let mut responses = Vec::new();
    for _ in 0..2 {
        let response = app
            .h2_subscribe(&mut stopped, &app.user_token("slow"))
            .await;
        let response = response.expect("response head");
        assert_eq!(response.status().as_u16(), 200);
        responses.push(response);
    }
    app.wait_metric_tls("notify_connections_open", |v| v == 2.0)
        .await;
    app.wait_metric_tls("notify_users_online", |v| v == 1.0)
        .await;
    gate.stop();
    let rss_before = proc_status_kib(app.pid(), "VmRSS");

    flood_until_cut_off(&app, &mut publisher, "slow").await;
    let peak = proc_status_kib(app.pid(), "VmHWM");
    assert!(
        peak.saturating_sub(rss_before) < RSS_BOUND_KIB,
        "RSS grew from {rss_before} KiB to a peak of {peak} KiB"
    );
    // Both of the user's slots are free: a new stream is admitted.
    // (Kept until the end: dropping it would cancel the stream.)
    let mut tab = app.h2(65_535).await;
    let admitted = app.h2_subscribe(&mut tab, &app.user_token("slow")).await;
    let admitted = admitted.unwrap();
    assert_eq!(admitted.status().as_u16(), 200);
    app.wait_metric_tls("notify_connections_open", |v| v == 1.0)
        .await;
    // The connection itself was shut down, not only its streams reset: once
    // the client reads again it gets what was buffered, then the end.
    gate.resume();
    tokio::time::timeout(DEADLINE, stopped.driver)
        .await
        .expect("the stopped HTTP/2 connection is still open")
        .expect("the connection task ran to its end")
        .expect_err("the connection ended without an error");
    drop((responses, admitted));
}
