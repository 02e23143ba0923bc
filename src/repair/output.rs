//! `repair --output NEW_DIR`: the whole tree written beside NEW_DIR, fsynced, renamed into place.

use super::fsio::{
    check_data_dir, copy_range_with_crc, create_dir_all_durable, create_new, fsync, fsync_dir,
    is_empty_or_missing, lock_dir, open_checked, resolve, run_jobs, set_link_times,
    start_writeback, tmp_beside, write_copy, write_rebuilt, Attrs, CopyStats, Progress,
};
use super::interrupt::{finish_writing, start_writing};
use super::steps::{pause_at, Steps};
use super::tree::{analyze_with, build_plan, Content, Entry, TreePlan};
use super::{interrupted_with, io_at, RepairError, Result};
use crate::engine::analysis::AnalyzeOptions;
use crate::engine::format::takhin::FileKind;
use crate::engine::replica::Prefer;
use crate::engine::report::Report;
use crate::engine::salvage::Shifted;
use crate::engine::scan::SegmentScan;
use crate::engine::source::Source;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `repair --output` wrote.
#[derive(Debug)]
pub struct OutputSummary {
    pub report: Report,
    pub files: u64,
    pub bytes: u64,
    pub reflinked: u64,
    pub kernel_copied: u64,
    pub plain_copied: u64,
    pub generated: u64,
    pub left_out: usize,
}

/// `repair DATA --output NEW`: writes the repaired tree to NEW, all or nothing.
pub fn repair_to(
    data: &Path,
    output: &Path,
    opts: &AnalyzeOptions,
    progress: Option<Progress>,
) -> Result<OutputSummary> {
    repair_to_with(data, output, opts, &[], Prefer::Primary, progress)
}

/// [`repair_to`], healing from `replicas` (`--replica`; none: the plain repair).
/// The replicas are only read, through their own doors, like the primary.
pub fn repair_to_with(
    data: &Path,
    output: &Path,
    opts: &AnalyzeOptions,
    replicas: &[PathBuf],
    prefer: Prefer,
    progress: Option<Progress>,
) -> Result<OutputSummary> {
    let data_abs = check_data_dir(data)?;
    let out_abs = resolve(output)?;
    if out_abs == data_abs {
        return Err(RepairError::OutputIsData(output.to_path_buf()));
    }
    if out_abs.starts_with(&data_abs) {
        return Err(RepairError::OutputInsideData {
            output: output.to_path_buf(),
            data: data.to_path_buf(),
        });
    }
    if data_abs.starts_with(&out_abs) {
        return Err(RepairError::DataInsideOutput {
            data: data.to_path_buf(),
            output: output.to_path_buf(),
        });
    }
    for r in replicas {
        let r_abs = resolve(r)?;
        if out_abs.starts_with(&r_abs) || r_abs.starts_with(&out_abs) {
            return Err(RepairError::OutputAndReplica {
                output: output.to_path_buf(),
                replica: r.clone(),
            });
        }
    }
    // What stands there, named: a file is not "a directory that is not empty".
    match fs::metadata(output) {
        Ok(m) if !m.is_dir() => {
            return Err(RepairError::OutputNotADirectory {
                path: output.to_path_buf(),
                what: if m.is_file() {
                    "a file"
                } else {
                    "a special file"
                },
            })
        }
        _ => {}
    }
    if !is_empty_or_missing(output)? {
        return Err(RepairError::OutputNotEmpty(output.to_path_buf()));
    }
    pause_at(0);
    let (layout, report) = analyze_with(data, opts, replicas, prefer, progress.as_ref())?;
    let plan = build_plan(data, &layout, &report)?;
    let parent = match (out_abs.parent(), out_abs.file_name()) {
        (Some(p), Some(_)) => p.to_path_buf(),
        _ => return Err(RepairError::OutputNotEmpty(output.to_path_buf())),
    };
    // From here an interrupt waits for a safe point, where the partial tree is removed.
    start_writing().map_err(|e| interrupted_with(e, "nothing was written"))?;
    create_dir_all_durable(&parent)?;
    // Two runs writing to the same parent would share the temporary sibling.
    let _lock = lock_dir(&parent)?;
    // A fixed sibling name: a run killed earlier left this, and it is ours to clear.
    let tmp = tmp_beside(&out_abs);
    if fs::symlink_metadata(&tmp).is_ok() {
        fs::remove_dir_all(&tmp)
            .map_err(io_at(&tmp, "could not clear an earlier partial output"))?;
    }
    let stats = CopyStats {
        progress,
        ..Default::default()
    };
    let mut steps = Steps::new();
    let written = write_tree(&layout.source, &tmp, &plan, &stats, &mut steps)
        // An empty NEW_DIR is replaced atomically; a missing one appears whole.
        .and_then(|()| steps.step("tree written and fsynced, not yet renamed into place"));
    if let Err(e) = written {
        let removed = fs::remove_dir_all(&tmp);
        return Err(match removed {
            Ok(()) => interrupted_with(
                e,
                &format!(
                    "the partial tree {} was removed; {} was not changed",
                    tmp.display(),
                    data.display()
                ),
            ),
            Err(why) => interrupted_with(
                e,
                &format!(
                    "the partial tree {} is left ({why}): the next run clears it; {} was not changed",
                    tmp.display(),
                    data.display()
                ),
            ),
        });
    }
    fs::rename(&tmp, &out_abs).map_err(|e| {
        let _ = fs::remove_dir_all(&tmp);
        io_at(output, "could not rename the finished tree into place")(e)
    })?;
    // Done: an interrupt from here on no longer stops it.
    finish_writing();
    steps.mark("tree renamed into place, parent not yet synced");
    if let Err(e) = fsync_dir(&parent) {
        // NEW_DIR's name is not known to be durable: taken back out, so that --output stays
        // all or nothing and the same command run again writes it anew (a rerun refuses a
        // NEW_DIR that is not empty).
        if fs::rename(&out_abs, &tmp).is_ok() {
            let _ = fs::remove_dir_all(&tmp);
        }
        return Err(match e {
            RepairError::Io { path, source, .. } => RepairError::Io {
                path,
                what: "could not fsync, so the finished tree was taken back out of it (run the same command again)",
                source,
            },
            other => other,
        });
    }
    Ok(OutputSummary {
        report,
        files: CopyStats::get(&stats.files),
        bytes: CopyStats::get(&stats.bytes),
        reflinked: CopyStats::get(&stats.reflinked),
        kernel_copied: CopyStats::get(&stats.kernel_copied),
        plain_copied: CopyStats::get(&stats.plain_copied),
        generated: CopyStats::get(&stats.generated),
        left_out: plan.left_out.len(),
    })
}

