//! Every damage kind, log-level anomaly and odd name: exact valid prefix, kind, class, and each policy's view.

use crate::common;

use common::*;
use recoverfs::engine::analysis::AnalyzeOptions;
use recoverfs::engine::format::takhin::{segment_file_name, FileKind, SegmentWriter};
use recoverfs::engine::index::{IndexKind, IndexVerdict};
use recoverfs::engine::policy::Policy;
use recoverfs::engine::policy::{DamageClass, ViewAction};
use recoverfs::engine::report::SegmentReport;
use recoverfs::engine::scan::DamageKind;
use recoverfs::engine::segment::SegmentStatus;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use ViewAction::{Eio, Hidden, Kept, Truncated};

/// A fresh directory holding one segment of `n` records at base 0: the directory, the
/// segment's writer and its records' positions.
fn one_segment(n: u64) -> (tempfile::TempDir, SegmentWriter, Vec<u64>) {
    let t = tempfile::tempdir().unwrap();
    let w = write_segments(t.path(), &[(0, n)]).pop().unwrap();
    let pos = positions(&w);
    (t, w, pos)
}

/// The per-segment report of the segment at base 0 in `dir`.
fn seg0(dir: &Path) -> SegmentReport {
    seg_report(&report_for(dir, Policy::PerSegment), 0)
}

#[test]
fn torn_tail_at_every_byte_of_the_last_two_records() {
    let t = tempfile::tempdir().unwrap();
    let w = write_segments(t.path(), &[(0, 6), (6, 10)]).pop().unwrap();
    let pos = positions(&w);
    let full = w.log.clone();
    let p = log_path(t.path(), 6);
    for cut in pos[8]..full.len() as u64 {
        fs::write(&p, &full[..cut as usize]).unwrap();
        let r = report_for(t.path(), Policy::PerSegment);
        let s = seg_report(&r, 6);
        let rec: u64 = if cut >= pos[9] { 9 } else { 8 };
        assert_eq!(s.original_bytes, cut);
        assert_eq!(s.valid_bytes, pos[rec as usize], "cut at {cut}");
        assert_eq!(s.records, rec, "cut at {cut}");
        if cut == pos[8] || cut == pos[9] {
            assert!(
                s.damage.is_none() && s.status == SegmentStatus::Clean,
                "cut at a record boundary is clean"
            );
            assert!(
                matches!(s.index, IndexVerdict::TooLong { .. }),
                "the original index still lists the cut records"
            );
            continue;
        }
        let d = s.damage.unwrap();
        assert_eq!(d.kind(), DamageKind::IncompleteRecord, "cut at {cut}");
        assert_eq!(d.class, DamageClass::Tail);
        assert_eq!(d.position, pos[rec as usize]);
        assert_eq!(d.record, rec);
        assert!(r.summary.view_differs);
        assert_eq!(
            views(t.path()),
            [
                vec![Kept, Truncated],
                vec![Kept, Truncated],
                vec![Kept, Eio]
            ]
        );
    }
}

#[test]
fn torn_record_in_an_earlier_segment_is_mid_log() {
    let t = tempfile::tempdir().unwrap();
    let ws = write_segments(t.path(), &[(0, 6), (6, 10)]);
    let pos = positions(&ws[0]);
    fs::write(log_path(t.path(), 0), &ws[0].log[..pos[5] as usize + 10]).unwrap();
    let r = report_for(t.path(), Policy::PerSegment);
    let d = seg_report(&r, 0).damage.unwrap();
    assert_eq!(
        (d.kind(), d.class, d.position),
        (DamageKind::IncompleteRecord, DamageClass::MidLog, pos[5])
    );
    // Offset 5 is lost: a gap before segment 6.
    assert_eq!(r.logs[0].gaps.len(), 1);
    assert_eq!(
        (r.logs[0].gaps[0].from_offset, r.logs[0].gaps[0].to_offset),
        (5, 5)
    );
    assert_eq!(
        views(t.path()),
        [
            vec![Truncated, Kept],
            vec![Truncated, Hidden],
            vec![Eio, Kept]
        ]
    );
}

#[test]
fn zero_filled_tails_are_zero_fill() {
    for zeros in [512usize, 4096, 65536] {
        let (t, w, _) = one_segment(20);
        append_zeros(&log_path(t.path(), 0), zeros);
        let s = seg0(t.path());
        assert_eq!(s.valid_bytes, w.log.len() as u64);
        assert_eq!(s.records, 20);
        let d = s.damage.unwrap();
        assert_eq!(
            (d.kind(), d.class, d.position),
            (DamageKind::ZeroFill, DamageClass::Tail, w.log.len() as u64)
        );
        assert_eq!(
            views(t.path()),
            [vec![Truncated], vec![Truncated], vec![Eio]]
        );
    }
}

