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
            !text.contains(&title) && !text.contains("Inspect with"),
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

/// Bug: `check /var/log` reported "3 log(s), 0 segment(s) … the log is clean" (exit 0),
/// and `repair` would copy it: any name ending in `.log` made a directory a Takhin log.
/// Fixed on branch `cli` (issue 11, finding 1): only `<20 digits>.log|.index|.timeindex`
/// names make a log; other `*.log` names are reported only inside a real log.
#[test]
fn a_directory_of_ordinary_log_files_is_not_a_takhin_log() {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("syslog.log"), b"Nov 26 kernel: hello\n").unwrap();
    fs::create_dir(t.path().join("apt")).unwrap();
    fs::write(t.path().join("apt/history.log"), b"Start-Date: x\n").unwrap();
    fs::write(t.path().join("apt/123.log"), b"x\n").unwrap();
    let out = check_cli(t.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("no Takhin log here"),
        "{}",
        stderr(&out)
    );
    // Beside a real segment, such a name is still reported as unrecognized.
    write_segment(&t.path().join("apt"), 0, 3, 10);
    let (code, r) = check_json(t.path(), &[]);
    assert_eq!(code, Some(0));
    assert_eq!(r["summary"]["logs"], 1);
    assert_eq!(r["logs"][0]["unrecognized"].as_array().unwrap().len(), 2);
}

/// Bug: under `strict` and `point-in-time` the per-log lines contradicted the summary:
/// records of hidden or refused segments counted, "bytes cut" for a segment the view
/// refuses whole, `next offset 0`, and INDEX lines saying "rebuilt in the view" for a
/// segment that is hidden or answers EIO. Fixed on branch `cli` (issue 11, finding 2).
#[test]
fn per_log_lines_agree_with_the_summary_under_every_policy() {
    let src = damaged();
    let strict = stdout(&check_cli(src.path(), &["--policy", "strict"]));
    for line in strict.lines().filter(|l| l.contains(".log:")) {
        assert!(!line.contains("bytes cut"), "{line}");
    }
    assert!(!strict.contains("rebuilt in the view"), "{strict}");
    for line in strict.lines().filter(|l| l.contains("next offset 0:")) {
        assert!(!line.contains("refused"), "{line}");
    }
    let (_, j) = check_json(src.path(), &["--policy", "strict"]);
    let served: u64 = strict
        .lines()
        .filter(|l| !l.starts_with(' ') && l.contains(" segment(s), "))
        .filter(|l| !l.starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| {
            l.split(" segment(s), ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        served,
        j["summary"]["records"].as_u64().unwrap(),
        "{strict}"
    );
    let pit = stdout(&check_cli(src.path(), &["--policy", "point-in-time"]));
    for line in pit.lines().filter(|l| l.starts_with("  HIDDEN")) {
        assert!(
            line.contains(" from ") || line.contains("no valid record"),
            "{line}"
        );
    }
}

/// Bug: the "Next:" commands failed when pasted: `repair --policy strict` (refuses by
/// design), `mount X.log /mnt/view` for a one-segment check, a `/mnt/view` that does
/// not exist, unquoted paths with spaces. Fixed on branch `cli` (issue 11, finding 3).
#[test]
fn next_hints_can_be_pasted() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("my data/p 0");
    write_segment(&dir, 0, 5, 20);
    cut_tail(&log_path(&dir, 0), 7);
    for (target, policy) in [(dir.clone(), "per-segment"), (log_path(&dir, 0), "strict")] {
        let text = stdout(&check_cli(&target, &["--policy", policy]));
        let next = text.lines().last().unwrap();
        assert!(!next.contains("--policy strict"), "{next}");
        assert!(next.contains("mkdir -p /mnt/recoverfs && "), "{next}");
        assert!(next.contains(&format!("'{}'", dir.display())), "{next}");
        assert!(!next.contains(".log /mnt"), "{next}");
        // The repair command, pasted into a shell, works.
        let repair = next
            .split('`')
            .find(|c| c.starts_with("recoverfs repair"))
            .unwrap();
        let cmd = repair.replacen("recoverfs", &format!("'{}'", bin().display()), 1);
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .output()
            .unwrap();
        assert!(o.status.success(), "{cmd}: {}", stderr(&o));
        fs::remove_dir_all(format!("{}.repaired", dir.display())).unwrap();
    }
}

/// Bug: the text report never said when data was lost; timestamps were only in the JSON.
/// Fixed on branch `cli` (issue 11, finding 13): the last kept record's time per cut.
#[test]
fn the_text_report_names_the_time_of_each_cut() {
    let t = tempfile::tempdir().unwrap();
    let w = write_segment(t.path(), 0, 5, 20);
    cut_tail(&log_path(t.path(), 0), 7);
    let last_kept = 1_700_000_000_000i64 + 3;
    let text = stdout(&check_cli(t.path(), &[]));
    let want = format!(
        "records after {} are lost",
        recoverfs::dump::iso8601_ms(last_kept)
    );
    assert!(text.contains(&want), "{text}");
    drop(w);
}
