//! One test per bug fixed so far, named for what the bug broke; each names its fix.
//!
//! A new fix adds its test here, as a named `#[test]` with a doc comment giving the
//! bug and the commit that fixed it.

use crate::common;

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
    // A run killed right after its manifest was written leaves a backup to resume from.
    let src = small_damaged();
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("b");
    let args = in_place_args(src.path(), &backup, &[]);
    let o = run_failing_at(&args, 2);
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

// ---- issue 8, hardening of the mount ----

/// Reads `rel` under the mount's root fd with `openat2(RESOLVE_NO_SYMLINKS)`: the
/// test's own walk follows no symlink of the view, so whatever it gets was served
/// by the daemon for that very path.
fn read_no_symlinks(mp: &std::path::Path, rel: &str) -> std::io::Result<Vec<u8>> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use std::io::Read;
    let root = fs::File::open(mp)?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd = openat2(&root, rel, how)?;
    let mut out = Vec::new();
    fs::File::from(fd).read_to_end(&mut out)?;
    Ok(out)
}

/// Bug (issue 8, finding 1): once a directory of the source was swapped for a
/// symlink (`mv src/a src/a.old; ln -s / src/a`) after the kernel had cached it as a
/// directory, `MNT/a/etc/shadow` and `MNT/.recoverfs/raw/a/etc/passwd` returned the
/// host's files: the daemon joined paths and followed the link. Fixed in 6536559 (every
/// access through `Source`: `openat2` beneath the root, no symlinks) and in this
/// branch (the inotify watcher adds its watches through the same door).
#[test]
fn a_symlink_swapped_into_the_source_never_serves_files_from_outside() {
    let src = tempfile::tempdir().unwrap();
    write_log(src.path(), 0, 10);
    fs::create_dir_all(src.path().join("a/etc")).unwrap();
    fs::write(src.path().join("a/etc/key.txt"), b"inside").unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir_all(outside.path().join("etc")).unwrap();
    for f in ["shadow", "passwd", "key.txt"] {
        fs::write(outside.path().join("etc").join(f), b"OUTSIDE").unwrap();
    }
    let m = Mounted::new(src.path(), &[]);
    let mp = m.path();
    // The kernel now holds `a` and `a/etc` as directories (60 s entry TTL).
    assert_eq!(read_no_symlinks(mp, "a/etc/key.txt").unwrap(), b"inside");
    assert_eq!(
        read_no_symlinks(mp, ".recoverfs/raw/a/etc/key.txt").unwrap(),
        b"inside"
    );
    fs::rename(src.path().join("a"), src.path().join("a.old")).unwrap();
    std::os::unix::fs::symlink(outside.path(), src.path().join("a")).unwrap();
    for rel in [
        "a/etc/shadow",
        "a/etc/key.txt",
        ".recoverfs/raw/a/etc/passwd",
        ".recoverfs/raw/a/etc/key.txt",
    ] {
        let r = read_no_symlinks(mp, rel);
        assert!(r.is_err(), "{rel} was served: {r:?}");
    }
    // The moved directory is still served, from inside.
    assert_eq!(
        read_no_symlinks(mp, "a.old/etc/key.txt").unwrap(),
        b"inside"
    );
}

/// Runs `sh -c CMD` as nobody (uid and gid 65534, no groups); true if it succeeded.
fn as_nobody(cmd: &str) -> bool {
    std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(cmd)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Bug (issue 8, finding 2): with `--allow-other` any user read a root-only 0600 file
/// through the view and through `.recoverfs/raw/`: the mount had no
/// `default_permissions`; `-o default_permissions`, `uid=`, `gid=`, `comment=` and
/// `context=` were accepted and ignored; `allow_root` meant `allow_other`. Fixed in
/// this branch: `default_permissions` always, `allow_root` is root and the owner,
/// `uid=`/`gid=`/`umask=` change what is shown (and so what is enforced), and the
/// options that cannot be honoured are refused.
#[test]
fn the_kernel_enforces_the_originals_modes_for_other_users() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let src = tempfile::tempdir().unwrap();
    fs::set_permissions(src.path(), fs::Permissions::from_mode(0o755)).unwrap();
    write_log(src.path(), 0, 10);
    // A torn last record: the segment is truncated and has a tail in `tails/`.
    let log = src.path().join("00000000000000000000.log");
    let mut bytes = fs::read(&log).unwrap();
    bytes.extend_from_slice(&[0, 0, 0, 40, 1, 2, 3]);
    fs::write(&log, &bytes).unwrap();
    fs::write(src.path().join("secret.txt"), b"root only").unwrap();
    fs::write(src.path().join("public.txt"), b"anyone").unwrap();
    for (f, mode) in [
        ("secret.txt", 0o600),
        ("public.txt", 0o644),
        ("00000000000000000000.log", 0o600),
    ] {
        fs::set_permissions(src.path().join(f), fs::Permissions::from_mode(mode)).unwrap();
    }
    let tail = ".recoverfs/tails/00000000000000000000.log.tail";
    {
        let m = Mounted::new(src.path(), &["--allow-other"]);
        let mp = m.path().display().to_string();
        assert!(
            as_nobody(&format!("cat {mp}/public.txt")),
            "nobody reads 0644"
        );
        for rel in [
            "secret.txt",
            ".recoverfs/raw/secret.txt",
            "00000000000000000000.log",
            ".recoverfs/raw/00000000000000000000.log",
            tail,
        ] {
            assert!(fs::read(m.path().join(rel)).is_ok(), "root reads {rel}");
            assert!(!as_nobody(&format!("cat {mp}/{rel}")), "nobody read {rel}");
            let mode = fs::metadata(m.path().join(rel)).unwrap().mode();
            assert_eq!(mode & 0o777, 0o400, "{rel} shows the original's mode");
        }
    }
    {
        // allow_root: root (and the owner, root here) only, not everyone.
        let m = Mounted::new(src.path(), &["-o", "allow_root"]);
        let mp = m.path().display().to_string();
        assert!(fs::read(m.path().join("public.txt")).is_ok());
        assert!(!as_nobody(&format!("cat {mp}/public.txt")));
    }
    {
        // uid= makes nobody the owner the kernel checks; umask= clears mode bits shown.
        let m = Mounted::new(
            src.path(),
            &[
                "-o",
                "allow_other,default_permissions,uid=65534,gid=65534,umask=077",
            ],
        );
        let mp = m.path().display().to_string();
        let st = fs::metadata(m.path().join("public.txt")).unwrap();
        assert_eq!(
            (st.uid(), st.gid(), st.mode() & 0o777),
            (65534, 65534, 0o400)
        );
        assert!(
            as_nobody(&format!("cat {mp}/secret.txt")),
            "nobody owns it now"
        );
    }
    // What cannot be honoured is refused before anything is mounted (`rw`, which
    // mount(8) always passes, is accepted since issue 19: the view is read-only anyway).
    let mp = tempfile::tempdir().unwrap();
    for o in [
        "comment=x",
        "context=system_u:object_r:tmp_t:s0",
        "suid",
        "umask=99",
    ] {
        let out = run([
            OsStr::new("mount"),
            src.path().as_os_str(),
            mp.path().as_os_str(),
            OsStr::new("-o"),
            OsStr::new(o),
        ]);
        assert_eq!(out.status.code(), Some(2), "-o {o}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("-o {o}")),
            "{}",
            stderr(&out)
        );
    }
}

/// Bug (issue 8, finding 3): a symlink back into the mount (`mv src/a src/a.old;
/// ln -s MNT/a src/a`, `MNT/a/b` cached) made the daemon follow it into its own mount
/// and wait on itself: the mount wedged. Fixed in 6536559 (no symlink is followed;
/// the clone is taken before the mount exists).
#[test]
fn a_symlink_back_into_the_mount_does_not_wedge_the_daemon() {
    let src = tempfile::tempdir().unwrap();
    write_log(src.path(), 0, 10);
    fs::create_dir_all(src.path().join("a/b")).unwrap();
    fs::write(src.path().join("a/b/f.txt"), b"f").unwrap();
    let m = Mounted::new(src.path(), &["--threads", "2"]);
    let mp = m.path().to_path_buf();
    assert_eq!(fs::read(mp.join("a/b/f.txt")).unwrap(), b"f");
    fs::rename(src.path().join("a"), src.path().join("a.old")).unwrap();
    std::os::unix::fs::symlink(mp.join("a"), src.path().join("a")).unwrap();
    let p = mp.clone();
    let r = common::mount::within(30, move || {
        (
            fs::metadata(p.join("a/b/f.txt")).map(|_| ()),
            fs::read(p.join("a/b/f.txt")).map(|_| ()),
            fs::read_dir(p.join("a/b")).map(|d| d.count()),
            fs::read(p.join(".recoverfs/raw/a/b/f.txt")).map(|_| ()),
        )
    });
    let (stat, read, list, raw) = r.expect("the mount wedged");
    assert!(
        stat.is_err() && read.is_err() && raw.is_err(),
        "{stat:?} {read:?} {raw:?}"
    );
    let _ = list; // the kernel may list its cached directory; it must only not hang
                  // And the daemon still serves everything else.
    let p = mp.clone();
    let r = common::mount::within(30, move || fs::read(p.join("a.old/b/f.txt")));
    assert!(matches!(r, Some(Ok(ref b)) if b == b"f"), "{r:?}");
}

/// Bug (issue 8, finding 4): with two pass-through files held open and replaced in the
/// source by FIFOs, reopening them through `/proc/PID/fd/N` made the daemon open the
/// FIFOs and block there, both worker threads: the mount hung. Fixed in 6536559
/// (`Source::file` opens `O_NONBLOCK` and refuses a non-regular file after `fstat`).
#[test]
fn a_fifo_swapped_in_for_an_open_file_never_blocks_the_daemon() {
    use std::os::fd::AsRawFd;
    let src = tempfile::tempdir().unwrap();
    write_log(src.path(), 0, 10);
    fs::write(src.path().join("p1.txt"), b"one").unwrap();
    fs::write(src.path().join("p2.txt"), b"two").unwrap();
    let m = Mounted::new(src.path(), &["--threads", "2"]);
    let held: Vec<fs::File> = ["p1.txt", "p2.txt"]
        .iter()
        .map(|f| fs::File::open(m.path().join(f)).unwrap())
        .collect();
    for f in ["p1.txt", "p2.txt"] {
        fs::remove_file(src.path().join(f)).unwrap();
        nix::unistd::mkfifo(
            &src.path().join(f),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
    }
    let reopen: Vec<_> = held
        .iter()
        .map(|f| format!("/proc/self/fd/{}", f.as_raw_fd()))
        .collect();
    let r = common::mount::within(30, move || {
        reopen
            .iter()
            .map(|p| fs::read(p).map(|_| ()))
            .collect::<Vec<_>>()
    });
    let r = r.expect("reopening blocked: the daemon waited on a FIFO");
    assert!(r.iter().all(|x| x.is_err()), "{r:?}");
    let p = m.path().to_path_buf();
    let r = common::mount::within(30, move || fs::read(p.join(".recoverfs/report.json")));
    assert!(
        matches!(r, Some(Ok(_))),
        "the daemon stopped answering: {r:?}"
    );
    drop(held);
}

/// Bug (issue 8, finding 5): a same-size overwrite inside a segment's valid prefix
/// followed by `touch -r` (what `cp -p` and `rsync -t` do) was never validated again:
/// the verdict's stamp was size, mtime and inode, all unchanged. Fixed in this branch:
/// the stamp includes the ctime, which no program can put back.
#[test]
fn a_same_size_overwrite_with_its_mtime_put_back_is_validated_again() {
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::tempdir().unwrap();
    let w = write_log(t.path(), 0, 50);
    let name = OsStr::new("00000000000000000000.log");
    let v = view(t.path(), Policy::PerSegment);
    assert_eq!(v.lookup(ROOT_INO, name).unwrap().size, w.log.len() as u64);
    let path = log_path(t.path(), 0);
    let before = fs::metadata(&path).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    // Record 10's offset field made -1 (the scan stops there), in place.
    overwrite(&path, position_of(&w, 10) as u64 + 4, &[0xff; 8]);
    filetime::set_file_mtime(
        &path,
        filetime::FileTime::from_last_modification_time(&before),
    )
    .unwrap();
    let after = fs::metadata(&path).unwrap();
    assert_eq!(
        (after.len(), after.mtime(), after.mtime_nsec(), after.ino()),
        (
            before.len(),
            before.mtime(),
            before.mtime_nsec(),
            before.ino()
        )
    );
    let a = v.lookup(ROOT_INO, name).unwrap();
    assert_eq!(
        a.size,
        position_of(&w, 10) as u64,
        "cut before the damaged record"
    );
}

/// The version `k` the race test's writer puts in place: 8-byte words `k << 32 | i`.
fn version(k: u64, len: usize) -> Vec<u8> {
    (0..len / 8)
        .flat_map(|i| ((k << 32) | i as u64).to_le_bytes())
        .collect()
}

/// Bug (issue 8, finding 6): reads racing with a change returned bytes no version of
/// the file held (about 0.4% of reads during in-place rewrites were zero-filled or
/// mixed; a reader holding the file open across a rename-over got the old content cut
/// at the new file's size). Fixed in this branch: a handle reads its own fd between two
/// `fstat`s and a read that raced is retried or fails with EIO; a recently changed file
/// is opened with direct I/O, so the kernel neither mixes pages of two versions nor
/// clamps to another version's size.
#[test]
fn reads_racing_with_rewrites_return_only_bytes_of_some_version() {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    const BIG: usize = 64 << 10;
    let src = tempfile::tempdir().unwrap();
    write_log(src.path(), 0, 10);
    let data = src.path().join("data.bin");
    fs::write(&data, version(0, BIG)).unwrap();
    // The daemon's path: a passed-through file is read by the kernel straight from the
    // source, which by design (README, "Passthrough") shows the source as it is.
    let m = Mounted::new(src.path(), &["--threads", "4", "--passthrough", "off"]);
    let stop = Arc::new(AtomicBool::new(false));
    // Progress so far, watched to stop once enough has raced (not after a set time).
    let (written, read_ok) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writer = {
        let (stop, data, dir) = (stop.clone(), data.clone(), src.path().to_path_buf());
        let written = written.clone();
        std::thread::spawn(move || {
            let mut k = 1u64;
            while !stop.load(Ordering::Relaxed) {
                if k % 3 == 0 {
                    // A smaller version renamed over the file.
                    let tmp = dir.join("data.tmp");
                    let mut f = fs::File::create(&tmp).unwrap();
                    f.write_all(&version(k, BIG - 16 * 1024 + (k as usize % 4) * 4096))
                        .unwrap();
                    drop(f);
                    fs::rename(&tmp, &data).unwrap();
                } else {
                    // A full-size version written over the file in place.
                    let f = fs::OpenOptions::new().write(true).open(&data).unwrap();
                    f.write_all_at(&version(k, BIG), 0).unwrap();
                }
                k += 1;
                written.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(k % 25));
            }
            k
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (stop, file) = (stop.clone(), m.path().join("data.bin"));
            let read_ok = read_ok.clone();
            std::thread::spawn(move || {
                let (mut ok, mut eio, mut bad) = (0u32, 0u32, Vec::new());
                let mut held: Option<fs::File> = None;
                let mut buf = vec![0u8; 1 << 20];
                while !stop.load(Ordering::Relaxed) {
                    // Half the readers keep one open file across rewrites and renames.
                    let f = match (&held, r % 2) {
                        (Some(f), 1) => f.try_clone().unwrap(),
                        _ => fs::File::open(&file).unwrap(),
                    };
                    match f.read_at(&mut buf, 0) {
                        Ok(n) => {
                            let got = &buf[..n];
                            let k = got
                                .get(..8)
                                .map_or(0, |w| u64::from_le_bytes(w.try_into().unwrap()) >> 32);
                            if n % 8 != 0 || n > BIG || got != &version(k, n)[..] {
                                bad.push(n);
                            } else {
                                ok += 1;
                                read_ok.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) if e.raw_os_error() == Some(libc::EIO) => eio += 1,
                        Err(e) => panic!("read failed otherwise: {e}"),
                    }
                    if held.is_none() {
                        held = Some(f);
                    }
                }
                (ok, eio, bad)
            })
        })
        .collect();
    // Enough raced to show something: 100 versions written while reads of one version
    // came back 100 times. The deadline only bounds a hang.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while written.load(Ordering::Relaxed) < 100 || read_ok.load(Ordering::Relaxed) < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "the race never got going: {written:?} versions, {read_ok:?} good reads"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let versions = writer.join().unwrap();
    let (mut ok, mut eio) = (0, 0);
    for r in readers {
        let (o, e, bad) = r.join().unwrap();
        assert!(
            bad.is_empty(),
            "{} reads held bytes of no version: {bad:?}",
            bad.len()
        );
        ok += o;
        eio += e;
    }
    eprintln!("{versions} versions written; {ok} reads of one version, {eio} EIO");
    assert!(
        versions > 100 && ok >= 100,
        "{versions} versions, {ok} good reads"
    );
}

/// Bug (issue 8, finding 7): mounting, listing and reading moved the source's directory
/// atimes (files kept theirs). Fixed in 6536559 (reads go through a read-only noatime
/// clone); the snapshot now covers directories and the root, aged first.
#[test]
fn mounting_listing_and_reading_everything_moves_no_atime_of_files_or_directories() {
    fn read_everything(dir: &std::path::Path) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let ft = fs::symlink_metadata(&p).unwrap().file_type();
            if ft.is_dir() {
                read_everything(&p);
            } else if ft.is_file() {
                fs::read(&p).unwrap();
            } else if ft.is_symlink() {
                fs::read_link(&p).unwrap();
            }
        }
    }
    let src = damaged_tree();
    age_all_atimes(src.path());
    let before = snapshot_all(src.path());
    assert!(
        before.values().any(|s| s.bytes.is_none()),
        "directories are snapshotted"
    );
    let mut m = Mounted::new(src.path(), &[]);
    read_everything(m.path());
    assert!(m.unmount().success());
    assert_unchanged(&before, &snapshot_all(src.path()));
}

