//! `.recoverfs/` as its own small filesystem: `report.json`, `metrics.prom`, `raw/` (the untouched originals) and `tails/` (the bytes cut), with lookup, attributes, open and readdir.

use crate::engine::format::takhin::{segment_file_name, FileKind};
use crate::engine::layout::discover;
use crate::engine::report::Report;
use crate::view::error::{Result, ViewError};
use crate::view::handles::{Handles, Opened, SegPart};
use crate::view::inodes::{entry_type, Attr, EntryType};
use crate::view::metrics::{self, Counters, METRICS_NAME};
use crate::view::verdicts::Verdicts;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The whole-tree report inside [`META_DIR`](crate::view::META_DIR).
pub const REPORT_NAME: &str = "report.json";
/// The untouched originals inside [`META_DIR`](crate::view::META_DIR).
pub const RAW_DIR: &str = crate::engine::source::VIEW_RAW_DIR;
/// The bytes cut from truncated segments inside [`META_DIR`](crate::view::META_DIR).
pub const TAILS_DIR: &str = "tails";
/// Suffix appended to a segment's `.log` name in `tails/`.
pub const TAIL_SUFFIX: &str = ".tail";
/// Each replica's originals, as `replicas/<n>/` (n from 1, in `--replica` order).
pub const REPLICAS_DIR: &str = "replicas";

/// An entry of `.recoverfs/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MetaNode {
    /// `.recoverfs/` itself.
    Root,
    /// `.recoverfs/report.json`
    Report,
    /// `.recoverfs/metrics.prom`
    Metrics,
    /// `.recoverfs/raw/<rel>`: an original, untouched (rel "" is `raw/` itself).
    Raw { rel: PathBuf, kind: EntryType },
    /// `.recoverfs/tails/<rel>/` (rel "" is `tails/` itself).
    Tails { rel: PathBuf },
    /// `.recoverfs/tails/<dir>/<base>.log.tail`
    Tail { dir: PathBuf, base: u64 },
    /// `.recoverfs/replicas/` (only with `--replica`).
    Replicas,
    /// `.recoverfs/replicas/<n>/<rel>`: an original of replica `n` (1-based), untouched.
    Replica {
        n: usize,
        rel: PathBuf,
        kind: EntryType,
    },
}

impl MetaNode {
    /// True for a directory of `.recoverfs/`.
    pub fn is_dir(&self) -> bool {
        match self {
            MetaNode::Root | MetaNode::Tails { .. } | MetaNode::Replicas => true,
            MetaNode::Raw { kind, .. } | MetaNode::Replica { kind, .. } => *kind == EntryType::Dir,
            MetaNode::Report | MetaNode::Metrics | MetaNode::Tail { .. } => false,
        }
    }

    /// `raw/` itself.
    fn raw_root() -> MetaNode {
        MetaNode::Raw {
            rel: PathBuf::new(),
            kind: EntryType::Dir,
        }
    }

    /// `tails/` itself.
    fn tails_root() -> MetaNode {
        MetaNode::Tails {
            rel: PathBuf::new(),
        }
    }

    /// The source entry this shows, if any (`raw/` entries).
    pub fn source_rel(&self) -> Option<&Path> {
        match self {
            MetaNode::Raw { rel, .. } => Some(rel),
            _ => None,
        }
    }

    /// The source symlink this entry shows, if it is one.
    pub fn symlink(&self) -> Option<&Path> {
        match self {
            MetaNode::Raw {
                rel,
                kind: EntryType::Symlink,
            } => Some(rel),
            _ => None,
        }
    }
}

/// `report.json` and `metrics.prom` (given the source root's attributes) made readable
/// by the source root's owner alone (0400, as a 0600 file in a read-only view). They name
/// and describe every file of the tree, those in directories other users cannot enter
/// and of files they cannot read included (a damage detail can quote a file's bytes):
/// whoever cannot read a log must learn nothing of it from `.recoverfs/`, and the
/// kernel (`default_permissions`) enforces the mode for every caller.
fn owner_only(mut a: Attr) -> Attr {
    a.perm &= 0o400;
    a
}

/// Replica `n`'s source (1-based), through its own door.
fn replica_source(v: &Verdicts, n: usize) -> Result<&crate::engine::source::Source> {
    v.replicas()
        .and_then(|r| r.list.get(n.wrapping_sub(1)))
        .map(|r| &*r.source)
        .ok_or(ViewError::NotFound)
}

