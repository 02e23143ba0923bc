//! The valid stretches of records each copy of a log holds (`Piece`s), in offset order, and the offset ranges none holds: what healing and verification walk.

use crate::engine::format::takhin::{segment_file_name, FileKind};
use crate::engine::layout::LogLayout;
use crate::engine::policy::Policy;
use crate::engine::salvage::Shifted;
use crate::engine::scan::{visit_records, SegmentScan};
use crate::engine::segment::SegmentAnalysis;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// A stretch of valid records of one copy: the records of `scan` (whose record 0
/// is at byte `start` of `file`) holding offsets `[from, to)`.
#[derive(Debug, Clone)]
pub(super) struct Piece {
    /// The `.log`, relative to its copy's data directory.
    pub(super) file: PathBuf,
    pub(super) start: u64,
    pub(super) scan: Arc<SegmentScan>,
    pub(super) from: u64,
    pub(super) to: u64,
}

impl Piece {
    /// The byte position in `file` of the record holding offset `o` (`o == to`: the end).
    pub(super) fn position_of(&self, file: &File, o: u64) -> io::Result<u64> {
        let k = o
            .checked_sub(self.scan.base_offset)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset before the run"))?;
        if k >= self.scan.records {
            return Ok(self.start + self.scan.valid_bytes);
        }
        let view = Shifted {
            src: file,
            start: self.start,
            len: self.scan.valid_bytes,
        };
        let mut pos = None;
        visit_records(&view, &self.scan, k, 1, |m| pos = Some(m.position))?;
        pos.map(|p| self.start + p)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "record not found"))
    }
}

/// The valid runs of one segment: its valid prefix, and its salvaged runs (all,
/// or those `shown` lets through).
pub(super) fn pieces_of(
    _copy: usize,
    log: &LogLayout,
    a: &SegmentAnalysis,
    shown: Option<&dyn Fn(u64) -> bool>,
) -> Vec<Piece> {
    let mut out = Vec::new();
    let Ok(scan) = &a.scan else { return out };
    let file = log.file_rel(a.base, FileKind::Log);
    if scan.records > 0 {
        out.push(Piece {
            file: file.clone(),
            start: 0,
            scan: scan.clone(),
            from: scan.base_offset,
            to: scan.next_offset(),
        });
    }
    for run in a.salvage.iter().flat_map(|s| &s.runs) {
        if shown.is_some_and(|f| !f(run.first_offset)) {
            continue;
        }
        out.push(Piece {
            file: file.clone(),
            start: run.position,
            scan: Arc::new(run.scan.clone()),
            from: run.first_offset,
            to: run.first_offset + run.records,
        });
    }
    out
}

/// The pieces in offset order, each offset in one piece only (the first to
/// hold it keeps it; a later one starts after it).
pub(super) fn clip(mut pieces: Vec<Piece>) -> Vec<Piece> {
    pieces.sort_by_key(|p| (p.from, p.to));
    let mut out: Vec<Piece> = Vec::new();
    for mut p in pieces {
        if let Some(prev) = out.last() {
            if p.to <= prev.to {
                continue;
            }
            p.from = p.from.max(prev.to);
        }
        out.push(p);
    }
    out
}

/// What the primary log holds: its segments' valid prefixes and, under salvage,
/// the runs the view shows (those whose names are free).
pub(super) fn primary_pieces(
    log: &LogLayout,
    analyses: &[SegmentAnalysis],
    policy: Policy,
    taken: &HashSet<OsString>,
) -> Vec<Piece> {
    let free = |first: u64| {
        ![FileKind::Log, FileKind::Index, FileKind::TimeIndex]
            .iter()
            .any(|&k| taken.contains(&OsString::from(segment_file_name(first, k))))
    };
    let mut out = Vec::new();
    for a in analyses {
        let shown: &dyn Fn(u64) -> bool = if policy.salvages() { &free } else { &|_| false };
        out.extend(pieces_of(0, log, a, Some(shown)));
    }
    clip(out)
}

/// The offsets from `start` on that no piece holds, as `[a, b)` ranges (the last open-ended).
pub(super) fn complement(start: u64, held: &[Piece]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = start;
    for p in held {
        if p.to <= at {
            continue;
        }
        if p.from > at {
            out.push((at, p.from));
        }
        at = at.max(p.to);
    }
    if at < u64::MAX {
        out.push((at, u64::MAX));
    }
    out
}

/// The ranges `[a, b)`, each cut in two at every point of `at` strictly inside it.
pub(super) fn split_at(ranges: Vec<(u64, u64)>, at: &[u64]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for (mut a, b) in ranges {
        for &x in at {
            if a < x && x < b {
                out.push((a, x));
                a = x;
            }
        }
        out.push((a, b));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lacking_ranges_are_the_complement_split_at_empty_segments() {
        assert_eq!(
            split_at(vec![(0, 10), (20, 30)], &[5, 20, 25]),
            vec![(0, 5), (5, 10), (20, 25), (25, 30)]
        );
        assert_eq!(complement(3, &[]), vec![(3, u64::MAX)]);
    }
}
