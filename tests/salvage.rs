//! `--policy salvage` on every front end: the report's runs, gaps and overlaps, the refused name, the
//! Takhin fixtures damaged mid-segment and read back through a real mount, `repair --output` and
//! `--in-place`, `dump --salvage`.

use crate::common;

use common::mount::Mounted;
use common::*;
use recoverfs::engine::format::takhin::{be_u64, segment_file_name, FileKind, Record};
use recoverfs::engine::index::rebuild_indexes;
use recoverfs::engine::policy::{Policy, ViewAction};
use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A log `p` of segments 0 (20 records) and `next` (5 records), record 5 of segment 0
/// given an impossible size: bad-size mid-segment, records 6.. intact after it.
fn damaged_log(root: &Path, next: u64) -> PathBuf {
    let p = root.join("t/partition-0");
    let w = write_segment(&p, 0, 20, 40);
    write_segment(&p, next, 5, 40);
    overwrite(
        &log_path(&p, 0),
        position_of(&w, 5) as u64,
        &u32::MAX.to_be_bytes(),
    );
    p
}

#[test]
fn check_reports_the_run_its_fields_and_the_gap_it_leaves() {
    let t = tempfile::tempdir().unwrap();
    let p = damaged_log(t.path(), 20);
    let scratch = tempfile::tempdir().unwrap();
    let w = write_segment(scratch.path(), 0, 20, 40);
    let (code, v) = check_json(t.path(), &["--policy", "salvage"]);
    assert_eq!(code, Some(1), "the view differs from the source");
    let log = &v["logs"][0];
    let seg = &log["segments"][0];
    assert_eq!(seg["records"], 5);
    assert_eq!(seg["view"], "truncated");
    let runs = seg["salvaged"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    assert_eq!(r["path"], "t/partition-0/00000000000000000006.log");
    assert_eq!(r["position"], position_of(&w, 6) as u64);
    assert_eq!(r["bytes"], (w.log.len() - position_of(&w, 6)) as u64);
    assert_eq!(
        (r["first_offset"].as_u64(), r["last_offset"].as_u64()),
        (Some(6), Some(19))
    );
    assert_eq!(r["records"], 14);
    assert_eq!(r["confirmed_by_index"], true);
    assert!(r.get("refused").is_none());
    // Every other segment carries an empty list under salvage.
    assert_eq!(log["segments"][1]["salvaged"], serde_json::json!([]));
    // The destroyed record is a gap between the segment and its run; the run meets segment 20.
    assert_eq!(
        log["gaps"],
        serde_json::json!([{"after": "t/partition-0/00000000000000000000.log",
            "before": "t/partition-0/00000000000000000006.log",
            "from_offset": 5, "to_offset": 5, "missing": 1}])
    );
    assert_eq!(log["overlaps"], serde_json::json!([]));
    assert_eq!(log["next_offset"], 25);
    let s = &v["summary"];
    assert_eq!(
        (s["salvaged_runs"].as_u64(), s["salvaged_records"].as_u64()),
        (Some(1), Some(14))
    );
    assert_eq!(
        s["records"],
        5 + 14 + 5,
        "the view serves the run's records"
    );
    assert_eq!(s["gaps"], 1);
    // The other policies' JSON has none of it.
    for policy in ["per-segment", "point-in-time", "strict"] {
        let (_, v) = check_json(t.path(), &["--policy", policy]);
        assert!(v["summary"].get("salvaged_runs").is_none(), "{policy}");
        assert!(
            v["logs"][0]["segments"][0].get("salvaged").is_none(),
            "{policy}"
        );
    }
    // The human form: one line per run, under its segment.
    let out = check_cli(t.path(), &["--policy", "salvage"]);
    let text = stdout(&out);
    assert!(
        text.contains("  SALVAGED    t/partition-0/00000000000000000006.log: 14 record(s), offsets 6..=19 from byte "),
        "{text}"
    );
    assert!(text.contains("(confirmed by the index)"), "{text}");
    assert!(
        text.contains("GAP         offsets 5..=5 (1 missing)"),
        "{text}"
    );
    // Salvage shows what per-segment shows, plus the runs.
    let views = |pol| -> Vec<ViewAction> {
        report_for(t.path(), pol)
            .segments()
            .map(|(_, s)| s.view)
            .collect()
    };
    assert_eq!(views(Policy::Salvage), views(Policy::PerSegment));
    let _ = p;
}

#[test]
fn a_run_reaching_the_next_segment_is_cut_there_and_reported_as_an_overlap() {
    let t = tempfile::tempdir().unwrap();
    damaged_log(t.path(), 15);
    let (_, v) = check_json(t.path(), &["--policy", "salvage"]);
    let log = &v["logs"][0];
    let r = &log["segments"][0]["salvaged"][0];
    assert_eq!(
        (r["first_offset"].as_u64(), r["last_offset"].as_u64()),
        (Some(6), Some(14))
    );
    assert_eq!(
        log["overlaps"],
        serde_json::json!([{"segment": "t/partition-0/00000000000000000015.log",
            "previous": "t/partition-0/00000000000000000000.log",
            "base_offset": 15, "previous_next_offset": 16, "offsets": 1}])
    );
    assert_eq!(log["gaps"].as_array().unwrap().len(), 1, "offset 5 only");
    assert_eq!(log["next_offset"], 20);
}

#[test]
fn a_run_whose_name_is_taken_is_refused_reported_and_not_shown() {
    let t = tempfile::tempdir().unwrap();
    let p = damaged_log(t.path(), 20);
    // An orphan index holds the run's `.index` name.
    fs::write(p.join(segment_file_name(6, FileKind::Index)), b"").unwrap();
    let (code, v) = check_json(t.path(), &["--policy", "salvage"]);
    assert_eq!(code, Some(1));
    let r = &v["logs"][0]["segments"][0]["salvaged"][0];
    assert!(
        r["refused"]
            .as_str()
            .unwrap()
            .contains("00000000000000000006.index already exists"),
        "{r}"
    );
    assert_eq!(v["summary"]["salvaged_runs"], 0);
    assert_eq!(v["summary"]["records"], 10);
    let text = stdout(&check_cli(t.path(), &["--policy", "salvage"]));
    assert!(
        text.contains("  REFUSED     t/partition-0/00000000000000000006.log"),
        "{text}"
    );
    let m = Mounted::new(t.path(), &["--policy", "salvage"]);
    let shown = m.path().join("t/partition-0");
    assert!(!shown.join(segment_file_name(6, FileKind::Log)).exists());
    assert_eq!(bases(&shown), vec![0, 20]);
}

fn getxattr(p: &Path, name: &str) -> String {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let cn = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and a buffer of the given length.
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "getxattr {name} of {}", p.display());
    buf.truncate(n as usize);
    String::from_utf8(buf).unwrap()
}

