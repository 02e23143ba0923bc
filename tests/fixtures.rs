//! The real Takhin engine's logs: check is clean, every record matches Takhin's own reader, indexes rebuild byte for byte.

mod common;

use common::*;
use recoverfs::engine::analysis::{check_path, AnalyzeOptions};
use recoverfs::engine::format::takhin::{FileKind, Record, SegmentWriter, RECORD_OVERHEAD};
use recoverfs::engine::layout::discover;
use recoverfs::engine::policy::Policy;
use recoverfs::engine::scan::{read_exact_at, rebuild_indexes, scan_segment, ScanOptions};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fixture logs and their expected-records files.
fn logs() -> Vec<(PathBuf, PathBuf)> {
    let f = fixtures();
    let mut out = vec![(
        f.join("seed-example"),
        f.join("expected/seed-example.records.jsonl"),
    )];
    for log in discover(&f.join("data")).logs {
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

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

/// Reads every record of a log through the engine's scanner, as the expected files list them.
fn read_log(dir: &Path) -> Vec<Expected> {
    let layout = discover(dir);
    assert_eq!(layout.logs.len(), 1);
    let log = &layout.logs[0];
    let mut out = vec![];
    for seg in &log.segments {
        let f = fs::File::open(dir.join(log.file_rel(seg.base, FileKind::Log))).unwrap();
        let len = f.metadata().unwrap().len();
        let mut metas = vec![];
        let s = scan_segment(&f, len, seg.base, &ScanOptions::default(), |m| {
            metas.push(*m)
        })
        .unwrap();
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
        let want: Vec<Expected> = fs::read_to_string(&expected)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
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
        let layout = discover(&dir);
        let log = &layout.logs[0];
        for seg in &log.segments {
            let f = fs::File::open(dir.join(log.file_rel(seg.base, FileKind::Log))).unwrap();
            let len = f.metadata().unwrap().len();
            let s = scan_segment(&f, len, seg.base, &ScanOptions::default(), |_| {}).unwrap();
            let (index, timeindex) = rebuild_indexes(&f, &s).unwrap();
            assert!(index == fs::read(dir.join(log.file_rel(seg.base, FileKind::Index))).unwrap());
            assert!(
                timeindex
                    == fs::read(dir.join(log.file_rel(seg.base, FileKind::TimeIndex))).unwrap()
            );
            segments += 1;
        }
    }
    assert_eq!(segments, 29);
}

#[test]
fn check_reports_every_fixture_clean_under_every_policy() {
    for (dir, _) in logs() {
        for policy in Policy::ALL {
            let opts = AnalyzeOptions {
                policy,
                ..Default::default()
            };
            let (_, r) = check_path(&dir, &opts, &|_| {}).unwrap();
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
    let out = Command::new(bin())
        .arg("check")
        .arg(fixtures().join("data"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new(bin())
        .args(["check", "--json"])
        .arg(fixtures().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
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
    let out = Command::new(bin()).arg("check").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = Command::new(bin())
        .args(["check", "--json"])
        .arg(p.join("00000000000000000375.log"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["segments"], 1);
    assert_eq!(v["logs"][0]["segments"][0]["records"], 360);
}

#[test]
fn check_leaves_the_source_untouched() {
    let t = fixture_copy("data");
    age_atimes(t.path());
    let before = snapshot(t.path());
    for args in [
        vec!["check"],
        vec!["check", "--json"],
        vec!["check", "--policy", "strict"],
    ] {
        let out = Command::new(bin())
            .args(&args)
            .arg(t.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
    }
    let seg = t.path().join("orders/partition-0/00000000000000000000.log");
    let out = Command::new(bin()).arg("dump").arg(&seg).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_unchanged(&before, &snapshot(t.path()));
}

#[test]
fn rewriting_each_fixture_gives_the_same_bytes_but_the_pad() {
    for (dir, _) in logs() {
        let layout = discover(&dir);
        let log = &layout.logs[0];
        for seg in &log.segments {
            let orig = fs::read(dir.join(log.file_rel(seg.base, FileKind::Log))).unwrap();
            let mut metas = vec![];
            scan_segment(
                &orig,
                orig.len() as u64,
                seg.base,
                &ScanOptions::default(),
                |m| metas.push(*m),
            )
            .unwrap();
            let mut w = SegmentWriter::new(seg.base);
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
            assert!(a == b, "segment {} re-encodes differently", seg.base);
            assert!(
                w.index == fs::read(dir.join(log.file_rel(seg.base, FileKind::Index))).unwrap()
            );
            assert!(
                w.timeindex
                    == fs::read(dir.join(log.file_rel(seg.base, FileKind::TimeIndex))).unwrap()
            );
            assert!(metas.iter().all(|m| m.encoded_len() >= 4 + RECORD_OVERHEAD));
        }
    }
}

#[test]
fn dump_prints_records_then_the_end() {
    let seg = fixtures().join("seed-example/00000000000000000020.log");
    let out = Command::new(bin())
        .args(["dump", "--json"])
        .arg(&seg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want: Vec<Expected> =
        fs::read_to_string(fixtures().join("expected/seed-example.records.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|e: &Expected| (20..39).contains(&e.offset))
            .collect();
    assert_eq!(lines.len(), want.len() + 1);
    for (l, w) in lines.iter().zip(&want) {
        assert_eq!(l["offset"], w.offset);
        assert_eq!(l["timestamp"], w.timestamp);
        assert_eq!(l["key_hex"], w.key.as_str());
        assert_eq!(l["value_len"], w.value_len);
    }
    assert_eq!(lines.last().unwrap()["end"], "clean");
    let out = Command::new(bin())
        .args(["dump", "--from-offset", "30", "--limit", "2"])
        .arg(&seg)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("offset 30 "), "{text}");
    assert!(
        text.lines().nth(1).unwrap().starts_with("offset 31 "),
        "{text}"
    );
    assert_eq!(text.lines().count(), 3, "{text}");
}
