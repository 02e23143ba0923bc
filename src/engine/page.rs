//! The check report as one self-contained HTML page (inline CSS and SVG, no script, nothing fetched): the damage map, the summary, a row per segment with its indexes and the time of each cut.

use crate::engine::layout::display_name as shown;
use crate::engine::map::{layout, Part, Piece};
use crate::engine::policy::ViewAction;
use crate::engine::render::{index_findings, iso8601_ms, lost_after};
use crate::engine::report::{HealedRole, LogReport, Report, SegmentReport};
use crate::engine::segment::SegmentStatus;
use std::fmt::Write as _;

/// The SVG map's width, in its own units (it scales to the page).
const MAP_W: f64 = 1000.0;
/// The SVG map's height.
const MAP_H: f64 = 28.0;
/// The narrowest a piece of damage is drawn, in map units (0.4% of the bar, about
/// 4 pixels on a laptop's page): a cut of a few bytes in gigabytes must still show.
/// The kept pieces give up the room.
pub const MIN_DAMAGE_W: f64 = 4.0;

/// `s` safe as HTML text and as a double- or single-quoted attribute value,
/// control characters first shown as `\xNN` like every name in human text.
pub fn escape(s: &str) -> String {
    html_escape(&shown(s))
}

/// Multi-line text (the text report, whose names are already shown safe) for a
/// `<pre>`: line breaks kept as line breaks, any other control character as `\xNN`.
/// (Escaping the whole text as one name printed every line break as `\x0a`.)
pub fn escape_lines(s: &str) -> String {
    s.split('\n').map(escape).collect::<Vec<_>>().join("\n")
}

/// Markup characters as entities; nothing else changed.
fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

