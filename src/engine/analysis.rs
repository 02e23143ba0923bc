//! Whole-tree analysis: every segment analysed in parallel, each log assembled (gaps, overlaps, visibility) into the report.

use crate::engine::format::takhin::{segment_file_name, FileKind};
use crate::engine::layout::{
    discover_target_with, escape_path, resolve_target, Layout, LogLayout, SegmentEntry, Target,
    TargetError,
};
use crate::engine::policy::{point_in_time, visibility, OffsetRange, Policy, ViewAction};
use crate::engine::report::{
    Gap, HealedReport, LogReport, Overlap, Report, SalvagedReport, SegmentReport,
};
use crate::engine::scan::ScanOptions;
use crate::engine::segment::{analyze_segment_tapped, ReadTap, SegmentAnalysis};
use crate::engine::source::Mounts;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Puts one log's segment analyses together: damage classes, gaps, overlaps, visibility.
pub fn assemble_log(
    log: &LogLayout,
    analyses: Vec<SegmentAnalysis>,
    policy: Policy,
    is_last_of_log: impl Fn(u64) -> bool,
) -> LogReport {
    assemble_log_healed(log, analyses, policy, is_last_of_log, None)
}

/// [`assemble_log`] with the ranges healed from replicas (`None` without `--replica`):
/// they fill gaps, extend the next offset and, under point-in-time, count as
/// present when finding the gap-free prefix (those past it are dropped).
pub fn assemble_log_healed(
    log: &LogLayout,
    analyses: Vec<SegmentAnalysis>,
    policy: Policy,
    is_last_of_log: impl Fn(u64) -> bool,
    healed: Option<Vec<HealedReport>>,
) -> LogReport {
    let (actions, healed) = match healed {
        Some(h) if policy == Policy::PointInTime && !h.is_empty() => {
            let (a, h) = point_in_time_healed(&analyses, h);
            (a, Some(h))
        }
        h => (visibility(policy, &analyses), h),
    };
    let mut gaps = Vec::new();
    let mut overlaps = Vec::new();
    let mut prev: Option<(u64, PathBuf)> = None;
    let mut segments = Vec::with_capacity(analyses.len());
    // Names a run may not take: every segment-shaped name of the directory.
    let taken = taken_names(log);
    for (a, action) in analyses.into_iter().zip(actions) {
        let rel = log.file_rel(a.base, FileKind::Log);
        if let Some((expected, prev_path)) = &prev {
            track(
                &mut gaps,
                &mut overlaps,
                (*expected, prev_path),
                a.base,
                &rel,
            );
        }
        let is_last = is_last_of_log(a.base);
        let mut report = SegmentReport::from_analysis(&rel, &a, action, is_last);
        if let Ok(s) = &a.scan {
            prev = Some((s.next_offset(), rel.clone()));
        } else {
            // An unreadable segment's extent is unknown: no gap is claimed across it.
            prev = None;
        }
        if policy.salvages() {
            let salvaged = salvaged_runs(log, &rel, &a, &taken);
            // The runs are segments of their own: gaps and overlaps are counted with them.
            if action.serves() {
                for (r, run) in salvaged.iter().zip(a.salvage.iter().flat_map(|s| &s.runs)) {
                    if !r.shown() {
                        continue;
                    }
                    let run_rel = log.file_rel(run.first_offset, FileKind::Log);
                    if let Some((expected, prev_path)) = &prev {
                        track(
                            &mut gaps,
                            &mut overlaps,
                            (*expected, prev_path),
                            run.first_offset,
                            &run_rel,
                        );
                    }
                    prev = Some((run.first_offset + run.records, run_rel));
                }
                // Records cut where the next real segment starts: claimed twice, reported so.
                if let Some(cut) = a.salvage.as_ref().and_then(|s| s.cut) {
                    let next_rel = log.file_rel(cut.next_base, FileKind::Log);
                    overlaps.push(Overlap {
                        segment: escape_path(&next_rel),
                        previous: escape_path(&rel),
                        base_offset: cut.next_base,
                        previous_next_offset: cut.offset + 1,
                        offsets: cut.offset + 1 - cut.next_base,
                    });
                }
            }
            report.salvaged = Some(salvaged);
        }
        segments.push(report);
    }
    let next_offset = segments
        .iter()
        .filter(|s| s.view.serves())
        .filter_map(|s| s.scan.as_ref().map(|x| x.next_offset()))
        .chain(
            segments
                .iter()
                .flat_map(|s| s.shown_runs())
                .map(|(r, _)| r.last_offset + 1),
        )
        .chain(
            healed
                .iter()
                .flatten()
                .filter(|h| h.shown())
                .map(|h| h.to_offset + 1),
        )
        .max()
        .unwrap_or_else(|| log.segments.first().map_or(0, |s| s.base));
    if let Some(h) = &healed {
        gaps = fill_gaps(gaps, h);
    }
    LogReport {
        path: if log.rel.as_os_str().is_empty() {
            ".".into()
        } else {
            escape_path(&log.rel)
        },
        next_offset,
        gaps,
        overlaps,
        orphans: log
            .orphans
            .iter()
            .map(|n| escape_path(&log.rel.join(n)))
            .collect(),
        unrecognized: log
            .unrecognized
            .iter()
            .map(|n| escape_path(&log.rel.join(n)))
            .collect(),
        segments,
        healed,
        divergences: None,
        divergences_not_listed: None,
    }
}

