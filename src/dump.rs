//! `dump`: segment files entry by entry, like `kafka-dump-log.sh`: a `.log`'s records, or an `.index`/`.timeindex`'s entries checked against their `.log` (by default); then where and why the valid prefix ends.

use crate::engine::format::takhin::{
    be_i64, be_u64, classify_name, FileKind, NameMatch, ENTRY_FIRST_AT, ENTRY_SECOND_AT,
    INDEX_ENTRY_LEN,
};
use crate::engine::index::{read_rebuilt_index, IndexComparer, IndexKind, IndexVerdict};
use crate::engine::salvage::salvage;
use crate::engine::scan::{
    read_exact_at, scan_segment, walk, ReadAt, RecordMeta, ScanOptions, WalkStart,
};
use crate::engine::source::{advise_sequential, Source};
use serde::Serialize;
use std::fs::File;
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use crate::engine::render::iso8601_ms;

/// Bytes of a value shown in a dump line by default (`--max-bytes`).
pub const PREVIEW_BYTES: usize = 32;
/// Keys longer than this are shown cut, with their length (unless `--values full`).
pub const KEY_SHOW_BYTES: usize = 64;
/// Index entries compared with the rebuilt index per read.
const INDEX_CHUNK: u64 = 4096;

/// How much of each value a dump line shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Values {
    /// The first `max_bytes` (default).
    #[default]
    Preview,
    /// All of it (and all of the key).
    Full,
    /// Only its length.
    None,
}

#[derive(Debug, Clone)]
pub struct DumpOptions {
    pub json: bool,
    pub from_offset: Option<u64>,
    pub limit: Option<u64>,
    pub scan: ScanOptions,
    pub values: Values,
    /// Bytes of a value in a preview.
    pub max_bytes: usize,
    /// The base offset of a file not named by it (a carved `.log`).
    pub base_offset: Option<u64>,
    /// Compare the indexes with the ones rebuilt from the `.log`, entry by entry: a
    /// `.log`'s indexes beside it, or an index file with its `.log` (which must be there).
    pub verify_index: bool,
    /// Check an index file's entries against its `.log` even unasked (the default, as
    /// `kafka-dump-log --index-sanity-check`); a missing `.log` leaves it unchecked, not clean.
    pub check_index_files: bool,
    /// Print only what the index check finds wrong, not every record or entry.
    pub only_differences: bool,
    /// Name the file on every JSON line (several files in one call).
    pub name_file: bool,
    /// After the damage, also the runs salvage finds (each run's records).
    pub salvage: bool,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            json: false,
            from_offset: None,
            limit: None,
            scan: ScanOptions::default(),
            values: Values::Preview,
            max_bytes: PREVIEW_BYTES,
            base_offset: None,
            verify_index: false,
            check_index_files: true,
            only_differences: false,
            name_file: false,
            salvage: false,
        }
    }
}

/// Printable ASCII as text, anything else as hex (`0x…`).
pub fn show_bytes(b: &[u8]) -> String {
    if b.iter().all(|c| (0x20..0x7f).contains(c)) {
        String::from_utf8_lossy(b).into_owned()
    } else {
        let mut s = String::from("0x");
        for c in b {
            s.push_str(&format!("{c:02x}"));
        }
        s
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

/// A writer that keeps going once its reader left (`| head`): the rest is examined,
/// not printed, so the exit code still tells clean from damaged.
struct Out<'a> {
    inner: &'a mut dyn Write,
    closed: bool,
}

impl Write for Out<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(b.len());
        }
        match self.inner.write(b) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(b.len())
            }
            r => r,
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        match self.inner.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            r => r,
        }
    }
}

#[derive(Serialize)]
struct JsonRecord<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
    offset: u64,
    timestamp: i64,
    time: &'a str,
    position: u64,
    key_len: u32,
    key: &'a str,
    key_hex: &'a str,
    value_len: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_preview: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonEnd<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
    end: &'a str,
    records: u64,
    valid_bytes: u64,
    original_bytes: u64,
    damage: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeindex: Option<String>,
}

/// What a file is, from its name and `--base-offset`.
fn classify(path: &Path, base_offset: Option<u64>) -> io::Result<(u64, FileKind)> {
    let name = path.file_name().unwrap_or_default().as_bytes();
    let ext_kind = match classify_name(name) {
        NameMatch::Segment(b, k) => return Ok((base_offset.unwrap_or(b), k)),
        NameMatch::SegmentLike(k) => k,
        NameMatch::Other => FileKind::Log,
    };
    match base_offset {
        Some(b) => Ok((b, ext_kind)),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: not named <20 digits>.log|.index|.timeindex; give its base offset with --base-offset N",
                path.display()
            ),
        )),
    }
}

