//! Hardening (issue 6): hostile tokens, hostile publish bodies and abusive
//! HTTP clients against the real `campusbite-notify serve` binary.
//!
//! This suite only adds what `tests/api` does not already cover; it reuses
//! that suite's harness (`tests/api/helpers.rs`) unchanged. Peak RSS figures
//! are printed with `eprintln!` (`hardening:` prefix) so that they can be
//! quoted: run with `--nocapture` (cargo test) or `--no-capture` (nextest).

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

mod abuse;
mod publish;
mod raw;
mod tokens;
