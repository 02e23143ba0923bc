//! Real FUSE mounts of the repaired view: content, policies, `.recoverfs/`, xattrs, EROFS, live sources, concurrency, errors.
//!
//! Every mount is owned by a [`Mounted`] guard that unmounts (lazily if it must)
//! and kills the daemon when dropped, so a failing test leaves no mount behind.

use crate::common;

use common::mount::{errno_of, Mounted};
use common::*;
use recoverfs::cli::sys::is_mount_point;
use recoverfs::engine::format::takhin::{segment_file_name, FileKind, Record};
use recoverfs::engine::index::rebuild_indexes;
use recoverfs::engine::layout::read_dir_sorted;
use recoverfs::engine::plan::{dir_children, visible_children};
use recoverfs::engine::policy::Policy;
use recoverfs::engine::policy::ViewAction;
use recoverfs::engine::segment::SegmentStatus;
use std::collections::BTreeSet;
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn getxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let cn = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and a buffer of the given length.
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn listxattr(p: &Path) -> Vec<String> {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C string and a buffer of the given length.
    let n = unsafe { libc::llistxattr(cp.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        n >= 0,
        "listxattr {}: {}",
        p.display(),
        io::Error::last_os_error()
    );
    buf.truncate(n as usize);
    buf.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect()
}

fn json_without_source(bytes: &[u8]) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    v.as_object_mut().unwrap().remove("source");
    v
}

/// Checks a mounted view against the engine's plan, byte for byte.
fn assert_view_matches_plan(src: &Path, mp: &Path, policy: Policy) {
    let report = report_for(src, policy);
    // report.json is the engine's report.
    let got = fs::read(mp.join(".recoverfs/report.json")).unwrap();
    assert_eq!(
        json_without_source(&got),
        json_without_source(report.to_json().as_bytes()),
        "report.json differs from check --json ({policy})"
    );
    for log in &report.logs {
        let dir = PathBuf::from(&log.path);
        // The directory lists exactly what the plan shows.
        let entries = read_dir_sorted(&src.join(&dir)).unwrap();
        let (children, _) = dir_children(&dir, &entries);
        let want: Vec<OsString> = visible_children(children, Some(log)).into_keys().collect();
        let got: Vec<OsString> = read_dir_sorted(&mp.join(&dir))
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(got, want, "{policy}: listing of {}", dir.display());
        for orphan in &log.orphans {
            assert!(!mp.join(orphan).exists(), "orphan {orphan} shown");
        }
        for seg in &log.segments {
            let rel = PathBuf::from(&seg.path);
            let orig = fs::read(src.join(&rel)).unwrap();
            let shown = mp.join(&rel);
            let idx = shown.with_extension("index");
            let tidx = shown.with_extension("timeindex");
            match seg.view {
                ViewAction::Hidden => {
                    for p in [&shown, &idx, &tidx] {
                        assert_eq!(errno_of(fs::metadata(p)), libc::ENOENT, "{}", p.display());
                    }
                }
                ViewAction::Eio => {
                    for p in [&shown, &idx, &tidx] {
                        assert_eq!(errno_of(fs::read(p)), libc::EIO, "{}", p.display());
                    }
                }
                ViewAction::Kept | ViewAction::Truncated => {
                    let valid = seg.valid_bytes as usize;
                    let got = fs::read(&shown).unwrap();
                    assert!(got == orig[..valid], "{policy}: {} bytes differ", seg.path);
                    assert_eq!(fs::metadata(&shown).unwrap().len(), valid as u64);
                    let scan = seg.scan.as_ref().unwrap();
                    let (i, t) = rebuild_indexes(&orig, scan).unwrap();
                    assert!(fs::read(&idx).unwrap() == i, "{}: index", seg.path);
                    assert!(fs::read(&tidx).unwrap() == t, "{}: timeindex", seg.path);
                    assert_eq!(fs::metadata(&idx).unwrap().len(), i.len() as u64);
                }
            }
            // Salvaged runs: the original's byte range, indexes rebuilt from it.
            for (r, run) in seg.shown_runs() {
                let shown = mp.join(&r.path);
                let bytes = &orig[run.position as usize..run.end as usize];
                assert!(fs::read(&shown).unwrap() == bytes, "{}", r.path);
                assert_eq!(fs::metadata(&shown).unwrap().len(), r.bytes);
                let (i, t) = rebuild_indexes(&bytes.to_vec(), &run.scan).unwrap();
                assert!(fs::read(shown.with_extension("index")).unwrap() == i);
                assert!(fs::read(shown.with_extension("timeindex")).unwrap() == t);
            }
            let refused = seg.view == ViewAction::Eio && seg.status != SegmentStatus::Unreadable;
            if refused {
                // A segment refused under strict says so: nothing served, and why.
                let x = |n: &str| String::from_utf8(getxattr(&shown, n).unwrap()).unwrap();
                assert_eq!(x("user.recoverfs.status"), "refused");
                assert_eq!(x("user.recoverfs.valid_bytes"), "0");
                assert_eq!(x("user.recoverfs.records"), "0");
                assert!(x("user.recoverfs.damage").starts_with("refused under strict"));
            } else if seg.view != ViewAction::Hidden {
                // xattrs tell the verdict.
                let x = |n: &str| String::from_utf8(getxattr(&shown, n).unwrap()).unwrap();
                let status = serde_json::json!(seg.status).as_str().unwrap().to_string();
                assert_eq!(x("user.recoverfs.status"), status);
                assert_eq!(x("user.recoverfs.valid_bytes"), seg.valid_bytes.to_string());
                assert_eq!(
                    x("user.recoverfs.original_bytes"),
                    seg.original_bytes.to_string()
                );
                assert_eq!(x("user.recoverfs.records"), seg.records.to_string());
                match &seg.damage {
                    Some(d) => assert!(x("user.recoverfs.damage").starts_with(d.kind().as_str())),
                    None => assert_eq!(x("user.recoverfs.damage"), "none"),
                }
                assert_eq!(listxattr(&shown).len(), 5);
                assert_eq!(listxattr(&idx).len(), 5);
            }
            // tails/ holds exactly the cut bytes of every truncated segment.
            let tail = mp
                .join(".recoverfs/tails")
                .join(format!("{}.tail", seg.path));
            if seg.status == SegmentStatus::Truncated {
                assert!(
                    fs::read(&tail).unwrap() == orig[seg.valid_bytes as usize..],
                    "tail of {}",
                    seg.path
                );
            } else {
                assert!(!tail.exists(), "{} has no tail", seg.path);
            }
        }
    }
    // raw/ holds every original file, untouched.
    for rel in files_under(src) {
        let raw = fs::read(mp.join(".recoverfs/raw").join(&rel)).unwrap();
        assert!(
            raw == fs::read(src.join(&rel)).unwrap(),
            "raw {}",
            rel.display()
        );
    }
}

