//! The embeddable node: [`Application::build`] turns settings into a bound,
//! ready-to-run server; [`Application::run_until_stopped`] serves until a
//! shutdown future resolves and then drains. The binary adds the signals,
//! the hard grace deadline and the process exit; tests run several nodes in
//! one process, each on port 0.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{middleware, web, App, HttpServer};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::Authenticator;
use crate::bus::embedded::{EmbeddedBus, HistoryLimits};
use crate::bus::nats::{
    NatsAuth, NatsBus, NatsError, NatsSetting, NatsSettings, NatsTls, SharedNatsBus, StreamField,
};
use crate::bus::Bus;
use crate::config::{ConfigError, ServeConfig};
use crate::http::{self, ApiLimits, AppState, SocketHandle};
use crate::idempotency::IdempotencyCache;
use crate::open_files;
use crate::registry::Registry;
use crate::shutdown::{self, Lifecycle};
use crate::slots::ConnectionSlots;
use crate::user::StreamPolicy;

/// Why the server could not start (or had to stop).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is wrong; the message names its variable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Resolves if the bus finds, after start-up, that it cannot work with these
/// settings (e.g. a NATS stream with another configuration).
type Failure = Pin<Box<dyn Future<Output = StartError>>>;

/// A node, bound and ready to serve.
pub struct Application {
    server: Server,
    local_addr: SocketAddr,
    registry: Arc<Registry>,
    lifecycle: Arc<Lifecycle>,
    prometheus: PrometheusHandle,
    grace: Duration,
    failure: Failure,
}

/// What `build` and `build_with_listener` bind to.
enum Bind {
    Addr(SocketAddr),
    Listener(TcpListener),
}

impl Application {
    /// Validates the config, connects the bus, binds `config.listen` (port 0
    /// picks a free port). Must run inside an actix `System`.
    pub async fn build(config: ServeConfig) -> Result<Self, StartError> {
        let listen = config.listen;
        Self::assemble(config, Bind::Addr(listen)).await
    }

    /// Same as [`Self::build`], on a listener the caller already bound
    /// (`config.listen` is then ignored).
    pub async fn build_with_listener(
        config: ServeConfig,
        listener: TcpListener,
    ) -> Result<Self, StartError> {
        Self::assemble(config, Bind::Listener(listener)).await
    }

    /// The address the node accepts connections on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The port the node accepts connections on.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Serves until `shutdown` resolves, then drains as on SIGTERM
    /// (readiness false, streams ended spread over the grace period, then the
    /// HTTP server stops) and returns. Never exits the process.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartError> {
        let Self {
            server,
            local_addr: _,
            registry,
            lifecycle,
            prometheus,
            grace,
            failure,
        } = self;
        let handle = server.handle();
        let upkeep = actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                prometheus.run_upkeep();
            }
        });
        let mut server = pin!(server);
        let mut failure = failure;
        // The server future must keep being polled while it stops (it
        // handles the stop command), hence the joins below.
        let result = tokio::select! {
            result = &mut server => result.map_err(StartError::from),
            error = &mut failure => {
                let _ = futures_util::future::join(&mut server, handle.stop(false)).await;
                Err(error)
            }
            () = shutdown => {
                tracing::info!(streams_users = registry.len(), grace = ?grace, "draining");
                lifecycle.start_draining();
                let drain = async {
                    let spread = shutdown::close_spread(grace);
                    let listen_until = tokio::time::Instant::now() + spread;
                    registry.close_all(spread).await;
                    // Keep listening while load balancers may still route
                    // here: a browser that reconnects to this node gets a
                    // `draining` soft refusal and retries, where a closed
                    // port would end its EventSource.
                    tokio::time::sleep_until(listen_until).await;
                    // Streams that joined while the first pass ran.
                    registry.close_all(Duration::ZERO).await;
                    handle.stop(true).await;
                };
                let (result, ()) = futures_util::future::join(&mut server, drain).await;
                result.map_err(StartError::from)
            }
        };
        upkeep.abort();
        if result.is_ok() {
            tracing::info!("stopped");
        }
        result
    }

    async fn assemble(config: ServeConfig, bind: Bind) -> Result<Self, StartError> {
        config.validate()?;
        let max_connections = max_connections(config.max_connections);
        let prometheus = crate::metrics::install(max_connections)
            .map_err(|e| ConfigError::new("RUST_LOG", format!("metrics recorder: {e}")))?;
        crate::metrics::metrics().auth_failure_reasons(crate::auth::AuthError::REASONS);
        let auth = Authenticator::start(&config).await?;
        let (bus, failure) = start_bus(&config).await?;
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
            slots: ConnectionSlots::new(max_connections),
            limits: ApiLimits {
                max_notification_bytes: config.max_notification_bytes as usize,
                max_batch_users: config.max_batch_users as usize,
                sink_queue: config.sink_queue as usize,
                cookie_same_site: config.cookie_same_site,
                cookie_origins: config
                    .cors_allowlist()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|o| o != "*")
                    .collect(),
            },
            prometheus: prometheus.clone(),
            idempotency: IdempotencyCache::new(
                usize::try_from(config.idempotency_max_bytes).unwrap_or(usize::MAX),
            ),
        });

        let cors_origins = config.cors_allowlist();
        let workers = config
            .workers
            .map(usize::from)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap_fn(http::access_log)
                .wrap(middleware::DefaultHeaders::new().add(("X-Content-Type-Options", "nosniff")))
                .configure(|cfg| http::configure(cfg, http::cors(cors_origins.as_deref())))
        })
        // Every transport (plain, TLS, HTTP/2) gets the handle that cuts
        // off a client that stops reading.
        .on_connect(|connection, data| {
            if let Some(handle) = SocketHandle::of(connection) {
                data.insert(handle.into_cut_off());
            }
        })
        // A closed browser must free its stream at once, even when it is silent.
        .h1_allow_half_closed(false)
        .disable_signals()
        .shutdown_timeout(shutdown::FLUSH_TIME.as_secs().max(1))
        .workers(workers)
        // Our own limit answers 503; the acceptor's must never be hit first.
        .max_connections(max_connections as usize + 1024)
        .backlog(4096);
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
            _ => None,
        };
        let bound = match bind {
            Bind::Addr(addr) => match tls {
                Some(tls) => server.bind_rustls_0_23(addr, tls),
                None => server.bind(addr),
            }
            .map_err(|source| StartError::Bind { addr, source }),
            Bind::Listener(listener) => {
                let addr = listener.local_addr()?;
                match tls {
                    Some(tls) => server.listen_rustls_0_23(listener, tls),
                    None => server.listen(listener),
                }
                .map_err(|source| StartError::Bind { addr, source })
            }
        }?;
        let local_addr = bound
            .addrs()
            .first()
            .copied()
            .ok_or_else(|| std::io::Error::other("no listening address"))?;
        tracing::info!(listen = %local_addr, tls = config.tls_cert_file.is_some(), workers, bus = if config.nats_url.is_some() { "nats" } else { "embedded" }, "serving");
        Ok(Self {
            server: bound.run(),
            local_addr,
            registry,
            lifecycle,
            prometheus,
            grace: config.shutdown_grace,
            failure,
        })
    }
}

