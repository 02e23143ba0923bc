//! `repair`: the written tree against an expectation computed here from the source bytes and
//! `check --json`, in-place against `--output`, the backup, crash safety, and every refusal.

mod common;

use common::{age_atimes, assert_unchanged, bin, fixture_copy, snapshot};
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const POLICIES: [&str; 2] = ["per-segment", "point-in-time"];

fn run(args: &[&OsStr]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("RECOVERFS_TEST_FAIL_AT")
        .output()
        .unwrap()
}

fn repair(args: &[&OsStr]) -> Output {
    let mut a: Vec<&OsStr> = vec![OsStr::new("repair")];
    a.extend_from_slice(args);
    run(&a)
}

fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

/// A copy of a tree with its modes, times and symlinks (`cp -a`), so that two copies
/// of one damaged tree can be repaired two ways and compared, mtimes included.
fn clone_tree(src: &Path) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let o = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(t.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cp -a: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    t
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn check_json(dir: &Path, policy: &str) -> (i32, Value) {
    let o = run(&[
        os("check"),
        dir.as_os_str(),
        os("--json"),
        os("--policy"),
        os(policy),
    ]);
    (
        o.status.code().unwrap(),
        serde_json::from_slice(&o.stdout).expect("check --json prints JSON"),
    )
}

fn check_code(dir: &Path, policy: &str) -> i32 {
    run(&[os("check"), dir.as_os_str(), os("--policy"), os(policy)])
        .status
        .code()
        .unwrap()
}

/// Positions of the records of a clean `.log`, from their size fields.
fn record_positions(log: &[u8]) -> Vec<usize> {
    let mut out = vec![];
    let mut p = 0;
    while p + 4 <= log.len() {
        out.push(p);
        p += 4 + u32::from_be_bytes(log[p..p + 4].try_into().unwrap()) as usize;
    }
    out
}

fn seg(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// Bases of a partition's segments, in order.
fn bases(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix(".log").map(|b| b.parse().unwrap())
        })
        .collect();
    v.sort();
    v
}

/// The fixture data directory with one of each kind of damage, plus a symlink and a
/// non-UTF-8 name to pass through.
fn damaged() -> tempfile::TempDir {
    let t = fixture_copy("data");
    let root = t.path();
    // A .log cut mid-record in the middle of a log: mid-log incomplete-record, then a gap.
    let p0 = root.join("orders/partition-0");
    let b0 = bases(&p0);
    let log = seg(&p0, b0[1], "log");
    let len = fs::metadata(&log).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(len - 50)
        .unwrap();
    // A zero-filled tail (preallocated space) on the last segment of a log.
    let p1 = root.join("orders/partition-1");
    let b1 = bases(&p1);
    let last = seg(&p1, *b1.last().unwrap(), "log");
    let mut bytes = fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    fs::write(&last, bytes).unwrap();
    // A middle segment removed: a gap.
    for ext in ["log", "index", "timeindex"] {
        fs::remove_file(seg(&p1, b1[2], ext)).unwrap();
    }
    // A flipped offset inside a segment: offset-mismatch at record 3.
    let e0 = root.join("events/partition-0");
    let be = bases(&e0);
    let flip = seg(&e0, be[2], "log");
    let mut bytes = fs::read(&flip).unwrap();
    let at = record_positions(&bytes)[3] + 4 + 7;
    bytes[at] ^= 0x40;
    fs::write(&flip, bytes).unwrap();
    // A deleted index (rebuilt in the view).
    fs::remove_file(seg(&e0, be[1], "index")).unwrap();
    // An orphan index with no .log.
    fs::write(
        seg(&root.join("orders/partition-2"), 500, "index"),
        [7u8; 32],
    )
    .unwrap();
    // Passed through: a symlink, a file with a non-UTF-8 name, an odd mode.
    std::os::unix::fs::symlink("partition-0", root.join("events/current")).unwrap();
    let odd = root
        .join("orders")
        .join(OsStr::from_bytes(b"notes-\xff.txt"));
    fs::write(&odd, b"operator notes\n").unwrap();
    fs::set_permissions(&odd, fs::Permissions::from_mode(0o600)).unwrap();
    t
}

