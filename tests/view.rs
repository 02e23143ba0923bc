//! The view driven without FUSE: lookups, attributes, listings, reads, xattrs, `.recoverfs/`, policies and errno answers, as the kernel would ask them.
//!
//! Everything here runs without /dev/fuse; `tests/mount.rs` checks the same
//! view through real mounts.

use crate::common;

use common::{read_all, view, write_log};
use recoverfs::engine::format::takhin::{segment_file_name, FileKind, SegmentWriter};
use recoverfs::engine::policy::Policy;
use recoverfs::view::{
    xattr_reply, Attr, EntryType, View, ViewConfig, ViewError, XattrReply, META_DIR, METRICS_NAME,
    RAW_DIR, REPORT_NAME, ROOT_INO, TAILS_DIR, TAIL_SUFFIX, XATTRS,
};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

#[test]
fn lazy_validation_and_truncated_log() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("t/partition-0");
    fs::create_dir_all(&p).unwrap();
    let w0 = write_log(&p, 0, 10);
    let mut w1 = write_log(&p, 10, 10);
    w1.log.extend_from_slice(&[0, 0, 0, 50, 1, 2]); // torn tail
    fs::write(p.join(segment_file_name(10, FileKind::Log)), &w1.log).unwrap();
    let v = view(t.path(), Policy::PerSegment);
    let tdir = v.lookup(ROOT_INO, OsStr::new("t")).unwrap();
    let pdir = v.lookup(tdir.ino, OsStr::new("partition-0")).unwrap();
    assert_eq!(v.validations(), 0, "listing validates nothing");
    let fh = v.opendir(pdir.ino).unwrap();
    assert_eq!(v.dir_entries(fh).unwrap().len(), 2 + 6);
    assert_eq!(v.validations(), 0);
    let a = v
        .lookup(pdir.ino, OsStr::new("00000000000000000010.log"))
        .unwrap();
    assert_eq!(v.validations(), 1);
    assert_eq!(a.size, w1.log.len() as u64 - 6);
    assert_eq!(a.perm & 0o222, 0);
    assert_eq!(read_all(&v, a.ino), w1.log[..w1.log.len() - 6]);
    let i = v
        .lookup(pdir.ino, OsStr::new("00000000000000000010.index"))
        .unwrap();
    assert_eq!(v.validations(), 1, "the three files share one validation");
    assert_eq!(read_all(&v, i.ino), w1.index);
    let l0 = v
        .lookup(pdir.ino, OsStr::new("00000000000000000000.timeindex"))
        .unwrap();
    assert_eq!(read_all(&v, l0.ino), w0.timeindex);
    assert_eq!(
        v.getxattr(a.ino, OsStr::new("user.recoverfs.status"))
            .unwrap(),
        b"truncated"
    );
    assert!(matches!(
        v.getxattr(tdir.ino, OsStr::new("user.recoverfs.status")),
        Err(ViewError::NoAttr)
    ));
    assert!(matches!(v.open(a.ino, true), Err(ViewError::ReadOnly)));
    // tails/ holds the cut bytes.
    let meta = v.lookup(ROOT_INO, OsStr::new(META_DIR)).unwrap();
    let tails = v.lookup(meta.ino, OsStr::new(TAILS_DIR)).unwrap();
    let t1 = v.lookup(tails.ino, OsStr::new("t")).unwrap();
    let t2 = v.lookup(t1.ino, OsStr::new("partition-0")).unwrap();
    let tail = v
        .lookup(t2.ino, OsStr::new("00000000000000000010.log.tail"))
        .unwrap();
    assert_eq!(read_all(&v, tail.ino), [0, 0, 0, 50, 1, 2]);
}

#[test]
fn concurrent_lookups_validate_once_and_cache_is_bounded() {
    let t = tempfile::tempdir().unwrap();
    for b in 0..20 {
        write_log(t.path(), b * 100, 100);
    }
    let v = View::new(ViewConfig {
        cache_bytes: 1,
        ..view(t.path(), Policy::PerSegment).config().clone()
    });
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                v.lookup(ROOT_INO, OsStr::new("00000000000000000000.log"))
                    .unwrap()
            });
        }
    });
    assert_eq!(v.validations(), 1);
    for b in 0..20u64 {
        v.lookup(
            ROOT_INO,
            OsStr::new(&segment_file_name(b * 100, FileKind::Log)),
        )
        .unwrap();
    }
    assert_eq!(
        v.cache_usage().0,
        1,
        "a 1-byte budget keeps only the latest"
    );
    let before = v.validations();
    v.lookup(ROOT_INO, OsStr::new("00000000000000000000.log"))
        .unwrap();
    assert_eq!(v.validations(), before + 1, "evicted, so validated again");
}

