//! `--replica DIR` (issue 13): a primary damaged every way healed from a re-segmented copy of a Takhin
//! fixture, divergences found by flipping bits (value, timestamp, key) with two and three copies,
//! damaged replicas, extra and missing logs, the refusals, and every source left unchanged.

use crate::common;

use common::mount::Mounted;
use common::*;
use recoverfs::engine::format::takhin::{be_i64, be_u32, be_u64, segment_file_name, FileKind};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The fixture partition the tests damage and heal (9 segments, offsets 0..3035).
const PART: &str = "orders/partition-0";

/// One record of a log as its raw bytes (pad included), with its offset and timestamp.
#[derive(Debug, Clone)]
struct Raw {
    offset: u64,
    timestamp: i64,
    bytes: Vec<u8>,
}

/// Every record of the log directory `dir`, segments in base order, read by hand.
fn raw_records(dir: &Path) -> Vec<Raw> {
    let mut out = Vec::new();
    for base in bases(dir) {
        let log = fs::read(log_path(dir, base)).unwrap();
        let mut p = 0;
        while p + 4 <= log.len() {
            let n = 4 + be_u32(&log, p) as usize;
            out.push(Raw {
                offset: be_u64(&log, p + 4),
                timestamp: be_i64(&log, p + 12),
                bytes: log[p..p + n].to_vec(),
            });
            p += n;
        }
    }
    out
}

/// Writes `recs` into `dir` as segments of `sizes[i % sizes.len()]` records each,
/// with the indexes the Takhin writer would write: the same record bytes, other boundaries.
fn resegment(dir: &Path, recs: &[Raw], sizes: &[usize]) {
    fs::create_dir_all(dir).unwrap();
    let mut i = 0;
    let mut k = 0;
    while i < recs.len() {
        let n = sizes[k % sizes.len()].min(recs.len() - i);
        let base = recs[i].offset;
        let (mut log, mut index, mut tindex) = (Vec::new(), Vec::new(), Vec::new());
        for r in &recs[i..i + n] {
            index.extend_from_slice(&r.offset.to_be_bytes());
            index.extend_from_slice(&(log.len() as u64).to_be_bytes());
            tindex.extend_from_slice(&r.timestamp.to_be_bytes());
            tindex.extend_from_slice(&r.offset.to_be_bytes());
            log.extend_from_slice(&r.bytes);
        }
        fs::write(dir.join(segment_file_name(base, FileKind::Log)), log).unwrap();
        fs::write(dir.join(segment_file_name(base, FileKind::Index)), index).unwrap();
        fs::write(
            dir.join(segment_file_name(base, FileKind::TimeIndex)),
            tindex,
        )
        .unwrap();
        i += n;
        k += 1;
    }
}

/// A data directory holding the fixture partition re-segmented (same bytes, other boundaries).
fn resegmented_replica(sizes: &[usize]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let recs = raw_records(&fixtures().join("data").join(PART));
    resegment(&t.path().join(PART), &recs, sizes);
    t
}

/// A copy of the fixture partition damaged every way the engine knows: a zeroed block
/// mid-segment, garbage over record headers, a segment whose first header is garbage
/// (nothing valid: its name is reused by the healed range), a deleted middle segment,
/// a lost last segment and a torn tail on the new last one.
fn damaged_primary() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let src = fixtures().join("data").join(PART);
    let p = t.path().join(PART);
    copy_tree(&src, &p);
    let recs_at = |base: u64| record_positions(&fs::read(log_path(&p, base)).unwrap());
    // Zeroed block in the middle of segment 0.
    let at = recs_at(0)[100] as u64 + 7;
    overwrite(&log_path(&p, 0), at, &[0u8; 600]);
    // Garbage over the headers of records 50.. of segment 375.
    let at = recs_at(375)[50] as u64;
    overwrite(&log_path(&p, 375), at, &[0xEEu8; 700]);
    // Segment 1494: its first header is garbage, so no record of it is valid.
    overwrite(&log_path(&p, 1494), 0, &[0xFFu8; 8]);
    // A deleted middle segment.
    for ext in ["log", "index", "timeindex"] {
        fs::remove_file(seg_path(&p, 1100, ext)).unwrap();
    }
    // A lost last segment, and a torn tail on the one now last.
    for ext in ["log", "index", "timeindex"] {
        fs::remove_file(seg_path(&p, 2991, ext)).unwrap();
    }
    cut_tail(&log_path(&p, 2623), 100);
    t
}

fn check_replicas(primary: &Path, replicas: &[&Path], extra: &[&str]) -> (Option<i32>, Value) {
    let mut args: Vec<String> = vec!["--json".into()];
    for r in replicas {
        args.push("--replica".into());
        args.push(r.display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let o = check_cli(primary, &a);
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&o), stderr(&o)));
    (o.status.code(), v)
}

fn log_of<'a>(v: &'a Value, path: &str) -> &'a Value {
    v["logs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["path"] == path)
        .unwrap_or_else(|| panic!("no log {path}"))
}

/// The replica bytes of each healed range are exactly the original records it names.
fn assert_healed_bytes_are_the_originals(healed: &[Value], replica: &Path, recs: &[Raw]) {
    for h in healed {
        let from = h["from_offset"].as_u64().unwrap();
        let to = h["to_offset"].as_u64().unwrap();
        assert_eq!(h["records"].as_u64().unwrap(), to - from + 1);
        let file = read_noatime(&replica.join(h["path"].as_str().unwrap()));
        let pos = h["position"].as_u64().unwrap() as usize;
        let bytes = h["bytes"].as_u64().unwrap() as usize;
        let want: Vec<u8> = recs
            .iter()
            .filter(|r| (from..=to).contains(&r.offset))
            .flat_map(|r| r.bytes.clone())
            .collect();
        assert!(
            file[pos..pos + bytes] == want[..],
            "healed {from}..={to}: not the original records' bytes"
        );
    }
}

#[test]
fn a_primary_damaged_every_way_is_healed_whole_from_a_resegmented_replica() {
    let recs = raw_records(&fixtures().join("data").join(PART));
    assert_eq!(recs.len(), 3035);
    let primary = damaged_primary();
    let replica = resegmented_replica(&[200, 333, 512]);
    age_atimes(primary.path());
    age_atimes(replica.path());
    let (before_p, before_r) = (snapshot(primary.path()), snapshot(replica.path()));
    for policy in ["per-segment", "salvage", "point-in-time"] {
        let (code, v) = check_replicas(primary.path(), &[replica.path()], &["--policy", policy]);
        assert_eq!(code, Some(1), "{policy}: the view differs from the primary");
        let log = log_of(&v, PART);
        assert_eq!(
            log["gaps"],
            serde_json::json!([]),
            "{policy}: every gap healed"
        );
        assert_eq!(log["next_offset"], 3035, "{policy}");
        let healed = log["healed"].as_array().unwrap();
        assert!(!healed.is_empty());
        // Served: the primary's records plus the healed ones, every offset exactly once.
        let mut held: Vec<(u64, u64)> = healed
            .iter()
            .map(|h| {
                (
                    h["from_offset"].as_u64().unwrap(),
                    h["to_offset"].as_u64().unwrap(),
                )
            })
            .collect();
        for s in log["segments"].as_array().unwrap() {
            if matches!(s["view"].as_str(), Some("kept" | "truncated")) && s["records"] != 0 {
                held.push((
                    s["first_offset"].as_u64().unwrap(),
                    s["last_offset"].as_u64().unwrap(),
                ));
            }
            for r in s["salvaged"].as_array().into_iter().flatten() {
                held.push((
                    r["first_offset"].as_u64().unwrap(),
                    r["last_offset"].as_u64().unwrap(),
                ));
            }
        }
        held.sort_unstable();
        let mut next = 0;
        for (a, b) in &held {
            assert_eq!(
                *a, next,
                "{policy}: offsets served once, in order: {held:?}"
            );
            next = b + 1;
        }
        assert_eq!(next, 3035, "{policy}");
        assert_eq!(v["summary"]["records"], 3035, "{policy}");
        assert_eq!(v["summary"]["replicas"], 1);
        assert_eq!(v["summary"]["divergences"], 0, "{policy}: same records");
        assert_healed_bytes_are_the_originals(healed, replica.path(), &recs);
        // A healed range never spans two replica segments.
        for h in healed {
            let from = h["from_offset"].as_u64().unwrap();
            let base: u64 = h["path"].as_str().unwrap()[PART.len() + 1..][..20]
                .parse()
                .unwrap();
            let rbases = bases(&replica.path().join(PART));
            let next_base = rbases
                .iter()
                .copied()
                .find(|&b| b > base)
                .unwrap_or(u64::MAX);
            assert!(base <= from && h["to_offset"].as_u64().unwrap() < next_base);
        }
        // The segment with no valid record is replaced by the range healed at its base.
        let at1494 = healed.iter().find(|h| h["from_offset"] == 1494).unwrap();
        assert_eq!(
            at1494["replaces"],
            format!("{PART}/00000000000000001494.log")
        );
    }
    // Human text: one line per healed range.
    let o = check_cli(
        primary.path(),
        &["--replica", replica.path().to_str().unwrap()],
    );
    let text = stdout(&o);
    assert!(
        text.contains("HEALED      orders/partition-0/00000000000000001100.log: offsets 1100..="),
        "{text}"
    );
    assert!(text.contains("replicas: 1; "), "{text}");
    assert_unchanged(&before_p, &snapshot(primary.path()));
    assert_unchanged(&before_r, &snapshot(replica.path()));
}

