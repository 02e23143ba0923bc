//! Applying an in-place repair's manifest: each entry found done or not, then done (written beside, checked, renamed, fsynced), the replicas' doors, and the CRC-32 of a range read from the backup or a replica.

use crate::engine::format::takhin::FileKind;
use crate::engine::salvage::Shifted;
use crate::engine::scan::{scan_segment, ScanOptions};
use crate::engine::source::{advise_sequential, Source};
use crate::repair::fsio::{
    copy_range_with_crc, crc_of_file, create_new, fsync, fsync_dir, rebuild_from, stat_source,
    tmp_beside, write_copy, write_rebuilt, Attrs, CopyStats, BUF_BYTES,
};
use crate::repair::manifest::{
    write_manifest, Action, Manifest, ManifestEntry, ManifestState, Original, OriginalKind,
    Replacement, RunSource, MANIFEST,
};
use crate::repair::steps::Steps;
use crate::repair::{io_at, RepairError, Result};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The replicas' doors, opened once each, by the absolute path the manifest names.
#[derive(Default)]
pub(super) struct Doors(HashMap<String, Source>);

impl Doors {
    pub(super) fn get(&mut self, replica: &str) -> Result<&Source> {
        use std::collections::hash_map::Entry as E;
        match self.0.entry(replica.to_string()) {
            E::Occupied(o) => Ok(o.into_mut()),
            E::Vacant(v) => {
                let path = Path::new(replica);
                let door = Source::open(path).map_err(io_at(path, "could not open the replica"))?;
                Ok(v.insert(door))
            }
        }
    }
}

/// The CRC-32 of bytes `[position, position + bytes)` of the replica's `.log`, read through
/// its door, after checking that they scan as a clean segment of base `base`.
pub(super) fn crc_of_range(
    door: &Source,
    range: &RunSource,
    base: u64,
    opts: &ScanOptions,
) -> Result<u32> {
    let rel = range.rel();
    let path = door.display_path(&rel);
    let f = door.file(&rel).map_err(io_at(&path, "could not open"))?;
    advise_sequential(&f);
    let view = Shifted {
        src: &f,
        start: range.position,
        len: range.bytes,
    };
    let scan = scan_segment(&view, range.bytes, base, opts, |_| {})
        .map_err(io_at(&path, "could not read"))?;
    if scan.valid_bytes != range.bytes {
        return Err(RepairError::SourceChanged {
            path,
            what: format!(
                "bytes {}..+{} no longer hold the healed range's records from offset {base} (the replica changed since it was checked)",
                range.position, range.bytes
            ),
        });
    }
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; BUF_BYTES.min(range.bytes as usize).max(1)];
    let mut done = 0u64;
    while done < range.bytes {
        let want = buf.len().min((range.bytes - done) as usize);
        let at = range.position.saturating_add(done);
        match f.read_at(&mut buf[..want], at) {
            Ok(0) => {
                return Err(RepairError::SourceChanged {
                    path,
                    what: format!(
                        "ended at byte {at}, before the healed range at bytes {}..+{} (the replica changed since it was checked)",
                        range.position, range.bytes
                    ),
                })
            }
            Ok(n) => {
                h.update(&buf[..n]);
                done += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_at(&path, "could not read")(e)),
        }
    }
    Ok(h.finalize())
}

/// True for a `.log` name (a salvaged run's bytes), false for its indexes.
pub(super) fn is_log(rel: &Path) -> bool {
    rel.extension() == Some(OsStr::new(FileKind::Log.ext()))
}

/// What a path of the data directory holds now, as far as a manifest entry cares.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Found {
    Absent,
    /// A regular file: its size and CRC-32.
    File(u64, u32),
    /// A symlink: the length and CRC-32 of its target text.
    Symlink(u64, u32),
    Other,
}

/// What `rel` holds now, read through `source` (the data directory, or the backup).
pub(super) fn found_at(source: &Source, rel: &Path) -> Result<Found> {
    let path = &source.display_path(rel);
    let m = match source.metadata(rel) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Absent),
        Err(e) => return Err(io_at(path, "could not stat")(e)),
    };
    if m.file_type().is_symlink() {
        let t = source
            .read_link(rel)
            .map_err(io_at(path, "could not read the link"))?;
        let b = t.as_os_str().as_bytes();
        return Ok(Found::Symlink(b.len() as u64, crc32fast::hash(b)));
    }
    if !m.is_file() {
        return Ok(Found::Other);
    }
    let f = source.file(rel).map_err(io_at(path, "could not open"))?;
    advise_sequential(&f);
    let (len, crc) = crc_of_file(&f, path)?;
    Ok(Found::File(len, crc))
}