/// The file's directory as a source, and the file's name in it.
fn open_in_dir(path: &Path) -> io::Result<(Source, PathBuf)> {
    let located = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = PathBuf::from(path.file_name().unwrap_or_default());
    Ok((Source::open(dir).map_err(located)?, name))
}

/// The segment files of the directory `dir` (not below it), as paths to dump:
/// by base offset, each segment's `.log` first, then its `.index` and `.timeindex`.
/// Other entries are left out; a directory holding none is an error naming it.
pub fn segment_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let located = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", dir.display()));
    let source = Source::open(dir).map_err(located)?;
    let mut found: Vec<(u64, FileKind, PathBuf)> = source
        .read_dir(Path::new(""))
        .map_err(located)?
        .into_iter()
        .filter_map(|(n, ft)| match classify_name(n.as_bytes()) {
            NameMatch::Segment(b, k) if ft.is_file() => Some((b, k, dir.join(&n))),
            _ => None,
        })
        .collect();
    if found.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: a directory holding no segment file (<20 digits>.log|.index|.timeindex); give a partition directory or segment files",
                dir.display()
            ),
        ));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, _, p)| p).collect())
}

/// `name` with its extension replaced by `ext`.
fn sibling(name: &Path, ext: &str) -> PathBuf {
    name.with_extension(ext)
}

/// Dumps `path` (a `.log`, `.index` or `.timeindex`) to `out`. Returns whether it was
/// clean (every record or entry examined, whatever `--limit` or a closed pipe cut
/// from the printout); an `Err` is a file that could not be read.
pub fn dump(path: &Path, opts: &DumpOptions, out: &mut dyn Write) -> io::Result<bool> {
    let (base, kind) = classify(path, opts.base_offset)?;
    let mut out = Out {
        inner: out,
        closed: false,
    };
    let r = match kind {
        FileKind::Log => dump_log(path, base, opts, &mut out),
        FileKind::Index => dump_index(path, base, IndexKind::Offset, opts, &mut out),
        FileKind::TimeIndex => dump_index(path, base, IndexKind::Time, opts, &mut out),
    };
    let clean = r?;
    out.flush()?;
    Ok(clean)
}

