//! Open files and directories: handles, opens that pin a verdict to the exact file read, reads that never pass the validated prefix, and their refresh when the source changes.

use crate::engine::format::takhin::{segment_file_name, FileKind};
use crate::engine::index::{read_rebuilt_index, IndexKind};
use crate::engine::layout::escape_path;
use crate::engine::policy::ViewAction;
use crate::engine::report::HealedReport;
use crate::engine::segment::{FileStamp, SegmentAnalysis};
use crate::engine::source::Source;
use crate::view::error::{source_err, Result, ViewError};
use crate::view::inodes::DirEntry;
use crate::view::verdicts::Verdicts;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What `open` decided about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// The content is what it was at the previous open: the kernel may keep its pages.
    pub keep_cache: bool,
    /// The content is generated per open (the report): bypass the page cache.
    pub direct_io: bool,
    /// The view of this file is the whole original as opened (a pass-through
    /// file, or a clean sealed segment's `.log`): it may be served by FUSE
    /// passthrough from [`Handles::backing_file`].
    pub whole: bool,
}

/// Which bytes of a segment a handle serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegPart {
    Log,
    Index(IndexKind),
    Tail,
    /// A salvaged run's `.log` (`index: None`) or rebuilt index; `first` names the run.
    Run {
        first: u64,
        index: Option<IndexKind>,
    },
}

struct SegHandle {
    /// The `.log` original, read with pread only.
    file: File,
    analysis: Arc<SegmentAnalysis>,
    dir: PathBuf,
    base: u64,
    part: SegPart,
}

/// A range healed from a replica: the replica's `.log`, opened through its door.
struct HealedHandle {
    file: File,
    healed: HealedReport,
    /// `None` for the `.log`, else which rebuilt index.
    index: Option<IndexKind>,
}

enum Handle {
    Segment(RwLock<SegHandle>),
    Healed(Box<HealedHandle>),
    Plain(File),
    Bytes(Arc<Vec<u8>>),
    Dir(Arc<[DirEntry]>),
}

/// Every open handle, and what each file was at its last open.
pub(crate) struct Handles {
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Stamp of each file at its last open, to tell the kernel whether its pages still hold.
    opened: Mutex<HashMap<u64, FileStamp>>,
}

impl Handles {
    pub fn new() -> Self {
        Handles {
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            opened: Mutex::new(HashMap::new()),
        }
    }

