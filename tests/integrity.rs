//! The integrity baseline (`check --save-baseline`, `--baseline` on check, mount and repair) and the evidence hashes (`check --hashes`).

use crate::common;

use common::mount::Mounted;
use common::*;
use recoverfs::engine::format::takhin::SegmentWriter;
use serde_json::Value;
use std::fs;
use std::path::Path;

const BLOCK: u64 = 64 * 1024;

/// A log of two segments: 300 records of ~1000-byte values at 0 (about 4.7 blocks),
/// then 10 more at 300.
fn two_segments(dir: &Path) -> SegmentWriter {
    let w = write_segment(dir, 0, 300, 1000);
    write_segment(dir, 300, 10, 100);
    w
}

fn save(dir: &Path, to: &Path) {
    let o = check_cli(dir, &["--save-baseline", to.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Baseline of 6 file(s) written"),
        "{}",
        stderr(&o)
    );
}

fn segment(r: &Value, base: u64) -> &Value {
    r["logs"][0]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["base_offset"] == base)
        .unwrap()
}

/// Where the valid prefix must end for a change in the block holding `at`: before
/// the first record that ends past the block's start.
fn cut_for(w: &SegmentWriter, at: u64) -> (u64, u64) {
    let block_start = at / BLOCK * BLOCK;
    let pos = positions(w);
    let total = w.log.len() as u64;
    let (i, p) = pos
        .iter()
        .enumerate()
        .find(|(i, _)| pos.get(i + 1).copied().unwrap_or(total) > block_start)
        .map(|(i, p)| (i as u64, *p))
        .unwrap();
    (p, i)
}

/// A byte inside record `r`'s value: a change no reader of Takhin's format can see.
fn value_byte(w: &SegmentWriter, r: usize) -> u64 {
    // size | offset | timestamp | key_len | key | value_len | value
    let p = position_of(w, r) as u64;
    let key_len = u32::from_be_bytes(w.log[p as usize + 20..p as usize + 24].try_into().unwrap());
    p + 4 + 8 + 8 + 4 + key_len as u64 + 4 + 10
}

