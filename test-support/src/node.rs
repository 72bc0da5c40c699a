//! The `campusbite-notify serve` process: started on `127.0.0.1:0` with
//! exactly the settings a test chooses, its port read from its first stdout
//! line, its output captured, killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::NodeApi;
use crate::{new_secret, DEADLINE};

/// What to start: the binary and its settings. Built with [`Node::builder`].
#[derive(Debug, Clone)]
pub struct Node {
    bin: PathBuf,
    /// The HS256 secret passed as `NOTIFY_JWT_SECRET`; `None` passes none.
    secret: Option<String>,
    envs: Vec<(String, String)>,
}

impl Node {
    /// A node of `bin` (see [`crate::bin!`]) with a fresh random HS256 secret.
    pub fn builder(bin: impl Into<PathBuf>) -> Node {
        Node {
            bin: bin.into(),
            secret: Some(new_secret()),
            envs: Vec::new(),
        }
    }

    /// Uses this HS256 secret (shared by the nodes of a cluster).
    pub fn secret(mut self, secret: &str) -> Node {
        self.secret = Some(secret.to_string());
        self
    }

    /// Passes no secret: only the settings given with `env`/`envs`.
    pub fn no_secret(mut self) -> Node {
        self.secret = None;
        self
    }

    /// Adds one setting (later ones win).
    pub fn env(mut self, key: &str, value: &str) -> Node {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Adds settings (later ones win).
    pub fn envs(mut self, envs: &[(&str, &str)]) -> Node {
        for (k, v) in envs {
            self = self.env(k, v);
        }
        self
    }

    /// `serve` with `NOTIFY_LISTEN=127.0.0.1:0` and exactly these settings:
    /// nothing `NOTIFY_*` or `RUST_LOG` is inherited from the runner.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve");
        for (k, _) in std::env::vars() {
            if k.starts_with("NOTIFY_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("NOTIFY_LISTEN", "127.0.0.1:0");
        if let Some(secret) = &self.secret {
            cmd.env("NOTIFY_JWT_SECRET", secret);
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts the process without waiting for it to listen.
    pub fn spawn_process(&self) -> RawProcess {
        let mut child = self.command().spawn().expect("start the server binary");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            capture(take(child.stderr.take()), stderr.clone()),
            capture(take(child.stdout.take()), stdout.clone()),
        ];
        RawProcess {
            child,
            stderr,
            stdout,
            readers,
        }
    }

    /// Starts the process and waits for its `listening on 127.0.0.1:<port>` line.
    pub async fn spawn(self) -> TestApp {
        let mut child = self.command().spawn().expect("start the server binary");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        capture(take(child.stderr.take()), stderr.clone());
        let stdout = take(child.stdout.take());
        let (tx, rx) = tokio::sync::oneshot::channel::<Option<String>>();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            let ok = reader.read_line(&mut first).map(|n| n > 0).unwrap_or(false);
            let _ = tx.send(ok.then_some(first));
            // Keep draining so the server never blocks on a full pipe.
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        let first = match tokio::time::timeout(DEADLINE, rx).await {
            Ok(Ok(Some(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not print its listening line ({other:?}); stderr:\n{}",
                    text(&stderr)
                );
            }
        };
        let line = first.trim_end_matches(['\r', '\n']);
        let port = line
            .strip_prefix("listening on 127.0.0.1:")
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("first stdout line is not `listening on 127.0.0.1:<port>`: {line:?}")
            });
        assert_ne!(port, 0, "server reported port 0");
        TestApp {
            api: NodeApi::new(port, self.secret.unwrap_or_default()),
            child,
            stderr,
        }
    }
}

/// A running server process. Dropping it kills the process. Everything a
/// test does with the node is on [`NodeApi`], which this derefs to.
pub struct TestApp {
    api: NodeApi,
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Deref for TestApp {
    type Target = NodeApi;
    fn deref(&self) -> &NodeApi {
        &self.api
    }
}

impl DerefMut for TestApp {
    fn deref_mut(&mut self) -> &mut NodeApi {
        &mut self.api
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestApp {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        text(&self.stderr)
    }

    /// Sends SIGTERM to the server.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends `SIG<name>` to the server.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (at most `limit`) for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, limit).await
    }
}

/// A server process that was started but not necessarily listening.
pub struct RawProcess {
    pub child: Child,
    pub stderr: Arc<Mutex<Vec<u8>>>,
    pub stdout: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl RawProcess {
    /// Waits (at most `limit`) for the process to exit; `None` if it did not.
    /// Once it has exited, everything it wrote is in `stdout`/`stderr`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let status = wait_exit(&mut self.child, limit).await?;
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Some(status)
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        text(&self.stderr)
    }

    /// Expects the process to stop with a failure within `limit`; returns
    /// its exit status and stderr. `what` (the case) leads the failure messages.
    pub async fn expect_failure(&mut self, limit: Duration, what: &str) -> (ExitStatus, String) {
        let status = self.wait_exit(limit).await.unwrap_or_else(|| {
            panic!(
                "{what}: still running after {limit:?}; stderr:\n{}",
                self.stderr()
            )
        });
        assert!(!status.success(), "{what}: exited with {status}");
        (status, self.stderr())
    }
}

impl Drop for RawProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn take<T>(pipe: Option<T>) -> T {
    pipe.expect("the pipe was requested")
}

fn text(buf: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&buf.lock().expect("output buffer")).into_owned()
}

/// Copies everything `from` yields into `into`, on a thread of its own.
pub(crate) fn capture(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into
                    .lock()
                    .expect("output buffer")
                    .extend_from_slice(&buf[..n]),
            }
        }
    })
}
