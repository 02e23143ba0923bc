//! The mirrored source tree: lookup, attributes, open and listing of the data directory's entries, as the policy shows them.

use crate::engine::format::takhin::{segment_file_name, FileKind};
use crate::engine::index::IndexKind;
use crate::engine::plan::Node;
use crate::engine::policy::ViewAction;
use crate::engine::segment::FileStamp;
use crate::view::error::{Result, ViewError};
use crate::view::handles::{Handles, Opened, SegPart};
use crate::view::healed;
use crate::view::inodes::{Attr, EntryType};
use crate::view::runs;
use crate::view::verdicts::{SegView, Verdicts};
use std::ffi::{OsStr, OsString};
use std::path::Path;

/// What the kernel sees a source entry as.
pub(crate) fn entry_type(node: Node) -> EntryType {
    match node {
        Node::Dir => EntryType::Dir,
        Node::Symlink => EntryType::Symlink,
        _ => EntryType::File,
    }
}

/// The directory a source entry is in.
pub(crate) fn parent_of(rel: &Path) -> &Path {
    rel.parent().unwrap_or(Path::new(""))
}

/// Looks `name` up in the source directory `dir`; a segment the policy hides is
/// not found. Also returns the segment's verdict when the entry is a segment's
/// file, for [`attr`] to reuse (one validation check per request).
pub(crate) fn lookup(v: &Verdicts, dir: &Path, name: &OsStr) -> Result<(Node, Option<SegView>)> {
    let listing = v.listing(dir)?;
    let node = match listing.children.get(name) {
        // With replicas, a healed range may replace a segment of the source: the policy's listing says.
        _ if v.replicas().is_some() && listing.layout.is_some() => *v
            .listed_children(&listing)
            .get(name)
            .ok_or(ViewError::NotFound)?,
        Some(n) => *n,
        // A salvaged run's file is not in the source: the policy's listing has it.
        None if v.policy().salvages() && listing.layout.is_some() => *v
            .listed_children(&listing)
            .get(name)
            .ok_or(ViewError::NotFound)?,
        None => return Err(ViewError::NotFound),
    };
    let sv = match node.segment() {
        Some(base) => {
            let sv = v.seg_view_in(&listing, base)?;
            if !sv.action.listed() {
                return Err(ViewError::NotFound);
            }
            Some(sv)
        }
        None => None,
    };
    Ok((node, sv))
}

/// Attributes of the source entry `rel`, as inode `ino`: a segment file's size
/// is what a read returns. `sv`: the segment's verdict if the caller has it.
pub(crate) fn attr(
    v: &Verdicts,
    ino: u64,
    rel: &Path,
    node: Node,
    sv: Option<SegView>,
) -> Result<Attr> {
    let dir = parent_of(rel);
    let seg_view = |base| match sv {
        Some(sv) => Ok(sv),
        None => v.seg_view(dir, base),
    };
    match node {
        Node::Dir => Ok(Attr::from_meta(ino, EntryType::Dir, 0, &v.lstat(rel)?)),
        Node::File | Node::Symlink => {
            let m = v.lstat(rel)?;
            Ok(Attr::from_meta(ino, entry_type(node), m.len(), &m))
        }
        Node::Log { base } => {
            let sv = seg_view(base)?;
            // The `.log` was just `stat`ed to check its verdict: those are its attributes.
            let m = match &sv.log_meta {
                Some(m) => m.clone(),
                None => v.lstat(rel)?,
            };
            let size = match (&sv.analysis.scan, sv.action.serves()) {
                (Ok(s), true) => s.valid_bytes,
                _ => 0,
            };
            let sealed = match &sv.analysis.scan {
                Ok(s) => {
                    s.is_clean()
                        && !sv.is_last
                        && sv.action == ViewAction::Kept
                        && m.len() == s.valid_bytes
                        && sv.analysis.stamp == FileStamp::of(&m)
                }
                Err(_) => false,
            };
            Ok(Attr {
                sealed,
                ..Attr::from_meta(ino, EntryType::File, size, &m)
            })
        }
        Node::Index { base, .. } => {
            let log_rel = dir.join(segment_file_name(base, FileKind::Log));
            // A rebuilt index whose original is missing takes the `.log`'s times and owner.
            let m = match v.lstat(rel) {
                Ok(m) if m.is_file() => m,
                _ => v.lstat(&log_rel)?,
            };
            let sv = seg_view(base)?;
            let size = match (&sv.analysis.scan, sv.action.serves()) {
                (Ok(s), true) => s.index_bytes(),
                _ => 0,
            };
            Ok(Attr::from_meta(ino, EntryType::File, size, &m))
        }
        Node::Run { base, first, kind } => {
            // A run's files take the original `.log`'s times and owner.
            let m = v.lstat(&dir.join(segment_file_name(base, FileKind::Log)))?;
            let sv = seg_view(base)?;
            let run = runs::find(&sv.analysis, first).ok_or(ViewError::NotFound)?;
            let size = match sv.action.serves() {
                true => runs::size(run, runs::index_kind(kind)),
                false => 0,
            };
            Ok(Attr::from_meta(ino, EntryType::File, size, &m))
        }
        Node::Healed { first, kind, .. } => {
            // A healed range's files take the replica `.log`'s times and owner.
            let h = healed::get(v, parent_of(rel), first)?;
            let m = healed::open_file(&h)?
                .metadata()
                .map_err(|err| ViewError::Source {
                    path: h.path.clone(),
                    err,
                })?;
            Ok(Attr::from_meta(
                ino,
                EntryType::File,
                healed::size(&h, kind),
                &m,
            ))
        }
    }
}

/// Opens the source entry `rel` (inode `ino`) for reading.
pub(crate) fn open(v: &Verdicts, h: &Handles, ino: u64, rel: &Path, node: Node) -> Result<Opened> {
    match node {
        Node::Dir => Err(ViewError::IsDir),
        Node::Symlink => Err(ViewError::IsSymlink),
        Node::File => h.open_plain(v, ino, rel),
        Node::Log { base } => h.open_segment(v, ino, parent_of(rel), base, SegPart::Log),
        Node::Index { base, kind } => {
            let k = match kind {
                FileKind::TimeIndex => IndexKind::Time,
                _ => IndexKind::Offset,
            };
            h.open_segment(v, ino, parent_of(rel), base, SegPart::Index(k))
        }
        Node::Run { base, first, kind } => {
            let part = SegPart::Run {
                first,
                index: runs::index_kind(kind),
            };
            h.open_segment(v, ino, parent_of(rel), base, part)
        }
        Node::Healed { first, kind, .. } => {
            let healed = healed::get(v, parent_of(rel), first)?;
            let file = healed::open_file(&healed)?;
            Ok(h.open_healed(ino, file, healed, healed::index_kind(kind)))
        }
    }
}

/// The entries of the source directory `dir` the policy lists (without `.` and `..`).
pub(crate) fn readdir(v: &Verdicts, dir: &Path) -> Result<Vec<(OsString, Node)>> {
    let listing = v.listing(dir)?;
    Ok(v.listed_children(&listing).into_iter().collect())
}
