//! The mounted view without FUSE: inodes, lookups, attributes, reads, xattrs, `.recoverfs/`, and the lazy segment cache.
//!
//! Everything the kernel can ask of the mount is answered here, so it can be
//! tested without mounting; `fuse.rs` only translates. The view is lazy: a
//! segment is validated the first time one of its files is looked up, and the
//! verdict lives in a cache bounded in bytes. The source may change while
//! mounted, so every verdict carries the [`FileStamp`] of the `.log` it was
//! computed from, and a verdict whose file no longer has that stamp is thrown
//! away and recomputed before it is used.

use crate::engine::analysis::assemble_log;
use crate::engine::format::takhin::{classify_name, segment_file_name, FileKind, NameMatch};
use crate::engine::layout::{discover, escape_path, read_dir_sorted, LogLayout, SegmentEntry};
use crate::engine::plan::{dir_children, visible_children, Node};
use crate::engine::policy::{visibility, Policy, ViewAction};
use crate::engine::report::{LogReport, Report, SegmentReport};
use crate::engine::scan::{read_rebuilt_index, IndexKind, ScanOptions};
use crate::engine::segment::{analyze_segment, FileStamp, SegmentAnalysis};
use crate::engine::source::open_original;
use crate::view::watch::Watcher;
use lru::LruCache;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Inode number of the mount's root (the data directory).
pub mod fuse;
pub mod watch;

pub const ROOT_INO: u64 = 1;
/// The directory the view adds at its root.
pub use crate::engine::layout::META_DIR;
/// The whole-tree report inside [`META_DIR`].
pub const REPORT_NAME: &str = "report.json";
/// The untouched originals inside [`META_DIR`].
pub const RAW_DIR: &str = "raw";
/// The bytes cut from truncated segments inside [`META_DIR`].
pub const TAILS_DIR: &str = "tails";
/// Suffix appended to a segment's `.log` name in `tails/`.
pub const TAIL_SUFFIX: &str = ".tail";
/// Extended attributes of every segment file, in `listxattr` order.
pub const XATTRS: [&str; 5] = [
    "user.recoverfs.status",
    "user.recoverfs.valid_bytes",
    "user.recoverfs.original_bytes",
    "user.recoverfs.records",
    "user.recoverfs.damage",
];

/// Why a view operation failed. [`ViewError::errno`] is the one mapping to errno.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("no such file or directory")]
    NotFound,
    #[error("the view is read-only")]
    ReadOnly,
    #[error("{path}: refused ({why})")]
    Refused { path: String, why: String },
    #[error("{path}: {err}")]
    Source { path: String, err: io::Error },
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("not a symbolic link")]
    NotSymlink,
    #[error("is a symbolic link")]
    IsSymlink,
    #[error("no such attribute")]
    NoAttr,
    #[error("buffer too small for the attribute")]
    Range,
    #[error("unknown file handle {0}")]
    BadHandle(u64),
    #[error("unknown inode {0}")]
    BadInode(u64),
}

impl ViewError {
    /// The errno the kernel is given for this error.
    pub fn errno(&self) -> i32 {
        match self {
            ViewError::NotFound => libc::ENOENT,
            ViewError::ReadOnly => libc::EROFS,
            ViewError::Refused { .. } => libc::EIO,
            ViewError::Source { err, .. } => match err.kind() {
                io::ErrorKind::NotFound => libc::ENOENT,
                // Anything else from the source is an I/O error to the reader,
                // unless the OS gave a precise code (EACCES, ELOOP, ...).
                _ => err.raw_os_error().unwrap_or(libc::EIO),
            },
            ViewError::NotDir => libc::ENOTDIR,
            ViewError::IsDir => libc::EISDIR,
            ViewError::NotSymlink => libc::EINVAL,
            ViewError::IsSymlink => libc::ELOOP,
            ViewError::NoAttr => libc::ENODATA,
            ViewError::Range => libc::ERANGE,
            ViewError::BadHandle(_) => libc::EBADF,
            ViewError::BadInode(_) => libc::ESTALE,
        }
    }
}

pub type Result<T> = std::result::Result<T, ViewError>;

fn source_err(path: &Path) -> impl FnOnce(io::Error) -> ViewError + '_ {
    move |err| ViewError::Source {
        path: path.display().to_string(),
        err,
    }
}

/// What a view entry is, as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    Dir,
    File,
    Symlink,
}

/// Attributes of a view entry (the kernel's `stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub kind: EntryType,
    /// Permission bits, write bits always cleared.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

impl Attr {
    fn from_meta(ino: u64, kind: EntryType, size: u64, m: &fs::Metadata) -> Attr {
        let t = |s: i64, ns: i64| {
            if s >= 0 {
                UNIX_EPOCH + Duration::new(s as u64, ns as u32)
            } else {
                UNIX_EPOCH - Duration::new(s.unsigned_abs(), 0) + Duration::new(0, ns as u32)
            }
        };
        Attr {
            ino,
            size,
            kind,
            perm: (m.mode() & 0o7777 & !0o222) as u16,
            nlink: if kind == EntryType::Dir { 2 } else { 1 },
            uid: m.uid(),
            gid: m.gid(),
            atime: t(m.atime(), m.atime_nsec()),
            mtime: t(m.mtime(), m.mtime_nsec()),
            ctime: t(m.ctime(), m.ctime_nsec()),
        }
    }
}

/// What an inode stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum InodeKind {
    /// An entry of the repaired tree (the root is `Src { rel: "", node: Dir }`).
    Src { rel: PathBuf, node: Node },
    /// `.recoverfs/`
    Meta,
    /// `.recoverfs/report.json`
    Report,
    /// `.recoverfs/raw/<rel>`: an original, untouched (rel "" is `raw/` itself).
    Raw { rel: PathBuf, kind: EntryType },
    /// `.recoverfs/tails/<rel>/` (rel "" is `tails/` itself).
    Tails { rel: PathBuf },
    /// `.recoverfs/tails/<dir>/<base>.log.tail`
    Tail { dir: PathBuf, base: u64 },
}

struct Inode {
    parent: u64,
    kind: Arc<InodeKind>,
}

/// Inode numbers are handed out once per (parent, name, kind) and never reused
/// while mounted, so they are stable for the life of the mount.
#[derive(Default)]
struct Inodes {
    table: Vec<Inode>,
    by_name: HashMap<(u64, OsString), u64>,
    /// Inode of each source directory, to find a segment's files when it changes.
    dirs: HashMap<PathBuf, u64>,
}

/// One entry of a directory listing as handed to `readdir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: EntryType,
    pub name: OsString,
}

/// What `open` decided about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// The content is what it was at the previous open: the kernel may keep its pages.
    pub keep_cache: bool,
    /// The content is generated per open (the report): bypass the page cache.
    pub direct_io: bool,
}

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