#[test]
fn changed_source_is_validated_again() {
    let t = tempfile::tempdir().unwrap();
    let mut w = write_log(t.path(), 0, 5);
    let v = view(t.path(), Policy::PerSegment);
    let a = v
        .lookup(ROOT_INO, OsStr::new("00000000000000000000.log"))
        .unwrap();
    let o = v.open(a.ino, false).unwrap();
    w.append(5000, b"k", b"more");
    fs::write(t.path().join("00000000000000000000.log"), &w.log).unwrap();
    let b = v
        .lookup(ROOT_INO, OsStr::new("00000000000000000000.log"))
        .unwrap();
    assert_eq!(b.size, w.log.len() as u64);
    // The old handle follows the change too.
    let got = v.read(o.fh, 0, 1 << 20).unwrap();
    assert_eq!(got, w.log);
    fs::write(t.path().join("00000000000000000000.log"), &w.log[..10]).unwrap();
    assert!(v.read(o.fh, 0, 1 << 20).unwrap().is_empty());
}

#[test]
fn point_in_time_hides_after_damage_until_it_is_repaired() {
    let t = tempfile::tempdir().unwrap();
    write_log(t.path(), 0, 5);
    let w = write_log(t.path(), 5, 5);
    write_log(t.path(), 10, 5);
    let p = t.path().join("00000000000000000005.log");
    fs::write(&p, &w.log[..w.log.len() - 3]).unwrap();
    let v = view(t.path(), Policy::PointInTime);
    let name = OsStr::new("00000000000000000010.log");
    assert!(matches!(v.lookup(ROOT_INO, name), Err(ViewError::NotFound)));
    let fh = v.opendir(ROOT_INO).unwrap();
    assert!(!v.dir_entries(fh).unwrap().iter().any(|e| e.name == name));
    // The damaged segment is rewritten whole: its next lookup sees it, and the log after it reappears.
    fs::write(&p, &w.log).unwrap();
    let a = v
        .lookup(ROOT_INO, OsStr::new("00000000000000000005.log"))
        .unwrap();
    assert_eq!(a.size, w.log.len() as u64);
    assert!(v.lookup(ROOT_INO, name).is_ok());
}

#[test]
fn strict_refuses_and_errnos_map() {
    let t = tempfile::tempdir().unwrap();
    let mut w = write_log(t.path(), 0, 5);
    w.log.push(7);
    fs::write(t.path().join("00000000000000000000.log"), &w.log).unwrap();
    let v = view(t.path(), Policy::Strict);
    let a = v
        .lookup(ROOT_INO, OsStr::new("00000000000000000000.log"))
        .unwrap();
    let e = v.open(a.ino, false).unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    assert_eq!(ViewError::ReadOnly.errno(), libc::EROFS);
    assert_eq!(
        v.lookup(ROOT_INO, OsStr::new("nope")).unwrap_err().errno(),
        libc::ENOENT
    );
    assert!(matches!(
        xattr_reply(b"abc".to_vec(), 2),
        Err(ViewError::Range)
    ));
    assert_eq!(
        xattr_reply(b"abc".to_vec(), 0).unwrap(),
        XattrReply::Size(3)
    );
}

fn seg(base: u64, kind: FileKind) -> OsString {
    segment_file_name(base, kind).into()
}

/// The names an open directory lists, `.` and `..` included.
fn names(v: &View, ino: u64) -> Vec<OsString> {
    let fh = v.opendir(ino).unwrap();
    let out = v
        .dir_entries(fh)
        .unwrap()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    v.release(fh);
    out
}

