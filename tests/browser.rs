//! The browser end-to-end tests (issue 7): each `tests/browser/*.test.mjs`
//! drives Debian's headless Chromium with npm `playwright-core` against this
//! build's binary. One #[test] per file runs `node --test <file>` in
//! tests/browser/, prints node's report and asserts that it passed.
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM_BIN`), node ≥ 20 and
//! `tests/browser/node_modules` (`scripts/install-browser-deps` sets up both).
//! Artifacts (logs, `demo.png`) go to `target/browser-artifacts/`.
//!
//! One more #[test] checks the client library in `clients/js`: a fresh build
//! equals the served `static/notify-client.js`, and its unit tests pass.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

fn run_browser_test(file: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_campusbite-notify"));
    // .../target/<profile>/campusbite-notify → .../target/browser-artifacts
    let artifacts = bin
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("browser-artifacts"))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts"));
    let chromium = std::env::var_os("CHROMIUM_BIN")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        chromium.exists(),
        "{} is missing: run scripts/install-browser-deps",
        chromium.display()
    );
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run scripts/install-browser-deps"
    );

    let status = run_node(
        &dir,
        &["--test", "--test-reporter=spec", file],
        &[
            ("CAMPUSBITE_BIN", bin.as_os_str()),
            ("CAMPUSBITE_ARTIFACTS", artifacts.as_os_str()),
            ("CHROMIUM_BIN", chromium.as_os_str()),
        ],
    );
    assert!(
        status.success(),
        "node --test {file} failed ({status}); logs in {}",
        artifacts.display()
    );
}

/// Runs `node <args>` in `dir`, prints its output, returns its exit status.
fn run_node(dir: &Path, args: &[&str], env: &[(&str, &OsStr)]) -> ExitStatus {
    let output = Command::new("node")
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run node ({e}); install Node.js >= 20"));
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    output.status
}

#[test]
fn browser_demo_tabs_and_cors() {
    run_browser_test("01-demo-tabs-cors.test.mjs");
}

#[test]
fn browser_cut_and_resume() {
    run_browser_test("02-cut-resume.test.mjs");
}

#[test]
fn browser_start_frame_resume() {
    run_browser_test("03-start-frame.test.mjs");
}

#[test]
fn browser_cookie_session_across_origins() {
    run_browser_test("04-cookie-session.test.mjs");
}

#[test]
fn browser_token_expiring_renewal() {
    run_browser_test("05-token-expiring.test.mjs");
}

#[test]
fn browser_nats_cluster_failover() {
    run_browser_test("06-nats-failover.test.mjs");
}

#[test]
fn browser_http2_many_tabs() {
    run_browser_test("07-http2-tabs.test.mjs");
}

#[test]
fn browser_leader_tab() {
    run_browser_test("08-leader-tab.test.mjs");
}

#[test]
fn browser_client_token_renewal() {
    run_browser_test("09-client-token-renewal.test.mjs");
}

#[test]
fn browser_client_nats_failover() {
    run_browser_test("10-client-nats-failover.test.mjs");
}

#[test]
fn browser_client_shared_tabs() {
    run_browser_test("11-client-shared-tabs.test.mjs");
}

#[test]
fn browser_client_reset() {
    run_browser_test("12-client-reset.test.mjs");
}

#[test]
fn browser_client_soft_refusal() {
    run_browser_test("13-client-soft-refusal.test.mjs");
}

/// The client library (`clients/js`): a fresh `tsc` build must equal the
/// committed `static/notify-client.js` (the file the node serves), then its
/// unit tests run on that build.
#[test]
fn js_client_build_matches_and_unit_tests_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js");
    assert!(
        dir.join("node_modules/typescript").is_dir(),
        "clients/js/node_modules is missing: run scripts/install-browser-deps"
    );
    for args in [
        &["scripts/build.mjs", "--check"][..],
        &["--test", "--test-reporter=spec", "test/"][..],
    ] {
        let status = run_node(&dir, args, &[]);
        assert!(
            status.success(),
            "node {} in clients/js failed ({status})",
            args.join(" ")
        );
    }
}

#[test]
fn browser_plain_page_past_the_per_user_limit() {
    run_browser_test("14-plain-per-user-limit.test.mjs");
}

#[test]
fn browser_plain_page_through_a_rolling_restart() {
    run_browser_test("15-plain-rolling-restart.test.mjs");
}

#[test]
fn browser_plain_page_through_a_nats_outage() {
    run_browser_test("16-plain-nats-outage.test.mjs");
}
