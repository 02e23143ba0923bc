//! `repair`: writes the repaired view out, to a new directory or in place after a backup.

use crate::cli::progress::Progress;
use crate::cli::{EngineArgs, EXIT_CLEAN, EXIT_DAMAGE};
use crate::repair::{render_in_place, render_output, repair_in_place, repair_to_with};
use clap::Args;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["output", "in_place"])))]
pub struct RepairArgs {
    /// The Takhin data directory to repair.
    pub data_dir: PathBuf,
    /// Write the repaired tree to this new (or empty) directory; DATA_DIR is left untouched.
    #[arg(long, value_name = "NEW_DIR", conflicts_with_all = ["backup", "dry_run"])]
    pub output: Option<PathBuf>,
    /// Repair DATA_DIR itself, after copying every original it changes or removes into --backup.
    /// With --replica, the offsets DATA_DIR lacks are healed into it from the replicas (never written to).
    #[arg(long)]
    pub in_place: bool,
    /// Where --in-place keeps the originals (outside DATA_DIR; new, empty, or this repair's own).
    #[arg(long, value_name = "BACKUP_DIR")]
    pub backup: Option<PathBuf>,
    /// With --in-place: print what would change and touch nothing (exit 1 when changes are pending, 0 when none).
    #[arg(long, requires = "in_place")]
    pub dry_run: bool,
    /// Print the schema-1 JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The `repair` front end: runs one mode, prints its summary (or the report), maps errors to exit codes.
pub fn run(a: &RepairArgs) -> ExitCode {
    let opts = a.engine.analyze_options();
    // --output reads every .log once to analyse it, then writes the whole tree.
    let bar = Progress::new(
        &a.data_dir,
        if a.output.is_some() {
            "repairing"
        } else {
            "checking"
        },
        a.output.is_some(),
        a.engine.mounts(),
    );
    // A dry run with changes planned exits 1: a script can tell "changes pending".
    let mut pending = false;
    let printed = match &a.output {
        Some(out) => repair_to_with(
            &a.data_dir,
            out,
            &opts,
            &a.engine.replicas,
            a.engine.prefer,
            bar.sink(),
        )
        .map(|s| {
            if a.json {
                s.report.to_json() + "\n"
            } else {
                render_output(&a.data_dir, out, &s)
            }
        }),
        None => repair_in_place(
            &a.data_dir,
            a.backup.as_deref(),
            a.dry_run,
            &opts,
            &a.engine.replicas,
            a.engine.prefer,
            bar.sink(),
        )
        .map(|s| {
            pending = s.dry_run && !s.entries.is_empty();
            if a.json {
                s.report.to_json() + "\n"
            } else {
                render_in_place(
                    &a.data_dir,
                    a.backup.as_deref().unwrap_or(Path::new("")),
                    &s,
                )
            }
        }),
    };
    match printed {
        Ok(text) => {
            // The repair is done; a closed stdout does not undo it.
            let _ = io::stdout().write_all(text.as_bytes());
            ExitCode::from(if pending { EXIT_DAMAGE } else { EXIT_CLEAN })
        }
        Err(e) => {
            eprintln!(
                "recoverfs repair: {}",
                crate::engine::layout::display_name(&e.to_string())
            );
            ExitCode::from(e.exit_code())
        }
    }
}
