//! The tree to write: the policy's view of the source, listed entry by entry from `crate::engine::plan`.

use super::fsio::{stat_source, Attrs, Progress};
use super::{io_at, RepairError, Result};
use crate::engine::analysis::{check_path, AnalyzeOptions};
use crate::engine::format::takhin::{segment_file_name, FileKind};
use crate::engine::layout::Layout;
use crate::engine::plan::{dir_children, visible_children, Node};
use crate::engine::policy::{Policy, ViewAction};
use crate::engine::replica::{check_with_replicas, CheckError, Prefer};
use crate::engine::report::{HealedReport, HealedRole, LogReport, Report, SegmentReport};
use crate::engine::scan::SegmentScan;
use crate::engine::segment::SegmentStatus;
use crate::engine::source::Source;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the bytes of a file of the repaired tree come from.
#[derive(Debug, Clone)]
pub(super) enum Content {
    /// A passed-through file: the original, whole.
    Whole { len: u64 },
    /// A segment's `.log`: its first `len` bytes (the valid prefix) of `original_len`.
    Prefix { len: u64, original_len: u64 },
    /// A rebuilt `.index`/`.timeindex` of the segment whose `.log` is `log`.
    Rebuilt {
        kind: FileKind,
        log: PathBuf,
        scan: Arc<SegmentScan>,
        /// Whether the original file at this path already holds exactly these bytes.
        original_matches: bool,
    },
    /// A salvaged run's (or healed range's) `.log`: the bytes `[start, start + len)`
    /// of the original `log` (of `original_len` bytes), in the primary, or in the
    /// replica `replica` is the door of.
    Range {
        log: PathBuf,
        start: u64,
        len: u64,
        original_len: u64,
        replica: Option<Arc<Source>>,
    },
    /// A salvaged run's (or healed range's) rebuilt `.index`/`.timeindex`, from its byte range of `log`.
    RunIndex {
        kind: FileKind,
        log: PathBuf,
        start: u64,
        original_len: u64,
        scan: Arc<SegmentScan>,
        replica: Option<Arc<Source>>,
    },
}

/// One entry of the repaired tree, relative to the data directory.
#[derive(Debug, Clone)]
pub(super) enum Entry {
    Dir {
        rel: PathBuf,
        attrs: Attrs,
    },
    /// Its target is read only when written out: `readlink` moves a symlink's atime
    /// (no `O_NOATIME` exists for it), so in-place runs and dry runs never read it.
    Symlink {
        rel: PathBuf,
        attrs: Attrs,
    },
    File {
        rel: PathBuf,
        content: Content,
        attrs: Attrs,
    },
}

/// Why a source entry is not in the repaired tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeftOut {
    /// A segment file the policy hides.
    Hidden,
    /// An `.index`/`.timeindex` with no `.log`.
    Orphan,
    /// A FIFO, socket or device: never opened, never shown.
    Special,
}

/// The repaired tree, in pre-order (every directory before its entries).
#[derive(Debug, Default)]
pub(super) struct TreePlan {
    pub(super) entries: Vec<Entry>,
    pub(super) left_out: Vec<(PathBuf, LeftOut)>,
}

/// Matches each discovered log directory with its report.
pub(super) fn reports_by_dir<'a>(
    layout: &Layout,
    report: &'a Report,
) -> HashMap<PathBuf, &'a LogReport> {
    // `analyze` reports the logs of a whole-directory target in layout order.
    layout
        .logs
        .iter()
        .zip(&report.logs)
        .map(|(l, r)| (l.rel.clone(), r))
        .collect()
}

/// Refuses what the view cannot serve, or what strict will not repair.
fn refuse_unservable(data: &Path, report: &Report) -> Result<()> {
    if report.policy == Policy::Strict && report.summary.view_differs {
        let s = &report.summary;
        let mut why = Vec::new();
        for (n, what) in [
            (s.truncated, "segment(s) damaged"),
            (s.unreadable, "segment(s) unreadable"),
            (s.indexes_rebuilt, "index set(s) to rebuild"),
            (s.gaps, "gap(s)"),
            (s.overlaps, "overlap(s)"),
            (s.orphans, "orphan index(es)"),
            (s.unrecognized, "unrecognized file(s)"),
            (report.problems.len() as u64, "unlistable dir(s)"),
        ] {
            if n > 0 {
                why.push(format!("{n} {what}"));
            }
        }
        return Err(RepairError::StrictRefuses {
            path: data.to_path_buf(),
            why: why.join(", "),
        });
    }
    if let Some(p) = report.problems.first() {
        return Err(RepairError::Unlisted {
            path: data.join(&p.path),
            error: p.error.clone(),
        });
    }
    Ok(())
}

