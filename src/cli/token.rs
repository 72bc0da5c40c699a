//! `campusbite-notify token`: mint a development JWT (HS256).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

use crate::auth::{now_unix, PUBLISH_SCOPE};
use crate::user_id::UserId;

/// Arguments of `token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (`sub`) of a browser token.
    #[arg(long, required_unless_present = "publisher")]
    pub user: Option<String>,
    /// Mint a publisher token (`scope: notifications:publish`) instead.
    #[arg(long, conflicts_with = "user")]
    pub publisher: bool,
    /// Lifetime, e.g. `1h`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// The HS256 secret the server uses.
    #[arg(long, env = "NOTIFY_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
    /// `iss` claim, if the server requires one.
    #[arg(long, env = "NOTIFY_JWT_ISSUER")]
    pub issuer: Option<String>,
    /// `aud` claim, if the server requires one.
    #[arg(long, env = "NOTIFY_JWT_AUDIENCE")]
    pub audience: Option<String>,
}

/// Builds the token text.
pub fn mint(args: &TokenArgs) -> Result<String, String> {
    let mut claims = json!({ "exp": now_unix() + args.ttl.as_secs(), "iat": now_unix() });
    if let Some(user) = &args.user {
        UserId::parse(user).map_err(|e| format!("--user: {e}"))?;
        claims["sub"] = json!(user);
    } else {
        claims["sub"] = json!("campusbite-notify-cli");
        claims["scope"] = json!(PUBLISH_SCOPE);
    }
    if let Some(iss) = &args.issuer {
        claims["iss"] = json!(iss);
    }
    if let Some(aud) = &args.audience {
        claims["aud"] = json!(aud);
    }
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(args.secret.as_bytes()),
    )
    .map_err(|e| e.to_string())
}

/// Prints the token.
pub fn run(args: &TokenArgs) -> ExitCode {
    match mint(args) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
