//! What the front ends need of the operating system: signals, mount points, lazy unmounts, pipes, daemon stdio.

use nix::fcntl::OFlag;
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{dup2_stderr, dup2_stdout, geteuid, pipe2};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The first `bin` on `PATH`, if any.
pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|c| c.is_file())
    })
}

/// True when `path` (canonical) is the mount point of some mount.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read("/proc/self/mountinfo") else {
        return false;
    };
    info.split(|&b| b == b'\n').any(|line| {
        line.split(|&b| b == b' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp) == path.as_os_str().as_bytes())
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
pub fn unescape_mountinfo(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread it starts
/// afterwards, so that one thread can take them with [`wait_signal`] (a signal
/// then never interrupts a FUSE worker mid-reply).
pub fn block_signals() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(sig);
    }
    // Cannot fail for a valid set: the only error is EINVAL for a bad `how`.
    let _ = set.thread_block();
    set
}

/// Waits for one of the blocked signals; returns its name.
pub fn wait_signal(set: &SigSet) -> &'static str {
    set.wait().map_or("unknown", |s| s.as_str())
}

/// Detaches a mount even if it is busy (the fallback when a clean unmount fails).
pub fn lazy_unmount(mountpoint: &Path) -> io::Result<()> {
    umount2(mountpoint, MntFlags::MNT_DETACH).map_err(io::Error::from)
}

/// A pipe (read end, write end), both close-on-exec (the child gets the write end as its stdout/stderr).
pub fn pipe() -> io::Result<(fs::File, fs::File)> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC)?;
    Ok((r.into(), w.into()))
}

/// True when this process runs as root (readahead tuning and `fusermount3`-free mounts need it).
pub fn is_root() -> bool {
    geteuid().is_root()
}

/// Points the daemon's stdout and stderr at /dev/null so the parent sees EOF and returns.
pub fn detach_stdio() {
    if let Ok(null) = fs::OpenOptions::new().write(true).open("/dev/null") {
        // Best effort: a daemon that keeps its pipe only delays the parent's EOF.
        let _ = dup2_stdout(&null);
        let _ = dup2_stderr(&null);
    }
}

/// Stdout's width in columns when it is a terminal.
pub fn stdout_width() -> Option<usize> {
    use std::io::IsTerminal;
    if !io::stdout().is_terminal() {
        return None;
    }
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ on fd 1 only writes a `winsize` into `ws`, which we own.
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

/// True when stdout is a terminal and `NO_COLOR` is unset (or empty): colour then.
pub fn colour_stdout() -> bool {
    use std::io::IsTerminal;
    io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(br"/a\040b"), b"/a b");
        assert_eq!(unescape_mountinfo(br"/x\\"), br"/x\\");
    }
}
