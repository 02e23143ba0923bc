//! Policies: what the view shows of a log, decided in one place for every front end.

use crate::engine::scan::DamageKind;
use crate::engine::segment::{SegmentAnalysis, SegmentStatus};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// What the view shows of a log (README, "Policies"; names from RocksDB's WAL recovery modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Every segment's valid prefix, later segments kept, gaps reported.
    #[default]
    PerSegment,
    /// The longest gap-free prefix: stop at the first damage or gap.
    PointInTime,
    /// Nothing repaired: damaged segments fail with EIO.
    Strict,
    /// Per-segment, plus the runs of intact records found after mid-segment
    /// damage, each shown as a segment of its own (`engine::salvage`).
    Salvage,
}

impl Policy {
    pub const ALL: [Policy; 4] = [
        Policy::PerSegment,
        Policy::PointInTime,
        Policy::Strict,
        Policy::Salvage,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::PerSegment => "per-segment",
            Policy::PointInTime => "point-in-time",
            Policy::Strict => "strict",
            Policy::Salvage => "salvage",
        }
    }

    /// True when the analysis looks for runs after mid-segment damage.
    pub fn salvages(self) -> bool {
        self == Policy::Salvage
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("unknown policy '{s}': use per-segment, point-in-time, strict or salvage")
            })
    }
}

/// What the view does with a segment under the report's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViewAction {
    /// Shown whole, as on disk.
    Kept,
    /// Shown up to its valid prefix.
    Truncated,
    /// Left out of the view (policy).
    Hidden,
    /// Listed, but opening it fails with EIO (strict, or unreadable).
    Eio,
}

impl ViewAction {
    /// The report's name for the action (its serde name too).
    pub fn as_str(self) -> &'static str {
        match self {
            ViewAction::Kept => "kept",
            ViewAction::Truncated => "truncated",
            ViewAction::Hidden => "hidden",
            ViewAction::Eio => "eio",
        }
    }

    /// True when the view serves the segment's bytes.
    pub fn serves(self) -> bool {
        matches!(self, ViewAction::Kept | ViewAction::Truncated)
    }
    pub fn listed(self) -> bool {
        self != ViewAction::Hidden
    }
}

/// Tail damage is the normal trace of an unclean shutdown; mid-log damage lost data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DamageClass {
    Tail,
    MidLog,
}

impl DamageClass {
    /// The report's name for the class (its serde name too).
    pub fn as_str(self) -> &'static str {
        match self {
            DamageClass::Tail => "tail",
            DamageClass::MidLog => "mid-log",
        }
    }

    /// Tail damage is an `incomplete-record` or `zero-fill` in the log's last
    /// segment (a torn last write, preallocated space); anything else is mid-log.
    pub fn of(kind: DamageKind, is_last_of_log: bool) -> Self {
        if is_last_of_log && kind.is_tail_like() {
            DamageClass::Tail
        } else {
            DamageClass::MidLog
        }
    }
}

/// Which segments a policy shows, given the segments' analyses in base order.
pub fn visibility(policy: Policy, segs: &[SegmentAnalysis]) -> Vec<ViewAction> {
    match policy {
        Policy::PointInTime => point_in_time(segs, &[]).0,
        Policy::PerSegment | Policy::Salvage => segs
            .iter()
            .map(|a| match a.status() {
                SegmentStatus::Clean => ViewAction::Kept,
                SegmentStatus::Truncated => ViewAction::Truncated,
                SegmentStatus::Unreadable => ViewAction::Eio,
            })
            .collect(),
        Policy::Strict => segs
            .iter()
            .map(|a| match a.status() {
                SegmentStatus::Clean if a.index.is_match() && a.timeindex.is_match() => {
                    ViewAction::Kept
                }
                _ => ViewAction::Eio,
            })
            .collect(),
    }
}

/// A range of offsets (inclusive) the view may show besides the segments: a
/// range healed from a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRange {
    pub from: u64,
    pub to: u64,
}

/// Point-in-time: the longest gap-free prefix, through the segments (in base
/// order) and the `healed` ranges (in offset order) alike. A damaged segment
/// ends the prefix unless a healed range starts where its valid records end;
/// an unreadable one or a gap ends it. Returns every segment's action and, for
/// each healed range, whether it lies inside the prefix.
pub fn point_in_time(
    segs: &[SegmentAnalysis],
    healed: &[OffsetRange],
) -> (Vec<ViewAction>, Vec<bool>) {
    let mut actions = Vec::with_capacity(segs.len());
    let mut inside = vec![false; healed.len()];
    let mut expected: Option<u64> = None;
    let mut stopped = false;
    // After a cut, only a healed range starting at the cut may continue the prefix.
    let mut after_cut = false;
    let mut next = 0;
    let mut take_healed = |upto: Option<u64>,
                           expected: &mut Option<u64>,
                           stopped: &mut bool,
                           after_cut: &mut bool| {
        while let Some(h) = healed.get(next).filter(|h| upto.is_none_or(|u| h.from < u)) {
            if !*stopped && expected.is_none_or(|e| e == h.from) {
                *expected = Some(h.to + 1);
                *after_cut = false;
                inside[next] = true;
            } else {
                *stopped = true;
            }
            next += 1;
        }
    };
    for a in segs {
        take_healed(Some(a.base), &mut expected, &mut stopped, &mut after_cut);
        if after_cut || expected.is_some_and(|e| e != a.base) {
            stopped = true;
        }
        let action = if stopped {
            ViewAction::Hidden
        } else {
            match &a.scan {
                Err(_) => {
                    stopped = true;
                    ViewAction::Hidden
                }
                Ok(s) if s.is_clean() => ViewAction::Kept,
                Ok(_) => {
                    after_cut = true;
                    ViewAction::Truncated
                }
            }
        };
        if let Ok(s) = &a.scan {
            if !stopped {
                expected = Some(s.next_offset());
            }
        }
        actions.push(action);
    }
    take_healed(None, &mut expected, &mut stopped, &mut after_cut);
    (actions, inside)
}