#[test]
fn without_replicas_point_in_time_stops_at_the_first_damage_with_them_it_does_not() {
    let primary = damaged_primary();
    let (_, v) = check_json(primary.path(), &["--policy", "point-in-time"]);
    let alone = v["summary"]["records"].as_u64().unwrap();
    assert!(alone < 200, "stops in segment 0 without replicas: {alone}");
    assert!(v["logs"][0].get("healed").is_none(), "no replica, no field");
    assert!(v["summary"].get("healed_records").is_none());
}

/// Flips one bit of the byte at `at` of `path`.
fn flip(path: &Path, at: usize) {
    let mut b = fs::read(path).unwrap();
    b[at] ^= 0x10;
    fs::write(path, b).unwrap();
}

/// A clean copy of the fixture with one bit flipped in a value (offset 10), a timestamp
/// (offset 400) and a key (offset 800): no single-copy check can see any of them.
fn flipped_primary() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join(PART);
    copy_tree(&fixtures().join("data").join(PART), &p);
    let pos = |base: u64, o: u64| {
        record_positions(&fs::read(log_path(&p, base)).unwrap())[(o - base) as usize]
    };
    let log0 = fs::read(log_path(&p, 0)).unwrap();
    let at = pos(0, 10);
    let key_len = be_u32(&log0, at + 20) as usize;
    let value_at = at + 24 + key_len + 4;
    assert!(
        be_u32(&log0, at + 24 + key_len) > 0,
        "offset 10 has a value"
    );
    flip(&log_path(&p, 0), value_at);
    flip(&log_path(&p, 375), pos(375, 400) + 12 + 7); // the timestamp's low byte
    let log = fs::read(log_path(&p, 735)).unwrap();
    let at = pos(735, 800);
    assert!(be_u32(&log, at + 20) > 0, "offset 800 has a key");
    flip(&log_path(&p, 735), at + 24);
    t
}