    fn add(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, Arc::new(h));
        fh
    }

    fn get(&self, fh: u64) -> Result<Arc<Handle>> {
        self.handles
            .lock()
            .get(&fh)
            .cloned()
            .ok_or(ViewError::BadHandle(fh))
    }

    pub fn release(&self, fh: u64) {
        self.handles.lock().remove(&fh);
    }

    /// True when the file is unchanged since its previous open (its cached pages still hold).
    fn same_as_last_open(&self, ino: u64, stamp: FileStamp) -> bool {
        self.opened.lock().insert(ino, stamp) == Some(stamp)
    }

    /// Opens a source file that is passed through unchanged.
    pub fn open_plain(&self, v: &Verdicts, ino: u64, rel: &Path) -> Result<Opened> {
        self.open_plain_in(v.source(), ino, rel)
    }

    /// Opens a file of `source` (the primary's, or a replica's) passed through unchanged.
    pub fn open_plain_in(&self, source: &Source, ino: u64, rel: &Path) -> Result<Opened> {
        let path = source.display_path(rel);
        let f = source.file(rel).map_err(source_err(&path))?;
        let m = f.metadata().map_err(source_err(&path))?;
        if !m.is_file() {
            return Err(ViewError::NotFound);
        }
        let stamp = FileStamp::of(&m);
        let keep_cache = self.same_as_last_open(ino, stamp);
        Ok(Opened {
            fh: self.add(Handle::Plain(f)),
            keep_cache,
            direct_io: changed_recently(stamp),
            whole: true,
        })
    }

    /// Opens a file of a range healed from a replica (`file`: the replica's `.log`,
    /// checked by the caller to be the file the range was scanned from).
    pub fn open_healed(
        &self,
        ino: u64,
        file: File,
        healed: HealedReport,
        index: Option<IndexKind>,
    ) -> Opened {
        let keep_cache = self.same_as_last_open(ino, healed.file_stamp);
        let direct_io = changed_recently(healed.file_stamp);
        Opened {
            fh: self.add(Handle::Healed(Box::new(HealedHandle {
                file,
                healed,
                index,
            }))),
            keep_cache,
            direct_io,
            whole: false,
        }
    }

    /// Opens bytes generated for this open (they bypass the page cache).
    pub fn open_bytes(&self, bytes: Arc<Vec<u8>>) -> Opened {
        Opened {
            fh: self.add(Handle::Bytes(bytes)),
            keep_cache: false,
            direct_io: true,
            whole: false,
        }
    }

    /// Opens a directory listed once, so `readdir` offsets stay stable while it is read.
    pub fn open_dir(&self, entries: Vec<DirEntry>) -> u64 {
        self.add(Handle::Dir(entries.into()))
    }

    /// The entries of an open directory.
    pub fn dir_entries(&self, fh: u64) -> Result<Arc<[DirEntry]>> {
        match &*self.get(fh)? {
            Handle::Dir(e) => Ok(e.clone()),
            _ => Err(ViewError::NotDir),
        }
    }

    /// Opens the `.log` behind a segment file and pins the verdict that matches it.
    pub fn open_segment(
        &self,
        v: &Verdicts,
        ino: u64,
        dir: &Path,
        base: u64,
        part: SegPart,
    ) -> Result<Opened> {
        let o = open_validated(v, dir, base, part)?;
        let keep_cache = self.same_as_last_open(ino, o.analysis.stamp);
        let direct_io = changed_recently(o.analysis.stamp);
        let whole = part == SegPart::Log && whole_sealed_log(&o);
        let h = SegHandle {
            file: o.file,
            analysis: o.analysis,
            dir: dir.to_path_buf(),
            base,
            part,
        };
        Ok(Opened {
            fh: self.add(Handle::Segment(RwLock::new(h))),
            keep_cache,
            direct_io,
            whole,
        })
    }

    /// The original behind an open file whose view is the whole original (a
    /// new descriptor of the same open file, opened through the source's door),
    /// for FUSE passthrough; `None` for anything else.
    pub fn backing_file(&self, fh: u64) -> Option<File> {
        match &*self.get(fh).ok()? {
            Handle::Plain(f) => f.try_clone().ok(),
            Handle::Segment(lock) => {
                let s = lock.read();
                (s.part == SegPart::Log).then(|| s.file.try_clone().ok())?
            }
            _ => None,
        }
    }

    /// Reads up to `size` bytes at `offset` from an open file into `buf[..n]`, returning `n`.
    pub fn read_into(
        &self,
        v: &Verdicts,
        fh: u64,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
    ) -> Result<usize> {
        let h = self.get(fh)?;
        let copy = |bytes: &[u8], buf: &mut Vec<u8>| {
            if buf.len() < bytes.len() {
                buf.resize(bytes.len(), 0);
            }
            buf[..bytes.len()].copy_from_slice(bytes);
            bytes.len()
        };
        match &*h {
            Handle::Plain(f) => Ok(read_unraced(f, offset, size as u64, u64::MAX, buf, None)?
                .expect("no prefix: never stale")),
            Handle::Bytes(b) => {
                let start = (offset.min(b.len() as u64)) as usize;
                let end = (start + size as usize).min(b.len());
                Ok(copy(&b[start..end], buf))
            }
            Handle::Dir(_) => Err(ViewError::IsDir),
            Handle::Healed(h) => read_healed(h, offset, size, buf),
            Handle::Segment(lock) => {
                // A change landing between the refresh and the read sends us round again.
                for _ in 0..3 {
                    refresh_handle(v, lock, offset, size)?;
                    if let Some(n) = read_segment(&lock.read(), offset, size, buf)? {
                        return Ok(n);
                    }
                }
                Err(ViewError::Refused {
                    path: format!("segment {}", lock.read().base),
                    why: "it kept changing while being read".into(),
                })
            }
        }
    }
}

