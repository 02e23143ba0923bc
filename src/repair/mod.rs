//! `repair`: writes the policy's repaired view as real files, to a new directory or in place after a backup.
//!
//! The tree is built with [`crate::engine::plan::dir_children`] and
//! [`crate::engine::plan::visible_children`], the same functions the mount serves from,
//! so what was inspected is what gets committed. Originals are only ever read
//! through [`open_original`].
//!
//! `--output` builds the whole tree in a sibling temporary directory, fsyncs it
//! and renames it into place. `--in-place` runs in three phases recorded in a
//! manifest inside the backup directory, so that a run killed at any moment
//! and started again finishes the job:
//!
//! 1. `backing-up`: the plan (computed from the untouched source) is written;
//!    then every original that will change or go is copied into the backup;
//! 2. `backed-up`: the manifest now holds the CRC-32 of every original and of
//!    every replacement; the source is changed file by file (temporary file +
//!    rename, or unlink). From here on the manifest, not a new analysis, is the
//!    plan: a half-repaired log would not analyse the same way (a truncated
//!    segment is clean, so `point-in-time` would no longer hide what follows);
//! 3. `applied`: done.

use crate::engine::analysis::{check_path, AnalyzeOptions};
use crate::engine::format::takhin::{segment_file_name, FileKind};
use crate::engine::layout::{escape_path, read_dir_sorted, Layout};
use crate::engine::plan::{dir_children, visible_children, Node};
use crate::engine::policy::{Policy, ViewAction};
use crate::engine::report::{LogReport, Report, SegmentReport};
use crate::engine::scan::{rebuild_indexes, scan_segment, IndexKind, ScanOptions, SegmentScan};
use crate::engine::segment::SegmentStatus;
use crate::engine::source::{advise_sequential, open_original};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Exit code when an injected failure stops the process (tests only).
pub const EXIT_INJECTED: i32 = 86;
/// Test-only: `RECOVERFS_TEST_FAIL_AT=N` makes a repair exit abruptly
/// (no cleanup, no destructors) when it reaches step N, to prove a rerun recovers.
pub const FAIL_AT_ENV: &str = "RECOVERFS_TEST_FAIL_AT";
/// The manifest's file name inside the backup directory.
pub const MANIFEST: &str = "recoverfs-backup.json";
/// Suffix of the temporary files and directories repair writes before renaming them.
const TMP_SUFFIX: &str = "recoverfs-tmp";
/// Bytes per read/write when the kernel cannot copy for us, and per CRC pass.
const BUF_BYTES: usize = 1 << 20;

/// Why a repair did not happen. Every variant names the path it is about.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{}: already exists and is not empty; give a new or empty directory", .0.display())]
    OutputNotEmpty(PathBuf),
    #[error("{}: is inside the data directory {}; write the repaired tree elsewhere", output.display(), data.display())]
    OutputInsideData { output: PathBuf, data: PathBuf },
    #[error("{}: the data directory is inside the output directory {}", data.display(), output.display())]
    DataInsideOutput { data: PathBuf, output: PathBuf },
    #[error("{}: --in-place needs --backup BACKUP_DIR: every original it changes or removes is copied there first", .0.display())]
    NoBackup(PathBuf),
    #[error("{}: is inside the data directory {}; keep the backup outside it", backup.display(), data.display())]
    BackupInsideData { backup: PathBuf, data: PathBuf },
    #[error("{}: holds a different backup ({why}); give a new or empty directory", path.display())]
    DifferentBackup { path: PathBuf, why: String },
    #[error("{}: policy strict repairs nothing, and the view differs from the source ({why}); nothing written", path.display())]
    StrictRefuses { path: PathBuf, why: String },
    #[error("{}: unreadable, so the view cannot serve it ({error}); nothing written (point-in-time leaves it out)", path.display())]
    Unreadable { path: PathBuf, error: String },
    #[error("{}: could not be listed ({error}); nothing written", path.display())]
    Unlisted { path: PathBuf, error: String },
    #[error("{}: {what}; nothing more written (stop whatever writes there and run again)", path.display())]
    SourceChanged { path: PathBuf, what: String },
    #[error("{}: a directory stands where the rebuilt index goes; move it away first", .0.display())]
    DirInTheWay(PathBuf),
    #[error("{}: {what}", path.display())]
    BadManifest { path: PathBuf, what: String },
    #[error("{}: another repair is running here; wait for it to finish", .0.display())]
    Busy(PathBuf),
    #[error("{0}")]
    Analysis(#[from] crate::engine::layout::TargetError),
}

impl RepairError {
    /// Exit status: 1 for the policy's refusal (damage found under strict), 2 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RepairError::StrictRefuses { .. } => 1,
            _ => 2,
        }
    }
}

type Result<T> = std::result::Result<T, RepairError>;

fn io_at<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> RepairError + 'a {
    move |source| RepairError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// Mode, owner and times of a source entry, carried over to what repair writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attrs {
    mode: u32,
    uid: u32,
    gid: u32,
    atime: (i64, i64),
    mtime: (i64, i64),
}

