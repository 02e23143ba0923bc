//! `repair --in-place --backup DIR`: the plan of changes, then its three phases (back up, apply, done).

use super::fsio::{
    check_data_dir, copy_range_with_crc, copy_with_crc, create_new, fsync, fsync_dir, lock_dir,
    open_checked, rebuild_from, resolve, stat_source, tmp_beside, write_copy, Attrs, CopyStats,
    Progress, BUF_BYTES,
};
use super::manifest::{
    backup_is_blank, check_entries, manifest_entry, read_manifest, write_manifest, Action,
    HealSource, Manifest, ManifestEntry, ManifestState, Original, OriginalKind, Replacement,
    RunSource, MANIFEST,
};
use super::steps::Steps;
use super::tree::{analyze_with, build_plan, reports_by_dir, Content, Entry, LeftOut, TreePlan};
use super::{io_at, RepairError, Result};
use crate::engine::analysis::AnalyzeOptions;
use crate::engine::format::takhin::{segment_file_name, FileKind};
use crate::engine::index::{rebuild_indexes, IndexKind};
use crate::engine::layout::{escape_path, Layout};
use crate::engine::replica::Prefer;
use crate::engine::report::{HealedReport, HealedRole, Report, SalvagedReport, SegmentReport};
use crate::engine::salvage::Shifted;
use crate::engine::scan::{scan_segment, ScanOptions};
use crate::engine::source::{advise_sequential, EntryType, Source};
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What the source holds at `rel` before the repair: a file, a symlink, or nothing.
/// A directory is refused; so is a FIFO, socket or device where a rebuilt index goes
/// (`index`: the rename over it would succeed but the entry would never read as done),
/// while one at a path the repair removes is left where it is.
fn original_of(source: &Source, rel: &Path, index: bool) -> Result<Option<Original>> {
    let path = source.display_path(rel);
    let m = match source.metadata(rel) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(&path, "could not stat")(e)),
    };
    let in_the_way = |what| {
        Err(RepairError::InTheWay {
            path: path.clone(),
            what,
        })
    };
    match EntryType::of(&m) {
        EntryType::File => Ok(Some(Original {
            kind: OriginalKind::File,
            bytes: m.len(),
            crc32: None,
        })),
        EntryType::Symlink => Ok(Some(Original {
            kind: OriginalKind::Symlink,
            bytes: source
                .read_link(rel)
                .map_err(io_at(&path, "could not read the link"))?
                .as_os_str()
                .len() as u64,
            crc32: None,
        })),
        EntryType::Dir => in_the_way("a directory"),
        EntryType::Other if index => in_the_way("a FIFO, socket or device"),
        EntryType::Other => Ok(None),
    }
}

/// Refuses a salvaged run's file name that something in the source already holds: the
/// analysis does not show a run whose name a segment file, orphan or unrecognized file
/// takes, and anything else there (a file that appeared since, a symlink, a FIFO, a
/// directory) is refused here. A run never overwrites a real file.
fn run_name_free(source: &Source, rel: &Path) -> Result<()> {
    let path = source.display_path(rel);
    let what = match source.metadata(rel) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_at(&path, "could not stat")(e)),
        Ok(m) => match EntryType::of(&m) {
            EntryType::File => "a file",
            EntryType::Symlink => "a symlink",
            EntryType::Dir => "a directory",
            EntryType::Other => "a FIFO, socket or device",
        },
    };
    Err(RepairError::RunNameTaken { path, what })
}

/// Refuses to salvage in place when the analysis found a run it does not show because a
/// file of the source holds one of its names. `--output` leaves such a run out of the
/// new tree and the source keeps it; in place, the same repair truncates the `.log` the
/// run lies in, so its records would be left in the backup only, and a rerun after the
/// name is freed would no longer find them. Moving the file away first keeps them.
fn refuse_refused_runs(data: &Path, layout: &Layout, report: &Report) -> Result<()> {
    let source = &layout.source;
    // In layout order (as `reports_by_dir` pairs them), so a rerun names the same run first.
    for (l, r) in layout.logs.iter().zip(&report.logs) {
        let log = &l.rel;
        let refused = r
            .segments
            .iter()
            .flat_map(|s| s.salvaged.iter().flatten())
            .find(|run| !run.shown());
        if let Some(run) = refused {
            for kind in [FileKind::Log, FileKind::Index, FileKind::TimeIndex] {
                run_name_free(source, &log.join(segment_file_name(run.first_offset, kind)))?;
            }
            // Taken when analysed, free now: something is changing the tree.
            return Err(RepairError::SourceChanged {
                path: data.join(log),
                what: format!(
                    "the names of the salvaged run {} were taken when checked and are free now",
                    run.path
                ),
            });
        }
    }
    Ok(())
}

