//! Finding logs and segments in a data directory (nothing read yet), and which root entry is ours.

use crate::engine::format::takhin::{
    classify_name, segment_file_name, FileKind, NameMatch, LOG_EXT,
};
use crate::engine::source::{Entries, EntryType, Mounts, Source};
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The root entry reserved for recoverfs's own metadata (`report.json`, `raw/`,
/// `tails/` in a mount). A source entry of that name at the root is left out
/// of every view, so a mounted view checked or repaired again does not take its
/// `raw/` originals for logs of its own.
pub const META_DIR: &str = crate::engine::source::VIEW_META_DIR;

/// True when `name`, found in the directory `rel` (relative to the data
/// directory), is the root entry reserved for recoverfs: never a log, never
/// shown, copied or removed.
pub fn is_reserved(rel: &Path, name: &OsStr) -> bool {
    rel.as_os_str().is_empty() && name == META_DIR
}

/// A path as report text: a UTF-8 name exactly as it is (the JSON report decodes to the
/// name itself, backslashes included); a name that is not UTF-8 with each byte that is
/// not as `\xNN` and each backslash as `\\`, so it stays distinct and readable.
pub fn escape_path(p: &Path) -> String {
    let bytes = p.as_os_str().as_bytes();
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        _ => {
            let mut out = String::new();
            for chunk in bytes.utf8_chunks() {
                out.push_str(&chunk.valid().replace('\\', "\\\\"));
                for b in chunk.invalid() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
            out
        }
    }
}

/// Report text (a path from [`escape_path`], a message naming one) made safe for a
/// terminal: every control character (C0, DEL, C1) becomes `\xNN` per byte of its
/// UTF-8 form, so a name can neither forge a line of output nor send an escape
/// sequence. The JSON report does not need it: JSON escapes control characters itself
/// (and its paths are the names themselves; this text is for eyes).
pub fn display_name(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            for b in c.encode_utf8(&mut [0; 4]).bytes() {
                let _ = write!(out, "\\x{b:02x}");
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// A path that could not be examined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub path: String,
    pub error: String,
}

/// Why a path given on the command line could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a directory nor a segment file named <20 digits>.{LOG_EXT}", path.display())]
    NotATarget { path: PathBuf },
    #[error("{}: no Takhin log here (no directory below it holds <20 digits>.{LOG_EXT} files)", path.display())]
    NoLog { path: PathBuf },
}

/// One segment found in a log directory: a regular `<20 digits>.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentEntry {
    pub base: u64,
    pub has_index: bool,
    pub has_timeindex: bool,
}

/// A directory holding segments, as found on disk (nothing read yet).
#[derive(Debug, Clone, Default)]
pub struct LogLayout {
    /// The directory, relative to the data directory ("" for the root itself).
    pub rel: PathBuf,
    /// Segments ordered by base offset.
    pub segments: Vec<SegmentEntry>,
    /// `.index`/`.timeindex` files with no `.log` beside them (names).
    pub orphans: Vec<OsString>,
    /// Names that look like segment files but are not (not 20 digits, not a regular file).
    pub unrecognized: Vec<OsString>,
}

impl LogLayout {
    /// Path of a segment's file relative to the data directory.
    pub fn file_rel(&self, base: u64, kind: FileKind) -> PathBuf {
        self.rel.join(segment_file_name(base, kind))
    }
}

/// Classifies the entries of one directory. Returns `None` when the directory is
/// not a log: only a name that is exactly `<20 digits>.log`, `.index` or
/// `.timeindex` makes it one (whatever the entry's type). Names that merely end
/// in `.log` (`syslog.log`, `123.log`) are everywhere on a Linux box; in a log
/// they are reported as unrecognized, but alone they make nothing a log.
pub fn classify_dir(rel: &Path, entries: &[(OsString, EntryType)]) -> Option<LogLayout> {
    let mut logs: BTreeMap<u64, SegmentEntry> = BTreeMap::new();
    let mut indexes: Vec<(u64, FileKind, OsString)> = Vec::new();
    let mut unrecognized = Vec::new();
    let mut any = false;
    for (name, ft) in entries {
        match classify_name(name.as_bytes()) {
            NameMatch::Segment(base, kind) if ft.is_file() => {
                any = true;
                if kind == FileKind::Log {
                    logs.insert(
                        base,
                        SegmentEntry {
                            base,
                            has_index: false,
                            has_timeindex: false,
                        },
                    );
                } else {
                    indexes.push((base, kind, name.clone()));
                }
            }
            NameMatch::Segment(..) => {
                any = true;
                unrecognized.push(name.clone());
            }
            NameMatch::SegmentLike(_) => unrecognized.push(name.clone()),
            NameMatch::Other => {}
        }
    }
    if !any {
        return None;
    }
    let mut orphans = Vec::new();
    for (base, kind, name) in indexes {
        match logs.get_mut(&base) {
            Some(s) if kind == FileKind::Index => s.has_index = true,
            Some(s) => s.has_timeindex = true,
            None => orphans.push(name),
        }
    }
    orphans.sort();
    unrecognized.sort();
    Some(LogLayout {
        rel: rel.to_path_buf(),
        segments: logs.into_values().collect(),
        orphans,
        unrecognized,
    })
}

