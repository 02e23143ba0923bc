//! One segment's analysis: its scan, its original indexes' verdicts, and the file stamp it was made from.

use crate::engine::format::takhin::FileKind;
use crate::engine::index::{IndexComparer, IndexKind, IndexVerdict};
use crate::engine::layout::{LogLayout, SegmentEntry};
use crate::engine::salvage::{salvage, Salvage};
use crate::engine::scan::{scan_segment, ReadAt, ScanOptions, SegmentScan};
use crate::engine::source::{advise_sequential, Source};
use serde::Serialize;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegmentStatus {
    Clean,
    Truncated,
    Unreadable,
}

impl SegmentStatus {
    /// The report's name for the status (its serde name too; the `status` xattr).
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentStatus::Clean => "clean",
            SegmentStatus::Truncated => "truncated",
            SegmentStatus::Unreadable => "unreadable",
        }
    }
}

/// Size, mtime, ctime, inode and device of a file when it was analysed: if any
/// changes, the analysis is stale. The ctime is what catches a same-size
/// overwrite whose mtime was put back (`touch -r`, `cp -p`, `rsync -t`): no
/// program can set it, and any write or attribute change moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl FileStamp {
    pub fn of(meta: &fs::Metadata) -> Self {
        FileStamp {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
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
    /// The runs found after the damage, when the analysis was asked to salvage
    /// (`None` otherwise, and for a clean or unreadable segment).
    pub salvage: Option<Arc<Salvage>>,
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

fn open_index(source: &Source, rel: &Path, present: bool) -> Result<(fs::File, u64), IndexVerdict> {
    if !present {
        return Err(IndexVerdict::Missing);
    }
    match source.file(rel).and_then(|f| Ok((f.metadata()?.len(), f))) {
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
    source: &Source,
    log: &LogLayout,
    seg: &SegmentEntry,
    opts: &ScanOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> SegmentAnalysis {
    analyze_segment_with(source, log, seg, opts, false, progress)
}

/// [`analyze_segment`], and when `salvaging`, the runs of intact records after a
/// damage that is not the end of the file ([`salvage`], with the original `.index`
/// as evidence and the next real segment's base as the bound).
pub fn analyze_segment_with(
    source: &Source,
    log: &LogLayout,
    seg: &SegmentEntry,
    opts: &ScanOptions,
    salvaging: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> SegmentAnalysis {
    let log_rel = log.file_rel(seg.base, FileKind::Log);
    let log_path = source.display_path(&log_rel);
    let opened = source.file(&log_rel).and_then(|f| {
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
                salvage: None,
            }
        }
    };
    advise_sequential(&file);
    let stamp = FileStamp::of(&meta);
    let idx = open_index(
        source,
        &log.file_rel(seg.base, FileKind::Index),
        seg.has_index,
    );
    let tidx = open_index(
        source,
        &log.file_rel(seg.base, FileKind::TimeIndex),
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
            let salvaged = if salvaging && scan.damage.is_some() {
                let next_base = log
                    .segments
                    .iter()
                    .map(|s| s.base)
                    .filter(|&b| b > seg.base)
                    .min();
                let evidence = idx.as_ref().ok().map(|(f, len)| (f as &dyn ReadAt, *len));
                match salvage(&file, stamp.size, &scan, evidence, next_base, opts) {
                    Ok(s) => Some(Arc::new(s)),
                    Err(e) => return unreadable(seg.base, &log_path, stamp, &e),
                }
            } else {
                None
            };
            SegmentAnalysis {
                base: seg.base,
                scan: Ok(Arc::new(scan)),
                index,
                timeindex,
                stamp,
                salvage: salvaged,
            }
        }
        Err(e) => unreadable(seg.base, &log_path, stamp, &e),
    }
}

/// A segment whose `.log` could not be read to the end: reported, never as corruption.
fn unreadable(base: u64, log_path: &Path, stamp: FileStamp, e: &io::Error) -> SegmentAnalysis {
    SegmentAnalysis {
        base,
        scan: Err(ReadError::new(log_path, "could not read", e)),
        index: IndexVerdict::Unreadable("its .log is unreadable".into()),
        timeindex: IndexVerdict::Unreadable("its .log is unreadable".into()),
        stamp,
        salvage: None,
    }
}
