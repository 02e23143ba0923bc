//! `repair`: the written tree against an expectation computed here from the source bytes and
//! `check --json`, in-place against `--output`, the backup, crash safety, and every refusal.

use crate::common;

use common::*;
use recoverfs::engine::format::takhin::{Record, SegmentWriter};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

const POLICIES: [&str; 2] = ["per-segment", "point-in-time"];

/// Rebuilds `.index` and `.timeindex` from a valid prefix, written here from the format
/// description rather than with the engine.
fn rebuild(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut i, mut t) = (vec![], vec![]);
    for p in record_positions(prefix) {
        let offset = &prefix[p + 4..p + 12];
        let ts = &prefix[p + 12..p + 20];
        i.extend_from_slice(offset);
        i.extend_from_slice(&(p as u64).to_be_bytes());
        t.extend_from_slice(ts);
        t.extend_from_slice(offset);
    }
    (i, t)
}

/// What the repaired tree must hold: computed from the source and `check --json`.
fn expected(src: &Path, report: &Value) -> BTreeMap<PathBuf, Item> {
    let mut out = items(src);
    let segs: Vec<&Value> = report["logs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["segments"].as_array().unwrap())
        .collect();
    // Orphans go.
    for l in report["logs"].as_array().unwrap() {
        for o in l["orphans"].as_array().unwrap() {
            assert!(out.remove(Path::new(o.as_str().unwrap())).is_some());
        }
    }
    for s in segs {
        let log = PathBuf::from(s["path"].as_str().unwrap());
        let idx = log.with_extension("index");
        let tidx = log.with_extension("timeindex");
        if !s["visible"].as_bool().unwrap() {
            for p in [&log, &idx, &tidx] {
                out.remove(p);
            }
            continue;
        }
        let lm = fs::metadata(src.join(&log)).unwrap();
        let valid = s["valid_bytes"].as_u64().unwrap() as usize;
        let prefix = fs::read(src.join(&log)).unwrap()[..valid].to_vec();
        let (i, t) = rebuild(&prefix);
        out.insert(
            log.clone(),
            Item::File {
                bytes: prefix,
                mode: lm.mode() & 0o7777,
                mtime: (lm.mtime(), lm.mtime_nsec()),
            },
        );
        for (p, bytes) in [(idx, i), (tidx, t)] {
            // A rebuilt index keeps the original's mode and mtime, or the .log's when missing.
            let m = fs::metadata(src.join(&p)).unwrap_or_else(|_| lm.clone());
            out.insert(
                p,
                Item::File {
                    bytes,
                    mode: m.mode() & 0o7777,
                    mtime: (m.mtime(), m.mtime_nsec()),
                },
            );
        }
    }
    out
}

#[test]
fn output_equals_the_expected_view_under_each_policy() {
    for policy in POLICIES {
        let src = damaged();
        // A FIFO: never opened, left out of the repaired tree.
        let fifo =
            std::ffi::CString::new(src.path().join("events/fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates a node in our temp dir.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let (code, report) = check_json(src.path(), &["--policy", policy]);
        assert_eq!(code, Some(1), "the damaged tree must differ from its view");
        let want = expected(src.path(), &report);
        age_all_atimes(src.path());
        let before = snapshot_all(src.path());

        let out = tempfile::tempdir().unwrap();
        let new = out.path().join("repaired");
        let o = repair_output(src.path(), &new, &["--policy", policy]);
        assert!(o.status.success(), "{policy}: {}", stderr(&o));
        // (Its text, without check's title and advice: regressions.rs.)

        assert_unchanged(&before, &snapshot_all(src.path()));
        assert_trees_eq(&items(&new), &want, policy);
        // The top directory and the passed-through files keep their mode and mtime.
        let odd = Path::new("orders").join(OsStr::from_bytes(b"notes-\xff.txt"));
        assert!(matches!(&items(&new)[&odd], Item::File { mode: 0o600, .. }));
        assert_eq!(
            check_code(&new, policy),
            Some(0),
            "{policy}: check on the output"
        );
        // Nothing but the finished tree is left beside it.
        assert_only_entry(out.path(), "repaired", policy);
    }
}

/// Asserts `dir` holds `name` and nothing else.
fn assert_only_entry(dir: &Path, name: &str, what: &str) {
    let names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![OsStr::new(name).to_os_string()], "{what}");
}

#[test]
fn output_json_prints_the_report() {
    let src = damaged();
    let out = tempfile::tempdir().unwrap();
    let o = repair_output(src.path(), &out.path().join("r"), &["--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["policy"], "per-segment");
    assert!(v["summary"]["truncated"].as_u64().unwrap() >= 2);
}

#[test]
fn output_into_an_existing_empty_directory() {
    let src = fixture_copy("seed-example");
    let out = tempfile::tempdir().unwrap();
    let new = out.path().join("empty");
    fs::create_dir(&new).unwrap();
    let o = repair_output(src.path(), &new, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, report) = check_json(src.path(), &["--policy", "per-segment"]);
    assert_trees_eq(&items(&new), &expected(src.path(), &report), "clean seed");
}

#[test]
fn strict_refuses_damage_and_writes_nothing_but_copies_a_clean_tree() {
    let src = damaged();
    let before = snapshot(src.path());
    let out = tempfile::tempdir().unwrap();
    let new = out.path().join("r");
    let o = repair_output(src.path(), &new, &["--policy", "strict"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains(&*src.path().to_string_lossy()), "{e}");
    assert!(
        e.contains("policy strict repairs nothing") && e.contains("damaged"),
        "{e}"
    );
    assert_eq!(
        fs::read_dir(out.path()).unwrap().count(),
        0,
        "nothing written"
    );
    assert_unchanged(&before, &snapshot(src.path()));

    let clean = fixture_copy("data");
    let o = repair_output(clean.path(), &new, &["--policy", "strict"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_trees_eq(
        &items(&new),
        &items(clean.path()),
        "strict copy of a clean tree",
    );
    assert_eq!(check_code(&new, "strict"), Some(0));
}

/// Asserts a refusal: exit 2, one line on stderr naming `path` and saying `what`.
fn assert_refused(o: &Output, path: &Path, what: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    assert!(e.starts_with("recoverfs repair: "), "{e}");
    assert!(
        e.contains(&*path.to_string_lossy()),
        "names {}: {e}",
        path.display()
    );
    assert!(e.contains(what), "says {what:?}: {e}");
}

#[test]
fn output_refusals() {
    let src = damaged();
    let before = snapshot(src.path());
    let out = tempfile::tempdir().unwrap();
    let full = out.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("x"), b"x").unwrap();
    let o = repair_output(src.path(), &full, &[]);
    assert_refused(&o, &full, "already exists and is not empty");
    assert_eq!(fs::read(full.join("x")).unwrap(), b"x");

    let inside = src.path().join("orders/repaired");
    let o = repair_output(src.path(), &inside, &[]);
    assert_refused(&o, &inside, "is inside the data directory");
    let o = repair_output(src.path(), src.path(), &[]);
    assert_refused(&o, src.path(), "is the data directory itself");

    let data = src.path().join("orders");
    let o = repair_output(&data, src.path(), &[]);
    assert_refused(
        &o,
        &data,
        "the data directory is inside the output directory",
    );

    let file = src.path().join("events/topic-metadata.json");
    let o = repair_output(&file, &out.path().join("n"), &[]);
    assert_refused(&o, &file, "not a directory");
    assert_unchanged(&before, &snapshot(src.path()));
    assert!(!out.path().join("n").exists());
}

#[cfg(feature = "fault-injection")]
#[test]
fn output_killed_at_every_step_leaves_no_half_tree_and_a_rerun_completes() {
    let src = small_damaged();
    let (_o, want) = output_of(src.path(), "per-segment");
    let want = items(&want);
    let mut step = 1;
    loop {
        let out = tempfile::tempdir().unwrap();
        let new = out.path().join("r");
        let args = output_args(src.path(), &new, &[]);
        let o = run_failing_at(&args, step);
        if o.status.success() {
            assert!(step > 3, "only {} steps", step - 1);
            break;
        }
        assert_eq!(o.status.code(), Some(86), "step {step}: {}", stderr(&o));
        // Killed: NEW_DIR is absent or whole, never partial.
        if new.exists() {
            assert_trees_eq(&items(&new), &want, &format!("killed at step {step}"));
        } else {
            let o = run(&args);
            assert!(
                o.status.success(),
                "rerun after step {step}: {}",
                stderr(&o)
            );
            assert_trees_eq(&items(&new), &want, &format!("rerun after step {step}"));
        }
        assert_only_entry(out.path(), "r", &format!("step {step}"));
        step += 1;
    }
}

/// `--output` of a copy of `damaged` under `policy`: the tree in-place must reach.
fn output_of(damaged: &Path, policy: &str) -> (tempfile::TempDir, PathBuf) {
    let src = clone_tree(damaged);
    let out = tempfile::tempdir().unwrap();
    let new = out.path().join("r");
    let o = repair_output(src.path(), &new, &["--policy", policy]);
    assert!(o.status.success(), "{}", stderr(&o));
    (out, new)
}

/// Every original the manifest lists is in the backup, byte for byte, with its CRC-32.
fn assert_backup_complete(backup: &Path, originals: &BTreeMap<PathBuf, Item>) -> Value {
    let m: Value =
        serde_json::from_slice(&fs::read(backup.join("recoverfs-backup.json")).unwrap()).unwrap();
    assert_eq!(m["state"], "applied");
    for e in m["entries"].as_array().unwrap() {
        let rel = entry_rel(e);
        if e["original"].is_null() {
            // Nothing was there to back up: a created index, or a salvaged run's file.
            assert!(e["action"] == "create" || e["action"] == "salvage", "{e}");
            assert!(!originals.contains_key(&rel));
            assert!(!backup.join(&rel).exists(), "{}", rel.display());
            continue;
        }
        let Item::File { bytes, .. } = &originals[&rel] else {
            panic!("{}: not a file", rel.display())
        };
        let copy = fs::read(backup.join(&rel)).unwrap();
        assert!(
            copy == *bytes,
            "{}: the backup differs from the original",
            rel.display()
        );
        assert_eq!(e["original"]["bytes"].as_u64(), Some(bytes.len() as u64));
        assert_eq!(
            e["original"]["crc32"].as_u64(),
            Some(crc32fast::hash(bytes) as u64)
        );
    }
    m
}

/// A manifest entry's path: its raw bytes when the name had to be escaped.
fn entry_rel(e: &Value) -> PathBuf {
    match e["path_bytes"].as_array() {
        Some(raw) => {
            let b: Vec<u8> = raw.iter().map(|b| b.as_u64().unwrap() as u8).collect();
            PathBuf::from(std::ffi::OsString::from(OsStr::from_bytes(&b)))
        }
        None => PathBuf::from(e["path"].as_str().unwrap()),
    }
}

/// The entries of a backup manifest.
fn entries(m: &Value) -> &Vec<Value> {
    m["entries"].as_array().unwrap()
}

#[test]
fn in_place_equals_output_keeps_every_original_and_is_idempotent() {
    for policy in POLICIES {
        let master = damaged();
        let (_out, want) = output_of(master.path(), policy);
        let src = clone_tree(master.path());
        let originals = items(src.path());
        let bk = tempfile::tempdir().unwrap();
        let backup = bk.path().join("backup");
        let o = repair_in_place(src.path(), &backup, &["--policy", policy]);
        assert!(o.status.success(), "{policy}: {}", stderr(&o));
        assert!(stdout(&o).contains("Repaired in place"), "{}", stdout(&o));
        assert_trees_eq(
            &files_only(items(src.path())),
            &files_only(items(&want)),
            policy,
        );
        assert_eq!(check_code(src.path(), policy), Some(0));

        let m = assert_backup_complete(&backup, &originals);
        // Every original that changed or went is listed, hence backed up.
        let after = items(src.path());
        let listed: Vec<PathBuf> = entries(&m)
            .iter()
            .map(|e| PathBuf::from(e["path"].as_str().unwrap()))
            .collect();
        for (p, i) in &originals {
            if matches!(i, Item::File { .. }) && after.get(p) != Some(i) {
                assert!(
                    listed.contains(p),
                    "{policy}: {} changed without a backup",
                    p.display()
                );
            }
        }
        assert!(entries(&m).iter().any(|e| e["action"] == "remove"));
        assert!(entries(&m).iter().any(|e| e["action"] == "truncate"));

        // A second run changes nothing and says so.
        let before = snapshot(src.path());
        let o = repair_in_place(src.path(), &backup, &["--policy", policy]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("Nothing to repair"), "{}", stdout(&o));
        assert_unchanged(&before, &snapshot(src.path()));
        // With a fresh backup directory too, which it then does not create.
        let other = bk.path().join("other");
        let o = repair_in_place(src.path(), &other, &["--policy", policy]);
        assert!(stdout(&o).contains("Nothing to repair"), "{}", stdout(&o));
        assert!(!other.exists());
    }
}

#[test]
fn dry_run_prints_the_plan_and_touches_nothing() {
    let src = damaged();
    age_all_atimes(src.path());
    let before = snapshot_all(src.path());
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("b");
    let o = repair_in_place(
        src.path(),
        &backup,
        &["--dry-run", "--policy", "point-in-time"],
    );
    // Changes are pending: exit 1 (issue 11, finding 10).
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let s = stdout(&o);
    for w in [
        "TRUNCATE",
        "REBUILD",
        "CREATE",
        "REMOVE",
        "Dry run",
        "Nothing was touched",
    ] {
        assert!(s.contains(w), "{w}: {s}");
    }
    assert!(!backup.exists());
    assert_unchanged(&before, &snapshot_all(src.path()));
}

#[test]
fn in_place_on_a_clean_tree_changes_nothing() {
    let src = fixture_copy("data");
    let before = snapshot(src.path());
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("b");
    let o = repair_in_place(src.path(), &backup, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Nothing to repair"), "{}", stdout(&o));
    assert!(!backup.exists());
    assert_unchanged(&before, &snapshot(src.path()));
}

#[test]
fn in_place_refusals() {
    let src = damaged();
    let before = snapshot(src.path());
    let bk = tempfile::tempdir().unwrap();

    let o = run([
        OsStr::new("repair"),
        src.path().as_os_str(),
        OsStr::new("--in-place"),
    ]);
    assert_refused(&o, src.path(), "--in-place needs --backup BACKUP_DIR");

    let inside = src.path().join("backup");
    let o = repair_in_place(src.path(), &inside, &[]);
    assert_refused(&o, &inside, "is inside the data directory");

    let foreign = bk.path().join("foreign");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("photo.jpg"), b"x").unwrap();
    let o = repair_in_place(src.path(), &foreign, &[]);
    assert_refused(
        &o,
        &foreign,
        "holds a different backup (not empty, and no recoverfs-backup.json)",
    );

    // The backup of another data directory.
    let other = damaged();
    let theirs = bk.path().join("theirs");
    let o = repair_in_place(other.path(), &theirs, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = repair_in_place(src.path(), &theirs, &[]);
    assert_refused(&o, &theirs, "holds a different backup (of ");
    // The same data directory under another policy.
    let o = repair_in_place(other.path(), &theirs, &["--policy", "point-in-time"]);
    assert_refused(&o, &theirs, "under per-segment");

    // A repair already running on the same tree (it holds a lock on the directory).
    {
        use std::os::fd::AsRawFd;
        let held = fs::File::open(src.path()).unwrap();
        // SAFETY: flock(2) on a descriptor we own and keep open for the whole block.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
        let o = repair_in_place(src.path(), &bk.path().join("busy"), &[]);
        assert_refused(&o, src.path(), "another repair is running here");
        assert!(!bk.path().join("busy").exists());
    }

    // Strict: exit 1, says why.
    let o = repair_in_place(src.path(), &bk.path().join("s"), &["--policy", "strict"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("policy strict repairs nothing"),
        "{}",
        stderr(&o)
    );
    assert!(!bk.path().join("s").exists());

    // --backup belongs to --in-place, --dry-run too (clap's usage error, exit 2).
    let o = repair_output(
        src.path(),
        &bk.path().join("o"),
        &["--backup", foreign.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    assert_unchanged(&before, &snapshot(src.path()));
}

#[cfg(feature = "fault-injection")]
#[test]
fn in_place_killed_at_every_step_then_rerun_completes() {
    for policy in POLICIES {
        let master = small_damaged();
        let (_out, want) = output_of(master.path(), policy);
        let want = files_only(items(&want));
        let mut step = 1;
        loop {
            let src = clone_tree(master.path());
            let originals = items(src.path());
            let bk = tempfile::tempdir().unwrap();
            let backup = bk.path().join("b");
            let args = in_place_args(src.path(), &backup, &["--policy", policy]);
            let o = run_failing_at(&args, step);
            if o.status.success() {
                // The step number is past the last step: every step was tried.
                assert!(step > 20, "{policy}: only {} steps", step - 1);
                break;
            }
            assert_eq!(
                o.status.code(),
                Some(86),
                "{policy} step {step}: {}",
                stderr(&o)
            );
            assert!(stderr(&o).contains(&format!("injected failure at step {step}:")));
            let o = run(&args);
            assert!(
                o.status.success(),
                "{policy} rerun after step {step}: {}",
                stderr(&o)
            );
            assert_trees_eq(
                &files_only(items(src.path())),
                &want,
                &format!("{policy} after step {step}"),
            );
            assert_backup_complete(&backup, &originals);
            // Nothing of ours is left behind in the backup either.
            for (p, _) in items(&backup) {
                assert!(
                    !p.to_string_lossy().contains("recoverfs-tmp"),
                    "{}",
                    p.display()
                );
            }
            step += 1;
        }
    }
}

/// A log under a directory whose name is not UTF-8: the manifest keeps the raw name, the
/// backup and the repair land at the right paths, and in place still equals `--output`.
#[test]
fn in_place_with_a_non_utf8_directory_name() {
    let master = tempfile::tempdir().unwrap();
    let dir = master
        .path()
        .join(OsStr::from_bytes(b"t\xffpic"))
        .join("partition-0");
    copy_tree(&fixtures().join("seed-example"), &dir);
    let b = bases(&dir);
    cut_tail(&seg_path(&dir, b[3], "log"), 5);
    fs::write(seg_path(&dir, 777, "index"), [0u8; 16]).unwrap();
    let (_o, want) = output_of(master.path(), "per-segment");
    let src = clone_tree(master.path());
    let originals = items(src.path());
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("b");
    let o = repair_in_place(src.path(), &backup, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_trees_eq(
        &files_only(items(src.path())),
        &files_only(items(&want)),
        "non-UTF-8",
    );
    let m: Value =
        serde_json::from_slice(&fs::read(backup.join("recoverfs-backup.json")).unwrap()).unwrap();
    let orphan = entries(&m)
        .iter()
        .find(|e| e["action"] == "remove")
        .expect("the orphan is removed");
    assert_eq!(
        orphan["path"],
        "t\\xffpic/partition-0/00000000000000000777.index"
    );
    let raw: Vec<u8> = orphan["path_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    let rel = PathBuf::from(std::ffi::OsString::from(OsStr::from_bytes(&raw)));
    assert_eq!(
        rel,
        Path::new(OsStr::from_bytes(
            b"t\xffpic/partition-0/00000000000000000777.index"
        ))
    );
    let Item::File { bytes, .. } = &originals[&rel] else {
        panic!("the orphan was a file")
    };
    assert_eq!(&fs::read(backup.join(&rel)).unwrap(), bytes);
    let truncated =
        Path::new(OsStr::from_bytes(b"t\xffpic/partition-0")).join(format!("{:020}.log", b[3]));
    let Item::File { bytes, .. } = &originals[&truncated] else {
        panic!("the log was a file")
    };
    assert_eq!(&fs::read(backup.join(&truncated)).unwrap(), bytes);
}

/// A damaged byte range of a `.log`: `(start, len)`.
type Damage = (usize, usize);

/// One damaged segment of [`salvage_source`]: its directory, the clean segment it was
/// written as, and the ranges damaged in its `.log`.
struct Damaged {
    dir: PathBuf,
    clean: SegmentWriter,
    ranges: Vec<Damage>,
}

impl Damaged {
    /// The clean segment's records, each with its byte range.
    fn records(&self) -> Vec<(Record, usize, usize)> {
        let pos = record_positions(&self.clean.log);
        pos.iter()
            .enumerate()
            .map(|(i, &p)| {
                let end = pos.get(i + 1).copied().unwrap_or(self.clean.log.len());
                (Record::decode(&self.clean.log[p..end]).unwrap(), p, end)
            })
            .collect()
    }

    /// Offsets of the records the damage touched: the only ones allowed to be lost.
    fn destroyed(&self) -> BTreeSet<u64> {
        self.records()
            .into_iter()
            .filter(|(_, p, end)| self.ranges.iter().any(|&(s, n)| s < *end && *p < s + n))
            .map(|(r, _, _)| r.offset)
            .collect()
    }
}

/// A tree for in-place salvage. `t/partition-0`: a 200-record segment with 60 garbage
/// bytes over record 30's start and a zeroed 4 KiB block from record 100's start (both
/// mid-segment, each followed by intact records), then a clean segment at 200.
/// `u/partition-0`: a segment whose `.timeindex` is missing (a `create`). A log under a
/// non-UTF-8 directory name whose record 5 has an impossible size (its run's origin is
/// named by raw bytes in the manifest).
fn salvage_source() -> (tempfile::TempDir, Vec<Damaged>) {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("t/partition-0");
    let clean = write_segment(&a, 0, 200, 40);
    write_segment(&a, 200, 10, 40);
    let garbage = (position_of(&clean, 30), 60);
    let zeros = (position_of(&clean, 100), 4096);
    let mut log = clean.log.clone();
    log[garbage.0..garbage.0 + garbage.1].fill(0xa5);
    log[zeros.0..zeros.0 + zeros.1].fill(0);
    fs::write(log_path(&a, 0), &log).unwrap();

    let u = t.path().join("u/partition-0");
    write_segment(&u, 0, 30, 20);
    fs::remove_file(seg_path(&u, 0, "timeindex")).unwrap();

    let odd = t
        .path()
        .join(OsStr::from_bytes(b"t\xffpic"))
        .join("partition-0");
    let odd_clean = write_segment(&odd, 0, 20, 30);
    let size_at = (position_of(&odd_clean, 5), 4);
    overwrite(
        &log_path(&odd, 0),
        size_at.0 as u64,
        &u32::MAX.to_be_bytes(),
    );
    let damaged = vec![
        Damaged {
            dir: a,
            clean,
            ranges: vec![garbage, zeros],
        },
        Damaged {
            dir: odd,
            clean: odd_clean,
            ranges: vec![size_at],
        },
    ];
    (t, damaged)
}

/// Every record of each damaged segment reads back through an independent Takhin
/// lookup, from whichever segment of `root` now holds its offset, except exactly the
/// destroyed ones.
fn assert_records_read_back(root: &Path, src: &Path, damaged: &[Damaged]) {
    for d in damaged {
        let dir = root.join(d.dir.strip_prefix(src).unwrap());
        let bases = bases(&dir);
        let destroyed = d.destroyed();
        let mut missing = BTreeSet::new();
        for (want, _, _) in d.records() {
            let base = *bases.iter().rev().find(|&&b| b <= want.offset).unwrap();
            match takhin_read(&dir, base, want.offset) {
                Some(got) => assert_eq!(got, want, "{} offset {}", dir.display(), want.offset),
                None => {
                    missing.insert(want.offset);
                }
            }
        }
        assert_eq!(
            missing,
            destroyed,
            "{}: only destroyed records are lost",
            dir.display()
        );
    }
}

#[test]
fn in_place_salvage_equals_output_reads_back_and_lists_its_runs() {
    let (master, damaged) = salvage_source();
    // The analysis: two runs after the garbage and the zeros, one in the odd-named log.
    let (code, report) = check_json(master.path(), &["--policy", "salvage"]);
    assert_eq!(code, Some(1));
    let runs: Vec<(String, Value)> = report["logs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["segments"].as_array().unwrap())
        .flat_map(|s| {
            let log = s["path"].as_str().unwrap().to_string();
            s["salvaged"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |r| (log.clone(), r.clone()))
        })
        .collect();
    let firsts: Vec<u64> = runs
        .iter()
        .map(|(_, r)| r["first_offset"].as_u64().unwrap())
        .collect();
    let after_zeros = damaged[0].destroyed().iter().max().unwrap() + 1;
    assert_eq!(firsts, vec![31, after_zeros, 6], "{report}");
    assert!(runs.iter().all(|(_, r)| r.get("refused").is_none()));

    let (_out, want) = output_of(master.path(), "salvage");
    let src = clone_tree(master.path());
    let originals = items(src.path());
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("backup");
    let o = repair_in_place(src.path(), &backup, &["--policy", "salvage"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert_eq!(
        text.matches("\n  SALVAGE  ").count(),
        3 * runs.len(),
        "{text}"
    );
    assert!(text.contains("Repaired in place"), "{text}");

    // Byte for byte (modes and mtimes too) what --output writes.
    assert_trees_eq(
        &files_only(items(src.path())),
        &files_only(items(&want)),
        "in place vs --output under salvage",
    );
    assert_eq!(check_code(src.path(), "per-segment"), Some(0));
    assert_eq!(check_code(src.path(), "salvage"), Some(0));
    assert_records_read_back(src.path(), master.path(), &damaged);

    // The backup holds every original changed; the manifest lists each run's three
    // files, made from the original's bytes the report names.
    let m = assert_backup_complete(&backup, &originals);
    assert_eq!(m["policy"], "salvage");
    let salvaged: Vec<&Value> = entries(&m)
        .iter()
        .filter(|e| e["action"] == "salvage")
        .collect();
    assert_eq!(salvaged.len(), 3 * runs.len());
    for (log, r) in &runs {
        let run_log = r["path"].as_str().unwrap();
        let stem = run_log.strip_suffix(".log").unwrap();
        let position = r["position"].as_u64().unwrap();
        let bytes = r["bytes"].as_u64().unwrap();
        let records = r["records"].as_u64().unwrap();
        let truncated = entries(&m)
            .iter()
            .find(|e| e["path"] == log.as_str())
            .unwrap();
        assert_eq!(truncated["action"], "truncate");
        let original = fs::read(backup.join(entry_rel(truncated))).unwrap();
        let run_bytes = &original[position as usize..(position + bytes) as usize];
        for ext in ["log", "index", "timeindex"] {
            let path = format!("{stem}.{ext}");
            let e = salvaged
                .iter()
                .find(|e| e["path"] == path.as_str())
                .unwrap_or_else(|| panic!("{path} is not in the manifest"));
            let from = &e["salvaged_from"];
            assert_eq!(from["log"], log.as_str());
            assert_eq!(from["log_bytes"], truncated["path_bytes"]);
            assert_eq!(from["position"], position);
            assert_eq!(from["bytes"], bytes);
            let written = fs::read(src.path().join(entry_rel(e))).unwrap();
            assert_eq!(e["new"]["bytes"], written.len() as u64);
            assert_eq!(e["new"]["crc32"], crc32fast::hash(&written) as u64);
            if ext == "log" {
                assert!(written == run_bytes, "{path}: the original's bytes");
                assert!(e["why"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("{records} record(s)")));
            } else {
                assert_eq!(written.len() as u64, 16 * records, "{path}");
            }
        }
    }

    // A second run changes nothing and says so.
    let before = snapshot(src.path());
    let o = repair_in_place(src.path(), &backup, &["--policy", "salvage"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Nothing to repair"), "{}", stdout(&o));
    assert_unchanged(&before, &snapshot(src.path()));
}

#[cfg(feature = "fault-injection")]
#[test]
fn in_place_salvage_killed_at_every_step_then_rerun_converges() {
    let (master, damaged) = salvage_source();
    let (_out, want) = output_of(master.path(), "salvage");
    let want = files_only(items(&want));
    let mut step = 1;
    loop {
        let src = clone_tree(master.path());
        let originals = items(src.path());
        let bk = tempfile::tempdir().unwrap();
        let backup = bk.path().join("b");
        let args = in_place_args(src.path(), &backup, &["--policy", "salvage"]);
        let o = run_failing_at(&args, step);
        if o.status.success() {
            // Two steps for each of the three manifest writes, each original copied into
            // the backup, and each change: the step number is past the last one.
            let m = assert_backup_complete(&backup, &originals);
            let changes = entries(&m).len() as u32;
            let copies = entries(&m)
                .iter()
                .filter(|e| e["original"].is_object())
                .count();
            assert_eq!(
                (changes, copies),
                (16, 6),
                "9 salvaged files among the changes"
            );
            assert_eq!(step - 1, in_place_steps(&backup), "every step was tried");
            break;
        }
        rerun_after_kill(&o, &args, step);
        let what = format!("salvage, rerun after step {step}");
        // Leftover temporary files in the data directory would show here too.
        assert_trees_eq(&files_only(items(src.path())), &want, &what);
        assert_backup_complete(&backup, &originals);
        for (p, _) in items(&backup) {
            assert!(
                !p.to_string_lossy().contains("recoverfs-tmp"),
                "{}",
                p.display()
            );
        }
        if step % 8 == 1 {
            assert_records_read_back(src.path(), master.path(), &damaged);
        }
        step += 1;
    }
}

#[test]
fn in_place_salvage_refuses_a_taken_run_name_and_changes_nothing() {
    let (src, _) = salvage_source();
    let dir = src.path().join("t/partition-0");
    // An orphan holds the first run's `.index` name: the analysis refuses the run.
    let taken = seg_path(&dir, 31, "index");
    fs::write(&taken, b"not ours").unwrap();
    let before = snapshot(src.path());
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("b");
    for dry in [true, false] {
        let extra: &[&str] = if dry {
            &["--policy", "salvage", "--dry-run"]
        } else {
            &["--policy", "salvage"]
        };
        let o = repair_in_place(src.path(), &backup, extra);
        assert_refused(&o, &taken, "a file stands where a salvaged run goes");
        assert_unchanged(&before, &snapshot(src.path()));
        assert!(!backup.exists());
    }
    // --output leaves the refused run out (the source keeps it); per-segment in place
    // is not affected (no run, the orphan is removed and backed up).
    let (code, v) = check_json(src.path(), &["--policy", "salvage"]);
    assert_eq!(code, Some(1));
    assert!(v["logs"][0]["segments"][0]["salvaged"][0]["refused"].is_string());
    // Moved away, the run is written.
    fs::remove_file(&taken).unwrap();
    let o = repair_in_place(src.path(), &backup, &["--policy", "salvage"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(seg_path(&dir, 31, "log").exists());
    assert_eq!(check_code(src.path(), "per-segment"), Some(0));
}

/// A file that appears at a run's name after the plan (here: after the backup, before
/// the run is written) is never overwritten: the resume refuses, and finishes once it is gone.
#[cfg(feature = "fault-injection")]
#[test]
fn in_place_salvage_never_overwrites_a_file_that_appears_at_a_run_name() {
    let (master, _) = salvage_source();
    let (_out, want) = output_of(master.path(), "salvage");
    let src = clone_tree(master.path());
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("b");
    let args = in_place_args(src.path(), &backup, &["--policy", "salvage"]);
    let run_log = seg_path(&src.path().join("t/partition-0"), 31, "log");
    // The first step after the backed-up manifest: nothing applied yet.
    let mut step = 1;
    loop {
        let o = run_failing_at(&args, step);
        assert_eq!(o.status.code(), Some(86), "step {step}: {}", stderr(&o));
        let m: Option<Value> = fs::read(backup.join("recoverfs-backup.json"))
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap());
        if m.is_some_and(|m| m["state"] == "backed-up") {
            break;
        }
        step += 1;
        assert!(step < 40, "no backed-up state reached");
    }
    assert!(!run_log.exists());
    fs::write(&run_log, b"someone else's").unwrap();
    let o = run(&args);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("appeared where the salvaged run goes"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read(&run_log).unwrap(), b"someone else's");
    fs::remove_file(&run_log).unwrap();
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_trees_eq(
        &files_only(items(src.path())),
        &files_only(items(&want)),
        "resumed after the intruder left",
    );
}

/// One partition per damage shape the salvage rule handles differently; in place must
/// reach `--output`'s tree for each (the run indexes it plans from the source and
/// rebuilds from the backup copy must agree), and the result must check clean.
#[test]
fn in_place_salvage_equals_output_for_every_damage_shape() {
    let t = tempfile::tempdir().unwrap();
    let part = |name: &str| t.path().join(name).join("partition-0");
    let rewrite = |dir: &Path, log: &[u8]| fs::write(log_path(dir, 0), log).unwrap();

    // Cut-and-splice: 50 bytes deleted from inside record 10; later records moved.
    let d = part("splice");
    let w = write_segment(&d, 0, 60, 40);
    let mut log = w.log.clone();
    let at = position_of(&w, 10) + 20;
    log.drain(at..at + 50);
    rewrite(&d, &log);

    // A value that holds an encoded record with a plausible offset, after garbage.
    let d = part("decoy");
    let mut w = SegmentWriter::new(0);
    for i in 0..40u64 {
        let value = if i == 12 {
            let mut inner = Vec::new();
            let fake = Record {
                offset: 11,
                timestamp: 5,
                key: b"fake".to_vec(),
                value: vec![7; 20],
            };
            fake.encode_into(&mut inner, [0; 4]);
            fake.encode_into(&mut inner, [0; 4]);
            inner
        } else {
            vec![i as u8; 30]
        };
        w.append(
            1_700_000_000_000 + i as i64,
            format!("k{i}").as_bytes(),
            &value,
        );
    }
    fs::create_dir_all(&d).unwrap();
    w.write_to(&d).unwrap();
    let mut log = w.log.clone();
    let at = position_of(&w, 11);
    log[at..at + 8].fill(0xee);
    rewrite(&d, &log);

    // Damage mid-segment, then the run ends in a preallocated (zero) tail.
    let d = part("zero-tail");
    let w = write_segment(&d, 0, 30, 40);
    let mut log = w.log.clone();
    let at = position_of(&w, 7);
    log[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    log.extend(std::iter::repeat_n(0u8, 3000));
    rewrite(&d, &log);

    // The last record alone after the damage (accepted: it reaches the end of the file),
    // and a lone index-confirmed record between two damaged ones.
    let d = part("lone");
    let w = write_segment(&d, 0, 30, 40);
    let mut log = w.log.clone();
    for r in [10, 12, 28] {
        let at = position_of(&w, r);
        log[at..at + 4].copy_from_slice(&3u32.to_be_bytes());
    }
    rewrite(&d, &log);

    // Two segments damaged in one log, the second run cut at the next segment's base.
    let d = part("two");
    let w = write_segment(&d, 0, 30, 40);
    let mut log = w.log.clone();
    let at = position_of(&w, 4);
    log[at..at + 40].fill(0x33);
    rewrite(&d, &log);
    let w = write_segment(&d, 30, 30, 40);
    write_segment(&d, 55, 10, 40);
    let mut log = w.log.clone();
    let at = position_of(&w, 3);
    log[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    fs::write(log_path(&d, 30), &log).unwrap();

    let (code, v) = check_json(t.path(), &["--policy", "salvage"]);
    assert_eq!(code, Some(1));
    let runs = v["summary"]["salvaged_runs"].as_u64().unwrap();
    // Each shape yields the runs it was built for (first offsets, by log).
    let firsts: Vec<(String, Vec<u64>)> = v["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let firsts = l["segments"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["salvaged"].as_array().unwrap())
                .map(|r| r["first_offset"].as_u64().unwrap())
                .collect();
            (l["path"].as_str().unwrap().to_string(), firsts)
        })
        .collect();
    let want_firsts = [
        ("decoy", vec![12]),
        ("lone", vec![11, 13, 29]),
        ("splice", vec![11]),
        ("two", vec![5, 34]),
        ("zero-tail", vec![8]),
    ]
    .map(|(n, f)| (format!("{n}/partition-0"), f));
    assert_eq!(firsts, want_firsts);
    assert_eq!(runs, 8);
    let (_out, want) = output_of(t.path(), "salvage");
    let src = clone_tree(t.path());
    let originals = items(src.path());
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("b");
    let o = repair_in_place(src.path(), &backup, &["--policy", "salvage"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_trees_eq(
        &files_only(items(src.path())),
        &files_only(items(&want)),
        "every damage shape",
    );
    let m = assert_backup_complete(&backup, &originals);
    let salvaged = entries(&m)
        .iter()
        .filter(|e| e["action"] == "salvage")
        .count() as u64;
    assert_eq!(salvaged, 3 * runs);
    for policy in ["per-segment", "salvage"] {
        assert_eq!(check_code(src.path(), policy), Some(0), "{policy}");
    }
}
