//! The filesystem side of a repair: attributes, copies, fsync, locks, and path helpers.

use super::{io_at, RepairError, Result};
use crate::engine::index::rebuild_indexes;
use crate::engine::scan::{scan_segment, ScanOptions};
use crate::engine::source::{advise_sequential, Source};
use rustix::fs::{AtFlags, FlockOperation, Timespec, Timestamps, CWD};
use rustix::io::Errno;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Suffix of the temporary files and directories repair writes before renaming them.
const TMP_SUFFIX: &str = "recoverfs-tmp";
/// Bytes per read/write when the kernel cannot copy for us, and per CRC pass.
pub(super) const BUF_BYTES: usize = 1 << 20;

/// Mode, owner and times of a source entry, carried over to what repair writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Attrs {
    mode: u32,
    uid: u32,
    gid: u32,
    atime: (i64, i64),
    mtime: (i64, i64),
}

impl Attrs {
    pub(super) fn of(m: &fs::Metadata) -> Self {
        Attrs {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            atime: (m.atime(), m.atime_nsec()),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }

    /// Access and modification times as `stat` gave them, seconds and nanoseconds
    /// unconverted (the same for a file, through `futimens`, and a symlink, through `utimensat`).
    fn times(&self) -> Timestamps {
        let ts = |(tv_sec, tv_nsec): (i64, i64)| Timespec { tv_sec, tv_nsec };
        Timestamps {
            last_access: ts(self.atime),
            last_modification: ts(self.mtime),
        }
    }

    /// Sets mode and times on an open file or directory; the owner too when `chown`
    /// (in place, where a broker running as another user must still open the file).
    pub(super) fn apply(&self, f: &File, path: &Path, chown: bool) -> Result<()> {
        if chown {
            if let Err(e) = std::os::unix::fs::fchown(f, Some(self.uid), Some(self.gid)) {
                // Without CAP_CHOWN only our own files are ours to give: keep going.
                if e.raw_os_error() != Some(libc::EPERM) {
                    return Err(io_at(path, "could not set the owner")(e));
                }
            }
        }
        f.set_permissions(fs::Permissions::from_mode(self.mode))
            .map_err(io_at(path, "could not set the mode"))?;
        rustix::fs::futimens(f, &self.times())
            .map_err(|e| io_at(path, "could not set the times")(e.into()))
    }
}

/// The attributes of the source entry `rel` itself (a symlink described, not followed),
/// through the door.
pub(super) fn stat_source(source: &Source, rel: &Path) -> Result<fs::Metadata> {
    source
        .metadata(rel)
        .map_err(io_at(&source.display_path(rel), "could not stat"))
}

/// Told how many bytes were just read or written, for a progress bar.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Bytes written, by how the kernel was asked to move them.
#[derive(Default)]
pub(super) struct CopyStats {
    /// Told of every byte written, so a long repair shows it is moving.
    pub(super) progress: Option<Progress>,
    pub(super) files: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) reflinked: AtomicU64,
    pub(super) kernel_copied: AtomicU64,
    pub(super) plain_copied: AtomicU64,
    pub(super) generated: AtomicU64,
}

impl CopyStats {
    pub(super) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub(super) fn add_bytes(&self, n: u64) {
        Self::add(&self.bytes, n);
        if let Some(p) = &self.progress {
            p(n);
        }
    }
    pub(super) fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Set once a filesystem refuses FICLONE, so later files do not ask again.
static NO_REFLINK: AtomicBool = AtomicBool::new(false);

/// Clones a whole file (btrfs, XFS, bcachefs...). False when the filesystem cannot.
fn try_reflink(src: &File, dst: &File) -> bool {
    if NO_REFLINK.load(Ordering::Relaxed) {
        return false;
    }
    let Err(e) = rustix::fs::ioctl_ficlone(dst, src) else {
        return true;
    };
    if let libc::EOPNOTSUPP | libc::ENOTTY | libc::EINVAL | libc::EXDEV | libc::ENOSYS =
        e.raw_os_error()
    {
        NO_REFLINK.store(true, Ordering::Relaxed)
    }
    false
}

/// Copies the first `len` bytes of `src` to the start of `dst` (empty), with
/// `copy_file_range` where the kernel offers it (and `kernel` is set), else with reads and writes.
fn copy_prefix(
    src: &File,
    src_path: &Path,
    dst: &File,
    dst_path: &Path,
    len: u64,
    stats: &CopyStats,
    mut kernel: bool,
) -> Result<()> {
    let mut done: u64 = 0;
    while done < len {
        if kernel {
            let (mut off_in, mut off_out) = (done, done);
            let want = (len - done).min(1 << 30) as usize;
            let e = match rustix::fs::copy_file_range(
                src,
                Some(&mut off_in),
                dst,
                Some(&mut off_out),
                want,
            ) {
                Ok(0) => return Err(shrank(src_path, done, len)),
                Ok(n) => {
                    done += n as u64;
                    CopyStats::add(&stats.kernel_copied, n as u64);
                    continue;
                }
                Err(e) => io::Error::from(e),
            };
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Not offered here (old kernel, cross-device, special filesystem): copy by hand.
                Some(
                    libc::ENOSYS
                    | libc::EXDEV
                    | libc::EINVAL
                    | libc::EOPNOTSUPP
                    | libc::EPERM
                    | libc::ETXTBSY,
                ) => {
                    kernel = false;
                    continue;
                }
                _ => return Err(io_at(src_path, "could not copy")(e)),
            }
        }
        return copy_chunks(src, src_path, dst, dst_path, done, len, |chunk, _| {
            CopyStats::add(&stats.plain_copied, chunk.len() as u64)
        });
    }
    Ok(())
}

