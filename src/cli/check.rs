//! `check`: the fsck-style report of a data directory, a partition or one segment.

use crate::cli::progress::Progress;
use crate::cli::{EngineArgs, EXIT_CLEAN, EXIT_DAMAGE, EXIT_ERROR};
use crate::engine::analysis::check_path;
use clap::Args;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A data directory, one partition directory, or one <20 digits>.log file.
    pub path: PathBuf,
    /// Print the schema-1 JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub fn run(a: &CheckArgs) -> ExitCode {
    let opts = a.engine.analyze_options();
    let bar = Progress::new(&a.path, "checking", false);
    let progress = |n: u64| bar.inc(n);
    let result = check_path(&a.path, &opts, &progress);
    drop(bar);
    let report = match result {
        Ok((_, r)) => r,
        Err(e) => {
            eprintln!(
                "recoverfs check: {}",
                crate::engine::layout::display_name(&e.to_string())
            );
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let text = if a.json {
        report.to_json() + "\n"
    } else {
        report.render_human()
    };
    if io::stdout().write_all(text.as_bytes()).is_err() {
        return ExitCode::from(EXIT_ERROR);
    }
    ExitCode::from(if report.summary.view_differs {
        EXIT_DAMAGE
    } else {
        EXIT_CLEAN
    })
}
