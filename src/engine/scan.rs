//! The valid prefix of one segment: the record scanner and its damage verdict.
//!
//! The scanner reads through a bounded window (never the whole file), checks
//! each record in the order of the README's "Damage kinds" table (the same
//! table as [`DamageKind`]'s variants), and stops at the first damage.
//! It keeps only a sparse table of record positions (one per
//! [`CHECKPOINT_EVERY`] records), so a 4 GiB segment costs kilobytes, and the
//! rebuilt `.index`/`.timeindex` bytes of any entry range are produced on
//! demand by re-walking from the nearest checkpoint.

use crate::engine::baseline::{Baseline, Change};
use crate::engine::format::takhin::{
    be_i64, be_u32, be_u64, DEFAULT_MAX_RECORD_BYTES, HEADER_LEN, INDEX_ENTRY_LEN, KEY_AT,
    KEY_LEN_AT, OFFSET_AT, RECORD_OVERHEAD, SIZE_FIELD_LEN, TIMESTAMP_AT, VALUE_LEN_FIELD_LEN,
};
use serde::Serialize;
use std::fmt;
use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The largest offset a Takhin record can hold: offsets are signed 64-bit, so a
/// record (or a segment base) beyond it is damage, never a valid offset.
pub const MAX_OFFSET: u64 = i64::MAX as u64;

/// Records between two entries of the sparse position table.
pub const CHECKPOINT_EVERY: u64 = 1024;
/// Bytes read from the source at a time: few syscalls, and the copy lands in L2
/// where the parser finds it (1 MiB windows measured ~30% slower on the
/// 100-byte-value benchmark). Shrunk to the file's size for small files.
pub const WINDOW_BYTES: usize = 128 << 10;

/// Anything the scanner can read at an absolute position.
pub trait ReadAt {
    /// Like `pread`: may return fewer bytes than asked, 0 at end of file.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;

    /// The first position at or after `pos` that may hold non-zero data, or
    /// `None` when everything from `pos` on is a hole. Sources without holes
    /// answer `pos`.
    fn next_data(&self, pos: u64) -> io::Result<Option<u64>> {
        Ok(Some(pos))
    }
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, pos)
    }

    /// `lseek(SEEK_DATA)`: a preallocated or sparse tail is skipped instead of read.
    /// (It moves the fd's offset, which nothing here uses: all reads are `pread`.)
    fn next_data(&self, pos: u64) -> io::Result<Option<u64>> {
        use nix::unistd::{lseek, Whence};
        let Ok(at) = libc::off_t::try_from(pos) else {
            return Ok(Some(pos));
        };
        match lseek(self, at, Whence::SeekData) {
            Ok(r) => Ok(Some((r as u64).max(pos))),
            Err(nix::errno::Errno::ENXIO) => Ok(None),
            // Filesystems without SEEK_DATA: read everything.
            Err(_) => Ok(Some(pos)),
        }
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let Ok(pos) = usize::try_from(pos) else {
            return Ok(0);
        };
        if pos >= self.len() {
            return Ok(0);
        }
        let n = buf.len().min(self.len() - pos);
        buf[..n].copy_from_slice(&self[pos..pos + n]);
        Ok(n)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, pos)
    }
}

/// Reads exactly `buf.len()` bytes at `pos`; a short file is an `UnexpectedEof`.
pub fn read_exact_at<S: ReadAt + ?Sized>(
    src: &S,
    mut buf: &mut [u8],
    mut pos: u64,
) -> io::Result<()> {
    while !buf.is_empty() {
        match src.read_at(buf, pos) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file ended at byte {pos}, before the bytes it claimed"),
                ))
            }
            Ok(n) => {
                buf = &mut buf[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Scanner settings.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// A `size` above this is `bad-size`, not an allocation.
    pub max_record_bytes: u64,
    /// The integrity baseline to compare each `.log` with (`--baseline`).
    pub baseline: Option<Arc<Baseline>>,
    /// Sum every `.log`'s blocks while scanning it (`--save-baseline`).
    pub sum_blocks: bool,
    /// Bytes changed since the baseline in the segment being scanned: a record
    /// overlapping them is `changed-since-baseline`. Set per segment by the analysis.
    pub changed: Option<Change>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            baseline: None,
            sum_blocks: false,
            changed: None,
        }
    }
}

