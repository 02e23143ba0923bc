//! The report's human form: the short text `check` prints (a line per log, one per finding, totals, what next).

use crate::engine::format::takhin::{classify_name, FileKind, NameMatch, INDEX_EXT, TIMEINDEX_EXT};
use crate::engine::index::{IndexKind, IndexVerdict};
use crate::engine::layout::display_name as shown;
use crate::engine::policy::{DamageClass, Policy, ViewAction};
use crate::engine::report::{HealedRole, LogReport, Report, SegmentReport};
use crate::engine::segment::SegmentStatus;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

impl Report {
    /// The short human form: a line per log, a line per anomaly, totals, what next.
    pub fn render_human(&self) -> String {
        format!(
            "recoverfs check {} (policy {})\n{}{}\n",
            shown(&self.source),
            self.policy,
            self.render_human_body(),
            // Quoted for pasting, and control characters escaped like every name shown.
            shown(&self.next_steps())
        )
    }

    /// [`Self::render_human`] without its `check` title and its `Next:` advice:
    /// the lines about the logs and the totals, for a front end with its own title and advice.
    pub fn render_human_body(&self) -> String {
        let mut o = String::new();
        let s = &self.summary;
        for p in &self.problems {
            let _ = writeln!(o, "  UNREADABLE  {}/: {}", shown(&p.path), p.error);
        }
        for p in &self.not_crossed {
            let _ = writeln!(
                o,
                "  NOT CROSSED {}/: another filesystem is mounted there; left out (--cross-mounts to include it)",
                shown(p)
            );
        }
        for log in &self.logs {
            let count =
                |f: &dyn Fn(&SegmentReport) -> bool| log.segments.iter().filter(|x| f(x)).count();
            let findings: Vec<String> = [
                (
                    count(&|x| x.status == SegmentStatus::Truncated),
                    "truncated",
                ),
                (
                    count(&|x| x.status == SegmentStatus::Unreadable),
                    "unreadable",
                ),
                (count(&|x| x.indexes_rebuilt()), "with indexes rebuilt"),
                (log.gaps.len(), "gap(s)"),
                (log.overlaps.len(), "overlap(s)"),
                (log.orphans.len(), "orphan(s)"),
                (log.unrecognized.len(), "unrecognized name(s)"),
                (
                    log.shown_healed().filter(|h| h.role.is_healed()).count(),
                    "range(s) healed",
                ),
                (
                    log.divergences.as_ref().map_or(0, |d| d.len())
                        + log.divergences_not_listed.unwrap_or(0) as usize,
                    "divergence(s)",
                ),
            ]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
            let verdict = if findings.is_empty() {
                "ok".to_string()
            } else {
                findings.join(", ")
            };
            // Only what the view serves: hidden and refused segments are counted apart.
            let served =
                |x: &SegmentReport| matches!(x.view, ViewAction::Kept | ViewAction::Truncated);
            // Salvaged runs shown as segments of their own are served records too.
            let records: u64 = log
                .segments
                .iter()
                .filter(|x| served(x))
                .map(|x| x.records + x.shown_runs().map(|(r, _)| r.records).sum::<u64>())
                .sum::<u64>()
                // Healed ranges are served records too.
                + log
                    .shown_healed()
                    .filter(|h| h.role.is_healed())
                    .map(|h| h.records)
                    .sum::<u64>();
            let mut verdict = verdict;
            for (n, what) in [
                (count(&|x| x.view == ViewAction::Hidden), "hidden"),
                (
                    count(&|x| x.view == ViewAction::Eio && x.status != SegmentStatus::Unreadable),
                    "refused (EIO)",
                ),
            ] {
                if n > 0 {
                    verdict = if verdict == "ok" {
                        format!("{n} {what}")
                    } else {
                        format!("{verdict}, {n} {what}")
                    };
                }
            }
            let next = if log.segments.is_empty()
                || log.segments.iter().any(served)
                || log.shown_healed().next().is_some()
            {
                format!("next offset {}", log.next_offset)
            } else {
                "no segment served".to_string()
            };
            let _ = writeln!(
                o,
                "{}: {} segment(s), {} record(s), {next}: {verdict}",
                shown(&log.path),
                log.segments.len(),
                records,
            );
            for seg in &log.segments {
                // Names in human text: control characters escaped, never sent raw.
                let path = shown(&seg.path);
                if let Some(d) = &seg.damage {
                    // Mid-log damage lost data: shouted, so it is not read past.
                    let class = match d.class {
                        DamageClass::Tail => "tail",
                        DamageClass::MidLog => "MID-LOG",
                    };
                    if served(seg) {
                        let lost = lost_after(seg);
                        let _ = writeln!(
                            o,
                            "  TRUNCATED   {}: {} ({class}) at byte {}, record {}: {} bytes cut, {} record(s) kept, {lost}; {}",
                            path, d.kind(), d.position, d.record, seg.bytes_cut(), seg.records, d.cause
                        );
                    } else {
                        // Not served at all: nothing is cut, the whole segment is out.
                        let _ = writeln!(
                            o,
                            "  DAMAGED     {}: {} ({class}) at byte {}, record {}: the valid prefix holds {} record(s); {}",
                            path, d.kind(), d.position, d.record, seg.records, d.cause
                        );
                    }
                }
                render_salvaged(&mut o, seg);
                if let Some(e) = &seg.error {
                    let _ = writeln!(o, "  UNREADABLE  {path}: {e}");
                }
                let stem = path.strip_suffix(".log").unwrap_or(&path);
                for (ext, finding) in index_findings(seg) {
                    let _ = writeln!(o, "  INDEX       {stem}.{ext}: {finding}");
                }
                match seg.view {
                    ViewAction::Hidden => {
                        let span = match (
                            seg.first_offset,
                            seg.last_offset,
                            seg.min_timestamp,
                            seg.max_timestamp,
                        ) {
                            (Some(a), Some(b), Some(t0), Some(t1)) => format!(
                                ": offsets {a}..={b} ({} record(s), {} bytes) from {} to {}",
                                seg.records,
                                seg.original_bytes,
                                iso8601_ms(t0),
                                iso8601_ms(t1)
                            ),
                            _ => format!(": {} bytes, no valid record", seg.original_bytes),
                        };
                        let _ = writeln!(
                            o,
                            "  HIDDEN      {path}: left out under {}{span}",
                            self.policy
                        );
                    }
                    ViewAction::Eio if seg.status != SegmentStatus::Unreadable => {
                        let _ = writeln!(
                            o,
                            "  EIO         {path}: refused under strict (reads fail with EIO)"
                        );
                    }
                    _ => {}
                }
            }
            for g in &log.gaps {
                let _ = writeln!(
                    o,
                    "  GAP         offsets {}..={} ({} missing) between {} and {}",
                    g.from_offset,
                    g.to_offset,
                    g.missing,
                    shown(&g.after),
                    shown(&g.before)
                );
            }
            for v in &log.overlaps {
                let _ = writeln!(
                    o,
                    "  OVERLAP     {} starts at {} but {} already reaches {} ({} offsets claimed twice)",
                    shown(&v.segment), v.base_offset, shown(&v.previous), v.previous_next_offset, v.offsets
                );
            }
            for p in &log.orphans {
                let _ = writeln!(
                    o,
                    "  ORPHAN      {}: index with no .log (left out of the view)",
                    shown(p)
                );
            }
            for p in &log.unrecognized {
                let _ = writeln!(
                    o,
                    "  UNRECOGNIZED {}: named like a segment file, but is not one",
                    shown(p)
                );
            }
            render_replicas(&mut o, log);
        }
        let _ = writeln!(
            o,
            "{} log(s), {} segment(s): {} clean, {} truncated, {} unreadable{}; {} record(s); {} bytes kept, {} bytes cut; {} gap(s), {} overlap(s), {} orphan(s), {} index set(s) rebuilt, {} hidden{}",
            s.logs, s.segments, s.clean, s.truncated, s.unreadable,
            // The directories that could not be listed (their UNREADABLE lines above).
            match self.problems.len() {
                0 => String::new(),
                n => format!(", {n} unreadable director(ies)"),
            },
            s.records, s.bytes_kept, s.bytes_cut,
            s.gaps, s.overlaps, s.orphans, s.indexes_rebuilt, s.hidden,
            // Under strict, the segments the view refuses (their EIO lines).
            s.refused.map_or(String::new(), |n| format!(", {n} refused (EIO)"))
        );
        if let (Some(runs), Some(records)) = (s.salvaged_runs, s.salvaged_records) {
            let _ = writeln!(
                o,
                "salvaged: {runs} run(s), {records} record(s) after mid-segment damage, each shown as a segment of its own"
            );
        }
        if let (Some(n), Some(h), Some(d)) = (s.replicas, s.healed_records, s.divergences) {
            let _ = writeln!(
                o,
                "replicas: {n}; {h} record(s) healed from them, {d} divergence(s) between copies{}",
                match s.preferred_records {
                    Some(p) => format!(
                        ", {p} record(s) served from a replica instead of the primary (--prefer)"
                    ),
                    None => String::new(),
                }
            );
            for r in self.replicas.iter().flatten() {
                if r.logs_matched == 0 {
                    let _ = writeln!(
                        o,
                        "  NO MATCH    replica {} ({}): holds none of the primary's logs (logs match by their path relative to each directory: give the replica's directory that corresponds to the one checked)",
                        r.index,
                        shown(&r.path)
                    );
                }
                for l in &r.logs_not_in_primary {
                    let _ = writeln!(
                        o,
                        "  NOT IN PRIMARY {}: a log only replica {} ({}) holds; not added to the view",
                        shown(l),
                        r.index,
                        shown(&r.path)
                    );
                }
                for p in &r.problems {
                    let _ = writeln!(
                        o,
                        "  UNREADABLE  replica {} {}/: {}",
                        r.index,
                        shown(&p.path),
                        p.error
                    );
                }
            }
        }
        o
    }

