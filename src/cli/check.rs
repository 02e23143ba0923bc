//! `check`: the fsck-style report of a data directory, a partition or one segment.

use crate::cli::progress::Progress;
use crate::cli::sys::{colour_stdout, stdout_width};
use crate::cli::{EngineArgs, EXIT_CLEAN, EXIT_DAMAGE, EXIT_ERROR};
use crate::engine::analysis::check_path;
use crate::engine::index::IndexKind;
use crate::engine::integrity::{
    baseline_entries, compare_tree, files_read, sha256_lines, write_new, write_new_with,
};
use crate::engine::layout::display_name;
use crate::engine::map::render_text;
use crate::engine::page::render_html;
use crate::engine::replica::check_with_replicas;
use crate::engine::report::Report;
use clap::Args;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
    /// Also write the report as one self-contained HTML page (map, summary, a row per segment),
    /// through a temporary file renamed over FILE (a symlink at FILE is refused).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Also write the figures in the Prometheus text format to FILE (atomically:
    /// a temporary file in the same directory, renamed), for node_exporter's textfile collector.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Write an integrity baseline of the tree to FILE (atomically): every segment
    /// file's size, times and a CRC-32C per 64 KiB block. Take it while the log is good
    /// (after a clean shutdown, nightly); `--baseline FILE` later finds any byte changed since.
    #[arg(long, value_name = "FILE")]
    pub save_baseline: Option<PathBuf>,
    /// Write the SHA-256 of every original file read to FILE, in sha256sum's format
    /// (paths relative to the checked directory): verify with `cd DIR && sha256sum -c FILE`.
    #[arg(long, value_name = "FILE")]
    pub hashes: Option<PathBuf>,
    /// Accepted for fsck and e2fsck users (`-n`: change nothing): check never writes,
    /// with or without it.
    #[arg(short = 'n')]
    pub no_change: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// With -v: one debug line per segment (clean ones too, which the report leaves
/// out), then what was read and how fast. `repair -v` prints the same.
pub fn log_report(report: &Report, elapsed: Duration) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let mut bytes = 0u64;
    for log in &report.logs {
        for s in &log.segments {
            bytes = bytes.saturating_add(s.original_bytes);
            let offsets = match (s.first_offset, s.last_offset) {
                (Some(f), Some(l)) => format!("offsets {f}..={l}"),
                _ => "no record".into(),
            };
            tracing::debug!(
                "{}: {}, {} of {} bytes valid, {} record(s), {offsets}, view {}; index {}; timeindex {}",
                display_name(&s.path),
                s.status.as_str(),
                s.valid_bytes,
                s.original_bytes,
                s.records,
                s.view.as_str(),
                s.index.describe(IndexKind::Offset),
                s.timeindex.describe(IndexKind::Time),
            );
        }
    }
    let secs = elapsed.as_secs_f64();
    tracing::debug!(
        "{} log(s), {} segment(s), {bytes} .log bytes examined in {secs:.3} s ({:.1} MiB/s), policy {}, source read through {}",
        report.summary.logs,
        report.summary.segments,
        bytes as f64 / (1 << 20) as f64 / secs.max(1e-9),
        report.policy,
        report.source_access.as_str(),
    );
}

pub fn run(a: &CheckArgs) -> ExitCode {
    let mut opts = match a.engine.analyze_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("recoverfs check: --baseline {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    opts.scan.sum_blocks = a.save_baseline.is_some();
    let started = Instant::now();
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
    let (layout, mut report) = match result {
        Ok(x) => {
            log_report(&x.1, started.elapsed());
            x
        }
        Err(e) => {
            eprintln!(
                "recoverfs check: {}",
                crate::engine::layout::display_name(&e)
            );
            return ExitCode::from(EXIT_ERROR);
        }
    };
    if let Some(b) = &opts.scan.baseline {
        report.baseline = Some(compare_tree(b, &report, &layout.source));
    }
    if let Err(e) = write_integrity(a, &layout, &report) {
        eprintln!("recoverfs check: {e}");
        return ExitCode::from(EXIT_ERROR);
    }
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
        let mut t = report.render_human();
        if let Some(b) = &report.baseline {
            t.push_str(&b.render());
        }
        t
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
        if let Err(e) = write_atomic(p, render_html(&report).as_bytes()) {
            eprintln!(
                "recoverfs check: --html {}: {e}",
                crate::engine::layout::display_name(&p.display().to_string())
            );
            return ExitCode::from(EXIT_ERROR);
        }
    }
    if io::stdout().write_all(text.as_bytes()).is_err() {
        return ExitCode::from(EXIT_ERROR);
    }
    let lost = report.baseline.as_ref().is_some_and(|b| b.lost());
    ExitCode::from(if report.summary.needs_attention() || lost {
        EXIT_DAMAGE
    } else {
        EXIT_CLEAN
    })
}

/// Writes `bytes` to `path` through a temporary file in the same directory,
/// renamed over it: a reader (the textfile collector) never sees half a file, and
/// nothing is written through whatever stands at `path`. A symlink or anything but a
/// regular file there is refused: where another user controls the directory, a link
/// planted at `path` must not make us replace (or, opened, truncate) the file it names.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::cli::sys::refuse_unsafe_output(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".recoverfs-")
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

/// `--save-baseline` and `--hashes`: each written whole or not at all.
fn write_integrity(
    a: &CheckArgs,
    layout: &crate::engine::layout::Layout,
    report: &crate::engine::report::Report,
) -> Result<(), String> {
    if let Some(to) = &a.save_baseline {
        let entries =
            baseline_entries(layout, report).map_err(|e| format!("--save-baseline: {e}"))?;
        write_new_with(to, ".recoverfs-baseline", |w| {
            crate::engine::baseline::encode(w, &a.path, &entries)
        })
        .map_err(|e| format!("--save-baseline {}: {e}", to.display()))?;
        eprintln!(
            "Baseline of {} file(s) written to {}",
            entries.len(),
            to.display()
        );
    }
    if let Some(to) = &a.hashes {
        let text = sha256_lines(&layout.source, &files_read(layout))
            .map_err(|e| format!("--hashes: {e}"))?;
        write_new(to, ".recoverfs-hashes", &text)
            .map_err(|e| format!("--hashes {}: {e}", to.display()))?;
    }
    Ok(())
}
