//! The actor of one online user on this node.
//!
//! It owns the user's streams ("sinks": one per tab or device), the user's
//! bus subscription, and the id of the last notification it fanned out.
//! Every write to a sink happens here, so sinks need no locks. A
//! notification's frame is encoded once by the bus and shared by all sinks.
//! The actor stops when its last sink closes, and unsubscribes on the way.
//!
//! History reads (a resuming tab, a gap, a bus reconnect) run with
//! `ctx.wait`: live notifications wait in the mailbox meanwhile, so each sink
//! sees history first and then live, in id order, with no duplicate.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};

use crate::bus::{Bus, BusMessage, History, Subscription};
use crate::event::{Event, EventId};
use crate::frame_queue::{FrameSender, OfferError};
use crate::metrics::{metrics, DropReason};
use crate::sink::CutOffHandle;
use crate::slots::NodeSlot;
use crate::sse;
use crate::user_id::UserId;

/// History reads tried before a user's streams are ended instead.
const CATCH_UP_ATTEMPTS: u32 = 8;
/// Pause between two of them (a stream-leader election takes ~4–8 s).
const CATCH_UP_RETRY: Duration = Duration::from_secs(1);

/// Per-stream policy shared by all actors.
#[derive(Debug, Clone)]
pub struct StreamPolicy {
    /// Interval of keep-alive comments.
    pub keepalive: Duration,
    /// How long before token expiry `token-expiring` is sent.
    pub expiry_warning: Duration,
    /// Streams allowed per user on this node.
    pub max_per_user: usize,
}

/// A new stream for this user.
#[derive(Message, Clone)]
#[rtype(result = "Result<(), JoinError>")]
pub struct Join {
    /// Node-unique id of the stream, used by [`Leave`].
    pub sink_id: u64,
    /// Where this stream's frames go; the HTTP body reads the other end.
    pub tx: FrameSender,
    /// The client's last event id, if it is resuming.
    pub resume_after: Option<EventId>,
    /// The token's `exp` (unix seconds): the stream ends then.
    pub expires_at: u64,
    /// Cuts the connection off under a client that stops reading.
    pub connection: Option<CutOffHandle>,
    /// The stream's node slot, held by the sink so that ending the sink
    /// frees it even if the HTTP layer never drops the body.
    pub slot: Arc<NodeSlot>,
}

/// A stream's HTTP body was dropped (the client went away, or it ended).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub sink_id: u64,
}

/// Stop unless a stream is here: sent when a join was abandoned (its request
/// went away) before its stream may have reached the actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopIfIdle;

/// End every stream of this user (node draining): browsers reconnect elsewhere.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseAll;

/// Why a stream could not join.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum JoinError {
    #[error("too many streams for this user")]
    TooManyForUser,
    #[error("the bus is unavailable")]
    BusUnavailable,
}

struct Sink {
    id: u64,
    tx: FrameSender,
    /// The last notification id this sink has been given.
    cursor: EventId,
    /// The token's `exp` (unix seconds): the stream ends then.
    expires_at: u64,
    /// Whether `token-expiring` has been sent.
    warned: bool,
    /// When it was last given a notification or a keep-alive
    /// ([`stream_clock_ms`]; it wraps after 49 days, never between two
    /// keep-alives). It fits in padding: an idle stream costs no more.
    last_frame_ms: u32,
    /// The sink's one timer (see [`UserActor::arm`]).
    timer: SpawnHandle,
    connection: Option<CutOffHandle>,
    _slot: Arc<NodeSlot>,
}

enum Outcome {
    Sent,
    Full,
    Gone,
}

/// Told when a user's actor stops, so that whoever started it (the
/// registry) forgets it; defined here so that the actor knows no registry.
pub trait OnStop: Send + Sync + 'static {
    /// `addr`, the actor of `user`, is stopping.
    fn actor_stopping(&self, user: &UserId, addr: &Addr<UserActor>);
}

/// The actor of one online user.
pub struct UserActor {
    user: UserId,
    bus: Arc<dyn Bus>,
    on_stop: Arc<dyn OnStop>,
    policy: Arc<StreamPolicy>,
    sinks: Vec<Sink>,
    /// The last id fanned out; live events at or below it are duplicates.
    delivered: EventId,
    subscription: Option<Subscription>,
}

impl UserActor {
    pub fn new(
        user: UserId,
        bus: Arc<dyn Bus>,
        on_stop: Arc<dyn OnStop>,
        policy: Arc<StreamPolicy>,
    ) -> Self {
        Self {
            user,
            bus,
            on_stop,
            policy,
            sinks: Vec::new(),
            delivered: EventId(0),
            subscription: None,
        }
    }

