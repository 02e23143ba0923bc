//! Fuzz target: the segment scanner, index comparer, rebuilt-index reader and salvage search on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recoverfs::engine::index::{read_rebuilt_index, rebuild_indexes, IndexComparer, IndexKind};
use recoverfs::engine::salvage::salvage;
use recoverfs::engine::scan::{scan_segment, ReadAt, ScanOptions, MAX_OFFSET};

fuzz_target!(|data: &[u8]| {
    // First 12 bytes steer: base offset and max record size; the rest is a .log,
    // and its second half doubles as an original .index to compare against.
    if data.len() < 12 {
        return;
    }
    // The top two bits put the base near 0, just below or past the largest Takhin
    // offset (i64::MAX), or just below u64::MAX: records cross the limits often.
    let v = u64::from_le_bytes(data[..8].try_into().unwrap());
    let base = match v >> 62 {
        0 => v,
        1 => MAX_OFFSET - v % 4096,
        2 => MAX_OFFSET + 1 + v % 4096,
        _ => u64::MAX - v % 4096,
    };
    let max = u32::from_le_bytes(data[8..12].try_into().unwrap()) as u64;
    let log = &data[12..];
    let index = &log[log.len() / 2..];
    let opts = ScanOptions::with_max(max);
    let mut c = IndexComparer::new(IndexKind::Offset, index, index.len() as u64);
    let s = scan_segment(log, log.len() as u64, base, &opts, |m| {
        // Takhin offsets are signed 64-bit: nothing past the limit is a valid record.
        assert!(m.offset <= MAX_OFFSET && m.offset == base + m.index);
        c.push(m)
    })
    .expect("slices never fail");
    let _ = c.finish(s.records);
    assert!(s.valid_bytes <= log.len() as u64);
    assert_eq!(s.damage.is_none(), s.valid_bytes == log.len() as u64);
    let idx = read_rebuilt_index(log, &s, IndexKind::Time, 0, u64::MAX).expect("prefix re-walks");
    assert_eq!(idx.len() as u64, s.records * 16);

    // Salvage after the damage, without and with the second half as the original .index;
    // the steering bytes double as the next segment's base.
    let index = index.to_vec();
    let next_base = base.checked_add(max);
    for ix in [None, Some((&index as &dyn ReadAt, index.len() as u64))] {
        let v =
            salvage(log, log.len() as u64, &s, ix, next_base, &opts).expect("slices never fail");
        let mut at = s.valid_bytes;
        let mut offset = s.base_offset.saturating_add(s.records);
        for r in &v.runs {
            assert!(r.position >= at && r.position > s.valid_bytes);
            assert!(r.first_offset >= offset && r.end <= log.len() as u64);
            assert!(next_base.is_none_or(|nb| r.last_offset() < nb));
            assert!(r.last_offset() <= MAX_OFFSET);
            let (i, t) = rebuild_indexes(&r.view(log), &r.scan).expect("runs re-walk");
            assert_eq!(
                (i.len() as u64, t.len() as u64),
                (r.records * 16, r.records * 16)
            );
            at = r.end;
            offset = r.last_offset().saturating_add(1);
        }
    }
});
