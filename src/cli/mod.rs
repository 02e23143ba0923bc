//! The command line: the subcommands, shared engine flags and exit codes; one file per subcommand beside it.

use crate::engine::analysis::AnalyzeOptions;
use crate::engine::format::takhin::DEFAULT_MAX_RECORD_BYTES;
use crate::engine::policy::Policy;
use crate::engine::scan::ScanOptions;
use clap::{Args, Parser, Subcommand};

pub mod check;
pub mod demo;
pub mod docs;
pub mod dump;
pub mod log;
pub mod mount;
pub mod progress;
pub mod repair;
pub mod synth;
pub mod sys;
pub mod writable;

/// Exit code: everything clean.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code: damage found (the view differs from the source).
pub const EXIT_DAMAGE: u8 = 1;
/// Exit code: could not check (missing path, usage error, I/O failure).
pub const EXIT_ERROR: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "recoverfs",
    version = crate::version::LONG,
    about = "Show a damaged Takhin log directory as it would look after a correct recovery, without changing a byte of it.",
    long_about = "Show a damaged Takhin log directory as it would look after a correct recovery, without changing a byte of it.\n\n\
Takhin keeps each partition as segments: <base>.log (records), <base>.index and <base>.timeindex (dense indexes). \
recoverfs finds each segment's valid prefix (the records before the first damage), rebuilds its indexes, and \
reports, mounts or writes out the result. The originals are never opened for writing.",
    after_help = "Typical session:\n  recoverfs check /var/lib/takhin            what is damaged, and where\n  recoverfs dump  /var/lib/takhin/t/partition-0/00000000000000000000.log --limit 20\n  recoverfs mount /var/lib/takhin /mnt/view   inspect the repaired view read-only\n  recoverfs repair /var/lib/takhin --output /var/lib/takhin.repaired"
)]
pub struct Cli {
    /// More log lines on stderr (or the mount's log): -v our debug lines, -vv fuser's too.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Fewer log lines: -q errors only, -qq none (the report itself is still printed).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Report every log's damage, fsck-style (exit 0 clean, 1 damage found, 2 could not check).
    #[command(
        after_help = "Exit status: 0 when the policy's view equals the source, 1 when it differs \
(bytes cut, segments hidden, indexes rebuilt, orphans left out, files unreadable; under strict any anomaly, \
gaps included; with --replica, a range healed or a divergence between copies), 2 when PATH could not be checked.\n\nExamples:\n  recoverfs check /var/lib/takhin\n  recoverfs check /var/lib/takhin/orders/partition-0 --policy point-in-time\n  recoverfs check /var/lib/takhin --json | jq .summary"
    )]
    Check(check::CheckArgs),
    /// Print segment files entry by entry (a .log's records, an index's entries), then where and why each valid prefix ends.
    #[command(
        after_help = "Exit status: 0 every file clean (examined to its end even past --limit or a closed pipe), \
1 damage in one (or an index that disagrees, with --verify-index), 2 a file could not be read.\n\nExamples:\n  \
recoverfs dump 00000000000000000000.log --limit 10\n  \
recoverfs dump 00000000000000000375.log --from-offset 700 --json --values full\n  \
recoverfs dump 00000000000000000375.index 00000000000000000375.timeindex --verify-index\n  \
recoverfs dump carved.bin --base-offset 375"
    )]
    Dump(dump::DumpArgs),
    /// Mount the repaired view read-only (FUSE): repaired segments, rebuilt indexes, `.recoverfs/`.
    #[command(
        after_help = "The view is lazy: a segment is validated when one of its files is first looked up.\n\
`.recoverfs/` at the root holds report.json (the whole-tree report), raw/ (the untouched originals) and \
tails/ (the bytes cut from each truncated segment). Unmount with `umount MOUNTPOINT`.\n\nExamples:\n  \
recoverfs mount /var/lib/takhin /mnt/view\n  recoverfs mount /var/lib/takhin /mnt/view --policy point-in-time -o allow_other\n  \
recoverfs mount /var/lib/takhin /mnt/view --foreground --log-file /var/log/recoverfs.log\n  \
recoverfs mount /var/lib/takhin /mnt/view -o nometa && cp -a /mnt/view/. /srv/copy   exactly the repaired log\n\n\
Logs: --log-file, else stderr with --foreground, else syslog (journalctl -t recoverfs); -v/-q, or RUST_LOG=recoverfs=debug."
    )]
    Mount(mount::MountArgs),
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
the job from the manifest. Under --policy salvage, each salvaged run is written as a new segment, from the \
backup copy of the .log it was found in, before that .log is truncated; a run whose name a file already holds \
is refused, never overwritten. With --replica, the offset ranges DATA_DIR lacks are written as new segments (action heal in the manifest) from the replicas' bytes, read through their doors and checked against the planned size and CRC-32 before each is renamed into place; a healed range named like a segment of DATA_DIR that holds no record replaces it after it is backed up. The replicas are never written, and a rerun must give the same --replica list. With --prefer replica|majority, a record served from a replica instead of DATA_DIR's own is written the same way (action heal), DATA_DIR's records before it in its segment are kept by truncating that segment at the record's boundary (or, when it is the segment's first record, the segment is replaced by it after it is backed up), and those after it become a new segment made from the backup copy (action salvage), so the result is byte for byte what --output writes. Stop the broker first: a file that changes under repair is refused, not followed.",
        after_help = "Exit status: 0 when the repaired tree was written (or nothing needed repair; with --dry-run: \
nothing would change), 1 when --policy strict refused because the view differs from the source, or --dry-run \
found changes pending, 2 on any other refusal or error.\n\n\
Examples:\n  recoverfs check  /var/lib/takhin                                 inspect first\n  \
recoverfs repair /var/lib/takhin --output /var/lib/takhin.repaired\n  \
recoverfs check  /var/lib/takhin.repaired                        verify: exits 0\n  \
recoverfs repair /var/lib/takhin --in-place --backup /srv/takhin.orig --dry-run\n  \
recoverfs repair /var/lib/takhin --in-place --backup /srv/takhin.orig --policy point-in-time\n  \
recoverfs repair /var/lib/takhin --in-place --backup /srv/takhin.orig --replica /mnt/broker2/takhin"
    )]
    Repair(repair::RepairArgs),
    /// Write a small damaged Takhin log, mount its repaired view, and show around.
    Demo(demo::DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(
        after_help = "Install (bash): recoverfs completions bash > /etc/bash_completion.d/recoverfs\n\
Install (zsh):  recoverfs completions zsh > /usr/local/share/zsh/site-functions/_recoverfs\n\
Install (fish): recoverfs completions fish > ~/.config/fish/completions/recoverfs.fish"
    )]
    Completions(docs::CompletionsArgs),
    /// Print the man page (roff) to stdout: every subcommand, exit codes, the report, `.recoverfs/`.
    #[command(
        after_help = "Install: recoverfs man > /usr/local/share/man/man1/recoverfs.1 && mandb -q\nRead without installing: recoverfs man | man -l -"
    )]
    Man,
    /// Write a clean synthetic data directory (for benchmarks and experiments).
    #[command(hide = true)]
    Synth(synth::SynthArgs),
}

