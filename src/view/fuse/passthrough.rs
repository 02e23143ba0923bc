//! FUSE passthrough bookkeeping: whether it is on, one backing id per inode while it is open, and each open's I/O mode.
//!
//! The kernel serves a passthrough file from its backing file to the backing
//! file's own end, so only a file whose view is the whole original is passed
//! through ([`Opened::whole`](crate::view::Opened)), and only when the source is
//! the read-only noatime clone: the kernel reopens the backing file's path with
//! the reader's flags (no `O_NOATIME`), and only the clone's noatime mount keeps
//! the original's atime still then.
//!
//! The kernel allows one backing file per inode at a time, and while an inode
//! has one, every open of it must be passed through to that same backing file
//! (anything else fails with EIO to the reader); a passthrough open of an inode
//! with cached opens fails too. So every open of an inode is counted here by
//! mode: a whole file is passed through unless the inode has cached opens (then
//! it is cached); anything else is cached. While an inode is passed through, a
//! new open reuses its backing file when the view is still the whole of that
//! same file (it only grew, say); otherwise (the file was replaced, or is no
//! longer whole) the open is refused with EBUSY until the passthrough readers
//! close it: serving it would mean serving bytes that were not validated.

use crate::engine::segment::FileStamp;
use fuser::BackingId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// How an open is answered.
#[derive(Debug, Clone)]
pub enum OpenMode {
    /// Served by the kernel from this backing file.
    Passthrough(Arc<BackingId>),
    /// Through the daemon (the usual path).
    Cached,
    /// Refused: the inode is passed through to a file this open's view is not the whole of.
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Passthrough,
    Cached,
}

/// Which file a backing file is: device and inode.
fn identity(f: &File) -> Option<(u64, u64)> {
    let m = f.metadata().ok()?;
    let s = FileStamp::of(&m);
    Some((s.dev, s.ino))
}

/// An inode's open files by mode, and its backing file while any is passed through.
#[derive(Default)]
struct InodeOpens {
    backing: Option<(Arc<BackingId>, (u64, u64))>,
    passthrough: u32,
    cached: u32,
    /// A change of its source was already logged for the current backing file.
    change_logged: bool,
}

#[derive(Default)]
struct State {
    inodes: HashMap<u64, InodeOpens>,
    /// Every open file handle counted here: its inode and mode.
    handles: HashMap<u64, (u64, Mode)>,
}

/// Passthrough for one mount.
pub struct Passthrough {
    /// Asked for (`--passthrough auto`) and safe (the source is the read-only clone).
    wanted: bool,
    /// Granted by the kernel at init and not refused since.
    enabled: AtomicBool,
    state: Mutex<State>,
    /// Opens answered with a backing file, since the mount.
    opens: AtomicU64,
}

impl Passthrough {
    /// `wanted`: asked for and safe; it is enabled once the kernel grants it at init.
    pub fn new(wanted: bool) -> Self {
        Passthrough {
            wanted,
            enabled: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            opens: AtomicU64::new(0),
        }
    }

    pub fn wanted(&self) -> bool {
        self.wanted
    }

