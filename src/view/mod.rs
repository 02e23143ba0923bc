//! The mounted view without FUSE: one [`View`] tying the inode table, the source tree, `.recoverfs/`, handles, verdicts and xattrs together.
//!
//! Everything the kernel can ask of the mount is answered here, so it can be
//! tested without mounting; `fuse.rs` only translates. The view is lazy: a
//! segment is validated the first time one of its files is looked up, and the
//! verdict lives in a cache bounded in bytes (`verdicts.rs`). Each inode is
//! either an entry of the mirrored source tree (`tree.rs`) or of `.recoverfs/`
//! (`meta.rs`), a small filesystem of its own; this file only dispatches
//! between the two and tracks changes to the source.

mod error;
pub mod fuse;
mod handles;
mod healed;
mod inodes;
mod meta;
pub mod metrics;
mod runs;
mod tree;
mod verdicts;
pub mod verify;
pub mod watch;
mod xattr;

use crate::engine::format::takhin::{classify_name, segment_file_name, FileKind, NameMatch};
use crate::engine::layout::is_reserved;
use crate::engine::plan::Node;
use crate::engine::policy::Policy;
use crate::engine::scan::ScanOptions;
use crate::engine::source::Source;
use crate::view::inodes::Inodes;
use crate::view::meta::{Meta, MetaNode};
use crate::view::metrics::Counters;
use crate::view::tree::parent_of;
use crate::view::verdicts::Verdicts;
use crate::view::watch::Watcher;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub use crate::engine::layout::META_DIR;
pub use error::{Result, ViewError};
pub use handles::Opened;
pub use healed::{HEALED_XATTRS, XATTR_HEALED_FROM, XATTR_REPLICA};
pub use inodes::{Attr, DirEntry, EntryType, ROOT_INO};
pub use meta::{RAW_DIR, REPLICAS_DIR, REPORT_NAME, TAILS_DIR, TAIL_SUFFIX};
pub use metrics::METRICS_NAME;
pub use runs::{RUN_XATTRS, XATTR_POSITION, XATTR_SALVAGED_FROM};
pub use xattr::{xattr_reply, XattrReply, XATTRS};

/// What an inode stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// An entry of the repaired tree (the root is `Src { rel: "", node: Dir }`).
    Src { rel: PathBuf, node: Node },
    /// An entry of `.recoverfs/`.
    Meta(MetaNode),
}

impl inodes::InodeKind for Kind {
    fn source_dir(&self) -> Option<&Path> {
        match self {
            Kind::Src {
                rel,
                node: Node::Dir,
            } => Some(rel),
            _ => None,
        }
    }
}

/// Settings of a view.
#[derive(Debug, Clone)]
pub struct ViewConfig {
    /// The data directory, through the one door every read goes.
    pub source: Arc<Source>,
    /// How the report names the source.
    pub source_label: String,
    pub policy: Policy,
    pub scan: ScanOptions,
    /// Bytes of segment verdicts kept in memory.
    pub cache_bytes: u64,
}

/// The view's `statfs` totals, in `frsize` units (free space and free inodes are always 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub files: u64,
    pub bsize: u32,
    pub frsize: u32,
}

/// Called with an inode whose cached attributes and pages the kernel must drop,
/// and whether its source was seen to change or changes may have been missed.
pub type Invalidator = Box<dyn Fn(u64, Change) + Send + Sync>;

/// Why an inode is invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The watcher saw its source file change.
    Seen,
    /// The watcher lost events (its queue overflowed): it may have changed unseen.
    MaybeMissed,
}

/// The repaired tree as a filesystem.
pub struct View {
    cfg: ViewConfig,
    inodes: Inodes<Kind>,
    verdicts: Verdicts,
    handles: handles::Handles,
    meta: Meta,
    invalidator: OnceLock<Invalidator>,
    /// `-o nometa`: no `.recoverfs/`, no xattrs; the root copies as exactly the repaired log.
    no_meta: bool,
    statfs_cache: parking_lot::Mutex<Option<(std::time::Instant, StatFs)>>,
    /// Live figures for `metrics.prom`, shared with the FUSE adapter and the verifier.
    counters: Arc<Counters>,
}

