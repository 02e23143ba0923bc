//! The plan of an in-place repair: one manifest entry per change (truncate, remove, rebuild, salvage, heal), each with what the original holds and what replaces it.

use crate::engine::format::takhin::{segment_file_name, FileKind};
use crate::engine::index::{rebuilt_digests, IndexDigest, IndexKind};
use crate::engine::layout::{escape_path, Layout};
use crate::engine::report::{HealedReport, HealedRole, Report, SalvagedReport, SegmentReport};
use crate::engine::salvage::Shifted;
use crate::engine::source::{EntryType, Source};
use crate::repair::fsio::open_checked;
use crate::repair::manifest::{
    check_entries, manifest_entry, Action, HealSource, ManifestEntry, Original, OriginalKind,
    Replacement, RunSource,
};
use crate::repair::tree::{reports_by_dir, Content, Entry, LeftOut, TreePlan};
use crate::repair::{io_at, RepairError, Result};
use std::collections::HashMap;
use std::io::{self};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What the source holds at `rel` before the repair: a file, a symlink, or nothing.
/// A directory is refused; so is a FIFO, socket or device where a rebuilt index goes
/// (`index`: the rename over it would succeed but the entry would never read as done),
/// while one at a path the repair removes is left where it is.
pub(super) fn original_of(source: &Source, rel: &Path, index: bool) -> Result<Option<Original>> {
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
pub(super) fn run_name_free(source: &Source, rel: &Path) -> Result<()> {
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
pub(super) fn refuse_refused_runs(data: &Path, layout: &Layout, report: &Report) -> Result<()> {
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

pub(super) fn damage_why(seg: Option<&SegmentReport>) -> String {
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

/// The size and CRC-32 of a rebuilt `.index` and `.timeindex` (streamed by, not kept).
pub(super) type Indexes = (IndexDigest, IndexDigest);
/// A salvaged run's rebuilt indexes, by the original `.log` and the run's position in it.
pub(super) type RunIndexes = ((PathBuf, u64), Indexes);
/// A healed range's rebuilt indexes, by the replica (`--replica` number), its `.log` and the range's position.
pub(super) type HealIndexes = ((usize, PathBuf, u64), Indexes);

/// The planned replacement of a rebuilt `.index` (or `.timeindex`, by `kind`):
/// its size and CRC-32. A `.log`'s (or a range's) two indexes come from one walk,
/// so the last pair's digests are kept in `cache` under `key` for its sibling; `build`
/// walks again on a miss.
pub(super) fn rebuilt_replacement<K: PartialEq>(
    cache: &mut Option<(K, Indexes)>,
    key: K,
    kind: FileKind,
    build: impl FnOnce() -> Result<Indexes>,
) -> Result<Replacement> {
    let indexes = match cache.take().filter(|(k, _)| *k == key) {
        Some((_, r)) => r,
        None => build()?,
    };
    let digest = if kind == FileKind::Index {
        indexes.0
    } else {
        indexes.1
    };
    let new = Replacement {
        bytes: digest.bytes,
        crc32: Some(digest.crc32),
    };
    *cache = Some((key, indexes));
    Ok(new)
}

/// The healed range of the view whose files `rel` is one of (named by its first offset).
pub(super) fn healed_at<'a>(
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
pub(super) fn split_at<'a>(
    logs: &HashMap<PathBuf, &'a crate::engine::report::LogReport>,
    rel: &Path,
) -> Option<&'a HealedReport> {
    healed_at(logs, rel).filter(|h| h.role == HealedRole::PrimarySplit)
}

/// What a split part keeps, for the manifest's `why`.
pub(super) fn split_why(h: &HealedReport) -> String {
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
pub(super) fn heal_entry(
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
                rebuilt_digests(&view, &h.scan).map_err(|e| RepairError::SourceChanged {
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
pub(super) fn in_place_entries(
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
                    rebuilt_digests(&view, scan).map_err(|e| RepairError::SourceChanged {
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
                    rebuilt_digests(&f, scan).map_err(|e| RepairError::SourceChanged {
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
