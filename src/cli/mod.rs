//! The command line: the subcommands, shared engine flags and exit codes; one file per subcommand beside it.

use crate::engine::analysis::AnalyzeOptions;
use crate::engine::format::takhin::DEFAULT_MAX_RECORD_BYTES;
use crate::engine::policy::Policy;
use crate::engine::scan::ScanOptions;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use std::str::FromStr;

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
    /// Print segment files entry by entry (a .log's records, an index's entries checked against its .log; a directory's segment files), then where and why each valid prefix ends.
    #[command(
        after_help = "An .index or .timeindex is checked entry by entry against the .log beside it \
(as kafka-dump-log --index-sanity-check); --no-verify-index prints its entries alone. \
kafka-dump-log's --files a,b,c, --verify-index-only, --index-sanity-check, --print-data-log and \
--deep-iteration are accepted.\n\n\
Exit status: 0 every file clean (examined to its end even past --limit or a closed pipe), \
1 damage in one (or an index that disagrees with its .log, or has no .log to be checked against), \
2 a file could not be read.\n\nExamples:\n  \
recoverfs dump 00000000000000000000.log --limit 10\n  \
recoverfs dump 00000000000000000375.log --from-offset 700 --json --values full\n  \
recoverfs dump 00000000000000000375.index 00000000000000000375.timeindex\n  \
recoverfs dump /var/lib/takhin/orders/partition-0 --verify-index-only   every segment file, only what disagrees\n  \
recoverfs dump carved.bin --base-offset 375"
    )]
    Dump(dump::DumpArgs),
    /// Mount the repaired view read-only (FUSE): repaired segments, rebuilt indexes, `.recoverfs/`.
    #[command(
        after_help = "The view is lazy: a segment is validated when one of its files is first looked up.\n\
`.recoverfs/` at the root holds report.json (the whole-tree report), raw/ (the untouched originals) and \
tails/ (the bytes cut from each truncated segment). Unmount with `umount MOUNTPOINT` (root) or \
`fusermount3 -u MOUNTPOINT` (the user who mounted it). A DATA_DIR holding no Takhin log is refused \
(exit 2) unless --allow-empty.\n\nExamples:\n  \
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
found changes pending, 2 on any other refusal or error, 130 when interrupted (Ctrl-C, SIGTERM: it stops at \
a safe point, --output removes its temporary tree; run the same command again to finish).\n\n\
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
    /// Not a subcommand: says how to unmount a view (`umount MOUNTPOINT`), which is
    /// what `recoverfs umount` is typed for (clap alone would suggest `mount`).
    #[command(hide = true, alias = "unmount")]
    Umount(UmountArgs),
}

/// Whatever followed `recoverfs umount`: only echoed back in the answer.
#[derive(Args, Debug)]
pub struct UmountArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<std::ffi::OsString>,
}

/// `recoverfs umount [MOUNTPOINT]`: the commands that do unmount a view.
fn umount_answer(a: &UmountArgs) -> std::process::ExitCode {
    let mp = a
        .args
        .iter()
        .rfind(|x| !x.to_string_lossy().starts_with('-'))
        .map(|m| crate::engine::render::shell_quote(&m.to_string_lossy()))
        .unwrap_or_else(|| "MOUNTPOINT".into());
    eprintln!(
        "recoverfs: there is no `recoverfs umount`; a view is unmounted like any mount:\n  \
         umount {mp}              as root\n  \
         fusermount3 -u {mp}      as the user who mounted it\n  \
         umount -l {mp}           if it is busy (detached once the last reader closes)\n\
         The daemon then exits by itself (0 when the unmount was clean)."
    );
    std::process::ExitCode::from(EXIT_ERROR)
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
        ScanOptions::with_max(self.max_record_bytes)
    }
}