fn damage_why(seg: Option<&SegmentReport>) -> String {
    match seg.and_then(|s| s.damage.as_ref()) {
        Some(d) => format!(
            "{} ({}) at byte {}",
            d.kind().as_str(),
            d.class.as_str(),
            d.position
        ),
        None => "damaged".into(),
    }
}

/// A rebuilt `.index` and `.timeindex`.
type Indexes = (Vec<u8>, Vec<u8>);
/// A salvaged run's rebuilt indexes, by the original `.log` and the run's position in it.
type RunIndexes = ((PathBuf, u64), Indexes);
/// A healed range's rebuilt indexes, by the replica (`--replica` number), its `.log` and the range's position.
type HealIndexes = ((usize, PathBuf, u64), Indexes);

/// The planned replacement of a rebuilt `.index` (or `.timeindex`, by `kind`):
/// its size and CRC-32. A `.log`'s (or a range's) two indexes come from one walk,
/// so the last pair built is kept in `cache` under `key` for its sibling; `build`
/// walks again on a miss.
fn rebuilt_replacement<K: PartialEq>(
    cache: &mut Option<(K, Indexes)>,
    key: K,
    kind: FileKind,
    build: impl FnOnce() -> Result<Indexes>,
) -> Result<Replacement> {
    let indexes = match cache.take().filter(|(k, _)| *k == key) {
        Some((_, r)) => r,
        None => build()?,
    };
    let bytes = if kind == FileKind::Index {
        &indexes.0
    } else {
        &indexes.1
    };
    let new = Replacement {
        bytes: bytes.len() as u64,
        crc32: Some(crc32fast::hash(bytes)),
    };
    *cache = Some((key, indexes));
    Ok(new)
}

/// The healed range of the view whose files `rel` is one of (named by its first offset).
fn healed_at<'a>(
    logs: &HashMap<PathBuf, &'a crate::engine::report::LogReport>,
    rel: &Path,
) -> Option<&'a HealedReport> {
    use crate::engine::format::takhin::{classify_name, NameMatch};
    let NameMatch::Segment(first, _) = classify_name(rel.file_name()?.as_bytes()) else {
        return None;
    };
    let log = logs.get(rel.parent()?)?;
    log.shown_healed().find(|h| h.from_offset == first)
}

/// The part of a primary piece split around a preferred record whose files `rel` is one
/// of, if it is one: the primary's own records, kept as a segment of their own.
fn split_at<'a>(
    logs: &HashMap<PathBuf, &'a crate::engine::report::LogReport>,
    rel: &Path,
) -> Option<&'a HealedReport> {
    healed_at(logs, rel).filter(|h| h.role == HealedRole::PrimarySplit)
}

/// What a split part keeps, for the manifest's `why`.
fn split_why(h: &HealedReport) -> String {
    format!(
        "the primary's own {} record(s), offsets {}..={} from byte {} of {}, split around a record --prefer serves from a replica",
        h.records,
        h.from_offset,
        h.to_offset,
        h.position,
        escape_path(&h.file)
    )
}

