//! The report's figures in the Prometheus text exposition format (node_exporter textfile-collector convention): a small writer with `# HELP`/`# TYPE` lines and label escaping, and per-log series bounded in number.

use crate::engine::policy::ViewAction;
use crate::engine::report::{LogReport, Report};
use crate::engine::segment::SegmentStatus;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// At most this many logs get series of their own; the other damaged logs are summed under [`OTHER_LOGS`].
pub const PER_LOG_MAX: usize = 20;
/// The `log` label of the damaged logs beyond [`PER_LOG_MAX`].
pub const OTHER_LOGS: &str = "(other)";

/// A label value escaped as the exposition format asks: `\\`, `\"` and `\n`.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A `# HELP` text escaped as the exposition format asks: `\\` and `\n`.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// Text in the exposition format, one family after another.
#[derive(Default)]
pub struct Exposition {
    out: String,
    declared: BTreeSet<String>,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a family (its `# HELP` and `# TYPE` lines), once; its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        if !self.declared.insert(name.to_string()) {
            return;
        }
        let t = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {t}");
    }

    /// One sample of the family declared last.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// One log's figures, as its per-log series show them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct LogFigures {
    truncated: u64,
    unreadable: u64,
    hidden: u64,
    records_kept: u64,
    bytes_kept: u64,
    bytes_cut: u64,
}

impl LogFigures {
    fn of(log: &LogReport) -> Self {
        let mut f = LogFigures::default();
        for s in &log.segments {
            match s.status {
                SegmentStatus::Truncated => f.truncated += 1,
                SegmentStatus::Unreadable => f.unreadable += 1,
                SegmentStatus::Clean => {}
            }
            match s.view {
                ViewAction::Kept | ViewAction::Truncated => {
                    f.records_kept += s.records;
                    f.bytes_kept += s.valid_bytes;
                    f.bytes_cut += s.bytes_cut();
                }
                ViewAction::Hidden => {
                    f.hidden += 1;
                    f.bytes_cut += s.original_bytes;
                }
                ViewAction::Eio => {}
            }
            // Salvaged runs shown as segments of their own are kept, not cut (as in the summary).
            for (r, _) in s.shown_runs() {
                f.records_kept += r.records;
                f.bytes_kept += r.bytes;
                f.bytes_cut = f.bytes_cut.saturating_sub(r.bytes);
            }
        }
        // Ranges healed from replicas are kept records too (as in the summary); a
        // preferred record or a split part re-serves offsets counted already.
        for h in log.shown_healed().filter(|h| h.role.is_healed()) {
            f.records_kept += h.records;
            f.bytes_kept += h.bytes;
        }
        f
    }

    fn damaged(&self) -> bool {
        self.truncated + self.unreadable + self.hidden + self.bytes_cut > 0
    }

    fn add(&mut self, o: &LogFigures) {
        self.truncated += o.truncated;
        self.unreadable += o.unreadable;
        self.hidden += o.hidden;
        self.records_kept += o.records_kept;
        self.bytes_kept += o.bytes_kept;
        self.bytes_cut += o.bytes_cut;
    }
}

/// The logs with series of their own: only damaged logs (a segment truncated,
/// unreadable or hidden, or bytes cut), the [`PER_LOG_MAX`] with the most bytes
/// cut (then by path); the rest summed under [`OTHER_LOGS`].
fn per_log(r: &Report) -> Vec<(String, LogFigures)> {
    let mut damaged: Vec<(String, LogFigures)> = r
        .logs
        .iter()
        .map(|l| (l.path.clone(), LogFigures::of(l)))
        .filter(|(_, f)| f.damaged())
        .collect();
    damaged.sort_by(|a, b| b.1.bytes_cut.cmp(&a.1.bytes_cut).then(a.0.cmp(&b.0)));
    if damaged.len() > PER_LOG_MAX {
        let mut other = LogFigures::default();
        for (_, f) in damaged.drain(PER_LOG_MAX..) {
            other.add(&f);
        }
        damaged.push((OTHER_LOGS.to_string(), other));
    }
    damaged
}