impl Attrs {
    fn of(m: &fs::Metadata) -> Self {
        Attrs {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            atime: (m.atime(), m.atime_nsec()),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }

    fn times(&self) -> [libc::timespec; 2] {
        let ts = |(s, ns): (i64, i64)| libc::timespec {
            tv_sec: s as libc::time_t,
            tv_nsec: ns as _,
        };
        [ts(self.atime), ts(self.mtime)]
    }

    /// Sets mode and times on an open file or directory; the owner too when `chown`
    /// (in place, where a broker running as another user must still open the file).
    fn apply(&self, f: &File, path: &Path, chown: bool) -> Result<()> {
        let fd = f.as_raw_fd();
        if chown {
            // SAFETY: fd is open for the life of `f`.
            if unsafe { libc::fchown(fd, self.uid, self.gid) } != 0 {
                let e = io::Error::last_os_error();
                // Without CAP_CHOWN only our own files are ours to give: keep going.
                if e.raw_os_error() != Some(libc::EPERM) {
                    return Err(io_at(path, "could not set the owner")(e));
                }
            }
        }
        // SAFETY: as above.
        if unsafe { libc::fchmod(fd, self.mode as libc::mode_t) } != 0 {
            return Err(io_at(path, "could not set the mode")(
                io::Error::last_os_error(),
            ));
        }
        let t = self.times();
        // SAFETY: `t` holds two valid timespecs.
        if unsafe { libc::futimens(fd, t.as_ptr()) } != 0 {
            return Err(io_at(path, "could not set the times")(
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

fn lstat(path: &Path) -> Result<fs::Metadata> {
    fs::symlink_metadata(path).map_err(io_at(path, "could not stat"))
}

/// Where the bytes of a file of the repaired tree come from.
#[derive(Debug, Clone)]
enum Content {
    /// A passed-through file: the original, whole.
    Whole { len: u64 },
    /// A segment's `.log`: its first `len` bytes (the valid prefix) of `original_len`.
    Prefix { len: u64, original_len: u64 },
    /// A rebuilt `.index`/`.timeindex` of the segment whose `.log` is `log`.
    Rebuilt {
        kind: FileKind,
        log: PathBuf,
        scan: Arc<SegmentScan>,
        /// Whether the original file at this path already holds exactly these bytes.
        original_matches: bool,
    },
}

/// One entry of the repaired tree, relative to the data directory.
#[derive(Debug, Clone)]
enum Entry {
    Dir {
        rel: PathBuf,
        attrs: Attrs,
    },
    /// Its target is read only when written out: `readlink` moves a symlink's atime
    /// (no `O_NOATIME` exists for it), so in-place runs and dry runs never read it.
    Symlink {
        rel: PathBuf,
        attrs: Attrs,
    },
    File {
        rel: PathBuf,
        content: Content,
        attrs: Attrs,
    },
}

/// Why a source entry is not in the repaired tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeftOut {
    /// A segment file the policy hides.
    Hidden,
    /// An `.index`/`.timeindex` with no `.log`.
    Orphan,
    /// A FIFO, socket or device: never opened, never shown.
    Special,
}

/// The repaired tree, in pre-order (every directory before its entries).
#[derive(Debug, Default)]
struct TreePlan {
    entries: Vec<Entry>,
    left_out: Vec<(PathBuf, LeftOut)>,
}

/// Matches each discovered log directory with its report.
fn reports_by_dir<'a>(layout: &Layout, report: &'a Report) -> HashMap<PathBuf, &'a LogReport> {
    // `analyze` reports the logs of a whole-directory target in layout order.
    layout
        .logs
        .iter()
        .zip(&report.logs)
        .map(|(l, r)| (l.rel.clone(), r))
        .collect()
}

fn segment<'a>(log: Option<&&'a LogReport>, base: u64) -> Option<&'a SegmentReport> {
    log.and_then(|l| l.segments.iter().find(|s| s.base_offset == base))
}

/// Refuses what the view cannot serve, or what strict will not repair.
fn refuse_unservable(data: &Path, report: &Report) -> Result<()> {
    if report.policy == Policy::Strict && report.summary.view_differs {
        let s = &report.summary;
        let mut why = Vec::new();
        for (n, what) in [
            (s.truncated, "segment(s) damaged"),
            (s.unreadable, "segment(s) unreadable"),
            (s.indexes_rebuilt, "index set(s) to rebuild"),
            (s.gaps, "gap(s)"),
            (s.overlaps, "overlap(s)"),
            (s.orphans, "orphan index(es)"),
            (s.unrecognized, "unrecognized file(s)"),
            (report.problems.len() as u64, "unlistable dir(s)"),
        ] {
            if n > 0 {
                why.push(format!("{n} {what}"));
            }
        }
        return Err(RepairError::StrictRefuses {
            path: data.to_path_buf(),
            why: why.join(", "),
        });
    }
    if let Some(p) = report.problems.first() {
        return Err(RepairError::Unlisted {
            path: data.join(&p.path),
            error: p.error.clone(),
        });
    }
    Ok(())
}

/// Walks the source and lists the repaired tree, exactly as the mount shows it.
fn build_plan(data: &Path, layout: &Layout, report: &Report) -> Result<TreePlan> {
    refuse_unservable(data, report)?;
    let logs = reports_by_dir(layout, report);
    let mut plan = TreePlan::default();
    plan.entries.push(Entry::Dir {
        rel: PathBuf::new(),
        attrs: Attrs::of(&lstat(data)?),
    });
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = data.join(&rel);
        let entries = read_dir_sorted(&dir).map_err(io_at(&dir, "could not list"))?;
        let (children, _) = dir_children(&rel, &entries);
        let log = logs.get(&rel);
        let visible = visible_children(children.clone(), log.copied());
        for (name, ft) in &entries {
            // recoverfs's own metadata name: not copied, and never removed in place.
            if crate::engine::layout::is_reserved(&rel, name) {
                continue;
            }
            if !visible.contains_key(name) {
                let why = match children.get(name) {
                    Some(_) => LeftOut::Hidden,
                    None if ft.is_file() => LeftOut::Orphan,
                    None => LeftOut::Special,
                };
                plan.left_out.push((rel.join(name), why));
            }
        }
        let mut subdirs = Vec::new();
        for (name, node) in visible {
            let child = rel.join(&name);
            let path = data.join(&child);
            match node {
                Node::Dir => {
                    plan.entries.push(Entry::Dir {
                        rel: child.clone(),
                        attrs: Attrs::of(&lstat(&path)?),
                    });
                    subdirs.push(child);
                }
                Node::Symlink => plan.entries.push(Entry::Symlink {
                    attrs: Attrs::of(&lstat(&path)?),
                    rel: child,
                }),
                Node::File => {
                    let m = lstat(&path)?;
                    plan.entries.push(Entry::File {
                        rel: child,
                        content: Content::Whole { len: m.len() },
                        attrs: Attrs::of(&m),
                    })
                }
                Node::Log { base } => {
                    let seg = served(data, &child, segment(log, base))?;
                    plan.entries.push(Entry::File {
                        content: Content::Prefix {
                            len: seg.valid_bytes,
                            original_len: seg.original_bytes,
                        },
                        attrs: Attrs::of(&lstat(&path)?),
                        rel: child,
                    })
                }
                Node::Index { base, kind } => {
                    let log_rel = rel.join(segment_file_name(base, FileKind::Log));
                    let seg = served(data, &log_rel, segment(log, base))?;
                    // A rebuilt index takes the original's mode and times, or the .log's when missing.
                    let attrs = match fs::symlink_metadata(&path) {
                        Ok(m) if m.is_file() => Attrs::of(&m),
                        _ => Attrs::of(&lstat(&data.join(&log_rel))?),
                    };
                    let verdict = if kind == FileKind::Index {
                        &seg.index
                    } else {
                        &seg.timeindex
                    };
                    plan.entries.push(Entry::File {
                        rel: child,
                        content: Content::Rebuilt {
                            kind,
                            log: log_rel,
                            scan: seg.scan.clone().expect("a served segment was scanned"),
                            original_matches: verdict.is_match(),
                        },
                        attrs,
                    })
                }
            }
        }
        // Reversed so directories are visited in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(plan)
}

/// The report of a segment the view serves; refuses one it answers with EIO.
fn served<'a>(
    data: &Path,
    rel: &Path,
    seg: Option<&'a SegmentReport>,
) -> Result<&'a SegmentReport> {
    let path = data.join(rel);
    let seg = seg.ok_or_else(|| RepairError::SourceChanged {
        path: path.clone(),
        what: "appeared after the analysis".into(),
    })?;
    match seg.view {
        ViewAction::Kept | ViewAction::Truncated if seg.scan.is_some() => Ok(seg),
        _ if seg.status == SegmentStatus::Unreadable => Err(RepairError::Unreadable {
            path,
            error: seg.error.clone().unwrap_or_default(),
        }),
        _ => Err(RepairError::StrictRefuses {
            path,
            why: "damaged segment".into(),
        }),
    }
}

