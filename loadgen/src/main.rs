//! The `campusbite-loadgen` binary: parses the command line and runs a load.

use std::process::ExitCode;

use clap::Parser;

use campusbite_loadgen::LoadgenArgs;

/// campusbite-loadgen: open SSE streams, publish, measure.
#[derive(Debug, Parser)]
#[command(name = "campusbite-loadgen", version, about)]
struct Cli {
    #[command(flatten)]
    args: LoadgenArgs,
}

fn main() -> ExitCode {
    campusbite_loadgen::run(Cli::parse().args)
}
