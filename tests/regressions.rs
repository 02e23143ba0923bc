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

/// Bug: `dump` exited 0 (clean) on a damaged segment when `--limit` stopped it or its
/// reader closed the pipe, dumped one file only, no index files, 32-byte previews only,
/// and refused a file not named by its offset (a carved file). Fixed on branch `cli`
/// (issue 11, finding 4): the rest is examined unprinted, and the new flags.
#[test]
fn dump_exits_truthfully_past_its_limit_and_a_closed_pipe() {
    let t = tempfile::tempdir().unwrap();
    write_segment(t.path(), 0, 50, 40);
    cut_tail(&log_path(t.path(), 0), 9);
    let seg = log_path(t.path(), 0);
    assert_eq!(dump(&seg, &["--limit", "1"]).status.code(), Some(1));
    // A reader that leaves after one line (`| head -1`).
    let sh = format!(
        "'{}' dump '{}'; echo $? >&2",
        bin().display(),
        seg.display()
    );
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("({sh}) | head -c 10 >/dev/null"))
        .output()
        .unwrap();
    assert_eq!(stderr(&o).trim(), "1", "{}", stderr(&o));
    // A carved copy, dumped with its base offset; several files in one call.
    let carved = t.path().join("carved.bin");
    fs::copy(&seg, &carved).unwrap();
    assert_eq!(dump(&carved, &[]).status.code(), Some(2));
    let o = run(argv(&[
        &"dump",
        &carved,
        &log_path(t.path(), 0),
        &"--base-offset",
        &"0",
        &"--values",
        &"full",
    ]));
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert_eq!(text.matches("== ").count(), 2, "{text}");
    assert_eq!(text.matches("end: valid prefix ends").count(), 2, "{text}");
    assert!(!text.contains('…'), "--values full cuts nothing: {text}");
    // Index files entry by entry, checked against their .log.
    let o = dump(&seg_path(t.path(), 0, "index"), &["--verify-index"]);
    assert_eq!(o.status.code(), Some(1), "the original index is too long");
    let text = stdout(&o);
    assert!(
        text.starts_with("entry 0 @0: offset 0 position 0  ok"),
        "{text}"
    );
    assert!(text.contains("EXTRA"), "{text}");
    assert!(text.contains("against the .log: too long"), "{text}");
    let o = dump(&seg_path(t.path(), 0, "timeindex"), &["--json"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o).lines().count(), 51);
}

/// Bug: a mount's `.index`/`.timeindex` carried the `.log`'s xattrs (its
/// `original_bytes`, `status=clean` on an index that was rebuilt). Fixed on branch
/// `cli` (issue 11, finding 5): each index file has its own.
#[test]
fn index_files_carry_their_own_xattrs() {
    let t = tempfile::tempdir().unwrap();
    write_segment(t.path(), 0, 10, 30);
    fs::remove_file(seg_path(t.path(), 0, "index")).unwrap();
    let v = view(t.path(), Policy::PerSegment);
    let get = |name: &str, x: &str| {
        let a = v.lookup(ROOT_INO, OsStr::new(name)).unwrap();
        String::from_utf8(v.getxattr(a.ino, OsStr::new(x)).unwrap()).unwrap()
    };
    let idx = "00000000000000000000.index";
    let tidx = "00000000000000000000.timeindex";
    assert_eq!(get(idx, "user.recoverfs.status"), "rebuilt");
    assert_eq!(get(idx, "user.recoverfs.original_bytes"), "missing");
    assert_eq!(get(idx, "user.recoverfs.valid_bytes"), "160");
    assert_eq!(get(idx, "user.recoverfs.damage"), "missing");
    assert_eq!(get(tidx, "user.recoverfs.status"), "clean");
    assert_eq!(get(tidx, "user.recoverfs.original_bytes"), "160");
    assert_eq!(get(tidx, "user.recoverfs.records"), "10");
    let log_bytes = fs::metadata(log_path(t.path(), 0))
        .unwrap()
        .len()
        .to_string();
    assert_eq!(
        get("00000000000000000000.log", "user.recoverfs.original_bytes"),
        log_bytes
    );
}

