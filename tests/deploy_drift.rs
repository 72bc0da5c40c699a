//! The deployment files must not drift from the binary.
//!
//! Every `NOTIFY_*` setting that the kustomize manifests (`k8s/`) or the Helm
//! chart (`helm/`) mention must be a setting of `campusbite-notify serve`, and
//! every `notify_*` metric that their alerts, dashboard and KEDA scaler query
//! must be exported on `GET /metrics` of the running binary. A renamed flag or
//! metric therefore fails here instead of silently breaking a deployment,
//! an alert or a dashboard panel.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_campusbite-notify");

/// Directories whose files are scanned, relative to the crate root.
const DEPLOY_DIRS: [&str; 2] = ["k8s", "helm"];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every text file under `dir`, recursively, in a stable order.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => return,
    };
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// (path relative to the crate root, contents) of every deployment file.
fn deployment_files() -> Vec<(String, String)> {
    let root = repo_root();
    let mut paths = Vec::new();
    for dir in DEPLOY_DIRS {
        files_under(&root.join(dir), &mut paths);
    }
    paths
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?; // skips non-UTF-8 files
            let rel = p.strip_prefix(&root).unwrap_or(&p).display().to_string();
            Some((rel, text))
        })
        .collect()
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Tokens `prefix` + one or more `allowed` characters that do not continue a
/// longer word on the left (so `XNOTIFY_A` or `campusbite_notify_x` do not
/// count). Trailing underscores are dropped.
fn tokens(text: &str, prefix: &str, allowed: fn(char) -> bool) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (start, _) in text.match_indices(prefix) {
        if text[..start].chars().next_back().is_some_and(is_word_char) {
            continue;
        }
        let rest = &text[start + prefix.len()..];
        let len: usize = rest
            .chars()
            .take_while(|&c| allowed(c))
            .map(char::len_utf8)
            .sum();
        let token = text[start..start + prefix.len() + len].trim_end_matches('_');
        if token.len() > prefix.len() {
            found.insert(token.to_string());
        }
    }
    found
}

/// `NOTIFY_[A-Z_]+` names, each with the files that mention it.
fn env_names(files: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, text) in files {
        for name in tokens(text, "NOTIFY_", |c| c.is_ascii_uppercase() || c == '_') {
            names.entry(name).or_default().push(path.clone());
        }
    }
    names
}

/// Metric family of a sample name: `x_bucket`, `x_sum` and `x_count` are `x`.
fn metric_family(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return base;
        }
    }
    name
}

/// `notify_[a-z0-9_]+` metric families, each with the files that use it.
fn metric_names(files: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, text) in files {
        let found = tokens(text, "notify_", |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
        });
        for name in found {
            names
                .entry(metric_family(&name).to_string())
                .or_default()
                .push(path.clone());
        }
    }
    for paths in names.values_mut() {
        paths.dedup();
    }
    names
}

/// Metric families in a Prometheus text exposition: names of samples
/// (histogram suffixes folded) and of `# HELP` / `# TYPE` lines.
fn exported_families(exposition: &str) -> BTreeSet<String> {
    let mut families = BTreeSet::new();
    for line in exposition.lines() {
        let line = line.trim();
        let name = if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            rest.split_whitespace().next()
        } else if line.is_empty() || line.starts_with('#') {
            None
        } else {
            line.split(['{', ' ']).next()
        };
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            families.insert(metric_family(name).to_string());
        }
    }
    families
}

