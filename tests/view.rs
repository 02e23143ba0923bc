//! The view driven without FUSE: lookups, attributes, listings, reads, xattrs, `.recoverfs/`, policies and errno answers, as the kernel would ask them.
//!
//! Everything here runs without /dev/fuse; `tests/mount.rs` checks the same
//! view through real mounts.

mod common;

use common::{read_all, view, write_log};
use recoverfs::engine::format::takhin::{segment_file_name, FileKind};
use recoverfs::engine::policy::Policy;
use recoverfs::view::{
    xattr_reply, View, ViewConfig, ViewError, XattrReply, META_DIR, ROOT_INO, TAILS_DIR,
};
use std::ffi::OsStr;
use std::fs;

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
