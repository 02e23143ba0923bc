//! Shared test helpers: fixture paths, temporary copies, and snapshots proving a source tree
//! was not touched (here); the CLI runner and one helper per repeated invocation (`cli`);
//! the engine's verdicts (`engine`); segment writers (`segments`); damaged trees and tree
//! comparisons (`trees`); the guarded FUSE mount (`mount`, used by name); a headless
//! browser's reading of an HTML page (`browser`, used by name); the filesystem that
//! forgets what was not made durable at a simulated power cut (`powerfs`, used by name).
#![allow(dead_code)]

pub mod browser;
pub mod cli;
pub mod engine;
pub mod mount;
pub mod powerfs;
pub mod segments;
pub mod trees;

// Each test binary uses some of these: the rest would be unused imports there.
#[allow(unused_imports)]
pub use {cli::*, engine::*, segments::*, trees::*};

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// True under CI (`CI` set to anything but empty, `0` or `false`, as CI services set it).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// For a test that cannot run here (a tool, a permission or a kernel feature missing):
/// says so on stderr, and the caller returns. Under CI it fails instead: CI installs
/// everything the suite uses (`.ci/run`), so a skip there would hide an untested feature.
pub fn cannot_test(why: &str) {
    assert!(
        !under_ci(),
        "not tested under CI: {why} (CI must provide it; see .ci/run)"
    );
    eprintln!("not tested here: {why}");
}

/// `tests/fixtures/takhin`, the copy of the reference Takhin engine's logs.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/takhin")
}

/// The `recoverfs` binary built for the integration tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_recoverfs"))
}

/// Copies a directory tree (regular files, dirs and symlinks) into `dst`.
pub fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        let to = dst.join(e.file_name());
        if ft.is_dir() {
            copy_tree(&e.path(), &to);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(e.path()).unwrap(), &to).unwrap();
        } else if ft.is_file() {
            fs::copy(e.path(), &to).unwrap();
            let mut p = fs::metadata(&to).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o644);
            fs::set_permissions(&to, p).unwrap();
        }
    }
}

/// A fresh writable copy of a fixture directory (e.g. "data", "seed-example").
pub fn fixture_copy(name: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join(name), t.path());
    t
}

/// Everything about a file that the engine must not change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSnap {
    pub bytes: Option<Vec<u8>>,
    pub size: u64,
    pub mode: u32,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub atime: (i64, i64),
}

/// Sets every regular file's atime well before its mtime, so that under the usual
/// `relatime` any read of it would move its atime, and a snapshot would show it.
pub fn age_atimes(root: &Path) {
    age(root, false)
}

/// Like [`age_atimes`], for directories (the root's too) as well as files: for what
/// must move no directory's atime either (the mount, through its read-only clone).
pub fn age_all_atimes(root: &Path) {
    age(root, true)
}

fn age(root: &Path, dirs: bool) {
    let mut all = walk(root);
    all.push(root.to_path_buf());
    for p in all {
        let m = fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_file() || (dirs && m.file_type().is_dir()) {
            let mtime = filetime::FileTime::from_last_modification_time(&m);
            let old = filetime::FileTime::from_unix_time(mtime.unix_seconds() - 100_000, 0);
            filetime::set_file_atime(&p, old).unwrap();
        }
    }
}

/// Every entry under `root`, sorted; directories are read with O_NOATIME, so walking
/// moves no directory's atime (a plain `read_dir` would, under `relatime`).
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let fd = nix::fcntl::open(
            &d,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_NOATIME
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let mut dir = nix::dir::Dir::from_fd(fd).unwrap();
        for e in dir.iter() {
            let e = e.unwrap();
            let name = std::ffi::OsStr::from_bytes(e.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let p = d.join(name);
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Snapshots every entry under `root`. Stats are taken before reading the bytes, and
/// the bytes are read with O_NOATIME, so snapshotting itself changes nothing.
///
/// Directories are listed with a plain `read_dir`, which moves their atimes under
/// `relatime` (so the snapshot shows only later moves); [`snapshot_all`] does not.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, FileSnap> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path());
        }
    }
    out.sort();
    snap(root, out)
}

/// Like [`snapshot`], with the root directory itself too (its atime included).
pub fn snapshot_all(root: &Path) -> BTreeMap<PathBuf, FileSnap> {
    let mut all = walk(root);
    all.push(root.to_path_buf());
    snap(root, all)
}

/// A file's bytes, read without moving its atime (the tests check that nothing else moves it).
pub fn read_noatime(p: &Path) -> Vec<u8> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(p)
        .unwrap();
    let mut b = Vec::new();
    f.read_to_end(&mut b).unwrap();
    b
}

fn snap(root: &Path, all: Vec<PathBuf>) -> BTreeMap<PathBuf, FileSnap> {
    let mut out = BTreeMap::new();
    for p in all {
        let m = fs::symlink_metadata(&p).unwrap();
        let bytes = m.file_type().is_file().then(|| read_noatime(&p));
        out.insert(
            p.strip_prefix(root).unwrap().to_path_buf(),
            FileSnap {
                bytes,
                size: m.size(),
                mode: m.mode(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
                atime: (m.atime(), m.atime_nsec()),
            },
        );
    }
    out
}

/// Asserts two snapshots are equal, naming the first file and field that differ.
pub fn assert_unchanged(before: &BTreeMap<PathBuf, FileSnap>, after: &BTreeMap<PathBuf, FileSnap>) {
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the set of source files changed"
    );
    for (p, b) in before {
        let a = &after[p];
        assert!(b.bytes == a.bytes, "{}: content changed", p.display());
        assert_eq!(b.size, a.size, "{}: size changed", p.display());
        assert_eq!(b.mode, a.mode, "{}: mode changed", p.display());
        assert_eq!(b.mtime, a.mtime, "{}: mtime changed", p.display());
        assert_eq!(b.ctime, a.ctime, "{}: ctime changed", p.display());
        assert_eq!(b.atime, a.atime, "{}: atime changed", p.display());
    }
}

/// Writes a clean segment of `n` records at `base` (its `.log`, `.index` and `.timeindex`) into `dir`.
pub fn write_log(
    dir: &Path,
    base: u64,
    n: u64,
) -> recoverfs::engine::format::takhin::SegmentWriter {
    let mut w = recoverfs::engine::format::takhin::SegmentWriter::new(base);
    for i in 0..n {
        w.append(1000 + i as i64, b"key", &[i as u8; 20]);
    }
    w.write_to(dir).unwrap();
    w
}

/// A view of `root` under `policy`, without FUSE, with a 1 MiB verdict cache.
pub fn view(root: &Path, policy: recoverfs::engine::policy::Policy) -> recoverfs::view::View {
    recoverfs::view::View::new(recoverfs::view::ViewConfig {
        source: std::sync::Arc::new(recoverfs::engine::source::Source::open(root).unwrap()),
        source_label: root.display().to_string(),
        policy,
        scan: recoverfs::engine::scan::ScanOptions::default(),
        cache_bytes: 1 << 20,
    })
}

/// Opens inode `ino` of a view, reads it whole in 4 KiB reads, and releases it.
pub fn read_all(v: &recoverfs::view::View, ino: u64) -> Vec<u8> {
    let o = v.open(ino, false).unwrap();
    let mut out = Vec::new();
    loop {
        let b = v.read(o.fh, out.len() as u64, 4096).unwrap();
        if b.is_empty() {
            break;
        }
        out.extend_from_slice(&b);
    }
    v.release(o.fh);
    out
}