/// The scanner's flags, shared by every subcommand that reads segments.
#[derive(Args, Debug, Clone)]
pub struct ScanArgs {
    /// A record whose size field exceeds this many bytes is damage (bad-size).
    #[arg(long, default_value_t = DEFAULT_MAX_RECORD_BYTES, value_name = "N")]
    pub max_record_bytes: u64,
}

impl ScanArgs {
    /// The engine's scan settings: the one place flags become [`ScanOptions`].
    pub fn options(&self) -> ScanOptions {
        ScanOptions {
            max_record_bytes: self.max_record_bytes,
        }
    }
}

/// The engine's flags: the policy and the scanner's.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Which segments the view keeps: per-segment (every valid prefix), point-in-time
    /// (stop at the first damage or gap), strict (repair nothing; damaged segments fail),
    /// salvage (per-segment, plus the runs of intact records after mid-segment damage).
    #[arg(long, default_value = "per-segment", value_parser = parse_policy)]
    pub policy: Policy,
    #[command(flatten)]
    pub scan: ScanArgs,
    /// Another broker's copy of the same data directory (repeatable): the offset
    /// ranges the primary lacks are healed from its valid runs, and the records
    /// both hold are compared (logs match by their path relative to each directory).
    #[arg(long = "replica", value_name = "DIR")]
    pub replicas: Vec<std::path::PathBuf>,
    /// Where copies disagree on a record: serve the primary's (default), a replica's
    /// wherever the primary is not in a majority (replica), or the majority's with
    /// three copies or more (majority). Needs --replica, and --policy per-segment or salvage.
    #[arg(long, value_name = "WHICH", default_value = "primary", requires = "replicas", value_parser = parse_prefer)]
    pub prefer: crate::engine::replica::Prefer,
    /// Also walk the filesystems mounted inside DATA_DIR (as they are when the command
    /// starts). By default, like `find -xdev`, each directory another filesystem is
    /// mounted on is left out and named in the report (NOT CROSSED).
    #[arg(long)]
    pub cross_mounts: bool,
}

impl EngineArgs {
    pub fn analyze_options(&self) -> AnalyzeOptions {
        AnalyzeOptions {
            scan: self.scan.options(),
            policy: self.policy,
            threads: 0,
            mounts: self.mounts(),
        }
    }

    /// Whether the walks cross mount points (`--cross-mounts`).
    pub fn mounts(&self) -> crate::engine::source::Mounts {
        match self.cross_mounts {
            true => crate::engine::source::Mounts::Cross,
            false => crate::engine::source::Mounts::Stay,
        }
    }
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    s.parse()
}

fn parse_prefer(s: &str) -> Result<crate::engine::replica::Prefer, String> {
    s.parse()
}

impl Cli {
    /// Runs the chosen subcommand; its exit code is the process's.
    pub fn run(&self) -> std::process::ExitCode {
        let verbosity = (self.verbose.min(3) as i8) - (self.quiet.min(3) as i8);
        log::set_verbosity(verbosity);
        match &self.command {
            // The mount picks its own sink (a file, syslog, stderr) once it knows where it runs.
            Command::Mount(_) => {}
            // The demo's own mount would log a line per segment over its tour.
            Command::Demo(_) => {
                let _ = log::init(verbosity - 1, log::Sink::Stderr);
            }
            _ => {
                let _ = log::init(verbosity, log::Sink::Stderr);
            }
        }
        match &self.command {
            Command::Check(a) => check::run(a),
            Command::Dump(a) => dump::run(a),
            Command::Mount(a) => mount::run(a),
            Command::Repair(a) => repair::run(a),
            Command::Demo(a) => demo::run(a),
            Command::Completions(a) => docs::completions(a),
            Command::Man => docs::man(),
            Command::Synth(a) => synth::run(a),
        }
    }
}