/// `NOTIFY_MAX_CONNECTIONS`, lowered (and logged) when it does not fit
/// under the open-files limit, which is raised to its hard limit first.
fn max_connections(wanted: u32) -> u32 {
    let Some(soft) = open_files::raise_soft_limit() else {
        tracing::warn!(
            "cannot read the open-files limit; NOTIFY_MAX_CONNECTIONS is not checked against it"
        );
        return wanted;
    };
    let effective = open_files::fit(wanted, soft);
    if effective < wanted {
        tracing::warn!(
            max_connections = wanted,
            effective,
            open_files = soft,
            reserved = open_files::RESERVED,
            "NOTIFY_MAX_CONNECTIONS={wanted} does not fit under the open-files limit of {soft}; this node accepts at most {effective} streams"
        );
    }
    effective
}

/// The bus the settings ask for, and what resolves if it fails later.
async fn start_bus(config: &ServeConfig) -> Result<(Arc<dyn Bus>, Failure), StartError> {
    let Some(servers) = &config.nats_url else {
        let bus = EmbeddedBus::start(HistoryLimits {
            depth: config.history_depth as usize,
            max_age: config.history_max_age,
            max_bytes: config.history_max_bytes,
        });
        return Ok((Arc::new(bus), Box::pin(std::future::pending())));
    };
    let nats = NatsBus::start(NatsSettings {
        urls: servers.0.clone(),
        prefix: config.subject_prefix.clone(),
        replicas: usize::from(config.stream_replicas),
        depth: i64::from(config.history_depth),
        max_age: config.history_max_age,
        partitions: u32::from(config.stream_partitions),
        auth: nats_auth(config),
        tls: NatsTls {
            ca_file: config.nats_tls_ca_file.clone(),
            client_cert: config
                .nats_tls_cert_file
                .clone()
                .zip(config.nats_tls_key_file.clone()),
        },
    })
    .await
    .map_err(nats_config_error)?;
    let failed = nats.failed();
    let failure: Failure = Box::pin(async move { nats_config_error(failed.await).into() });
    Ok((Arc::new(SharedNatsBus(nats)), failure))
}

/// A NATS error as the setting at fault (its variable) and what is wrong.
fn nats_config_error(error: NatsError) -> ConfigError {
    let name = match error.setting() {
        NatsSetting::Urls => "NOTIFY_NATS_URL",
        NatsSetting::Partitions => "NOTIFY_STREAM_PARTITIONS",
        NatsSetting::CredsFile => "NOTIFY_NATS_CREDS_FILE",
        NatsSetting::Password => "NOTIFY_NATS_PASSWORD",
        NatsSetting::Token => "NOTIFY_NATS_TOKEN",
    };
    let why = error.describe(|field| match field {
        StreamField::MaxMessagesPerSubject => "NOTIFY_HISTORY_DEPTH",
        StreamField::MaxAge => "NOTIFY_HISTORY_MAX_AGE",
        StreamField::Replicas => "NOTIFY_STREAM_REPLICAS",
        StreamField::Subjects | StreamField::Republish | StreamField::AllowDirect => "",
    });
    ConfigError::new(name, why)
}

/// The one NATS authentication method `validate` let through.
fn nats_auth(config: &ServeConfig) -> NatsAuth {
    if let Some(file) = &config.nats_creds_file {
        NatsAuth::CredsFile(file.clone())
    } else if let (Some(user), Some(password)) = (&config.nats_user, &config.nats_password) {
        NatsAuth::UserPassword {
            user: user.clone(),
            password: password.clone(),
        }
    } else if let Some(token) = &config.nats_token {
        NatsAuth::Token(token.clone())
    } else {
        NatsAuth::None
    }
}