/// Looks up a path of names from the root.
fn walk(v: &View, path: &[&OsStr]) -> Result<Attr, ViewError> {
    let mut at = v.getattr(ROOT_INO)?;
    for name in path {
        at = v.lookup(at.ino, name)?;
    }
    Ok(at)
}

/// Three clean segments of 5 records at 0, 5 and 10; the middle one then loses its last 3 bytes.
fn three_with_torn_middle(root: &Path) -> [SegmentWriter; 3] {
    let a = write_log(root, 0, 5);
    let mut b = write_log(root, 5, 5);
    let c = write_log(root, 10, 5);
    b.log.truncate(b.log.len() - 3);
    fs::write(root.join(seg(5, FileKind::Log)), &b.log).unwrap();
    [a, b, c]
}

#[test]
fn the_root_mirrors_the_source_with_recoverfs_first_and_no_special_files() {
    let t = tempfile::tempdir().unwrap();
    let w = write_log(t.path(), 0, 3);
    fs::write(t.path().join("notes.txt"), b"hello").unwrap();
    fs::create_dir(t.path().join("sub")).unwrap();
    std::os::unix::fs::symlink("notes.txt", t.path().join("link")).unwrap();
    let fifo = std::ffi::CString::new(t.path().join("fifo").into_os_string().into_encoded_bytes())
        .unwrap();
    // SAFETY: `fifo` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let v = view(t.path(), Policy::PerSegment);
    let root = v.getattr(ROOT_INO).unwrap();
    assert_eq!(
        (root.ino, root.kind, root.perm & 0o222),
        (ROOT_INO, EntryType::Dir, 0)
    );
    let mut want: Vec<OsString> = vec![".".into(), "..".into(), META_DIR.into()];
    want.extend([
        seg(0, FileKind::Index),
        seg(0, FileKind::Log),
        seg(0, FileKind::TimeIndex),
        "link".into(),
        "notes.txt".into(),
        "sub".into(),
    ]);
    assert_eq!(names(&v, ROOT_INO), want, "sorted, FIFO left out");
    assert_eq!(
        v.lookup(ROOT_INO, OsStr::new("fifo")).unwrap_err().errno(),
        libc::ENOENT
    );
    let file = v.lookup(ROOT_INO, OsStr::new("notes.txt")).unwrap();
    assert_eq!(
        (file.kind, file.size, file.perm),
        (EntryType::File, 5, 0o444)
    );
    assert_eq!(read_all(&v, file.ino), b"hello");
    let link = v.lookup(ROOT_INO, OsStr::new("link")).unwrap();
    assert_eq!(link.kind, EntryType::Symlink);
    assert_eq!(v.readlink(link.ino).unwrap(), b"notes.txt");
    assert_eq!(v.open(link.ino, false).unwrap_err().errno(), libc::ELOOP);
    assert_eq!(v.readlink(file.ino).unwrap_err().errno(), libc::EINVAL);
    let sub = v.lookup(ROOT_INO, OsStr::new("sub")).unwrap();
    assert_eq!(v.open(sub.ino, false).unwrap_err().errno(), libc::EISDIR);
    assert_eq!(names(&v, sub.ino), [".", ".."]);
    assert_eq!(
        v.lookup(file.ino, OsStr::new("x")).unwrap_err().errno(),
        libc::ENOTDIR
    );
    assert_eq!(v.opendir(file.ino).unwrap_err().errno(), libc::ENOTDIR);
    // Inode numbers are stable: a second lookup and the listing agree with the first.
    let log = v.lookup(ROOT_INO, &seg(0, FileKind::Log)).unwrap();
    assert_eq!(
        v.lookup(ROOT_INO, &seg(0, FileKind::Log)).unwrap().ino,
        log.ino
    );
    let fh = v.opendir(ROOT_INO).unwrap();
    let listed = v.dir_entries(fh).unwrap();
    let e = listed
        .iter()
        .find(|e| e.name == seg(0, FileKind::Log))
        .unwrap();
    assert_eq!((e.ino, e.kind), (log.ino, EntryType::File));
    assert_eq!(read_all(&v, log.ino), w.log);
    assert_eq!(v.getattr(log.ino).unwrap(), log);
}