    fn fan_out(&mut self, event: &Event) {
        let now = Instant::now();
        let now_ms = stream_clock_ms(now);
        let mut written = 0u64;
        let mut slow = Vec::new();
        let mut gone = Vec::new();
        for sink in &mut self.sinks {
            if event.id <= sink.cursor {
                continue;
            }
            sink.cursor = event.id;
            match offer(&sink.tx, event.frame.clone()) {
                Outcome::Sent => {
                    written += 1;
                    sink.last_frame_ms = now_ms;
                }
                Outcome::Full => {
                    metrics().dropped(DropReason::SlowConsumer).increment(1);
                    slow.push(sink.id);
                }
                Outcome::Gone => gone.push(sink.id),
            }
        }
        self.delivered = self.delivered.max(event.id);
        let m = metrics();
        m.received.increment(1);
        m.delivered.increment(written);
        m.delivery_latency.record(
            now.saturating_duration_since(event.received_at)
                .as_secs_f64(),
        );
        self.cut_off(&slow);
        self.close_sinks(&gone);
    }

    /// Reads history after `delivered` and fans it out (a gap, or a bus
    /// reconnect), then `pending`, the live event that revealed the gap, in
    /// case the replica that answered has not stored it yet.
    ///
    /// Live notifications wait in the mailbox meanwhile, retries included
    /// (a stream-leader election takes a few seconds), so nothing is skipped.
    /// If history stays unreadable, the streams are ended instead of skipping
    /// the gap: browsers reconnect and resume from their own last id.
    fn catch_up(&mut self, ctx: &mut Context<Self>, pending: Option<Event>, attempt: u32) {
        let history = self.bus.history(self.user.clone(), self.delivered);
        ctx.wait(history.into_actor(self).map(move |result, actor, ctx| match result {
            Ok(history) => {
                for event in history.events.iter().chain(&pending) {
                    if event.id > actor.delivered {
                        actor.fan_out(event);
                    }
                }
                actor.stop_if_idle(ctx);
            }
            Err(e) if attempt < CATCH_UP_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "history read for catch-up failed; retrying");
                let pause = tokio::time::sleep(CATCH_UP_RETRY);
                ctx.wait(pause.into_actor(actor).map(move |(), actor, ctx| {
                    actor.catch_up(ctx, pending, attempt + 1);
                }));
            }
            Err(e) => {
                tracing::warn!(error = %e, "history read for catch-up failed; ending this user's streams");
                actor.sinks.clear();
                ctx.stop();
            }
        }));
    }

    /// Reads the user's position again, once the subscription has settled
    /// ([`crate::bus::Subscription::recheck_after`]): a newer one than the
    /// last delivered means a notification that came neither live nor into
    /// the head read, and history has it. Live notifications keep flowing
    /// during the read; the catch-up itself holds them back. A failed read
    /// is tried again later (a NATS outage ends with every user catching up
    /// anyway): the streams stay open.
    fn recheck_head(&mut self, ctx: &mut Context<Self>, attempt: u32) {
        let position = self.bus.position(self.user.clone());
        ctx.spawn(
            position
                .into_actor(self)
                .map(move |result, actor, ctx| match result {
                    Ok(head) if head > actor.delivered => {
                        metrics().head_recheck_repairs.increment(1);
                        tracing::debug!(
                            head = head.0,
                            delivered = actor.delivered.0,
                            "a notification missed the live subscription; catching up"
                        );
                        actor.catch_up(ctx, None, 1);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let again = actor.subscription.as_ref().and_then(|s| s.recheck_after);
                        match again {
                            Some(after) if attempt < CATCH_UP_ATTEMPTS => {
                                tracing::debug!(error = %e, attempt, "position re-read failed; retrying");
                                ctx.run_later(after, move |actor, ctx| {
                                    actor.recheck_head(ctx, attempt + 1)
                                });
                            }
                            _ => tracing::warn!(error = %e, "position re-read failed; giving up"),
                        }
                    }
                }),
        );
    }

    /// Sends `resume_after`'s missed notifications to one new sink.
    fn replay(&mut self, ctx: &mut Context<Self>, sink_id: u64, after: EventId) {
        let history = self.bus.history(self.user.clone(), after);
        ctx.wait(history.into_actor(self).map(move |result, actor, ctx| {
            let history = result.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "history read for resume failed");
                // Say so rather than pretend nothing was missed.
                History {
                    truncated: true,
                    events: Vec::new(),
                }
            });
            actor.write_replay(sink_id, &history);
            actor.stop_if_idle(ctx);
        }));
    }

    fn write_replay(&mut self, sink_id: u64, history: &History) {
        let Some(sink) = self.sink_mut(sink_id) else {
            return;
        };
        // One chunk for the whole replay: it never fills the queue by itself.
        let mut chunk = BytesMut::new();
        if history.truncated {
            chunk.extend_from_slice(&sse::reset_history_truncated());
        }
        let mut count = 0;
        for event in &history.events {
            if event.id > sink.cursor {
                chunk.extend_from_slice(&event.frame);
                sink.cursor = event.id;
                count += 1;
            }
        }
        if chunk.is_empty() {
            return;
        }
        match offer(&sink.tx, chunk.freeze()) {
            Outcome::Sent => metrics().replayed.increment(count),
            Outcome::Full => self.cut_off(&[sink_id]),
            Outcome::Gone => self.close_sinks(&[sink_id]),
        }
    }

    fn sink_mut(&mut self, id: u64) -> Option<&mut Sink> {
        self.sinks.iter_mut().find(|s| s.id == id)
    }

    fn close_sinks(&mut self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        self.sinks.retain(|s| !ids.contains(&s.id));
        // Dropping a sender ends its body; the body's drop then sends Leave,
        // which finds nothing left to do.
    }

    /// Ends streams whose clients stopped reading: their queue is full, so
    /// ending the body alone would never reach them. Everything the stream
    /// holds is freed at once (queued frames, node slot, per-user slot); the
    /// stream is ended under the body (`sink::SinkCutOff`: the HTTP/2 stream
    /// reset, the HTTP/1.1 socket shut down).
    fn cut_off(&mut self, ids: &[u64]) {
        for sink in self.sinks.iter().filter(|s| ids.contains(&s.id)) {
            // The connection first: the body may end as soon as its queue is cut.
            if let Some(connection) = &sink.connection {
                connection.cut_off();
            }
            sink.tx.cut_off();
        }
        self.close_sinks(ids);
    }

    /// Ends a stream whose token expired: cleanly for a client that has
    /// read everything, cut off like a slow client otherwise (and always on
    /// HTTP/2, where that cannot be known).
    fn expire(&mut self, sink_id: u64) {
        let clean = self
            .sinks
            .iter()
            .find(|s| s.id == sink_id)
            .is_some_and(|s| {
                s.tx.is_caught_up() && s.connection.as_ref().is_none_or(|c| c.can_end_cleanly())
            });
        if clean {
            self.close_sinks(&[sink_id]);
        } else {
            self.cut_off(&[sink_id]);
        }
    }

    /// Arms the sink's one timer: its next keep-alive, or its token's
    /// warning or end if that comes first. One timer per stream and none per
    /// user: each costs memory on every idle stream.
    fn arm(&mut self, ctx: &mut Context<Self>, sink_id: u64) {
        self.arm_within(ctx, sink_id, self.policy.keepalive);
    }

    /// Arms the sink's timer for `keepalive` or its token's next deadline,
    /// whichever comes first.
    fn arm_within(&mut self, ctx: &mut Context<Self>, sink_id: u64, keepalive: Duration) {
        let warning = self.policy.expiry_warning;
        let Some(sink) = self.sink_mut(sink_id) else {
            return;
        };
        let delay = keepalive.min(sink.deadline_in(warning));
        sink.timer = ctx.run_later(delay, move |actor, ctx| actor.timer_fired(ctx, sink_id));
    }

    fn timer_fired(&mut self, ctx: &mut Context<Self>, sink_id: u64) {
        let (keepalive, warning) = (self.policy.keepalive, self.policy.expiry_warning);
        let Some(sink) = self.sink_mut(sink_id) else {
            return;
        };
        if !sink.deadline_in(warning).is_zero() {
            // A keep-alive only after a whole interval without frames: a
            // stream that carries notifications already shows proxies
            // traffic and meets a dead peer with a write.
            let now_ms = stream_clock_ms(Instant::now());
            let quiet = Duration::from_millis(u64::from(now_ms.wrapping_sub(sink.last_frame_ms)));
            if quiet < keepalive {
                self.arm_within(ctx, sink_id, keepalive - quiet);
                return;
            }
            sink.last_frame_ms = now_ms;
            match offer(&sink.tx, sse::KEEPALIVE) {
                Outcome::Sent => {}
                Outcome::Full => self.cut_off(&[sink_id]),
                Outcome::Gone => self.close_sinks(&[sink_id]),
            }
        } else if !sink.warned {
            sink.warned = true;
            let _ = sink.tx.offer(sse::token_expiring(sink.expires_at));
        } else {
            self.expire(sink_id);
        }
        // A no-op for a sink that is gone.
        self.arm(ctx, sink_id);
        self.stop_if_idle(ctx);
    }

    fn stop_if_idle(&mut self, ctx: &mut Context<Self>) {
        if self.sinks.is_empty() {
            ctx.stop();
        }
    }
}