/// The manifest entry of one file of a healed range: its `.log` (the replica's bytes,
/// their CRC-32 taken when the originals are backed up) or a rebuilt index (built now,
/// from the replica through its door). The range is either offsets the primary lacks or
/// a record `--prefer` serves instead of the primary's own (the primary's records around
/// it are split off as ranges of the primary's `.log`, planned like salvaged runs).
fn heal_entry(
    data: &Path,
    source: &Source,
    rel: &Path,
    content: &Content,
    h: &HealedReport,
    replicas: &[String],
    cache: &mut Option<HealIndexes>,
) -> Result<ManifestEntry> {
    let replica = h
        .replica_index
        .checked_sub(1)
        .and_then(|i| replicas.get(i))
        .ok_or_else(|| RepairError::SourceChanged {
            path: data.join(rel),
            what: format!(
                "healed from replica {}, which was not given",
                h.replica_index
            ),
        })?;
    let rsrc = h
        .source
        .as_deref()
        .ok_or_else(|| RepairError::SourceChanged {
            path: data.join(rel),
            what: "healed range without its replica".into(),
        })?;
    // A healed range takes a name only where the primary has none, or over the files of a
    // primary segment whose view holds no record, or (a preferred record that is its
    // segment's first) of the segment it is split from: that original is backed up, then
    // replaced.
    let original = match h.replaces {
        Some(_) => original_of(source, rel, true)?,
        None => {
            run_name_free(source, rel)?;
            None
        }
    };
    let from = RunSource::new(&h.file, h.position, h.bytes);
    let what = format!(
        "{} record(s), offsets {}..={} from byte {} of {} in the replica {}{}",
        h.records,
        h.from_offset,
        h.to_offset,
        h.position,
        escape_path(&h.file),
        replica,
        match (&original, &h.replaces, h.role) {
            (_, _, HealedRole::Preferred) => format!(
                " instead of the primary's divergent record (--prefer){}",
                match (&original, &h.replaces) {
                    (Some(_), Some(p)) => format!("; replaces {p}, split around it"),
                    _ => String::new(),
                }
            ),
            (Some(_), Some(p), _) => format!(" (replaces {p}, whose view holds no record)"),
            _ => String::new(),
        }
    );
    let (why, new) = match content {
        Content::RunIndex { kind, .. } => {
            let key = (h.replica_index, h.file.clone(), h.position);
            let new = rebuilt_replacement(cache, key, *kind, || {
                let f = open_checked(rsrc, &h.file, h.file_stamp.size)?;
                let view = Shifted {
                    src: &f,
                    start: h.position,
                    len: h.scan.valid_bytes,
                };
                rebuild_indexes(&view, &h.scan).map_err(|e| RepairError::SourceChanged {
                    path: rsrc.display_path(&h.file),
                    what: e.to_string(),
                })
            })?;
            let range = match h.role {
                HealedRole::Preferred => "preferred record(s)",
                _ => "healed range",
            };
            (format!("rebuilt for the {range}: {what}"), new)
        }
        // Its CRC-32 is taken when the originals are copied into the backup.
        _ => (
            match h.role {
                HealedRole::Preferred => format!("preferred record(s) from a replica: {what}"),
                _ => format!("healed range: {what}"),
            },
            Replacement {
                bytes: h.bytes,
                crc32: None,
            },
        ),
    };
    let mut e = manifest_entry(rel, Action::Heal, why, original, Some(new));
    e.healed_from = Some(HealSource {
        replica: replica.clone(),
        range: from,
    });
    Ok(e)
}

