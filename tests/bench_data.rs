//! Benchmark data for BENCHMARKS.md (ignored tests: they write gigabytes where told to, and assert nothing timed).
//!
//! ```text
//! RECOVERFS_BENCH_DIR=/var/tmp/rfs-1g RECOVERFS_BENCH_MB=1024 \
//!   cargo test --release --test suite -- --ignored bench_data::write_segments
//! RECOVERFS_BENCH_DIR=/var/tmp/rfs-10k cargo test --release --test suite -- --ignored bench_data::write_many
//! ```

use crate::common;

use common::{log_path, write_one_record_segments};
use recoverfs::engine::format::takhin::SegmentWriter;
use std::fs;
use std::path::PathBuf;

fn target() -> PathBuf {
    PathBuf::from(std::env::var("RECOVERFS_BENCH_DIR").expect("set RECOVERFS_BENCH_DIR"))
}

/// RECOVERFS_BENCH_MB of 64 MiB segments (1 KiB values) in one partition; the last one torn.
#[test]
#[ignore]
fn write_segments() {
    let mb: u64 = std::env::var("RECOVERFS_BENCH_MB")
        .map(|v| v.parse().unwrap())
        .unwrap_or(1024);
    let dir = target().join("bench/partition-0");
    fs::create_dir_all(&dir).unwrap();
    let segments = mb.div_ceil(64);
    let value: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    let mut base = 0u64;
    for s in 0..segments {
        let mut w = SegmentWriter::new(base);
        while w.log.len() < 64 << 20 {
            let o = w.next_offset;
            w.append(1_700_000_000_000 + o as i64, &o.to_be_bytes(), &value);
        }
        w.write_to(&dir).unwrap();
        if s + 1 == segments {
            // A torn last write, as an unclean shutdown leaves it.
            let torn = &w.log[..w.log.len() - 100];
            fs::write(log_path(&dir, base), torn).unwrap();
        }
        base = w.next_offset;
    }
}

/// 10,000 one-record segments in one partition (mount-ready time, listing).
#[test]
#[ignore]
fn write_many() {
    write_one_record_segments(&target().join("many/partition-0"), 10_000, b"value");
}