/// Copies bytes `[from, len)` of `src` to the same positions of `dst` with
/// reads and writes, showing each chunk and its position to `seen` first.
fn copy_chunks(
    src: &File,
    src_path: &Path,
    dst: &File,
    dst_path: &Path,
    from: u64,
    len: u64,
    mut seen: impl FnMut(&[u8], u64),
) -> Result<()> {
    let mut buf = vec![0u8; BUF_BYTES.min(len.saturating_sub(from) as usize).max(1)];
    let mut done = from;
    while done < len {
        let want = buf.len().min((len - done) as usize);
        let n = match src.read_at(&mut buf[..want], done) {
            Ok(0) => return Err(shrank(src_path, done, len)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_at(src_path, "could not read")(e)),
        };
        seen(&buf[..n], done);
        dst.write_all_at(&buf[..n], done)
            .map_err(io_at(dst_path, "could not write"))?;
        done += n as u64;
    }
    Ok(())
}

fn shrank(path: &Path, at: u64, len: u64) -> RepairError {
    RepairError::SourceChanged {
        path: path.to_path_buf(),
        what: format!("ended at byte {at}, before the {len} bytes it held when checked"),
    }
}

/// Opens the original `rel` through the door and checks it still has the size the analysis saw.
pub(super) fn open_checked(source: &Source, rel: &Path, expect_len: u64) -> Result<File> {
    let path = &source.display_path(rel);
    let f = source.file(rel).map_err(io_at(path, "could not open"))?;
    let m = f.metadata().map_err(io_at(path, "could not stat"))?;
    if !m.is_file() || m.len() != expect_len {
        return Err(RepairError::SourceChanged {
            path: path.to_path_buf(),
            what: format!("is now {} bytes, was {expect_len} when checked", m.len()),
        });
    }
    advise_sequential(&f);
    Ok(f)
}

/// Creates a new file for writing (never reusing one that exists).
pub(super) fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_at(path, "could not create"))
}

/// Writes the first `len` bytes (`len == original_len` for a whole file) of the original `rel`.
pub(super) fn write_copy(
    source: &Source,
    rel: &Path,
    dst_path: &Path,
    len: u64,
    original_len: u64,
    stats: &CopyStats,
) -> Result<File> {
    let src = open_checked(source, rel, original_len)?;
    let src_path = &source.display_path(rel);
    let dst = create_new(dst_path)?;
    if len > 0 && len == original_len && try_reflink(&src, &dst) {
        CopyStats::add(&stats.reflinked, len);
    } else {
        copy_prefix(&src, src_path, &dst, dst_path, len, stats, true)?;
    }
    stats.add_bytes(len);
    Ok(dst)
}

/// Scans a `.log` again and rebuilds both its indexes, for when no scan is at hand; with
/// `limit`, only from its first `limit` bytes (what the repair keeps of it).
pub(super) fn rebuild_from(
    source: &Source,
    rel: &Path,
    base: u64,
    limit: Option<&u64>,
    opts: &ScanOptions,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let path = &source.display_path(rel);
    let f = source.file(rel).map_err(io_at(path, "could not open"))?;
    let len = f.metadata().map_err(io_at(path, "could not stat"))?.len();
    let len = limit.map_or(len, |l| len.min(*l));
    advise_sequential(&f);
    let scan = scan_segment(&f, len, base, opts, |_| {}).map_err(io_at(path, "could not read"))?;
    rebuild_indexes(&f, &scan).map_err(io_at(path, "could not read"))
}

