//! Builds the node from its settings and runs it until it has drained.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::cookie::SameSite;
use actix_web::{middleware, web, App, HttpServer};

use crate::auth::Authenticator;
use crate::bus::embedded::{EmbeddedBus, HistoryLimits};
use crate::bus::nats::{NatsBus, NatsSettings, SharedNatsBus};
use crate::bus::Bus;
use crate::config::{ConfigError, ServeConfig};
use crate::http::{self, ApiLimits, AppState, ConnectionSlots, SocketHandle};
use crate::registry::Registry;
use crate::shutdown::{self, Lifecycle};
use crate::user::StreamPolicy;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs `serve` until a shutdown signal has drained the node.
pub async fn run(config: ServeConfig) -> Result<(), StartError> {
    config.validate()?;
    let prometheus = crate::metrics::install(config.max_connections)
        .map_err(|e| ConfigError::new("RUST_LOG", format!("metrics recorder: {e}")))?;
    let auth = Authenticator::from_config(&config)?;
    let bus: Arc<dyn Bus> = match &config.nats_url {
        None => Arc::new(EmbeddedBus::start(HistoryLimits {
            depth: config.history_depth as usize,
            max_age: config.history_max_age,
            max_bytes: config.history_max_bytes,
        })),
        Some(urls) => Arc::new(SharedNatsBus(
            NatsBus::start(NatsSettings {
                urls: urls
                    .split(',')
                    .map(|u| u.trim().to_owned())
                    .filter(|u| !u.is_empty())
                    .collect(),
                prefix: config.subject_prefix.clone(),
                replicas: usize::from(config.stream_replicas),
                depth: i64::from(config.history_depth),
                max_age: config.history_max_age,
                partitions: u32::from(config.stream_partitions),
            })
            .await?,
        )),
    };
    let registry = Registry::new(
        bus.clone(),
        StreamPolicy {
            keepalive: config.keepalive,
            expiry_warning: config.token_expiry_warning,
            max_per_user: config.max_connections_per_user as usize,
        },
    );
    let lifecycle = Arc::new(Lifecycle::default());
    let state = web::Data::new(AppState {
        auth,
        bus,
        registry: registry.clone(),
        lifecycle: lifecycle.clone(),
        slots: ConnectionSlots::new(config.max_connections),
        limits: ApiLimits {
            max_notification_bytes: config.max_notification_bytes as usize,
            max_batch_users: config.max_batch_users as usize,
            sink_queue: config.sink_queue as usize,
            cookie_same_site: match config.cookie_same_site.as_str() {
                "strict" => SameSite::Strict,
                "lax" => SameSite::Lax,
                _ => SameSite::None,
            },
        },
        prometheus: prometheus.clone(),
    });

    let cors_origins = config.cors_allowlist();
    let workers = config
        .workers
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(http::cors(cors_origins.as_deref()))
            .wrap_fn(http::access_log)
            .wrap(middleware::DefaultHeaders::new().add(("X-Content-Type-Options", "nosniff")))
            .configure(http::configure)
    })
    .on_connect(|connection, data| {
        if let Some(handle) = connection
            .downcast_ref::<actix_web::rt::net::TcpStream>()
            .and_then(SocketHandle::of)
        {
            data.insert(handle);
        }
    })
    // A closed browser must free its stream at once, even when it is silent.
    .h1_allow_half_closed(false)
    .disable_signals()
    .shutdown_timeout(shutdown::FLUSH_TIME.as_secs().max(1))
    .workers(workers)
    // Our own limit answers 503; the acceptor's must never be hit first.
    .max_connections(config.max_connections as usize + 1024)
    .backlog(4096);
    let server = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => {
            let tls = crate::tls::server_config(cert, key)?;
            server.bind_rustls_0_23(config.listen, tls)
        }
        _ => server.bind(config.listen),
    }
    .map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;

    let signals = shutdown::Signals::install()?;
    for addr in server.addrs() {
        println!("listening on {addr}");
    }
    std::io::stdout().flush()?;
    tracing::info!(listen = %config.listen, tls = config.tls_cert_file.is_some(), workers, bus = if config.nats_url.is_some() { "nats" } else { "embedded" }, "serving");

    let server = server.run();
    let handle = server.handle();
    let grace = config.shutdown_grace;
    actix_web::rt::spawn(async move {
        signals.recv().await;
        tracing::info!(streams_users = registry.len(), grace = ?grace, "draining");
        lifecycle.start_draining();
        hard_deadline(grace);
        let spread = shutdown::close_spread(grace);
        let listen_until = tokio::time::Instant::now() + spread;
        registry.close_all(spread).await;
        // Keep listening while load balancers may still route here: a
        // browser that reconnects to this node gets a `draining` soft
        // refusal and retries, where a closed port would end its EventSource.
        tokio::time::sleep_until(listen_until).await;
        // Streams that joined while the first pass ran.
        registry.close_all(Duration::ZERO).await;
        handle.stop(true).await;
    });
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            prometheus.run_upkeep();
        }
    });
    server.await?;
    tracing::info!("stopped");
    Ok(())
}

/// Exits the process at `grace` whatever is still running: the contract's bound.
fn hard_deadline(grace: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(grace);
        tracing::warn!("grace period over; exiting");
        std::process::exit(0);
    });
}
