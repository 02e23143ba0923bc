//! The command line: clap definitions and the `check`/`dump` front ends (mount and repair live in their modules).

use crate::dump::{dump, DumpOptions};
use crate::format::takhin::DEFAULT_MAX_RECORD_BYTES;
use crate::log_dir::{check_path, total_log_bytes, AnalyzeOptions, Policy};
use crate::scan::ScanOptions;
use clap::{Args, Parser, Subcommand};
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code: everything clean.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code: damage found (the view differs from the source).
pub const EXIT_DAMAGE: u8 = 1;
/// Exit code: could not check (missing path, usage error, I/O failure).
pub const EXIT_ERROR: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "recoverfs",
    version,
    about = "Show a damaged Takhin log directory as it would look after a correct recovery, without changing a byte of it.",
    long_about = "Show a damaged Takhin log directory as it would look after a correct recovery, without changing a byte of it.\n\n\
Takhin keeps each partition as segments: <base>.log (records), <base>.index and <base>.timeindex (dense indexes). \
recoverfs finds each segment's valid prefix (the records before the first damage), rebuilds its indexes, and \
reports, mounts or writes out the result. The originals are never opened for writing.",
    after_help = "Typical session:\n  recoverfs check /var/lib/takhin            what is damaged, and where\n  recoverfs dump  /var/lib/takhin/t/partition-0/00000000000000000000.log --limit 20\n  recoverfs mount /var/lib/takhin /mnt/view   inspect the repaired view read-only\n  recoverfs repair /var/lib/takhin --output /var/lib/takhin.repaired"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Report every log's damage, fsck-style (exit 0 clean, 1 damage found, 2 could not check).
    #[command(
        after_help = "Exit status: 0 when the policy's view equals the source, 1 when it differs \
(bytes cut, segments hidden, indexes rebuilt, orphans left out, files unreadable; under strict any anomaly, \
gaps included), 2 when PATH could not be checked.\n\nExamples:\n  recoverfs check /var/lib/takhin\n  recoverfs check /var/lib/takhin/orders/partition-0 --policy point-in-time\n  recoverfs check /var/lib/takhin --json | jq .summary"
    )]
    Check(CheckArgs),
    /// Print one segment's records, one per line, then where and why its valid prefix ends.
    #[command(
        after_help = "Examples:\n  recoverfs dump 00000000000000000000.log --limit 10\n  recoverfs dump 00000000000000000375.log --from-offset 700 --json"
    )]
    Dump(DumpArgs),
    /// Mount the repaired view read-only (FUSE): repaired segments, rebuilt indexes, `.recoverfs/`.
    #[command(
        after_help = "The view is lazy: a segment is validated when one of its files is first looked up.\n\
`.recoverfs/` at the root holds report.json (the whole-tree report), raw/ (the untouched originals) and \
tails/ (the bytes cut from each truncated segment). Unmount with `umount MOUNTPOINT`.\n\nExamples:\n  \
recoverfs mount /var/lib/takhin /mnt/view\n  recoverfs mount /var/lib/takhin /mnt/view --policy point-in-time -o allow_other\n  \
recoverfs mount /var/lib/takhin /mnt/view --foreground --log-file /var/log/recoverfs.log"
    )]
    Mount(crate::mount::MountArgs),
    /// Write the repaired view as real files: to a new directory, or in place after a backup.
    #[command(
        long_about = "Write the repaired view as real files: exactly what `mount` shows under the same policy \
(each segment's valid prefix, rebuilt .index/.timeindex, other files as they are; orphan indexes and hidden \
segments left out).\n\n\
With --output, the tree is built in a temporary sibling of NEW_DIR, fsynced, and renamed into place: NEW_DIR \
never exists half-written, and DATA_DIR is only read.\n\n\
With --in-place, every original that will change or go is first copied into BACKUP_DIR (same relative path, \
fsynced, listed with its size and CRC-32 in BACKUP_DIR/recoverfs-backup.json); then each change is a temporary \
file renamed over the original, or a removal. If the run is killed, run the same command again: it finishes \
the job from the manifest. Stop the broker first: a file that changes under repair is refused, not followed.",
        after_help = "Exit status: 0 when the repaired tree was written (or nothing needed repair), 1 when \
--policy strict refused because the view differs from the source, 2 on any other refusal or error.\n\n\
Examples:\n  recoverfs check  /var/lib/takhin                                 inspect first\n  \
recoverfs repair /var/lib/takhin --output /var/lib/takhin.repaired\n  \
recoverfs check  /var/lib/takhin.repaired                        verify: exits 0\n  \
recoverfs repair /var/lib/takhin --in-place --backup /srv/takhin.orig --dry-run\n  \
recoverfs repair /var/lib/takhin --in-place --backup /srv/takhin.orig --policy point-in-time"
    )]
    Repair(RepairArgs),
    /// Write a small damaged Takhin log, mount its repaired view, and show around.
    Demo(crate::demo::DemoArgs),
    /// Write a clean synthetic data directory (for benchmarks and experiments).
    #[command(hide = true)]
    Synth(SynthArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["output", "in_place"])))]