/// Told how many bytes were just read or written, for a progress bar.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Bytes written, by how the kernel was asked to move them.
#[derive(Default)]
struct CopyStats {
    /// Told of every byte written, so a long repair shows it is moving.
    progress: Option<Progress>,
    files: AtomicU64,
    bytes: AtomicU64,
    reflinked: AtomicU64,
    kernel_copied: AtomicU64,
    plain_copied: AtomicU64,
    generated: AtomicU64,
}

impl CopyStats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    fn add_bytes(&self, n: u64) {
        Self::add(&self.bytes, n);
        if let Some(p) = &self.progress {
            p(n);
        }
    }
    fn get(c: &AtomicU64) -> u64 {
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
    // SAFETY: both fds are open for the duration of the call.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE as _, src.as_raw_fd()) };
    if r == 0 {
        return true;
    }
    if let Some(libc::EOPNOTSUPP | libc::ENOTTY | libc::EINVAL | libc::EXDEV | libc::ENOSYS) =
        io::Error::last_os_error().raw_os_error()
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
            let mut off_in = done as libc::loff_t;
            let mut off_out = done as libc::loff_t;
            let want = (len - done).min(1 << 30) as usize;
            // SAFETY: valid fds; the offsets point at live locals.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut off_in,
                    dst.as_raw_fd(),
                    &mut off_out,
                    want,
                    0,
                )
            };
            if n > 0 {
                done += n as u64;
                CopyStats::add(&stats.kernel_copied, n as u64);
                continue;
            }
            if n == 0 {
                return Err(shrank(src_path, done, len));
            }
            let e = io::Error::last_os_error();
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

/// Opens an original and checks it still has the size the analysis saw.
fn open_checked(path: &Path, expect_len: u64) -> Result<File> {
    let f = open_original(path).map_err(io_at(path, "could not open"))?;
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
fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_at(path, "could not create"))
}

/// Writes the first `len` bytes (`len == original_len` for a whole file) of an original.
fn write_copy(
    src_path: &Path,
    dst_path: &Path,
    len: u64,
    original_len: u64,
    stats: &CopyStats,
) -> Result<File> {
    let src = open_checked(src_path, original_len)?;
    let dst = create_new(dst_path)?;
    if len > 0 && len == original_len && try_reflink(&src, &dst) {
        CopyStats::add(&stats.reflinked, len);
    } else {
        copy_prefix(&src, src_path, &dst, dst_path, len, stats, true)?;
    }
    stats.add_bytes(len);
    Ok(dst)
}

/// Scans a `.log` again and rebuilds both its indexes, for when no scan is at hand.
fn rebuild_from(path: &Path, base: u64, opts: &ScanOptions) -> Result<(Vec<u8>, Vec<u8>)> {
    let f = open_original(path).map_err(io_at(path, "could not open"))?;
    let len = f.metadata().map_err(io_at(path, "could not stat"))?.len();
    advise_sequential(&f);
    let scan = scan_segment(&f, len, base, opts, |_| {}).map_err(io_at(path, "could not read"))?;
    rebuild_indexes(&f, &scan).map_err(io_at(path, "could not read"))
}

/// Starts writing a file's dirty pages back without waiting, so that the fsync at the
/// end of a tree finds most of the work done (fsyncing each file at once would serialise
/// copying and disk writes).
fn start_writeback(f: &File) {
    // Advice only: the later fsync is what guarantees durability.
    // SAFETY: the fd is open for the life of `f`.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

fn fsync(f: &File, path: &Path) -> Result<()> {
    f.sync_all().map_err(io_at(path, "could not fsync"))
}

fn fsync_dir(path: &Path) -> Result<()> {
    let d = File::open(path).map_err(io_at(path, "could not open the directory"))?;
    fsync(&d, path)
}

/// Runs `f` over `jobs` on a few threads; the first error stops the rest.
fn run_jobs<T: Sync>(jobs: &[T], f: impl Fn(&T) -> Result<()> + Sync) -> Result<()> {
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

/// Counts the steps of a repair, and stops the process at the one a test asks for.
struct Steps {
    n: u64,
    fail_at: Option<u64>,
}

impl Steps {
    fn from_env() -> Self {
        Steps {
            n: 0,
            fail_at: std::env::var(FAIL_AT_ENV).ok().and_then(|v| v.parse().ok()),
        }
    }

    fn step(&mut self, what: &str) {
        self.n += 1;
        if self.fail_at == Some(self.n) {
            eprintln!(
                "recoverfs repair: injected failure at step {}: {what}",
                self.n
            );
            // An abrupt stop, like a kill: no destructors, no cleanup.
            // SAFETY: _exit never returns and touches no Rust state.
            unsafe { libc::_exit(EXIT_INJECTED) };
        }
    }
}

/// The absolute form of a path whose tail may not exist yet, symlinks resolved.
fn resolve(path: &Path) -> Result<PathBuf> {
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

fn check_data_dir(data: &Path) -> Result<PathBuf> {
    match fs::metadata(data) {
        Ok(m) if m.is_dir() => resolve(data),
        Ok(_) => Err(RepairError::NotADirectory(data.to_path_buf())),
        Err(e) => Err(io_at(data, "cannot repair")(e)),
    }
}

/// Takes an exclusive `flock` on a directory (opened read-only, so nothing of it changes).
fn lock_dir(dir: &Path) -> Result<File> {
    let f = File::open(dir).map_err(io_at(dir, "could not open"))?;
    // SAFETY: the fd is open for the life of `f`.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(RepairError::Busy(dir.to_path_buf()));
        }
        return Err(io_at(dir, "could not lock")(e));
    }
    Ok(f)
}

/// True when `dir` holds no entry at all; a missing directory counts as empty.
fn is_empty_or_missing(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => Ok(false),
        Err(e) => Err(io_at(dir, "could not list")(e)),
    }
}

fn analyze(
    data: &Path,
    opts: &AnalyzeOptions,
    progress: Option<&Progress>,
) -> Result<(Layout, Report)> {
    let tell = |n: u64| {
        if let Some(p) = progress {
            p(n)
        }
    };
    Ok(check_path(data, opts, &tell)?)
}

/// What `repair --output` wrote.
#[derive(Debug)]
pub struct OutputSummary {
    pub report: Report,
    pub files: u64,
    pub bytes: u64,
    pub reflinked: u64,
    pub kernel_copied: u64,
    pub plain_copied: u64,
    pub generated: u64,
    pub left_out: usize,
}

