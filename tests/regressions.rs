//! One test per bug fixed so far, named for what the bug broke; each names its fix.
//!
//! A new fix adds its test here, as a named `#[test]` with a doc comment giving the
//! bug and the commit that fixed it.

mod common;

use common::mount::Mounted;
use common::*;
use recoverfs::engine::policy::Policy;
use recoverfs::view::ROOT_INO;
use std::ffi::OsStr;
use std::fs;

/// Bug: `repair` printed `check`'s own title ("recoverfs check DIR (policy ...") and
/// its advice to run a repair (naming `NEW_DIR`), because it dropped the first and
/// last lines of `check`'s text by position. Fixed in 3b40cce (by content), its
/// assertion corrected in f87a092.
#[test]
fn repair_does_not_repeat_checks_title_and_advice() {
    for policy in ["per-segment", "point-in-time"] {
        let src = damaged();
        let out = tempfile::tempdir().unwrap();
        let o = repair_output(
            src.path(),
            &out.path().join("repaired"),
            &["--policy", policy],
        );
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
    }
}

/// Bug: `check` on a directory holding no log at all gave it a clean bill (exit 0),
/// when the operator most likely pointed it at the wrong directory. Fixed in f812935
/// (exit 2, "no Takhin log here").
#[test]
fn a_directory_without_logs_is_an_error_not_a_clean_bill() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir(t.path().join("empty-topic")).unwrap();
    fs::write(t.path().join("topic-metadata.json"), b"{}").unwrap();
    let out = check_cli(t.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no Takhin log here"), "{err}");
}

/// Bug: a resumed `repair --in-place` trusted its backup manifest: entries whose path
/// escaped the data directory (`../..`, absolute) or that lacked their replacement
/// were applied. Fixed in 194de3c: such a manifest is refused before anything is touched.
#[cfg(feature = "fault-injection")]
#[test]
fn a_tampered_manifest_is_refused_before_anything_is_touched() {
    use serde_json::Value;
    use std::process::Command;
    // A run killed right after its manifest was written leaves a backup to resume from.
    let src = small_damaged();
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("b");
    let args = in_place_args(src.path(), &backup, &[]);
    let o = Command::new(bin())
        .args(&args)
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
        let o = run(&args);
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
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(check_code(src.path(), "per-segment"), Some(0));
}

/// Bug: `check` and `repair` took a mounted view's root `.recoverfs/` (its `raw/`
/// holds the damaged originals) for logs of the tree: a view did not check clean,
/// and repairing it copied the originals back. Fixed in 8f75dd1: a root `.recoverfs`
/// is recoverfs's own, and both skip it.
#[test]
fn a_mounted_view_checks_clean_and_repairs_without_its_metadata() {
    let src = damaged_tree();
    for policy in [Policy::PerSegment, Policy::PointInTime] {
        let m = Mounted::new(src.path(), &["--policy", policy.as_str()]);
        // The view is what a correct recovery leaves: check finds nothing to change,
        // and does not take `.recoverfs/raw/` (the damaged originals) for logs.
        let (code, v) = check_json(m.path(), &["--policy", policy.as_str()]);
        assert_eq!(code, Some(0), "{policy}: {v:#}");
        let logs = v["logs"].as_array().unwrap();
        assert!(!logs.is_empty());
        assert!(
            logs.iter()
                .all(|l| !l["path"].as_str().unwrap().starts_with(".recoverfs")),
            "{policy}: {v:#}"
        );
        // Repairing the view again writes the same tree, without the view's metadata.
        let dst = tempfile::tempdir().unwrap();
        let again = dst.path().join("again");
        let o = repair_output(m.path(), &again, &["--policy", policy.as_str()]);
        assert!(o.status.success(), "{policy}: {}", stderr(&o));
        assert!(!again.join(".recoverfs").exists());
        assert_eq!(
            tree_contents(&again, ".recoverfs"),
            tree_contents(m.path(), ".recoverfs"),
            "{policy}"
        );
    }
}

