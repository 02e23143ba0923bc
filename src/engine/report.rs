//! The schema-1 report: its types, JSON form, and the short human form.

use crate::engine::format::takhin::{classify_name, FileKind, NameMatch, INDEX_EXT, TIMEINDEX_EXT};
use crate::engine::index::{IndexKind, IndexVerdict};
use crate::engine::layout::{display_name as shown, escape_path, Problem};
use crate::engine::policy::{DamageClass, Policy, ViewAction};
use crate::engine::salvage::{Salvage, SalvagedRun};
use crate::engine::scan::{Damage, DamageKind, SegmentScan};
use crate::engine::segment::{SegmentAnalysis, SegmentStatus};
use crate::engine::source::SourceAccess;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

/// The report's schema version.
pub const SCHEMA: u32 = 1;

/// Where a segment's valid prefix ends, why, and whether data was lost there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamageReport {
    pub class: DamageClass,
    /// Byte position in the `.log` where the first bad record starts.
    pub position: u64,
    /// Index of the first bad record in its segment.
    pub record: u64,
    /// What was found there; its text is the report's `detail`.
    pub cause: Damage,
}

impl DamageReport {
    pub fn kind(&self) -> DamageKind {
        self.cause.kind()
    }
}

impl Serialize for DamageReport {
    /// Schema 1: `{kind, class, position, record, detail}`, in that order.
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut st = ser.serialize_struct("DamageReport", 5)?;
        st.serialize_field("kind", &self.kind())?;
        st.serialize_field("class", &self.class)?;
        st.serialize_field("position", &self.position)?;
        st.serialize_field("record", &self.record)?;
        st.serialize_field("detail", &self.cause.to_string())?;
        st.end()
    }
}

fn offset_index_text<S: Serializer>(v: &IndexVerdict, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&v.describe(IndexKind::Offset))
}

fn time_index_text<S: Serializer>(v: &IndexVerdict, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&v.describe(IndexKind::Time))
}

#[derive(Debug, Clone, Serialize)]
pub struct SegmentReport {
    pub path: String,
    pub base_offset: u64,
    pub status: SegmentStatus,
    pub original_bytes: u64,
    pub valid_bytes: u64,
    pub records: u64,
    pub first_offset: Option<u64>,
    pub last_offset: Option<u64>,
    pub min_timestamp: Option<i64>,
    pub max_timestamp: Option<i64>,
    pub damage: Option<DamageReport>,
    /// Why the `.log` could not be read, for `unreadable` segments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The original `.index` against the rebuilt one (schema 1: its text).
    #[serde(serialize_with = "offset_index_text")]
    pub index: IndexVerdict,
    /// The original `.timeindex` against the rebuilt one (schema 1: its text).
    #[serde(serialize_with = "time_index_text")]
    pub timeindex: IndexVerdict,
    pub visible: bool,
    pub view: ViewAction,
    /// The runs salvaged after the damage: present (possibly empty) under the
    /// salvage policy only, so the other policies' JSON is unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salvaged: Option<Vec<SalvagedReport>>,
    /// The scan behind this entry, for the front ends (not serialized).
    #[serde(skip)]
    pub scan: Option<Arc<SegmentScan>>,
    /// The salvage behind `salvaged`, for the front ends (not serialized).
    #[serde(skip)]
    pub salvage: Option<Arc<Salvage>>,
}

/// One run of intact records salvaged after a segment's damage, shown as a
/// segment of its own named by its first offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SalvagedReport {
    /// The run's `.log` in the view.
    pub path: String,
    /// Where the run starts in the original `.log`.
    pub position: u64,
    pub bytes: u64,
    pub first_offset: u64,
    pub last_offset: u64,
    pub records: u64,
    /// The original `.index` holds `(first_offset, position)`; else the run was
    /// accepted because its records chain (or it reaches the end of the file).
    pub confirmed_by_index: bool,
    /// Why the run is not shown (its name is taken by a file of the source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl SalvagedReport {
    pub fn of(rel: &Path, run: &SalvagedRun) -> Self {
        SalvagedReport {
            path: escape_path(rel),
            position: run.position,
            bytes: run.bytes(),
            first_offset: run.first_offset,
            last_offset: run.last_offset(),
            records: run.records,
            confirmed_by_index: run.confirmed_by_index,
            refused: None,
        }
    }

    /// True when the view shows the run.
    pub fn shown(&self) -> bool {
        self.refused.is_none()
    }
}

