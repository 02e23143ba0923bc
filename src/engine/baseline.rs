//! The integrity baseline: each file's size, times and CRC-32C per 64 KiB block, saved while a log is good and compared later.
//!
//! Takhin's records carry no checksum, so a bit flipped inside a value is invisible
//! to every reader. A baseline taken while the log was good (after a clean shutdown,
//! nightly, before moving disks) makes it visible: a block whose CRC-32C differs from
//! the baseline's, inside the bytes the baseline covered, is damage of its own kind
//! (`changed-since-baseline`), cut under the policy like any other. Bytes appended
//! since the baseline are new data, not damage.
//!
//! # The file format (version 1)
//!
//! JSON lines, UTF-8, one object per line: readable with `jq`, diffable, and
//! streamed (a line per file) rather than held whole. The first line is the header:
//!
//! ```text
//! {"format":"recoverfs-baseline","version":1,"block_bytes":65536,"checksum":"crc32c","source":"/var/lib/takhin","created":"2026-12-07T20:00:00Z"}
//! ```
//!
//! then one line per file, its path relative to the data directory (`path`, or
//! `path_bytes` as an array of bytes when the name is not UTF-8):
//!
//! ```text
//! {"path":"orders/partition-0/00000000000000000000.log","size":65838,"mtime_ns":...,"ctime_ns":...,"crc32c":123,"blocks":[1,2]}
//! ```
//!
//! `blocks[i]` is the CRC-32C (Castagnoli, as iSCSI and Kafka use) of bytes
//! `[i * block_bytes, min((i + 1) * block_bytes, size))`; `crc32c` is the whole
//! file's. A file of `size` bytes has exactly `ceil(size / block_bytes)` blocks.
//! Anything else (another `format`, a newer `version`, a block count that does not
//! fit the size) is refused with the line it was found on.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::io::{self, BufRead, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The `format` every baseline's header names.
pub const FORMAT: &str = "recoverfs-baseline";
/// The version this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes per block: small enough to name a changed range closely, large enough
/// that a 1 GiB segment's list is 16,384 numbers.
pub const BLOCK_BYTES: u64 = 64 * 1024;
/// A baseline line longer than this is refused (a 1 TiB file's list of blocks
/// is about 180 MB of JSON; nothing legitimate comes near this bound).
const MAX_LINE_BYTES: usize = 256 << 20;

/// The first line of a baseline file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    block_bytes: u64,
    checksum: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    created: String,
}

/// One file as it was when the baseline was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    path_bytes: Option<Vec<u8>>,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub crc32c: u32,
    pub blocks: Vec<u32>,
}

impl FileEntry {
    /// The entry for `rel` from its sums and times.
    pub fn new(rel: &Path, sums: FileSums, mtime_ns: i64, ctime_ns: i64) -> Self {
        let (path, path_bytes) = match rel.to_str() {
            Some(s) => (Some(s.to_string()), None),
            None => (None, Some(rel.as_os_str().as_bytes().to_vec())),
        };
        FileEntry {
            path,
            path_bytes,
            size: sums.size,
            mtime_ns,
            ctime_ns,
            crc32c: sums.whole,
            blocks: sums.blocks,
        }
    }

    /// The file's path relative to the data directory, exactly.
    pub fn rel(&self) -> PathBuf {
        match (&self.path, &self.path_bytes) {
            (Some(s), _) => PathBuf::from(s),
            (None, Some(b)) => PathBuf::from(std::ffi::OsString::from_vec(b.clone())),
            (None, None) => PathBuf::new(),
        }
    }
}

/// Why a baseline file was refused.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: line {line}: {what}", path.display())]
    Bad {
        path: PathBuf,
        line: usize,
        what: String,
    },
}

/// A loaded baseline: every file it lists, by relative path.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// Where it was read from (named in findings).
    pub path: PathBuf,
    pub block_bytes: u64,
    files: HashMap<PathBuf, FileEntry>,
}