/// Which bytes of a segment a handle serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SegPart {
    Log,
    Index(IndexKind),
    Tail,
}

struct SegHandle {
    /// The `.log` original, read with pread only.
    file: File,
    analysis: Arc<SegmentAnalysis>,
    dir: PathBuf,
    base: u64,
    part: SegPart,
}

enum Handle {
    Segment(RwLock<SegHandle>),
    Plain(File),
    Bytes(Arc<Vec<u8>>),
    Dir(Arc<[DirEntry]>),
}

/// A source directory as last read, valid while its stamp is unchanged.
struct Listing {
    /// Distinguishes successive listings of one directory (for the point-in-time memo).
    generation: u64,
    stamp: FileStamp,
    entries: Vec<(OsString, fs::FileType)>,
    children: BTreeMap<OsString, Node>,
    layout: Option<LogLayout>,
}

/// A cache slot: concurrent lookups of one segment wait on the same `OnceLock`.
#[derive(Default)]
struct Slot {
    cell: OnceLock<Arc<SegmentAnalysis>>,
    weight: AtomicU64,
}

type SegKey = (PathBuf, u64);

/// A log's point-in-time actions and the listing generation they were computed for.
type PitMemo = (u64, Arc<Vec<ViewAction>>);

struct SegCache {
    lru: LruCache<SegKey, Arc<Slot>>,
    bytes: u64,
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

/// The segment's verdict under the view's policy.
struct SegView {
    analysis: Arc<SegmentAnalysis>,
    action: ViewAction,
    is_last: bool,
}

/// Settings of a view.
#[derive(Debug, Clone)]
pub struct ViewConfig {
    /// The data directory.
    pub root: PathBuf,
    /// How the report names the source.
    pub source_label: String,
    pub policy: Policy,
    pub scan: ScanOptions,
    /// Bytes of segment verdicts kept in memory.
    pub cache_bytes: u64,
}

/// Called with an inode whose cached attributes and pages the kernel must drop.
pub type Invalidator = Box<dyn Fn(u64) + Send + Sync>;

/// The repaired tree as a filesystem.
pub struct View {
    cfg: ViewConfig,
    inodes: RwLock<Inodes>,
    listings: Mutex<HashMap<PathBuf, Arc<Listing>>>,
    cache: Mutex<SegCache>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Stamp of each file at its last open, to tell the kernel whether its pages still hold.
    opened: Mutex<HashMap<u64, FileStamp>>,
    report: Mutex<Arc<Vec<u8>>>,
    tails: Mutex<Arc<TailsTree>>,
    validations: AtomicU64,
    invalidator: OnceLock<Invalidator>,
    generations: AtomicU64,
    watcher: OnceLock<Arc<Watcher>>,
    /// Point-in-time actions of every segment of a log, per listing generation;
    /// dropped when one of the log's segments is found changed.
    pit: Mutex<HashMap<PathBuf, PitMemo>>,
}

impl View {
    pub fn new(cfg: ViewConfig) -> View {
        let mut inodes = Inodes::default();
        inodes.table.push(Inode {
            parent: ROOT_INO,
            kind: Arc::new(InodeKind::Src {
                rel: PathBuf::new(),
                node: Node::Dir,
            }),
        });
        inodes.dirs.insert(PathBuf::new(), ROOT_INO);
        View {
            cfg,
            inodes: RwLock::new(inodes),
            listings: Mutex::new(HashMap::new()),
            cache: Mutex::new(SegCache {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            opened: Mutex::new(HashMap::new()),
            report: Mutex::new(Arc::new(Vec::new())),
            tails: Mutex::new(Arc::new(TailsTree::default())),
            validations: AtomicU64::new(0),
            invalidator: OnceLock::new(),
            generations: AtomicU64::new(0),
            watcher: OnceLock::new(),
            pit: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &ViewConfig {
        &self.cfg
    }

    /// Installs what tells the kernel to drop a changed file's cached attributes and pages.
    pub fn set_invalidator(&self, f: Invalidator) {
        let _ = self.invalidator.set(f);
    }

    /// Watches every source directory the view lists, so that a change to a
    /// file reaches the kernel's caches without waiting for a lookup.
    pub fn start_watching(self: &Arc<Self>) -> io::Result<()> {
        let w = Arc::new(Watcher::new(&self.cfg.root)?);
        if self.watcher.set(w.clone()).is_err() {
            return Ok(()); // already watching
        }
        let view = self.clone();
        std::thread::Builder::new()
            .name("recoverfs-watch".into())
            .spawn(move || {
                if let Err(e) = w.run(|dir, name| view.source_changed(dir, name)) {
                    tracing::warn!("watching the source stopped: {e}");
                }
            })?;
        Ok(())
    }

    /// A source file changed: drop what depends on it and tell the kernel.
    pub fn source_changed(&self, dir: &Path, name: &OsStr) {
        match classify_name(name.as_bytes()) {
            NameMatch::Segment(base, _) => {
                self.pit.lock().remove(dir);
                self.invalidate_segment(dir, base);
            }
            _ => {
                let Some(f) = self.invalidator.get() else {
                    return;
                };
                let ino = {
                    let t = self.inodes.read();
                    t.dirs
                        .get(dir)
                        .and_then(|d| t.by_name.get(&(*d, name.to_os_string())).copied())
                };
                if let Some(ino) = ino {
                    f(ino);
                }
            }
        }
    }

    /// Segments validated so far (each validation counts, re-validations too).
    pub fn validations(&self) -> u64 {
        self.validations.load(Ordering::Relaxed)
    }

    /// Segment verdicts currently cached, and their estimated bytes.
    pub fn cache_usage(&self) -> (usize, u64) {
        let c = self.cache.lock();
        (c.lru.len(), c.bytes)
    }

    // ---- inodes ----

    fn intern(&self, parent: u64, name: &OsStr, kind: InodeKind) -> u64 {
        let key = (parent, name.to_os_string());
        {
            let t = self.inodes.read();
            if let Some(&ino) = t.by_name.get(&key) {
                if *t.table[(ino - 1) as usize].kind == kind {
                    return ino;
                }
            }
        }
        let mut t = self.inodes.write();
        if let Some(&ino) = t.by_name.get(&key) {
            if *t.table[(ino - 1) as usize].kind == kind {
                return ino;
            }
        }
        let dir_rel = match &kind {
            InodeKind::Src {
                rel,
                node: Node::Dir,
            } => Some(rel.clone()),
            _ => None,
        };
        t.table.push(Inode {
            parent,
            kind: Arc::new(kind),
        });
        let ino = t.table.len() as u64;
        t.by_name.insert(key, ino);
        if let Some(rel) = dir_rel {
            t.dirs.insert(rel, ino);
        }
        ino
    }

    fn inode(&self, ino: u64) -> Result<(u64, Arc<InodeKind>)> {
        let t = self.inodes.read();
        ino.checked_sub(1)
            .and_then(|i| t.table.get(i as usize))
            .map(|n| (n.parent, n.kind.clone()))
            .ok_or(ViewError::BadInode(ino))
    }

    /// Tells the kernel a segment's files changed (their size and bytes may differ).
    fn invalidate_segment(&self, dir: &Path, base: u64) {
        let Some(f) = self.invalidator.get() else {
            return;
        };
        let inos: Vec<u64> = {
            let t = self.inodes.read();
            let Some(&d) = t.dirs.get(dir) else { return };
            [FileKind::Log, FileKind::Index, FileKind::TimeIndex]
                .iter()
                .filter_map(|k| {
                    t.by_name
                        .get(&(d, OsString::from(segment_file_name(base, *k))))
                        .copied()
                })
                .collect()
        };
        for ino in inos {
            f(ino);
        }
    }

    // ---- source directories and segments ----

    fn listing(&self, rel: &Path) -> Result<Arc<Listing>> {
        let path = self.cfg.root.join(rel);
        let meta = fs::symlink_metadata(&path).map_err(source_err(&path))?;
        if !meta.is_dir() {
            return Err(ViewError::NotDir);
        }
        let stamp = FileStamp::of(&meta);
        if let Some(l) = self.listings.lock().get(rel) {
            if l.stamp == stamp {
                return Ok(l.clone());
            }
        }
        let entries = read_dir_sorted(&path).map_err(source_err(&path))?;
        let (children, layout) = dir_children(rel, &entries);
        let l = Arc::new(Listing {
            generation: self.generations.fetch_add(1, Ordering::Relaxed),
            stamp,
            entries,
            children,
            layout,
        });
        self.listings.lock().insert(rel.to_path_buf(), l.clone());
        if let Some(w) = self.watcher.get() {
            w.watch(rel);
        }
        Ok(l)
    }

    fn validate(&self, layout: &LogLayout, seg: &SegmentEntry) -> SegmentAnalysis {
        let a = analyze_segment(&self.cfg.root, layout, seg, &self.cfg.scan, &|_| {});
        self.validations.fetch_add(1, Ordering::Relaxed);
        let path = escape_path(&layout.file_rel(seg.base, FileKind::Log));
        match &a.scan {
            Ok(s) => match &s.damage {
                None => tracing::info!(
                    "validated {path}: clean, {} records, {} bytes",
                    s.records,
                    s.valid_bytes
                ),
                Some(d) => tracing::info!(
                    "validated {path}: truncated at byte {} ({}), {} records kept, {} bytes cut",
                    d.position,
                    d.kind(),
                    s.records,
                    s.bytes_cut()
                ),
            },
            Err(e) => tracing::warn!("validated {path}: unreadable: {e}"),
        }
        a
    }

    /// The segment's verdict, validated on first use and again whenever its `.log` changed.
    fn analysis(&self, layout: &LogLayout, seg: &SegmentEntry) -> Arc<SegmentAnalysis> {
        let key: SegKey = (layout.rel.clone(), seg.base);
        let path = self.cfg.root.join(layout.file_rel(seg.base, FileKind::Log));
        let mut attempt = 0;
        loop {
            let current = fs::symlink_metadata(&path)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| FileStamp::of(&m));
            let slot = {
                let mut c = self.cache.lock();
                match c.lru.get(&key) {
                    Some(s) => s.clone(),
                    None => {
                        let s = Arc::new(Slot::default());
                        c.lru.put(key.clone(), s.clone());
                        s
                    }
                }
            };
            let mut fresh = false;
            let a = slot
                .cell
                .get_or_init(|| {
                    fresh = true;
                    Arc::new(self.validate(layout, seg))
                })
                .clone();
            if fresh {
                self.account(&key, &slot, weight(&key, &a));
            }
            let up_to_date = match current {
                Some(st) => a.stamp == st,
                None => a.scan.is_err(),
            };
            attempt += 1;
            // A file that keeps changing is served from its latest verdict rather than chased forever.
            if up_to_date || attempt >= 3 {
                return a;
            }
            tracing::info!(
                "{}: changed since it was validated; validating again",
                path.display()
            );
            {
                let mut c = self.cache.lock();
                if c.lru.peek(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    if let Some(s) = c.lru.pop(&key) {
                        c.bytes -= s.weight.load(Ordering::Relaxed);
                    }
                }
            }
            // No kernel invalidation from here: this may run inside a READ of
            // the file, and an invalidation landing while a READ is in flight
            // makes the kernel keep its old size and zero-fill a short reply.
            // Lookups and getattrs carry the new size (the kernel then drops
            // stale pages itself); the source watcher covers open readers.
            self.pit.lock().remove(&layout.rel);
        }
    }

    /// Counts a new verdict's bytes and evicts the least recently used ones beyond the budget.
    fn account(&self, key: &SegKey, slot: &Arc<Slot>, w: u64) {
        let mut c = self.cache.lock();
        if !c.lru.peek(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            return; // already replaced or evicted: not counted
        }
        slot.weight.store(w, Ordering::Relaxed);
        c.bytes += w;
        while c.bytes > self.cfg.cache_bytes && c.lru.len() > 1 {
            match c.lru.pop_lru() {
                Some((_, s)) => c.bytes -= s.weight.load(Ordering::Relaxed),
                None => break,
            }
        }
    }

    /// A segment's verdict under the policy. Under point-in-time a segment's
    /// fate depends on every segment before it, so those are validated too.
    fn seg_view(&self, dir: &Path, base: u64) -> Result<SegView> {
        let listing = self.listing(dir)?;
        let layout = listing.layout.as_ref().ok_or(ViewError::NotFound)?;
        let idx = layout
            .segments
            .iter()
            .position(|s| s.base == base)
            .ok_or(ViewError::NotFound)?;
        // The segment itself is always checked against its source (and validated again if changed).
        let analysis = self.analysis(layout, &layout.segments[idx]);
        let action = if self.cfg.policy == Policy::PointInTime {
            self.pit_actions(&listing, layout)[idx]
        } else {
            let one = [(*analysis).clone()];
            visibility(self.cfg.policy, &one)[0]
        };
        Ok(SegView {
            analysis,
            action,
            is_last: layout.segments.last().map(|s| s.base) == Some(base),
        })
    }

    /// Every segment's action under point-in-time, computed once per listing of
    /// the log (and again whenever one of its segments is found changed), so a
    /// lookup in a log of n segments does not revalidate the n before it.
    fn pit_actions(&self, listing: &Listing, layout: &LogLayout) -> Arc<Vec<ViewAction>> {
        if let Some((generation, acts)) = self.pit.lock().get(&layout.rel) {
            if *generation == listing.generation {
                return acts.clone();
            }
        }
        let analyses: Vec<SegmentAnalysis> = layout
            .segments
            .iter()
            .map(|s| (*self.analysis(layout, s)).clone())
            .collect();
        let acts = Arc::new(visibility(Policy::PointInTime, &analyses));
        self.pit
            .lock()
            .insert(layout.rel.clone(), (listing.generation, acts.clone()));
        acts
    }

    /// The whole log's report (used to list a log under point-in-time).
    fn log_report(&self, layout: &LogLayout) -> LogReport {
        let analyses: Vec<SegmentAnalysis> = layout
            .segments
            .iter()
            .map(|s| (*self.analysis(layout, s)).clone())
            .collect();
        let last = layout.segments.last().map(|s| s.base);
        assemble_log(layout, analyses, self.cfg.policy, |b| Some(b) == last)
    }

    /// Builds the whole-tree report (validating what is not cached) and `tails/` from it.
    fn refresh_report(&self) -> Arc<Vec<u8>> {
        let layout = discover(&self.cfg.root);
        let mut logs = Vec::new();
        let mut tails = TailsTree::default();
        tails.dirs.insert(PathBuf::new(), BTreeMap::new());
        for log in &layout.logs {
            let analyses: Vec<SegmentAnalysis> = log
                .segments
                .iter()
                .map(|s| (*self.analysis(log, s)).clone())
                .collect();
            for a in &analyses {
                if let Ok(s) = &a.scan {
                    if s.bytes_cut() > 0 {
                        add_tail(&mut tails, &log.rel, a.base);
                    }
                }
            }
            let last = log.segments.last().map(|s| s.base);
            logs.push(assemble_log(log, analyses, self.cfg.policy, |b| {
                Some(b) == last
            }));
        }
        let report = Report::new(
            &self.cfg.source_label,
            self.cfg.policy,
            logs,
            layout.problems.clone(),
        );
        let bytes = Arc::new((report.to_json() + "\n").into_bytes());
        *self.report.lock() = bytes.clone();
        *self.tails.lock() = Arc::new(tails);
        bytes
    }

    /// The whole-tree report as of now (what `.recoverfs/report.json` holds).
    pub fn report_json(&self) -> Arc<Vec<u8>> {
        self.refresh_report()
    }

    // ---- the operations ----

    /// Looks `name` up in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        let (_, pkind) = self.inode(parent)?;
        let child = match &*pkind {
            InodeKind::Src {
                rel,
                node: Node::Dir,
            } => {
                if crate::engine::layout::is_reserved(rel, name) {
                    InodeKind::Meta
                } else {
                    let listing = self.listing(rel)?;
                    let node = *listing.children.get(name).ok_or(ViewError::NotFound)?;
                    if let Some(base) = node.segment() {
                        if !self.seg_view(rel, base)?.action.listed() {
                            return Err(ViewError::NotFound);
                        }
                    }
                    InodeKind::Src {
                        rel: rel.join(name),
                        node,
                    }
                }
            }
            InodeKind::Meta => match name.as_bytes() {
                b"report.json" => {
                    self.refresh_report();
                    InodeKind::Report
                }
                b"raw" => InodeKind::Raw {
                    rel: PathBuf::new(),
                    kind: EntryType::Dir,
                },
                b"tails" => {
                    self.refresh_report();
                    InodeKind::Tails {
                        rel: PathBuf::new(),
                    }
                }
                _ => return Err(ViewError::NotFound),
            },
            InodeKind::Raw {
                rel,
                kind: EntryType::Dir,
            } => {
                let listing = self.listing(rel)?;
                let ft = listing
                    .entries
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, ft)| *ft)
                    .ok_or(ViewError::NotFound)?;
                let kind = entry_type(ft).ok_or(ViewError::NotFound)?;
                InodeKind::Raw {
                    rel: rel.join(name),
                    kind,
                }
            }
            InodeKind::Tails { rel } => {
                let tails = self.tails.lock().clone();
                let node = tails
                    .dirs
                    .get(rel)
                    .and_then(|d| d.get(name))
                    .copied()
                    .ok_or(ViewError::NotFound)?;
                match node {
                    TailNode::Dir => InodeKind::Tails {
                        rel: rel.join(name),
                    },
                    TailNode::Tail(base) => InodeKind::Tail {
                        dir: rel.clone(),
                        base,
                    },
                }
            }
            _ => return Err(ViewError::NotDir),
        };
        let attr = self.attr_of(0, &child)?;
        let ino = self.intern(parent, name, child);
        Ok(Attr { ino, ..attr })
    }

