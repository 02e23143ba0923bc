//! The `recoverfs` binary: parses the command line and hands off to a front end.

use clap::Parser;
use recoverfs::cli::{run_check, run_dump, run_synth, Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Check(a) => run_check(a),
        Command::Dump(a) => run_dump(a),
        Command::Mount(a) => recoverfs::mount::run_mount(a),
        Command::Repair(a) => recoverfs::repair::run(a),
        Command::Demo(a) => recoverfs::demo::run_demo(a),
        Command::Synth(a) => run_synth(a),
    }
}
