//! The one door to the source tree: every file, directory, link and attribute is reached through a [`Source`].
//!
//! A `Source` holds a directory fd for the data directory. Every path is opened
//! relative to it with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)`, so a symlink swapped in anywhere along a path (or a
//! `..`) can never lead outside the tree or back into a mount of ours: it is an
//! error (`ELOOP`/`EXDEV`), not a file served. Regular files are opened
//! `O_NONBLOCK` and checked with `fstat` before any read, so a FIFO or device
//! swapped in for a segment never blocks a reader.
//!
//! Where the kernel permits it (root, Linux ≥ 5.12), the root fd is a detached
//! clone of the tree (`open_tree(OPEN_TREE_CLONE)`, recursive only with
//! `--cross-mounts`: by default no walk crosses a mount point, [`Mounts`]) made read-only and
//! noatime with `mount_setattr`: a kernel-enforced write blocker (any write from
//! this process fails with `EROFS`, whatever our code does) that also keeps every
//! atime still, of files, directories and symlinks alike. The clone has no
//! mountpoint, is invisible to other processes and dies with the last fd.
//! Otherwise the root is a plain directory fd and files and directories are opened
//! `O_NOATIME` where permitted; [`Source::access`] says which, for the report.

use nix::errno::Errno;
use nix::fcntl::{openat2, posix_fadvise, OFlag, OpenHow, PosixFadviseAdvice, ResolveFlag};
use nix::sys::stat::{fstatat, SFlag};
use serde::Serialize;
use std::ffi::{CStr, OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// How the source is reached: what the report's `source_access` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SourceAccess {
    /// Through a detached read-only, noatime clone of the tree: writes are
    /// refused by the kernel and no atime moves.
    #[serde(rename = "read-only clone")]
    ReadOnlyClone,
    /// Plain opens, `O_NOATIME` where permitted (the clone was refused).
    #[serde(rename = "O_NOATIME opens")]
    NoatimeOpens,
}

impl SourceAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceAccess::ReadOnlyClone => "read-only clone",
            SourceAccess::NoatimeOpens => "O_NOATIME opens",
        }
    }
}

/// What a directory entry is, from the directory itself (never by following it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryType {
    Dir,
    File,
    Symlink,
    /// FIFO, socket, device: never opened, never shown.
    Other,
}

impl EntryType {
    pub fn is_dir(self) -> bool {
        self == EntryType::Dir
    }
    pub fn is_file(self) -> bool {
        self == EntryType::File
    }
    pub fn is_symlink(self) -> bool {
        self == EntryType::Symlink
    }
    /// The type of a file from its `st_mode`.
    pub fn of_mode(mode: u32) -> Self {
        match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => EntryType::Dir,
            SFlag::S_IFREG => EntryType::File,
            SFlag::S_IFLNK => EntryType::Symlink,
            _ => EntryType::Other,
        }
    }
    /// The type `fs::Metadata` describes.
    pub fn of(meta: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self::of_mode(meta.mode())
    }
}

/// A directory's entries by name (sorted), with their types.
pub type Entries = Vec<(OsString, EntryType)>;

/// Kernel uapi values `libc` does not carry (linux/mount.h, linux/fcntl.h).
mod uapi {
    pub const OPEN_TREE_CLONE: libc::c_uint = 1;
    pub const AT_RECURSIVE: libc::c_uint = 0x8000;
    pub const AT_EMPTY_PATH: libc::c_uint = 0x1000;
    pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
    pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
    pub const MOUNT_ATTR_NODEV: u64 = 0x4;
    pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
    /// The atime field as a whole: cleared before `NOATIME` is set in it.
    pub const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;
    pub const MOUNT_ATTR_NOATIME: u64 = 0x10;

    /// `struct mount_attr`, version 0 (32 bytes).
    #[repr(C)]
    pub struct MountAttr {
        pub attr_set: u64,
        pub attr_clr: u64,
        pub propagation: u64,
        pub userns_fd: u64,
    }
}

