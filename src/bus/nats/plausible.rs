//! Is a live message one the user's stream stored? (docs/protocol.md §2)
//!
//! Only the streams may publish to `<prefix>.live.>` in the shipped
//! permission model, but a live message is still checked before it moves a
//! browser's cursor: one with a sequence above the stream's last would make
//! every later real notification look old, so it is never delivered.
//!
//! Per stream, a watermark holds the highest sequence known to exist
//! (learned from stream info, the subscribe-time head and history reads).
//! A message at or below it is delivered at once. A message above it
//! waits for a stream-info request started after it arrived (the leader
//! has stored it by then, so a real one is at or below the reply's last
//! sequence). One request per stream is in flight at a time: every message
//! that arrives meanwhile is settled by the next reply, so under load the
//! cost is about one request per stream per round trip, not per message.
//! Each user's messages are checked in order by that user's forwarder, so
//! nothing is reordered, and a held message waits in the subscription's
//! bounded buffer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::stream;

use crate::metrics::metrics;

/// Longest wait for one stream-info reply.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);
/// Stream-info replies after a message's arrival that must all show it
/// missing before it is called forged (the second covers a replica that
/// republished a moment before the leader answered).
const CONFIRMATIONS: u32 = 2;

/// What the stream says about a live message's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// At or below the stream's last sequence.
    Stored,
    /// Above the stream's last sequence: never stored there.
    Forged,
    /// The stream could not be asked (NATS unavailable): the caller falls
    /// back to a history read, which only returns stored messages.
    Unknown,
}

/// The highest sequence known to exist in one stream.
#[derive(Default)]
pub(super) struct Watermark {
    known: AtomicU64,
    /// One stream-info request at a time; later messages wait for it.
    refresh: tokio::sync::Mutex<()>,
    /// Failed requests so far: a message that waited behind a failure
    /// gives up at once instead of queueing its own timeout (while NATS
    /// is away, every forwarder would otherwise wait its turn).
    failures: AtomicU64,
}

impl Watermark {
    /// Records that `sequence` exists in the stream.
    pub(super) fn saw(&self, sequence: u64) {
        self.known.fetch_max(sequence, Ordering::AcqRel);
    }

    /// Whether `stream` stored a message with `sequence`.
    pub(super) async fn check(&self, stream: &stream::Stream, sequence: u64) -> Verdict {
        let mut confirmations = 0;
        loop {
            if sequence <= self.known.load(Ordering::Acquire) {
                return Verdict::Stored;
            }
            let failures = self.failures.load(Ordering::Acquire);
            let _one = self.refresh.lock().await;
            if sequence <= self.known.load(Ordering::Acquire) {
                return Verdict::Stored;
            }
            if self.failures.load(Ordering::Acquire) != failures {
                return Verdict::Unknown;
            }
            // Started after the message arrived (it holds the lock now).
            metrics().live_sequence_checks.increment(1);
            let last = match tokio::time::timeout(REFRESH_TIMEOUT, stream.get_info()).await {
                Ok(Ok(info)) => info.state.last_sequence,
                _ => {
                    self.failures.fetch_add(1, Ordering::AcqRel);
                    return Verdict::Unknown;
                }
            };
            self.saw(last);
            if sequence <= last {
                return Verdict::Stored;
            }
            confirmations += 1;
            if confirmations >= CONFIRMATIONS {
                return Verdict::Forged;
            }
        }
    }
}
