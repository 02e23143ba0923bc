//! Ranges healed from replicas in the view: their sizes, reads of the replica's byte range, rebuilt indexes and xattrs.

use crate::engine::format::takhin::FileKind;
use crate::engine::index::{read_rebuilt_index, IndexKind};
use crate::engine::report::HealedReport;
use crate::engine::salvage::Shifted;
use crate::engine::segment::FileStamp;
use crate::view::error::{Result, ViewError};
use crate::view::verdicts::Verdicts;
use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;

/// The replica's data directory the range comes from (as given with `--replica`).
pub const XATTR_REPLICA: &str = "user.recoverfs.replica";
/// The replica's `.log` the bytes come from, relative to the replica's data directory.
pub const XATTR_HEALED_FROM: &str = "user.recoverfs.healed_from";
/// Where the range starts in that `.log` (same name as a salvaged run's).
pub const XATTR_HEALED_POSITION: &str = "user.recoverfs.position";
/// Records in the range.
pub const XATTR_HEALED_RECORDS: &str = "user.recoverfs.records";

/// Extended attributes of every file of a healed range, in `listxattr` order.
pub const HEALED_XATTRS: [&str; 4] = [
    XATTR_REPLICA,
    XATTR_HEALED_FROM,
    XATTR_HEALED_POSITION,
    XATTR_HEALED_RECORDS,
];

/// The healed range of the log `dir` whose first offset is `first`, as the view shows it now.
pub(crate) fn get(v: &Verdicts, dir: &Path, first: u64) -> Result<HealedReport> {
    let listing = v.listing(dir)?;
    let layout = listing.layout.as_ref().ok_or(ViewError::NotFound)?;
    let report = v.log_report(layout);
    let found = report
        .shown_healed()
        .find(|h| h.from_offset == first)
        .cloned();
    found.ok_or(ViewError::NotFound)
}

/// The index kind of a healed file's kind (`None` for the `.log`).
pub(crate) fn index_kind(kind: FileKind) -> Option<IndexKind> {
    match kind {
        FileKind::Log => None,
        FileKind::TimeIndex => Some(IndexKind::Time),
        FileKind::Index => Some(IndexKind::Offset),
    }
}

/// Bytes a read of a healed file returns.
pub(crate) fn size(h: &HealedReport, kind: FileKind) -> u64 {
    match index_kind(kind) {
        None => h.bytes,
        Some(_) => h.scan.index_bytes(),
    }
}

/// Opens the `.log` behind a healed range (a replica's, or the primary's for the
/// parts of a segment split around a preferred record), refusing a file that
/// changed since the range was scanned.
pub(crate) fn open_file(h: &HealedReport) -> Result<File> {
    // The copy's own door: a replica's, or the primary's for its split parts.
    let src = h.source.as_deref().ok_or(ViewError::NotFound)?;
    let path = src.display_path(&h.file);
    let f = src
        .file(&h.file)
        .map_err(crate::view::error::source_err(&path))?;
    let m = f
        .metadata()
        .map_err(crate::view::error::source_err(&path))?;
    if FileStamp::of(&m) != h.file_stamp {
        return Err(ViewError::Refused {
            path: h.path.clone(),
            why: "the replica's file changed since the range was healed from it".into(),
        });
    }
    Ok(f)
}

/// A healed range's rebuilt `.index`/`.timeindex` bytes `[offset, offset+size)`.
pub(crate) fn read_index(
    file: &File,
    h: &HealedReport,
    kind: IndexKind,
    offset: u64,
    size: u64,
) -> Result<Vec<u8>> {
    let view = Shifted {
        src: file,
        start: h.position,
        len: h.bytes,
    };
    read_rebuilt_index(&view, &h.scan, kind, offset, size).map_err(|err| ViewError::Source {
        path: format!(
            "healed range {} of replica {}",
            h.from_offset, h.replica_index
        ),
        err,
    })
}

/// `listxattr` of a healed range's files, NUL-terminated.
pub(crate) fn xattr_names() -> Vec<u8> {
    let mut out = Vec::new();
    for n in HEALED_XATTRS {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
    }
    out
}

/// The value of the xattr `name` of a healed range's files.
pub(crate) fn xattr_value(h: &HealedReport, name: &OsStr) -> Result<Vec<u8>> {
    let value = match name.to_str() {
        Some(XATTR_REPLICA) => h.replica.clone(),
        Some(XATTR_HEALED_FROM) => h.path.clone(),
        Some(XATTR_HEALED_POSITION) => h.position.to_string(),
        Some(XATTR_HEALED_RECORDS) => h.records.to_string(),
        _ => return Err(ViewError::NoAttr),
    };
    Ok(value.into_bytes())
}