impl SegmentReport {
    pub fn from_analysis(
        rel: &Path,
        a: &SegmentAnalysis,
        view: ViewAction,
        is_last_of_log: bool,
    ) -> Self {
        let scan = a.scan.as_ref().ok().cloned();
        let damage = scan
            .as_ref()
            .and_then(|s| s.damage.as_ref())
            .map(|d| DamageReport {
                class: DamageClass::of(d.kind(), is_last_of_log),
                position: d.position,
                record: d.record,
                cause: d.cause,
            });
        SegmentReport {
            path: escape_path(rel),
            base_offset: a.base,
            status: a.status(),
            original_bytes: a.stamp.size,
            valid_bytes: scan.as_ref().map_or(0, |s| s.valid_bytes),
            records: scan.as_ref().map_or(0, |s| s.records),
            first_offset: scan.as_ref().and_then(|s| s.first_offset()),
            last_offset: scan.as_ref().and_then(|s| s.last_offset()),
            min_timestamp: scan.as_ref().and_then(|s| s.min_timestamp),
            max_timestamp: scan.as_ref().and_then(|s| s.max_timestamp),
            damage,
            error: a.scan.as_ref().err().map(|e| e.to_string()),
            index: a.index.clone(),
            timeindex: a.timeindex.clone(),
            visible: view.listed(),
            view,
            salvaged: None,
            scan,
            salvage: a.salvage.clone(),
        }
    }

    /// The runs the view shows with this segment: none unless it serves the segment.
    pub fn shown_runs(&self) -> impl Iterator<Item = (&SalvagedReport, &SalvagedRun)> {
        let runs = match (&self.salvaged, &self.salvage) {
            (Some(r), Some(s)) if self.view.serves() => Some(r.iter().zip(&s.runs)),
            _ => None,
        };
        runs.into_iter().flatten().filter(|(r, _)| r.shown())
    }

    /// True when the original `.index` and `.timeindex` both match the rebuilt ones.
    pub fn indexes_match(&self) -> bool {
        self.index.is_match() && self.timeindex.is_match()
    }

    /// True when the view serves rebuilt indexes that differ from the originals.
    pub fn indexes_rebuilt(&self) -> bool {
        !self.indexes_match() && self.status != SegmentStatus::Unreadable
    }

    pub fn bytes_cut(&self) -> u64 {
        self.original_bytes.saturating_sub(self.valid_bytes)
    }
}

/// Offsets no segment holds: between the end of `after`'s valid prefix and `before`'s base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub after: String,
    pub before: String,
    pub from_offset: u64,
    pub to_offset: u64,
    pub missing: u64,
}

