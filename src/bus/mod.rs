//! The bus: where notifications are stored, sequenced and fanned out to the
//! nodes that have the user online.
//!
//! Two implementations, chosen at start-up: [`embedded`] (one node, in
//! memory) and, when NATS servers are configured, NATS JetStream. Both give the same
//! guarantees to the actor of an online user: after `subscribe` returns,
//! every later notification of that user arrives as [`BusMessage::Event`],
//! and `history` returns the retained ones after any id.

pub mod embedded;
pub mod nats;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix::{Message, Recipient};

use crate::event::{Event, EventId, Payload};
use crate::idempotency::DedupeKey;
use crate::user_id::UserId;

/// A boxed, sendable future (the trait must be object-safe).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a bus sends to the actor of an online user.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum BusMessage {
    /// A live notification.
    Event(Event),
    /// The bus was away and may have missed live notifications: catch up
    /// from history after the last delivered id.
    Resync,
}

/// A user's retained notifications after some id.
#[derive(Debug, Default)]
pub struct History {
    /// Notifications after the requested id may have been dropped from the
    /// history (depth, age, or a restart): the client must refetch its state.
    pub truncated: bool,
    /// The retained notifications after the requested id, oldest first.
    pub events: Vec<Event>,
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    /// The newest id at the moment the subscription took effect: anything
    /// with a larger id arrives live.
    pub head: EventId,
    /// Unsubscribes on drop.
    pub guard: Box<dyn Send>,
    /// When set, the user's position is read again this long after the
    /// subscription: a notification stored while the subscription was still
    /// reaching every server may have come neither live nor into `head`
    /// (the NATS bus, where the subscription and the head read travel
    /// different paths). Anything found is caught up from history.
    pub recheck_after: Option<Duration>,
}

/// Why the bus could not do something.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the bus is not connected")]
    Unavailable,
    #[error("bus error: {0}")]
    Other(String),
}

/// The interface both buses implement.
pub trait Bus: Send + Sync + 'static {
    /// Starts delivering `user`'s notifications to `to`.
    fn subscribe(
        &self,
        user: UserId,
        to: Recipient<BusMessage>,
    ) -> BoxFuture<Result<Subscription, BusError>>;

    /// `user`'s retained notifications with an id greater than `after`.
    fn history(&self, user: UserId, after: EventId) -> BoxFuture<Result<History, BusError>>;

    /// Stores one notification for each user and returns their ids, in the
    /// order of `users`. With `dedupe`, a bus shared by several nodes
    /// (NATS) stores a repeat within its duplicate window once and returns
    /// the first ids; the embedded bus leaves keys to the HTTP edge.
    fn publish(
        &self,
        users: Vec<UserId>,
        payload: Payload,
        dedupe: Option<DedupeKey>,
    ) -> BoxFuture<Result<Vec<EventId>, BusError>>;

    /// `user`'s current position: the id a stream opened now would start
    /// at, so every later notification of that user has a larger id.
    fn position(&self, user: UserId) -> BoxFuture<Result<EventId, BusError>>;

    /// Whether the bus can deliver now (readiness).
    fn is_connected(&self) -> bool;
}
