//! `repair`: the written tree against an expectation computed here from the source bytes and
//! `check --json`, in-place against `--output`, the backup, crash safety, and every refusal.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
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
    assert_refused(&o, src.path(), "is inside the data directory");

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
        let rel = PathBuf::from(e["path"].as_str().unwrap());
        if e["original"].is_null() {
            assert_eq!(e["action"], "create");
            assert!(!originals.contains_key(&rel));
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