/// `repair DATA --output NEW`: writes the repaired tree to NEW, all or nothing.
pub fn repair_to(
    data: &Path,
    output: &Path,
    opts: &AnalyzeOptions,
    progress: Option<Progress>,
) -> Result<OutputSummary> {
    let data_abs = check_data_dir(data)?;
    let out_abs = resolve(output)?;
    if out_abs.starts_with(&data_abs) {
        return Err(RepairError::OutputInsideData {
            output: output.to_path_buf(),
            data: data.to_path_buf(),
        });
    }
    if data_abs.starts_with(&out_abs) {
        return Err(RepairError::DataInsideOutput {
            data: data.to_path_buf(),
            output: output.to_path_buf(),
        });
    }
    if !is_empty_or_missing(output)? {
        return Err(RepairError::OutputNotEmpty(output.to_path_buf()));
    }
    let (layout, report) = analyze(data, opts, progress.as_ref())?;
    let plan = build_plan(data, &layout, &report)?;
    let (parent, name) = match (out_abs.parent(), out_abs.file_name()) {
        (Some(p), Some(n)) => (p.to_path_buf(), n.to_os_string()),
        _ => return Err(RepairError::OutputNotEmpty(output.to_path_buf())),
    };
    fs::create_dir_all(&parent).map_err(io_at(&parent, "could not create"))?;
    // Two runs writing to the same parent would share the temporary sibling.
    let _lock = lock_dir(&parent)?;
    // A fixed sibling name: a run killed earlier left this, and it is ours to clear.
    let mut tmp_name = OsString::from(".");
    tmp_name.push(&name);
    tmp_name.push(format!(".{TMP_SUFFIX}"));
    let tmp = parent.join(tmp_name);
    if fs::symlink_metadata(&tmp).is_ok() {
        fs::remove_dir_all(&tmp)
            .map_err(io_at(&tmp, "could not clear an earlier partial output"))?;
    }
    let stats = CopyStats {
        progress,
        ..Default::default()
    };
    let mut steps = Steps::from_env();
    let written = write_tree(data, &tmp, &plan, &stats, &mut steps);
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // An empty NEW_DIR is replaced atomically; a missing one appears whole.
    steps.step("tree written and fsynced, not yet renamed into place");
    fs::rename(&tmp, &out_abs).map_err(|e| {
        let _ = fs::remove_dir_all(&tmp);
        io_at(output, "could not rename the finished tree into place")(e)
    })?;
    steps.step("tree renamed into place, parent not yet synced");
    fsync_dir(&parent)?;
    Ok(OutputSummary {
        report,
        files: CopyStats::get(&stats.files),
        bytes: CopyStats::get(&stats.bytes),
        reflinked: CopyStats::get(&stats.reflinked),
        kernel_copied: CopyStats::get(&stats.kernel_copied),
        plain_copied: CopyStats::get(&stats.plain_copied),
        generated: CopyStats::get(&stats.generated),
        left_out: plan.left_out.len(),
    })
}

/// The rebuilt index files of one segment: its `.log`, its scan, and (path, kind) per file.
type IndexJob = (PathBuf, Arc<SegmentScan>, Vec<(PathBuf, FileKind)>);

/// Writes every entry of the plan under `root` (which must not exist), fsynced.
fn write_tree(
    data: &Path,
    root: &Path,
    plan: &TreePlan,
    stats: &CopyStats,
    steps: &mut Steps,
) -> Result<()> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    // Rebuilt indexes are written per segment, so each `.log` is walked once for both
    // (a segment's two index names sort next to each other, around its `.log`).
    let mut rebuilt: Vec<IndexJob> = Vec::new();
    for e in &plan.entries {
        match e {
            Entry::Dir { rel, attrs } => {
                let p = root.join(rel);
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&p)
                    .map_err(io_at(&p, "could not create"))?;
                dirs.push((p, *attrs));
            }
            Entry::Symlink { rel, attrs } => {
                let p = root.join(rel);
                let src = data.join(rel);
                let target = fs::read_link(&src).map_err(io_at(&src, "could not read the link"))?;
                std::os::unix::fs::symlink(target, &p).map_err(io_at(&p, "could not create"))?;
                set_link_times(&p, attrs)?;
            }
            // An original index that already equals the rebuilt one (compared byte for byte by
            // the analysis) is copied like any file, sparing a second walk through its `.log`.
            Entry::File {
                rel,
                content:
                    Content::Rebuilt {
                        scan,
                        original_matches: true,
                        ..
                    },
                ..
            } => files.push((rel, scan.index_bytes(), scan.index_bytes())),
            Entry::File {
                rel,
                content:
                    Content::Rebuilt {
                        kind, log, scan, ..
                    },
                ..
            } => match rebuilt.last_mut().filter(|r| r.0 == *log) {
                Some(r) => r.2.push((rel.clone(), *kind)),
                None => rebuilt.push((log.clone(), scan.clone(), vec![(rel.clone(), *kind)])),
            },
            Entry::File {
                rel,
                content: Content::Whole { len },
                ..
            } => files.push((rel, *len, *len)),
            Entry::File {
                rel,
                content: Content::Prefix { len, original_len },
                ..
            } => files.push((rel, *len, *original_len)),
        }
    }
    use std::os::unix::fs::DirBuilderExt;
    run_jobs(&files, |(rel, len, original_len)| {
        let dst = root.join(rel);
        let f = write_copy(&data.join(rel), &dst, *len, *original_len, stats)?;
        start_writeback(&f);
        CopyStats::add(&stats.files, 1);
        Ok(())
    })?;
    steps.step("files copied, indexes not yet rebuilt");
    run_jobs(&rebuilt, |(log, scan, outs)| {
        let log_path = data.join(log);
        let src = open_checked(&log_path, scan.original_bytes)?;
        let (index, timeindex) =
            rebuild_indexes(&src, scan).map_err(|e| RepairError::SourceChanged {
                path: log_path.clone(),
                what: e.to_string(),
            })?;
        for (rel, kind) in outs {
            let bytes = if *kind == FileKind::Index {
                &index
            } else {
                &timeindex
            };
            let dst = root.join(rel);
            let mut f = create_new(&dst)?;
            f.write_all(bytes).map_err(io_at(&dst, "could not write"))?;
            start_writeback(&f);
            CopyStats::add(&stats.files, 1);
            stats.add_bytes(bytes.len() as u64);
            CopyStats::add(&stats.generated, bytes.len() as u64);
        }
        Ok(())
    })?;
    // Every file durable before the directories that name them, and before the rename.
    // Mode and times are set here, not at creation: the file is still ours (0600) to reopen.
    let written: Vec<(PathBuf, Attrs)> = plan
        .entries
        .iter()
        .filter_map(|e| match e {
            Entry::File { rel, attrs, .. } => Some((root.join(rel), *attrs)),
            _ => None,
        })
        .collect();
    run_jobs(&written, |(p, attrs)| {
        let f = File::open(p).map_err(io_at(p, "could not reopen"))?;
        attrs.apply(&f, p, false)?;
        fsync(&f, p)
    })?;
    // Deepest first, so a directory's times are set after its entries stop changing it.
    for (p, attrs) in dirs.iter().rev() {
        let d = File::open(p).map_err(io_at(p, "could not open the directory"))?;
        attrs.apply(&d, p, false)?;
        fsync(&d, p)?;
    }
    Ok(())
}

