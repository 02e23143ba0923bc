//! Replicas (`--replica DIR`): other brokers' copies of the data directory, read through a source door of their own; the offset ranges the primary lacks healed from their valid runs, and the records several copies hold compared field by field.
//!
//! # Healing
//!
//! A log matches the replica log at the same path relative to each data directory.
//! The primary **holds** an offset when a readable segment's valid prefix holds
//! it (whatever the policy shows of that segment), or, under `salvage`, a
//! salvaged run the view shows. It **lacks** every other offset from its first
//! segment's base on: cut tails, destroyed ranges, missing segments, a lost last
//! segment, and anything past its last offset. Offsets before the first base are
//! not healed: brokers delete old segments on their own retention schedules, so a
//! replica holding older offsets is normal, not a loss.
//!
//! A replica's **valid runs** are its segments' valid prefixes and the runs the
//! salvage analysis finds after mid-segment damage (whatever `--policy` says: a
//! replica is evidence, and only its valid records are taken). Replicas are tried
//! in command-line order; each lacking offset comes from the first that holds it.
//! A healed range never spans two replica runs: one that would becomes two
//! healed segments. `strict` repairs nothing, so it heals nothing (it still verifies).
//!
//! Names: a healed range is a segment named by its first offset. When a primary
//! file already has that name, and it is a segment whose view holds no record (an
//! empty valid prefix, or unreadable), the healed segment replaces it in the view;
//! any other name taken (an orphan index, an unrecognized name) refuses the range,
//! which is reported, not shown.
//!
//! # Verification
//!
//! For every offset held by two copies or more (the primary's held offsets, each
//! replica's valid runs), the records are compared: offset, timestamp, key and
//! value, never the 4 pad bytes (the writer leaves whatever its buffer held).
//! Where the byte ranges of a stretch of records have the same length in every
//! copy they are compared whole first; only a stretch that differs is compared
//! record by record.

use crate::engine::analysis::{analyze_segments_tapped, assemble, taken_names, AnalyzeOptions};
use crate::engine::format::takhin::{segment_file_name, FileKind};
use crate::engine::layout::{
    classify_dir, discover, discover_target_with, escape_path, resolve_target, Layout, LogLayout,
    SegmentEntry, TargetError,
};
use crate::engine::policy::Policy;
use crate::engine::report::{Divergence, HealedReport, HealedRole, ReplicaReport, Report};
use crate::engine::salvage::Shifted;
use crate::engine::scan::{scan_segment, ScanOptions, SegmentScan};
use crate::engine::segment::{analyze_segment_with, FileStamp, ReadTap, SegmentAnalysis};
use crate::engine::source::Source;
use crate::engine::stream::{primary_starts, settle, Known, Outcomes, ReplicaStream, StreamTee};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod compare;
mod pieces;

use compare::{same_bytes, Sub, Verifier};
pub use compare::{Prefer, MAX_DIVERGENCES_LISTED};
use pieces::{clip, complement, pieces_of, primary_pieces, split_at, Piece};

/// Why `--replica` was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("--replica {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("--replica {}: not a directory", path.display())]
    NotADir { path: PathBuf },
    #[error("--replica {}: this is the primary itself ({}); a replica must be another copy", replica.display(), primary.display())]
    IsPrimary { replica: PathBuf, primary: PathBuf },
    #[error("--replica {}: it is inside the primary {}; a replica must be another copy, outside it", replica.display(), primary.display())]
    InsidePrimary { replica: PathBuf, primary: PathBuf },
    #[error("--replica {}: the primary {} is inside it; a replica must be another copy, beside it", replica.display(), primary.display())]
    ContainsPrimary { replica: PathBuf, primary: PathBuf },
    #[error("--replica {}: given twice", path.display())]
    Twice { path: PathBuf },
    #[error("--replica needs a data or partition directory to check, not one segment file")]
    SingleSegment,
    #[error("{0}")]
    Prefer(String),
}

/// Why a check with replicas could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
}

/// One replica: its data directory, opened through a door of its own.
#[derive(Debug)]
pub struct Replica {
    /// 1 for the first `--replica`.
    pub index: usize,
    pub path: PathBuf,
    pub source: Arc<Source>,
}

impl Replica {
    /// The label a divergence gives this copy.
    pub fn label(&self) -> String {
        format!("replica {}", self.index)
    }
}

type SegKey = (usize, PathBuf, u64);
type ScanKey = (usize, PathBuf, u64, u64);
/// A replica log directory's layout (if it is a log), with the directory's stamp.
type Listed = (FileStamp, Option<LogLayout>);