fn dump_log(path: &Path, base: u64, opts: &DumpOptions, out: &mut Out) -> io::Result<bool> {
    let (source, name) = open_in_dir(path)?;
    let file = source
        .file(&name)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    advise_sequential(&file);
    let len = file.metadata()?.len();
    let file_label = path.display().to_string();
    let label = opts.name_file.then_some(file_label.as_str());
    // --verify-index: the original indexes beside it, compared as the records stream by.
    let originals: Vec<(IndexKind, Option<(File, u64)>)> =
        if opts.verify_index || opts.only_differences {
            [(IndexKind::Offset, "index"), (IndexKind::Time, "timeindex")]
                .into_iter()
                .map(|(k, ext)| {
                    let f = source
                        .file(&sibling(&name, ext))
                        .ok()
                        .and_then(|f| f.metadata().ok().map(|m| (f, m.len())));
                    (k, f)
                })
                .collect()
        } else {
            Vec::new()
        };
    let mut comparers: Vec<(IndexKind, Option<IndexComparer<File>>)> = originals
        .iter()
        .map(|(k, f)| (*k, f.as_ref().map(|(f, l)| IndexComparer::new(*k, f, *l))))
        .collect();
    let mut shown = 0u64;
    let mut failure: Option<io::Error> = None;
    let w = walk(
        &file,
        len,
        base,
        WalkStart {
            position: 0,
            index: 0,
        },
        &opts.scan,
        |m| {
            for (_, c) in comparers.iter_mut() {
                if let Some(c) = c {
                    c.push(m);
                }
            }
            let wanted = !opts.only_differences
                && opts.from_offset.is_none_or(|f| m.offset >= f)
                && opts.limit.is_none_or(|l| shown < l);
            // Past --limit or a closed pipe: examined, not printed.
            if wanted && !out.closed {
                shown += 1;
                if let Err(e) = print_record(&file, m, opts, label, out) {
                    failure = Some(e);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        },
    )
    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    if let Some(e) = failure {
        return Err(e);
    }
    if opts.limit.is_some_and(|l| shown >= l) && !opts.json {
        writeln!(
            out,
            "(stopped printing after {shown} record(s): --limit; the rest was examined)"
        )?;
    }
    let records = w.visited;
    let verdicts: Vec<(IndexKind, IndexVerdict)> = comparers
        .into_iter()
        .map(|(k, c)| (k, c.map_or(IndexVerdict::Missing, |c| c.finish(records))))
        .collect();
    let verdict_of = |want: IndexKind| {
        verdicts
            .iter()
            .find(|(k, _)| *k == want)
            .map(|(k, v)| v.describe(*k))
    };
    let indexes_match = verdicts.iter().all(|(_, v)| v.is_match());
    if opts.json {
        let end = JsonEnd {
            file: label,
            end: if w.damage.is_some() { "damage" } else { "clean" },
            records,
            valid_bytes: w.end,
            original_bytes: len,
            damage: w.damage.as_ref().map(|d| serde_json::json!({
                "kind": d.kind(), "position": d.position, "record": d.record, "detail": d.cause.to_string()
            })),
            index: verdict_of(IndexKind::Offset),
            timeindex: verdict_of(IndexKind::Time),
        };
        writeln!(out, "{}", serde_json::to_string(&end).expect("serializes"))?;
    } else {
        match &w.damage {
            // `base + records` passed `check_offset` for every record; an empty
            // file's base may be anything a name or `--base-offset` spells.
            None => writeln!(
                out,
                "end: clean; {records} record(s), {len} bytes, next offset {}",
                base.checked_add(records)
                    .map_or_else(|| "past the largest offset".to_string(), |n| n.to_string())
            )?,
            Some(d) => writeln!(
                out,
                "end: valid prefix ends at byte {} after {records} record(s): {} — {}; {} of {len} bytes cut",
                d.position,
                d.kind(),
                d.cause,
                len.saturating_sub(d.position)
            )?,
        }
        for (k, v) in &verdicts {
            let ext = match k {
                IndexKind::Offset => "index",
                IndexKind::Time => "timeindex",
            };
            writeln!(out, "{ext}: {}", v.describe(*k))?;
        }
    }
    if opts.salvage && w.damage.is_some() {
        let seg = SegmentFile {
            source: &source,
            name: &name,
            file: &file,
            len,
            base,
        };
        dump_runs(&seg, opts, label, out, shown)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    }
    Ok(w.damage.is_none() && indexes_match)
}

fn print_record(
    file: &File,
    m: &RecordMeta,
    opts: &DumpOptions,
    label: Option<&str>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let full = opts.values == Values::Full;
    let key_shown = if full {
        m.key_len as usize
    } else {
        (m.key_len as usize).min(KEY_SHOW_BYTES)
    };
    let mut key = vec![0; key_shown];
    read_exact_at(file, &mut key, m.key_position())?;
    let value_shown = match opts.values {
        Values::Full => m.value_len as usize,
        Values::Preview => (m.value_len as usize).min(opts.max_bytes),
        Values::None => 0,
    };
    let mut value = vec![0; value_shown];
    read_exact_at(file, &mut value, m.value_position())?;
    let time = iso8601_ms(m.timestamp);
    let more = |shown: usize, all: usize| if shown < all { "…" } else { "" };
    let value_text = show_bytes(&value);
    if opts.json {
        let rec = JsonRecord {
            file: label,
            offset: m.offset,
            timestamp: m.timestamp,
            time: &time,
            position: m.position,
            key_len: m.key_len,
            key: &show_bytes(&key),
            key_hex: &hex(&key),
            value_len: m.value_len,
            value_preview: (opts.values == Values::Preview).then_some(value_text.as_str()),
            value: full.then_some(value_text.as_str()),
        };
        writeln!(out, "{}", serde_json::to_string(&rec).expect("serializes"))
    } else {
        let value_part = match opts.values {
            Values::None => String::new(),
            _ => format!(" {value_text}{}", more(value_shown, m.value_len as usize)),
        };
        writeln!(
            out,
            "offset {} @{} ts {} {} key {}{} value {} B{value_part}",
            m.offset,
            m.position,
            m.timestamp,
            time,
            if m.key_len == 0 {
                "-".into()
            } else {
                show_bytes(&key)
            },
            more(key_shown, m.key_len as usize),
            m.value_len,
        )
    }
}

/// One index entry as text (`offset O position P`, `timestamp T (ISO) offset O`) and JSON fields.
fn describe_entry(kind: IndexKind, e: &[u8]) -> (String, serde_json::Value) {
    match kind {
        IndexKind::Offset => {
            let (o, p) = (be_u64(e, ENTRY_FIRST_AT), be_u64(e, ENTRY_SECOND_AT));
            (
                format!("offset {o} position {p}"),
                serde_json::json!({"offset": o, "position": p}),
            )
        }
        IndexKind::Time => {
            let (t, o) = (be_i64(e, ENTRY_FIRST_AT), be_u64(e, ENTRY_SECOND_AT));
            (
                format!("timestamp {t} {} offset {o}", iso8601_ms(t)),
                serde_json::json!({"timestamp": t, "time": iso8601_ms(t), "offset": o}),
            )
        }
    }
}

fn dump_index(
    path: &Path,
    base: u64,
    kind: IndexKind,
    opts: &DumpOptions,
    out: &mut Out,
) -> io::Result<bool> {
    let located = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let (source, name) = open_in_dir(path)?;
    let file = source.file(&name).map_err(located)?;
    let len = file.metadata()?.len();
    let file_label = path.display().to_string();
    let label = opts.name_file.then_some(file_label.as_str());
    // Checked against the .log beside it (same stem), by default as when asked:
    // scanned once, rebuilt entries read in chunks. Unasked, a missing .log leaves
    // the index unchecked (and so not clean); asked (--verify-index), it is an error.
    let asked = opts.verify_index || opts.only_differences;
    let mut unchecked: Option<String> = None;
    let rebuilt = if asked || opts.check_index_files {
        let log_name = sibling(&name, "log");
        match source.file(&log_name) {
            Ok(log) => {
                let log_len = log.metadata()?.len();
                let mut cmp = IndexComparer::new(kind, &file, len);
                let scan = scan_segment(&log, log_len, base, &opts.scan, |m| cmp.push(m))
                    .map_err(located)?;
                let verdict = cmp.finish(scan.records);
                Some((log, scan, verdict))
            }
            Err(e) if asked => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "{}: --verify-index needs its .log ({}): {e}",
                        path.display(),
                        log_name.display()
                    ),
                ))
            }
            Err(e) => {
                unchecked = Some(format!(
                    "its .log ({}) could not be opened: {e}",
                    log_name.display()
                ));
                None
            }
        }
    } else {
        None
    };
    let entries = len / INDEX_ENTRY_LEN;
    let partial = len % INDEX_ENTRY_LEN;
    let mut shown = 0u64;
    let mut chunk_at = u64::MAX;
    let (mut orig, mut want) = (Vec::new(), Vec::new());
    for i in 0..entries {
        if i / INDEX_CHUNK != chunk_at {
            chunk_at = i / INDEX_CHUNK;
            let from = chunk_at * INDEX_CHUNK * INDEX_ENTRY_LEN;
            let n = (INDEX_CHUNK * INDEX_ENTRY_LEN).min(entries * INDEX_ENTRY_LEN - from);
            orig = vec![0; n as usize];
            read_exact_at(&file, &mut orig, from).map_err(located)?;
            if let Some((log, scan, _)) = &rebuilt {
                want = read_rebuilt_index(log, scan, kind, from, n).map_err(located)?;
            }
        }
        if out.closed || opts.limit.is_some_and(|l| shown >= l) {
            if rebuilt.is_none() || opts.only_differences {
                break; // nothing left to examine
            }
            continue;
        }
        let at = ((i % INDEX_CHUNK) * INDEX_ENTRY_LEN) as usize;
        let e = &orig[at..at + INDEX_ENTRY_LEN as usize];
        let (text, mut json) = describe_entry(kind, e);
        let offset_of = match kind {
            IndexKind::Offset => be_u64(e, ENTRY_FIRST_AT),
            IndexKind::Time => be_u64(e, ENTRY_SECOND_AT),
        };
        if opts.from_offset.is_some_and(|f| offset_of < f) {
            continue;
        }
        let check = rebuilt
            .as_ref()
            .map(|_| match want.get(at..at + INDEX_ENTRY_LEN as usize) {
                Some(w) if w == e => "ok".to_string(),
                Some(w) => format!("DIFFERS: should be {}", describe_entry(kind, w).0),
                None => "EXTRA: past the rebuilt index".to_string(),
            });
        if opts.only_differences && check.as_deref().is_none_or(|c| c == "ok") {
            continue;
        }
        shown += 1;
        if opts.json {
            let m = json.as_object_mut().expect("an object");
            let mut line = serde_json::Map::new();
            if let Some(l) = label {
                line.insert("file".into(), l.into());
            }
            line.insert("entry".into(), i.into());
            line.append(m);
            if let Some(c) = &check {
                line.insert("verify".into(), c.as_str().into());
            }
            writeln!(out, "{}", serde_json::Value::Object(line))?;
        } else {
            let c = check.map(|c| format!("  {c}")).unwrap_or_default();
            writeln!(out, "entry {i} @{}: {text}{c}", i * INDEX_ENTRY_LEN)?;
        }
    }
    let verdict = match (&rebuilt, &unchecked) {
        (Some((_, _, v)), _) => Some(v.describe(kind)),
        (None, Some(why)) => Some(format!(
            "not checked: {why} (--no-verify-index prints the entries alone)"
        )),
        (None, None) => None,
    };
    let ok = partial == 0
        && unchecked.is_none()
        && rebuilt.as_ref().is_none_or(|(_, _, v)| v.is_match());
    if opts.json {
        let end = serde_json::json!({
            "end": if ok { "clean" } else { "damage" },
            "entries": entries, "bytes": len, "partial_entry_bytes": partial, "verify": verdict,
        });
        let mut end = end.as_object().cloned().expect("an object");
        if let Some(l) = label {
            end.insert("file".into(), l.into());
        }
        writeln!(out, "{}", serde_json::Value::Object(end))?;
    } else {
        if opts.limit.is_some_and(|l| shown >= l) {
            writeln!(out, "(stopped printing after {shown} entr(ies): --limit)")?;
        }
        let tail = if partial > 0 {
            format!(", then {partial} byte(s) of a partial entry")
        } else {
            String::new()
        };
        let v = verdict
            .map(|v| format!("; against the .log: {v}"))
            .unwrap_or_default();
        writeln!(out, "end: {entries} entr(ies), {len} bytes{tail}{v}")?;
    }
    Ok(ok)
}

