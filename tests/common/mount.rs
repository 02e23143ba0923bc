//! A real FUSE mount of the view, owned by a guard that never leaves it behind.
#![allow(dead_code)]

use super::bin;
use recoverfs::cli::sys::is_mount_point;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A mounted view, unmounted and its daemon reaped on drop (even on panic).
pub struct Mounted {
    mp: PathBuf,
    /// The FUSE connection's number (the minor of the mount's st_dev), for fusectl's abort.
    conn: Option<u64>,
    _mp_dir: tempfile::TempDir,
    log_dir: tempfile::TempDir,
    pub child: Option<Child>,
}

impl Mounted {
    /// `recoverfs mount SRC MP --foreground EXTRA...` on a fresh mount point, once mounted.
    pub fn new(src: &Path, extra: &[&str]) -> Mounted {
        Self::new_with(src, extra, |_| {})
    }

    /// Like [`Mounted::new`], with the daemon's command adjusted by `tweak` first.
    pub fn new_with(src: &Path, extra: &[&str], tweak: impl FnOnce(&mut Command)) -> Mounted {
        let mp_dir = tempfile::tempdir().unwrap();
        let mp = fs::canonicalize(mp_dir.path()).unwrap();
        let log_dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("mount")
            .arg(src)
            .arg(&mp)
            .arg("--foreground")
            .arg("--log-file")
            .arg(log_dir.path().join("daemon.log"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        tweak(&mut cmd);
        let child = cmd.spawn().unwrap();
        let mut m = Mounted {
            conn: None,
            mp,
            _mp_dir: mp_dir,
            log_dir,
            child: Some(child),
        };
        // Readiness is polled (never assumed after a delay); the deadline only bounds a hang.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !is_mount_point(&m.mp) {
            if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited ({st}) before mounting:\n{}", m.log());
            }
            assert!(
                Instant::now() < deadline,
                "mount never appeared:\n{}",
                m.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        use std::os::unix::fs::MetadataExt;
        m.conn = fs::metadata(&m.mp)
            .ok()
            .map(|st| libc::minor(st.dev()) as u64);
        m
    }

    /// Aborts the FUSE connection through fusectl (mounting fusectl if it is not),
    /// so that nothing waiting on the mount can hang: every request fails ENOTCONN.
    pub fn abort(&self) {
        let Some(conn) = self.conn else { return };
        let dir = Path::new("/sys/fs/fuse/connections");
        if !dir.join(conn.to_string()).exists() {
            let _ = Command::new("mount")
                .args(["-t", "fusectl", "fusectl"])
                .arg(dir)
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::write(dir.join(conn.to_string()).join("abort"), b"1");
    }

    pub fn path(&self) -> &Path {
        &self.mp
    }

    /// The daemon's log file so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Unmounts with `umount` (not lazily) and returns how the daemon exited.
    ///
    /// Retried briefly: another test thread forking a child holds every open fd of
    /// this process until the child execs, and an fd inside the mount makes it busy.
    pub fn unmount(&mut self) -> ExitStatus {
        let mut tries = 0;
        loop {
            let st = Command::new("umount").arg(&self.mp).status().unwrap();
            if st.success() {
                break;
            }
            tries += 1;
            assert!(tries < 50, "umount failed");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child.take().unwrap().wait().unwrap()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mount_point(&self.mp) {
            // A wedged daemon or a waiting reader must not hang the test run: abort first.
            self.abort();
            let _ = recoverfs::cli::sys::lazy_unmount(&self.mp);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The errno of a failed call (panics if it succeeded).
pub fn errno_of<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    r.expect_err("expected an error")
        .raw_os_error()
        .unwrap_or(-1)
}

/// Runs `f` on its own thread and waits at most `secs` for it: `None` if it is
/// still blocked then (the thread is left behind, freed when the mount is aborted).
pub fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs)).ok()
}

/// The whole file read through a read-only shared mapping.
pub fn mmap_read(p: &Path) -> Vec<u8> {
    let f = std::fs::File::open(p).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    if len == 0 {
        return vec![];
    }
    // SAFETY: a fresh read-only shared mapping of `len` bytes of an open file;
    // checked against MAP_FAILED, copied out, then unmapped.
    unsafe {
        let a = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        );
        assert!(
            a != libc::MAP_FAILED,
            "mmap {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
        let out = std::slice::from_raw_parts(a as *const u8, len).to_vec();
        libc::munmap(a, len);
        out
    }
}
