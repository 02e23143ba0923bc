//! A FUSE filesystem for crash tests that forgets, at a simulated power cut, everything not made durable (in the spirit of LazyFS).
//!
//! The tree lives in memory, in two states: the *current* state every system call sees,
//! and the *durable* state a power cut leaves. At rest (unmounted) the durable state is
//! a real directory, the backing directory: a mount loads it, a power cut writes the
//! durable state back into it (names, bytes, modes, owners, times) and mounts it again.
//!
//! The rules (those of LazyFS and of ALICE's strictest "POSIX" model):
//! - a write, a truncate and a change of mode, owner or times change the current state
//!   only; `fsync` of the file makes its bytes and attributes durable (`fdatasync` its
//!   bytes and size only);
//! - a name created, removed or renamed changes the current state of its directory only;
//!   `fsync` of the directory makes all of that directory's entries durable. A file's
//!   `fsync` does not make its name durable, nor a directory's `fsync` its files' bytes:
//!   a file named durably but never synced comes back empty, with the mode it was created
//!   with; a file synced but never named durably is lost;
//! - a rename within one directory is one change of it (atomic, as journaled filesystems
//!   make it); across two directories it is a removal in one and a creation in the other,
//!   each durable with its own directory;
//! - a power cut happens *before* the operation it is armed at (the Nth `fsync` of a file
//!   or directory, rename, write, or any change): that operation and every later one fail
//!   with `EIO`, as on a dead machine; what was durable then is what comes back;
//! - optionally (`Cut::partial`, seeded) a power cut also keeps, of each file's and each
//!   directory's changes not yet synced, a random prefix in the order they were made, as a
//!   disk that wrote some of its cache back may;
//! - injected faults: from the Nth write, `fsync` or rename on, each such operation fails
//!   with the errno given (`ENOSPC`, `EIO`...) and changes nothing, until cleared.
//!
//! Reads never change anything (no atimes), so the kernel's caches need no invalidation:
//! every change comes through here. Attribute and entry caches are off (TTL 0).
#![allow(dead_code)]

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ROOT: u64 = 1;
const TTL: Duration = Duration::ZERO;

/// Mode bits, owner and times of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    perm: u32,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File(Vec<u8>),
    Dir(BTreeMap<OsString, u64>),
    Link(OsString),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: Kind,
    meta: Meta,
}

/// A change made to the current state and not yet durable, in the order it was made.
#[derive(Debug, Clone)]
enum Change {
    Write {
        ino: u64,
        at: u64,
        bytes: Vec<u8>,
    },
    SetLen {
        ino: u64,
        len: u64,
    },
    Meta {
        ino: u64,
        meta: Meta,
    },
    /// Names of one directory set (to an inode) or removed, as one atomic change.
    Entries {
        dir: u64,
        set: Vec<(OsString, Option<u64>)>,
    },
}

impl Change {
    /// The object whose sync makes this change durable: a file's data, or a directory.
    fn object(&self) -> u64 {
        match self {
            Change::Write { ino, .. } | Change::SetLen { ino, .. } | Change::Meta { ino, .. } => {
                *ino
            }
            Change::Entries { dir, .. } => *dir,
        }
    }
}

/// The operations a power cut or a fault can be armed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `fsync`/`fdatasync` of a file or a directory.
    Fsync,
    Rename,
    /// A `write` (or a truncate).
    Write,
    /// For a cut: any change (the above, or a create, mkdir, unlink, rmdir, symlink or
    /// attribute change). For a fault: the latter only.
    Any,
}

/// Where a power cut is armed: before the `nth` (from 1) operation of `op` counted from
/// the arming; with `partial`, the seed that picks what of the unsynced changes survives.
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    pub op: Op,
    pub nth: u64,
    pub partial: Option<u64>,
}

/// From the `nth` (from 1) operation of `op` counted from the arming, each such
/// operation fails with `errno`.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    pub op: Op,
    pub nth: u64,
    pub errno: i32,
}

/// How many operations of each kind the filesystem has served since it was armed last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub fsyncs: u64,
    pub renames: u64,
    pub writes: u64,
    pub any: u64,
}

