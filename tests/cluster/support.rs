//! The harness of the clustering tests: `test_support` (NATS servers and
//! clusters, gateway nodes, the follower and the audit) with the start-up
//! helpers bound to this build's `campusbite-notify` binary.

pub use test_support::*;

test_support::node_helpers!();