fn set_link_times(path: &Path, attrs: &Attrs) -> Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io_at(path, "bad name")(io::ErrorKind::InvalidInput.into()))?;
    let t = attrs.times();
    // SAFETY: `c` is NUL-terminated, `t` holds two timespecs.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(io_at(path, "could not set the times")(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// In place

/// What an in-place repair does to one path of the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Cut a `.log` to its valid prefix.
    Truncate,
    /// Replace an index with the rebuilt one.
    Rebuild,
    /// Write a rebuilt index where none was.
    Create,
    /// Remove a file the view leaves out (hidden segment, orphan index).
    Remove,
}

/// An original as it was before the repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    /// `file` or `symlink`.
    pub kind: String,
    pub bytes: u64,
    /// CRC-32 of the file's bytes (of the link's target text for a symlink); known once backed up.
    pub crc32: Option<u32>,
}

/// What a path holds after the repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    pub bytes: u64,
    /// Known at planning for rebuilt indexes, once backed up for truncated logs.
    pub crc32: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative to the data directory, escaped like the report's paths.
    pub path: String,
    /// The raw name when `path` had to be escaped (non-UTF-8, or a backslash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<Vec<u8>>,
    pub action: Action,
    pub why: String,
    pub original: Option<Original>,
    pub new: Option<Replacement>,
}

impl ManifestEntry {
    fn rel(&self) -> PathBuf {
        match &self.path_bytes {
            Some(b) => PathBuf::from(OsString::from_vec(b.clone())),
            None => PathBuf::from(&self.path),
        }
    }

    /// The fields a fresh plan must reproduce for an interrupted backup to be resumed.
    fn same_plan(&self, other: &ManifestEntry) -> bool {
        self.path == other.path
            && self.path_bytes == other.path_bytes
            && self.action == other.action
            && self.original.as_ref().map(|o| (&o.kind, o.bytes))
                == other.original.as_ref().map(|o| (&o.kind, o.bytes))
            && self.new.as_ref().map(|n| n.bytes) == other.new.as_ref().map(|n| n.bytes)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestState {
    /// The plan is written; originals are being copied. The source is untouched.
    BackingUp,
    /// Every original is in the backup with its CRC-32; the source is being changed.
    BackedUp,
    /// The repair is complete.
    Applied,
}

/// `BACKUP_DIR/recoverfs-backup.json`: what an in-place repair changes, and how far it got.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub tool: String,
    /// The data directory, absolute.
    pub source: String,
    /// The policy's name (the plan depends on it).
    pub policy: String,
    pub max_record_bytes: u64,
    pub state: ManifestState,
    pub entries: Vec<ManifestEntry>,
}

fn manifest_entry(
    rel: &Path,
    action: Action,
    why: String,
    original: Option<Original>,
    new: Option<Replacement>,
) -> ManifestEntry {
    let path = escape_path(rel);
    let raw = rel.as_os_str().as_bytes();
    ManifestEntry {
        path_bytes: (path.as_bytes() != raw).then(|| raw.to_vec()),
        path,
        action,
        why,
        original,
        new,
    }
}

fn original_of(path: &Path) -> Result<Option<Original>> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Ok(Some(Original {
            kind: "file".into(),
            bytes: m.len(),
            crc32: None,
        })),
        Ok(m) if m.file_type().is_symlink() => Ok(Some(Original {
            kind: "symlink".into(),
            bytes: fs::read_link(path)
                .map_err(io_at(path, "could not read the link"))?
                .as_os_str()
                .len() as u64,
            crc32: None,
        })),
        Ok(m) if m.is_dir() => Err(RepairError::DirInTheWay(path.to_path_buf())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(path, "could not stat")(e)),
    }
}

fn damage_why(seg: Option<&SegmentReport>) -> String {
    match seg.and_then(|s| s.damage.as_ref()) {
        Some(d) => format!(
            "{} ({}) at byte {}",
            d.kind().as_str(),
            d.class.as_str(),
            d.position
        ),
        None => "damaged".into(),
    }
}

/// Turns the repaired tree into the changes that make the source equal to it.
/// Also returns the special files left where they are.
fn in_place_entries(
    data: &Path,
    layout: &Layout,
    report: &Report,
    plan: &TreePlan,
) -> Result<(Vec<ManifestEntry>, Vec<PathBuf>)> {
    let logs = reports_by_dir(layout, report);
    let seg_of = |log_rel: &Path| -> Option<&SegmentReport> {
        let dir = log_rel.parent().unwrap_or(Path::new(""));
        let want = escape_path(log_rel);
        logs.get(dir)
            .and_then(|l| l.segments.iter().find(|s| s.path == want))
    };
    let mut out = Vec::new();
    let mut rebuilt_cache: HashMap<PathBuf, (Vec<u8>, Vec<u8>)> = HashMap::new();
    for e in &plan.entries {
        let Entry::File { rel, content, .. } = e else {
            continue;
        };
        let path = data.join(rel);
        match content {
            Content::Whole { .. } => {}
            Content::Prefix { len, original_len } if len < original_len => {
                out.push(manifest_entry(
                    rel,
                    Action::Truncate,
                    damage_why(seg_of(rel)),
                    Some(Original {
                        kind: "file".into(),
                        bytes: *original_len,
                        crc32: None,
                    }),
                    Some(Replacement {
                        bytes: *len,
                        crc32: None,
                    }),
                ))
            }
            Content::Prefix { .. } => {}
            Content::Rebuilt {
                kind,
                log,
                scan,
                original_matches,
            } => {
                if *original_matches {
                    continue;
                }
                let original = original_of(&path)?;
                if !rebuilt_cache.contains_key(log) {
                    let log_path = data.join(log);
                    let f = open_checked(&log_path, scan.original_bytes)?;
                    let r = rebuild_indexes(&f, scan).map_err(|e| RepairError::SourceChanged {
                        path: log_path.clone(),
                        what: e.to_string(),
                    })?;
                    rebuilt_cache.insert(log.clone(), r);
                }
                let (i, t) = &rebuilt_cache[log];
                let bytes = if *kind == FileKind::Index { i } else { t };
                let seg = seg_of(log);
                let verdict = match (seg, kind) {
                    (Some(s), FileKind::Index) => s.index.describe(IndexKind::Offset),
                    (Some(s), _) => s.timeindex.describe(IndexKind::Time),
                    (None, _) => String::new(),
                };
                let (action, why) = if original.is_some() {
                    (Action::Rebuild, format!("rebuilt (original: {verdict})"))
                } else {
                    (Action::Create, "rebuilt (original: missing)".to_string())
                };
                out.push(manifest_entry(
                    rel,
                    action,
                    why,
                    original,
                    Some(Replacement {
                        bytes: bytes.len() as u64,
                        crc32: Some(crc32fast::hash(bytes)),
                    }),
                ));
            }
        }
    }
    let mut specials = Vec::new();
    for (rel, why) in &plan.left_out {
        let why = match why {
            LeftOut::Special => {
                specials.push(rel.clone());
                continue;
            }
            LeftOut::Hidden => format!("hidden under {}", report.policy),
            LeftOut::Orphan => "orphan index (no .log beside it)".to_string(),
        };
        if let Some(original) = original_of(&data.join(rel))? {
            out.push(manifest_entry(
                rel,
                Action::Remove,
                why,
                Some(original),
                None,
            ));
        }
    }
    Ok((out, specials))
}

