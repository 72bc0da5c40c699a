//! The embeddable server: several nodes built in one process on port 0, each
//! on its own thread in its own actix System, stopped by a future.

use std::time::Duration;

use campusbite_notify::config::ServeConfig;
use campusbite_notify::server::Application;
use clap::Parser;

#[derive(Parser)]
struct Settings {
    #[command(flatten)]
    serve: ServeConfig,
}

fn config() -> ServeConfig {
    Settings::parse_from([
        "test",
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret",
        "an-in-process-test-secret",
        "--workers",
        "1",
        "--shutdown-grace",
        "2s",
    ])
    .serve
}

/// A node on its own thread: its port, its stop switch, and its end.
fn spawn_node(
    config: ServeConfig,
) -> (
    u16,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<Result<(), String>>,
) {
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let app = Application::build(config)
                .await
                .map_err(|e| e.to_string())?;
            assert_eq!(app.port(), app.local_addr().port());
            port_tx.send(app.port()).map_err(|e| e.to_string())?;
            app.run_until_stopped(async move {
                let _ = stop_rx.await;
            })
            .await
            .map_err(|e| e.to_string())
        })
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the node reports its port");
    (port, stop_tx, thread)
}

#[tokio::test]
async fn two_nodes_in_one_process_serve_and_stop() {
    let nodes = [spawn_node(config()), spawn_node(config())];
    assert_ne!(nodes[0].0, nodes[1].0);
    let client = reqwest::Client::new();
    for (port, _, _) in &nodes {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .expect("readyz answers");
        assert_eq!(ready.status(), 200);
        let metrics = client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics body");
        assert!(metrics.contains("notify_connections_open"));
    }
    for (port, stop, thread) in nodes {
        stop.send(()).expect("the node is running");
        let ended = tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("join task");
        assert_eq!(ended.expect("node thread"), Ok(()));
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} is closed after the stop"
        );
    }
}

#[test]
fn a_bad_setting_is_an_error_not_an_exit() {
    let mut config = config();
    config.jwt_secret = Some("short".into());
    let result = actix_web::rt::System::new().block_on(Application::build(config));
    let error = result.err().expect("a short secret is refused");
    assert_eq!(
        error.to_string(),
        "NOTIFY_JWT_SECRET: must be at least 16 bytes"
    );
}

#[test]
fn a_listener_bound_by_the_caller_is_used() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build_with_listener(config(), listener)
            .await
            .expect("builds");
        assert_eq!(app.port(), port);
        app.run_until_stopped(async {})
            .await
            .expect("stops cleanly");
    });
}
