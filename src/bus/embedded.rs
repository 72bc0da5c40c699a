//! The single-node bus: in-process fan-out plus a bounded in-memory history.
//!
//! One mutex guards the sequence, the history and the subscriber table, so
//! "assign an id, store it, hand it to the online user's actor" is one step:
//! a subscriber never misses a notification and never sees one out of order.
//!
//! Event ids start at the boot time in microseconds, so ids keep increasing
//! across restarts and a client resuming from before the restart is told its
//! history was lost (`reset`) instead of silently skipping new ids.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::Recipient;

use super::{BoxFuture, Bus, BusError, BusMessage, History, Subscription};
use crate::event::{Event, EventId, Payload};
use crate::idempotency::DedupeKey;
use crate::sse;
use crate::user_id::UserId;

/// How often expired history is swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Limits of the in-memory history.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// Notifications kept per user.
    pub depth: usize,
    /// How long a notification is kept.
    pub max_age: Duration,
    /// Total bytes of frames kept on the node.
    pub max_bytes: u64,
}

/// The embedded bus. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedBus {
    state: Arc<Mutex<State>>,
}

struct State {
    limits: HistoryLimits,
    last_id: u64,
    /// Ids up to here may have been forgotten for users without an entry
    /// (the boot point, then the highest eviction of any dropped entry).
    forgotten_through: EventId,
    /// Each user's history and live subscriber, in one entry so a publish
    /// finds both with one lookup. Ids come from verified tokens and
    /// producers, so a fast seeded hash serves instead of SipHash.
    users: Users,
    /// Every stored event in publish order, for age and size eviction.
    /// Entries already evicted by depth stay until compacted.
    order: VecDeque<(EventId, UserId)>,
    retained: usize,
    bytes: u64,
    next_token: u64,
}

type Users = HashMap<UserId, UserEntry, foldhash::fast::RandomState>;

struct UserEntry {
    events: VecDeque<Event>,
    /// The newest id evicted from this log (or forgotten before the entry
    /// existed).
    truncated_through: EventId,
    /// The user's actor while it is subscribed, with its subscription token.
    subscriber: Option<(u64, Recipient<BusMessage>)>,
}

impl UserEntry {
    fn new(truncated_through: EventId) -> Self {
        Self {
            events: VecDeque::new(),
            truncated_through,
            subscriber: None,
        }
    }
}

struct Unsubscribe {
    state: Arc<Mutex<State>>,
    user: UserId,
    token: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        let Some(entry) = state.users.get_mut(&self.user) else {
            return;
        };
        if entry
            .subscriber
            .as_ref()
            .is_some_and(|(t, _)| *t == self.token)
        {
            entry.subscriber = None;
            if entry.events.is_empty() {
                state.forget(&self.user);
            }
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave State half-updated in a
    // way that matters more than stopping delivery would; keep serving.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl EmbeddedBus {
    /// A new bus; spawns its history sweeper on the current runtime.
    pub fn start(limits: HistoryLimits) -> Self {
        let boot_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        let bus = Self::with_first_id(limits, boot_micros);
        let weak = Arc::downgrade(&bus.state);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { break };
                lock(&state).evict(Instant::now());
            }
        });
        bus
    }

    fn with_first_id(limits: HistoryLimits, first_id: u64) -> Self {
        let floor = EventId(first_id.saturating_sub(1));
        Self {
            state: Arc::new(Mutex::new(State {
                limits,
                last_id: floor.0,
                forgotten_through: floor,
                users: HashMap::default(),
                order: VecDeque::new(),
                retained: 0,
                bytes: 0,
                next_token: 0,
            })),
        }
    }

    /// Idempotency-Keys are the HTTP edge's (`crate::idempotency`): one
    /// process, so nothing else can publish the same key here.
    fn publish_now(&self, users: &[UserId], payload: &Payload) -> Vec<EventId> {
        let mut state = lock(&self.state);
        let ids: Vec<EventId> = users
            .iter()
            .map(|user| state.append(user, payload))
            .collect();
        // The byte limit holds after every publish. Age is the sweeper's
        // (once a second): checking it here cost a lookup of the oldest
        // entry's user, on cold memory, per publish.
        if state.bytes > state.limits.max_bytes {
            state.evict(Instant::now());
        }
        ids
    }

    fn history_now(&self, user: &UserId, after: EventId) -> History {
        let state = lock(&self.state);
        let Some(entry) = state.users.get(user) else {
            return History {
                truncated: after < state.forgotten_through,
                events: Vec::new(),
            };
        };
        let first_newer = entry.events.partition_point(|e| e.id <= after);
        History {
            truncated: after < entry.truncated_through,
            events: entry.events.range(first_newer..).cloned().collect(),
        }
    }
}

