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

    /// Blocks reading events and hands the bytes of each `read` to `events_read`
    /// (for [`Watcher::dispatch`]); returns on error.
    pub fn run(&self, mut events_read: impl FnMut(&[u8])) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
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
            events_read(&buf[..n as usize]);
        }
    }

    /// Hands each `(directory, name)` changed in `buf` (the bytes of one `read`) to
    /// `changed`, and calls `lost` for a queue overflow (the kernel dropped events, so
    /// any watched file may have changed unseen).
    pub fn dispatch(
        &self,
        buf: &[u8],
        mut changed: impl FnMut(&Path, &OsStr),
        mut lost: impl FnMut(),
    ) {
        for e in events(buf) {
            if e.mask & libc::IN_Q_OVERFLOW != 0 {
                lost();
                continue;
            }
            let dir = {
                let mut d = self.dirs.lock();
                if e.mask & libc::IN_IGNORED != 0 {
                    // The directory is gone (or unwatched): forget it, so it can be watched again.
                    if let Some(rel) = d.0.remove(&e.wd) {
                        d.1.remove(&rel);
                    }
                    None
                } else {
                    d.0.get(&e.wd).cloned()
                }
            };
            if let Some(dir) = dir {
                if !e.name.is_empty() {
                    changed(&dir, e.name);
                }
            }
        }
    }
}

/// One inotify event: its watch, what happened, and the name in the watched
/// directory (empty for the directory itself, or for a queue overflow).
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub wd: i32,
    pub mask: u32,
    pub name: &'a OsStr,
}

/// The events in `buf`, the bytes of one `read` of an inotify descriptor. The
/// kernel writes whole events; a cut one at the end (or a name without its NUL
/// padding) is taken as far as it goes, never read past.
pub fn events(buf: &[u8]) -> impl Iterator<Item = Event<'_>> {
    let head = std::mem::size_of::<libc::inotify_event>();
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let fixed = buf.get(at..at.checked_add(head)?)?;
        // Fields are read unaligned from the byte buffer.
        let field = |i: usize| <[u8; 4]>::try_from(&fixed[i..i + 4]).expect("4 bytes");
        let wd = i32::from_ne_bytes(field(0));
        let mask = u32::from_ne_bytes(field(4));
        let len = u32::from_ne_bytes(field(12)) as usize;
        let start = at + head;
        let end = start.saturating_add(len).min(buf.len());
        let name_bytes = &buf[start..end];
        let name = &name_bytes[..name_bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(name_bytes.len())];
        at = end;
        Some(Event {
            wd,
            mask,
            name: OsStr::from_bytes(name),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One event as the kernel writes it: the fixed part, then the name NUL-padded to `len`.
    fn event(wd: i32, mask: u32, name: &[u8], len: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&wd.to_ne_bytes());
        b.extend_from_slice(&mask.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&len.to_ne_bytes());
        let mut n = name.to_vec();
        n.resize(len as usize, 0);
        b.extend_from_slice(&n);
        b
    }

    #[test]
    fn events_are_read_whole_with_their_names_and_the_overflow() {
        let mut buf = event(3, libc::IN_MODIFY, b"00000000000000000000.log", 32);
        buf.extend(event(-1, libc::IN_Q_OVERFLOW, b"", 0));
        buf.extend(event(4, libc::IN_DELETE, b"plain", 16));
        let got: Vec<Event> = events(&buf).collect();
        let want = [
            (3, libc::IN_MODIFY, "00000000000000000000.log"),
            (-1, libc::IN_Q_OVERFLOW, ""),
            (4, libc::IN_DELETE, "plain"),
        ]
        .map(|(wd, mask, name)| Event {
            wd,
            mask,
            name: OsStr::new(name),
        });
        assert_eq!(got, want);
    }

    /// The kernel never cuts an event, but a parser trusts nothing: a cut name (no
    /// NUL left) or a cut fixed part is read as far as it goes, without a panic.
    #[test]
    fn a_cut_buffer_is_read_as_far_as_it_goes() {
        let whole = event(7, libc::IN_CREATE, b"abcdefgh", 8);
        for cut in 0..whole.len() {
            let got: Vec<Event> = events(&whole[..cut]).collect();
            if cut < 16 {
                assert!(got.is_empty(), "{cut} bytes: no whole fixed part");
            } else {
                assert_eq!(got.len(), 1);
                assert_eq!(got[0].name.as_bytes(), &b"abcdefgh"[..cut - 16]);
            }
        }
        // A length far past the buffer, and arbitrary bytes.
        let mut huge = event(7, libc::IN_CREATE, b"x", 1);
        huge[12..16].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(events(&huge).count(), 1);
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..64 {
            let _ = events(&noise[start..]).count();
        }
    }
}
