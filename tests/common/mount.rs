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
    _mp_dir: tempfile::TempDir,
    log_dir: tempfile::TempDir,
    pub child: Option<Child>,
}

impl Mounted {
    /// `recoverfs mount SRC MP --foreground EXTRA...` on a fresh mount point, once mounted.
    pub fn new(src: &Path, extra: &[&str]) -> Mounted {
        Self::with_env(src, extra, &[])
    }

    /// Like [`Mounted::new`], with `env` set for the daemon.
    pub fn with_env(src: &Path, extra: &[&str], env: &[(&str, &str)]) -> Mounted {
        let mp_dir = tempfile::tempdir().unwrap();
        let mp = fs::canonicalize(mp_dir.path()).unwrap();
        let log_dir = tempfile::tempdir().unwrap();
        let child = Command::new(bin())
            .arg("mount")
            .arg(src)
            .arg(&mp)
            .arg("--foreground")
            .arg("--log-file")
            .arg(log_dir.path().join("daemon.log"))
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut m = Mounted {
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
        m
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
    pub fn unmount(&mut self) -> ExitStatus {
        let st = Command::new("umount").arg(&self.mp).status().unwrap();
        assert!(st.success(), "umount failed");
        self.child.take().unwrap().wait().unwrap()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mount_point(&self.mp) {
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