impl ScanOptions {
    /// These settings for a replica's copies: the baseline describes the primary only.
    pub fn for_replicas(&self) -> Self {
        ScanOptions::with_max(self.max_record_bytes)
    }

    /// Only the record size limit (for scans of ranges already judged).
    pub fn with_max(max_record_bytes: u64) -> Self {
        ScanOptions {
            max_record_bytes,
            ..ScanOptions::default()
        }
    }
}

/// What ended the valid prefix, in the order they are checked (README, "Damage kinds").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DamageKind {
    /// Fewer than 4 bytes remain, or the record runs past the end of the file.
    IncompleteRecord,
    /// `size < 28` and every byte to the end is zero: preallocated, never written.
    ZeroFill,
    /// `size < 28` with non-zero bytes after, or `size` above the maximum.
    BadSize,
    /// `28 + key_len + value_len != size`.
    BadLengths,
    /// The record's offset is not the base offset plus the records before it
    /// (or that sum is past [`MAX_OFFSET`]).
    OffsetMismatch,
    /// The record overlaps bytes whose CRC-32C differs from the integrity baseline's.
    ChangedSinceBaseline,
}

impl DamageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DamageKind::IncompleteRecord => "incomplete-record",
            DamageKind::ZeroFill => "zero-fill",
            DamageKind::BadSize => "bad-size",
            DamageKind::BadLengths => "bad-lengths",
            DamageKind::OffsetMismatch => "offset-mismatch",
            DamageKind::ChangedSinceBaseline => "changed-since-baseline",
        }
    }

    /// Kinds an unclean shutdown leaves at the end of the last segment.
    pub fn is_tail_like(self) -> bool {
        matches!(self, DamageKind::IncompleteRecord | DamageKind::ZeroFill)
    }
}

impl fmt::Display for DamageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is wrong with the record where a valid prefix ends, with the numbers found.
/// Its [`Display`](fmt::Display) is the report's `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Fewer than 4 bytes remain at the end of the file.
    FewBytesLeft { remain: u64 },
    /// `size < 28` and every byte from the record to the end is zero.
    ZeroFill { bytes: u64 },
    /// `size < 28` with non-zero bytes after it.
    SizeTooSmall { size: u64 },
    /// `size` above `--max-record-bytes`.
    SizeTooLarge { size: u64, max: u64 },
    /// The record would end past the end of the file (a torn write).
    Torn { total: u64, end: u64, file_len: u64 },
    /// `key_len` alone does not fit in the record.
    KeyTooLong { key_len: u64, size: u64 },
    /// `28 + key_len + value_len != size`.
    LengthsDisagree {
        key_len: u64,
        value_len: u64,
        size: u64,
    },
    /// The record's offset is not `base + index`.
    OffsetMismatch {
        found: u64,
        expected: u64,
        base: u64,
        index: u64,
    },
    /// The record overlaps bytes changed since the integrity baseline.
    ChangedSinceBaseline(Change),
    /// `base + index` is past [`MAX_OFFSET`]: no Takhin record can hold it.
    OffsetOutOfRange { found: u64, base: u64, index: u64 },
}