impl State {
    fn append(&mut self, user: &UserId, payload: &Payload) -> EventId {
        self.last_id += 1;
        let id = EventId(self.last_id);
        let event = sse::event(id, None, payload);
        let size = event.frame.len() as u64;
        let entry = user_entry(&mut self.users, self.forgotten_through, user);
        if let Some((_, actor)) = &entry.subscriber {
            actor.do_send(BusMessage::Event(event.clone()));
        }
        entry.events.push_back(event);
        self.bytes += size;
        self.retained += 1;
        if entry.events.len() > self.limits.depth {
            if let Some(old) = entry.events.pop_front() {
                entry.truncated_through = old.id;
                self.bytes -= old.frame.len() as u64;
                self.retained -= 1;
            }
        }
        self.order.push_back((id, user.clone()));
        id
    }

    /// Drops a user's entry (its log is empty, nobody is subscribed); what
    /// it evicted is remembered node-wide.
    fn forget(&mut self, user: &UserId) {
        if let Some(entry) = self.users.remove(user) {
            self.forgotten_through = self.forgotten_through.max(entry.truncated_through);
        }
    }

    /// Drops notifications past the age or byte limit, oldest first.
    fn evict(&mut self, now: Instant) {
        while let Some((id, user)) = self.order.front() {
            let Some(entry) = self.users.get_mut(user) else {
                self.order.pop_front();
                continue;
            };
            match entry.events.front() {
                Some(oldest) if oldest.id == *id => {
                    let expired = now.duration_since(oldest.received_at) > self.limits.max_age;
                    if !expired && self.bytes <= self.limits.max_bytes {
                        break;
                    }
                    entry.truncated_through = oldest.id;
                    self.bytes -= oldest.frame.len() as u64;
                    self.retained -= 1;
                    entry.events.pop_front();
                    if entry.events.is_empty() && entry.subscriber.is_none() {
                        let user = user.clone();
                        self.forget(&user);
                    }
                }
                // Already evicted by depth.
                _ => {}
            }
            self.order.pop_front();
        }
        // Depth evictions leave stale entries behind; keep the index in proportion.
        if self.order.len() > 2 * self.retained + 1024 {
            let users = &self.users;
            self.order.retain(|(id, user)| {
                users
                    .get(user)
                    .is_some_and(|entry| entry.events.front().is_some_and(|e| e.id <= *id))
            });
        }
    }
}

/// `user`'s entry, made if it has none: an entry made now has lost whatever
/// was forgotten before it (`forgotten_through`).
fn user_entry<'a>(
    users: &'a mut Users,
    forgotten_through: EventId,
    user: &UserId,
) -> &'a mut UserEntry {
    users
        .entry(user.clone())
        .or_insert_with(|| UserEntry::new(forgotten_through))
}

impl Bus for EmbeddedBus {
    fn subscribe(
        &self,
        user: UserId,
        to: Recipient<BusMessage>,
    ) -> BoxFuture<Result<Subscription, BusError>> {
        let mut state = lock(&self.state);
        state.next_token += 1;
        let token = state.next_token;
        let forgotten = state.forgotten_through;
        user_entry(&mut state.users, forgotten, &user).subscriber = Some((token, to));
        let subscription = Subscription {
            head: EventId(state.last_id),
            guard: Box::new(Unsubscribe {
                state: self.state.clone(),
                user,
                token,
            }),
            // One lock orders the subscription and the head read.
            recheck_after: None,
        };
        Box::pin(std::future::ready(Ok(subscription)))
    }