/// One entry of a tree, as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Dir {
        mode: u32,
    },
    File {
        bytes: Vec<u8>,
        mode: u32,
        mtime: (i64, i64),
    },
    Symlink(PathBuf),
}

fn items(root: &Path) -> BTreeMap<PathBuf, Item> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let m = fs::symlink_metadata(e.path()).unwrap();
            let item = if m.is_dir() {
                stack.push(r.clone());
                Item::Dir {
                    mode: m.mode() & 0o7777,
                }
            } else if m.file_type().is_symlink() {
                Item::Symlink(fs::read_link(e.path()).unwrap())
            } else if m.is_file() {
                Item::File {
                    bytes: fs::read(e.path()).unwrap(),
                    mode: m.mode() & 0o7777,
                    mtime: (m.mtime(), m.mtime_nsec()),
                }
            } else {
                continue; // FIFOs and the like are never part of a repaired tree
            };
            out.insert(r, item);
        }
    }
    out
}

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

/// Names the first entry where two trees differ.
fn assert_trees_eq(got: &BTreeMap<PathBuf, Item>, want: &BTreeMap<PathBuf, Item>, what: &str) {
    let gk: Vec<_> = got.keys().collect();
    let wk: Vec<_> = want.keys().collect();
    assert_eq!(gk, wk, "{what}: the set of entries differs");
    for (p, w) in want {
        let g = &got[p];
        if g != w {
            let short = |i: &Item| match i {
                Item::File { bytes, mode, mtime } => {
                    format!("file {} bytes mode {mode:o} mtime {mtime:?}", bytes.len())
                }
                other => format!("{other:?}"),
            };
            panic!(
                "{what}: {} differs: got {}, want {}",
                p.display(),
                short(g),
                short(w)
            );
        }
    }
}

#[test]
fn output_equals_the_expected_view_under_each_policy() {
    for policy in POLICIES {
        let src = damaged();
        // A FIFO: never opened, left out of the repaired tree.
        let fifo =
            std::ffi::CString::new(src.path().join("events/fifo").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let (code, report) = check_json(src.path(), policy);
        assert_eq!(code, 1, "the damaged tree must differ from its view");
        let want = expected(src.path(), &report);
        age_atimes(src.path());
        let before = snapshot(src.path());

        let out = tempfile::tempdir().unwrap();
        let new = out.path().join("repaired");
        let o = repair(&[
            src.path().as_os_str(),
            os("--output"),
            new.as_os_str(),
            os("--policy"),
            os(policy),
        ]);
        assert!(o.status.success(), "{policy}: {}", stderr(&o));
        let text = stdout(&o);
        assert!(text.starts_with("recoverfs repair "), "{text}");
        assert!(
            text.contains("TRUNCATED") && text.contains("Wrote "),
            "{text}"
        );
        // check's own title and advice (to run a repair) are not repeated.
        let title = format!("recoverfs check {} (policy", src.path().display());
        assert!(
            !text.contains(&title) && !text.contains("NEW_DIR"),
            "{text}"
        );

        assert_unchanged(&before, &snapshot(src.path()));
        assert_trees_eq(&items(&new), &want, policy);
        // The top directory and the passed-through files keep their mode and mtime.
        let odd = Path::new("orders").join(OsStr::from_bytes(b"notes-\xff.txt"));
        assert!(matches!(&items(&new)[&odd], Item::File { mode: 0o600, .. }));
        assert_eq!(check_code(&new, policy), 0, "{policy}: check on the output");
        // Nothing but the finished tree is left beside it.
        let names: Vec<_> = fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsStr::new("repaired").to_os_string()]);
    }
}