/// Turns the repaired tree into the changes that make the source equal to it.
/// Also returns the special files left where they are.
fn in_place_entries(
    data: &Path,
    layout: &Layout,
    report: &Report,
    plan: &TreePlan,
    replicas: &[String],
) -> Result<(Vec<ManifestEntry>, Vec<PathBuf>)> {
    let source = &layout.source;
    let logs = reports_by_dir(layout, report);
    // Each segment's report by its `.log`'s path: one lookup per file planned (a
    // log may hold tens of thousands of segments, each with files to plan).
    let segs: HashMap<&str, &SegmentReport> = report
        .logs
        .iter()
        .flat_map(|l| &l.segments)
        .map(|s| (s.path.as_str(), s))
        .collect();
    let seg_of = |log_rel: &Path| -> Option<&SegmentReport> {
        segs.get(escape_path(log_rel).as_str()).copied()
    };
    // The runs the view shows, by their original and position: one lookup per run
    // (a segment may hold tens of thousands).
    let runs: HashMap<(String, u64), &SalvagedReport> = report
        .logs
        .iter()
        .flat_map(|l| &l.segments)
        .flat_map(|s| {
            s.shown_runs()
                .map(|(r, _)| ((s.path.clone(), r.position), r))
        })
        .collect();
    let mut out = Vec::new();
    // A segment's two rebuilt indexes come from one walk through its `.log`. One segment
    // at a time: its `.index` and `.timeindex` are listed around its `.log` (by name), and
    // a tree's indexes together can outgrow memory (16 bytes per record each; a miss
    // only walks the `.log` again).
    let mut rebuilt_cache: Option<(PathBuf, Indexes)> = None;
    // A run's two indexes come from one walk through its bytes. One run at a time: the
    // plan lists a run's files next to each other (by name), and a large run's indexes
    // are large (a miss only walks the run again).
    let mut run_cache: Option<RunIndexes> = None;
    // Likewise a healed range's two indexes, from one walk through the replica's bytes.
    let mut heal_cache: Option<HealIndexes> = None;
    for e in &plan.entries {
        let Entry::File { rel, content, .. } = e else {
            continue;
        };
        match content {
            Content::Whole { .. } => {}
            Content::Prefix { len, original_len } if len < original_len => {
                // A segment split around a preferred record keeps its records before it:
                // cut at that record's boundary like a segment cut at damage.
                let why = match split_at(&logs, rel) {
                    Some(h) => format!("cut at a record boundary: {}", split_why(h)),
                    None => damage_why(seg_of(rel)),
                };
                out.push(manifest_entry(
                    rel,
                    Action::Truncate,
                    why,
                    Some(Original {
                        kind: OriginalKind::File,
                        bytes: *original_len,
                        crc32: None,
                    }),
                    Some(Replacement {
                        bytes: *len,
                        crc32: None,
                    }),
                ))
            }
            Content::Prefix { .. } => {}
            // A healed range (or a record --prefer serves from a replica): read from the
            // replica through its door, written as new files (or over the files of an
            // empty primary segment, or of the segment a preferred first record is split
            // from, backed up first).
            Content::Range {
                replica: Some(_), ..
            }
            | Content::RunIndex {
                replica: Some(_), ..
            } => {
                let h = healed_at(&logs, rel).ok_or_else(|| RepairError::SourceChanged {
                    path: data.join(rel),
                    what: "healed range not found in the analysis".into(),
                })?;
                out.push(heal_entry(
                    data,
                    source,
                    rel,
                    content,
                    h,
                    replicas,
                    &mut heal_cache,
                )?);
            }
            // A salvaged run, or the primary's own records split off after a preferred
            // one: a byte range of an original `.log` this repair cuts or replaces, so
            // written from its backup copy.
            Content::Range {
                log, start, len, ..
            } => {
                run_name_free(source, rel)?;
                let run = runs.get(&(escape_path(log), *start));
                let why = match (run, split_at(&logs, rel)) {
                    (_, Some(h)) => split_why(h),
                    (Some(r), _) => format!(
                        "salvaged run: {} record(s), offsets {}..={} from byte {} of {}{}",
                        r.records,
                        r.first_offset,
                        r.last_offset,
                        r.position,
                        escape_path(log),
                        if r.confirmed_by_index {
                            " (confirmed by the index)"
                        } else {
                            ""
                        }
                    ),
                    (None, _) => {
                        format!("salvaged run from byte {start} of {}", escape_path(log))
                    }
                };
                // Its CRC-32 is taken when the original is copied into the backup.
                let mut e = manifest_entry(
                    rel,
                    Action::Salvage,
                    why,
                    None,
                    Some(Replacement {
                        bytes: *len,
                        crc32: None,
                    }),
                );
                e.salvaged_from = Some(RunSource::new(log, *start, *len));
                out.push(e);
            }
            Content::RunIndex {
                kind,
                log,
                start,
                original_len,
                scan,
                ..
            } => {
                run_name_free(source, rel)?;
                let key = (log.clone(), *start);
                let new = rebuilt_replacement(&mut run_cache, key, *kind, || {
                    let f = open_checked(source, log, *original_len)?;
                    let view = Shifted {
                        src: &f,
                        start: *start,
                        len: scan.valid_bytes,
                    };
                    rebuild_indexes(&view, scan).map_err(|e| RepairError::SourceChanged {
                        path: data.join(log),
                        what: e.to_string(),
                    })
                })?;
                let why = match split_at(&logs, rel) {
                    Some(h) => format!("rebuilt for {}", split_why(h)),
                    None => format!(
                        "rebuilt for the salvaged run from byte {start} of {}",
                        escape_path(log)
                    ),
                };
                let mut e = manifest_entry(rel, Action::Salvage, why, None, Some(new));
                e.salvaged_from = Some(RunSource::new(log, *start, scan.valid_bytes));
                out.push(e);
            }
            Content::Rebuilt {
                kind,
                log,
                scan,
                original_matches,
            } => {
                if *original_matches {
                    continue;
                }
                let original = original_of(source, rel, true)?;
                // Another segment's pair is dropped before this one is built.
                let new = rebuilt_replacement(&mut rebuilt_cache, log.clone(), *kind, || {
                    let f = open_checked(source, log, scan.original_bytes)?;
                    rebuild_indexes(&f, scan).map_err(|e| RepairError::SourceChanged {
                        path: data.join(log),
                        what: e.to_string(),
                    })
                })?;
                let seg = seg_of(log);
                let verdict = match (seg, kind) {
                    (Some(s), FileKind::Index) => s.index.describe(IndexKind::Offset),
                    (Some(s), _) => s.timeindex.describe(IndexKind::Time),
                    (None, _) => String::new(),
                };
                let (action, why) = if let Some(h) = split_at(&logs, rel) {
                    let why = format!("rebuilt for {}", split_why(h));
                    match original {
                        Some(_) => (Action::Rebuild, why),
                        None => (Action::Create, why),
                    }
                } else if original.is_some() {
                    (Action::Rebuild, format!("rebuilt (original: {verdict})"))
                } else {
                    (Action::Create, "rebuilt (original: missing)".to_string())
                };
                out.push(manifest_entry(rel, action, why, original, Some(new)));
            }
        }
    }
    // A salvaged run is written from the backup copy of the `.log` it comes from, so
    // that `.log` must be one this repair backs up (and truncates): the view cuts a
    // segment at its first damage, and every run lies after it.
    check_entries(&out, replicas).map_err(|what| RepairError::SourceChanged {
        path: data.to_path_buf(),
        what: format!("the planned repair is inconsistent ({what})"),
    })?;
    let mut specials = Vec::new();
    for (rel, why) in &plan.left_out {
        let why = match why {
            LeftOut::Special => {
                specials.push(rel.clone());
                continue;
            }
            LeftOut::Hidden => format!("hidden under {}", report.policy),
            LeftOut::Orphan => "orphan index (no .log beside it)".to_string(),
        };
        if let Some(original) = original_of(source, rel, false)? {
            out.push(manifest_entry(
                rel,
                Action::Remove,
                why,
                Some(original),
                None,
            ));
        }
    }
    Ok((out, specials))
}

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
        replica_names.push(r_abs.to_string_lossy().into_owned());
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
            apply(&layout.source, data, backup, m.clone(), &mut steps)?;
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
    fs::create_dir_all(backup).map_err(io_at(backup, "could not create"))?;
    if let Some(parent) = backup_abs.parent() {
        fsync_dir(parent)?;
    }
    write_manifest(backup, &manifest, &mut steps)?;
    back_up(&layout.source, backup, &mut manifest, &mut steps)?;
    manifest.state = ManifestState::BackedUp;
    write_manifest(backup, &manifest, &mut steps)?;
    apply(&layout.source, data, backup, manifest.clone(), &mut steps)?;
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
            let (all, parts) = copy_with_crc(&f, &src, &out, &tmp, orig.bytes, &ranges)?;
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
        steps.step("original copied, not yet renamed into the backup");
        fs::rename(&tmp, &dst).map_err(io_at(&dst, "could not rename into place"))?;
        steps.step("original renamed into the backup");
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
    let opts = ScanOptions {
        max_record_bytes: manifest.max_record_bytes,
    };
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

