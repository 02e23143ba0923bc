//! Fuzz target: `check --replica` of a primary made from arbitrary bytes against one or two replicas made from the same bytes with edits (byte flips, cuts, a re-segmented copy), every policy and `--prefer`, and the report's renderings.
#![no_main]

mod tree;

use libfuzzer_sys::fuzz_target;
use recoverfs::engine::analysis::AnalyzeOptions;
use recoverfs::engine::replica::{check_with_replicas, Prefer};
use recoverfs::engine::scan::ScanOptions;
use std::path::PathBuf;

/// Steering bytes: the segments' bases (8, see `tree::bases`), the policy (1), `--prefer` and
/// the replica count (1), the lengths of the first five files (4 each), the number
/// of edits (1); then the edits (6 each), then the six files' bytes.
const HEAD: usize = 8 + 1 + 1 + 5 * 4 + 1;
const EDIT: usize = 6;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_at_checked(HEAD) else {
        return;
    };
    let bases = tree::bases(head);
    let policy = tree::policy(head[8]);
    let prefer = [Prefer::Primary, Prefer::Replica, Prefer::Majority][(head[9] & 3) as usize % 3];
    let two = head[9] & 4 != 0;
    let Some((edits, rest)) = rest.split_at_checked(head[30] as usize * EDIT) else {
        return;
    };
    let files: Vec<Vec<u8>> = tree::cut_files(&head[10..], rest)
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    // Each edit: which replica (bit 7) and file (0-5), then a position, then how:
    // 0 flips the byte with a mask, 1 cuts the file there, 2 moves the second
    // segment's first bytes to the end of the first (another segmentation).
    let mut replicas = vec![files.clone(), files.clone()];
    for e in edits.chunks_exact(EDIT) {
        let r = &mut replicas[(e[0] >> 7) as usize];
        let f = (e[0] & 0x7f) as usize % 6;
        let at = u32::from_le_bytes([e[1], e[2], e[3], 0]) as usize;
        match e[4] % 3 {
            0 if !r[f].is_empty() => {
                let n = r[f].len();
                r[f][at % n] ^= e[5].max(1);
            }
            1 => r[f].truncate(at),
            2 => {
                let cut = at.min(r[3].len());
                let moved: Vec<u8> = r[3].drain(..cut).collect();
                r[0].extend(moved);
            }
            _ => {}
        }
    }
    let primary = tempfile::tempdir().unwrap();
    tree::write_tree(primary.path(), bases, &files);
    let copies = if two { 2 } else { 1 };
    let dirs: Vec<tempfile::TempDir> = (0..copies).map(|_| tempfile::tempdir().unwrap()).collect();
    for (d, r) in dirs.iter().zip(&replicas) {
        tree::write_tree(d.path(), bases, r);
    }
    let paths: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
    let opts = AnalyzeOptions {
        scan: ScanOptions::default(),
        policy,
        threads: 1,
        ..AnalyzeOptions::default()
    };
    // Refusals (a --prefer the policy does not allow) are answers, not failures.
    if let Ok((_, report, _)) = check_with_replicas(primary.path(), &paths, prefer, &opts, &|_| {})
    {
        let _ = report.render_human();
        let _ = report.to_json();
        let _ = recoverfs::engine::map::render_text(&report, 80, false);
        let _ = recoverfs::engine::page::render_html(&report);
        let _ = recoverfs::engine::metrics::render_check(&report, 0);
    }
});
