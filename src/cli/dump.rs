//! `dump`: segment files record by record (or index entry by entry), then where and why each one's valid prefix ends.

use crate::cli::{ScanArgs, EXIT_CLEAN, EXIT_DAMAGE, EXIT_ERROR};
use crate::dump::{dump, DumpOptions, Values, PREVIEW_BYTES};
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
    /// Segment files: <20 digits>.log (records), .index or .timeindex (entries); several in one call.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
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
    /// The base offset of a file not named by it (a carved or renamed segment).
    #[arg(long, value_name = "N")]
    pub base_offset: Option<u64>,
    /// Compare the indexes with those rebuilt from the .log, entry by entry (for an index
    /// file, its .log beside it); a disagreement exits 1.
    #[arg(long)]
    pub verify_index: bool,
    /// After the damage, also print each run of intact records salvage finds
    /// (`--policy salvage`'s rule), and its records.
    #[arg(long)]
    pub salvage: bool,
    #[command(flatten)]
    pub scan: ScanArgs,
}

pub fn run(a: &DumpArgs) -> ExitCode {
    let several = a.files.len() > 1;
    let opts = DumpOptions {
        json: a.json,
        from_offset: a.from_offset,
        limit: a.limit,
        scan: a.scan.options(),
        values: match a.values {
            ValuesArg::Preview => Values::Preview,
            ValuesArg::Full => Values::Full,
            ValuesArg::None => Values::None,
        },
        max_bytes: a.max_bytes,
        base_offset: a.base_offset,
        verify_index: a.verify_index,
        name_file: several,
        salvage: a.salvage,
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut code = EXIT_CLEAN;
    for (i, f) in a.files.iter().enumerate() {
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
