//! NATS access control (docs/protocol.md §2 "Access control"): a node
//! authenticates to servers that require it, and refused or incomplete
//! credentials stop start-up with one line naming the setting.

use std::time::Duration;

use crate::helpers::spawn_process;
use crate::support::{new_secret, report, start_node, users, Nats};

/// Starts a node that must stop at once; returns its one `error:` line.
async fn start_up_error(envs: &[(&str, &str)]) -> String {
    let mut node = spawn_process(envs);
    let status = node
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("the node kept running; stderr:\n{}", node.stderr()));
    let stderr = node.stderr();
    assert_eq!(status.code(), Some(2), "exit status; stderr:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line; stderr:\n{stderr}");
    errors[0].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_connects_with_its_user_and_is_refused_with_a_wrong_password() {
    // The shipped permission model (every test cluster runs with it).
    let nats = Nats::cluster().await;
    let secret = new_secret();
    let urls = nats.urls();
    let gateway = users().gateway.user.as_str();

    // start_node passes the gateway user's credentials.
    let node = start_node(&secret, &urls, 3, &[]).await;
    assert!(node.publish_n("u1", 1).await > 0, "a publish is stored");

    let base: Vec<(&str, &str)> = vec![
        ("NOTIFY_JWT_SECRET", &secret),
        ("NOTIFY_NATS_URL", &urls),
        ("NOTIFY_STREAM_REPLICAS", "3"),
    ];
    let mut wrong = base.clone();
    wrong.extend([
        ("NOTIFY_NATS_USER", gateway),
        ("NOTIFY_NATS_PASSWORD", "not-the-password"),
    ]);
    let line = start_up_error(&wrong).await;
    assert!(
        line.starts_with("error: NOTIFY_NATS_PASSWORD: ") && line.contains("authorization"),
        "{line}"
    );
    report("nats_access", &line);

    let line = start_up_error(&base).await;
    assert!(
        line.starts_with("error: NOTIFY_NATS_URL: ") && line.contains("authorization"),
        "without credentials: {line}"
    );
    report("nats_access", &line);
}

#[tokio::test]
async fn incomplete_or_conflicting_nats_credentials_stop_start_up_naming_the_variable() {
    let secret = new_secret();
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("NOTIFY_NATS_USER", "gateway")], "NOTIFY_NATS_PASSWORD"),
        (&[("NOTIFY_NATS_PASSWORD", "pw")], "NOTIFY_NATS_USER"),
        (
            &[("NOTIFY_NATS_TLS_CERT_FILE", "Cargo.toml")],
            "NOTIFY_NATS_TLS_KEY_FILE",
        ),
        (
            &[
                ("NOTIFY_NATS_TOKEN", "t"),
                ("NOTIFY_NATS_USER", "gateway"),
                ("NOTIFY_NATS_PASSWORD", "pw"),
            ],
            "NOTIFY_NATS_TOKEN",
        ),
        (
            &[("NOTIFY_NATS_CREDS_FILE", "/nonexistent/gateway.creds")],
            "NOTIFY_NATS_CREDS_FILE",
        ),
    ];
    for (extra, named) in cases {
        let mut envs: Vec<(&str, &str)> = vec![
            ("NOTIFY_JWT_SECRET", &secret),
            // Never contacted: the settings are refused first.
            ("NOTIFY_NATS_URL", "nats://127.0.0.1:1"),
        ];
        envs.extend_from_slice(extra);
        let line = start_up_error(&envs).await;
        assert!(
            line.starts_with(&format!("error: {named}: ")),
            "{extra:?}: {line}"
        );
    }
}