#[test]
fn clean_fixtures_read_like_the_originals_and_like_takhin() {
    for name in ["data", "seed-example"] {
        let src = fixture_copy(name);
        let m = Mounted::new(src.path(), &[]);
        for rel in files_under(src.path()) {
            let got = fs::read(m.path().join(&rel)).unwrap();
            assert!(
                got == fs::read(src.path().join(&rel)).unwrap(),
                "{name}/{} differs",
                rel.display()
            );
        }
        // Every expected record, read the way Takhin's reader does it.
        let expected_root = fixtures().join("expected");
        let partitions: Vec<(PathBuf, PathBuf)> = if name == "data" {
            files_under(&expected_root.join("data"))
                .into_iter()
                .map(|f| {
                    let dir = PathBuf::from(f.to_str().unwrap().trim_end_matches(".records.jsonl"));
                    (m.path().join(&dir), expected_root.join("data").join(&f))
                })
                .collect()
        } else {
            vec![(
                m.path().to_path_buf(),
                expected_root.join("seed-example.records.jsonl"),
            )]
        };
        let mut checked = 0;
        for (dir, jsonl) in partitions {
            let bases = bases(&dir);
            for line in fs::read_to_string(&jsonl).unwrap().lines() {
                let want: serde_json::Value = serde_json::from_str(line).unwrap();
                let off = want["offset"].as_u64().unwrap();
                let base = *bases.iter().rev().find(|&&b| b <= off).unwrap();
                let rec = takhin_read_held(&dir, base, off);
                assert_eq!(rec.offset, off);
                assert_eq!(rec.timestamp, want["timestamp"].as_i64().unwrap());
                assert_eq!(hex(&rec.key), want["key"].as_str().unwrap());
                assert_eq!(rec.value.len() as u64, want["value_len"].as_u64().unwrap());
                assert_eq!(
                    crc32fast::hash(&rec.value) as u64,
                    want["value_crc32"].as_u64().unwrap()
                );
                checked += 1;
            }
        }
        assert!(checked > 60, "{name}: only {checked} records checked");
    }
}

