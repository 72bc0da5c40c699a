//! A node never silently changes or ignores an existing stream whose
//! configuration differs from its own: it stops with a clear error.

use std::time::Duration;

use crate::helpers::spawn_process;
use crate::support::{gateway_envs, new_secret, report, start_node, status_of, Nats};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_an_existing_stream_with_an_incompatible_config() {
    let nats = Nats::single().await;
    let secret = new_secret();
    let urls = nats.urls();
    let first = start_node(&secret, &urls, 1, &[("NOTIFY_HISTORY_DEPTH", "100")]).await;

    let base: Vec<(&str, &str)> = vec![
        ("NOTIFY_JWT_SECRET", &secret),
        ("NOTIFY_NATS_URL", &urls),
        ("NOTIFY_STREAM_REPLICAS", "1"),
        gateway_envs()[0],
        gateway_envs()[1],
    ];
    for (setting, value) in [
        ("NOTIFY_HISTORY_DEPTH", "5"),
        ("NOTIFY_HISTORY_MAX_AGE", "1h"),
    ] {
        let mut envs = base.clone();
        envs.push((setting, value));
        let (status, stderr) = spawn_process(&envs)
            .expect_failure(Duration::from_secs(20), &format!("{setting}={value}"))
            .await;
        assert!(
            stderr.contains("CAMPUSBITE_NOTIFY") && stderr.contains(setting),
            "{setting}={value}: the error must name the stream and the setting; stderr:\n{stderr}"
        );
        let line = stderr
            .lines()
            .find(|l| l.contains(setting))
            .unwrap_or_default();
        report(
            "incompatible_stream",
            &format!("{setting}={value}: {status}: {line}"),
        );
    }

    // The stream was left alone: the first node still serves, and a node
    // with the same settings reuses it.
    assert_eq!(status_of(&first.base, "/readyz").await, Some(200));
    let third = start_node(&secret, &urls, 1, &[("NOTIFY_HISTORY_DEPTH", "100")]).await;
    let id = first.publish_n("u1", 1).await;
    let mut s = third
        .subscribe_with(
            third
                .subscribe_request(&third.user_token("u1"))
                .query(&[("lastEventId", "0")]),
        )
        .await;
    assert_eq!(s.next_message().await.0, id);
}
