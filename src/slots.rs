//! The node-wide cap on open streams (`NOTIFY_MAX_CONNECTIONS`).
//!
//! A taken [`NodeSlot`] travels with the stream to its user's actor, which
//! holds it in the stream's sink: ending the sink frees the slot at once,
//! even when the HTTP layer never polls or drops the stream's body again
//! (an HTTP/2 stream whose client grants no window).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::metrics::metrics;

/// The open streams of this node, up to a maximum.
pub struct ConnectionSlots {
    open: AtomicU32,
    max: u32,
}

impl ConnectionSlots {
    /// Room for `max` streams.
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicU32::new(0),
            max,
        })
    }

    /// Takes a slot, if one is free.
    pub fn acquire(self: &Arc<Self>) -> Option<NodeSlot> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        taken.ok().map(|_| {
            metrics().connections_open.increment(1.0);
            NodeSlot(self.clone())
        })
    }

    /// Streams open now.
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Acquire)
    }
}

/// One taken slot; freed when dropped.
pub struct NodeSlot(Arc<ConnectionSlots>);

impl Drop for NodeSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        metrics().connections_open.decrement(1.0);
    }
}