#[test]
fn output_json_prints_the_report() {
    let src = damaged();
    let out = tempfile::tempdir().unwrap();
    let new = out.path().join("r");
    let o = repair(&[
        src.path().as_os_str(),
        os("--output"),
        new.as_os_str(),
        os("--json"),
    ]);
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
    let o = repair(&[src.path().as_os_str(), os("--output"), new.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, report) = check_json(src.path(), "per-segment");
    assert_trees_eq(&items(&new), &expected(src.path(), &report), "clean seed");
}

#[test]
fn strict_refuses_damage_and_writes_nothing_but_copies_a_clean_tree() {
    let src = damaged();
    let before = snapshot(src.path());
    let out = tempfile::tempdir().unwrap();
    let new = out.path().join("r");
    let o = repair(&[
        src.path().as_os_str(),
        os("--output"),
        new.as_os_str(),
        os("--policy"),
        os("strict"),
    ]);
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
    let o = repair(&[
        clean.path().as_os_str(),
        os("--output"),
        new.as_os_str(),
        os("--policy"),
        os("strict"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_trees_eq(
        &items(&new),
        &items(clean.path()),
        "strict copy of a clean tree",
    );
    assert_eq!(check_code(&new, "strict"), 0);
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
    let o = repair(&[src.path().as_os_str(), os("--output"), full.as_os_str()]);
    assert_refused(&o, &full, "already exists and is not empty");
    assert_eq!(fs::read(full.join("x")).unwrap(), b"x");

    let inside = src.path().join("orders/repaired");
    let o = repair(&[src.path().as_os_str(), os("--output"), inside.as_os_str()]);
    assert_refused(&o, &inside, "is inside the data directory");
    let o = repair(&[
        src.path().as_os_str(),
        os("--output"),
        src.path().as_os_str(),
    ]);
    assert_refused(&o, src.path(), "is inside the data directory");

    let data = src.path().join("orders");
    let o = repair(&[data.as_os_str(), os("--output"), src.path().as_os_str()]);
    assert_refused(
        &o,
        &data,
        "the data directory is inside the output directory",
    );

    let file = src.path().join("events/topic-metadata.json");
    let o = repair(&[
        file.as_os_str(),
        os("--output"),
        out.path().join("n").as_os_str(),
    ]);
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
        let args = [
            OsStr::new("repair"),
            src.path().as_os_str(),
            os("--output"),
            new.as_os_str(),
        ];
        let o = Command::new(bin())
            .args(args)
            .env("RECOVERFS_TEST_FAIL_AT", step.to_string())
            .output()
            .unwrap();
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
        let names: Vec<_> = fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsStr::new("r").to_os_string()], "step {step}");
        step += 1;
    }
}

/// `--output` of a copy of `damaged` under `policy`: the tree in-place must reach.
fn output_of(damaged: &Path, policy: &str) -> (tempfile::TempDir, PathBuf) {
    let src = clone_tree(damaged);
    let out = tempfile::tempdir().unwrap();
    let new = out.path().join("r");
    let o = repair(&[
        src.path().as_os_str(),
        os("--output"),
        new.as_os_str(),
        os("--policy"),
        os(policy),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    (out, new)
}

/// Directory modes aside, the trees' entries (in place, renames move directory mtimes).
fn files_only(m: BTreeMap<PathBuf, Item>) -> BTreeMap<PathBuf, Item> {
    m.into_iter()
        .filter(|(_, i)| !matches!(i, Item::Dir { .. }))
        .collect()
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

#[test]
fn in_place_equals_output_keeps_every_original_and_is_idempotent() {
    for policy in POLICIES {
        let master = damaged();
        let (_out, want) = output_of(master.path(), policy);
        let src = clone_tree(master.path());
        let originals = items(src.path());
        let bk = tempfile::tempdir().unwrap();
        let backup = bk.path().join("backup");
        let args = [
            src.path().as_os_str(),
            os("--in-place"),
            os("--backup"),
            backup.as_os_str(),
            os("--policy"),
            os(policy),
        ];
        let o = repair(&args);
        assert!(o.status.success(), "{policy}: {}", stderr(&o));
        assert!(stdout(&o).contains("Repaired in place"), "{}", stdout(&o));
        assert_trees_eq(
            &files_only(items(src.path())),
            &files_only(items(&want)),
            policy,
        );
        assert_eq!(check_code(src.path(), policy), 0);

        let m = assert_backup_complete(&backup, &originals);
        // Every original that changed or went is listed, hence backed up.
        let after = items(src.path());
        let listed: Vec<PathBuf> = m["entries"]
            .as_array()
            .unwrap()
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
        assert!(m["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "remove"));
        assert!(m["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "truncate"));

        // A second run changes nothing and says so.
        let before = snapshot(src.path());
        let o = repair(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("Nothing to repair"), "{}", stdout(&o));
        assert_unchanged(&before, &snapshot(src.path()));
        // With a fresh backup directory too, which it then does not create.
        let other = bk.path().join("other");
        let o = repair(&[
            src.path().as_os_str(),
            os("--in-place"),
            os("--backup"),
            other.as_os_str(),
            os("--policy"),
            os(policy),
        ]);
        assert!(stdout(&o).contains("Nothing to repair"), "{}", stdout(&o));
        assert!(!other.exists());
    }
}

#[test]
fn dry_run_prints_the_plan_and_touches_nothing() {
    let src = damaged();
    age_atimes(src.path());
    let before = snapshot(src.path());
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("b");
    let o = repair(&[
        src.path().as_os_str(),
        os("--in-place"),
        os("--backup"),
        backup.as_os_str(),
        os("--dry-run"),
        os("--policy"),
        os("point-in-time"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
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
    assert_unchanged(&before, &snapshot(src.path()));
}

#[test]
fn in_place_on_a_clean_tree_changes_nothing() {
    let src = fixture_copy("data");
    let before = snapshot(src.path());
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("b");
    let o = repair(&[
        src.path().as_os_str(),
        os("--in-place"),
        os("--backup"),
        backup.as_os_str(),
    ]);
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

    let o = repair(&[src.path().as_os_str(), os("--in-place")]);
    assert_refused(&o, src.path(), "--in-place needs --backup BACKUP_DIR");

    let inside = src.path().join("backup");
    let o = repair(&[
        src.path().as_os_str(),
        os("--in-place"),
        os("--backup"),
        inside.as_os_str(),
    ]);
    assert_refused(&o, &inside, "is inside the data directory");

    let foreign = bk.path().join("foreign");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("photo.jpg"), b"x").unwrap();
    let o = repair(&[
        src.path().as_os_str(),
        os("--in-place"),
        os("--backup"),
        foreign.as_os_str(),
    ]);
    assert_refused(
        &o,
        &foreign,
        "holds a different backup (not empty, and no recoverfs-backup.json)",
    );

    // The backup of another data directory.
    let other = damaged();
    let theirs = bk.path().join("theirs");
    let o = repair(&[
        other.path().as_os_str(),
        os("--in-place"),
        os("--backup"),
        theirs.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = repair(&[
        src.path().as_os_str(),
        os("--in-place"),
        os("--backup"),
        theirs.as_os_str(),
    ]);
    assert_refused(&o, &theirs, "holds a different backup (of ");
    // The same data directory under another policy.
    let o = repair(&[
        other.path().as_os_str(),
        os("--in-place"),
        os("--backup"),
        theirs.as_os_str(),
        os("--policy"),
        os("point-in-time"),
    ]);
    assert_refused(&o, &theirs, "under per-segment");

    // A repair already running on the same tree (it holds a lock on the directory).
    {
        use std::os::fd::AsRawFd;
        let held = fs::File::open(src.path()).unwrap();
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
        let o = repair(&[
            src.path().as_os_str(),
            os("--in-place"),
            os("--backup"),
            bk.path().join("busy").as_os_str(),
        ]);
        assert_refused(&o, src.path(), "another repair is running here");
        assert!(!bk.path().join("busy").exists());
    }

    // Strict: exit 1, says why.
    let o = repair(&[
        src.path().as_os_str(),
        os("--in-place"),
        os("--backup"),
        bk.path().join("s").as_os_str(),
        os("--policy"),
        os("strict"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("policy strict repairs nothing"),
        "{}",
        stderr(&o)
    );
    assert!(!bk.path().join("s").exists());

    // --backup belongs to --in-place, --dry-run too (clap's usage error, exit 2).
    let o = repair(&[
        src.path().as_os_str(),
        os("--output"),
        bk.path().join("o").as_os_str(),
        os("--backup"),
        foreign.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    assert_unchanged(&before, &snapshot(src.path()));
}

/// The seed example, damaged: zeros after a middle segment (damage that loses no record,
/// so once that segment is cut a fresh analysis would no longer hide what follows under
/// point-in-time: only the manifest knows), a torn last segment, a missing index, an orphan.
fn small_damaged() -> tempfile::TempDir {
    let t = fixture_copy("seed-example");
    let d = t.path();
    let b = bases(d);
    let mut bytes = fs::read(seg(d, b[1], "log")).unwrap();
    bytes.extend_from_slice(&[0u8; 100]);
    fs::write(seg(d, b[1], "log"), bytes).unwrap();
    let last = seg(d, b[3], "log");
    let len = fs::metadata(&last).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 9)
        .unwrap();
    fs::remove_file(seg(d, b[2], "index")).unwrap();
    fs::write(seg(d, 9000, "timeindex"), [1u8; 16]).unwrap();
    t
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
            let args = [
                OsStr::new("repair"),
                src.path().as_os_str(),
                os("--in-place"),
                os("--backup"),
                backup.as_os_str(),
                os("--policy"),
                os(policy),
            ];
            let o = Command::new(bin())
                .args(args)
                .env("RECOVERFS_TEST_FAIL_AT", step.to_string())
                .output()
                .unwrap();
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
            let o = run(&args[..]);
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
    common::copy_tree(&common::fixtures().join("seed-example"), &dir);
    let b = bases(&dir);
    let last = seg(&dir, b[3], "log");
    let len = fs::metadata(&last).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    fs::write(seg(&dir, 777, "index"), [0u8; 16]).unwrap();
    let (_o, want) = output_of(master.path(), "per-segment");
    let src = clone_tree(master.path());
    let originals = items(src.path());
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("b");
    let o = repair(&[
        src.path().as_os_str(),
        os("--in-place"),
        os("--backup"),
        backup.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_trees_eq(
        &files_only(items(src.path())),
        &files_only(items(&want)),
        "non-UTF-8",
    );
    let m: Value =
        serde_json::from_slice(&fs::read(backup.join("recoverfs-backup.json")).unwrap()).unwrap();
    let orphan = m["entries"]
        .as_array()
        .unwrap()
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

#[cfg(feature = "fault-injection")]
#[test]
fn a_tampered_manifest_is_refused_before_anything_is_touched() {
    // A run killed right after its manifest was written leaves a backup to resume from.
    let src = small_damaged();
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("b");
    let args = [
        src.path().as_os_str(),
        os("--in-place"),
        os("--backup"),
        backup.as_os_str(),
    ];
    let o = Command::new(bin())
        .arg("repair")
        .args(args)
        .env("RECOVERFS_TEST_FAIL_AT", "2")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let manifest = backup.join("recoverfs-backup.json");
    let good: Value = serde_json::from_slice(&fs::read(&manifest).unwrap()).unwrap();
    assert!(good["entries"].as_array().is_some_and(|e| !e.is_empty()));
    let before = snapshot(src.path());
    type Tamper = fn(&mut Value);
    let tamper: [(&str, Tamper); 3] = [
        ("is not a path inside the data directory", |m| {
            m["entries"][0]["path"] = "../../etc/passwd".into()
        }),
        ("is not a path inside the data directory", |m| {
            m["entries"][0]["path"] = "/etc/passwd".into()
        }),
        ("does not match its replacement", |m| {
            m["entries"][0]["new"] = Value::Null;
            m["entries"][0]["action"] = "truncate".into();
        }),
    ];
    for (want, f) in tamper {
        let mut m = good.clone();
        f(&mut m);
        fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
        let o = repair(&args);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("recoverfs-backup.json"),
            "{}",
            stderr(&o)
        );
        assert_unchanged(&before, &snapshot(src.path()));
    }
    // The untampered manifest resumes and finishes.
    fs::write(&manifest, serde_json::to_vec(&good).unwrap()).unwrap();
    let o = repair(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(check_code(src.path(), "per-segment"), 0);
}

#[test]
fn a_root_recoverfs_entry_is_neither_copied_nor_removed() {
    let src = small_damaged();
    fs::write(src.path().join(".recoverfs"), b"not ours to touch").unwrap();
    let out = tempfile::tempdir().unwrap();
    let new = out.path().join("new");
    let o = repair(&[src.path().as_os_str(), os("--output"), new.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!new.join(".recoverfs").exists());
    let backup = out.path().join("backup");
    let o = repair(&[
        src.path().as_os_str(),
        os("--in-place"),
        os("--backup"),
        backup.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read(src.path().join(".recoverfs")).unwrap(),
        b"not ours to touch"
    );
    assert!(!backup.join(".recoverfs").exists());
}
