//! Read-only access to original files: opened without write access and, where permitted, without touching atime.

use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens an original file read-only with `O_NOATIME` (so even its access time
/// stays put), falling back to a plain read-only open where the kernel refuses
/// `O_NOATIME` (EPERM: we do not own the file and lack CAP_FOWNER). Never
/// follows a symlink at the last component: a symlink is not ours to read.
pub fn open_original(path: &Path) -> io::Result<File> {
    let open = |flags: i32| {
        OpenOptions::new()
            .read(true)
            .custom_flags(flags | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    };
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        r => r,
    }
}

/// Tells the kernel we will read the file front to back, so it reads ahead further.
pub fn advise_sequential(file: &File) {
    // Advice only: failure changes nothing we rely on.
    let _ = posix_fadvise(file, 0, 0, PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL);
}
