//! Idempotency-Keys of the HTTP publish API (docs/protocol.md §2 "HTTP").
//!
//! A key belongs to its publisher (the publisher token's `sub`): the cache
//! is keyed by a fixed-size digest of (publisher, key), so two publishers
//! never collide and a megabyte batch costs the same key bytes as a single
//! publish. Each entry keeps a digest of the request (its users and its
//! canonical notification) to tell a retry (same ids) from a reused key
//! (`422 idempotency_key_reused`), and the ids it was answered with.
//!
//! The cache is bounded in bytes and in time. Over the byte budget, the
//! publisher holding the most bytes loses its oldest entry first, so one
//! publisher's flood of keys only ever evicts its own.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::event::EventId;
use crate::metrics::metrics;
use crate::user_id::UserId;

/// How long a key is remembered: JetStream's duplicate window, so the
/// cache and `Nats-Msg-Id` deduplication cover the same retries.
pub const KEY_LIFETIME: Duration = Duration::from_secs(120);

/// Bytes one remembered key costs besides its ids: two digests, the
/// publisher digest, the map slot and the eviction queue slot, rounded up.
const ENTRY_OVERHEAD: usize = 192;

/// A 32-byte SHA-256 digest.
type Sha = [u8; 32];

/// One publish, as JetStream deduplicates it: a digest of the publisher
/// and its key (or random bytes when the request carried no key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DedupeKey(Sha);

impl DedupeKey {
    /// The scope of `key` sent by `publisher`.
    pub fn new(publisher: &str, key: &str) -> Self {
        let mut h = Sha256::new();
        field(&mut h, b"campusbite-notify idempotency-key v1");
        field(&mut h, publisher.as_bytes());
        field(&mut h, key.as_bytes());
        Self(h.finalize().into())
    }

    /// A fresh key: makes the bus's own retries of one publish idempotent.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        bytes.iter_mut().for_each(|b| *b = fastrand::u8(..));
        Self(bytes)
    }

    /// `Nats-Msg-Id` of this publish for one user: 64 hex digits of a hash
    /// over length-prefixed fields, so no two (publisher, key, user)
    /// triples share one by concatenation.
    pub fn msg_id(&self, user: &UserId) -> String {
        let mut h = Sha256::new();
        field(&mut h, &self.0);
        field(&mut h, user.as_str().as_bytes());
        hex(&h.finalize().into())
    }
}

/// What a request asks for: its users (in order, without repeats), whether
/// it was a batch, and its notification as canonical JSON (object keys
/// sorted), so a retry with another key order is the same request.
pub fn request_digest(users: &[UserId], batch: bool, notification: &serde_json::Value) -> Sha {
    let mut h = Sha256::new();
    field(&mut h, &[u8::from(batch)]);
    h.update((users.len() as u64).to_be_bytes());
    for user in users {
        field(&mut h, user.as_str().as_bytes());
    }
    // serde_json's Map is a BTreeMap (no `preserve_order`): keys come out sorted.
    let canonical = serde_json::to_vec(notification).unwrap_or_default();
    field(&mut h, &canonical);
    h.finalize().into()
}