/// The replicas of one run, with their segment analyses (made lazily, cached
/// while their `.log` keeps its stamp).
#[derive(Debug)]
pub struct Replicas {
    pub list: Vec<Replica>,
    scan: ScanOptions,
    /// A replica log directory's layout, by (replica, directory), with the directory's stamp.
    listings: Mutex<HashMap<(usize, PathBuf), Listed>>,
    analyses: Mutex<HashMap<SegKey, Arc<SegmentAnalysis>>>,
    /// Scans of healed ranges, by (replica, file, position, bytes), with the file's stamp.
    scans: Mutex<HashMap<ScanKey, (FileStamp, Arc<SegmentScan>)>>,
    validations: AtomicU64,
    /// Replica `.log`s the primary's scan found holding only its bytes (see `stream`).
    settled: AtomicU64,
    prefer: Prefer,
    /// Each log's healed ranges, with the primary segments' stamps and the policy
    /// they were found for (see [`Replicas::heal_log`]).
    healed_memo: Mutex<HashMap<PathBuf, HealedMemo>>,
    /// Replica `.log`s (replica, path) found byte-identical to the primary's of the same name.
    identical: Mutex<HashSet<(usize, PathBuf)>>,
    /// Replica `.log`s whose bytes are all the primary's at the same offsets (one
    /// replica only): not scanned by `check` (see [`Replicas::stream_identical`]),
    /// left out of the comparison.
    stream_identical: Mutex<HashSet<(usize, PathBuf)>>,
    /// Each log's substitutions (`--prefer`), with the stamps of the primary's
    /// segments they were found for.
    subs: Mutex<HashMap<PathBuf, SubsMemo>>,
}

/// A log's healed ranges, with the primary segments' stamps and the policy they were found for.
type HealedMemo = (Vec<FileStamp>, Policy, Arc<Vec<HealedReport>>);

/// A log's divergences (those listed) and how many more were found.
pub type Verdict = (Vec<Divergence>, u64);

/// A log's substitutions, with the stamps of the primary segments they were found for.
type SubsMemo = (Vec<FileStamp>, Arc<Vec<Sub>>);

/// (device, inode) of a path's file.
fn dev_ino(p: &Path) -> io::Result<(u64, u64)> {
    let m = fs::metadata(p)?;
    Ok((m.dev(), m.ino()))
}

/// True when `inner` is `outer` or below it: compared by canonical path, and by
/// (device, inode) up `inner`'s ancestors, so a bind mount of the same tree is caught too.
fn within(inner: &Path, outer: &Path) -> bool {
    if inner.starts_with(outer) {
        return true;
    }
    let Ok(target) = dev_ino(outer) else {
        return false;
    };
    inner
        .ancestors()
        .any(|a| dev_ino(a).is_ok_and(|d| d == target))
}