impl Baseline {
    /// Reads and checks a baseline file: a foreign or corrupt one is refused,
    /// naming the line.
    pub fn load(path: &Path) -> Result<Baseline, BaselineError> {
        let io_err = |source| BaselineError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bad = |line: usize, what: String| BaselineError::Bad {
            path: path.to_path_buf(),
            line,
            what,
        };
        let file = std::fs::File::open(path).map_err(io_err)?;
        if !file.metadata().map_err(io_err)?.is_file() {
            return Err(bad(0, "not a regular file".into()));
        }
        let mut lines = io::BufReader::new(file);
        let mut buf = Vec::new();
        let mut next_line = |buf: &mut Vec<u8>| -> Result<bool, BaselineError> {
            buf.clear();
            // Bounded: a line longer than any baseline writes is refused, not buffered.
            let n = io::Read::take(&mut lines, MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', buf)
                .map_err(io_err)?;
            Ok(n > 0)
        };
        if !next_line(&mut buf)? {
            return Err(bad(1, "empty file: not a recoverfs baseline".into()));
        }
        let header: Header = serde_json::from_slice(trim(&buf))
            .map_err(|e| bad(1, format!("not a recoverfs baseline header ({e})")))?;
        if header.format != FORMAT {
            return Err(bad(
                1,
                format!("format is {:?}, not {FORMAT:?}", header.format),
            ));
        }
        if header.version != VERSION {
            return Err(bad(
                1,
                format!(
                    "version {} is not the one this build reads ({VERSION})",
                    header.version
                ),
            ));
        }
        if header.checksum != "crc32c" {
            return Err(bad(
                1,
                format!("checksum {:?} is not crc32c", header.checksum),
            ));
        }
        if !(4096..=1 << 30).contains(&header.block_bytes) || !header.block_bytes.is_power_of_two()
        {
            return Err(bad(
                1,
                format!(
                    "block_bytes {} is not a power of two from 4096 to 1 GiB",
                    header.block_bytes
                ),
            ));
        }
        let mut files = HashMap::new();
        let mut line = 1;
        while next_line(&mut buf)? {
            line += 1;
            if buf.len() > MAX_LINE_BYTES {
                return Err(bad(line, format!("longer than {MAX_LINE_BYTES} bytes")));
            }
            let t = trim(&buf);
            if t.is_empty() {
                continue;
            }
            let e: FileEntry = serde_json::from_slice(t)
                .map_err(|e| bad(line, format!("not a file entry ({e})")))?;
            if e.path.is_none() && e.path_bytes.is_none() {
                return Err(bad(line, "no path".into()));
            }
            let want = e.size.div_ceil(header.block_bytes);
            if e.blocks.len() as u64 != want {
                return Err(bad(
                    line,
                    format!(
                        "{} blocks listed for a file of {} bytes (expected {want})",
                        e.blocks.len(),
                        e.size
                    ),
                ));
            }
            let rel = e.rel();
            if rel.is_absolute() || rel.components().any(|c| c.as_os_str() == OsStr::new("..")) {
                return Err(bad(
                    line,
                    format!(
                        "path {} is not relative to the data directory",
                        rel.display()
                    ),
                ));
            }
            if files.insert(rel.clone(), e).is_some() {
                return Err(bad(line, format!("{} is listed twice", rel.display())));
            }
        }
        Ok(Baseline {
            path: path.to_path_buf(),
            block_bytes: header.block_bytes,
            files,
        })
    }

    /// The entry for a file, by its path relative to the data directory.
    pub fn get(&self, rel: &Path) -> Option<&FileEntry> {
        self.files.get(rel)
    }

    /// How many files it lists.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when it lists no file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Every file listed, in path order.
    pub fn files(&self) -> Vec<&FileEntry> {
        let mut v: Vec<_> = self.files.values().collect();
        v.sort_by_key(|e| e.rel());
        v
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let mut b = b;
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// Writes a baseline to `w`: the header, then one line per file (in the order
/// given). `integrity::write_new_with` puts it in place whole or not at all.
pub fn encode(w: &mut dyn Write, source: &Path, entries: &[FileEntry]) -> io::Result<()> {
    let mut w = io::BufWriter::new(w);
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        block_bytes: BLOCK_BYTES,
        checksum: "crc32c".into(),
        source: source.display().to_string(),
        created: chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
    };
    serde_json::to_writer(&mut w, &header)?;
    w.write_all(b"\n")?;
    for e in entries {
        serde_json::to_writer(&mut w, e)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// The CRC-32C of each block of a file and of the whole, fed its bytes in order.
#[derive(Debug, Clone)]
pub struct BlockSums {
    block: u64,
    pos: u64,
    cur: u32,
    whole: u32,
    blocks: Vec<u32>,
    /// An extra boundary (a baseline's size that is not on a block boundary): the
    /// CRC of the bytes from its block's start up to it, for comparing the
    /// baseline's last, partial block with a file that has grown since.
    cut: Option<u64>,
    cut_crc: Option<u32>,
    /// False once bytes came out of order (then nothing is claimed).
    in_order: bool,
}

/// A finished [`BlockSums`]: what a baseline stores of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSums {
    pub size: u64,
    pub whole: u32,
    pub blocks: Vec<u32>,
    /// See [`BlockSums`]'s `cut`.
    pub cut_crc: Option<u32>,
}

impl BlockSums {
    pub fn new(block: u64) -> Self {
        BlockSums {
            block,
            pos: 0,
            cur: 0,
            whole: 0,
            blocks: Vec::new(),
            cut: None,
            cut_crc: None,
            in_order: true,
        }
    }

    /// Also keeps the CRC of `[start of its block, at)`.
    pub fn with_cut(mut self, at: u64) -> Self {
        if at % self.block != 0 {
            self.cut = Some(at);
        }
        self
    }

    /// The next bytes of the file; they must start where the last ones ended.
    pub fn feed(&mut self, pos: u64, mut bytes: &[u8]) {
        // A reader may read some bytes again (a window re-read): those are skipped;
        // bytes that skip ahead leave a hole, after which nothing is claimed.
        if pos > self.pos {
            self.in_order = false;
        }
        if !self.in_order {
            return;
        }
        let seen = (self.pos - pos).min(bytes.len() as u64) as usize;
        bytes = &bytes[seen..];
        while !bytes.is_empty() {
            let block_end = (self.pos / self.block + 1) * self.block;
            let mut n = (block_end - self.pos).min(bytes.len() as u64);
            if let Some(c) = self.cut {
                if self.pos < c && self.pos + n > c {
                    n = c - self.pos;
                }
            }
            let (now, rest) = bytes.split_at(n as usize);
            self.cur = crc32c::crc32c_append(self.cur, now);
            self.whole = crc32c::crc32c_append(self.whole, now);
            self.pos += n;
            bytes = rest;
            if Some(self.pos) == self.cut {
                self.cut_crc = Some(self.cur);
            }
            if self.pos % self.block == 0 {
                self.blocks.push(self.cur);
                self.cur = 0;
            }
        }
    }

    /// The sums of the `len` bytes fed, or `None` when they were not fed whole and in order.
    pub fn finish(mut self, len: u64) -> Option<FileSums> {
        if !self.in_order || self.pos != len {
            return None;
        }
        if self.pos % self.block != 0 {
            self.blocks.push(self.cur);
        }
        Some(FileSums {
            size: self.pos,
            whole: self.whole,
            blocks: self.blocks,
            cut_crc: self.cut_crc,
        })
    }
}

/// Sums a whole file by reading it (for files no scan reads: indexes).
pub fn sum_file(file: &std::fs::File, len: u64, block: u64) -> io::Result<FileSums> {
    use std::os::unix::fs::FileExt;
    let mut sums = BlockSums::new(block);
    let mut buf = vec![0u8; (1 << 20).min(len.max(1) as usize)];
    let mut at = 0;
    while at < len {
        let want = ((len - at) as usize).min(buf.len());
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file ended at byte {at} of {len}"),
            ));
        }
        sums.feed(at, &buf[..n]);
        at += n as u64;
    }
    sums.finish(len)
        .ok_or_else(|| io::Error::other("bytes summed out of order"))
}