/// Offsets claimed by two segments: `segment` starts before `previous` ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overlap {
    pub segment: String,
    pub previous: String,
    pub base_offset: u64,
    pub previous_next_offset: u64,
    pub offsets: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogReport {
    pub path: String,
    /// The offset a broker would assign next: the end of the last served segment's prefix.
    pub next_offset: u64,
    pub gaps: Vec<Gap>,
    pub overlaps: Vec<Overlap>,
    pub orphans: Vec<String>,
    pub unrecognized: Vec<String>,
    pub segments: Vec<SegmentReport>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub logs: u64,
    pub segments: u64,
    pub clean: u64,
    pub truncated: u64,
    pub unreadable: u64,
    /// Records the view serves.
    pub records: u64,
    /// `.log` bytes the view serves.
    pub bytes_kept: u64,
    /// `.log` bytes the view leaves out: damaged tails, and hidden segments whole.
    pub bytes_cut: u64,
    pub hidden: u64,
    pub indexes_rebuilt: u64,
    pub gaps: u64,
    pub overlaps: u64,
    pub orphans: u64,
    pub unrecognized: u64,
    /// Whether the policy's view differs from the source (what `check`'s exit code says).
    pub view_differs: bool,
    /// Runs salvaged and shown (salvage policy only; counted in `records` and `bytes_kept`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salvaged_runs: Option<u64>,
    /// Records of those runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salvaged_records: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: u32,
    pub source: String,
    pub policy: Policy,
    /// How the source was read: through a read-only noatime clone, or plain `O_NOATIME` opens.
    pub source_access: SourceAccess,
    pub summary: Summary,
    pub logs: Vec<LogReport>,
    /// Directories that could not be listed.
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn new(
        source: &str,
        policy: Policy,
        source_access: SourceAccess,
        logs: Vec<LogReport>,
        problems: Vec<Problem>,
    ) -> Self {
        let mut s = Summary {
            logs: logs.len() as u64,
            ..Default::default()
        };
        for log in &logs {
            s.gaps += log.gaps.len() as u64;
            s.overlaps += log.overlaps.len() as u64;
            s.orphans += log.orphans.len() as u64;
            s.unrecognized += log.unrecognized.len() as u64;
            for seg in &log.segments {
                s.segments += 1;
                match seg.status {
                    SegmentStatus::Clean => s.clean += 1,
                    SegmentStatus::Truncated => s.truncated += 1,
                    SegmentStatus::Unreadable => s.unreadable += 1,
                }
                if seg.indexes_rebuilt() {
                    s.indexes_rebuilt += 1;
                }
                match seg.view {
                    ViewAction::Kept | ViewAction::Truncated => {
                        s.records += seg.records;
                        s.bytes_kept += seg.valid_bytes;
                        s.bytes_cut += seg.bytes_cut();
                    }
                    ViewAction::Hidden => {
                        s.hidden += 1;
                        s.bytes_cut += seg.original_bytes;
                    }
                    ViewAction::Eio => {}
                }
                if policy.salvages() {
                    for (r, _) in seg.shown_runs() {
                        *s.salvaged_runs.get_or_insert(0) += 1;
                        *s.salvaged_records.get_or_insert(0) += r.records;
                        s.records += r.records;
                        s.bytes_kept += r.bytes;
                        s.bytes_cut = s.bytes_cut.saturating_sub(r.bytes);
                    }
                }
            }
        }
        if policy.salvages() {
            s.salvaged_runs.get_or_insert(0);
            s.salvaged_records.get_or_insert(0);
        }
        s.view_differs = s.truncated > 0
            || s.unreadable > 0
            || s.hidden > 0
            || s.indexes_rebuilt > 0
            || s.orphans > 0
            || !problems.is_empty()
            || (policy == Policy::Strict && (s.gaps > 0 || s.overlaps > 0 || s.unrecognized > 0));
        Report {
            schema: SCHEMA,
            source: source.to_string(),
            policy,
            source_access,
            summary: s,
            logs,
            problems,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }

    /// Every segment, with its log.
    pub fn segments(&self) -> impl Iterator<Item = (&LogReport, &SegmentReport)> {
        self.logs
            .iter()
            .flat_map(|l| l.segments.iter().map(move |s| (l, s)))
    }

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
                .sum();
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
            let next = if log.segments.is_empty() || log.segments.iter().any(served) {
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
                        let lost = match seg.scan.as_ref().and_then(|s| s.last_timestamp) {
                            Some(t) => format!("records after {} are lost", iso8601_ms(t)),
                            None => "no record kept".to_string(),
                        };
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
                if seg.status != SegmentStatus::Unreadable {
                    let stem = path.strip_suffix(".log").unwrap_or(&path);
                    let fate = match seg.view {
                        ViewAction::Hidden => "the segment is hidden",
                        ViewAction::Eio => "not served: the segment answers EIO",
                        _ => "rebuilt in the view",
                    };
                    for (ext, v, kind) in [
                        (INDEX_EXT, &seg.index, IndexKind::Offset),
                        (TIMEINDEX_EXT, &seg.timeindex, IndexKind::Time),
                    ] {
                        if !v.is_match() {
                            let _ = writeln!(
                                o,
                                "  INDEX       {stem}.{ext}: {} ({fate})",
                                v.describe(kind)
                            );
                        }
                    }
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
        }
        let _ = writeln!(
            o,
            "{} log(s), {} segment(s): {} clean, {} truncated, {} unreadable; {} record(s); {} bytes kept, {} bytes cut; {} gap(s), {} overlap(s), {} orphan(s), {} index set(s) rebuilt, {} hidden",
            s.logs, s.segments, s.clean, s.truncated, s.unreadable, s.records, s.bytes_kept, s.bytes_cut,
            s.gaps, s.overlaps, s.orphans, s.indexes_rebuilt, s.hidden
        );
        if let (Some(runs), Some(records)) = (s.salvaged_runs, s.salvaged_records) {
            let _ = writeln!(
                o,
                "salvaged: {runs} run(s), {records} record(s) after mid-segment damage, each shown as a segment of its own"
            );
        }
        o
    }

    /// The advice line: every command in it can be pasted as is (paths shell-quoted,
    /// a directory where a command needs one, a mount point created first, a policy
    /// that repairs something).
    pub fn next_steps(&self) -> String {
        let s = &self.summary;
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
        let _ = write!(
            n,
            "Inspect with `mkdir -p /mnt/recoverfs && recoverfs mount {q} /mnt/recoverfs --policy {p}`, then `recoverfs repair {q} --output {out} --policy {p}`.",
        );
        n
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
    use crate::engine::scan::DamageKind;

    /// The one `as_str` of each enum is the name the JSON report uses.
    #[test]
    fn enum_names_are_their_serde_names() {
        let json = |v: serde_json::Value| v.as_str().unwrap().to_string();
        for p in Policy::ALL {
            assert_eq!(json(serde_json::json!(p)), p.as_str());
        }
        for c in [DamageClass::Tail, DamageClass::MidLog] {
            assert_eq!(json(serde_json::json!(c)), c.as_str());
        }
        for a in [
            ViewAction::Kept,
            ViewAction::Truncated,
            ViewAction::Hidden,
            ViewAction::Eio,
        ] {
            assert_eq!(json(serde_json::json!(a)), a.as_str());
        }
        for s in [
            SegmentStatus::Clean,
            SegmentStatus::Truncated,
            SegmentStatus::Unreadable,
        ] {
            assert_eq!(json(serde_json::json!(s)), s.as_str());
        }
        for k in [
            DamageKind::IncompleteRecord,
            DamageKind::ZeroFill,
            DamageKind::BadSize,
            DamageKind::BadLengths,
            DamageKind::OffsetMismatch,
        ] {
            assert_eq!(json(serde_json::json!(k)), k.as_str());
        }
    }

    #[test]
    fn shell_quote_quotes_what_the_shell_would_split() {
        assert_eq!(shell_quote("/var/lib/takhin"), "/var/lib/takhin");
        assert_eq!(shell_quote("/data/my logs"), "'/data/my logs'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    /// The damages the golden reports do not hold keep their schema-1 text.
    #[test]
    fn damage_details_keep_their_text() {
        let cases = [
            (
                Damage::FewBytesLeft { remain: 3 },
                DamageKind::IncompleteRecord,
                "only 3 byte(s) remain at the end of the file; a record needs at least 4",
            ),
            (
                Damage::SizeTooSmall { size: 7 },
                DamageKind::BadSize,
                "size 7 is below the smallest possible record (28)",
            ),
            (
                Damage::LengthsDisagree {
                    key_len: 1,
                    value_len: 2,
                    size: 40,
                },
                DamageKind::BadLengths,
                "28 + key_len 1 + value_len 2 = 31 but size says 40",
            ),
        ];
        for (d, kind, text) in cases {
            assert_eq!((d.kind(), d.to_string()), (kind, text.to_string()));
        }
    }
}