/// Bug (issue 8, finding 10): a reader holding ~1,000 files open made every other
/// access fail with EMFILE (the daemon ran at the soft limit, 1,024), and `report.json`
/// then showed `"logs": []` as if the tree held no log. Fixed in this branch: the daemon
/// raises its open-file limit to the hard limit, and a report that could not be built
/// says so in `problems`.
#[test]
fn a_reader_holding_a_thousand_files_open_starves_nobody() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use std::os::unix::process::CommandExt;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let src = tempfile::tempdir().unwrap();
    write_log(src.path(), 0, 10);
    fs::create_dir(src.path().join("many")).unwrap();
    for i in 0..1100 {
        fs::write(src.path().join(format!("many/{i}")), b"x").unwrap();
    }
    let limited = |soft: u64, hard: u64| {
        move |c: &mut std::process::Command| {
            // SAFETY: setrlimit is a plain system call, async-signal-safe.
            unsafe {
                c.pre_exec(move || {
                    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(std::io::Error::from)
                });
            }
        }
    };
    let report = |mp: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&fs::read(mp.join(".recoverfs/report.json")).unwrap()).unwrap()
    };
    {
        // Started at a soft limit of 256: the daemon raises it to the hard 4096.
        let m = Mounted::new_with(src.path(), &[], limited(256, 4096));
        let held: Vec<fs::File> = (0..1000)
            .map(|i| fs::File::open(m.path().join(format!("many/{i}"))).unwrap())
            .collect();
        assert_eq!(fs::read(m.path().join("many/1050")).unwrap(), b"x");
        let r = report(m.path());
        assert_eq!(r["logs"].as_array().unwrap().len(), 1, "{r:#}");
        drop(held);
    }
    {
        // At a hard limit of 256, the report says what failed rather than showing no log.
        let m = Mounted::new_with(src.path(), &[], limited(256, 256));
        let held: Vec<fs::File> = (0..300)
            .filter_map(|i| fs::File::open(m.path().join(format!("many/{i}"))).ok())
            .collect();
        assert!(held.len() < 300, "the daemon's limit was not reached");
        // Out of fds, the daemon may fail the open itself (an error, not an empty
        // tree); a report it does build lists the log or says what failed.
        match fs::read(m.path().join(".recoverfs/report.json")) {
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}"),
            Ok(b) => {
                let r: serde_json::Value = serde_json::from_slice(&b).unwrap();
                let logs = r["logs"].as_array().unwrap();
                let problems = r["problems"].as_array().unwrap();
                assert!(!logs.is_empty() || !problems.is_empty(), "{r:#}");
            }
        }
        drop(held);
        // Once the reader lets go, everything is served again: the kernel sends the
        // RELEASEs that free the daemon's fds asynchronously, so give them a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let again = loop {
            match fs::read(m.path().join(".recoverfs/report.json")) {
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                    assert!(std::time::Instant::now() < deadline, "still out of fds");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                r => break r.unwrap(),
            }
        };
        let again: serde_json::Value = serde_json::from_slice(&again).unwrap();
        assert_eq!(again["logs"].as_array().unwrap().len(), 1);
    }
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
}

/// Bug (issue 8, finding 11): for 60 s after its daemon died, a dead mount was reported
/// as "already a mount point" (the kernel answered the stat from its cache) instead of
/// with the `umount -l` hint. Fixed in this branch: a mount point whose `statfs` fails
/// with ENOTCONN is a dead mount, said at once.
#[test]
fn a_dead_mount_is_reported_at_once_with_the_umount_hint() {
    let src = tempfile::tempdir().unwrap();
    write_log(src.path(), 0, 10);
    let mut m = Mounted::new(src.path(), &[]);
    assert!(fs::metadata(m.path()).unwrap().is_dir()); // the root's attributes are cached
    let mut child = m.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let (s, mp) = (src.path().to_path_buf(), m.path().to_path_buf());
    let out = common::mount::within(30, move || {
        run([
            OsStr::new("mount"),
            s.as_os_str(),
            mp.as_os_str(),
            OsStr::new("--foreground"),
        ])
    })
    .expect("mount hung on the dead mount point");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("dead FUSE mount") && err.contains("umount -l"),
        "{err}"
    );
}

