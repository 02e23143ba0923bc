//! The `recoverfs` binary: parses the command line and hands off to a front end.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    recoverfs::cli::Cli::parse().run()
}
