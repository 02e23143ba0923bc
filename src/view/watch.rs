//! Source change notifications: inotify watches on the source directories the view has listed.
//!
//! Lookups and opens already re-check a file's stamp, but a reader that holds a
//! file open and never looks it up again would be served the kernel's cached
//! pages of a file that has since shrunk. The watcher tells the view as soon as
//! a watched file changes, so the kernel drops those pages and the next read
//! reaches the daemon, which validates again. Watching only reads metadata: it
//! changes nothing in the source, not even access times.
//!
//! `inotify_add_watch` takes a path and follows symlinks, so a directory is
//! never named by its source path (a symlink swapped in along it could point the
//! watch anywhere, our own mount included): it is opened through the
//! [`Source`] door (beneath the root, no symlinks; an `O_PATH` fd) and the watch
//! is added on `/proc/self/fd/N`, the magic link to exactly that directory. Only
//! without `/proc` is the source path used, then with `IN_DONT_FOLLOW |
//! IN_ONLYDIR`, so a final symlink or a non-directory is refused.

use crate::engine::source::Source;
use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What counts as a change: content, size, metadata, and names coming and going.
const MASK: u32 = libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ONLYDIR;

/// An inotify instance and the directories it watches (relative to the source root).
pub struct Watcher {
    fd: OwnedFd,
    source: Arc<Source>,
    dirs: parking_lot::Mutex<(HashMap<i32, PathBuf>, HashSet<PathBuf>)>,
}

impl Watcher {
    pub fn new(source: Arc<Source>) -> io::Result<Watcher> {
        // SAFETY: inotify_init1 takes flags only.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Watcher {
            // SAFETY: fd is a fresh descriptor we own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            source,
            dirs: parking_lot::Mutex::new((HashMap::new(), HashSet::new())),
        })
    }

    /// Watches source directory `rel` (once). Failing to watch (the
    /// inotify limit reached) only loses promptness, never correctness.
    pub fn watch(&self, rel: &Path) {
        let mut d = self.dirs.lock();
        if d.1.contains(rel) {
            return;
        }
        let wd = match self.add_watch(rel) {
            Ok(wd) => wd,
            Err(e) => {
                tracing::debug!("not watching {}: {e}", rel.display());
                return;
            }
        };
        d.0.insert(wd, rel.to_path_buf());
        d.1.insert(rel.to_path_buf());
    }

    /// Adds the watch on the directory `rel` as opened through the source door.
    fn add_watch(&self, rel: &Path) -> io::Result<i32> {
        let dir = self.source.dir_fd(rel)?;
        let add = |path: &Path, mask: u32| -> io::Result<i32> {
            let c = CString::new(path.as_os_str().as_bytes())?;
            // SAFETY: a valid inotify fd and a NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) };
            if wd < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(wd)
            }
        };
        // The magic link is followed on purpose: it is our own fd, opened beneath the root.
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        match add(&by_fd, MASK) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                add(&self.source.display_path(rel), MASK | libc::IN_DONT_FOLLOW)
            }
            r => r,
        }
    }

    /// Blocks reading events and hands each `(directory, name)` to `changed`; returns on error.
    pub fn run(&self, mut changed: impl FnMut(&Path, &OsStr)) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let head = std::mem::size_of::<libc::inotify_event>();
        loop {
            // SAFETY: reading into a buffer of the given length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = n as usize;
            let mut at = 0;
            while at + head <= n {
                // The kernel writes whole events; fields are read unaligned from the byte buffer.
                let wd = i32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
                let mask = u32::from_ne_bytes(buf[at + 4..at + 8].try_into().expect("4 bytes"));
                let len =
                    u32::from_ne_bytes(buf[at + 12..at + 16].try_into().expect("4 bytes")) as usize;
                let name_bytes = &buf[at + head..(at + head + len).min(n)];
                let name = OsStr::from_bytes(
                    &name_bytes[..name_bytes.iter().position(|&b| b == 0).unwrap_or(len)],
                );
                let dir = {
                    let mut d = self.dirs.lock();
                    if mask & libc::IN_IGNORED != 0 {
                        // The directory is gone (or unwatched): forget it, so it can be watched again.
                        if let Some(rel) = d.0.remove(&wd) {
                            d.1.remove(&rel);
                        }
                        None
                    } else {
                        d.0.get(&wd).cloned()
                    }
                };
                if let Some(dir) = dir {
                    if !name.is_empty() {
                        changed(&dir, name);
                    }
                }
                at += head + len;
            }
        }
    }
}
