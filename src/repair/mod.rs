//! `repair`: writes the policy's repaired view as real files, to a new directory or in place after a backup.
//!
//! The tree is built with [`crate::engine::plan::dir_children`] and
//! [`crate::engine::plan::visible_children`], the same functions the mount serves from,
//! so what was inspected is what gets committed. The source is only ever read
//! through its door, [`crate::engine::source::Source`] (the analysis's `Layout`
//! carries it); in-place repair writes to it by path, and rereads through the door.
//!
//! `--output` builds the whole tree in a sibling temporary directory, fsyncs it
//! and renames it into place. `--in-place` runs in three phases recorded in a
//! manifest inside the backup directory, so that a run killed at any moment
//! and started again finishes the job:
//!
//! 1. `backing-up`: the plan (computed from the untouched source) is written;
//!    then every original that will change or go is copied into the backup
//!    (and the CRC-32 of every range healed from a replica is taken);
//! 2. `backed-up`: the manifest now holds the CRC-32 of every original and of
//!    every replacement; the source is changed file by file (temporary file +
//!    rename, or unlink). From here on the manifest, not a new analysis, is the
//!    plan: a half-repaired log would not analyse the same way (a truncated
//!    segment is clean, so `point-in-time` would no longer hide what follows);
//! 3. `applied`: done.
//!
//! Files, imports pointing one way (down this list, and to `crate::engine`):
//! `render` (the human summaries) → `output` (`--output`) and `in_place`
//! (`--in-place`: planning, backup, apply) → `manifest` (the typed on-disk
//! backup manifest) and `tree` (the tree to write) → `fsio` (attributes,
//! copies, fsync, locks, paths) and `steps` (numbered steps, and the
//! `fault-injection` feature's stop or pause at one of them, for tests) → `interrupt`
//! (Ctrl-C: the safe points where a repair stops).

mod fsio;
mod in_place;
pub mod interrupt;
mod manifest;
mod output;
mod render;
mod steps;
mod tree;

pub use fsio::Progress;
pub use in_place::{repair_in_place, InPlaceSummary};
pub use manifest::{
    Action, HealSource, Manifest, ManifestEntry, ManifestState, Original, OriginalKind,
    Replacement, RunSource, MANIFEST,
};
pub use output::{repair_to, repair_to_with, OutputSummary};
pub use render::{render_in_place, render_output};
#[cfg(feature = "fault-injection")]
pub use steps::{EXIT_INJECTED, FAIL_AT_ENV, PAUSE_AT_ENV};

use std::io;
use std::path::{Path, PathBuf};

/// Why a repair did not happen. Every variant names the path it is about.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{}: already exists and is not empty; give a new or empty directory", .0.display())]
    OutputNotEmpty(PathBuf),
    #[error("{}: is {what}, not a directory; give a new or empty directory for the repaired tree", path.display())]
    OutputNotADirectory { path: PathBuf, what: &'static str },
    #[error("{}: is the data directory itself; --output writes a new tree beside it (give a new or empty directory), --in-place --backup DIR changes it", .0.display())]
    OutputIsData(PathBuf),
    #[error("{}: is inside the data directory {}; write the repaired tree elsewhere", output.display(), data.display())]
    OutputInsideData { output: PathBuf, data: PathBuf },
    #[error("{}: the data directory is inside the output directory {}", data.display(), output.display())]
    DataInsideOutput { data: PathBuf, output: PathBuf },
    #[error("{}: --in-place needs --backup BACKUP_DIR: every original it changes or removes is copied there first", .0.display())]
    NoBackup(PathBuf),
    #[error("{}: is the data directory itself; the backup holds copies of its originals, so it must be a new or empty directory outside it", .0.display())]
    BackupIsData(PathBuf),
    #[error("{}: is inside the data directory {}; keep the backup outside it", backup.display(), data.display())]
    BackupInsideData { backup: PathBuf, data: PathBuf },
    #[error("{}: holds a different backup ({why}); give a new or empty directory", path.display())]
    DifferentBackup { path: PathBuf, why: String },
    #[error("{}: policy strict repairs nothing, and the view differs from the source ({why}); nothing written", path.display())]
    StrictRefuses { path: PathBuf, why: String },
    #[error("{}: unreadable, so the view cannot serve it ({error}); nothing written (point-in-time leaves it out)", path.display())]
    Unreadable { path: PathBuf, error: String },
    #[error("{}: could not be listed ({error}); nothing written", path.display())]
    Unlisted { path: PathBuf, error: String },
    #[error("{}: {what}; nothing more written (stop whatever writes there and run again)", path.display())]
    SourceChanged { path: PathBuf, what: String },
    #[error("{}: {what} stands where the rebuilt index goes; move it away first", path.display())]
    InTheWay { path: PathBuf, what: &'static str },
    #[error("{}: cannot be changed in place ({why}); nothing copied, nothing changed", path.display())]
    NotWritable { path: PathBuf, why: String },
    #[error("{}: this backup copy {what}; once its original is replaced it is the only copy, so nothing more is changed", path.display())]
    BackupDamaged { path: PathBuf, what: String },
    #[error("{}: {what}", path.display())]
    BadManifest { path: PathBuf, what: String },
    #[error("{}: {what} stands where a salvaged run goes (a run never overrides a real file, and in place a run left out would survive only in the backup); nothing changed: move it away first", path.display())]
    RunNameTaken { path: PathBuf, what: &'static str },
    #[error("{}: another repair is running here; wait for it to finish", .0.display())]
    Busy(PathBuf),
    #[error("{0}")]
    Analysis(#[from] crate::engine::layout::TargetError),
    #[error("{0}")]
    Replica(crate::engine::replica::ReplicaError),
    #[error("{}: is inside the replica {}, or holds it; write the repaired tree elsewhere", output.display(), replica.display())]
    OutputAndReplica { output: PathBuf, replica: PathBuf },
    #[error("{}: is inside the replica {}, or holds it; keep the backup elsewhere (a replica is never written to)", backup.display(), replica.display())]
    BackupAndReplica { backup: PathBuf, replica: PathBuf },
    #[error("interrupted; nothing is lost; run the same command again to finish{}", if what.is_empty() { String::new() } else { format!(" ({what})") })]
    Interrupted { what: String },
    #[error("{}: in place, each replica is named in the backup manifest as text (a rerun reopens it from there), and this path is not UTF-8; nothing changed: bind-mount it at a UTF-8 path, or write the healed view with --output NEW_DIR", crate::engine::layout::escape_path(.0))]
    ReplicaPathNotText(PathBuf),
}

impl RepairError {
    /// Exit status: 1 for the policy's refusal (damage found under strict), 130 (as a
    /// shell reports SIGINT) for an interrupt, 2 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RepairError::StrictRefuses { .. } => 1,
            RepairError::Interrupted { .. } => 130,
            _ => 2,
        }
    }
}

type Result<T> = std::result::Result<T, RepairError>;

fn io_at<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> RepairError + 'a {
    move |source| RepairError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// An [`RepairError::Interrupted`] told what the interrupted run left (`what`); any other error as it is.
fn interrupted_with(e: RepairError, what: &str) -> RepairError {
    match e {
        RepairError::Interrupted { .. } => RepairError::Interrupted {
            what: what.to_string(),
        },
        other => other,
    }
}