    /// Attributes of an inode.
    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let (_, kind) = self.inode(ino)?;
        self.attr_of(ino, &kind)
    }

    fn lstat(&self, rel: &Path) -> Result<fs::Metadata> {
        let path = self.cfg.root.join(rel);
        fs::symlink_metadata(&path).map_err(source_err(&path))
    }

    fn attr_of(&self, ino: u64, kind: &InodeKind) -> Result<Attr> {
        match kind {
            InodeKind::Src { rel, node } => match *node {
                Node::Dir => Ok(Attr::from_meta(ino, EntryType::Dir, 0, &self.lstat(rel)?)),
                Node::File => {
                    let m = self.lstat(rel)?;
                    Ok(Attr::from_meta(ino, EntryType::File, m.len(), &m))
                }
                Node::Symlink => {
                    let m = self.lstat(rel)?;
                    Ok(Attr::from_meta(ino, EntryType::Symlink, m.len(), &m))
                }
                Node::Log { base } => {
                    let dir = parent_of(rel);
                    let m = self.lstat(rel)?;
                    let sv = self.seg_view(dir, base)?;
                    let size = match (&sv.analysis.scan, sv.action.serves()) {
                        (Ok(s), true) => s.valid_bytes,
                        _ => 0,
                    };
                    Ok(Attr::from_meta(ino, EntryType::File, size, &m))
                }
                Node::Index { base, .. } => {
                    let dir = parent_of(rel);
                    let log_rel = dir.join(segment_file_name(base, FileKind::Log));
                    // A rebuilt index whose original is missing takes the `.log`'s times and owner.
                    let m = match self.lstat(rel) {
                        Ok(m) if m.is_file() => m,
                        _ => self.lstat(&log_rel)?,
                    };
                    let sv = self.seg_view(dir, base)?;
                    let size = match (&sv.analysis.scan, sv.action.serves()) {
                        (Ok(s), true) => s.index_bytes(),
                        _ => 0,
                    };
                    Ok(Attr::from_meta(ino, EntryType::File, size, &m))
                }
            },
            InodeKind::Meta => {
                let m = self.lstat(Path::new(""))?;
                Ok(Attr::from_meta(ino, EntryType::Dir, 0, &m))
            }
            InodeKind::Report => {
                let m = self.lstat(Path::new(""))?;
                let mut len = self.report.lock().len() as u64;
                if len == 0 {
                    len = self.refresh_report().len() as u64;
                }
                let mut a = Attr::from_meta(ino, EntryType::File, len, &m);
                a.perm = 0o444;
                Ok(a)
            }
            InodeKind::Raw { rel, kind } => {
                let m = self.lstat(rel)?;
                let now = entry_type(m.file_type()).ok_or(ViewError::NotFound)?;
                if now != *kind {
                    return Err(ViewError::NotFound);
                }
                let size = if *kind == EntryType::Dir { 0 } else { m.len() };
                Ok(Attr::from_meta(ino, *kind, size, &m))
            }
            InodeKind::Tails { rel } => {
                let m = self.lstat(rel)?;
                Ok(Attr::from_meta(ino, EntryType::Dir, 0, &m))
            }
            InodeKind::Tail { dir, base } => {
                let a = self.current_analysis(dir, *base)?;
                let m = self.lstat(&dir.join(segment_file_name(*base, FileKind::Log)))?;
                let cut = a.scan.as_ref().map(|s| s.bytes_cut()).unwrap_or(0);
                if cut == 0 {
                    return Err(ViewError::NotFound);
                }
                Ok(Attr::from_meta(ino, EntryType::File, cut, &m))
            }
        }
    }