impl Replicas {
    /// Opens each replica directory (read-only, like the primary), refusing the
    /// primary itself, a replica inside the primary and a primary inside a replica.
    pub fn open(primary: &Path, dirs: &[PathBuf], scan: ScanOptions) -> Result<Self, ReplicaError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReplicaError::Io { path, source }
        };
        let pcanon = fs::canonicalize(primary).map_err(io_err(primary))?;
        let mut list = Vec::new();
        let mut seen: Vec<PathBuf> = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let meta = fs::metadata(dir).map_err(io_err(dir))?;
            if !meta.is_dir() {
                return Err(ReplicaError::NotADir { path: dir.clone() });
            }
            let canon = fs::canonicalize(dir).map_err(io_err(dir))?;
            let (replica, primary) = (dir.clone(), primary.to_path_buf());
            let same = canon == pcanon
                || (dev_ino(&canon).ok().is_some()
                    && dev_ino(&canon).ok() == dev_ino(&pcanon).ok());
            if same {
                return Err(ReplicaError::IsPrimary { replica, primary });
            }
            if within(&canon, &pcanon) {
                return Err(ReplicaError::InsidePrimary { replica, primary });
            }
            if within(&pcanon, &canon) {
                return Err(ReplicaError::ContainsPrimary { replica, primary });
            }
            if seen.contains(&canon) {
                return Err(ReplicaError::Twice { path: dir.clone() });
            }
            seen.push(canon);
            let source = Source::open(dir).map_err(io_err(dir))?;
            list.push(Replica {
                index: i + 1,
                path: dir.clone(),
                source: Arc::new(source),
            });
        }
        Ok(Replicas {
            list,
            scan,
            listings: Mutex::new(HashMap::new()),
            analyses: Mutex::new(HashMap::new()),
            scans: Mutex::new(HashMap::new()),
            validations: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            prefer: Prefer::Primary,
            identical: Mutex::new(HashSet::new()),
            stream_identical: Mutex::new(HashSet::new()),
            healed_memo: Mutex::new(HashMap::new()),
            subs: Mutex::new(HashMap::new()),
        })
    }

    /// Serves, where copies disagree, the record `prefer` chooses. Only
    /// `per-segment` and `salvage` views take it; [`Replicas::check_prefer`] says so.
    pub fn with_prefer(mut self, prefer: Prefer) -> Self {
        self.prefer = prefer;
        self
    }

    /// Refuses a `--prefer` the policy cannot apply: point-in-time and strict
    /// show the primary's records only (strict repairs nothing; point-in-time's
    /// prefix is the primary's own).
    pub fn check_prefer(prefer: Prefer, policy: Policy) -> Result<(), String> {
        if prefer != Prefer::Primary && matches!(policy, Policy::PointInTime | Policy::Strict) {
            return Err(format!(
                "--prefer replica or majority needs --policy per-segment or salvage (not {policy}): under {policy} the view serves only the primary's records"
            ));
        }
        Ok(())
    }

    /// Replica segments validated so far (for the laziness tests and the metrics).
    pub fn validations(&self) -> u64 {
        self.validations.load(Ordering::Relaxed)
    }

    /// Replica `.log`s known to hold only the primary's bytes from comparing them
    /// during the primary's scan (neither scanned nor compared again afterwards).
    pub fn settled_by_scan(&self) -> u64 {
        self.settled.load(Ordering::Relaxed)
    }

    /// The replica `r`'s log at `rel` (relative to its data directory), if it has one.
    pub fn log_layout(&self, r: usize, rel: &Path) -> Option<LogLayout> {
        let rep = &self.list[r];
        let meta = rep.source.metadata(rel).ok().filter(|m| m.is_dir())?;
        let stamp = FileStamp::of(&meta);
        let key = (r, rel.to_path_buf());
        if let Some((s, l)) = self.listings.lock().get(&key) {
            if *s == stamp {
                return l.clone();
            }
        }
        let layout = rep
            .source
            .read_dir(rel)
            .ok()
            .and_then(|e| classify_dir(rel, &e));
        self.listings.lock().insert(key, (stamp, layout.clone()));
        layout
    }

    /// A replica segment's analysis (salvage included), validated on first use and
    /// again when its `.log` changed.
    fn analysis(&self, r: usize, log: &LogLayout, idx: usize) -> Arc<SegmentAnalysis> {
        let seg = &log.segments[idx];
        let key = (r, log.rel.clone(), seg.base);
        let rep = &self.list[r];
        let rel = log.file_rel(seg.base, FileKind::Log);
        let current = rep
            .source
            .metadata(&rel)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| FileStamp::of(&m));
        if let Some(a) = self.analyses.lock().get(&key) {
            let fresh = match current {
                Some(st) => a.stamp == st,
                None => a.scan.is_err(),
            };
            if fresh {
                return a.clone();
            }
        }
        let a = Arc::new(analyze_segment_with(
            &rep.source,
            log,
            seg,
            &self.scan,
            true,
            &|_| {},
        ));
        self.validations.fetch_add(1, Ordering::Relaxed);
        self.analyses.lock().insert(key, a.clone());
        a
    }

    /// Replica `r` as the report describes it, and its logs the primary also has
    /// (`wanted`: the primary's log directories). Walks the replica's directories.
    pub fn describe(&self, r: usize, wanted: &HashSet<&Path>) -> (ReplicaReport, Vec<LogLayout>) {
        let rep = &self.list[r];
        let found = discover(&rep.source);
        let (matched, extra): (Vec<LogLayout>, Vec<LogLayout>) = found
            .logs
            .into_iter()
            .partition(|l| wanted.contains(l.rel.as_path()));
        let report = ReplicaReport {
            index: rep.index,
            path: rep.path.display().to_string(),
            source_access: rep.source.access(),
            logs_matched: matched.len() as u64,
            logs_not_in_primary: extra.iter().map(|l| escape_path(&l.rel)).collect(),
            problems: found.problems,
        };
        (report, matched)
    }

    /// Every replica as the report describes it (see [`Replicas::describe`]).
    pub fn reports(&self, primary_logs: &[LogLayout]) -> Vec<ReplicaReport> {
        let wanted: HashSet<&Path> = primary_logs.iter().map(|l| l.rel.as_path()).collect();
        (0..self.list.len())
            .map(|r| self.describe(r, &wanted).0)
            .collect()
    }

    /// Every segment of replica `r`'s logs `sub` analysed (salvage included), in
    /// parallel. A replica `.log` byte-identical to the primary's clean segment of
    /// the same name takes the primary's scan (the same bytes under the same name
    /// scan the same) and is remembered as identical, so verification does not
    /// compare it again. The primary's scan already compared most such files (see
    /// `stream`); only those it could not settle are compared here, reading both
    /// copies. Anything else is analysed on its own.
    fn analyze_replica(
        &self,
        r: usize,
        sub: &Layout,
        scanned: &Scanned,
        threads: usize,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Vec<Vec<SegmentAnalysis>> {
        let Scanned {
            layout: primary,
            per_log,
            known,
        } = *scanned;
        let mut clean: HashMap<(&Path, u64), &SegmentAnalysis> = HashMap::new();
        for (log, analyses) in primary.logs.iter().zip(per_log) {
            for a in analyses {
                if a.scan.as_ref().is_ok_and(|s| s.is_clean()) {
                    clean.insert((log.rel.as_path(), a.base), a);
                }
            }
        }
        let jobs: Vec<(usize, usize)> = sub
            .logs
            .iter()
            .enumerate()
            .flat_map(|(li, l)| (0..l.segments.len()).map(move |si| (li, si)))
            .collect();
        let by_log: HashMap<&Path, &[SegmentAnalysis]> = primary
            .logs
            .iter()
            .zip(per_log)
            .map(|(l, a)| (l.rel.as_path(), a.as_slice()))
            .collect();
        let results: Mutex<Vec<Option<Option<SegmentAnalysis>>>> =
            Mutex::new(vec![None; jobs.len()]);
        let next = AtomicU64::new(0);
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        }
        .clamp(1, jobs.len().max(1));
        let rep = &self.list[r];
        std::thread::scope(|sc| {
            for _ in 0..threads {
                sc.spawn(|| loop {
                    let j = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&(li, si)) = jobs.get(j) else { break };
                    let log = &sub.logs[li];
                    let seg = &log.segments[si];
                    let rel = log.file_rel(seg.base, FileKind::Log);
                    let pa = clean.get(&(log.rel.as_path(), seg.base));
                    // What the primary's scan settled first; the rest is compared now.
                    let reused = match (known.get(&(r, rel.clone())), pa) {
                        (Some(Known::Twin(stamp)), Some(pa)) => {
                            self.settled.fetch_add(1, Ordering::Relaxed);
                            self.identical.lock().insert((r, rel.clone()));
                            Some(SegmentAnalysis {
                                stamp: *stamp,
                                ..(*pa).clone()
                            })
                        }
                        (Some(Known::Inside), _) => {
                            self.settled.fetch_add(1, Ordering::Relaxed);
                            progress(rep.source.metadata(&rel).map_or(0, |m| m.len()));
                            self.stream_identical.lock().insert((r, rel));
                            results.lock()[j] = Some(None);
                            continue;
                        }
                        _ => pa.and_then(|pa| self.same_as_primary(r, primary, log, pa)),
                    };
                    let a = match reused {
                        Some(a) => {
                            progress(a.stamp.size);
                            Some(a)
                        }
                        // With one replica, a segment whose bytes are the primary's at
                        // the same offsets holds only the primary's records: nothing to
                        // compare, nothing to heal from; scanned only if healing asks.
                        None if self.list.len() == 1
                            && by_log.get(log.rel.as_path()).is_some_and(|pa| {
                                self.stream_identical(r, primary, pa, log, seg)
                            }) =>
                        {
                            let rel = log.file_rel(seg.base, FileKind::Log);
                            if let Ok(m) = rep.source.metadata(&rel) {
                                progress(m.len());
                            }
                            self.stream_identical.lock().insert((r, rel));
                            None
                        }
                        None => {
                            self.validations.fetch_add(1, Ordering::Relaxed);
                            Some(analyze_segment_with(
                                &rep.source,
                                log,
                                seg,
                                &self.scan,
                                true,
                                progress,
                            ))
                        }
                    };
                    results.lock()[j] = Some(a);
                });
            }
        });
        let mut out: Vec<Vec<SegmentAnalysis>> = vec![Vec::new(); sub.logs.len()];
        for ((li, _), a) in jobs.iter().zip(results.into_inner()) {
            out[*li].extend(a.expect("every job ran"));
        }
        out
    }

    /// The replica's analysis of its `.log` of the same name as the primary's clean
    /// segment `pa`, when the two files hold the same bytes; `None` otherwise (or
    /// on any error: the replica is then analysed on its own).
    fn same_as_primary(
        &self,
        r: usize,
        primary: &Layout,
        log: &LogLayout,
        pa: &SegmentAnalysis,
    ) -> Option<SegmentAnalysis> {
        let rel = log.file_rel(pa.base, FileKind::Log);
        let rf = self.list[r].source.file(&rel).ok()?;
        let rstamp = FileStamp::of(&rf.metadata().ok()?);
        if rstamp.size != pa.stamp.size {
            return None;
        }
        let pf = primary.source.file(&rel).ok()?;
        if FileStamp::of(&pf.metadata().ok()?) != pa.stamp {
            return None;
        }
        if !same_bytes(&[(&pf, 0, pa.stamp.size), (&rf, 0, rstamp.size)]).ok()? {
            return None;
        }
        self.identical.lock().insert((r, rel));
        Some(SegmentAnalysis {
            stamp: rstamp,
            ..pa.clone()
        })
    }

    /// True when every byte of replica `r`'s segment `seg` equals the primary's
    /// bytes from the record holding offset `seg.base` on, through the primary's
    /// contiguous valid prefixes (`analyses`): its records, whatever they are, are
    /// then the primary's, byte for byte.
    fn stream_identical(
        &self,
        r: usize,
        primary: &Layout,
        analyses: &[SegmentAnalysis],
        log: &LogLayout,
        seg: &crate::engine::layout::SegmentEntry,
    ) -> bool {
        let prefixes = clip(
            analyses
                .iter()
                .flat_map(|a| pieces_of(0, log, a, Some(&|_| false)))
                .collect(),
        );
        let rel = log.file_rel(seg.base, FileKind::Log);
        let Ok(rf) = self.list[r].source.file(&rel) else {
            return false;
        };
        let Ok(len) = rf.metadata().map(|m| m.len()) else {
            return false;
        };
        let Some(mut i) = prefixes
            .iter()
            .position(|p| p.from <= seg.base && seg.base < p.to)
        else {
            return false;
        };
        let (mut o, mut done) = (seg.base, 0u64);
        while done < len {
            // The first prefix holds `seg.base`; each next one must start where it ends.
            let Some(p) = prefixes.get(i).filter(|p| p.from == o || done == 0) else {
                return false;
            };
            let Ok(pf) = primary.source.file(&p.file) else {
                return false;
            };
            let Ok(from) = p.position_of(&pf, o) else {
                return false;
            };
            let end = p.start + p.scan.valid_bytes;
            let n = (end - from).min(len - done);
            if n == 0 {
                return false;
            }
            if !same_bytes(&[(&pf, from, from + n), (&rf, done, done + n)]).unwrap_or(false) {
                return false;
            }
            done += n;
            o = p.to;
            i += 1;
        }
        len > 0
    }

    /// Keeps analyses made elsewhere (the parallel whole-tree pass of `check`).
    fn remember(&self, r: usize, log: &LogLayout, analyses: Vec<SegmentAnalysis>) {
        let mut c = self.analyses.lock();
        for a in analyses {
            c.insert((r, log.rel.clone(), a.base), Arc::new(a));
        }
    }

    /// The valid runs of replica `r`'s log `log` that may hold offsets in `wanted`
    /// (only those segments are validated), in offset order, overlaps clipped.
    /// A segment found to hold only the primary's bytes (`check`, one replica) can
    /// heal nothing and differs in nothing: it is left out.
    fn valid_pieces(&self, r: usize, log: &LogLayout, wanted: &[(u64, u64)]) -> Vec<Piece> {
        let skip = self.stream_identical.lock().clone();
        self.pieces_but(r, log, wanted, &skip)
    }

    /// [`Replicas::valid_pieces`] without the segments `skip` names (replica, path).
    fn pieces_but(
        &self,
        r: usize,
        log: &LogLayout,
        wanted: &[(u64, u64)],
        skip: &HashSet<(usize, PathBuf)>,
    ) -> Vec<Piece> {
        let mut pieces = Vec::new();
        for (i, seg) in log.segments.iter().enumerate() {
            if skip.contains(&(r, log.file_rel(seg.base, FileKind::Log))) {
                continue;
            }
            // A segment (and what salvage finds in it) holds offsets from its base
            // up to the next segment's base at most.
            let end = log.segments.get(i + 1).map_or(u64::MAX, |s| s.base);
            if !wanted.iter().any(|&(a, b)| a < end && seg.base < b) {
                continue;
            }
            let a = self.analysis(r, log, i);
            pieces.extend(pieces_of(r + 1, log, &a, None));
        }
        clip(pieces)
    }

    /// The offset ranges of the primary log `log` (its segments' `analyses`)
    /// healed from the replicas, under `policy` (see the module docs).
    pub fn heal_log(
        &self,
        primary: &Arc<Source>,
        log: &LogLayout,
        analyses: &[SegmentAnalysis],
        policy: Policy,
    ) -> Vec<HealedReport> {
        if policy == Policy::Strict {
            return Vec::new();
        }
        // A mount asks on every lookup in the log: the answer is kept while the
        // primary's segments and every file it reads from keep their stamps.
        let stamps: Vec<FileStamp> = analyses.iter().map(|a| a.stamp).collect();
        if let Some((st, p, healed)) = self.healed_memo.lock().get(&log.rel) {
            let current = healed.iter().all(|h| {
                h.source.as_ref().is_some_and(|src| {
                    src.metadata(&h.file)
                        .is_ok_and(|m| FileStamp::of(&m) == h.file_stamp)
                })
            });
            if *st == stamps && *p == policy && current {
                return healed.as_ref().clone();
            }
        }
        let mut out = self.heal_lacking(log, analyses, policy);
        if self.prefer != Prefer::Primary && Self::check_prefer(self.prefer, policy).is_ok() {
            let subs = self.substitutions(primary, log, analyses, policy);
            out.extend(self.preferred(primary, log, analyses, policy, &subs));
            out.sort_by_key(|h| h.from_offset);
        }
        self.healed_memo
            .lock()
            .insert(log.rel.clone(), (stamps, policy, Arc::new(out.clone())));
        out
    }

    /// The substitutions `--prefer` makes in a log: found by comparing its copies,
    /// once per state of the primary's segments.
    fn substitutions(
        &self,
        primary: &Source,
        log: &LogLayout,
        analyses: &[SegmentAnalysis],
        policy: Policy,
    ) -> Arc<Vec<Sub>> {
        let stamps: Vec<FileStamp> = analyses.iter().map(|a| a.stamp).collect();
        if let Some((st, subs)) = self.subs.lock().get(&log.rel) {
            if *st == stamps {
                return subs.clone();
            }
        }
        self.verify(primary, log, analyses, policy).2
    }

    /// The files that serve each substitution: the preferred record from its
    /// replica, and the primary's records around it in the same segment (or run)
    /// as parts of their own. A piece whose parts cannot all be made is left whole.
    fn preferred(
        &self,
        primary: &Arc<Source>,
        log: &LogLayout,
        analyses: &[SegmentAnalysis],
        policy: Policy,
        subs: &[Sub],
    ) -> Vec<HealedReport> {
        let mut out = Vec::new();
        if subs.is_empty() {
            return out;
        }
        let taken = taken_names(log);
        let me = Copy {
            source: primary,
            label: "primary".into(),
            index: 0,
        };
        for p in primary_pieces(log, analyses, policy, &taken) {
            let inside: Vec<Sub> = subs
                .iter()
                .copied()
                .filter(|s| p.from <= s.offset && s.offset < p.to)
                .collect();
            if inside.is_empty() {
                continue;
            }
            let mut parts = Vec::new();
            let mut at = p.from;
            let mut whole = true;
            // Each part in its role; a part that cannot be made leaves the piece whole.
            let mut push = |h: Option<HealedReport>, role| match h {
                Some(mut h) => {
                    h.role = role;
                    parts.push(h);
                }
                None => whole = false,
            };
            for sub in inside {
                if at < sub.offset {
                    let own = self.range_of(&me, log, &p, at, sub.offset, analyses, &taken);
                    push(own, HealedRole::PrimarySplit);
                }
                let from_replica = self.log_layout(sub.replica, &log.rel).and_then(|rlog| {
                    let o = sub.offset;
                    let rp = self
                        .valid_pieces(sub.replica, &rlog, &[(o, o + 1)])
                        .into_iter()
                        .find(|q| q.from <= o && o < q.to)?;
                    self.healed(sub.replica, log, &rp, o, o + 1, analyses, &taken)
                });
                push(from_replica, HealedRole::Preferred);
                at = sub.offset + 1;
            }
            if at < p.to {
                let own = self.range_of(&me, log, &p, at, p.to, analyses, &taken);
                push(own, HealedRole::PrimarySplit);
            }
            // The first part takes the piece's own name (and replaces it); the
            // others' names must be free, or the piece stays as it was.
            for h in parts.iter_mut() {
                if h.from_offset == p.from {
                    h.refused = None;
                    h.replaces = Some(h.view_path.clone());
                }
            }
            if whole && parts.iter().all(|h| h.shown()) {
                out.extend(parts);
            }
        }
        out
    }

    /// The ranges the primary lacks, healed (see the module docs).
    fn heal_lacking(
        &self,
        log: &LogLayout,
        analyses: &[SegmentAnalysis],
        policy: Policy,
    ) -> Vec<HealedReport> {
        let Some(start) = log.segments.first().map(|s| s.base) else {
            return Vec::new();
        };
        let taken = taken_names(log);
        let held = primary_pieces(log, analyses, policy, &taken);
        // Split where a primary segment holds no record, so the range healed from its
        // base takes its name (and replaces it) rather than running past it.
        let empty: Vec<u64> = analyses
            .iter()
            .filter(|a| a.scan.as_ref().map_or(true, |s| s.records == 0))
            .map(|a| a.base)
            .collect();
        let mut lacking = split_at(complement(start, &held), &empty);
        let mut out = Vec::new();
        for r in 0..self.list.len() {
            if lacking.is_empty() {
                break;
            }
            let Some(rlog) = self.log_layout(r, &log.rel) else {
                continue;
            };
            for p in self.valid_pieces(r, &rlog, &lacking) {
                let mut next = Vec::new();
                for &(a, b) in &lacking {
                    let (x, y) = (a.max(p.from), b.min(p.to));
                    if x >= y {
                        next.push((a, b));
                        continue;
                    }
                    if let Some(h) = self.healed(r, log, &p, x, y, analyses, &taken) {
                        out.push(h);
                        if a < x {
                            next.push((a, x));
                        }
                        if y < b {
                            next.push((y, b));
                        }
                    } else {
                        next.push((a, b));
                    }
                }
                lacking = next;
            }
        }
        out.sort_by_key(|h| h.from_offset);
        out
    }

    /// The healed range `[x, y)` of piece `p` of replica `r`: its bytes found and
    /// scanned as a segment of its own; `None` if the replica changed since.
    #[allow(clippy::too_many_arguments)]
    fn healed(
        &self,
        r: usize,
        log: &LogLayout,
        p: &Piece,
        x: u64,
        y: u64,
        analyses: &[SegmentAnalysis],
        taken: &HashSet<OsString>,
    ) -> Option<HealedReport> {
        let rep = &self.list[r];
        let copy = Copy {
            source: &rep.source,
            label: rep.path.display().to_string(),
            index: rep.index,
        };
        self.range_of(&copy, log, p, x, y, analyses, taken)
    }

    /// [`Replicas::healed`] from any copy (the primary is copy 0).
    #[allow(clippy::too_many_arguments)]
    fn range_of(
        &self,
        copy: &Copy<'_>,
        log: &LogLayout,
        p: &Piece,
        x: u64,
        y: u64,
        analyses: &[SegmentAnalysis],
        taken: &HashSet<OsString>,
    ) -> Option<HealedReport> {
        let file = copy.source.file(&p.file).ok()?;
        let meta = file.metadata().ok()?;
        let stamp = FileStamp::of(&meta);
        let from = p.position_of(&file, x).ok()?;
        let to = p.position_of(&file, y).ok()?;
        let key = (copy.index, p.file.clone(), from, to - from);
        let cached = self
            .scans
            .lock()
            .get(&key)
            .filter(|(s, _)| *s == stamp)
            .map(|(_, sc)| sc.clone());
        let scan = match cached {
            Some(s) => s,
            None => {
                let view = Shifted {
                    src: &file,
                    start: from,
                    len: to - from,
                };
                let s = scan_segment(&view, to - from, x, &self.scan, |_| {}).ok()?;
                if s.damage.is_some() || s.records != y - x {
                    return None; // the replica changed since it was analysed
                }
                let s = Arc::new(s);
                self.scans.lock().insert(key, (stamp, s.clone()));
                s
            }
        };
        let name = segment_file_name(x, FileKind::Log);
        let view_rel = log.rel.join(&name);
        let mut h = HealedReport {
            from_offset: x,
            to_offset: y - 1,
            records: y - x,
            replica: copy.label.clone(),
            replica_index: copy.index,
            path: escape_path(&p.file),
            position: from,
            bytes: to - from,
            view_path: escape_path(&view_rel),
            replaces: None,
            refused: None,
            scan,
            file: p.file.clone(),
            file_stamp: stamp,
            source: Some(copy.source.clone()),
            role: HealedRole::Healed,
        };
        let names = [FileKind::Log, FileKind::Index, FileKind::TimeIndex]
            .map(|k| OsString::from(segment_file_name(x, k)));
        if names.iter().any(|n| taken.contains(n)) {
            let empty = analyses
                .iter()
                .find(|a| a.base == x)
                .is_some_and(|a| a.scan.as_ref().map_or(true, |s| s.records == 0));
            if empty {
                h.replaces = Some(escape_path(&view_rel));
            } else {
                h.refused = Some(format!(
                    "a file of that name already exists in the primary ({}); healed from {}",
                    escape_path(&log.rel),
                    escape_path(&p.file)
                ));
            }
        }
        Some(h)
    }

    /// Compares every record the primary log and the replicas both hold (see the
    /// module docs): the divergences (at most [`MAX_DIVERGENCES_LISTED`]) and how
    /// many more were found.
    pub fn verify_log(
        &self,
        primary: &Source,
        log: &LogLayout,
        analyses: &[SegmentAnalysis],
        policy: Policy,
    ) -> (Vec<Divergence>, u64) {
        let (found, more, _) = self.verify(primary, log, analyses, policy);
        (found, more)
    }

    /// [`Replicas::verify_log`] of every log of `layout` (its segments' analyses
    /// `per_log`), `opts.threads` logs at a time (0: one per core), in layout order.
    pub fn verify_all(
        &self,
        layout: &Layout,
        per_log: &[Vec<SegmentAnalysis>],
        opts: &AnalyzeOptions,
    ) -> Vec<Verdict> {
        let n = layout.logs.len();
        let results: Mutex<Vec<Option<Verdict>>> = Mutex::new(vec![None; n]);
        let next = AtomicU64::new(0);
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            opts.threads
        }
        .clamp(1, n.max(1));
        std::thread::scope(|sc| {
            for _ in 0..threads {
                sc.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let (Some(log), Some(analyses)) = (layout.logs.get(i), per_log.get(i)) else {
                        break;
                    };
                    let v = self.verify_log(&layout.source, log, analyses, opts.policy);
                    results.lock()[i] = Some(v);
                });
            }
        });
        results
            .into_inner()
            .into_iter()
            .map(|v| v.unwrap_or_default())
            .collect()
    }

    /// [`Replicas::verify_log`], and the substitutions `--prefer` makes (remembered).
    fn verify(
        &self,
        primary: &Source,
        log: &LogLayout,
        analyses: &[SegmentAnalysis],
        policy: Policy,
    ) -> (Vec<Divergence>, u64, Arc<Vec<Sub>>) {
        let taken = taken_names(log);
        let mut copies: Vec<(String, &Source, Vec<Piece>)> = vec![(
            "primary".to_string(),
            primary,
            primary_pieces(log, analyses, policy, &taken),
        )];
        let mut who = vec![None];
        for (r, rep) in self.list.iter().enumerate() {
            if let Some(rlog) = self.log_layout(r, &log.rel) {
                let all = [(0, u64::MAX)];
                copies.push((rep.label(), &rep.source, self.valid_pieces(r, &rlog, &all)));
                who.push(Some(r));
            }
        }
        let identical = self.identical.lock().clone();
        let mut v = Verifier {
            copies,
            identical,
            who,
            prefer: self.prefer,
            found: Vec::new(),
            more: 0,
            subs: Vec::new(),
            max: self.scan.max_record_bytes,
        };
        v.run();
        let subs = Arc::new(v.subs);
        let stamps: Vec<FileStamp> = analyses.iter().map(|a| a.stamp).collect();
        self.subs
            .lock()
            .insert(log.rel.clone(), (stamps, subs.clone()));
        (v.found, v.more, subs)
    }
}

