//! The command line: `serve` and the tools around it.

pub mod publish;
pub mod token;

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Parser, Subcommand};

use crate::config::ServeConfig;

/// campusbite-notify: real-time order notifications for CampusBite browsers.
#[derive(Debug, Parser)]
#[command(name = "campusbite-notify", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (every flag has a NOTIFY_* environment variable).
    Serve(Box<ServeConfig>),
    /// Mint a development token for a user or a publisher.
    Token(token::TokenArgs),
    /// Publish a test notification to users over HTTP.
    Publish(publish::PublishArgs),
}

/// Prints a parse error as one line naming the setting's environment variable
/// (`--history-depth` is `NOTIFY_HISTORY_DEPTH`), or shows help/version.
pub fn report_parse_error(error: clap::Error) -> ExitCode {
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    let rendered = error.render().to_string();
    let line = rendered.lines().next().unwrap_or("invalid command line");
    let line = line.trim_start_matches("error: ");
    match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => {
            let flag = arg.split_whitespace().next().unwrap_or(arg);
            let name = flag
                .trim_start_matches('-')
                .replace('-', "_")
                .to_uppercase();
            eprintln!("error: NOTIFY_{name}: {line}");
        }
        _ => eprintln!("error: {line}"),
    }
    ExitCode::from(2)
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
