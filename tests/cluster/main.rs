//! Clustering tests (docs/protocol.md §2.1 "NATS"): real `nats-server`
//! processes (`NATS_SERVER_BIN`, a 3-server JetStream cluster from
//! `cluster/nats-node.conf` unless a test needs a single server) and several
//! `campusbite-notify serve` nodes per test, on free loopback ports. Every
//! test starts its own servers, so they run in parallel.
//!
//! Fault tests print their measurements (`[test] ...` lines): run with
//! `--nocapture` (or `cargo nextest run --test cluster --no-capture`) to
//! see them.

mod support;
/// The API tests' harness names: the same crate underneath.
use support as helpers;

mod access;
mod config;
mod cross_node;
mod forged;
mod idempotency;
mod isolation;
mod nats_kill;
mod nats_outage;
mod node_kill;
mod odd_headers;
mod offline;
mod opening;
mod partition;
mod partitioned;
mod resuming;
mod rolling;
mod soft_refusal;
