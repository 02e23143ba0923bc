//! One segment's analysis: its scan, its original indexes' verdicts, and the file stamp it was made from.

use crate::engine::baseline::{compare, BlockSums, Change, FileSums, BLOCK_BYTES};
use crate::engine::format::takhin::FileKind;
use crate::engine::index::{IndexComparer, IndexKind, IndexVerdict};
use crate::engine::layout::{LogLayout, SegmentEntry};
use crate::engine::salvage::{salvage, Salvage};
use crate::engine::scan::{scan_segment, ReadAt, ScanOptions, SegmentScan};
use crate::engine::source::{advise_sequential, Source};
use serde::Serialize;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A source file that could not be read: which file, what failed, and how.
/// Reported as `unreadable`, never as corruption.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {what}: {message}", path.display())]
pub struct ReadError {
    pub path: PathBuf,
    /// The operation that failed ("could not open", "could not read").
    pub what: &'static str,
    pub kind: io::ErrorKind,
    pub message: String,
}

impl ReadError {
    pub fn new(path: &Path, what: &'static str, e: &io::Error) -> Self {
        ReadError {
            path: path.to_path_buf(),
            what,
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegmentStatus {
    Clean,
    Truncated,
    Unreadable,
}

impl SegmentStatus {
    /// The report's name for the status (its serde name too; the `status` xattr).
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentStatus::Clean => "clean",
            SegmentStatus::Truncated => "truncated",
            SegmentStatus::Unreadable => "unreadable",
        }
    }
}

/// Size, mtime, ctime, inode and device of a file when it was analysed: if any
/// changes, the analysis is stale. The ctime is what catches a same-size
/// overwrite whose mtime was put back (`touch -r`, `cp -p`, `rsync -t`): no
/// program can set it, and any write or attribute change moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl FileStamp {
    pub fn of(meta: &fs::Metadata) -> Self {
        FileStamp {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// The engine's verdict on one segment, before the log-level view is applied.
#[derive(Debug, Clone)]
pub struct SegmentAnalysis {
    pub base: u64,
    /// The scan, or why the `.log` could not be read.
    pub scan: Result<Arc<SegmentScan>, ReadError>,
    pub index: IndexVerdict,
    pub timeindex: IndexVerdict,
    /// The `.log` as it was when scanned.
    pub stamp: FileStamp,
    /// The runs found after the damage, when the analysis was asked to salvage
    /// (`None` otherwise, and for a clean or unreadable segment).
    pub salvage: Option<Arc<Salvage>>,
    /// The `.log`'s block sums, when asked for (`--save-baseline`) or compared (`--baseline`).
    pub sums: Option<FileSums>,
    /// What changed in the `.log` since the integrity baseline (`--baseline`).
    pub changed: Option<Change>,
}

impl SegmentAnalysis {
    pub fn status(&self) -> SegmentStatus {
        match &self.scan {
            Err(_) => SegmentStatus::Unreadable,
            Ok(s) if s.is_clean() => SegmentStatus::Clean,
            Ok(_) => SegmentStatus::Truncated,
        }
    }
}

fn open_index(source: &Source, rel: &Path, present: bool) -> Result<(fs::File, u64), IndexVerdict> {
    if !present {
        return Err(IndexVerdict::Missing);
    }
    match source.file(rel).and_then(|f| Ok((f.metadata()?.len(), f))) {
        Ok((len, f)) => {
            advise_sequential(&f);
            Ok((f, len))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(IndexVerdict::Missing),
        Err(e) => Err(IndexVerdict::Unreadable(e.to_string())),
    }
}

/// Scans one segment's `.log` and compares its original indexes with the rebuilt ones,
/// in one pass. `progress` is told how many `.log` bytes were scanned.
pub fn analyze_segment(
    source: &Source,
    log: &LogLayout,
    seg: &SegmentEntry,
    opts: &ScanOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> SegmentAnalysis {
    analyze_segment_with(source, log, seg, opts, false, progress)
}

/// [`analyze_segment`], and when `salvaging`, the runs of intact records after a
/// damage that is not the end of the file ([`salvage`], with the original `.index`
/// as evidence and the next real segment's base as the bound).
pub fn analyze_segment_with(
    source: &Source,
    log: &LogLayout,
    seg: &SegmentEntry,
    opts: &ScanOptions,
    salvaging: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> SegmentAnalysis {
    analyze_segment_tapped(source, log, seg, opts, salvaging, progress, None)
}

/// Sees every byte of a segment's `.log` the scan reads or steps over, in
/// position order, while the scan is sequential: a caller comparing the file
/// with another copy does so while the bytes are hot, instead of reading the
/// file a second time.
pub trait ReadTap {
    /// `bytes` are the `.log`'s at `pos`.
    fn read(&mut self, pos: u64, bytes: &[u8]);
    /// False once the tap needs no more bytes (the bytes the scan steps over are then not read for it).
    fn wants_more(&self) -> bool;
}

/// A `.log` whose reads are shown to a [`ReadTap`] (the scan's window reads
/// through it; salvage and the index comparison read the file directly). The
/// scan steps over the parts of values it does not need; those are read here,
/// in bounded chunks, for a tap that still wants them.
struct Tapped<'a, 't> {
    file: &'a fs::File,
    tap: std::cell::RefCell<&'a mut (dyn ReadTap + 't)>,
    /// Everything before this was shown to the tap.
    shown: std::cell::Cell<u64>,
}

impl Tapped<'_, '_> {
    /// Shows the tap the bytes from what it was last shown up to `end`, if it still wants them.
    fn show_up_to(&self, tap: &mut dyn ReadTap, end: u64) {
        let mut at = self.shown.get();
        if at >= end || !tap.wants_more() {
            return;
        }
        let mut gap = vec![0u8; ((end - at) as usize).min(crate::engine::scan::WINDOW_BYTES)];
        while at < end && tap.wants_more() {
            let n = ((end - at) as usize).min(gap.len());
            if crate::engine::scan::read_exact_at(self.file, &mut gap[..n], at).is_err() {
                return;
            }
            tap.read(at, &gap[..n]);
            at += n as u64;
            self.shown.set(at);
        }
    }
}

impl ReadAt for Tapped<'_, '_> {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let mut tap = self.tap.borrow_mut();
        self.show_up_to(&mut **tap, pos);
        let n = ReadAt::read_at(self.file, buf, pos)?;
        tap.read(pos, &buf[..n]);
        if pos <= self.shown.get() {
            self.shown.set(self.shown.get().max(pos + n as u64));
        }
        Ok(n)
    }

    fn next_data(&self, pos: u64) -> io::Result<Option<u64>> {
        self.file.next_data(pos)
    }
}

/// Shows the scan's bytes to two taps (each while it wants more).
struct Both<'a, 't> {
    first: Option<&'a mut (dyn ReadTap + 't)>,
    sums: &'a mut BlockSums,
}

impl ReadTap for Both<'_, '_> {
    fn read(&mut self, pos: u64, bytes: &[u8]) {
        if let Some(t) = self.first.as_mut() {
            if t.wants_more() {
                t.read(pos, bytes);
            }
        }
        self.sums.feed(pos, bytes);
    }
    fn wants_more(&self) -> bool {
        true
    }
}

/// [`analyze_segment_with`], showing the scan's reads of the `.log` to `tap`.
///
/// With an integrity baseline that lists the `.log`, its blocks are summed from
/// the bytes the scan reads (no second read) and compared; when bytes the scan
/// accepted changed since, the segment is analysed again with its valid prefix
/// ending before the first record that overlaps them (`changed-since-baseline`).
pub fn analyze_segment_tapped(
    source: &Source,
    log: &LogLayout,
    seg: &SegmentEntry,
    opts: &ScanOptions,
    salvaging: bool,
    progress: &(dyn Fn(u64) + Sync),
    tap: Option<&mut dyn ReadTap>,
) -> SegmentAnalysis {
    let log_rel = log.file_rel(seg.base, FileKind::Log);
    let entry = opts
        .baseline
        .as_ref()
        .and_then(|b| b.get(&log_rel).map(|e| (b.block_bytes, e)));
    if entry.is_none() && !opts.sum_blocks {
        return analyze_one(source, log, seg, opts, salvaging, progress, tap);
    }
    let block = entry.map_or(BLOCK_BYTES, |(b, _)| b);
    let mut sums = BlockSums::new(block);
    if let Some((_, e)) = entry {
        sums = sums.with_cut(e.size);
    }
    let mut both = Both {
        first: tap,
        sums: &mut sums,
    };
    let mut a = analyze_one(source, log, seg, opts, salvaging, progress, Some(&mut both));
    a.sums = sums.finish(a.stamp.size);
    let (Some((block, entry)), Some(now)) = (entry, a.sums.as_ref()) else {
        return a;
    };
    let Some(change) = compare(entry, now, block) else {
        return a;
    };
    a.changed = Some(change);
    let accepted_changed = matches!(&a.scan, Ok(s) if s.valid_bytes > change.from);
    if !accepted_changed {
        return a;
    }
    let cut = ScanOptions {
        changed: Some(change),
        ..opts.clone()
    };
    let sums = a.sums.take();
    let mut again = analyze_one(source, log, seg, &cut, salvaging, &|_| {}, None);
    again.sums = sums;
    again.changed = Some(change);
    again
}

fn analyze_one(
    source: &Source,
    log: &LogLayout,
    seg: &SegmentEntry,
    opts: &ScanOptions,
    salvaging: bool,
    progress: &(dyn Fn(u64) + Sync),
    tap: Option<&mut dyn ReadTap>,
) -> SegmentAnalysis {
    let log_rel = log.file_rel(seg.base, FileKind::Log);
    let log_path = source.display_path(&log_rel);
    let opened = source.file(&log_rel).and_then(|f| {
        let meta = f.metadata()?;
        Ok((f, meta))
    });
    let (file, meta) = match opened {
        Ok(x) => x,
        Err(e) => {
            return SegmentAnalysis {
                base: seg.base,
                scan: Err(ReadError::new(&log_path, "could not open", &e)),
                index: IndexVerdict::Unreadable("its .log is unreadable".into()),
                timeindex: IndexVerdict::Unreadable("its .log is unreadable".into()),
                stamp: FileStamp::default(),
                salvage: None,
                sums: None,
                changed: None,
            }
        }
    };
    advise_sequential(&file);
    let stamp = FileStamp::of(&meta);
    let idx = open_index(
        source,
        &log.file_rel(seg.base, FileKind::Index),
        seg.has_index,
    );
    let tidx = open_index(
        source,
        &log.file_rel(seg.base, FileKind::TimeIndex),
        seg.has_timeindex,
    );
    let mut ci = idx
        .as_ref()
        .ok()
        .map(|(f, len)| IndexComparer::new(IndexKind::Offset, f, *len));
    let mut ct = tidx
        .as_ref()
        .ok()
        .map(|(f, len)| IndexComparer::new(IndexKind::Time, f, *len));
    let visit = |m: &_| {
        if let Some(c) = ci.as_mut() {
            c.push(m);
        }
        if let Some(c) = ct.as_mut() {
            c.push(m);
        }
    };
    let result = match tap {
        None => scan_segment(&file, stamp.size, seg.base, opts, visit),
        Some(tap) => {
            let tapped = Tapped {
                file: &file,
                tap: std::cell::RefCell::new(tap),
                shown: std::cell::Cell::new(0),
            };
            let r = scan_segment(&tapped, stamp.size, seg.base, opts, visit);
            // The scan need not read the end of the last value: the tap sees it too.
            let mut tap = tapped.tap.borrow_mut();
            tapped.show_up_to(&mut **tap, stamp.size);
            r
        }
    };
    progress(stamp.size);
    match result {
        Ok(scan) => {
            let finish =
                |c: Option<IndexComparer<'_, fs::File>>,
                 early: &Result<(fs::File, u64), IndexVerdict>| match (c, early) {
                    (Some(c), _) => c.finish(scan.records),
                    (None, Err(v)) => v.clone(),
                    (None, Ok(_)) => unreachable!("a comparer exists for every opened index"),
                };
            let index = finish(ci, &idx);
            let timeindex = finish(ct, &tidx);
            let salvaged = if salvaging && scan.damage.is_some() {
                let next_base = log
                    .segments
                    .iter()
                    .map(|s| s.base)
                    .filter(|&b| b > seg.base)
                    .min();
                let evidence = idx.as_ref().ok().map(|(f, len)| (f as &dyn ReadAt, *len));
                match salvage(&file, stamp.size, &scan, evidence, next_base, opts) {
                    Ok(s) => Some(Arc::new(s)),
                    Err(e) => return unreadable(seg.base, &log_path, stamp, &e),
                }
            } else {
                None
            };
            SegmentAnalysis {
                base: seg.base,
                scan: Ok(Arc::new(scan)),
                index,
                timeindex,
                stamp,
                salvage: salvaged,
                sums: None,
                changed: None,
            }
        }
        Err(e) => unreadable(seg.base, &log_path, stamp, &e),
    }
}

/// A segment whose `.log` could not be read to the end: reported, never as corruption.
fn unreadable(base: u64, log_path: &Path, stamp: FileStamp, e: &io::Error) -> SegmentAnalysis {
    SegmentAnalysis {
        base,
        scan: Err(ReadError::new(log_path, "could not read", e)),
        index: IndexVerdict::Unreadable("its .log is unreadable".into()),
        timeindex: IndexVerdict::Unreadable("its .log is unreadable".into()),
        stamp,
        salvage: None,
        sums: None,
        changed: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::takhin::SegmentWriter;

    /// Collects what it is shown; wants bytes until it holds `stop_after`.
    struct Collect {
        seen: Vec<(u64, Vec<u8>)>,
        stop_after: usize,
    }

    impl ReadTap for Collect {
        fn read(&mut self, pos: u64, bytes: &[u8]) {
            self.seen.push((pos, bytes.to_vec()));
        }
        fn wants_more(&self) -> bool {
            self.seen.iter().map(|(_, b)| b.len()).sum::<usize>() < self.stop_after
        }
    }

    fn big_value_segment() -> (tempfile::TempDir, LogLayout, Vec<u8>) {
        let t = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::new(0);
        for i in 0..5u8 {
            // Values several windows long: the scan steps over most of each, the
            // last one's end included (it need not read a file's last bytes).
            w.append(i as i64, b"", b"small");
            w.append(
                i as i64,
                b"k",
                &vec![i; 3 * crate::engine::scan::WINDOW_BYTES + 17],
            );
        }
        w.write_to(t.path()).unwrap();
        let log = LogLayout {
            rel: PathBuf::new(),
            segments: vec![SegmentEntry {
                base: 0,
                has_index: true,
                has_timeindex: true,
            }],
            orphans: Vec::new(),
            unrecognized: Vec::new(),
        };
        let bytes = fs::read(t.path().join(log.file_rel(0, FileKind::Log))).unwrap();
        (t, log, bytes)
    }

    fn analyze(source: &Source, log: &LogLayout, tap: Option<&mut dyn ReadTap>) -> SegmentAnalysis {
        let opts = ScanOptions::default();
        analyze_segment_tapped(source, log, &log.segments[0], &opts, false, &|_| {}, tap)
    }

    #[test]
    fn a_tap_is_shown_every_byte_in_order_even_those_the_scan_steps_over() {
        let (t, log, bytes) = big_value_segment();
        let source = Source::open(t.path()).unwrap();
        let mut tap = Collect {
            seen: Vec::new(),
            stop_after: usize::MAX,
        };
        let a = analyze(&source, &log, Some(&mut tap));
        assert!(a.scan.as_ref().unwrap().is_clean());
        let mut whole = Vec::new();
        for (pos, b) in &tap.seen {
            assert_eq!(*pos, whole.len() as u64, "shown in order, each byte once");
            whole.extend_from_slice(b);
        }
        assert_eq!(whole, bytes);
        // The plain analysis gives the same verdict.
        let plain = analyze(&source, &log, None);
        assert_eq!(plain.scan.unwrap().valid_bytes, bytes.len() as u64);
    }

    #[test]
    fn a_tap_that_wants_no_more_is_not_read_for() {
        let (t, log, bytes) = big_value_segment();
        let source = Source::open(t.path()).unwrap();
        let mut tap = Collect {
            seen: Vec::new(),
            stop_after: 1,
        };
        analyze(&source, &log, Some(&mut tap));
        let shown: usize = tap.seen.iter().map(|(_, b)| b.len()).sum();
        assert!(
            shown < bytes.len() / 2,
            "the stepped-over value bytes are not read for a tap that stopped: {shown} of {}",
            bytes.len()
        );
    }
}