/// How long `statfs` totals are reused before the source is walked again.
pub const STATFS_FOR: std::time::Duration = std::time::Duration::from_secs(30);

impl View {
    pub fn new(cfg: ViewConfig) -> View {
        let counters = Arc::new(Counters::default());
        View {
            inodes: Inodes::new(Kind::Src {
                rel: PathBuf::new(),
                node: Node::Dir,
            }),
            verdicts: Verdicts::new(
                cfg.source.clone(),
                cfg.policy,
                cfg.scan.clone(),
                cfg.cache_bytes,
            ),
            handles: handles::Handles::new(),
            meta: Meta::new(cfg.source_label.clone(), counters.clone()),
            counters,
            invalidator: OnceLock::new(),
            no_meta: false,
            statfs_cache: parking_lot::Mutex::new(None),
            cfg,
        }
    }

    /// The view with ranges healed from `replicas` (`--replica`), and
    /// `.recoverfs/replicas/<n>/` showing each replica's originals.
    pub fn with_replicas(mut self, replicas: Arc<crate::engine::replica::Replicas>) -> View {
        self.verdicts.set_replicas(replicas);
        self
    }

    /// The view without `.recoverfs/` and without `user.recoverfs.*` xattrs (`-o nometa`):
    /// `cp -a`, `tar` or `rsync` of its root then copy exactly the repaired log.
    pub fn without_meta(mut self) -> View {
        self.no_meta = true;
        self
    }

    pub fn config(&self) -> &ViewConfig {
        &self.cfg
    }

    // ---- change tracking ----

    /// Installs what tells the kernel to drop a changed file's cached attributes and pages.
    pub fn set_invalidator(&self, f: Invalidator) {
        let _ = self.invalidator.set(f);
    }

    /// Watches every source directory the view lists, so that a change to a
    /// file reaches the kernel's caches without waiting for a lookup.
    pub fn start_watching(self: &Arc<Self>) -> io::Result<()> {
        let w = Arc::new(Watcher::new(self.cfg.source.clone())?);
        if !self.verdicts.set_watcher(w.clone()) {
            return Ok(()); // already watching
        }
        let view = self.clone();
        std::thread::Builder::new()
            .name("recoverfs-watch".into())
            .spawn(move || {
                if let Err(e) = w.run(|buf| view.watch_events(&w, buf)) {
                    tracing::warn!("watching the source stopped: {e}");
                }
            })?;
        Ok(())
    }

    /// The events of one read of the source watcher `w`: each change seen, or lost.
    pub fn watch_events(&self, w: &Watcher, buf: &[u8]) {
        w.dispatch(
            buf,
            |dir, name| self.source_changed(dir, name),
            || self.source_changes_lost(),
        );
    }

    /// A source file changed: drop what depends on it and tell the kernel.
    pub fn source_changed(&self, dir: &Path, name: &OsStr) {
        Counters::add(&self.counters.source_changes, 1);
        let names: Vec<OsString> = match classify_name(name.as_bytes()) {
            NameMatch::Segment(base, _) => {
                self.verdicts.forget_log(dir);
                // A segment's three files change together (their size and bytes may
                // differ), and so do the runs salvaged from it (as last validated).
                let mut bases = vec![base];
                bases.extend(self.verdicts.cached_runs(dir, base));
                bases
                    .into_iter()
                    .flat_map(|b| {
                        [FileKind::Log, FileKind::Index, FileKind::TimeIndex]
                            .map(|k| OsString::from(segment_file_name(b, k)))
                    })
                    .collect()
            }
            _ => vec![name.to_os_string()],
        };
        let Some(f) = self.invalidator.get() else {
            return;
        };
        for ino in self
            .inodes
            .in_source_dir(dir, names.iter().map(OsString::as_os_str))
        {
            f(ino, Change::Seen);
        }
    }