#[test]
fn rebuilt_indexes_stand_in_for_missing_ones_and_orphans_are_left_out() {
    let t = tempfile::tempdir().unwrap();
    let w = write_log(t.path(), 0, 7);
    fs::remove_file(t.path().join(seg(0, FileKind::Index))).unwrap();
    fs::write(t.path().join(seg(99, FileKind::Index)), b"orphan").unwrap();
    let v = view(t.path(), Policy::PerSegment);
    let idx = v.lookup(ROOT_INO, &seg(0, FileKind::Index)).unwrap();
    let log = v.lookup(ROOT_INO, &seg(0, FileKind::Log)).unwrap();
    assert_eq!(idx.size, w.index.len() as u64);
    assert_eq!(read_all(&v, idx.ino), w.index);
    assert_eq!(
        idx.mtime, log.mtime,
        "a missing index takes the .log's times"
    );
    let ti = v.lookup(ROOT_INO, &seg(0, FileKind::TimeIndex)).unwrap();
    assert_eq!(read_all(&v, ti.ino), w.timeindex);
    assert!(matches!(
        v.lookup(ROOT_INO, &seg(99, FileKind::Index)),
        Err(ViewError::NotFound)
    ));
    assert!(!names(&v, ROOT_INO).contains(&seg(99, FileKind::Index)));
}

#[test]
fn reads_are_clamped_to_what_the_view_serves() {
    let t = tempfile::tempdir().unwrap();
    let w = write_log(t.path(), 0, 5);
    let v = view(t.path(), Policy::PerSegment);
    let log = v.lookup(ROOT_INO, &seg(0, FileKind::Log)).unwrap();
    let o = v.open(log.ino, false).unwrap();
    // Written just now: a recently changed file is opened with direct I/O.
    assert!(o.direct_io);
    assert_eq!(v.read(o.fh, 10, 7).unwrap(), w.log[10..17]);
    let end = w.log.len() as u64;
    assert_eq!(
        v.read(o.fh, end - 2, 100).unwrap(),
        w.log[end as usize - 2..]
    );
    assert!(v.read(o.fh, end, 100).unwrap().is_empty());
    assert!(v.read(o.fh, u64::MAX, 100).unwrap().is_empty());
    // A reused buffer only grows, and only its first n bytes are the answer.
    let mut buf = vec![0xAA; 64];
    assert_eq!(v.read_into(o.fh, 0, 4, &mut buf).unwrap(), 4);
    assert_eq!((&buf[..4], buf.len()), (&w.log[..4], 64));
    v.release(o.fh);
    assert_eq!(v.read(o.fh, 0, 1).unwrap_err().errno(), libc::EBADF);
}

#[test]
fn keep_cache_holds_only_while_the_source_is_unchanged() {
    let t = tempfile::tempdir().unwrap();
    let mut w = write_log(t.path(), 0, 5);
    fs::write(t.path().join("plain"), b"one").unwrap();
    let v = view(t.path(), Policy::PerSegment);
    for name in [OsString::from("plain"), seg(0, FileKind::Log)] {
        let a = v.lookup(ROOT_INO, &name).unwrap();
        let first = v.open(a.ino, false).unwrap();
        let second = v.open(a.ino, false).unwrap();
        assert_eq!(
            (first.keep_cache, second.keep_cache),
            (false, true),
            "{name:?}"
        );
    }
    fs::write(t.path().join("plain"), b"two!").unwrap();
    w.append(7, b"k", b"v");
    fs::write(t.path().join(seg(0, FileKind::Log)), &w.log).unwrap();
    for name in [OsString::from("plain"), seg(0, FileKind::Log)] {
        let a = v.lookup(ROOT_INO, &name).unwrap();
        assert!(
            !v.open(a.ino, false).unwrap().keep_cache,
            "{name:?} changed"
        );
    }
}