/// Writes one file of a salvaged run or of a range healed from a replica: its
/// `.log` (a byte range of the original) or a rebuilt index of that range.
fn write_run_file(source: &Source, dst: &Path, content: &Content, stats: &CopyStats) -> Result<()> {
    let (log, start, original_len, replica) = match content {
        Content::Range {
            log,
            start,
            original_len,
            replica,
            ..
        }
        | Content::RunIndex {
            log,
            start,
            original_len,
            replica,
            ..
        } => (log, *start, *original_len, replica),
        _ => unreachable!("only salvaged runs' files are written here"),
    };
    // A healed range's bytes come from its replica, through the replica's own door.
    let source = replica.as_deref().unwrap_or(source);
    let src = open_checked(source, log, original_len)?;
    let f = match content {
        Content::Range { len, .. } => {
            let f = create_new(dst)?;
            // Holes stay holes (the CRC-32 is not needed here).
            copy_range_with_crc(&src, &source.display_path(log), start, *len, &f, dst)?;
            stats.add_bytes(*len);
            CopyStats::add(&stats.plain_copied, *len);
            f
        }
        Content::RunIndex { kind, scan, .. } => {
            let view = Shifted {
                src: &src,
                start,
                len: scan.valid_bytes,
            };
            let changed = |e: std::io::Error| RepairError::SourceChanged {
                path: source.display_path(log),
                what: e.to_string(),
            };
            let (f, digest) = write_rebuilt(&view, scan, &[(dst, *kind)], &changed)?.remove(0);
            stats.add_bytes(digest.bytes);
            CopyStats::add(&stats.generated, digest.bytes);
            f
        }
        _ => unreachable!("only salvaged runs' files are written here"),
    };
    start_writeback(&f);
    CopyStats::add(&stats.files, 1);
    Ok(())
}

/// The rebuilt index files of one segment: its `.log`, its scan, and (path, kind) per file.
type IndexJob = (PathBuf, Arc<SegmentScan>, Vec<(PathBuf, FileKind)>);