/// Walks the source and lists the repaired tree, exactly as the mount shows it.
pub(super) fn build_plan(data: &Path, layout: &Layout, report: &Report) -> Result<TreePlan> {
    refuse_unservable(data, report)?;
    let source = &layout.source;
    let stat = |rel: &Path| stat_source(source, rel);
    let logs = reports_by_dir(layout, report);
    let mut plan = TreePlan::default();
    plan.entries.push(Entry::Dir {
        rel: PathBuf::new(),
        attrs: Attrs::of(&stat(Path::new(""))?),
    });
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let entries = source
            .read_dir(&rel)
            .map_err(io_at(&source.display_path(&rel), "could not list"))?;
        let (children, _) = dir_children(&rel, &entries);
        let log = logs.get(&rel);
        // The shown runs of this log by (segment, first offset): one lookup per run file,
        // where a search of the segment's runs for each made a plan quadratic in them.
        let runs: HashMap<(u64, u64), _> = log
            .iter()
            .flat_map(|l| &l.segments)
            .flat_map(|s| {
                s.shown_runs()
                    .map(move |(_, r)| ((s.base_offset, r.first_offset), r))
            })
            .collect();
        let visible = visible_children(children.clone(), log.copied());
        // Each segment's report by its base: one lookup per file planned.
        let segs: HashMap<u64, &SegmentReport> = log
            .iter()
            .flat_map(|l| &l.segments)
            .map(|s| (s.base_offset, s))
            .collect();
        for (name, ft) in &entries {
            // recoverfs's own metadata name: not copied, and never removed in place.
            if crate::engine::layout::is_reserved(&rel, name) {
                continue;
            }
            if !visible.contains_key(name) {
                let why = match children.get(name) {
                    Some(_) => LeftOut::Hidden,
                    None if ft.is_file() => LeftOut::Orphan,
                    None => LeftOut::Special,
                };
                plan.left_out.push((rel.join(name), why));
            }
        }
        let mut subdirs = Vec::new();
        for (name, node) in visible {
            let child = rel.join(&name);
            match node {
                Node::Dir => {
                    plan.entries.push(Entry::Dir {
                        rel: child.clone(),
                        attrs: Attrs::of(&stat(&child)?),
                    });
                    subdirs.push(child);
                }
                Node::Symlink => plan.entries.push(Entry::Symlink {
                    attrs: Attrs::of(&stat(&child)?),
                    rel: child,
                }),
                Node::File => {
                    let m = stat(&child)?;
                    plan.entries.push(Entry::File {
                        rel: child,
                        content: Content::Whole { len: m.len() },
                        attrs: Attrs::of(&m),
                    })
                }
                Node::Log { base } => {
                    let seg = served(data, &child, segs.get(&base).copied())?;
                    plan.entries.push(Entry::File {
                        content: Content::Prefix {
                            len: seg.valid_bytes,
                            original_len: seg.original_bytes,
                        },
                        attrs: Attrs::of(&stat(&child)?),
                        rel: child,
                    })
                }
                Node::Index { base, kind } => {
                    let log_rel = rel.join(segment_file_name(base, FileKind::Log));
                    let seg = served(data, &log_rel, segs.get(&base).copied())?;
                    // A rebuilt index takes the original's mode and times, or the .log's when missing.
                    let attrs = match source.metadata(&child) {
                        Ok(m) if m.is_file() => Attrs::of(&m),
                        _ => Attrs::of(&stat(&log_rel)?),
                    };
                    let verdict = if kind == FileKind::Index {
                        &seg.index
                    } else {
                        &seg.timeindex
                    };
                    plan.entries.push(Entry::File {
                        rel: child,
                        content: Content::Rebuilt {
                            kind,
                            log: log_rel,
                            scan: seg.scan.clone().expect("a served segment was scanned"),
                            original_matches: verdict.is_match(),
                        },
                        attrs,
                    })
                }
                Node::Healed { first, kind, .. } => {
                    let h = log
                        .and_then(|l| l.shown_healed().find(|h| h.from_offset == first))
                        .ok_or_else(|| RepairError::SourceChanged {
                            path: data.join(&child),
                            what: "healed range not found in the analysis".into(),
                        })?;
                    let rsrc = h
                        .source
                        .as_deref()
                        .ok_or_else(|| RepairError::SourceChanged {
                            path: data.join(&child),
                            what: "healed range without its replica".into(),
                        })?;
                    let log_rel = rel.join(segment_file_name(first, FileKind::Log));
                    if let Some(content) = split_prefix(h, &log_rel, kind) {
                        // The segment cut at a record boundary: its files keep their own
                        // attributes, as a cut `.log` and its rebuilt indexes do.
                        let attrs = match source.metadata(&child) {
                            Ok(m) if m.is_file() => Attrs::of(&m),
                            _ => Attrs::of(&stat(&log_rel)?),
                        };
                        plan.entries.push(Entry::File {
                            rel: child,
                            content,
                            attrs,
                        });
                        continue;
                    }
                    // The primary's own records split around a preferred one are a byte
                    // range of the primary's `.log`, like a salvaged run (no replica door):
                    // in place they are written from the backup copy of that `.log`.
                    let replica = match h.role {
                        HealedRole::PrimarySplit => None,
                        _ => h.source.clone(),
                    };
                    let content = match kind {
                        FileKind::Log => Content::Range {
                            log: h.file.clone(),
                            start: h.position,
                            len: h.bytes,
                            original_len: h.file_stamp.size,
                            replica: replica.clone(),
                        },
                        _ => Content::RunIndex {
                            kind,
                            log: h.file.clone(),
                            start: h.position,
                            original_len: h.file_stamp.size,
                            scan: h.scan.clone(),
                            replica: replica.clone(),
                        },
                    };
                    // A healed range's files take the replica `.log`'s mode and times.
                    plan.entries.push(Entry::File {
                        rel: child,
                        content,
                        attrs: Attrs::of(&stat_source(rsrc, &h.file)?),
                    })
                }
                Node::Run { base, first, kind } => {
                    let log_rel = rel.join(segment_file_name(base, FileKind::Log));
                    let seg = served(data, &log_rel, segs.get(&base).copied())?;
                    let run =
                        runs.get(&(base, first))
                            .ok_or_else(|| RepairError::SourceChanged {
                                path: data.join(&child),
                                what: "salvaged run not found in the analysis".into(),
                            })?;
                    let content = match kind {
                        FileKind::Log => Content::Range {
                            log: log_rel.clone(),
                            start: run.position,
                            len: run.bytes(),
                            original_len: seg.original_bytes,
                            replica: None,
                        },
                        _ => Content::RunIndex {
                            kind,
                            log: log_rel.clone(),
                            start: run.position,
                            original_len: seg.original_bytes,
                            scan: Arc::new(run.scan.clone()),
                            replica: None,
                        },
                    };
                    // A run's files take the original `.log`'s mode and times.
                    plan.entries.push(Entry::File {
                        rel: child,
                        content,
                        attrs: Attrs::of(&stat(&log_rel)?),
                    })
                }
            }
        }
        // Reversed so directories are visited in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(plan)
}

