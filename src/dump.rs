//! `dump`: the records of one segment, one line each, then where and why its valid prefix ends.

use crate::engine::format::takhin::{classify_name, segment_file_name, FileKind, NameMatch};
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
use std::path::Path;

/// Bytes of a value shown in a dump line.
pub const PREVIEW_BYTES: usize = 32;
/// Keys longer than this are shown cut, with their length.
pub const KEY_SHOW_BYTES: usize = 64;

#[derive(Debug, Clone, Copy, Default)]
pub struct DumpOptions {
    pub json: bool,
    pub from_offset: Option<u64>,
    pub limit: Option<u64>,
    pub scan: ScanOptions,
    /// After the damage, also the runs salvage finds (each run's records).
    pub salvage: bool,
}

/// Milliseconds since the epoch as ISO-8601 UTC, or a note when out of range.
pub fn iso8601_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "out-of-range".into())
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

#[derive(Serialize)]
struct JsonRecord<'a> {
    offset: u64,
    timestamp: i64,
    time: &'a str,
    position: u64,
    key_len: u32,
    key: &'a str,
    key_hex: &'a str,
    value_len: u32,
    value_preview: &'a str,
}

#[derive(Serialize)]
struct JsonEnd<'a> {
    end: &'a str,
    records: u64,
    valid_bytes: u64,
    original_bytes: u64,
    damage: Option<serde_json::Value>,
}

/// Dumps `path` to `out`. Returns whether the segment was clean; an `Err` is an I/O failure.
pub fn dump(path: &Path, opts: &DumpOptions, out: &mut dyn Write) -> io::Result<bool> {
    let name = path.file_name().unwrap_or_default();
    let base = match classify_name(name.as_bytes()) {
        NameMatch::Segment(b, FileKind::Log) => b,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a segment file (<20 digits>.log)", path.display()),
            ))
        }
    };
    // The segment's directory is the source; the segment is read through its door.
    let located = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let source = Source::open(dir).map_err(located)?;
    let file = source.file(Path::new(name)).map_err(located)?;
    advise_sequential(&file);
    let len = file.metadata()?.len();
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
            if opts.from_offset.is_some_and(|f| m.offset < f) {
                return ControlFlow::Continue(());
            }
            if opts.limit.is_some_and(|l| shown >= l) {
                return ControlFlow::Break(());
            }
            shown += 1;
            match print_record(&file, m, opts.json, out) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    failure = Some(e);
                    ControlFlow::Break(())
                }
            }
        },
    )
    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    if let Some(e) = failure {
        return Err(e);
    }
    if w.stopped {
        // --limit reached: the rest of the segment was not examined.
        if !opts.json {
            writeln!(out, "(stopped after {shown} record(s): --limit)")?;
        }
        return Ok(true);
    }
    let records = w.visited;
    match &w.damage {
        None => {
            if opts.json {
                let end = JsonEnd {
                    end: "clean",
                    records,
                    valid_bytes: w.end,
                    original_bytes: len,
                    damage: None,
                };
                writeln!(out, "{}", serde_json::to_string(&end).expect("serializes"))?;
            } else {
                writeln!(
                    out,
                    "end: clean; {records} record(s), {len} bytes, next offset {}",
                    base + records
                )?;
            }
            Ok(true)
        }
        Some(d) => {
            if opts.json {
                let end = JsonEnd {
                    end: "damage",
                    records,
                    valid_bytes: w.end,
                    original_bytes: len,
                    damage: Some(serde_json::json!({
                        "kind": d.kind(), "position": d.position, "record": d.record, "detail": d.cause.to_string()
                    })),
                };
                writeln!(out, "{}", serde_json::to_string(&end).expect("serializes"))?;
            } else {
                writeln!(
                    out,
                    "end: valid prefix ends at byte {} after {records} record(s): {} — {}; {} of {len} bytes cut",
                    d.position,
                    d.kind(),
                    d.cause,
                    len - d.position
                )?;
            }
            if opts.salvage {
                dump_runs(&source, &file, len, base, opts, out, shown)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            }
            Ok(false)
        }
    }
}

fn print_record(file: &File, m: &RecordMeta, json: bool, out: &mut dyn Write) -> io::Result<()> {
    let key_shown = (m.key_len as usize).min(KEY_SHOW_BYTES);
    let mut key = vec![0; key_shown];
    read_exact_at(file, &mut key, m.key_position())?;
    let preview_len = (m.value_len as usize).min(PREVIEW_BYTES);
    let mut value = vec![0; preview_len];
    read_exact_at(file, &mut value, m.value_position())?;
    let time = iso8601_ms(m.timestamp);
    let more = |shown: usize, all: usize| if shown < all { "…" } else { "" };
    if json {
        let rec = JsonRecord {
            offset: m.offset,
            timestamp: m.timestamp,
            time: &time,
            position: m.position,
            key_len: m.key_len,
            key: &show_bytes(&key),
            key_hex: &hex(&key),
            value_len: m.value_len,
            value_preview: &show_bytes(&value),
        };
        writeln!(out, "{}", serde_json::to_string(&rec).expect("serializes"))
    } else {
        writeln!(
            out,
            "offset {} @{} ts {} {} key {}{} value {} B {}{}",
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
            show_bytes(&value),
            more(preview_len, m.value_len as usize),
        )
    }
}

/// `dump --salvage`: after the damage, each run salvage finds (the segment's own
/// `.index` as evidence, the next segment of its directory as the bound), then its records.
fn dump_runs(
    source: &Source,
    file: &File,
    len: u64,
    base: u64,
    opts: &DumpOptions,
    out: &mut dyn Write,
    mut shown: u64,
) -> io::Result<()> {
    let scan = scan_segment(file, len, base, &opts.scan, |_| {})?;
    let index = source
        .file(Path::new(&segment_file_name(base, FileKind::Index)))
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
                match print_record(file, m, opts.json, out) {
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
