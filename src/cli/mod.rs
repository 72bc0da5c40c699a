//! The command line: `serve` and the tools around it.

pub mod check;
pub mod publish;
pub mod token;

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand};

use crate::config::ServeConfig;

/// campusbite-notify: real-time order notifications for CampusBite browsers.
#[derive(Debug, Parser)]
#[command(
    name = "campusbite-notify",
    version,
    about,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (every flag has a NOTIFY_* environment variable).
    Serve(Box<ServeConfig>),
    /// Load and validate every `serve` setting as `serve` would, and print
    /// the effective configuration (secrets as <set>).
    CheckConfig(Box<ServeConfig>),
    /// Verify a token with the configured keys: print its header, claims,
    /// the user id it maps to, or the rule that refuses it.
    CheckToken(Box<check::CheckTokenArgs>),
    /// Mint a development token for a user or a publisher.
    Token(token::TokenArgs),
    /// Publish an order notification over HTTP(S) or NATS JetStream.
    Publish(Box<publish::PublishArgs>),
}

/// Shows help or the version (exit 0); help for a bare command on stderr
/// (exit 2); otherwise clap's whole error (exit 2). When the offending
/// argument has an environment variable, the first line also names it,
/// since that is where a deployment sets it.
pub fn report_parse_error(error: clap::Error) -> ExitCode {
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            return ExitCode::from(2);
        }
        _ => {}
    }
    let rendered = error.render().to_string();
    let env = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => env_of(arg),
        _ => None,
    };
    match (env, rendered.split_once('\n')) {
        (Some(env), Some((first, rest))) => {
            let first = first.trim_start_matches("error: ");
            eprint!("error: {env}: {first}\n{rest}");
        }
        _ => eprint!("{rendered}"),
    }
    ExitCode::from(2)
}

/// The environment variable of the flag in `arg` (`--history-depth <N>`),
/// looked up in the subcommand being run; `None` for flags that have none.
fn env_of(arg: &str) -> Option<String> {
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    let command = Cli::command();
    let sub = std::env::args().nth(1)?;
    let sub = command.find_subcommand(&sub)?;
    let env = sub
        .get_arguments()
        .find(|a| a.get_long() == Some(long))?
        .get_env()
        .map(|env| env.to_string_lossy().into_owned());
    env
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`): text, or one
/// JSON object per line (`timestamp`, `level`, `target`, `message` and the
/// event's fields beside it) for log pipelines.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}
