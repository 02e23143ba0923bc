//! The engine's verdicts on a tree, asked through the library (no binary).
#![allow(dead_code)]

use recoverfs::engine::analysis::{check_path, AnalyzeOptions};
use recoverfs::engine::policy::{Policy, ViewAction};
use recoverfs::engine::report::{Report, SegmentReport};
use std::path::Path;

/// The report `check --policy POLICY` prints for `src`.
pub fn report_for(src: &Path, policy: Policy) -> Report {
    report_with(
        src,
        &AnalyzeOptions {
            policy,
            ..Default::default()
        },
    )
}

/// The report for `src` under any analysis options.
pub fn report_with(src: &Path, opts: &AnalyzeOptions) -> Report {
    check_path(src, opts, &|_| {}).unwrap().1
}

/// The report of the segment at `base` (the first log that has one).
pub fn seg_report(r: &Report, base: u64) -> SegmentReport {
    r.segments()
        .find(|(_, s)| s.base_offset == base)
        .unwrap()
        .1
        .clone()
}

/// The view action of each segment under per-segment, point-in-time and strict,
/// in base order (salvage shows what per-segment shows, plus its runs).
pub fn views(dir: &Path) -> [Vec<ViewAction>; 3] {
    [Policy::PerSegment, Policy::PointInTime, Policy::Strict]
        .map(|p| report_for(dir, p).segments().map(|(_, s)| s.view).collect())
}