pub(super) fn found_original(o: &Option<Original>) -> Found {
    match o {
        None => Found::Absent,
        Some(o) if o.kind == OriginalKind::Symlink => {
            Found::Symlink(o.bytes, o.crc32.unwrap_or_default())
        }
        Some(o) => Found::File(o.bytes, o.crc32.unwrap_or_default()),
    }
}

/// Phase 2: changes the data directory entry by entry. Each path holds either
/// its original or its replacement (renames are atomic), so a rerun skips what is done.
/// Writes go by path under `data`; every read (of what a path holds now, of the `.log`
/// an index is rebuilt from) goes through `source`, which sees each rename at once.
/// A salvaged run's files are read from the backup copy of their original, and are
/// written before anything else: its bytes lie after the valid prefix the same repair
/// truncates the original to, so at no point does the backup hold the only copy of a
/// run that has not been written yet.
pub(super) fn apply(
    source: &Source,
    data: &Path,
    backup: &Path,
    mut manifest: Manifest,
    steps: &mut Steps,
) -> Result<()> {
    let opts = ScanOptions::with_max(manifest.max_record_bytes);
    let salvages = |e: &&ManifestEntry| e.action == Action::Salvage;
    let heals = |e: &&ManifestEntry| e.action == Action::Heal;
    let copies = match manifest.entries.iter().any(|e| e.action == Action::Salvage) {
        true => Some(Source::open(backup).map_err(io_at(backup, "could not open"))?),
        false => None,
    };
    let mut doors = Doors::default();
    // What each truncated `.log` keeps: its indexes are rebuilt from those bytes alone,
    // whether or not the cut is made yet (a split keeps valid records after it).
    let cuts: HashMap<PathBuf, u64> = manifest
        .entries
        .iter()
        .filter(|e| e.action == Action::Truncate)
        .filter_map(|e| Some((e.rel(), e.new.as_ref()?.bytes)))
        .collect();
    // Salvaged runs first (their bytes lie in originals this repair cuts or replaces),
    // then healed ranges (read from the replicas), then the rest.
    let order = (manifest.entries.iter().filter(salvages))
        .chain(manifest.entries.iter().filter(heals))
        .chain(
            manifest
                .entries
                .iter()
                .filter(|e| !salvages(e) && !heals(e)),
        );
    for e in order {
        let rel = e.rel();
        let path = data.join(&rel);
        let dir = path.parent().expect("an entry inside the data directory");
        let now = found_at(source, &rel)?;
        let done = match &e.new {
            Some(n) => Found::File(n.bytes, n.crc32.unwrap_or_default()),
            None => Found::Absent,
        };
        // Done when the path holds the replacement, unless the original already held
        // those bytes (a healed range whose index equals the one it replaces): then
        // the content cannot tell, and writing it again gives it the attributes
        // `--output` gives it (the replica `.log`'s), the same on every rerun.
        if now == done && done != found_original(&e.original) {
            continue;
        }
        if now != found_original(&e.original) {
            if e.action == Action::Heal && e.original.is_none() {
                // Never overwritten: whatever stands there is not ours.
                return Err(RepairError::SourceChanged {
                    path,
                    what: "appeared where the healed range goes and is not it; a healed range never overrides a real file".into(),
                });
            }
            if e.action == Action::Salvage {
                // Never overwritten: whatever stands there is not ours.
                return Err(RepairError::SourceChanged {
                    path,
                    what: format!("appeared where the salvaged run goes and is not it; a run never overrides a real file (the backup at {} holds the run's original)", backup.display()),
                });
            }
            return Err(RepairError::SourceChanged {
                path,
                what: format!("holds neither its original ({}) nor its repair; the backup at {} still holds the original", e.path, backup.display()),
            });
        }
        if e.action == Action::Remove {
            fs::remove_file(&path).map_err(io_at(&path, "could not remove"))?;
            steps.step("original removed, directory not yet synced")?;
            fsync_dir(dir)?;
            continue;
        }
        let new = e.new.as_ref().expect("a replacement for every non-removal");
        let tmp = tmp_beside(&path);
        let _ = fs::remove_file(&tmp);
        // Whatever stops the writing (an interrupt mid-copy) leaves nothing beside the path.
        let written = (|| -> Result<fs::File> {
            Ok(match (e.action, &e.salvaged_from, &copies) {
                (Action::Truncate, _, _) => {
                    let stats = CopyStats::default();
                    let orig_len = e.original.as_ref().map_or(0, |o| o.bytes);
                    let f = write_copy(source, &rel, &tmp, new.bytes, orig_len, &stats)?;
                    let m = stat_source(source, &rel)?;
                    Attrs::of(&m).apply(&f, &tmp, true)?;
                    f
                }
                (Action::Salvage, Some(from), Some(copies)) => {
                    let base = segment_base(&rel, backup, e)?;
                    let f = write_salvaged(copies, from, &rel, base, new, &tmp, &opts)?;
                    // A run's files take the original `.log`'s mode, owner and times, as
                    // with --output (a truncated original keeps them).
                    let m = stat_source(source, &from.rel())?;
                    Attrs::of(&m).apply(&f, &tmp, true)?;
                    f
                }
                (Action::Heal, ..) => {
                    let Some(from) = &e.healed_from else {
                        return Err(RepairError::BadManifest {
                            path: backup.join(MANIFEST),
                            what: format!("{}: a healed range's file with no healed_from", e.path),
                        });
                    };
                    let door = doors.get(&from.replica)?;
                    let base = segment_base(&rel, backup, e)?;
                    let changed = |path: PathBuf, what: String| RepairError::SourceChanged {
                        path,
                        what: format!("{what} (the replica changed since it was checked)"),
                    };
                    let f = write_range(door, &from.range, &rel, base, new, &tmp, &opts, &changed)?;
                    // A healed range's files take the replica `.log`'s mode, owner and times,
                    // as with --output.
                    let m = stat_source(door, &from.range.rel())?;
                    Attrs::of(&m).apply(&f, &tmp, true)?;
                    f
                }
                (Action::Salvage, ..) => {
                    return Err(RepairError::BadManifest {
                        path: backup.join(MANIFEST),
                        what: format!("{}: a salvaged run's file with no salvaged_from", e.path),
                    })
                }
                _ => {
                    let log_name = rel.with_extension(FileKind::Log.ext());
                    let log_path = data.join(&log_name);
                    let base = segment_base(&rel, backup, e)?;
                    // Rebuilt from the bytes the .log keeps, cut or not yet: its valid prefix
                    // for a cut at damage, its records before a preferred one for a split.
                    let kind = if rel.extension() == Some(OsStr::new(FileKind::Index.ext())) {
                        FileKind::Index
                    } else {
                        FileKind::TimeIndex
                    };
                    let limit = cuts.get(&log_name);
                    let (f, digest) =
                        rebuild_from(source, &log_name, base, limit, &opts, &tmp, kind)?;
                    if digest.bytes != new.bytes || Some(digest.crc32) != new.crc32 {
                        // Not what was planned: nothing of it is left beside the path.
                        let _ = fs::remove_file(&tmp);
                        return Err(RepairError::SourceChanged {
                            path: log_path,
                            what: "no longer yields the index planned from it".into(),
                        });
                    }
                    let m = match source.metadata(&rel) {
                        Ok(m) if m.is_file() => m,
                        _ => stat_source(source, &log_name)?,
                    };
                    Attrs::of(&m).apply(&f, &tmp, true)?;
                    f
                }
            })
        })();
        let out = match written {
            Ok(out) => out,
            Err(err) => {
                let _ = fs::remove_file(&tmp);
                return Err(err);
            }
        };
        fsync(&out, &tmp)?;
        drop(out);
        steps.step("replacement written, not yet renamed over the original")?;
        fs::rename(&tmp, &path).map_err(io_at(&path, "could not rename over the original"))?;
        steps.step("replacement renamed, directory not yet synced")?;
        fsync_dir(dir)?;
    }
    manifest.state = ManifestState::Applied;
    write_manifest(backup, &manifest, steps)
}

