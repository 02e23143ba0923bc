//! `dump`: one segment's records, then where and why its valid prefix ends.

use crate::cli::{ScanArgs, EXIT_CLEAN, EXIT_DAMAGE, EXIT_ERROR};
use crate::dump::{dump, DumpOptions};
use clap::Args;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// The segment file (<20 digits>.log).
    pub segment: PathBuf,
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// Skip records below this offset.
    #[arg(long, value_name = "N")]
    pub from_offset: Option<u64>,
    /// Print at most N records.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// After the damage, also print each run of intact records salvage finds
    /// (`--policy salvage`'s rule), and its records.
    #[arg(long)]
    pub salvage: bool,
    #[command(flatten)]
    pub scan: ScanArgs,
}

pub fn run(a: &DumpArgs) -> ExitCode {
    let opts = DumpOptions {
        json: a.json,
        from_offset: a.from_offset,
        limit: a.limit,
        scan: a.scan.options(),
        salvage: a.salvage,
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let r = dump(&a.segment, &opts, &mut out).and_then(|clean| out.flush().map(|_| clean));
    match r {
        Ok(true) => ExitCode::from(EXIT_CLEAN),
        Ok(false) => ExitCode::from(EXIT_DAMAGE),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(EXIT_CLEAN),
        Err(e) => {
            eprintln!(
                "recoverfs dump: {}",
                crate::engine::layout::display_name(&e.to_string())
            );
            ExitCode::from(EXIT_ERROR)
        }
    }
}