impl Damage {
    /// The damage kind the report names (the first column of README's "Damage kinds").
    pub fn kind(&self) -> DamageKind {
        match self {
            Damage::FewBytesLeft { .. } | Damage::Torn { .. } => DamageKind::IncompleteRecord,
            Damage::ZeroFill { .. } => DamageKind::ZeroFill,
            Damage::SizeTooSmall { .. } | Damage::SizeTooLarge { .. } => DamageKind::BadSize,
            Damage::KeyTooLong { .. } | Damage::LengthsDisagree { .. } => DamageKind::BadLengths,
            Damage::OffsetMismatch { .. } | Damage::OffsetOutOfRange { .. } => {
                DamageKind::OffsetMismatch
            }
            Damage::ChangedSinceBaseline(_) => DamageKind::ChangedSinceBaseline,
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Damage::FewBytesLeft { remain } => write!(
                f,
                "only {remain} byte(s) remain at the end of the file; a record needs at least {SIZE_FIELD_LEN}"
            ),
            Damage::ZeroFill { bytes } => write!(
                f,
                "{bytes} zero byte(s) to the end of the file (preallocated, never written)"
            ),
            Damage::SizeTooSmall { size } => write!(
                f,
                "size {size} is below the smallest possible record ({RECORD_OVERHEAD})"
            ),
            Damage::SizeTooLarge { size, max } => write!(
                f,
                "size {size} exceeds the maximum record size {max} (--max-record-bytes)"
            ),
            Damage::Torn {
                total,
                end,
                file_len,
            } => write!(
                f,
                "record of {total} bytes would end at byte {end}, past the end of the file ({file_len}): a torn write"
            ),
            Damage::KeyTooLong { key_len, size } => write!(
                f,
                "key_len {key_len} does not fit in a record of size {size}"
            ),
            Damage::LengthsDisagree {
                key_len,
                value_len,
                size,
            } => write!(
                f,
                "{RECORD_OVERHEAD} + key_len {key_len} + value_len {value_len} = {} but size says {size}",
                RECORD_OVERHEAD + key_len + value_len
            ),
            Damage::OffsetMismatch {
                found,
                expected,
                base,
                index,
            } => write!(
                f,
                "record holds offset {found}, expected {expected} (base {base} + {index} records before it)"
            ),
            Damage::ChangedSinceBaseline(c) => write!(f, "the record overlaps {c}"),
            Damage::OffsetOutOfRange { found, base, index } => write!(
                f,
                "record holds offset {found}, but base {base} + {index} records before it is past {MAX_OFFSET}, the largest offset (Takhin offsets are signed 64-bit)"
            ),
        }
    }
}

/// Where the valid prefix of one segment ends, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentDamage {
    /// Byte position in the `.log` where the first bad record starts.
    pub position: u64,
    /// Number of records before it (the bad record's index in the segment).
    pub record: u64,
    /// What was found there, with its numbers.
    pub cause: Damage,
}

impl SegmentDamage {
    pub fn kind(&self) -> DamageKind {
        self.cause.kind()
    }
}

/// A valid record's header fields, as handed to a visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    /// Index of the record in its segment (0-based).
    pub index: u64,
    pub offset: u64,
    pub timestamp: i64,
    /// Byte position of the record in the `.log`.
    pub position: u64,
    pub key_len: u32,
    pub value_len: u32,
}

impl RecordMeta {
    /// Bytes the record occupies, size field included.
    pub fn encoded_len(&self) -> u64 {
        SIZE_FIELD_LEN + RECORD_OVERHEAD + self.key_len as u64 + self.value_len as u64
    }
    /// Position of the key in the `.log`.
    pub fn key_position(&self) -> u64 {
        self.position + KEY_AT as u64
    }
    /// Position of the value in the `.log`.
    pub fn value_position(&self) -> u64 {
        self.key_position() + self.key_len as u64 + VALUE_LEN_FIELD_LEN
    }
}

/// The scanner's verdict on one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    pub base_offset: u64,
    /// Size of the `.log` when it was scanned.
    pub original_bytes: u64,
    /// Length of the valid prefix.
    pub valid_bytes: u64,
    /// Records in the valid prefix.
    pub records: u64,
    pub min_timestamp: Option<i64>,
    pub max_timestamp: Option<i64>,
    /// The timestamp of the last record of the valid prefix (the cut's time, when damaged).
    pub last_timestamp: Option<i64>,
    pub damage: Option<SegmentDamage>,
    /// Position of record `k * CHECKPOINT_EVERY`, for every such record in the prefix.
    pub checkpoints: Vec<u64>,
}

impl SegmentScan {
    pub fn is_clean(&self) -> bool {
        self.damage.is_none()
    }
    pub fn first_offset(&self) -> Option<u64> {
        (self.records > 0).then_some(self.base_offset)
    }
    pub fn last_offset(&self) -> Option<u64> {
        // Every record passed `check_offset`, so this cannot overflow; checked all the same.
        (self.records > 0).then(|| self.base_offset.saturating_add(self.records - 1))
    }
    /// The offset the next segment should start at.
    pub fn next_offset(&self) -> u64 {
        self.base_offset.saturating_add(self.records)
    }
    /// Bytes of each rebuilt index file.
    pub fn index_bytes(&self) -> u64 {
        self.records.saturating_mul(INDEX_ENTRY_LEN)
    }
    pub fn bytes_cut(&self) -> u64 {
        self.original_bytes.saturating_sub(self.valid_bytes)
    }
}