/// The gaps left once the healed ranges shown fill them (a gap partly healed
/// becomes the parts still missing).
fn fill_gaps(gaps: Vec<Gap>, healed: &[HealedReport]) -> Vec<Gap> {
    let mut out = Vec::new();
    for g in gaps {
        let mut from = g.from_offset;
        let mut parts = Vec::new();
        let mut ranges: Vec<(u64, u64)> = healed
            .iter()
            .filter(|h| h.shown() && h.to_offset >= g.from_offset && h.from_offset <= g.to_offset)
            .map(|h| (h.from_offset, h.to_offset))
            .collect();
        ranges.sort_unstable();
        for (a, b) in ranges {
            if a > from {
                parts.push((from, a - 1));
            }
            from = from.max(b.saturating_add(1));
        }
        if from <= g.to_offset {
            parts.push((from, g.to_offset));
        }
        for (a, b) in parts {
            out.push(Gap {
                from_offset: a,
                to_offset: b,
                missing: b - a + 1,
                ..g.clone()
            });
        }
    }
    out
}

/// Point-in-time with healed ranges ([`point_in_time`]): every segment's
/// action and the healed ranges inside the gap-free prefix (ranges the view
/// does not show take no part).
fn point_in_time_healed(
    segs: &[SegmentAnalysis],
    healed: Vec<HealedReport>,
) -> (Vec<ViewAction>, Vec<HealedReport>) {
    let shown: Vec<HealedReport> = healed.into_iter().filter(|h| h.shown()).collect();
    let ranges: Vec<OffsetRange> = shown
        .iter()
        .map(|h| OffsetRange {
            from: h.from_offset,
            to: h.to_offset,
        })
        .collect();
    let (actions, inside) = point_in_time(segs, &ranges);
    let kept = shown
        .into_iter()
        .zip(inside)
        .filter_map(|(h, i)| i.then_some(h))
        .collect();
    (actions, kept)
}

/// Records a gap or an overlap between what came before (its next offset and
/// path) and a segment (or salvaged run) starting at `base`.
fn track(
    gaps: &mut Vec<Gap>,
    overlaps: &mut Vec<Overlap>,
    (expected, prev_path): (u64, &Path),
    base: u64,
    rel: &Path,
) {
    if base > expected {
        gaps.push(Gap {
            after: escape_path(prev_path),
            before: escape_path(rel),
            from_offset: expected,
            to_offset: base - 1,
            missing: base - expected,
        });
    } else if base < expected {
        overlaps.push(Overlap {
            segment: escape_path(rel),
            previous: escape_path(prev_path),
            base_offset: base,
            previous_next_offset: expected,
            offsets: expected - base,
        });
    }
}

/// Every segment-shaped file name of a log directory: its segments' three files,
/// its orphan indexes and the names it does not recognize.
pub(crate) fn taken_names(log: &LogLayout) -> HashSet<OsString> {
    let mut out: HashSet<OsString> = log
        .segments
        .iter()
        .flat_map(|s| {
            [FileKind::Log, FileKind::Index, FileKind::TimeIndex]
                .map(|k| OsString::from(segment_file_name(s.base, k)))
        })
        .collect();
    out.extend(log.orphans.iter().cloned());
    out.extend(log.unrecognized.iter().cloned());
    out
}