/// The first part of a primary segment split around a record `--prefer` serves from a
/// replica, when it is the primary's own records from the segment's base on: that is the
/// segment cut at a record boundary, so its `.log` is the original's prefix and its
/// indexes are rebuilt from it, exactly as for a segment cut at damage (in place: a
/// truncation, after the original is backed up). `None` for any other range.
fn split_prefix(h: &HealedReport, log_rel: &Path, kind: FileKind) -> Option<Content> {
    let own = h.role == HealedRole::PrimarySplit
        && h.replaces.is_some()
        && h.position == 0
        && h.file == log_rel;
    if !own {
        return None;
    }
    Some(match kind {
        FileKind::Log => Content::Prefix {
            len: h.bytes,
            original_len: h.file_stamp.size,
        },
        _ => Content::Rebuilt {
            kind,
            log: log_rel.to_path_buf(),
            // Records read from the whole original, which is still this size when read.
            scan: Arc::new(SegmentScan {
                original_bytes: h.file_stamp.size,
                ..(*h.scan).clone()
            }),
            original_matches: false,
        },
    })
}

/// The report of a segment the view serves; refuses one it answers with EIO.
fn served<'a>(
    data: &Path,
    rel: &Path,
    seg: Option<&'a SegmentReport>,
) -> Result<&'a SegmentReport> {
    let path = data.join(rel);
    let seg = seg.ok_or_else(|| RepairError::SourceChanged {
        path: path.clone(),
        what: "appeared after the analysis".into(),
    })?;
    match seg.view {
        ViewAction::Kept | ViewAction::Truncated if seg.scan.is_some() => Ok(seg),
        _ if seg.status == SegmentStatus::Unreadable => Err(RepairError::Unreadable {
            path,
            error: seg.error.clone().unwrap_or_default(),
        }),
        _ => Err(RepairError::StrictRefuses {
            path,
            why: "damaged segment".into(),
        }),
    }
}

/// The analysis the tree is built from, with the replicas ranges are healed from (none: the plain analysis).
pub(super) fn analyze_with(
    data: &Path,
    opts: &AnalyzeOptions,
    replicas: &[PathBuf],
    prefer: Prefer,
    progress: Option<&Progress>,
) -> Result<(Layout, Report)> {
    let tell = |n: u64| {
        if let Some(p) = progress {
            p(n)
        }
    };
    if replicas.is_empty() {
        return Ok(check_path(data, opts, &tell)?);
    }
    match check_with_replicas(data, replicas, prefer, opts, &tell) {
        Ok((layout, report, _)) => Ok((layout, report)),
        Err(CheckError::Target(e)) => Err(e.into()),
        Err(CheckError::Replica(e)) => Err(RepairError::Replica(e)),
    }
}