    /// The kernel's answer at init.
    pub fn set_granted(&self, granted: bool) {
        self.enabled
            .store(self.wanted && granted, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Opens answered with a backing file so far.
    pub fn opens(&self) -> u64 {
        self.opens.load(Ordering::Relaxed)
    }

    /// Decides how open file `fh` of inode `ino` is served and counts it.
    /// `whole`: its view is the whole original; `backing` gives that original
    /// (opened through the source's door); `register` hands it to the kernel.
    pub fn open(
        &self,
        ino: u64,
        fh: u64,
        whole: bool,
        backing: impl FnOnce() -> Option<File>,
        register: impl FnOnce(&File) -> io::Result<BackingId>,
    ) -> OpenMode {
        let mut st = self.state.lock();
        let e = st.inodes.entry(ino).or_default();
        let file = if whole && (e.backing.is_some() || (self.enabled() && e.cached == 0)) {
            backing()
        } else {
            None
        };
        let id = file.as_ref().and_then(identity);
        let out = match (&e.backing, file, id) {
            // Passed through already: only the same file, still whole, may join.
            (Some((b, was)), Some(_), Some(now)) if *was == now => OpenMode::Passthrough(b.clone()),
            (Some(_), _, _) => OpenMode::Busy,
            (None, Some(file), Some(now)) => match register(&file) {
                Ok(b) => {
                    let b = Arc::new(b);
                    e.backing = Some((b.clone(), now));
                    e.change_logged = false;
                    OpenMode::Passthrough(b)
                }
                Err(err) => {
                    self.refused(&err);
                    OpenMode::Cached
                }
            },
            (None, _, _) => OpenMode::Cached,
        };
        let mode = match out {
            OpenMode::Passthrough(_) => {
                e.passthrough += 1;
                self.opens.fetch_add(1, Ordering::Relaxed);
                Mode::Passthrough
            }
            OpenMode::Cached => {
                e.cached += 1;
                Mode::Cached
            }
            OpenMode::Busy => return out,
        };
        st.handles.insert(fh, (ino, mode));
        out
    }

    /// The kernel refused a backing file: passthrough is off from now on.
    fn refused(&self, err: &io::Error) {
        if self.enabled.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "passthrough off: the kernel refused a backing file ({err}); every read goes through the daemon"
            );
        }
    }

    /// Open file `fh` was closed; the backing file goes with its inode's last passthrough open.
    pub fn release(&self, fh: u64) {
        let mut st = self.state.lock();
        let Some((ino, mode)) = st.handles.remove(&fh) else {
            return;
        };
        let Some(e) = st.inodes.get_mut(&ino) else {
            return;
        };
        match mode {
            Mode::Passthrough => {
                e.passthrough = e.passthrough.saturating_sub(1);
                if e.passthrough == 0 {
                    e.backing = None; // closes the backing id
                }
            }
            Mode::Cached => e.cached = e.cached.saturating_sub(1),
        }
        if e.passthrough == 0 && e.cached == 0 {
            st.inodes.remove(&ino);
        }
    }

    /// True the first time the source of inode `ino` is seen changed while it
    /// is passed through (so the change is logged once per backing file).
    pub fn changed_while_passed_through(&self, ino: u64) -> bool {
        let mut st = self.state.lock();
        match st.inodes.get_mut(&ino) {
            Some(e) if e.backing.is_some() && !e.change_logged => {
                e.change_logged = true;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a_file() -> File {
        File::open(std::env::current_exe().unwrap()).unwrap()
    }

    /// Not asked for, or not granted: every open is cached and nothing is registered.
    #[test]
    fn off_unless_wanted_and_granted() {
        for (wanted, granted) in [(false, true), (true, false), (false, false)] {
            let p = Passthrough::new(wanted);
            p.set_granted(granted);
            assert!(!p.enabled());
            let mode = p.open(1, 10, true, || Some(a_file()), |_| panic!("registered"));
            assert!(matches!(mode, OpenMode::Cached));
            p.release(10);
            assert!(p.state.lock().inodes.is_empty());
        }
    }

    /// A refused backing file turns passthrough off for good; the open is cached.
    #[test]
    fn a_refusal_falls_back_and_turns_it_off() {
        let p = Passthrough::new(true);
        p.set_granted(true);
        let refuse = |_: &File| Err(io::Error::from_raw_os_error(libc::EPERM));
        assert!(matches!(
            p.open(1, 10, true, || Some(a_file()), refuse),
            OpenMode::Cached
        ));
        assert!(!p.enabled());
        assert!(matches!(
            p.open(1, 11, true, || Some(a_file()), |_| panic!("asked again")),
            OpenMode::Cached
        ));
        assert_eq!(p.state.lock().inodes[&1].cached, 2);
        p.release(10);
        p.release(11);
        p.release(12); // unknown: ignored
        assert!(p.state.lock().inodes.is_empty());
        assert_eq!(p.opens(), 0);
    }

    /// A file that is not whole never asks for its backing file.
    #[test]
    fn not_whole_is_cached() {
        let p = Passthrough::new(true);
        p.set_granted(true);
        let mode = p.open(1, 10, false, || panic!("asked"), |_| panic!("registered"));
        assert!(matches!(mode, OpenMode::Cached));
        assert!(!p.changed_while_passed_through(1));
    }
}
