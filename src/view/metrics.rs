//! A mount's live figures for `.recoverfs/metrics.prom`: counters the FUSE adapter and the verifier bump, and the text rendered per open from them, the verdict cache and the cached verdicts (validating nothing).

use crate::engine::analysis::assemble_log;
use crate::engine::layout::discover;
use crate::engine::metrics::{report_metrics, Exposition, Kind};
use crate::engine::report::Report;
use crate::view::verdicts::Verdicts;
use std::sync::atomic::{AtomicU64, Ordering};

/// The name of the metrics file inside [`META_DIR`](crate::view::META_DIR).
pub const METRICS_NAME: &str = "metrics.prom";

/// Counters shared by the view, the FUSE adapter and the background verifier
/// (plain atomics: the view knows nothing of FUSE).
#[derive(Debug, Default)]
pub struct Counters {
    /// READ requests the daemon answered (passthrough reads never reach it).
    pub daemon_reads: AtomicU64,
    /// Bytes those reads returned.
    pub daemon_read_bytes: AtomicU64,
    /// Opens answered with a backing file (FUSE passthrough).
    pub passthrough_opens: AtomicU64,
    /// LOOKUP requests answered (a path walk the kernel could not serve from its cache).
    pub lookups: AtomicU64,
    /// Requests answered EIO.
    pub eio: AtomicU64,
    /// Files open now.
    pub open_files: AtomicU64,
    /// Changes to source files seen by the watcher.
    pub source_changes: AtomicU64,
    /// Background verification: segments to validate (0 when it is not asked for).
    pub verify_total: AtomicU64,
    /// Background verification: segments validated so far.
    pub verify_done: AtomicU64,
    /// Background verification: 1 while it runs.
    pub verify_running: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub(c: &AtomicU64, n: u64) {
        let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(n))
        });
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// The text of `metrics.prom`: the report's figures over the logs whose every
/// segment has a current cached verdict (nothing is validated for it), then the
/// live counters.
pub(crate) fn render(v: &Verdicts, c: &Counters, source_label: &str) -> Vec<u8> {
    let layout = discover(v.source());
    let (mut known, mut validated, mut pending) = (0u64, 0u64, 0u64);
    let mut logs = Vec::new();
    for log in &layout.logs {
        let cached: Vec<_> = log
            .segments
            .iter()
            .filter_map(|s| v.cached_current(log, s))
            .collect();
        known += log.segments.len() as u64;
        validated += cached.len() as u64;
        if cached.len() == log.segments.len() {
            let analyses = cached.iter().map(|a| (**a).clone()).collect();
            let last = log.segments.last().map(|s| s.base);
            logs.push(assemble_log(log, analyses, v.policy(), |b| Some(b) == last));
        } else {
            pending += 1;
        }
    }
    let report = Report::new(
        source_label,
        v.policy(),
        v.source().access(),
        logs,
        layout.problems.clone(),
    );
    let mut x = Exposition::new();
    use Kind::{Counter, Gauge};
    x.single(
        "recoverfs_segments_known",
        Gauge,
        "Segments found in the source.",
        known,
    );
    x.single(
        "recoverfs_segments_validated",
        Gauge,
        "Segments with a current verdict in the cache.",
        validated,
    );
    x.single(
        "recoverfs_logs_pending",
        Gauge,
        "Logs left out of the report figures below: some segment has no current verdict yet.",
        pending,
    );
    report_metrics(&mut x, &report);
    let (hits, misses, evictions, revalidations) = v.cache_stats();
    let (entries, bytes) = v.cache_usage();
    let counters: [(&str, &str, u64); 12] = [
        (
            "recoverfs_validations_total",
            "Segment validations (revalidations included).",
            v.validations(),
        ),
        (
            "recoverfs_verdict_cache_hits_total",
            "Verdicts served from the cache.",
            hits,
        ),
        (
            "recoverfs_verdict_cache_misses_total",
            "Verdicts computed because none was cached.",
            misses,
        ),
        (
            "recoverfs_verdict_cache_evictions_total",
            "Verdicts dropped to stay within --cache-mb.",
            evictions,
        ),
        (
            "recoverfs_verdict_cache_revalidations_total",
            "Cached verdicts found stale (the .log changed) and computed again.",
            revalidations,
        ),
        (
            "recoverfs_daemon_reads_total",
            "READ requests answered by the daemon.",
            Counters::get(&c.daemon_reads),
        ),
        (
            "recoverfs_daemon_read_bytes_total",
            "Bytes served by the daemon's READ answers.",
            Counters::get(&c.daemon_read_bytes),
        ),
        (
            "recoverfs_lookups_total",
            "LOOKUP requests answered: path walks the kernel could not serve from its cache.",
            Counters::get(&c.lookups),
        ),
        (
            "recoverfs_passthrough_opens_total",
            "Opens served by FUSE passthrough from the original.",
            Counters::get(&c.passthrough_opens),
        ),
        (
            "recoverfs_eio_total",
            "Requests answered with EIO.",
            Counters::get(&c.eio),
        ),
        (
            "recoverfs_source_changes_total",
            "Source file changes seen while mounted.",
            Counters::get(&c.source_changes),
        ),
        (
            "recoverfs_verify_segments_done",
            "Background verification: segments validated so far.",
            Counters::get(&c.verify_done),
        ),
    ];
    for (name, help, value) in counters {
        // The verifier's progress is a gauge (it restarts with each mount, and is read against its total).
        let kind = if name.ends_with("_total") {
            Counter
        } else {
            Gauge
        };
        x.single(name, kind, help, value);
    }
    let gauges: [(&str, &str, u64); 5] = [
        (
            "recoverfs_verify_segments_total",
            "Background verification: segments to validate (0 when not asked for).",
            Counters::get(&c.verify_total),
        ),
        (
            "recoverfs_verify_running",
            "Background verification: 1 while it runs.",
            Counters::get(&c.verify_running),
        ),
        (
            "recoverfs_verdict_cache_entries",
            "Verdicts in the cache.",
            entries as u64,
        ),
        (
            "recoverfs_verdict_cache_bytes",
            "Estimated bytes of the cached verdicts.",
            bytes,
        ),
        (
            "recoverfs_open_files",
            "Files open through the mount now.",
            Counters::get(&c.open_files),
        ),
    ];
    for (name, help, value) in gauges {
        x.single(name, Gauge, help, value);
    }
    x.finish().into_bytes()
}