/// The engine's flags: the policy and the scanner's.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Which segments the view keeps.
    #[arg(long, default_value = "per-segment", value_parser = policy_values())]
    pub policy: Policy,
    #[command(flatten)]
    pub scan: ScanArgs,
    /// Another broker's copy of the same data directory (repeatable): the offset
    /// ranges the primary lacks are healed from its valid runs, and the records
    /// both hold are compared (logs match by their path relative to each directory).
    #[arg(long = "replica", value_name = "DIR")]
    pub replicas: Vec<std::path::PathBuf>,
    /// Where copies disagree on a record, whose to serve. Needs --replica, and
    /// --policy per-segment or salvage.
    #[arg(long, value_name = "WHICH", default_value = "primary", requires = "replicas", value_parser = prefer_values())]
    pub prefer: crate::engine::replica::Prefer,
    /// An integrity baseline written by `check --save-baseline` while the log was good:
    /// a 64 KiB block whose CRC-32C changed since, inside what the baseline covered, is
    /// damage (changed-since-baseline), cut under the policy like any other; bytes
    /// appended since are new data. Files it lists that are gone or shorter are reported.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<std::path::PathBuf>,
    /// Also walk the filesystems mounted inside DATA_DIR (as they are when the command
    /// starts). By default, like `find -xdev`, each directory another filesystem is
    /// mounted on is left out and named in the report (NOT CROSSED).
    #[arg(long)]
    pub cross_mounts: bool,
}

impl EngineArgs {
    /// The engine's settings, with the baseline loaded (a foreign or corrupt one is refused).
    pub fn analyze_options(
        &self,
    ) -> Result<AnalyzeOptions, crate::engine::baseline::BaselineError> {
        Ok(AnalyzeOptions {
            scan: self.scan_options()?,
            policy: self.policy,
            threads: 0,
            mounts: self.mounts(),
        })
    }

    /// The scanner's settings, with the baseline loaded.
    pub fn scan_options(&self) -> Result<ScanOptions, crate::engine::baseline::BaselineError> {
        let mut o = self.scan.options();
        if let Some(p) = &self.baseline {
            o.baseline = Some(std::sync::Arc::new(
                crate::engine::baseline::Baseline::load(p)?,
            ));
        }
        Ok(o)
    }

    /// Whether the walks cross mount points (`--cross-mounts`).
    pub fn mounts(&self) -> crate::engine::source::Mounts {
        match self.cross_mounts {
            true => crate::engine::source::Mounts::Cross,
            false => crate::engine::source::Mounts::Stay,
        }
    }
}

/// A flag's value parser for a fixed set of `values`: clap lists them in --help
/// and hands them to every shell's completion script (a bare `FromStr` parser
/// would complete file names); the chosen one is then parsed by `T::from_str`.
pub fn choices<T>(values: impl Into<PossibleValuesParser>) -> impl TypedValueParser<Value = T>
where
    T: FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    values.into().try_map(|v| v.parse::<T>())
}

/// `--policy`'s values (engine/policy.rs's names), with what each keeps.
fn policy_values() -> impl TypedValueParser<Value = Policy> {
    let help = |p: Policy| match p {
        Policy::PerSegment => "every segment's valid prefix",
        Policy::PointInTime => "stop at the first damage or gap",
        Policy::Strict => "repair nothing; damaged segments fail (EIO)",
        Policy::Salvage => "per-segment, plus the runs of intact records after mid-segment damage",
    };
    choices(
        Policy::ALL
            .into_iter()
            .map(|p| PossibleValue::new(p.as_str()).help(help(p)))
            .collect::<Vec<_>>(),
    )
}

/// `--prefer`'s values.
fn prefer_values() -> impl TypedValueParser<Value = crate::engine::replica::Prefer> {
    choices([
        PossibleValue::new("primary").help("the primary's (DATA_DIR's) record"),
        PossibleValue::new("replica").help("a replica's wherever the primary is not in a majority"),
        PossibleValue::new("majority").help("the majority's, with three copies or more"),
    ])
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
            Command::Umount(a) => umount_answer(a),
        }
    }
}
