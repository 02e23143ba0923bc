//! What the `check` and `replica` fuzz targets share: the policy a byte picks, the six files five lengths cut from the bytes, and the two-segment tree written from them.

use recoverfs::engine::format::takhin::{segment_file_name, FileKind};
use recoverfs::engine::policy::Policy;
use std::path::Path;

/// The policy steering byte `b` picks.
pub fn policy(b: u8) -> Policy {
    [
        Policy::PerSegment,
        Policy::PointInTime,
        Policy::Strict,
        Policy::Salvage,
    ][b as usize % 4]
}

/// The second segment's base from 8 steering bytes (kept below a million, so that
/// the two segments are often near each other).
pub fn second_base(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap()) % 1_000_000
}

/// Segment 0's `.log`, `.index`, `.timeindex`, then the second segment's: five
/// little-endian u32 `lengths` (20 bytes) cut them from `rest`, each as far as it
/// goes; the sixth takes what is left.
pub fn cut_files<'a>(lengths: &[u8], mut rest: &'a [u8]) -> Vec<&'a [u8]> {
    let mut files = Vec::new();
    for l in lengths[..20].chunks_exact(4) {
        let len = u32::from_le_bytes(l.try_into().unwrap()) as usize;
        let (file, more) = rest.split_at(len.min(rest.len()));
        files.push(file);
        rest = more;
    }
    files.push(rest);
    files
}

/// Writes `files` (as [`cut_files`] orders them) into `root/topic-0`, the second
/// segment at `base2`.
pub fn write_tree(root: &Path, base2: u64, files: &[impl AsRef<[u8]>]) {
    let dir = root.join("topic-0");
    std::fs::create_dir_all(&dir).unwrap();
    let kinds = [FileKind::Log, FileKind::Index, FileKind::TimeIndex];
    for (i, bytes) in files.iter().enumerate() {
        let base = if i < 3 { 0 } else { base2 };
        std::fs::write(dir.join(segment_file_name(base, kinds[i % 3])), bytes).unwrap();
    }
}