/// Digest of a publisher's name, for its share of the budget.
fn publisher_digest(publisher: &str) -> Sha {
    let mut h = Sha256::new();
    field(&mut h, publisher.as_bytes());
    h.finalize().into()
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn hex(bytes: &Sha) -> String {
    let mut out = String::with_capacity(64);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The same key was used by the same publisher for a different request.
#[derive(Debug, thiserror::Error)]
#[error("this Idempotency-Key was already used for a different request")]
pub struct KeyReused;

/// What to do with a keyed publish.
pub enum Begin<'a> {
    /// First use of the key: publish, then [`Reservation::complete`].
    Fresh(Reservation<'a>),
    /// A retry of a stored publish: answer with these ids.
    Done(Arc<[EventId]>),
}

/// The remembered keys of this node.
pub struct IdempotencyCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

struct Inner {
    entries: HashMap<DedupeKey, Entry>,
    /// Each publisher's completed entries, oldest first.
    publishers: HashMap<Sha, Queue>,
    bytes: usize,
    next_generation: u64,
}

struct Entry {
    request: Sha,
    state: State,
}

enum State {
    /// Being published; waiters learn the ids (or that it failed).
    Pending {
        generation: u64,
        done: watch::Receiver<Option<Arc<[EventId]>>>,
    },
    Done(Arc<[EventId]>),
}

#[derive(Default)]
struct Queue {
    order: VecDeque<(Instant, DedupeKey, usize)>,
    bytes: usize,
}

impl IdempotencyCache {
    /// An empty cache holding at most `max_bytes` of entries.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                publishers: HashMap::new(),
                bytes: 0,
                next_generation: 0,
            }),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves Inner consistent between statements that matter.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks `key` up for `publisher`'s request `request`. A concurrent
    /// publish of the same key is waited for; if it fails, this request
    /// publishes itself.
    pub async fn begin(
        &self,
        publisher: &str,
        key: DedupeKey,
        request: Sha,
    ) -> Result<Begin<'_>, KeyReused> {
        loop {
            let mut wait = {
                let mut guard = self.lock();
                let inner = &mut *guard;
                inner.expire(Instant::now());
                let generation = inner.next_generation;
                inner.next_generation += 1;
                match inner.entries.entry(key) {
                    MapEntry::Vacant(slot) => {
                        let (tx, rx) = watch::channel(None);
                        slot.insert(Entry {
                            request,
                            state: State::Pending {
                                generation,
                                done: rx,
                            },
                        });
                        return Ok(Begin::Fresh(Reservation {
                            cache: self,
                            publisher: publisher_digest(publisher),
                            key,
                            generation,
                            tx: Some(tx),
                        }));
                    }
                    MapEntry::Occupied(entry) if entry.get().request != request => {
                        return Err(KeyReused)
                    }
                    MapEntry::Occupied(entry) => match &entry.get().state {
                        State::Done(ids) => return Ok(Begin::Done(ids.clone())),
                        State::Pending { done, .. } => done.clone(),
                    },
                }
            };
            // Sender dropped without ids: the first publish failed, try again.
            let done = wait
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|ids| (*ids).clone());
            if let Some(ids) = done {
                return Ok(Begin::Done(ids));
            }
        }
    }

    /// Keys remembered now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A key being published for the first time. Dropped without
/// [`Self::complete`] (the publish failed), the key is forgotten.
pub struct Reservation<'a> {
    cache: &'a IdempotencyCache,
    publisher: Sha,
    key: DedupeKey,
    generation: u64,
    tx: Option<watch::Sender<Option<Arc<[EventId]>>>>,
}

impl Reservation<'_> {
    /// The publish stored these ids: remember them.
    pub fn complete(mut self, ids: &[EventId]) {
        let ids: Arc<[EventId]> = ids.into();
        let bytes = ENTRY_OVERHEAD + std::mem::size_of_val(&*ids);
        let now = Instant::now();
        {
            let mut guard = self.cache.lock();
            let inner = &mut *guard;
            if let Some(entry) = inner.entries.get_mut(&self.key) {
                entry.state = State::Done(ids.clone());
                let queue = inner.publishers.entry(self.publisher).or_default();
                queue.order.push_back((now, self.key, bytes));
                queue.bytes += bytes;
                inner.bytes += bytes;
            }
            inner.evict(self.cache.max_bytes);
        }
        if let Some(tx) = self.tx.take() {
            tx.send_replace(Some(ids));
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.tx.is_none() {
            return;
        }
        let mut inner = self.cache.lock();
        let ours = inner.entries.get(&self.key).is_some_and(|e| {
            matches!(e.state, State::Pending { generation, .. } if generation == self.generation)
        });
        if ours {
            inner.entries.remove(&self.key);
        }
        inner.report();
    }
}