// Paths: whole on one line in a table cell (a cell that may break anywhere is
// squeezed to a few characters a line); in a sentence, moved whole to the next
// line, broken only when longer than a line; a table wider than the page scrolls
// inside its own box.
const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
h1{font-size:1.4em;overflow-wrap:anywhere}h2{font-size:1.1em;margin-top:2em;overflow-wrap:anywhere}\
div.wide{overflow-x:auto}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
code{display:inline-block;max-width:100%;overflow-wrap:anywhere}td code,td.nowrap{white-space:nowrap}\
svg.map{width:100%;height:auto;border:1px solid #999;background:#fff}\
.kept{fill:#2e8b57}.cut{fill:#e0a800}.hidden{fill:#bbb}.refused{fill:#8e44ad}.unreadable{fill:#c0392b}\
.gap{stroke:#c0392b;stroke-width:4}.seg rect{stroke:#fff;stroke-width:.5}\
.legend span{display:inline-block;width:1em;height:1em;vertical-align:middle;margin:0 .3em 0 1em}\
span.kept{background:#2e8b57}span.cut{background:#e0a800}span.hidden{background:#bbb}\
span.refused{background:#8e44ad}span.unreadable{background:#c0392b}span.gap{background:#c0392b;width:.25em}\
tr.truncated td{background:#fff8e1}tr.salvaged td,tr.healed td,tr.preferred td,tr.split td{background:#eef7ee}tr.refused td{color:#777}tr.hidden td{color:#777}tr.unreadable td,tr.eio td{background:#fdecea}\
.mid{color:#c0392b;font-weight:bold}pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f6f6;padding:.5em}";

/// The whole page.
pub fn render_html(report: &Report) -> String {
    let mut o = String::new();
    let title = format!("recoverfs check {}", report.source);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
<title>{}</title><style>{CSS}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let _ = writeln!(
        o,
        "<p>Policy <b>{}</b>; source read {}; report schema {}.</p>",
        report.policy,
        report.source_access.as_str(),
        report.schema
    );
    summary(&mut o, report);
    replicas(&mut o, report);
    legend(&mut o);
    for (i, log) in report.logs.iter().enumerate() {
        log_section(&mut o, report, i, log);
    }
    let _ = writeln!(
        o,
        "<h2>The report as text</h2>\n<pre>{}</pre>\n</body></html>",
        escape_lines(&report.render_human())
    );
    o
}

fn summary(o: &mut String, r: &Report) {
    let s = &r.summary;
    let rows: [(&str, String); 16] = [
        ("logs", s.logs.to_string()),
        ("segments", s.segments.to_string()),
        ("clean", s.clean.to_string()),
        ("truncated", s.truncated.to_string()),
        ("unreadable", s.unreadable.to_string()),
        ("records served", s.records.to_string()),
        ("bytes kept", s.bytes_kept.to_string()),
        ("bytes cut", s.bytes_cut.to_string()),
        ("hidden", s.hidden.to_string()),
        ("index sets rebuilt", s.indexes_rebuilt.to_string()),
        ("gaps", s.gaps.to_string()),
        ("overlaps", s.overlaps.to_string()),
        ("orphans", s.orphans.to_string()),
        ("unrecognized", s.unrecognized.to_string()),
        ("unreadable directories", r.problems.len().to_string()),
        ("view differs from the source", s.view_differs.to_string()),
    ];
    // Present only with `--policy salvage` or `--replica`.
    let optional = [
        ("runs salvaged", s.salvaged_runs),
        ("records salvaged", s.salvaged_records),
        ("replicas", s.replicas),
        ("records healed from replicas", s.healed_records),
        ("records preferred from replicas", s.preferred_records),
        ("divergences between copies", s.divergences),
    ];
    o.push_str("<h2>Summary</h2>\n<table class=\"summary\">\n");
    let optional = optional
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?.to_string())));
    for (k, v) in rows.into_iter().chain(optional) {
        let _ = writeln!(o, "<tr><th>{k}</th><td class=\"n\">{v}</td></tr>");
    }
    o.push_str("</table>\n");
    for p in &r.problems {
        let _ = writeln!(
            o,
            "<p class=\"mid\">UNREADABLE directory <code>{}/</code>: {}</p>",
            escape(&p.path),
            escape(&p.error)
        );
    }
}

/// Each replica, and what the text says of it: a replica that matched none of the
/// primary's logs, the logs only it holds, its directories that could not be listed.
fn replicas(o: &mut String, r: &Report) {
    let Some(reps) = &r.replicas else { return };
    o.push_str("<h2>Replicas</h2>\n");
    for rep in reps {
        let _ = writeln!(
            o,
            "<p>Replica {} <code>{}</code>: {} of the primary's logs matched.</p>",
            rep.index,
            escape(&rep.path),
            rep.logs_matched
        );
        if rep.logs_matched == 0 {
            let _ = writeln!(
                o,
                "<p class=\"mid\">NO MATCH: it holds none of the primary's logs (logs match by their path relative to each directory: give the replica's directory that corresponds to the one checked)</p>"
            );
        }
        for l in &rep.logs_not_in_primary {
            let _ = writeln!(
                o,
                "<p>Not in the primary: <code>{}</code>, a log only this replica holds; not added to the view</p>",
                escape(l)
            );
        }
        for p in &rep.problems {
            let _ = writeln!(
                o,
                "<p class=\"mid\">UNREADABLE directory <code>{}/</code>: {}</p>",
                escape(&p.path),
                escape(&p.error)
            );
        }
    }
}

fn legend(o: &mut String) {
    o.push_str("<p class=\"legend\">");
    for p in Part::ALL {
        let _ = write!(o, "<span class=\"{0}\"></span>{0}", p.name());
    }
    o.push_str("<span class=\"gap\"></span>gap (offsets missing)</p>\n");
}

/// When the records the view loses begin: the phrase `check` uses.
fn cut_time(seg: &SegmentReport) -> String {
    if seg.damage.is_none() || !matches!(seg.view, ViewAction::Kept | ViewAction::Truncated) {
        return String::new();
    }
    lost_after(seg)
}

fn log_section(o: &mut String, r: &Report, li: usize, log: &LogReport) {
    let map = layout(log);
    let _ = writeln!(
        o,
        "<h2 id=\"log-{li}\">{}</h2>\n<p>{} segment(s), {} bytes, next offset {}, {} gap(s), {} overlap(s), {} orphan(s).</p>",
        escape(&log.path),
        log.segments.len(),
        map.total,
        log.next_offset,
        log.gaps.len(),
        log.overlaps.len(),
        log.orphans.len()
    );
    // The map: every segment a group (even one of no bytes), each of its runs a rect.
    let _ = writeln!(
        o,
        "<svg class=\"map\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {MAP_W} {MAP_H}\" \
width=\"{MAP_W}\" height=\"{MAP_H}\" role=\"img\" aria-label=\"damage map of {}\">",
        escape(&log.path)
    );
    let (xs, ws) = placed(&map.pieces, map.total);
    for (si, seg) in log.segments.iter().enumerate() {
        let _ = write!(
            o,
            "<g class=\"seg\" data-seg=\"{}\"><title>{}</title>",
            escape(&seg.path),
            escape(&format!(
                "{}: {}, {} of {} bytes kept",
                seg.path,
                seg.view.as_str(),
                seg.valid_bytes,
                seg.original_bytes
            ))
        );
        for (i, p) in map.pieces.iter().enumerate().filter(|(_, p)| p.seg == si) {
            let (x, w) = (xs[i], ws[i]);
            let _ = write!(
                o,
                "<rect class=\"{}\" x=\"{x:.2}\" y=\"0\" width=\"{w:.2}\" height=\"{MAP_H}\"/>",
                p.part.name()
            );
        }
        o.push_str("</g>\n");
    }
    for g in &map.gaps {
        // After every piece that ends at or before it (pieces are in byte order).
        let k = map.pieces.partition_point(|p| p.start + p.bytes <= *g);
        let x = if k == 0 { 0.0 } else { xs[k - 1] + ws[k - 1] };
        let _ = writeln!(
            o,
            "<line class=\"gap\" x1=\"{x:.2}\" y1=\"0\" x2=\"{x:.2}\" y2=\"{MAP_H}\"/>"
        );
    }
    o.push_str("</svg>\n");
    o.push_str(
        "<div class=\"wide\"><table class=\"segments\"><tr><th>segment</th><th>status</th><th>view</th>\
<th>original bytes</th><th>bytes kept</th><th>bytes cut</th><th>records</th><th>offsets</th>\
<th>first record</th><th>last record</th><th>damage</th><th>indexes</th><th>cut at</th></tr>\n",
    );
    for seg in &log.segments {
        let offsets = match (seg.first_offset, seg.last_offset) {
            (Some(a), Some(b)) => format!("{a}..={b}"),
            _ => String::new(),
        };
        let ts = |t: Option<i64>| t.map(iso8601_ms).unwrap_or_default();
        let damage = match (&seg.damage, &seg.error) {
            (Some(d), _) => {
                let class = d.class.as_str();
                let mid = if class == "mid-log" {
                    " class=\"mid\""
                } else {
                    ""
                };
                format!(
                    "<span{mid}>{} ({class})</span> at byte {}, record {}: {}",
                    d.kind().as_str(),
                    d.position,
                    d.record,
                    escape(&d.cause.to_string())
                )
            }
            (None, Some(e)) => format!("unreadable: {}", escape(e)),
            (None, None) => String::new(),
        };
        // Which index the view rebuilt, and why (the text's INDEX lines).
        let findings = index_findings(seg);
        let indexes = if seg.status == SegmentStatus::Unreadable {
            String::new()
        } else if findings.is_empty() {
            "match".to_string()
        } else {
            findings
                .iter()
                .map(|(ext, f)| format!("<code>.{ext}</code>: {}", escape(f)))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let cut = if seg.view == ViewAction::Hidden {
            format!("hidden under {}", r.policy)
        } else {
            cut_time(seg)
        };
        let _ = writeln!(
            o,
            "<tr class=\"{}\"><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"nowrap\">{offsets}</td><td class=\"nowrap\">{}</td><td class=\"nowrap\">{}</td><td>{damage}</td><td>{indexes}</td><td>{}</td></tr>",
            seg.view.as_str(),
            // The file name: the log's path heads the section.
            escape(seg.path.rsplit('/').next().unwrap_or(&seg.path)),
            seg.status.as_str(),
            seg.view.as_str(),
            seg.original_bytes,
            seg.valid_bytes,
            seg.bytes_cut(),
            seg.records,
            ts(seg.min_timestamp),
            ts(seg.max_timestamp),
            escape(&cut)
        );
    }
    o.push_str("</table></div>\n");
    for g in &log.gaps {
        let _ = writeln!(
            o,
            "<p class=\"mid\">GAP: offsets {}..={} ({} missing) between <code>{}</code> and <code>{}</code></p>",
            g.from_offset,
            g.to_offset,
            g.missing,
            escape(&g.after),
            escape(&g.before)
        );
    }
    for v in &log.overlaps {
        let _ = writeln!(
            o,
            "<p>OVERLAP: <code>{}</code> starts at {} but <code>{}</code> already reaches {} ({} offsets claimed twice)</p>",
            escape(&v.segment),
            v.base_offset,
            escape(&v.previous),
            v.previous_next_offset,
            v.offsets
        );
    }
    // Only what the view leaves out is "left out": an unrecognized file is served.
    for p in &log.orphans {
        let _ = writeln!(
            o,
            "<p>Left out: <code>{}</code> (an index with no .log)</p>",
            escape(p)
        );
    }
    for p in &log.unrecognized {
        let _ = writeln!(
            o,
            "<p>Unrecognized: <code>{}</code>: named like a segment file, but is not one; \
served unchanged in the view, and repair copies it as it is</p>",
            escape(p)
        );
    }
    elsewhere(o, log);
    divergences(o, log);
}

/// Where each piece of a log's map is drawn and how wide, in map units: in
/// proportion to its bytes, except that damage is at least [`MIN_DAMAGE_W`] wide,
/// the kept pieces shrinking in proportion to make the room.
fn placed(pieces: &[Piece], total: u64) -> (Vec<f64>, Vec<f64>) {
    if total == 0 {
        return (vec![0.0; pieces.len()], vec![0.0; pieces.len()]);
    }
    let share: Vec<f64> = pieces
        .iter()
        .map(|p| p.bytes as f64 * MAP_W / total as f64)
        .collect();
    let widened = |i: usize| pieces[i].part != Part::Kept && share[i] < MIN_DAMAGE_W;
    let n_widened = (0..pieces.len()).filter(|&i| widened(i)).count() as f64;
    let rest: f64 = (0..pieces.len())
        .filter(|&i| !widened(i))
        .map(|i| share[i])
        .sum();
    let room = MAP_W - n_widened * MIN_DAMAGE_W;
    // Too many small pieces to widen them all (or nothing left to shrink): proportional.
    let ws: Vec<f64> = if room <= 0.0 || rest <= 0.0 {
        share
    } else {
        (0..pieces.len())
            .map(|i| {
                if widened(i) {
                    MIN_DAMAGE_W
                } else {
                    share[i] * room / rest
                }
            })
            .collect()
    };
    let mut x = 0.0;
    let xs = ws
        .iter()
        .map(|w| {
            let at = x;
            x += w;
            at
        })
        .collect();
    (xs, ws)
}

/// The segments the view adds that are not the primary's segments as they are:
/// salvaged runs and ranges served from replicas, one row each (refused ones too).
fn elsewhere(o: &mut String, log: &LogReport) {
    let mut rows = Vec::new();
    for seg in &log.segments {
        for r in seg.salvaged.iter().flatten() {
            rows.push((
                r.refused.as_ref().map_or("salvaged", |_| "refused"),
                r.path.clone(),
                r.first_offset,
                r.last_offset,
                r.records,
                format!("the primary's {} byte {}", seg.path, r.position),
                r.refused.clone().unwrap_or_default(),
            ));
        }
    }
    for h in log.healed.iter().flatten() {
        let replica = || format!("replica {} ({})", h.replica_index, h.replica);
        let (what, copy) = match h.role {
            HealedRole::Healed => ("healed", replica()),
            HealedRole::Preferred => ("preferred", replica()),
            HealedRole::PrimarySplit => ("split", "the primary's".to_string()),
        };
        rows.push((
            if h.shown() { what } else { "refused" },
            h.view_path.clone(),
            h.from_offset,
            h.to_offset,
            h.records,
            format!("{copy} {} byte {}", h.path, h.position),
            h.refused.clone().unwrap_or_default(),
        ));
    }
    if rows.is_empty() {
        return;
    }
    o.push_str(
        "<div class=\"wide\"><table class=\"elsewhere\"><tr><th>served as</th><th>segment in the view</th><th>offsets</th>\
<th>records</th><th>bytes from</th><th>not shown because</th></tr>\n",
    );
    for (what, path, a, b, n, from, refused) in rows {
        let _ = writeln!(
            o,
            "<tr class=\"{what}\"><td>{what}</td><td><code>{}</code></td><td>{a}..={b}</td><td class=\"n\">{n}</td><td><code>{}</code></td><td>{}</td></tr>",
            escape(&path),
            escape(&from),
            escape(&refused)
        );
    }
    o.push_str("</table></div>\n");
}

/// The records the copies disagree on (`--replica`), one row each.
fn divergences(o: &mut String, log: &LogReport) {
    let listed = log.divergences.iter().flatten().collect::<Vec<_>>();
    if listed.is_empty() {
        return;
    }
    o.push_str(
        "<div class=\"wide\"><table class=\"divergences\"><tr><th>offset</th><th>fields that differ</th><th>copies</th><th>verdict</th></tr>\n",
    );
    for d in listed {
        let copies: Vec<String> = d
            .copies
            .iter()
            .map(|c| format!("{} {} byte {}", c.copy, c.path, c.position))
            .collect();
        let _ = writeln!(
            o,
            "<tr class=\"eio\"><td class=\"n\">{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            d.offset,
            d.fields.join(", "),
            escape(&copies.join("; ")),
            escape(&d.verdict)
        );
    }
    o.push_str("</table></div>\n");
    if let Some(n) = log.divergences_not_listed {
        let _ = writeln!(o, "<p class=\"mid\">{n} more divergence(s) not listed.</p>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_keeps_its_line_breaks_and_escapes_the_rest() {
        assert_eq!(escape_lines("a <b>\nc\u{1b}\n"), "a &lt;b&gt;\nc\\x1b\n");
    }

    #[test]
    fn small_damage_is_widened_and_the_bar_keeps_its_width() {
        let piece = |part, start, bytes| Piece {
            part,
            seg: 0,
            start,
            bytes,
        };
        let pieces = [
            piece(Part::Kept, 0, 1_000_000),
            piece(Part::Cut, 1_000_000, 3),
            piece(Part::Kept, 1_000_003, 1_000_000),
        ];
        let (xs, ws) = placed(&pieces, 2_000_003);
        assert_eq!(ws[1], MIN_DAMAGE_W);
        assert!((ws.iter().sum::<f64>() - MAP_W).abs() < 1e-9, "{ws:?}");
        assert!((xs[2] - (xs[1] + ws[1])).abs() < 1e-9 && xs[0] == 0.0);
    }

    #[test]
    fn escape_leaves_no_markup() {
        assert_eq!(
            escape("<img src=x onerror='a(\"1\")'>&\u{1b}"),
            "&lt;img src=x onerror=&#39;a(&quot;1&quot;)&#39;&gt;&amp;\\x1b"
        );
    }
}