/// The replicas' doors, opened once each, by the absolute path the manifest names.
#[derive(Default)]
struct Doors(HashMap<String, Source>);

impl Doors {
    fn get(&mut self, replica: &str) -> Result<&Source> {
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
fn crc_of_range(door: &Source, range: &RunSource, base: u64, opts: &ScanOptions) -> Result<u32> {
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
fn is_log(rel: &Path) -> bool {
    rel.extension() == Some(OsStr::new(FileKind::Log.ext()))
}

/// What a path of the data directory holds now, as far as a manifest entry cares.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Absent,
    /// A regular file: its size and CRC-32.
    File(u64, u32),
    /// A symlink: the length and CRC-32 of its target text.
    Symlink(u64, u32),
    Other,
}

/// What `rel` holds now, read through `source` (the data directory, or the backup).
fn found_at(source: &Source, rel: &Path) -> Result<Found> {
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
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; BUF_BYTES.min(m.len() as usize).max(1)];
    let mut at = 0u64;
    loop {
        match f.read_at(&mut buf, at) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_at(path, "could not read")(e)),
        }
    }
    Ok(Found::File(at, h.finalize()))
}

fn found_original(o: &Option<Original>) -> Found {
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
    let opts = ScanOptions {
        max_record_bytes: manifest.max_record_bytes,
    };
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
        if now == done {
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
            steps.step("original removed, directory not yet synced");
            fsync_dir(dir)?;
            continue;
        }
        let new = e.new.as_ref().expect("a replacement for every non-removal");
        let tmp = tmp_beside(&path);
        let _ = fs::remove_file(&tmp);
        let out = match (e.action, &e.salvaged_from, &copies) {
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
                let (i, t) = rebuild_from(source, &log_name, base, cuts.get(&log_name), &opts)?;
                let bytes = if rel.extension() == Some(OsStr::new(FileKind::Index.ext())) {
                    i
                } else {
                    t
                };
                if bytes.len() as u64 != new.bytes || Some(crc32fast::hash(&bytes)) != new.crc32 {
                    return Err(RepairError::SourceChanged {
                        path: log_path,
                        what: "no longer yields the index planned from it".into(),
                    });
                }
                let mut f = create_new(&tmp)?;
                f.write_all(&bytes)
                    .map_err(io_at(&tmp, "could not write"))?;
                let m = match source.metadata(&rel) {
                    Ok(m) if m.is_file() => m,
                    _ => stat_source(source, &log_name)?,
                };
                Attrs::of(&m).apply(&f, &tmp, true)?;
                f
            }
        };
        fsync(&out, &tmp)?;
        drop(out);
        steps.step("replacement written, not yet renamed over the original");
        fs::rename(&tmp, &path).map_err(io_at(&path, "could not rename over the original"))?;
        steps.step("replacement renamed, directory not yet synced");
        fsync_dir(dir)?;
    }
    manifest.state = ManifestState::Applied;
    write_manifest(backup, &manifest, steps)
}