#[test]
fn flipped_bits_are_divergences_with_offset_and_field_and_two_copies_cannot_decide() {
    let primary = flipped_primary();
    let (_, v) = check_json(primary.path(), &[]);
    // One copy alone sees no damage (the flipped timestamp only disagrees with the
    // original .timeindex, which is evidence, not a check of the record).
    assert_eq!(
        v["summary"]["truncated"], 0,
        "one copy alone sees no damage"
    );
    let replica = resegmented_replica(&[100, 777]);
    let (code, v2) = check_replicas(primary.path(), &[replica.path()], &[]);
    assert_eq!(code, Some(1), "a divergence exits 1");
    // Only the .timeindex rebuilt for the flipped timestamp changes the view: nothing healed.
    assert_eq!(v2["summary"]["healed_records"], 0);
    assert_eq!(v2["summary"]["records"], v["summary"]["records"]);
    let d = log_of(&v2, PART)["divergences"].as_array().unwrap().clone();
    let got: Vec<(u64, Vec<String>)> = d
        .iter()
        .map(|x| {
            (
                x["offset"].as_u64().unwrap(),
                x["fields"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (10, vec!["value".to_string()]),
            (400, vec!["timestamp".to_string()]),
            (800, vec!["key".to_string()]),
        ]
    );
    for x in &d {
        assert!(x["odd_one_out"].is_null());
        assert!(x["verdict"].as_str().unwrap().contains("cannot be decided"));
        let copies = x["copies"].as_array().unwrap();
        assert_eq!(copies.len(), 2);
        assert_eq!(copies[0]["copy"], "primary");
        assert_eq!(copies[1]["copy"], "replica 1");
        // Each copy's position is where its record starts.
        let o = x["offset"].as_u64().unwrap();
        for (c, root) in copies.iter().zip([primary.path(), replica.path()]) {
            let file = fs::read(root.join(c["path"].as_str().unwrap())).unwrap();
            let at = c["position"].as_u64().unwrap() as usize;
            assert_eq!(be_u64(&file, at + 4), o, "{c}");
        }
    }
    let text = stdout(&check_cli(
        primary.path(),
        &["--replica", replica.path().to_str().unwrap()],
    ));
    assert!(
        text.contains("DIVERGENCE  orders/partition-0 offset 400: timestamp differ"),
        "{text}"
    );
}

#[test]
fn with_three_copies_the_primary_is_named_the_odd_one_out() {
    let primary = flipped_primary();
    let r1 = resegmented_replica(&[100, 777]);
    let r2 = resegmented_replica(&[1000]);
    let (code, v) = check_replicas(primary.path(), &[r1.path(), r2.path()], &[]);
    assert_eq!(code, Some(1));
    let d = log_of(&v, PART)["divergences"].as_array().unwrap().clone();
    assert_eq!(d.len(), 3);
    for x in &d {
        assert_eq!(x["odd_one_out"], "primary", "{x}");
        let copies = x["copies"].as_array().unwrap();
        assert_eq!(copies.len(), 3);
        assert_eq!(copies[0]["differs_in"], x["fields"]);
        assert_eq!(copies[1]["differs_in"], serde_json::json!([]));
        assert_eq!(copies[2]["differs_in"], serde_json::json!([]));
    }
    assert_eq!(v["summary"]["divergences"], 3);
    assert_eq!(v["summary"]["replicas"], 2);
}

#[test]
fn prefer_majority_serves_the_majoritys_records_through_the_mount_and_repair() {
    let recs = raw_records(&fixtures().join("data").join(PART));
    let primary = flipped_primary();
    let r1 = resegmented_replica(&[100, 777]);
    let r2 = resegmented_replica(&[1000]);
    let (p1, p2) = (r1.path().to_str().unwrap(), r2.path().to_str().unwrap());
    let args = ["--replica", p1, "--replica", p2, "--prefer", "majority"];
    let (code, v) = check_replicas(primary.path(), &[r1.path(), r2.path()], &args[4..]);
    assert_eq!(code, Some(1));
    assert_eq!(v["summary"]["preferred_records"], 3);
    assert_eq!(v["summary"]["records"], 3035, "no record counted twice");
    let roles: Vec<(u64, String)> = log_of(&v, PART)["healed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["role"] == "preferred")
        .map(|h| {
            (
                h["from_offset"].as_u64().unwrap(),
                h["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        roles.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![10, 400, 800]
    );
    // Through the mount: every offset is the undamaged log's, byte for byte.
    let mut m = Mounted::new(primary.path(), &args);
    assert_view_serves_every_offset(&m.path().join(PART), &recs);
    assert!(m.unmount().success());
    // And written out.
    let out = tempfile::tempdir().unwrap();
    let new = out.path().join("new");
    assert_ok(
        &repair_output(primary.path(), &new, &args),
        "repair --prefer majority",
    );
    assert_view_serves_every_offset(&new.join(PART), &recs);
    // With the default preference the primary's flipped records stay.
    let mut m = Mounted::new(primary.path(), &args[..4]);
    let view = m.path().join(PART);
    let got = takhin_read(&view, 0, 10).unwrap();
    let want = recoverfs::engine::format::takhin::Record::decode(&recs[10].bytes).unwrap();
    assert_ne!(got, want, "--prefer primary serves the primary's record");
    assert!(m.unmount().success());
}

#[test]
fn prefer_with_two_copies_majority_keeps_the_primary_and_replica_takes_the_replica() {
    let recs = raw_records(&fixtures().join("data").join(PART));
    let primary = flipped_primary();
    let r1 = resegmented_replica(&[100, 777]);
    let p1 = r1.path().to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (a, b) = (out.path().join("a"), out.path().join("b"));
    assert_ok(
        &repair_output(
            primary.path(),
            &a,
            &["--replica", p1, "--prefer", "majority"],
        ),
        "majority",
    );
    let want = recoverfs::engine::format::takhin::Record::decode(&recs[10].bytes).unwrap();
    assert_ne!(
        takhin_read(&a.join(PART), 0, 10).unwrap(),
        want,
        "no majority of two"
    );
    assert_ok(
        &repair_output(
            primary.path(),
            &b,
            &["--replica", p1, "--prefer", "replica"],
        ),
        "replica",
    );
    assert_view_serves_every_offset(&b.join(PART), &recs);
    // --prefer needs --replica, and a policy that serves other copies' records.
    let o = check_cli(primary.path(), &["--prefer", "replica"]);
    assert_eq!(o.status.code(), Some(2));
    let o = check_cli(
        primary.path(),
        &[
            "--replica",
            p1,
            "--prefer",
            "replica",
            "--policy",
            "point-in-time",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("needs --policy per-segment or salvage"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_damaged_replica_heals_only_from_its_valid_runs() {
    let recs = raw_records(&fixtures().join("data").join(PART));
    let primary = damaged_primary();
    let replica = resegmented_replica(&[3035]);
    // Zero 2000 bytes in the replica inside the range the primary lost with segment 1100.
    let rp = replica.path().join(PART);
    let at = record_positions(&fs::read(log_path(&rp, 0)).unwrap())[1200];
    overwrite(&log_path(&rp, 0), at as u64 + 3, &[0u8; 2000]);
    let (code, v) = check_replicas(
        primary.path(),
        &[replica.path()],
        &["--policy", "per-segment"],
    );
    assert_eq!(code, Some(1));
    let log = log_of(&v, PART);
    let healed = log["healed"].as_array().unwrap();
    assert_healed_bytes_are_the_originals(healed, replica.path(), &recs);
    // The destroyed records are nobody's: still a gap; around them, healed.
    let gaps = log["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let (a, b) = (
        gaps[0]["from_offset"].as_u64().unwrap(),
        gaps[0]["to_offset"].as_u64().unwrap(),
    );
    assert!(a == 1200 && b > a && b < 1494, "{a}..={b}");
    assert!(healed
        .iter()
        .any(|h| h["from_offset"] == 1100 && h["to_offset"] == 1199));
    assert!(healed
        .iter()
        .any(|h| h["from_offset"].as_u64() == Some(b + 1)));
}

#[test]
fn replicas_with_extra_or_missing_logs() {
    let primary = damaged_primary();
    // Replica 1: the partition and a log the primary does not have; replica 2: neither.
    let r1 = resegmented_replica(&[500]);
    copy_tree(
        &fixtures().join("data/events/partition-0"),
        &r1.path().join("extra/partition-9"),
    );
    let r2 = tempfile::tempdir().unwrap();
    copy_tree(
        &fixtures().join("data/events/partition-0"),
        &r2.path().join("events/partition-0"),
    );
    let (code, v) = check_replicas(primary.path(), &[r2.path(), r1.path()], &[]);
    assert_eq!(code, Some(1));
    let reps = v["replicas"].as_array().unwrap();
    assert_eq!(reps[0]["logs_matched"], 0);
    assert_eq!(reps[1]["logs_matched"], 1);
    assert_eq!(
        reps[1]["logs_not_in_primary"],
        serde_json::json!(["extra/partition-9"])
    );
    let healed = log_of(&v, PART)["healed"].as_array().unwrap();
    assert!(
        healed.iter().all(|h| h["replica_index"] == 2),
        "only the second holds the log"
    );
    assert_eq!(v["summary"]["records"], 3035);
    let text = stdout(&check_cli(
        primary.path(),
        &["--replica", r1.path().to_str().unwrap()],
    ));
    assert!(text.contains("NOT IN PRIMARY extra/partition-9"), "{text}");
    let text = stdout(&check_cli(
        primary.path(),
        &["--replica", r2.path().to_str().unwrap()],
    ));
    assert!(text.contains("NO MATCH    replica 1"), "{text}");
}

fn refused(primary: &Path, replica: &Path, why: &str) {
    let o = check_cli(primary, &["--replica", replica.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains(why), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
}

#[test]
fn the_primary_itself_or_one_inside_the_other_is_refused() {
    let t = fixture_copy("data");
    let root = t.path();
    refused(root, root, "the primary itself");
    // The same directory by another path (a symlink to it).
    let alias = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root, alias.path().join("same")).unwrap();
    refused(root, &alias.path().join("same"), "the primary itself");
    refused(root, &root.join("orders"), "inside the primary");
    refused(&root.join("orders"), root, "is inside it");
    refused(
        root,
        Path::new("/nonexistent/replica"),
        "--replica /nonexistent/replica",
    );
    // A single segment cannot be healed from a replica.
    let other = fixture_copy("data");
    let seg: PathBuf = root.join(PART).join(segment_file_name(0, FileKind::Log));
    refused(&seg, &other.path().join(PART), "not one segment file");
    // The same directory through a bind mount (root only): refused by device and inode.
    struct Unbind(PathBuf);
    impl Drop for Unbind {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let bind = tempfile::tempdir().unwrap();
    let bound = std::process::Command::new("mount")
        .arg("--bind")
        .arg(root)
        .arg(bind.path())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if bound {
        let _unbind = Unbind(bind.path().to_path_buf());
        refused(root, bind.path(), "the primary itself");
        refused(root, &bind.path().join("orders"), "inside the primary");
    } else {
        cannot_test("no bind mount permitted: the bind-mount refusal");
    }
    // mount refuses the same before any daemon exists: exit 2, nothing mounted.
    let mp = tempfile::tempdir().unwrap();
    let o = run(argv(&[
        &"mount",
        &root,
        &mp.path(),
        &"--foreground",
        &"--replica",
        &root.join("orders"),
    ]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("inside the primary"), "{}", stderr(&o));
    assert!(!recoverfs::cli::sys::is_mount_point(mp.path()));
}

/// Every offset of the undamaged log, read through the view at `view_dir`: by the
/// independent Takhin lookup (binary search of the view's `.index`, decode at the
/// position), and byte for byte, each view segment's `.log` being exactly the
/// original records it holds, every offset in one segment only.
fn assert_view_serves_every_offset(view_dir: &Path, recs: &[Raw]) {
    let vbases = bases(view_dir);
    let mut seen = vec![false; recs.len()];
    for &base in &vbases {
        let log = fs::read(log_path(view_dir, base)).unwrap();
        for (o, p) in (base..).zip(record_positions(&log)) {
            let n = 4 + be_u32(&log, p) as usize;
            let r = &recs[o as usize];
            assert_eq!(r.offset, o);
            assert!(
                log[p..p + n] == r.bytes[..],
                "offset {o}: bytes differ in view segment {base}"
            );
            assert!(!seen[o as usize], "offset {o} served twice");
            seen[o as usize] = true;
        }
    }
    assert!(seen.iter().all(|s| *s), "every offset served");
    for r in recs {
        let base = *vbases.iter().filter(|&&b| b <= r.offset).max().unwrap();
        let got = takhin_read(view_dir, base, r.offset)
            .unwrap_or_else(|| panic!("offset {} not found by the lookup in {base}", r.offset));
        let want = recoverfs::engine::format::takhin::Record::decode(&r.bytes).unwrap();
        assert_eq!(got, want, "offset {}", r.offset);
    }
}

#[test]
fn the_mounted_healed_view_serves_every_offset_of_the_undamaged_log() {
    let recs = raw_records(&fixtures().join("data").join(PART));
    let primary = damaged_primary();
    let replica = resegmented_replica(&[200, 333, 512]);
    // Listed before the atimes are aged: the test's own reads must not move them.
    let rbases = bases(&replica.path().join(PART));
    age_all_atimes(primary.path());
    age_all_atimes(replica.path());
    let (before_p, before_r) = (snapshot_all(primary.path()), snapshot_all(replica.path()));
    for policy in ["per-segment", "point-in-time", "salvage"] {
        let mut m = Mounted::new(
            primary.path(),
            &[
                "--replica",
                replica.path().to_str().unwrap(),
                "--policy",
                policy,
            ],
        );
        let dir = m.path().join(PART);
        assert_view_serves_every_offset(&dir, &recs);
        // The healed range at 1100 (the deleted segment) names its replica file.
        let x = |name: &str| {
            let c = std::ffi::CString::new(log_path(&dir, 1100).as_os_str().as_encoded_bytes())
                .unwrap();
            let n = std::ffi::CString::new(name).unwrap();
            let mut buf = vec![0u8; 4096];
            // SAFETY: both strings are NUL-terminated and `buf` is as long as we say.
            let len = unsafe {
                libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            };
            assert!(len >= 0, "{name}: {}", std::io::Error::last_os_error());
            String::from_utf8(buf[..len as usize].to_vec()).unwrap()
        };
        assert_eq!(
            x("user.recoverfs.replica"),
            replica.path().display().to_string()
        );
        assert_eq!(
            x("user.recoverfs.healed_from"),
            format!("{PART}/00000000000000001045.log")
        );
        let from = read_noatime(
            &replica
                .path()
                .join(PART)
                .join(segment_file_name(1045, FileKind::Log)),
        );
        let pos: usize = x("user.recoverfs.position").parse().unwrap();
        assert_eq!(
            be_u64(&from, pos + 4),
            1100,
            "the position is where offset 1100 starts"
        );
        // The replica's originals, untouched, beside the primary's.
        let raw = m.path().join(".recoverfs/replicas/1").join(PART);
        for &base in &rbases {
            assert!(
                fs::read(log_path(&raw, base)).unwrap()
                    == read_noatime(&log_path(&replica.path().join(PART), base)),
                "replicas/1: {base}"
            );
        }
        assert!(!m.path().join(".recoverfs/replicas/2").exists());
        let report: Value =
            serde_json::from_slice(&fs::read(m.path().join(".recoverfs/report.json")).unwrap())
                .unwrap();
        assert_eq!(report["summary"]["records"], 3035, "{policy}");
        assert_eq!(report["summary"]["replicas"], 1);
        assert!(m.unmount().success());
    }
    assert_unchanged(&before_p, &snapshot_all(primary.path()));
    assert_unchanged(&before_r, &snapshot_all(replica.path()));
}

#[test]
fn the_mount_validates_only_the_replica_segments_that_may_hold_what_the_primary_lacks() {
    use recoverfs::engine::policy::Policy;
    use recoverfs::engine::replica::Replicas;
    // The primary lost its last segment (2991..=3034); the replica has 31 segments.
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join(PART);
    copy_tree(&fixtures().join("data").join(PART), &p);
    for ext in ["log", "index", "timeindex"] {
        fs::remove_file(seg_path(&p, 2991, ext)).unwrap();
    }
    let replica = resegmented_replica(&[100]);
    let reps = std::sync::Arc::new(
        Replicas::open(
            t.path(),
            &[replica.path().to_path_buf()],
            Default::default(),
        )
        .unwrap(),
    );
    let v = view(t.path(), Policy::PerSegment).with_replicas(reps.clone());
    let mut ino = recoverfs::view::ROOT_INO;
    for c in PART.split('/') {
        ino = v.lookup(ino, std::ffi::OsStr::new(c)).unwrap().ino;
    }
    let fh = v.opendir(ino).unwrap();
    let names: Vec<String> = v
        .dir_entries(fh)
        .unwrap()
        .iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"00000000000000002991.log".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"00000000000000003000.log".to_string()),
        "{names:?}"
    );
    // 2900..=2999 and 3000..=3034: the only replica segments that can hold 2991 on.
    assert_eq!(reps.validations(), 2);
    let healed = v
        .lookup(ino, std::ffi::OsStr::new("00000000000000002991.log"))
        .unwrap();
    let bytes = read_all(&v, healed.ino);
    assert_eq!(bytes.len() as u64, healed.size);
    assert_eq!(be_u64(&bytes, 4), 2991);
    assert_eq!(reps.validations(), 2, "reading validates nothing more");
    // The replica's file changes under an open healed file: its reads are refused
    // (EIO), never bytes that were not validated; a new lookup heals it again.
    let o = v.open(healed.ino, false).unwrap();
    assert!(!v.read(o.fh, 0, 64).unwrap().is_empty());
    let rlog = log_path(&replica.path().join(PART), 2900);
    let mut b = fs::read(&rlog).unwrap();
    let last = *record_positions(&b).last().unwrap();
    b[last + 12] ^= 1; // a timestamp bit of the last record: still a valid record
    fs::write(&rlog, &b).unwrap();
    assert!(
        v.read(o.fh, 0, 64).is_err(),
        "a changed replica is not served"
    );
    v.release(o.fh);
    let again = v
        .lookup(ino, std::ffi::OsStr::new("00000000000000002991.log"))
        .unwrap();
    let bytes = read_all(&v, again.ino);
    assert_eq!(be_u64(&bytes, 4), 2991);
    assert_eq!(
        reps.validations(),
        3,
        "only the changed segment is validated again"
    );
}

#[test]
fn repair_output_writes_the_healed_view() {
    let recs = raw_records(&fixtures().join("data").join(PART));
    let primary = damaged_primary();
    let replica = resegmented_replica(&[200, 333, 512]);
    age_all_atimes(primary.path());
    age_all_atimes(replica.path());
    let (before_p, before_r) = (snapshot_all(primary.path()), snapshot_all(replica.path()));
    let out = tempfile::tempdir().unwrap();
    let new = out.path().join("new");
    let o = repair_output(
        primary.path(),
        &new,
        &["--replica", replica.path().to_str().unwrap()],
    );
    assert_ok(&o, "repair --output --replica");
    assert_view_serves_every_offset(&new.join(PART), &recs);
    // What was written is a clean log: checked again, nothing differs.
    let (code, v) = check_json(&new, &[]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["summary"]["records"], 3035);
    // A mount with the same replica shows the same tree.
    let m = Mounted::new(
        primary.path(),
        &[
            "--replica",
            replica.path().to_str().unwrap(),
            "-o",
            "nometa",
        ],
    );
    // (Modes aside: the mount clears write bits.)
    assert!(
        tree_contents(&new, ".recoverfs") == tree_contents(m.path(), ".recoverfs"),
        "repair --output and the mount hold the same files and bytes"
    );
    drop(m);
    // An output inside the replica is refused.
    let o = repair_output(
        primary.path(),
        &replica.path().join("out"),
        &["--replica", replica.path().to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_unchanged(&before_p, &snapshot_all(primary.path()));
    assert_unchanged(&before_r, &snapshot_all(replica.path()));
}

#[test]
fn copies_with_the_same_segments_are_compared_too_and_a_replica_can_be_the_odd_one_out() {
    // Replica 1: the fixture as it was (same segment files as the primary);
    // replica 2: a byte-for-byte copy of the primary, flipped bits and all.
    let primary = flipped_primary();
    let r1 = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join("data").join(PART), &r1.path().join(PART));
    let r2 = tempfile::tempdir().unwrap();
    copy_tree(primary.path(), r2.path());
    let (code, v) = check_replicas(primary.path(), &[r1.path(), r2.path()], &[]);
    assert_eq!(code, Some(1));
    let d = log_of(&v, PART)["divergences"].as_array().unwrap().clone();
    assert_eq!(
        d.iter()
            .map(|x| x["offset"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![10, 400, 800]
    );
    for x in &d {
        assert_eq!(x["odd_one_out"], "replica 1", "{x}");
    }
    // Identical copies: nothing differs, nothing healed, exit 0.
    let (code, v) = check_replicas(r2.path(), &[primary.path()], &[]);
    assert_eq!(v["summary"]["divergences"], 0);
    assert_eq!(v["summary"]["healed_records"], 0);
    assert_eq!(
        code,
        Some(1),
        "only the .timeindex that disagrees with the flipped timestamp"
    );
}

/// `check_with_replicas` of `primary` against the one `replica`, default options.
fn check_with_one(
    primary: &Path,
    replica: &Path,
) -> (
    recoverfs::engine::layout::Layout,
    recoverfs::engine::report::Report,
    std::sync::Arc<recoverfs::engine::replica::Replicas>,
) {
    recoverfs::engine::replica::check_with_replicas(
        primary,
        &[replica.to_path_buf()],
        recoverfs::engine::replica::Prefer::Primary,
        &recoverfs::engine::analysis::AnalyzeOptions::default(),
        &|_| {},
    )
    .unwrap()
}

/// A primary log of values longer than the scan's 128 KiB window (offsets 0..12)
/// and short ones (12..17), in three segments, with its records.
fn big_value_primary() -> (tempfile::TempDir, Vec<Raw>) {
    let primary = tempfile::tempdir().unwrap();
    let p = primary.path().join(PART);
    write_segment(&p, 0, 6, 300_000);
    write_segment(&p, 6, 6, 300_000);
    write_segment(&p, 12, 5, 1000);
    let recs = raw_records(&p);
    (primary, recs)
}

#[test]
fn a_replica_segment_identical_to_the_primarys_is_compared_not_scanned_again() {
    let primary = fixture_copy("data");
    let replica = fixture_copy("data");
    let run = || check_with_one(primary.path(), replica.path());
    let (_, report, reps) = run();
    assert_eq!(
        reps.validations(),
        0,
        "every replica segment is the primary's bytes"
    );
    assert_eq!(report.summary.divergences, Some(0));
    // One pad byte differs: that segment is scanned on its own, and still no divergence.
    let p = replica.path().join(PART);
    let log = fs::read(log_path(&p, 375)).unwrap();
    let at = record_positions(&log)[3];
    let end = at + 4 + be_u32(&log, at) as usize;
    flip(&log_path(&p, 375), end - 1);
    let (_, report, reps) = run();
    assert_eq!(reps.validations(), 1);
    assert_eq!(report.summary.divergences, Some(0));
    // A value byte differs: found, at its offset.
    flip(&log_path(&p, 375), end - 5);
    let (_, report, _) = run();
    assert_eq!(report.summary.divergences, Some(1));
    let d = report
        .logs
        .iter()
        .flat_map(|l| l.divergences.iter().flatten())
        .next()
        .unwrap();
    assert_eq!((d.offset, d.fields.clone()), (378, vec!["value"]));
    // Other segment boundaries: each replica segment whose bytes are the primary's at
    // the same offsets is compared, not scanned; one with a flipped value byte is
    // scanned and its record found divergent.
    let prim = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join("data").join(PART), &prim.path().join(PART));
    let reseg = resegmented_replica(&[400]);
    let go = || check_with_one(prim.path(), reseg.path());
    let (_, report, reps) = go();
    assert_eq!(reps.validations(), 0);
    assert_eq!(report.summary.divergences, Some(0));
    assert_eq!(report.summary.healed_records, Some(0));
    let rp = reseg.path().join(PART);
    let log = fs::read(log_path(&rp, 800)).unwrap();
    let at = record_positions(&log)[5];
    let end = at + 4 + be_u32(&log, at) as usize;
    flip(&log_path(&rp, 800), end - 5);
    let (_, report, reps) = go();
    assert_eq!(reps.validations(), 1, "only the changed segment is scanned");
    let d = divergences_of(&report);
    assert_eq!(d, vec![(805, vec!["value"])]);
}

#[test]
fn the_primarys_scan_compares_the_replicas_so_the_primary_is_read_once() {
    // Values larger than the scan's window: the scan steps over most of each value,
    // and the comparison must still see every byte.
    let (primary, recs) = big_value_primary();
    let same = tempfile::tempdir().unwrap();
    copy_tree(primary.path(), same.path());
    let reseg = tempfile::tempdir().unwrap();
    resegment(&reseg.path().join(PART), &recs, &[4]);
    let run = |replica: &Path| check_with_one(primary.path(), replica);
    for (replica, logs) in [(same.path(), 3), (reseg.path(), 5)] {
        let (_, report, reps) = run(replica);
        assert_eq!(report.summary.divergences, Some(0));
        assert_eq!(report.summary.healed_records, Some(0));
        assert_eq!(reps.validations(), 0, "no replica segment scanned");
        assert_eq!(
            reps.settled_by_scan(),
            logs,
            "every replica .log settled while the primary was scanned"
        );
    }
    // One byte flipped deep inside a value (far past the window the scan read that
    // record's header in), in the re-segmented copy's second segment (offsets 4..8).
    let rp = reseg.path().join(PART);
    let log = fs::read(log_path(&rp, 4)).unwrap();
    flip(&log_path(&rp, 4), record_positions(&log)[1] + 150_000);
    let (_, report, reps) = run(reseg.path());
    let d = divergences_of(&report);
    assert_eq!(d, vec![(5, vec!["value"])]);
    // Only the replica segment before the flip was settled by the scan; the one
    // holding it was scanned on its own.
    assert_eq!(reps.settled_by_scan(), 1);
    assert_eq!(reps.validations(), 1);
}

#[test]
fn a_flipped_value_byte_is_found_wherever_it_lies_against_the_scans_windows() {
    // Values longer than the scan's 128 KiB window and short ones: a flip in bytes the
    // scan read, in bytes it stepped over, at a window's edge, and at a file's end
    // must each be one divergence, whether the replica has the primary's segment
    // files or other ones.
    let (primary, recs) = big_value_primary();
    let value_at = |r: &Raw| 28 + be_u32(&r.bytes, 20) as usize;
    let value_len = |r: &Raw| be_u32(&r.bytes, value_at(r) - 4) as usize;
    for sizes in [None, Some(&[4usize][..]), Some(&[5, 2][..])] {
        let replica = tempfile::tempdir().unwrap();
        let rp = replica.path().join(PART);
        match sizes {
            None => copy_tree(primary.path(), replica.path()),
            Some(s) => resegment(&rp, &recs, s),
        }
        for &(o, k) in &[
            (0u64, 0usize),
            (1, 131_071),
            (2, 131_072),
            (3, 150_000),
            (5, usize::MAX), // a value's last byte, at the end of its segment file
            (11, usize::MAX),
            (12, 0),
            (16, usize::MAX), // the log's very last value byte
        ] {
            let r = &recs[o as usize];
            let k = k.min(value_len(r) - 1);
            // The replica file holding offset o, and the record's position in it.
            let base = bases(&rp).into_iter().filter(|&b| b <= o).max().unwrap();
            let log = fs::read(log_path(&rp, base)).unwrap();
            let at = record_positions(&log)[(o - base) as usize] + value_at(r) + k;
            flip(&log_path(&rp, base), at);
            let (_, report, _) = check_with_one(primary.path(), replica.path());
            assert_eq!(
                divergences_of(&report),
                vec![(o, vec!["value"])],
                "byte {k} of offset {o}'s value, replica segments {sizes:?}"
            );
            flip(&log_path(&rp, base), at); // put it back
        }
    }
}

/// Every divergence of a report: its offset and the fields that differ.
fn divergences_of(report: &recoverfs::engine::report::Report) -> Vec<(u64, Vec<&str>)> {
    report
        .logs
        .iter()
        .flat_map(|l| l.divergences.iter().flatten())
        .map(|d| (d.offset, d.fields.clone()))
        .collect()
}

/// The policies that heal (strict repairs nothing).
const HEALING: [&str; 3] = ["per-segment", "point-in-time", "salvage"];

/// `repair --output --replica` of a copy of `primary`: the tree in place healing must equal.
fn healed_output(primary: &Path, replica: &Path, policy: &str) -> BTreeMap<PathBuf, Item> {
    let src = clone_tree(primary);
    let out = tempfile::tempdir().unwrap();
    let new = out.path().join("new");
    let o = repair_output(
        src.path(),
        &new,
        &["--replica", replica.to_str().unwrap(), "--policy", policy],
    );
    assert_ok(&o, "repair --output --replica");
    files_only(items(&new))
}

/// The manifest of a finished in-place repair: every original it lists is in the backup,
/// byte for byte, with its CRC-32; every healed file is read from `replica` and is exactly
/// the bytes (or the rebuilt index of the bytes) its `healed_from` names. Returns the
/// number of heal entries, and of those that replaced a primary file.
fn assert_healed_manifest(
    backup: &Path,
    data: &Path,
    replica: &Path,
    originals: &BTreeMap<PathBuf, Item>,
) -> (usize, usize) {
    assert_healed_manifest_of(backup, data, &[replica], originals)
}

/// [`assert_healed_manifest`] with several replicas, each healed file read from the one
/// its `healed_from` names.
fn assert_healed_manifest_of(
    backup: &Path,
    data: &Path,
    replicas: &[&Path],
    originals: &BTreeMap<PathBuf, Item>,
) -> (usize, usize) {
    let m: Value =
        serde_json::from_slice(&fs::read(backup.join("recoverfs-backup.json")).unwrap()).unwrap();
    assert_eq!(m["state"], "applied");
    let abs: Vec<PathBuf> = replicas
        .iter()
        .map(|r| fs::canonicalize(r).unwrap())
        .collect();
    let names: Vec<&str> = abs.iter().map(|a| a.to_str().unwrap()).collect();
    assert_eq!(m["replicas"], serde_json::json!(names), "{m}");
    let (mut heals, mut replaced) = (0, 0);
    for e in m["entries"].as_array().unwrap() {
        let rel = PathBuf::from(e["path"].as_str().unwrap());
        if e["action"] == "heal" {
            heals += 1;
            let h = &e["healed_from"];
            let k = names
                .iter()
                .position(|n| h["replica"] == *n)
                .unwrap_or_else(|| panic!("healed from a replica not listed: {e}"));
            let replica = replicas[k];
            let now = fs::read(data.join(&rel)).unwrap();
            assert_eq!(e["new"]["bytes"].as_u64(), Some(now.len() as u64), "{e}");
            assert_eq!(
                e["new"]["crc32"].as_u64(),
                Some(crc32fast::hash(&now) as u64)
            );
            if rel.extension().unwrap() == "log" {
                let file = read_noatime(&replica.join(h["log"].as_str().unwrap()));
                let pos = h["position"].as_u64().unwrap() as usize;
                let n = h["bytes"].as_u64().unwrap() as usize;
                assert!(
                    file[pos..pos + n] == now[..],
                    "{}: not the replica's bytes",
                    rel.display()
                );
            }
        } else {
            assert!(e["healed_from"].is_null(), "{e}");
        }
        if e["original"].is_null() {
            assert!(!backup.join(&rel).exists(), "{}", rel.display());
            continue;
        }
        if e["action"] == "heal" {
            replaced += 1;
        }
        let Item::File { bytes, .. } = &originals[&rel] else {
            panic!("{}: not a file", rel.display())
        };
        assert!(
            fs::read(backup.join(&rel)).unwrap() == *bytes,
            "{}: the backup differs from the original",
            rel.display()
        );
        assert_eq!(
            e["original"]["crc32"].as_u64(),
            Some(crc32fast::hash(bytes) as u64)
        );
    }
    (heals, replaced)
}

#[test]
fn in_place_heals_the_primary_like_output_and_leaves_the_replica_unchanged() {
    let recs = raw_records(&fixtures().join("data").join(PART));
    let master = damaged_primary();
    let replica = resegmented_replica(&[200, 333, 512]);
    let r = replica.path().to_str().unwrap();
    for policy in HEALING {
        let want = healed_output(master.path(), replica.path(), policy);
        let src = clone_tree(master.path());
        let originals = items(src.path());
        age_all_atimes(replica.path());
        let before_r = snapshot_all(replica.path());
        let bk = tempfile::tempdir().unwrap();
        let backup = bk.path().join("b");
        // A dry run lists the healed files and touches nothing.
        let o = run(in_place_args(
            src.path(),
            &backup,
            &["--replica", r, "--policy", policy, "--dry-run"],
        ));
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stdout(&o).contains("HEAL"), "{}", stdout(&o));
        assert!(!backup.exists());
        assert_trees_eq(&items(src.path()), &originals, "after the dry run");

        let o = repair_in_place(src.path(), &backup, &["--replica", r, "--policy", policy]);
        assert_ok(&o, "repair --in-place --replica");
        let what = format!("{policy}: in place with a replica against --output");
        assert_trees_eq(&files_only(items(src.path())), &want, &what);
        assert_view_serves_every_offset(&src.path().join(PART), &recs);
        let (heals, replaced) =
            assert_healed_manifest(&backup, src.path(), replica.path(), &originals);
        // Four ranges lacking (zeroed block, garbage headers, the empty segment 1494,
        // the deleted segment, the lost tail), each split where the replica's segments
        // end: at least five healed segments of three files each; segment 1494's
        // three files are replaced (backed up first).
        assert!(
            heals >= 15 && heals % 3 == 0,
            "{policy}: {heals} heal entries"
        );
        assert_eq!(
            replaced, 3,
            "{policy}: the empty segment's files are replaced"
        );
        let (code, v) = check_json(src.path(), &["--policy", "per-segment"]);
        assert_eq!(code, Some(0), "{policy}: {v}");
        assert_eq!(v["summary"]["records"], 3035);
        assert_unchanged(&before_r, &snapshot_all(replica.path()));
        // Run again with the same replica: nothing left to heal, nothing changed.
        let after = items(src.path());
        let o = repair_in_place(src.path(), &backup, &["--replica", r, "--policy", policy]);
        assert_ok(&o, "the rerun");
        assert!(stdout(&o).contains("Nothing to repair"), "{}", stdout(&o));
        assert_trees_eq(&items(src.path()), &after, "after the rerun");
        assert_unchanged(&before_r, &snapshot_all(replica.path()));
    }
}

#[test]
fn in_place_healing_refusals_change_nothing() {
    let primary = flipped_primary();
    let replica = fixture_copy("data");
    let r = replica.path().to_str().unwrap();
    age_all_atimes(primary.path());
    age_all_atimes(replica.path());
    let (before_p, before_r) = (snapshot_all(primary.path()), snapshot_all(replica.path()));
    // A backup inside the replica, or holding it, is refused before anything is read.
    for b in [replica.path().join("bk"), replica.path().to_path_buf()] {
        let o = repair_in_place(primary.path(), &b, &["--replica", r]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("a replica is never written to"),
            "{}",
            stderr(&o)
        );
    }
    assert_unchanged(&before_p, &snapshot_all(primary.path()));
    assert_unchanged(&before_r, &snapshot_all(replica.path()));
}

#[cfg(feature = "fault-injection")]
#[test]
fn in_place_healing_killed_at_every_step_then_rerun_converges() {
    let master = damaged_primary();
    let replica = resegmented_replica(&[200, 333, 512]);
    let r = replica.path().to_str().unwrap();
    let policy = "salvage";
    let want = healed_output(master.path(), replica.path(), policy);
    age_all_atimes(replica.path());
    let before_r = snapshot_all(replica.path());
    let mut step = 1;
    loop {
        let src = clone_tree(master.path());
        let originals = items(src.path());
        let bk = tempfile::tempdir().unwrap();
        let backup = bk.path().join("b");
        let args = in_place_args(src.path(), &backup, &["--replica", r, "--policy", policy]);
        let o = run_failing_at(&args, step);
        if o.status.success() {
            let (heals, _) =
                assert_healed_manifest(&backup, src.path(), replica.path(), &originals);
            assert!(heals > 0);
            assert_eq!(step - 1, in_place_steps(&backup), "every step was tried");
            assert_trees_eq(&files_only(items(src.path())), &want, "uninterrupted");
            break;
        }
        if step == 5 {
            // The manifest names the replica: a rerun without it is refused, changing nothing.
            let now = items(src.path());
            let o = repair_in_place(src.path(), &backup, &["--policy", policy]);
            assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
            assert!(
                stderr(&o).contains("holds a different backup"),
                "{}",
                stderr(&o)
            );
            assert_trees_eq(&items(src.path()), &now, "refused rerun");
        }
        rerun_after_kill(&o, &args, step);
        let what = format!("healing, rerun after step {step}");
        assert_trees_eq(&files_only(items(src.path())), &want, &what);
        assert_healed_manifest(&backup, src.path(), replica.path(), &originals);
        for (p, _) in items(&backup) {
            assert!(
                !p.to_string_lossy().contains("recoverfs-tmp"),
                "{}",
                p.display()
            );
        }
        assert_unchanged(&before_r, &snapshot_all(replica.path()));
        step += 1;
    }
}

/// A replica changed between the backup and the apply phase: its bytes no longer have the
/// CRC-32 the manifest planned, so nothing of them is written, and the rerun after the
/// replica is restored finishes the job.
#[cfg(feature = "fault-injection")]
#[test]
fn in_place_healing_refuses_a_replica_changed_before_the_apply_then_converges() {
    let master = damaged_primary();
    let master_replica = resegmented_replica(&[200, 333, 512]);
    let want = healed_output(master.path(), master_replica.path(), "per-segment");
    let mut step = 1;
    loop {
        let src = clone_tree(master.path());
        let replica = clone_tree(master_replica.path());
        let r = replica.path().to_str().unwrap();
        let bk = tempfile::tempdir().unwrap();
        let backup = bk.path().join("b");
        let args = in_place_args(src.path(), &backup, &["--replica", r]);
        let o = run_failing_at(&args, step);
        assert_eq!(o.status.code(), Some(86), "step {step}: {}", stderr(&o));
        let m: Value = match fs::read(backup.join("recoverfs-backup.json")) {
            Ok(b) => serde_json::from_slice(&b).unwrap(),
            Err(_) => Value::Null,
        };
        if m["state"] != "backed-up" {
            step += 1;
            assert!(step < 1000, "never reached the apply phase");
            continue;
        }
        // The first healed `.log`: flip a byte of its range in the replica.
        let e = m["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "heal" && e["path"].as_str().unwrap().ends_with(".log"))
            .unwrap()
            .clone();
        let h = &e["healed_from"];
        let file = replica.path().join(h["log"].as_str().unwrap());
        let at = h["position"].as_u64().unwrap() + h["bytes"].as_u64().unwrap() - 1;
        let old = read_noatime(&file)[at as usize];
        overwrite(&file, at, &[!old]);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("the replica changed since it was checked"),
            "{}",
            stderr(&o)
        );
        let dst = src.path().join(e["path"].as_str().unwrap());
        assert!(!dst.exists(), "nothing of the changed range was written");
        for (p, _) in items(src.path()) {
            assert!(
                !p.to_string_lossy().contains("recoverfs-tmp"),
                "{}",
                p.display()
            );
        }
        // Restored, the replica heals the primary: the rerun finishes the job.
        overwrite(&file, at, &[old]);
        let o = run(&args);
        assert_ok(&o, "the rerun after the replica is restored");
        // Bytes and modes: the index written from the changed replica (the same bytes:
        // the flip is inside a value) took that replica file's mtime of the moment.
        let no_mtime = |m: BTreeMap<PathBuf, Item>| -> BTreeMap<PathBuf, Item> {
            m.into_iter()
                .map(|(p, i)| match i {
                    Item::File { bytes, mode, .. } => (
                        p,
                        Item::File {
                            bytes,
                            mode,
                            mtime: (0, 0),
                        },
                    ),
                    other => (p, other),
                })
                .collect()
        };
        assert_trees_eq(
            &no_mtime(files_only(items(src.path()))),
            &no_mtime(want),
            "converged",
        );
        break;
    }
}

/// Ranges healed from two replicas (the first lacks some of what the primary lacks):
/// in place equals `--output`, each healed file names the replica it came from, and
/// neither replica changes.
#[test]
fn in_place_heals_from_two_replicas_like_output() {
    let master = damaged_primary();
    let r1 = resegmented_replica(&[200, 333, 512]);
    // Replica 1 lost its segments from 1000 on; replica 2 is whole.
    for base in bases(&r1.path().join(PART)) {
        if base >= 1000 {
            for ext in ["log", "index", "timeindex"] {
                fs::remove_file(seg_path(&r1.path().join(PART), base, ext)).unwrap();
            }
        }
    }
    let r2 = resegmented_replica(&[450]);
    let args = [
        "--replica",
        r1.path().to_str().unwrap(),
        "--replica",
        r2.path().to_str().unwrap(),
    ];
    let src_out = clone_tree(master.path());
    let out = tempfile::tempdir().unwrap();
    let new = out.path().join("new");
    assert_ok(&repair_output(src_out.path(), &new, &args), "--output");
    let want = files_only(items(&new));
    age_all_atimes(r1.path());
    age_all_atimes(r2.path());
    let (b1, b2) = (snapshot_all(r1.path()), snapshot_all(r2.path()));
    let src = clone_tree(master.path());
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("b");
    assert_ok(&repair_in_place(src.path(), &backup, &args), "--in-place");
    assert_trees_eq(&files_only(items(src.path())), &want, "two replicas");
    let m: Value =
        serde_json::from_slice(&fs::read(backup.join("recoverfs-backup.json")).unwrap()).unwrap();
    let abs = |t: &tempfile::TempDir| fs::canonicalize(t.path()).unwrap();
    assert_eq!(
        m["replicas"],
        serde_json::json!([abs(&r1).to_str().unwrap(), abs(&r2).to_str().unwrap()])
    );
    let from: Vec<&str> = m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "heal")
        .map(|e| e["healed_from"]["replica"].as_str().unwrap())
        .collect();
    assert!(from.contains(&abs(&r1).to_str().unwrap()), "{from:?}");
    assert!(from.contains(&abs(&r2).to_str().unwrap()), "{from:?}");
    let (code, v) = check_json(src.path(), &["--policy", "per-segment"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["summary"]["records"], 3035);
    assert_unchanged(&b1, &snapshot_all(r1.path()));
    assert_unchanged(&b2, &snapshot_all(r2.path()));
}

/// Flips one bit in the middle of the value of the record at offset `o` of segment `base`.
fn flip_value(p: &Path, base: u64, o: u64) {
    let log = fs::read(log_path(p, base)).unwrap();
    let at = record_positions(&log)[(o - base) as usize];
    let key_len = be_u32(&log, at + 20) as usize;
    let value_len = be_u32(&log, at + 24 + key_len) as usize;
    assert!(value_len > 0, "offset {o} has a value");
    flip(&log_path(p, base), at + 28 + key_len + value_len / 2);
}

/// The records [`odd_primary`] flips, by segment: one inside segment 0, the first record
/// of segment 375 and the last record of segment 735.
const ODD: [(u64, u64); 3] = [(0, 10), (375, 375), (735, 1099)];

/// A clean copy of the fixture with one bit flipped in a value of each of [`ODD`]'s records.
fn odd_primary() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join(PART);
    copy_tree(&fixtures().join("data").join(PART), &p);
    let last = record_positions(&fs::read(log_path(&p, 735)).unwrap()).len() as u64;
    assert_eq!(735 + last - 1, 1099, "1099 is segment 735's last record");
    for (base, o) in ODD {
        flip_value(&p, base, o);
    }
    t
}

/// `--replica R…` for each of `replicas`, then `--prefer prefer`.
fn prefer_args(replicas: &[&Path], prefer: &str) -> Vec<String> {
    let mut args = Vec::new();
    for r in replicas {
        args.push("--replica".to_string());
        args.push(r.to_str().unwrap().to_string());
    }
    args.extend(["--prefer".to_string(), prefer.to_string()]);
    args
}

/// `repair --output` of a copy of `primary` with `args`: the tree in place must equal.
fn output_tree(primary: &Path, args: &[&str]) -> BTreeMap<PathBuf, Item> {
    let src = clone_tree(primary);
    let out = tempfile::tempdir().unwrap();
    let new = out.path().join("new");
    assert_ok(&repair_output(src.path(), &new, args), "repair --output");
    files_only(items(&new))
}

/// Every `.log` split off the primary's own records (a `salvage` entry) is exactly the
/// byte range its `salvaged_from` names of the backup copy of its original. Returns how many.
fn assert_split_parts_from_backup(backup: &Path, data: &Path) -> usize {
    let m: Value =
        serde_json::from_slice(&fs::read(backup.join("recoverfs-backup.json")).unwrap()).unwrap();
    let mut n = 0;
    for e in m["entries"].as_array().unwrap() {
        let path = e["path"].as_str().unwrap();
        if e["action"] != "salvage" || !path.ends_with(".log") {
            continue;
        }
        let from = &e["salvaged_from"];
        let copy = fs::read(backup.join(from["log"].as_str().unwrap())).unwrap();
        let pos = from["position"].as_u64().unwrap() as usize;
        let bytes = from["bytes"].as_u64().unwrap() as usize;
        assert!(
            copy[pos..pos + bytes] == fs::read(data.join(path)).unwrap()[..],
            "{path}: not its range of the backup copy"
        );
        n += 1;
    }
    n
}

/// No temporary file of a repair is left under `root`.
#[cfg(feature = "fault-injection")]
fn assert_no_tmp(root: &Path) {
    for (p, _) in items(root) {
        assert!(
            !p.to_string_lossy().contains("recoverfs-tmp"),
            "{}",
            p.display()
        );
    }
}

/// `repair --in-place --prefer` on a copy of [`odd_primary`] gives exactly the tree
/// `repair --output` gives with the same flags, heals every divergence, keeps every
/// original it replaces or truncates in the backup, and reads the replicas only.
fn assert_prefer_in_place_like_output(replicas: &[&Path], prefer: &str) {
    let recs = raw_records(&fixtures().join("data").join(PART));
    let master = odd_primary();
    let owned = prefer_args(replicas, prefer);
    let args: Vec<&str> = owned.iter().map(|s| s.as_str()).collect();
    let want = output_tree(master.path(), &args);
    let src = clone_tree(master.path());
    let originals = items(src.path());
    for r in replicas {
        age_all_atimes(r);
    }
    let before: Vec<_> = replicas.iter().map(|r| snapshot_all(r)).collect();
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("b");
    // A dry run lists the changes and touches nothing.
    let mut dry = args.clone();
    dry.push("--dry-run");
    let o = run(in_place_args(src.path(), &backup, &dry));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).contains("TRUNCATE"), "{}", stdout(&o));
    assert!(!backup.exists());
    assert_trees_eq(&items(src.path()), &originals, "after the dry run");

    let o = repair_in_place(src.path(), &backup, &args);
    assert_ok(&o, "repair --in-place --prefer");
    let what = format!("--prefer {prefer}: in place against --output");
    assert_trees_eq(&files_only(items(src.path())), &want, &what);
    assert_view_serves_every_offset(&src.path().join(PART), &recs);
    // Each preferred record's three files come from a replica; segment 375's, whose first
    // record it is, replace that segment's originals.
    let (heals, replaced) = assert_healed_manifest_of(&backup, src.path(), replicas, &originals);
    assert_eq!(heals, 3 * ODD.len(), "--prefer {prefer}");
    assert_eq!(replaced, 3, "--prefer {prefer}: segment 375's files");
    // Segments 0 and 735 keep their records before the odd one (cut at its boundary);
    // the records after it in segments 0 and 375 are new segments from the backup copies.
    let m: Value =
        serde_json::from_slice(&fs::read(backup.join("recoverfs-backup.json")).unwrap()).unwrap();
    let action = |base: u64| -> (String, bool) {
        let path = format!("{PART}/{}", segment_file_name(base, FileKind::Log));
        let e = m["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == path.as_str())
            .unwrap_or_else(|| panic!("no entry for {path}"));
        (
            e["action"].as_str().unwrap().into(),
            e["original"].is_object(),
        )
    };
    assert_eq!(action(0), ("truncate".into(), true));
    assert_eq!(action(375), ("heal".into(), true));
    assert_eq!(action(735), ("truncate".into(), true));
    for o in [10, 375, 1099] {
        let (a, _) = action(o);
        assert_eq!(a, "heal", "offset {o} comes from a replica");
    }
    assert_eq!(action(11), ("salvage".into(), false));
    assert_eq!(action(376), ("salvage".into(), false));
    assert_eq!(assert_split_parts_from_backup(&backup, src.path()), 2);
    // Checked again with the same replicas, the copies agree.
    let (code, v) = check_replicas(src.path(), replicas, &["--prefer", prefer]);
    assert_eq!(v["summary"]["divergences"], 0, "{v}");
    assert_eq!(code, Some(0), "{v}");
    let (code, v) = check_json(src.path(), &["--policy", "per-segment"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["summary"]["records"], 3035);
    for (r, b) in replicas.iter().zip(&before) {
        assert_unchanged(b, &snapshot_all(r));
    }
    // Run again: nothing left to prefer, nothing changed.
    let after = items(src.path());
    let o = repair_in_place(src.path(), &backup, &args);
    assert_ok(&o, "the rerun");
    assert!(stdout(&o).contains("Nothing to repair"), "{}", stdout(&o));
    assert_trees_eq(&items(src.path()), &after, "after the rerun");
    for (r, b) in replicas.iter().zip(&before) {
        assert_unchanged(b, &snapshot_all(r));
    }
}

#[test]
fn in_place_prefer_majority_replaces_the_primarys_odd_records_like_output() {
    let r1 = resegmented_replica(&[100, 777]);
    let r2 = resegmented_replica(&[1000]);
    assert_prefer_in_place_like_output(&[r1.path(), r2.path()], "majority");
}

#[test]
fn in_place_prefer_splits_around_adjacent_records_and_replaces_a_one_record_segment() {
    // Segment 0 holds three divergent records, two of them adjacent (one piece split
    // four ways); segment 20 holds a single record, divergent (replaced whole).
    let master = tempfile::tempdir().unwrap();
    let p = master.path().join("t/partition-0");
    write_segment(&p, 0, 20, 50);
    write_segment(&p, 20, 1, 50);
    write_segment(&p, 21, 10, 50);
    let r1 = tempfile::tempdir().unwrap();
    copy_tree(master.path(), r1.path());
    let r2 = tempfile::tempdir().unwrap();
    copy_tree(master.path(), r2.path());
    let good = raw_records(&p);
    for (base, o) in [(0, 3), (0, 7), (0, 8), (20, 20)] {
        flip_value(&p, base, o);
    }
    let owned = prefer_args(&[r1.path(), r2.path()], "majority");
    let args: Vec<&str> = owned.iter().map(|s| s.as_str()).collect();
    let want = output_tree(master.path(), &args);
    let src = clone_tree(master.path());
    let bk = tempfile::tempdir().unwrap();
    assert_ok(
        &repair_in_place(src.path(), &bk.path().join("b"), &args),
        "repair --in-place --prefer majority",
    );
    assert_trees_eq(&files_only(items(src.path())), &want, "in place");
    // Every record is the replicas' again, and the copies agree.
    let got = raw_records(&src.path().join("t/partition-0"));
    assert_eq!(got.len(), good.len());
    for (g, w) in got.iter().zip(&good) {
        assert_eq!((g.offset, &g.bytes), (w.offset, &w.bytes));
    }
    let (code, v) = check_replicas(src.path(), &[r1.path(), r2.path()], &[]);
    assert_eq!(v["summary"]["divergences"], 0, "{v}");
    assert_eq!(code, Some(0), "{v}");
}

#[test]
fn in_place_prefer_replica_with_two_copies_like_output() {
    let r1 = resegmented_replica(&[100, 777]);
    assert_prefer_in_place_like_output(&[r1.path()], "replica");
}

/// `repair --in-place --prefer` on a copy of [`odd_primary`], killed at every step in turn
/// and run again, ends with the tree `repair --output` gives.
#[cfg(feature = "fault-injection")]
fn assert_prefer_in_place_converges_when_killed(replicas: &[&Path], prefer: &str) {
    let owned = prefer_args(replicas, prefer);
    let args: Vec<&str> = owned.iter().map(|s| s.as_str()).collect();
    assert_in_place_converges_when_killed(odd_primary().path(), replicas, &args, 2);
}

/// `repair --in-place ARGS` on a copy of `master`, killed at every step in turn and run
/// again, ends with the tree `repair --output ARGS` gives; `splits` `.log`s are split off
/// the primary's own records, from the backup copies.
#[cfg(feature = "fault-injection")]
fn assert_in_place_converges_when_killed(
    master: &Path,
    replicas: &[&Path],
    args: &[&str],
    splits: usize,
) {
    let want = output_tree(master, args);
    for r in replicas {
        age_all_atimes(r);
    }
    let before: Vec<_> = replicas.iter().map(|r| snapshot_all(r)).collect();
    let mut step = 1;
    loop {
        let src = clone_tree(master);
        let originals = items(src.path());
        let bk = tempfile::tempdir().unwrap();
        let backup = bk.path().join("b");
        let full = in_place_args(src.path(), &backup, args);
        let o = run_failing_at(&full, step);
        if o.status.success() {
            assert_healed_manifest_of(&backup, src.path(), replicas, &originals);
            assert_eq!(step - 1, in_place_steps(&backup), "every step was tried");
            assert_trees_eq(&files_only(items(src.path())), &want, "uninterrupted");
            break;
        }
        rerun_after_kill(&o, &full, step);
        let what = format!("{args:?}, rerun after step {step}");
        assert_trees_eq(&files_only(items(src.path())), &want, &what);
        assert_healed_manifest_of(&backup, src.path(), replicas, &originals);
        assert_eq!(assert_split_parts_from_backup(&backup, src.path()), splits);
        assert_no_tmp(&backup);
        assert_no_tmp(src.path());
        for (r, b) in replicas.iter().zip(&before) {
            assert_unchanged(b, &snapshot_all(r));
        }
        step += 1;
    }
}

#[cfg(feature = "fault-injection")]
#[test]
fn in_place_prefer_majority_killed_at_every_step_then_rerun_converges() {
    let r1 = resegmented_replica(&[100, 777]);
    let r2 = resegmented_replica(&[1000]);
    assert_prefer_in_place_converges_when_killed(&[r1.path(), r2.path()], "majority");
}

#[cfg(feature = "fault-injection")]
#[test]
fn in_place_prefer_replica_killed_at_every_step_then_rerun_converges() {
    let r1 = resegmented_replica(&[100, 777]);
    assert_prefer_in_place_converges_when_killed(&[r1.path()], "replica");
}

/// The fixture with a zeroed block in segment 0 after record 100 (records 100 and 101
/// destroyed, a salvaged run from 102 on) and a bit flipped in the values of record 50
/// (in the valid prefix the repair cuts at the damage), of the run's first record (102)
/// and of one inside it (200).
#[cfg(feature = "fault-injection")]
fn odd_salvaged_primary() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join(PART);
    copy_tree(&fixtures().join("data").join(PART), &p);
    for o in [50, 102, 200] {
        flip_value(&p, 0, o);
    }
    let at = record_positions(&fs::read(log_path(&p, 0)).unwrap())[100] as u64 + 7;
    overwrite(&log_path(&p, 0), at, &[0u8; 600]);
    t
}

/// Under `salvage`, a preferred record inside a salvaged run splits the run, and one that
/// is the run's first record takes the run's name; in place gives `--output`'s tree,
/// killed at any step or not, and the copies agree afterwards.
#[cfg(feature = "fault-injection")]
#[test]
fn in_place_prefer_majority_splits_salvaged_runs_like_output_even_killed_at_every_step() {
    let master = odd_salvaged_primary();
    let r1 = resegmented_replica(&[100, 777]);
    let r2 = resegmented_replica(&[1000]);
    let replicas = [r1.path(), r2.path()];
    let mut owned = prefer_args(&replicas, "majority");
    owned.extend(["--policy".to_string(), "salvage".to_string()]);
    let args: Vec<&str> = owned.iter().map(|s| s.as_str()).collect();
    let (_, v) = check_replicas(master.path(), &replicas, &args[4..]);
    let roles: Vec<(u64, String)> = log_of(&v, PART)["healed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let role = h.get("role").and_then(|r| r.as_str()).unwrap_or("healed");
            (h["from_offset"].as_u64().unwrap(), role.to_string())
        })
        .collect();
    let want_roles: Vec<(u64, String)> = [
        (0, "primary-split"),
        (50, "preferred"),
        (51, "primary-split"),
        (100, "healed"),
        (102, "preferred"),
        (103, "primary-split"),
        (200, "preferred"),
        (201, "primary-split"),
    ]
    .iter()
    .map(|(o, r)| (*o, r.to_string()))
    .collect();
    assert_eq!(roles, want_roles, "{v}");
    // Parts split off after a preferred record: 51, 103 and 201.
    assert_in_place_converges_when_killed(master.path(), &replicas, &args, 3);
    let src = clone_tree(master.path());
    let bk = tempfile::tempdir().unwrap();
    assert_ok(
        &repair_in_place(src.path(), &bk.path().join("b"), &args),
        "in place",
    );
    let (code, v) = check_replicas(src.path(), &replicas, &args[4..]);
    assert_eq!(v["summary"]["divergences"], 0, "{v}");
    assert_eq!(code, Some(0), "{v}");
    assert_view_serves_every_offset(
        &src.path().join(PART),
        &raw_records(&fixtures().join("data").join(PART)),
    );
}
