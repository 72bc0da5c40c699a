//! `serve` settings: every one a flag and a `NOTIFY_*` environment variable
//! (docs/protocol.md §4). A flag's long name is its variable's name without the
//! `NOTIFY_` prefix, so an error can always name the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use actix_web::cookie::SameSite;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;

/// Settings of `campusbite-notify serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address and port to listen on.
    #[arg(long, env = "NOTIFY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// HS256 secret for user and publisher tokens (at least 16 bytes).
    #[arg(long, env = "NOTIFY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key; switches token checking to RS256 or ES256 by key type.
    #[arg(long, env = "NOTIFY_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Required `iss` claim.
    #[arg(long, env = "NOTIFY_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim.
    #[arg(long, env = "NOTIFY_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// JWK set of the identity provider: an `http(s)://` URL or a file path.
    /// The token header's `kid` picks the key; the key fixes the algorithm.
    #[arg(long, env = "NOTIFY_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,

    /// How often the JWK set is refetched (an unknown `kid` also refetches
    /// it, at most every 30 s).
    #[arg(long, env = "NOTIFY_JWT_JWKS_REFRESH", default_value = "5m", value_parser = duration)]
    pub jwt_jwks_refresh: Duration,

    /// The claim that holds the user id: a string, or an integer taken in decimal.
    #[arg(long, env = "NOTIFY_JWT_USER_CLAIM", default_value = "sub")]
    pub jwt_user_claim: String,

    /// HS256 secret for publisher tokens only (at least 16 bytes); user
    /// tokens are then never accepted as publisher tokens, nor the reverse.
    #[arg(long, env = "NOTIFY_PUBLISHER_JWT_SECRET", hide_env_values = true)]
    pub publisher_jwt_secret: Option<String>,

    /// PEM public key for publisher tokens only (RS256, ES256 or EdDSA by key type).
    #[arg(long, env = "NOTIFY_PUBLISHER_JWT_PUBLIC_KEY_FILE")]
    pub publisher_jwt_public_key_file: Option<PathBuf>,

    /// Clock-skew allowance for `exp` and `nbf` when a token is checked at connect.
    #[arg(long, env = "NOTIFY_JWT_LEEWAY", default_value = "5s", value_parser = duration)]
    pub jwt_leeway: Duration,

    /// How long before a stream's token expires the `token-expiring` event is sent.
    #[arg(long, env = "NOTIFY_TOKEN_EXPIRY_WARNING", default_value = "60s", value_parser = duration)]
    pub token_expiry_warning: Duration,

    /// Comma-separated NATS servers; unset means the embedded single-node bus.
    #[arg(long, env = "NOTIFY_NATS_URL", value_parser = nats_servers)]
    pub nats_url: Option<NatsServers>,

    /// NATS credentials file (`.creds`: user JWT and NKey seed).
    #[arg(long, env = "NOTIFY_NATS_CREDS_FILE")]
    pub nats_creds_file: Option<PathBuf>,

    /// NATS user name (with NOTIFY_NATS_PASSWORD).
    #[arg(long, env = "NOTIFY_NATS_USER")]
    pub nats_user: Option<String>,

    /// NATS password (with NOTIFY_NATS_USER).
    #[arg(long, env = "NOTIFY_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,

    /// NATS authentication token.
    #[arg(long, env = "NOTIFY_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,

    /// PEM CA certificate(s) the NATS servers' certificates must chain to; requires TLS.
    #[arg(long, env = "NOTIFY_NATS_TLS_CA_FILE")]
    pub nats_tls_ca_file: Option<PathBuf>,

    /// PEM client certificate for mutual TLS with NATS (with NOTIFY_NATS_TLS_KEY_FILE).
    #[arg(long, env = "NOTIFY_NATS_TLS_CERT_FILE")]
    pub nats_tls_cert_file: Option<PathBuf>,

    /// PEM private key of the NATS client certificate.
    #[arg(long, env = "NOTIFY_NATS_TLS_KEY_FILE")]
    pub nats_tls_key_file: Option<PathBuf>,

    /// NATS subject prefix (`<prefix>.user.<userId>`).
    #[arg(long, env = "NOTIFY_SUBJECT_PREFIX", default_value = "campusbite.notify", value_parser = subject_prefix)]
    pub subject_prefix: String,

    /// JetStream replicas of the notification stream (1, 3 or 5 in practice).
    #[arg(long, env = "NOTIFY_STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,

    /// JetStream streams the users are partitioned over (1 = one stream).
    /// Above 1, every NATS server needs the subject mapping
    /// `<prefix>.user.*` → `<prefix>.part.{{partition(N,1)}}.{{wildcard(1)}}`
    /// with the same N (docs/capacity.md); start-up checks that it agrees.
    #[arg(long, env = "NOTIFY_STREAM_PARTITIONS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub stream_partitions: u16,

    /// Notifications kept per user for resume.
    #[arg(long, env = "NOTIFY_HISTORY_DEPTH", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub history_depth: u32,

    /// How long notifications are kept for resume (e.g. `24h`).
    #[arg(long, env = "NOTIFY_HISTORY_MAX_AGE", default_value = "24h", value_parser = duration)]
    pub history_max_age: Duration,

    /// Embedded bus only: total bytes of history kept on this node; the
    /// oldest notifications (of any user) go first beyond it.
    #[arg(long, env = "NOTIFY_HISTORY_MAX_BYTES", default_value_t = 256 << 20, value_parser = clap::value_parser!(u64).range(1024..))]
    pub history_max_bytes: u64,

    /// A stream quiet this long gets a keep-alive comment.
    #[arg(long, env = "NOTIFY_KEEPALIVE", default_value = "15s", value_parser = duration)]
    pub keepalive: Duration,

    /// Open streams per node.
    #[arg(long, env = "NOTIFY_MAX_CONNECTIONS", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Open streams per user per node.
    #[arg(long, env = "NOTIFY_MAX_CONNECTIONS_PER_USER", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_user: u32,

    /// Frames queued per stream before its client counts as too slow and is
    /// disconnected (it reconnects and resumes from history).
    #[arg(long, env = "NOTIFY_SINK_QUEUE", default_value_t = 32, value_parser = clap::value_parser!(u32).range(2..=65_536))]
    pub sink_queue: u32,

    /// Largest accepted notification JSON, in bytes.
    #[arg(long, env = "NOTIFY_MAX_NOTIFICATION_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(64..=1_048_576))]
    pub max_notification_bytes: u32,

    /// Most users in one batch publish.
    #[arg(long, env = "NOTIFY_MAX_BATCH_USERS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_batch_users: u32,

    /// Bytes of remembered publish Idempotency-Keys on this node (each key
    /// costs ~200 bytes plus 8 per user of its batch); over it, the
    /// publisher holding the most loses its oldest keys first.
    #[arg(long, env = "NOTIFY_IDEMPOTENCY_MAX_BYTES", default_value_t = 32 << 20, value_parser = clap::value_parser!(u64).range(4096..=(1 << 40)))]
    pub idempotency_max_bytes: u64,

    /// Comma-separated allowed CORS origins; `*` allows any.
    #[arg(long, env = "NOTIFY_CORS_ORIGINS")]
    pub cors_origins: Option<String>,

    /// `SameSite` of the session cookie: `lax` (pages on the same site, e.g.
    /// another subdomain), `strict`, or `none` (pages on other sites).
    #[arg(long, env = "NOTIFY_COOKIE_SAME_SITE", default_value = "lax", value_parser = PossibleValuesParser::new(["none", "lax", "strict"]).map(same_site))]
    pub cookie_same_site: SameSite,

    /// Drain time on SIGTERM: streams are ended spread over it, then the process exits.
    #[arg(long, env = "NOTIFY_SHUTDOWN_GRACE", default_value = "20s", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// PEM certificate chain: serve HTTPS with HTTP/2.
    #[arg(long, env = "NOTIFY_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key for the certificate.
    #[arg(long, env = "NOTIFY_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// Log format on stderr: `text`, or `json` (one object per line).
    #[arg(long, env = "NOTIFY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "NOTIFY_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,
}