/// Starts writing a file's dirty pages back without waiting, so that the fsync at the
/// end of a tree finds most of the work done (fsyncing each file at once would serialise
/// copying and disk writes).
pub(super) fn start_writeback(f: &File) {
    // Advice only: the later fsync is what guarantees durability.
    // SAFETY: sync_file_range reads no memory of ours; the fd is open for the life of `f`
    // (neither std nor rustix offers this call).
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

pub(super) fn fsync(f: &File, path: &Path) -> Result<()> {
    f.sync_all().map_err(io_at(path, "could not fsync"))
}

pub(super) fn fsync_dir(path: &Path) -> Result<()> {
    let d = File::open(path).map_err(io_at(path, "could not open the directory"))?;
    fsync(&d, path)
}

/// Creates `dir` and whichever of its ancestors are missing, then makes every name on
/// the way down to it durable (an fsync of each ancestor, up to the root): without that a
/// power cut can take a new parent away with all that was written and fsynced below it.
/// Those that existed are synced too, since an earlier run may have made one and failed
/// to sync it, and nothing else tells them apart; an ancestor we may not open, or whose
/// filesystem cannot sync a directory, was not made by a repair, and stops the walk.
pub(super) fn create_dir_all_durable(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(io_at(dir, "could not create"))?;
    let abs = std::path::absolute(dir).map_err(io_at(dir, "could not resolve"))?;
    let mut p = abs.as_path();
    while let Some(parent) = p.parent() {
        let d = match File::open(parent) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => break,
            Err(e) => return Err(io_at(parent, "could not open the directory")(e)),
        };
        match d.sync_all() {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EROFS)) => break,
            Err(e) => return Err(io_at(parent, "could not fsync")(e)),
        }
        p = parent;
    }
    Ok(())
}

/// Runs `f` over `jobs` on a few threads; the first error stops the rest.
pub(super) fn run_jobs<T: Sync>(jobs: &[T], f: impl Fn(&T) -> Result<()> + Sync) -> Result<()> {
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<RepairError>> = Mutex::new(None);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                if failed.lock().expect("no panics").is_some() {
                    break;
                }
                let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                if let Err(e) = f(job) {
                    failed.lock().expect("no panics").get_or_insert(e);
                    break;
                }
            });
        }
    });
    match failed.into_inner().expect("no panics") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The absolute form of a path whose tail may not exist yet, symlinks resolved.
pub(super) fn resolve(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).map_err(io_at(path, "could not resolve"))?;
    let mut tail = Vec::new();
    let mut head = abs.as_path();
    loop {
        match head.canonicalize() {
            Ok(c) => {
                let mut out = c;
                for t in tail.iter().rev() {
                    out.push(t);
                }
                return Ok(out);
            }
            Err(_) => match (head.parent(), head.file_name()) {
                (Some(p), Some(n)) => {
                    tail.push(n.to_os_string());
                    head = p;
                }
                _ => return Ok(abs),
            },
        }
    }
}

pub(super) fn check_data_dir(data: &Path) -> Result<PathBuf> {
    match fs::metadata(data) {
        Ok(m) if m.is_dir() => resolve(data),
        Ok(_) => Err(RepairError::NotADirectory(data.to_path_buf())),
        Err(e) => Err(io_at(data, "cannot repair")(e)),
    }
}

/// Takes an exclusive `flock` on a directory (opened read-only, so nothing of it changes).
pub(super) fn lock_dir(dir: &Path) -> Result<File> {
    let f = File::open(dir).map_err(io_at(dir, "could not open"))?;
    match rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(f),
        Err(Errno::WOULDBLOCK) => Err(RepairError::Busy(dir.to_path_buf())),
        Err(e) => Err(io_at(dir, "could not lock")(e.into())),
    }
}

/// True when `dir` holds no entry at all; a missing directory counts as empty.
pub(super) fn is_empty_or_missing(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => Ok(false),
        Err(e) => Err(io_at(dir, "could not list")(e)),
    }
}

pub(super) fn set_link_times(path: &Path, attrs: &Attrs) -> Result<()> {
    rustix::fs::utimensat(CWD, path, &attrs.times(), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io_at(path, "could not set the times")(e.into()))
}

