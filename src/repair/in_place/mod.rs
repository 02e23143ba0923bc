//! `repair --in-place --backup DIR`: the plan of changes, then its three phases (back up, apply, done).

use super::fsio::{
    check_data_dir, copy_with_crc, create_dir_all_durable, create_new, fsync, fsync_dir, lock_dir,
    open_checked, resolve, tmp_beside, Attrs, Progress,
};
use super::interrupt::{finish_writing, start_writing};
use super::manifest::{
    backup_is_blank, read_manifest, write_manifest, Action, Manifest, ManifestEntry, ManifestState,
    OriginalKind, MANIFEST,
};
use super::steps::{pause_at, Steps};
use super::tree::{analyze_with, build_plan};
use super::{interrupted_with, io_at, RepairError, Result};
use crate::engine::analysis::AnalyzeOptions;
use crate::engine::replica::Prefer;
use crate::engine::report::Report;
use crate::engine::scan::ScanOptions;
use crate::engine::source::Source;
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

mod apply;
mod plan;

use apply::{apply, crc_of_range, found_at, found_original, is_log, segment_base, Doors, Found};
use plan::{in_place_entries, refuse_refused_runs};

/// What an in-place repair did (or, with `--dry-run`, would do).
#[derive(Debug)]
pub struct InPlaceSummary {
    pub report: Report,
    pub entries: Vec<ManifestEntry>,
    /// FIFOs, sockets and devices: left out of the view, left where they are.
    pub specials: Vec<PathBuf>,
    /// True when the backup held an interrupted run of this repair, now finished.
    pub resumed: bool,
    pub dry_run: bool,
}

