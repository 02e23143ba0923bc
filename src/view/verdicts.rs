//! Source directories as last listed, segment verdicts (validated lazily, cached in a byte-bounded LRU), and the policy applied to them in one place.
//!
//! The source may change while mounted, so every verdict carries the
//! [`FileStamp`] of the `.log` it was computed from, and a verdict whose file
//! no longer has that stamp is thrown away and recomputed before it is used.

use crate::engine::analysis::assemble_log_healed;
use crate::engine::format::takhin::FileKind;
use crate::engine::layout::{escape_path, LogLayout, SegmentEntry};
use crate::engine::plan::{dir_children, visible_children, Node};
use crate::engine::policy::{visibility, Policy, ViewAction};
use crate::engine::replica::Replicas;
use crate::engine::report::LogReport;
use crate::engine::scan::ScanOptions;
use crate::engine::segment::{analyze_segment_with, FileStamp, SegmentAnalysis};
use crate::engine::source::{Entries, Source};
use crate::view::error::{source_err, Result, ViewError};
use crate::view::watch::Watcher;
use lru::LruCache;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// A source directory as last read, valid while its stamp is unchanged.
pub(crate) struct Listing {
    /// Distinguishes successive listings of one directory (for the point-in-time memo).
    generation: u64,
    stamp: FileStamp,
    pub entries: Entries,
    /// The entries as the view shows them, before the policy hides segments.
    pub children: BTreeMap<OsString, Node>,
    pub layout: Option<LogLayout>,
}

/// A cache slot: concurrent lookups of one segment wait on the same `OnceLock`.
#[derive(Default)]
struct Slot {
    cell: OnceLock<Arc<SegmentAnalysis>>,
    weight: AtomicU64,
}

type SegKey = (PathBuf, u64);

/// Indexes of [`Verdicts`]'s cache statistics.
const STAT_HIT: usize = 0;
const STAT_MISS: usize = 1;
const STAT_EVICTION: usize = 2;
const STAT_REVALIDATION: usize = 3;

/// A log's point-in-time actions and the listing generation they were computed for.
type PitMemo = (u64, Arc<Vec<ViewAction>>);

struct SegCache {
    lru: LruCache<SegKey, Arc<Slot>>,
    bytes: u64,
}

/// The segment's verdict under the view's policy.
pub(crate) struct SegView {
    pub analysis: Arc<SegmentAnalysis>,
    pub action: ViewAction,
    pub is_last: bool,
    /// The `.log`'s metadata as the verdict was checked against it (`None`: not a
    /// regular file any more): a lookup's attributes come from it, not another `stat`.
    pub log_meta: Option<fs::Metadata>,
}

/// Listings and verdicts of one source tree under one policy.
pub(crate) struct Verdicts {
    source: Arc<Source>,
    policy: Policy,
    scan: ScanOptions,
    /// Bytes of segment verdicts kept in memory.
    cache_bytes: u64,
    listings: Mutex<HashMap<PathBuf, Arc<Listing>>>,
    cache: Mutex<SegCache>,
    validations: AtomicU64,
    /// Verdict cache hits, misses, evictions and revalidations (for the metrics).
    stats: [AtomicU64; 4],
    generations: AtomicU64,
    watcher: OnceLock<Arc<Watcher>>,
    /// Point-in-time actions of every segment of a log, per listing generation;
    /// dropped when one of the log's segments is found changed.
    pit: Mutex<HashMap<PathBuf, PitMemo>>,
    /// The replicas ranges are healed from (`--replica`), if any.
    replicas: Option<Arc<Replicas>>,
}

