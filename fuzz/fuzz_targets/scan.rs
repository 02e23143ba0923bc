//! Fuzz target: the segment scanner, index comparer and rebuilt-index reader on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recoverfs::engine::scan::{scan_segment, ScanOptions};
use recoverfs::engine::index::{read_rebuilt_index, IndexComparer, IndexKind};

fuzz_target!(|data: &[u8]| {
    // First 12 bytes steer: base offset and max record size; the rest is a .log,
    // and its second half doubles as an original .index to compare against.
    if data.len() < 12 {
        return;
    }
    let base = u64::from_le_bytes(data[..8].try_into().unwrap());
    let max = u32::from_le_bytes(data[8..12].try_into().unwrap()) as u64;
    let log = &data[12..];
    let index = &log[log.len() / 2..];
    let opts = ScanOptions { max_record_bytes: max };
    let mut c = IndexComparer::new(IndexKind::Offset, index, index.len() as u64);
    let s = scan_segment(log, log.len() as u64, base, &opts, |m| c.push(m)).expect("slices never fail");
    let _ = c.finish(s.records);
    assert!(s.valid_bytes <= log.len() as u64);
    assert_eq!(s.damage.is_none(), s.valid_bytes == log.len() as u64);
    let idx = read_rebuilt_index(log, &s, IndexKind::Time, 0, u64::MAX).expect("prefix re-walks");
    assert_eq!(idx.len() as u64, s.records * 16);
});
