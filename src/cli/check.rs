//! `check`: the fsck-style report of a data directory, a partition or one segment.

use crate::cli::progress::Progress;
use crate::cli::sys::{colour_stdout, stdout_width};
use crate::cli::{EngineArgs, EXIT_CLEAN, EXIT_DAMAGE, EXIT_ERROR};
use crate::engine::analysis::check_path;
use crate::engine::map::render_text;
use crate::engine::page::render_html;
use crate::engine::replica::check_with_replicas;
use clap::Args;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A data directory, one partition directory, or one <20 digits>.log file.
    pub path: PathBuf,
    /// Print the schema-1 JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// After the summary, draw each log's damage map: one line of its bytes (kept, cut, hidden, unreadable, gaps).
    #[arg(long, conflicts_with = "json")]
    pub map: bool,
    /// The map's width in columns (default: the terminal's, or 80 when stdout is not a terminal).
    #[arg(long, value_name = "N", requires = "map", value_parser = clap::value_parser!(u16).range(10..))]
    pub map_width: Option<u16>,
    /// Also write the report as one self-contained HTML page (map, summary, a row per segment).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Also write the figures in the Prometheus text format to FILE (atomically:
    /// a temporary file in the same directory, renamed), for node_exporter's textfile collector.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub fn run(a: &CheckArgs) -> ExitCode {
    let opts = a.engine.analyze_options();
    let bar = Progress::new(&a.path, "checking", false, a.engine.mounts());
    let progress = |n: u64| bar.inc(n);
    let result = if a.engine.replicas.is_empty() {
        check_path(&a.path, &opts, &progress).map_err(|e| e.to_string())
    } else {
        check_with_replicas(
            &a.path,
            &a.engine.replicas,
            a.engine.prefer,
            &opts,
            &progress,
        )
        .map(|(l, r, _)| (l, r))
        .map_err(|e| e.to_string())
    };
    drop(bar);
    let report = match result {
        Ok((_, r)) => r,
        Err(e) => {
            eprintln!(
                "recoverfs check: {}",
                crate::engine::layout::display_name(&e)
            );
            return ExitCode::from(EXIT_ERROR);
        }
    };
    if let Some(path) = &a.metrics {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let text = crate::engine::metrics::render_check(&report, now);
        if let Err(e) = write_atomic(path, text.as_bytes()) {
            eprintln!("recoverfs check: --metrics {}: {e}", path.display());
            return ExitCode::from(EXIT_ERROR);
        }
    }
    let mut text = if a.json {
        report.to_json() + "\n"
    } else {
        report.render_human()
    };
    if a.map {
        let width = a
            .map_width
            .map(usize::from)
            .or_else(stdout_width)
            .unwrap_or(80);
        text.push('\n');
        text.push_str(&render_text(&report, width, colour_stdout()));
    }
    if let Some(p) = &a.html {
        if let Err(e) = fs::write(p, render_html(&report)) {
            eprintln!(
                "recoverfs check: writing {}: {e}",
                crate::engine::layout::display_name(&p.display().to_string())
            );
            return ExitCode::from(EXIT_ERROR);
        }
    }
    if io::stdout().write_all(text.as_bytes()).is_err() {
        return ExitCode::from(EXIT_ERROR);
    }
    ExitCode::from(if report.summary.needs_attention() {
        EXIT_DAMAGE
    } else {
        EXIT_CLEAN
    })
}

/// Writes `bytes` to `path` through a temporary file in the same directory,
/// renamed over it: a reader (the textfile collector) never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".recoverfs-metrics")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // Readable like a file written the usual way (tempfile makes it 0600).
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