/// A `.log` being dumped: where it is, its open file, its size and base offset.
#[derive(Clone, Copy)]
struct SegmentFile<'a> {
    source: &'a Source,
    name: &'a Path,
    file: &'a File,
    len: u64,
    base: u64,
}

/// `dump --salvage`: after the damage, each run salvage finds (the segment's own
/// `.index` as evidence, the next segment of its directory as the bound), then its records.
fn dump_runs(
    seg: &SegmentFile,
    opts: &DumpOptions,
    label: Option<&str>,
    out: &mut dyn Write,
    mut shown: u64,
) -> io::Result<()> {
    let SegmentFile {
        source,
        name,
        file,
        len,
        base,
    } = *seg;
    let scan = scan_segment(file, len, base, &opts.scan, |_| {})?;
    // Its own index (beside it, same stem) is the evidence; the next segment its bound.
    let index = source
        .file(&sibling(name, "index"))
        .ok()
        .and_then(|f| Some((f.metadata().ok()?.len(), f)));
    let next_base = source
        .read_dir(Path::new(""))?
        .iter()
        .filter_map(|(n, ft)| match classify_name(n.as_bytes()) {
            NameMatch::Segment(b, FileKind::Log) if ft.is_file() && b > base => Some(b),
            _ => None,
        })
        .min();
    let evidence = index.as_ref().map(|(l, f)| (f as &dyn ReadAt, *l));
    let found = salvage(file, len, &scan, evidence, next_base, &opts.scan)?;
    for run in &found.runs {
        let how = if run.confirmed_by_index {
            "confirmed by the index"
        } else {
            "chained"
        };
        if opts.json {
            let v = serde_json::json!({"salvaged_run": {
                "first_offset": run.first_offset, "last_offset": run.last_offset(),
                "records": run.records, "position": run.position, "end": run.end,
                "confirmed_by_index": run.confirmed_by_index}});
            writeln!(out, "{v}")?;
        } else {
            writeln!(
                out,
                "salvaged run: {} record(s), offsets {}..={} from byte {} to {} ({how})",
                run.records,
                run.first_offset,
                run.last_offset(),
                run.position,
                run.end
            )?;
        }
        let mut failure = None;
        let w = walk(
            file,
            run.end,
            run.first_offset,
            WalkStart {
                position: run.position,
                index: 0,
            },
            &opts.scan,
            |m| {
                if opts.from_offset.is_some_and(|f| m.offset < f) {
                    return ControlFlow::Continue(());
                }
                if opts.limit.is_some_and(|l| shown >= l) {
                    return ControlFlow::Break(());
                }
                shown += 1;
                match print_record(file, m, opts, label, out) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(e) => {
                        failure = Some(e);
                        ControlFlow::Break(())
                    }
                }
            },
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        if w.stopped {
            if !opts.json {
                writeln!(out, "(stopped after {shown} record(s): --limit)")?;
            }
            return Ok(());
        }
    }
    if let Some(c) = found.cut {
        if !opts.json {
            writeln!(
                out,
                "salvage stopped at byte {}: offset {} belongs to the next segment ({})",
                c.position, c.offset, c.next_base
            )?;
        }
    }
    if !opts.json {
        writeln!(
            out,
            "salvaged: {} run(s), {} record(s) after the damage",
            found.runs.len(),
            found.records()
        )?;
    }
    Ok(())
}