/// Whether the source's walks cross into filesystems mounted inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mounts {
    /// Like `find -xdev`: a directory another filesystem is mounted on is left out
    /// (listed nowhere, reached by no path) and recorded as not crossed.
    #[default]
    Stay,
    /// `--cross-mounts`: the filesystems mounted inside the source are part of it, as
    /// they were when it was opened (the clone holds them, recursively).
    Cross,
}

/// The root directory where a recoverfs view keeps its own metadata (`layout::META_DIR`),
/// and its `raw/` (the originals): how a live view mounted inside a source is known.
pub const VIEW_META_DIR: &str = ".recoverfs";
pub const VIEW_RAW_DIR: &str = "raw";

/// The source tree, opened once; every access goes through it.
#[derive(Debug)]
pub struct Source {
    /// The data directory (or its clone's root): the base of every open.
    root: OwnedFd,
    /// The data directory itself (not a clone), where mount points are looked for
    /// (`Mounts::Stay` with a clone only: a non-recursive clone holds none).
    live: Option<OwnedFd>,
    /// The path it was opened from, for messages.
    path: PathBuf,
    access: SourceAccess,
    mounts: Mounts,
    /// The mount points left out so far (`Mounts::Stay`), relative to the root.
    not_crossed: parking_lot::Mutex<std::collections::BTreeSet<PathBuf>>,
}

/// Read-only flags for every open; `O_NOATIME` is added where it is needed and permitted.
fn read_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW
}

/// Paths are resolved beneath the root, through no symlink and no magic link.
fn resolve() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// [`resolve`], and no mount point crossed (`EXDEV` where a path would cross one).
fn resolve_no_xdev() -> ResolveFlag {
    resolve() | ResolveFlag::RESOLVE_NO_XDEV
}

impl Source {
    /// Opens the data directory at `path`, through a read-only noatime clone
    /// where the kernel permits one, else directly.
    ///
    /// With the `fault-injection` feature (tests only), `RECOVERFS_TEST_NO_CLONE`
    /// in the environment refuses the clone, so the tests can run every front
    /// end on the fallback; a default or release build has no such switch.
    pub fn open(path: &Path) -> io::Result<Source> {
        Self::open_with(path, Mounts::Stay)
    }

    /// [`Source::open`], crossing into the filesystems mounted inside the source or not.
    /// Not crossing, the clone is of the source's own mount alone; crossing, of every
    /// mount below it too (as they are now: the clone does not see later ones).
    pub fn open_with(path: &Path, mounts: Mounts) -> io::Result<Source> {
        #[cfg(feature = "fault-injection")]
        if std::env::var_os("RECOVERFS_TEST_NO_CLONE").is_some() {
            return Self::open_without_clone_with(path, mounts);
        }
        match clone_tree(path, mounts == Mounts::Cross) {
            Ok(root) => {
                let live = match mounts {
                    Mounts::Stay => Some(live_root(path)?),
                    Mounts::Cross => None,
                };
                Ok(Source {
                    root,
                    live,
                    path: path.to_path_buf(),
                    access: SourceAccess::ReadOnlyClone,
                    mounts,
                    not_crossed: Default::default(),
                })
            }
            Err(_) => Self::open_without_clone_with(path, mounts),
        }
    }

    /// Opens the data directory with plain opens (no clone): the fallback,
    /// also for callers that must not depend on the clone.
    pub fn open_without_clone(path: &Path) -> io::Result<Source> {
        Self::open_without_clone_with(path, Mounts::Stay)
    }

    fn open_without_clone_with(path: &Path, mounts: Mounts) -> io::Result<Source> {
        let root = File::open(path)?;
        if !root.metadata()?.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        Ok(Source {
            root: root.into(),
            live: None,
            path: path.to_path_buf(),
            access: SourceAccess::NoatimeOpens,
            mounts,
            not_crossed: Default::default(),
        })
    }

    /// Whether walks cross mount points.
    pub fn mounts(&self) -> Mounts {
        self.mounts
    }

    /// The mount points left out so far (`Mounts::Stay`), relative to the root, sorted.
    pub fn not_crossed(&self) -> Vec<PathBuf> {
        self.not_crossed.lock().iter().cloned().collect()
    }