/// The base offset a segment file's name gives (`<20 digits>.<ext>`).
pub(super) fn segment_base(rel: &Path, backup: &Path, e: &ManifestEntry) -> Result<u64> {
    use crate::engine::format::takhin::{classify_name, NameMatch};
    match classify_name(rel.file_name().unwrap_or_default().as_bytes()) {
        NameMatch::Segment(b, _) => Ok(b),
        _ => Err(RepairError::BadManifest {
            path: backup.join(MANIFEST),
            what: format!("{}: not a segment file name", e.path),
        }),
    }
}

/// Writes a salvaged run's file at `tmp`: its `.log` (the bytes `from` names, out of the
/// backup copy of their original), or its rebuilt `.index`/`.timeindex` (that range
/// scanned as a segment of base `base`). Either must be exactly the `new` the manifest
/// planned (size and CRC-32), else the backup copy is not what was copied, and nothing is written.
pub(super) fn write_salvaged(
    copies: &Source,
    from: &RunSource,
    rel: &Path,
    base: u64,
    new: &Replacement,
    tmp: &Path,
    opts: &ScanOptions,
) -> Result<fs::File> {
    let damaged = |path, what| RepairError::BackupDamaged { path, what };
    write_range(copies, from, rel, base, new, tmp, opts, &damaged)
}

