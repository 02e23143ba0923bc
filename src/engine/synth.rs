//! Synthetic Takhin data directories (clean, for benchmarks and tests), written as the reference writer would.

use crate::engine::format::takhin::{
    index_entry, segment_file_name, timeindex_entry, FileKind, Record,
};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// The shape of a synthetic data directory.
#[derive(Debug, Clone, Copy)]
pub struct SynthSpec {
    pub topics: u32,
    pub partitions: u32,
    pub segments_per_partition: u32,
    /// A segment rolls once its `.log` reaches this many bytes.
    pub segment_bytes: u64,
    pub value_bytes: usize,
    pub key_bytes: usize,
}

impl Default for SynthSpec {
    fn default() -> Self {
        SynthSpec {
            topics: 1,
            partitions: 1,
            segments_per_partition: 1,
            segment_bytes: 64 << 20,
            value_bytes: 100,
            key_bytes: 8,
        }
    }
}

/// Writes one segment of at most `max_bytes` starting at `base`; returns the next offset.
pub fn write_segment(
    dir: &Path,
    base: u64,
    max_bytes: u64,
    key_bytes: usize,
    value_bytes: usize,
    ts0: i64,
) -> io::Result<u64> {
    let open = |k| {
        File::create(dir.join(segment_file_name(base, k)))
            .map(|f| BufWriter::with_capacity(1 << 20, f))
    };
    let (mut log, mut index, mut tindex) = (
        open(FileKind::Log)?,
        open(FileKind::Index)?,
        open(FileKind::TimeIndex)?,
    );
    let mut rec = Record {
        offset: base,
        timestamp: ts0,
        key: vec![b'k'; key_bytes],
        value: vec![0; value_bytes],
    };
    let rec_len = rec.encoded_len();
    let mut pos = 0u64;
    let mut buf = Vec::with_capacity(rec_len as usize);
    // Values vary (a cheap counter pattern) so compression or dedup can't flatter a benchmark.
    let mut state = base.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while pos + rec_len <= max_bytes {
        for chunk in rec.value.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let b = state.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        let tail = format!("{:08}", rec.offset % 100_000_000);
        let kl = rec.key.len().min(8);
        rec.key[..kl].copy_from_slice(&tail.as_bytes()[8 - kl..]);
        buf.clear();
        rec.encode_into(&mut buf, [0; 4]);
        log.write_all(&buf)?;
        index.write_all(&index_entry(rec.offset, pos))?;
        tindex.write_all(&timeindex_entry(rec.timestamp, rec.offset))?;
        pos += rec_len;
        rec.offset += 1;
        // Batches of 16 share a timestamp, as Takhin's batch appends do.
        if rec.offset % 16 == 0 {
            rec.timestamp += 1;
        }
    }
    log.flush()?;
    index.flush()?;
    tindex.flush()?;
    Ok(rec.offset)
}

/// Writes `<root>/topic-<t>/partition-<p>/` logs per the spec; returns the records written.
pub fn write_tree(root: &Path, spec: &SynthSpec) -> io::Result<u64> {
    let mut total = 0;
    for t in 0..spec.topics {
        for p in 0..spec.partitions {
            let dir = root.join(format!("topic-{t}/partition-{p}"));
            fs::create_dir_all(&dir)?;
            let mut next = 0;
            for _ in 0..spec.segments_per_partition {
                let end = write_segment(
                    &dir,
                    next,
                    spec.segment_bytes,
                    spec.key_bytes,
                    spec.value_bytes,
                    1_795_000_000_000 + next as i64,
                )?;
                total += end - next;
                next = end;
            }
        }
    }
    Ok(total)
}