#[test]
fn recoverfs_dir_holds_the_report_the_raw_originals_and_the_cut_tails() {
    let t = tempfile::tempdir().unwrap();
    let [_, b, _] = three_with_torn_middle(t.path());
    let original = fs::read(t.path().join(seg(5, FileKind::Log))).unwrap();
    let v = view(t.path(), Policy::PerSegment);
    let meta = v.lookup(ROOT_INO, OsStr::new(META_DIR)).unwrap();
    assert_eq!(meta.kind, EntryType::Dir);
    assert_eq!(
        names(&v, meta.ino),
        [".", "..", REPORT_NAME, METRICS_NAME, RAW_DIR, TAILS_DIR]
    );
    assert_eq!(v.open(meta.ino, false).unwrap_err().errno(), libc::EISDIR);
    assert_eq!(
        v.lookup(meta.ino, OsStr::new("nope")).unwrap_err().errno(),
        libc::ENOENT
    );
    // report.json: the whole tree, read-only, generated per open.
    let report = v.lookup(meta.ino, OsStr::new(REPORT_NAME)).unwrap();
    assert_eq!((report.kind, report.perm), (EntryType::File, 0o400)); // the source root's owner alone
    let o = v.open(report.ino, false).unwrap();
    assert!(o.direct_io && !o.keep_cache);
    v.release(o.fh);
    let json: serde_json::Value = serde_json::from_slice(&read_all(&v, report.ino)).unwrap();
    assert_eq!(json["policy"], "per-segment");
    assert_eq!(json["logs"][0]["segments"].as_array().unwrap().len(), 3);
    assert_eq!(json["logs"][0]["segments"][1]["status"], "truncated");
    assert_eq!(*v.report_json(), read_all(&v, report.ino));
    // raw/: the originals, whole.
    let raw = v.lookup(meta.ino, OsStr::new(RAW_DIR)).unwrap();
    assert!(names(&v, raw.ino).contains(&seg(5, FileKind::Log)));
    let raw_log = v.lookup(raw.ino, &seg(5, FileKind::Log)).unwrap();
    assert_eq!(raw_log.size, original.len() as u64);
    assert_eq!(read_all(&v, raw_log.ino), original);
    assert_eq!(v.open(raw.ino, false).unwrap_err().errno(), libc::EISDIR);
    // tails/: only the cut segment, holding exactly the bytes cut.
    let tails = v.lookup(meta.ino, OsStr::new(TAILS_DIR)).unwrap();
    let mut tail_name = seg(5, FileKind::Log);
    tail_name.push(TAIL_SUFFIX);
    assert_eq!(
        names(&v, tails.ino),
        [OsString::from("."), "..".into(), tail_name.clone()]
    );
    let tail = v.lookup(tails.ino, &tail_name).unwrap();
    let shown = v.lookup(ROOT_INO, &seg(5, FileKind::Log)).unwrap();
    assert_eq!(shown.size + tail.size, original.len() as u64);
    assert_eq!(read_all(&v, tail.ino), original[shown.size as usize..]);
    assert_eq!(read_all(&v, shown.ino), b.log[..shown.size as usize]);
    // Nothing in .recoverfs/ has the segment xattrs.
    for ino in [meta.ino, report.ino, raw_log.ino, tail.ino] {
        assert!(v.listxattr(ino).unwrap().is_empty());
        assert_eq!(
            v.getxattr(ino, OsStr::new(XATTRS[0])).unwrap_err().errno(),
            libc::ENODATA
        );
    }
}

#[test]
fn a_source_dir_named_recoverfs_is_not_listed_twice() {
    let t = tempfile::tempdir().unwrap();
    write_log(t.path(), 0, 2);
    fs::create_dir(t.path().join(META_DIR)).unwrap();
    fs::write(t.path().join(META_DIR).join("x"), b"x").unwrap();
    let v = view(t.path(), Policy::PerSegment);
    let root = names(&v, ROOT_INO);
    assert_eq!(root.iter().filter(|n| *n == META_DIR).count(), 1);
    let meta = v.lookup(ROOT_INO, OsStr::new(META_DIR)).unwrap();
    assert_eq!(
        names(&v, meta.ino),
        [".", "..", REPORT_NAME, METRICS_NAME, RAW_DIR, TAILS_DIR]
    );
}