/// What an in-place repair did (or, with `--dry-run`, would do).
#[derive(Debug)]
pub struct InPlaceSummary {
    pub report: Report,
    pub entries: Vec<ManifestEntry>,
    /// FIFOs, sockets and devices: left out of the view, left where they are.
    pub specials: Vec<PathBuf>,
    /// True when the backup held an interrupted run of this repair, now finished.
    pub resumed: bool,
    pub dry_run: bool,
}

fn read_manifest(path: &Path) -> Result<Option<Manifest>> {
    let bad = |what: String| RepairError::BadManifest {
        path: path.to_path_buf(),
        what,
    };
    let m: Manifest = match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| bad(format!("not a recoverfs backup manifest: {e}")))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(path, "could not read")(e)),
    };
    // The manifest steers writes and unlinks in the data directory: an entry
    // that escapes it, or lacks the replacement its action needs, is refused
    // before anything is touched.
    for e in &m.entries {
        let rel = e.rel();
        let inside = rel.components().count() > 0
            && rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(bad(format!(
                "entry {:?} is not a path inside the data directory",
                e.path
            )));
        }
        if (e.action == Action::Remove) != e.new.is_none() {
            return Err(bad(format!(
                "entry {:?}: action {:?} does not match its replacement",
                e.path, e.action
            )));
        }
    }
    Ok(Some(m))
}

/// Writes the manifest atomically: temporary file, fsync, rename, fsync of the directory.
fn write_manifest(backup: &Path, m: &Manifest, steps: &mut Steps) -> Result<()> {
    let path = backup.join(MANIFEST);
    let tmp = backup.join(format!(".{MANIFEST}.{TMP_SUFFIX}"));
    let _ = fs::remove_file(&tmp);
    let mut f = create_new(&tmp)?;
    let text = serde_json::to_string_pretty(m).expect("the manifest serializes") + "\n";
    f.write_all(text.as_bytes())
        .map_err(io_at(&tmp, "could not write"))?;
    fsync(&f, &tmp)?;
    steps.step("manifest written, not yet renamed");
    fs::rename(&tmp, &path).map_err(io_at(&path, "could not rename into place"))?;
    steps.step("manifest renamed, directory not yet synced");
    fsync_dir(backup)
}