/// Damages the fixtures mid-segment: the size field of one record in three segments
/// (one of them the first record after a checkpoint-sized prefix), and 40 garbage bytes
/// over a record start in a fourth. Returns the damaged `.log`s.
fn damage_fixtures(root: &Path) -> Vec<PathBuf> {
    let hits = [
        (
            "orders/partition-0",
            375u64,
            10usize,
            &u32::MAX.to_be_bytes()[..],
        ),
        ("orders/partition-1", 380, 5, &[0xffu8; 40][..]),
        ("events/partition-0", 22, 3, &7u32.to_be_bytes()[..]),
        ("orders/partition-2", 0, 4, &u32::MAX.to_be_bytes()[..]),
    ];
    hits.iter()
        .map(|(dir, base, record, bytes)| {
            let d = root.join(dir);
            let idx = fs::read(seg_path(&d, *base, "index")).unwrap();
            let pos = be_u64(&idx, record * 16 + 8);
            overwrite(&log_path(&d, *base), pos, bytes);
            log_path(&d, *base)
        })
        .collect()
}

#[test]
fn fixtures_damaged_mid_segment_read_back_through_a_real_mount_and_a_repair() {
    let src = fixture_copy("data");
    let damaged = damage_fixtures(src.path());
    age_all_atimes(src.path());
    let before = snapshot_all(src.path());
    let report = report_for(src.path(), Policy::Salvage);
    assert_eq!(report.summary.truncated, 4);
    let runs = report.summary.salvaged_runs.unwrap();
    assert!(
        runs >= 4,
        "a run after each damage: {}",
        report.render_human()
    );
    assert_unchanged(&before, &snapshot_all(src.path()));
    let out = check_cli(src.path(), &["--policy", "salvage"]);
    assert_eq!(out.status.code(), Some(1));
    assert_unchanged(&before, &snapshot_all(src.path()));

    // Offsets no segment or run holds: the only records allowed to be missing.
    let lost: BTreeSet<(String, u64)> = report
        .logs
        .iter()
        .flat_map(|l| {
            l.gaps
                .iter()
                .flat_map(move |g| (g.from_offset..=g.to_offset).map(move |o| (l.path.clone(), o)))
        })
        .collect();
    assert!(
        (4..=12).contains(&lost.len()),
        "only the destroyed records are lost: {lost:?}"
    );

    let expected_root = fixtures().join("expected/data");
    let read_back = |view: &Path| {
        let (mut checked, mut missing) = (0, BTreeSet::new());
        for f in files_under(&expected_root) {
            let part = f
                .to_str()
                .unwrap()
                .trim_end_matches(".records.jsonl")
                .to_string();
            let dir = view.join(&part);
            let bases = bases(&dir);
            for line in fs::read_to_string(expected_root.join(&f)).unwrap().lines() {
                let want: serde_json::Value = serde_json::from_str(line).unwrap();
                let off = want["offset"].as_u64().unwrap();
                let base = *bases.iter().rev().find(|&&b| b <= off).unwrap();
                let Some(rec) = takhin_read(&dir, base, off) else {
                    missing.insert((part.clone(), off));
                    continue;
                };
                assert_eq!(rec.offset, off);
                assert_eq!(rec.timestamp, want["timestamp"].as_i64().unwrap());
                assert_eq!(hex(&rec.key), want["key"].as_str().unwrap());
                assert_eq!(rec.value.len() as u64, want["value_len"].as_u64().unwrap());
                assert_eq!(
                    crc32fast::hash(&rec.value) as u64,
                    want["value_crc32"].as_u64().unwrap(),
                    "{part} offset {off}"
                );
                checked += 1;
            }
        }
        (checked, missing)
    };

    {
        let m = Mounted::new(src.path(), &["--policy", "salvage"]);
        let (checked, missing) = read_back(m.path());
        assert!(checked > 5000, "{checked}");
        assert_eq!(missing, lost, "every record the rule recovers reads back");
        // Each run: the original's byte range, indexes rebuilt from it, xattrs naming its origin.
        for (log, seg) in report.segments() {
            for (r, run) in seg.shown_runs() {
                let shown = m.path().join(&r.path);
                let orig = read_noatime(&src.path().join(&seg.path));
                let bytes = orig[run.position as usize..run.end as usize].to_vec();
                assert!(fs::read(&shown).unwrap() == bytes, "{}", r.path);
                assert_eq!(fs::metadata(&shown).unwrap().len(), r.bytes);
                let (i, t) = rebuild_indexes(&bytes, &run.scan).unwrap();
                let idx = shown.with_extension("index");
                assert!(fs::read(&idx).unwrap() == i);
                assert_eq!(fs::metadata(&idx).unwrap().len(), i.len() as u64);
                assert!(fs::read(shown.with_extension("timeindex")).unwrap() == t);
                assert_eq!(getxattr(&shown, "user.recoverfs.salvaged_from"), seg.path);
                assert_eq!(
                    getxattr(&idx, "user.recoverfs.position"),
                    run.position.to_string()
                );
                let _ = log;
            }
        }
        // tails/ still holds everything cut after the valid prefix.
        for d in &damaged {
            let rel = d.strip_prefix(src.path()).unwrap();
            let tail = m
                .path()
                .join(".recoverfs/tails")
                .join(format!("{}.tail", rel.display()));
            let orig = read_noatime(d);
            let seg = report
                .segments()
                .find(|(_, s)| Path::new(&s.path) == rel)
                .unwrap()
                .1;
            assert!(fs::read(tail).unwrap() == orig[seg.valid_bytes as usize..]);
        }
        // report.json is the engine's report.
        let got: serde_json::Value =
            serde_json::from_slice(&fs::read(m.path().join(".recoverfs/report.json")).unwrap())
                .unwrap();
        assert_eq!(got["summary"]["salvaged_runs"], runs);
    }
    assert_unchanged(&before, &snapshot_all(src.path()));

    // repair --output writes the runs as real segments; per-segment finds them clean.
    let t = tempfile::tempdir().unwrap();
    let new = t.path().join("new");
    let out = repair_output(src.path(), &new, &["--policy", "salvage"]);
    assert_ok(&out, "repair --output --policy salvage");
    assert_unchanged(&before, &snapshot_all(src.path()));
    let out = check_cli(&new, &["--policy", "per-segment"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let r = report_for(&new, Policy::PerSegment);
    assert_eq!(r.summary.records, report.summary.records);
    assert_eq!(r.summary.gaps as usize, report.summary.gaps as usize);
    let (checked, missing) = read_back(&new);
    assert!(checked > 5000);
    assert_eq!(missing, lost);
    // In place writes the same tree, and the same records read back from it.
    let out = repair_in_place(
        src.path(),
        &t.path().join("backup"),
        &["--policy", "salvage"],
    );
    assert_ok(&out, "repair --in-place --policy salvage");
    assert_eq!(
        tree_contents(src.path(), ""),
        tree_contents(&new, ""),
        "in place equals --output"
    );
    assert_eq!(check_code(src.path(), "per-segment"), Some(0));
    let (checked, missing) = read_back(src.path());
    assert!(checked > 5000);
    assert_eq!(missing, lost);
}

#[test]
fn dump_salvage_prints_the_valid_records_the_damage_then_each_run() {
    let t = tempfile::tempdir().unwrap();
    let p = damaged_log(t.path(), 20);
    let out = dump(&log_path(&p, 0), &["--salvage"]);
    assert_eq!(out.status.code(), Some(1), "damage found");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[..5].iter().all(|l| l.starts_with("offset ")),
        "{text}"
    );
    assert!(
        lines[5].starts_with("end: valid prefix ends at byte "),
        "{text}"
    );
    assert!(
        lines[6].starts_with("salvaged run: 14 record(s), offsets 6..=19 from byte "),
        "{text}"
    );
    assert!(lines[6].ends_with("(confirmed by the index)"), "{text}");
    for (i, l) in lines[7..21].iter().enumerate() {
        assert!(l.starts_with(&format!("offset {} @", 6 + i)), "{l}");
    }
    assert_eq!(
        lines[21],
        "salvaged: 1 run(s), 14 record(s) after the damage"
    );
    assert_eq!(lines.len(), 22);
    // Without --salvage, the dump ends at the damage, as before.
    assert_eq!(stdout(&dump(&log_path(&p, 0), &[])).lines().count(), 6);
    // JSON lines: each run announced, then its records.
    let json = stdout(&dump(&log_path(&p, 0), &["--salvage", "--json"]));
    let v: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v[6]["salvaged_run"]["first_offset"], 6);
    assert_eq!(v[7]["offset"], 6);
    assert_eq!(v.len(), 21);
}