/// A sliding window over a source, refilled in large sequential reads.
/// (`pub(crate)`: `index` and `salvage` read through the same bounded buffers.)
pub(crate) struct Window<'a, S: ?Sized> {
    src: &'a S,
    /// Bytes of the source the scan may look at (its size when scanning began).
    pub(crate) len: u64,
    buf: Vec<u8>,
    /// Source position of `buf[0]`.
    start: u64,
    filled: usize,
}

impl<'a, S: ReadAt + ?Sized> Window<'a, S> {
    pub(crate) fn new(src: &'a S, len: u64) -> Self {
        Self::with_capacity(src, len, WINDOW_BYTES)
    }

    /// A window of at most `cap` bytes (at least 64, the most `get` hands out):
    /// small ones serve scattered probes without re-reading a large buffer each time.
    pub(crate) fn with_capacity(src: &'a S, len: u64, cap: usize) -> Self {
        // Never allocate beyond what the file holds.
        let cap = (cap.max(64) as u64).min(len.max(64)) as usize;
        Window {
            src,
            len,
            buf: vec![0; cap],
            start: 0,
            filled: 0,
        }
    }

    /// Returns the `n` bytes at `pos`. The caller guarantees `pos + n <= len`
    /// and `n <= 64` (or at most the capacity the window was made with); a
    /// source shorter than `len` is an `UnexpectedEof`.
    #[inline]
    pub(crate) fn get(&mut self, pos: u64, n: usize) -> io::Result<&[u8]> {
        if self.holds(pos, n) {
            let at = (pos - self.start) as usize;
            return Ok(&self.buf[at..at + n]);
        }
        self.refill(pos, n)?;
        Ok(&self.buf[..n])
    }

    /// True when `get(pos, n)` would be served without reading the source.
    #[inline]
    pub(crate) fn holds(&self, pos: u64, n: usize) -> bool {
        pos >= self.start && pos + n as u64 <= self.start + self.filled as u64
    }

    #[cold]
    fn refill(&mut self, pos: u64, n: usize) -> io::Result<()> {
        // Keep the bytes we already hold from `pos` on, so sequential scans read each byte once.
        let keep = if pos >= self.start && pos < self.start + self.filled as u64 {
            let at = (pos - self.start) as usize;
            self.buf.copy_within(at..self.filled, 0);
            self.filled - at
        } else {
            0
        };
        self.start = pos;
        self.filled = keep;
        let want = ((self.len - pos) as usize).min(self.buf.len());
        while self.filled < want {
            let read_pos = self.start + self.filled as u64;
            match self.src.read_at(&mut self.buf[self.filled..want], read_pos) {
                Ok(0) => break,
                Ok(k) => self.filled += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.filled < n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "file shrank while being read: byte {} was expected to exist",
                    pos + n as u64 - 1
                ),
            ));
        }
        Ok(())
    }

    /// True when every byte in `[pos, len)` is zero. Holes are skipped, not read.
    fn all_zero_from(&mut self, mut pos: u64) -> io::Result<bool> {
        while pos < self.len {
            match self.src.next_data(pos)? {
                None => return Ok(true),
                Some(q) if q >= self.len => return Ok(true),
                Some(q) => pos = q,
            }
            let n = ((self.len - pos) as usize).min(self.buf.len());
            self.refill(pos, n)?;
            if self.buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            pos += n as u64;
        }
        Ok(true)
    }
}

/// Where a walk through records begins.
#[derive(Debug, Clone, Copy)]
pub struct WalkStart {
    pub position: u64,
    pub index: u64,
}

/// The outcome of walking records from a start point.
#[derive(Debug)]
pub struct Walk {
    /// Position after the last valid record visited.
    pub end: u64,
    /// Records visited (from the start point).
    pub visited: u64,
    pub damage: Option<SegmentDamage>,
    /// True when the visitor asked to stop early.
    pub stopped: bool,
}

