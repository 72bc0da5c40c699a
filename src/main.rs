//! The `campusbite-notify` binary: parses the command line and runs it.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};

use campusbite_notify::cli::{self, Cli, Command};
use campusbite_notify::config::ServeConfig;
use campusbite_notify::server::{Application, StartError};
use campusbite_notify::shutdown::Signals;

// jemalloc: a delivery allocates small, short-lived buffers on several
// paths (NATS message headers, JSON, the idle stream's released write
// buffer), and glibc's malloc spent ~21 % of a node's CPU on them (perf,
// bench/cross-node); jemalloc cuts CPU per delivery 13-20 % and per connect
// ~20 % at the same memory per idle stream (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(matches) => matches,
        Err(e) => return cli::report_parse_error(e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return cli::report_parse_error(e),
    };
    match cli.command {
        Command::Serve(config) => {
            cli::init_logging(config.log_format == "json");
            match actix_web::rt::System::new().block_on(serve(*config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::CheckConfig(config) => match matches.subcommand_matches("check-config") {
            Some(sub) => cli::check::check_config(&config, sub),
            None => ExitCode::from(2),
        },
        Command::CheckToken(args) => cli::check::check_token(&args),
        Command::Token(args) => cli::token::run(&args),
        Command::Publish(args) => cli::publish::run(&args),
    }
}

/// Runs the node until SIGTERM or SIGINT has drained it.
async fn serve(config: ServeConfig) -> Result<(), StartError> {
    let grace = config.shutdown_grace;
    let app = Application::build(config).await?;
    let signals = Signals::install()?;
    // Scripts and tests read the port from this line.
    println!("listening on {}", app.local_addr());
    std::io::stdout().flush()?;
    app.run_until_stopped(async move {
        signals.recv().await;
        hard_deadline(grace);
    })
    .await
}

/// Exits the process at `grace` whatever is still running: the bound on
/// draining that the operations contract promises.
fn hard_deadline(grace: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(grace);
        tracing::warn!("grace period over; exiting");
        std::process::exit(0);
    });
}
