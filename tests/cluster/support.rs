//! The harness of the clustering tests: `test_support` (NATS servers and
//! clusters, gateway nodes, the follower and the audit) with the start-up
//! helpers bound to this build's `campusbite-notify` binary.

pub use test_support::*;

test_support::node_helpers!();

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// JetStream publishes, acknowledged, round robin over `users` until
/// stopped: the flow that streams open or resume into.
pub struct PublishFlow {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<BTreeMap<String, Vec<u64>>>,
}

impl PublishFlow {
    /// Starts publishing; each message's `Nats-Msg-Id` is `<msg_id_prefix>-<n>`.
    pub fn start(
        producer: Arc<NatsClient>,
        users: Vec<String>,
        msg_id_prefix: &'static str,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut acked: BTreeMap<String, Vec<u64>> = BTreeMap::new();
                let mut n = 0usize;
                while !stop.load(Ordering::Acquire) {
                    let user = &users[n % users.len()];
                    let id =
                        publish_note(&producer, user, n, &format!("{msg_id_prefix}-{n}")).await;
                    acked.entry(user.clone()).or_default().push(id);
                    n += 1;
                }
                acked
            }
        });
        Self { stop, task }
    }

    /// Stops after the publish in progress; each user's acknowledged ids, in order.
    pub async fn stop(self) -> BTreeMap<String, Vec<u64>> {
        self.stop.store(true, Ordering::Release);
        self.task.await.expect("publisher")
    }
}

/// Publishes `note(n)` to `user` over JetStream, retried until acknowledged; its id.
pub async fn publish_note(producer: &NatsClient, user: &str, n: usize, msg_id: &str) -> u64 {
    let payload = note(n).to_string();
    producer
        .js_publish_acked(
            &format!("{USER_SUBJECT}.{user}"),
            msg_id,
            payload.as_bytes(),
        )
        .await
}