/// The primary as its scan left it: its layout, each log's segment analyses,
/// and the replica `.log`s the scan found holding only its bytes.
#[derive(Clone, Copy)]
struct Scanned<'a> {
    layout: &'a Layout,
    per_log: &'a [Vec<SegmentAnalysis>],
    known: &'a HashMap<(usize, PathBuf), Known>,
}

/// A copy ranges are read from: its door, its label in the report, its number (0: the primary).
struct Copy<'a> {
    source: &'a Arc<Source>,
    label: String,
    index: usize,
}

/// `check PATH --replica DIR...`: the primary analysed as usual, each replica's
/// matching logs analysed (salvage included, in parallel), the primary's lacking
/// ranges healed and every shared record compared. Returns the primary's layout,
/// the report, and the replicas (repair reads the healed bytes through them).
pub fn check_with_replicas(
    path: &Path,
    dirs: &[PathBuf],
    prefer: Prefer,
    opts: &AnalyzeOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Layout, Report, Arc<Replicas>), CheckError> {
    let target = resolve_target(path)?;
    if target.only_segment.is_some() {
        return Err(ReplicaError::SingleSegment.into());
    }
    let layout = discover_target_with(&target, opts.mounts)?;
    Replicas::check_prefer(prefer, opts.policy).map_err(ReplicaError::Prefer)?;
    let replicas =
        Arc::new(Replicas::open(&target.root, dirs, opts.scan.for_replicas())?.with_prefer(prefer));
    let t0 = std::time::Instant::now();
    let wanted: HashSet<&Path> = layout.logs.iter().map(|l| l.rel.as_path()).collect();
    let described: Vec<(ReplicaReport, Vec<LogLayout>)> = (0..replicas.list.len())
        .map(|r| replicas.describe(r, &wanted))
        .collect();
    // The primary's scan compares each replica log's stream as it goes (see
    // `stream`): a replica `.log` holding only the primary's bytes is then known
    // without reading the primary a second time.
    let by_rel: Vec<HashMap<&Path, &LogLayout>> = described
        .iter()
        .map(|(_, logs)| logs.iter().map(|l| (l.rel.as_path(), l)).collect())
        .collect();
    let streams: Vec<Vec<(ReplicaStream, &Source)>> = layout
        .logs
        .iter()
        .map(|plog| {
            by_rel
                .iter()
                .enumerate()
                .filter_map(|(r, logs)| {
                    let source = &*replicas.list[r].source;
                    let rlog = logs.get(plog.rel.as_path())?;
                    Some((ReplicaStream::new(r, source, rlog, plog)?, source))
                })
                .collect()
        })
        .collect();
    let starts: Vec<Vec<Option<u64>>> = layout
        .logs
        .iter()
        .zip(&streams)
        .map(|(l, st)| match st.is_empty() {
            true => Vec::new(),
            false => primary_starts(&layout.source, l),
        })
        .collect();
    let outcomes: Outcomes = Mutex::new(HashMap::new());
    let tap = |li: usize, seg: &SegmentEntry| -> Option<Box<dyn ReadTap + '_>> {
        let st = streams.get(li).filter(|st| !st.is_empty())?;
        let segs = &layout.logs[li].segments;
        let si = segs.binary_search_by_key(&seg.base, |s| s.base).ok()?;
        let start = starts[li].get(si).copied().flatten()?;
        Some(Box::new(StreamTee::new((li, si), start, st, &outcomes)))
    };
    let per_log = analyze_segments_tapped(&layout, &target, opts, progress, &tap);
    tracing::debug!("primary analysed in {:?}", t0.elapsed());
    let outcomes = outcomes.into_inner();
    let mut known = HashMap::new();
    for (li, plog) in layout.logs.iter().enumerate() {
        if !streams[li].is_empty() {
            known.extend(settle(
                li,
                &layout.source,
                plog,
                &per_log[li],
                &starts[li],
                &streams[li],
                &outcomes,
                replicas.list.len() == 1,
            ));
        }
    }
    drop(streams);
    tracing::debug!(
        "{} replica .logs known from the primary's scan",
        known.len()
    );
    let mut reports = Vec::new();
    for (r, (report, matched)) in described.into_iter().enumerate() {
        let sub = Layout {
            source: replicas.list[r].source.clone(),
            logs: matched,
            problems: Vec::new(),
        };
        let scanned = Scanned {
            layout: &layout,
            per_log: &per_log,
            known: &known,
        };
        for (log, analyses) in
            sub.logs
                .iter()
                .zip(replicas.analyze_replica(r, &sub, &scanned, opts.threads, progress))
        {
            replicas.remember(r, log, analyses);
        }
        reports.push(report);
    }
    // Every log's copies compared, logs in parallel: what the primary's scan settled
    // is skipped; the rest (records held by copies that differ somewhere, damaged or
    // re-cut stretches) is read from every copy once more.
    tracing::debug!("replicas analysed at {:?}", t0.elapsed());
    let verdicts = replicas.verify_all(&layout, &per_log, opts);
    tracing::debug!("copies compared at {:?}", t0.elapsed());
    let report = assemble(
        &layout,
        &target,
        opts,
        &path.display().to_string(),
        per_log,
        |log, analyses| Some(replicas.heal_log(&layout.source, log, analyses, opts.policy)),
    );
    let mut report = report.with_replicas(reports);
    for (log, (found, more)) in report.logs.iter_mut().zip(verdicts) {
        log.divergences = Some(found);
        log.divergences_not_listed = (more > 0).then_some(more);
    }
    // The summary counts the divergences now in the logs.
    let replicas_report = report.replicas.take().unwrap_or_default();
    let report = Report::new(
        &report.source,
        report.policy,
        report.source_access,
        report.logs,
        report.problems,
    )
    .with_not_crossed(&layout.source)
    .with_replicas(replicas_report);
    Ok((layout, report, replicas))
}
