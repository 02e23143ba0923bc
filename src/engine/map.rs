//! The damage map: each log's bytes laid out by fate (kept, cut, hidden, unreadable, gaps), drawn as one text line per log.

use crate::engine::layout::display_name as shown;
use crate::engine::policy::ViewAction;
use crate::engine::report::{LogReport, Report, SegmentReport};
use crate::engine::segment::SegmentStatus;
use std::fmt::Write as _;

/// What became of a run of a log's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// Served by the view.
    Kept,
    /// Left out under the policy (the whole segment).
    Hidden,
    /// Listed, but refused with EIO (strict).
    Refused,
    /// The damaged tail the view cuts off.
    Cut,
    /// A segment whose `.log` could not be read.
    Unreadable,
}

impl Part {
    /// Every part, in the legend's order.
    pub const ALL: [Part; 5] = [
        Part::Kept,
        Part::Cut,
        Part::Hidden,
        Part::Refused,
        Part::Unreadable,
    ];

    /// The character that draws it.
    pub fn glyph(self) -> char {
        match self {
            Part::Kept => '█',
            Part::Cut => '░',
            Part::Hidden => '·',
            Part::Refused => 'x',
            Part::Unreadable => '!',
        }
    }

    /// Its name in the legend, and its CSS class.
    pub fn name(self) -> &'static str {
        match self {
            Part::Kept => "kept",
            Part::Cut => "cut",
            Part::Hidden => "hidden",
            Part::Refused => "refused",
            Part::Unreadable => "unreadable",
        }
    }

    /// Its ANSI colour (SGR parameters).
    fn sgr(self) -> &'static str {
        match self {
            Part::Kept => "32",
            Part::Cut => "33",
            Part::Hidden => "2",
            Part::Refused => "35",
            Part::Unreadable => "31;1",
        }
    }
}

/// The character that draws a gap (offsets no segment holds).
pub const GAP_GLYPH: char = '|';
/// The gap's ANSI colour.
const GAP_SGR: &str = "31";

/// A run of one segment's bytes with one fate, placed in its log's byte space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub part: Part,
    /// The segment's index in its log.
    pub seg: usize,
    /// Where the run starts among the log's bytes (all segments end to end).
    pub start: u64,
    pub bytes: u64,
}

/// One log laid out: its pieces in order, and where its gaps fall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMap {
    pub pieces: Vec<Piece>,
    /// Byte positions (in the same space) of each gap, after the segment it follows.
    pub gaps: Vec<u64>,
    /// All the log's `.log` bytes.
    pub total: u64,
}

/// The fates of a segment's bytes: (part, bytes), zero-byte runs left out.
pub fn parts_of(seg: &SegmentReport) -> Vec<(Part, u64)> {
    let all = seg.original_bytes;
    let v: Vec<(Part, u64)> = match (seg.status, seg.view) {
        (SegmentStatus::Unreadable, _) => vec![(Part::Unreadable, all)],
        (_, ViewAction::Kept) => vec![(Part::Kept, all)],
        (_, ViewAction::Truncated) => {
            let kept = seg.valid_bytes.min(all);
            vec![(Part::Kept, kept), (Part::Cut, all - kept)]
        }
        (_, ViewAction::Hidden) => vec![(Part::Hidden, all)],
        (_, ViewAction::Eio) => vec![(Part::Refused, all)],
    };
    v.into_iter().filter(|(_, b)| *b > 0).collect()
}

/// Lays a log's segments end to end by their `.log` bytes.
pub fn layout(log: &LogReport) -> LogMap {
    let mut pieces = Vec::new();
    let mut gaps = Vec::new();
    let mut at = 0u64;
    for (i, seg) in log.segments.iter().enumerate() {
        for (part, bytes) in parts_of(seg) {
            pieces.push(Piece {
                part,
                seg: i,
                start: at,
                bytes,
            });
            at += bytes;
        }
        gaps.extend(log.gaps.iter().filter(|g| g.after == seg.path).map(|_| at));
    }
    LogMap {
        pieces,
        gaps,
        total: at,
    }
}