/// Streams a file into a new one, returning the CRC-32 of all of it and of each byte
/// range `(start, len)` of `ranges` (sorted by start; a range past the end counts what
/// is there). One pass: a truncated `.log`'s valid prefix and its salvaged runs are
/// hashed while the original is copied into the backup.
pub(super) fn copy_with_crc(
    src: &File,
    src_path: &Path,
    dst: &File,
    dst_path: &Path,
    len: u64,
    ranges: &[(u64, u64)],
) -> Result<(u32, Vec<u32>)> {
    let mut all = crc32fast::Hasher::new();
    let mut parts = vec![crc32fast::Hasher::new(); ranges.len()];
    // Ranges wholly before the current chunk are done: skipped from here on, so the
    // pass stays linear however many runs a segment has.
    let mut first = 0;
    copy_chunks(src, src_path, dst, dst_path, 0, len, |chunk, at| {
        all.update(chunk);
        let end = at + chunk.len() as u64;
        while first < ranges.len() && ranges[first].0.saturating_add(ranges[first].1) <= at {
            first += 1;
        }
        for (i, &(start, n)) in ranges.iter().enumerate().skip(first) {
            if start >= end {
                break;
            }
            let (from, to) = (start.max(at), start.saturating_add(n).min(end));
            if from < to {
                parts[i].update(&chunk[(from - at) as usize..(to - at) as usize]);
            }
        }
    })?;
    Ok((
        all.finalize(),
        parts.into_iter().map(|h| h.finalize()).collect(),
    ))
}

/// Copies bytes `[start, start + len)` of `src` to the start of `dst` (empty), returning
/// their CRC-32: a salvaged run's `.log`, out of the backup copy of its original.
pub(super) fn copy_range_with_crc(
    src: &File,
    src_path: &Path,
    start: u64,
    len: u64,
    dst: &File,
    dst_path: &Path,
) -> Result<u32> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; BUF_BYTES.min(len as usize).max(1)];
    let mut done = 0u64;
    while done < len {
        let want = buf.len().min((len - done) as usize);
        let at = start
            .checked_add(done)
            .ok_or_else(|| shrank(src_path, done, len))?;
        let n = match src.read_at(&mut buf[..want], at) {
            Ok(0) => return Err(shrank(src_path, at, start.saturating_add(len))),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_at(src_path, "could not read")(e)),
        };
        h.update(&buf[..n]);
        dst.write_all_at(&buf[..n], done)
            .map_err(io_at(dst_path, "could not write"))?;
        done += n as u64;
    }
    Ok(h.finalize())
}

