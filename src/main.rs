//! The `campusbite-notify` binary: parses the command line and runs it.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use campusbite_notify::cli::{self, Cli, Command};
use campusbite_notify::config::ServeConfig;
use campusbite_notify::server::{Application, StartError};
use campusbite_notify::shutdown::Signals;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::report_parse_error(e),
    };
    match cli.command {
        Command::Serve(config) => {
            cli::init_logging();
            match actix_web::rt::System::new().block_on(serve(*config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
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