    /// The verdict of one segment regardless of policy (for `tails/`).
    fn current_analysis(&self, dir: &Path, base: u64) -> Result<Arc<SegmentAnalysis>> {
        let listing = self.listing(dir)?;
        let layout = listing.layout.as_ref().ok_or(ViewError::NotFound)?;
        let seg = layout
            .segments
            .iter()
            .find(|s| s.base == base)
            .ok_or(ViewError::NotFound)?;
        Ok(self.analysis(layout, seg))
    }

    /// The target of a symlink, never followed.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let (_, kind) = self.inode(ino)?;
        let rel = match &*kind {
            InodeKind::Src {
                rel,
                node: Node::Symlink,
            }
            | InodeKind::Raw {
                rel,
                kind: EntryType::Symlink,
            } => rel,
            _ => return Err(ViewError::NotSymlink),
        };
        let path = self.cfg.root.join(rel);
        let t = fs::read_link(&path).map_err(source_err(&path))?;
        Ok(t.into_os_string().into_vec())
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, Arc::new(h));
        fh
    }

    fn handle(&self, fh: u64) -> Result<Arc<Handle>> {
        self.handles
            .lock()
            .get(&fh)
            .cloned()
            .ok_or(ViewError::BadHandle(fh))
    }

    /// True when the file is unchanged since its previous open (its cached pages still hold).
    fn same_as_last_open(&self, ino: u64, stamp: FileStamp) -> bool {
        self.opened.lock().insert(ino, stamp) == Some(stamp)
    }

    /// Opens a file for reading; any write access is refused.
    pub fn open(&self, ino: u64, write: bool) -> Result<Opened> {
        if write {
            return Err(ViewError::ReadOnly);
        }
        let (_, kind) = self.inode(ino)?;
        let plain = |rel: &Path| -> Result<Opened> {
            let path = self.cfg.root.join(rel);
            let f = open_original(&path).map_err(source_err(&path))?;
            let m = f.metadata().map_err(source_err(&path))?;
            if !m.is_file() {
                return Err(ViewError::NotFound);
            }
            let keep_cache = self.same_as_last_open(ino, FileStamp::of(&m));
            Ok(Opened {
                fh: self.add_handle(Handle::Plain(f)),
                keep_cache,
                direct_io: false,
            })
        };
        match &*kind {
            InodeKind::Src { rel, node } => match *node {
                Node::Dir => Err(ViewError::IsDir),
                Node::Symlink => Err(ViewError::IsSymlink),
                Node::File => plain(rel),
                Node::Log { base } => self.open_segment(ino, parent_of(rel), base, SegPart::Log),
                Node::Index { base, kind } => {
                    let k = match kind {
                        FileKind::TimeIndex => IndexKind::Time,
                        _ => IndexKind::Offset,
                    };
                    self.open_segment(ino, parent_of(rel), base, SegPart::Index(k))
                }
            },
            InodeKind::Raw { rel, kind } => match kind {
                EntryType::File => plain(rel),
                EntryType::Dir => Err(ViewError::IsDir),
                EntryType::Symlink => Err(ViewError::IsSymlink),
            },
            InodeKind::Report => {
                let bytes = self.refresh_report();
                Ok(Opened {
                    fh: self.add_handle(Handle::Bytes(bytes)),
                    keep_cache: false,
                    direct_io: true,
                })
            }
            InodeKind::Tail { dir, base } => self.open_segment(ino, dir, *base, SegPart::Tail),
            InodeKind::Meta | InodeKind::Tails { .. } => Err(ViewError::IsDir),
        }
    }

    /// Opens the `.log` behind a segment file and pins the verdict that matches it.
    fn open_segment(&self, ino: u64, dir: &Path, base: u64, part: SegPart) -> Result<Opened> {
        let (file, analysis) = self.open_validated(dir, base, part)?;
        let keep_cache = self.same_as_last_open(ino, analysis.stamp);
        let h = SegHandle {
            file,
            analysis,
            dir: dir.to_path_buf(),
            base,
            part,
        };
        Ok(Opened {
            fh: self.add_handle(Handle::Segment(RwLock::new(h))),
            keep_cache,
            direct_io: false,
        })
    }

    /// Opens a segment's `.log` and returns it with a verdict computed on exactly that file.
    fn open_validated(
        &self,
        dir: &Path,
        base: u64,
        part: SegPart,
    ) -> Result<(File, Arc<SegmentAnalysis>)> {
        let rel = dir.join(segment_file_name(base, FileKind::Log));
        let path = self.cfg.root.join(&rel);
        let mut tries = 0;
        loop {
            let (analysis, serves) = if part == SegPart::Tail {
                (self.current_analysis(dir, base)?, true)
            } else {
                let sv = self.seg_view(dir, base)?;
                if !sv.action.listed() {
                    return Err(ViewError::NotFound);
                }
                (sv.analysis, sv.action.serves())
            };
            if !serves {
                return Err(ViewError::Refused {
                    path: escape_path(&rel),
                    why: match &analysis.scan {
                        Err(e) => format!("unreadable: {e}"),
                        Ok(_) => format!("damaged, and the policy is {}", self.cfg.policy),
                    },
                });
            }
            if let Err(e) = &analysis.scan {
                return Err(ViewError::Refused {
                    path: escape_path(&rel),
                    why: format!("unreadable: {e}"),
                });
            }
            let file = open_original(&path).map_err(source_err(&path))?;
            let stamp = FileStamp::of(&file.metadata().map_err(source_err(&path))?);
            tries += 1;
            // The file may change between the verdict and the open; retry so the pair matches.
            if stamp == analysis.stamp || tries >= 3 {
                return Ok((file, analysis));
            }
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
        let h = self.handle(fh)?;
        let copy = |bytes: &[u8], buf: &mut Vec<u8>| {
            if buf.len() < bytes.len() {
                buf.resize(bytes.len(), 0);
            }
            buf[..bytes.len()].copy_from_slice(bytes);
            bytes.len()
        };
        match &*h {
            Handle::Plain(f) => pread_into(f, offset, size as u64, u64::MAX, buf),
            Handle::Bytes(b) => {
                let start = (offset.min(b.len() as u64)) as usize;
                let end = (start + size as usize).min(b.len());
                Ok(copy(&b[start..end], buf))
            }
            Handle::Dir(_) => Err(ViewError::IsDir),
            Handle::Segment(lock) => {
                self.refresh_handle(lock, offset, size)?;
                let s = lock.read();
                let scan = match &s.analysis.scan {
                    Ok(scan) => scan.clone(),
                    Err(e) => {
                        return Err(ViewError::Refused {
                            path: format!("segment {}", s.base),
                            why: format!("unreadable: {e}"),
                        })
                    }
                };
                match s.part {
                    // Never past the validated prefix, whatever the file holds now.
                    SegPart::Log => pread_into(&s.file, offset, size as u64, scan.valid_bytes, buf),
                    SegPart::Tail => {
                        let start = scan.valid_bytes.saturating_add(offset);
                        pread_into(&s.file, start, size as u64, scan.original_bytes, buf)
                    }
                    SegPart::Index(kind) => {
                        let b = read_rebuilt_index(&s.file, &scan, kind, offset, size as u64)
                            .map_err(|err| ViewError::Source {
                                path: format!("segment {}", s.base),
                                err,
                            })?;
                        Ok(copy(&b, buf))
                    }
                }
            }
        }
    }

    /// If the file behind a handle changed since its verdict, validates it again
    /// and reopens it, so reads never serve bytes that were not validated.
    ///
    /// One exception keeps a segment that is still being appended to readable
    /// without a rescan per read: when the same file only grew, a read that
    /// stays inside the validated prefix is served from it as is (those bytes
    /// were validated and an append does not move them); a read reaching the
    /// end of the prefix validates again, to see the new records.
    fn refresh_handle(&self, lock: &RwLock<SegHandle>, offset: u64, size: u32) -> Result<()> {
        let stale = |s: &SegHandle| {
            let Ok(m) = s.file.metadata() else {
                return true;
            };
            let (now, then) = (FileStamp::of(&m), s.analysis.stamp);
            if now == then {
                return false;
            }
            let appended = now.ino == then.ino && now.dev == then.dev && now.size > then.size;
            let end = offset.saturating_add(size as u64);
            let within = match (&s.analysis.scan, s.part) {
                (Ok(scan), SegPart::Log) => end < scan.valid_bytes,
                (Ok(scan), SegPart::Index(_)) => end < scan.index_bytes(),
                _ => false,
            };
            !(appended && within)
        };
        if !stale(&lock.read()) {
            return Ok(());
        }
        let mut s = lock.write();
        if !stale(&s) {
            return Ok(()); // another reader refreshed it first
        }
        let (dir, base, part) = (s.dir.clone(), s.base, s.part);
        let (file, analysis) = self.open_validated(&dir, base, part)?;
        s.file = file;
        s.analysis = analysis;
        Ok(())
    }

    pub fn release(&self, fh: u64) {
        self.handles.lock().remove(&fh);
    }

    /// Lists a directory once, so `readdir` offsets stay stable while it is read.
    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let (parent, kind) = self.inode(ino)?;
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
        let mut push = |name: &OsStr, k: InodeKind, t: EntryType| {
            let ino = self.intern(ino, name, k);
            out.push(DirEntry {
                ino,
                kind: t,
                name: name.to_os_string(),
            });
        };
        match &*kind {
            InodeKind::Src {
                rel,
                node: Node::Dir,
            } => {
                if rel.as_os_str().is_empty() {
                    push(OsStr::new(META_DIR), InodeKind::Meta, EntryType::Dir);
                }
                let listing = self.listing(rel)?;
                let children = match (&listing.layout, self.cfg.policy) {
                    (Some(layout), Policy::PointInTime) => {
                        let lr = self.log_report(layout);
                        visible_children(listing.children.clone(), Some(&lr))
                    }
                    // Only point-in-time hides segments; the others list them all unvalidated.
                    _ => listing.children.clone(),
                };
                for (name, node) in children {
                    let t = match node {
                        Node::Dir => EntryType::Dir,
                        Node::Symlink => EntryType::Symlink,
                        _ => EntryType::File,
                    };
                    push(
                        &name,
                        InodeKind::Src {
                            rel: rel.join(&name),
                            node,
                        },
                        t,
                    );
                }
            }
            InodeKind::Meta => {
                push(OsStr::new(REPORT_NAME), InodeKind::Report, EntryType::File);
                push(
                    OsStr::new(RAW_DIR),
                    InodeKind::Raw {
                        rel: PathBuf::new(),
                        kind: EntryType::Dir,
                    },
                    EntryType::Dir,
                );
                push(
                    OsStr::new(TAILS_DIR),
                    InodeKind::Tails {
                        rel: PathBuf::new(),
                    },
                    EntryType::Dir,
                );
            }
            InodeKind::Raw {
                rel,
                kind: EntryType::Dir,
            } => {
                let listing = self.listing(rel)?;
                for (name, ft) in &listing.entries {
                    if let Some(t) = entry_type(*ft) {
                        push(
                            name,
                            InodeKind::Raw {
                                rel: rel.join(name),
                                kind: t,
                            },
                            t,
                        );
                    }
                }
            }
            InodeKind::Tails { rel } => {
                if rel.as_os_str().is_empty() {
                    self.refresh_report();
                }
                let tails = self.tails.lock().clone();
                for (name, node) in tails.dirs.get(rel).into_iter().flatten() {
                    match *node {
                        TailNode::Dir => push(
                            name,
                            InodeKind::Tails {
                                rel: rel.join(name),
                            },
                            EntryType::Dir,
                        ),
                        TailNode::Tail(base) => push(
                            name,
                            InodeKind::Tail {
                                dir: rel.clone(),
                                base,
                            },
                            EntryType::File,
                        ),
                    }
                }
            }
            _ => return Err(ViewError::NotDir),
        }
        Ok(self.add_handle(Handle::Dir(out.into())))
    }

    /// The entries of an open directory; `readdir` serves them from its offset on.
    pub fn dir_entries(&self, fh: u64) -> Result<Arc<[DirEntry]>> {
        match &*self.handle(fh)? {
            Handle::Dir(e) => Ok(e.clone()),
            _ => Err(ViewError::NotDir),
        }
    }

    /// The view's xattrs of a segment file, or `None` for other entries.
    fn segment_of(&self, ino: u64) -> Result<Option<(PathBuf, u64)>> {
        let (_, kind) = self.inode(ino)?;
        Ok(match &*kind {
            InodeKind::Src { rel, node } => node.segment().map(|b| (parent_of(rel).into(), b)),
            _ => None,
        })
    }

    /// The names `listxattr` returns, NUL-terminated.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        if self.segment_of(ino)?.is_some() {
            for n in XATTRS {
                out.extend_from_slice(n.as_bytes());
                out.push(0);
            }
        }
        Ok(out)
    }

    /// The value of one `user.recoverfs.*` xattr of a segment file.
    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        let Some((dir, base)) = self.segment_of(ino)? else {
            return Err(ViewError::NoAttr);
        };
        let sv = self.seg_view(&dir, base)?;
        let rel = dir.join(segment_file_name(base, FileKind::Log));
        let r = SegmentReport::from_analysis(&rel, &sv.analysis, sv.action, sv.is_last);
        let json_str = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let value = match name.as_bytes() {
            b"user.recoverfs.status" => json_str(serde_json::json!(r.status)),
            b"user.recoverfs.valid_bytes" => r.valid_bytes.to_string(),
            b"user.recoverfs.original_bytes" => r.original_bytes.to_string(),
            b"user.recoverfs.records" => r.records.to_string(),
            b"user.recoverfs.damage" => match (&r.damage, &r.error) {
                (Some(d), _) => format!(
                    "{} ({}) at byte {}, record {}: {}",
                    d.kind(),
                    d.class.as_str(),
                    d.position,
                    d.record,
                    d.cause
                ),
                (None, Some(e)) => format!("unreadable: {e}"),
                (None, None) => "none".into(),
            },
            _ => return Err(ViewError::NoAttr),
        };
        Ok(value.into_bytes())
    }
}