/// The temporary name repair writes `path` under first (`.NAME.recoverfs-tmp`, beside it):
/// fixed, so that what a killed run left there is found, and cleared, by the next.
pub(super) fn tmp_beside(path: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{TMP_SUFFIX}"));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both copy paths (the kernel's and the read/write fallback) copy exactly the prefix.
    #[test]
    fn copy_prefix_by_kernel_and_by_hand() {
        let t = tempfile::tempdir().unwrap();
        let src_path = t.path().join("src");
        let bytes: Vec<u8> = (0..3 * BUF_BYTES + 17)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        fs::write(&src_path, &bytes).unwrap();
        for (kernel, cut) in [(true, 5), (false, 5), (false, 0), (true, bytes.len())] {
            let len = (bytes.len() - cut) as u64;
            let dst_path = t.path().join(format!("dst-{kernel}-{cut}"));
            let src = File::open(&src_path).unwrap();
            let dst = create_new(&dst_path).unwrap();
            let stats = CopyStats::default();
            copy_prefix(&src, &src_path, &dst, &dst_path, len, &stats, kernel).unwrap();
            assert_eq!(fs::read(&dst_path).unwrap(), bytes[..len as usize]);
            let by_hand = CopyStats::get(&stats.plain_copied);
            if kernel {
                // The kernel may decline (then the fallback runs), but all bytes are accounted for.
                assert_eq!(by_hand + CopyStats::get(&stats.kernel_copied), len);
            } else {
                assert_eq!((by_hand, CopyStats::get(&stats.kernel_copied)), (len, 0));
            }
        }
    }

    /// One copy hashes the whole file and every range, across chunk boundaries, however
    /// many ranges there are; a range of another file's bytes is copied out with its hash.
    #[test]
    fn copy_with_crc_hashes_each_range_in_one_pass() {
        let t = tempfile::tempdir().unwrap();
        let src_path = t.path().join("src");
        let bytes: Vec<u8> = (0..2 * BUF_BYTES + 333)
            .map(|i| (i * 13 % 253) as u8)
            .collect();
        fs::write(&src_path, &bytes).unwrap();
        let n = bytes.len() as u64;
        let b = BUF_BYTES as u64;
        // A prefix, an empty range, ranges inside one chunk, across one and two chunk
        // boundaries, up to the end, and past it (hashes what is there).
        let ranges = [
            (0, 100),
            (100, 0),
            (150, 10),
            (b - 5, 10),
            (b - 1, b + 2),
            (2 * b, n - 2 * b),
            (n - 3, 50),
        ];
        let dst_path = t.path().join("dst");
        let src = File::open(&src_path).unwrap();
        let dst = create_new(&dst_path).unwrap();
        let (all, parts) = copy_with_crc(&src, &src_path, &dst, &dst_path, n, &ranges).unwrap();
        assert_eq!(fs::read(&dst_path).unwrap(), bytes);
        assert_eq!(all, crc32fast::hash(&bytes));
        for ((start, len), crc) in ranges.iter().zip(&parts) {
            let (s, e) = (*start as usize, ((start + len) as usize).min(bytes.len()));
            assert_eq!(*crc, crc32fast::hash(&bytes[s..e]), "range {start}+{len}");
        }

        let out_path = t.path().join("range");
        let out = create_new(&out_path).unwrap();
        let crc = copy_range_with_crc(&src, &src_path, b - 7, b + 9, &out, &out_path).unwrap();
        let want = &bytes[BUF_BYTES - 7..2 * BUF_BYTES + 2];
        assert_eq!(fs::read(&out_path).unwrap(), want);
        assert_eq!(crc, crc32fast::hash(want));
        // Past the end: a located error, not a short file taken for the run.
        let short_path = t.path().join("short");
        let short = create_new(&short_path).unwrap();
        let e = copy_range_with_crc(&src, &src_path, n - 10, 20, &short, &short_path).unwrap_err();
        assert!(
            matches!(e, RepairError::SourceChanged { ref path, .. } if *path == src_path),
            "{e}"
        );
    }

    /// A source shorter than the analysis said is a located error, not a short copy.
    #[test]
    fn a_shrunken_source_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let src_path = t.path().join("src");
        fs::write(&src_path, [1u8; 100]).unwrap();
        for kernel in [true, false] {
            let dst_path = t.path().join(format!("dst-{kernel}"));
            let src = File::open(&src_path).unwrap();
            let dst = create_new(&dst_path).unwrap();
            let e = copy_prefix(
                &src,
                &src_path,
                &dst,
                &dst_path,
                200,
                &CopyStats::default(),
                kernel,
            )
            .unwrap_err();
            assert!(
                matches!(e, RepairError::SourceChanged { ref path, .. } if *path == src_path),
                "{e}"
            );
        }
        let source = Source::open(t.path()).unwrap();
        let e = open_checked(&source, Path::new("src"), 150).unwrap_err();
        assert!(e.to_string().contains("is now 100 bytes, was 150"), "{e}");
    }

    fn times_of(p: &Path) -> ((i64, i64), (i64, i64)) {
        let m = fs::symlink_metadata(p).unwrap();
        ((m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()))
    }

    /// Mode and times (to the nanosecond, before 1970 too) carry over to a file and a
    /// symlink exactly; the symlink's target keeps its own.
    #[test]
    fn attributes_carry_over_to_files_and_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::write(&src, b"x").unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o640)).unwrap();
        let stamp = |tv_sec, tv_nsec| Timespec { tv_sec, tv_nsec };
        let times = Timestamps {
            last_access: stamp(-86_400 * 365 - 1, 123_456_789),
            last_modification: stamp(1_700_000_000, 999_999_999),
        };
        rustix::fs::utimensat(CWD, &src, &times, AtFlags::empty()).unwrap();
        let attrs = Attrs::of(&fs::symlink_metadata(&src).unwrap());
        let want = (
            (-86_400 * 365 - 1, 123_456_789),
            (1_700_000_000, 999_999_999),
        );
        assert_eq!(times_of(&src), want);

        let dst = t.path().join("dst");
        let f = create_new(&dst).unwrap();
        attrs.apply(&f, &dst, true).unwrap();
        assert_eq!(times_of(&dst), want);
        assert_eq!(fs::metadata(&dst).unwrap().mode() & 0o7777, 0o640);

        let target = t.path().join("target");
        fs::write(&target, b"y").unwrap();
        let before = times_of(&target);
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        set_link_times(&link, &attrs).unwrap();
        assert_eq!(times_of(&link), want);
        assert_eq!(times_of(&target), before);
    }

    /// A second lock on a locked directory is refused at once, as "busy".
    #[test]
    fn a_locked_directory_is_busy() {
        let t = tempfile::tempdir().unwrap();
        let held = lock_dir(t.path()).unwrap();
        let e = lock_dir(t.path()).unwrap_err();
        assert!(
            matches!(e, RepairError::Busy(ref p) if p == t.path()),
            "{e}"
        );
        drop(held);
        lock_dir(t.path()).unwrap();
    }
}
