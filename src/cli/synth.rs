//! `synth` (hidden): writes a clean synthetic data directory for benchmarks and experiments.

use crate::cli::{EXIT_CLEAN, EXIT_ERROR};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Where to write (created; must not exist or be empty).
    pub dir: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub topics: u32,
    #[arg(long, default_value_t = 16)]
    pub partitions: u32,
    #[arg(long, default_value_t = 1)]
    pub segments: u32,
    #[arg(long, default_value_t = 64)]
    pub segment_mb: u64,
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
}

pub fn run(a: &SynthArgs) -> ExitCode {
    let spec = crate::engine::synth::SynthSpec {
        topics: a.topics,
        partitions: a.partitions,
        segments_per_partition: a.segments,
        segment_bytes: a.segment_mb << 20,
        value_bytes: a.value_bytes,
        ..Default::default()
    };
    match crate::engine::synth::write_tree(&a.dir, &spec) {
        Ok(n) => {
            println!("wrote {n} records under {}", a.dir.display());
            ExitCode::from(EXIT_CLEAN)
        }
        Err(e) => {
            eprintln!("recoverfs synth: {}: {e}", a.dir.display());
            ExitCode::from(EXIT_ERROR)
        }
    }
}