// ---- issue 8, hardening of check and repair ----

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
    // A dry run with changes pending exits 1 (issue 11, finding 10).
    let o = repair_in_place(src.path(), &out.path().join("backup"), &["--dry-run"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
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
    // A dry run with changes pending exits 1 (issue 11, finding 10); the repair, 0.
    for (extra, code) in [(&["--dry-run"][..], 1), (&[], 0)] {
        let o = repair_in_place(t.path(), &backup, extra);
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
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
    let src = small_damaged();
    let bk = tempfile::tempdir().unwrap();
    let backup = bk.path().join("b");
    let args = in_place_args(src.path(), &backup, &[]);
    // Killed in phase 2, before its first replacement is renamed over an original.
    let mut step = 1;
    loop {
        let o = run_failing_at(&args, step);
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
        cannot_test("no bind mount permitted (not root?)");
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

// ---- found while merging issues 8 and 9 ----

/// Bug: once files changed in the last 5 s were opened with direct I/O (the read
/// race fix, 59a4d03), a shared mapping of such a file through the mount failed with
/// ENODEV: the kernel refuses `MAP_SHARED` on direct-I/O files unless the daemon asks
/// for `FUSE_DIRECT_IO_ALLOW_MMAP`. Index readers map their files, so a just-written
/// log could not be read that way. Fixed by asking for that flag at init.
#[test]
fn a_file_changed_moments_ago_maps_shared_through_the_mount() {
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("t/partition-0");
    fs::create_dir_all(&dir).unwrap();
    let w = write_log(&dir, 0, 40);
    fs::write(src.path().join("t/notes.txt"), b"just written").unwrap();
    let m = Mounted::new(src.path(), &["--passthrough", "off"]);
    let view = m.path().join("t/partition-0");
    assert_eq!(
        common::mount::mmap_read(&view.join("00000000000000000000.log")),
        w.log
    );
    assert_eq!(
        common::mount::mmap_read(&view.join("00000000000000000000.index")),
        w.index
    );
    assert_eq!(
        common::mount::mmap_read(&m.path().join("t/notes.txt")),
        b"just written"
    );
}

// ---- issue 11, the command line ----

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
    // Unchecked (since issue 19 an index is checked against its .log by default, and
    // this one is too long for the cut .log): every entry, then the end line.
    let o = dump(
        &seg_path(t.path(), 0, "timeindex"),
        &["--json", "--no-verify-index"],
    );
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o).lines().count(), 51);
    let o = dump(&seg_path(t.path(), 0, "timeindex"), &["--json"]);
    assert_eq!(o.status.code(), Some(1), "checked by default: too long");
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
    // The daemon's lines, until the one saying it is mounted (others may come first).
    let mut lines = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = line.contains("mounted ");
        lines.push(line);
        if done || lines.len() > 20 {
            break;
        }
    }
    let st = std::process::Command::new("umount")
        .arg(&mp)
        .status()
        .unwrap();
    assert!(
        lines.iter().all(|l| l.starts_with("<30>recoverfs["))
            && lines.iter().any(|l| l.contains("mounted ")),
        "{lines:?}"
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

/// Bug: under `--policy salvage` the per-log lines of `check` counted only the real
/// segments' records while the summary counted the salvaged runs too, so the lines
/// contradicted the totals (found merging issues 10 and 11). Fixed: a log's line
/// counts every record the view serves, runs included.
#[test]
fn per_log_lines_agree_with_the_summary_under_salvage() {
    let src = damaged();
    for policy in ["salvage", "per-segment", "point-in-time", "strict"] {
        let text = stdout(&check_cli(src.path(), &["--policy", policy]));
        let per_log: u64 = text
            .lines()
            .filter(|l| !l.starts_with(' ') && l.contains(" segment(s), "))
            .filter(|l| !l.starts_with(|c: char| c.is_ascii_digit()))
            .map(|l| {
                let after = l.split(" segment(s), ").nth(1).unwrap();
                after.split(' ').next().unwrap().parse::<u64>().unwrap()
            })
            .sum();
        let (_, j) = check_json(src.path(), &["--policy", policy]);
        assert_eq!(
            per_log,
            j["summary"]["records"].as_u64().unwrap(),
            "{policy}:\n{text}"
        );
    }
    let (_, j) = check_json(src.path(), &["--policy", "salvage"]);
    assert!(
        j["summary"]["salvaged_records"].as_u64().unwrap() > 0,
        "the damaged tree must have runs for this test to mean anything"
    );
}

/// Bug: under `--policy salvage` the per-log metrics (`recoverfs_log_records_kept`,
/// `_bytes_kept`, `_bytes_cut`) left the salvaged runs out while the totals counted
/// them (found merging issues 10 and 12). Fixed: a log's figures count its runs as kept.
#[test]
fn per_log_metrics_count_salvaged_runs_like_the_totals() {
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("t/partition-0");
    fs::create_dir_all(&dir).unwrap();
    let w = write_log(&dir, 0, 40);
    // Garbage over record 10's header: the records after it come back as a run.
    let pos = u64::from_be_bytes(w.index[10 * 16 + 8..11 * 16].try_into().unwrap()) as usize;
    let mut log = w.log.clone();
    log[pos..pos + 8].copy_from_slice(&[0xff; 8]);
    fs::write(dir.join("00000000000000000000.log"), &log).unwrap();
    let out = tempfile::tempdir().unwrap();
    let prom = out.path().join("m.prom");
    let o = check_cli(
        src.path(),
        &["--policy", "salvage", "--metrics", prom.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = fs::read_to_string(&prom).unwrap();
    let value = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}")) as u64
    };
    let (_, j) = check_json(src.path(), &["--policy", "salvage"]);
    assert!(
        j["summary"]["salvaged_records"].as_u64().unwrap() > 0,
        "{j:#}"
    );
    // One log: its series must equal the totals.
    for (per_log, total) in [
        ("recoverfs_log_records_kept{", "recoverfs_records_kept "),
        ("recoverfs_log_bytes_kept{", "recoverfs_bytes_kept "),
        ("recoverfs_log_bytes_cut{", "recoverfs_bytes_cut "),
    ] {
        assert_eq!(value(per_log), value(total), "{per_log}\n{text}");
    }
    assert_eq!(
        value("recoverfs_records_kept "),
        j["summary"]["records"].as_u64().unwrap()
    );
}

/// Set when this test binary is re-run as [`rss_helper`]: the `recoverfs` arguments, as JSON.
const RSS_HELPER_ARGS: &str = "RECOVERFS_TEST_RSS_ARGS";

/// Not a test of its own: re-run by [`peak_rss_kib`] with `RECOVERFS_TEST_RSS_ARGS` set,
/// this binary runs `recoverfs` with those arguments and prints its exit code and peak
/// resident memory (from `wait4`). A process's peak counts the memory of the process it
/// was spawned from (shared or copied until its exec): spawned from this small fresh
/// process rather than from a test binary busy with other tests, the figure is its own.
#[test]
fn rss_helper() {
    let Ok(json) = std::env::var(RSS_HELPER_ARGS) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&json).unwrap();
    let child = std::process::Command::new(bin())
        .args(&args)
        .env_remove("RECOVERFS_TEST_FAIL_AT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it and the status for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: reaps the child spawned above (its `Child` is never waited on), writing
    // only into the two locals.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    assert!(libc::WIFEXITED(status));
    // Reaped by wait4 above; `Child` has nothing left to wait for.
    std::mem::forget(child);
    println!(
        "rss-helper {} {}",
        libc::WEXITSTATUS(status),
        usage.ru_maxrss
    );
}

/// Exit code and peak resident memory (KiB) of `recoverfs ARGS...`, measured by [`rss_helper`].
fn peak_rss_kib(args: &[&str]) -> (i32, i64) {
    // The harness names a test by its module path below the crate: `regressions::rss_helper`.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let o = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("{module}::rss_helper"),
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(RSS_HELPER_ARGS, serde_json::to_string(args).unwrap())
        .output()
        .unwrap();
    let out = stdout(&o);
    let line = out
        .lines()
        // The harness may print `test rss_helper ... ` before it on the same line.
        .find_map(|l| l.split_once("rss-helper ").map(|(_, figures)| figures))
        .unwrap_or_else(|| panic!("no figure from the helper: {out}{}", stderr(&o)));
    let (code, kib) = line.split_once(' ').unwrap();
    (code.parse().unwrap(), kib.parse().unwrap())
}

/// Bug: planning an in-place repair kept the rebuilt `.index` and `.timeindex` of every
/// segment it rebuilds in memory until the whole plan was made (a cache that never let
/// go of a segment), so memory grew with the tree: 16 bytes per record per index, about
/// 245 MB for each 1 GiB segment of BENCHMARKS.md's synthetic records (7.67 million of
/// them) whose `.index` was lost. Fixed in the commit that adds this test: one segment's
/// at a time (its two index names are listed together).
#[test]
fn planning_an_in_place_repair_holds_one_segments_rebuilt_indexes_at_a_time() {
    let t = tempfile::tempdir().unwrap();
    let mut rss = Vec::new();
    let mut timeindex_bytes = 0;
    for partitions in ["1", "8"] {
        let data = t.path().join(format!("data-{partitions}"));
        let o = run([
            OsStr::new("synth"),
            data.as_os_str(),
            OsStr::new("--partitions"),
            OsStr::new(partitions),
            OsStr::new("--segment-mb"),
            OsStr::new("16"),
            OsStr::new("--value-bytes"),
            OsStr::new("1"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let mut logs = 0;
        for f in files_under(&data) {
            if f.extension() == Some(OsStr::new("timeindex")) {
                timeindex_bytes = fs::metadata(data.join(&f)).unwrap().len() as i64;
            }
            if f.extension() == Some(OsStr::new("index")) {
                fs::remove_file(data.join(f)).unwrap();
                logs += 1;
            }
        }
        assert_eq!(logs.to_string(), partitions);
        let backup = t.path().join(format!("backup-{partitions}"));
        let (code, kib) = peak_rss_kib(&[
            "repair",
            data.to_str().unwrap(),
            "--in-place",
            "--backup",
            backup.to_str().unwrap(),
            "--dry-run",
        ]);
        assert_eq!(code, 1, "changes pending: one index to create per segment");
        rss.push(kib);
    }
    // One segment's rebuilt pair (the `.timeindex` left in place is as long as each).
    let pair_kib = 2 * timeindex_bytes / 1024;
    assert!(pair_kib > 10_000, "{pair_kib} KiB: too small to tell");
    assert!(
        rss[1] < rss[0] + pair_kib,
        "8 segments peaked at {} KiB, 1 at {} KiB: more than one segment's rebuilt indexes ({pair_kib} KiB) apart",
        rss[1],
        rss[0]
    );
}

/// Bug: the repair's plan looked each salvaged run file's run up by a search of all its
/// segment's runs, so planning was quadratic in them: 30 s for one 6 MiB segment crafted
/// as 65,535 runs (`repair --in-place --dry-run --policy salvage`; `--output` took 86 s),
/// where `check` takes 0.2 s. Fixed in ddafdab: one map per log. This test once
/// asserted a time limit; it now counts how often planning asks a segment for its runs
/// (the `fault-injection` probe), which must not grow with the runs: before the fix it
/// asked once more per run file (three per run).
#[cfg(feature = "fault-injection")]
#[test]
fn planning_a_salvage_repair_is_linear_in_the_runs() {
    use recoverfs::engine::analysis::AnalyzeOptions;
    use recoverfs::engine::format::takhin::Record;
    use recoverfs::engine::replica::Prefer;
    use recoverfs::engine::report::shown_runs_asked;
    use recoverfs::repair::Action;
    // One segment of `runs` runs: two empty records, then 32 bytes no record can start
    // in, with one offset lost; the next two records are the next run.
    let tree = |runs: u64| {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("t/partition-0");
        fs::create_dir_all(&dir).unwrap();
        let mut log = Vec::new();
        for i in 0..runs {
            for o in [3 * i, 3 * i + 1] {
                let r = Record {
                    offset: o,
                    timestamp: o as i64,
                    key: vec![],
                    value: vec![],
                };
                r.encode_into(&mut log, [0; 4]);
            }
            log.extend_from_slice(&[0xff; 32]);
        }
        fs::write(dir.join("00000000000000000000.log"), &log).unwrap();
        t
    };
    let opts = AnalyzeOptions {
        policy: Policy::Salvage,
        ..Default::default()
    };
    // How often planning (--output and in place) asks a segment for its runs.
    let asked = |runs: u64| {
        let t = tree(runs);
        let out = tempfile::tempdir().unwrap();
        let before = shown_runs_asked();
        let s = recoverfs::repair::repair_to_with(
            t.path(),
            &out.path().join("new"),
            &opts,
            &[],
            Prefer::Primary,
            None,
        )
        .unwrap();
        let output = shown_runs_asked() - before;
        assert_eq!(
            s.report.summary.salvaged_runs,
            Some(runs - 1),
            "the first is the prefix"
        );
        let before = shown_runs_asked();
        let s = recoverfs::repair::repair_in_place(
            t.path(),
            Some(&out.path().join("backup")),
            true,
            &opts,
            &[],
            Prefer::Primary,
            None,
        )
        .unwrap();
        let in_place = shown_runs_asked() - before;
        let salvaged = s
            .entries
            .iter()
            .filter(|e| e.action == Action::Salvage)
            .count() as u64;
        assert_eq!(
            salvaged,
            3 * (runs - 1),
            "a .log, .index and .timeindex per run"
        );
        (output, in_place)
    };
    let (few, many) = (asked(50), asked(800));
    assert_eq!(
        few, many,
        "asked a segment for its runs (--output, in place) {few:?} times for 50 runs, {many:?} for 800"
    );
}

/// Bug: with `--replica`, `check --metrics` counted the healed records in the totals
/// (`recoverfs_records_kept`, from the summary) but not in the log's own series
/// (`recoverfs_log_records_kept`), so a healed log's figures disagreed with the
/// totals, as salvaged runs once did. Fixed with this test (engine/metrics.rs:
/// a log's figures count its healed ranges as kept).
#[test]
fn per_log_metrics_count_healed_ranges_like_the_totals() {
    let src = tempfile::tempdir().unwrap();
    let p = src.path().join("t/partition-0");
    write_segment(&p, 0, 20, 40);
    write_segment(&p, 20, 20, 40);
    let replica = tempfile::tempdir().unwrap();
    copy_tree(src.path(), replica.path());
    // The primary loses its last segment: 20 records healed from the replica.
    for ext in ["log", "index", "timeindex"] {
        fs::remove_file(seg_path(&p, 20, ext)).unwrap();
    }
    // A torn tail on the first, so the log is damaged and has a series of its own.
    cut_tail(&log_path(&p, 0), 5);
    let prom = tempfile::tempdir().unwrap().keep().join("m.prom");
    let o = check_cli(
        src.path(),
        &[
            "--replica",
            replica.path().to_str().unwrap(),
            "--metrics",
            prom.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = fs::read_to_string(&prom).unwrap();
    let value = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}")) as u64
    };
    assert_eq!(value("recoverfs_records_kept "), 40, "{text}");
    for (per_log, total) in [
        ("recoverfs_log_records_kept{", "recoverfs_records_kept "),
        ("recoverfs_log_bytes_kept{", "recoverfs_bytes_kept "),
    ] {
        assert_eq!(value(per_log), value(total), "{per_log}\n{text}");
    }
}

/// Bug: a range the primary lacked that ran across a primary segment holding no
/// record (garbage from byte 0) was healed as one segment named before it, so the
/// view listed that empty primary segment inside a healed one (two files claiming
/// its base). Fixed in f5738bc: lacking ranges are split at such a segment's base,
/// and the range healed from there takes its name and replaces it.
#[test]
fn a_healed_range_takes_the_name_of_an_empty_primary_segment_inside_it() {
    let src = tempfile::tempdir().unwrap();
    let p = src.path().join("t/partition-0");
    write_segment(&p, 0, 10, 40);
    write_segment(&p, 10, 10, 40);
    write_segment(&p, 20, 10, 40);
    write_segment(&p, 30, 10, 40);
    // The replica has one segment for it all.
    let replica = tempfile::tempdir().unwrap();
    let rp = replica.path().join("t/partition-0");
    let mut w = recoverfs::engine::format::takhin::SegmentWriter::new(0);
    for base in [0u64, 10, 20, 30] {
        let log = fs::read(log_path(&p, base)).unwrap();
        for at in record_positions(&log) {
            let n = 4 + recoverfs::engine::format::takhin::be_u32(&log, at) as usize;
            w.append_record(
                &recoverfs::engine::format::takhin::Record::decode(&log[at..at + n]).unwrap(),
            );
        }
    }
    fs::create_dir_all(&rp).unwrap();
    w.write_to(&rp).unwrap();
    // Primary: segment 10 deleted, segment 20 garbage from byte 0.
    for ext in ["log", "index", "timeindex"] {
        fs::remove_file(seg_path(&p, 10, ext)).unwrap();
    }
    overwrite(&log_path(&p, 20), 0, &[0xFF; 8]);
    let (code, v) = check_json(src.path(), &["--replica", replica.path().to_str().unwrap()]);
    assert_eq!(code, Some(1));
    let healed: Vec<(u64, u64, bool)> = v["logs"][0]["healed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["from_offset"].as_u64().unwrap(),
                h["to_offset"].as_u64().unwrap(),
                h.get("replaces").is_some(),
            )
        })
        .collect();
    assert_eq!(healed, vec![(10, 19, false), (20, 29, true)]);
    let m = Mounted::new(src.path(), &["--replica", replica.path().to_str().unwrap()]);
    let dir = m.path().join("t/partition-0");
    assert_eq!(bases(&dir), vec![0, 10, 20, 30]);
    for o in 0..40 {
        let base = o / 10 * 10;
        assert_eq!(takhin_read(&dir, base, o).unwrap().offset, o);
    }
}

/// Bug: `repair --in-place` took an entry as done when its path already held the
/// replacement's bytes, so the index of a range served from a replica that equals the
/// index it replaces (a one-record segment whose value alone differs, preferred from
/// the replicas) kept the original's times, where `--output` gives it the replica
/// `.log`'s: in place was not the `--output` tree. Fixed in the commit that adds this
/// test (in_place/apply.rs: an entry whose original already held those bytes is
/// written again, with the attributes `--output` gives).
#[test]
fn in_place_gives_a_replaced_index_equal_to_its_original_the_replicas_times() {
    let master = tempfile::tempdir().unwrap();
    let p = master.path().join("t/partition-0");
    write_segment(&p, 0, 5, 50);
    write_segment(&p, 5, 1, 50);
    write_segment(&p, 6, 5, 50);
    let r1 = clone_tree(master.path());
    let r2 = clone_tree(master.path());
    // The primary's differs from the replicas in one value byte of its one-record segment.
    let log = fs::read(log_path(&p, 5)).unwrap();
    let end = 4 + recoverfs::engine::format::takhin::be_u32(&log, 0) as usize;
    overwrite(&log_path(&p, 5), (end - 5) as u64, &[log[end - 5] ^ 0x10]);
    // Its index is the replicas' byte for byte; only its times tell it apart.
    let old = filetime::FileTime::from_unix_time(1_577_836_800, 0);
    filetime::set_file_mtime(seg_path(&p, 5, "index"), old).unwrap();
    let (a, b) = (r1.path().to_str().unwrap(), r2.path().to_str().unwrap());
    let args = ["--replica", a, "--replica", b, "--prefer", "majority"];
    let out = tempfile::tempdir().unwrap();
    let new = out.path().join("new");
    assert_ok(
        &repair_output(clone_tree(master.path()).path(), &new, &args),
        "repair --output",
    );
    let src = clone_tree(master.path());
    let bk = tempfile::tempdir().unwrap();
    assert_ok(
        &repair_in_place(src.path(), &bk.path().join("b"), &args),
        "repair --in-place",
    );
    assert_trees_eq(
        &files_only(items(src.path())),
        &files_only(items(&new)),
        "in place against --output",
    );
}

/// Bug: `repair --in-place --replica DIR` with a replica path that is not UTF-8 wrote
/// the path into the backup manifest lossily, backed the originals up, then failed to
/// open the replica by that name when applying (exit 2, "could not open the replica"),
/// and every rerun failed the same way. Fixed in the commit that adds this test
/// (in_place/mod.rs): refused before anything is written, naming the path escaped.
#[test]
fn in_place_healing_refuses_a_replica_path_that_is_not_utf8_before_any_change() {
    use std::os::unix::ffi::OsStrExt;
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let p = data.join("t/partition-0");
    write_segment(&p, 0, 10, 20);
    write_segment(&p, 10, 10, 20);
    let replica = t.path().join(OsStr::from_bytes(b"replica-\xff"));
    copy_tree(&data, &replica);
    cut_tail(&log_path(&p, 10), 30); // the primary lacks what the replica holds
    age_all_atimes(&data);
    let before = snapshot_all(&data);
    let backup = t.path().join("backup");
    let mut args = in_place_args(&data, &backup, &[]);
    args.push("--replica".into());
    args.push(replica.clone().into_os_string());
    let o = run(&args);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "replica-\\xff: in place, each replica is named in the backup manifest as text"
        ),
        "{}",
        stderr(&o)
    );
    assert!(!backup.exists(), "nothing written to the backup");
    assert_unchanged(&before, &snapshot_all(&data));
    // The same replica heals the view written elsewhere.
    let new = t.path().join("new");
    let mut args = output_args(&data, &new, &[]);
    args.push("--replica".into());
    args.push(replica.into_os_string());
    assert_ok(&run(&args), "repair --output with the replica");
}

/// Bug: the source watcher ignored the kernel's queue overflow (`IN_Q_OVERFLOW`: a
/// burst of changes made it drop events), so a file changed in the burst kept its
/// name, attributes and pages in the kernel's caches until their TTLs ran out, and its
/// log's point-in-time actions stayed. Also, a cut event name (never written by the
/// kernel, but a parser trusts nothing) panicked the watcher thread. Fixed with this
/// test (view/watch.rs reads events bounded and reports an overflow; the view then
/// invalidates every file's inode handed out, as possibly changed).
#[test]
fn a_source_watch_that_lost_events_drops_every_cached_name_and_attribute() {
    use recoverfs::engine::format::takhin::{segment_file_name, FileKind};
    use recoverfs::view::watch::Watcher;
    use recoverfs::view::Change;
    use std::sync::{Arc, Mutex};
    let t = tempfile::tempdir().unwrap();
    write_log(t.path(), 0, 5);
    fs::write(t.path().join("plain"), b"x").unwrap();
    fs::create_dir(t.path().join("sub")).unwrap();
    let v = view(t.path(), Policy::PerSegment);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    v.set_invalidator(Box::new(move |ino, why| s.lock().unwrap().push((ino, why))));
    let sub = v.lookup(ROOT_INO, OsStr::new("sub")).unwrap().ino;
    let log = v
        .lookup(ROOT_INO, OsStr::new(&segment_file_name(0, FileKind::Log)))
        .unwrap()
        .ino;
    let plain = v.lookup(ROOT_INO, OsStr::new("plain")).unwrap().ino;
    let w = Watcher::new(v.config().source.clone()).unwrap();
    // An event's fixed part as the kernel writes it: watch, mask, cookie, name length.
    let fixed =
        |fields: [u32; 4]| -> Vec<u8> { fields.iter().flat_map(|f| f.to_ne_bytes()).collect() };
    // What a read of the watcher returns after an overflow: one event, watch -1, no name.
    v.watch_events(&w, &fixed([u32::MAX, libc::IN_Q_OVERFLOW, 0, 0]));
    let seen = seen.lock().unwrap();
    for ino in [log, plain] {
        assert!(
            seen.contains(&(ino, Change::MaybeMissed)),
            "inode {ino} not invalidated: {seen:?}"
        );
    }
    // A directory's entries always reach the view: its name stays (dropping it would
    // detach anything mounted on it).
    assert!(seen.iter().all(|&(ino, _)| ino != sub), "{seen:?}");
    // A cut event (its name without the NUL it was padded with) is read, not a panic.
    let mut cut = fixed([1, libc::IN_MODIFY, 0, 32]);
    cut.extend_from_slice(b"plain");
    v.watch_events(&w, &cut);
}

/// Unmounts `self.0` lazily on drop if it is still a mount (a background mount's
/// daemon then exits by itself), so that no test leaves a mount behind, even on panic.
struct UnmountOnDrop(std::path::PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        if recoverfs::cli::sys::is_mount_point(&self.0) {
            let _ = recoverfs::cli::sys::lazy_unmount(&self.0);
        }
    }
}