/// Checks the record at `p` (the `i`-th of a segment based at `base`) in the
/// order of the README's "Damage kinds" table: its header fields, or what is wrong with it.
// Always inlined: called once per record, and left out of line (as `#[inline]`
// let the compiler do) its nested `Result` cost `check` 21% more instructions
// (callgrind, 64 MiB of 100-byte records).
#[inline(always)]
fn check_record<S: ReadAt + ?Sized>(
    w: &mut Window<'_, S>,
    p: u64,
    i: u64,
    base: u64,
    max: u64,
    changed: Option<Change>,
) -> io::Result<Result<RecordMeta, Damage>> {
    let len = w.len;
    let remain = len - p;
    // Bytes changed since the baseline end the prefix at the first record that
    // overlaps them, whatever its fields say now (its size field included).
    if let Some(c) = changed {
        if p + SIZE_FIELD_LEN.min(remain) > c.from {
            return Ok(Err(Damage::ChangedSinceBaseline(c)));
        }
    }
    if remain < SIZE_FIELD_LEN {
        return Ok(Err(Damage::FewBytesLeft { remain }));
    }
    let size = be_u32(w.get(p, SIZE_FIELD_LEN as usize)?, 0) as u64;
    if let Some(c) = changed {
        if p + SIZE_FIELD_LEN + size > c.from {
            return Ok(Err(Damage::ChangedSinceBaseline(c)));
        }
    }
    if size < RECORD_OVERHEAD {
        return Ok(Err(if w.all_zero_from(p)? {
            Damage::ZeroFill { bytes: remain }
        } else {
            Damage::SizeTooSmall { size }
        }));
    }
    if size > max {
        return Ok(Err(Damage::SizeTooLarge { size, max }));
    }
    let total = SIZE_FIELD_LEN + size;
    if total > remain {
        return Ok(Err(Damage::Torn {
            total,
            end: p + total,
            file_len: len,
        }));
    }
    // size >= 28 and the record lies inside the file, so its header does too.
    let h = w.get(p, HEADER_LEN)?;
    let offset = be_u64(h, OFFSET_AT);
    let timestamp = be_i64(h, TIMESTAMP_AT);
    let key_len = be_u32(h, KEY_LEN_AT) as u64;
    if RECORD_OVERHEAD + key_len > size {
        return Ok(Err(Damage::KeyTooLong { key_len, size }));
    }
    // key_len fits, so the value_len field lies inside the record.
    let value_len = be_u32(
        w.get(p + KEY_AT as u64 + key_len, VALUE_LEN_FIELD_LEN as usize)?,
        0,
    ) as u64;
    if RECORD_OVERHEAD + key_len + value_len != size {
        return Ok(Err(Damage::LengthsDisagree {
            key_len,
            value_len,
            size,
        }));
    }
    if let Err(d) = check_offset(offset, base, i) {
        return Ok(Err(d));
    }
    Ok(Ok(RecordMeta {
        index: i,
        offset,
        timestamp,
        position: p,
        key_len: key_len as u32,
        value_len: value_len as u32,
    }))
}

/// Whether a record holds the offset it must: `base + index`, a sum that must
/// neither overflow nor pass [`MAX_OFFSET`] (the scanner and salvage share it).
#[inline(always)]
pub(crate) fn check_offset(found: u64, base: u64, index: u64) -> Result<(), Damage> {
    match base.checked_add(index).filter(|&e| e <= MAX_OFFSET) {
        None => Err(Damage::OffsetOutOfRange { found, base, index }),
        Some(expected) if expected != found => Err(Damage::OffsetMismatch {
            found,
            expected,
            base,
            index,
        }),
        Some(_) => Ok(()),
    }
}

/// Walks records of a segment with base offset `base` from `start`, up to byte
/// `len`, checking each in the order of the "Damage kinds" table, calling `visit` for each
/// valid record. Stops at the first damage, at `len`, or when `visit` breaks.
pub fn walk<S: ReadAt + ?Sized>(
    src: &S,
    len: u64,
    base: u64,
    start: WalkStart,
    opts: &ScanOptions,
    mut visit: impl FnMut(&RecordMeta) -> ControlFlow<()>,
) -> io::Result<Walk> {
    let mut w = Window::new(src, len);
    let mut p = start.position;
    let mut i = start.index;
    let (damage, stopped) = loop {
        if p >= len {
            break (None, false);
        }
        match check_record(&mut w, p, i, base, opts.max_record_bytes, opts.changed)? {
            Err(cause) => {
                break (
                    Some(SegmentDamage {
                        position: p,
                        record: i,
                        cause,
                    }),
                    false,
                )
            }
            Ok(meta) => {
                p += meta.encoded_len();
                i += 1;
                if visit(&meta).is_break() {
                    break (None, true);
                }
            }
        }
    };
    Ok(Walk {
        end: p,
        visited: i - start.index,
        damage,
        stopped,
    })
}

