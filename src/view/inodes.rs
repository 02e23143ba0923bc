//! The inode table (numbers stable for the life of the mount) and what the kernel sees of an entry: type, attributes, directory entries.

use crate::view::error::{Result, ViewError};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Inode number of the mount's root (the data directory).
pub const ROOT_INO: u64 = 1;

/// What a view entry is, as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    Dir,
    File,
    Symlink,
}

/// The view shows directories, regular files and symlinks; FIFOs, sockets and devices never.
pub(crate) fn entry_type(ft: crate::engine::source::EntryType) -> Option<EntryType> {
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
    /// A clean segment `.log` that is not its log's last, shown whole: the file
    /// passthrough serves, whose name the kernel may keep (see the FUSE adapter's TTLs).
    pub sealed: bool,
}

impl Attr {
    pub(crate) fn from_meta(ino: u64, kind: EntryType, size: u64, m: &fs::Metadata) -> Attr {
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
            sealed: false,
        }
    }
}

/// One entry of a directory listing as handed to `readdir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: EntryType,
    pub name: OsString,
}

/// What an inode may stand for: the table only needs to compare kinds and to
/// know which are source directories.
pub(crate) trait InodeKind: PartialEq {
    /// The source directory (relative to the data directory) this inode is, if any.
    fn source_dir(&self) -> Option<&Path>;
}

struct Inode<K> {
    parent: u64,
    kind: Arc<K>,
}

struct Table<K> {
    inodes: Vec<Inode<K>>,
    by_name: HashMap<(u64, OsString), u64>,
    /// Inode of each source directory, to find a segment's files when it changes.
    dirs: HashMap<PathBuf, u64>,
}

/// Inode numbers are handed out once per (parent, name, kind) and never reused
/// while mounted, so they are stable for the life of the mount.
pub(crate) struct Inodes<K> {
    table: RwLock<Table<K>>,
}

impl<K: InodeKind> Inodes<K> {
    /// A table holding only the root, [`ROOT_INO`], which is its own parent.
    pub fn new(root: K) -> Self {
        let mut t = Table {
            inodes: Vec::new(),
            by_name: HashMap::new(),
            dirs: HashMap::new(),
        };
        if let Some(rel) = root.source_dir() {
            t.dirs.insert(rel.to_path_buf(), ROOT_INO);
        }
        t.inodes.push(Inode {
            parent: ROOT_INO,
            kind: Arc::new(root),
        });
        Inodes {
            table: RwLock::new(t),
        }
    }

    /// The inode of `name` in `parent` standing for `kind`, numbered on first sight.
    pub fn intern(&self, parent: u64, name: &OsStr, kind: K) -> u64 {
        let key = (parent, name.to_os_string());
        {
            let t = self.table.read();
            if let Some(&ino) = t.by_name.get(&key) {
                if *t.inodes[(ino - 1) as usize].kind == kind {
                    return ino;
                }
            }
        }
        let mut t = self.table.write();
        if let Some(&ino) = t.by_name.get(&key) {
            if *t.inodes[(ino - 1) as usize].kind == kind {
                return ino;
            }
        }
        let dir_rel = kind.source_dir().map(Path::to_path_buf);
        t.inodes.push(Inode {
            parent,
            kind: Arc::new(kind),
        });
        let ino = t.inodes.len() as u64;
        t.by_name.insert(key, ino);
        if let Some(rel) = dir_rel {
            t.dirs.insert(rel, ino);
        }
        ino
    }

    /// An inode's parent and kind.
    pub fn get(&self, ino: u64) -> Result<(u64, Arc<K>)> {
        let t = self.table.read();
        ino.checked_sub(1)
            .and_then(|i| t.inodes.get(i as usize))
            .map(|n| (n.parent, n.kind.clone()))
            .ok_or(ViewError::BadInode(ino))
    }

    /// Every inode handed out but the root (which never changes identity).
    pub fn handed_out(&self) -> std::ops::RangeInclusive<u64> {
        2..=self.table.read().inodes.len() as u64
    }

    /// The inodes handed out for `names` in the source directory `dir`.
    pub fn in_source_dir<'a>(
        &self,
        dir: &Path,
        names: impl IntoIterator<Item = &'a OsStr>,
    ) -> Vec<u64> {
        let t = self.table.read();
        let Some(&d) = t.dirs.get(dir) else {
            return Vec::new();
        };
        names
            .into_iter()
            .filter_map(|n| t.by_name.get(&(d, n.to_os_string())).copied())
            .collect()
    }
}