impl Verdicts {
    pub fn new(source: Arc<Source>, policy: Policy, scan: ScanOptions, cache_bytes: u64) -> Self {
        Verdicts {
            source,
            policy,
            scan,
            cache_bytes,
            listings: Mutex::new(HashMap::new()),
            cache: Mutex::new(SegCache {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            validations: AtomicU64::new(0),
            stats: Default::default(),
            generations: AtomicU64::new(0),
            watcher: OnceLock::new(),
            pit: Mutex::new(HashMap::new()),
            replicas: None,
        }
    }

    /// Heals every log's lacking ranges from `replicas` (listing a log then
    /// validates all its segments, whatever the policy: what it lacks must be known).
    pub fn set_replicas(&mut self, replicas: Arc<Replicas>) {
        self.replicas = Some(replicas);
    }

    /// The replicas, when the view heals from some.
    pub fn replicas(&self) -> Option<&Arc<Replicas>> {
        self.replicas.as_ref()
    }

    /// The source tree: every read of it goes through here.
    pub fn source(&self) -> &Arc<Source> {
        &self.source
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Metadata of a source entry, symlinks not followed.
    pub fn lstat(&self, rel: &Path) -> Result<fs::Metadata> {
        let path = self.source.display_path(rel);
        self.source.metadata(rel).map_err(source_err(&path))
    }

    /// From now on every directory listed is watched by `w`; false if one already was set.
    pub fn set_watcher(&self, w: Arc<Watcher>) -> bool {
        self.watcher.set(w).is_ok()
    }

    /// A segment of the log `dir` changed: its point-in-time actions no longer hold.
    pub fn forget_log(&self, dir: &Path) {
        self.pit.lock().remove(dir);
    }

    /// Changes may have been missed anywhere: no log's point-in-time actions hold.
    pub fn forget_all_logs(&self) {
        self.pit.lock().clear();
    }

    /// Segments validated so far (each validation counts, re-validations too).
    pub fn validations(&self) -> u64 {
        self.validations.load(Ordering::Relaxed)
    }

    /// Verdict cache hits, misses, evictions and revalidations so far.
    pub fn cache_stats(&self) -> (u64, u64, u64, u64) {
        let [h, m, e, r] = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (get(h), get(m), get(e), get(r))
    }

    /// The segment's cached verdict if it is current (its `.log` still has the
    /// verdict's stamp), validating nothing and leaving the LRU order alone.
    pub fn cached_current(
        &self,
        layout: &LogLayout,
        seg: &SegmentEntry,
    ) -> Option<Arc<SegmentAnalysis>> {
        let key: SegKey = (layout.rel.clone(), seg.base);
        let a = self.cache.lock().lru.peek(&key)?.cell.get()?.clone();
        let m = self
            .source
            .metadata(&layout.file_rel(seg.base, FileKind::Log))
            .ok()
            .filter(|m| m.is_file());
        match m {
            Some(m) if a.stamp == FileStamp::of(&m) => Some(a),
            None if a.scan.is_err() => Some(a),
            _ => None,
        }
    }

    /// Segment verdicts currently cached, and their estimated bytes.
    pub fn cache_usage(&self) -> (usize, u64) {
        let c = self.cache.lock();
        (c.lru.len(), c.bytes)
    }

    /// The source directory `rel`, read again only when its stamp changed.
    pub fn listing(&self, rel: &Path) -> Result<Arc<Listing>> {
        let path = self.source.display_path(rel);
        let meta = self.source.metadata(rel).map_err(source_err(&path))?;
        if !meta.is_dir() {
            return Err(ViewError::NotDir);
        }
        let stamp = FileStamp::of(&meta);
        if let Some(l) = self.listings.lock().get(rel) {
            if l.stamp == stamp {
                return Ok(l.clone());
            }
        }
        let entries = self.source.read_dir(rel).map_err(source_err(&path))?;
        let (children, layout) = dir_children(rel, &entries);
        let l = Arc::new(Listing {
            generation: self.generations.fetch_add(1, Ordering::Relaxed),
            stamp,
            entries,
            children,
            layout,
        });
        self.listings.lock().insert(rel.to_path_buf(), l.clone());
        if let Some(w) = self.watcher.get() {
            w.watch(rel);
        }
        Ok(l)
    }

    fn validate(&self, layout: &LogLayout, seg: &SegmentEntry) -> SegmentAnalysis {
        let a = analyze_segment_with(
            &self.source,
            layout,
            seg,
            &self.scan,
            self.policy.salvages(),
            &|_| {},
        );
        self.validations.fetch_add(1, Ordering::Relaxed);
        let path = escape_path(&layout.file_rel(seg.base, FileKind::Log));
        match &a.scan {
            Ok(s) => match &s.damage {
                None => tracing::info!(
                    "validated {path}: clean, {} records, {} bytes",
                    s.records,
                    s.valid_bytes
                ),
                Some(d) => tracing::info!(
                    "validated {path}: truncated at byte {} ({}), {} records kept, {} bytes cut",
                    d.position,
                    d.kind(),
                    s.records,
                    s.bytes_cut()
                ),
            },
            Err(e) => tracing::warn!("validated {path}: unreadable: {e}"),
        }
        a
    }

    /// The segment's verdict, validated on first use and again whenever its `.log` changed.
    pub fn analysis(&self, layout: &LogLayout, seg: &SegmentEntry) -> Arc<SegmentAnalysis> {
        self.analysis_and_meta(layout, seg).0
    }

    /// [`Verdicts::analysis`], and the `.log`'s metadata it was checked against.
    fn analysis_and_meta(
        &self,
        layout: &LogLayout,
        seg: &SegmentEntry,
    ) -> (Arc<SegmentAnalysis>, Option<fs::Metadata>) {
        let key: SegKey = (layout.rel.clone(), seg.base);
        let log_rel = layout.file_rel(seg.base, FileKind::Log);
        let mut attempt = 0;
        loop {
            let meta = self.source.metadata(&log_rel).ok().filter(|m| m.is_file());
            let current = meta.as_ref().map(FileStamp::of);
            let slot = {
                let mut c = self.cache.lock();
                match c.lru.get(&key) {
                    Some(s) => s.clone(),
                    None => {
                        let s = Arc::new(Slot::default());
                        c.lru.put(key.clone(), s.clone());
                        s
                    }
                }
            };
            let mut fresh = false;
            let a = slot
                .cell
                .get_or_init(|| {
                    fresh = true;
                    Arc::new(self.validate(layout, seg))
                })
                .clone();
            if fresh {
                self.account(&key, &slot, weight(&key, &a));
                if attempt == 0 {
                    self.stats[STAT_MISS].fetch_add(1, Ordering::Relaxed);
                }
            }
            let up_to_date = match current {
                Some(st) => a.stamp == st,
                None => a.scan.is_err(),
            };
            attempt += 1;
            // A file that keeps changing is served from its latest verdict rather than chased forever.
            if up_to_date || attempt >= 3 {
                if !fresh && attempt == 1 {
                    self.stats[STAT_HIT].fetch_add(1, Ordering::Relaxed);
                }
                return (a, meta);
            }
            self.stats[STAT_REVALIDATION].fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                "{}: changed since it was validated; validating again",
                self.source.display_path(&log_rel).display()
            );
            {
                let mut c = self.cache.lock();
                if c.lru.peek(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    if let Some(s) = c.lru.pop(&key) {
                        c.bytes -= s.weight.load(Ordering::Relaxed);
                    }
                }
            }
            // No kernel invalidation from here: this may run inside a READ of
            // the file, and an invalidation landing while a READ is in flight
            // makes the kernel keep its old size and zero-fill a short reply.
            // Lookups and getattrs carry the new size (the kernel then drops
            // stale pages itself); the source watcher covers open readers.
            self.forget_log(&layout.rel);
        }
    }

    /// Counts a new verdict's bytes and evicts the least recently used ones beyond the budget.
    fn account(&self, key: &SegKey, slot: &Arc<Slot>, w: u64) {
        let mut c = self.cache.lock();
        if !c.lru.peek(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            return; // already replaced or evicted: not counted
        }
        slot.weight.store(w, Ordering::Relaxed);
        c.bytes += w;
        while c.bytes > self.cache_bytes && c.lru.len() > 1 {
            match c.lru.pop_lru() {
                Some((_, s)) => {
                    c.bytes -= s.weight.load(Ordering::Relaxed);
                    self.stats[STAT_EVICTION].fetch_add(1, Ordering::Relaxed);
                }
                None => break,
            }
        }
    }

    /// Calls `f` with the listing of the log `dir`, its layout and the index of segment `base`.
    fn with_segment<T>(
        &self,
        dir: &Path,
        base: u64,
        f: impl FnOnce(&Listing, &LogLayout, usize) -> T,
    ) -> Result<T> {
        let listing = self.listing(dir)?;
        Self::in_listing(&listing, base, f)
    }

    /// Like [`Verdicts::with_segment`], in a listing the caller already holds.
    fn in_listing<T>(
        listing: &Listing,
        base: u64,
        f: impl FnOnce(&Listing, &LogLayout, usize) -> T,
    ) -> Result<T> {
        let layout = listing.layout.as_ref().ok_or(ViewError::NotFound)?;
        let idx = layout
            .segments
            .iter()
            .position(|s| s.base == base)
            .ok_or(ViewError::NotFound)?;
        Ok(f(listing, layout, idx))
    }

    /// A segment's verdict under the policy. Under point-in-time a segment's
    /// fate depends on every segment before it, so those are validated too.
    pub fn seg_view(&self, dir: &Path, base: u64) -> Result<SegView> {
        self.seg_view_in(&*self.listing(dir)?, base)
    }

    /// [`Verdicts::seg_view`] in a listing of the log the caller already holds
    /// (one `stat` of the directory per request, not one per question).
    pub fn seg_view_in(&self, listing: &Listing, base: u64) -> Result<SegView> {
        Self::in_listing(listing, base, |listing, layout, idx| {
            // The segment itself is always checked against its source (and validated again if changed).
            let (analysis, log_meta) = self.analysis_and_meta(layout, &layout.segments[idx]);
            let action = self.action(listing, layout, idx, &analysis);
            SegView {
                analysis,
                action,
                is_last: idx + 1 == layout.segments.len(),
                log_meta,
            }
        })
    }

    /// The first offsets of the runs salvaged from segment `base` of the log `dir`,
    /// as last validated (nothing is validated): the files a change to it affects.
    pub fn cached_runs(&self, dir: &Path, base: u64) -> Vec<u64> {
        let c = self.cache.lock();
        let Some(slot) = c.lru.peek(&(dir.to_path_buf(), base)) else {
            return Vec::new();
        };
        slot.cell
            .get()
            .and_then(|a| a.salvage.as_ref())
            .map_or(Vec::new(), |s| {
                s.runs.iter().map(|r| r.first_offset).collect()
            })
    }

    /// The verdict of one segment regardless of policy (for `tails/`).
    pub fn current_analysis(&self, dir: &Path, base: u64) -> Result<Arc<SegmentAnalysis>> {
        self.with_segment(dir, base, |_, layout, idx| {
            self.analysis(layout, &layout.segments[idx])
        })
    }

    // ---- the policy, applied in one place ----

    /// The log as the policy shows it, from every segment's current verdict:
    /// the engine's [`assemble_log`], which asks [`visibility`]. Listing a log,
    /// the whole-tree report and point-in-time lookups all come through here.
    pub fn log_report(&self, layout: &LogLayout) -> LogReport {
        let analyses: Vec<SegmentAnalysis> = layout
            .segments
            .iter()
            .map(|s| (*self.analysis(layout, s)).clone())
            .collect();
        let last = layout.segments.last().map(|s| s.base);
        let healed = self
            .replicas
            .as_ref()
            .map(|r| r.heal_log(&self.source, layout, &analyses, self.policy));
        assemble_log_healed(layout, analyses, self.policy, |b| Some(b) == last, healed)
    }

    /// What the policy does with segment `idx` of a log, whose verdict is `analysis`.
    fn action(
        &self,
        listing: &Listing,
        layout: &LogLayout,
        idx: usize,
        analysis: &SegmentAnalysis,
    ) -> ViewAction {
        if self.policy == Policy::PointInTime {
            self.pit_actions(listing, layout)[idx]
        } else {
            // Under the other policies a segment's fate is its own: nothing else is validated.
            visibility(self.policy, std::slice::from_ref(analysis))[0]
        }
    }

    /// Every segment's action under point-in-time, computed once per listing of
    /// the log (and again whenever one of its segments is found changed), so a
    /// lookup in a log of n segments does not revalidate the n before it.
    fn pit_actions(&self, listing: &Listing, layout: &LogLayout) -> Arc<Vec<ViewAction>> {
        if let Some((generation, acts)) = self.pit.lock().get(&layout.rel) {
            if *generation == listing.generation {
                return acts.clone();
            }
        }
        let report = self.log_report(layout);
        let acts = Arc::new(report.segments.iter().map(|s| s.view).collect::<Vec<_>>());
        self.pit
            .lock()
            .insert(layout.rel.clone(), (listing.generation, acts.clone()));
        acts
    }

    /// A directory's entries as the policy lists them. Only point-in-time hides
    /// segments, and only salvage adds the runs (listing a log validates its
    /// segments then); the others list them all, unvalidated.
    pub fn listed_children(&self, listing: &Listing) -> BTreeMap<OsString, Node> {
        match (&listing.layout, self.policy) {
            (Some(layout), _) if self.replicas.is_some() => {
                visible_children(listing.children.clone(), Some(&self.log_report(layout)))
            }
            (Some(layout), Policy::PointInTime | Policy::Salvage) => {
                visible_children(listing.children.clone(), Some(&self.log_report(layout)))
            }
            _ => listing.children.clone(),
        }
    }
}

/// Estimated bytes a cached verdict holds.
fn weight(key: &SegKey, a: &SegmentAnalysis) -> u64 {
    // Heap bytes only: the damage is a plain value inside the scan, counted by its size_of.
    let scan = a
        .scan
        .as_ref()
        .map_or(0, |s| s.checkpoints.len() * std::mem::size_of::<u64>());
    // A salvage holds its runs, each with a scan and its checkpoints.
    let runs = a.salvage.as_ref().map_or(0, |s| {
        s.runs
            .iter()
            .map(|r| {
                std::mem::size_of::<crate::engine::salvage::SalvagedRun>()
                    + r.scan.checkpoints.len() * std::mem::size_of::<u64>()
            })
            .sum::<usize>()
    });
    (std::mem::size_of::<SegmentAnalysis>()
        + std::mem::size_of::<crate::engine::scan::SegmentScan>()
        + scan
        + runs
        + key.0.as_os_str().len()
        + 128) as u64
}