/// Everything found under a data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The data directory, through the one door every read goes.
    pub source: Arc<Source>,
    pub logs: Vec<LogLayout>,
    /// Directories that could not be listed.
    pub problems: Vec<Problem>,
}

impl Layout {
    /// The data directory's path (for messages and the report).
    pub fn root(&self) -> &Path {
        self.source.path()
    }
}

/// Reads a directory's entries (name, type without following symlinks), sorted by
/// name, by path: for directories that are not the source (outputs, views, tests).
/// The source is listed through [`Source::read_dir`].
pub fn read_dir_sorted(dir: &Path) -> io::Result<Entries> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        let ty = if ft.is_dir() {
            EntryType::Dir
        } else if ft.is_file() {
            EntryType::File
        } else if ft.is_symlink() {
            EntryType::Symlink
        } else {
            EntryType::Other
        };
        out.push((e.file_name(), ty));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Finds every log under the source at any depth. Symlinked directories are not followed.
pub fn discover(source: &Arc<Source>) -> Layout {
    let mut layout = Layout {
        source: source.clone(),
        logs: Vec::new(),
        problems: Vec::new(),
    };
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let entries = match source.read_dir(&rel) {
            Ok(e) => e,
            Err(e) => {
                layout.problems.push(Problem {
                    path: escape_path(&rel),
                    error: e.to_string(),
                });
                continue;
            }
        };
        if let Some(log) = classify_dir(&rel, &entries) {
            layout.logs.push(log);
        }
        // Pushed in reverse so directories are visited in name order.
        for (name, ft) in entries.iter().rev() {
            if is_reserved(&rel, name) {
                continue; // recoverfs's own metadata (a mounted view's raw originals)
            }
            if ft.is_dir() {
                stack.push(rel.join(name));
            }
        }
    }
    layout.logs.sort_by(|a, b| a.rel.cmp(&b.rel));
    layout
}

/// What was given on the command line, resolved to a data directory and a scope.
#[derive(Debug, Clone)]
pub struct Target {
    /// The data directory the report's paths are relative to.
    pub root: PathBuf,
    /// When the target was a single `.log`, its base offset (only it is analysed).
    pub only_segment: Option<u64>,
}

/// Resolves PATH: a data directory, a partition directory, or one `.log` file.
pub fn resolve_target(path: &Path) -> Result<Target, TargetError> {
    let meta = fs::metadata(path).map_err(|source| TargetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return Ok(Target {
            root: path.to_path_buf(),
            only_segment: None,
        });
    }
    let name = path.file_name().unwrap_or_default();
    match classify_name(name.as_bytes()) {
        NameMatch::Segment(base, FileKind::Log) if meta.is_file() => {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            Ok(Target {
                root: parent.to_path_buf(),
                only_segment: Some(base),
            })
        }
        _ => Err(TargetError::NotATarget {
            path: path.to_path_buf(),
        }),
    }
}

/// Total `.log` bytes a target holds (for progress).
pub fn total_log_bytes(layout: &Layout, only: Option<u64>) -> u64 {
    let mut total = 0;
    for log in &layout.logs {
        for s in &log.segments {
            if only.is_none_or(|b| b == s.base) {
                total += layout
                    .source
                    .metadata(&log.file_rel(s.base, FileKind::Log))
                    .map_or(0, |m| m.len());
            }
        }
    }
    total
}

/// The layout a target covers: the whole tree, or for one `.log` only its own
/// directory (not searched below). A tree with no log at all is an error: the
/// operator most likely pointed at the wrong directory.
pub fn discover_target(target: &Target) -> Result<Layout, TargetError> {
    discover_target_with(target, Mounts::Stay)
}

/// [`discover_target`], crossing mount points inside the target or not (`--cross-mounts`).
pub fn discover_target_with(target: &Target, mounts: Mounts) -> Result<Layout, TargetError> {
    let io_err = |source| TargetError::Io {
        path: target.root.clone(),
        source,
    };
    let source = Arc::new(Source::open_with(&target.root, mounts).map_err(io_err)?);
    let layout = match target.only_segment {
        None => discover(&source),
        Some(_) => {
            let entries = source.read_dir(Path::new("")).map_err(io_err)?;
            Layout {
                logs: classify_dir(Path::new(""), &entries).into_iter().collect(),
                source,
                problems: vec![],
            }
        }
    };
    if layout.logs.is_empty() && layout.problems.is_empty() {
        return Err(TargetError::NoLog {
            path: target.root.clone(),
        });
    }
    Ok(layout)
}

/// A name as an `OsStr`, for tests and callers holding raw bytes.
pub fn os(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}
