//! The `campusbite-notify` binary: parses the command line and runs it.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use campusbite_notify::cli::{self, Cli, Command};

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
            let result =
                actix_web::rt::System::new().block_on(campusbite_notify::server::run(*config));
            match result {
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
        Command::Loadgen(args) => campusbite_notify::loadgen::run(*args),
    }
}
