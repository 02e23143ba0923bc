//! A segment larger than 4 GiB (sparse) is scanned with bounded memory and 64-bit positions.

use crate::common;

use common::*;
use recoverfs::engine::format::takhin::{segment_file_name, FileKind, SegmentWriter};
use std::fs;

/// Peak RSS in KiB of the largest child process waited for so far.
fn children_max_rss_kib() -> i64 {
    // SAFETY: rusage is plain data, for which all zeros is a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass and nothing else.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) }, 0);
    u.ru_maxrss
}

#[test]
fn a_5_gib_segment_is_scanned_in_bounded_memory() {
    let t = tempfile::tempdir().unwrap();
    let mut w = SegmentWriter::new(0);
    for i in 0..100u64 {
        w.append(i as i64, b"k", &[7u8; 100]);
    }
    w.write_to(t.path()).unwrap();
    let log = t.path().join(segment_file_name(0, FileKind::Log));
    // A hole to 5 GiB, then one more record: a zero region followed by data.
    let hole_end = 5u64 << 30;
    set_len(&log, hole_end);
    let mut tail = SegmentWriter::new(100);
    tail.append(0, b"", b"after the hole");
    let f = fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &tail.log, hole_end).unwrap();
    drop(f);

    let (code, v) = check_json(t.path(), &[]);
    assert_eq!(code, Some(1));
    let s = &v["logs"][0]["segments"][0];
    assert_eq!(s["original_bytes"], hole_end + tail.log.len() as u64);
    assert_eq!(s["valid_bytes"], w.log.len() as u64);
    assert_eq!(s["records"], 100);
    assert_eq!(
        s["damage"]["kind"], "bad-size",
        "zeros followed by data are not a preallocated tail"
    );
    let rss = children_max_rss_kib();
    assert!(
        rss < 64 * 1024,
        "check of a 5 GiB segment peaked at {rss} KiB"
    );

    // Without the trailing record, the whole 5 GiB is a zero-filled tail, read through to the end.
    set_len(&log, hole_end);
    let (_, v) = check_json(t.path(), &[]);
    let s = &v["logs"][0]["segments"][0];
    assert_eq!(s["damage"]["kind"], "zero-fill");
    assert_eq!(s["damage"]["class"], "tail");
    assert_eq!(s["valid_bytes"], w.log.len() as u64);
    assert!(children_max_rss_kib() < 64 * 1024);
}
