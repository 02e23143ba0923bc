//! The repaired tree's shape: which entries of a source directory the view shows, and as what.
//!
//! Shared by `mount` (lazily, one directory at a time) and `repair` (the whole
//! tree), so that what is inspected is exactly what gets committed. Which
//! segments a policy hides needs the log's analysis; [`visible_children`]
//! applies it.

use crate::engine::format::takhin::{classify_name, segment_file_name, FileKind, NameMatch};
use crate::engine::layout::{classify_dir, is_reserved, LogLayout};
use crate::engine::policy::ViewAction;
use crate::engine::report::LogReport;
use crate::engine::source::EntryType;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What a view entry is and where its bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// A directory, mirrored.
    Dir,
    /// An opaque regular file, passed through unchanged.
    File,
    /// A symlink, shown as a symlink (its target text), never followed.
    Symlink,
    /// A segment's `.log`: its valid prefix.
    Log { base: u64 },
    /// A segment's `.index` or `.timeindex`: rebuilt from the valid prefix
    /// (present even when the original is missing).
    Index { base: u64, kind: FileKind },
    /// A file of a run salvaged from segment `base` (salvage policy): its `.log`
    /// is the original's bytes of the run, its indexes rebuilt from them; `first`
    /// is the run's first offset, which names it.
    Run {
        base: u64,
        first: u64,
        kind: FileKind,
    },
    /// A file of an offset range healed from replica `replica` (1 for the first
    /// `--replica`): its `.log` is a byte range of the replica's `.log`, its
    /// indexes rebuilt from it; `first` is the range's first offset, which names it.
    Healed {
        replica: usize,
        first: u64,
        kind: FileKind,
    },
}

impl Node {
    /// The segment this entry belongs to, if any.
    pub fn segment(self) -> Option<u64> {
        match self {
            Node::Log { base } | Node::Index { base, .. } | Node::Run { base, .. } => Some(base),
            _ => None,
        }
    }
}

/// The children of one source directory as the view shows them, by name,
/// before any policy hides segments. FIFOs, sockets and devices are left out,
/// and so are orphan `.index`/`.timeindex` files. Also returns the directory's
/// log layout when it is a log.
pub fn dir_children(
    rel: &Path,
    entries: &[(OsString, EntryType)],
) -> (BTreeMap<OsString, Node>, Option<LogLayout>) {
    let layout = classify_dir(rel, entries);
    let mut out = BTreeMap::new();
    for (name, ft) in entries {
        if is_reserved(rel, name) {
            continue;
        }
        let node = if ft.is_dir() {
            Node::Dir
        } else if ft.is_symlink() {
            Node::Symlink
        } else if ft.is_file() {
            match classify_name(name.as_bytes()) {
                NameMatch::Segment(base, FileKind::Log) => Node::Log { base },
                // Indexes are added below from the segments, so orphans drop out.
                NameMatch::Segment(_, _) => continue,
                _ => Node::File,
            }
        } else {
            continue; // FIFO, socket, device: never opened, never shown.
        };
        out.insert(name.clone(), node);
    }
    if let Some(l) = &layout {
        for s in &l.segments {
            for kind in [FileKind::Index, FileKind::TimeIndex] {
                out.insert(
                    segment_file_name(s.base, kind).into(),
                    Node::Index { base: s.base, kind },
                );
            }
        }
    }
    (out, layout)
}

/// Drops the entries of segments the policy hides, and adds the files of the
/// salvaged runs the report shows (salvage policy) and of the ranges healed from
/// replicas; a run never replaces an entry, and a healed range replaces only the
/// files of a primary segment whose view holds no record (`HealedReport::replaces`).
pub fn visible_children(
    children: BTreeMap<OsString, Node>,
    report: Option<&LogReport>,
) -> BTreeMap<OsString, Node> {
    let Some(r) = report else { return children };
    // One lookup per file, not a search of the log's segments (a log may hold tens of thousands).
    let actions: HashMap<u64, ViewAction> =
        r.segments.iter().map(|s| (s.base_offset, s.view)).collect();
    let mut out: BTreeMap<OsString, Node> = children
        .into_iter()
        .filter(|(_, n)| {
            n.segment()
                .is_none_or(|b| actions.get(&b).is_none_or(|a| a.listed()))
        })
        .collect();
    for seg in &r.segments {
        for (_, run) in seg.shown_runs() {
            for kind in [FileKind::Log, FileKind::Index, FileKind::TimeIndex] {
                out.entry(segment_file_name(run.first_offset, kind).into())
                    .or_insert(Node::Run {
                        base: seg.base_offset,
                        first: run.first_offset,
                        kind,
                    });
            }
        }
    }
    for h in r.shown_healed() {
        for kind in [FileKind::Log, FileKind::Index, FileKind::TimeIndex] {
            let name: OsString = segment_file_name(h.from_offset, kind).into();
            let node = Node::Healed {
                replica: h.replica_index,
                first: h.from_offset,
                kind,
            };
            if h.replaces.is_some() {
                out.insert(name, node);
            } else {
                out.entry(name).or_insert(node);
            }
        }
    }
    out
}