/// Bug: `repair` took a root `.recoverfs` entry of the source for an orphan, so
/// `--in-place` removed it. Fixed in ee410cb: it is neither copied by `--output` nor
/// removed in place.
#[test]
fn a_root_recoverfs_entry_is_neither_copied_nor_removed() {
    let src = small_damaged();
    fs::write(src.path().join(".recoverfs"), b"not ours to touch").unwrap();
    let out = tempfile::tempdir().unwrap();
    let new = out.path().join("new");
    let o = repair_output(src.path(), &new, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!new.join(".recoverfs").exists());
    let backup = out.path().join("backup");
    let o = repair_in_place(src.path(), &backup, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read(src.path().join(".recoverfs")).unwrap(),
        b"not ours to touch"
    );
    assert!(!backup.join(".recoverfs").exists());
}

/// Bug: a file that only grew was rescanned for reads inside its validated
/// prefix (fixed in 9f28573): a segment still being appended to was validated
/// again on every read, though an append does not move the bytes already validated.
#[test]
fn a_file_that_only_grew_is_not_rescanned_for_reads_inside_its_validated_prefix() {
    let t = tempfile::tempdir().unwrap();
    let mut w = write_log(t.path(), 0, 50);
    let v = view(t.path(), Policy::PerSegment);
    let a = v
        .lookup(ROOT_INO, OsStr::new("00000000000000000000.log"))
        .unwrap();
    let o = v.open(a.ino, false).unwrap();
    let old = w.log.len();
    w.append(9, b"k", b"appended");
    fs::write(t.path().join("00000000000000000000.log"), &w.log).unwrap();
    let before = v.validations();
    assert_eq!(v.read(o.fh, 0, 100).unwrap(), w.log[..100]);
    assert_eq!(
        v.validations(),
        before,
        "inside the validated prefix: no rescan"
    );
    assert_eq!(v.read(o.fh, 0, 1 << 20).unwrap(), w.log);
    assert_eq!(
        v.validations(),
        before + 1,
        "reaching its end: validated again"
    );
    assert!(w.log.len() > old);
}

