//! Is a live message one the user's stream stored? (docs/protocol.md §2)
//!
//! Only the streams may publish to `<prefix>.live.>` in the shipped
//! permission model, but a live message is still checked before it moves a
//! browser's cursor: one with a sequence above the stream's last would make
//! every later real notification look old, so it is never delivered.
//!
//! Per stream, a [`Watermark`] holds the highest sequence known to exist
//! (learned from stream info, the subscribe-time head and history reads).
//! A message at or below it is delivered at once. A message above it is
//! held by the stream's [`Gate`] until a stream-info request started after
//! it arrived answers (the leader has stored it by then, so a real one is at
//! or below the reply's last sequence). One request per stream is in flight
//! at a time and each reply settles every message that arrived before it
//! started, so under load the cost is about one request per stream per
//! round trip, not per message. A gate releases messages in arrival order:
//! while one is held, later ones of that stream wait behind it, so no
//! user's notifications are reordered.
//!
//! The gate is plain state, driven by the node's live dispatcher
//! (`super::live`), which owns the requests.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::event::Event;
use crate::user_id::UserId;

/// Stream-info replies after a message's arrival that must all show it
/// missing before it is called forged (the second covers a replica that
/// republished a moment before the leader answered).
const CONFIRMATIONS: u32 = 2;

/// The highest sequence known to exist in one stream.
#[derive(Default)]
pub(super) struct Watermark {
    known: AtomicU64,
}

impl Watermark {
    /// Records that `sequence` exists in the stream.
    pub(super) fn saw(&self, sequence: u64) {
        self.known.fetch_max(sequence, Ordering::AcqRel);
    }

    fn known(&self) -> u64 {
        self.known.load(Ordering::Acquire)
    }
}

/// What the gate decided about a live message.
#[derive(Debug)]
pub(super) enum Settled {
    /// Stored by the stream: deliver it to the user.
    Stored(UserId, Event),
    /// Above the stream's last sequence in two replies: drop it.
    Forged(UserId, Event),
    /// The stream could not be asked (NATS unavailable): the user catches
    /// up from history, which holds only stored messages (this one too, if
    /// it is real).
    Unknown(UserId),
}

/// A message waiting for a stream-info reply.
struct Held {
    user: UserId,
    event: Event,
    /// Requests started before it arrived: only later ones can confirm it.
    requests_before: u64,
    /// Replies, started after it arrived, that did not include it.
    missing: u32,
}

/// One stream's live messages on their way to the users' actors.
pub(super) struct Gate {
    watermark: Arc<Watermark>,
    held: VecDeque<Held>,
    /// Stream-info requests started so far.
    started: u64,
    in_flight: bool,
}

impl Gate {
    pub(super) fn new(watermark: Arc<Watermark>) -> Self {
        Self {
            watermark,
            held: VecDeque::new(),
            started: 0,
            in_flight: false,
        }
    }

    /// A live message arrives. Settles it into `out` at once when nothing
    /// of this stream is held and its sequence is known to exist; else
    /// holds it. Returns whether a stream-info request must start now
    /// (then call [`Gate::started`]).
    pub(super) fn arrive(&mut self, user: UserId, event: Event, out: &mut Vec<Settled>) -> bool {
        if self.held.is_empty() && event.id.0 <= self.watermark.known() {
            out.push(Settled::Stored(user, event));
            return false;
        }
        self.held.push_back(Held {
            user,
            event,
            requests_before: self.started,
            missing: 0,
        });
        !self.in_flight
    }

    /// A stream-info request starts; returns its number for
    /// [`Gate::answered`].
    pub(super) fn started(&mut self) -> u64 {
        self.started += 1;
        self.in_flight = true;
        self.started
    }