#[test]
fn segment_xattrs_describe_the_verdict() {
    let t = tempfile::tempdir().unwrap();
    let [a, b, _] = three_with_torn_middle(t.path());
    let v = view(t.path(), Policy::PerSegment);
    let get = |ino: u64, name: &str| {
        String::from_utf8(v.getxattr(ino, OsStr::new(name)).unwrap()).unwrap()
    };
    let mut list = Vec::new();
    for n in XATTRS {
        list.extend_from_slice(n.as_bytes());
        list.push(0);
    }
    let clean = v.lookup(ROOT_INO, &seg(0, FileKind::Log)).unwrap();
    let index = v.lookup(ROOT_INO, &seg(0, FileKind::Index)).unwrap();
    assert_eq!(v.listxattr(clean.ino).unwrap(), list);
    assert_eq!(
        v.listxattr(index.ino).unwrap(),
        list,
        "all three files of a segment"
    );
    assert_eq!(get(clean.ino, "user.recoverfs.status"), "clean");
    assert_eq!(get(index.ino, "user.recoverfs.status"), "clean");
    assert_eq!(
        get(clean.ino, "user.recoverfs.valid_bytes"),
        a.log.len().to_string()
    );
    assert_eq!(
        get(clean.ino, "user.recoverfs.original_bytes"),
        a.log.len().to_string()
    );
    assert_eq!(get(clean.ino, "user.recoverfs.records"), "5");
    assert_eq!(get(clean.ino, "user.recoverfs.damage"), "none");
    let cut = v.lookup(ROOT_INO, &seg(5, FileKind::Log)).unwrap();
    assert_eq!(get(cut.ino, "user.recoverfs.status"), "truncated");
    assert_eq!(
        get(cut.ino, "user.recoverfs.valid_bytes"),
        cut.size.to_string()
    );
    assert_eq!(
        get(cut.ino, "user.recoverfs.original_bytes"),
        b.log.len().to_string()
    );
    assert_eq!(get(cut.ino, "user.recoverfs.records"), "4");
    let damage = get(cut.ino, "user.recoverfs.damage");
    assert!(damage.contains("(mid-log) at byte"), "{damage}");
    assert!(damage.contains(", record 4: "), "{damage}");
    assert_eq!(
        v.getxattr(cut.ino, OsStr::new("user.other"))
            .unwrap_err()
            .errno(),
        libc::ENODATA
    );
    assert!(v.listxattr(ROOT_INO).unwrap().is_empty());
    assert_eq!(
        xattr_reply(b"abc".to_vec(), 3).unwrap(),
        XattrReply::Data(b"abc".to_vec())
    );
}

#[test]
fn per_segment_keeps_what_follows_damage_and_strict_lists_but_refuses_it() {
    let t = tempfile::tempdir().unwrap();
    let [a, b, c] = three_with_torn_middle(t.path());
    let v = view(t.path(), Policy::PerSegment);
    assert_eq!(names(&v, ROOT_INO).len(), 3 + 9);
    let last = v.lookup(ROOT_INO, &seg(10, FileKind::Log)).unwrap();
    assert_eq!(read_all(&v, last.ino), c.log);
    let cut = v.lookup(ROOT_INO, &seg(5, FileKind::Log)).unwrap();
    assert!(cut.size < b.log.len() as u64);

    let v = view(t.path(), Policy::Strict);
    assert_eq!(names(&v, ROOT_INO).len(), 3 + 9, "strict hides nothing");
    let clean = v.lookup(ROOT_INO, &seg(0, FileKind::Log)).unwrap();
    assert_eq!(read_all(&v, clean.ino), a.log);
    for kind in [FileKind::Log, FileKind::Index, FileKind::TimeIndex] {
        let f = v.lookup(ROOT_INO, &seg(5, kind)).unwrap();
        assert_eq!(
            f.size, 0,
            "{kind:?}: nothing is served, so nothing is sized"
        );
        let e = v.open(f.ino, false).unwrap_err();
        assert!(matches!(e, ViewError::Refused { .. }));
        assert_eq!(e.errno(), libc::EIO);
    }
    // Its xattrs say what the view does with it: refused (issue 19, item 5).
    let f = v.lookup(ROOT_INO, &seg(5, FileKind::Log)).unwrap();
    assert_eq!(
        v.getxattr(f.ino, OsStr::new(XATTRS[0])).unwrap(),
        b"refused"
    );
    // The cut bytes stay readable in tails/ under every policy.
    let tail = walk(
        &v,
        &[
            OsStr::new(META_DIR),
            OsStr::new(TAILS_DIR),
            OsStr::new(&format!(
                "{}{TAIL_SUFFIX}",
                segment_file_name(5, FileKind::Log)
            )),
        ],
    )
    .unwrap();
    assert_eq!(
        tail.size,
        b.log.len() as u64 - cut.size,
        "the whole torn record"
    );
}

