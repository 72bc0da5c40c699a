//! campusbite-notify: a real-time notification gateway.
//!
//! Browsers hold a Server-Sent Events stream open
//! (`GET /api/notifications/subscribe`); producers publish order updates for
//! a user; every open stream of that user receives each one, and a browser
//! that reconnects with `Last-Event-ID` gets what it missed.
//!
//! Where a notification goes, in order:
//! - [`http`] — the edge: `publish` validates and hands the payload to the bus;
//!   `subscribe` checks the token ([`auth`]) and hands a new stream to the
//!   [`registry`].
//! - [`bus`] — stores and sequences notifications ([`bus::embedded`] in
//!   memory on one node) and delivers each to the actor of its user, if that
//!   user is online on this node. [`event`] holds the id, the payload and
//!   the SSE frame encoded once ([`sse`]).
//! - [`user`] — one actor per online user: fans each frame out to the user's
//!   streams, replays history for resuming streams, repairs gaps,
//!   disconnects clients that cannot keep up. Each stream's HTTP body reads
//!   its frames from a small bounded [`frame_queue`].
//! - [`shutdown`] drains on SIGTERM; [`metrics`] declares every series;
//!   [`config`] every setting; [`cli`] the tools (`token`, `publish`).

pub mod auth;
pub mod bus;
pub mod cli;
pub mod config;
pub mod event;
pub mod frame_queue;
pub mod http;
pub mod loadgen;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod sink;
pub mod slots;
pub mod sse;
pub mod tls;
pub mod user;
pub mod user_id;