/// A `Command` for the binary without any NOTIFY_* setting inherited from the
/// environment running the tests.
fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("NOTIFY_") {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// The running server; killed when dropped, also when a test panics.
struct Server {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start() -> Server {
        let mut child = command()
            .arg("serve")
            .env("NOTIFY_LISTEN", "127.0.0.1:0")
            .env("NOTIFY_JWT_SECRET", "test-secret-0123456789")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));

        // Logs go to stderr: keep them for failure messages, and keep the
        // pipe drained so the server never blocks on it.
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap();
                if s.len() < 64 * 1024 {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });

        // The first stdout line is "listening on 127.0.0.1:<port>".
        let out_pipe = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(out_pipe);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let _ = tx.send(first);
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
        });
        let mut server = Server {
            child,
            port: 0,
            stderr,
        };
        let first = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let port = first
            .trim_end()
            .strip_prefix("listening on 127.0.0.1:")
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| {
                panic!(
                    "expected \"listening on 127.0.0.1:<port>\" as the first stdout line, got {first:?}; stderr:\n{}",
                    server.stderr()
                )
            });
        server.port = port;
        server
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> String {
        let url = format!("http://127.0.0.1:{}{}", self.port, path);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match reqwest::get(&url).await {
                Ok(resp) if resp.status().is_success() => {
                    return resp.text().await.expect("body of GET /metrics")
                }
                other if Instant::now() >= deadline => {
                    panic!("GET {url} failed: {other:?}; stderr:\n{}", self.stderr())
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn describe(missing: &BTreeMap<String, Vec<String>>) -> String {
    missing
        .iter()
        .map(|(name, files)| format!("  {name}  (in {})", files.join(", ")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_scanners_find_whole_names_only() {
    let text = "a NOTIFY_LISTEN=x XNOTIFY_NO NOTIFY_ NOTIFY_KEEPALIVE_ \
                rate(notify_delivery_latency_seconds_bucket[5m]) campusbite_notify_x notify_ready{";
    let env: BTreeSet<String> = tokens(text, "NOTIFY_", |c| c.is_ascii_uppercase() || c == '_');
    assert_eq!(
        env,
        BTreeSet::from(["NOTIFY_KEEPALIVE".to_string(), "NOTIFY_LISTEN".to_string()])
    );
    let files = vec![("f".to_string(), text.to_string())];
    let metrics: BTreeSet<String> = metric_names(&files).into_keys().collect();
    assert_eq!(
        metrics,
        BTreeSet::from([
            "notify_delivery_latency_seconds".to_string(),
            "notify_ready".to_string()
        ])
    );
    let exposition = "# HELP notify_ready 1 while ready.\n# TYPE notify_ready gauge\nnotify_ready 1\n\
                      notify_delivery_latency_seconds_bucket{le=\"0.005\"} 0\nnotify_x_total{reason=\"a\"} 0\n";
    assert_eq!(
        exported_families(exposition),
        BTreeSet::from([
            "notify_delivery_latency_seconds".to_string(),
            "notify_ready".to_string(),
            "notify_x_total".to_string()
        ])
    );
}

#[test]
fn every_notify_setting_in_the_manifests_and_the_chart_is_a_serve_option() {
    let files = deployment_files();
    let used = env_names(&files);
    // Guard against a scanner or a path that silently finds nothing.
    for expected in [
        "NOTIFY_JWT_SECRET",
        "NOTIFY_NATS_URL",
        "NOTIFY_STREAM_REPLICAS",
        "NOTIFY_SHUTDOWN_GRACE",
        // NATS access control and TLS (docs/protocol.md §2), and the
        // settings the chart exposes as values (docs/protocol.md §4).
        "NOTIFY_NATS_USER",
        "NOTIFY_NATS_PASSWORD",
        "NOTIFY_NATS_CREDS_FILE",
        "NOTIFY_NATS_TLS_CA_FILE",
        "NOTIFY_NATS_TLS_CERT_FILE",
        "NOTIFY_NATS_TLS_KEY_FILE",
        "NOTIFY_LOG_FORMAT",
        "NOTIFY_COOKIE_SAME_SITE",
        "NOTIFY_JWT_JWKS_URL",
        "NOTIFY_JWT_JWKS_REFRESH",
        "NOTIFY_JWT_USER_CLAIM",
        "NOTIFY_PUBLISHER_JWT_SECRET",
        "NOTIFY_PUBLISHER_JWT_PUBLIC_KEY_FILE",
    ] {
        assert!(
            used.contains_key(expected),
            "{expected} not found under k8s/ or helm/: is the scan broken? found {:?}",
            used.keys().collect::<Vec<_>>()
        );
    }

    let output = command()
        .args(["serve", "--help"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN} serve --help: {e}"));
    assert!(
        output.status.success(),
        "serve --help failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let help = String::from_utf8_lossy(&output.stdout);
    let known = tokens(&help, "NOTIFY_", |c| c.is_ascii_uppercase() || c == '_');

    let missing: BTreeMap<String, Vec<String>> = used
        .into_iter()
        .filter(|(name, _)| !known.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "settings used by the deployment files that `campusbite-notify serve --help` does not list:\n{}\n\nserve --help lists: {:?}",
        describe(&missing),
        known
    );
}

#[tokio::test]
async fn every_metric_the_alerts_dashboard_and_scaler_query_is_exported_by_the_binary() {
    let files = deployment_files();
    let used = metric_names(&files);
    for expected in [
        "notify_connections_open",
        "notify_connections_max",
        "notify_ready",
        "notify_bus_connected",
        "notify_notifications_dropped_total",
        "notify_delivery_latency_seconds",
    ] {
        assert!(
            used.contains_key(expected),
            "{expected} not found under k8s/ or helm/: is the scan broken? found {:?}",
            used.keys().collect::<Vec<_>>()
        );
    }

    let server = Server::start();
    let exposition = server.get("/metrics").await;
    let exported = exported_families(&exposition);

    let missing: BTreeMap<String, Vec<String>> = used
        .into_iter()
        .filter(|(name, _)| !exported.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics used by the deployment files that GET /metrics does not export:\n{}\n\nexported: {:?}",
        describe(&missing),
        exported
    );
    drop(server);
}