    /// The watcher lost events (the kernel's queue overflowed, under a burst of
    /// changes): any source file may have changed unseen, so every log's
    /// point-in-time actions are dropped and the kernel is told to forget every
    /// file's name, attributes and pages. Lookups and opens validate again.
    /// Directories are left alone, as for a change seen (their entries always
    /// reach the view, and dropping a directory's name would detach anything
    /// mounted on it).
    pub fn source_changes_lost(&self) {
        tracing::warn!(
            "the source watcher lost events (its queue overflowed): every cached name and attribute dropped"
        );
        Counters::add(&self.counters.source_changes, 1);
        self.verdicts.forget_all_logs();
        let Some(f) = self.invalidator.get() else {
            return;
        };
        for ino in self.inodes.handed_out() {
            let dir = self.inodes.get(ino).is_ok_and(|(_, k)| match &*k {
                Kind::Src { node, .. } => *node == Node::Dir,
                Kind::Meta(m) => m.is_dir(),
            });
            if !dir {
                f(ino, Change::MaybeMissed);
            }
        }
    }

    /// What `df` shows: the space the data directory's files take (their allocated
    /// blocks, at most what the view serves) and how many entries it holds, none free
    /// (nothing can be written here). A walk of the source's metadata, no segment
    /// read, cached for [`STATFS_FOR`].
    pub fn statfs(&self) -> StatFs {
        let mut cached = self.statfs_cache.lock();
        if let Some((at, st)) = *cached {
            if at.elapsed() < STATFS_FOR {
                return st;
            }
        }
        let src = &self.cfg.source;
        let (mut blocks, mut files) = (0u64, 0u64);
        let mut stack = vec![PathBuf::new()];
        while let Some(dir) = stack.pop() {
            for (name, ft) in src.read_dir(&dir).unwrap_or_default() {
                if is_reserved(&dir, &name) {
                    continue;
                }
                let rel = dir.join(&name);
                files += 1;
                if ft.is_dir() {
                    stack.push(rel);
                } else if ft.is_file() {
                    blocks += src
                        .metadata(&rel)
                        .map_or(0, |m| std::os::unix::fs::MetadataExt::blocks(&m));
                }
            }
        }
        let st = StatFs {
            blocks,
            files,
            bsize: 4096,
            frsize: 512,
        };
        *cached = Some((std::time::Instant::now(), st));
        st
    }

    /// Segments validated so far (each validation counts, re-validations too).
    pub fn validations(&self) -> u64 {
        self.verdicts.validations()
    }

    /// Segment verdicts currently cached, and their estimated bytes.
    pub fn cache_usage(&self) -> (usize, u64) {
        self.verdicts.cache_usage()
    }

    /// The counters behind `metrics.prom`, for the FUSE adapter to bump.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// `.recoverfs/metrics.prom` as of now: validates nothing.
    pub fn metrics_prom(&self) -> Arc<Vec<u8>> {
        self.meta.metrics(&self.verdicts)
    }

    /// The whole-tree report as of now (what `.recoverfs/report.json` holds).
    pub fn report_json(&self) -> Arc<Vec<u8>> {
        self.meta.refresh_report(&self.verdicts)
    }

    // ---- the operations: each one dispatched to the source tree or to `.recoverfs/` ----