    /// The advice line: every command in it can be pasted as is (paths shell-quoted,
    /// a directory where a command needs one, a mount point created first, a policy
    /// that repairs something).
    pub fn next_steps(&self) -> String {
        let s = &self.summary;
        if !s.view_differs && s.divergences.is_some_and(|d| d > 0) {
            return "Next: copies disagree (see DIVERGENCE); the format has no checksum, so only the copies can tell which is right: keep them all as evidence.".into();
        }
        if !s.view_differs {
            if s.gaps > 0 || s.overlaps > 0 {
                return format!("Next: the segments are intact but offsets are missing or doubled (see GAP/OVERLAP); nothing to repair under {}.", self.policy);
            }
            return "Next: nothing to do; the log is clean.".into();
        }
        let mid = self.segments().any(|(_, x)| {
            x.damage
                .as_ref()
                .is_some_and(|d| d.class == DamageClass::MidLog)
        });
        let mut n = String::from("Next: ");
        if mid && s.salvaged_runs.is_some_and(|r| r > 0) {
            n.push_str("MID-LOG damage lost data; the records after it that could be salvaged are shown as segments of their own (see SALVAGED; no checksum vouches for them); keep the originals as evidence. ");
        } else if mid {
            n.push_str("MID-LOG damage lost data; keep the originals as evidence. ");
        } else if s.truncated > 0 {
            n.push_str("only tail damage (the trace of an unclean shutdown). ");
        }
        let differs = self.segments().any(|(_, x)| {
            x.status == SegmentStatus::Clean
                && [&x.index, &x.timeindex]
                    .iter()
                    .any(|v| matches!(v, IndexVerdict::Differs { .. }))
        });
        if differs {
            n.push_str("An index that disagrees with a clean .log can mean bytes changed inside records, which the format cannot detect: look with `recoverfs dump`. ");
        }
        // mount and repair take a directory: a single segment's is its partition.
        let src = Path::new(&self.source);
        let dir = match src.file_name().map(|f| classify_name(f.as_bytes())) {
            Some(NameMatch::Segment(_, FileKind::Log)) => src
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
            _ => src,
        };
        let dir_text = dir.to_string_lossy();
        let dir_text = match dir_text.trim_end_matches('/') {
            "" => "/",
            t => t,
        };
        let q = shell_quote(dir_text);
        let out = shell_quote(&format!("{dir_text}.repaired"));
        if dir != src {
            let _ = write!(
                n,
                "{} is one segment of {q}: mount and repair take the directory. ",
                shell_quote(&self.source)
            );
        }
        // strict repairs nothing by design: advise the policy that does.
        let p = if self.policy == Policy::Strict {
            n.push_str("Under strict nothing is repaired (a repair refuses); per-segment keeps every valid prefix. ");
            Policy::PerSegment
        } else {
            self.policy
        };
        if s.divergences.is_some_and(|d| d > 0) {
            n.push_str("Copies disagree (see DIVERGENCE): the format has no checksum, so only the copies can tell; `--prefer majority` (three copies or more) serves the majority's record. ");
        }
        // The same replicas heal the mount and the repair as they healed this check.
        let reps: String = self
            .replicas
            .iter()
            .flatten()
            .map(|r| format!(" --replica {}", shell_quote(&r.path)))
            .collect();
        let _ = write!(
            n,
            "Inspect with `mkdir -p /mnt/recoverfs && recoverfs mount {q} /mnt/recoverfs --policy {p}{reps}`, then `recoverfs repair {q} --output {out} --policy {p}{reps}`.",
        );
        n
    }
}