/// Reads from a segment handle whose verdict is current; `None` if its file
/// changed since (not by an append) and the verdict must be refreshed first.
fn read_segment(s: &SegHandle, offset: u64, size: u32, buf: &mut Vec<u8>) -> Result<Option<usize>> {
    let scan = match &s.analysis.scan {
        Ok(scan) => scan.clone(),
        Err(e) => {
            return Err(ViewError::Refused {
                path: format!("segment {}", s.base),
                why: format!("unreadable: {e}"),
            })
        }
    };
    match s.part {
        // Never past the validated prefix, whatever the file holds now; an
        // append while reading does not touch the prefix.
        SegPart::Log => read_unraced(
            &s.file,
            offset,
            size as u64,
            scan.valid_bytes,
            buf,
            Some(s.analysis.stamp),
        ),
        SegPart::Tail => {
            let start = scan.valid_bytes.saturating_add(offset);
            read_unraced(&s.file, start, size as u64, scan.original_bytes, buf, None)
        }
        SegPart::Index(kind) => {
            let b =
                read_rebuilt_index(&s.file, &scan, kind, offset, size as u64).map_err(|err| {
                    ViewError::Source {
                        path: format!("segment {}", s.base),
                        err,
                    }
                })?;
            if buf.len() < b.len() {
                buf.resize(b.len(), 0);
            }
            buf[..b.len()].copy_from_slice(&b);
            Ok(Some(b.len()))
        }
        SegPart::Run { first, index } => read_run(s, first, index, offset, size, buf),
    }
}

/// Reads a healed range's file: its `.log` is the replica's bytes
/// `[position, position + bytes)`, never more, read only while the replica's
/// file keeps the stamp it was scanned with; its indexes are rebuilt from those bytes.
fn read_healed(h: &HealedHandle, offset: u64, size: u32, buf: &mut Vec<u8>) -> Result<usize> {
    let r = &h.healed;
    let changed = || ViewError::Refused {
        path: r.path.clone(),
        why: "the replica's file changed since the range was healed from it".into(),
    };
    match h.index {
        None => {
            let end = r.position + r.bytes;
            let Some(start) = r.position.checked_add(offset).filter(|&p| p < end) else {
                return Ok(0);
            };
            read_unraced(&h.file, start, size as u64, end, buf, Some(r.file_stamp))?
                .ok_or_else(changed)
        }
        Some(kind) => {
            let b = crate::view::healed::read_index(&h.file, r, kind, offset, size as u64)?;
            if buf.len() < b.len() {
                buf.resize(b.len(), 0);
            }
            buf[..b.len()].copy_from_slice(&b);
            Ok(b.len())
        }
    }
}

/// Reads a salvaged run's file: its `.log` is the original's bytes
/// `[position, end)`, never more; its indexes are rebuilt from those bytes.
fn read_run(
    s: &SegHandle,
    first: u64,
    index: Option<IndexKind>,
    offset: u64,
    size: u32,
    buf: &mut Vec<u8>,
) -> Result<Option<usize>> {
    let run = crate::view::runs::get(&s.analysis, first)?;
    match index {
        None => {
            let Some(start) = run.position.checked_add(offset).filter(|&p| p < run.end) else {
                return Ok(Some(0));
            };
            read_unraced(
                &s.file,
                start,
                size as u64,
                run.end,
                buf,
                Some(s.analysis.stamp),
            )
        }
        Some(kind) => {
            let b = crate::view::runs::read_index(&s.file, run, kind, offset, size as u64)?;
            if buf.len() < b.len() {
                buf.resize(b.len(), 0);
            }
            buf[..b.len()].copy_from_slice(&b);
            Ok(Some(b.len()))
        }
    }
}

