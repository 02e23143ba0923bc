//! The schema-1 JSON report (and the human one) stay byte-identical: `check` on a tree holding
//! every kind of finding, under every policy, equals the report stored in `tests/golden/`.
//!
//! The stored reports were written by the code before the report's fields became
//! typed; a change to any field's name, order or text shows here. The comparison
//! never writes them. After an intended schema change, regenerate them as a separate,
//! deliberate command (an ignored test that does nothing without the variable):
//!
//! ```sh
//! RECOVERFS_WRITE_GOLDEN=1 cargo test --release --test suite -- --ignored report_golden::write_the_stored_reports
//! ```
//!
//! then run the comparison on its own, and say in the commit what changed and why it is right.

use crate::common;

use recoverfs::cli::demo::write_demo_data;
use recoverfs::engine::format::takhin::{segment_file_name, FileKind, SegmentWriter};
use std::fs;
use std::path::{Path, PathBuf};

/// The demo's tree (torn tail, zero-fill, bad lengths mid-log, missing index, gap) plus
/// the findings it lacks: an index that differs, a short and a long one, an orphan,
/// an unrecognized name, an overlap, a bad size and an offset mismatch.
fn build(root: &Path) {
    write_demo_data(root).unwrap();
    let p0 = root.join("orders/partition-0");
    // An original .index that differs in one entry, and a .timeindex that is too short.
    let idx = p0.join(segment_file_name(0, FileKind::Index));
    let mut b = fs::read(&idx).unwrap();
    b[16 * 3 + 15] ^= 1;
    fs::write(&idx, b).unwrap();
    let tidx = p0.join(segment_file_name(0, FileKind::TimeIndex));
    let b = fs::read(&tidx).unwrap();
    fs::write(&tidx, &b[..b.len() - 20]).unwrap();
    // Orphan and unrecognized names.
    fs::write(p0.join(segment_file_name(999, FileKind::Index)), b"").unwrap();
    fs::write(p0.join("123.log"), b"not a segment").unwrap();
    // A third partition: a too-long index, an overlap, a bad size, an offset mismatch.
    let p2 = root.join("orders/partition-2");
    fs::create_dir_all(&p2).unwrap();
    let seg = |base: u64, n: u64| {
        let mut w = SegmentWriter::new(base);
        for i in 0..n {
            w.append(
                1_700_000_000_000 + i as i64,
                b"k",
                format!("v{i}").as_bytes(),
            );
        }
        w
    };
    let w = seg(0, 10);
    w.write_to(&p2).unwrap();
    let mut long = w.index.clone();
    long.extend_from_slice(&[0; 16]);
    fs::write(p2.join(segment_file_name(0, FileKind::Index)), long).unwrap();
    let mut w = seg(5, 10); // overlaps 5..=9
    w.write_to(&p2).unwrap();
    let pos = u64::from_be_bytes(w.index[2 * 16 + 8..3 * 16].try_into().unwrap()) as usize;
    w.log[pos..pos + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    fs::write(p2.join(segment_file_name(5, FileKind::Log)), &w.log).unwrap();
    let mut w = seg(15, 4);
    w.write_to(&p2).unwrap();
    let pos = u64::from_be_bytes(w.index[16 + 8..32].try_into().unwrap()) as usize;
    w.log[pos + 4..pos + 12].copy_from_slice(&99u64.to_be_bytes());
    fs::write(p2.join(segment_file_name(15, FileKind::Log)), &w.log).unwrap();
    seg(19, 3).write_to(&p2).unwrap();
}

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}"))
}

/// Every stored report's path and what `check` prints now for it (the tree's root shown as `DATA`).
fn reports_now() -> Vec<(PathBuf, String)> {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("data");
    build(&root);
    let mut out = Vec::new();
    for policy in ["per-segment", "point-in-time", "strict", "salvage"] {
        for (form, ext) in [(Some("--json"), "json"), (None, "txt")] {
            let mut args = vec!["check", "--policy", policy];
            args.extend(form);
            let o = common::cli::run(
                args.iter()
                    .map(std::ffi::OsStr::new)
                    .chain([root.as_os_str()]),
            );
            assert_eq!(o.status.code(), Some(1), "{policy}");
            let got = String::from_utf8(o.stdout)
                .unwrap()
                .replace(&root.display().to_string(), "DATA");
            out.push((golden(&format!("report-{policy}.{ext}")), got));
        }
    }
    out
}

#[test]
fn check_json_equals_the_stored_schema_1_reports() {
    for (path, got) in reports_now() {
        let want = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (see this file's header)", path.display()));
        assert!(
            got == want,
            "{}: the report changed:\n{got}",
            path.display()
        );
    }
}

/// Not a check: rewrites the stored reports from what `check` prints now, when run on
/// purpose (`--ignored`, with `RECOVERFS_WRITE_GOLDEN=1`; see this file's header), and
/// lists the files it changed.
#[test]
#[ignore = "rewrites tests/golden: run on purpose with RECOVERFS_WRITE_GOLDEN=1"]
fn write_the_stored_reports() {
    if std::env::var_os("RECOVERFS_WRITE_GOLDEN").is_none() {
        eprintln!("RECOVERFS_WRITE_GOLDEN is not set: nothing written");
        return;
    }
    for (path, got) in reports_now() {
        if fs::read_to_string(&path).ok().as_deref() != Some(got.as_str()) {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &got).unwrap();
            eprintln!("rewrote {}", path.display());
        }
    }
}