/// `tails/` as of the last report: directory -> entries.
#[derive(Default)]
struct TailsTree {
    dirs: HashMap<PathBuf, BTreeMap<OsString, TailNode>>,
}

#[derive(Debug, Clone, Copy)]
enum TailNode {
    Dir,
    Tail(u64),
}

impl TailsTree {
    /// Adds the tail of segment `base` of the log `log_rel`, and every directory down to it.
    fn add(&mut self, log_rel: &Path, base: u64) {
        let mut at = PathBuf::new();
        for comp in log_rel.components() {
            let name = comp.as_os_str().to_os_string();
            self.dirs
                .entry(at.clone())
                .or_default()
                .insert(name.clone(), TailNode::Dir);
            at.push(name);
        }
        let mut name = OsString::from(segment_file_name(base, FileKind::Log));
        name.push(TAIL_SUFFIX);
        self.dirs
            .entry(at)
            .or_default()
            .insert(name, TailNode::Tail(base));
    }
}

/// The state of `.recoverfs/`: the report and `tails/` as last built.
pub(crate) struct Meta {
    /// How the report names the source.
    source_label: String,
    report: Mutex<Arc<Vec<u8>>>,
    tails: Mutex<Arc<TailsTree>>,
    counters: Arc<Counters>,
    /// The size of `metrics.prom` as last generated (its `st_size`).
    metrics_len: Mutex<u64>,
}

impl Meta {
    pub fn new(source_label: String, counters: Arc<Counters>) -> Self {
        Meta {
            source_label,
            counters,
            metrics_len: Mutex::new(0),
            report: Mutex::new(Arc::new(Vec::new())),
            tails: Mutex::new(Arc::new(TailsTree::default())),
        }
    }

    /// Builds the whole-tree report (validating what is not cached) and `tails/` from it.
    pub fn refresh_report(&self, v: &Verdicts) -> Arc<Vec<u8>> {
        let layout = discover(v.source());
        let mut logs = Vec::new();
        let mut tails = TailsTree::default();
        tails.dirs.insert(PathBuf::new(), BTreeMap::new());
        for log in &layout.logs {
            let report = v.log_report(log);
            for s in &report.segments {
                if s.scan.as_ref().is_some_and(|scan| scan.bytes_cut() > 0) {
                    tails.add(&log.rel, s.base_offset);
                }
            }
            logs.push(report);
        }
        let report = Report::new(
            &self.source_label,
            v.policy(),
            v.source().access(),
            logs,
            layout.problems.clone(),
        )
        .with_not_crossed(v.source());
        // Healed ranges are in the logs; the replicas are described (no verification: `check` does that).
        let report = match v.replicas() {
            Some(r) => report.with_replicas(r.reports(&layout.logs)),
            None => report,
        };
        let bytes = Arc::new((report.to_json() + "\n").into_bytes());
        *self.report.lock() = bytes.clone();
        *self.tails.lock() = Arc::new(tails);
        bytes
    }

    /// `metrics.prom` as of now, from the cached verdicts and the counters (validates nothing).
    pub fn metrics(&self, v: &Verdicts) -> Arc<Vec<u8>> {
        let bytes = Arc::new(metrics::render(v, &self.counters, &self.source_label));
        *self.metrics_len.lock() = bytes.len() as u64;
        bytes
    }