/// True when the backup directory holds nothing but what a killed run may leave before its manifest.
fn backup_is_blank(backup: &Path) -> Result<bool> {
    match fs::read_dir(backup) {
        Ok(it) => {
            for e in it {
                let e = e.map_err(io_at(backup, "could not list"))?;
                if e.file_name() != OsStr::new(&format!(".{MANIFEST}.{TMP_SUFFIX}")) {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            Err(RepairError::NotADirectory(backup.to_path_buf()))
        }
        Err(e) => Err(io_at(backup, "could not list")(e)),
    }
}

/// `repair DATA --in-place --backup BACKUP [--dry-run]`.
pub fn repair_in_place(
    data: &Path,
    backup: Option<&Path>,
    dry_run: bool,
    opts: &AnalyzeOptions,
    progress: Option<Progress>,
) -> Result<InPlaceSummary> {
    let data_abs = check_data_dir(data)?;
    let Some(backup) = backup else {
        return Err(RepairError::NoBackup(data.to_path_buf()));
    };
    let backup_abs = resolve(backup)?;
    if backup_abs.starts_with(&data_abs) {
        return Err(RepairError::BackupInsideData {
            backup: backup.to_path_buf(),
            data: data.to_path_buf(),
        });
    }
    // Held until the repair returns: a second repair of the same tree waits for nothing, it refuses.
    let _lock = if dry_run { None } else { Some(lock_dir(data)?) };
    let manifest_path = backup.join(MANIFEST);
    let existing = if backup_is_blank(backup)? {
        None
    } else {
        match read_manifest(&manifest_path)? {
            Some(m) => Some(m),
            None => {
                return Err(RepairError::DifferentBackup {
                    path: backup.to_path_buf(),
                    why: format!("not empty, and no {MANIFEST}"),
                })
            }
        }
    };
    let source = data_abs.to_string_lossy().into_owned();
    if let Some(m) = &existing {
        if m.source != source
            || m.policy != opts.policy.as_str()
            || m.max_record_bytes != opts.scan.max_record_bytes
        {
            return Err(RepairError::DifferentBackup {
                path: backup.to_path_buf(),
                why: format!(
                    "of {} under {} with --max-record-bytes {}",
                    m.source, m.policy, m.max_record_bytes
                ),
            });
        }
    }
    let mut steps = Steps::from_env();
    // An interrupted apply phase resumes from the manifest, not from a new analysis.
    if let Some(m) = existing
        .clone()
        .filter(|m| m.state == ManifestState::BackedUp)
    {
        let (_, report) = analyze(data, opts, progress.as_ref())?;
        if !dry_run {
            apply(data, backup, m.clone(), &mut steps)?;
        }
        return Ok(InPlaceSummary {
            report,
            entries: m.entries,
            specials: vec![],
            resumed: true,
            dry_run,
        });
    }
    let (layout, report) = analyze(data, opts, progress.as_ref())?;
    let plan = build_plan(data, &layout, &report)?;
    let (entries, specials) = in_place_entries(data, &layout, &report, &plan)?;
    let mut summary = InPlaceSummary {
        report,
        entries,
        specials,
        resumed: false,
        dry_run,
    };
    match &existing {
        Some(m) if m.state == ManifestState::Applied => {
            if summary.entries.is_empty() {
                return Ok(summary);
            }
            return Err(RepairError::DifferentBackup {
                path: backup.to_path_buf(),
                why: "the completed backup of an earlier repair".into(),
            });
        }
        Some(m) => {
            // BackingUp: the source is untouched, so a fresh plan must be the same plan.
            let same = m.entries.len() == summary.entries.len()
                && m.entries
                    .iter()
                    .zip(&summary.entries)
                    .all(|(a, b)| a.same_plan(b));
            if !same {
                return Err(RepairError::DifferentBackup {
                    path: backup.to_path_buf(),
                    why: "an interrupted backup whose plan no longer matches the data directory"
                        .into(),
                });
            }
            summary.resumed = true;
        }
        None => {}
    }
    if dry_run || summary.entries.is_empty() {
        return Ok(summary);
    }
    let mut manifest = Manifest {
        schema: 1,
        tool: format!("recoverfs {}", env!("CARGO_PKG_VERSION")),
        source,
        policy: opts.policy.to_string(),
        max_record_bytes: opts.scan.max_record_bytes,
        state: ManifestState::BackingUp,
        entries: summary.entries.clone(),
    };
    fs::create_dir_all(backup).map_err(io_at(backup, "could not create"))?;
    if let Some(parent) = backup_abs.parent() {
        fsync_dir(parent)?;
    }
    write_manifest(backup, &manifest, &mut steps)?;
    back_up(data, backup, &mut manifest, &mut steps)?;
    manifest.state = ManifestState::BackedUp;
    write_manifest(backup, &manifest, &mut steps)?;
    apply(data, backup, manifest.clone(), &mut steps)?;
    summary.entries = manifest.entries;
    Ok(summary)
}

/// Streams a file into a new one, returning the CRC-32 of all of it and of its first `prefix` bytes.
fn copy_with_crc(
    src: &File,
    src_path: &Path,
    dst: &File,
    dst_path: &Path,
    len: u64,
    prefix: u64,
) -> Result<(u32, u32)> {
    let mut all = crc32fast::Hasher::new();
    let mut pre = crc32fast::Hasher::new();
    copy_chunks(src, src_path, dst, dst_path, 0, len, |chunk, at| {
        all.update(chunk);
        if at < prefix {
            pre.update(&chunk[..((prefix - at) as usize).min(chunk.len())]);
        }
    })?;
    Ok((all.finalize(), pre.finalize()))
}

fn tmp_beside(path: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{TMP_SUFFIX}"));
    path.with_file_name(name)
}

/// Phase 1: every original that will change or go, copied into the backup at its relative path.
fn back_up(data: &Path, backup: &Path, manifest: &mut Manifest, steps: &mut Steps) -> Result<()> {
    for e in manifest.entries.iter_mut() {
        let rel = e.rel();
        let Some(orig) = e.original.as_mut() else {
            continue;
        };
        let src = data.join(&rel);
        let dst = backup.join(&rel);
        let dir = dst.parent().expect("a relative path under the backup");
        fs::create_dir_all(dir).map_err(io_at(dir, "could not create"))?;
        let tmp = tmp_beside(&dst);
        let _ = fs::remove_file(&tmp);
        if orig.kind == "symlink" {
            let target = fs::read_link(&src).map_err(io_at(&src, "could not read the link"))?;
            std::os::unix::fs::symlink(&target, &tmp).map_err(io_at(&tmp, "could not create"))?;
            orig.crc32 = Some(crc32fast::hash(target.as_os_str().as_bytes()));
        } else {
            let f = open_checked(&src, orig.bytes)?;
            let out = create_new(&tmp)?;
            let prefix = e.new.as_ref().map_or(0, |n| n.bytes);
            let (all, pre) = copy_with_crc(&f, &src, &out, &tmp, orig.bytes, prefix)?;
            let m = f.metadata().map_err(io_at(&src, "could not stat"))?;
            Attrs::of(&m).apply(&out, &tmp, false)?;
            fsync(&out, &tmp)?;
            orig.crc32 = Some(all);
            if e.action == Action::Truncate {
                if let Some(n) = e.new.as_mut() {
                    n.crc32 = Some(pre);
                }
            }
        }
        steps.step("original copied, not yet renamed into the backup");
        fs::rename(&tmp, &dst).map_err(io_at(&dst, "could not rename into place"))?;
        steps.step("original renamed into the backup");
        fsync_dir(dir)?;
    }
    // Every directory of the backup, deepest first, so each new name is durable.
    let mut dirs: Vec<PathBuf> = manifest
        .entries
        .iter()
        .filter(|e| e.original.is_some())
        .flat_map(|e| {
            let mut v = Vec::new();
            let mut p = e.rel();
            while p.pop() && !p.as_os_str().is_empty() {
                v.push(backup.join(&p));
            }
            v
        })
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    for d in dirs {
        fsync_dir(&d)?;
    }
    fsync_dir(backup)
}

/// What a path of the data directory holds now, as far as a manifest entry cares.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Absent,
    /// A regular file: its size and CRC-32.
    File(u64, u32),
    /// A symlink: the length and CRC-32 of its target text.
    Symlink(u64, u32),
    Other,
}

fn found_at(path: &Path) -> Result<Found> {
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Absent),
        Err(e) => return Err(io_at(path, "could not stat")(e)),
    };
    if m.file_type().is_symlink() {
        let t = fs::read_link(path).map_err(io_at(path, "could not read the link"))?;
        let b = t.as_os_str().as_bytes();
        return Ok(Found::Symlink(b.len() as u64, crc32fast::hash(b)));
    }
    if !m.is_file() {
        return Ok(Found::Other);
    }
    let f = open_original(path).map_err(io_at(path, "could not open"))?;
    advise_sequential(&f);
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; BUF_BYTES.min(m.len() as usize).max(1)];
    let mut at = 0u64;
    loop {
        match f.read_at(&mut buf, at) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_at(path, "could not read")(e)),
        }
    }
    Ok(Found::File(at, h.finalize()))
}

fn found_original(o: &Option<Original>) -> Found {
    match o {
        None => Found::Absent,
        Some(o) if o.kind == "symlink" => Found::Symlink(o.bytes, o.crc32.unwrap_or_default()),
        Some(o) => Found::File(o.bytes, o.crc32.unwrap_or_default()),
    }
}

