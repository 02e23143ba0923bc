//! `repair`: writes the repaired view out, to a new directory or in place after a backup.

use crate::cli::check::log_report;
use crate::cli::progress::Progress;
use crate::cli::sys::{block_signals, wait_signal};
use crate::cli::{EngineArgs, EXIT_CLEAN, EXIT_DAMAGE};
use crate::engine::integrity::{tree_hashes, write_new};
use crate::repair::interrupt::{request_stop, StopWhen};
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
    /// Write the SHA-256 of every segment file read, before repairing, to FILE
    /// (sha256sum's format, paths relative to DATA_DIR), and of every segment file of
    /// the result to FILE.written (relative to NEW_DIR, or DATA_DIR with --in-place).
    #[arg(long, value_name = "FILE", conflicts_with = "dry_run")]
    pub hashes: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The `repair` front end: runs one mode, prints its summary (or the report), maps errors to exit codes.
pub fn run(a: &RepairArgs) -> ExitCode {
    // Before any thread starts (the progress bar's, the copies'), so that one thread takes them.
    let sigs = block_signals();
    if let Err(e) = std::thread::Builder::new()
        .name("recoverfs-signals".into())
        .spawn(move || on_signals(&sigs))
    {
        eprintln!("recoverfs repair: starting the signal thread: {e}");
        return ExitCode::from(crate::cli::EXIT_ERROR);
    }
    let opts = match a.engine.analyze_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("recoverfs repair: --baseline {e}");
            return ExitCode::from(crate::cli::EXIT_ERROR);
        }
    };
    // The acquisition hashes are taken before anything is written.
    let read_hashes = match &a.hashes {
        Some(_) => match tree_hashes(&a.data_dir) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("recoverfs repair: --hashes: {e}");
                return ExitCode::from(crate::cli::EXIT_ERROR);
            }
        },
        None => None,
    };
    let started = std::time::Instant::now();
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
            log_report(&s.report, started.elapsed());
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
            log_report(&s.report, started.elapsed());
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
            if let (Some(to), Some(read)) = (&a.hashes, &read_hashes) {
                let result = a.output.as_deref().unwrap_or(&a.data_dir);
                let written = std::path::PathBuf::from(format!("{}.written", to.display()));
                let done = write_new(to, ".recoverfs-hashes", read)
                    .map_err(|e| format!("{}: {e}", to.display()))
                    .and_then(|()| tree_hashes(result))
                    .and_then(|w| {
                        write_new(&written, ".recoverfs-hashes", &w)
                            .map_err(|e| format!("{}: {e}", written.display()))
                    });
                if let Err(e) = done {
                    // The repair itself is done: say so, and that the list is missing.
                    eprintln!("recoverfs repair: the repair is complete, but --hashes failed: {e}");
                    let _ = io::stdout().write_all(text.as_bytes());
                    return ExitCode::from(crate::cli::EXIT_ERROR);
                }
            }
            // The repair is done; a closed stdout does not undo it.
            let _ = io::stdout().write_all(text.as_bytes());
            ExitCode::from(if pending { EXIT_DAMAGE } else { EXIT_CLEAN })
        }
        Err(e) => {
            // Never two messages: the signal thread, saying it ends the process, holds this.
            let _say = SAY.lock();
            eprintln!(
                "recoverfs repair: {}",
                crate::engine::layout::display_name(&e.to_string())
            );
            ExitCode::from(e.exit_code())
        }
    }
}

/// Held by whoever prints the last word of the run (the signal thread never lets go).
static SAY: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// Exit status after an interrupt, as a shell reports a process killed by SIGINT.
const EXIT_INTERRUPTED: i32 = 130;

/// Takes SIGINT, SIGTERM and SIGHUP for the whole run: before anything is written the
/// process ends at once; while writing, the repair stops at its next safe point (and says
/// what it left); a second signal then ends it at once, which a rerun also recovers from.
fn on_signals(sigs: &nix::sys::signal::SigSet) {
    loop {
        let sig = wait_signal(sigs);
        let now = |what: &str| -> ! {
            let _say = SAY.lock();
            eprintln!(
                "recoverfs repair: {sig}: interrupted; nothing is lost; run the same command again to finish ({what})"
            );
            std::process::exit(EXIT_INTERRUPTED)
        };
        match request_stop() {
            StopWhen::Now => now("nothing was written"),
            StopWhen::AtNextSafePoint => {
                eprintln!("recoverfs repair: {sig}: stopping at the next safe point (again to stop at once)")
            }
            StopWhen::Finishing => {
                eprintln!("recoverfs repair: {sig}: the repair is already committed; finishing")
            }
            StopWhen::AlreadyAsked => now(
                "stopped at once: what this run left half-written, the same command clears or finishes",
            ),
        }
    }
}
