//! `campusbite-notify publish`: send a test notification over HTTP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use super::token::{mint, TokenArgs};

/// Arguments of `publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Server base URL (plain HTTP).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Target user id; repeat for a batch.
    #[arg(long = "user", required = true)]
    pub users: Vec<String>,
    /// Notification title.
    #[arg(long, default_value = "Order Ready for Pickup 🛍")]
    pub title: String,
    /// Notification message.
    #[arg(
        long,
        default_value = "Your order is ready. Show the OTP at the counter."
    )]
    pub message: String,
    /// Order status (`accepted`, `preparing`, `ready`, `collected`, `cancelled`).
    #[arg(long, default_value = "ready")]
    pub status: String,
    /// Pickup OTP (shown when status is `ready`).
    #[arg(long)]
    pub otp: Option<String>,
    /// Order number.
    #[arg(long, default_value = "CB20240115001")]
    pub order_number: String,
    /// A whole notification JSON instead of the fields above.
    #[arg(long)]
    pub json: Option<String>,
    /// Publish over NATS JetStream (comma-separated servers) instead of HTTP.
    #[arg(long, env = "NOTIFY_NATS_URL")]
    pub nats: Option<String>,
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
}

/// Builds the notification from the flags.
fn notification(args: &PublishArgs) -> Result<Value, String> {
    if let Some(raw) = &args.json {
        return serde_json::from_str(raw).map_err(|e| format!("--json: {e}"));
    }
    let mut data = json!({
        "orderId": "507f1f77bcf86cd799439011",
        "orderNumber": args.order_number,
        "status": args.status,
    });
    if let Some(otp) = &args.otp {
        data["otp"] = json!(otp);
    }
    Ok(
        json!({ "type": "order_update", "title": args.title, "message": args.message, "data": data }),
    )
}

/// Publishes and prints the server's answer.
pub fn run(args: &PublishArgs) -> ExitCode {
    let result = match &args.nats {
        Some(urls) => publish_nats(args, urls),
        None => publish(args),
    };
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

fn publish(args: &PublishArgs) -> Result<(u16, String), String> {
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
    let notification = notification(args)?;
    let body = match args.users.as_slice() {
        [one] => json!({ "userId": one, "notification": notification }),
        many => json!({ "userIds": many, "notification": notification }),
    }
    .to_string();
    let authority = args
        .url
        .strip_prefix("http://")
        .ok_or("--url must start with http://")?
        .trim_end_matches('/');
    let host_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut stream =
        TcpStream::connect(&host_port).map_err(|e| format!("connect {host_port}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "POST /api/notifications/publish HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("malformed HTTP response")?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

/// JetStream publish with `Nats-Msg-Id`, as producers should do it.
fn publish_nats(args: &PublishArgs, urls: &str) -> Result<(u16, String), String> {
    let notification = notification(args)?.to_string();
    for user in &args.users {
        crate::user_id::UserId::parse(user).map_err(|e| format!("--user {user:?}: {e}"))?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_owned()).collect();
        let client = async_nats::connect(urls)
            .await
            .map_err(|e| format!("NATS: {e}"))?;
        let jetstream = async_nats::jetstream::new(client);
        let mut ids = serde_json::Map::new();
        for user in &args.users {
            let mut headers = async_nats::HeaderMap::new();
            let msg_id = format!("cli-{:016x}-{user}", fastrand::u64(..));
            headers.insert("Nats-Msg-Id", msg_id.as_str());
            let subject = format!("{}.user.{user}", args.subject_prefix);
            let ack = jetstream
                .publish_with_headers(subject, headers, notification.clone().into())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            ids.insert(user.clone(), json!(ack.sequence.to_string()));
        }
        Ok((202, json!({ "ids": ids }).to_string()))
    })
}