#[test]
fn zero_region_followed_by_data_is_bad_size() {
    let (t, _, pos) = one_segment(20);
    let p = log_path(t.path(), 0);
    overwrite(&p, pos[10], &vec![0; (pos[13] - pos[10]) as usize]);
    let s = seg0(t.path());
    let d = s.damage.unwrap();
    assert_eq!(
        (d.kind(), d.position, s.records),
        (DamageKind::BadSize, pos[10], 10)
    );
    assert_eq!(d.class, DamageClass::MidLog, "not a tail: data follows");
    assert_eq!(
        views(t.path()),
        [vec![Truncated], vec![Truncated], vec![Eio]]
    );
}

#[test]
fn garbage_over_a_header_and_huge_sizes_are_bad_size() {
    for garbage in [
        [0xFFu8; 24].to_vec(),
        0xFFFF_FFF0u32.to_be_bytes().to_vec(),
        vec![0, 0, 0, 5, 1, 2],
    ] {
        let (t, _, pos) = one_segment(12);
        overwrite(&log_path(t.path(), 0), pos[7], &garbage);
        let s = seg0(t.path());
        let d = s.damage.unwrap();
        assert_eq!(
            (d.kind(), d.position, s.records, s.valid_bytes),
            (DamageKind::BadSize, pos[7], 7, pos[7])
        );
        assert_eq!(d.class, DamageClass::MidLog);
    }
}

#[test]
fn a_size_over_max_record_bytes_is_bad_size() {
    let (t, _, pos) = one_segment(12);
    let opts = AnalyzeOptions {
        scan: recoverfs::engine::scan::ScanOptions::with_max(40),
        ..Default::default()
    };
    let r = report_with(t.path(), &opts);
    let s = seg_report(&r, 0);
    // Record i has 28 + key + 7i%50 bytes; the first above 40 ends the prefix.
    let first_big = (0..12).find(|&i| pos[i + 1] - pos[i] - 4 > 40).unwrap();
    assert_eq!(s.records, first_big as u64);
    assert_eq!(s.damage.unwrap().kind(), DamageKind::BadSize);
}

#[test]
fn flipped_offset_bit_is_offset_mismatch() {
    let t = tempfile::tempdir().unwrap();
    let w = write_segments(t.path(), &[(100, 12), (112, 3)]).remove(0);
    let pos = positions(&w);
    let p = log_path(t.path(), 100);
    let mut b = fs::read(&p).unwrap();
    b[pos[4] as usize + 4 + 7] ^= 0x10; // low byte of record 4's offset
    fs::write(&p, b).unwrap();
    let r = report_for(t.path(), Policy::PerSegment);
    let s = seg_report(&r, 100);
    let d = s.damage.unwrap();
    assert_eq!(
        (d.kind(), d.class, d.position, s.records),
        (DamageKind::OffsetMismatch, DamageClass::MidLog, pos[4], 4)
    );
    assert!(d.cause.to_string().contains("expected 104"), "{}", d.cause);
    assert_eq!(
        views(t.path()),
        [
            vec![Truncated, Kept],
            vec![Truncated, Hidden],
            vec![Eio, Kept]
        ]
    );
}

#[test]
fn lengths_pointing_past_the_record_are_bad_lengths() {
    // key_len past the record; value_len past the record; key_len + value_len short of size.
    for (field, value) in [("key", 1000u32), ("value", 1000), ("value", 0)] {
        let (t, _, pos) = one_segment(12);
        let rec = 5; // key "key-5", value 35 bytes
        let at = match field {
            "key" => pos[rec] + 20,
            _ => pos[rec] + 24 + 5,
        };
        overwrite(&log_path(t.path(), 0), at, &value.to_be_bytes());
        let s = seg0(t.path());
        let d = s.damage.unwrap();
        assert_eq!(
            (d.kind(), d.position, s.records),
            (DamageKind::BadLengths, pos[rec], rec as u64),
            "{field}={value}"
        );
        assert_eq!(
            views(t.path()),
            [vec![Truncated], vec![Truncated], vec![Eio]]
        );
    }
}

#[test]
fn first_record_offset_differing_from_the_name() {
    let (t, w, _) = one_segment(5);
    // The same records under a name claiming base 50.
    fs::remove_file(log_path(t.path(), 0)).unwrap();
    fs::write(log_path(t.path(), 50), &w.log).unwrap();
    fs::rename(
        t.path().join(segment_file_name(0, FileKind::Index)),
        t.path().join(segment_file_name(50, FileKind::Index)),
    )
    .unwrap();
    fs::remove_file(t.path().join(segment_file_name(0, FileKind::TimeIndex))).unwrap();
    let s = seg_report(&report_for(t.path(), Policy::PerSegment), 50);
    let d = s.damage.as_ref().unwrap();
    assert_eq!(
        (d.kind(), d.position, s.records, s.valid_bytes),
        (DamageKind::OffsetMismatch, 0, 0, 0)
    );
    assert!(
        matches!(s.index, IndexVerdict::TooLong { .. }),
        "{:?}",
        s.index
    );
    assert_eq!(s.timeindex, IndexVerdict::Missing);
    assert_eq!(
        views(t.path()),
        [vec![Truncated], vec![Truncated], vec![Eio]]
    );
}

