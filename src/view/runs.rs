//! Salvaged runs in the view (salvage policy): their sizes, reads of the original's byte range, rebuilt indexes and xattrs.

use crate::engine::format::takhin::{segment_file_name, FileKind};
use crate::engine::index::{read_rebuilt_index, IndexKind};
use crate::engine::layout::escape_path;
use crate::engine::salvage::SalvagedRun;
use crate::engine::segment::SegmentAnalysis;
use crate::view::error::{Result, ViewError};
use crate::view::verdicts::SegView;
use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;

/// The original `.log` a run's bytes come from (its path in the source).
pub const XATTR_SALVAGED_FROM: &str = "user.recoverfs.salvaged_from";
/// Where the run starts in the original `.log`.
pub const XATTR_POSITION: &str = "user.recoverfs.position";
/// Records in the run.
pub const XATTR_RUN_RECORDS: &str = "user.recoverfs.records";
/// "index" when the original `.index` confirms the run's first record, else "chained".
pub const XATTR_CONFIRMED: &str = "user.recoverfs.confirmed_by";

/// Extended attributes of every file of a salvaged run, in `listxattr` order.
pub const RUN_XATTRS: [&str; 4] = [
    XATTR_SALVAGED_FROM,
    XATTR_POSITION,
    XATTR_RUN_RECORDS,
    XATTR_CONFIRMED,
];

/// The run of `analysis` whose first offset is `first`.
pub(crate) fn find(analysis: &SegmentAnalysis, first: u64) -> Option<&SalvagedRun> {
    analysis
        .salvage
        .as_ref()
        .and_then(|s| s.runs.iter().find(|r| r.first_offset == first))
}

/// The run, or why it is no longer there (the original changed since it was listed).
pub(crate) fn get(analysis: &SegmentAnalysis, first: u64) -> Result<&SalvagedRun> {
    find(analysis, first).ok_or_else(|| ViewError::Refused {
        path: format!("salvaged run {first} of segment {}", analysis.base),
        why: "the run is no longer found in its original".into(),
    })
}

/// Bytes a read of a run's file returns: `index` is `None` for its `.log`.
pub(crate) fn size(run: &SalvagedRun, index: Option<IndexKind>) -> u64 {
    match index {
        None => run.bytes(),
        Some(_) => run.scan.index_bytes(),
    }
}

/// The index kind of a run file's kind (`None` for the `.log`).
pub(crate) fn index_kind(kind: FileKind) -> Option<IndexKind> {
    match kind {
        FileKind::Log => None,
        FileKind::TimeIndex => Some(IndexKind::Time),
        FileKind::Index => Some(IndexKind::Offset),
    }
}

/// A run's rebuilt `.index`/`.timeindex` bytes `[offset, offset+size)`, read from
/// the original `.log` through the run's byte range.
pub(crate) fn read_index(
    file: &File,
    run: &SalvagedRun,
    kind: IndexKind,
    offset: u64,
    size: u64,
) -> Result<Vec<u8>> {
    read_rebuilt_index(&run.view(file), &run.scan, kind, offset, size).map_err(|err| {
        ViewError::Source {
            path: format!("salvaged run {}", run.first_offset),
            err,
        }
    })
}

/// `listxattr` of a run's files, NUL-terminated.
pub(crate) fn xattr_names() -> Vec<u8> {
    let mut out = Vec::new();
    for n in RUN_XATTRS {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
    }
    out
}

/// The value of the xattr `name` of run `first`, salvaged from segment `sv` of directory `dir`.
pub(crate) fn xattr_value(sv: &SegView, dir: &Path, first: u64, name: &OsStr) -> Result<Vec<u8>> {
    let run = find(&sv.analysis, first).ok_or(ViewError::NotFound)?;
    let value = match name.to_str() {
        Some(XATTR_SALVAGED_FROM) => {
            escape_path(&dir.join(segment_file_name(sv.analysis.base, FileKind::Log)))
        }
        Some(XATTR_POSITION) => run.position.to_string(),
        Some(XATTR_RUN_RECORDS) => run.records.to_string(),
        Some(XATTR_CONFIRMED) => if run.confirmed_by_index {
            "index"
        } else {
            "chained"
        }
        .to_string(),
        _ => return Err(ViewError::NoAttr),
    };
    Ok(value.into_bytes())
}