impl Sink {
    /// Time until the token's next deadline: the warning, then the end.
    fn deadline_in(&self, warning: Duration) -> Duration {
        let end = until(self.expires_at);
        if self.warned {
            end
        } else {
            end.saturating_sub(warning)
        }
    }
}

/// Milliseconds on a process-wide clock, truncated to 32 bits: enough to
/// tell whether a stream wrote within one keep-alive interval.
fn stream_clock_ms(now: Instant) -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    now.saturating_duration_since(start).as_millis() as u32
}

fn offer(tx: &FrameSender, frame: Bytes) -> Outcome {
    match tx.offer(frame) {
        Ok(()) => Outcome::Sent,
        Err(OfferError::Full) => Outcome::Full,
        Err(OfferError::Closed) => Outcome::Gone,
    }
}

/// Time from now until unix second `at`: zero if past, capped at a year.
fn until(at: u64) -> Duration {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    UNIX_EPOCH
        .checked_add(Duration::from_secs(at))
        .map_or(YEAR, |at| {
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
        .min(YEAR)
}

impl Actor for UserActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        metrics().users_online.increment(1.0);
        let subscribe = self
            .bus
            .subscribe(self.user.clone(), ctx.address().recipient());
        ctx.wait(
            subscribe
                .into_actor(self)
                .map(|result, actor, ctx| match result {
                    Ok(subscription) => {
                        actor.delivered = subscription.head;
                        if let Some(after) = subscription.recheck_after {
                            ctx.run_later(after, |actor, ctx| actor.recheck_head(ctx, 1));
                        }
                        actor.subscription = Some(subscription);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "bus subscribe failed");
                        ctx.stop();
                    }
                }),
        );
        // No lasting timer of the actor's own: keep-alives and token
        // deadlines are each sink's (`arm`), the position re-read above is a
        // one-shot, and a join abandoned before its stream arrived sends
        // `StopIfIdle`.
    }

    fn stopping(&mut self, ctx: &mut Context<Self>) -> Running {
        self.on_stop.actor_stopping(&self.user, &ctx.address());
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        metrics().users_online.decrement(1.0);
    }
}