#[test]
fn a_missing_middle_segment_is_a_gap() {
    let t = tempfile::tempdir().unwrap();
    write_segments(t.path(), &[(0, 5), (5, 5), (10, 5)]);
    for k in [FileKind::Log, FileKind::Index, FileKind::TimeIndex] {
        fs::remove_file(t.path().join(segment_file_name(5, k))).unwrap();
    }
    let r = report_for(t.path(), Policy::PerSegment);
    let g = &r.logs[0].gaps;
    assert_eq!(g.len(), 1);
    assert_eq!((g[0].from_offset, g[0].to_offset, g[0].missing), (5, 9, 5));
    assert!(
        !r.summary.view_differs,
        "a gap alone does not change the per-segment view"
    );
    assert!(
        report_for(t.path(), Policy::PointInTime)
            .summary
            .view_differs
    );
    assert!(report_for(t.path(), Policy::Strict).summary.view_differs);
    assert_eq!(
        views(t.path()),
        [vec![Kept, Kept], vec![Kept, Hidden], vec![Kept, Kept]]
    );
    let code = |p: &str| check_code(t.path(), p);
    assert_eq!(
        (code("per-segment"), code("point-in-time"), code("strict")),
        (Some(0), Some(1), Some(1))
    );
}

#[test]
fn two_segments_claiming_the_same_offsets_overlap() {
    let t = tempfile::tempdir().unwrap();
    write_segments(t.path(), &[(0, 10), (6, 10)]);
    let r = report_for(t.path(), Policy::PerSegment);
    let o = &r.logs[0].overlaps;
    assert_eq!(o.len(), 1);
    assert_eq!(
        (o[0].base_offset, o[0].previous_next_offset, o[0].offsets),
        (6, 10, 4)
    );
    assert!(!r.summary.view_differs);
    assert!(report_for(t.path(), Policy::Strict).summary.view_differs);
    assert_eq!(
        views(t.path()),
        [vec![Kept, Kept], vec![Kept, Hidden], vec![Kept, Kept]]
    );
}

#[test]
fn missing_short_long_and_scrambled_indexes() {
    type Mangle = fn(&mut Vec<u8>);
    let cases: [(&str, Mangle); 5] = [
        ("missing", |_| {}),
        ("too short", |b| b.truncate(b.len() - 16)),
        ("too short", |b| b.truncate(b.len() - 3)),
        ("too long", |b| b.extend([0u8; 16])),
        ("differs at entry 2", |b| b.swap(2 * 16 + 15, 3 * 16 + 15)),
    ];
    for (want, mangle) in cases {
        for kind in [FileKind::Index, FileKind::TimeIndex] {
            let t = tempfile::tempdir().unwrap();
            write_segments(t.path(), &[(0, 8)]);
            let p = t.path().join(segment_file_name(0, kind));
            if want == "missing" {
                fs::remove_file(&p).unwrap();
            } else {
                let mut b = fs::read(&p).unwrap();
                mangle(&mut b);
                fs::write(&p, b).unwrap();
            }
            let r = report_for(t.path(), Policy::PerSegment);
            let s = seg_report(&r, 0);
            let (bad, good) = if kind == FileKind::Index {
                (s.index.describe(IndexKind::Offset), &s.timeindex)
            } else {
                (s.timeindex.describe(IndexKind::Time), &s.index)
            };
            assert!(bad.starts_with(want), "{kind:?} {want}: {bad}");
            assert!(good.is_match(), "{good:?}");
            assert_eq!(s.status, SegmentStatus::Clean);
            assert!(r.summary.view_differs, "an index is rebuilt");
            assert_eq!(r.summary.indexes_rebuilt, 1);
            assert_eq!(views(t.path()), [vec![Kept], vec![Kept], vec![Eio]]);
        }
    }
}