/// Scans a whole segment: its valid prefix, damage, timestamps and checkpoints.
/// `visit` sees every valid record (the index comparison hooks in here).
pub fn scan_segment<S: ReadAt + ?Sized>(
    src: &S,
    len: u64,
    base: u64,
    opts: &ScanOptions,
    mut visit: impl FnMut(&RecordMeta),
) -> io::Result<SegmentScan> {
    // Plain integers in the per-record loop (an `Option` per field cost ~10% of
    // `check`'s instructions); they mean something only once a record was seen.
    let (mut min_ts, mut max_ts, mut last_ts) = (i64::MAX, i64::MIN, 0i64);
    let mut checkpoints = Vec::new();
    let walk = walk(
        src,
        len,
        base,
        WalkStart {
            position: 0,
            index: 0,
        },
        opts,
        |m| {
            if m.index % CHECKPOINT_EVERY == 0 {
                checkpoints.push(m.position);
            }
            min_ts = min_ts.min(m.timestamp);
            max_ts = max_ts.max(m.timestamp);
            last_ts = m.timestamp;
            visit(m);
            ControlFlow::Continue(())
        },
    )?;
    Ok(SegmentScan {
        base_offset: base,
        original_bytes: len,
        valid_bytes: walk.end,
        records: walk.visited,
        min_timestamp: (walk.visited > 0).then_some(min_ts),
        max_timestamp: (walk.visited > 0).then_some(max_ts),
        last_timestamp: (walk.visited > 0).then_some(last_ts),
        damage: walk.damage,
        checkpoints,
    })
}

/// Visits the valid records `first..first+count` of a scanned segment,
/// starting from the nearest checkpoint. Fails if the source no longer holds
/// the records the scan found (it changed since).
pub fn visit_records<S: ReadAt + ?Sized>(
    src: &S,
    scan: &SegmentScan,
    first: u64,
    count: u64,
    mut visit: impl FnMut(&RecordMeta),
) -> io::Result<()> {
    let end = first.saturating_add(count).min(scan.records);
    if first >= end {
        return Ok(());
    }
    let cp = (first / CHECKPOINT_EVERY) as usize;
    let start = WalkStart {
        position: scan.checkpoints[cp],
        index: cp as u64 * CHECKPOINT_EVERY,
    };
    let opts = ScanOptions::with_max(u64::MAX);
    let w = walk(src, scan.valid_bytes, scan.base_offset, start, &opts, |m| {
        if m.index >= first {
            visit(m);
        }
        if m.index + 1 >= end {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    if !w.stopped {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "segment {} changed since it was validated: records end at {} of the {} found",
                scan.base_offset,
                start.index + w.visited,
                scan.records
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::takhin::SegmentWriter;

    fn seg(n: u64) -> SegmentWriter {
        let mut w = SegmentWriter::new(100);
        for i in 0..n {
            w.append(1000 + i as i64, b"k", &vec![i as u8; (i % 7) as usize]);
        }
        w
    }

    #[test]
    fn offsets_end_at_i64_max() {
        const MAX: u64 = i64::MAX as u64;
        assert_eq!(check_offset(MAX, MAX - 2, 2), Ok(()));
        for (found, base, index) in [(MAX + 1, MAX - 2, 3), (0, MAX + 1, 0), (0, u64::MAX, 1)] {
            assert_eq!(
                check_offset(found, base, index),
                Err(Damage::OffsetOutOfRange { found, base, index })
            );
        }
        assert!(matches!(
            check_offset(7, MAX - 2, 1),
            Err(Damage::OffsetMismatch { expected, .. }) if expected == MAX - 1
        ));
    }

    #[test]
    fn torn_tail_is_incomplete() {
        let w = seg(10);
        let cut = w.log.len() - 3;
        let s = scan_segment(
            &w.log[..cut],
            cut as u64,
            100,
            &ScanOptions::default(),
            |_| {},
        )
        .unwrap();
        assert_eq!(s.records, 9);
        assert!(matches!(
            s.damage.map(|d| d.kind()),
            Some(DamageKind::IncompleteRecord)
        ));
    }
}