    /// Looks `name` up in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        let (_, pkind) = self.inodes.get(parent)?;
        let (child, attr) = match &*pkind {
            Kind::Src {
                rel,
                node: Node::Dir,
            } => {
                if is_reserved(rel, name) && self.no_meta {
                    return Err(ViewError::NotFound);
                } else if is_reserved(rel, name) {
                    let child = Kind::Meta(MetaNode::Root);
                    let attr = self.attr_of(0, &child)?;
                    (child, attr)
                } else {
                    let (node, sv) = tree::lookup(&self.verdicts, rel, name)?;
                    let rel = rel.join(name);
                    let attr = tree::attr(&self.verdicts, 0, &rel, node, sv)?;
                    (Kind::Src { rel, node }, attr)
                }
            }
            Kind::Src { .. } => return Err(ViewError::NotDir),
            Kind::Meta(m) => {
                let child = Kind::Meta(self.meta.lookup(&self.verdicts, m, name)?);
                let attr = self.attr_of(0, &child)?;
                (child, attr)
            }
        };
        let ino = self.inodes.intern(parent, name, child);
        Ok(Attr { ino, ..attr })
    }

    /// Attributes of an inode.
    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let (_, kind) = self.inodes.get(ino)?;
        self.attr_of(ino, &kind)
    }

    fn attr_of(&self, ino: u64, kind: &Kind) -> Result<Attr> {
        match kind {
            Kind::Src { rel, node } => tree::attr(&self.verdicts, ino, rel, *node, None),
            Kind::Meta(m) => self.meta.attr(&self.verdicts, ino, m),
        }
    }

    /// The target of a symlink, never followed.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let (_, kind) = self.inodes.get(ino)?;
        if let Kind::Meta(MetaNode::Replica {
            n,
            rel,
            kind: EntryType::Symlink,
        }) = &*kind
        {
            // A replica's symlink: its text, read through the replica's own door.
            let rep = self
                .verdicts
                .replicas()
                .and_then(|r| r.list.get(n.wrapping_sub(1)))
                .ok_or(ViewError::NotFound)?;
            let t = rep
                .source
                .read_link(rel)
                .map_err(error::source_err(&rep.source.display_path(rel)))?;
            return Ok(t.into_os_string().into_vec());
        }
        let rel = match &*kind {
            Kind::Src {
                rel,
                node: Node::Symlink,
            } => rel,
            Kind::Meta(m) => m.symlink().ok_or(ViewError::NotSymlink)?,
            _ => return Err(ViewError::NotSymlink),
        };
        let source = self.verdicts.source();
        let t = source
            .read_link(rel)
            .map_err(error::source_err(&source.display_path(rel)))?;
        Ok(t.into_os_string().into_vec())
    }

    /// Opens a file for reading; any write access is refused.
    pub fn open(&self, ino: u64, write: bool) -> Result<Opened> {
        if write {
            return Err(ViewError::ReadOnly);
        }
        let (_, kind) = self.inodes.get(ino)?;
        let (v, h) = (&self.verdicts, &self.handles);
        match &*kind {
            Kind::Src { rel, node } => tree::open(v, h, ino, rel, *node),
            Kind::Meta(m) => self.meta.open(v, h, ino, m),
        }
    }

    /// Reads up to `size` bytes at `offset` from an open file.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let n = self.read_into(fh, offset, size, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Like [`View::read`], into `buf[..n]`, returning `n`. `buf` only ever
    /// grows: a reused per-thread buffer avoids allocating (and faulting in) a
    /// fresh megabyte for every read.
    pub fn read_into(&self, fh: u64, offset: u64, size: u32, buf: &mut Vec<u8>) -> Result<usize> {
        self.handles
            .read_into(&self.verdicts, fh, offset, size, buf)
    }

    pub fn release(&self, fh: u64) {
        self.handles.release(fh);
    }

    /// The original behind open file `fh` when its view is the whole original
    /// ([`Opened::whole`]), opened through the source's door: what FUSE
    /// passthrough may serve instead of the daemon.
    pub fn backing_file(&self, fh: u64) -> Option<std::fs::File> {
        self.handles.backing_file(fh)
    }

    /// The source path an inode shows (for messages), if it shows one.
    /// The directory inode and name a source entry was looked up as (for the
    /// kernel to forget the name when the source changes).
    pub fn entry_of(&self, ino: u64) -> Option<(u64, OsString)> {
        let (parent, kind) = self.inodes.get(ino).ok()?;
        match &*kind {
            Kind::Src { rel, .. } => Some((parent, rel.file_name()?.to_os_string())),
            Kind::Meta(_) => None,
        }
    }

    pub fn path_of(&self, ino: u64) -> Option<PathBuf> {
        let (_, kind) = self.inodes.get(ino).ok()?;
        match &*kind {
            Kind::Src { rel, .. } => Some(self.cfg.source.display_path(rel)),
            Kind::Meta(m) => m.source_rel().map(|r| self.cfg.source.display_path(r)),
        }
    }

    /// Lists a directory once, so `readdir` offsets stay stable while it is read.
    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let (parent, kind) = self.inodes.get(ino)?;
        let mut out = vec![
            DirEntry {
                ino,
                kind: EntryType::Dir,
                name: ".".into(),
            },
            DirEntry {
                ino: parent,
                kind: EntryType::Dir,
                name: "..".into(),
            },
        ];
        let mut push = |name: OsString, k: Kind, kind: EntryType| {
            let ino = self.inodes.intern(ino, &name, k);
            out.push(DirEntry { ino, kind, name });
        };
        match &*kind {
            Kind::Src {
                rel,
                node: Node::Dir,
            } => {
                if rel.as_os_str().is_empty() && !self.no_meta {
                    push(META_DIR.into(), Kind::Meta(MetaNode::Root), EntryType::Dir);
                }
                for (name, node) in tree::readdir(&self.verdicts, rel)? {
                    let k = Kind::Src {
                        rel: rel.join(&name),
                        node,
                    };
                    push(name, k, tree::entry_type(node));
                }
            }
            Kind::Src { .. } => return Err(ViewError::NotDir),
            Kind::Meta(m) => {
                for (name, node, t) in self.meta.readdir(&self.verdicts, m)? {
                    push(name, Kind::Meta(node), t);
                }
            }
        }
        Ok(self.handles.open_dir(out))
    }

    /// The entries of an open directory; `readdir` serves them from its offset on.
    pub fn dir_entries(&self, fh: u64) -> Result<Arc<[DirEntry]>> {
        self.handles.dir_entries(fh)
    }

    /// The segment a file of the source tree belongs to: its directory and base offset.
    fn segment_of(&self, ino: u64) -> Result<Option<(PathBuf, u64)>> {
        let (_, kind) = self.inodes.get(ino)?;
        Ok(match &*kind {
            Kind::Src { rel, node } => node.segment().map(|b| (parent_of(rel).into(), b)),
            Kind::Meta(_) => None,
        })
    }

    /// The salvaged run a file of the source tree belongs to: its directory, the
    /// base of the segment it was salvaged from, and its first offset.
    fn run_of(&self, ino: u64) -> Result<Option<(PathBuf, u64, u64)>> {
        let (_, kind) = self.inodes.get(ino)?;
        Ok(match &*kind {
            Kind::Src {
                rel,
                node: Node::Run { base, first, .. },
            } => Some((parent_of(rel).into(), *base, *first)),
            _ => None,
        })
    }

    /// The healed range a file of the source tree belongs to: its directory and first offset.
    fn healed_of(&self, ino: u64) -> Result<Option<(PathBuf, u64)>> {
        let (_, kind) = self.inodes.get(ino)?;
        Ok(match &*kind {
            Kind::Src {
                rel,
                node: Node::Healed { first, .. },
            } => Some((parent_of(rel).into(), *first)),
            _ => None,
        })
    }

    /// The names `listxattr` returns, NUL-terminated: the view's xattrs on segment files, none elsewhere.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        if self.healed_of(ino)?.is_some() {
            return Ok(if self.no_meta {
                Vec::new()
            } else {
                healed::xattr_names()
            });
        }
        if self.run_of(ino)?.is_some() {
            return Ok(runs::xattr_names());
        }
        Ok(match self.segment_of(ino)? {
            Some(_) if !self.no_meta => xattr::names(),
            _ => Vec::new(),
        })
    }

    /// The value of one `user.recoverfs.*` xattr of a segment file: the `.log`'s own,
    /// or an index file's own (its original against the rebuilt one).
    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        if let Some((dir, first)) = self.healed_of(ino)? {
            if self.no_meta {
                return Err(ViewError::NoAttr);
            }
            return healed::xattr_value(&healed::get(&self.verdicts, &dir, first)?, name);
        }
        if let Some((dir, base, first)) = self.run_of(ino)? {
            let sv = self.verdicts.seg_view(&dir, base)?;
            return runs::xattr_value(&sv, &dir, first, name);
        }
        let Some((dir, base)) = self.segment_of(ino)? else {
            return Err(ViewError::NoAttr);
        };
        if self.no_meta {
            return Err(ViewError::NoAttr);
        }
        let sv = self.verdicts.seg_view(&dir, base)?;
        let rel = dir.join(segment_file_name(base, FileKind::Log));
        let (_, kind) = self.inodes.get(ino)?;
        match &*kind {
            Kind::Src {
                node: Node::Index { kind, .. },
                ..
            } => {
                let original = self
                    .verdicts
                    .lstat(&dir.join(segment_file_name(base, *kind)))
                    .ok()
                    .map(|m| m.len());
                xattr::index_value(&sv, &rel, *kind, original, name)
            }
            _ => xattr::value(&sv, &rel, name),
        }
    }
}
