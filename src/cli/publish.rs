//! `campusbite-notify publish`: send an order notification over HTTP(S) or
//! NATS JetStream, as a producer would, and print the event ids.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::{json, Map, Value};

use super::token::{mint, TokenArgs};
use crate::user_id::UserId;

/// An order's status, each with the title and message a student sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrderStatus {
    Accepted,
    Preparing,
    Ready,
    Collected,
    Cancelled,
}

impl OrderStatus {
    /// The wire name (`data.status`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Preparing => "preparing",
            Self::Ready => "ready",
            Self::Collected => "collected",
            Self::Cancelled => "cancelled",
        }
    }

    /// The notification's title.
    pub fn title(self) -> &'static str {
        match self {
            Self::Accepted => "Order Accepted ✅",
            Self::Preparing => "Order Being Prepared 👨‍🍳",
            Self::Ready => "Order Ready for Pickup 🛍",
            Self::Collected => "Order Collected 🎉",
            Self::Cancelled => "Order Cancelled",
        }
    }

    /// The notification's message for order `number` (and its pickup OTP).
    pub fn message(self, number: &str, otp: Option<&str>) -> String {
        match self {
            Self::Accepted => format!("The kitchen has accepted order {number}."),
            Self::Preparing => format!("Order {number} is being prepared."),
            Self::Ready => match otp {
                Some(otp) => format!("Order {number} is ready. Show OTP {otp} at the counter."),
                None => format!("Order {number} is ready."),
            },
            Self::Collected => format!("Order {number} has been collected. Enjoy your meal!"),
            Self::Cancelled => format!("Order {number} was cancelled."),
        }
    }
}

/// Arguments of `publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Server base URL, `http://` or `https://` (ignored with --nats).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// PEM file of a CA to trust for `https://` besides the system's.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Target user id; repeat for a batch.
    #[arg(long = "user", required = true)]
    pub users: Vec<String>,
    /// Order status; sets the title and message.
    #[arg(long, value_enum, default_value = "ready")]
    pub status: OrderStatus,
    /// The order's MongoDB ObjectId (24 hex digits); a new one when absent.
    #[arg(long, value_parser = object_id)]
    pub order: Option<String>,
    /// Order number shown to the student.
    #[arg(long, default_value = "CB20240115001")]
    pub order_number: String,
    /// Pickup OTP (sent with status `ready`).
    #[arg(long)]
    pub otp: Option<String>,
    /// Title instead of the status' own.
    #[arg(long)]
    pub title: Option<String>,
    /// Message instead of the status' own.
    #[arg(long)]
    pub message: Option<String>,
    /// A whole notification JSON instead of the fields above.
    #[arg(long)]
    pub json: Option<String>,
    /// Publish over NATS JetStream to these servers (comma-separated) instead of HTTP.
    #[arg(long, env = "NATS_URL")]
    pub nats: Option<String>,
    /// NATS user (with --nats-password).
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// NATS `.creds` file.
    #[arg(long, env = "NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// NATS subject prefix.
    #[arg(
        long,
        env = "NOTIFY_SUBJECT_PREFIX",
        default_value = "campusbite.notify"
    )]
    pub subject_prefix: String,
    /// HS256 secret to mint a publisher token with (HTTP only).
    #[arg(long, env = "NOTIFY_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// How long to keep retrying (503, timeouts, no NATS ack).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

fn object_id(raw: &str) -> Result<String, String> {
    if raw.len() == 24 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(raw.to_ascii_lowercase())
    } else {
        Err("expected a MongoDB ObjectId: 24 hexadecimal digits".into())
    }
}

/// A new ObjectId-shaped id: 4 bytes of seconds, then 8 random bytes.
fn new_object_id() -> String {
    let secs = crate::auth::now_unix() as u32;
    format!("{secs:08x}{:016x}", fastrand::u64(..))
}

/// Builds the notification from the flags; the order id it carries.
fn notification(args: &PublishArgs) -> Result<(Value, String), String> {
    let order = args.order.clone().unwrap_or_else(new_object_id);
    if let Some(raw) = &args.json {
        let value = serde_json::from_str(raw).map_err(|e| format!("--json: {e}"))?;
        return Ok((value, order));
    }
    let status = args.status;
    let mut data = json!({
        "orderId": order,
        "orderNumber": args.order_number,
        "status": status.as_str(),
    });
    let otp = args.otp.as_deref().filter(|_| status == OrderStatus::Ready);
    if let Some(otp) = otp {
        data["otp"] = json!(otp);
    }
    let title = args.title.as_deref().unwrap_or(status.title());
    let message = args
        .message
        .clone()
        .unwrap_or_else(|| status.message(&args.order_number, otp));
    Ok((
        json!({ "type": "order_update", "title": title, "message": message, "data": data }),
        order,
    ))
}