#[test]
fn point_in_time_hides_everything_after_a_gap() {
    let t = tempfile::tempdir().unwrap();
    write_log(t.path(), 0, 5);
    let w = write_log(t.path(), 10, 5); // offsets 5..10 are missing
    let v = view(t.path(), Policy::PointInTime);
    let listed = names(&v, ROOT_INO);
    assert!(listed.contains(&seg(0, FileKind::Log)));
    for kind in [FileKind::Log, FileKind::Index, FileKind::TimeIndex] {
        assert!(!listed.contains(&seg(10, kind)), "{kind:?}");
        assert_eq!(
            v.lookup(ROOT_INO, &seg(10, kind)).unwrap_err().errno(),
            libc::ENOENT
        );
    }
    let v = view(t.path(), Policy::PerSegment);
    let after = v.lookup(ROOT_INO, &seg(10, FileKind::Log)).unwrap();
    assert_eq!(
        read_all(&v, after.ino),
        w.log,
        "per-segment keeps it: a gap alone changes nothing"
    );
}

#[test]
fn a_vanished_source_file_answers_enoent() {
    let t = tempfile::tempdir().unwrap();
    write_log(t.path(), 0, 5);
    fs::write(t.path().join("plain"), b"x").unwrap();
    let v = view(t.path(), Policy::PerSegment);
    let plain = v.lookup(ROOT_INO, OsStr::new("plain")).unwrap();
    let log = v.lookup(ROOT_INO, &seg(0, FileKind::Log)).unwrap();
    fs::remove_file(t.path().join("plain")).unwrap();
    fs::remove_file(t.path().join(seg(0, FileKind::Log))).unwrap();
    assert_eq!(v.getattr(plain.ino).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(v.open(plain.ino, false).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(v.getattr(log.ino).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(
        v.lookup(ROOT_INO, &seg(0, FileKind::Log))
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
}

#[test]
fn a_changed_source_file_invalidates_its_inodes() {
    let t = tempfile::tempdir().unwrap();
    write_log(t.path(), 0, 5);
    fs::write(t.path().join("plain"), b"x").unwrap();
    let v = view(t.path(), Policy::PerSegment);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    v.set_invalidator(Box::new(move |ino, _| s.lock().unwrap().push(ino)));
    let log = v.lookup(ROOT_INO, &seg(0, FileKind::Log)).unwrap();
    let index = v.lookup(ROOT_INO, &seg(0, FileKind::Index)).unwrap();
    let plain = v.lookup(ROOT_INO, OsStr::new("plain")).unwrap();
    v.source_changed(Path::new(""), &seg(0, FileKind::Log));
    assert_eq!(
        *seen.lock().unwrap(),
        [log.ino, index.ino],
        "the segment's files looked up"
    );
    seen.lock().unwrap().clear();
    v.source_changed(Path::new(""), OsStr::new("plain"));
    v.source_changed(Path::new(""), OsStr::new("never-looked-up"));
    v.source_changed(Path::new("no-such-dir"), OsStr::new("plain"));
    assert_eq!(*seen.lock().unwrap(), [plain.ino]);
}

#[test]
fn unknown_inodes_and_handles_and_every_errno() {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("plain"), b"x").unwrap();
    let v = view(t.path(), Policy::PerSegment);
    assert_eq!(v.getattr(999).unwrap_err().errno(), libc::ESTALE);
    assert_eq!(v.getattr(0).unwrap_err().errno(), libc::ESTALE);
    assert_eq!(
        v.lookup(999, OsStr::new("x")).unwrap_err().errno(),
        libc::ESTALE
    );
    assert_eq!(v.dir_entries(999).unwrap_err().errno(), libc::EBADF);
    let plain = v.lookup(ROOT_INO, OsStr::new("plain")).unwrap();
    assert_eq!(v.open(plain.ino, true).unwrap_err().errno(), libc::EROFS);
    let o = v.open(plain.ino, false).unwrap();
    assert_eq!(v.dir_entries(o.fh).unwrap_err().errno(), libc::ENOTDIR);
    let d = v.opendir(ROOT_INO).unwrap();
    assert_eq!(v.read(d, 0, 1).unwrap_err().errno(), libc::EISDIR);
    let source = |kind: io::ErrorKind, raw: Option<i32>| ViewError::Source {
        path: "p".into(),
        err: raw.map_or_else(|| io::Error::from(kind), io::Error::from_raw_os_error),
    };
    let table = [
        (ViewError::NotFound, libc::ENOENT),
        (ViewError::ReadOnly, libc::EROFS),
        (
            ViewError::Refused {
                path: "p".into(),
                why: "w".into(),
            },
            libc::EIO,
        ),
        (source(io::ErrorKind::NotFound, None), libc::ENOENT),
        (
            source(io::ErrorKind::Other, Some(libc::EACCES)),
            libc::EACCES,
        ),
        (source(io::ErrorKind::Other, Some(libc::ELOOP)), libc::ELOOP),
        (source(io::ErrorKind::UnexpectedEof, None), libc::EIO),
        (ViewError::NotDir, libc::ENOTDIR),
        (ViewError::IsDir, libc::EISDIR),
        (ViewError::NotSymlink, libc::EINVAL),
        (ViewError::IsSymlink, libc::ELOOP),
        (ViewError::NoAttr, libc::ENODATA),
        (ViewError::Range, libc::ERANGE),
        (ViewError::BadHandle(1), libc::EBADF),
        (ViewError::BadInode(1), libc::ESTALE),
    ];
    for (e, errno) in table {
        assert_eq!(e.errno(), errno, "{e:?}");
    }
}

#[test]
fn the_config_is_kept_as_given() {
    let t = tempfile::tempdir().unwrap();
    let v = view(t.path(), Policy::Strict);
    let c: &ViewConfig = v.config();
    assert_eq!(
        (c.source.path(), c.policy, c.cache_bytes),
        (t.path(), Policy::Strict, 1 << 20)
    );
    assert_eq!(v.cache_usage(), (0, 0));
}

/// metrics.prom validates nothing; background verification validates every
/// segment once, after which report.json (and point-in-time listings) validate nothing new.
#[test]
fn metrics_validate_nothing_and_background_verification_fills_the_cache() {
    for policy in [Policy::PerSegment, Policy::PointInTime] {
        let t = tempfile::tempdir().unwrap();
        three_with_torn_middle(t.path());
        let v = Arc::new(view(t.path(), policy));
        let text = String::from_utf8(v.metrics_prom().to_vec()).unwrap();
        assert_eq!(v.validations(), 0, "{policy}");
        assert!(text.contains("\nrecoverfs_segments_known 3\n"), "{text}");
        assert!(
            text.contains("\nrecoverfs_segments_validated 0\n"),
            "{text}"
        );
        assert!(text.contains("\nrecoverfs_logs_pending 1\n"), "{text}");
        let verify = v.start_verify().unwrap();
        let c = v.counters().clone();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        use std::sync::atomic::Ordering::Relaxed;
        while c.verify_total.load(Relaxed) == 0
            || c.verify_done.load(Relaxed) < c.verify_total.load(Relaxed)
            || c.verify_running.load(Relaxed) == 1
        {
            assert!(std::time::Instant::now() < deadline, "never finished");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        verify.stop(std::time::Duration::from_secs(2));
        assert_eq!(c.verify_total.load(Relaxed), 3);
        assert_eq!(v.validations(), 3, "{policy}");
        let text = String::from_utf8(v.metrics_prom().to_vec()).unwrap();
        assert!(text.contains("\nrecoverfs_logs_pending 0\n"), "{text}");
        assert!(
            text.contains("\nrecoverfs_segments_truncated 1\n"),
            "{text}"
        );
        let _ = v.report_json();
        // ., .., .recoverfs and three files per shown segment (point-in-time hides the one after the damage).
        let shown = if policy == Policy::PointInTime { 2 } else { 3 };
        assert_eq!(names(&v, ROOT_INO).len(), 3 + 3 * shown, "{policy}");
        assert_eq!(v.validations(), 3, "nothing validated again ({policy})");
    }
}