impl Counts {
    pub fn of(&self, op: Op) -> u64 {
        match op {
            Op::Fsync => self.fsyncs,
            Op::Rename => self.renames,
            Op::Write => self.writes,
            Op::Any => self.any,
        }
    }
}

struct State {
    cur: HashMap<u64, Node>,
    dur: HashMap<u64, Node>,
    /// Each inode as it was created (what a durable name of it gives before its own sync).
    born: HashMap<u64, Node>,
    pending: Vec<Change>,
    next_ino: u64,
    next_fh: u64,
    /// Directory listings taken at `opendir`, so that removing entries while listing
    /// (as `remove_dir_all` does) skips none.
    listings: HashMap<u64, Vec<(u64, FileType, OsString)>>,
    counts: Counts,
    cut: Option<Cut>,
    /// True once the armed power cut happened: the machine is off.
    dead: bool,
    faults: Vec<Fault>,
    /// Changes kept by the partial power cut, for the test's message.
    kept: usize,
}

/// SplitMix64: a small seeded generator, enough to pick what a partial power cut keeps.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl State {
    fn load(backing: &Path) -> State {
        let mut s = State {
            cur: HashMap::new(),
            dur: HashMap::new(),
            born: HashMap::new(),
            pending: vec![],
            next_ino: ROOT + 1,
            next_fh: 1,
            listings: HashMap::new(),
            counts: Counts::default(),
            cut: None,
            dead: false,
            faults: vec![],
            kept: 0,
        };
        s.load_dir(backing, ROOT);
        s.dur = s.cur.clone();
        s.born = s.cur.clone();
        s
    }

    fn meta_of(m: &fs::Metadata) -> Meta {
        let t = |s: i64, ns: i64| {
            if s >= 0 {
                UNIX_EPOCH + Duration::new(s as u64, ns as u32)
            } else {
                UNIX_EPOCH - Duration::from_secs((-s) as u64) + Duration::from_nanos(ns as u64)
            }
        };
        Meta {
            perm: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            atime: t(m.atime(), m.atime_nsec()),
            mtime: t(m.mtime(), m.mtime_nsec()),
            ctime: t(m.ctime(), m.ctime_nsec()),
        }
    }

    fn load_dir(&mut self, path: &Path, ino: u64) {
        let mut entries = BTreeMap::new();
        for e in fs::read_dir(path).unwrap() {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            let child = self.next_ino;
            self.next_ino += 1;
            if m.is_dir() {
                self.load_dir(&e.path(), child);
            } else {
                let kind = if m.file_type().is_symlink() {
                    Kind::Link(fs::read_link(e.path()).unwrap().into_os_string())
                } else if m.is_file() {
                    Kind::File(fs::read(e.path()).unwrap())
                } else {
                    panic!(
                        "{}: only files, directories and symlinks",
                        e.path().display()
                    )
                };
                self.cur.insert(
                    child,
                    Node {
                        kind,
                        meta: Self::meta_of(&m),
                    },
                );
            }
            entries.insert(e.file_name(), child);
        }
        let m = fs::symlink_metadata(path).unwrap();
        self.cur.insert(
            ino,
            Node {
                kind: Kind::Dir(entries),
                meta: Self::meta_of(&m),
            },
        );
    }

    /// Writes the durable state into `backing` (emptied first).
    fn store(&self, backing: &Path) {
        for e in fs::read_dir(backing).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                fs::remove_dir_all(&p).unwrap();
            } else {
                fs::remove_file(&p).unwrap();
            }
        }
        self.store_dir(backing, ROOT);
    }

    fn store_dir(&self, path: &Path, ino: u64) {
        let node = &self.dur[&ino];
        let Kind::Dir(entries) = &node.kind else {
            unreachable!()
        };
        for (name, child) in entries {
            let p = path.join(name);
            let n = &self.dur[child];
            match &n.kind {
                Kind::Dir(_) => {
                    fs::create_dir(&p).unwrap();
                    self.store_dir(&p, *child);
                }
                Kind::File(bytes) => {
                    fs::write(&p, bytes).unwrap();
                    set_meta(&p, &n.meta, false);
                }
                Kind::Link(target) => {
                    std::os::unix::fs::symlink(target, &p).unwrap();
                    set_meta(&p, &n.meta, true);
                }
            }
        }
        set_meta(path, &node.meta, false);
    }

    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.cur.get(&ino).ok_or(Errno::ENOENT)
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match &self.node(dir)?.kind {
            Kind::Dir(e) => Ok(e),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match &mut self.cur.get_mut(&dir).ok_or(Errno::ENOENT)?.kind {
            Kind::Dir(e) => Ok(e),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let n = self.node(ino)?;
        let (kind, size) = match &n.kind {
            Kind::File(b) => (FileType::RegularFile, b.len() as u64),
            Kind::Dir(e) => (FileType::Directory, 4096 + e.len() as u64),
            Kind::Link(t) => (FileType::Symlink, t.len() as u64),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: n.meta.atime,
            mtime: n.meta.mtime,
            ctime: n.meta.ctime,
            crtime: n.meta.ctime,
            kind,
            perm: n.meta.perm as u16,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: n.meta.uid,
            gid: n.meta.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// Counts an operation of `op`, and says whether it may go on: `Err` when the machine
    /// is off (the armed power cut happens here, before it) or a fault is armed for it.
    fn enter(&mut self, op: Op) -> Result<(), Errno> {
        if self.dead {
            return Err(Errno::EIO);
        }
        match op {
            Op::Fsync => self.counts.fsyncs += 1,
            Op::Rename => self.counts.renames += 1,
            Op::Write => self.counts.writes += 1,
            Op::Any => {}
        }
        self.counts.any += 1;
        if let Some(cut) = self.cut {
            if self.counts.of(cut.op) >= cut.nth {
                self.power_off(cut.partial);
                return Err(Errno::EIO);
            }
        }
        for f in &self.faults {
            if f.op == op && self.counts.of(op) >= f.nth {
                return Err(Errno::from_i32(f.errno));
            }
        }
        Ok(())
    }

    /// The machine goes off: what is durable is all that will be left, plus, with a
    /// seed, a random prefix of each object's unsynced changes.
    fn power_off(&mut self, partial: Option<u64>) {
        self.dead = true;
        if let Some(mut seed) = partial {
            let pending = std::mem::take(&mut self.pending);
            let mut total: HashMap<u64, usize> = HashMap::new();
            for c in &pending {
                *total.entry(c.object()).or_default() += 1;
            }
            let mut keep: HashMap<u64, usize> = total
                .iter()
                .map(|(o, n)| (*o, (splitmix(&mut seed) % (*n as u64 + 1)) as usize))
                .collect();
            for c in pending {
                let left = keep.get_mut(&c.object()).unwrap();
                if *left == 0 {
                    continue;
                }
                *left -= 1;
                self.kept += 1;
                self.apply_durably(c);
            }
        }
        self.pending.clear();
    }

    fn durable_node(&mut self, ino: u64) -> &mut Node {
        if !self.dur.contains_key(&ino) {
            let born = self.born[&ino].clone();
            self.dur.insert(ino, born);
        }
        self.dur.get_mut(&ino).unwrap()
    }

    fn apply_durably(&mut self, c: Change) {
        match c {
            Change::Write { ino, at, bytes } => {
                if let Kind::File(b) = &mut self.durable_node(ino).kind {
                    let end = at as usize + bytes.len();
                    if b.len() < end {
                        b.resize(end, 0);
                    }
                    b[at as usize..end].copy_from_slice(&bytes);
                }
            }
            Change::SetLen { ino, len } => {
                if let Kind::File(b) = &mut self.durable_node(ino).kind {
                    b.resize(len as usize, 0);
                }
            }
            Change::Meta { ino, meta } => self.durable_node(ino).meta = meta,
            Change::Entries { dir, set } => {
                for (_, ino) in &set {
                    if let Some(ino) = ino {
                        self.durable_node(*ino);
                    }
                }
                if let Kind::Dir(e) = &mut self.durable_node(dir).kind {
                    for (name, ino) in set {
                        match ino {
                            Some(i) => e.insert(name, i),
                            None => e.remove(&name),
                        };
                    }
                }
            }
        }
    }

    /// After a power cut: the durable state, pruned to what its root reaches, is the
    /// state the machine boots with.
    fn reboot(&mut self) {
        let mut seen = HashSet::new();
        let mut stack = vec![ROOT];
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            if let Kind::Dir(e) = &self.dur[&i].kind {
                stack.extend(e.values().copied());
            }
        }
        self.dur.retain(|i, _| seen.contains(i));
        self.cur = self.dur.clone();
        self.born = self.dur.clone();
        self.pending.clear();
        self.listings.clear();
        self.dead = false;
        self.cut = None;
    }

    /// `fsync`: a file's bytes (and, unless `datasync`, its attributes), or a directory's
    /// entries, become durable.
    fn sync(&mut self, ino: u64, datasync: bool) {
        let cur = self.cur[&ino].clone();
        let is_dir = matches!(cur.kind, Kind::Dir(_));
        let keep_meta = datasync && !is_dir;
        let old_meta = self.durable_node(ino).meta;
        if let Kind::Dir(e) = &cur.kind {
            for child in e.values() {
                self.durable_node(*child);
            }
        }
        let d = self.durable_node(ino);
        d.kind = cur.kind;
        d.meta = if keep_meta { old_meta } else { cur.meta };
        self.pending
            .retain(|c| c.object() != ino || (keep_meta && matches!(c, Change::Meta { .. })));
    }

    fn new_node(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.born.insert(ino, node.clone());
        self.cur.insert(ino, node);
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.touch_dir(parent);
        self.pending.push(Change::Entries {
            dir: parent,
            set: vec![(name.to_owned(), Some(ino))],
        });
        Ok(ino)
    }

    fn touch_dir(&mut self, dir: u64) {
        let now = SystemTime::now();
        if let Some(n) = self.cur.get_mut(&dir) {
            n.meta.mtime = now;
            n.meta.ctime = now;
        }
    }

    fn fresh_meta(req: &Request, mode: u32, umask: u32) -> Meta {
        let now = SystemTime::now();
        Meta {
            perm: mode & !umask & 0o7777,
            uid: req.uid(),
            gid: req.gid(),
            atime: now,
            mtime: now,
            ctime: now,
        }
    }
}

fn set_meta(p: &Path, m: &Meta, link: bool) {
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
    let flags = if link {
        AtFlags::SYMLINK_NOFOLLOW
    } else {
        AtFlags::empty()
    };
    if link {
        std::os::unix::fs::lchown(p, Some(m.uid), Some(m.gid)).unwrap();
    } else {
        std::os::unix::fs::chown(p, Some(m.uid), Some(m.gid)).unwrap();
    }
    if !link {
        fs::set_permissions(p, fs::Permissions::from_mode(m.perm)).unwrap();
    }
    let ts = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: d.subsec_nanos() as _,
        },
        Err(e) => {
            let d = e.duration();
            let (s, ns) = (d.as_secs() as i64, d.subsec_nanos() as i64);
            if ns == 0 {
                Timespec {
                    tv_sec: -s,
                    tv_nsec: 0,
                }
            } else {
                Timespec {
                    tv_sec: -s - 1,
                    tv_nsec: (1_000_000_000 - ns) as _,
                }
            }
        }
    };
    let times = Timestamps {
        last_access: ts(m.atime),
        last_modification: ts(m.mtime),
    };
    rustix::fs::utimensat(CWD, p, &times, flags).unwrap();
}

