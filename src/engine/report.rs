//! The schema-1 report: its types, JSON form, and the short human form.

use crate::engine::baseline::{BaselineReport, ChangeReport, FileSums};
use crate::engine::index::{IndexKind, IndexVerdict};
use crate::engine::layout::{escape_path, Problem};
use crate::engine::policy::{DamageClass, Policy, ViewAction};
use crate::engine::salvage::{Salvage, SalvagedRun};
use crate::engine::scan::{Damage, DamageKind, SegmentScan};
use crate::engine::segment::{SegmentAnalysis, SegmentStatus};
use crate::engine::source::SourceAccess;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use std::path::Path;
use std::sync::Arc;

#[cfg(feature = "fault-injection")]
thread_local! {
    static SHOWN_RUNS_ASKED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// With the `fault-injection` feature (tests only): how many times this thread has
/// asked a segment for its shown runs ([`SegmentReport::shown_runs`]). A plan that asks
/// once per segment is linear in the runs; one that searches them once per run file is
/// quadratic, and a count tells the two apart where a stopwatch only guesses.
#[cfg(feature = "fault-injection")]
pub fn shown_runs_asked() -> u64 {
    SHOWN_RUNS_ASKED.with(|n| n.get())
}

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
    /// What changed in the `.log` since the integrity baseline (`--baseline` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_since_baseline: Option<ChangeReport>,
    /// The `.log`'s block sums, for `--save-baseline` (not serialized).
    #[serde(skip)]
    pub sums: Option<FileSums>,
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
            changed_since_baseline: a.changed.map(ChangeReport::from),
            sums: a.sums.clone(),
        }
    }

    /// The runs the view shows with this segment: none unless it serves the segment.
    pub fn shown_runs(&self) -> impl Iterator<Item = (&SalvagedReport, &SalvagedRun)> {
        #[cfg(feature = "fault-injection")]
        SHOWN_RUNS_ASKED.with(|n| n.set(n.get() + 1));
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

/// An offset range the primary lacks, filled from a replica's valid run: shown
/// as a segment of its own named by its first offset, whose `.log` is the byte
/// range `[position, position + bytes)` of the replica's file `path`.
#[derive(Debug, Clone, Serialize)]
pub struct HealedReport {
    pub from_offset: u64,
    pub to_offset: u64,
    pub records: u64,
    /// The replica's data directory, as given with `--replica`.
    pub replica: String,
    /// Which `--replica` (1 for the first): `.recoverfs/replicas/<n>/` in a mount.
    pub replica_index: usize,
    /// The replica's `.log` the bytes come from, relative to its data directory.
    pub path: String,
    /// Where the range starts in that `.log`.
    pub position: u64,
    pub bytes: u64,
    /// The healed segment's `.log` in the view.
    pub view_path: String,
    /// The primary segment of the same name whose view holds no record, which
    /// the healed segment replaces in the view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// Why the range is not shown (its name is taken by another file of the primary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The range scanned as a clean segment of its own (base `from_offset`,
    /// positions relative to `position`), for the front ends (not serialized).
    #[serde(skip)]
    pub scan: Arc<SegmentScan>,
    /// The replica's `.log` (relative to its data directory) and its stamp when
    /// the range was scanned (not serialized): reads check the file still has it.
    #[serde(skip)]
    pub file: std::path::PathBuf,
    #[serde(skip)]
    pub file_stamp: crate::engine::segment::FileStamp,
    /// The replica's data directory, through its door (not serialized): what
    /// `repair` reads the range's bytes through.
    #[serde(skip)]
    pub source: Option<Arc<crate::engine::source::Source>>,
    /// Why the range is in the view (absent for a range the primary lacked).
    #[serde(skip_serializing_if = "HealedRole::is_healed")]
    pub role: HealedRole,
}

/// Why a range served from another file is in the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealedRole {
    /// Offsets the primary lacks.
    #[default]
    Healed,
    /// A record the primary holds but disagrees on, served from the copy `--prefer` chose.
    Preferred,
    /// The primary's own records around a preferred one: the primary segment (or run)
    /// holding it is shown split, each part a segment of its own.
    PrimarySplit,
}

impl HealedRole {
    pub fn is_healed(&self) -> bool {
        *self == HealedRole::Healed
    }
}

impl HealedReport {
    /// True when the view shows the range.
    pub fn shown(&self) -> bool {
        self.refused.is_none()
    }
    /// The base offset of the primary segment this range replaces in the view.
    pub fn replaced_base(&self) -> Option<u64> {
        self.replaces.as_ref().map(|_| self.from_offset)
    }
}

/// One copy's record in a [`Divergence`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DivergentCopy {
    /// "primary", or "replica N" (N as in `.recoverfs/replicas/N/`).
    pub copy: String,
    /// The copy's `.log`, relative to its data directory.
    pub path: String,
    /// Where the record starts in it.
    pub position: u64,
    /// The fields in which this copy differs from the majority (empty when it is
    /// in the majority; every differing field when there is none).
    pub differs_in: Vec<&'static str>,
}