/// `umount MP`, retried briefly (a forked test child may hold an fd inside it for a moment).
fn umount_retrying(mp: &std::path::Path) {
    for _ in 0..50 {
        let st = std::process::Command::new("umount")
            .arg(mp)
            .status()
            .unwrap();
        if st.success() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("umount {} failed", mp.display());
}

/// A fresh, canonical, empty mount point in `t`.
fn fresh_mountpoint(t: &std::path::Path, name: &str) -> std::path::PathBuf {
    let mp = t.join(name);
    fs::create_dir(&mp).unwrap();
    fs::canonicalize(&mp).unwrap()
}

/// Bug (issue 19, item 1): `mount -t recoverfs SRC MP` failed (exit 32), and so did
/// an fstab line with `defaults`: mount(8) passes `-o rw` to its helper whenever `ro`
/// is not given, and `recoverfs mount` refused `rw`. Fixed with this test: `rw` is
/// accepted (the view is read-only all the same), as are the options mount(8) hands
/// on from fstab (`nofail`, `_netdev`, `user` and the `noexec,nosuid,nodev` it implies).
/// Goes through the real mount(8), with mount-scripts/mount.recoverfs installed as
/// /sbin/mount.recoverfs (removed, and any previous one put back, by a guard).
#[test]
fn mount_t_recoverfs_and_an_fstab_line_with_defaults_mount_the_view_read_only() {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    const HELPER: &str = "/sbin/mount.recoverfs";
    /// The installed helper, removed on drop; an operator's own helper is put back.
    struct Installed {
        saved: Option<PathBuf>,
    }
    impl Installed {
        fn new() -> Installed {
            let saved = Path::new(HELPER).exists().then(|| {
                let to = PathBuf::from(format!("{HELPER}.saved-by-recoverfs-test"));
                fs::rename(HELPER, &to).unwrap();
                to
            });
            // Made before the copy exists: a panic in the copy still restores.
            let me = Installed { saved };
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("mount-scripts/mount.recoverfs");
            fs::copy(script, HELPER).unwrap();
            me
        }
    }
    impl Drop for Installed {
        fn drop(&mut self) {
            let _ = fs::remove_file(HELPER);
            if let Some(s) = &self.saved {
                let _ = fs::rename(s, HELPER);
            }
        }
    }
    let src = fixture_copy("data");
    let t = tempfile::tempdir().unwrap();
    let mp = fresh_mountpoint(t.path(), "mp");
    let fstab = t.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "{}  {}  recoverfs  defaults  0 0\n",
            src.path().display(),
            mp.display()
        ),
    )
    .unwrap();
    let fstab_more = t.path().join("fstab-more");
    fs::write(
        &fstab_more,
        format!(
            "{}  {}  recoverfs  defaults,policy=point-in-time,nofail,_netdev,noauto,user,x-systemd.device-timeout=5  0 0\n",
            src.path().display(),
            mp.display()
        ),
    )
    .unwrap();
    let _helper = Installed::new();
    let _unmount = UnmountOnDrop(mp.clone());
    let (s, m) = (src.path().as_os_str(), mp.as_os_str());
    let cases: [(Vec<&OsStr>, &str); 4] = [
        (
            vec![OsStr::new("-t"), OsStr::new("recoverfs"), s, m],
            "per-segment",
        ),
        (
            vec![
                OsStr::new("-t"),
                OsStr::new("recoverfs"),
                OsStr::new("-o"),
                OsStr::new("policy=strict"),
                s,
                m,
            ],
            "strict",
        ),
        (vec![OsStr::new("-T"), fstab.as_os_str(), m], "per-segment"),
        (
            vec![OsStr::new("-T"), fstab_more.as_os_str(), m],
            "point-in-time",
        ),
    ];
    for (args, policy) in cases {
        let o = Command::new("mount")
            .args(&args)
            .env("RECOVERFS", bin())
            .output()
            .unwrap();
        assert!(o.status.success(), "mount {args:?}: {o:?}");
        assert!(recoverfs::cli::sys::is_mount_point(&mp), "{args:?}");
        let mounts = fs::read_to_string("/proc/mounts").unwrap();
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(&*mp.to_string_lossy()))
            .expect("the mount in /proc/mounts");
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields[2], "fuse.recoverfs", "{line}");
        assert!(fields[3].split(',').any(|o| o == "ro"), "{line}");
        let r: serde_json::Value =
            serde_json::from_slice(&fs::read(mp.join(".recoverfs/report.json")).unwrap()).unwrap();
        assert_eq!(r["policy"], policy, "{args:?}");
        let e = fs::write(mp.join("new-file"), b"x").expect_err("the view is read-only");
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        umount_retrying(&mp);
        assert!(!recoverfs::cli::sys::is_mount_point(&mp));
    }
}

/// Bug (issue 19, item 4): `mount` of a directory holding no Takhin log (a mistyped
/// path) succeeded with an empty view, while `check` and `repair` refuse it (exit 2).
/// Fixed with this test: `mount` refuses it the same way before anything is mounted;
/// `--allow-empty` (or `-o allow_empty`) mounts a broker's directory with no partition yet.
#[test]
fn mount_refuses_a_directory_holding_no_takhin_log_unless_allow_empty() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("not-a-partition")).unwrap();
    fs::write(src.join("meta.properties"), b"broker.id=1\n").unwrap();
    fs::write(src.join("not-a-partition/syslog.log"), b"text\n").unwrap();
    let mp = fresh_mountpoint(t.path(), "mp");
    let _unmount = UnmountOnDrop(mp.clone());
    for extra in [&[][..], &["--foreground"][..]] {
        let mut args = vec![OsStr::new("mount"), src.as_os_str(), mp.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("no Takhin log") && err.contains("--allow-empty"),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(!recoverfs::cli::sys::is_mount_point(&mp));
    }
    // As check and repair answer.
    assert_eq!(check_cli(&src, &[]).status.code(), Some(2));
    for allow in [&["--allow-empty"][..], &["-o", "nometa,allow_empty"][..]] {
        let m = Mounted::new(&src, allow);
        assert_eq!(
            fs::read(m.path().join("meta.properties")).unwrap(),
            b"broker.id=1\n"
        );
    }
}

/// Bug (issue 19, item 13): `-q` and `-qq` did not silence the warning a background
/// mount prints when there is no syslog socket (`/dev/log`), which every background
/// mount in a container prints. Fixed with this test: it is a warning, so `-q`
/// (errors only) and `-qq` (nothing) leave it out; without them it is still said.
#[test]
fn quiet_silences_a_background_mounts_missing_syslog_warning() {
    let src = fixture_copy("seed-example");
    let t = tempfile::tempdir().unwrap();
    let mp = fresh_mountpoint(t.path(), "mp");
    let _unmount = UnmountOnDrop(mp.clone());
    for (quiet, warned) in [(None, true), (Some("-q"), false), (Some("-qq"), false)] {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(quiet)
            .arg("mount")
            .arg(src.path())
            .arg(&mp)
            .env("RECOVERFS_SYSLOG_SOCKET", t.path().join("no-syslog-here"));
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{quiet:?}: {}", stderr(&o));
        assert!(recoverfs::cli::sys::is_mount_point(&mp));
        let err = stderr(&o);
        if warned {
            assert!(err.contains("warning: syslog"), "{err}");
        } else {
            assert_eq!(err, "", "{quiet:?} printed");
        }
        umount_retrying(&mp);
    }
}

/// Bug (issue 19, item 13): `check -v` printed nothing more than `check`, though the
/// README says every subcommand takes -v. Fixed with this test: with -v, `check` and
/// `repair` log one debug line per segment (clean ones too, which the report leaves
/// out: status, bytes, records, offsets, indexes), then what was read and how fast.
#[test]
fn check_and_repair_verbose_log_every_segment() {
    let src = fixtures().join("data");
    let (code, report) = check_json(&src, &[]);
    assert_eq!(code, Some(0));
    let paths: Vec<String> = report["logs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["segments"].as_array().unwrap().iter())
        .map(|s| s["path"].as_str().unwrap().to_string())
        .collect();
    assert!(paths.len() > 5, "{paths:?}");
    let quiet = check_cli(&src, &[]);
    assert_eq!(stderr(&quiet), "", "check without -v logs nothing");
    let out = tempfile::tempdir().unwrap();
    for o in [
        check_cli(&src, &["-v"]),
        repair_output(&src, &out.path().join("new"), &["-v"]),
    ] {
        assert!(o.status.success(), "{}", stderr(&o));
        let err = stderr(&o);
        for p in &paths {
            let line = err
                .lines()
                .find(|l| l.contains(&format!("{p}: clean")))
                .unwrap_or_else(|| panic!("no line for {p}: {err}"));
            assert!(line.contains("index match"), "{line}");
        }
        assert!(err.contains(".log bytes examined in"), "{err}");
    }
}

/// Bug (issue 19, item 15): shell completion offered file names for `--policy` and the
/// other flags taking one of a few words (their values were parsed by hand, so clap
/// knew none of them). Fixed with this test: each is a clap possible-values parser, so
/// `--help` lists the values and every completion script offers them.
#[test]
fn completions_offer_the_values_of_every_enum_flag() {
    let o = run(["completions", "bash"]);
    assert!(o.status.success());
    let script = stdout(&o);
    for (flag, values) in [
        ("--policy", "per-segment point-in-time strict salvage"),
        ("--prefer", "primary replica majority"),
        ("--passthrough", "auto off"),
        ("--verify", "lazy background"),
        ("--values", "preview full none"),
    ] {
        let lines: Vec<&str> = script.lines().collect();
        let cases: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].trim() == format!("{flag})"))
            .collect();
        assert!(!cases.is_empty(), "{flag} is not completed at all");
        for i in cases {
            let want = format!("compgen -W \"{values}\"");
            assert!(
                lines[i + 1].contains(&want),
                "{flag} completes with {:?}, not {want}",
                lines[i + 1].trim()
            );
        }
    }
    for shell in ["zsh", "fish"] {
        let o = run(["completions", shell]);
        assert!(stdout(&o).contains("point-in-time"), "{shell}");
    }
}

