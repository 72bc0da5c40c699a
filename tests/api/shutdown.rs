//! SIGTERM drain: readiness off first, new streams refused, open streams
//! ended by the node (spread over the grace period), then exit 0.

use std::time::{Duration, Instant};

use crate::helpers::*;

const GRACE: Duration = Duration::from_secs(2);

#[tokio::test]
async fn sigterm_turns_readiness_off_refuses_new_streams_ends_open_ones_and_exits_zero() {
    let mut app = spawn_app_with(&[("NOTIFY_SHUTDOWN_GRACE", "2s")]).await;
    let mut streams = Vec::new();
    for user in ["u1", "u1", "u2", "u2", "u3", "u3"] {
        streams.push(app.subscribe(user).await);
    }
    app.wait_metric("notify_connections_open", &[], |v| v == 6.0)
        .await;
    let late_token = app.user_token("u4");

    let sent = Instant::now();
    app.sigterm();
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                s.expect_eof(GRACE + Duration::from_secs(3)).await;
                Instant::now()
            })
        })
        .collect();

    // Readiness turns off while the node drains.
    app.wait_readyz(503).await;
    if let Ok(r) = app.client.get(app.url("/metrics")).send().await {
        let m = Metrics::parse(&r.text().await.unwrap_or_default());
        if m.has("notify_draining") {
            assert_eq!(m.value("notify_draining", &[]), Some(1.0));
            assert_eq!(m.value("notify_ready", &[]), Some(0.0));
        }
    }
    // A new stream is refused (or the listener is already closed).
    match app.subscribe_request(&late_token).send().await {
        Ok(resp) => {
            assert_error(resp, 503, "draining").await;
        }
        Err(e) => assert!(e.is_connect() || e.is_request(), "unexpected error {e:?}"),
    }
    // Every open stream ends cleanly, not all in the same instant (so that
    // browsers do not all reconnect at once).
    let mut ended = Vec::new();
    for r in readers {
        ended.push(r.await.expect("stream reader"));
    }
    let status = app
        .wait_exit((GRACE + Duration::from_secs(3)).saturating_sub(sent.elapsed()))
        .await
        .expect("process exits within grace + 3 s");

    assert!(status.success(), "exit status {status:?}");
    assert!(
        sent.elapsed() <= GRACE + Duration::from_secs(3),
        "took {:?}",
        sent.elapsed()
    );
    let first = ended.iter().min().unwrap();
    let last = ended.iter().max().unwrap();
    assert!(
        *last - *first >= Duration::from_millis(40),
        "all six streams ended within {:?}: the drain is not spread out",
        *last - *first
    );
}

#[tokio::test]
async fn sigterm_on_an_idle_node_exits_zero_within_the_grace_period() {
    let mut app = spawn_app_with(&[("NOTIFY_SHUTDOWN_GRACE", "2s")]).await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);

    app.sigterm();
    let status = app.wait_exit(GRACE + Duration::from_secs(3)).await;

    let status = status.expect("process exits within grace + 3 s");
    assert!(status.success(), "exit status {status:?}");
}