fn add_tail(t: &mut TailsTree, log_rel: &Path, base: u64) {
    // Every ancestor directory of the log gets an entry down to it.
    let mut at = PathBuf::new();
    for comp in log_rel.components() {
        let name = comp.as_os_str().to_os_string();
        t.dirs
            .entry(at.clone())
            .or_default()
            .insert(name.clone(), TailNode::Dir);
        at.push(name);
    }
    let mut name = OsString::from(segment_file_name(base, FileKind::Log));
    name.push(TAIL_SUFFIX);
    t.dirs
        .entry(at)
        .or_default()
        .insert(name, TailNode::Tail(base));
}

fn parent_of(rel: &Path) -> &Path {
    rel.parent().unwrap_or(Path::new(""))
}

/// The view shows directories, regular files and symlinks; FIFOs, sockets and devices never.
fn entry_type(ft: fs::FileType) -> Option<EntryType> {
    if ft.is_dir() {
        Some(EntryType::Dir)
    } else if ft.is_file() {
        Some(EntryType::File)
    } else if ft.is_symlink() {
        Some(EntryType::Symlink)
    } else {
        None
    }
}

/// Estimated bytes a cached verdict holds.
fn weight(key: &SegKey, a: &SegmentAnalysis) -> u64 {
    // Heap bytes only: the damage is a plain value inside the scan, counted by its size_of.
    let scan = a
        .scan
        .as_ref()
        .map_or(0, |s| s.checkpoints.len() * std::mem::size_of::<u64>());
    (std::mem::size_of::<SegmentAnalysis>()
        + std::mem::size_of::<crate::engine::scan::SegmentScan>()
        + scan
        + key.0.as_os_str().len()
        + 128) as u64
}

