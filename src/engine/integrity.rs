//! A whole tree against its integrity baseline, a new baseline from a check, and the SHA-256 list of the originals read.

use crate::engine::baseline::{
    sum_file, Baseline, BaselineReport, Changed, FileEntry, Shorter, BLOCK_BYTES,
};
use crate::engine::format::takhin::FileKind;
use crate::engine::layout::{escape_path, Layout};
use crate::engine::report::Report;
use crate::engine::source::Source;
use sha2::{Digest, Sha256};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What the baseline lists that is gone or shorter now, and the `.log`s the
/// analysis found changed (from the report's segments).
pub fn compare_tree(baseline: &Baseline, report: &Report, source: &Source) -> BaselineReport {
    let mut gone = Vec::new();
    let mut shorter = Vec::new();
    for e in baseline.files() {
        let rel = e.rel();
        match source.metadata(&rel) {
            Ok(m) if m.len() < e.size => shorter.push(Shorter {
                path: escape_path(&rel),
                size_at_baseline: e.size,
                size: m.len(),
            }),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => gone.push(escape_path(&rel)),
            // Unreadable: the segment's own finding says so.
            Err(_) => {}
        }
    }
    let changed = report
        .segments()
        .filter_map(|(_, s)| {
            s.changed_since_baseline
                .filter(|c| c.to > c.from)
                .map(|c| Changed {
                    path: s.path.clone(),
                    from: c.from,
                    to: c.to,
                })
        })
        .collect();
    BaselineReport {
        file: baseline.path.display().to_string(),
        files: baseline.len() as u64,
        gone,
        shorter,
        changed,
    }
}

/// Every segment file of the tree as a baseline entry: each `.log`'s sums come
/// from its scan (the report's segments); its indexes are read and summed here.
pub fn baseline_entries(layout: &Layout, report: &Report) -> io::Result<Vec<FileEntry>> {
    let source = &layout.source;
    let mut out = Vec::new();
    let by_path: std::collections::HashMap<&str, &crate::engine::report::SegmentReport> = report
        .segments()
        .map(|(_, s)| (s.path.as_str(), s))
        .collect();
    for log in &layout.logs {
        for seg in &log.segments {
            for kind in [FileKind::Log, FileKind::Index, FileKind::TimeIndex] {
                let rel = log.file_rel(seg.base, kind);
                let file = match source.file(&rel) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(located(&rel, e)),
                };
                let meta = file.metadata().map_err(|e| located(&rel, e))?;
                let sums = match (kind, by_path.get(escape_path(&rel).as_str())) {
                    (FileKind::Log, Some(s))
                        if s.sums.as_ref().is_some_and(|x| x.size == meta.len()) =>
                    {
                        s.sums.clone().expect("checked")
                    }
                    // A segment not scanned whole (unreadable, or changed since): read it.
                    _ => sum_file(&file, meta.len(), BLOCK_BYTES).map_err(|e| located(&rel, e))?,
                };
                out.push(FileEntry::new(
                    &rel,
                    sums,
                    meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                    meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
                ));
            }
        }
    }
    Ok(out)
}

fn located(rel: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", rel.display()))
}

/// The SHA-256 of each file, in `sha256sum`'s format (`<hex>  <path>`, paths
/// relative to the data directory), so `cd DIR && sha256sum -c FILE` verifies it.
/// Names that `sha256sum` would escape (a backslash or newline) are written its
/// way: the line starts with `\` and the name has `\\` and `\n`.
pub fn sha256_lines(source: &Source, rels: &[PathBuf]) -> io::Result<Vec<u8>> {
    let mut text = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for rel in rels {
        let file = source.file(rel).map_err(|e| located(rel, e))?;
        let len = file.metadata().map_err(|e| located(rel, e))?.len();
        let mut h = Sha256::new();
        let mut at = 0;
        while at < len {
            let want = ((len - at) as usize).min(buf.len());
            let n = file
                .read_at(&mut buf[..want], at)
                .map_err(|e| located(rel, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            at += n as u64;
        }
        text.extend_from_slice(&sha256_line(&h.finalize(), rel));
    }
    Ok(text)
}

/// One `sha256sum` line for a digest and a name, the name as its bytes (as
/// `sha256sum` writes it: a name that is not UTF-8 must still be found by `-c`).
pub fn sha256_line(digest: &[u8], rel: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let name = rel.as_os_str().as_bytes();
    let mut line = Vec::with_capacity(hex.len() + name.len() + 4);
    let escaped = name.iter().any(|&b| b == b'\\' || b == b'\n');
    if escaped {
        line.push(b'\\');
    }
    line.extend_from_slice(hex.as_bytes());
    line.extend_from_slice(b"  ");
    for &b in name {
        match b {
            b'\\' => line.extend_from_slice(b"\\\\"),
            b'\n' => line.extend_from_slice(b"\\n"),
            _ => line.push(b),
        }
    }
    line.push(b'\n');
    line
}

/// Every file of the tree that `check` reads (each segment's `.log`, `.index` and
/// `.timeindex` that exist), relative to the data directory.
pub fn files_read(layout: &Layout) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for log in &layout.logs {
        for seg in &log.segments {
            out.push(log.file_rel(seg.base, FileKind::Log));
            if seg.has_index {
                out.push(log.file_rel(seg.base, FileKind::Index));
            }
            if seg.has_timeindex {
                out.push(log.file_rel(seg.base, FileKind::TimeIndex));
            }
        }
    }
    out
}

/// Writes `text` to `to` through a new temporary file beside it, synced and
/// renamed over it (a symlink planted at `to` is replaced, never followed).
pub fn write_new(to: &Path, prefix: &str, text: &[u8]) -> io::Result<()> {
    write_new_with(to, prefix, |w| w.write_all(text))
}

/// [`write_new`], the content written by `fill`: a reader sees the old file or
/// the whole new one.
pub fn write_new_with(
    to: &Path,
    prefix: &str,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match to.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new().prefix(prefix).tempfile_in(dir)?;
    fill(tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    tmp.persist(to).map_err(|e| e.error)?;
    Ok(())
}

/// The `sha256sum` list of every segment file (`.log`, `.index`, `.timeindex`) under
/// `dir`, relative to it, read through a door of its own: `repair --hashes` runs it
/// on the originals before repairing and on the result after.
pub fn tree_hashes(dir: &Path) -> Result<Vec<u8>, String> {
    let target = crate::engine::layout::resolve_target(dir).map_err(|e| e.to_string())?;
    let layout = crate::engine::layout::discover_target(&target).map_err(|e| e.to_string())?;
    sha256_lines(&layout.source, &files_read(&layout))
        .map_err(|e| format!("{}: {e}", dir.display()))
}