/// Writes at `tmp` the file `rel` of a range of a `.log` read through `door` (a salvaged
/// run's, out of the backup; a healed range's, out of its replica): the bytes `from` names,
/// or their rebuilt `.index`/`.timeindex`. Anything but exactly the `new` the manifest
/// planned is refused with `wrong(path, what)`, and nothing is left at `tmp`.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_range(
    door: &Source,
    from: &RunSource,
    rel: &Path,
    base: u64,
    new: &Replacement,
    tmp: &Path,
    opts: &ScanOptions,
    wrong: &dyn Fn(PathBuf, String) -> RepairError,
) -> Result<fs::File> {
    let log = from.rel();
    let src_path = door.display_path(&log);
    let damaged = |what: String| wrong(src_path.clone(), what);
    let f = door.file(&log).map_err(|e| damaged(e.to_string()))?;
    let len = f
        .metadata()
        .map_err(io_at(&src_path, "could not stat"))?
        .len();
    let end = from.position.saturating_add(from.bytes);
    if len < end {
        return Err(damaged(format!(
            "holds {len} bytes, short of the salvaged run at bytes {}..{end}",
            from.position
        )));
    }
    if is_log(rel) {
        let out = create_new(tmp)?;
        let crc = copy_range_with_crc(&f, &src_path, from.position, from.bytes, &out, tmp)?;
        if from.bytes != new.bytes || Some(crc) != new.crc32 {
            // Not the run: nothing of it is left beside the path.
            let _ = fs::remove_file(tmp);
            return Err(damaged(format!(
                "holds bytes {}..{end} with CRC-32 {crc:08x}, not the salvaged run's {} bytes with CRC-32 {:08x}",
                from.position,
                new.bytes,
                new.crc32.unwrap_or_default()
            )));
        }
        return Ok(out);
    }
    let view = Shifted {
        src: &f,
        start: from.position,
        len: from.bytes,
    };
    let read = |e: io::Error| io_at(&src_path, "could not read")(e);
    let scan = scan_segment(&view, from.bytes, base, opts, |_| {}).map_err(read)?;
    let wrong_run = || {
        damaged(format!(
            "no longer yields the salvaged run at bytes {}..{end}, nor the index planned from it",
            from.position
        ))
    };
    if scan.valid_bytes != from.bytes {
        return Err(wrong_run());
    }
    let kind = if rel.extension() == Some(OsStr::new(FileKind::Index.ext())) {
        FileKind::Index
    } else {
        FileKind::TimeIndex
    };
    let (out, digest) = write_rebuilt(&view, &scan, &[(tmp, kind)], &read)?.remove(0);
    if digest.bytes != new.bytes || Some(digest.crc32) != new.crc32 {
        // Not the planned index: nothing of it is left beside the path.
        let _ = fs::remove_file(tmp);
        return Err(wrong_run());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::takhin::{be_u64, SegmentWriter};

    /// A segment of ten records at base 0, and where its record 4 starts.
    fn ten_records() -> (SegmentWriter, u64) {
        let mut w = SegmentWriter::new(0);
        for i in 0..10u8 {
            w.append(1_000 + i as i64, &[b'k', i], &[i; 25]);
        }
        let start = be_u64(&w.index, 4 * 16 + 8);
        (w, start)
    }

    /// A healed range's CRC-32 is taken only from bytes that still scan as the range's
    /// records (clean, offsets from its base on); a replica changed under the repair
    /// (a record header overwritten, the file cut short, another base) is refused by name.
    #[test]
    fn a_healed_range_is_hashed_only_while_the_replica_still_holds_it() {
        let t = tempfile::tempdir().unwrap();
        // The range: records 4..10 of the replica's segment 0.
        let (w, start) = ten_records();
        let range = &w.log[start as usize..];
        fs::create_dir_all(t.path().join("p")).unwrap();
        let file = t.path().join("p/00000000000000000000.log");
        fs::write(&file, &w.log).unwrap();
        let door = Source::open(t.path()).unwrap();
        let from = RunSource::new(
            Path::new("p/00000000000000000000.log"),
            start,
            range.len() as u64,
        );
        let opts = ScanOptions::default();
        assert_eq!(
            crc_of_range(&door, &from, 4, &opts).unwrap(),
            crc32fast::hash(range)
        );
        let changed = |e: RepairError, what: &str| {
            assert!(
                matches!(e, RepairError::SourceChanged { ref path, .. } if path.ends_with("p/00000000000000000000.log")),
                "{e}"
            );
            assert!(e.to_string().contains(what), "{e}");
        };
        changed(
            crc_of_range(&door, &from, 5, &opts).unwrap_err(),
            "no longer hold the healed range's records from offset 5",
        );
        let mut damaged = w.log.clone();
        damaged[start as usize + range.len() / 2..][..8].fill(0xff);
        fs::write(&file, &damaged).unwrap();
        changed(
            crc_of_range(&door, &from, 4, &opts).unwrap_err(),
            "the replica changed since it was checked",
        );
        fs::write(&file, &w.log[..w.log.len() - 3]).unwrap();
        changed(
            crc_of_range(&door, &from, 4, &opts).unwrap_err(),
            "the replica changed since it was checked",
        );
    }

    /// A salvaged run's files come out of the backup copy only when they are exactly what
    /// the manifest planned; a copy that yields anything else is refused, by name, and
    /// leaves nothing beside the path.
    #[test]
    fn a_salvaged_run_is_written_from_the_backup_copy_only_as_planned() {
        let t = tempfile::tempdir().unwrap();
        // The run: records 4..10 of a segment whose first records are gone.
        let (w, start) = ten_records();
        let run = &w.log[start as usize..];
        let mut whole = vec![0xffu8; start as usize];
        whole.extend_from_slice(run);
        let backup = t.path().join("backup");
        fs::create_dir_all(backup.join("p")).unwrap();
        fs::write(backup.join("p/00000000000000000000.log"), &whole).unwrap();
        let copies = Source::open(&backup).unwrap();
        let from = RunSource::new(
            Path::new("p/00000000000000000000.log"),
            start,
            run.len() as u64,
        );
        let opts = ScanOptions::default();
        let out = t.path().join("out");
        fs::create_dir(&out).unwrap();
        let mut want_run = SegmentWriter::new(4);
        for i in 4..10u8 {
            want_run.append(1_000 + i as i64, &[b'k', i], &[i; 25]);
        }
        assert_eq!(want_run.log, run);
        let cases = [
            ("00000000000000000004.log", run.to_vec()),
            ("00000000000000000004.index", want_run.index.clone()),
            ("00000000000000000004.timeindex", want_run.timeindex.clone()),
        ];
        for (name, want) in &cases {
            let rel = Path::new("p").join(name);
            let tmp = out.join(name);
            let planned = Replacement {
                bytes: want.len() as u64,
                crc32: Some(crc32fast::hash(want)),
            };
            let f = write_salvaged(&copies, &from, &rel, 4, &planned, &tmp, &opts).unwrap();
            drop(f);
            assert_eq!(&fs::read(&tmp).unwrap(), want, "{name}");
            fs::remove_file(&tmp).unwrap();
            let wrong = Replacement {
                crc32: planned.crc32.map(|c| c ^ 1),
                ..planned
            };
            let e = write_salvaged(&copies, &from, &rel, 4, &wrong, &tmp, &opts).unwrap_err();
            assert!(
                matches!(e, RepairError::BackupDamaged { ref path, .. } if path.ends_with("p/00000000000000000000.log")),
                "{name}: {e}"
            );
            assert!(!tmp.exists(), "{name}: nothing left behind");
        }
        // A copy shorter than the run is refused before anything is created.
        fs::write(backup.join("p/00000000000000000000.log"), &whole[..10]).unwrap();
        let tmp = out.join("short");
        let planned = Replacement {
            bytes: run.len() as u64,
            crc32: Some(crc32fast::hash(run)),
        };
        let rel = Path::new("p/00000000000000000004.log");
        let e = write_salvaged(&copies, &from, rel, 4, &planned, &tmp, &opts).unwrap_err();
        assert!(e.to_string().contains("holds 10 bytes, short of"), "{e}");
        assert!(!tmp.exists());
    }
}