/// Takhin's lookup (binary search of the `.index`, decode at the position) of an
/// offset the view must hold.
fn takhin_read_held(dir: &Path, base: u64, offset: u64) -> Record {
    takhin_read(dir, base, offset)
        .unwrap_or_else(|| panic!("offset {offset} not in the index of {base}"))
}

#[test]
fn damaged_tree_matches_the_plan_under_every_policy() {
    let src = damaged_tree();
    for policy in Policy::ALL {
        let m = Mounted::new(src.path(), &["--policy", policy.as_str()]);
        assert_view_matches_plan(src.path(), m.path(), policy);
        // The unrecognized name passes through as an opaque file; the orphan does not.
        assert_eq!(
            fs::read(m.path().join("a/partition-0/123.log")).unwrap(),
            b"not a segment"
        );
        let report = report_for(src.path(), policy);
        let views: Vec<ViewAction> = report.segments().map(|(_, s)| s.view).collect();
        match policy {
            Policy::Strict => assert!(views.contains(&ViewAction::Eio)),
            Policy::PointInTime => assert!(views.contains(&ViewAction::Hidden)),
            Policy::PerSegment | Policy::Salvage => {
                assert!(views.contains(&ViewAction::Truncated))
            }
        }
    }
}

#[test]
fn originals_unchanged_after_full_read_and_after_sigkill() {
    let src = damaged_tree();
    age_atimes(src.path());
    let before = snapshot(src.path());
    {
        let mut m = Mounted::new(src.path(), &[]);
        let mut n = 0;
        for rel in files_under(m.path()) {
            if let Ok(b) = fs::read(m.path().join(&rel)) {
                n += b.len();
            }
        }
        assert!(n > 10_000);
        assert!(m.unmount().success(), "the daemon exits 0 after umount");
        assert!(!is_mount_point(m.path()));
    }
    assert_unchanged(&before, &snapshot(src.path()));
    // SIGKILL mid-read: a reader is inside a file when the daemon dies.
    {
        let mut m = Mounted::new(src.path(), &[]);
        let f = fs::File::open(m.path().join("a/partition-0/00000000000000000000.log")).unwrap();
        let mut buf = [0u8; 100];
        f.read_exact_at(&mut buf, 0).unwrap();
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(m.pid(), libc::SIGKILL) }, 0);
        m.child.take().unwrap().wait().unwrap();
        // Pages the kernel cached may still be served; anything else fails (never hangs).
        let mut rest = vec![];
        if (&f).take(1 << 20).read_to_end(&mut rest).is_ok() {
            assert!(rest.len() <= 1 << 20);
        }
        drop(f);
        // The stale mount answers ENOTCONN until cleaned up with the unmount helper.
        assert_eq!(errno_of(fs::read_dir(m.path())), libc::ENOTCONN);
        let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("mount-scripts/umount.recoverfs");
        assert!(Command::new(helper)
            .arg(m.path())
            .status()
            .unwrap()
            .success());
        assert!(!is_mount_point(m.path()));
    }
    assert_unchanged(&before, &snapshot(src.path()));
}

