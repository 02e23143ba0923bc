//! Extended attributes of segment files (`user.recoverfs.*`): their names, values, and sizing for a caller's buffer.

use crate::engine::format::takhin::FileKind;
use crate::engine::index::{IndexKind, IndexVerdict};
use crate::engine::policy::ViewAction;
use crate::engine::report::{DamageReport, SegmentReport};
use crate::engine::segment::SegmentStatus;
use crate::view::error::{Result, ViewError};
use crate::view::verdicts::SegView;
use std::ffi::OsStr;
use std::path::Path;

/// The segment's status: clean, truncated or unreadable.
pub const XATTR_STATUS: &str = "user.recoverfs.status";
/// Bytes of the `.log` the view serves.
pub const XATTR_VALID_BYTES: &str = "user.recoverfs.valid_bytes";
/// Bytes of the original `.log`.
pub const XATTR_ORIGINAL_BYTES: &str = "user.recoverfs.original_bytes";
/// Records in the valid prefix.
pub const XATTR_RECORDS: &str = "user.recoverfs.records";
/// Where and why the segment was cut, or "none".
pub const XATTR_DAMAGE: &str = "user.recoverfs.damage";

/// Extended attributes of every segment file, in `listxattr` order.
pub const XATTRS: [&str; 5] = [
    XATTR_STATUS,
    XATTR_VALID_BYTES,
    XATTR_ORIGINAL_BYTES,
    XATTR_RECORDS,
    XATTR_DAMAGE,
];

/// `getxattr`/`listxattr` answer for a caller's buffer size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrReply {
    /// The caller asked for the size only (size 0).
    Size(u32),
    Data(Vec<u8>),
}

/// Sizes a value for a caller's buffer as `getxattr(2)` does.
pub fn xattr_reply(value: Vec<u8>, size: u32) -> Result<XattrReply> {
    if size == 0 {
        Ok(XattrReply::Size(value.len() as u32))
    } else if value.len() > size as usize {
        Err(ViewError::Range)
    } else {
        Ok(XattrReply::Data(value))
    }
}

/// [`XATTRS`], NUL-terminated, as `listxattr` returns them.
pub(crate) fn names() -> Vec<u8> {
    let mut out = Vec::new();
    for n in XATTRS {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
    }
    out
}

/// True when the view lists the segment but refuses its reads (`strict`) although it
/// could be read: its files are 0 bytes and fail with EIO, as `check` says ("refused
/// (EIO)") and the report's `view` ("eio"), so its xattrs must not say `truncated`.
fn refused(r: &SegmentReport) -> bool {
    r.view == ViewAction::Eio && r.status != SegmentStatus::Unreadable
}

/// The xattrs of a refused segment's files (`verdict` the file's own index verdict,
/// the `.index`'s for the `.log`; `original_bytes` the file's original size):
/// status `refused`; nothing served (`valid_bytes` and `records` 0, as `ls -l` shows);
/// `damage` why it was refused: the damage found, or the index that differs.
fn refused_value(
    r: &SegmentReport,
    verdict: &IndexVerdict,
    ik: IndexKind,
    original_bytes: String,
    name: &OsStr,
) -> Result<Vec<u8>> {
    let why = match &r.damage {
        Some(d) => damage_text(d),
        None if !verdict.is_match() => verdict.describe(ik),
        None if !r.index.is_match() => format!("index: {}", r.index.describe(IndexKind::Offset)),
        None => format!("timeindex: {}", r.timeindex.describe(IndexKind::Time)),
    };
    let value = match name.to_str() {
        Some(XATTR_STATUS) => "refused".to_string(),
        Some(XATTR_VALID_BYTES) | Some(XATTR_RECORDS) => "0".to_string(),
        Some(XATTR_ORIGINAL_BYTES) => original_bytes,
        Some(XATTR_DAMAGE) => format!("refused under strict (reads fail with EIO): {why}"),
        _ => return Err(ViewError::NoAttr),
    };
    Ok(value.into_bytes())
}

/// The `damage` xattr's text for a damage: kind, class, where, and what was found.
fn damage_text(d: &DamageReport) -> String {
    format!(
        "{} ({}) at byte {}, record {}: {}",
        d.kind(),
        d.class.as_str(),
        d.position,
        d.record,
        d.cause
    )
}

/// The value of the xattr `name` of the segment whose `.log` is `log_rel`.
pub(crate) fn value(sv: &SegView, log_rel: &Path, name: &OsStr) -> Result<Vec<u8>> {
    let r = SegmentReport::from_analysis(log_rel, &sv.analysis, sv.action, sv.is_last);
    if refused(&r) {
        return refused_value(
            &r,
            &r.index,
            IndexKind::Offset,
            r.original_bytes.to_string(),
            name,
        );
    }
    let value = match name.to_str() {
        Some(XATTR_STATUS) => r.status.as_str().to_string(),
        Some(XATTR_VALID_BYTES) => r.valid_bytes.to_string(),
        Some(XATTR_ORIGINAL_BYTES) => r.original_bytes.to_string(),
        Some(XATTR_RECORDS) => r.records.to_string(),
        Some(XATTR_DAMAGE) => match (&r.damage, &r.error) {
            (Some(d), _) => damage_text(d),
            (None, Some(e)) => format!("unreadable: {e}"),
            (None, None) => "none".into(),
        },
        _ => return Err(ViewError::NoAttr),
    };
    Ok(value.into_bytes())
}

/// The value of the xattr `name` of a segment's `.index` or `.timeindex` (`kind`), whose
/// original holds `original` bytes (`None`: missing): the index's own truth, not the `.log`'s.
/// `status` is `clean` when the original equals the rebuilt index, else `rebuilt`
/// (`unreadable` with the `.log`); `valid_bytes` the rebuilt size; `records` its entries;
/// `original_bytes` the original's size or `missing`; `damage` why it was rebuilt, or `none`.
pub(crate) fn index_value(
    sv: &SegView,
    log_rel: &Path,
    kind: FileKind,
    original: Option<u64>,
    name: &OsStr,
) -> Result<Vec<u8>> {
    let r = SegmentReport::from_analysis(log_rel, &sv.analysis, sv.action, sv.is_last);
    let (verdict, ik) = match kind {
        FileKind::TimeIndex => (&r.timeindex, IndexKind::Time),
        _ => (&r.index, IndexKind::Offset),
    };
    if refused(&r) {
        let original = original.map_or("missing".into(), |b| b.to_string());
        return refused_value(&r, verdict, ik, original, name);
    }
    let unreadable = r.status == SegmentStatus::Unreadable;
    let value = match name.to_str() {
        Some(XATTR_STATUS) if unreadable => "unreadable".to_string(),
        Some(XATTR_STATUS) if verdict.is_match() => "clean".to_string(),
        Some(XATTR_STATUS) => "rebuilt".to_string(),
        Some(XATTR_VALID_BYTES) => r.scan.as_ref().map_or(0, |s| s.index_bytes()).to_string(),
        Some(XATTR_ORIGINAL_BYTES) => original.map_or("missing".into(), |b| b.to_string()),
        Some(XATTR_RECORDS) => r.records.to_string(),
        Some(XATTR_DAMAGE) if verdict.is_match() => "none".to_string(),
        Some(XATTR_DAMAGE) => verdict.describe(ik),
        _ => return Err(ViewError::NoAttr),
    };
    Ok(value.into_bytes())
}