/// Each of a segment's original indexes that is not what its `.log` gives, by
/// extension: what is wrong with it and what the view does about it, in the words
/// the text report and the HTML page share. None for an unreadable segment.
pub fn index_findings(seg: &SegmentReport) -> Vec<(&'static str, String)> {
    if seg.status == SegmentStatus::Unreadable {
        return Vec::new();
    }
    let fate = match seg.view {
        ViewAction::Hidden => "the segment is hidden",
        ViewAction::Eio => "not served: the segment answers EIO",
        _ => "rebuilt in the view",
    };
    [
        (INDEX_EXT, &seg.index, IndexKind::Offset),
        (TIMEINDEX_EXT, &seg.timeindex, IndexKind::Time),
    ]
    .into_iter()
    .filter(|(_, v, _)| !v.is_match())
    .map(|(ext, v, kind)| (ext, format!("{} ({fate})", v.describe(kind))))
    .collect()
}

/// When a truncated segment's lost records begin, in the words the text report and
/// the HTML page share: the time of the last record kept.
pub fn lost_after(seg: &SegmentReport) -> String {
    match seg.scan.as_ref().and_then(|s| s.last_timestamp) {
        Some(t) => format!("records after {} are lost", iso8601_ms(t)),
        None => "no record kept".to_string(),
    }
}

