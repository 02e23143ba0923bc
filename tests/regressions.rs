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
    // What cannot be honoured is refused before anything is mounted.
    let mp = tempfile::tempdir().unwrap();
    for o in [
        "rw",
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
    use std::sync::atomic::{AtomicBool, Ordering};
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
    let writer = {
        let (stop, data, dir) = (stop.clone(), data.clone(), src.path().to_path_buf());
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
                std::thread::sleep(std::time::Duration::from_millis(k % 25));
            }
            k
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (stop, file) = (stop.clone(), m.path().join("data.bin"));
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
    std::thread::sleep(std::time::Duration::from_secs(4));
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
        versions > 50 && ok > 50,
        "too little raced to show anything"
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
    let o = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "rss_helper",
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
