//! Damaged trees to check, mount and repair, and walkers that compare whole trees.
#![allow(dead_code)]

use super::fixture_copy;
use super::segments::{
    append_zeros, bases, cut_tail, log_path, position_of, record_positions, seg_path, write_segment,
};
use recoverfs::engine::format::takhin::{segment_file_name, FileKind, Record, KEY_LEN_AT};
use recoverfs::engine::layout::read_dir_sorted;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fixture data directory with one of each kind of damage, plus a symlink and a
/// non-UTF-8 name to pass through.
pub fn damaged() -> tempfile::TempDir {
    let t = fixture_copy("data");
    let root = t.path();
    // A .log cut mid-record in the middle of a log: mid-log incomplete-record, then a gap.
    let p0 = root.join("orders/partition-0");
    let b0 = bases(&p0);
    cut_tail(&seg_path(&p0, b0[1], "log"), 50);
    // A zero-filled tail (preallocated space) on the last segment of a log.
    let p1 = root.join("orders/partition-1");
    let b1 = bases(&p1);
    append_zeros(&seg_path(&p1, *b1.last().unwrap(), "log"), 4096);
    // A middle segment removed: a gap.
    for ext in ["log", "index", "timeindex"] {
        fs::remove_file(seg_path(&p1, b1[2], ext)).unwrap();
    }
    // A flipped offset inside a segment: offset-mismatch at record 3.
    let e0 = root.join("events/partition-0");
    let be = bases(&e0);
    let flip = seg_path(&e0, be[2], "log");
    let mut bytes = fs::read(&flip).unwrap();
    let at = record_positions(&bytes)[3] + 4 + 7;
    bytes[at] ^= 0x40;
    fs::write(&flip, bytes).unwrap();
    // A deleted index (rebuilt in the view).
    fs::remove_file(seg_path(&e0, be[1], "index")).unwrap();
    // An orphan index with no .log.
    fs::write(
        seg_path(&root.join("orders/partition-2"), 500, "index"),
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

/// The seed example, damaged: zeros after a middle segment (damage that loses no record,
/// so once that segment is cut a fresh analysis would no longer hide what follows under
/// point-in-time: only the manifest knows), a torn last segment, a missing index, an orphan.
pub fn small_damaged() -> tempfile::TempDir {
    let t = fixture_copy("seed-example");
    let d = t.path();
    let b = bases(d);
    append_zeros(&seg_path(d, b[1], "log"), 100);
    cut_tail(&seg_path(d, b[3], "log"), 9);
    fs::remove_file(seg_path(d, b[2], "index")).unwrap();
    fs::write(seg_path(d, 9000, "timeindex"), [1u8; 16]).unwrap();
    t
}

/// A tree written from scratch with every damage kind, gaps, an orphan, missing indexes,
/// an unrecognized name.
pub fn damaged_tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a/partition-0");
    write_segment(&a, 0, 50, 40);
    // bad-size mid-segment: record 10's size field says 5, with data after it.
    let mut w = write_segment(&a, 50, 50, 40);
    let p = position_of(&w, 10);
    w.log[p..p + 4].copy_from_slice(&5u32.to_be_bytes());
    fs::write(log_path(&a, 50), &w.log).unwrap();
    // offset-mismatch: record 20 claims another offset. Its next segment starts where
    // the cut leaves off, so there is no gap there.
    let mut w = write_segment(&a, 100, 20, 40);
    let extra = Record {
        offset: 999,
        timestamp: 1,
        key: b"x".to_vec(),
        value: vec![1; 10],
    };
    w.append_record(&extra);
    fs::write(log_path(&a, 100), &w.log).unwrap();
    // bad-lengths: record 30's key_len does not fit.
    let mut w = write_segment(&a, 120, 50, 40);
    let p = position_of(&w, 30);
    w.log[p + KEY_LEN_AT..p + KEY_LEN_AT + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    fs::write(log_path(&a, 120), &w.log).unwrap();
    // Clean, both indexes missing (a gap before it: 150..=199).
    write_segment(&a, 200, 50, 40);
    fs::remove_file(a.join(segment_file_name(200, FileKind::Index))).unwrap();
    fs::remove_file(a.join(segment_file_name(200, FileKind::TimeIndex))).unwrap();
    // Clean, but its .index is wrong in one entry.
    let mut w = write_segment(&a, 250, 30, 40);
    w.index[5 * 16 + 15] ^= 1;
    fs::write(a.join(segment_file_name(250, FileKind::Index)), &w.index).unwrap();
    // Orphan index, unrecognized name.
    fs::write(a.join(segment_file_name(999, FileKind::Index)), [0u8; 16]).unwrap();
    fs::write(a.join("123.log"), b"not a segment").unwrap();
    // Torn last write in the last segment (a tail).
    let w = write_segment(&a, 280, 40, 40);
    fs::write(log_path(&a, 280), &w.log[..w.log.len() - 7]).unwrap();
    // Another log: a zero-filled tail.
    let b = t.path().join("b/partition-0");
    let mut w = write_segment(&b, 0, 20, 100);
    w.log.extend(std::iter::repeat_n(0u8, 1000));
    fs::write(log_path(&b, 0), &w.log).unwrap();
    // Another: fewer than 4 bytes left at the end of a non-last segment, then a clean one.
    let c = t.path().join("c/partition-0");
    let mut w = write_segment(&c, 0, 10, 10);
    w.log.extend_from_slice(&[1, 2]);
    fs::write(log_path(&c, 0), &w.log).unwrap();
    write_segment(&c, 10, 10, 10);
    fs::write(t.path().join("a/topic-metadata.json"), b"{\"x\":1}\n").unwrap();
    t
}

/// A copy of a tree with its modes, times and symlinks (`cp -a`), so that two copies
/// of one damaged tree can be repaired two ways and compared, mtimes included.
pub fn clone_tree(src: &Path) -> tempfile::TempDir {
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

/// One entry of a tree, as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
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

/// Every directory, regular file and symlink under `root`, by relative path.
pub fn items(root: &Path) -> BTreeMap<PathBuf, Item> {
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

/// Directory modes aside, the trees' entries (in place, renames move directory mtimes).
pub fn files_only(m: BTreeMap<PathBuf, Item>) -> BTreeMap<PathBuf, Item> {
    m.into_iter()
        .filter(|(_, i)| !matches!(i, Item::Dir { .. }))
        .collect()
}

/// Names the first entry where two trees differ.
pub fn assert_trees_eq(got: &BTreeMap<PathBuf, Item>, want: &BTreeMap<PathBuf, Item>, what: &str) {
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

/// Every entry under `root` but directories (relative paths, sorted), not following
/// symlinks; `skip` (relative to `root`) is left out with all below it.
fn non_dirs_under(
    root: &Path,
    skip: &Path,
) -> Vec<(PathBuf, recoverfs::engine::source::EntryType)> {
    let mut out = vec![];
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for (name, ft) in read_dir_sorted(&root.join(&rel)).unwrap() {
            let r = rel.join(&name);
            if r == skip {
                continue;
            }
            if ft.is_dir() {
                stack.push(r);
            } else {
                out.push((r, ft));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every regular file under `root` (relative paths), not following symlinks.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    non_dirs_under(root, Path::new(""))
        .into_iter()
        .filter(|(_, ft)| ft.is_file())
        .map(|(r, _)| r)
        .collect()
}

/// Every regular file and symlink under `root` with its content (or target), for tree
/// comparisons; `skip` (relative to `root`) is left out with all below it.
pub fn tree_contents(root: &Path, skip: &str) -> Vec<(PathBuf, Vec<u8>)> {
    non_dirs_under(root, Path::new(skip))
        .into_iter()
        .map(|(r, ft)| {
            let p = root.join(&r);
            let bytes = if ft.is_symlink() {
                fs::read_link(p).unwrap().into_os_string().into_vec()
            } else {
                fs::read(p).unwrap()
            };
            (r, bytes)
        })
        .collect()
}