/// The NATS servers of `NOTIFY_NATS_URL`, split and trimmed (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsServers(pub Vec<String>);

/// A setting that parsed but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {why}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub name: &'static str,
    /// What is wrong with it.
    pub why: String,
}

impl ConfigError {
    pub(crate) fn new(name: &'static str, why: impl Into<String>) -> Self {
        Self {
            name,
            why: why.into(),
        }
    }
}

impl ServeConfig {
    /// Cross-field checks that clap cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.jwt_jwks_url.is_some() {
            if self.jwt_secret.is_some() || self.jwt_public_key_file.is_some() {
                return Err(ConfigError::new(
                    "NOTIFY_JWT_JWKS_URL",
                    "cannot be combined with NOTIFY_JWT_SECRET or NOTIFY_JWT_PUBLIC_KEY_FILE",
                ));
            }
            if self.jwt_jwks_refresh < Duration::from_secs(1) {
                return Err(ConfigError::new(
                    "NOTIFY_JWT_JWKS_REFRESH",
                    "must be at least 1s",
                ));
            }
        }
        match (&self.jwt_secret, &self.jwt_public_key_file) {
            (None, None) if self.jwt_jwks_url.is_none() => {
                return Err(ConfigError::new(
                    "NOTIFY_JWT_SECRET",
                    "required (or set NOTIFY_JWT_PUBLIC_KEY_FILE or NOTIFY_JWT_JWKS_URL)",
                ))
            }
            (Some(secret), None) if secret.len() < 16 => {
                return Err(ConfigError::new(
                    "NOTIFY_JWT_SECRET",
                    "must be at least 16 bytes",
                ))
            }
            _ => {}
        }
        match (
            &self.publisher_jwt_secret,
            &self.publisher_jwt_public_key_file,
        ) {
            (Some(_), Some(_)) => return Err(ConfigError::new(
                "NOTIFY_PUBLISHER_JWT_SECRET",
                "set NOTIFY_PUBLISHER_JWT_SECRET or NOTIFY_PUBLISHER_JWT_PUBLIC_KEY_FILE, not both",
            )),
            (Some(secret), None) if secret.len() < 16 => {
                return Err(ConfigError::new(
                    "NOTIFY_PUBLISHER_JWT_SECRET",
                    "must be at least 16 bytes",
                ))
            }
            _ => {}
        }
        if self.jwt_user_claim.is_empty() {
            return Err(ConfigError::new(
                "NOTIFY_JWT_USER_CLAIM",
                "must name a claim",
            ));
        }
        if self.keepalive < Duration::from_millis(100) {
            return Err(ConfigError::new(
                "NOTIFY_KEEPALIVE",
                "must be at least 100ms",
            ));
        }
        if self.history_max_age < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "NOTIFY_HISTORY_MAX_AGE",
                "must be at least 1s",
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(ConfigError::new(
                "NOTIFY_TLS_CERT_FILE",
                "NOTIFY_TLS_CERT_FILE and NOTIFY_TLS_KEY_FILE go together",
            ));
        }
        self.validate_nats_access()
    }

    /// NATS credentials: at most one method, complete pairs, readable files,
    /// and only with NATS servers.
    fn validate_nats_access(&self) -> Result<(), ConfigError> {
        let methods = [
            ("NOTIFY_NATS_CREDS_FILE", self.nats_creds_file.is_some()),
            (
                "NOTIFY_NATS_USER",
                self.nats_user.is_some() || self.nats_password.is_some(),
            ),
            ("NOTIFY_NATS_TOKEN", self.nats_token.is_some()),
        ];
        let mut chosen = methods
            .iter()
            .filter(|(_, set)| *set)
            .map(|(name, _)| *name);
        if let (Some(first), Some(second)) = (chosen.next(), chosen.next()) {
            return Err(ConfigError::new(
                second,
                format!("{first} is set too; choose one NATS authentication method (NOTIFY_NATS_CREDS_FILE, NOTIFY_NATS_USER + NOTIFY_NATS_PASSWORD, or NOTIFY_NATS_TOKEN)"),
            ));
        }
        let pairs = [
            (
                "NOTIFY_NATS_USER",
                self.nats_user.is_some(),
                "NOTIFY_NATS_PASSWORD",
                self.nats_password.is_some(),
            ),
            (
                "NOTIFY_NATS_TLS_CERT_FILE",
                self.nats_tls_cert_file.is_some(),
                "NOTIFY_NATS_TLS_KEY_FILE",
                self.nats_tls_key_file.is_some(),
            ),
        ];
        for (a, a_set, b, b_set) in pairs {
            if a_set != b_set {
                let (missing, given) = if a_set { (b, a) } else { (a, b) };
                return Err(ConfigError::new(missing, format!("required with {given}")));
            }
        }
        let files = [
            ("NOTIFY_NATS_CREDS_FILE", &self.nats_creds_file),
            ("NOTIFY_NATS_TLS_CA_FILE", &self.nats_tls_ca_file),
            ("NOTIFY_NATS_TLS_CERT_FILE", &self.nats_tls_cert_file),
            ("NOTIFY_NATS_TLS_KEY_FILE", &self.nats_tls_key_file),
        ];
        for (name, file) in files {
            let Some(file) = file else { continue };
            if self.nats_url.is_none() {
                return Err(ConfigError::new(name, "only used with NOTIFY_NATS_URL"));
            }
            std::fs::File::open(file)
                .map_err(|e| ConfigError::new(name, format!("{}: {e}", file.display())))?;
        }
        if self.nats_url.is_none() {
            if let Some((name, _)) = methods.iter().find(|(_, set)| *set) {
                return Err(ConfigError::new(name, "only used with NOTIFY_NATS_URL"));
            }
        }
        Ok(())
    }

    /// Allowed CORS origins; `None` when CORS is off, `Some([])` never.
    pub fn cors_allowlist(&self) -> Option<Vec<String>> {
        let list: Vec<String> = self
            .cors_origins
            .as_deref()?
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        (!list.is_empty()).then_some(list)
    }
}

fn duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|e| format!("expected a duration like 15s, 20m or 24h ({e})"))
}

fn nats_servers(raw: &str) -> Result<NatsServers, String> {
    let servers: Vec<String> = raw
        .split(',')
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if servers.is_empty() {
        Err("no server given".into())
    } else {
        Ok(NatsServers(servers))
    }
}

fn same_site(raw: String) -> SameSite {
    match raw.as_str() {
        "strict" => SameSite::Strict,
        "lax" => SameSite::Lax,
        _ => SameSite::None,
    }
}

fn subject_prefix(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.split('.').all(|token| {
            !token.is_empty()
                && !token
                    .chars()
                    .any(|c| c == '*' || c == '>' || c.is_whitespace() || c.is_control())
        });
    if ok {
        Ok(raw.to_owned())
    } else {
        Err("expected dot-separated subject tokens without wildcards or spaces".into())
    }
}