/// True when the view of a segment's `.log` is the whole of the file opened
/// for it: the segment is clean, kept, not its log's last (sealed: nothing is
/// appended to it), and the file (`opened`: its metadata at open) still has the
/// size and stamp it was validated with.
fn whole_sealed_log(o: &OpenedSegment) -> bool {
    let Ok(scan) = &o.analysis.scan else {
        return false;
    };
    let clean = scan.damage.is_none() && scan.valid_bytes == scan.original_bytes;
    let unchanged = FileStamp::of(&o.meta) == o.analysis.stamp && o.meta.len() == scan.valid_bytes;
    clean && unchanged && !o.is_last && o.action == ViewAction::Kept
}

/// A segment's `.log` as opened, with the verdict computed on exactly that file.
struct OpenedSegment {
    file: File,
    /// The file's metadata when it was opened.
    meta: std::fs::Metadata,
    analysis: Arc<SegmentAnalysis>,
    action: ViewAction,
    is_last: bool,
}

/// Opens a segment's `.log` and returns it with a verdict computed on exactly that file.
fn open_validated(v: &Verdicts, dir: &Path, base: u64, part: SegPart) -> Result<OpenedSegment> {
    let rel = dir.join(segment_file_name(base, FileKind::Log));
    let path = v.source().display_path(&rel);
    let mut tries = 0;
    loop {
        let (analysis, action, is_last) = if part == SegPart::Tail {
            (v.current_analysis(dir, base)?, ViewAction::Truncated, false)
        } else {
            let sv = v.seg_view(dir, base)?;
            if !sv.action.listed() {
                return Err(ViewError::NotFound);
            }
            (sv.analysis, sv.action, sv.is_last)
        };
        if !action.serves() {
            return Err(ViewError::Refused {
                path: escape_path(&rel),
                why: match &analysis.scan {
                    Err(e) => format!("unreadable: {e}"),
                    Ok(_) => format!("damaged, and the policy is {}", v.policy()),
                },
            });
        }
        if let Err(e) = &analysis.scan {
            return Err(ViewError::Refused {
                path: escape_path(&rel),
                why: format!("unreadable: {e}"),
            });
        }
        let file = v.source().file(&rel).map_err(source_err(&path))?;
        let meta = file.metadata().map_err(source_err(&path))?;
        let stamp = FileStamp::of(&meta);
        tries += 1;
        // The file may change between the verdict and the open; retry so the pair matches.
        if stamp == analysis.stamp || tries >= 3 {
            return Ok(OpenedSegment {
                file,
                meta,
                analysis,
                action,
                is_last,
            });
        }
    }
}

/// If the file behind a handle changed since its verdict, validates it again
/// and reopens it, so reads never serve bytes that were not validated.
///
/// One exception keeps a segment that is still being appended to readable
/// without a rescan per read: when the same file only grew, a read that
/// stays inside the validated prefix is served from it as is (those bytes
/// were validated and an append does not move them); a read reaching the
/// end of the prefix validates again, to see the new records.
fn refresh_handle(v: &Verdicts, lock: &RwLock<SegHandle>, offset: u64, size: u32) -> Result<()> {
    let stale = |s: &SegHandle| {
        let Ok(m) = s.file.metadata() else {
            return true;
        };
        let (now, then) = (FileStamp::of(&m), s.analysis.stamp);
        if now == then {
            return false;
        }
        let appended = now.ino == then.ino && now.dev == then.dev && now.size > then.size;
        let end = offset.saturating_add(size as u64);
        let within = match (&s.analysis.scan, s.part) {
            (Ok(scan), SegPart::Log) => end < scan.valid_bytes,
            (Ok(scan), SegPart::Index(_)) => end < scan.index_bytes(),
            _ => false,
        };
        !(appended && within)
    };
    if !stale(&lock.read()) {
        return Ok(());
    }
    let mut s = lock.write();
    if !stale(&s) {
        return Ok(()); // another reader refreshed it first
    }
    let (dir, base, part) = (s.dir.clone(), s.base, s.part);
    let o = open_validated(v, &dir, base, part)?;
    s.file = o.file;
    s.analysis = o.analysis;
    Ok(())
}