/// Looks a path up from the root of a view, one name at a time.
fn lookup(
    v: &recoverfs::view::View,
    rel: &str,
) -> Result<recoverfs::view::Attr, recoverfs::view::ViewError> {
    let mut ino = recoverfs::view::ROOT_INO;
    let mut attr = v.getattr(ino)?;
    for name in rel.split('/') {
        attr = v.lookup(ino, std::ffi::OsStr::new(name))?;
        ino = attr.ino;
    }
    Ok(attr)
}

#[test]
fn a_run_follows_its_original_when_it_changes() {
    let t = tempfile::tempdir().unwrap();
    let p = damaged_log(t.path(), 20);
    let v = view(t.path(), Policy::Salvage);
    let run = "t/partition-0/00000000000000000006.log";
    let a = lookup(&v, run).unwrap();
    let orig = fs::read(log_path(&p, 0)).unwrap();
    let w = write_segment(tempfile::tempdir().unwrap().path(), 0, 20, 40);
    let q = position_of(&w, 6);
    assert_eq!(a.size, (orig.len() - q) as u64);
    assert!(read_all(&v, a.ino) == orig[q..]);
    let idx = lookup(&v, "t/partition-0/00000000000000000006.index").unwrap();
    assert_eq!(idx.size, 14 * 16);
    // Per-segment shows no run.
    let plain = view(t.path(), Policy::PerSegment);
    assert!(lookup(&plain, run).is_err());
    // The original now damaged one record later: the run starts at 7, and 6 is gone.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut fresh = w.log.clone();
    fresh[position_of(&w, 6)..position_of(&w, 6) + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    fs::write(log_path(&p, 0), &fresh).unwrap();
    assert!(lookup(&v, run).is_err(), "the old run is no longer listed");
    let b = lookup(&v, "t/partition-0/00000000000000000007.log").unwrap();
    let q7 = position_of(&w, 7);
    assert_eq!(b.size, (fresh.len() - q7) as u64);
    assert!(read_all(&v, b.ino) == fresh[q7..]);
}

/// In place on a data directory that is itself the partition (the log's path is ""),
/// with a run cut at the next segment's base: the same tree as `--output`, whose
/// overlap is gone, and a rerun has nothing left to do.
#[test]
fn in_place_salvage_of_a_partition_directory_with_a_run_cut_at_the_next_segment() {
    let master = tempfile::tempdir().unwrap();
    let p = damaged_log(master.path(), 15);
    let t = tempfile::tempdir().unwrap();
    let new = t.path().join("new");
    assert_ok(
        &repair_output(&p, &new, &["--policy", "salvage"]),
        "repair --output",
    );
    assert_eq!(bases(&new), vec![0, 6, 15]);
    let src = clone_tree(&p);
    let backup = t.path().join("backup");
    let out = repair_in_place(src.path(), &backup, &["--policy", "salvage"]);
    assert_ok(&out, "repair --in-place");
    assert!(
        stdout(&out).contains("  SALVAGE  00000000000000000006.log: "),
        "{}",
        stdout(&out)
    );
    assert_eq!(tree_contents(src.path(), ""), tree_contents(&new, ""));
    let (code, v) = check_json(src.path(), &["--policy", "per-segment"]);
    assert_eq!(code, Some(0));
    assert_eq!(v["logs"][0]["overlaps"], serde_json::json!([]));
    assert_eq!(v["logs"][0]["gaps"].as_array().unwrap().len(), 1);
    // Offsets 6..=14 from the run, then 15.. from the next segment.
    let w = write_segment(tempfile::tempdir().unwrap().path(), 0, 20, 40);
    let at = |o: u64| takhin_read(src.path(), if o < 15 { 6 } else { 15 }, o);
    let recs = record_positions(&w.log);
    for o in 6..15u64 {
        let p = recs[o as usize];
        let end = recs.get(o as usize + 1).copied().unwrap_or(w.log.len());
        assert_eq!(at(o), Record::decode(&w.log[p..end]), "offset {o}");
    }
    assert!(at(15).is_some());
    let out = repair_in_place(src.path(), &backup, &["--policy", "salvage"]);
    assert!(
        stdout(&out).contains("Nothing to repair"),
        "{}",
        stdout(&out)
    );
}
