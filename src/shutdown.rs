//! Draining: on SIGTERM the node stops being ready, refuses new streams and
//! ends its open ones itself, spread over the grace period, so browsers
//! reconnect to other nodes and resume with `Last-Event-ID`. It keeps
//! listening until that spread is over, answering `draining` (softly to
//! browsers) while load balancers may still route to it.

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

/// SIGTERM and SIGINT, caught from the moment this is built (so a signal
/// that arrives during start-up drains instead of killing the process).
pub struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves at the first SIGTERM or SIGINT.
    pub async fn recv(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}