/// A record held by several copies whose fields are not the same in all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Divergence {
    pub offset: u64,
    /// The fields that are not the same in every copy: of offset, timestamp, key, value.
    pub fields: Vec<&'static str>,
    pub copies: Vec<DivergentCopy>,
    /// The one copy that disagrees with all the others (three copies or more), if any.
    pub odd_one_out: Option<String>,
    /// In words: which copy is the odd one out, or why that cannot be decided.
    pub verdict: String,
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
    /// Offset ranges filled from replicas (present, possibly empty, only with `--replica`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healed: Option<Vec<HealedReport>>,
    /// Records that differ between copies (present only with `--replica`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergences: Option<Vec<Divergence>>,
    /// Divergences found beyond those listed (the list is capped per log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergences_not_listed: Option<u64>,
}

impl LogReport {
    /// The healed ranges the view shows.
    pub fn shown_healed(&self) -> impl Iterator<Item = &HealedReport> {
        self.healed.iter().flatten().filter(|h| h.shown())
    }
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
    /// Segments the view lists but refuses with EIO although they could be read
    /// (strict only: present under strict alone, so the other policies' JSON is unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<u64>,
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
    /// Records filled from replicas and shown (with `--replica` only; counted in `records`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healed_records: Option<u64>,
    /// Records that differ between copies (with `--replica` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergences: Option<u64>,
    /// Records served from another copy where the primary disagrees (`--prefer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_records: Option<u64>,
    /// Replicas given (with `--replica` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
}

impl Summary {
    /// What `check`'s exit status says: the view differs from the source, or copies disagree.
    pub fn needs_attention(&self) -> bool {
        self.view_differs || self.divergences.is_some_and(|d| d > 0)
    }
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
    /// Directories another filesystem is mounted on, left out (not crossed without
    /// `--cross-mounts`); absent when there is none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_crossed: Vec<String>,
    /// The replicas given with `--replica` (absent without).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Vec<ReplicaReport>>,
    /// The integrity baseline compared with (`--baseline`; absent without).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineReport>,
}

/// One replica given with `--replica`: how it was read, and its logs the primary lacks.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaReport {
    /// 1 for the first `--replica`: `.recoverfs/replicas/<index>/` in a mount.
    pub index: usize,
    pub path: String,
    pub source_access: SourceAccess,
    /// Logs of the primary this replica also holds.
    pub logs_matched: u64,
    /// Logs only this replica holds: reported, not added to the view (the view
    /// mirrors the primary's directories).
    pub logs_not_in_primary: Vec<String>,
    /// Directories of the replica that could not be listed.
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
                    ViewAction::Eio if seg.status != SegmentStatus::Unreadable => {
                        *s.refused.get_or_insert(0) += 1;
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
        if policy == Policy::Strict {
            s.refused.get_or_insert(0);
        }
        if policy.salvages() {
            s.salvaged_runs.get_or_insert(0);
            s.salvaged_records.get_or_insert(0);
        }
        for log in &logs {
            if let Some(healed) = &log.healed {
                let n = s.healed_records.get_or_insert(0);
                // Preferred records and the primary's split parts re-serve offsets
                // whose primary segment is counted already.
                for h in healed.iter().filter(|h| h.shown() && h.role.is_healed()) {
                    *n += h.records;
                    s.records += h.records;
                    s.bytes_kept += h.bytes;
                }
                for h in healed
                    .iter()
                    .filter(|h| h.shown() && h.role == HealedRole::Preferred)
                {
                    *s.preferred_records.get_or_insert(0) += h.records;
                }
            }
            if let Some(d) = &log.divergences {
                *s.divergences.get_or_insert(0) +=
                    d.len() as u64 + log.divergences_not_listed.unwrap_or(0);
            }
        }
        s.view_differs = s.truncated > 0
            || s.unreadable > 0
            || s.hidden > 0
            || s.refused.is_some_and(|n| n > 0)
            || s.indexes_rebuilt > 0
            || s.orphans > 0
            || !problems.is_empty()
            || s.healed_records.is_some_and(|n| n > 0)
            || s.preferred_records.is_some_and(|n| n > 0)
            || (policy == Policy::Strict && (s.gaps > 0 || s.overlaps > 0 || s.unrecognized > 0));
        Report {
            schema: SCHEMA,
            source: source.to_string(),
            policy,
            source_access,
            summary: s,
            logs,
            problems,
            not_crossed: Vec::new(),
            replicas: None,
            baseline: None,
        }
    }

    /// The report naming the mount points `source` left out so far (each once, sorted).
    pub fn with_not_crossed(mut self, source: &crate::engine::source::Source) -> Self {
        self.not_crossed = source
            .not_crossed()
            .iter()
            .map(|p| escape_path(p))
            .collect();
        self
    }

    /// The report with the replicas it was made with (the summary counts them).
    pub fn with_replicas(mut self, replicas: Vec<ReplicaReport>) -> Self {
        self.summary.replicas = Some(replicas.len() as u64);
        self.summary.healed_records.get_or_insert(0);
        self.replicas = Some(replicas);
        self
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