    /// Looks `name` up in the directory `node`.
    pub fn lookup(&self, v: &Verdicts, node: &MetaNode, name: &OsStr) -> Result<MetaNode> {
        Ok(match node {
            MetaNode::Root => {
                if name == REPORT_NAME {
                    self.refresh_report(v);
                    MetaNode::Report
                } else if name == METRICS_NAME {
                    MetaNode::Metrics
                } else if name == RAW_DIR {
                    MetaNode::raw_root()
                } else if name == TAILS_DIR {
                    self.refresh_report(v);
                    MetaNode::tails_root()
                } else if name == REPLICAS_DIR && v.replicas().is_some() {
                    MetaNode::Replicas
                } else {
                    return Err(ViewError::NotFound);
                }
            }
            MetaNode::Raw {
                rel,
                kind: EntryType::Dir,
            } => {
                let listing = v.listing(rel)?;
                let ft = listing
                    .entries
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, ft)| *ft)
                    .ok_or(ViewError::NotFound)?;
                let kind = entry_type(ft).ok_or(ViewError::NotFound)?;
                MetaNode::Raw {
                    rel: rel.join(name),
                    kind,
                }
            }
            MetaNode::Replicas => {
                let count = v.replicas().map_or(0, |r| r.list.len());
                let n = name
                    .to_str()
                    .and_then(|s| s.parse::<usize>().ok())
                    .filter(|n| (1..=count).contains(n) && name.to_str() == Some(&n.to_string()))
                    .ok_or(ViewError::NotFound)?;
                MetaNode::Replica {
                    n,
                    rel: PathBuf::new(),
                    kind: EntryType::Dir,
                }
            }
            MetaNode::Replica {
                n,
                rel,
                kind: EntryType::Dir,
            } => {
                let src = replica_source(v, *n)?;
                let path = src.display_path(rel);
                let entries = src
                    .read_dir(rel)
                    .map_err(crate::view::error::source_err(&path))?;
                let ft = entries
                    .iter()
                    .find(|(e, _)| e == name)
                    .map(|(_, ft)| *ft)
                    .ok_or(ViewError::NotFound)?;
                MetaNode::Replica {
                    n: *n,
                    rel: rel.join(name),
                    kind: entry_type(ft).ok_or(ViewError::NotFound)?,
                }
            }
            MetaNode::Tails { rel } => {
                let tails = self.tails.lock().clone();
                let node = tails
                    .dirs
                    .get(rel)
                    .and_then(|d| d.get(name))
                    .copied()
                    .ok_or(ViewError::NotFound)?;
                match node {
                    TailNode::Dir => MetaNode::Tails {
                        rel: rel.join(name),
                    },
                    TailNode::Tail(base) => MetaNode::Tail {
                        dir: rel.clone(),
                        base,
                    },
                }
            }
            _ => return Err(ViewError::NotDir),
        })
    }

    /// Attributes of `node`, as inode `ino`.
    pub fn attr(&self, v: &Verdicts, ino: u64, node: &MetaNode) -> Result<Attr> {
        match node {
            MetaNode::Root => {
                let m = v.lstat(Path::new(""))?;
                Ok(Attr::from_meta(ino, EntryType::Dir, 0, &m))
            }
            MetaNode::Report => {
                let m = v.lstat(Path::new(""))?;
                let mut len = self.report.lock().len() as u64;
                if len == 0 {
                    len = self.refresh_report(v).len() as u64;
                }
                Ok(owner_only(Attr::from_meta(ino, EntryType::File, len, &m)))
            }
            MetaNode::Metrics => {
                let m = v.lstat(Path::new(""))?;
                let mut len = *self.metrics_len.lock();
                if len == 0 {
                    len = self.metrics(v).len() as u64;
                }
                Ok(owner_only(Attr::from_meta(ino, EntryType::File, len, &m)))
            }
            MetaNode::Raw { rel, kind } => original_attr(ino, *kind, &v.lstat(rel)?),
            MetaNode::Tails { rel } => {
                let m = v.lstat(rel)?;
                Ok(Attr::from_meta(ino, EntryType::Dir, 0, &m))
            }
            MetaNode::Replicas => {
                let m = v.lstat(Path::new(""))?;
                Ok(Attr::from_meta(ino, EntryType::Dir, 0, &m))
            }
            MetaNode::Replica { n, rel, kind } => {
                let src = replica_source(v, *n)?;
                let m = src
                    .metadata(rel)
                    .map_err(crate::view::error::source_err(&src.display_path(rel)))?;
                original_attr(ino, *kind, &m)
            }
            MetaNode::Tail { dir, base } => {
                let a = v.current_analysis(dir, *base)?;
                let m = v.lstat(&dir.join(segment_file_name(*base, FileKind::Log)))?;
                let cut = a.scan.as_ref().map(|s| s.bytes_cut()).unwrap_or(0);
                if cut == 0 {
                    return Err(ViewError::NotFound);
                }
                Ok(Attr::from_meta(ino, EntryType::File, cut, &m))
            }
        }
    }

    /// Opens the file `node` (inode `ino`) for reading.
    pub fn open(&self, v: &Verdicts, h: &Handles, ino: u64, node: &MetaNode) -> Result<Opened> {
        match node {
            MetaNode::Raw { rel, kind } => match kind {
                EntryType::File => h.open_plain(v, ino, rel),
                EntryType::Dir => Err(ViewError::IsDir),
                EntryType::Symlink => Err(ViewError::IsSymlink),
            },
            MetaNode::Report => Ok(h.open_bytes(self.refresh_report(v))),
            MetaNode::Metrics => Ok(h.open_bytes(self.metrics(v))),
            MetaNode::Tail { dir, base } => h.open_segment(v, ino, dir, *base, SegPart::Tail),
            MetaNode::Replica { n, rel, kind } => match kind {
                EntryType::File => h.open_plain_in(replica_source(v, *n)?, ino, rel),
                EntryType::Dir => Err(ViewError::IsDir),
                EntryType::Symlink => Err(ViewError::IsSymlink),
            },
            MetaNode::Root | MetaNode::Tails { .. } | MetaNode::Replicas => Err(ViewError::IsDir),
        }
    }

    /// The entries of the directory `node` (without `.` and `..`).
    pub fn readdir(
        &self,
        v: &Verdicts,
        node: &MetaNode,
    ) -> Result<Vec<(OsString, MetaNode, EntryType)>> {
        let mut out = Vec::new();
        match node {
            MetaNode::Root => {
                out.push((REPORT_NAME.into(), MetaNode::Report, EntryType::File));
                out.push((METRICS_NAME.into(), MetaNode::Metrics, EntryType::File));
                out.push((RAW_DIR.into(), MetaNode::raw_root(), EntryType::Dir));
                out.push((TAILS_DIR.into(), MetaNode::tails_root(), EntryType::Dir));
                if v.replicas().is_some() {
                    out.push((REPLICAS_DIR.into(), MetaNode::Replicas, EntryType::Dir));
                }
            }
            MetaNode::Replicas => {
                for n in 1..=v.replicas().map_or(0, |r| r.list.len()) {
                    let node = MetaNode::Replica {
                        n,
                        rel: PathBuf::new(),
                        kind: EntryType::Dir,
                    };
                    out.push((n.to_string().into(), node, EntryType::Dir));
                }
            }
            MetaNode::Replica {
                n,
                rel,
                kind: EntryType::Dir,
            } => {
                let src = replica_source(v, *n)?;
                let entries = src
                    .read_dir(rel)
                    .map_err(crate::view::error::source_err(&src.display_path(rel)))?;
                for (name, ft) in entries {
                    if let Some(t) = entry_type(ft) {
                        let node = MetaNode::Replica {
                            n: *n,
                            rel: rel.join(&name),
                            kind: t,
                        };
                        out.push((name, node, t));
                    }
                }
            }
            MetaNode::Raw {
                rel,
                kind: EntryType::Dir,
            } => {
                let listing = v.listing(rel)?;
                for (name, ft) in &listing.entries {
                    if let Some(t) = entry_type(*ft) {
                        let node = MetaNode::Raw {
                            rel: rel.join(name),
                            kind: t,
                        };
                        out.push((name.clone(), node, t));
                    }
                }
            }
            MetaNode::Tails { rel } => {
                if rel.as_os_str().is_empty() {
                    self.refresh_report(v);
                }
                let tails = self.tails.lock().clone();
                for (name, node) in tails.dirs.get(rel).into_iter().flatten() {
                    out.push(match *node {
                        TailNode::Dir => (
                            name.clone(),
                            MetaNode::Tails {
                                rel: rel.join(name),
                            },
                            EntryType::Dir,
                        ),
                        TailNode::Tail(base) => (
                            name.clone(),
                            MetaNode::Tail {
                                dir: rel.clone(),
                                base,
                            },
                            EntryType::File,
                        ),
                    });
                }
            }
            _ => return Err(ViewError::NotDir),
        }
        Ok(out)
    }
}

/// An original's attributes under `raw/` or `replicas/<n>/` (inode `ino`, listed as
/// `kind`): not found once it is something else (a file swapped for a directory).
fn original_attr(ino: u64, kind: EntryType, m: &std::fs::Metadata) -> Result<Attr> {
    let now = entry_type(crate::engine::source::EntryType::of(m)).ok_or(ViewError::NotFound)?;
    if now != kind {
        return Err(ViewError::NotFound);
    }
    let size = if kind == EntryType::Dir { 0 } else { m.len() };
    Ok(Attr::from_meta(ino, kind, size, m))
}
