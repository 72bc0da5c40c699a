//! campusbite-notify: a real-time notification gateway.
//!
//! Browsers hold a Server-Sent Events stream open
//! (`GET /api/notifications/subscribe`); producers publish order updates for
//! a user; every open stream of that user receives each one, and a browser
//! that reconnects with `Last-Event-ID` gets what it missed. The external
//! contract is `docs/protocol.md`; the picture of the inside is
//! `docs/architecture.md`.
//!
//! The path of a notification: publish ([`http`] or NATS) -> [`bus`] ->
//! [`registry`] -> [`user`] actor -> [`frame_queue`] -> socket.
//! - [`server`] builds a node from its [`config`] ([`server::Application`]:
//!   build, port, run until a shutdown future) and wires the rest.
//! - [`http`] is the edge and the only module that knows HTTP: `publish`
//!   validates and hands the payload to the bus; `subscribe` checks the
//!   token ([`auth`], [`user_id`]; cookie names in [`session`]; HTTPS in
//!   [`tls`]) and hands a new stream to the [`registry`].
//! - [`bus`] stores and sequences notifications ([`bus::embedded`] in
//!   memory on one node, [`bus::nats`] on NATS JetStream) and delivers each
//!   to the actor of its user, if that user is online on this node.
//!   [`event`] holds the id and the payload; [`sse`] encodes each
//!   notification's frame once.
//! - [`registry`] maps a user id to its actor and starts it.
//! - [`user`] is one actor per online user: it fans each frame out to the
//!   user's streams, replays history for resuming streams, repairs gaps, and
//!   cuts off clients that cannot keep up through [`sink`] (a trait the HTTP
//!   edge implements). Each stream's HTTP body reads its frames from a small
//!   bounded [`frame_queue`].
//! - [`shutdown`] drains; [`metrics`] declares every series; [`cli`] holds
//!   the command line and its tools (`token`, `publish`).
//!
//! Dependencies point one way (http -> registry -> user -> sink/frame_queue;
//! bus -> event/sse; everything -> config/metrics); `scripts/check-imports`
//! checks that no import cycle exists.

pub mod auth;
pub mod bus;
pub mod cli;
pub mod config;
pub mod event;
pub mod frame_queue;
pub mod http;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod sink;
pub mod sse;
pub mod tls;
pub mod user;
pub mod user_id;