/// The report's figures: summary totals, then per-log series of the damaged logs.
/// `segments_known` and `segments_validated` are written by the caller (a check
/// knows and validates every segment; a mount, maybe not yet).
pub fn report_metrics(x: &mut Exposition, r: &Report) {
    let s = &r.summary;
    use Kind::Gauge;
    x.single(
        "recoverfs_logs",
        Gauge,
        "Logs (partition directories) in the report.",
        s.logs,
    );
    x.single(
        "recoverfs_segments_clean",
        Gauge,
        "Segments whose .log is clean.",
        s.clean,
    );
    x.single(
        "recoverfs_segments_truncated",
        Gauge,
        "Segments whose .log is cut at its first damage.",
        s.truncated,
    );
    x.single(
        "recoverfs_segments_unreadable",
        Gauge,
        "Segments whose .log could not be read.",
        s.unreadable,
    );
    x.single(
        "recoverfs_segments_hidden",
        Gauge,
        "Segments the policy hides (point-in-time).",
        s.hidden,
    );
    x.single(
        "recoverfs_records_kept",
        Gauge,
        "Records the repaired view serves.",
        s.records,
    );
    x.single(
        "recoverfs_bytes_kept",
        Gauge,
        ".log bytes the repaired view serves.",
        s.bytes_kept,
    );
    x.single(
        "recoverfs_bytes_cut",
        Gauge,
        ".log bytes the repaired view leaves out (damaged tails, hidden segments whole).",
        s.bytes_cut,
    );
    x.single(
        "recoverfs_index_sets_rebuilt",
        Gauge,
        "Segments whose .index or .timeindex the view rebuilds because the original is missing or differs.",
        s.indexes_rebuilt,
    );
    x.single(
        "recoverfs_gaps",
        Gauge,
        "Offset gaps between segments.",
        s.gaps,
    );
    x.single(
        "recoverfs_overlaps",
        Gauge,
        "Offset overlaps between segments.",
        s.overlaps,
    );
    x.single(
        "recoverfs_orphans",
        Gauge,
        "Index files with no .log beside them.",
        s.orphans,
    );
    x.single(
        "recoverfs_view_differs",
        Gauge,
        "1 when the policy's view differs from the source (check exits 1), else 0.",
        u64::from(s.view_differs),
    );
    let logs = per_log(r);
    let damaged = r
        .logs
        .iter()
        .filter(|l| LogFigures::of(l).damaged())
        .count();
    x.single(
        "recoverfs_logs_damaged",
        Gauge,
        "Logs with a segment truncated, unreadable or hidden.",
        damaged as u64,
    );
    type Field = fn(&LogFigures) -> u64;
    let families: [(&str, &str, Field); 6] = [
        (
            "recoverfs_log_segments_truncated",
            "Truncated segments of a damaged log.",
            |f| f.truncated,
        ),
        (
            "recoverfs_log_segments_unreadable",
            "Unreadable segments of a damaged log.",
            |f| f.unreadable,
        ),
        (
            "recoverfs_log_segments_hidden",
            "Hidden segments of a damaged log.",
            |f| f.hidden,
        ),
        (
            "recoverfs_log_records_kept",
            "Records served of a damaged log.",
            |f| f.records_kept,
        ),
        (
            "recoverfs_log_bytes_kept",
            ".log bytes served of a damaged log.",
            |f| f.bytes_kept,
        ),
        (
            "recoverfs_log_bytes_cut",
            ".log bytes left out of a damaged log.",
            |f| f.bytes_cut,
        ),
    ];
    for (name, help, field) in families {
        let help = format!(
            "{help} Only damaged logs, the {PER_LOG_MAX} with the most bytes cut; the rest summed under log=\"{OTHER_LOGS}\"."
        );
        x.family(name, Gauge, &help);
        for (log, f) in &logs {
            x.sample(name, &[("log", log)], field(f));
        }
    }
}

/// What `check --metrics` writes: the report's figures, every segment known and validated.
pub fn render_check(r: &Report, unix_time: u64) -> String {
    let mut x = Exposition::new();
    x.single(
        "recoverfs_segments_known",
        Kind::Gauge,
        "Segments found in the source.",
        r.summary.segments,
    );
    x.single(
        "recoverfs_segments_validated",
        Kind::Gauge,
        "Segments with a current verdict (check validates them all).",
        r.summary.segments,
    );
    report_metrics(&mut x, r);
    x.single(
        "recoverfs_check_timestamp_seconds",
        Kind::Gauge,
        "When this check ran (Unix time).",
        unix_time,
    );
    x.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        let mut x = Exposition::new();
        x.family("m", Kind::Gauge, "help \\ with\nnewline");
        x.sample("m", &[("log", "t\"\n")], 3);
        x.family("m", Kind::Gauge, "declared once");
        assert_eq!(
            x.finish(),
            "# HELP m help \\\\ with\\nnewline\n# TYPE m gauge\nm{log=\"t\\\"\\n\"} 3\n"
        );
    }
}