/// Writes every entry of the plan under `root` (which must not exist), fsynced;
/// the source is read through its door only.
fn write_tree(
    source: &Source,
    root: &Path,
    plan: &TreePlan,
    stats: &CopyStats,
    steps: &mut Steps,
) -> Result<()> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    // Rebuilt indexes are written per segment, so each `.log` is walked once for both
    // (a segment's two index names sort next to each other, around its `.log`).
    let mut rebuilt: Vec<IndexJob> = Vec::new();
    // Salvaged runs' files: byte ranges of an original `.log`, and their rebuilt indexes.
    let mut runs: Vec<(&PathBuf, &Content)> = Vec::new();
    for e in &plan.entries {
        match e {
            Entry::Dir { rel, attrs } => {
                let p = root.join(rel);
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&p)
                    .map_err(io_at(&p, "could not create"))?;
                dirs.push((p, *attrs));
            }
            Entry::Symlink { rel, attrs } => {
                let p = root.join(rel);
                let target = source
                    .read_link(rel)
                    .map_err(io_at(&source.display_path(rel), "could not read the link"))?;
                std::os::unix::fs::symlink(target, &p).map_err(io_at(&p, "could not create"))?;
                set_link_times(&p, attrs)?;
            }
            // An original index that already equals the rebuilt one (compared byte for byte by
            // the analysis) is copied like any file, sparing a second walk through its `.log`.
            Entry::File {
                rel,
                content:
                    Content::Rebuilt {
                        scan,
                        original_matches: true,
                        ..
                    },
                ..
            } => files.push((rel, scan.index_bytes(), scan.index_bytes())),
            Entry::File {
                rel,
                content:
                    Content::Rebuilt {
                        kind, log, scan, ..
                    },
                ..
            } => match rebuilt.last_mut().filter(|r| r.0 == *log) {
                Some(r) => r.2.push((rel.clone(), *kind)),
                None => rebuilt.push((log.clone(), scan.clone(), vec![(rel.clone(), *kind)])),
            },
            Entry::File {
                rel,
                content: Content::Whole { len },
                ..
            } => files.push((rel, *len, *len)),
            Entry::File {
                rel,
                content: Content::Prefix { len, original_len },
                ..
            } => files.push((rel, *len, *original_len)),
            Entry::File {
                rel,
                content: content @ (Content::Range { .. } | Content::RunIndex { .. }),
                ..
            } => runs.push((rel, content)),
        }
    }
    use std::os::unix::fs::DirBuilderExt;
    run_jobs(&files, |(rel, len, original_len)| {
        let dst = root.join(rel);
        let f = write_copy(source, rel, &dst, *len, *original_len, stats)?;
        start_writeback(&f);
        CopyStats::add(&stats.files, 1);
        Ok(())
    })?;
    steps.step("files copied, indexes not yet rebuilt")?;
    run_jobs(&rebuilt, |(log, scan, outs)| {
        let log_path = source.display_path(log);
        let src = open_checked(source, log, scan.original_bytes)?;
        let dsts: Vec<(PathBuf, FileKind)> = outs
            .iter()
            .map(|(rel, kind)| (root.join(rel), *kind))
            .collect();
        let dsts: Vec<(&Path, FileKind)> = dsts.iter().map(|(p, k)| (p.as_path(), *k)).collect();
        let changed = |e: std::io::Error| RepairError::SourceChanged {
            path: log_path.clone(),
            what: e.to_string(),
        };
        for (f, digest) in write_rebuilt(&src, scan, &dsts, &changed)? {
            start_writeback(&f);
            CopyStats::add(&stats.files, 1);
            stats.add_bytes(digest.bytes);
            CopyStats::add(&stats.generated, digest.bytes);
        }
        Ok(())
    })?;
    run_jobs(&runs, |(rel, content)| {
        write_run_file(source, &root.join(rel), content, stats)
    })?;
    // Every file durable before the directories that name them, and before the rename.
    // Mode and times are set here, not at creation: the file is still ours (0600) to reopen.
    let written: Vec<(PathBuf, Attrs)> = plan
        .entries
        .iter()
        .filter_map(|e| match e {
            Entry::File { rel, attrs, .. } => Some((root.join(rel), *attrs)),
            _ => None,
        })
        .collect();
    run_jobs(&written, |(p, attrs)| {
        let f = File::open(p).map_err(io_at(p, "could not reopen"))?;
        attrs.apply(&f, p, false)?;
        fsync(&f, p)
    })?;
    // Deepest first, so a directory's times are set after its entries stop changing it.
    for (p, attrs) in dirs.iter().rev() {
        let d = File::open(p).map_err(io_at(p, "could not open the directory"))?;
        attrs.apply(&d, p, false)?;
        fsync(&d, p)?;
    }
    Ok(())
}
