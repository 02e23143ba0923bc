//! `dump`: segment files record by record (or index entry by entry, checked against the `.log`), then where and why each one's valid prefix ends.

use crate::cli::{ScanArgs, EXIT_CLEAN, EXIT_DAMAGE, EXIT_ERROR};
use crate::dump::{dump, segment_files, DumpOptions, Values, PREVIEW_BYTES};
use crate::engine::scan::MAX_OFFSET;
use clap::{Args, ValueEnum};
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// How much of each value to print.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ValuesArg {
    /// The first --max-bytes bytes.
    Preview,
    /// All of it (and all of the key).
    Full,
    /// Only its length.
    None,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// Segment files: <20 digits>.log (records), .index or .timeindex (entries); several in
    /// one call. A directory stands for every segment file in it (not below it).
    #[arg(required_unless_present = "files_list", value_name = "FILE|DIR")]
    pub files: Vec<PathBuf>,
    /// The same, comma-separated (kafka-dump-log's spelling).
    #[arg(
        long = "files",
        id = "files_list",
        value_name = "A,B,...",
        value_delimiter = ','
    )]
    pub files_list: Vec<PathBuf>,
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// Skip records (or entries) below this offset.
    #[arg(long, value_name = "N")]
    pub from_offset: Option<u64>,
    /// Print at most N records (or entries) per file; the rest is still examined for the exit code.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// How much of each value to print.
    #[arg(long, value_enum, default_value = "preview")]
    pub values: ValuesArg,
    /// Bytes of a value in a preview.
    #[arg(long, value_name = "N", default_value_t = PREVIEW_BYTES)]
    pub max_bytes: usize,
    /// The base offset of a file not named by it (a carved or renamed segment); at most
    /// 9223372036854775807, the largest Takhin offset.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(..=MAX_OFFSET))]
    pub base_offset: Option<u64>,
    /// Also for a .log: compare its .index and .timeindex with those rebuilt from it, entry
    /// by entry; a disagreement exits 1. (An index file is always checked against its .log
    /// unless --no-verify-index; with this flag, a missing .log is an error.)
    #[arg(long, visible_alias = "index-sanity-check")]
    pub verify_index: bool,
    /// Check the indexes (as --verify-index) and print only the entries that disagree,
    /// not every record or entry (kafka-dump-log's spelling).
    #[arg(long, conflicts_with = "no_verify_index")]
    pub verify_index_only: bool,
    /// Print an index file's entries without checking them against its .log (which
    /// is done by default: a disagreement, or no .log to check against, exits 1).
    #[arg(long, conflicts_with = "verify_index")]
    pub no_verify_index: bool,
    /// Print every value and key whole: kafka-dump-log's spelling of --values full.
    #[arg(long, conflicts_with = "values")]
    pub print_data_log: bool,
    /// Accepted for kafka-dump-log's spelling: Takhin has no record batches, so every
    /// record is always listed one by one.
    #[arg(long)]
    pub deep_iteration: bool,
    /// After the damage, also print each run of intact records salvage finds
    /// (`--policy salvage`'s rule), and its records.
    #[arg(long)]
    pub salvage: bool,
    #[command(flatten)]
    pub scan: ScanArgs,
}

/// The files to dump, in order: each FILE as given, each DIR as its segment files.
fn expand(a: &DumpArgs) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for f in a.files.iter().chain(&a.files_list) {
        // A stat of the argument only (as `check` resolves its PATH); its files are
        // opened through the source module, like every other.
        if std::fs::metadata(f).is_ok_and(|m| m.is_dir()) {
            if a.base_offset.is_some() {
                return Err(format!(
                    "{}: a directory; --base-offset gives the base of one file not named by it",
                    f.display()
                ));
            }
            out.extend(segment_files(f).map_err(|e| e.to_string())?);
        } else {
            out.push(f.clone());
        }
    }
    Ok(out)
}

pub fn run(a: &DumpArgs) -> ExitCode {
    let files = match expand(a) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "recoverfs dump: {}",
                crate::engine::layout::display_name(&e)
            );
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let several = files.len() > 1;
    let opts = DumpOptions {
        json: a.json,
        from_offset: a.from_offset,
        limit: a.limit,
        scan: a.scan.options(),
        values: match a.values {
            _ if a.print_data_log => Values::Full,
            ValuesArg::Preview => Values::Preview,
            ValuesArg::Full => Values::Full,
            ValuesArg::None => Values::None,
        },
        max_bytes: a.max_bytes,
        base_offset: a.base_offset,
        verify_index: a.verify_index,
        check_index_files: !a.no_verify_index,
        only_differences: a.verify_index_only,
        name_file: several,
        salvage: a.salvage,
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut code = EXIT_CLEAN;
    for (i, f) in files.iter().enumerate() {
        if several && !a.json {
            let sep = if i > 0 { "\n" } else { "" };
            // A closed pipe is handled inside dump; here it only loses a header.
            let _ = writeln!(
                out,
                "{sep}== {} ==",
                crate::engine::layout::display_name(&f.display().to_string())
            );
        }
        let started = std::time::Instant::now();
        let result = dump(f, &opts, &mut out);
        // -v: how long each file took (the dump itself is the output).
        tracing::debug!(
            "{}: examined in {:.3} s",
            crate::engine::layout::display_name(&f.display().to_string()),
            started.elapsed().as_secs_f64()
        );
        match result {
            Ok(true) => {}
            Ok(false) => code = code.max(EXIT_DAMAGE),
            Err(e) => {
                let _ = out.flush();
                eprintln!(
                    "recoverfs dump: {}",
                    crate::engine::layout::display_name(&e.to_string())
                );
                code = EXIT_ERROR;
            }
        }
    }
    let _ = out.flush();
    ExitCode::from(code)
}
