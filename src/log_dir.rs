//! Finding logs and segments in a data directory, analysing them, and the log-level checks and policies.

use crate::format::takhin::{classify_name, segment_file_name, FileKind, NameMatch, LOG_EXT};
use crate::report::{
    escape_path, Gap, LogReport, Overlap, Problem, Report, SegmentReport, SegmentStatus, ViewAction,
};
use crate::scan::{scan_segment, IndexComparer, IndexKind, IndexVerdict, ScanOptions, SegmentScan};
use crate::source::{advise_sequential, open_original};
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What the view shows of a log (DESIGN.md §2, names from RocksDB's WAL recovery modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Every segment's valid prefix, later segments kept, gaps reported.
    #[default]
    PerSegment,
    /// The longest gap-free prefix: stop at the first damage or gap.
    PointInTime,
    /// Nothing repaired: damaged segments fail with EIO.
    Strict,
}

impl Policy {
    pub const ALL: [Policy; 3] = [Policy::PerSegment, Policy::PointInTime, Policy::Strict];
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::PerSegment => "per-segment",
            Policy::PointInTime => "point-in-time",
            Policy::Strict => "strict",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("unknown policy '{s}': use per-segment, point-in-time or strict")
            })
    }
}

/// A source file that could not be read: which file, what failed, and how.
/// Reported as `unreadable`, never as corruption.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {what}: {message}", path.display())]
pub struct ReadError {
    pub path: PathBuf,
    /// The operation that failed ("could not open", "could not read").
    pub what: &'static str,
    pub kind: io::ErrorKind,
    pub message: String,
}