#[test]
fn every_write_like_operation_is_erofs() {
    let src = damaged_tree();
    let m = Mounted::new(src.path(), &[]);
    let d = m.path().join("a/partition-0");
    let log = d.join("00000000000000000000.log");
    let erofs = libc::EROFS;
    assert_eq!(errno_of(fs::File::create(d.join("new"))), erofs);
    assert_eq!(
        errno_of(fs::OpenOptions::new().write(true).open(&log)),
        erofs
    );
    assert_eq!(
        errno_of(fs::OpenOptions::new().append(true).open(&log)),
        erofs
    );
    assert_eq!(errno_of(fs::create_dir(d.join("dir"))), erofs);
    assert_eq!(errno_of(fs::remove_file(&log)), erofs);
    assert_eq!(
        errno_of(fs::remove_dir(m.path().join("b/partition-0"))),
        erofs
    );
    assert_eq!(errno_of(fs::rename(&log, d.join("moved"))), erofs);
    assert_eq!(
        errno_of(std::os::unix::fs::symlink("x", d.join("sl"))),
        erofs
    );
    assert_eq!(errno_of(fs::hard_link(&log, d.join("hl"))), erofs);
    let mut p = fs::metadata(&log).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o777);
    assert_eq!(errno_of(fs::set_permissions(&log, p)), erofs);
    assert_eq!(
        errno_of(filetime::set_file_mtime(&log, filetime::FileTime::zero())),
        erofs
    );
    let cp = CString::new(log.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C strings and buffers.
    unsafe {
        assert_eq!(libc::truncate(cp.as_ptr(), 0), -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(erofs));
        let n = CString::new("user.x").unwrap();
        assert_eq!(
            libc::setxattr(cp.as_ptr(), n.as_ptr(), b"1".as_ptr().cast(), 1, 0),
            -1
        );
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(erofs));
        let n = CString::new("user.recoverfs.status").unwrap();
        assert_eq!(libc::removexattr(cp.as_ptr(), n.as_ptr()), -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(erofs));
        let fifo = CString::new(d.join("fifo").as_os_str().as_bytes()).unwrap();
        assert_eq!(libc::mkfifo(fifo.as_ptr(), 0o644), -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(erofs));
    }
    // Write bits are cleared everywhere.
    for rel in files_under(m.path()) {
        let mode = fs::metadata(m.path().join(&rel)).unwrap().mode();
        assert_eq!(mode & 0o222, 0, "{}", rel.display());
    }
    // The mount itself is ro.
    let info = fs::read_to_string("/proc/self/mounts").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(m.path().to_str().unwrap()))
        .unwrap();
    assert!(line
        .split(' ')
        .nth(3)
        .unwrap()
        .split(',')
        .any(|o| o == "ro"));
}

use std::os::unix::fs::MetadataExt;