#[test]
fn a_value_byte_flipped_after_a_baseline_is_found_named_and_cut_under_every_front_end() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let w = two_segments(&data.join("t/partition-0"));
    let base = t.path().join("baseline.jsonl");
    save(&data, &base);
    let log = log_path(&data.join("t/partition-0"), 0);
    let at = value_byte(&w, 150);
    assert!(at > BLOCK, "the change is past the first block");
    let mut bytes = fs::read(&log).unwrap();
    bytes[at as usize] ^= 0x20;
    fs::write(&log, &bytes).unwrap();

    // Invisible without the baseline: Takhin's format has no checksum.
    let (code, _) = check_json(&data, &[]);
    assert_eq!(code, Some(0));

    let before = snapshot(&data);
    let (code, r) = check_json(&data, &["--baseline", base.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{r}");
    let s = segment(&r, 0);
    let (cut, kept) = cut_for(&w, at);
    assert_eq!(s["damage"]["kind"], "changed-since-baseline", "{s}");
    assert_eq!(s["valid_bytes"], cut);
    assert_eq!(s["records"], kept);
    let block_start = at / BLOCK * BLOCK;
    assert_eq!(s["changed_since_baseline"]["from"], block_start);
    assert_eq!(s["changed_since_baseline"]["to"], block_start + BLOCK);
    assert!(
        s["damage"]["detail"].as_str().unwrap().contains(&format!(
            "bytes {block_start}..{} changed since the baseline",
            block_start + BLOCK
        )),
        "{s}"
    );
    assert_eq!(
        r["baseline"]["changed"][0]["path"],
        "t/partition-0/00000000000000000000.log"
    );
    assert_eq!(segment(&r, 300)["status"], "clean");
    // The text names the segment and the range.
    let o = check_cli(&data, &["--baseline", base.to_str().unwrap()]);
    let text = stdout(&o);
    assert!(
        text.contains("changed-since-baseline")
            && text.contains("CHANGED  t/partition-0/00000000000000000000.log"),
        "{text}"
    );

    // strict: the segment is refused.
    let (code, r) = check_json(
        &data,
        &["--baseline", base.to_str().unwrap(), "--policy", "strict"],
    );
    assert_eq!(code, Some(1));
    assert_eq!(segment(&r, 0)["view"], "eio", "{}", segment(&r, 0));

    // salvage: the records after the changed block come back as a run of their own.
    let (_, r) = check_json(
        &data,
        &["--baseline", base.to_str().unwrap(), "--policy", "salvage"],
    );
    let runs = segment(&r, 0)["salvaged"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let first_after = positions(&w)
        .iter()
        .position(|&p| p >= block_start + BLOCK)
        .unwrap() as u64;
    assert_eq!(runs[0]["first_offset"], first_after, "{runs:?}");
    assert_eq!(runs[0]["last_offset"], 299);

    // The mount serves the cut prefix.
    let m = Mounted::new(&data, &["--baseline", base.to_str().unwrap()]);
    let shown = fs::read(m.path().join("t/partition-0/00000000000000000000.log")).unwrap();
    assert_eq!(shown, bytes[..cut as usize]);
    drop(m);

    // repair --output writes the same prefix.
    let out = t.path().join("out");
    let o = repair_output(&data, &out, &["--baseline", base.to_str().unwrap()]);
    assert_ok(&o, "repair --baseline");
    let written = fs::read(log_path(&out.join("t/partition-0"), 0)).unwrap();
    assert_eq!(written, bytes[..cut as usize]);
    assert_unchanged(&before, &snapshot(&data));
}

#[test]
fn a_baseline_of_an_unchanged_tree_checks_clean_and_appended_records_are_new_data() {
    let src = fixture_copy("data");
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("b.jsonl");
    let o = check_cli(src.path(), &["--save-baseline", base.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let before = snapshot(src.path());
    let o = check_cli(src.path(), &["--baseline", base.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("0 gone, 0 shorter, 0 changed"),
        "{}",
        stdout(&o)
    );
    assert_unchanged(&before, &snapshot(src.path()));

    // Records appended to a log after the baseline: new data, not damage.
    let t2 = tempfile::tempdir().unwrap();
    let dir = t2.path().join("t/partition-0");
    let mut w = write_segment(&dir, 0, 100, 500);
    let base2 = t2.path().join("b.jsonl");
    let o = check_cli(t2.path(), &["--save-baseline", base2.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for i in 0..50u8 {
        w.append(1_800_000_000_000 + i as i64, b"late", &[i; 700]);
    }
    w.write_to(&dir).unwrap();
    let (code, r) = check_json(t2.path(), &["--baseline", base2.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(segment(&r, 0)["records"], 150);
    assert!(segment(&r, 0).get("changed_since_baseline").is_none());
}

#[test]
fn files_gone_or_shorter_since_the_baseline_are_reported() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("t/partition-0");
    let w = two_segments(&dir);
    let base = t.path().join("b.jsonl");
    save(t.path(), &base);
    fs::remove_file(seg_path(&dir, 300, "timeindex")).unwrap();
    // Cut the first .log at a record boundary inside its third block.
    let p = positions(&w)
        .into_iter()
        .find(|&p| p > 2 * BLOCK + 100)
        .unwrap();
    set_len(&log_path(&dir, 0), p);
    let (code, r) = check_json(t.path(), &["--baseline", base.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{r}");
    let b = &r["baseline"];
    assert_eq!(
        b["gone"][0], "t/partition-0/00000000000000000300.timeindex",
        "{b}"
    );
    assert_eq!(
        b["shorter"][0]["path"], "t/partition-0/00000000000000000000.log",
        "{b}"
    );
    assert_eq!(b["shorter"][0]["size"], p);
    // The records in the block that can no longer be confirmed whole are cut.
    let s = segment(&r, 0);
    assert_eq!(s["damage"]["kind"], "changed-since-baseline", "{s}");
    assert!(s["valid_bytes"].as_u64().unwrap() <= 2 * BLOCK);
}

#[test]
fn a_corrupt_or_foreign_baseline_is_refused_naming_the_file_and_line() {
    let src = fixture_copy("data");
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("b.jsonl");
    for (text, says) in [
        ("not json\n", "line 1: not a recoverfs baseline header"),
        (
            "{\"format\":\"recoverfs-baseline\",\"version\":2,\"block_bytes\":65536,\"checksum\":\"crc32c\"}\n",
            "version 2",
        ),
        (
            "{\"format\":\"recoverfs-baseline\",\"version\":1,\"block_bytes\":65536,\"checksum\":\"crc32c\"}\n{\"path\":\"a.log\",\"size\":1,\"mtime_ns\":0,\"ctime_ns\":0,\"crc32c\":0,\"blocks\":[]}\n",
            "line 2: 0 blocks listed for a file of 1 bytes",
        ),
    ] {
        fs::write(&base, text).unwrap();
        for sub in ["check", "repair"] {
            let mut args = vec![sub, src.path().to_str().unwrap(), "--baseline", base.to_str().unwrap()];
            let out = t.path().join("out");
            if sub == "repair" {
                args.extend(["--output", out.to_str().unwrap()]);
            }
            let o = run(&args);
            assert_eq!(o.status.code(), Some(2), "{sub}: {}", stderr(&o));
            assert!(
                stderr(&o).contains(says) && stderr(&o).contains("b.jsonl"),
                "{sub}: {}",
                stderr(&o)
            );
            assert!(!out.exists());
        }
    }
    let mp = tempfile::tempdir().unwrap();
    let o = run([
        "mount",
        src.path().to_str().unwrap(),
        mp.path().to_str().unwrap(),
        "--foreground",
        "--baseline",
        base.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("b.jsonl"), "{}", stderr(&o));
}

#[test]
fn hashes_list_every_original_read_and_verify_with_sha256sum() {
    let src = fixture_copy("data");
    let t = tempfile::tempdir().unwrap();
    let list = t.path().join("SHA256SUMS");
    let before = snapshot(src.path());
    let o = check_cli(src.path(), &["--hashes", list.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_unchanged(&before, &snapshot(src.path()));
    let text = fs::read_to_string(&list).unwrap();
    let segment_files = files_under(src.path())
        .into_iter()
        .filter(|f| {
            let n = f.to_string_lossy();
            n.ends_with(".log") || n.ends_with(".index") || n.ends_with(".timeindex")
        })
        .count();
    assert_eq!(text.lines().count(), segment_files, "{text}");
    let o = std::process::Command::new("sha256sum")
        .args(["-c", "--strict", list.to_str().unwrap()])
        .current_dir(src.path())
        .output()
        .expect("sha256sum (coreutils)");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // A changed original fails the list.
    let first = text.lines().next().unwrap().split_once("  ").unwrap().1;
    overwrite(&src.path().join(first), 0, b"\xff");
    let o = std::process::Command::new("sha256sum")
        .args(["-c", "--quiet", list.to_str().unwrap()])
        .current_dir(src.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stdout(&o).contains(first), "{}", stdout(&o));
}

/// `sha256sum -c LIST` run in `dir`, quietly: its output when a line fails.
fn sha256sum_check(dir: &Path, list: &Path) -> Result<(), String> {
    let o = std::process::Command::new("sha256sum")
        .args(["-c", "--quiet", "--strict", list.to_str().unwrap()])
        .current_dir(dir)
        .output()
        .expect("sha256sum (coreutils)");
    match o.status.success() {
        true => Ok(()),
        false => Err(format!("{}{}", stdout(&o), stderr(&o))),
    }
}

#[test]
fn repair_writes_the_hashes_of_what_it_read_and_of_what_it_wrote_in_both_modes() {
    let t = tempfile::tempdir().unwrap();
    let src = damaged();
    let pristine = clone_tree(src.path());
    let list = t.path().join("SUMS");
    let out = t.path().join("out");
    let o = repair_output(src.path(), &out, &["--hashes", list.to_str().unwrap()]);
    assert_ok(&o, "repair --output --hashes");
    sha256sum_check(src.path(), &list).unwrap();
    let written = t.path().join("SUMS.written");
    sha256sum_check(&out, &written).unwrap();
    let n = |p: &Path| fs::read_to_string(p).unwrap().lines().count();
    assert!(
        n(&list) > 3 && n(&written) > 3,
        "{} {}",
        n(&list),
        n(&written)
    );

    // In place: the list of what was read verifies against the originals (here,
    // an untouched copy), the written one against the repaired directory.
    let backup = t.path().join("backup");
    let list2 = t.path().join("SUMS2");
    let o = repair_in_place(src.path(), &backup, &["--hashes", list2.to_str().unwrap()]);
    assert_ok(&o, "repair --in-place --hashes");
    sha256sum_check(pristine.path(), &list2).unwrap();
    sha256sum_check(src.path(), &t.path().join("SUMS2.written")).unwrap();
    // The repaired tree differs from the originals: the read list fails on it.
    assert!(sha256sum_check(src.path(), &list2).is_err());
}

#[test]
fn with_a_replica_both_findings_appear_and_the_changed_records_are_healed() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    let w = two_segments(&a.join("t/partition-0"));
    copy_tree(&a, &b);
    let base = t.path().join("baseline.jsonl");
    save(&a, &base);
    let log = log_path(&a.join("t/partition-0"), 0);
    let at = value_byte(&w, 150);
    let mut bytes = fs::read(&log).unwrap();
    bytes[at as usize] ^= 0x20;
    fs::write(&log, &bytes).unwrap();
    let (code, r) = check_json(
        &a,
        &[
            "--baseline",
            base.to_str().unwrap(),
            "--replica",
            b.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(1), "{r}");
    let (cut, kept) = cut_for(&w, at);
    let s = segment(&r, 0);
    assert_eq!(s["damage"]["kind"], "changed-since-baseline", "{s}");
    assert_eq!(s["valid_bytes"], cut);
    // The records from the cut on come from the replica, which holds them unchanged.
    let healed = r["logs"][0]["healed"].as_array().unwrap();
    assert_eq!(healed.len(), 1, "{healed:?}");
    assert_eq!(healed[0]["from_offset"], kept, "{healed:?}");
    assert_eq!(healed[0]["to_offset"], 299, "{healed:?}");
    assert_eq!(r["baseline"]["changed"].as_array().unwrap().len(), 1);
    assert_eq!(r["logs"][0]["next_offset"], 310);
}
