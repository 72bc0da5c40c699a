//! `check-config` and `check-token`: what an operator runs before (or
//! instead of) guessing why a node will not start or a token is refused.

use std::ffi::OsStr;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use jsonwebtoken::dangerous::insecure_decode_claims;
use serde_json::Value;

use crate::auth::{now_unix, Authenticator};
use crate::config::{ConfigError, ServeConfig};

/// Arguments of `check-token`: the token, and the `serve` settings whose keys check it.
#[derive(Debug, Args)]
pub struct CheckTokenArgs {
    /// The JWT to check.
    #[arg(value_name = "TOKEN")]
    pub token: String,
    #[command(flatten)]
    pub config: ServeConfig,
}

/// Everything `serve` checks before it binds: each setting, the keys, TLS files.
pub fn load(config: &ServeConfig) -> Result<Authenticator, ConfigError> {
    config.validate()?;
    let auth = Authenticator::from_config(config)?;
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
        crate::tls::server_config(cert, key)?;
    }
    Ok(auth)
}

/// `check-config`: validates as `serve` does and prints the effective
/// settings; `matches` are the subcommand's (they know each value's source).
pub fn check_config(config: &ServeConfig, matches: &ArgMatches) -> ExitCode {
    if let Err(e) = load(config) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    println!("configuration is valid");
    for line in effective_settings(matches) {
        println!("{line}");
    }
    ExitCode::SUCCESS
}

/// One `NAME=value (source)` line per `serve` setting; secrets as `<set>`.
fn effective_settings(matches: &ArgMatches) -> Vec<String> {
    let command = ServeConfig::augment_args(clap::Command::new("serve"));
    let mut lines = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let name = match arg.get_env() {
            Some(env) => env.to_string_lossy().into_owned(),
            None => format!("--{}", arg.get_long().unwrap_or(id)),
        };
        let value: Option<Vec<&OsStr>> = matches.get_raw(id).map(|values| values.collect());
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let shown = match value {
            None => String::new(),
            Some(_) if is_secret(arg) => "<set>".to_owned(),
            Some(values) => values
                .iter()
                .map(|v| v.to_string_lossy())
                .collect::<Vec<_>>()
                .join(","),
        };
        lines.push(format!("{name}={shown} ({source})"));
    }
    lines
}

/// A setting whose value must never be printed.
fn is_secret(arg: &clap::Arg) -> bool {
    let env = arg
        .get_env()
        .map(|e| e.to_string_lossy().to_ascii_uppercase())
        .unwrap_or_default();
    arg.is_hide_env_values_set()
        || ["_SECRET", "_PASSWORD", "_TOKEN"]
            .iter()
            .any(|word| env.ends_with(word))
}

/// `check-token`: prints the header, the claims, and how a node with these
/// settings judges the token as a user token and as a publisher token.
/// Exit 0 when either accepts it, 1 when both refuse it, 2 on a bad setting.
pub fn check_token(args: &CheckTokenArgs) -> ExitCode {
    // Verification may fetch a JWK set (an unknown `kid` refetches), so it
    // runs on a small runtime of its own.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(check_token_with_keys(args))
}

async fn check_token_with_keys(args: &CheckTokenArgs) -> ExitCode {
    let auth = match load(&args.config) {
        Ok(_) => match Authenticator::start(&args.config).await {
            Ok(auth) => auth,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let token = args.token.trim();
    match jsonwebtoken::decode_header(token) {
        Ok(header) => println!("header: {}", to_json(&header)),
        Err(e) => println!("header: unreadable ({e})"),
    }
    match insecure_decode_claims::<Value>(token) {
        Ok(claims) => {
            println!("claims: {claims}");
            for claim in ["exp", "nbf", "iat"] {
                if let Some(at) = claims.get(claim).and_then(Value::as_u64) {
                    println!("{claim}: {}", when(at));
                }
            }
        }
        Err(e) => println!("claims: unreadable ({e})"),
    }
    let user = auth.user(token).await;
    match &user {
        Ok(user) => println!(
            "user token: accepted; user id {:?}; the stream ends at {}",
            user.user.as_str(),
            when(user.expires_at)
        ),
        Err(e) => println!("user token: refused by rule {}: {e}", e.reason()),
    }
    let publisher = auth.publisher(token).await;
    match &publisher {
        Ok(_) => println!("publisher token: accepted"),
        Err(e) => println!("publisher token: refused by rule {}: {e}", e.reason()),
    }
    if user.is_ok() || publisher.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("({e})"))
}

/// Unix seconds as RFC 3339 UTC, with how far from now.
fn when(unix: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    let now = now_unix();
    let relative = if unix > now {
        format!(
            "in {}",
            humantime::format_duration(std::time::Duration::from_secs(unix - now))
        )
    } else {
        format!(
            "{} ago",
            humantime::format_duration(std::time::Duration::from_secs(now - unix))
        )
    };
    format!(
        "{unix} ({}, {relative})",
        humantime::format_rfc3339_seconds(at)
    )
}