/// Bug (issue 19, item 16): `recoverfs umount MNT` answered with clap's "a similar
/// subcommand exists: 'mount'". Fixed with this test: it answers how a view is
/// unmounted (`umount MNT`, `fusermount3 -u MNT`), exit 2, mounting nothing.
#[test]
fn recoverfs_umount_says_how_to_unmount() {
    for sub in ["umount", "unmount"] {
        let o = run([sub, "/mnt/the view"]);
        assert_eq!(o.status.code(), Some(2));
        let err = stderr(&o);
        assert!(
            err.contains("umount '/mnt/the view'")
                && err.contains("fusermount3 -u '/mnt/the view'"),
            "{err}"
        );
        assert!(!err.contains("similar subcommand"), "{err}");
    }
}

/// Bug (issue 19, item 16): `check -n`, as fsck and e2fsck users type it, was refused
/// ("unexpected argument '-n'"). Fixed with this test: `-n` is accepted (check never
/// writes, with or without it) and changes nothing in the report or the source.
#[test]
fn check_accepts_fscks_n() {
    let src = damaged();
    let before = snapshot_all(src.path());
    let plain = check_cli(src.path(), &[]);
    let n = check_cli(src.path(), &["-n"]);
    assert_eq!(n.status.code(), Some(1), "{}", stderr(&n));
    assert_eq!(n.status.code(), plain.status.code());
    assert_eq!(stdout(&n), stdout(&plain));
    assert_unchanged(&before, &snapshot_all(src.path()));
}