/// Publishes and prints the answer: `<status> <body>` (HTTP) or
/// `202 {"ids":{…}}` (NATS). Exit 0 on success, 1 on a refusal, 2 on an error.
pub fn run(args: &PublishArgs) -> ExitCode {
    let result = args
        .users
        .iter()
        .try_for_each(|user| {
            UserId::parse(user)
                .map(|_| ())
                .map_err(|e| format!("--user {user:?}: {e}"))
        })
        .and_then(|()| notification(args))
        .and_then(|(notification, order)| {
            // One key per order transition, so a retry stores nothing twice.
            let key = format!("order-{order}-{}", args.status.as_str());
            match &args.nats {
                Some(urls) => publish_nats(args, urls, &notification, &key),
                None => publish_http(args, &notification, &key),
            }
        });
    match result {
        Ok((status, body)) => {
            println!("{status} {body}");
            if (200..300).contains(&status) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `POST /api/notifications/publish` with an `Idempotency-Key`, retried with
/// the same key on `503`, `429` and transport errors until `--timeout`.
fn publish_http(
    args: &PublishArgs,
    notification: &Value,
    key: &str,
) -> Result<(u16, String), String> {
    let secret = args
        .secret
        .clone()
        .ok_or("set NOTIFY_JWT_SECRET (or --secret) to publish over HTTP")?;
    let token = mint(&TokenArgs {
        user: None,
        publisher: true,
        ttl: Duration::from_secs(300),
        secret,
        issuer: std::env::var("NOTIFY_JWT_ISSUER").ok(),
        audience: std::env::var("NOTIFY_JWT_AUDIENCE").ok(),
    })?;
    let body = match args.users.as_slice() {
        [one] => json!({ "userId": one, "notification": notification }),
        many => json!({ "userIds": many, "notification": notification }),
    }
    .to_string();
    let base = args.url.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err("--url must start with http:// or https://".into());
    }
    let mut client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("campusbite-notify/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
        for cert in certs {
            client = client.add_root_certificate(cert);
        }
    }
    let client = client.build().map_err(|e| e.to_string())?;
    let deadline = Instant::now() + args.timeout;
    let mut attempt = 0u32;
    loop {
        let answer = client
            .post(format!("{base}/api/notifications/publish"))
            .bearer_auth(&token)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", key)
            .body(body.clone())
            .send()
            .and_then(|r| {
                let status = r.status().as_u16();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                Ok((status, retry_after, r.text()?))
            });
        let wait = match answer {
            Ok((status, retry_after, text)) if status == 503 || status == 429 => {
                if Instant::now() >= deadline {
                    return Ok((status, text));
                }
                eprintln!("answered {status}; retrying with the same Idempotency-Key");
                retry_after.map(Duration::from_secs)
            }
            Ok((status, _, text)) => return Ok((status, text)),
            Err(e) => {
                if Instant::now() >= deadline {
                    return Err(format!("{base}: {}", error_chain(&e)));
                }
                eprintln!(
                    "{}; retrying with the same Idempotency-Key",
                    error_chain(&e)
                );
                None
            }
        };
        std::thread::sleep(wait.unwrap_or_else(|| backoff(attempt)));
        attempt += 1;
    }
}

/// JetStream publish with `Nats-Msg-Id`, retried until acked or `--timeout`.
fn publish_nats(
    args: &PublishArgs,
    urls: &str,
    notification: &Value,
    key: &str,
) -> Result<(u16, String), String> {
    let payload = notification.to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut options = async_nats::ConnectOptions::new()
            .name("campusbite-notify publish")
            .connection_timeout(Duration::from_secs(5));
        if let Some(path) = &args.nats_creds {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| format!("--nats-creds {}: {e}", path.display()))?;
        } else if let Some(user) = &args.nats_user {
            options = options
                .user_and_password(user.clone(), args.nats_password.clone().unwrap_or_default());
        }
        let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_owned()).collect();
        let client = options
            .connect(urls)
            .await
            .map_err(|e| format!("NATS: {e}"))?;
        let jetstream = async_nats::jetstream::new(client);
        let deadline = Instant::now() + args.timeout;
        let mut ids = Map::new();
        for user in &args.users {
            let subject = format!("{}.user.{user}", args.subject_prefix);
            let msg_id = format!("{key}-{user}");
            let mut attempt = 0u32;
            let sequence = loop {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", msg_id.as_str());
                let acked = match jetstream
                    .publish_with_headers(subject.clone(), headers, payload.clone().into())
                    .await
                {
                    Ok(ack) => ack.await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match acked {
                    Ok(ack) => break ack.sequence,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("publish to {subject}: {e}; retrying");
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                    }
                    Err(e) => return Err(format!("publish to {subject}: {e}")),
                }
            };
            ids.insert(user.clone(), json!(sequence.to_string()));
        }
        Ok((202, json!({ "ids": ids }).to_string()))
    })
}

/// 200 ms doubling to at most 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << attempt.min(5)).min(5_000))
}

/// An error with its causes, one line (reqwest hides the useful part in `source`).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
