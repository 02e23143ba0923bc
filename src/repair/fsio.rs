//! The filesystem side of a repair: attributes, copies, fsync, locks, and path helpers.

use super::interrupt::interrupted;
use super::{io_at, RepairError, Result};
use crate::engine::format::takhin::FileKind;
use crate::engine::index::{stream_rebuilt_indexes, IndexDigest, IndexKind, StreamError};
use crate::engine::scan::{scan_segment, ScanOptions, SegmentScan};
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

/// The next data extent of `f` at or after `at` and before `end`, as `[start, stop)`;
/// `None` when only a hole is left. Asked of the filesystem (`SEEK_DATA`/`SEEK_HOLE`),
/// so that a sparse file's holes are never read as zeros and written out as real ones;
/// a filesystem that cannot tell says the whole file is data, and is copied whole.
fn next_data(f: &File, path: &Path, at: u64, end: u64) -> Result<Option<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    if at >= end {
        return Ok(None);
    }
    let start = match seek(f, SeekFrom::Data(at)) {
        Ok(o) => o,
        // No data from `at` to the end of the file.
        Err(Errno::NXIO) => return Ok(None),
        Err(Errno::INVAL | Errno::OPNOTSUPP | Errno::NOSYS) => return Ok(Some((at, end))),
        Err(e) => return Err(io_at(path, "could not find its data")(e.into())),
    };
    if start >= end {
        return Ok(None);
    }
    let stop = match seek(f, SeekFrom::Hole(start)) {
        Ok(o) => o.clamp(start + 1, end),
        Err(Errno::NXIO) => end,
        Err(Errno::INVAL | Errno::OPNOTSUPP | Errno::NOSYS) => end,
        Err(e) => return Err(io_at(path, "could not find its holes")(e.into())),
    };
    Ok(Some((start, stop)))
}

/// Ends a sparse copy of `len` bytes: `dst` is `len` long (a hole at its end is made by
/// the size alone), and `src` still holds the `end` bytes read from it (a file cut short
/// under the copy reads as a hole past its end, and must not pass for one).
fn finish_sparse(
    src: &File,
    src_path: &Path,
    dst: &File,
    dst_path: &Path,
    len: u64,
    end: u64,
) -> Result<()> {
    let now = src
        .metadata()
        .map_err(io_at(src_path, "could not stat"))?
        .len();
    if now < end {
        return Err(shrank(src_path, now, end));
    }
    dst.set_len(len)
        .map_err(io_at(dst_path, "could not set the size"))
}

/// Copies the first `len` bytes of `src` to the start of `dst` (empty), its data extents
/// only (holes stay holes), with `copy_file_range` where the kernel offers it (and
/// `kernel` is set), else with reads and writes.
fn copy_prefix(
    src: &File,
    src_path: &Path,
    dst: &File,
    dst_path: &Path,
    len: u64,
    stats: &CopyStats,
    mut kernel: bool,
) -> Result<()> {
    let mut at = 0;
    while let Some((from, to)) = next_data(src, src_path, at, len)? {
        kernel = copy_extent(src, src_path, dst, dst_path, from, to, stats, kernel)?;
        at = to;
    }
    finish_sparse(src, src_path, dst, dst_path, len, len)
}