/// Bug (issue 19, item 16): `mount` had `--allow-other` but `allow_root` only as
/// `-o allow_root`; `--allow-root` was refused. Fixed with this test: the flag lets
/// root and the mount's owner in, nobody else (and it excludes --allow-other).
#[test]
fn mount_takes_allow_root_as_a_flag() {
    use std::os::unix::fs::PermissionsExt;
    let src = tempfile::tempdir().unwrap();
    fs::set_permissions(src.path(), fs::Permissions::from_mode(0o755)).unwrap();
    write_log(src.path(), 0, 3);
    fs::write(src.path().join("public.txt"), b"anyone").unwrap();
    fs::set_permissions(
        src.path().join("public.txt"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    {
        let m = Mounted::new(src.path(), &["--allow-root"]);
        let mp = m.path().display().to_string();
        assert_eq!(fs::read(m.path().join("public.txt")).unwrap(), b"anyone");
        assert!(!as_nobody(&format!("cat {mp}/public.txt")));
    }
    {
        // The same file, which nobody may read under --allow-other: the refusal above is allow_root's.
        let m = Mounted::new(src.path(), &["--allow-other"]);
        assert!(as_nobody(&format!("cat {}/public.txt", m.path().display())));
    }
    let mp = tempfile::tempdir().unwrap();
    let o = run([
        OsStr::new("mount"),
        src.path().as_os_str(),
        mp.path().as_os_str(),
        OsStr::new("--allow-root"),
        OsStr::new("--allow-other"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Bug (issue 19, item 17): the README never put `recoverfs` on the PATH (the quick
/// start built target/release/recoverfs), yet its examples and every `Next:` hint call
/// bare `recoverfs`. Fixed with this test: the quick start installs it with
/// `cargo install --path . --locked` before any code block runs `recoverfs`, and
/// keeps the one test command line.
#[test]
fn the_readme_installs_recoverfs_before_its_first_example() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut in_code = false;
    let mut install = None;
    let mut first_use = None;
    for (i, line) in readme.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            continue;
        }
        if line.contains("cargo install --path . --locked") && install.is_none() {
            install = Some(i);
        }
        // A command line: bare, or after a `$ `/`# ` prompt.
        let cmd = line
            .trim_start()
            .trim_start_matches("$ ")
            .trim_start_matches("# ");
        if (cmd.starts_with("recoverfs ") || cmd.starts_with("target/release/recoverfs "))
            && first_use.is_none()
        {
            first_use = Some(i);
        }
    }
    let install = install.expect("no `cargo install --path . --locked` in a code block");
    let first_use = first_use.expect("no example");
    assert!(
        install < first_use,
        "line {} runs recoverfs before line {} installs it",
        first_use + 1,
        install + 1
    );
    assert!(readme.contains("\ncargo test --release --locked --features fault-injection\n"));
    assert!(
        !readme.contains("target/release/recoverfs "),
        "an example still runs target/release/recoverfs"
    );
}

/// Bug (issue 19, item 7): a record offset past `i64::MAX` was accepted as clean
/// (`next offset 9223372036854775809`): the scanner compared `base + index` in u64,
/// and salvage chained offsets with wrapping adds. Takhin offsets are signed 64-bit:
/// fixed in engine/scan.rs (`check_offset`, shared with salvage): a record whose
/// `base + index` is past 9223372036854775807 (or overflows) is offset-mismatch
/// damage, and salvage never takes such an offset for a resync or a run.
#[test]
fn record_offsets_past_i64_max_are_damage_not_clean() {
    use recoverfs::engine::format::takhin::SegmentWriter;
    const MAX: u64 = i64::MAX as u64;
    let records = |base: u64, n: u64| {
        let mut w = SegmentWriter::new(base);
        for i in 0..n {
            w.append(1_700_000_000_000 + i as i64, b"k", &[b'v'; 40]);
        }
        w
    };
    // Five records from MAX - 2: the fourth would hold MAX + 1.
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("t/partition-0");
    fs::create_dir_all(&dir).unwrap();
    records(MAX - 2, 5).write_to(&dir).unwrap();
    let (code, j) = check_json(t.path(), &[]);
    assert_eq!(code, Some(1), "{j}");
    let seg = &j["logs"][0]["segments"][0];
    assert_eq!(seg["status"], "truncated", "{seg}");
    assert_eq!(seg["records"], 3);
    assert_eq!(seg["last_offset"], MAX);
    assert_eq!(seg["damage"]["kind"], "offset-mismatch");
    assert_eq!(seg["damage"]["record"], 3);
    let detail = seg["damage"]["detail"].as_str().unwrap();
    assert!(detail.contains("past 9223372036854775807"), "{detail}");
    // dump says the same, and exits 1.
    let o = dump(&log_path(&dir, MAX - 2), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("offset-mismatch"), "{}", stdout(&o));
    // A base past MAX (20 digits can spell it): no record of it is valid.
    let t2 = tempfile::tempdir().unwrap();
    records(MAX + 1, 2).write_to(t2.path()).unwrap();
    let (code, j) = check_json(t2.path(), &[]);
    assert_eq!(code, Some(1), "{j}");
    let seg = &j["logs"][0]["segments"][0];
    assert_eq!(seg["records"], 0, "{seg}");
    assert_eq!(seg["damage"]["kind"], "offset-mismatch");
    // Salvage after mid-segment damage stops its run at MAX and takes nothing past it.
    let t3 = tempfile::tempdir().unwrap();
    let w = records(MAX - 8, 12);
    w.write_to(t3.path()).unwrap();
    let log = log_path(t3.path(), MAX - 8);
    overwrite(&log, positions(&w)[2], &[0xff; 4]);
    let (code, j) = check_json(t3.path(), &["--policy", "salvage"]);
    assert_eq!(code, Some(1), "{j}");
    let runs = j["logs"][0]["segments"][0]["salvaged"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["first_offset"], MAX - 5);
    assert_eq!(runs[0]["last_offset"], MAX);
    assert_eq!(runs[0]["records"], 6);
}

/// A partition of 20 records (values 40 bytes) whose `.index` has entries 3 and 4
/// swapped: every entry well-formed, two in the wrong place.
fn scrambled_index() -> (tempfile::TempDir, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("orders/partition-0");
    write_segment(&dir, 0, 20, 40);
    let ix = seg_path(&dir, 0, "index");
    let mut b = fs::read(&ix).unwrap();
    let (e3, e4) = (b[48..64].to_vec(), b[64..80].to_vec());
    b[48..64].copy_from_slice(&e4);
    b[64..80].copy_from_slice(&e3);
    fs::write(&ix, b).unwrap();
    (t, dir)
}

/// Bug (issue 19, item 3): `dump` of a scrambled `.index` printed its entries and
/// exited 0 ("every file is clean") unless `--verify-index` was given; kafka-dump-log's
/// spellings were refused; a directory was refused. Fixed in dump.rs and cli/dump.rs:
/// an index file is checked against its `.log` by default (`--no-verify-index` opts
/// out), a missing `.log` leaves it unchecked (exit 1), `--files`, `--verify-index-only`,
/// `--index-sanity-check`, `--print-data-log`, `--deep-iteration` are accepted, and a
/// directory dumps every segment file in it.
#[test]
fn dump_checks_a_scrambled_index_against_its_log_by_default() {
    let (_t, dir) = scrambled_index();
    let ix = seg_path(&dir, 0, "index");
    let o = dump(&ix, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(text.contains("entry 3 @48: offset 4 position "), "{text}");
    assert_eq!(text.matches("DIFFERS: should be").count(), 2, "{text}");
    assert!(
        text.contains("against the .log: differs at entry 3"),
        "{text}"
    );
    // Opted out: the entries alone, exit 0 (the file is whole).
    let o = dump(&ix, &["--no-verify-index"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(!stdout(&o).contains("DIFFERS") && !stdout(&o).contains(" ok"));
    // kafka-dump-log's spellings.
    let o = dump(&ix, &["--verify-index-only"]);
    assert_eq!(o.status.code(), Some(1));
    let only = stdout(&o);
    let entries: Vec<&str> = only.lines().filter(|l| l.starts_with("entry ")).collect();
    assert_eq!(entries.len(), 2, "only the two that differ: {only}");
    assert_eq!(dump(&ix, &["--index-sanity-check"]).status.code(), Some(1));
    let log = log_path(&dir, 0);
    let list = format!("{},{}", log.display(), ix.display());
    let o = run(["dump", "--files", list.as_str()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stdout(&o).matches("== ").count(), 2, "{}", stdout(&o));
    let o = dump(&log, &["--print-data-log", "--deep-iteration"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stdout(&o).contains('…'), "values whole: {}", stdout(&o));
    // A directory: every segment file in it, the .log first.
    let o = dump(&dir, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let all = stdout(&o);
    let heads: Vec<&str> = all.lines().filter(|l| l.starts_with("== ")).collect();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert!(
        heads[0].ends_with("00000000000000000000.log =="),
        "{heads:?}"
    );
    assert!(heads[1].ends_with(".index =="), "{heads:?}");
    // An index with no .log beside it is not called clean.
    fs::remove_file(&log).unwrap();
    let o = dump(&ix, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("not checked: its .log"),
        "{}",
        stdout(&o)
    );
}

/// Bug (issue 19, item 6): errors named the wrong problem: `dump DIR` said the name
/// was not `<20 digits>.log`, `repair --output FILE` said "not empty",
/// `repair --output SRC` said "inside the data directory". Fixed in cli/dump.rs (a
/// directory is dumped, or named as one holding no segment file) and repair (a file
/// and the source itself are named as such, `--backup SRC` too).
#[test]
fn errors_name_a_directory_a_file_and_the_source_itself() {
    let t = tempfile::tempdir().unwrap();
    let empty = t.path().join("partition-9");
    fs::create_dir(&empty).unwrap();
    let o = dump(&empty, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("a directory holding no segment file") && !stderr(&o).contains("named"),
        "{}",
        stderr(&o)
    );
    let src = damaged();
    let file = t.path().join("hostname");
    fs::write(&file, b"box\n").unwrap();
    let o = repair_output(src.path(), &file, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is a file, not a directory") && !stderr(&o).contains("not empty"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read(&file).unwrap(), b"box\n");
    let o = repair_output(src.path(), src.path(), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is the data directory itself") && !stderr(&o).contains("inside"),
        "{}",
        stderr(&o)
    );
    let o = repair_in_place(src.path(), src.path(), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is the data directory itself") && !stderr(&o).contains("inside"),
        "{}",
        stderr(&o)
    );
}

/// Bug (issue 19, item 2): the HTML report printed `\x0a` for every line break of
/// its text block (the terminal's escaping of a name applied to the whole text);
/// it had no word on the indexes the view rebuilt; it said "Left out" of
/// unrecognized files, which the view serves unchanged; a cut of a few bytes was
/// drawn half a unit wide under a white stroke (invisible); and a path in the
/// segment table broke a few characters per line (`word-break: break-all` in a
/// squeezed column). Fixed in engine/page.rs (`escape_lines`, an `indexes` column
/// from the text's own INDEX findings, "Unrecognized: ... served unchanged",
/// `MIN_DAMAGE_W`, paths `nowrap` in tables that scroll). Checked on the page as
/// headless Chromium renders it (its innerText), and in the HTML itself.
#[test]
fn the_html_report_reads_like_the_text_report() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("orders-with-a-longer-topic-name/partition-0");
    write_segment(&dir, 0, 2000, 100);
    write_segment(&dir, 2000, 10, 10);
    fs::remove_file(seg_path(&dir, 0, "index")).unwrap();
    // A tail of 3 bytes in about 250 KB: far below a pixel at its share.
    let last = log_path(&dir, 2000);
    let mut b = fs::read(&last).unwrap();
    b.extend_from_slice(&[1, 2, 3]);
    fs::write(&last, b).unwrap();
    fs::write(dir.join("00000000000000009000.timeindex"), b"").unwrap();
    fs::write(dir.join("123.log"), b"not a segment").unwrap();
    let out = tempfile::tempdir().unwrap();
    let html = out.path().join("report.html");
    let o = check_cli(t.path(), &["--html", html.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = stdout(&check_cli(t.path(), &[]));
    assert!(text.contains("INDEX ") && text.contains("ORPHAN"), "{text}");
    let page = fs::read_to_string(&html).unwrap();
    assert!(!page.contains("\\x0a"), "escaped line breaks in the page");
    assert!(page.contains("<th>indexes</th>"));
    let row0 = page
        .lines()
        .find(|l| l.contains("<td><code>00000000000000000000.log</code></td>"))
        .expect("segment 0's row");
    assert!(
        row0.contains("<code>.index</code>: missing (rebuilt in the view)"),
        "{row0}"
    );
    let p = "orders-with-a-longer-topic-name/partition-0";
    assert!(page.contains(&format!(
        "<p>Left out: <code>{p}/00000000000000009000.timeindex</code>"
    )));
    assert!(!page.contains(&format!("Left out: <code>{p}/123.log")));
    assert!(page.contains(&format!(
        "<p>Unrecognized: <code>{p}/123.log</code>: named like a segment file, but is not one; served unchanged in the view"
    )));
    let cut = &page[page.find("<rect class=\"cut\"").expect("a cut drawn")..];
    let w: f64 = cut[cut.find("width=\"").unwrap() + 7..]
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // At least engine::page::MIN_DAMAGE_W (4) of the bar's 1000 units; it was 0.5.
    assert!(w >= 4.0, "cut {w} units wide");
    // A replica that matches nothing, and a log only it holds: named on the page too.
    let r = tempfile::tempdir().unwrap();
    write_segment(&r.path().join("other/partition-0"), 0, 3, 10);
    let html2 = out.path().join("replica.html");
    let o = check_cli(
        t.path(),
        &[
            "--replica",
            r.path().to_str().unwrap(),
            "--html",
            html2.to_str().unwrap(),
        ],
    );
    assert!(stdout(&o).contains("NO MATCH"), "{}", stdout(&o));
    let page2 = fs::read_to_string(&html2).unwrap();
    assert!(page2.contains("<p class=\"mid\">NO MATCH: "), "no NO MATCH");
    assert!(page2.contains("<p>Not in the primary: <code>other/partition-0</code>"));
    // As a reader sees it.
    let Some(browser) = common::browser::chromium() else {
        return;
    };
    let seen = common::browser::render(&browser, &html, out.path());
    assert!(!seen.text.contains("\\x0a"), "{}", seen.text);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            seen.text.contains(line.trim_end()),
            "not on the rendered page: {line:?}\n{}",
            seen.text
        );
    }
    for (code, lines) in &seen.code_lines {
        assert_eq!(*lines, 1, "{code:?} wraps over {lines} lines");
    }
    assert!(
        seen.cut_px.len() == 1 && seen.cut_px[0] >= 3.0,
        "{:?}",
        seen.cut_px
    );
}

/// Bug (issue 19, item 9): `check --html F` opened F with O_CREAT|O_TRUNC and `mount
/// --log-file F` with O_APPEND, both following a symlink planted at F: where another user
/// controls the directory, root truncated or appended to whatever file the link named
/// (`--metrics` replaced the link, silently). Fixed with this test: the report outputs
/// refuse a symlink or non-regular file at F (then write through a temporary file renamed
/// into place), and the log file is opened O_NOFOLLOW and must be a regular file with
/// one name. The victim is unchanged; the error names F.
#[test]
fn output_files_never_follow_a_planted_symlink() {
    use recoverfs::cli::sys::{is_mount_point, lazy_unmount};
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    fs::create_dir(&data).unwrap();
    write_log(&data, 0, 5);
    let victim = t.path().join("victim");
    fs::write(&victim, b"precious\n").unwrap();
    let before = fs::read(&victim).unwrap();
    let planted = |name: &str| {
        let f = t.path().join(name);
        std::os::unix::fs::symlink(&victim, &f).unwrap();
        f
    };
    for flag in ["--html", "--metrics"] {
        let f = planted(&format!("report{flag}"));
        let o = run(argv(&[&"check", &data, &flag, &f]));
        assert_eq!(o.status.code(), Some(2), "{flag}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&f.display().to_string()) && stderr(&o).contains("symbolic link"),
            "{flag}: the error names F: {}",
            stderr(&o)
        );
        assert_eq!(fs::read(&victim).unwrap(), before, "{flag}: victim changed");
        assert!(
            fs::symlink_metadata(&f).unwrap().file_type().is_symlink(),
            "{flag}: the link itself is left alone"
        );
    }
    // A directory at F is refused by name too, and a regular file is replaced as before.
    let o = run(argv(&[&"check", &data, &"--html", &t.path()]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));
    let page = t.path().join("page.html");
    fs::write(&page, b"old").unwrap();
    assert_eq!(
        run(argv(&[&"check", &data, &"--html", &page]))
            .status
            .code(),
        Some(0)
    );
    assert!(fs::read_to_string(&page).unwrap().contains("<html"));

    // The mount's log file: a link there is refused before anything is mounted. (Before
    // the fix the mount succeeded and logged into the victim; the guard unmounts it.)
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            if is_mount_point(&self.0) {
                let _ = lazy_unmount(&self.0);
            }
        }
    }
    let mp = t.path().join("mnt");
    fs::create_dir(&mp).unwrap();
    let _guard = Unmount(mp.clone());
    let log = planted("mount.log");
    let o = run(argv(&[&"mount", &data, &mp, &"--log-file", &log]));
    assert!(!is_mount_point(&mp), "mounted with a planted log file");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&log.display().to_string()) && stderr(&o).contains("symbolic link"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        fs::read(&victim).unwrap(),
        before,
        "the log went to the victim"
    );
    // A hard link to the victim is refused too (appending would write into it).
    let hard = t.path().join("hard.log");
    fs::hard_link(&victim, &hard).unwrap();
    let o = run(argv(&[&"mount", &data, &mp, &"--log-file", &hard]));
    assert!(!is_mount_point(&mp));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("hard links"), "{}", stderr(&o));
    assert_eq!(fs::read(&victim).unwrap(), before);
}

/// The bytes on disk of a file (st_blocks), and the CRC-32 of its whole logical
/// content read in 1 MiB pieces (a hole reads as zeros).
fn disk_bytes_and_crc(p: &std::path::Path) -> (u64, u64, u32) {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(p).unwrap();
    let mut f = fs::File::open(p).unwrap();
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    (m.blocks() * 512, m.len(), h.finalize())
}

/// Bug (issue 19, item 8): `repair` turned holes into real zeros: a 1 GiB sparse file
/// (a few KiB on disk) took 1 GiB in `--output` (copy_file_range and the read/write
/// fallback both read a hole as zeros and wrote them), and `--in-place` backed up a sparse
/// preallocated segment at its full size. Fixed with this test: every copy (whole files,
/// prefixes, salvaged or healed ranges, backups) walks the source's data extents
/// (SEEK_DATA/SEEK_HOLE) and leaves holes as holes; the manifest's CRC-32s still cover
/// the whole logical content (holes hashed as zeros, without reading them).
#[test]
fn repair_keeps_holes_in_outputs_and_backups() {
    use std::os::unix::fs::FileExt;
    const GIB: u64 = 1 << 30;
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let part = data.join("topic/partition-0");
    fs::create_dir_all(&part).unwrap();
    write_log(&part, 0, 20);
    // A preallocated segment: its records, then a sparse tail up to 256 MiB (as a broker
    // preallocating segments leaves it).
    let last = write_log(&part, 20, 20);
    let seg = log_path(&part, 20);
    set_len(&seg, 256 << 20);
    // An unrecognized 1 GiB sparse file with data at its start, middle and end: served
    // unchanged, so copied whole.
    let big = data.join("topic/big.bin");
    let f = fs::File::create(&big).unwrap();
    f.set_len(GIB).unwrap();
    for at in [0, GIB / 2 + 12345, GIB - 4096] {
        f.write_all_at(&[0xa5; 4096], at).unwrap();
    }
    drop(f);
    let (big_disk, _, big_crc) = disk_bytes_and_crc(&big);
    assert!(
        big_disk < 1 << 20,
        "the source is sparse: {big_disk} bytes on disk"
    );
    let (seg_disk, seg_len, seg_crc) = disk_bytes_and_crc(&seg);
    assert!(seg_disk < 1 << 20, "{seg_disk}");

    let new = t.path().join("new");
    let o = repair_output(&data, &new, &[]);
    assert_ok(&o, "repair --output");
    // The summary accounts for the bytes it did not copy.
    assert!(stdout(&o).contains(" left as holes)"), "{}", stdout(&o));
    let (disk, len, crc) = disk_bytes_and_crc(&new.join("topic/big.bin"));
    assert_eq!(
        (len, crc),
        (GIB, big_crc),
        "the output holds the same bytes"
    );
    assert!(
        disk < 1 << 20,
        "the output's copy takes {disk} bytes on disk"
    );
    // The preallocated segment is cut at its records, as before.
    assert_eq!(
        fs::read(new.join("topic/partition-0/00000000000000000020.log")).unwrap(),
        last.log
    );

    let backup = t.path().join("backup");
    assert_ok(&repair_in_place(&data, &backup, &[]), "repair --in-place");
    let copy = backup.join("topic/partition-0/00000000000000000020.log");
    let (disk, len, crc) = disk_bytes_and_crc(&copy);
    assert_eq!(
        (len, crc),
        (seg_len, seg_crc),
        "the backup holds the original"
    );
    assert!(disk < 1 << 20, "the backup copy takes {disk} bytes on disk");
    // The manifest's CRC-32 covers the whole logical original, its hole included.
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(backup.join("recoverfs-backup.json")).unwrap()).unwrap();
    let entry = m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("00000000000000000020.log"))
        })
        .expect("the preallocated segment is in the manifest");
    assert_eq!(
        entry["original"]["crc32"].as_u64(),
        Some(seg_crc as u64),
        "{entry}"
    );
    assert_eq!(
        fs::read(&seg).unwrap(),
        last.log,
        "cut in place at its records"
    );
    // The untouched sparse file stays as it was.
    assert_eq!(disk_bytes_and_crc(&big), (big_disk, GIB, big_crc));
}

/// Starts `recoverfs ARGS` paused at repair step `step` (the `fault-injection` feature's
/// `RECOVERFS_TEST_PAUSE_AT`), waits until it says so on stderr, sends it `sig`, and
/// returns its exit code and whole stderr.
fn interrupt_at_step(args: &[std::ffi::OsString], step: u32, sig: i32) -> (Option<i32>, String) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("RECOVERFS_TEST_FAIL_AT")
        .env("RECOVERFS_TEST_PAUSE_AT", step.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(err).lines() {
            let line = line.unwrap();
            if line.contains(&format!("paused at step {step}")) {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let paused = rx.recv_timeout(std::time::Duration::from_secs(120));
    if paused.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("never paused at step {step}: {}", reader.join().unwrap());
    }
    // SAFETY: kill(2) on our own child's pid, which it still is (not yet waited for).
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    let st = child.wait().unwrap();
    (st.code(), reader.join().unwrap())
}

/// Bug (issue 19, item 14): Ctrl-C during `repair` exited 130 without a word, leaving a
/// hidden `.NAME.recoverfs-tmp` tree beside `--output` (hundreds of MB) or an `--in-place`
/// manifest half-way. Fixed with this test: the front end takes SIGINT/SIGTERM; before
/// anything is written it ends at once, afterwards the repair stops at its next safe
/// point (between files, or chunks of a copy); either way it says "interrupted; nothing
/// is lost; run the same command again to finish" and what it left, and exits 130.
/// `--output` removes its temporary tree; `--in-place` leaves its manifest, and the rerun
/// finishes. Real signals to the real binary, paused at a step by the fault-injection hook.
#[test]
fn an_interrupted_repair_says_so_cleans_up_and_a_rerun_finishes() {
    const SAID: &str = "interrupted; nothing is lost; run the same command again to finish";
    let src = damaged();
    let t = tempfile::tempdir().unwrap();
    let reference = t.path().join("reference");
    assert_ok(
        &repair_output(src.path(), &reference, &[]),
        "reference repair",
    );

    // --output, stopped while writing (files copied, indexes not yet rebuilt).
    let new = t.path().join("new");
    let tmp = t.path().join(".new.recoverfs-tmp");
    let args = output_args(src.path(), &new, &[]);
    let (code, err) = interrupt_at_step(&args, 1, libc::SIGINT);
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains(SAID), "{err}");
    assert!(
        err.contains(&format!("the partial tree {} was removed", tmp.display())),
        "{err}"
    );
    assert!(!tmp.exists() && !new.exists(), "nothing left behind: {err}");
    // ... and before anything is written (SIGTERM while it reads).
    let (code, err) = interrupt_at_step(&args, 0, libc::SIGTERM);
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains(SAID) && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!tmp.exists() && !new.exists());
    assert_ok(&run(&args), "rerun of --output");
    assert_trees_eq(
        &items(&new),
        &items(&reference),
        "--output after an interrupt",
    );

    // --in-place, stopped in the middle of its apply phase: the manifest's steps are
    // counted from an uninterrupted run on a copy.
    let probe = clone_tree(src.path());
    let probe_backup = t.path().join("probe-backup");
    assert_ok(&repair_in_place(probe.path(), &probe_backup, &[]), "probe");
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(probe_backup.join("recoverfs-backup.json")).unwrap())
            .unwrap();
    let copies = m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["original"].is_object())
        .count() as u32;
    // Two manifest writes and every copy, then the second change's first step.
    let apply_step = 2 + 2 * copies + 2 + 3;
    let backup = t.path().join("backup");
    let args = in_place_args(src.path(), &backup, &[]);
    let (code, err) = interrupt_at_step(&args, apply_step, libc::SIGINT);
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains(SAID) && err.contains("is partly repaired"),
        "{err}"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(backup.join("recoverfs-backup.json")).unwrap()).unwrap();
    assert_eq!(
        m["state"], "backed-up",
        "the manifest a rerun finishes from"
    );
    assert_ok(&run(&args), "rerun of --in-place");
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(backup.join("recoverfs-backup.json")).unwrap()).unwrap();
    assert_eq!(m["state"], "applied");
    assert_trees_eq(
        &files_only(items(src.path())),
        &files_only(items(&reference)),
        "in place after an interrupt",
    );
    // Stopped during the backup phase instead: nothing of the data directory changed yet.
    let again = damaged();
    let reference2 = t.path().join("reference2");
    assert_ok(
        &repair_output(again.path(), &reference2, &[]),
        "reference repair",
    );
    let before = snapshot_all(again.path());
    let backup2 = t.path().join("backup2");
    let args = in_place_args(again.path(), &backup2, &[]);
    let (code, err) = interrupt_at_step(&args, 3, libc::SIGTERM);
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains(SAID) && err.contains("was not changed"),
        "{err}"
    );
    assert_unchanged(&before, &snapshot_all(again.path()));
    assert_ok(&run(&args), "rerun after an interrupted backup");
    assert_trees_eq(
        &files_only(items(again.path())),
        &files_only(items(&reference2)),
        "in place, second run",
    );
}

