//! `docs/openapi.yaml` against the real binary: `scripts/api-fuzz` validates
//! the document and runs Schemathesis (every documented operation, every
//! check: conforming statuses, headers and bodies, no 5xx, invalid input
//! refused) against a node it starts on a free port. The script installs
//! its pinned Python tools into `.venv-api/` on first use.

use std::path::Path;
use std::process::Command;

#[test]
fn the_openapi_document_is_valid_and_the_server_conforms_to_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(root.join("scripts/api-fuzz"))
        .current_dir(root)
        .env("CAMPUSBITE_BIN", env!("CARGO_BIN_EXE_campusbite-notify"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/api-fuzz: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "scripts/api-fuzz failed ({})",
        output.status
    );
    // Seven operations: subscribe, publish, session POST and DELETE,
    // healthz, readyz, metrics.
    assert!(stdout.contains("Selected: 7/7"), "operations missing");
    assert!(
        stdout.contains("Tested: 7"),
        "not every documented operation was tested"
    );
    assert!(
        stdout.contains("No issues found"),
        "Schemathesis found issues"
    );
}