    /// True when `rel` is a mount point, or below one, in the data directory as it is
    /// now, and the source does not cross them: such a path is not part of the source.
    /// Asked of the live tree (a non-recursive clone holds no mount point), by path
    /// beneath its root through no symlink, so nothing is followed out of it.
    pub fn crosses_a_mount(&self, rel: &Path) -> bool {
        if self.mounts == Mounts::Cross || rel.as_os_str().is_empty() {
            return false;
        }
        let Ok(rel) = checked_rel(rel) else {
            return false;
        };
        let base = self.live.as_ref().unwrap_or(&self.root);
        let r = openat2(
            base.as_fd(),
            rel.as_os_str(),
            OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
                .resolve(resolve_no_xdev()),
        );
        matches!(r, Err(Errno::EXDEV))
    }

    /// True when the directory `rel` is the `.recoverfs/` of a live recoverfs view (a
    /// FUSE filesystem whose `.recoverfs/` holds `raw/`): a view of another tree, mounted
    /// inside this one, never one of its logs.
    fn is_live_view_meta(&self, rel: &Path) -> bool {
        let Ok(fd) = self.dir_fd(rel) else {
            return false;
        };
        let fuse = nix::sys::statfs::fstatfs(&fd)
            .is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC);
        fuse && self
            .metadata(&rel.join(VIEW_RAW_DIR))
            .is_ok_and(|m| m.is_dir())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn access(&self) -> SourceAccess {
        self.access
    }

