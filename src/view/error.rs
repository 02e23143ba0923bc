//! Why a view operation failed, and the one exhaustive mapping of those reasons to errno.

use std::io;
use std::path::Path;

/// Why a view operation failed. [`ViewError::errno`] is the one mapping to errno.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("no such file or directory")]
    NotFound,
    #[error("the view is read-only")]
    ReadOnly,
    #[error("{path}: refused ({why})")]
    Refused { path: String, why: String },
    #[error("{path}: {err}")]
    Source { path: String, err: io::Error },
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("not a symbolic link")]
    NotSymlink,
    #[error("is a symbolic link")]
    IsSymlink,
    #[error("no such attribute")]
    NoAttr,
    #[error("buffer too small for the attribute")]
    Range,
    #[error("unknown file handle {0}")]
    BadHandle(u64),
    #[error("unknown inode {0}")]
    BadInode(u64),
}

impl ViewError {
    /// The errno the kernel is given for this error.
    pub fn errno(&self) -> i32 {
        match self {
            ViewError::NotFound => libc::ENOENT,
            ViewError::ReadOnly => libc::EROFS,
            ViewError::Refused { .. } => libc::EIO,
            ViewError::Source { err, .. } => match err.kind() {
                io::ErrorKind::NotFound => libc::ENOENT,
                // Anything else from the source is an I/O error to the reader,
                // unless the OS gave a precise code (EACCES, ELOOP, ...).
                _ => err.raw_os_error().unwrap_or(libc::EIO),
            },
            ViewError::NotDir => libc::ENOTDIR,
            ViewError::IsDir => libc::EISDIR,
            ViewError::NotSymlink => libc::EINVAL,
            ViewError::IsSymlink => libc::ELOOP,
            ViewError::NoAttr => libc::ENODATA,
            ViewError::Range => libc::ERANGE,
            ViewError::BadHandle(_) => libc::EBADF,
            ViewError::BadInode(_) => libc::ESTALE,
        }
    }
}

pub type Result<T> = std::result::Result<T, ViewError>;

/// Wraps an I/O error on the source file `path`.
pub(crate) fn source_err(path: &Path) -> impl FnOnce(io::Error) -> ViewError + '_ {
    move |err| ViewError::Source {
        path: path.display().to_string(),
        err,
    }
}