impl ReadError {
    pub fn new(path: &Path, what: &'static str, e: &io::Error) -> Self {
        ReadError {
            path: path.to_path_buf(),
            what,
            kind: e.kind(),
            message: e.to_string(),
        }
    }
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

/// Classifies the entries of one directory. Returns `None` when the directory
/// holds nothing named like a segment file (it is not a log).
pub fn classify_dir(rel: &Path, entries: &[(OsString, fs::FileType)]) -> Option<LogLayout> {
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
            NameMatch::Segment(..) | NameMatch::SegmentLike(_) => {
                any = true;
                unrecognized.push(name.clone());
            }
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
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// The data directory.
    pub root: PathBuf,
    pub logs: Vec<LogLayout>,
    /// Directories that could not be listed.
    pub problems: Vec<Problem>,
}

/// Reads a directory's entries (name, type without following symlinks), sorted by name.
pub fn read_dir_sorted(dir: &Path) -> io::Result<Vec<(OsString, fs::FileType)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        out.push((e.file_name(), e.file_type()?));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Finds every log under `root` at any depth. Symlinked directories are not followed.
pub fn discover(root: &Path) -> Layout {
    let mut layout = Layout {
        root: root.to_path_buf(),
        ..Default::default()
    };
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let entries = match read_dir_sorted(&root.join(&rel)) {
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
            if rel.as_os_str().is_empty() && name == crate::plan::META_DIR {
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

/// Size, mtime and inode of a file when it was analysed: if any changes, the analysis is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl FileStamp {
    pub fn of(meta: &fs::Metadata) -> Self {
        FileStamp {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// The engine's verdict on one segment, before the log-level view is applied.
#[derive(Debug, Clone)]
pub struct SegmentAnalysis {
    pub base: u64,
    /// The scan, or why the `.log` could not be read.
    pub scan: Result<Arc<SegmentScan>, ReadError>,
    pub index: IndexVerdict,
    pub timeindex: IndexVerdict,
    /// The `.log` as it was when scanned.
    pub stamp: FileStamp,
}

impl SegmentAnalysis {
    pub fn status(&self) -> SegmentStatus {
        match &self.scan {
            Err(_) => SegmentStatus::Unreadable,
            Ok(s) if s.is_clean() => SegmentStatus::Clean,
            Ok(_) => SegmentStatus::Truncated,
        }
    }
}

fn open_index(path: &Path, present: bool) -> Result<(fs::File, u64), IndexVerdict> {
    if !present {
        return Err(IndexVerdict::Missing);
    }
    match open_original(path).and_then(|f| Ok((f.metadata()?.len(), f))) {
        Ok((len, f)) => {
            advise_sequential(&f);
            Ok((f, len))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(IndexVerdict::Missing),
        Err(e) => Err(IndexVerdict::Unreadable(e.to_string())),
    }
}

/// Scans one segment's `.log` and compares its original indexes with the rebuilt ones,
/// in one pass. `progress` is told how many `.log` bytes were scanned.
pub fn analyze_segment(
    root: &Path,
    log: &LogLayout,
    seg: &SegmentEntry,
    opts: &ScanOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> SegmentAnalysis {
    let log_path = root.join(log.file_rel(seg.base, FileKind::Log));
    let opened = open_original(&log_path).and_then(|f| {
        let meta = f.metadata()?;
        Ok((f, meta))
    });
    let (file, meta) = match opened {
        Ok(x) => x,
        Err(e) => {
            return SegmentAnalysis {
                base: seg.base,
                scan: Err(ReadError::new(&log_path, "could not open", &e)),
                index: IndexVerdict::Unreadable("its .log is unreadable".into()),
                timeindex: IndexVerdict::Unreadable("its .log is unreadable".into()),
                stamp: FileStamp::default(),
            }
        }
    };
    advise_sequential(&file);
    let stamp = FileStamp::of(&meta);
    let idx = open_index(
        &root.join(log.file_rel(seg.base, FileKind::Index)),
        seg.has_index,
    );
    let tidx = open_index(
        &root.join(log.file_rel(seg.base, FileKind::TimeIndex)),
        seg.has_timeindex,
    );
    let mut ci = idx
        .as_ref()
        .ok()
        .map(|(f, len)| IndexComparer::new(IndexKind::Offset, f, *len));
    let mut ct = tidx
        .as_ref()
        .ok()
        .map(|(f, len)| IndexComparer::new(IndexKind::Time, f, *len));
    let result = scan_segment(&file, stamp.size, seg.base, opts, |m| {
        if let Some(c) = ci.as_mut() {
            c.push(m);
        }
        if let Some(c) = ct.as_mut() {
            c.push(m);
        }
    });
    progress(stamp.size);
    match result {
        Ok(scan) => {
            let finish =
                |c: Option<IndexComparer<'_, fs::File>>,
                 early: &Result<(fs::File, u64), IndexVerdict>| match (c, early) {
                    (Some(c), _) => c.finish(scan.records),
                    (None, Err(v)) => v.clone(),
                    (None, Ok(_)) => unreachable!("a comparer exists for every opened index"),
                };
            let index = finish(ci, &idx);
            let timeindex = finish(ct, &tidx);
            SegmentAnalysis {
                base: seg.base,
                scan: Ok(Arc::new(scan)),
                index,
                timeindex,
                stamp,
            }
        }
        Err(e) => SegmentAnalysis {
            base: seg.base,
            scan: Err(ReadError::new(&log_path, "could not read", &e)),
            index: IndexVerdict::Unreadable("its .log is unreadable".into()),
            timeindex: IndexVerdict::Unreadable("its .log is unreadable".into()),
            stamp,
        },
    }
}

/// Which segments a policy shows, given the segments' analyses in base order.
pub fn visibility(policy: Policy, segs: &[SegmentAnalysis]) -> Vec<ViewAction> {
    let mut out = Vec::with_capacity(segs.len());
    let mut stopped = false;
    let mut expected: Option<u64> = None;
    for a in segs {
        let status = a.status();
        let action = match policy {
            Policy::PerSegment => match status {
                SegmentStatus::Clean => ViewAction::Kept,
                SegmentStatus::Truncated => ViewAction::Truncated,
                SegmentStatus::Unreadable => ViewAction::Eio,
            },
            Policy::Strict => match status {
                SegmentStatus::Clean if a.index.is_match() && a.timeindex.is_match() => {
                    ViewAction::Kept
                }
                _ => ViewAction::Eio,
            },
            Policy::PointInTime => {
                if expected.is_some_and(|e| e != a.base) {
                    stopped = true;
                }
                if stopped {
                    ViewAction::Hidden
                } else {
                    match &a.scan {
                        Err(_) => {
                            stopped = true;
                            ViewAction::Hidden
                        }
                        Ok(s) if s.is_clean() => ViewAction::Kept,
                        Ok(_) => {
                            stopped = true;
                            ViewAction::Truncated
                        }
                    }
                }
            }
        };
        if let Ok(s) = &a.scan {
            expected = Some(s.next_offset());
        }
        out.push(action);
    }
    out
}

/// Puts one log's segment analyses together: damage classes, gaps, overlaps, visibility.
pub fn assemble_log(
    log: &LogLayout,
    analyses: Vec<SegmentAnalysis>,
    policy: Policy,
    is_last_of_log: impl Fn(u64) -> bool,
) -> LogReport {
    let actions = visibility(policy, &analyses);
    let mut gaps = Vec::new();
    let mut overlaps = Vec::new();
    let mut prev: Option<(u64, PathBuf)> = None;
    let mut segments = Vec::with_capacity(analyses.len());
    for (a, action) in analyses.into_iter().zip(actions) {
        let rel = log.file_rel(a.base, FileKind::Log);
        if let Some((expected, prev_path)) = &prev {
            if a.base > *expected {
                gaps.push(Gap {
                    after: escape_path(prev_path),
                    before: escape_path(&rel),
                    from_offset: *expected,
                    to_offset: a.base - 1,
                    missing: a.base - expected,
                });
            } else if a.base < *expected {
                overlaps.push(Overlap {
                    segment: escape_path(&rel),
                    previous: escape_path(prev_path),
                    base_offset: a.base,
                    previous_next_offset: *expected,
                    offsets: expected - a.base,
                });
            }
        }
        let is_last = is_last_of_log(a.base);
        let report = SegmentReport::from_analysis(&rel, &a, action, is_last);
        if let Ok(s) = &a.scan {
            prev = Some((s.next_offset(), rel));
        } else {
            // An unreadable segment's extent is unknown: no gap is claimed across it.
            prev = None;
        }
        segments.push(report);
    }
    let next_offset = segments
        .iter()
        .filter(|s| s.view.serves())
        .filter_map(|s| s.scan.as_ref().map(|x| x.next_offset()))
        .max()
        .unwrap_or_else(|| log.segments.first().map_or(0, |s| s.base));
    LogReport {
        path: if log.rel.as_os_str().is_empty() {
            ".".into()
        } else {
            escape_path(&log.rel)
        },
        next_offset,
        gaps,
        overlaps,
        orphans: log
            .orphans
            .iter()
            .map(|n| escape_path(&log.rel.join(n)))
            .collect(),
        unrecognized: log
            .unrecognized
            .iter()
            .map(|n| escape_path(&log.rel.join(n)))
            .collect(),
        segments,
    }
}

/// Engine settings for a whole-tree analysis.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnalyzeOptions {
    pub scan: ScanOptions,
    pub policy: Policy,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
}

/// Total `.log` bytes a target holds (for progress).
pub fn total_log_bytes(layout: &Layout, only: Option<u64>) -> u64 {
    let mut total = 0;
    for log in &layout.logs {
        for s in &log.segments {
            if only.is_none_or(|b| b == s.base) {
                total +=
                    fs::symlink_metadata(layout.root.join(log.file_rel(s.base, FileKind::Log)))
                        .map(|m| m.len())
                        .unwrap_or(0);
            }
        }
    }
    total
}

/// Analyses every segment of a layout (in parallel) and builds the report.
pub fn analyze(
    layout: &Layout,
    target: &Target,
    opts: &AnalyzeOptions,
    source: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Report {
    let jobs: Vec<(usize, &SegmentEntry)> = layout
        .logs
        .iter()
        .enumerate()
        .flat_map(|(li, log)| log.segments.iter().map(move |s| (li, s)))
        .filter(|(_, s)| target.only_segment.is_none_or(|b| b == s.base))
        .collect();
    let results: Mutex<Vec<Option<SegmentAnalysis>>> = Mutex::new(vec![None; jobs.len()]);
    let next = AtomicUsize::new(0);
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        opts.threads
    }
    .clamp(1, jobs.len().max(1));
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(li, seg)) = jobs.get(j) else { break };
                let a = analyze_segment(&layout.root, &layout.logs[li], seg, &opts.scan, progress);
                results.lock().expect("no worker panics")[j] = Some(a);
            });
        }
    });
    let mut per_log: Vec<Vec<SegmentAnalysis>> = vec![Vec::new(); layout.logs.len()];
    let results = results.into_inner().expect("no worker panics");
    for ((li, _), a) in jobs.iter().zip(results) {
        per_log[*li].push(a.expect("every job ran"));
    }
    let mut logs = Vec::new();
    for (log, analyses) in layout.logs.iter().zip(per_log) {
        let last = log.segments.last().map(|s| s.base);
        if target.only_segment.is_some() && analyses.is_empty() {
            continue;
        }
        let mut scoped = log.clone();
        if target.only_segment.is_some() {
            // A single segment: its siblings' orphans and names are not in scope.
            scoped.orphans.clear();
            scoped.unrecognized.clear();
        }
        logs.push(assemble_log(&scoped, analyses, opts.policy, |b| {
            Some(b) == last
        }));
    }
    Report::new(source, opts.policy, logs, layout.problems.clone())
}

/// The layout a target covers: the whole tree, or for one `.log` only its own
/// directory (not searched below). A tree with no log at all is an error: the
/// operator most likely pointed at the wrong directory.
pub fn discover_target(target: &Target) -> Result<Layout, TargetError> {
    let layout = match target.only_segment {
        None => discover(&target.root),
        Some(_) => {
            let entries = read_dir_sorted(&target.root).map_err(|source| TargetError::Io {
                path: target.root.clone(),
                source,
            })?;
            Layout {
                root: target.root.clone(),
                logs: classify_dir(Path::new(""), &entries).into_iter().collect(),
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

/// Discovers and analyses PATH in one call: what `check` and `repair` run.
pub fn check_path(
    path: &Path,
    opts: &AnalyzeOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Layout, Report), TargetError> {
    let target = resolve_target(path)?;
    let layout = discover_target(&target)?;
    let report = analyze(
        &layout,
        &target,
        opts,
        &path.display().to_string(),
        progress,
    );
    Ok((layout, report))
}

/// A name as an `OsStr`, for tests and callers holding raw bytes.
pub fn os(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::takhin::SegmentWriter;

    fn analysis(base: u64, records: u64) -> SegmentAnalysis {
        let mut w = SegmentWriter::new(base);
        for i in 0..records {
            w.append(i as i64, b"", b"v");
        }
        let scan = scan_segment(
            &w.log,
            w.log.len() as u64,
            base,
            &ScanOptions::default(),
            |_| {},
        )
        .unwrap();
        SegmentAnalysis {
            base,
            scan: Ok(Arc::new(scan)),
            index: IndexVerdict::Match,
            timeindex: IndexVerdict::Match,
            stamp: FileStamp {
                size: w.log.len() as u64,
                ..Default::default()
            },
        }
    }

    #[test]
    fn an_unreadable_segment_is_reported_never_as_corruption() {
        let layout = LogLayout {
            segments: [0, 5, 10]
                .map(|base| SegmentEntry {
                    base,
                    has_index: true,
                    has_timeindex: true,
                })
                .to_vec(),
            ..Default::default()
        };
        let unreadable = SegmentAnalysis {
            base: 5,
            scan: Err(ReadError::new(
                Path::new("x/00000000000000000005.log"),
                "could not read",
                &io::Error::from_raw_os_error(libc::EIO),
            )),
            index: IndexVerdict::Unreadable("its .log is unreadable".into()),
            timeindex: IndexVerdict::Unreadable("its .log is unreadable".into()),
            stamp: FileStamp::default(),
        };
        let want = [
            (
                Policy::PerSegment,
                [ViewAction::Kept, ViewAction::Eio, ViewAction::Kept],
            ),
            (
                Policy::PointInTime,
                [ViewAction::Kept, ViewAction::Hidden, ViewAction::Hidden],
            ),
            (
                Policy::Strict,
                [ViewAction::Kept, ViewAction::Eio, ViewAction::Kept],
            ),
        ];
        for (policy, views) in want {
            let segs = vec![analysis(0, 5), unreadable.clone(), analysis(10, 5)];
            let log = assemble_log(&layout, segs, policy, |b| b == 10);
            let got: Vec<ViewAction> = log.segments.iter().map(|s| s.view).collect();
            assert_eq!(got, views, "{policy}");
            let s = &log.segments[1];
            assert_eq!(s.status, SegmentStatus::Unreadable);
            assert!(s.damage.is_none(), "an I/O error is not damage");
            assert!(s.error.as_deref().unwrap().contains("Input/output error"));
            assert!(
                log.gaps.is_empty(),
                "no gap is claimed across an unreadable segment"
            );
            let r = Report::new("x", policy, vec![log], vec![]);
            assert_eq!((r.summary.unreadable, r.summary.truncated), (1, 0));
            assert!(r.summary.view_differs);
            assert!(r.render_human().contains("UNREADABLE"));
        }
    }
}