/// Bug: `findmnt` showed type `fuse`, not `fuse.recoverfs` (fuser passes its Subtype
/// only to fusermount3); `-o subtype=` was accepted and ignored; `df` showed 0.
/// Fixed on branch `cli` (issue 11, finding 6).
#[test]
fn the_mount_is_typed_fuse_recoverfs_and_df_shows_totals() {
    let src = damaged();
    for (extra, want) in [
        (&[][..], "fuse.recoverfs"),
        (&["-o", "subtype=takhin"][..], "fuse.takhin"),
    ] {
        let mut m = Mounted::new(src.path(), extra);
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(m.path().to_str().unwrap()))
            .unwrap();
        assert_eq!(line.split(' ').nth(2), Some(want), "{line}");
        let st = rustix::fs::statvfs(m.path()).unwrap();
        assert!(
            st.f_blocks > 0 && st.f_files > 0,
            "blocks {} files {}",
            st.f_blocks,
            st.f_files
        );
        assert_eq!((st.f_bfree, st.f_bavail), (0, 0));
        assert!(m.unmount().success());
    }
}

/// Bug: `mount -t recoverfs` failures exited 2, which mount(8) reads as a system error
/// (its mount failure is 32); `umount.recoverfs -l` was ignored (it wanted `--lazy`).
/// Fixed on branch `cli` (issue 11, finding 7).
#[test]
fn the_mount_helpers_speak_mount8s_exit_codes() {
    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mount-scripts");
    let helper = |args: &[&dyn AsRef<OsStr>]| {
        std::process::Command::new("sh")
            .arg(scripts.join("mount.recoverfs"))
            .args(argv(args))
            .env("RECOVERFS", bin())
            .output()
            .unwrap()
    };
    let t = tempfile::tempdir().unwrap();
    let mp = t.path().join("mp");
    fs::create_dir(&mp).unwrap();
    assert_eq!(
        helper(&[&"/nonexistent/takhin", &mp]).status.code(),
        Some(32)
    );
    assert_eq!(helper(&[&"only-one"]).status.code(), Some(1));
    assert_eq!(helper(&[&"a", &mp, &"--bogus"]).status.code(), Some(1));
    // umount.recoverfs -l detaches.
    let src = damaged();
    let o = helper(&[&src.path(), &mp, &"-o", &"policy=point-in-time"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mp = fs::canonicalize(&mp).unwrap();
    assert!(recoverfs::cli::sys::is_mount_point(&mp));
    let o = std::process::Command::new("sh")
        .arg(scripts.join("umount.recoverfs"))
        .arg("-l")
        .arg(&mp)
        .output()
        .unwrap();
    let gone = !recoverfs::cli::sys::is_mount_point(&mp);
    if !gone {
        let _ = recoverfs::cli::sys::lazy_unmount(&mp);
    }
    assert!(o.status.success() && gone, "{}", stderr(&o));
}

/// Bug: `demo --no-wait` printed three commands to try and then removed what they
/// pointed at; `demo --write-to` wrote into a non-empty directory silently. Fixed on
/// branch `cli` (issue 11, finding 8).
#[test]
fn demo_offers_only_what_it_keeps_and_writes_only_into_an_empty_directory() {
    let o = run(["demo", "--no-wait"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(!text.contains("to try"), "{text}");
    assert!(text.contains("--no-wait"), "{text}");
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("mine.txt"), b"precious").unwrap();
    let o = run(argv(&[&"demo", &"--write-to", &t.path()]));
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
    let o = run(argv(&[&"demo", &"--write-to", &t.path().join("new")]));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Bug: `RUST_LOG=debug` gave 55 lines of fuser internals for 4 of ours, a background
/// mount logged nowhere without `--log-file`, and there was no `-v`/`-q`. Fixed on
/// branch `cli` (issue 11, finding 9): ours at info and fuser's at warn by default,
/// syslog for a background mount, `-v`/`-q` on every subcommand.
#[test]
fn logging_is_ours_by_default_and_a_background_mount_logs_to_syslog() {
    let src = damaged();
    let mut m = Mounted::new(src.path(), &[]);
    let _ = fs::read_dir(m.path().join("orders/partition-0"))
        .unwrap()
        .count();
    assert!(m.unmount().success());
    let log = m.log();
    assert!(log.contains("mounted "), "{log}");
    assert!(
        log.lines()
            .all(|l| l.contains(" recoverfs::") || l.contains(" WARN ") || l.contains(" ERROR ")),
        "our lines, and fuser's warnings only: {log}"
    );
    let mut m = Mounted::new(src.path(), &["-q"]);
    assert!(m.unmount().success());
    assert!(!m.log().contains("mounted "), "{}", m.log());
    // In the background, without --log-file: syslog (here a socket of our own).
    let t = tempfile::tempdir().unwrap();
    let sock_path = t.path().join("log");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mp = t.path().join("mp");
    fs::create_dir(&mp).unwrap();
    let o = std::process::Command::new(bin())
        .args(argv(&[&"mount", &src.path(), &mp]))
        .env("RECOVERFS_SYSLOG_SOCKET", &sock_path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut buf = [0u8; 4096];
    let got = sock.recv(&mut buf);
    let st = std::process::Command::new("umount")
        .arg(&mp)
        .status()
        .unwrap();
    let n = got.unwrap();
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        line.starts_with("<30>recoverfs[") && line.contains("mounted "),
        "{line}"
    );
    assert!(st.success());
    // -v and -q are accepted by every subcommand.
    for sub in [
        "check",
        "dump",
        "repair",
        "demo",
        "mount",
        "man",
        "completions",
    ] {
        let o = run([sub, "-q", "--help"]);
        assert!(o.status.success(), "{sub}: {}", stderr(&o));
    }
}

/// Bug: `repair --dry-run` exited 0 with changes planned: a script could not tell
/// "changes pending". Fixed on branch `cli` (issue 11, finding 10): 1 pending, 0 none.
#[test]
fn a_dry_run_with_changes_pending_exits_1() {
    let src = damaged();
    let b = tempfile::tempdir().unwrap();
    let o = repair_in_place(src.path(), &b.path().join("bk"), &["--dry-run"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = tempfile::tempdir().unwrap();
    assert_ok(
        &repair_output(src.path(), &out.path().join("r"), &[]),
        "repair",
    );
    let o = repair_in_place(&out.path().join("r"), &b.path().join("bk2"), &["--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

/// Bug: `cp -a view/. dest` copied `.recoverfs/` (with every original under `raw/`)
/// and the `user.recoverfs.*` xattrs into `dest`, although the README said cp reads a
/// consistent log. Fixed on branch `cli` (issue 11, finding 12): `-o nometa` / `--no-meta`.
#[test]
fn a_nometa_view_copies_as_exactly_the_repaired_log() {
    let src = damaged();
    let t = tempfile::tempdir().unwrap();
    assert_ok(
        &repair_output(src.path(), &t.path().join("want"), &[]),
        "repair",
    );
    for extra in [&["-o", "nometa"][..], &["--no-meta"][..]] {
        let mut m = Mounted::new(src.path(), extra);
        let dest = t.path().join("dest");
        let o = std::process::Command::new("cp")
            .arg("-a")
            .arg(m.path().join("."))
            .arg(&dest)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(m.unmount().success());
        assert!(!dest.join(".recoverfs").exists());
        assert_eq!(
            tree_contents(&dest, ""),
            tree_contents(&t.path().join("want"), "")
        );
        for (p, _) in tree_contents(&dest, "") {
            let mut buf = [0u8; 1024];
            let n = rustix::fs::listxattr(dest.join(&p), &mut buf[..]).unwrap();
            assert!(
                !String::from_utf8_lossy(&buf[..n]).contains("recoverfs"),
                "{p:?}"
            );
        }
        fs::remove_dir_all(&dest).unwrap();
    }
}