impl Handler<Join> for UserActor {
    type Result = Result<(), JoinError>;

    fn handle(&mut self, join: Join, ctx: &mut Context<Self>) -> Self::Result {
        if self.subscription.is_none() {
            return Err(JoinError::BusUnavailable);
        }
        if self.sinks.len() >= self.policy.max_per_user {
            return Err(JoinError::TooManyForUser);
        }
        let start = join.resume_after.unwrap_or(self.delivered);
        if !matches!(offer(&join.tx, sse::start(start)), Outcome::Sent) {
            self.stop_if_idle(ctx);
            return Ok(());
        }
        let sink_id = join.sink_id;
        // Most users have one tab: do not reserve room for four.
        self.sinks.reserve_exact(1);
        self.sinks.push(Sink {
            id: sink_id,
            tx: join.tx,
            cursor: start,
            expires_at: join.expires_at,
            warned: false,
            last_frame_ms: stream_clock_ms(Instant::now()),
            timer: SpawnHandle::default(),
            connection: join.connection,
            _slot: join.slot,
        });
        self.arm(ctx, sink_id);
        metrics().connections_total.increment(1);
        if start < self.delivered {
            self.replay(ctx, sink_id, start);
        }
        Ok(())
    }
}

impl Handler<Leave> for UserActor {
    type Result = ();

    fn handle(&mut self, leave: Leave, ctx: &mut Context<Self>) {
        if let Some(at) = self.sinks.iter().position(|s| s.id == leave.sink_id) {
            let sink = self.sinks.swap_remove(at);
            ctx.cancel_future(sink.timer);
        }
        self.stop_if_idle(ctx);
    }
}

impl Handler<BusMessage> for UserActor {
    type Result = ();