#[test]
fn orphan_indexes_and_unrecognized_names() {
    let t = tempfile::tempdir().unwrap();
    write_segments(t.path(), &[(0, 4)]);
    fs::write(
        t.path().join(segment_file_name(99, FileKind::Index)),
        [0u8; 16],
    )
    .unwrap();
    fs::write(
        t.path().join(segment_file_name(99, FileKind::TimeIndex)),
        [0u8; 16],
    )
    .unwrap();
    fs::write(t.path().join("123.log"), b"x").unwrap();
    fs::write(t.path().join("0000000000000000000a.index"), b"x").unwrap();
    fs::create_dir(t.path().join(segment_file_name(7, FileKind::Log))).unwrap();
    fs::write(t.path().join(OsStr::from_bytes(b"\xff\xfe.log")), b"x").unwrap();
    fs::write(t.path().join("notes.txt"), b"opaque").unwrap();
    let r = report_for(t.path(), Policy::PerSegment);
    let l = &r.logs[0];
    assert_eq!(
        l.orphans,
        vec![
            "00000000000000000099.index",
            "00000000000000000099.timeindex"
        ]
    );
    assert_eq!(
        l.unrecognized,
        vec![
            "00000000000000000007.log",
            "0000000000000000000a.index",
            "123.log",
            "\\xff\\xfe.log"
        ]
    );
    assert_eq!(l.segments.len(), 1, "only the real segment");
    assert!(r.summary.view_differs, "orphans are left out of the view");
    assert_eq!(views(t.path()), [vec![Kept], vec![Kept], vec![Kept]]);
    let out = check_cli(t.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("ORPHAN") && text.contains("UNRECOGNIZED"),
        "{text}"
    );
}

#[test]
fn unrecognized_names_alone_only_fail_strict() {
    let t = tempfile::tempdir().unwrap();
    write_segments(t.path(), &[(0, 4)]);
    fs::write(t.path().join("123.log"), b"x").unwrap();
    assert!(
        !report_for(t.path(), Policy::PerSegment)
            .summary
            .view_differs
    );
    assert!(report_for(t.path(), Policy::Strict).summary.view_differs);
}

#[test]
fn an_empty_log_is_clean() {
    let t = tempfile::tempdir().unwrap();
    write_segments(t.path(), &[(0, 0)]);
    let r = report_for(t.path(), Policy::Strict);
    let s = seg_report(&r, 0);
    assert_eq!(
        (s.status, s.records, s.valid_bytes, s.first_offset),
        (SegmentStatus::Clean, 0, 0, None)
    );
    assert!(!r.summary.view_differs);
    assert_eq!(views(t.path()), [vec![Kept], vec![Kept], vec![Kept]]);
}

#[test]
fn logs_at_any_depth_with_non_utf8_names() {
    let t = tempfile::tempdir().unwrap();
    let odd = t
        .path()
        .join(OsStr::from_bytes(b"topic-\xe9"))
        .join("partition-0");
    write_segments(&odd, &[(0, 3)]);
    write_segments(&t.path().join(".snapshots/2026/t/partition-1"), &[(0, 2)]);
    let r = report_for(t.path(), Policy::PerSegment);
    let paths: Vec<&str> = r.logs.iter().map(|l| l.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![".snapshots/2026/t/partition-1", "topic-\\xe9/partition-0"]
    );
    assert_eq!(
        r.logs[1].segments[0].path,
        "topic-\\xe9/partition-0/00000000000000000000.log"
    );
    assert!(!r.summary.view_differs);
    assert_eq!(
        views(t.path()),
        [vec![Kept, Kept], vec![Kept, Kept], vec![Kept, Kept]]
    );
}

#[test]
fn point_in_time_stops_at_the_first_damage() {
    let t = tempfile::tempdir().unwrap();
    let ws = write_segments(t.path(), &[(0, 5), (5, 5), (10, 5), (15, 5)]);
    let pos = positions(&ws[1]);
    overwrite(&log_path(t.path(), 5), pos[2], &[0xFF; 4]);
    assert_eq!(
        views(t.path()),
        [
            vec![Kept, Truncated, Kept, Kept],
            vec![Kept, Truncated, Hidden, Hidden],
            vec![Kept, Eio, Kept, Kept]
        ]
    );
    let r = report_for(t.path(), Policy::PointInTime);
    assert_eq!(r.summary.hidden, 2);
    assert_eq!(r.logs[0].next_offset, 7);
    assert_eq!(
        r.summary.bytes_cut,
        (ws[1].log.len() as u64 - pos[2]) + ws[2].log.len() as u64 + ws[3].log.len() as u64
    );
}

#[test]
fn check_exit_codes_and_errors() {
    let t = tempfile::tempdir().unwrap();
    let out = check_cli(&t.path().join("nope"), &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("nope") && err.contains("No such file"),
        "{err}"
    );
    let out = check_cli(t.path(), &["--policy", "lenient"]);
    assert_eq!(out.status.code(), Some(2));
    write_segments(t.path(), &[(0, 3)]);
    let p = log_path(t.path(), 0);
    cut_tail(&p, 2);
    let out = check_cli(t.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("TRUNCATED") && text.contains("incomplete-record (tail)"),
        "{text}"
    );
    let out = dump(&p, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 3, "two records, then the end: {text}");
    assert!(
        text.lines().last().unwrap().contains("incomplete-record"),
        "{text}"
    );
}
