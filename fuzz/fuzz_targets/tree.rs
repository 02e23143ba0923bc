//! What the `check` and `replica` fuzz targets share: the policy a byte picks, the two bases (near 0 or the offset limits), the six files five lengths cut from the bytes, and the two-segment tree written from them.

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

/// The two segments' bases from 8 steering bytes. The top two bits pick where the
/// log lives: from 0 as Takhin starts; just below 9223372036854775807, the largest
/// Takhin offset (`i64::MAX`), so records cross it; just past it (a base no record
/// can have); just below `u64::MAX`, which 20 digits can still spell. Bits 40-61 say
/// how far below (under 4096), the low bits how far on the second base is (under a
/// million, so the two segments are often near each other).
pub fn bases(b: &[u8]) -> (u64, u64) {
    let v = u64::from_le_bytes(b[..8].try_into().unwrap());
    let limit = i64::MAX as u64;
    let below = (v >> 40) % 4096;
    let first = match v >> 62 {
        0 => 0,
        1 => limit - below,
        2 => limit + 1 + below,
        _ => u64::MAX - below,
    };
    let apart = (v & 0xff_ffff_ffff) % 1_000_000;
    // Near u64::MAX the second segment goes below the first: two names, never one.
    // (`unwrap_or_else`: an eager `first - apart` underflowed for a first base of 0.)
    (
        first,
        first.checked_add(apart).unwrap_or_else(|| first - apart),
    )
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

/// Writes `files` (as [`cut_files`] orders them) into `root/topic-0`, the segments
/// at `bases` (from [`bases`]).
pub fn write_tree(root: &Path, (base1, base2): (u64, u64), files: &[impl AsRef<[u8]>]) {
    let dir = root.join("topic-0");
    std::fs::create_dir_all(&dir).unwrap();
    let kinds = [FileKind::Log, FileKind::Index, FileKind::TimeIndex];
    for (i, bytes) in files.iter().enumerate() {
        let base = if i < 3 { base1 } else { base2 };
        std::fs::write(dir.join(segment_file_name(base, kinds[i % 3])), bytes).unwrap();
    }
}