/// `repair DATA --in-place --backup BACKUP [--dry-run] [--replica R ...]`: with replicas,
/// the ranges the primary lacks are healed from them (read only, through their doors).
pub fn repair_in_place(
    data: &Path,
    backup: Option<&Path>,
    dry_run: bool,
    opts: &AnalyzeOptions,
    replicas: &[PathBuf],
    prefer: Prefer,
    progress: Option<Progress>,
) -> Result<InPlaceSummary> {
    let data_abs = check_data_dir(data)?;
    let Some(backup) = backup else {
        return Err(RepairError::NoBackup(data.to_path_buf()));
    };
    let backup_abs = resolve(backup)?;
    if backup_abs == data_abs {
        return Err(RepairError::BackupIsData(backup.to_path_buf()));
    }
    if backup_abs.starts_with(&data_abs) {
        return Err(RepairError::BackupInsideData {
            backup: backup.to_path_buf(),
            data: data.to_path_buf(),
        });
    }
    // The backup is written to; a replica never is.
    let mut replica_names = Vec::new();
    for r in replicas {
        let r_abs = resolve(r)?;
        if backup_abs.starts_with(&r_abs) || r_abs.starts_with(&backup_abs) {
            return Err(RepairError::BackupAndReplica {
                backup: backup.to_path_buf(),
                replica: r.clone(),
            });
        }
        // Apply and every rerun open the replica again by this name: it must be exact.
        let Some(name) = r_abs.to_str() else {
            return Err(RepairError::ReplicaPathNotText(r_abs));
        };
        replica_names.push(name.to_string());
    }
    // Held until the repair returns: a second repair of the same tree waits for nothing, it refuses.
    let _lock = if dry_run { None } else { Some(lock_dir(data)?) };
    let manifest_path = backup.join(MANIFEST);
    let existing = if backup_is_blank(backup)? {
        None
    } else {
        match read_manifest(&manifest_path)? {
            Some(m) => Some(m),
            None => {
                return Err(RepairError::DifferentBackup {
                    path: backup.to_path_buf(),
                    why: format!("not empty, and no {MANIFEST}"),
                })
            }
        }
    };
    let source = data_abs.to_string_lossy().into_owned();
    if let Some(m) = &existing {
        if m.source != source
            || m.policy != opts.policy
            || m.max_record_bytes != opts.scan.max_record_bytes
            || m.replicas != replica_names
        {
            return Err(RepairError::DifferentBackup {
                path: backup.to_path_buf(),
                why: format!(
                    "of {} under {} with --max-record-bytes {}{}",
                    m.source,
                    m.policy,
                    m.max_record_bytes,
                    match m.replicas.is_empty() {
                        true => " and no --replica".to_string(),
                        false => format!(" with --replica {}", m.replicas.join(", --replica ")),
                    }
                ),
            });
        }
    }
    let mut steps = Steps::new();
    pause_at(0);
    // What an interrupt in each phase leaves, for its message.
    let unchanged = format!(
        "{} was not changed; {} is this repair's backup, from which the same command carries on",
        data.display(),
        backup.display()
    );
    let partly = format!(
        "{} is partly repaired; every original changed so far is in {}, whose manifest the same command finishes from",
        data.display(),
        backup.display()
    );
    // An interrupted apply phase resumes from the manifest, not from a new analysis.
    if let Some(m) = existing
        .clone()
        .filter(|m| m.state == ManifestState::BackedUp)
    {
        let (layout, report) = analyze_with(data, opts, replicas, prefer, progress.as_ref())?;
        check_writable(data, &m.entries)?;
        // Once an original is replaced its copy is all there is: every copy is checked first.
        verify_backup(backup, &m)?;
        if !dry_run {
            start_writing().map_err(|e| interrupted_with(e, &partly))?;
            apply(&layout.source, data, backup, m.clone(), &mut steps)
                .map_err(|e| interrupted_with(e, &partly))?;
            finish_writing();
        }
        return Ok(InPlaceSummary {
            report,
            entries: m.entries,
            specials: vec![],
            resumed: true,
            dry_run,
        });
    }
    let (layout, report) = analyze_with(data, opts, replicas, prefer, progress.as_ref())?;
    let plan = build_plan(data, &layout, &report)?;
    refuse_refused_runs(data, &layout, &report)?;
    let (entries, specials) = in_place_entries(data, &layout, &report, &plan, &replica_names)?;
    let mut summary = InPlaceSummary {
        report,
        entries,
        specials,
        resumed: false,
        dry_run,
    };
    match &existing {
        Some(m) if m.state == ManifestState::Applied => {
            if summary.entries.is_empty() {
                // An earlier run may have renamed this manifest into place and failed to
                // sync the directory: durable before this run reports the repair done.
                if !dry_run {
                    let f = fs::File::open(&manifest_path)
                        .map_err(io_at(&manifest_path, "could not open"))?;
                    fsync(&f, &manifest_path)?;
                    fsync_dir(backup)?;
                }
                return Ok(summary);
            }
            return Err(RepairError::DifferentBackup {
                path: backup.to_path_buf(),
                why: "the completed backup of an earlier repair".into(),
            });
        }
        Some(m) => {
            // BackingUp: the source is untouched, so a fresh plan must be the same plan.
            let same = m.entries.len() == summary.entries.len()
                && m.entries
                    .iter()
                    .zip(&summary.entries)
                    .all(|(a, b)| a.same_plan(b));
            if !same {
                return Err(RepairError::DifferentBackup {
                    path: backup.to_path_buf(),
                    why: "an interrupted backup whose plan no longer matches the data directory"
                        .into(),
                });
            }
            summary.resumed = true;
        }
        None => {}
    }
    // Nothing is copied for a repair that could not be applied (the dry run says so too).
    check_writable(data, &summary.entries)?;
    if dry_run || summary.entries.is_empty() {
        return Ok(summary);
    }
    let mut manifest = Manifest {
        schema: 1,
        tool: format!("recoverfs {}", crate::version::LONG),
        source,
        policy: opts.policy,
        max_record_bytes: opts.scan.max_record_bytes,
        state: ManifestState::BackingUp,
        entries: summary.entries.clone(),
        replicas: replica_names,
    };
    start_writing().map_err(|e| interrupted_with(e, "nothing was written"))?;
    // Its name, and every name above it, durable before an original is changed.
    create_dir_all_durable(backup)?;
    write_manifest(backup, &manifest, &mut steps)
        .and_then(|()| back_up(&layout.source, backup, &mut manifest, &mut steps))
        .map_err(|e| interrupted_with(e, &unchanged))?;
    manifest.state = ManifestState::BackedUp;
    write_manifest(backup, &manifest, &mut steps).map_err(|e| interrupted_with(e, &unchanged))?;
    apply(&layout.source, data, backup, manifest.clone(), &mut steps)
        .map_err(|e| interrupted_with(e, &partly))?;
    finish_writing();
    summary.entries = manifest.entries;
    Ok(summary)
}