/// Milliseconds since the epoch as ISO-8601 UTC, or a note when out of range.
pub fn iso8601_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "out-of-range".into())
}

/// `s` as one shell word: as is when it holds only safe characters, else in single quotes.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The human lines of a log's healed ranges and divergences, one each.
fn render_replicas(o: &mut String, log: &LogReport) {
    for h in log.healed.iter().flatten() {
        let (tag, from) = match h.role {
            HealedRole::Healed => ("HEALED     ", format!("from replica {}", h.replica_index)),
            HealedRole::Preferred => (
                "PREFERRED  ",
                format!(
                    "served from replica {} instead of the primary's divergent record",
                    h.replica_index
                ),
            ),
            HealedRole::PrimarySplit => (
                "SPLIT      ",
                "the primary's own records, split around a preferred record".to_string(),
            ),
        };
        let what = match (&h.refused, &h.replaces, h.role) {
            (Some(why), _, _) => format!(", not shown: {why}"),
            (None, Some(_), HealedRole::Healed) => {
                " (replaces the primary's segment of that name, which holds no record)".into()
            }
            (None, Some(_), _) => " (in place of the primary's file of that name)".into(),
            (None, None, _) => String::new(),
        };
        let _ = writeln!(
            o,
            "  {} {}: offsets {}..={} ({} record(s)) {from}, {} byte {}{what}",
            if h.shown() { tag } else { "REFUSED    " },
            shown(&h.view_path),
            h.from_offset,
            h.to_offset,
            h.records,
            shown(&h.path),
            h.position,
        );
    }
    for d in log.divergences.iter().flatten() {
        let copies: Vec<String> = d
            .copies
            .iter()
            .map(|c| format!("{} {} byte {}", c.copy, shown(&c.path), c.position))
            .collect();
        let _ = writeln!(
            o,
            "  DIVERGENCE  {} offset {}: {} differ(s) ({}); {}",
            shown(&log.path),
            d.offset,
            d.fields.join(", "),
            copies.join("; "),
            d.verdict
        );
    }
    if let Some(n) = log.divergences_not_listed {
        let _ = writeln!(o, "  DIVERGENCE  {}: {n} more not listed", shown(&log.path));
    }
}

/// The human lines of a segment's salvaged runs, one each.
fn render_salvaged(o: &mut String, seg: &SegmentReport) {
    for r in seg.salvaged.iter().flatten() {
        let how = if r.confirmed_by_index {
            "confirmed by the index"
        } else {
            "chained"
        };
        match &r.refused {
            None => {
                let _ = writeln!(
                    o,
                    "  SALVAGED    {}: {} record(s), offsets {}..={} from byte {} ({how})",
                    shown(&r.path),
                    r.records,
                    r.first_offset,
                    r.last_offset,
                    r.position
                );
            }
            Some(why) => {
                let _ = writeln!(
                    o,
                    "  REFUSED     {}: {} record(s), offsets {}..={} from byte {} of {}, not shown: {why}",
                    shown(&r.path),
                    r.records,
                    r.first_offset,
                    r.last_offset,
                    r.position,
                    shown(&seg.path)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_quotes_what_the_shell_would_split() {
        assert_eq!(shell_quote("/var/lib/takhin"), "/var/lib/takhin");
        assert_eq!(shell_quote("/data/my logs"), "'/data/my logs'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