    fn handle(&mut self, message: BusMessage, ctx: &mut Context<Self>) {
        match message {
            BusMessage::Event(event) => {
                if event.id <= self.delivered {
                    return;
                }
                if event.previous.is_some_and(|p| p > self.delivered) {
                    // A live notification went missing: fetch from history
                    // (which includes this one) before anything later.
                    self.catch_up(ctx, Some(event), 1);
                } else {
                    self.fan_out(&event);
                }
            }
            BusMessage::Resync => self.catch_up(ctx, None, 1),
        }
        // A cut-off frees the user at once, not when the body goes away.
        self.stop_if_idle(ctx);
    }
}

impl Handler<StopIfIdle> for UserActor {
    type Result = ();

    fn handle(&mut self, _: StopIfIdle, ctx: &mut Context<Self>) {
        self.stop_if_idle(ctx);
    }
}

impl Handler<CloseAll> for UserActor {
    type Result = ();

    fn handle(&mut self, _: CloseAll, ctx: &mut Context<Self>) {
        self.sinks.clear();
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;
    use crate::bus::{BoxFuture, BusError, Subscription};
    use crate::event::Payload;
    use crate::frame_queue;
    use crate::idempotency::DedupeKey;
    use crate::slots::ConnectionSlots;

    /// A bus whose subscription missed notification 6: the head read said
    /// 5, nothing comes live, and the stored position is 6.
    struct MissedOne;

    fn event(id: u64, previous: u64) -> Event {
        let payload =
            Payload::from_json(format!(r#"{{"type":"t","n":{id}}}"#).as_bytes()).expect("payload");
        sse::event(EventId(id), Some(EventId(previous)), &payload)
    }

    impl Bus for MissedOne {
        fn subscribe(
            &self,
            _: UserId,
            _: Recipient<BusMessage>,
        ) -> BoxFuture<Result<Subscription, BusError>> {
            Box::pin(async {
                Ok(Subscription {
                    head: EventId(5),
                    guard: Box::new(()),
                    recheck_after: Some(Duration::from_millis(1)),
                })
            })
        }

        fn history(&self, _: UserId, after: EventId) -> BoxFuture<Result<History, BusError>> {
            let events = [event(5, 4), event(6, 5)]
                .into_iter()
                .filter(|e| e.id > after)
                .collect();
            Box::pin(async move {
                Ok(History {
                    truncated: false,
                    events,
                })
            })
        }

        fn publish(
            &self,
            _: Vec<UserId>,
            _: Payload,
            _: Option<DedupeKey>,
        ) -> BoxFuture<Result<Vec<EventId>, BusError>> {
            Box::pin(async { Err(BusError::Unavailable) })
        }

        fn position(&self, _: UserId) -> BoxFuture<Result<EventId, BusError>> {
            Box::pin(async { Ok(EventId(6)) })
        }

        fn is_connected(&self) -> bool {
            true
        }
    }

    /// The stream's next frame (a deadline instead of hanging on a miss).
    async fn next(rx: &mut frame_queue::FrameReceiver) -> Option<Bytes> {
        tokio::time::timeout(Duration::from_secs(10), poll_fn(|cx| rx.poll_recv(cx)))
            .await
            .expect("a frame")
    }

    struct Nobody;

    impl OnStop for Nobody {
        fn actor_stopping(&self, _: &UserId, _: &Addr<UserActor>) {}
    }

    #[test]
    fn a_notification_that_missed_the_subscription_is_caught_up_once_and_in_order() {
        actix::System::new().block_on(async {
            let policy = StreamPolicy {
                keepalive: Duration::from_secs(3600),
                expiry_warning: Duration::from_secs(60),
                max_per_user: 4,
            };
            let actor = UserActor::new(
                UserId::parse("u1").expect("user id"),
                Arc::new(MissedOne),
                Arc::new(Nobody),
                Arc::new(policy),
            )
            .start();
            let (tx, mut rx) = frame_queue::channel(16);
            let slot = ConnectionSlots::new(1).acquire().expect("a slot");
            let join = Join {
                sink_id: 1,
                tx,
                resume_after: None,
                expires_at: u64::MAX,
                connection: None,
                slot: Arc::new(slot),
            };
            actor.send(join).await.expect("actor").expect("joined");
            assert_eq!(next(&mut rx).await, Some(sse::start(EventId(5))));
            // The re-read of the position finds 6 and catches it up.
            assert_eq!(next(&mut rx).await, Some(event(6, 5).frame));
            // 6 arriving live after all is not sent again; 7 follows it.
            actor.do_send(BusMessage::Event(event(6, 5)));
            actor.do_send(BusMessage::Event(event(7, 6)));
            assert_eq!(next(&mut rx).await, Some(event(7, 6).frame));
        });
    }
}
