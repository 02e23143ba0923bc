//! Fuzz target: `check` of a one-log tree made from arbitrary bytes (two segments, their indexes), under every policy, and every rendering of its report.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recoverfs::engine::analysis::{check_path, AnalyzeOptions};
use recoverfs::engine::format::takhin::{segment_file_name, FileKind};
use recoverfs::engine::policy::Policy;
use recoverfs::engine::scan::ScanOptions;

/// Steering bytes: the second segment's base (8), the policy (1), the max record
/// size in 16-byte units (2, 0: the default), the lengths of the first five files (4 each).
const HEAD: usize = 8 + 1 + 2 + 5 * 4;

fuzz_target!(|data: &[u8]| {
    let Some((head, mut rest)) = data.split_at_checked(HEAD) else {
        return;
    };
    let base2 = u64::from_le_bytes(head[..8].try_into().unwrap()) % 1_000_000;
    let policy = [
        Policy::PerSegment,
        Policy::PointInTime,
        Policy::Strict,
        Policy::Salvage,
    ][head[8] as usize % 4];
    let max = match u16::from_le_bytes([head[9], head[10]]) as u64 * 16 {
        0 => ScanOptions::default().max_record_bytes,
        m => m,
    };
    // Segment 0's .log, .index, .timeindex, then segment base2's; the last takes the rest.
    let mut files = Vec::new();
    for i in 0..5 {
        let len = u32::from_le_bytes(head[11 + 4 * i..15 + 4 * i].try_into().unwrap()) as usize;
        let (file, more) = rest.split_at(len.min(rest.len()));
        files.push(file);
        rest = more;
    }
    files.push(rest);
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("topic-0");
    std::fs::create_dir(&dir).unwrap();
    let kinds = [FileKind::Log, FileKind::Index, FileKind::TimeIndex];
    for (i, bytes) in files.iter().enumerate() {
        let base = if i < 3 { 0 } else { base2 };
        std::fs::write(dir.join(segment_file_name(base, kinds[i % 3])), bytes).unwrap();
    }
    let opts = AnalyzeOptions {
        scan: ScanOptions {
            max_record_bytes: max,
        },
        policy,
        threads: 1,
    };
    let (_, report) = check_path(t.path(), &opts, &|_| {}).expect("a directory we made");
    let _ = report.render_human();
    let _ = report.to_json();
    let _ = recoverfs::engine::map::render_text(&report, 80, true);
    let _ = recoverfs::engine::page::render_html(&report);
    let _ = recoverfs::engine::metrics::render_check(&report, 0);
});