    /// Request `number` answered with the stream's last sequence (`None`:
    /// it failed). Settles what it can into `out`; returns whether another
    /// request must start for messages still held.
    pub(super) fn answered(
        &mut self,
        number: u64,
        last: Option<u64>,
        out: &mut Vec<Settled>,
    ) -> bool {
        self.in_flight = false;
        let Some(last) = last else {
            out.extend(self.held.drain(..).map(|h| Settled::Unknown(h.user)));
            return false;
        };
        self.watermark.saw(last);
        let known = self.watermark.known();
        while let Some(front) = self.held.front_mut() {
            if front.event.id.0 <= known {
                let Held { user, event, .. } = self.held.pop_front().expect("front exists");
                out.push(Settled::Stored(user, event));
                continue;
            }
            if number > front.requests_before {
                front.missing += 1;
            }
            if front.missing < CONFIRMATIONS {
                break;
            }
            let Held { user, event, .. } = self.held.pop_front().expect("front exists");
            out.push(Settled::Forged(user, event));
        }
        !self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventId;
    use bytes::Bytes;

    fn user(name: &str) -> UserId {
        UserId::parse(name).expect("valid user id")
    }

    fn event(id: u64) -> Event {
        Event::with_frame(EventId(id), None, Bytes::new())
    }

    fn ids(out: &[Settled]) -> Vec<String> {
        out.iter()
            .map(|s| match s {
                Settled::Stored(u, e) => format!("stored {} {}", u.as_str(), e.id.0),
                Settled::Forged(u, e) => format!("forged {} {}", u.as_str(), e.id.0),
                Settled::Unknown(u) => format!("unknown {}", u.as_str()),
            })
            .collect()
    }

    #[test]
    fn a_message_at_or_below_the_watermark_passes_at_once() {
        let watermark = Arc::new(Watermark::default());
        watermark.saw(7);
        let mut gate = Gate::new(watermark.clone());
        let mut out = Vec::new();
        assert!(!gate.arrive(user("a"), event(7), &mut out));
        assert_eq!(ids(&out), ["stored a 7"]);
    }

    #[test]
    fn held_messages_are_released_in_arrival_order_by_one_reply() {
        let watermark = Arc::new(Watermark::default());
        let mut gate = Gate::new(watermark.clone());
        let mut out = Vec::new();
        assert!(gate.arrive(user("a"), event(1), &mut out));
        let first = gate.started();
        // Arrivals while the request is in flight wait for it, even one
        // below the watermark (it must not overtake the held ones).
        assert!(!gate.arrive(user("b"), event(2), &mut out));
        assert!(!gate.arrive(user("a"), event(3), &mut out));
        assert!(out.is_empty());
        assert!(!gate.answered(first, Some(3), &mut out));
        assert_eq!(ids(&out), ["stored a 1", "stored b 2", "stored a 3"]);
        assert_eq!(watermark.known(), 3);
    }

    #[test]
    fn a_message_above_two_later_replies_is_forged_and_frees_the_ones_behind_it() {
        let watermark = Arc::new(Watermark::default());
        let mut gate = Gate::new(watermark.clone());
        let mut out = Vec::new();
        assert!(gate.arrive(user("a"), event(1_000), &mut out));
        let first = gate.started();
        assert!(!gate.arrive(user("b"), event(5), &mut out));
        assert!(gate.answered(first, Some(5), &mut out));
        assert!(out.is_empty(), "one reply is not enough: {:?}", ids(&out));
        let second = gate.started();
        assert!(!gate.answered(second, Some(5), &mut out));
        assert_eq!(ids(&out), ["forged a 1000", "stored b 5"]);
    }

    #[test]
    fn a_reply_to_a_request_started_before_a_message_arrived_does_not_confirm_it_missing() {
        let watermark = Arc::new(Watermark::default());
        let mut gate = Gate::new(watermark.clone());
        let mut out = Vec::new();
        assert!(gate.arrive(user("a"), event(10), &mut out));
        let first = gate.started();
        assert!(!gate.arrive(user("b"), event(11), &mut out));
        // The reply stores a 10; b 11 arrived after the request started,
        // so this reply says nothing about it.
        assert!(gate.answered(first, Some(10), &mut out));
        assert_eq!(ids(&out), ["stored a 10"]);
        let second = gate.started();
        assert!(gate.answered(second, Some(10), &mut out));
        let third = gate.started();
        assert!(!gate.answered(third, Some(11), &mut out));
        assert_eq!(ids(&out), ["stored a 10", "stored b 11"]);
    }

    #[test]
    fn a_failed_request_sends_every_held_user_to_history() {
        let watermark = Arc::new(Watermark::default());
        let mut gate = Gate::new(watermark.clone());
        let mut out = Vec::new();
        assert!(gate.arrive(user("a"), event(1), &mut out));
        let first = gate.started();
        assert!(!gate.arrive(user("b"), event(2), &mut out));
        assert!(!gate.answered(first, None, &mut out));
        assert_eq!(ids(&out), ["unknown a", "unknown b"]);
        // The gate is empty again: the next message starts a new request.
        assert!(gate.arrive(user("c"), event(3), &mut out));
    }
}