/// The report's entries for a segment's salvaged runs; a run whose `.log`,
/// `.index` or `.timeindex` name is taken by a file of the source is refused.
fn salvaged_runs(
    log: &LogLayout,
    rel: &Path,
    a: &SegmentAnalysis,
    taken: &HashSet<OsString>,
) -> Vec<SalvagedReport> {
    let runs = a.salvage.iter().flat_map(|s| &s.runs);
    runs.map(|run| {
        let mut r = SalvagedReport::of(&log.file_rel(run.first_offset, FileKind::Log), run);
        let clash = [FileKind::Log, FileKind::Index, FileKind::TimeIndex]
            .map(|k| segment_file_name(run.first_offset, k))
            .into_iter()
            .find(|n| taken.contains(OsStr::new(n)));
        if let Some(n) = clash {
            r.refused = Some(format!(
                "{} already exists in the source; a run never overrides a real file (salvaged from {})",
                escape_path(&log.rel.join(n)),
                escape_path(rel)
            ));
        }
        r
    })
    .collect()
}

/// Engine settings for a whole-tree analysis.
#[derive(Debug, Clone, Default)]
pub struct AnalyzeOptions {
    pub scan: ScanOptions,
    pub policy: Policy,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    /// Whether the walk crosses into filesystems mounted inside the source (`--cross-mounts`).
    pub mounts: Mounts,
}

/// Analyses every segment of a layout (in parallel) and builds the report.
pub fn analyze(
    layout: &Layout,
    target: &Target,
    opts: &AnalyzeOptions,
    source: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Report {
    let per_log = analyze_segments(layout, target, opts, progress);
    assemble(layout, target, opts, source, per_log, |_, _| None)
}

/// Every segment of a layout analysed (in parallel, `opts.threads` workers),
/// grouped by log in layout order; with a single-segment target, only that segment.
pub fn analyze_segments(
    layout: &Layout,
    target: &Target,
    opts: &AnalyzeOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Vec<Vec<SegmentAnalysis>> {
    analyze_segments_tapped(layout, target, opts, progress, &|_, _| None)
}

/// A [`ReadTap`] for the scan of one segment (its log's index in the layout, the
/// segment), or none.
pub type TapFor<'t> = dyn Fn(usize, &SegmentEntry) -> Option<Box<dyn ReadTap + 't>> + Sync + 't;

/// [`analyze_segments`], each segment's scan shown to the tap `tap` gives for it
/// (the tap is dropped when its segment's analysis is done).
pub fn analyze_segments_tapped(
    layout: &Layout,
    target: &Target,
    opts: &AnalyzeOptions,
    progress: &(dyn Fn(u64) + Sync),
    tap: &TapFor<'_>,
) -> Vec<Vec<SegmentAnalysis>> {
    let jobs: Vec<(usize, &SegmentEntry)> = layout
        .logs
        .iter()
        .enumerate()
        .flat_map(|(li, log)| log.segments.iter().map(move |s| (li, s)))
        .filter(|(_, s)| target.only_segment.is_none_or(|b| b == s.base))
        .collect();
    let results: Mutex<Vec<Option<SegmentAnalysis>>> = Mutex::new(vec![None; jobs.len()]);
    let next = AtomicUsize::new(0);
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        opts.threads
    }
    .clamp(1, jobs.len().max(1));
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(li, seg)) = jobs.get(j) else { break };
                let mut t = tap(li, seg);
                let a = analyze_segment_tapped(
                    &layout.source,
                    &layout.logs[li],
                    seg,
                    &opts.scan,
                    opts.policy.salvages(),
                    progress,
                    t.as_deref_mut().map(|t| t as &mut dyn ReadTap),
                );
                drop(t);
                results.lock().expect("no worker panics")[j] = Some(a);
            });
        }
    });
    let mut per_log: Vec<Vec<SegmentAnalysis>> = vec![Vec::new(); layout.logs.len()];
    let results = results.into_inner().expect("no worker panics");
    for ((li, _), a) in jobs.iter().zip(results) {
        per_log[*li].push(a.expect("every job ran"));
    }
    per_log
}