/// The FUSE side: every request goes to the shared [`State`].
struct Fs(Arc<Mutex<State>>);

impl Fs {
    fn st(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry(&self, ino: Result<u64, Errno>, reply: ReplyEntry) {
        let s = self.st();
        match ino.and_then(|i| s.attr(i)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = {
            let s = self.st();
            s.entries(parent.0)
                .and_then(|e| e.get(name).copied().ok_or(Errno::ENOENT))
        };
        self.entry(ino, reply)
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.st().attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.st();
        let ino = ino.0;
        let r = (|| {
            s.node(ino)?;
            let now = SystemTime::now();
            if let Some(len) = size {
                s.enter(Op::Write)?;
                let Kind::File(b) = &mut s.cur.get_mut(&ino).unwrap().kind else {
                    return Err(Errno::EISDIR);
                };
                b.resize(len as usize, 0);
                let n = s.cur.get_mut(&ino).unwrap();
                n.meta.mtime = now;
                n.meta.ctime = now;
                s.pending.push(Change::SetLen { ino, len });
            }
            if mode.is_some()
                || uid.is_some()
                || gid.is_some()
                || atime.is_some()
                || mtime.is_some()
            {
                s.enter(Op::Any)?;
                let t = |t: TimeOrNow| match t {
                    TimeOrNow::SpecificTime(t) => t,
                    TimeOrNow::Now => now,
                };
                let n = s.cur.get_mut(&ino).unwrap();
                let m = &mut n.meta;
                if let Some(mode) = mode {
                    m.perm = mode & 0o7777;
                }
                if let Some(uid) = uid {
                    m.uid = uid;
                }
                if let Some(gid) = gid {
                    m.gid = gid;
                }
                if let Some(a) = atime {
                    m.atime = t(a);
                }
                if let Some(x) = mtime {
                    m.mtime = t(x);
                }
                m.ctime = now;
                let meta = *m;
                s.pending.push(Change::Meta { ino, meta });
            }
            s.attr(ino)
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.st().node(ino.0).map(|n| n.kind.clone()) {
            Ok(Kind::Link(t)) => reply.data(t.as_bytes()),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let ino = {
            let mut s = self.st();
            s.enter(Op::Any).and_then(|()| {
                let node = Node {
                    kind: Kind::File(vec![]),
                    meta: State::fresh_meta(req, mode, umask),
                };
                s.new_node(parent.0, name, node)
            })
        };
        self.entry(ino, reply)
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let ino = {
            let mut s = self.st();
            s.enter(Op::Any).and_then(|()| {
                let node = Node {
                    kind: Kind::Dir(BTreeMap::new()),
                    meta: State::fresh_meta(req, mode, umask),
                };
                s.new_node(parent.0, name, node)
            })
        };
        self.entry(ino, reply)
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent.0, name, false, reply)
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent.0, name, true, reply)
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let ino = {
            let mut s = self.st();
            s.enter(Op::Any).and_then(|()| {
                let node = Node {
                    kind: Kind::Link(target.as_os_str().to_owned()),
                    meta: State::fresh_meta(req, 0o777, 0),
                };
                s.new_node(parent.0, link_name, node)
            })
        };
        self.entry(ino, reply)
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = self.st();
        let r = (|| {
            s.enter(Op::Rename)?;
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                return Err(Errno::EINVAL);
            }
            let (from, to) = (parent.0, newparent.0);
            let ino = *s.entries(from)?.get(name).ok_or(Errno::ENOENT)?;
            if let Some(&old) = s.entries(to)?.get(newname) {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                if old == ino {
                    return Ok(());
                }
                let src_dir = matches!(s.node(ino)?.kind, Kind::Dir(_));
                match &s.node(old)?.kind {
                    Kind::Dir(e) if !e.is_empty() => return Err(Errno::ENOTEMPTY),
                    Kind::Dir(_) if !src_dir => return Err(Errno::EISDIR),
                    Kind::File(_) | Kind::Link(_) if src_dir => return Err(Errno::ENOTDIR),
                    _ => {}
                }
            }
            s.entries_mut(from)?.remove(name);
            s.entries_mut(to)?.insert(newname.to_owned(), ino);
            s.touch_dir(from);
            s.touch_dir(to);
            if from == to {
                s.pending.push(Change::Entries {
                    dir: from,
                    set: vec![(name.to_owned(), None), (newname.to_owned(), Some(ino))],
                });
            } else {
                s.pending.push(Change::Entries {
                    dir: to,
                    set: vec![(newname.to_owned(), Some(ino))],
                });
                s.pending.push(Change::Entries {
                    dir: from,
                    set: vec![(name.to_owned(), None)],
                });
            }
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.st();
        let r = (|| {
            s.node(ino.0)?;
            if flags.0 & libc::O_TRUNC != 0 {
                s.enter(Op::Write)?;
                if let Kind::File(b) = &mut s.cur.get_mut(&ino.0).unwrap().kind {
                    b.clear();
                }
                s.pending.push(Change::SetLen { ino: ino.0, len: 0 });
            }
            Ok(())
        })();
        match r {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = self.st();
        if s.dead {
            return reply.error(Errno::EIO);
        }
        match s.node(ino.0).map(|n| &n.kind) {
            Ok(Kind::File(b)) => {
                let from = (offset as usize).min(b.len());
                let to = from.saturating_add(size as usize).min(b.len());
                reply.data(&b[from..to])
            }
            Ok(_) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.st();
        let r = (|| {
            s.node(ino.0)?;
            s.enter(Op::Write)?;
            let now = SystemTime::now();
            let n = s.cur.get_mut(&ino.0).unwrap();
            let Kind::File(b) = &mut n.kind else {
                return Err(Errno::EISDIR);
            };
            let end = offset as usize + data.len();
            if b.len() < end {
                b.resize(end, 0);
            }
            b[offset as usize..end].copy_from_slice(data);
            n.meta.mtime = now;
            n.meta.ctime = now;
            s.pending.push(Change::Write {
                ino: ino.0,
                at: offset,
                bytes: data.to_vec(),
            });
            Ok(())
        })();
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino.0, datasync, reply)
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.st();
        let listing = match s.entries(ino.0) {
            Ok(e) => e.clone(),
            Err(e) => return reply.error(e),
        };
        let mut list = vec![
            (ino.0, FileType::Directory, OsString::from(".")),
            (ino.0, FileType::Directory, OsString::from("..")),
        ];
        for (name, child) in listing {
            let kind = s
                .attr(child)
                .map(|a| a.kind)
                .unwrap_or(FileType::RegularFile);
            list.push((child, kind, name));
        }
        let fh = s.next_fh;
        s.next_fh += 1;
        s.listings.insert(fh, list);
        reply.opened(FileHandle(fh), FopenFlags::empty())
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = self.st();
        let Some(list) = s.listings.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.st().listings.remove(&fh.0);
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino.0, datasync, reply)
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 20, 1 << 19, 1 << 19, 1 << 20, 1 << 19, 4096, 255, 4096)
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.st();
        let r = s.enter(Op::Any).and_then(|()| {
            let node = Node {
                kind: Kind::File(vec![]),
                meta: State::fresh_meta(req, mode, umask),
            };
            let ino = s.new_node(parent.0, name, node)?;
            s.attr(ino)
        });
        match r {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }
}

impl Fs {
    fn remove(&self, parent: u64, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        let mut s = self.st();
        let r = (|| {
            s.enter(Op::Any)?;
            let ino = *s.entries(parent)?.get(name).ok_or(Errno::ENOENT)?;
            match (&s.node(ino)?.kind, dir) {
                (Kind::Dir(e), true) if !e.is_empty() => return Err(Errno::ENOTEMPTY),
                (Kind::Dir(_), false) => return Err(Errno::EISDIR),
                (Kind::File(_) | Kind::Link(_), true) => return Err(Errno::ENOTDIR),
                _ => {}
            }
            s.entries_mut(parent)?.remove(name);
            s.touch_dir(parent);
            s.pending.push(Change::Entries {
                dir: parent,
                set: vec![(name.to_owned(), None)],
            });
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn sync(&self, ino: u64, datasync: bool, reply: ReplyEmpty) {
        let mut s = self.st();
        let r = s.node(ino).map(|_| ()).and_then(|()| s.enter(Op::Fsync));
        match r {
            Ok(()) => {
                s.sync(ino, datasync);
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }
}

/// A mounted [`Fs`] over a backing directory, unmounted on drop (even on panic).
pub struct PowerFs {
    state: Arc<Mutex<State>>,
    backing: PathBuf,
    mp: PathBuf,
    _mp_dir: tempfile::TempDir,
    session: Option<fuser::BackgroundSession>,
}

impl PowerFs {
    /// Mounts the tree of `backing` (all of it durable) on a fresh mount point.
    pub fn mount(backing: &Path) -> PowerFs {
        let mp_dir = tempfile::tempdir().unwrap();
        let mp = fs::canonicalize(mp_dir.path()).unwrap();
        let mut p = PowerFs {
            state: Arc::new(Mutex::new(State::load(backing))),
            backing: backing.to_path_buf(),
            mp,
            _mp_dir: mp_dir,
            session: None,
        };
        p.start();
        p
    }

    fn start(&mut self) {
        let mut cfg = Config::default();
        cfg.mount_options = vec![
            MountOption::FSName("powerfs".into()),
            MountOption::DefaultPermissions,
            MountOption::NoDev,
            MountOption::NoSuid,
        ];
        let fs = Fs(self.state.clone());
        self.session = Some(fuser::spawn_mount(fs, &self.mp, &cfg).unwrap());
        // Session::new mounted it: requests wait for the session's thread from here on.
    }

    /// Unmounts and waits for the session to end. A child another test thread forks holds
    /// a copy of every open fd until it execs, so the mount can be busy for a moment: the
    /// unmount is tried again, and after 10 s done lazily (the mount point is free at once).
    fn stop(&mut self) -> Result<(), String> {
        use nix::mount::{umount2, MntFlags};
        let Some(s) = self.session.take() else {
            return Ok(());
        };
        for i in 0.. {
            match umount2(&self.mp, MntFlags::empty()) {
                Err(nix::errno::Errno::EBUSY) if i < 500 => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(nix::errno::Errno::EBUSY) => {
                    umount2(&self.mp, MntFlags::MNT_DETACH)
                        .map_err(|e| format!("{}: could not unmount: {e}", self.mp.display()))?;
                    break;
                }
                Err(e) => return Err(format!("{}: could not unmount: {e}", self.mp.display())),
                Ok(()) => break,
            }
        }
        // Unmounted here: fuser only ends its session. It may still see the connection up
        // for a moment and try to unmount the (now free) mount point, which fails harmlessly.
        let _ = s.umount_and_join();
        Ok(())
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mp
    }

    /// The backing directory: the durable state, once unmounted or after a power cut.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms a power cut (the counts start again from 0).
    pub fn arm(&self, cut: Cut) {
        let mut s = self.st();
        s.counts = Counts::default();
        s.cut = Some(cut);
        s.kept = 0;
    }

    /// Arms a fault (the counts start again from 0); earlier faults stay armed.
    pub fn inject(&self, fault: Fault) {
        let mut s = self.st();
        s.counts = Counts::default();
        s.faults.push(fault);
    }

    /// Clears every fault and the counts.
    pub fn clear_faults(&self) {
        let mut s = self.st();
        s.faults.clear();
        s.counts = Counts::default();
    }

    /// The operations served since the last arming.
    pub fn counts(&self) -> Counts {
        self.st().counts
    }

    /// True once the armed power cut happened.
    pub fn cut_happened(&self) -> bool {
        self.st().dead
    }

    /// How many unsynced changes the last partial power cut kept.
    pub fn kept(&self) -> usize {
        self.st().kept
    }

    /// Cuts the power (now, unless an armed cut already did): unmounts, writes the
    /// durable state to the backing directory, and mounts it again at the same path.
    pub fn power_cut(&mut self) {
        {
            let mut s = self.st();
            if !s.dead {
                s.power_off(None);
            }
        }
        self.stop().unwrap();
        {
            let mut s = self.st();
            s.reboot();
            s.counts = Counts::default();
            s.store(&self.backing);
        }
        self.start();
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("{e}");
        }
    }
}
