//! Black-box tests of `campusbite-notify serve` (docs/protocol.md §1–§4):
//! every test starts the real binary on a free port and speaks HTTP and
//! Server-Sent Events to it.

mod helpers;

mod auth;
mod config;
mod cors;
mod expiry;
mod http2;
mod limits;
mod ops;
mod publish;
mod resume;
mod session;
mod shutdown;
mod slow_client;
mod subscribe;
mod tls;