#[test]
fn live_source_grows_shrinks_and_vanishes() {
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("t/partition-0");
    let mut w = write_segment(&dir, 0, 30, 50);
    write_segment(&dir, 30, 5, 50); // a later segment, so 0 is not the last
                                    // The daemon path: a sealed clean segment held open under passthrough sees
                                    // the source as it is (tests/passthrough.rs covers that case).
    let m = Mounted::new(src.path(), &["--passthrough", "off"]);
    let shown = m.path().join("t/partition-0/00000000000000000000.log");
    let orig = log_path(&dir, 0);
    assert_eq!(fs::read(&shown).unwrap(), w.log);
    // Grows: appended records are visible after the next lookup.
    append_late(&mut w, &dir, 10, 5, 33);
    assert_eq!(fs::metadata(&shown).unwrap().len(), w.log.len() as u64);
    assert_eq!(fs::read(&shown).unwrap(), w.log);
    assert_eq!(
        fs::read(m.path().join("t/partition-0/00000000000000000000.index")).unwrap(),
        w.index
    );
    // A reader holding the file open, with its pages cached, sees a truncation
    // without any lookup: the source watcher drops those pages.
    {
        let held = fs::File::open(&shown).unwrap();
        let mut all = vec![];
        (&held).read_to_end(&mut all).unwrap();
        assert_eq!(all, w.log);
        let cut = position_of(&w, 25) + 3;
        set_len(&orig, cut as u64);
        // Eventually (the change notice is asynchronous), with a deadline that only bounds a hang.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut got = vec![0u8; w.log.len()];
            let mut n = 0;
            while let Ok(k) = held.read_at(&mut got[n..], n as u64) {
                if k == 0 {
                    break;
                }
                n += k;
            }
            let bad = (0..n).find(|&i| got[i] != w.log[i]);
            assert!(
                bad.is_none(),
                "foreign bytes served: {n} bytes read, cut at {cut}, first differing byte {bad:?} = {:?}",
                bad.map(|i| got[i])
            );
            if n <= cut {
                assert_eq!(
                    n,
                    position_of(&w, 25),
                    "served exactly the new valid prefix"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still serving {n} bytes of a {cut}-byte file"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Restore the grown file for what follows.
        fs::write(&orig, &w.log).unwrap();
    }
    // Shrinks below the validated prefix while a reader holds it open: no stale bytes.
    let held = fs::File::open(&shown).unwrap();
    let cut = position_of(&w, 12) + 9; // inside record 12
    set_len(&orig, cut as u64);
    let valid = position_of(&w, 12);
    // The next lookup sees the change: the view validates again and the kernel
    // drops the pages it cached for the file (even those of a reader holding it open).
    assert_eq!(fs::metadata(&shown).unwrap().len(), valid as u64);
    let mut got = vec![];
    (&held).seek(SeekFrom::Start(0)).unwrap();
    (&held).read_to_end(&mut got).unwrap();
    assert!(
        got.len() <= cut,
        "read {} bytes of a {cut}-byte file",
        got.len()
    );
    assert!(got == w.log[..got.len()], "stale or foreign bytes served");
    assert_eq!(fs::read(&shown).unwrap(), w.log[..valid]);
    assert_eq!(fs::metadata(&shown).unwrap().len(), valid as u64);
    drop(held);
    // Vanishes: ENOENT (or EIO), and the daemon keeps serving.
    fs::remove_file(&orig).unwrap();
    let e = errno_of(fs::read(&shown));
    assert!(e == libc::ENOENT || e == libc::EIO, "errno {e}");
    let other = m.path().join("t/partition-0/00000000000000000030.log");
    assert_eq!(
        fs::read(other).unwrap(),
        fs::read(log_path(&dir, 30)).unwrap()
    );
    assert!(is_mount_point(m.path()));
}

#[test]
fn concurrent_readers_and_listers_see_verified_data() {
    let src = tempfile::tempdir().unwrap();
    let mut logs = vec![];
    for p in 0..4 {
        let dir = src.path().join(format!("t/partition-{p}"));
        for s in 0..10u64 {
            let w = write_segment(&dir, s * 100, 100, 200);
            logs.push((
                dir.strip_prefix(src.path()).unwrap().to_path_buf(),
                s * 100,
                w,
            ));
        }
    }
    // A small cache so verdicts are evicted and revalidated under load.
    let m = Mounted::new(src.path(), &["--cache-mb", "0", "--threads", "4"]);
    let mp = m.path().to_path_buf();
    std::thread::scope(|sc| {
        for t in 0..8u64 {
            let (logs, mp) = (&logs, &mp);
            sc.spawn(move || {
                let mut x = t * 7919 + 1;
                let mut rnd = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                for _ in 0..300 {
                    let (dir, base, w) = &logs[(rnd() % logs.len() as u64) as usize];
                    let (kind, bytes) = match rnd() % 3 {
                        0 => (FileKind::Log, &w.log),
                        1 => (FileKind::Index, &w.index),
                        _ => (FileKind::TimeIndex, &w.timeindex),
                    };
                    let f =
                        fs::File::open(mp.join(dir).join(segment_file_name(*base, kind))).unwrap();
                    let off = rnd() % bytes.len() as u64;
                    let len = (rnd() % 70_000).min(bytes.len() as u64 - off) as usize;
                    let mut buf = vec![0u8; len];
                    f.read_exact_at(&mut buf, off).unwrap();
                    assert!(buf == bytes[off as usize..off as usize + len]);
                }
            });
        }
        sc.spawn(|| {
            for _ in 0..30 {
                for p in 0..4 {
                    let n = fs::read_dir(mp.join(format!("t/partition-{p}")))
                        .unwrap()
                        .count();
                    assert_eq!(n, 30);
                }
                let r: serde_json::Value =
                    serde_json::from_slice(&fs::read(mp.join(".recoverfs/report.json")).unwrap())
                        .unwrap();
                assert_eq!(r["summary"]["segments"], 40);
                assert_eq!(r["summary"]["clean"], 40);
            }
        });
    });
}

#[test]
fn special_files_symlinks_and_non_utf8_names() {
    let src = tempfile::tempdir().unwrap();
    let root = src.path();
    let weird = OsString::from_vec(b"t\xff\xfe".to_vec());
    let dir = root.join(&weird).join("partition-0");
    let w = write_segment(&dir, 0, 5, 10);
    fs::write(
        root.join(OsStr::from_bytes(b"note-\xe9.txt")),
        b"latin-1 name",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("outside")).unwrap();
    std::os::unix::fs::symlink("missing-target", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink(dir.join("00000000000000000000.log"), root.join("to-log")).unwrap();
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C strings; mkfifo/mknod only create nodes in our temp dir.
    unsafe {
        assert_eq!(libc::mkfifo(c(&root.join("fifo")).as_ptr(), 0o644), 0);
        assert_eq!(
            libc::mknod(
                c(&root.join("null-dev")).as_ptr(),
                libc::S_IFCHR | 0o644,
                libc::makedev(1, 3)
            ),
            0
        );
    }
    let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    let m = Mounted::new(root, &[]);
    let names: BTreeSet<Vec<u8>> = fs::read_dir(m.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_vec())
        .collect();
    let want: BTreeSet<Vec<u8>> = [
        &b".recoverfs"[..],
        b"dangling",
        b"note-\xe9.txt",
        b"outside",
        b"t\xff\xfe",
        b"to-log",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect();
    assert_eq!(names, want, "FIFOs, sockets and devices are left out");
    assert_eq!(
        fs::read_link(m.path().join("outside")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::read_link(m.path().join("dangling")).unwrap(),
        Path::new("missing-target")
    );
    assert!(fs::symlink_metadata(m.path().join("to-log"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read(m.path().join(OsStr::from_bytes(b"note-\xe9.txt"))).unwrap(),
        b"latin-1 name"
    );
    let shown = m.path().join(&weird).join("partition-0");
    assert_eq!(
        fs::read(shown.join("00000000000000000000.log")).unwrap(),
        w.log
    );
    assert_eq!(
        fs::read(shown.join("00000000000000000000.index")).unwrap(),
        w.index
    );
    let raw_names: BTreeSet<Vec<u8>> = fs::read_dir(m.path().join(".recoverfs/raw"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_vec())
        .collect();
    assert!(!raw_names.contains(b"fifo".as_slice()) && raw_names.contains(b"outside".as_slice()));
    let r: serde_json::Value =
        serde_json::from_slice(&fs::read(m.path().join(".recoverfs/report.json")).unwrap())
            .unwrap();
    assert_eq!(r["logs"][0]["path"], "t\\xff\\xfe/partition-0");
}

#[test]
fn ten_thousand_segments_list_correctly() {
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("big/partition-0");
    write_one_record_segments(&dir, 10_000, b"v");
    let mut want = BTreeSet::new();
    for b in 0..10_000u64 {
        for k in [FileKind::Log, FileKind::Index, FileKind::TimeIndex] {
            want.insert(segment_file_name(b, k));
        }
    }
    let m = Mounted::new(src.path(), &[]);
    let got: BTreeSet<String> = fs::read_dir(m.path().join("big/partition-0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(got.len(), 30_000);
    assert!(got == want);
    // Mounting and listing validated nothing; one lookup validates one segment.
    assert_eq!(m.log().matches("validated ").count(), 0, "{}", m.log());
    let p = m.path().join("big/partition-0/00000000000000004321.log");
    assert_eq!(
        fs::metadata(&p).unwrap().len(),
        fs::metadata(log_path(&dir, 4321)).unwrap().len()
    );
    assert_eq!(m.log().matches("validated ").count(), 1, "{}", m.log());
}

#[test]
fn daemon_errors_signals_and_mount_helpers() {
    let src = fixture_copy("seed-example");
    let t = tempfile::tempdir().unwrap();
    let o = |p: &Path| p.as_os_str().to_owned();
    let expect_err = |args: &[&OsStr], needle: &str| {
        let out = run([OsStr::new("mount")].iter().chain(args));
        let (ok, err) = (out.status.success(), stderr(&out));
        assert!(!ok, "{args:?} succeeded");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    };
    let missing = t.path().join("missing");
    expect_err(&[&o(src.path()), &o(&missing)], "does not exist");
    let file = t.path().join("file");
    fs::write(&file, b"x").unwrap();
    expect_err(&[&o(src.path()), &o(&file)], "not a directory");
    let full = t.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("x"), b"x").unwrap();
    expect_err(&[&o(src.path()), &o(&full)], "not empty");
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    expect_err(&[&o(&t.path().join("nosrc")), &o(&empty)], "source");
    expect_err(
        &[
            &o(src.path()),
            &o(&empty),
            OsStr::new("-o"),
            OsStr::new("bogus"),
        ],
        "unknown mount option",
    );
    // Already a mount; then SIGTERM unmounts cleanly and the daemon exits 0.
    {
        let mut m = Mounted::new(src.path(), &[]);
        expect_err(&[&o(src.path()), &o(m.path())], "already a mount point");
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(m.pid(), libc::SIGTERM) }, 0);
        let st = m.child.take().unwrap().wait().unwrap();
        assert!(st.success(), "{st}");
        assert!(!is_mount_point(m.path()));
    }
    // mount.recoverfs called directly (mount(8)'s convention) returns once mounted; the unmount helper unmounts.
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("mount-scripts");
    let mp = fs::canonicalize(&empty).unwrap();
    let path = format!(
        "{}:{}",
        bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap()
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            if is_mount_point(&self.0) {
                let _ = recoverfs::cli::sys::lazy_unmount(&self.0);
            }
        }
    }
    let _guard = Unmount(mp.clone());
    let st = Command::new(scripts.join("mount.recoverfs"))
        .arg(src.path())
        .arg(&mp)
        .args([
            "-o",
            "ro,policy=point-in-time,cache_mb=8,threads=2,nofail,x-systemd.automount",
        ])
        .env("PATH", &path)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(is_mount_point(&mp));
    let r: serde_json::Value =
        serde_json::from_slice(&fs::read(mp.join(".recoverfs/report.json")).unwrap()).unwrap();
    assert_eq!(r["policy"], "point-in-time");
    let st = Command::new(scripts.join("umount.recoverfs"))
        .arg(&mp)
        .env("PATH", &path)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(!is_mount_point(&mp));
}

#[test]
fn demo_tours_and_cleans_up() {
    let out = run(["demo", "--no-wait"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "bad-lengths",
        "zero-fill",
        "incomplete-record",
        "missing",
        "GAP",
        "3280 bytes ->   2050 bytes",
        "orders/partition-0/00000000000000000066.log <- 14 record(s), offsets 66..=79",
    ] {
        assert!(text.contains(needle), "tour lacks {needle:?}:\n{text}");
    }
    let tmp = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("damaged data directory: "))
        .map(|p| PathBuf::from(p).parent().unwrap().to_path_buf())
        .unwrap();
    assert!(!tmp.exists(), "{} left behind", tmp.display());
    assert!(!is_mount_point(&tmp.join("view")));
}

#[test]
fn mount_and_repair_show_the_same_tree() {
    let src = damaged_tree();
    std::os::unix::fs::symlink("a/topic-metadata.json", src.path().join("link")).unwrap();
    for policy in [Policy::PerSegment, Policy::PointInTime] {
        let out = tempfile::tempdir().unwrap();
        let new = out.path().join("repaired");
        let o = repair_output(src.path(), &new, &["--policy", policy.as_str()]);
        assert!(o.status.success(), "repair {policy}: {}", stderr(&o));
        let m = Mounted::new(src.path(), &["--policy", policy.as_str()]);
        let shown = tree_contents(m.path(), ".recoverfs");
        let written = tree_contents(&new, ".recoverfs");
        assert_eq!(
            shown.iter().map(|x| &x.0).collect::<Vec<_>>(),
            written.iter().map(|x| &x.0).collect::<Vec<_>>(),
            "{policy}: the mount and repair list different files"
        );
        for ((p, a), (_, b)) in shown.iter().zip(&written) {
            assert!(
                a == b,
                "{policy}: {} differs between mount and repair",
                p.display()
            );
        }
    }
}