/// Refuses a data directory the repair could not change, before anything is copied:
/// every directory an entry changes must be writable and searchable (not on a read-only
/// mount, not immutable, ours to write), and no original replaced or removed may be
/// immutable or append-only. Asks the kernel (`faccessat`, `statvfs`); creates nothing.
fn check_writable(data: &Path, entries: &[ManifestEntry]) -> Result<()> {
    use rustix::fs::{accessat, statvfs, Access, AtFlags, StatVfsMountFlags, CWD};
    let refuse = |path: &Path, why: String| RepairError::NotWritable {
        path: path.to_path_buf(),
        why,
    };
    let paths: Vec<(PathBuf, bool)> = entries
        .iter()
        .map(|e| {
            let file = e
                .original
                .as_ref()
                .is_some_and(|o| o.kind == OriginalKind::File);
            (data.join(e.rel()), file)
        })
        .collect();
    let dirs: BTreeSet<&Path> = paths
        .iter()
        .map(|(p, _)| p.parent().unwrap_or(data))
        .collect();
    for d in dirs {
        let v = statvfs(d).map_err(|e| io_at(d, "could not stat the filesystem")(e.into()))?;
        if v.f_flag.contains(StatVfsMountFlags::RDONLY) {
            return Err(refuse(d, "on a read-only mount".into()));
        }
        accessat(CWD, d, Access::WRITE_OK | Access::EXEC_OK, AtFlags::EACCESS)
            .map_err(|e| refuse(d, io::Error::from(e).to_string()))?;
    }
    // A mode without write permission does not stop a rename over a file (EACCES is
    // fine); an immutable or append-only one does (EPERM).
    for (path, _) in paths.iter().filter(|(_, file)| *file) {
        if let Err(e @ (rustix::io::Errno::PERM | rustix::io::Errno::ROFS)) =
            accessat(CWD, path, Access::WRITE_OK, AtFlags::EACCESS)
        {
            return Err(refuse(path, io::Error::from(e).to_string()));
        }
    }
    Ok(())
}

/// Checks that every copy in the backup still holds the original the manifest recorded
/// (size and CRC-32, of the content or of a link's target), read without following links.
fn verify_backup(backup: &Path, manifest: &Manifest) -> Result<()> {
    let copies = Source::open(backup).map_err(io_at(backup, "could not open"))?;
    for e in manifest.entries.iter().filter(|e| e.original.is_some()) {
        let rel = e.rel();
        let found = match found_at(&copies, &rel) {
            Ok(f) => f,
            Err(RepairError::Io { source, .. }) => {
                return Err(RepairError::BackupDamaged {
                    path: copies.display_path(&rel),
                    what: source.to_string(),
                })
            }
            Err(other) => return Err(other),
        };
        let want = found_original(&e.original);
        if found != want {
            return Err(RepairError::BackupDamaged {
                path: copies.display_path(&rel),
                what: match found {
                    Found::Absent => "is missing".into(),
                    Found::Other => "is not a regular file".into(),
                    Found::File(n, c) | Found::Symlink(n, c) => {
                        let (wn, wc) = match want {
                            Found::File(n, c) | Found::Symlink(n, c) => (n, c),
                            _ => (0, 0),
                        };
                        format!("holds {n} bytes with CRC-32 {c:08x}, not the original's {wn} bytes with CRC-32 {wc:08x}")
                    }
                },
            });
        }
    }
    Ok(())
}