/// The base offset a segment file's name gives (`<20 digits>.<ext>`).
fn segment_base(rel: &Path, backup: &Path, e: &ManifestEntry) -> Result<u64> {
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
fn write_salvaged(
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
fn write_range(
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
    let (i, t) = rebuild_indexes(&view, &scan).map_err(read)?;
    let bytes = if rel.extension() == Some(OsStr::new(FileKind::Index.ext())) {
        i
    } else {
        t
    };
    if scan.valid_bytes != from.bytes
        || bytes.len() as u64 != new.bytes
        || Some(crc32fast::hash(&bytes)) != new.crc32
    {
        return Err(damaged(format!(
            "no longer yields the salvaged run at bytes {}..{end}, nor the index planned from it",
            from.position
        )));
    }
    let mut out = create_new(tmp)?;
    out.write_all(&bytes)
        .map_err(io_at(tmp, "could not write"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::takhin::{be_u64, SegmentWriter};

    /// A healed range's CRC-32 is taken only from bytes that still scan as the range's
    /// records (clean, offsets from its base on); a replica changed under the repair
    /// (a record header overwritten, the file cut short, another base) is refused by name.
    #[test]
    fn a_healed_range_is_hashed_only_while_the_replica_still_holds_it() {
        let t = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::new(0);
        for i in 0..10u8 {
            w.append(1_000 + i as i64, &[b'k', i], &[i; 25]);
        }
        // The range: records 4..10 of the replica's segment 0.
        let start = be_u64(&w.index, 4 * 16 + 8);
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
        let mut w = SegmentWriter::new(0);
        for i in 0..10u8 {
            w.append(1_000 + i as i64, &[b'k', i], &[i; 25]);
        }
        // The run: records 4..10 of a segment whose first records are gone.
        let start = be_u64(&w.index, 4 * 16 + 8);
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