/// `lgetxattr` of `p` as text (None when the call fails).
fn xattr_text(p: &std::path::Path, name: &str) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let cp = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let cn = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: both names are NUL-terminated; `buf` is writable for its length.
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| String::from_utf8_lossy(&buf[..n as usize]).into_owned())
}

/// Bug (issue 19, item 5): under `--policy strict` a segment the view refuses (0 bytes
/// in `ls -l`, reads fail with EIO, "refused (EIO)" in `check`) had xattrs saying
/// `status="truncated"`, `valid_bytes` and `records` of a prefix nobody is served, and
/// `damage="none"` when only its index differed; the totals said nothing of refusals.
/// Fixed: a refused segment's files say `status="refused"`, `valid_bytes`/`records`
/// 0, and why in `damage`; the report's summary counts `refused` under strict and
/// `check`'s totals line says "N refused (EIO)".
#[test]
fn a_segment_refused_under_strict_says_refused_in_xattrs_report_and_check() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("t/partition-0");
    write_segment(&p, 0, 10, 20);
    write_segment(&p, 10, 10, 20);
    write_segment(&p, 20, 10, 20);
    cut_tail(&log_path(&p, 0), 7); // damaged: a valid prefix of 9 records
    fs::remove_file(seg_path(&p, 10, "index")).unwrap(); // clean .log, index missing
    let (code, json) = check_json(t.path(), &["--policy", "strict"]);
    assert_eq!(code, Some(1));
    assert_eq!(json["summary"]["refused"], 2, "{}", json["summary"]);
    let text = stdout(&check_cli(t.path(), &["--policy", "strict"]));
    assert!(text.contains(", 2 refused (EIO)\n"), "{text}");
    // Other policies' reports are unchanged: no `refused` count.
    let (_, json) = check_json(t.path(), &[]);
    assert!(
        json["summary"].get("refused").is_none(),
        "{}",
        json["summary"]
    );

    let m = Mounted::new(t.path(), &["--policy", "strict"]);
    let dir = m.path().join("t/partition-0");
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(m.path().join(".recoverfs/report.json")).unwrap())
            .unwrap();
    assert_eq!(report["summary"]["refused"], 2);
    let x = |base: u64, ext: &str, name: &str| {
        xattr_text(
            &seg_path(&dir, base, ext),
            &format!("user.recoverfs.{name}"),
        )
        .unwrap_or_else(|| panic!("{base}.{ext}: no {name}"))
    };
    for (base, why) in [(0, "incomplete-record"), (10, "missing")] {
        for ext in ["log", "index", "timeindex"] {
            let f = seg_path(&dir, base, ext);
            assert_eq!(fs::metadata(&f).unwrap().len(), 0, "{}", f.display());
            assert_eq!(
                fs::read(&f).unwrap_err().raw_os_error(),
                Some(libc::EIO),
                "{}",
                f.display()
            );
            assert_eq!(x(base, ext, "status"), "refused", "{base}.{ext}");
            assert_eq!(x(base, ext, "valid_bytes"), "0", "{base}.{ext}");
            assert_eq!(x(base, ext, "records"), "0", "{base}.{ext}");
            let damage = x(base, ext, "damage");
            assert!(
                damage.starts_with("refused under strict (reads fail with EIO): "),
                "{base}.{ext}: {damage}"
            );
        }
        assert!(x(base, "log", "damage").contains(why), "{base}");
    }
    assert_eq!(
        x(0, "log", "original_bytes"),
        fs::metadata(log_path(&p, 0)).unwrap().len().to_string()
    );
    assert_eq!(x(10, "index", "original_bytes"), "missing");
    // The segment the view serves keeps its own.
    assert_eq!(x(20, "log", "status"), "clean");
    assert_eq!(
        x(20, "log", "valid_bytes"),
        fs::metadata(seg_path(&dir, 20, "log"))
            .unwrap()
            .len()
            .to_string()
    );
}

/// Bug (issue 19, item 10): with `--allow-other`, any user read `.recoverfs/report.json`
/// and `metrics.prom` (mode 0444): the names inside a 0700 directory, and bytes of a
/// 0600 file's content (a damage detail such as `size 1414484051` is four of its bytes).
/// Fixed: both are the source root's owner's alone (0400); a file's `user.recoverfs.*`
/// xattrs stay readable by whoever may read the file, and by no one else.
#[test]
fn other_users_learn_nothing_from_the_report_of_logs_they_cannot_read() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let src = tempfile::tempdir().unwrap();
    fs::set_permissions(src.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let public = src.path().join("public/partition-0");
    write_segment(&public, 0, 5, 20);
    let private = src.path().join("private-topic/partition-0");
    write_segment(&private, 0, 5, 20);
    cut_tail(&log_path(&private, 0), 3);
    fs::set_permissions(
        src.path().join("private-topic"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    // A root-only segment in a directory anyone may enter.
    let secret = src.path().join("public/partition-1");
    write_segment(&secret, 0, 5, 20);
    cut_tail(&log_path(&secret, 0), 3);
    fs::set_permissions(log_path(&secret, 0), fs::Permissions::from_mode(0o600)).unwrap();

    let m = Mounted::new(src.path(), &["--allow-other"]);
    let mp = m.path().display().to_string();
    // The tools work for nobody where nobody may read (so a refusal below is the mode's).
    assert!(as_nobody(&format!(
        "cat {mp}/public/partition-0/00000000000000000000.log"
    )));
    assert!(as_nobody(&format!(
        "getfattr -n user.recoverfs.status {mp}/public/partition-0/00000000000000000000.log"
    )));
    for meta in ["report.json", "metrics.prom"] {
        let p = m.path().join(".recoverfs").join(meta);
        let text = fs::read_to_string(&p).unwrap();
        assert!(
            text.contains(if meta == "report.json" {
                "private-topic"
            } else {
                "recoverfs_"
            }),
            "{meta}: root reads it"
        );
        let st = fs::metadata(&p).unwrap();
        assert_eq!(st.mode() & 0o777, 0o400, "{meta}");
        assert_eq!(st.uid(), fs::metadata(src.path()).unwrap().uid(), "{meta}");
        assert!(
            !as_nobody(&format!("cat {mp}/.recoverfs/{meta}")),
            "nobody read {meta}"
        );
    }
    assert!(!as_nobody(&format!(
        "getfattr -n user.recoverfs.damage {mp}/public/partition-1/00000000000000000000.log"
    )));
    assert!(!as_nobody(&format!("ls {mp}/private-topic")));
}

/// A tmpfs mounted at a path for the life of the guard (lazily unmounted on drop, even on panic).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(at)
            .status()
            .expect("mount(8) runs");
        assert!(st.success(), "mount -t tmpfs {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = recoverfs::cli::sys::lazy_unmount(&self.0);
    }
}

/// Bug (issue 19, item 11): `check`, `mount` and `repair` crossed into filesystems
/// mounted inside the source (`check /` walked `/proc`), and the mount served a
/// submount as it was when it started. Fixed: by default no front end crosses a mount
/// point (like `find -xdev`): the source is a non-recursive clone, every open refuses
/// to cross one (`RESOLVE_NO_XDEV`, and the live tree asked), each one left out is
/// named (`NOT CROSSED`, the report's `not_crossed`); `--cross-mounts` opts in.
#[test]
fn no_front_end_crosses_a_mount_point_inside_the_source_unless_asked() {
    use recoverfs::engine::source::{Mounts, Source};
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("data");
    write_segment(&src.join("t/partition-0"), 0, 5, 20);
    let _tmpfs = Tmpfs::mount(&src.join("mnt"));
    let inner = src.join("mnt/u/partition-0");
    write_segment(&inner, 0, 5, 20);
    cut_tail(&log_path(&inner, 0), 3); // damage only the submount holds
    for no_clone in [false, true] {
        let env = |c: &mut std::process::Command| {
            if no_clone {
                c.env("RECOVERFS_TEST_NO_CLONE", "1");
            }
        };
        let mut cmd = std::process::Command::new(bin());
        cmd.arg("check").arg(&src).arg("--json");
        env(&mut cmd);
        let o = cmd.output().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(o.status.code(), Some(0), "no_clone {no_clone}: {json}");
        assert_eq!(json["not_crossed"], serde_json::json!(["mnt"]), "{json}");
        assert_eq!(json["summary"]["logs"], 1, "{json}");
        let mut cmd = std::process::Command::new(bin());
        cmd.arg("check")
            .arg(&src)
            .arg("--cross-mounts")
            .arg("--json");
        env(&mut cmd);
        let o = cmd.output().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(o.status.code(), Some(1), "no_clone {no_clone}: {json}");
        assert!(json.get("not_crossed").is_none(), "{json}");
        assert_eq!(json["logs"][0]["path"], "mnt/u/partition-0", "{json}");
    }
    let text = stdout(&check_cli(&src, &[]));
    assert!(
        text.contains("  NOT CROSSED mnt/: another filesystem is mounted there; left out (--cross-mounts to include it)\n"),
        "{text}"
    );

    // The mount: the mount point is not listed, not reachable, and reported.
    {
        let m = Mounted::new(&src, &[]);
        let names: Vec<_> = fs::read_dir(m.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(!names.iter().any(|n| n == "mnt"), "{names:?}");
        assert!(fs::metadata(m.path().join("mnt")).is_err());
        assert!(fs::metadata(m.path().join("mnt/u/partition-0")).is_err());
        let report: serde_json::Value =
            serde_json::from_slice(&fs::read(m.path().join(".recoverfs/report.json")).unwrap())
                .unwrap();
        assert_eq!(report["not_crossed"], serde_json::json!(["mnt"]));
        // A filesystem mounted after the view started is not crossed either.
        let _later = Tmpfs::mount(&src.join("t/later"));
        write_segment(&src.join("t/later/v/partition-0"), 0, 5, 20);
        assert!(fs::metadata(m.path().join("t/later/v")).is_err());
    }
    {
        let m = Mounted::new(&src, &["--cross-mounts"]);
        assert!(fs::metadata(m.path().join("mnt/u/partition-0")).is_ok());
    }
    let _ = recoverfs::cli::sys::lazy_unmount(&src.join("t/later"));

    // repair --output copies the source's own filesystem only, and says what it left out.
    let out = t.path().join("out");
    let o = repair_output(&src, &out, &[]);
    assert_ok(&o, "repair --output");
    assert!(out.join("t/partition-0").is_dir() && !out.join("mnt").exists());
    assert!(stdout(&o).contains("NOT CROSSED mnt/"), "{}", stdout(&o));
    let out2 = t.path().join("out2");
    assert_ok(
        &repair_output(&src, &out2, &["--cross-mounts"]),
        "repair --cross-mounts",
    );
    assert!(out2.join("mnt/u/partition-0").is_dir());

    // `check /` does not walk /proc: the root's listing leaves it out and names it.
    let root = Source::open_with(std::path::Path::new("/"), Mounts::Stay).unwrap();
    let names: Vec<_> = root.read_dir(std::path::Path::new("")).unwrap();
    assert!(!names.iter().any(|(n, _)| n == "proc"), "{names:?}");
    assert!(root
        .not_crossed()
        .contains(&std::path::PathBuf::from("proc")));
    assert!(root.read_dir(std::path::Path::new("proc/self")).is_err());
}

/// Bug (issue 19, item 12): a live recoverfs view mounted inside the source
/// (`sub/.recoverfs/raw/...`) was walked, its `raw/` originals counted as damaged logs
/// of the source (only a `.recoverfs` at the root was skipped). Fixed: by default the
/// mount point is not crossed (named in `not_crossed`); with `--cross-mounts`, a
/// `.recoverfs/` on a FUSE filesystem holding `raw/` is never walked, wherever it is.
#[test]
fn a_live_view_inside_the_source_is_never_counted_as_a_damaged_log() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("data");
    write_segment(&src.join("t/partition-0"), 0, 5, 20);
    let other = t.path().join("other");
    let p = other.join("u/partition-0");
    write_segment(&p, 0, 5, 20);
    cut_tail(&log_path(&p, 0), 3); // the view's raw/ holds a damaged original
    let m = Mounted::new(&other, &[]);
    // The live view, bind-mounted inside the source (unmounted by the guard first).
    fs::create_dir(src.join("sub")).unwrap();
    let st = std::process::Command::new("mount")
        .arg("--bind")
        .arg(m.path())
        .arg(src.join("sub"))
        .status()
        .unwrap();
    assert!(st.success(), "mount --bind");
    struct Unbind(std::path::PathBuf);
    impl Drop for Unbind {
        fn drop(&mut self) {
            let _ = recoverfs::cli::sys::lazy_unmount(&self.0);
        }
    }
    let _bind = Unbind(src.join("sub"));
    assert!(src.join("sub/.recoverfs/raw/u/partition-0").is_dir());

    let (code, json) = check_json(&src, &[]);
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["not_crossed"], serde_json::json!(["sub"]), "{json}");
    assert_eq!(json["summary"]["logs"], 1, "{json}");

    let (code, json) = check_json(&src, &["--cross-mounts"]);
    let paths: Vec<&str> = json["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["sub/u/partition-0", "t/partition-0"], "{json}");
    assert_eq!(code, Some(0), "the view's own logs are repaired: {json}");
}

/// Bug (issue 19, item 12): `check`'s totals line said "0 unreadable" under the
/// UNREADABLE lines of directories it could not list. Fixed: the totals count them
/// ("N unreadable director(ies)").
#[test]
fn the_totals_line_counts_the_directories_it_could_not_list() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    write_segment(&t.path().join("t/partition-0"), 0, 5, 20);
    fs::create_dir(t.path().join("private")).unwrap();
    fs::set_permissions(t.path().join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .arg("check")
        .arg(t.path())
        .output()
        .expect("setpriv runs");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("  UNREADABLE  private/: "), "{text}");
    let totals = text
        .lines()
        .find(|l| l.contains(" log(s), "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        totals.contains("0 unreadable, 1 unreadable director(ies);"),
        "{totals}"
    );
}

/// Bug (issue 19, item 12): the JSON report wrote a backslash in a name doubled
/// (`back\\slash`), so its paths did not decode to the names on disk. Fixed: a UTF-8
/// name is written as it is (a name that is not UTF-8 keeps its `\xNN` escapes).
#[test]
fn json_paths_decode_to_the_exact_names_backslashes_included() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("back\\slash/partition-0");
    write_segment(&p, 0, 5, 20);
    cut_tail(&log_path(&p, 0), 3);
    let (_, json) = check_json(t.path(), &[]);
    assert_eq!(json["logs"][0]["path"], "back\\slash/partition-0", "{json}");
    let seg = json["logs"][0]["segments"][0]["path"].as_str().unwrap();
    assert!(t.path().join(seg).is_file(), "{seg}");
}