/// The report from every log's segment analyses ([`analyze_segments`]);
/// `heal(log, analyses)` gives a log's healed ranges (`None` without replicas).
pub fn assemble(
    layout: &Layout,
    target: &Target,
    opts: &AnalyzeOptions,
    source: &str,
    per_log: Vec<Vec<SegmentAnalysis>>,
    mut heal: impl FnMut(&LogLayout, &[SegmentAnalysis]) -> Option<Vec<HealedReport>>,
) -> Report {
    let mut logs = Vec::new();
    for (log, analyses) in layout.logs.iter().zip(per_log) {
        let last = log.segments.last().map(|s| s.base);
        if target.only_segment.is_some() && analyses.is_empty() {
            continue;
        }
        let mut scoped = log.clone();
        if target.only_segment.is_some() {
            // A single segment: its siblings' orphans and names are not in scope.
            scoped.orphans.clear();
            scoped.unrecognized.clear();
        }
        let healed = heal(&scoped, &analyses);
        logs.push(assemble_log_healed(
            &scoped,
            analyses,
            opts.policy,
            |b| Some(b) == last,
            healed,
        ));
    }
    Report::new(
        source,
        opts.policy,
        layout.source.access(),
        logs,
        layout.problems.clone(),
    )
    .with_not_crossed(&layout.source)
}

/// Discovers and analyses PATH in one call: what `check` and `repair` run.
pub fn check_path(
    path: &Path,
    opts: &AnalyzeOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Layout, Report), TargetError> {
    let target = resolve_target(path)?;
    let layout = discover_target_with(&target, opts.mounts)?;
    let report = analyze(
        &layout,
        &target,
        opts,
        &path.display().to_string(),
        progress,
    );
    Ok((layout, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::takhin::SegmentWriter;
    use crate::engine::index::IndexVerdict;
    use crate::engine::policy::ViewAction;
    use crate::engine::scan::scan_segment;
    use crate::engine::segment::{FileStamp, ReadError, SegmentStatus};
    use crate::engine::source::SourceAccess;
    use std::io;
    use std::sync::Arc;

    fn analysis(base: u64, records: u64) -> SegmentAnalysis {
        let mut w = SegmentWriter::new(base);
        for i in 0..records {
            w.append(i as i64, b"", b"v");
        }
        let scan = scan_segment(
            &w.log,
            w.log.len() as u64,
            base,
            &ScanOptions::default(),
            |_| {},
        )
        .unwrap();
        SegmentAnalysis {
            base,
            scan: Ok(Arc::new(scan)),
            index: IndexVerdict::Match,
            timeindex: IndexVerdict::Match,
            stamp: FileStamp {
                size: w.log.len() as u64,
                ..Default::default()
            },
            salvage: None,
            sums: None,
            changed: None,
        }
    }

    #[test]
    fn an_unreadable_segment_is_reported_never_as_corruption() {
        let layout = LogLayout {
            segments: [0, 5, 10]
                .map(|base| SegmentEntry {
                    base,
                    has_index: true,
                    has_timeindex: true,
                })
                .to_vec(),
            ..Default::default()
        };
        let unreadable = SegmentAnalysis {
            base: 5,
            scan: Err(ReadError::new(
                Path::new("x/00000000000000000005.log"),
                "could not read",
                &io::Error::from_raw_os_error(libc::EIO),
            )),
            index: IndexVerdict::Unreadable("its .log is unreadable".into()),
            timeindex: IndexVerdict::Unreadable("its .log is unreadable".into()),
            stamp: FileStamp::default(),
            salvage: None,
            sums: None,
            changed: None,
        };
        let want = [
            (
                Policy::PerSegment,
                [ViewAction::Kept, ViewAction::Eio, ViewAction::Kept],
            ),
            (
                Policy::PointInTime,
                [ViewAction::Kept, ViewAction::Hidden, ViewAction::Hidden],
            ),
            (
                Policy::Strict,
                [ViewAction::Kept, ViewAction::Eio, ViewAction::Kept],
            ),
        ];
        for (policy, views) in want {
            let segs = vec![analysis(0, 5), unreadable.clone(), analysis(10, 5)];
            let log = assemble_log(&layout, segs, policy, |b| b == 10);
            let got: Vec<ViewAction> = log.segments.iter().map(|s| s.view).collect();
            assert_eq!(got, views, "{policy}");
            let s = &log.segments[1];
            assert_eq!(s.status, SegmentStatus::Unreadable);
            assert!(s.damage.is_none(), "an I/O error is not damage");
            assert!(s.error.as_deref().unwrap().contains("Input/output error"));
            assert!(
                log.gaps.is_empty(),
                "no gap is claimed across an unreadable segment"
            );
            let r = Report::new("x", policy, SourceAccess::NoatimeOpens, vec![log], vec![]);
            assert_eq!((r.summary.unreadable, r.summary.truncated), (1, 0));
            assert!(r.summary.view_differs);
            assert!(r.render_human().contains("UNREADABLE"));
        }
    }
}