/// Phase 2: changes the data directory entry by entry. Each path holds either
/// its original or its replacement (renames are atomic), so a rerun skips what is done.
fn apply(data: &Path, backup: &Path, mut manifest: Manifest, steps: &mut Steps) -> Result<()> {
    let opts = ScanOptions {
        max_record_bytes: manifest.max_record_bytes,
    };
    for e in &manifest.entries {
        let rel = e.rel();
        let path = data.join(&rel);
        let dir = path.parent().expect("an entry inside the data directory");
        let now = found_at(&path)?;
        let done = match &e.new {
            Some(n) => Found::File(n.bytes, n.crc32.unwrap_or_default()),
            None => Found::Absent,
        };
        if now == done {
            continue;
        }
        if now != found_original(&e.original) {
            return Err(RepairError::SourceChanged {
                path,
                what: format!("holds neither its original ({}) nor its repair; the backup at {} still holds the original", e.path, backup.display()),
            });
        }
        if e.action == Action::Remove {
            fs::remove_file(&path).map_err(io_at(&path, "could not remove"))?;
            steps.step("original removed, directory not yet synced");
            fsync_dir(dir)?;
            continue;
        }
        let new = e.new.as_ref().expect("a replacement for every non-removal");
        let tmp = tmp_beside(&path);
        let _ = fs::remove_file(&tmp);
        let out = match e.action {
            Action::Truncate => {
                let stats = CopyStats::default();
                let orig_len = e.original.as_ref().map_or(0, |o| o.bytes);
                let f = write_copy(&path, &tmp, new.bytes, orig_len, &stats)?;
                let m = lstat(&path)?;
                Attrs::of(&m).apply(&f, &tmp, true)?;
                f
            }
            _ => {
                let log_name = rel.with_extension(FileKind::Log.ext());
                let log_path = data.join(&log_name);
                let base = match crate::engine::format::takhin::classify_name(
                    rel.file_name().unwrap_or_default().as_bytes(),
                ) {
                    crate::engine::format::takhin::NameMatch::Segment(b, _) => b,
                    _ => {
                        return Err(RepairError::BadManifest {
                            path: backup.join(MANIFEST),
                            what: format!("{}: not an index name", e.path),
                        })
                    }
                };
                // The .log's valid prefix is the same cut or not, so its rebuilt indexes are too.
                let (i, t) = rebuild_from(&log_path, base, &opts)?;
                let bytes = if rel.extension() == Some(OsStr::new(FileKind::Index.ext())) {
                    i
                } else {
                    t
                };
                if bytes.len() as u64 != new.bytes || Some(crc32fast::hash(&bytes)) != new.crc32 {
                    return Err(RepairError::SourceChanged {
                        path: log_path,
                        what: "no longer yields the index planned from it".into(),
                    });
                }
                let mut f = create_new(&tmp)?;
                f.write_all(&bytes)
                    .map_err(io_at(&tmp, "could not write"))?;
                let m = match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_file() => m,
                    _ => lstat(&log_path)?,
                };
                Attrs::of(&m).apply(&f, &tmp, true)?;
                f
            }
        };
        fsync(&out, &tmp)?;
        drop(out);
        steps.step("replacement written, not yet renamed over the original");
        fs::rename(&tmp, &path).map_err(io_at(&path, "could not rename over the original"))?;
        steps.step("replacement renamed, directory not yet synced");
        fsync_dir(dir)?;
    }
    manifest.state = ManifestState::Applied;
    write_manifest(backup, &manifest, steps)
}

// ---------------------------------------------------------------------------
// Output

/// The report's human lines about the logs, without its `check` header and advice.
fn report_body(report: &Report) -> String {
    // render_human is shared with `check`: its title names `check` and its advice
    // (`Next: ...`) proposes a repair, both wrong here, so those lines are dropped.
    let title = format!("recoverfs check {}", report.source);
    report
        .render_human()
        .lines()
        .filter(|l| !l.starts_with(&title) && !l.starts_with("Next: "))
        .fold(String::new(), |mut o, l| {
            let _ = writeln!(o, "{l}");
            o
        })
}

pub fn render_output(data: &Path, output: &Path, s: &OutputSummary) -> String {
    let mut o = format!(
        "recoverfs repair {} --output {} (policy {})\n",
        data.display(),
        output.display(),
        s.report.policy
    );
    o.push_str(&report_body(&s.report));
    let _ = writeln!(
        o,
        "Wrote {}: {} file(s), {} bytes ({} reflinked, {} by copy_file_range, {} by read/write, {} of rebuilt indexes); {} source entr(ies) left out.",
        output.display(),
        s.files,
        s.bytes,
        s.reflinked,
        s.kernel_copied,
        s.plain_copied,
        s.generated,
        s.left_out
    );
    let _ = writeln!(
        o,
        "Next: `recoverfs check {} --policy {}` should exit 0; then point the broker at it.",
        output.display(),
        s.report.policy
    );
    o
}

pub fn render_in_place(data: &Path, backup: &Path, s: &InPlaceSummary) -> String {
    let mut o = format!(
        "recoverfs repair {} --in-place --backup {} (policy {}){}\n",
        data.display(),
        backup.display(),
        s.report.policy,
        if s.dry_run { " --dry-run" } else { "" }
    );
    if s.resumed {
        let _ = writeln!(
            o,
            "Resuming the interrupted repair recorded in {}.",
            backup.join(MANIFEST).display()
        );
    } else {
        o.push_str(&report_body(&s.report));
    }
    if s.entries.is_empty() {
        let _ = writeln!(
            o,
            "Nothing to repair: the view under {} equals {}. Nothing changed.",
            s.report.policy,
            data.display()
        );
        return o;
    }
    for e in &s.entries {
        let verb = match e.action {
            Action::Truncate => "TRUNCATE",
            Action::Rebuild => "REBUILD ",
            Action::Create => "CREATE  ",
            Action::Remove => "REMOVE  ",
        };
        let sizes = match (&e.original, &e.new) {
            (Some(a), Some(b)) => format!("{} -> {} bytes", a.bytes, b.bytes),
            (None, Some(b)) => format!("{} bytes", b.bytes),
            (Some(a), None) => format!("{} bytes, moved to the backup", a.bytes),
            (None, None) => String::new(),
        };
        let _ = writeln!(o, "  {verb} {}: {sizes}; {}", e.path, e.why);
    }
    for p in &s.specials {
        let _ = writeln!(
            o,
            "  LEAVE    {}: not a regular file; left where it is",
            escape_path(p)
        );
    }
    let backed: Vec<&ManifestEntry> = s.entries.iter().filter(|e| e.original.is_some()).collect();
    let bytes: u64 = backed
        .iter()
        .filter_map(|e| e.original.as_ref())
        .map(|o| o.bytes)
        .sum();
    if s.dry_run {
        let _ = writeln!(
            o,
            "Dry run: {} change(s) planned; {} original(s), {bytes} bytes, would be copied to {} first. Nothing was touched.",
            s.entries.len(),
            backed.len(),
            backup.display()
        );
    } else {
        let _ = writeln!(
            o,
            "Repaired in place: {} change(s); {} original(s), {bytes} bytes, are in {} (manifest {MANIFEST}).",
            s.entries.len(),
            backed.len(),
            backup.display()
        );
        let _ = writeln!(
            o,
            "Next: `recoverfs check {} --policy {}` should exit 0.",
            data.display(),
            s.report.policy
        );
    }
    o
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
        let e = open_checked(&src_path, 150).unwrap_err();
        assert!(e.to_string().contains("is now 100 bytes, was 150"), "{e}");
    }
}
