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

/// What a file that is not a regular one is, for an error refusing it as an output.
fn kind_of(ft: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    match () {
        _ if ft.is_symlink() => "a symbolic link",
        _ if ft.is_dir() => "a directory",
        _ if ft.is_fifo() => "a FIFO",
        _ if ft.is_socket() => "a socket",
        _ if ft.is_char_device() || ft.is_block_device() => "a device",
        _ => "not a regular file",
    }
}

/// Refuses an output path (`--html`, `--metrics`) at which something other than a
/// regular file stands: a symlink planted there by whoever controls the directory
/// must not make us write to (or replace) the file it names. A missing path is fine.
pub fn refuse_unsafe_output(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(io::Error::other(
            "is a symbolic link; nothing written through it (remove it, or name the file itself)",
        )),
        Ok(m) if !m.is_file() => Err(io::Error::other(format!(
            "is {}; nothing written (name a regular file)",
            kind_of(m.file_type())
        ))),
        _ => Ok(()),
    }
}

/// Opens a log file for appending (created if missing) without following a
/// symlink at `path`, and refuses anything but a regular file with one name: root
/// appending through a link (or a hard link) planted by another user would write
/// into any file. A FIFO is refused without blocking on its open.
pub fn open_log_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // O_NOFOLLOW's answer for a symlink at the last component.
            Some(libc::ELOOP) => io::Error::other(
                "is a symbolic link; not followed (remove it, or name the file itself)",
            ),
            // O_NONBLOCK's answer for a FIFO nobody reads.
            Some(libc::ENXIO) => io::Error::other("is a FIFO; name a regular file"),
            _ => e,
        })?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(io::Error::other(format!(
            "is {}; name a regular file",
            kind_of(m.file_type())
        )));
    }
    if m.nlink() > 1 {
        return Err(io::Error::other(format!(
            "has {} hard links; not appended to (another name shares this file: give the log a file of its own)",
            m.nlink()
        )));
    }
    // Back to blocking writes (a regular file never blocks, but say what we mean).
    let flags = rustix::fs::fcntl_getfl(&f)?;
    rustix::fs::fcntl_setfl(&f, flags - rustix::fs::OFlags::NONBLOCK)?;
    Ok(f)
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