/// Phase 1: every original that will change or go, copied into the backup at its relative path.
fn back_up(
    source: &Source,
    backup: &Path,
    manifest: &mut Manifest,
    steps: &mut Steps,
) -> Result<()> {
    // The salvaged runs' `.log`s, by the original they are cut from: their CRC-32s are
    // taken in the same pass that copies it (a run can be most of a large segment).
    let mut runs_of: HashMap<PathBuf, Vec<(usize, u64, u64)>> = HashMap::new();
    for (i, e) in manifest.entries.iter().enumerate() {
        if let Some(from) = e.salvaged_from.as_ref().filter(|_| is_log(&e.rel())) {
            runs_of
                .entry(from.rel())
                .or_default()
                .push((i, from.position, from.bytes));
        }
    }
    let mut run_crcs: Vec<(usize, u32)> = Vec::new();
    for e in manifest.entries.iter_mut() {
        let rel = e.rel();
        let Some(orig) = e.original.as_mut() else {
            continue;
        };
        let src = source.display_path(&rel);
        let dst = backup.join(&rel);
        let dir = dst.parent().expect("a relative path under the backup");
        fs::create_dir_all(dir).map_err(io_at(dir, "could not create"))?;
        let tmp = tmp_beside(&dst);
        let _ = fs::remove_file(&tmp);
        if orig.kind == OriginalKind::Symlink {
            let target = source
                .read_link(&rel)
                .map_err(io_at(&src, "could not read the link"))?;
            std::os::unix::fs::symlink(&target, &tmp).map_err(io_at(&tmp, "could not create"))?;
            orig.crc32 = Some(crc32fast::hash(target.as_os_str().as_bytes()));
        } else {
            let f = open_checked(source, &rel, orig.bytes)?;
            let out = create_new(&tmp)?;
            // A truncated `.log`'s valid prefix is hashed as it is copied (a healed range
            // that replaces a file keeps none of it).
            let prefix = match e.action {
                Action::Truncate => e.new.as_ref().map_or(0, |n| n.bytes),
                _ => 0,
            };
            let mut runs = runs_of.remove(&rel).unwrap_or_default();
            runs.sort_by_key(|r| r.1);
            let ranges: Vec<(u64, u64)> = std::iter::once((0, prefix))
                .chain(runs.iter().map(|r| (r.1, r.2)))
                .collect();
            let (all, parts) = copy_with_crc(&f, &src, &out, &tmp, orig.bytes, &ranges)
                .inspect_err(|_| {
                    // Half a copy (an interrupt mid-file) is not left in the backup.
                    let _ = fs::remove_file(&tmp);
                })?;
            let m = f.metadata().map_err(io_at(&src, "could not stat"))?;
            Attrs::of(&m).apply(&out, &tmp, false)?;
            fsync(&out, &tmp)?;
            orig.crc32 = Some(all);
            if e.action == Action::Truncate {
                if let Some(n) = e.new.as_mut() {
                    n.crc32 = Some(parts[0]);
                }
            }
            run_crcs.extend(runs.iter().zip(&parts[1..]).map(|(r, c)| (r.0, *c)));
        }
        steps.step("original copied, not yet renamed into the backup")?;
        fs::rename(&tmp, &dst).map_err(io_at(&dst, "could not rename into place"))?;
        steps.step("original renamed into the backup")?;
        fsync_dir(dir)?;
    }
    for (i, crc) in run_crcs {
        if let Some(n) = manifest.entries[i].new.as_mut() {
            n.crc32 = Some(crc);
        }
    }
    // A healed range's `.log`: the CRC-32 of its bytes in the replica, read through the
    // replica's door, once they are checked to still be the range's records (scanned as a
    // segment of its own: every byte valid, offsets from its first on); the apply phase
    // copies them only if they still have that CRC-32.
    let opts = ScanOptions::with_max(manifest.max_record_bytes);
    let mut doors = Doors::default();
    for e in manifest.entries.iter_mut() {
        if e.healed_from.is_none() || !is_log(&e.rel()) {
            continue;
        }
        let base = segment_base(&e.rel(), backup, e)?;
        let Some(h) = e.healed_from.as_ref() else {
            continue;
        };
        let crc = crc_of_range(doors.get(&h.replica)?, &h.range, base, &opts)?;
        if let Some(n) = e.new.as_mut() {
            n.crc32 = Some(crc);
        }
    }
    // Every directory of the backup, deepest first, so each new name is durable.
    let mut dirs: Vec<PathBuf> = manifest
        .entries
        .iter()
        .filter(|e| e.original.is_some())
        .flat_map(|e| {
            let mut v = Vec::new();
            let mut p = e.rel();
            while p.pop() && !p.as_os_str().is_empty() {
                v.push(backup.join(&p));
            }
            v
        })
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    for d in dirs {
        fsync_dir(&d)?;
    }
    fsync_dir(backup)
}
