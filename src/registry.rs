//! User id → the actor of that user on this node.
//!
//! A sharded concurrent map, so 100k connects do not queue behind one lock.
//! Actors start on the worker thread of the request that needs them (which
//! spreads them over the workers) and remove themselves when they stop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use dashmap::DashMap;

use crate::bus::Bus;
use crate::user::{CloseAll, Join, JoinError, OnStop, StopIfIdle, StreamPolicy, UserActor};
use crate::user_id::UserId;

/// How many times a join is retried when it races with a stopping actor.
const JOIN_ATTEMPTS: usize = 3;

/// Unless disarmed, tells the actor on drop to stop if it has no stream: a
/// request that goes away while its join is on the way (a new actor's first
/// join included) must not leave an actor behind with nothing to end it.
struct IdleCheck(Option<Addr<UserActor>>);

impl IdleCheck {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for IdleCheck {
    fn drop(&mut self) {
        if let Some(actor) = self.0.take() {
            // do_send: delivered even to a full mailbox, after anything
            // already queued (the join itself, if it got that far).
            actor.do_send(StopIfIdle);
        }
    }
}

/// The online users of this node.
pub struct Registry {
    actors: DashMap<UserId, Addr<UserActor>>,
    bus: Arc<dyn Bus>,
    policy: Arc<StreamPolicy>,
    next_sink_id: AtomicU64,
}

impl Registry {
    pub fn new(bus: Arc<dyn Bus>, policy: StreamPolicy) -> Arc<Self> {
        Arc::new(Self {
            actors: DashMap::new(),
            bus,
            policy: Arc::new(policy),
            next_sink_id: AtomicU64::new(1),
        })
    }

    /// A node-unique id for a new stream.
    pub fn next_sink_id(&self) -> u64 {
        self.next_sink_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Hands a new stream to its user's actor, starting one if needed.
    pub async fn join(
        self: &Arc<Self>,
        user: &UserId,
        join: Join,
    ) -> Result<Addr<UserActor>, JoinError> {
        for _ in 0..JOIN_ATTEMPTS {
            let addr = self
                .actors
                .entry(user.clone())
                .or_insert_with(|| {
                    UserActor::new(
                        user.clone(),
                        self.bus.clone(),
                        self.clone(),
                        self.policy.clone(),
                    )
                    .start()
                })
                .clone();
            let abandoned = IdleCheck(Some(addr.clone()));
            let sent = addr.send(join.clone()).await;
            abandoned.disarm();
            match sent {
                Ok(result) => return result.map(|()| addr),
                // The actor stopped between lookup and delivery: start afresh.
                Err(_) => self.forget(user, &addr),
            }
        }
        Err(JoinError::BusUnavailable)
    }

    /// Removes `user`'s entry if it is still `addr`.
    pub fn forget(&self, user: &UserId, addr: &Addr<UserActor>) {
        self.actors.remove_if(user, |_, current| current == addr);
    }

    /// Online users on this node.
    pub fn len(&self) -> usize {
        self.actors.len()
    }

    /// Whether no user is online here.
    pub fn is_empty(&self) -> bool {
        self.actors.is_empty()
    }

    /// Ends every stream, spread evenly over `spread` so that browsers do not
    /// all reconnect in the same instant.
    pub async fn close_all(&self, spread: Duration) {
        // Finest spacing between two batches of closes.
        const STEP: Duration = Duration::from_millis(20);
        let actors: Vec<Addr<UserActor>> = self.actors.iter().map(|e| e.value().clone()).collect();
        if actors.is_empty() {
            return;
        }
        let batches = ((spread.as_millis() / STEP.as_millis()) as usize).clamp(1, actors.len());
        let per_batch = actors.len().div_ceil(batches);
        let mut tick =
            tokio::time::interval((spread / batches as u32).max(Duration::from_millis(1)));
        for batch in actors.chunks(per_batch) {
            tick.tick().await;
            for actor in batch {
                actor.do_send(CloseAll);
            }
        }
    }
}

impl OnStop for Registry {
    fn actor_stopping(&self, user: &UserId, addr: &Addr<UserActor>) {
        self.forget(user, addr);
    }
}