impl LogMap {
    /// The map as `width` columns (plus one per gap): each column covers an equal share
    /// of the bytes and shows the most severe fate among them, so that damage of any
    /// size shows as at least one column; a gap is a column of its own where it falls.
    pub fn columns(&self, width: usize) -> Vec<Option<Part>> {
        let width = width.max(1);
        let mut out: Vec<Option<Part>> = Vec::with_capacity(width + self.gaps.len());
        if self.total == 0 {
            out.extend(self.gaps.iter().map(|_| None));
            return out;
        }
        let (total, w) = (self.total as u128, width as u128);
        let mut gaps = self.gaps.iter().peekable();
        for c in 0..w {
            let lo = (c * total / w) as u64;
            let hi = ((c + 1) * total / w) as u64;
            // A gap at a position before this column's first byte comes first.
            while gaps.peek().is_some_and(|g| **g <= lo) {
                gaps.next();
                out.push(None);
            }
            let worst = self
                .pieces
                .iter()
                .filter(|p| p.start < hi.max(lo + 1) && p.start + p.bytes > lo)
                .map(|p| p.part)
                .max()
                .unwrap_or(Part::Kept);
            out.push(Some(worst));
        }
        out.extend(gaps.map(|_| None));
        out
    }
}

/// The map of every log, a line of `width` columns each under its name, and the legend;
/// with ANSI colours when `colour`.
pub fn render_text(report: &Report, width: usize, colour: bool) -> String {
    let mut o = String::new();
    let paint = |o: &mut String, sgr: &str, s: &str| {
        if colour {
            let _ = write!(o, "\x1b[{sgr}m{s}\x1b[0m");
        } else {
            o.push_str(s);
        }
    };
    for log in &report.logs {
        let map = layout(log);
        // What the line cannot show: records the view serves from outside the primary's prefixes.
        let salvaged: u64 = log
            .segments
            .iter()
            .flat_map(|s| s.shown_runs())
            .map(|(r, _)| r.records)
            .sum();
        let healed: u64 = log.shown_healed().map(|h| h.records).sum();
        let mut extra = String::new();
        if salvaged > 0 {
            let _ = write!(extra, ", {salvaged} record(s) salvaged after damage");
        }
        if healed > 0 {
            let _ = write!(extra, ", {healed} record(s) served from replicas");
        }
        let _ = writeln!(
            o,
            "{}: {} segment(s), {} bytes, {} gap(s){extra}",
            shown(&log.path),
            log.segments.len(),
            map.total,
            log.gaps.len()
        );
        let cols = map.columns(width.saturating_sub(map.gaps.len()).max(1));
        if map.total == 0 {
            o.push_str("(no bytes)");
        }
        // Runs of one fate are painted at once, so a coloured line stays short.
        let mut i = 0;
        while i < cols.len() {
            let j = i + cols[i..].iter().take_while(|c| **c == cols[i]).count();
            let (sgr, ch) = match cols[i] {
                Some(p) => (p.sgr(), p.glyph()),
                None => (GAP_SGR, GAP_GLYPH),
            };
            paint(&mut o, sgr, &ch.to_string().repeat(j - i));
            i = j;
        }
        o.push('\n');
    }
    o.push_str("legend:");
    for p in Part::ALL {
        o.push(' ');
        paint(&mut o, p.sgr(), &p.glyph().to_string());
        let _ = write!(o, " {}", p.name());
    }
    o.push(' ');
    paint(&mut o, GAP_SGR, &GAP_GLYPH.to_string());
    o.push_str(" gap (offsets missing)\n");
    let _ = writeln!(
        o,
        "each line is one log's .log bytes end to end, {width} columns; a column shows the worst fate among its bytes"
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pieces: &[(Part, u64)], gaps: &[u64]) -> LogMap {
        let mut at = 0;
        let pieces = pieces
            .iter()
            .enumerate()
            .map(|(i, (part, bytes))| {
                let p = Piece {
                    part: *part,
                    seg: i,
                    start: at,
                    bytes: *bytes,
                };
                at += bytes;
                p
            })
            .collect();
        LogMap {
            pieces,
            gaps: gaps.to_vec(),
            total: at,
        }
    }

    fn text(cols: &[Option<Part>]) -> String {
        cols.iter()
            .map(|c| c.map_or(GAP_GLYPH, Part::glyph))
            .collect()
    }

    #[test]
    fn columns_are_proportional() {
        let m = map(
            &[(Part::Kept, 600), (Part::Cut, 200), (Part::Hidden, 200)],
            &[],
        );
        assert_eq!(text(&m.columns(10)), "██████░░··");
    }

    #[test]
    fn tiny_damage_still_shows_and_gaps_take_a_column() {
        let m = map(
            &[(Part::Kept, 10_000), (Part::Cut, 1), (Part::Kept, 10_000)],
            &[10_001],
        );
        let t = text(&m.columns(20));
        assert_eq!(t.chars().count(), 21);
        assert_eq!(t.matches('░').count(), 1);
        assert!(t.contains("░|"), "{t}");
    }

    #[test]
    fn empty_log_has_no_columns() {
        assert!(map(&[], &[]).columns(80).is_empty());
    }
}