/// What changed in a file since its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The first changed byte range `[from, to)`: the first block that differs and
    /// the blocks right after it that differ too. `to` never exceeds what the
    /// baseline covered.
    pub from: u64,
    pub to: u64,
    /// Where the next changed range (after `to`) starts, if any.
    pub next_from: Option<u64>,
    /// The file was this much shorter than at the baseline: the baseline's size.
    pub was: Option<u64>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bytes {}..{} changed since the baseline (CRC-32C of 64 KiB blocks)",
            self.from, self.to
        )?;
        if let Some(was) = self.was {
            write!(f, "; the file is shorter than its {was} bytes then")?;
        }
        Ok(())
    }
}

/// Compares a file's sums now (`now`, taken with [`BlockSums::with_cut`] at the
/// entry's size) with its baseline entry. `None` when every byte the baseline
/// covered is unchanged. A file shorter than it was is a change from the first
/// block that cannot be confirmed whole.
pub fn compare(entry: &FileEntry, now: &FileSums, block: u64) -> Option<Change> {
    let covered = entry.size.min(now.size);
    let full = covered / block;
    let shorter = now.size < entry.size;
    let differs = |i: u64| -> bool {
        let i_us = i as usize;
        if i < full {
            return now.blocks.get(i_us) != entry.blocks.get(i_us);
        }
        // The block holding the end of what both have.
        if i * block >= covered {
            return false;
        }
        if shorter {
            // The baseline only knows this block whole: it cannot be confirmed.
            return true;
        }
        if now.size == entry.size {
            return now.blocks.get(i_us) != entry.blocks.get(i_us);
        }
        // Grown since: compare the baseline's partial last block with the same bytes now.
        now.cut_crc != entry.blocks.get(i_us).copied()
    };
    let nblocks = covered.div_ceil(block);
    let first = (0..nblocks).find(|&i| differs(i));
    let Some(first) = first else {
        return shorter.then_some(Change {
            from: covered,
            to: covered,
            next_from: None,
            was: Some(entry.size),
        });
    };
    let mut end = first + 1;
    while end < nblocks && differs(end) {
        end += 1;
    }
    let next_from = (end..nblocks).find(|&i| differs(i)).map(|i| i * block);
    Some(Change {
        from: first * block,
        to: (end * block).min(covered),
        next_from,
        was: shorter.then_some(entry.size),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(bytes: &[u8], cut: Option<u64>, chunk: usize) -> FileSums {
        let mut s = BlockSums::new(4096);
        if let Some(c) = cut {
            s = s.with_cut(c);
        }
        let mut at = 0;
        for c in bytes.chunks(chunk) {
            s.feed(at, c);
            at += c.len() as u64;
        }
        s.finish(bytes.len() as u64).unwrap()
    }

    fn entry(bytes: &[u8]) -> FileEntry {
        FileEntry::new(Path::new("a/b.log"), sums(bytes, None, 1000), 1, 2)
    }

    #[test]
    fn sums_do_not_depend_on_how_the_bytes_are_fed() {
        let bytes: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let a = sums(&bytes, None, 1);
        let b = sums(&bytes, None, 4096);
        let c = sums(&bytes, None, 20_000);
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.blocks.len(), 5);
        assert_eq!(a.whole, crc32c::crc32c(&bytes));
        assert_eq!(a.blocks[4], crc32c::crc32c(&bytes[16384..]));
    }

    #[test]
    fn a_flipped_byte_is_named_by_its_block() {
        let bytes = vec![5u8; 20_000];
        let e = entry(&bytes);
        assert_eq!(compare(&e, &sums(&bytes, Some(20_000), 333), 4096), None);
        let mut flipped = bytes.clone();
        flipped[9000] ^= 1;
        let c = compare(&e, &sums(&flipped, Some(20_000), 333), 4096).unwrap();
        assert_eq!(
            (c.from, c.to, c.next_from, c.was),
            (8192, 12288, None, None)
        );
        flipped[19_999] ^= 1;
        let c = compare(&e, &sums(&flipped, Some(20_000), 333), 4096).unwrap();
        assert_eq!(c.next_from, Some(16384));
    }

    #[test]
    fn appended_bytes_are_not_a_change_but_a_changed_partial_block_is() {
        let bytes = vec![9u8; 10_000];
        let e = entry(&bytes);
        let mut grown = bytes.clone();
        grown.extend_from_slice(&[1u8; 7000]);
        assert_eq!(compare(&e, &sums(&grown, Some(10_000), 100), 4096), None);
        grown[9_999] = 0;
        let c = compare(&e, &sums(&grown, Some(10_000), 100), 4096).unwrap();
        assert_eq!((c.from, c.to), (8192, 10_000));
    }

    #[test]
    fn a_shorter_file_is_reported() {
        let bytes = vec![9u8; 10_000];
        let e = entry(&bytes);
        let c = compare(&e, &sums(&bytes[..8192], Some(10_000), 100), 4096).unwrap();
        assert_eq!((c.from, c.to, c.was), (8192, 8192, Some(10_000)));
        let c = compare(&e, &sums(&bytes[..5000], Some(10_000), 100), 4096).unwrap();
        assert_eq!((c.from, c.to, c.was), (4096, 5000, Some(10_000)));
    }

    #[test]
    fn a_saved_baseline_loads_and_a_foreign_or_corrupt_one_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("b.jsonl");
        let e = FileEntry::new(
            Path::new("x/\u{e9}.log"),
            {
                // Saved baselines use BLOCK_BYTES, which the loader checks the lists against.
                let mut b = BlockSums::new(BLOCK_BYTES);
                b.feed(0, &[1u8; 70_000]);
                b.finish(70_000).unwrap()
            },
            3,
            4,
        );
        let mut bytes = Vec::new();
        encode(&mut bytes, t.path(), std::slice::from_ref(&e)).unwrap();
        std::fs::write(&p, bytes).unwrap();
        let b = Baseline::load(&p).unwrap();
        assert_eq!(b.get(Path::new("x/\u{e9}.log")), Some(&e));
        let text = std::fs::read_to_string(&p).unwrap();
        for (bad, says) in [
            ("", "empty file"),
            ("{\"format\":\"other\",\"version\":1,\"block_bytes\":65536,\"checksum\":\"crc32c\"}\n", "format is"),
            ("{\"format\":\"recoverfs-baseline\",\"version\":9,\"block_bytes\":65536,\"checksum\":\"crc32c\"}\n", "version 9"),
            ("PK\u{3}\u{4}garbage", "line 1: not a recoverfs baseline header"),
        ] {
            std::fs::write(&p, bad).unwrap();
            let err = Baseline::load(&p).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("b.jsonl"), "{err}");
        }
        // A block list that does not fit the size.
        let mut lines: Vec<&str> = text.lines().collect();
        let short = lines[1].replacen("\"size\":70000", "\"size\":700000", 1);
        lines[1] = &short;
        std::fs::write(&p, lines.join("\n")).unwrap();
        let err = Baseline::load(&p).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("expected 11"),
            "{err}"
        );
    }
}