    /// `rel` joined to the source's path, for messages only (never opened).
    pub fn display_path(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    /// Opens `rel` beneath the root with `flags`. `O_NOATIME` is added in the
    /// fallback (the clone is noatime already) and dropped when the kernel
    /// refuses it (EPERM: not our file and no CAP_FOWNER).
    fn openat(&self, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
        let rel = checked_rel(rel)?;
        // Not crossing: no path leads into a filesystem mounted inside the source,
        // whatever the root is (a mount point's own path answers EXDEV, taken as absent).
        let how = match self.mounts {
            Mounts::Stay => resolve_no_xdev(),
            Mounts::Cross => resolve(),
        };
        let open = |flags: OFlag| {
            openat2(
                self.root.as_fd(),
                rel.as_os_str(),
                OpenHow::new().flags(flags).resolve(how),
            )
        };
        let noatime = self.access == SourceAccess::NoatimeOpens && !flags.contains(OFlag::O_PATH);
        let r = if noatime {
            match open(flags | OFlag::O_NOATIME) {
                Err(Errno::EPERM) => open(flags),
                r => r,
            }
        } else {
            open(flags)
        };
        match r {
            Ok(fd) if self.live.is_some() && self.crosses_a_mount(rel) => {
                drop(fd);
                Err(Errno::ENOENT.into())
            }
            Ok(fd) => Ok(fd),
            // Kernels without openat2 (< 5.6): walk one component at a time.
            Err(Errno::ENOSYS) => self.walk_open(rel, flags | OFlag::O_NOFOLLOW),
            Err(Errno::EXDEV) => Err(Errno::ENOENT.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// The fallback for kernels without `openat2`: each component opened with
    /// `O_NOFOLLOW` relative to the previous one, `..` refused.
    fn walk_open(&self, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
        let parts: Vec<&OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let mut dir = nix::unistd::dup(&self.root)?;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let f = if last {
                flags
            } else {
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
            };
            dir = nix::fcntl::openat(&dir, *part, f, nix::sys::stat::Mode::empty())?;
        }
        if parts.is_empty() {
            dir = nix::fcntl::openat(&self.root, ".", flags, nix::sys::stat::Mode::empty())?;
        }
        Ok(dir)
    }

    /// Opens a regular file read-only for reading. Anything else (a directory,
    /// a FIFO, a device, a symlink anywhere on the path) is refused before a
    /// byte is read, and a FIFO is never waited on.
    pub fn file(&self, rel: &Path) -> io::Result<File> {
        let fd = self.openat(rel, read_flags() | OFlag::O_NONBLOCK)?;
        let f = File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(f)
    }

    /// The attributes of `rel` itself (a symlink is described, not followed),
    /// without opening its content.
    pub fn metadata(&self, rel: &Path) -> io::Result<fs::Metadata> {
        let fd = self.openat(rel, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)?;
        File::from(fd).metadata()
    }

    /// The target text of the symlink `rel` (never followed).
    pub fn read_link(&self, rel: &Path) -> io::Result<PathBuf> {
        let fd = self.openat(rel, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)?;
        // An empty path reads the link the O_PATH fd refers to.
        let target = nix::fcntl::readlinkat(&fd, "")?;
        Ok(PathBuf::from(target))
    }

    /// An `O_PATH` fd of the directory `rel` (reached like every other path:
    /// beneath the root, through no symlink), for calls that take a path to a
    /// directory the caller already holds: `/proc/self/fd/N` names exactly it.
    pub fn dir_fd(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.openat(
            rel,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        )
    }

    /// A directory's entries, sorted by name, read from the directory's own fd.
    pub fn read_dir(&self, rel: &Path) -> io::Result<Entries> {
        let fd = self.openat(rel, read_flags() | OFlag::O_DIRECTORY)?;
        let dir_fd = nix::unistd::dup(&fd)?;
        let mut dir = nix::dir::Dir::from_fd(fd)?;
        let mut out = Vec::new();
        for e in dir.iter() {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let ty = match e.file_type() {
                Some(nix::dir::Type::Directory) => EntryType::Dir,
                Some(nix::dir::Type::File) => EntryType::File,
                Some(nix::dir::Type::Symlink) => EntryType::Symlink,
                Some(_) => EntryType::Other,
                // DT_UNKNOWN (some filesystems): ask, never following.
                None => entry_type_at(&dir_fd, e.file_name())?,
            };
            out.push((OsString::from_vec(name.to_vec()), ty));
        }
        // Left out of every walk: the directories another filesystem is mounted on
        // (recorded, for the report), unless crossing; and the `.recoverfs/` of a live
        // recoverfs view mounted in the tree (its `raw/` would pass for damaged logs).
        out.retain(|(name, ty)| {
            if !ty.is_dir() {
                return true;
            }
            let child = rel.join(name);
            if self.crosses_a_mount(&child) {
                self.not_crossed.lock().insert(child);
                return false;
            }
            !(name == VIEW_META_DIR && self.is_live_view_meta(&child))
        });
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// An `O_PATH` fd of the data directory itself, where mount points are seen as they are now.
fn live_root(path: &Path) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    Ok(fd)
}

/// The type of `name` in the directory `dir`, without following it.
fn entry_type_at(dir: &OwnedFd, name: &CStr) -> io::Result<EntryType> {
    let st = fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?;
    Ok(EntryType::of_mode(st.st_mode))
}

/// `rel` as a path `openat2` resolves beneath the root: "." for the root itself;
/// an absolute path is refused here rather than by the kernel, for a clear message.
fn checked_rel(rel: &Path) -> io::Result<&Path> {
    if rel.as_os_str().is_empty() {
        return Ok(Path::new("."));
    }
    if rel.is_absolute() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a path inside the source", rel.display()),
        ));
    }
    Ok(rel)
}

/// A detached, read-only, noatime (also nosuid, nodev, noexec) clone of the tree at
/// `path` (with the mounts below it when `recursive`): the write blocker. Fails where not permitted (not root,
/// an old kernel, a filesystem that refuses), and the caller falls back.
fn clone_tree(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: open_tree reads the NUL-terminated path `c` and returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            uapi::OPEN_TREE_CLONE
                | libc::O_CLOEXEC as libc::c_uint
                | if recursive { uapi::AT_RECURSIVE } else { 0 },
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree succeeded: `fd` is a new descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = uapi::MountAttr {
        attr_set: uapi::MOUNT_ATTR_RDONLY
            | uapi::MOUNT_ATTR_NOATIME
            | uapi::MOUNT_ATTR_NOSUID
            | uapi::MOUNT_ATTR_NODEV
            | uapi::MOUNT_ATTR_NOEXEC,
        attr_clr: uapi::MOUNT_ATTR_ATIME_MASK,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `attr` (its size passed alongside) and the empty
    // path; `fd` is the clone opened above.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            uapi::AT_EMPTY_PATH | uapi::AT_RECURSIVE,
            &attr as *const uapi::MountAttr,
            std::mem::size_of::<uapi::MountAttr>(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Tells the kernel we will read the file front to back, so it reads ahead further.
pub fn advise_sequential(file: &File) {
    // Advice only: failure changes nothing we rely on.
    let _ = posix_fadvise(file, 0, 0, PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("a/b")).unwrap();
        fs::write(t.path().join("a/b/f"), b"data").unwrap();
        std::os::unix::fs::symlink("/etc", t.path().join("a/out")).unwrap();
        std::os::unix::fs::symlink("b", t.path().join("a/in")).unwrap();
        t
    }

    fn sources(t: &tempfile::TempDir) -> Vec<Source> {
        vec![
            Source::open(t.path()).unwrap(),
            Source::open_without_clone(t.path()).unwrap(),
        ]
    }

    #[test]
    fn reads_files_dirs_and_links_beneath_the_root() {
        let t = tree();
        for s in sources(&t) {
            let mut buf = String::new();
            io::Read::read_to_string(&mut s.file(Path::new("a/b/f")).unwrap(), &mut buf).unwrap();
            assert_eq!(buf, "data");
            let names: Vec<_> = s.read_dir(Path::new("a")).unwrap();
            assert_eq!(
                names,
                vec![
                    ("b".into(), EntryType::Dir),
                    ("in".into(), EntryType::Symlink),
                    ("out".into(), EntryType::Symlink)
                ]
            );
            assert_eq!(s.read_link(Path::new("a/out")).unwrap(), Path::new("/etc"));
            assert!(s.metadata(Path::new("a/out")).unwrap().is_symlink());
            assert!(s.metadata(Path::new("")).unwrap().is_dir());
        }
    }

    /// No path leads outside the root or through a symlink, wherever the link is.
    #[test]
    fn symlinks_and_dotdot_never_lead_anywhere() {
        let t = tree();
        for s in sources(&t) {
            for bad in [
                "a/out/passwd",
                "a/in/f",
                "../x",
                "a/../../x",
                "/etc/passwd",
                "a/out",
            ] {
                assert!(s.file(Path::new(bad)).is_err(), "{bad} {:?}", s.access());
            }
            assert!(s.read_dir(Path::new("a/out")).is_err());
            assert!(s.metadata(Path::new("a/in/f")).is_err());
        }
    }

    /// A FIFO in a file's place is refused at once, never waited on.
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let t = tree();
        nix::unistd::mkfifo(
            &t.path().join("a/p"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        for s in sources(&t) {
            let e = s.file(Path::new("a/p")).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            let listed = s.read_dir(Path::new("a")).unwrap();
            assert!(listed.contains(&("p".into(), EntryType::Other)));
        }
    }

    /// The write blocker: through the clone the kernel refuses writes that the
    /// same file allows outside it.
    #[test]
    fn the_clone_refuses_writes() {
        let t = tree();
        let s = Source::open(t.path()).unwrap();
        if s.access() != SourceAccess::ReadOnlyClone {
            // Under CI (root, as .ci/run needs) this is a failure, as in tests/common's
            // `cannot_test`: a skip there would hide the untested write blocker.
            let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"));
            assert!(!ci, "not tested under CI: no clone permitted (not root?)");
            eprintln!("no clone permitted here (not root?): the write blocker is not tested");
            return;
        }
        let w = openat2(
            s.root.as_fd(),
            "a/b/f",
            OpenHow::new()
                .flags(OFlag::O_WRONLY | OFlag::O_CLOEXEC)
                .resolve(resolve()),
        );
        assert_eq!(w.unwrap_err(), Errno::EROFS);
        let mut outside = fs::OpenOptions::new()
            .append(true)
            .open(t.path().join("a/b/f"))
            .unwrap();
        outside.write_all(b"!").unwrap();
        // And the change is visible through the clone.
        assert_eq!(
            s.file(Path::new("a/b/f"))
                .unwrap()
                .metadata()
                .unwrap()
                .len(),
            5
        );
    }
}