/// Copies bytes `[from, to)` of `src` to the same positions of `dst`; returns whether
/// the kernel still copies for us (false once it declined, so later extents do not ask).
#[allow(clippy::too_many_arguments)]
fn copy_extent(
    src: &File,
    src_path: &Path,
    dst: &File,
    dst_path: &Path,
    from: u64,
    to: u64,
    stats: &CopyStats,
    mut kernel: bool,
) -> Result<bool> {
    let mut done = from;
    while done < to {
        interrupted()?;
        if kernel {
            let (mut off_in, mut off_out) = (done, done);
            // Bounded, so that an interrupt is seen within a fraction of a second.
            let want = (to - done).min(64 << 20) as usize;
            let e = match rustix::fs::copy_file_range(
                src,
                Some(&mut off_in),
                dst,
                Some(&mut off_out),
                want,
            ) {
                Ok(0) => return Err(shrank(src_path, done, to)),
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
        copy_chunks(
            src,
            src_path,
            dst,
            dst_path,
            done,
            to,
            0,
            &mut |chunk, _| CopyStats::add(&stats.plain_copied, chunk.len() as u64),
        )?;
        break;
    }
    Ok(kernel)
}

/// Copies bytes `[from, to)` of `src` to `dst`, `shift` bytes earlier, with reads and
/// writes, showing each chunk and its position in `src` to `seen` first.
#[allow(clippy::too_many_arguments)]
fn copy_chunks(
    src: &File,
    src_path: &Path,
    dst: &File,
    dst_path: &Path,
    from: u64,
    to: u64,
    shift: u64,
    seen: &mut dyn FnMut(&[u8], u64),
) -> Result<()> {
    let mut buf = vec![0u8; BUF_BYTES.min(to.saturating_sub(from) as usize).max(1)];
    let mut done = from;
    while done < to {
        interrupted()?;
        let want = buf.len().min((to - done) as usize);
        let n = match src.read_at(&mut buf[..want], done) {
            Ok(0) => return Err(shrank(src_path, done, to)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_at(src_path, "could not read")(e)),
        };
        seen(&buf[..n], done);
        dst.write_all_at(&buf[..n], done - shift)
            .map_err(io_at(dst_path, "could not write"))?;
        done += n as u64;
    }
    Ok(())
}

/// What a sparse copy shows of each part of the source, at its position there.
enum Piece<'a> {
    /// Bytes read (and written).
    Data(&'a [u8]),
    /// A hole this long: zeros, never read nor written.
    Zeros(u64),
}

/// Copies bytes `[start, start + len)` of `src` to the start of `dst` (empty) with
/// reads and writes of its data extents only, showing every part to `seen` in order
/// (holes as [`Piece::Zeros`]), so that a hash still covers the whole logical content.
fn copy_sparse(
    src: &File,
    src_path: &Path,
    dst: &File,
    dst_path: &Path,
    start: u64,
    len: u64,
    mut seen: impl FnMut(Piece, u64),
) -> Result<()> {
    let end = start
        .checked_add(len)
        .ok_or_else(|| shrank(src_path, start, u64::MAX))?;
    let mut at = start;
    loop {
        let next = next_data(src, src_path, at, end)?;
        let data_from = next.map_or(end, |(from, _)| from);
        if data_from > at {
            seen(Piece::Zeros(data_from - at), at);
        }
        let Some((from, to)) = next else { break };
        copy_chunks(
            src,
            src_path,
            dst,
            dst_path,
            from,
            to,
            start,
            &mut |c, p| seen(Piece::Data(c), p),
        )?;
        at = to;
    }
    finish_sparse(src, src_path, dst, dst_path, len, end)
}

/// The size and CRC-32 of a whole open file, its data extents read and its holes
/// hashed as zeros without reading them (a sparse terabyte is checked in moments).
pub(super) fn crc_of_file(f: &File, path: &Path) -> Result<(u64, u32)> {
    let len = f.metadata().map_err(io_at(path, "could not stat"))?.len();
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; BUF_BYTES.min(len as usize).max(1)];
    let mut at = 0;
    loop {
        let next = next_data(f, path, at, len)?;
        let data_from = next.map_or(len, |(from, _)| from);
        crc_zeros(&mut h, data_from - at);
        let Some((from, to)) = next else { break };
        let mut done = from;
        while done < to {
            let want = buf.len().min((to - done) as usize);
            match f.read_at(&mut buf[..want], done) {
                Ok(0) => return Err(shrank(path, done, len)),
                Ok(n) => {
                    h.update(&buf[..n]);
                    done += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_at(path, "could not read")(e)),
            }
        }
        at = to;
    }
    Ok((len, h.finalize()))
}

/// Adds `n` zero bytes to a CRC-32 without hashing them one by one (a hole can be a
/// terabyte): blocks of zeros are combined by doubling, in O(log n) steps.
fn crc_zeros(h: &mut crc32fast::Hasher, n: u64) {
    const BLOCK: usize = 64 << 10;
    static ZEROS: [u8; BLOCK] = [0; BLOCK];
    let (mut blocks, rest) = (n / BLOCK as u64, (n % BLOCK as u64) as usize);
    if blocks > 0 {
        // Zeros are zeros in any order: the blocks combine into one run of their total length.
        let mut pow = crc32fast::Hasher::new();
        pow.update(&ZEROS);
        let mut run = crc32fast::Hasher::new();
        while blocks > 0 {
            if blocks & 1 == 1 {
                run.combine(&pow);
            }
            blocks >>= 1;
            if blocks > 0 {
                let p = pow.clone();
                pow.combine(&p);
            }
        }
        h.combine(&run);
    }
    h.update(&ZEROS[..rest]);
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

/// Streams the rebuilt indexes of `scan` (whose records `src` holds: a `.log`, or a
/// range of one) into new files, one per `outs` entry (`.index` or `.timeindex`; one
/// not named is only walked), in one walk and through a fixed block per file: memory
/// does not grow with the segment. Returns each file with its size and CRC-32, in
/// `outs`' order. A failed read of `src` is reported by `read_err`; a file that could
/// not be written, by its path.
pub(super) fn write_rebuilt<S: crate::engine::scan::ReadAt + ?Sized>(
    src: &S,
    scan: &SegmentScan,
    outs: &[(&Path, FileKind)],
    read_err: &dyn Fn(io::Error) -> RepairError,
) -> Result<Vec<(File, IndexDigest)>> {
    let mut files = Vec::with_capacity(outs.len());
    for (p, _) in outs {
        files.push(create_new(p)?);
    }
    let at = |kind: FileKind| outs.iter().position(|(_, k)| *k == kind);
    let (i, t) = (at(FileKind::Index), at(FileKind::TimeIndex));
    let (mut sink_i, mut sink_t) = (io::sink(), io::sink());
    let (mut fi, mut ft): (Option<&File>, Option<&File>) =
        (i.map(|n| &files[n]), t.map(|n| &files[n]));
    let wi: &mut dyn io::Write = match &mut fi {
        Some(f) => f,
        None => &mut sink_i,
    };
    let wt: &mut dyn io::Write = match &mut ft {
        Some(f) => f,
        None => &mut sink_t,
    };
    let (di, dt) = stream_rebuilt_indexes(src, scan, wi, wt).map_err(|e| match e {
        StreamError::Read(e) => read_err(e),
        StreamError::Write(kind, e) => {
            let n = match kind {
                IndexKind::Offset => i,
                IndexKind::Time => t,
            };
            let path = n.map_or(Path::new(""), |n| outs[n].0);
            io_at(path, "could not write")(e)
        }
    })?;
    Ok(files
        .into_iter()
        .zip(outs)
        .map(|(f, (_, kind))| (f, if *kind == FileKind::Index { di } else { dt }))
        .collect())
}

/// Scans a `.log` again and streams its rebuilt `kind` index into a new file at `dst`,
/// for when no scan is at hand; with `limit`, only from its first `limit` bytes (what
/// the repair keeps of it). Returns the file, its size and CRC-32.
pub(super) fn rebuild_from(
    source: &Source,
    rel: &Path,
    base: u64,
    limit: Option<&u64>,
    opts: &ScanOptions,
    dst: &Path,
    kind: FileKind,
) -> Result<(File, IndexDigest)> {
    let path = &source.display_path(rel);
    let f = source.file(rel).map_err(io_at(path, "could not open"))?;
    let len = f.metadata().map_err(io_at(path, "could not stat"))?.len();
    let len = limit.map_or(len, |l| len.min(*l));
    advise_sequential(&f);
    let scan = scan_segment(&f, len, base, opts, |_| {}).map_err(io_at(path, "could not read"))?;
    let read_err = |e| io_at(path, "could not read")(e);
    let mut written = write_rebuilt(&f, &scan, &[(dst, kind)], &read_err)?;
    Ok(written.remove(0))
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
                // Each job is a safe point for an interrupt, too.
                if let Err(e) = interrupted().and_then(|()| f(job)) {
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

/// Streams a file into a new one (holes kept), returning the CRC-32 of all of it and of each byte
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
    copy_sparse(src, src_path, dst, dst_path, 0, len, |piece, at| {
        let n = match piece {
            Piece::Data(chunk) => chunk.len() as u64,
            Piece::Zeros(n) => n,
        };
        let end = at + n;
        match piece {
            Piece::Data(chunk) => all.update(chunk),
            Piece::Zeros(n) => crc_zeros(&mut all, n),
        }
        while first < ranges.len() && ranges[first].0.saturating_add(ranges[first].1) <= at {
            first += 1;
        }
        for (i, &(start, n)) in ranges.iter().enumerate().skip(first) {
            if start >= end {
                break;
            }
            let (from, to) = (start.max(at), start.saturating_add(n).min(end));
            if from < to {
                match piece {
                    Piece::Data(chunk) => {
                        parts[i].update(&chunk[(from - at) as usize..(to - at) as usize])
                    }
                    Piece::Zeros(_) => crc_zeros(&mut parts[i], to - from),
                }
            }
        }
    })?;
    Ok((
        all.finalize(),
        parts.into_iter().map(|h| h.finalize()).collect(),
    ))
}

/// Copies bytes `[start, start + len)` of `src` to the start of `dst` (empty), holes kept,
/// returning their CRC-32: a salvaged run's `.log`, out of the backup copy of its
/// original, or a range of a replica's.
pub(super) fn copy_range_with_crc(
    src: &File,
    src_path: &Path,
    start: u64,
    len: u64,
    dst: &File,
    dst_path: &Path,
) -> Result<u32> {
    let mut h = crc32fast::Hasher::new();
    copy_sparse(
        src,
        src_path,
        dst,
        dst_path,
        start,
        len,
        |piece, _| match piece {
            Piece::Data(chunk) => h.update(chunk),
            Piece::Zeros(n) => crc_zeros(&mut h, n),
        },
    )?;
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

    /// Zeros added to a CRC-32 by combining blocks hash exactly like zeros read, at
    /// every size around the block and its powers (and after other bytes).
    #[test]
    fn zeros_combine_into_the_crc_of_zeros() {
        let b = 64 << 10;
        for n in [
            0,
            1,
            100,
            b - 1,
            b,
            b + 1,
            2 * b,
            3 * b + 7,
            5 * b,
            17 * b - 3,
        ] {
            let mut h = crc32fast::Hasher::new();
            h.update(b"before");
            crc_zeros(&mut h, n as u64);
            let mut want = b"before".to_vec();
            want.resize(6 + n, 0);
            assert_eq!(h.finalize(), crc32fast::hash(&want), "{n} zeros");
        }
    }

    /// A sparse source is copied extent by extent: the copy has the same bytes, its
    /// holes stay holes (by the kernel's copy, by hand, and for a range), and the hash
    /// covers the holes as zeros.
    #[test]
    fn holes_stay_holes_in_every_copy() {
        let t = tempfile::tempdir().unwrap();
        let src_path = t.path().join("sparse");
        let len: u64 = 64 << 20;
        let f = File::create(&src_path).unwrap();
        f.set_len(len).unwrap();
        for at in [4096, 20 << 20, len - 8192] {
            f.write_all_at(&[0x5a; 8192], at).unwrap();
        }
        drop(f);
        let bytes = fs::read(&src_path).unwrap();
        let src = File::open(&src_path).unwrap();
        let small = |p: &Path| fs::metadata(p).unwrap().blocks() * 512 < 1 << 20;
        assert!(
            small(&src_path),
            "the filesystem under the test keeps holes"
        );
        for kernel in [true, false] {
            let dst_path = t.path().join(format!("prefix-{kernel}"));
            let dst = create_new(&dst_path).unwrap();
            copy_prefix(
                &src,
                &src_path,
                &dst,
                &dst_path,
                len - 100,
                &CopyStats::default(),
                kernel,
            )
            .unwrap();
            assert_eq!(fs::read(&dst_path).unwrap(), bytes[..(len - 100) as usize]);
            assert!(small(&dst_path), "kernel {kernel}");
        }
        let dst_path = t.path().join("whole");
        let dst = create_new(&dst_path).unwrap();
        let (all, parts) = copy_with_crc(
            &src,
            &src_path,
            &dst,
            &dst_path,
            len,
            &[(0, 4096), (1000, 10 << 20)],
        )
        .unwrap();
        assert_eq!(fs::read(&dst_path).unwrap(), bytes);
        assert!(small(&dst_path));
        assert_eq!(all, crc32fast::hash(&bytes));
        assert_eq!(parts[0], crc32fast::hash(&bytes[..4096]));
        assert_eq!(parts[1], crc32fast::hash(&bytes[1000..1000 + (10 << 20)]));
        let range_path = t.path().join("range");
        let out = create_new(&range_path).unwrap();
        let crc = copy_range_with_crc(&src, &src_path, 8192, 30 << 20, &out, &range_path).unwrap();
        let want = &bytes[8192..8192 + (30 << 20)];
        assert_eq!(fs::read(&range_path).unwrap(), want);
        assert_eq!(crc, crc32fast::hash(want));
        assert!(small(&range_path));
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
