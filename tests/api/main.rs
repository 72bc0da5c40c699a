//! Black-box tests of `campusbite-notify serve` (docs/protocol.md): every
//! test starts a node on a free port and speaks HTTP and Server-Sent Events
//! to it. Most run the server in the test process (`in_process_app`), which
//! is faster; tests of signals and drain, the command line and start-up
//! errors, and of metric values start the binary (`spawn_app`): the metrics
//! recorder is global to a process, so in-process nodes' counts would mix.

mod helpers;

mod auth;
mod config;
mod cors;
mod expiry;
mod limits;
mod ops;
mod publish;
mod resume;
mod session;
mod shutdown;
mod slow_client;
mod subscribe;
