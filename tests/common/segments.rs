//! Segment writers and byte-level helpers for `<20 digits>.log` files.
#![allow(dead_code)]

use recoverfs::engine::format::takhin::{
    be_u32, be_u64, segment_file_name, FileKind, Record, SegmentWriter,
};
use std::fs;
use std::path::{Path, PathBuf};

/// Writes segments of `n` records each into `dir`, with varied keys and value sizes.
pub fn write_segments(dir: &Path, segs: &[(u64, u64)]) -> Vec<SegmentWriter> {
    fs::create_dir_all(dir).unwrap();
    segs.iter()
        .map(|&(base, n)| {
            let mut w = SegmentWriter::new(base);
            for i in 0..n {
                let key = if i % 3 == 0 {
                    vec![]
                } else {
                    format!("key-{i}").into_bytes()
                };
                w.append(
                    1_700_000_000_000 + (i as i64 % 5),
                    &key,
                    &vec![b'v'; (i * 7 % 50) as usize],
                );
            }
            w.write_to(dir).unwrap();
            w
        })
        .collect()
}

/// Writes one segment of `n` records at `base`, keys `k<offset>`, values of about `value_len` bytes.
pub fn write_segment(dir: &Path, base: u64, n: u64, value_len: usize) -> SegmentWriter {
    let mut w = SegmentWriter::new(base);
    for i in 0..n {
        let v: Vec<u8> = (0..value_len + (i as usize % 13))
            .map(|j| (j as u64 * 31 + base + i) as u8)
            .collect();
        w.append(
            1_700_000_000_000 + (base + i) as i64,
            format!("k{}", base + i).as_bytes(),
            &v,
        );
    }
    fs::create_dir_all(dir).unwrap();
    w.write_to(dir).unwrap();
    w
}

/// Writes `count` one-record segments (bases 0, 1, ...) into `dir`: timestamp = base, key `k`.
pub fn write_one_record_segments(dir: &Path, count: u64, value: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    for b in 0..count {
        let mut w = SegmentWriter::new(b);
        w.append(b as i64, b"k", value);
        w.write_to(dir).unwrap();
    }
}

/// A segment holding `recs` (timestamp, key, value) from `base`, each record's 4
/// trailing bytes set to `pad`, written nowhere.
pub fn segment_of(base: u64, pad: [u8; 4], recs: &[(i64, Vec<u8>, Vec<u8>)]) -> SegmentWriter {
    let mut w = SegmentWriter::new(base);
    w.pad = pad;
    for (ts, k, v) in recs {
        w.append(*ts, k, v);
    }
    w
}

/// `dir/<base>.log`.
pub fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(segment_file_name(base, FileKind::Log))
}

/// `dir/<base>.<ext>`.
pub fn seg_path(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// Bases of a partition's segments, in order.
pub fn bases(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix(".log").map(|b| b.parse().unwrap())
        })
        .collect();
    v.sort();
    v
}

/// Positions of the records of a clean `.log`, from their size fields.
pub fn record_positions(log: &[u8]) -> Vec<usize> {
    let mut out = vec![];
    let mut p = 0;
    while p + 4 <= log.len() {
        out.push(p);
        p += 4 + u32::from_be_bytes(log[p..p + 4].try_into().unwrap()) as usize;
    }
    out
}

/// Record start positions of a writer's segment, from its index.
pub fn positions(w: &SegmentWriter) -> Vec<u64> {
    w.index
        .chunks(16)
        .map(|e| u64::from_be_bytes(e[8..].try_into().unwrap()))
        .collect()
}

/// The position of record `record` of a writer's segment, from its index.
pub fn position_of(w: &SegmentWriter, record: usize) -> usize {
    be_u64(&w.index, record * 16 + 8) as usize
}

/// Overwrites `bytes` at `at` in the file at `path`.
pub fn overwrite(path: &Path, at: u64, bytes: &[u8]) {
    let mut b = fs::read(path).unwrap();
    b[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    fs::write(path, b).unwrap();
}

/// Cuts the last `n` bytes off the file at `path`.
pub fn cut_tail(path: &Path, n: u64) {
    let len = fs::metadata(path).unwrap().len();
    set_len(path, len - n);
}

/// Truncates (or extends with a hole) the file at `path` to `len` bytes.
pub fn set_len(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Appends `n` zero bytes to the file at `path`.
pub fn append_zeros(path: &Path, n: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes.extend(std::iter::repeat_n(0u8, n));
    fs::write(path, bytes).unwrap();
}

/// Lower-case hex of `b`, as the expected-records files write keys.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

/// Takhin's lookup, written here so the tests do not trust the crate:
/// binary search of the segment's `.index` by offset, then decode at that position.
pub fn takhin_read(dir: &Path, base: u64, offset: u64) -> Option<Record> {
    let idx = std::fs::File::open(dir.join(segment_file_name(base, FileKind::Index))).unwrap();
    let n = idx.metadata().unwrap().len() / 16;
    let entry = |i: u64| {
        let mut e = [0u8; 16];
        std::os::unix::fs::FileExt::read_exact_at(&idx, &mut e, i * 16).unwrap();
        (be_u64(&e, 0), be_u64(&e, 8))
    };
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if entry(mid).0 < offset {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == n {
        return None;
    }
    let (found, pos) = entry(lo);
    if found != offset {
        return None;
    }
    let log = std::fs::File::open(dir.join(segment_file_name(base, FileKind::Log))).unwrap();
    let mut size = [0u8; 4];
    std::os::unix::fs::FileExt::read_exact_at(&log, &mut size, pos).unwrap();
    let mut buf = vec![0u8; 4 + be_u32(&size, 0) as usize];
    std::os::unix::fs::FileExt::read_exact_at(&log, &mut buf, pos).unwrap();
    Record::decode(&buf)
}

/// Appends `n` records (timestamp `ts`, key `late`, values of `value_len` bytes `i`) to
/// `w` and the same bytes to its `.log` in `dir`: the source segment grows.
pub fn append_late(w: &mut SegmentWriter, dir: &Path, n: u8, ts: i64, value_len: usize) {
    let old = w.log.len();
    for i in 0..n {
        w.append(ts, b"late", &vec![i; value_len]);
    }
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(log_path(dir, w.base_offset))
        .unwrap();
    std::io::Write::write_all(&mut f, &w.log[old..]).unwrap();
}

/// Waits until `stat` of `shown` gives `len` (a change notice is asynchronous); the
/// 20 s deadline only bounds a hang.
pub fn wait_for_size(shown: &Path, len: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while fs::metadata(shown).unwrap().len() != len as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the grown size was never seen"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