/// Bug (issue 19, item 12): every clean `umount MOUNTPOINT` left
/// "WARN fuser::session: Failed to umount filesystem: Invalid argument" in the
/// daemon's log (fuser 0.18 unmounts again when its session ends, taking the closed
/// connection for a live one). Fixed: the view takes the mount from the session as it
/// ends, and an unmount that finds nothing mounted (EINVAL) is the clean case.
#[test]
fn a_clean_unmount_logs_no_failed_umount() {
    let t = tempfile::tempdir().unwrap();
    write_segment(&t.path().join("t/partition-0"), 0, 5, 20);
    let mut m = Mounted::new(t.path(), &[]);
    assert!(fs::read_dir(m.path()).unwrap().count() > 0);
    let st = m.unmount();
    assert!(st.success(), "{st}");
    let log = m.log();
    assert!(log.contains("unmounted"), "{log}");
    assert!(
        !log.contains("Failed to umount")
            && !log.contains("Unmount failed")
            && !log.contains("WARN"),
        "{log}"
    );
}

/// Bug: `repair` held both rebuilt indexes of a segment in memory (16 bytes per record
/// each) while writing them (`--output`) or planning and applying them (`--in-place`):
/// 246 MB peak for one torn 1 GiB segment of 7.67 M records (issue 20), and one such
/// segment per core. Fixed in the commit that adds this test: the rebuilt indexes
/// stream through a fixed block to their files, and planning keeps only their sizes
/// and CRC-32s. The segment here is torn, so both its indexes are rebuilt, and large
/// enough that holding the pair would break the 64 MiB bound on its own.
#[test]
fn repair_of_a_large_torn_segment_stays_within_64_mib() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let o = run([
        OsStr::new("synth"),
        data.as_os_str(),
        OsStr::new("--partitions"),
        OsStr::new("1"),
        OsStr::new("--segment-mb"),
        OsStr::new("128"),
        OsStr::new("--value-bytes"),
        OsStr::new("1"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = data.join("topic-0/partition-0");
    let log = dir.join("00000000000000000000.log");
    let index_bytes = fs::metadata(dir.join("00000000000000000000.index"))
        .unwrap()
        .len();
    // Torn inside its last record: both indexes are one entry too long, so both are rebuilt.
    set_len(&log, fs::metadata(&log).unwrap().len() - 7);
    let bound_kib = 64 * 1024;
    assert!(
        2 * index_bytes / 1024 > bound_kib,
        "{index_bytes} bytes per index: too small to tell"
    );
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let out = t.path().join("out");
    let backup = t.path().join("backup");
    for (what, args, want) in [
        (
            "--output",
            vec!["repair", &s(&data), "--output", &s(&out)],
            0,
        ),
        (
            "--in-place --dry-run",
            vec![
                "repair",
                &s(&data),
                "--in-place",
                "--backup",
                &s(&backup),
                "--dry-run",
            ],
            1,
        ),
        (
            "--in-place",
            vec!["repair", &s(&data), "--in-place", "--backup", &s(&backup)],
            0,
        ),
    ] {
        let (code, kib) = peak_rss_kib(&args);
        assert_eq!(code, want, "repair {what}");
        assert!(
            kib < bound_kib as i64,
            "repair {what} peaked at {kib} KiB (the rebuilt pair is {} KiB)",
            2 * index_bytes / 1024
        );
    }
    // Both wrote the rebuilt indexes: one entry fewer than the originals, the same bytes.
    for name in [
        "00000000000000000000.index",
        "00000000000000000000.timeindex",
    ] {
        let written = fs::read(out.join("topic-0/partition-0").join(name)).unwrap();
        assert_eq!(written.len() as u64, index_bytes - 16, "{name}");
        assert!(written == fs::read(dir.join(name)).unwrap(), "{name}");
    }
}

/// Bug: `repair --output NEW_DIR` and `repair --in-place --backup DIR` created the missing
/// parents of NEW_DIR and of the backup (`create_dir_all`) without making their names
/// durable: a power cut after a run that had reported success lost NEW_DIR whole, and in
/// place lost the backup while the originals it held were already replaced (found by the
/// power-loss filesystem of tests/power_loss.rs). Fixed by creating them through
/// `fsio::create_dir_all_durable`, which fsyncs every directory that gained a name.
#[test]
fn a_new_parent_of_the_output_or_the_backup_survives_a_power_cut() {
    use common::powerfs::PowerFs;
    let backing = tempfile::tempdir().unwrap();
    let master = small_damaged();
    for d in ["a", "b"] {
        let o = std::process::Command::new("cp")
            .arg("-a")
            .arg(master.path())
            .arg(backing.path().join(d))
            .status()
            .unwrap();
        assert!(o.success());
    }
    let originals = items(master.path());
    let mut pfs = PowerFs::mount(backing.path());
    let new = pfs.path().join("out/deeper/new");
    let backup = pfs.path().join("backups/deeper/b");
    assert_ok(&repair_output(&pfs.path().join("a"), &new, &[]), "--output");
    assert_ok(
        &repair_in_place(&pfs.path().join("b"), &backup, &[]),
        "--in-place",
    );
    let want_out = items(&new);
    let want_in_place = items(&pfs.path().join("b"));
    pfs.power_cut();
    assert!(new.is_dir(), "NEW_DIR lost at a power cut after the run");
    assert_trees_eq(&items(&new), &want_out, "NEW_DIR after a power cut");
    assert_trees_eq(
        &files_only(items(&pfs.path().join("b"))),
        &files_only(want_in_place),
        "in place, after a power cut",
    );
    // Every original the repair changed is whole in the backup.
    let now = items(&pfs.path().join("b"));
    for (rel, orig) in &originals {
        if let Item::File { bytes, .. } = orig {
            if now.get(rel) != Some(orig) {
                let copy = fs::read(backup.join(rel)).ok();
                assert!(
                    copy.as_ref() == Some(bytes),
                    "{}: replaced, and its backup lost at the power cut",
                    rel.display()
                );
            }
        }
    }
}

/// Bug: when the fsync that makes a new parent of NEW_DIR (or of the backup) durable
/// failed (EIO), the rerun found that parent already there, synced nothing above NEW_DIR,
/// and reported success; a power cut then lost NEW_DIR whole. Fixed in
/// `fsio::create_dir_all_durable`, which now syncs every ancestor, made now or not.
#[test]
fn a_parent_left_unsynced_by_a_failed_run_is_synced_by_the_rerun() {
    use common::powerfs::{Fault, Op, PowerFs};
    let backing = tempfile::tempdir().unwrap();
    let master = small_damaged();
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(master.path())
        .arg(backing.path().join("a"))
        .status()
        .unwrap();
    assert!(o.success());
    let mut pfs = PowerFs::mount(backing.path());
    let new = pfs.path().join("out/new");
    // The first fsync of the run is the one that makes `out` durable.
    pfs.inject(Fault {
        op: Op::Fsync,
        nth: 1,
        errno: libc::EIO,
    });
    let o = repair_output(&pfs.path().join("a"), &new, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(pfs.path().join("out").is_dir());
    pfs.clear_faults();
    assert_ok(
        &repair_output(&pfs.path().join("a"), &new, &[]),
        "the rerun",
    );
    let want = items(&new);
    pfs.power_cut();
    assert!(new.is_dir(), "NEW_DIR lost at a power cut after the rerun");
    assert_trees_eq(&items(&new), &want, "NEW_DIR after a power cut");
}

/// Bug: when the last fsync of `repair --output` (NEW_DIR's parent, after the rename)
/// failed, NEW_DIR stayed, whole but not known durable, with an error; the same command
/// run again then refused it as "not empty" and never finished. Fixed in `output.rs`:
/// NEW_DIR is taken back out (all or nothing) and the error says to run again.
#[test]
fn a_failed_last_fsync_of_output_leaves_no_new_dir_and_the_rerun_finishes() {
    use common::powerfs::{Fault, Op, PowerFs};
    let backing = tempfile::tempdir().unwrap();
    let master = small_damaged();
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(master.path())
        .arg(backing.path().join("a"))
        .status()
        .unwrap();
    assert!(o.success());
    let pfs = PowerFs::mount(backing.path());
    let src = pfs.path().join("a");
    fs::create_dir(pfs.path().join("out")).unwrap();
    assert_ok(
        &repair_output(&src, &pfs.path().join("out/first"), &[]),
        "--output",
    );
    let last = pfs.counts().fsyncs;
    let want = items(&pfs.path().join("out/first"));
    let new = pfs.path().join("out/new");
    pfs.inject(Fault {
        op: Op::Fsync,
        nth: last,
        errno: libc::EIO,
    });
    let o = repair_output(&src, &new, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("run the same command again"),
        "{}",
        stderr(&o)
    );
    assert!(!new.exists(), "NEW_DIR left, not known to be durable");
    pfs.clear_faults();
    assert_ok(&repair_output(&src, &new, &[]), "the rerun");
    assert_trees_eq(&items(&new), &want, "the rerun");
}

/// Bug: when the last fsync of `repair --in-place` (the backup directory, after the
/// "applied" manifest was renamed into it) failed, the rerun read "applied", said
/// "Nothing to repair" and synced nothing: a power cut then brought back the
/// "backed-up" manifest, so a run that had reported success had to be run once more.
/// Fixed in `in_place/mod.rs`: an applied manifest found is made durable before the
/// rerun reports.
#[test]
fn an_applied_manifest_found_by_a_rerun_is_made_durable() {
    use common::powerfs::{Fault, Op, PowerFs};
    let backing = tempfile::tempdir().unwrap();
    let master = small_damaged();
    for d in ["a", "b"] {
        let o = std::process::Command::new("cp")
            .arg("-a")
            .arg(master.path())
            .arg(backing.path().join(d))
            .status()
            .unwrap();
        assert!(o.success());
    }
    let mut pfs = PowerFs::mount(backing.path());
    fs::create_dir(pfs.path().join("backups")).unwrap();
    let first = pfs.path().join("backups/first");
    assert_ok(
        &repair_in_place(&pfs.path().join("a"), &first, &[]),
        "in place",
    );
    let last = pfs.counts().fsyncs;
    let backup = pfs.path().join("backups/b");
    let data = pfs.path().join("b");
    pfs.inject(Fault {
        op: Op::Fsync,
        nth: last,
        errno: libc::EIO,
    });
    let o = repair_in_place(&data, &backup, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    pfs.clear_faults();
    assert_ok(&repair_in_place(&data, &backup, &[]), "the rerun");
    pfs.power_cut();
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(backup.join("recoverfs-backup.json")).unwrap()).unwrap();
    assert_eq!(
        m["state"], "applied",
        "after a power cut following the rerun"
    );
}

/// Bug: `check --hashes` wrote each path with `to_string_lossy`, so a directory whose
/// name is not UTF-8 came out with U+FFFD in place of its bytes, and `sha256sum -c`
/// could not find the file. Fixed in the commit that adds this test: names are written
/// as their bytes, as `sha256sum` itself writes them.
#[test]
fn hashes_name_a_non_utf8_directory_by_its_bytes() {
    use std::os::unix::ffi::OsStrExt;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("data");
    let dir = src
        .join(std::ffi::OsStr::from_bytes(b"t\xff"))
        .join("partition-0");
    write_segment(&dir, 0, 5, 20);
    let list = t.path().join("SUMS");
    let o = check_cli(&src, &["--hashes", list.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = std::process::Command::new("sha256sum")
        .args(["-c", "--strict", list.to_str().unwrap()])
        .current_dir(&src)
        .output()
        .expect("sha256sum (coreutils)");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}