    fn history(&self, user: UserId, after: EventId) -> BoxFuture<Result<History, BusError>> {
        Box::pin(std::future::ready(Ok(self.history_now(&user, after))))
    }

    fn publish(
        &self,
        users: Vec<UserId>,
        payload: Payload,
        _dedupe: Option<DedupeKey>,
    ) -> BoxFuture<Result<Vec<EventId>, BusError>> {
        Box::pin(std::future::ready(Ok(self.publish_now(&users, &payload))))
    }

    fn position(&self, _user: UserId) -> BoxFuture<Result<EventId, BusError>> {
        // Ids are node-wide: the last one given out is past anything of any
        // user, and it is where `subscribe` starts too.
        let last = EventId(lock(&self.state).last_id);
        Box::pin(std::future::ready(Ok(last)))
    }

    fn is_connected(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus(depth: usize, max_bytes: u64) -> EmbeddedBus {
        EmbeddedBus::with_first_id(
            HistoryLimits {
                depth,
                max_age: Duration::from_secs(3600),
                max_bytes,
            },
            1000,
        )
    }

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    fn payload(n: u32) -> Payload {
        Payload::from_json(format!(r#"{{"type":"t","n":{n}}}"#).as_bytes()).unwrap()
    }

    fn ids(history: &History) -> Vec<u64> {
        history.events.iter().map(|e| e.id.0).collect()
    }

    #[test]
    fn ids_increase_from_the_first_id_across_users() {
        let bus = bus(10, 1 << 20);
        let a = bus.publish_now(&[user("a"), user("b")], &payload(1));
        let b = bus.publish_now(&[user("a")], &payload(2));
        assert_eq!(a, vec![EventId(1000), EventId(1001)]);
        assert_eq!(b, vec![EventId(1002)]);
        assert_eq!(
            ids(&bus.history_now(&user("a"), EventId(999))),
            vec![1000, 1002]
        );
        assert_eq!(ids(&bus.history_now(&user("a"), EventId(1000))), vec![1002]);
        assert!(!bus.history_now(&user("a"), EventId(999)).truncated);
    }

    #[test]
    fn depth_eviction_marks_older_resumes_as_truncated() {
        let bus = bus(3, 1 << 20);
        for n in 0..5 {
            bus.publish_now(&[user("a")], &payload(n));
        }
        let h = bus.history_now(&user("a"), EventId(999));
        assert!(h.truncated);
        assert_eq!(ids(&h), vec![1002, 1003, 1004]);
        let h = bus.history_now(&user("a"), EventId(1001));
        assert!(!h.truncated);
        assert_eq!(ids(&h), vec![1002, 1003, 1004]);
    }

    #[test]
    fn resumes_from_before_boot_are_truncated() {
        let bus = bus(3, 1 << 20);
        assert!(bus.history_now(&user("nobody"), EventId(5)).truncated);
        assert!(!bus.history_now(&user("nobody"), EventId(999)).truncated);
    }

    #[test]
    fn byte_limit_evicts_the_oldest_of_any_user() {
        let one = payload(0);
        let frame = sse::event(EventId(1000), None, &one).frame.len() as u64;
        let bus = bus(100, frame * 3);
        for (n, u) in ["a", "b", "a", "b", "a"].iter().enumerate() {
            bus.publish_now(&[user(u)], &payload(n as u32));
        }
        let a = bus.history_now(&user("a"), EventId(999));
        let b = bus.history_now(&user("b"), EventId(999));
        // Three frames fit: the two oldest (1000 of a, 1001 of b) went.
        assert_eq!(ids(&a), vec![1002, 1004]);
        assert_eq!(ids(&b), vec![1003]);
        assert!(a.truncated && b.truncated);
        assert!(lock(&bus.state).bytes <= frame * 3);
    }
}