pub struct RepairArgs {
    /// The Takhin data directory to repair.
    pub data_dir: PathBuf,
    /// Write the repaired tree to this new (or empty) directory; DATA_DIR is left untouched.
    #[arg(long, value_name = "NEW_DIR", conflicts_with_all = ["backup", "dry_run"])]
    pub output: Option<PathBuf>,
    /// Repair DATA_DIR itself, after copying every original it changes or removes into --backup.
    #[arg(long)]
    pub in_place: bool,
    /// Where --in-place keeps the originals (outside DATA_DIR; new, empty, or this repair's own).
    #[arg(long, value_name = "BACKUP_DIR")]
    pub backup: Option<PathBuf>,
    /// With --in-place: print what would change and touch nothing.
    #[arg(long, requires = "in_place")]
    pub dry_run: bool,
    /// Print the schema-1 JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Where to write (created; must not exist or be empty).
    pub dir: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub topics: u32,
    #[arg(long, default_value_t = 16)]
    pub partitions: u32,
    #[arg(long, default_value_t = 1)]
    pub segments: u32,
    #[arg(long, default_value_t = 64)]
    pub segment_mb: u64,
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
}

pub fn run_synth(a: &SynthArgs) -> ExitCode {
    let spec = crate::synth::SynthSpec {
        topics: a.topics,
        partitions: a.partitions,
        segments_per_partition: a.segments,
        segment_bytes: a.segment_mb << 20,
        value_bytes: a.value_bytes,
        ..Default::default()
    };
    match crate::synth::write_tree(&a.dir, &spec) {
        Ok(n) => {
            println!("wrote {n} records under {}", a.dir.display());
            ExitCode::from(EXIT_CLEAN)
        }
        Err(e) => {
            eprintln!("recoverfs synth: {}: {e}", a.dir.display());
            ExitCode::from(EXIT_ERROR)
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Which segments the view keeps: per-segment (every valid prefix), point-in-time
    /// (stop at the first damage or gap), strict (repair nothing; damaged segments fail).
    #[arg(long, default_value = "per-segment", value_parser = parse_policy)]
    pub policy: Policy,
    /// A record whose size field exceeds this many bytes is damage (bad-size).
    #[arg(long, default_value_t = DEFAULT_MAX_RECORD_BYTES, value_name = "N")]
    pub max_record_bytes: u64,
}

impl EngineArgs {
    pub fn analyze_options(&self) -> AnalyzeOptions {
        AnalyzeOptions {
            scan: ScanOptions {
                max_record_bytes: self.max_record_bytes,
            },
            policy: self.policy,
            threads: 0,
        }
    }
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    s.parse()
}

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

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// The segment file (<20 digits>.log).
    pub segment: PathBuf,
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// Skip records below this offset.
    #[arg(long, value_name = "N")]
    pub from_offset: Option<u64>,
    /// Print at most N records.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// A record whose size field exceeds this many bytes is damage (bad-size).
    #[arg(long, default_value_t = DEFAULT_MAX_RECORD_BYTES, value_name = "N")]
    pub max_record_bytes: u64,
}

/// Bytes above which a progress bar is worth showing (on a terminal).
const PROGRESS_ABOVE: u64 = 256 << 20;

/// A progress bar on stderr for long runs, drawn only when stderr is a terminal
/// and the work is large enough to take a while; otherwise it draws nothing.
pub struct Progress {
    bar: std::sync::Arc<indicatif::ProgressBar>,
}

impl Progress {
    /// Sized by the `.log` bytes under `path` (read once by the analysis) plus,
    /// with `and_copy`, every regular file's bytes (written once by a repair).
    pub fn new(path: &std::path::Path, verb: &str, and_copy: bool) -> Self {
        let bar = indicatif::ProgressBar::hidden();
        if std::io::IsTerminal::is_terminal(&io::stderr()) {
            if let Ok(t) = crate::log_dir::resolve_target(path) {
                let logs = crate::log_dir::discover_target(&t)
                    .map_or(0, |l| total_log_bytes(&l, t.only_segment));
                let total = logs + if and_copy { tree_bytes(&t.root) } else { 0 };
                if total > PROGRESS_ABOVE {
                    bar.set_length(total);
                    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(&format!(
                            "{verb} {{wide_bar}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
                        ))
                        .expect("valid template"),
                    );
                }
            }
        }
        Progress {
            bar: std::sync::Arc::new(bar),
        }
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n)
    }

    /// A callback for the engine and the repair to report bytes through.
    pub fn sink(&self) -> Option<crate::repair::Progress> {
        let bar = self.bar.clone();
        Some(std::sync::Arc::new(move |n| bar.inc(n)))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Bytes of every regular file below `root` (symlinks not followed).
fn tree_bytes(root: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for (name, ft) in crate::log_dir::read_dir_sorted(&d).unwrap_or_default() {
            if ft.is_dir() {
                stack.push(d.join(name));
            } else if ft.is_file() {
                total += std::fs::symlink_metadata(d.join(name)).map_or(0, |m| m.len());
            }
        }
    }
    total
}

pub fn run_check(a: &CheckArgs) -> ExitCode {
    let opts = a.engine.analyze_options();
    let bar = Progress::new(&a.path, "checking", false);
    let progress = |n: u64| bar.inc(n);
    let result = check_path(&a.path, &opts, &progress);
    drop(bar);
    let report = match result {
        Ok((_, r)) => r,
        Err(e) => {
            eprintln!("recoverfs check: {e}");
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

pub fn run_dump(a: &DumpArgs) -> ExitCode {
    let opts = DumpOptions {
        json: a.json,
        from_offset: a.from_offset,
        limit: a.limit,
        scan: ScanOptions {
            max_record_bytes: a.max_record_bytes,
        },
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let r = dump(&a.segment, &opts, &mut out).and_then(|clean| out.flush().map(|_| clean));
    match r {
        Ok(true) => ExitCode::from(EXIT_CLEAN),
        Ok(false) => ExitCode::from(EXIT_DAMAGE),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(EXIT_CLEAN),
        Err(e) => {
            eprintln!("recoverfs dump: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
