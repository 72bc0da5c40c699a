//! Draining: on SIGTERM the node stops being ready, refuses new streams and
//! ends its open ones itself, spread over the grace period, so browsers
//! reconnect to other nodes and resume with `Last-Event-ID`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Whether the node is draining.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
}

impl Lifecycle {
    /// True after a shutdown signal.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks the node as draining (readiness turns false at once).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// Time left for in-flight responses to finish after the streams have ended.
pub const FLUSH_TIME: Duration = Duration::from_millis(1000);

/// How long stream closes are spread over within `grace`.
pub fn close_spread(grace: Duration) -> Duration {
    grace.saturating_sub(FLUSH_TIME + Duration::from_millis(500))
}

/// Resolves at the first SIGTERM or SIGINT.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stopping only on Ctrl+C");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