/// Bug: `repair --output` listed the source's directories by path (`fs::read_dir`),
/// not through the door's read-only noatime clone, so every directory's atime moved
/// under `relatime`; the snapshots did not see it (they did not age directory atimes,
/// and listed directories themselves without `O_NOATIME`: `snapshot_all` does both). Fixed in f89231e
/// (repair reads the source only through `Source`): `check` and
/// `repair --output` leave every atime still, directories' included, and so does the
/// door without a clone (directories opened `O_NOATIME`). The in-place dry run too.
#[test]
fn check_and_repair_output_leave_directory_atimes_alone() {
    let src = damaged();
    age_all_atimes(src.path());
    let before = snapshot_all(src.path());
    let o = check_cli(src.path(), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let _ = check_json(src.path(), &["--policy", "point-in-time"]);
    assert_unchanged(&before, &snapshot_all(src.path()));
    let out = tempfile::tempdir().unwrap();
    for policy in ["per-segment", "point-in-time"] {
        let o = repair_output(src.path(), &out.path().join(policy), &["--policy", policy]);
        assert!(o.status.success(), "{policy}: {}", stderr(&o));
        assert_unchanged(&before, &snapshot_all(src.path()));
    }
    let o = repair_in_place(src.path(), &out.path().join("backup"), &["--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_unchanged(&before, &snapshot_all(src.path()));
    // The fallback door (no clone) lists every directory without moving its atime.
    let s = recoverfs::engine::source::Source::open_without_clone(src.path()).unwrap();
    for dir in ["", "orders", "orders/partition-0", "events/partition-0"] {
        assert!(!s.read_dir(std::path::Path::new(dir)).unwrap().is_empty());
    }
    assert_unchanged(&before, &snapshot_all(src.path()));
}

/// Bug: a directory named `x\nTRUNCATED   forged…` forged lines of `check`'s human
/// output, and escape sequences in names reached the terminal raw (in `check`, in
/// `repair`'s summaries and plan, and in error messages). Fixed in d1f97d8: human
/// text shows them as `\xNN`; the JSON report is unchanged (JSON escapes them itself).
#[test]
fn control_characters_in_names_are_escaped_in_human_output() {
    let t = tempfile::tempdir().unwrap();
    let evil = "x\nTRUNCATED   forged \x1b]0;pwned\x07\x1b[2J\u{9b}31m";
    let dir = t.path().join(evil);
    let w = write_segment(&dir, 0, 20, 30);
    cut_tail(&log_path(&dir, 0), 7);
    fs::remove_file(seg_path(&dir, 0, "index")).unwrap();
    drop(w);
    let raw = |s: &str| {
        s.contains('\x1b')
            || s.contains('\x07')
            || s.contains('\u{9b}')
            || s.lines().any(|l| l.starts_with("TRUNCATED   forged"))
    };
    let escaped = "x\\x0aTRUNCATED   forged \\x1b]0;pwned\\x07\\x1b[2J\\xc2\\x9b31m";

    let o = check_cli(t.path(), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(!raw(&text), "{text:?}");
    assert!(text.contains(escaped), "{text}");
    // Every line is one of ours: the title, a log line, an indented finding, totals, advice.
    for l in text.lines() {
        assert!(
            l.starts_with("recoverfs check ")
                || l.starts_with(&format!("{escaped}:"))
                || l.starts_with("  ")
                || l.contains(" log(s), ")
                || l.starts_with("Next: "),
            "{l:?}"
        );
    }
    // The JSON report keeps the name itself (JSON escapes the control characters).
    let (_, v) = check_json(t.path(), &[]);
    assert_eq!(v["logs"][0]["path"].as_str(), Some(evil));

    let out = tempfile::tempdir().unwrap();
    let new = out.path().join("new\x1b[1m");
    let o = repair_output(t.path(), &new, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !raw(&stdout(&o)) && stdout(&o).contains(escaped),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("new\\x1b[1m"), "{}", stdout(&o));
    // An error naming the path: one line on stderr, escaped.
    let o = repair_output(t.path(), &new, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!raw(&stderr(&o)), "{:?}", stderr(&o));
    assert!(stderr(&o).contains("new\\x1b[1m"), "{}", stderr(&o));
    let o = check_cli(&t.path().join("gone\n\x1b[2J"), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        !raw(&stderr(&o)) && stderr(&o).trim_end().lines().count() == 1,
        "{:?}",
        stderr(&o)
    );

    let backup = out.path().join("backup");
    for extra in [&["--dry-run"][..], &[]] {
        let o = repair_in_place(t.path(), &backup, extra);
        assert!(o.status.success(), "{}", stderr(&o));
        let text = stdout(&o);
        assert!(!raw(&text), "{text:?}");
        assert!(
            text.contains(&format!("  TRUNCATE {escaped}/00000000000000000000.log")),
            "{text}"
        );
    }
}

/// Bug: a resumed `repair --in-place` replaced originals without checking that their
/// copies were still in the backup: with one copy deleted between the phases, the
/// original was replaced and then existed nowhere. Fixed in 73b8255: a resume checks
/// every copy against the manifest's size and CRC-32 before touching anything.
#[cfg(feature = "fault-injection")]
#[test]
fn a_resumed_in_place_repair_reverifies_every_backup_copy() {
    use serde_json::Value;
    use std::process::Command;
    let src = small_damaged();
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("b");
    let args = in_place_args(src.path(), &backup, &[]);
    // Killed in phase 2, before its first replacement is renamed over an original.
    let mut step = 1;
    loop {
        let o = Command::new(bin())
            .args(&args)
            .env("RECOVERFS_TEST_FAIL_AT", step.to_string())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(86), "step {step}: {}", stderr(&o));
        if stderr(&o).contains("replacement written, not yet renamed over the original") {
            break;
        }
        fs::remove_dir_all(&backup).unwrap();
        step += 1;
        assert!(step < 40, "no apply step found");
    }
    let m: Value =
        serde_json::from_slice(&fs::read(backup.join("recoverfs-backup.json")).unwrap()).unwrap();
    assert_eq!(m["state"], "backed-up");
    // The last original the run replaces loses its copy.
    let last = m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["original"].is_object())
        .unwrap();
    let rel = last["path"].as_str().unwrap();
    let copy = backup.join(rel);
    let saved = fs::read(&copy).unwrap();
    fs::remove_file(&copy).unwrap();
    let before = snapshot(src.path());
    let o = run(&args);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&copy.display().to_string()) && stderr(&o).contains("is missing"),
        "{}",
        stderr(&o)
    );
    assert_unchanged(&before, &snapshot(src.path()));
    // A copy that differs from the original is refused the same way.
    let mut bad = saved.clone();
    bad[0] ^= 1;
    fs::write(&copy, &bad).unwrap();
    let o = run(&args);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("CRC-32"), "{}", stderr(&o));
    assert_unchanged(&before, &snapshot(src.path()));
    // With the copy restored, the resume finishes.
    fs::write(&copy, &saved).unwrap();
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(check_code(src.path(), "per-segment"), Some(0));
}

