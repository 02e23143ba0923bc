//! Fuzz target: `check` of a one-log tree made from arbitrary bytes (two segments, their indexes), under every policy, and every rendering of its report.
#![no_main]

mod tree;

use libfuzzer_sys::fuzz_target;
use recoverfs::engine::analysis::{check_path, AnalyzeOptions};
use recoverfs::engine::scan::{ScanOptions, MAX_OFFSET};

/// Steering bytes: the segments' bases (8, see `tree::bases`), the policy (1), the max record
/// size in 16-byte units (2, 0: the default), the lengths of the first five files (4 each).
const HEAD: usize = 8 + 1 + 2 + 5 * 4;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_at_checked(HEAD) else {
        return;
    };
    let bases = tree::bases(head);
    let policy = tree::policy(head[8]);
    let max = match u16::from_le_bytes([head[9], head[10]]) as u64 * 16 {
        0 => ScanOptions::default().max_record_bytes,
        m => m,
    };
    let t = tempfile::tempdir().unwrap();
    tree::write_tree(t.path(), bases, &tree::cut_files(&head[11..], rest));
    let opts = AnalyzeOptions {
        scan: ScanOptions::with_max(max),
        policy,
        threads: 1,
        ..AnalyzeOptions::default()
    };
    let (_, report) = check_path(t.path(), &opts, &|_| {}).expect("a directory we made");
    // Takhin offsets are signed 64-bit: no record served, salvaged or not, is past the limit.
    for (_, seg) in report.segments() {
        assert!(seg.last_offset.is_none_or(|o| o <= MAX_OFFSET));
        for r in seg.salvaged.iter().flatten() {
            assert!(r.last_offset <= MAX_OFFSET);
        }
    }
    let _ = report.render_human();
    let _ = report.to_json();
    let _ = recoverfs::engine::map::render_text(&report, 80, true);
    let _ = recoverfs::engine::page::render_html(&report);
    let _ = recoverfs::engine::metrics::render_check(&report, 0);
});