/// Reads `[offset, offset+size)` clamped to `limit` into `buf`, with pread, retrying short reads.
fn pread_into(f: &File, offset: u64, size: u64, limit: u64, buf: &mut Vec<u8>) -> Result<usize> {
    if offset >= limit {
        return Ok(0);
    }
    let want = size.min(limit - offset) as usize;
    if buf.len() < want {
        buf.resize(want, 0);
    }
    let mut got = 0;
    while got < want {
        match f.read_at(&mut buf[got..want], offset + got as u64) {
            Ok(0) => break, // the file shrank: serve what is there, nothing stale
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                return Err(ViewError::Source {
                    path: "source file".into(),
                    err,
                })
            }
        }
    }
    Ok(got)
}

// ---- reads that never race with a change ----

/// A file whose last change (its ctime) is younger than this is still settling:
/// a write already under way when a read starts moves no timestamp during the
/// read, so the read waits until the last change is this old. Longer than a
/// coarse clock tick, far longer than one write of a file's bytes takes.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(10);
/// A file changed within this long is read twice, and served only if both reads agree.
const CONFIRM: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a read may keep meeting changes before it fails with EIO.
const RACE_BUDGET: std::time::Duration = std::time::Duration::from_millis(500);
/// A file changed within this long is opened with direct I/O: each read of it
/// reaches [`read_unraced`], and the kernel neither mixes cached pages of two
/// versions nor cuts a read at another version's size.
const RECENT: std::time::Duration = std::time::Duration::from_secs(5);

/// The wall-clock age of a stamp's last change (zero if in the future).
fn change_age(stamp: FileStamp) -> std::time::Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    std::time::Duration::from_nanos((now - stamp.ctime_ns).clamp(0, u64::MAX as i128) as u64)
}

fn changed_recently(stamp: FileStamp) -> bool {
    change_age(stamp) < RECENT
}

/// Reads like [`pread_into`] between two `fstat`s of the same fd, and returns
/// only bytes read while the file did not change: a read that raced with a
/// change is done again, and after [`RACE_BUDGET`] of changes fails with EIO.
/// It never returns bytes that no version of the file held.
///
/// `prefix`: for a segment's `.log`, the stamp its validated prefix was read
/// from. A change that only appended to that same file (same inode, larger)
/// leaves the prefix as it was, so it does not disturb a read of the prefix;
/// any other change since means the verdict is stale: `None`, nothing read.
fn read_unraced(
    f: &File,
    offset: u64,
    size: u64,
    limit: u64,
    buf: &mut Vec<u8>,
    prefix: Option<FileStamp>,
) -> Result<Option<usize>> {
    let stamp = || -> Result<FileStamp> {
        f.metadata()
            .map(|m| FileStamp::of(&m))
            .map_err(|err| ViewError::Source {
                path: "source file".into(),
                err,
            })
    };
    // `to` is `from` or `from` appended to.
    let grew = |from: FileStamp, to: FileStamp| {
        from == to || (to.ino == from.ino && to.dev == from.dev && to.size > from.size)
    };
    let start = std::time::Instant::now();
    loop {
        let before = stamp()?;
        if let Some(p) = prefix {
            if !grew(p, before) {
                return Ok(None);
            }
        }
        let age = change_age(before);
        // A prefix being appended to needs no settling: appends do not touch it.
        if prefix.is_none() && age < SETTLE {
            if start.elapsed() >= RACE_BUDGET {
                break;
            }
            std::thread::sleep(SETTLE - age);
            continue;
        }
        let n = pread_into(f, offset, size, limit, buf)?;
        // A write moves the timestamps when it starts, not when it ends: one that
        // began before `before` and was descheduled past SETTLE would go unseen. For
        // a file changed moments ago, the bytes must also read the same twice.
        let steady = prefix.is_some() || age >= CONFIRM || {
            let mut again = Vec::new();
            std::thread::yield_now();
            pread_into(f, offset, size, limit, &mut again)? == n && again[..n] == buf[..n]
        };
        let after = stamp()?;
        if steady && (after == before || (prefix.is_some() && grew(before, after))) {
            return Ok(Some(n));
        }
        if start.elapsed() >= RACE_BUDGET {
            break;
        }
    }
    Err(ViewError::Refused {
        path: "source file".into(),
        why: "it kept changing while being read".into(),
    })
}
