//! Hardening: hostile tokens, hostile publish bodies and abusive
//! HTTP clients against the real `campusbite-notify serve` binary.
//!
//! This suite only adds what `tests/api` does not already cover; it reuses
//! the same harness (`test_support`). Peak RSS figures
//! are printed with `eprintln!` (`hardening:` prefix) so that they can be
//! quoted: run with `--nocapture` (cargo test) or `--no-capture` (nextest).

mod helpers {
    //! `test_support` with the start-up helpers bound to this build's binary.
    pub use test_support::*;
    test_support::node_helpers!();
}

mod abuse;
mod publish;
mod raw;
mod tokens;
