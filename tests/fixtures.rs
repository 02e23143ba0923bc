//! The real Takhin engine's logs: check is clean, every record matches Takhin's own reader, indexes rebuild byte for byte.

use crate::common;

use common::*;
use recoverfs::engine::format::takhin::{FileKind, Record, SegmentWriter, RECORD_OVERHEAD};
use recoverfs::engine::index::rebuild_indexes;
use recoverfs::engine::layout::discover;
use recoverfs::engine::policy::Policy;
use recoverfs::engine::scan::{read_exact_at, scan_segment, ScanOptions};
use std::fs;
use std::path::{Path, PathBuf};

/// The fixture logs and their expected-records files.
fn logs() -> Vec<(PathBuf, PathBuf)> {
    let f = fixtures();
    let mut out = vec![(
        f.join("seed-example"),
        f.join("expected/seed-example.records.jsonl"),
    )];
    for log in discover(&source(&f.join("data"))).logs {
        let rel = log.rel.to_str().unwrap().to_string();
        out.push((
            f.join("data").join(&rel),
            f.join(format!("expected/data/{rel}.records.jsonl")),
        ));
    }
    assert_eq!(out.len(), 6, "seed-example plus 5 partitions in data/");
    out
}

#[derive(Debug, PartialEq, Eq, serde::Deserialize)]
struct Expected {
    offset: u64,
    timestamp: i64,
    key: String,
    value_len: u64,
    value_crc32: u32,
}

/// The records an expected-records file lists.
fn read_expected(path: &Path) -> Vec<Expected> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The segments of a directory holding one log: base, and the paths of its
/// `.log`, `.index` and `.timeindex`.
fn segments_of(dir: &Path) -> Vec<(u64, [PathBuf; 3])> {
    let layout = discover(&source(dir));
    assert_eq!(layout.logs.len(), 1);
    let log = &layout.logs[0];
    let kinds = [FileKind::Log, FileKind::Index, FileKind::TimeIndex];
    log.segments
        .iter()
        .map(|s| (s.base, kinds.map(|k| dir.join(log.file_rel(s.base, k)))))
        .collect()
}

/// Reads every record of a log through the engine's scanner, as the expected files list them.
fn read_log(dir: &Path) -> Vec<Expected> {
    let mut out = vec![];
    for (base, [log, ..]) in segments_of(dir) {
        let f = fs::File::open(log).unwrap();
        let len = f.metadata().unwrap().len();
        let mut metas = vec![];
        let s = scan_segment(&f, len, base, &ScanOptions::default(), |m| metas.push(*m)).unwrap();
        assert!(s.is_clean(), "{:?}", s.damage);
        for m in metas {
            let mut key = vec![0; m.key_len as usize];
            read_exact_at(&f, &mut key, m.key_position()).unwrap();
            let mut value = vec![0; m.value_len as usize];
            read_exact_at(&f, &mut value, m.value_position()).unwrap();
            out.push(Expected {
                offset: m.offset,
                timestamp: m.timestamp,
                key: hex(&key),
                value_len: m.value_len as u64,
                value_crc32: crc32fast::hash(&value),
            });
        }
    }
    out
}

#[test]
fn every_record_matches_takhins_reader() {
    for (dir, expected) in logs() {
        let want = read_expected(&expected);
        let got = read_log(&dir);
        assert_eq!(got.len(), want.len(), "{}", dir.display());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{}", dir.display());
        }
    }
}

#[test]
fn rebuilt_indexes_equal_the_originals() {
    let mut segments = 0;
    for (dir, _) in logs() {
        for (base, [log, idx, tidx]) in segments_of(&dir) {
            let f = fs::File::open(log).unwrap();
            let len = f.metadata().unwrap().len();
            let s = scan_segment(&f, len, base, &ScanOptions::default(), |_| {}).unwrap();
            let (index, timeindex) = rebuild_indexes(&f, &s).unwrap();
            assert!(index == fs::read(idx).unwrap());
            assert!(timeindex == fs::read(tidx).unwrap());
            segments += 1;
        }
    }
    assert_eq!(segments, 29);
}