/// A read-only bind mount of `src`, removed on drop (even when the test fails).
struct ReadOnlyBind(std::path::PathBuf);

impl ReadOnlyBind {
    /// None where bind mounts are not permitted (not root).
    fn new(src: &std::path::Path, at: &std::path::Path) -> Option<ReadOnlyBind> {
        use std::process::Command;
        fs::create_dir_all(at).unwrap();
        let ok = |args: &[&OsStr]| {
            Command::new("mount")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(&[OsStr::new("--bind"), src.as_os_str(), at.as_os_str()]) {
            return None;
        }
        let guard = ReadOnlyBind(at.to_path_buf());
        let ro = ok(&[
            OsStr::new("-o"),
            OsStr::new("remount,bind,ro"),
            at.as_os_str(),
        ]);
        ro.then_some(guard)
    }
}

impl Drop for ReadOnlyBind {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Bug: `repair --in-place` on a read-only source copied every original into the
/// backup (50 MB in the report) before its first write failed, and every rerun failed
/// the same way. Fixed in 81c73d7: the directories it would change are probed (`statvfs`,
/// `faccessat`) before anything is copied, in the dry run too.
#[test]
fn a_read_only_source_is_refused_before_anything_is_copied() {
    let src = small_damaged();
    let t = tempfile::tempdir().unwrap();
    let Some(ro) = ReadOnlyBind::new(src.path(), &t.path().join("ro")) else {
        eprintln!("no bind mount permitted here (not root?): not tested");
        return;
    };
    let before = snapshot(src.path());
    let backup = t.path().join("backup");
    for extra in [&["--dry-run"][..], &[], &[]] {
        let o = repair_in_place(&ro.0, &backup, extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("read-only"), "{}", stderr(&o));
        assert_eq!(stderr(&o).trim_end().lines().count(), 1, "{}", stderr(&o));
        assert!(!backup.exists(), "{extra:?}: a backup was written");
    }
    drop(ro);
    assert_unchanged(&before, &snapshot(src.path()));
    // Writable again, the same command repairs.
    let o = repair_in_place(src.path(), &backup, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Bug: a FIFO where a rebuilt index goes was planned as a `CREATE` by the dry run,
/// and made every `--in-place` run fail after the backup ("holds neither its original
/// nor its repair"), forever. Fixed in cdc35b0: refused up front, in the dry run too.
#[test]
fn a_fifo_where_a_rebuilt_index_goes_is_refused_up_front() {
    let src = small_damaged();
    let b = bases(src.path());
    let index = seg_path(src.path(), b[2], "index");
    assert!(!index.exists());
    nix::unistd::mkfifo(&index, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let before = snapshot(src.path());
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("b");
    for extra in [&["--dry-run"][..], &[]] {
        let o = repair_in_place(src.path(), &backup, extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&index.display().to_string()) && err.contains("FIFO"),
            "{err}"
        );
        assert!(!backup.exists());
        assert_unchanged(&before, &snapshot(src.path()));
    }
    // `--output` writes the rebuilt index and reads nothing from the FIFO.
    let new = bk.path().join("new");
    let o = repair_output(src.path(), &new, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::metadata(new.join(index.file_name().unwrap()))
        .unwrap()
        .is_file());
}