impl Inner {
    /// Forgets every completed entry older than [`KEY_LIFETIME`].
    fn expire(&mut self, now: Instant) {
        let Self {
            entries,
            publishers,
            bytes,
            ..
        } = self;
        publishers.retain(|_, queue| {
            while let Some(&(at, key, size)) = queue.order.front() {
                if now.duration_since(at) < KEY_LIFETIME {
                    break;
                }
                queue.order.pop_front();
                queue.bytes -= size;
                *bytes -= size;
                entries.remove(&key);
            }
            !queue.order.is_empty()
        });
        self.report();
    }

    /// Over the budget, the publisher holding the most bytes loses its
    /// oldest entry, until the rest fits.
    fn evict(&mut self, max_bytes: usize) {
        while self.bytes > max_bytes {
            let Some((&heaviest, _)) = self.publishers.iter().max_by_key(|(_, q)| q.bytes) else {
                break;
            };
            let Some(queue) = self.publishers.get_mut(&heaviest) else {
                break;
            };
            let Some((_, key, size)) = queue.order.pop_front() else {
                self.publishers.remove(&heaviest);
                continue;
            };
            queue.bytes -= size;
            if queue.order.is_empty() {
                self.publishers.remove(&heaviest);
            }
            self.bytes -= size;
            self.entries.remove(&key);
        }
        self.report();
    }

    fn report(&self) {
        let m = metrics();
        m.idempotency_keys.set(self.entries.len() as f64);
        m.idempotency_bytes.set(self.bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    #[test]
    fn msg_ids_do_not_collide_by_concatenation() {
        let a = DedupeKey::new("p", "k").msg_id(&user("a:b"));
        let b = DedupeKey::new("p", "k:a").msg_id(&user("b"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(DedupeKey::new("pk", "x"), DedupeKey::new("p", "kx"));
    }

    #[test]
    fn key_order_does_not_change_the_request_digest() {
        let one: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":{"x":1,"y":2}}"#).unwrap();
        let two: serde_json::Value = serde_json::from_str(r#"{"b":{"y":2,"x":1},"a":1}"#).unwrap();
        let users = [user("u")];
        assert_eq!(
            request_digest(&users, false, &one),
            request_digest(&users, false, &two)
        );
        assert_ne!(
            request_digest(&users, false, &one),
            request_digest(&users, true, &one)
        );
    }

    #[tokio::test]
    async fn a_flooding_publisher_evicts_only_its_own_keys() {
        let cache = IdempotencyCache::new(ENTRY_OVERHEAD * 4 + 8 * 8);
        let request = [0u8; 32];
        let quiet = DedupeKey::new("quiet", "k");
        let Ok(Begin::Fresh(r)) = cache.begin("quiet", quiet, request).await else {
            panic!("first use is fresh")
        };
        r.complete(&[EventId(1)]);
        for n in 0..100 {
            let key = DedupeKey::new("loud", &n.to_string());
            let Ok(Begin::Fresh(r)) = cache.begin("loud", key, request).await else {
                panic!("first use is fresh")
            };
            r.complete(&[EventId(n)]);
        }
        assert!(cache.lock().bytes <= ENTRY_OVERHEAD * 4 + 64);
        assert!(matches!(
            cache.begin("quiet", quiet, request).await,
            Ok(Begin::Done(ids)) if ids[..] == [EventId(1)]
        ));
        assert!(cache.begin("quiet", quiet, [1u8; 32]).await.is_err());
    }

    #[tokio::test]
    async fn a_failed_publish_forgets_its_key() {
        let cache = IdempotencyCache::new(1 << 20);
        let key = DedupeKey::new("p", "k");
        let Ok(Begin::Fresh(r)) = cache.begin("p", key, [0; 32]).await else {
            panic!("first use is fresh")
        };
        drop(r);
        assert!(cache.is_empty());
        assert!(matches!(
            cache.begin("p", key, [1; 32]).await,
            Ok(Begin::Fresh(_))
        ));
    }
}