#[test]
fn check_reports_every_fixture_clean_under_every_policy() {
    for (dir, _) in logs() {
        for policy in Policy::ALL {
            let r = report_for(&dir, policy);
            assert!(
                !r.summary.view_differs,
                "{}: {}",
                dir.display(),
                r.render_human()
            );
            assert_eq!(
                r.summary.truncated + r.summary.unreadable + r.summary.indexes_rebuilt,
                0
            );
            assert!(r
                .segments()
                .all(|(_, s)| s.index.is_match() && s.timeindex.is_match() && s.visible));
        }
    }
    let out = check_cli(&fixtures().join("data"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let (code, v) = check_json(&fixtures().join("data"), &[]);
    assert_eq!(code, Some(0));
    assert_eq!(v["schema"], 1);
    assert_eq!(v["summary"]["segments"], 25);
    assert_eq!(v["summary"]["records"], 5745);
    let p0 = v["logs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["path"] == "orders/partition-0")
        .unwrap();
    assert_eq!(p0["next_offset"], 3035);
}

#[test]
fn check_of_one_partition_and_one_segment_file() {
    let p = fixtures().join("data/orders/partition-0");
    assert_eq!(check_cli(&p, &[]).status.code(), Some(0));
    let (code, v) = check_json(&p.join("00000000000000000375.log"), &[]);
    assert_eq!(code, Some(0));
    assert_eq!(v["summary"]["segments"], 1);
    assert_eq!(v["logs"][0]["segments"][0]["records"], 360);
}

#[test]
fn check_leaves_the_source_untouched() {
    let t = fixture_copy("data");
    age_atimes(t.path());
    let before = snapshot(t.path());
    for extra in [vec![], vec!["--json"], vec!["--policy", "strict"]] {
        assert_eq!(check_cli(t.path(), &extra).status.code(), Some(0));
    }
    let seg = t.path().join("orders/partition-0/00000000000000000000.log");
    assert_eq!(dump(&seg, &[]).status.code(), Some(0));
    assert_unchanged(&before, &snapshot(t.path()));
}

#[test]
fn rewriting_each_fixture_gives_the_same_bytes_but_the_pad() {
    for (dir, _) in logs() {
        for (base, [log, idx, tidx]) in segments_of(&dir) {
            let orig = fs::read(log).unwrap();
            let mut metas = vec![];
            scan_segment(
                &orig,
                orig.len() as u64,
                base,
                &ScanOptions::default(),
                |m| metas.push(*m),
            )
            .unwrap();
            let mut w = SegmentWriter::new(base);
            w.pad = [0xA5; 4]; // any pad: the comparison below masks it
            let mut pads = vec![];
            for m in &metas {
                let end = (m.position + m.encoded_len()) as usize;
                let rec = Record::decode(&orig[m.position as usize..end]).unwrap();
                w.append(rec.timestamp, &rec.key, &rec.value);
                pads.push(end - 4..end);
            }
            assert_eq!(w.log.len(), orig.len());
            let mut a = w.log.clone();
            let mut b = orig.clone();
            for r in pads {
                a[r.clone()].fill(0);
                b[r].fill(0);
            }
            assert!(a == b, "segment {base} re-encodes differently");
            assert!(w.index == fs::read(idx).unwrap());
            assert!(w.timeindex == fs::read(tidx).unwrap());
            assert!(metas.iter().all(|m| m.encoded_len() >= 4 + RECORD_OVERHEAD));
        }
    }
}

#[test]
fn dump_prints_records_then_the_end() {
    let seg = fixtures().join("seed-example/00000000000000000020.log");
    let out = dump(&seg, &["--json"]);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want: Vec<Expected> =
        read_expected(&fixtures().join("expected/seed-example.records.jsonl"))
            .into_iter()
            .filter(|e| (20..39).contains(&e.offset))
            .collect();
    assert_eq!(lines.len(), want.len() + 1);
    for (l, w) in lines.iter().zip(&want) {
        assert_eq!(l["offset"], w.offset);
        assert_eq!(l["timestamp"], w.timestamp);
        assert_eq!(l["key_hex"], w.key.as_str());
        assert_eq!(l["value_len"], w.value_len);
    }
    assert_eq!(lines.last().unwrap()["end"], "clean");
    let out = dump(&seg, &["--from-offset", "30", "--limit", "2"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("offset 30 "), "{text}");
    assert!(
        text.lines().nth(1).unwrap().starts_with("offset 31 "),
        "{text}"
    );
    // The rest is examined after --limit: the end line still says clean or damaged.
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(
        text.lines().last().unwrap().starts_with("end: clean"),
        "{text}"
    );
}

/// The source-access door to a fixture directory.
fn source(dir: &Path) -> std::sync::Arc<recoverfs::engine::source::Source> {
    std::sync::Arc::new(recoverfs::engine::source::Source::open(dir).unwrap())
}
