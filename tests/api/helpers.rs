//! The harness of the API tests: everything in `test_support`, plus the
//! start-up helpers bound to this build's `campusbite-notify` binary.

pub use test_support::*;

test_support::node_helpers!();