/// Reads `[offset, offset+size)` clamped to `limit` into `buf`, with pread, retrying short reads.
fn pread_into(f: &File, offset: u64, size: u64, limit: u64, buf: &mut Vec<u8>) -> Result<usize> {
    if offset >= limit {
        return Ok(0);
    }
    let want = size.min(limit - offset) as usize;
    if buf.len() < want {
        buf.resize(want, 0);
    }
    let mut got = 0;
    while got < want {
        match f.read_at(&mut buf[got..want], offset + got as u64) {
            Ok(0) => break, // the file shrank: serve what is there, nothing stale
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                return Err(ViewError::Source {
                    path: "source file".into(),
                    err,
                })
            }
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::takhin::SegmentWriter;

    fn write_log(dir: &Path, base: u64, n: u64) -> SegmentWriter {
        let mut w = SegmentWriter::new(base);
        for i in 0..n {
            w.append(1000 + i as i64, b"key", &[i as u8; 20]);
        }
        w.write_to(dir).unwrap();
        w
    }

    fn view(root: &Path, policy: Policy) -> View {
        View::new(ViewConfig {
            root: root.to_path_buf(),
            source_label: root.display().to_string(),
            policy,
            scan: ScanOptions::default(),
            cache_bytes: 1 << 20,
        })
    }

    fn read_all(v: &View, ino: u64) -> Vec<u8> {
        let o = v.open(ino, false).unwrap();
        let mut out = Vec::new();
        loop {
            let b = v.read(o.fh, out.len() as u64, 4096).unwrap();
            if b.is_empty() {
                break;
            }
            out.extend_from_slice(&b);
        }
        v.release(o.fh);
        out
    }

    #[test]
    fn lazy_validation_and_truncated_log() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("t/partition-0");
        fs::create_dir_all(&p).unwrap();
        let w0 = write_log(&p, 0, 10);
        let mut w1 = write_log(&p, 10, 10);
        w1.log.extend_from_slice(&[0, 0, 0, 50, 1, 2]); // torn tail
        fs::write(p.join(segment_file_name(10, FileKind::Log)), &w1.log).unwrap();
        let v = view(t.path(), Policy::PerSegment);
        let tdir = v.lookup(ROOT_INO, OsStr::new("t")).unwrap();
        let pdir = v.lookup(tdir.ino, OsStr::new("partition-0")).unwrap();
        assert_eq!(v.validations(), 0, "listing validates nothing");
        let fh = v.opendir(pdir.ino).unwrap();
        assert_eq!(v.dir_entries(fh).unwrap().len(), 2 + 6);
        assert_eq!(v.validations(), 0);
        let a = v
            .lookup(pdir.ino, OsStr::new("00000000000000000010.log"))
            .unwrap();
        assert_eq!(v.validations(), 1);
        assert_eq!(a.size, w1.log.len() as u64 - 6);
        assert_eq!(a.perm & 0o222, 0);
        assert_eq!(read_all(&v, a.ino), w1.log[..w1.log.len() - 6]);
        let i = v
            .lookup(pdir.ino, OsStr::new("00000000000000000010.index"))
            .unwrap();
        assert_eq!(v.validations(), 1, "the three files share one validation");
        assert_eq!(read_all(&v, i.ino), w1.index);
        let l0 = v
            .lookup(pdir.ino, OsStr::new("00000000000000000000.timeindex"))
            .unwrap();
        assert_eq!(read_all(&v, l0.ino), w0.timeindex);
        assert_eq!(
            v.getxattr(a.ino, OsStr::new("user.recoverfs.status"))
                .unwrap(),
            b"truncated"
        );
        assert!(matches!(
            v.getxattr(tdir.ino, OsStr::new("user.recoverfs.status")),
            Err(ViewError::NoAttr)
        ));
        assert!(matches!(v.open(a.ino, true), Err(ViewError::ReadOnly)));
        // tails/ holds the cut bytes.
        let meta = v.lookup(ROOT_INO, OsStr::new(META_DIR)).unwrap();
        let tails = v.lookup(meta.ino, OsStr::new("tails")).unwrap();
        let t1 = v.lookup(tails.ino, OsStr::new("t")).unwrap();
        let t2 = v.lookup(t1.ino, OsStr::new("partition-0")).unwrap();
        let tail = v
            .lookup(t2.ino, OsStr::new("00000000000000000010.log.tail"))
            .unwrap();
        assert_eq!(read_all(&v, tail.ino), [0, 0, 0, 50, 1, 2]);
    }

    #[test]
    fn concurrent_lookups_validate_once_and_cache_is_bounded() {
        let t = tempfile::tempdir().unwrap();
        for b in 0..20 {
            write_log(t.path(), b * 100, 100);
        }
        let v = View::new(ViewConfig {
            cache_bytes: 1,
            ..view(t.path(), Policy::PerSegment).cfg
        });
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    v.lookup(ROOT_INO, OsStr::new("00000000000000000000.log"))
                        .unwrap()
                });
            }
        });
        assert_eq!(v.validations(), 1);
        for b in 0..20u64 {
            v.lookup(
                ROOT_INO,
                OsStr::new(&segment_file_name(b * 100, FileKind::Log)),
            )
            .unwrap();
        }
        assert_eq!(
            v.cache_usage().0,
            1,
            "a 1-byte budget keeps only the latest"
        );
        let before = v.validations();
        v.lookup(ROOT_INO, OsStr::new("00000000000000000000.log"))
            .unwrap();
        assert_eq!(v.validations(), before + 1, "evicted, so validated again");
    }

    #[test]
    fn changed_source_is_validated_again() {
        let t = tempfile::tempdir().unwrap();
        let mut w = write_log(t.path(), 0, 5);
        let v = view(t.path(), Policy::PerSegment);
        let a = v
            .lookup(ROOT_INO, OsStr::new("00000000000000000000.log"))
            .unwrap();
        let o = v.open(a.ino, false).unwrap();
        w.append(5000, b"k", b"more");
        fs::write(t.path().join("00000000000000000000.log"), &w.log).unwrap();
        let b = v
            .lookup(ROOT_INO, OsStr::new("00000000000000000000.log"))
            .unwrap();
        assert_eq!(b.size, w.log.len() as u64);
        // The old handle follows the change too.
        let got = v.read(o.fh, 0, 1 << 20).unwrap();
        assert_eq!(got, w.log);
        fs::write(t.path().join("00000000000000000000.log"), &w.log[..10]).unwrap();
        assert!(v.read(o.fh, 0, 1 << 20).unwrap().is_empty());
    }

    #[test]
    fn point_in_time_hides_after_damage_until_it_is_repaired() {
        let t = tempfile::tempdir().unwrap();
        write_log(t.path(), 0, 5);
        let w = write_log(t.path(), 5, 5);
        write_log(t.path(), 10, 5);
        let p = t.path().join("00000000000000000005.log");
        fs::write(&p, &w.log[..w.log.len() - 3]).unwrap();
        let v = view(t.path(), Policy::PointInTime);
        let name = OsStr::new("00000000000000000010.log");
        assert!(matches!(v.lookup(ROOT_INO, name), Err(ViewError::NotFound)));
        let fh = v.opendir(ROOT_INO).unwrap();
        assert!(!v.dir_entries(fh).unwrap().iter().any(|e| e.name == name));
        // The damaged segment is rewritten whole: its next lookup sees it, and the log after it reappears.
        fs::write(&p, &w.log).unwrap();
        let a = v
            .lookup(ROOT_INO, OsStr::new("00000000000000000005.log"))
            .unwrap();
        assert_eq!(a.size, w.log.len() as u64);
        assert!(v.lookup(ROOT_INO, name).is_ok());
    }

    #[test]
    fn appends_rescan_only_when_a_read_reaches_the_end() {
        let t = tempfile::tempdir().unwrap();
        let mut w = write_log(t.path(), 0, 50);
        let v = view(t.path(), Policy::PerSegment);
        let a = v
            .lookup(ROOT_INO, OsStr::new("00000000000000000000.log"))
            .unwrap();
        let o = v.open(a.ino, false).unwrap();
        let old = w.log.len();
        w.append(9, b"k", b"appended");
        fs::write(t.path().join("00000000000000000000.log"), &w.log).unwrap();
        let before = v.validations();
        assert_eq!(v.read(o.fh, 0, 100).unwrap(), w.log[..100]);
        assert_eq!(
            v.validations(),
            before,
            "inside the validated prefix: no rescan"
        );
        assert_eq!(v.read(o.fh, 0, 1 << 20).unwrap(), w.log);
        assert_eq!(
            v.validations(),
            before + 1,
            "reaching its end: validated again"
        );
        assert!(w.log.len() > old);
    }

    #[test]
    fn strict_refuses_and_errnos_map() {
        let t = tempfile::tempdir().unwrap();
        let mut w = write_log(t.path(), 0, 5);
        w.log.push(7);
        fs::write(t.path().join("00000000000000000000.log"), &w.log).unwrap();
        let v = view(t.path(), Policy::Strict);
        let a = v
            .lookup(ROOT_INO, OsStr::new("00000000000000000000.log"))
            .unwrap();
        let e = v.open(a.ino, false).unwrap_err();
        assert_eq!(e.errno(), libc::EIO);
        assert_eq!(ViewError::ReadOnly.errno(), libc::EROFS);
        assert_eq!(
            v.lookup(ROOT_INO, OsStr::new("nope")).unwrap_err().errno(),
            libc::ENOENT
        );
        assert!(matches!(
            xattr_reply(b"abc".to_vec(), 2),
            Err(ViewError::Range)
        ));
        assert_eq!(
            xattr_reply(b"abc".to_vec(), 0).unwrap(),
            XattrReply::Size(3)
        );
    }
}
