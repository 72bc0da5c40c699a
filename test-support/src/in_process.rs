//! A node inside the test process: `Application` built from the same
//! `NOTIFY_*` settings a [`crate::Node`] takes, on `127.0.0.1:0`, run on a
//! thread of its own in its own actix `System`, stopped on drop.
//!
//! Faster than a process and just as black-box over HTTP, but it shares the
//! process: the metrics recorder is process-global (installed once), so the
//! counts of several in-process nodes would mix, and signals reach the test
//! runner. Tests of signals, drain, the command line, start-up errors,
//! clusters and metric values start the binary instead.

use std::ops::Deref;
use std::time::Duration;

use campusbite_notify::config::ServeConfig;
use campusbite_notify::server::Application;
use clap::{Args, Command, FromArgMatches};
use tokio::sync::oneshot;

use crate::api::NodeApi;
use crate::new_secret;

/// A node running in this process. Dropping it stops it (it drains on
/// its own thread; nothing waits for that).
pub struct InProcessNode {
    api: NodeApi,
    stop: Option<oneshot::Sender<()>>,
}

impl Deref for InProcessNode {
    type Target = NodeApi;
    fn deref(&self) -> &NodeApi {
        &self.api
    }
}

impl Drop for InProcessNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl InProcessNode {
    /// Starts a node with a fresh random HS256 secret and these settings.
    pub async fn start(envs: &[(&str, &str)]) -> InProcessNode {
        let secret = new_secret();
        let mut all = vec![("NOTIFY_JWT_SECRET", secret.as_str())];
        all.extend_from_slice(envs);
        let mut node = Self::start_raw(&all).await;
        node.api.secret = secret;
        node
    }

    /// Starts a node with exactly these settings (no secret added).
    pub async fn start_raw(envs: &[(&str, &str)]) -> InProcessNode {
        let config = serve_config(envs);
        let (port_tx, port_rx) = oneshot::channel::<Result<u16, String>>();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let app = match Application::build(config).await {
                    Ok(app) => app,
                    Err(e) => {
                        let _ = port_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = port_tx.send(Ok(app.port()));
                let _ = app
                    .run_until_stopped(async move {
                        let _ = stopped.await;
                    })
                    .await;
            })
        });
        let port = tokio::time::timeout(Duration::from_secs(10), port_rx)
            .await
            .expect("the in-process node starts within 10 s")
            .expect("the node thread reports its start")
            .unwrap_or_else(|e| panic!("the in-process node did not start: {e}"));
        InProcessNode {
            api: NodeApi::new(port, String::new()),
            stop: Some(stop),
        }
    }
}

/// An in-process node with a fresh random HS256 secret.
pub async fn in_process_app() -> InProcessNode {
    InProcessNode::start(&[]).await
}

/// An in-process node with a fresh random HS256 secret and extra settings.
pub async fn in_process_app_with(envs: &[(&str, &str)]) -> InProcessNode {
    InProcessNode::start(envs).await
}

/// An in-process node with exactly these settings (no secret added).
pub async fn in_process_app_raw(envs: &[(&str, &str)]) -> InProcessNode {
    InProcessNode::start_raw(envs).await
}

/// The `serve` settings for `envs` (`NOTIFY_*` names, as the binary reads
/// them), on `127.0.0.1:0` with one worker unless `envs` say otherwise.
/// Each name is turned into the flag that reads it, so nothing here lists
/// the settings again.
fn serve_config(envs: &[(&str, &str)]) -> ServeConfig {
    // clap would also read NOTIFY_* from this process's environment, which
    // a process-spawning test strips and this one cannot.
    if let Some((k, _)) = std::env::vars().find(|(k, _)| k.starts_with("NOTIFY_")) {
        panic!("{k} is set in the test environment; in-process nodes would read it");
    }
    let command = ServeConfig::augment_args(Command::new("in-process")).args_override_self(true);
    let flag = |env: &str| {
        command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == env))
            .and_then(|a| a.get_long())
            .unwrap_or_else(|| panic!("no serve flag reads {env}"))
            .to_string()
    };
    let mut argv = vec![
        "in-process".to_string(),
        "--listen=127.0.0.1:0".to_string(),
        "--workers=1".to_string(),
    ];
    for (env, value) in envs {
        argv.push(format!("--{}={value}", flag(env)));
    }
    let matches = command
        .clone()
        .try_get_matches_from(&argv)
        .unwrap_or_else(|e| panic!("settings {envs:?}: {e}"));
    ServeConfig::from_arg_matches(&matches).unwrap_or_else(|e| panic!("settings {envs:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_by_their_environment_names_and_later_ones_win() {
        let config = serve_config(&[
            ("NOTIFY_KEEPALIVE", "1s"),
            ("NOTIFY_MAX_CONNECTIONS_PER_USER", "2"),
            ("NOTIFY_WORKERS", "3"),
        ]);
        assert_eq!(config.listen.to_string(), "127.0.0.1:0");
        assert_eq!(config.workers, Some(3));
        assert_eq!(config.max_connections_per_user, 2);
    }
}