/// A segment's change since the baseline, as the report gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChangeReport {
    /// The first changed byte range `[from, to)` of the `.log`.
    pub from: u64,
    pub to: u64,
    /// The `.log`'s size at the baseline, when it is shorter now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_at_baseline: Option<u64>,
}

impl From<Change> for ChangeReport {
    fn from(c: Change) -> Self {
        ChangeReport {
            from: c.from,
            to: c.to,
            size_at_baseline: c.was,
        }
    }
}

/// A file the baseline lists that is shorter now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shorter {
    pub path: String,
    pub size_at_baseline: u64,
    pub size: u64,
}

/// A file whose bytes changed since the baseline (a `.log`'s first changed range).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub path: String,
    pub from: u64,
    pub to: u64,
}

/// The comparison of a whole tree with its baseline: what the report says of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BaselineReport {
    /// The baseline file compared with.
    pub file: String,
    /// Files the baseline lists.
    pub files: u64,
    /// Files it lists that are gone.
    pub gone: Vec<String>,
    /// Files it lists that are shorter than they were.
    pub shorter: Vec<Shorter>,
    /// `.log`s whose bytes changed since (each cut under the policy where the view served them).
    pub changed: Vec<Changed>,
}

impl BaselineReport {
    /// Data lost since the baseline that the segments' damage does not already say.
    pub fn lost(&self) -> bool {
        !self.gone.is_empty() || !self.shorter.is_empty() || !self.changed.is_empty()
    }

    /// The lines `check` prints after its summary.
    pub fn render(&self) -> String {
        let mut s = format!(
            "Baseline {}: {} file(s) listed, {} gone, {} shorter, {} changed\n",
            self.file,
            self.files,
            self.gone.len(),
            self.shorter.len(),
            self.changed.len()
        );
        for g in &self.gone {
            s += &format!("  GONE     {g} (listed in the baseline)\n");
        }
        for x in &self.shorter {
            s += &format!(
                "  SHORTER  {} ({} bytes, {} at the baseline)\n",
                x.path, x.size, x.size_at_baseline
            );
        }
        for c in &self.changed {
            s += &format!(
                "  CHANGED  {} bytes {}..{} since the baseline\n",
                c.path, c.from, c.to
            );
        }
        s
    }
}
